//! `meseta-bench kv`: writes/s and latency of the masters' replicated KV
//! store (3 masters as separate processes on loopback, fsync on), with N
//! concurrent clients each writing one key after another; then the leader
//! failover time (SIGKILL of the leader → the first write acknowledged by
//! the new leader). `--etcd` runs the same load against a 3-member
//! `etcd` cluster (Debian's etcd-server) for comparison, through etcd's
//! native gRPC API (`etcdserverpb.KV/Put`, one HTTP/2 connection per
//! member shared by the clients, as etcd's own clients do; `--etcd-gateway`
//! goes through its HTTP/JSON gateway instead, which costs etcd a JSON
//! round and a second hop per write). Set `MESETA_BIN` to a release build
//! for real figures.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

#[derive(Args)]
pub struct KvArgs {
    /// Concurrent clients, each with one write in flight.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Masters in the cluster.
    #[arg(long, default_value_t = 3)]
    masters: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Run against etcd (binary `etcd` on PATH) instead of meseta.
    #[arg(long)]
    etcd: bool,
    /// With --etcd: through etcd's HTTP/JSON gateway, not its gRPC API.
    #[arg(long)]
    etcd_gateway: bool,
    /// Skip the failover measurement.
    #[arg(long)]
    no_failover: bool,
}

/// Latency summary of acknowledged writes.
fn summary(mut lat: Vec<Duration>, elapsed: Duration) -> String {
    lat.sort();
    let n = lat.len();
    let pct = |p: f64| {
        lat.get(((n as f64 * p) as usize).min(n.saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    format!(
        "writes={n} writes_per_s={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        n as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    )
}

/// One write against the system under test.
trait Writer: Clone + Send + Sync + 'static {
    fn put(&self, key: String, value: Vec<u8>) -> impl std::future::Future<Output = bool> + Send;
}

#[derive(Clone)]
struct Meseta(meseta_sdk::KvClient);

impl Writer for Meseta {
    async fn put(&self, key: String, value: Vec<u8>) -> bool {
        self.0.put(&key, value, 0).await.is_ok()
    }
}

#[derive(Clone)]
struct Etcd {
    http: reqwest::Client,
    endpoints: Arc<Vec<String>>,
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Writer for Etcd {
    async fn put(&self, key: String, value: Vec<u8>) -> bool {
        // Any member forwards to the leader; try them in turn.
        for ep in self.endpoints.iter() {
            let body = serde_json::json!({"key": b64(key.as_bytes()), "value": b64(&value)});
            if let Ok(r) = self
                .http
                .post(format!("http://{ep}/v3/kv/put"))
                .json(&body)
                .send()
                .await
            {
                if r.status().is_success() {
                    return true;
                }
            }
        }
        false
    }
}

/// etcd's `PutRequest` (etcd's api/etcdserverpb/rpc.proto; the fields
/// this bench sets).
#[derive(Clone, PartialEq, prost::Message)]
struct EtcdPutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
    #[prost(int64, tag = "3")]
    lease: i64,
}

/// etcd's `ResponseHeader`.
#[derive(Clone, PartialEq, prost::Message)]
struct EtcdResponseHeader {
    #[prost(uint64, tag = "1")]
    cluster_id: u64,
    #[prost(uint64, tag = "2")]
    member_id: u64,
    #[prost(int64, tag = "3")]
    revision: i64,
    #[prost(uint64, tag = "4")]
    raft_term: u64,
}

/// etcd's `PutResponse` (its `prev_kv` is never asked for).
#[derive(Clone, PartialEq, prost::Message)]
struct EtcdPutResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<EtcdResponseHeader>,
}

/// etcd through its gRPC API: one channel per member, tried in turn (any
/// member forwards a write to the leader).
#[derive(Clone)]
struct EtcdGrpc {
    channels: Arc<Vec<tonic::transport::Channel>>,
}

impl EtcdGrpc {
    fn new(endpoints: &[String]) -> Result<EtcdGrpc> {
        let channels = endpoints
            .iter()
            .map(|ep| {
                Ok(
                    tonic::transport::Endpoint::from_shared(format!("http://{ep}"))?
                        .tcp_nodelay(true)
                        .connect_timeout(Duration::from_millis(500))
                        .connect_lazy(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EtcdGrpc {
            channels: Arc::new(channels),
        })
    }
}

impl Writer for EtcdGrpc {
    async fn put(&self, key: String, value: Vec<u8>) -> bool {
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Put");
        for channel in self.channels.iter() {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            if grpc.ready().await.is_err() {
                continue;
            }
            let request = tonic::Request::new(EtcdPutRequest {
                key: key.clone().into_bytes(),
                value: value.clone(),
                lease: 0,
            });
            let codec: tonic_prost::ProstCodec<EtcdPutRequest, EtcdPutResponse> =
                tonic_prost::ProstCodec::default();
            if grpc.unary(request, path.clone(), codec).await.is_ok() {
                return true;
            }
        }
        false
    }
}

async fn load<W: Writer>(w: W, clients: usize, seconds: u64, value_size: usize) -> String {
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = 0u64;
            while Instant::now() < until {
                let t = Instant::now();
                if w.put(format!("/bench/{c}/{}", n % 1000), vec![b'x'; value_size])
                    .await
                {
                    lat.push(t.elapsed());
                }
                n += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    summary(all, started.elapsed())
}

/// Time from killing the leader to the first write acknowledged after it.
async fn failover<W: Writer>(w: &W, kill: impl FnOnce()) -> Duration {
    // Keep writing so the client notices at once.
    let start = Instant::now();
    kill();
    let mut n = 0u64;
    loop {
        n += 1;
        if w.put(format!("/bench/failover/{n}"), b"x".to_vec()).await {
            return start.elapsed();
        }
    }
}

/// Bytes of every file under `dir` (sled's disk use is watched: DESIGN.md).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

fn free_ports(n: usize) -> Result<Vec<u16>> {
    meseta_tests::cluster::free_ports(n)
}

struct EtcdCluster {
    children: Vec<Child>,
    clients: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_etcd(n: usize) -> Result<EtcdCluster> {
    let dir = tempfile::tempdir()?;
    let ports = free_ports(2 * n)?;
    let peers: Vec<String> = (0..n)
        .map(|i| format!("e{i}=http://127.0.0.1:{}", ports[2 * i + 1]))
        .collect();
    let mut children = Vec::new();
    let mut clients = Vec::new();
    for i in 0..n {
        let client = format!("127.0.0.1:{}", ports[2 * i]);
        let peer = format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let log = std::fs::File::create(dir.path().join(format!("e{i}.log")))?;
        let child = Command::new("etcd")
            .args([
                "--name",
                &format!("e{i}"),
                "--data-dir",
                &dir.path().join(format!("e{i}")).display().to_string(),
                "--listen-client-urls",
                &format!("http://{client}"),
                "--advertise-client-urls",
                &format!("http://{client}"),
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &peers.join(","),
                "--initial-cluster-state",
                "new",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting etcd (apt-get install etcd-server)")?;
        children.push(child);
        clients.push(client);
    }
    Ok(EtcdCluster {
        children,
        clients,
        _dir: dir,
    })
}

fn etcd_leader(http: &reqwest::blocking::Client, clients: &[String]) -> Option<usize> {
    for (i, c) in clients.iter().enumerate() {
        let status: serde_json::Value = http
            .post(format!("http://{c}/v3/maintenance/status"))
            .json(&serde_json::json!({}))
            .send()
            .ok()?
            .json()
            .ok()?;
        let leader = status["leader"].as_str().map(String::from);
        let me = status["header"]["member_id"].as_str().map(String::from);
        if leader.is_some() && leader == me {
            return Some(i);
        }
    }
    None
}

/// Waits for etcd to take writes, then loads it; the figures line.
fn etcd_load<W: Writer>(
    runtime: &tokio::runtime::Runtime,
    w: &W,
    args: &KvArgs,
    system: &str,
) -> Result<String> {
    let ready = Instant::now();
    while !runtime.block_on(w.put("/bench/ready".into(), b"x".to_vec())) {
        if ready.elapsed() > Duration::from_secs(30) {
            bail!("etcd did not come up");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{system}: {} clients for {} s…", args.clients, args.seconds);
    let line = runtime.block_on(load(w.clone(), args.clients, args.seconds, args.value_size));
    Ok(format!(
        "system={system} members={} clients={} {line}",
        args.masters, args.clients
    ))
}

pub fn run(args: &KvArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.etcd && !args.etcd_gateway {
        let mut cluster = start_etcd(args.masters)?;
        let _guard = runtime.enter();
        let w = EtcdGrpc::new(&cluster.clients)?;
        let mut out = etcd_load(&runtime, &w, args, "etcd-grpc")?;
        if !args.no_failover {
            let http = reqwest::blocking::Client::new();
            let leader = etcd_leader(&http, &cluster.clients).context("no etcd leader found")?;
            let mut rest = cluster.clients.clone();
            rest.remove(leader);
            let survivors = EtcdGrpc::new(&rest)?;
            let children = &mut cluster.children;
            let took = runtime.block_on(failover(&survivors, || {
                let _ = children[leader].kill();
            }));
            out.push_str(&format!(" failover_ms={:.0}", took.as_secs_f64() * 1000.0));
        }
        println!("{out}");
        return Ok(());
    }
    if args.etcd {
        let mut cluster = start_etcd(args.masters)?;
        let w = Etcd {
            http: reqwest::Client::new(),
            endpoints: Arc::new(cluster.clients.clone()),
        };
        let ready = Instant::now();
        while !runtime.block_on(w.put("/bench/ready".into(), b"x".to_vec())) {
            if ready.elapsed() > Duration::from_secs(30) {
                bail!("etcd did not come up");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("etcd: {} clients for {} s…", args.clients, args.seconds);
        let line = runtime.block_on(load(w.clone(), args.clients, args.seconds, args.value_size));
        let mut out = format!(
            "system=etcd-gateway members={} clients={} {line}",
            args.masters, args.clients
        );
        if !args.no_failover {
            let http = reqwest::blocking::Client::new();
            let leader = etcd_leader(&http, &cluster.clients).context("no etcd leader found")?;
            let mut rest = cluster.clients.clone();
            rest.remove(leader);
            let survivors = Etcd {
                http: reqwest::Client::new(),
                endpoints: Arc::new(rest),
            };
            let children = &mut cluster.children;
            let took = runtime.block_on(failover(&survivors, || {
                let _ = children[leader].kill();
            }));
            out.push_str(&format!(" failover_ms={:.0}", took.as_secs_f64() * 1000.0));
        }
        println!("{out}");
        return Ok(());
    }
    let mut masters = meseta_tests::masters::Masters::start(args.masters)?;
    let client = meseta_sdk::KvClient::new(masters.addrs.clone());
    runtime
        .block_on(client.put("/bench/ready", b"x".to_vec(), 0))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("meseta: {} clients for {} s…", args.clients, args.seconds);
    let w = Meseta(client.clone());
    let line = runtime.block_on(load(w.clone(), args.clients, args.seconds, args.value_size));
    let mut out = format!(
        "system=meseta masters={} clients={} {line} disk_mb_per_master={:.1}",
        args.masters,
        args.clients,
        dir_bytes(masters.dir()) as f64 / args.masters.max(1) as f64 / (1024.0 * 1024.0)
    );
    if !args.no_failover {
        let leader = masters.leader()?;
        let took = runtime.block_on(failover(&w, || masters.kill_master(leader)));
        out.push_str(&format!(" failover_ms={:.0}", took.as_secs_f64() * 1000.0));
    }
    println!("{out}");
    Ok(())
}
