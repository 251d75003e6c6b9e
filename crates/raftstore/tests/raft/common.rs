//! Test state machine and an in-process cluster harness.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meseta_raftstore::{Faults, RaftConfig, RaftHandle, StartOptions, StateMachine};
use serde::{Deserialize, Serialize};

/// Records every applied command; replies "index:command".
#[derive(Default, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Journal {
    pub applied: Vec<(u64, String)>,
    #[serde(skip)]
    pub restores: u32,
}

impl StateMachine for Journal {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        let cmd = String::from_utf8_lossy(command).into_owned();
        self.applied.push((index, cmd.clone()));
        format!("{index}:{cmd}").into_bytes()
    }
    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("journal serializes")
    }
    fn restore(&mut self, _index: u64, data: &[u8]) -> Result<(), String> {
        let restored: Journal = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        self.applied = restored.applied;
        self.restores += 1;
        Ok(())
    }
}

impl Journal {
    pub fn commands(&self) -> Vec<String> {
        self.applied.iter().map(|(_, c)| c.clone()).collect()
    }
}

pub fn commands_of(h: &RaftHandle<Journal>) -> Vec<String> {
    h.state().lock().unwrap().commands()
}

pub fn fast_config(id: u64, peers: Vec<(u64, String)>, dir: PathBuf) -> RaftConfig {
    RaftConfig {
        id,
        peers,
        data_dir: dir,
        tick: Duration::from_millis(20),
        election_ticks: 10,
        heartbeat_ticks: 2,
        snapshot_interval: 1000,
        snapshot_log_ratio: 0.0,
    }
}

/// Poll `cond` until it holds or `timeout` passes.
pub async fn wait_for<F: FnMut() -> bool>(what: &str, timeout: Duration, mut cond: F) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Retry an async operation until it succeeds or `timeout` passes.
pub async fn retry<T, E: std::fmt::Debug, Fut: Future<Output = Result<T, E>>>(
    what: &str,
    timeout: Duration,
    mut op: impl FnMut() -> Fut,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(Instant::now() < deadline, "timed out on {what}: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

pub struct Node {
    pub handle: RaftHandle<Journal>,
    server: tokio::task::JoinHandle<()>,
}

/// Nodes on 127.0.0.1, each with a sled dir and a gRPC server, sharing one `Faults`.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub addrs: BTreeMap<u64, SocketAddr>,
    pub founders: Vec<(u64, String)>,
    pub nodes: BTreeMap<u64, Node>,
    pub faults: Faults,
    pub snapshot_interval: u64,
}

async fn reserve_port() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

impl Cluster {
    /// Start `n` founding voters with ids 1..=n.
    pub async fn start(n: u64, snapshot_interval: u64) -> Cluster {
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            listeners.insert(id, reserve_port().await);
        }
        let addrs: BTreeMap<u64, SocketAddr> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().expect("local addr")))
            .collect();
        let founders = addrs.iter().map(|(id, a)| (*id, a.to_string())).collect();
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("tempdir"),
            addrs,
            founders,
            nodes: BTreeMap::new(),
            faults: Faults::new(),
            snapshot_interval,
        };
        for (id, listener) in listeners {
            cluster.launch(id, listener, cluster.founders.clone()).await;
        }
        cluster
    }

    async fn launch(
        &mut self,
        id: u64,
        listener: tokio::net::TcpListener,
        peers: Vec<(u64, String)>,
    ) {
        let mut config = fast_config(id, peers, self.dir.path().join(format!("node-{id}")));
        config.snapshot_interval = self.snapshot_interval;
        let handle = RaftHandle::start_with(
            config,
            Journal::default(),
            StartOptions {
                store: None,
                faults: self.faults.clone(),
            },
        )
        .await
        .expect("start raft node");
        let svc = handle.raft_service();
        let server = tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await;
        });
        self.nodes.insert(id, Node { handle, server });
    }

    /// Start a node that is not a founder (it waits to be added).
    pub async fn start_joiner(&mut self, id: u64) -> String {
        let listener = reserve_port().await;
        let addr = listener.local_addr().expect("local addr");
        self.addrs.insert(id, addr);
        let peers = self.founders.clone();
        self.launch(id, listener, peers).await;
        addr.to_string()
    }

    pub fn handle(&self, id: u64) -> &RaftHandle<Journal> {
        &self.nodes[&id].handle
    }

    /// Stop node `id`: its server and its raft thread.
    pub async fn kill(&mut self, id: u64) {
        let node = self.nodes.remove(&id).expect("node is running");
        node.server.abort();
        let _ = node.server.await;
        node.handle.shutdown().await;
    }

    /// Start node `id` again on the same address and data dir.
    pub async fn restart(&mut self, id: u64) {
        let addr = self.addrs[&id];
        let listener = retry("rebind", Duration::from_secs(5), || {
            tokio::net::TcpListener::bind(addr)
        })
        .await;
        let peers = self.founders.clone();
        self.launch(id, listener, peers).await;
    }

    /// The one node every running node agrees is the leader.
    pub async fn leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders: Vec<u64> = self
                .nodes
                .values()
                .filter(|n| n.handle.is_leader())
                .map(|n| n.handle.id())
                .collect();
            if let [leader] = leaders[..] {
                let agreed = self
                    .nodes
                    .values()
                    .all(|n| n.handle.leader().map(|(id, _)| id) == Some(leader));
                if agreed {
                    return leader;
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id).await;
        }
    }
}
