//! Linearizability of the masters' KV store under leader isolation.
//!
//! Three masters run in this process, sharing one raftstore [`Faults`] layer;
//! a nemesis cuts the current leader off (every raft message to and from it
//! is dropped, while clients can still reach it) and heals the network, over
//! and over. Concurrent clients put unique values and get keys meanwhile,
//! through the real gRPC KV service and the sdk client. The recorded history
//! is checked per key against a register model with a Wing–Gong/Lowe search
//! (the algorithm of Porcupine and Knossos): writes whose outcome is unknown
//! may take effect at any time after their call, or never.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meseta_master::{BoundMaster, MasterConfig};
use meseta_raftstore::Faults;
use meseta_sdk::KvClient;

// ---------------------------------------------------------------------------
// The checker.

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Write(String),
    /// What the read saw (None = absent).
    Read(Option<String>),
}

/// One operation on one key: invoked at `call`, answered at `ret`
/// (`u64::MAX` when the outcome is unknown).
#[derive(Debug, Clone)]
struct Op {
    call: u64,
    ret: u64,
    kind: Kind,
}

/// True when some order of `ops`, consistent with real time, is a legal
/// register history starting from "absent".
fn linearizable(ops: &[Op]) -> bool {
    // Events: (time, is_return, op). Calls sort before returns at equal times.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, false, i));
        events.push((op.ret, true, i));
    }
    events.sort();
    let n = events.len();
    // Circular doubly linked list over events; index n is the head sentinel.
    let head = n;
    let mut next = vec![head; n + 1];
    let mut prev = vec![head; n + 1];
    for e in 0..n {
        next[e] = if e + 1 == n { head } else { e + 1 };
        prev[e] = if e == 0 { head } else { e - 1 };
    }
    if n > 0 {
        next[head] = 0;
        prev[head] = n - 1;
    }
    let mut ret_of = vec![0usize; ops.len()];
    for (e, &(_, is_ret, op)) in events.iter().enumerate() {
        if is_ret {
            ret_of[op] = e;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, x) = (prev[e], next[e]);
        next[p] = x;
        prev[x] = p;
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, x) = (prev[e], next[e]);
        next[p] = e;
        prev[x] = e;
    };
    let words = ops.len().div_ceil(64);
    let mut done = vec![0u64; words];
    let mut state: Option<String> = None;
    let mut cache: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    let mut cur = next[n];
    loop {
        if next[n] == n {
            return true;
        }
        if cur == n {
            // Walked past the end without meeting a return: cannot happen
            // for complete lists; treat as a dead end.
            match stack.pop() {
                None => return false,
                Some((call_e, old)) => {
                    let op = events[call_e].2;
                    done[op / 64] &= !(1 << (op % 64));
                    state = old;
                    relink(&mut next, &mut prev, ret_of[op]);
                    relink(&mut next, &mut prev, call_e);
                    cur = next[call_e];
                    continue;
                }
            }
        }
        let (_, is_ret, op) = events[cur];
        if !is_ret {
            let (ok, new_state) = match &ops[op].kind {
                Kind::Write(v) => (true, Some(v.clone())),
                Kind::Read(seen) => (*seen == state, state.clone()),
            };
            if ok {
                done[op / 64] |= 1 << (op % 64);
                if cache.insert((done.clone(), new_state.clone())) {
                    stack.push((cur, std::mem::replace(&mut state, new_state)));
                    unlink(&mut next, &mut prev, cur);
                    unlink(&mut next, &mut prev, ret_of[op]);
                    cur = next[n];
                    continue;
                }
                done[op / 64] &= !(1 << (op % 64));
            }
            cur = next[cur];
        } else {
            match stack.pop() {
                None => return false,
                Some((call_e, old)) => {
                    let op = events[call_e].2;
                    done[op / 64] &= !(1 << (op % 64));
                    state = old;
                    relink(&mut next, &mut prev, ret_of[op]);
                    relink(&mut next, &mut prev, call_e);
                    cur = next[call_e];
                }
            }
        }
    }
}

fn w(call: u64, ret: u64, v: &str) -> Op {
    Op {
        call,
        ret,
        kind: Kind::Write(v.into()),
    }
}

fn r(call: u64, ret: u64, v: Option<&str>) -> Op {
    Op {
        call,
        ret,
        kind: Kind::Read(v.map(String::from)),
    }
}

#[test]
fn checker_accepts_linearizable_and_rejects_stale_histories() {
    // Sequential.
    assert!(linearizable(&[w(0, 1, "a"), r(2, 3, Some("a"))]));
    // A read overlapping a write may see either value.
    assert!(linearizable(&[
        w(0, 10, "a"),
        r(1, 2, None),
        r(3, 4, Some("a"))
    ]));
    // Stale read: after the write returned, the old value is gone.
    assert!(!linearizable(&[w(0, 1, "a"), r(2, 3, None)]));
    // Reads that go back in time.
    assert!(!linearizable(&[
        w(0, 10, "a"),
        r(1, 2, Some("a")),
        r(3, 4, None)
    ]));
    // An unknown write may never happen…
    assert!(linearizable(&[w(0, u64::MAX, "a"), r(5, 6, None)]));
    // …or happen late.
    assert!(linearizable(&[
        w(0, u64::MAX, "a"),
        r(5, 6, None),
        r(7, 8, Some("a"))
    ]));
    // Two writers: the order must be one order for every reader.
    assert!(!linearizable(&[
        w(0, 10, "a"),
        w(0, 10, "b"),
        r(11, 12, Some("a")),
        r(13, 14, Some("b")),
        r(15, 16, Some("a")),
    ]));
}

// ---------------------------------------------------------------------------
// The cluster under test.

fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    ls.iter()
        .map(|l| l.local_addr().expect("bound address").port())
        .collect()
}

struct Cluster {
    addrs: Vec<String>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    faults: Faults,
    _dir: tempfile::TempDir,
}

async fn start_cluster() -> Cluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = free_ports(3);
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let faults = Faults::new();
    let mut stops = Vec::new();
    let mut servers = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let listen: SocketAddr = addr.parse().expect("an address");
        let mut config = MasterConfig::new(listen, dir.path().join(format!("m{i}")));
        config.masters = addrs.clone();
        config.raft_faults = faults.clone();
        let master = BoundMaster::bind(config).await.expect("master binds");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        stops.push(tx);
        servers.push(tokio::spawn(async move {
            let _ = master
                .serve(async move {
                    let _ = rx.await;
                })
                .await;
        }));
    }
    Cluster {
        addrs,
        stops,
        servers,
        faults,
        _dir: dir,
    }
}

impl Cluster {
    async fn stop(self) {
        for s in self.stops {
            let _ = s.send(());
        }
        for h in self.servers {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }
}

#[derive(Debug, Clone)]
struct Recorded {
    key: usize,
    op: Op,
}

const KEYS: usize = 2;
const CLIENTS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_history_under_leader_isolation_is_linearizable() {
    let cluster = start_cluster().await;
    let epoch = Instant::now();
    let now = move || epoch.elapsed().as_nanos() as u64;
    let history: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Wait for a first leader.
    let probe = KvClient::new(cluster.addrs.clone()).with_deadline(Duration::from_secs(30));
    probe
        .put("/lin/probe", b"x".to_vec(), 0)
        .await
        .expect("a leader is elected");

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let client = KvClient::new(cluster.addrs.clone()).with_deadline(Duration::from_secs(3));
        let (history, stop) = (history.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let key = ((n / 2) as usize + c) % KEYS;
                let name = format!("/lin/{key}");
                let call = now();
                let op = if n.is_multiple_of(2) {
                    let value = format!("c{c}-{n}");
                    match client.put(&name, value.clone().into_bytes(), 0).await {
                        Ok(_) => Some(Op {
                            call,
                            ret: now(),
                            kind: Kind::Write(value),
                        }),
                        Err(e) if e.is_indeterminate() => Some(Op {
                            call,
                            ret: u64::MAX,
                            kind: Kind::Write(value),
                        }),
                        // Refused before it was proposed: it never happened.
                        Err(_) => None,
                    }
                } else {
                    match client.get(&name).await {
                        Ok(kv) => Some(Op {
                            call,
                            ret: now(),
                            kind: Kind::Read(
                                kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
                            ),
                        }),
                        Err(_) => None,
                    }
                };
                if let Some(op) = op {
                    history
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Recorded { key, op });
                }
            }
        }));
    }

    // Nemesis: cut the leader off, heal, repeat.
    let mut isolations = 0;
    let nemesis_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < nemesis_until {
        tokio::time::sleep(Duration::from_millis(800)).await;
        if probe.get("/lin/probe").await.is_err() {
            continue;
        }
        let Some(leader) = probe.leader() else {
            continue;
        };
        let Some(id) = cluster.addrs.iter().position(|a| *a == leader) else {
            continue;
        };
        cluster.faults.isolate(id as u64 + 1);
        isolations += 1;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.faults.heal();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.expect("a client panicked");
    }
    cluster.stop().await;

    let history = history.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(
        isolations >= 2,
        "the nemesis cut off only {isolations} leaders"
    );
    for key in 0..KEYS {
        let ops: Vec<Op> = history
            .iter()
            .filter(|r| r.key == key)
            .map(|r| r.op.clone())
            .collect();
        let completed_writes = ops
            .iter()
            .filter(|o| matches!(o.kind, Kind::Write(_)) && o.ret != u64::MAX)
            .count();
        let reads = ops
            .iter()
            .filter(|o| matches!(o.kind, Kind::Read(_)))
            .count();
        assert!(
            completed_writes > 5 && reads > 5,
            "key {key}: too little history ({completed_writes} writes, {reads} reads)"
        );
        assert!(
            linearizable(&ops),
            "key {key}: the history of {} operations is not linearizable: {ops:?}",
            ops.len()
        );
    }
}
