//! `meseta-bench dns`: how fast meseta's DNS answers with 1,000 apps, and
//! how soon a record follows a task that moved.
//!
//! - `--source cluster` (the default): starts `meseta up` (the release
//!   binary when built), POSTs `--apps` one-instance apps with one host
//!   port each (`sleep` tasks), waits until every app's A and SRV names
//!   answer, then loads the cluster's DNS.
//! - `--source store`: no cluster; the bench fills a `meseta-dns` record
//!   store through its public API with the same shape (one task per app on
//!   one agent) and serves it in-process. The bench's own build (debug or
//!   release) then decides the speed.
//!
//! The load alternates `<app>.marathon.mesos A` and
//! `_<app>._tcp.marathon.mesos SRV` over every app: with dnsperf
//! (Debian's, when installed; `--loader builtin` forces the bench's own
//! closed-loop UDP clients). Queries per second and p50/p99 latency come
//! from dnsperf's per-query report (`-v`), or from the built-in clients'
//! timings. With `--source cluster`, `--moves` tasks are then killed
//! through `/v2` one after the other, and the time from the replacement's
//! TASK_RUNNING on Marathon's event stream to its SRV record in the DNS
//! (polled every millisecond) is measured, as is the time from the kill.
//!
//! Last line: `source=… loader=… apps=… qps=… p50_ms=… p99_ms=…
//! lost=… [follow_ms_p50=… follow_ms_max=… follow_from_kill_ms_p50=…
//! rebuilds=… rebuild_ms_mean=…]` (the last two from the DNS' /metrics).

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use meseta_dns::records::{AgentView, ClusterView, FrameworkView, MasterView, TaskView};
use meseta_dns::{BoundDns, DnsConfig, DnsMetrics, RecordStore};
use meseta_tests::{Cluster, ClusterOptions};
use serde_json::json;

use crate::launch::percentile;

/// Where the records come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// A real `meseta up` with the apps deployed.
    Cluster,
    /// The record store filled in-process.
    Store,
}

/// What generates the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Loader {
    /// dnsperf when installed, else builtin.
    Auto,
    Dnsperf,
    Builtin,
}

/// Flags of `meseta-bench dns`.
#[derive(Debug, Clone, clap::Args)]
pub struct DnsArgs {
    #[arg(long, value_enum, default_value = "cluster")]
    pub source: Source,
    #[arg(long, value_enum, default_value = "auto")]
    pub loader: Loader,
    /// Apps (one task, one host port each).
    #[arg(long, default_value_t = 1000)]
    pub apps: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent clients (dnsperf -c; built-in: threads, one query in
    /// flight each).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Queries in flight at most (dnsperf -q).
    #[arg(long, default_value_t = 100)]
    pub outstanding: usize,
    /// Task moves whose record-follow latency is measured (cluster only).
    #[arg(long, default_value_t = 5)]
    pub moves: usize,
    /// The meseta binary (default: target/release/meseta if built).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    #[arg(long, default_value = "posix")]
    pub isolation: String,
}

fn app_id(i: usize) -> String {
    format!("/app-{i}")
}

fn app_names(apps: usize) -> Vec<(String, &'static str)> {
    (0..apps)
        .flat_map(|i| {
            [
                (format!("app-{i}.marathon.mesos"), "A"),
                (format!("_app-{i}._tcp.marathon.mesos"), "SRV"),
            ]
        })
        .collect()
}

/// A DNS query for `name` of type `qtype` (1 A, 33 SRV), id `id`.
fn query_packet(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    p
}

fn qtype_of(t: &str) -> u16 {
    if t == "SRV" {
        33
    } else {
        1
    }
}

/// One query over UDP: (rcode, answer count, latency).
fn ask(socket: &UdpSocket, id: u16, name: &str, qtype: u16) -> Result<(u8, u16, Duration)> {
    let packet = query_packet(id, name, qtype);
    let started = Instant::now();
    socket.send(&packet)?;
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.recv(&mut buf)?;
        if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            return Ok((
                buf[3] & 0x0f,
                u16::from_be_bytes([buf[6], buf[7]]),
                started.elapsed(),
            ));
        }
    }
}

fn client_socket(server: SocketAddr) -> Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.connect(server)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(s)
}

/// Every name answers NOERROR with at least one record.
fn all_answer(server: SocketAddr, names: &[(String, &'static str)]) -> Result<usize> {
    let s = client_socket(server)?;
    let mut missing = 0;
    for (i, (name, t)) in names.iter().enumerate() {
        match ask(&s, i as u16, name, qtype_of(t)) {
            Ok((0, n, _)) if n > 0 => {}
            _ => missing += 1,
        }
    }
    Ok(missing)
}

/// Load results.
struct Load {
    qps: f64,
    latencies_ms: Vec<f64>,
    lost: u64,
}

fn builtin_load(
    server: SocketAddr,
    names: &[(String, &'static str)],
    args: &DnsArgs,
) -> Result<Load> {
    let names = Arc::new(names.to_vec());
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.clients)
        .map(|w| {
            let names = names.clone();
            std::thread::spawn(move || -> Result<(Vec<f64>, u64)> {
                let s = client_socket(server)?;
                let (mut lat, mut lost) = (Vec::new(), 0u64);
                let mut i = w;
                while Instant::now() < deadline {
                    let (name, t) = &names[i % names.len()];
                    match ask(&s, i as u16, name, qtype_of(t)) {
                        Ok((_, _, d)) => lat.push(d.as_secs_f64() * 1e3),
                        Err(_) => lost += 1,
                    }
                    i += stride(w);
                }
                Ok((lat, lost))
            })
        })
        .collect();
    let mut latencies_ms = Vec::new();
    let mut lost = 0;
    for w in workers {
        let (l, n) = w.join().map_err(|_| anyhow!("a load thread panicked"))??;
        latencies_ms.extend(l);
        lost += n;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Load {
        qps: latencies_ms.len() as f64 / elapsed,
        latencies_ms,
        lost,
    })
}

/// Each built-in client walks the names with its own stride, so the
/// clients do not ask the same name at the same time.
fn stride(worker: usize) -> usize {
    7 + 2 * worker
}

fn dnsperf_load(
    server: SocketAddr,
    names: &[(String, &'static str)],
    args: &DnsArgs,
) -> Result<Load> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("queries.txt");
    let text: String = names.iter().map(|(n, t)| format!("{n} {t}\n")).collect();
    std::fs::write(&file, text)?;
    let out = Command::new("dnsperf")
        .args(["-s", &server.ip().to_string()])
        .args(["-p", &server.port().to_string()])
        .arg("-d")
        .arg(&file)
        .args(["-l", &args.seconds.to_string()])
        .args(["-c", &args.clients.to_string()])
        .args(["-q", &args.outstanding.to_string()])
        .args(["-t", "2", "-v"])
        .output()
        .context("running dnsperf")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "dnsperf failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            stdout.lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
    }
    let field = |key: &str| -> Option<f64> {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let qps = field("Queries per second:").ok_or_else(|| anyhow!("no qps in dnsperf's output"))?;
    let lost = field("Queries lost:").unwrap_or(0.0) as u64;
    // `-v`: one line per completed query, `> RCODE name type latency`.
    let latencies_ms: Vec<f64> = stdout
        .lines()
        .filter(|l| l.starts_with("> ") && !l.starts_with("> T "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|s| s * 1e3)
        .collect();
    if latencies_ms.is_empty() {
        bail!("dnsperf reported no per-query latency");
    }
    Ok(Load {
        qps,
        latencies_ms,
        lost,
    })
}

fn dnsperf_installed() -> bool {
    Command::new("dnsperf").arg("-h").output().is_ok()
}

/// Serves `apps` apps' records from an in-process store.
fn serve_store(apps: usize) -> Result<(tokio::runtime::Runtime, SocketAddr)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut view = ClusterView {
        leader: Some(MasterView {
            ip: "127.0.0.1".parse()?,
            port: 5050,
        }),
        ..ClusterView::default()
    };
    view.masters = view.leader.clone().into_iter().collect();
    view.agents.insert(
        "agent-bench-s0".into(),
        AgentView {
            hostname: "localhost".into(),
            ips: vec!["127.0.0.1".parse()?],
            port: 5051,
        },
    );
    view.frameworks.insert(
        "framework-bench".into(),
        FrameworkView {
            name: "marathon".into(),
            ips: Vec::new(),
        },
    );
    for i in 0..apps {
        view.tasks.insert(
            format!("app-{i}.{i:08}"),
            TaskView {
                name: format!("app-{i}"),
                framework_id: "framework-bench".into(),
                agent_id: "agent-bench-s0".into(),
                running: true,
                ports: vec![10000 + (i % 20000) as u16],
            },
        );
    }
    let store = Arc::new(RecordStore::new("mesos", Arc::new(DnsMetrics::new())));
    let built = Instant::now();
    store.publish(&view);
    println!(
        "record store of {apps} apps built in {:.1} ms",
        built.elapsed().as_secs_f64() * 1e3
    );
    let dns = runtime.block_on(BoundDns::bind_with_store(
        DnsConfig::new("127.0.0.1:0".parse()?, Vec::new()),
        store,
        false,
    ))?;
    let address = dns.address();
    runtime.spawn(dns.serve(std::future::pending()));
    Ok((runtime, address))
}

fn deploy_apps(cluster: &Cluster, apps: usize) -> Result<()> {
    let started = Instant::now();
    for i in 0..apps {
        let reply = cluster.marathon().post_json(
            "/v2/apps",
            &json!({"id": app_id(i), "cmd": "sleep 100000", "instances": 1,
                    "cpus": 0.01, "mem": 16, "portDefinitions": [{"port": 0}]}),
        )?;
        if reply.status != 201 {
            bail!("POST {}: {reply}", app_id(i));
        }
        if (i + 1) % 200 == 0 {
            println!(
                "{} apps posted ({:.0} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let apps_now = cluster.marathon().get_json("/v2/apps")?;
        let running: u64 = apps_now["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["tasksRunning"].as_u64())
            .sum();
        if running as usize >= apps {
            println!(
                "{apps} apps running {:.0} s after the first POST",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{running} of {apps} apps running after 600 s");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Kills one task of `app` and times the DNS following the replacement.
/// Returns (ms after Marathon's TASK_RUNNING event, ms after the kill).
fn measure_move(cluster: &Cluster, server: SocketAddr, i: usize) -> Result<(f64, f64)> {
    let id = app_id(i);
    let srv_name = format!("_app-{i}._tcp.marathon.mesos");
    let tasks = cluster.app_tasks(&id)?;
    let old = tasks
        .first()
        .and_then(|t| t["id"].as_str())
        .ok_or_else(|| anyhow!("{id} has no task"))?
        .to_string();
    let socket = client_socket(server)?;
    let before = srv_answer(&socket, &srv_name)?;
    let events = cluster.events("?event_type=status_update_event")?;
    let killed = Instant::now();
    let reply = cluster
        .marathon()
        .delete(&format!("/v2/apps{id}/tasks/{old}"))?;
    if !reply.is_success() {
        bail!("kill {old}: {reply}");
    }
    let deadline = killed + Duration::from_secs(60);
    let seen = loop {
        let now = srv_answer(&socket, &srv_name)?;
        if !now.is_empty() && now != before {
            break Instant::now();
        }
        if Instant::now() > deadline {
            bail!("{srv_name} did not follow the move in 60 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let running = events
        .next_matching(Duration::from_secs(30), |e| {
            e.data["appId"] == id.as_str()
                && e.data["taskStatus"] == "TASK_RUNNING"
                && e.data["taskId"] != old.as_str()
        })
        .ok_or_else(|| anyhow!("no TASK_RUNNING event for {id}'s replacement"))?;
    let after_event = if seen >= running.received {
        (seen - running.received).as_secs_f64() * 1e3
    } else {
        -((running.received - seen).as_secs_f64() * 1e3)
    };
    Ok((after_event, (seen - killed).as_secs_f64() * 1e3))
}

/// The raw answer section of an SRV query (compared, not parsed).
fn srv_answer(socket: &UdpSocket, name: &str) -> Result<Vec<u8>> {
    let id: u16 = 4242;
    socket.send(&query_packet(id, name, 33))?;
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.recv(&mut buf)?;
        if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            let answers = u16::from_be_bytes([buf[6], buf[7]]);
            return Ok(if answers == 0 {
                Vec::new()
            } else {
                buf[12..n].to_vec()
            });
        }
    }
}

/// Runs the bench and prints its figures.
pub fn run(args: &DnsArgs) -> Result<()> {
    let loader = match args.loader {
        Loader::Auto if dnsperf_installed() => Loader::Dnsperf,
        Loader::Auto => Loader::Builtin,
        l => l,
    };
    let names = app_names(args.apps);
    let mut cluster = None;
    let mut _runtime = None;
    let (server, source) = match args.source {
        Source::Store => {
            let (rt, address) = serve_store(args.apps)?;
            _runtime = Some(rt);
            let build = if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            };
            (address, format!("store({build})"))
        }
        Source::Cluster => {
            let binary = args
                .binary
                .clone()
                .unwrap_or_else(crate::launch::default_binary);
            println!("starting meseta up ({})", binary.display());
            let ports = (12000, 12000 + args.apps.max(100) + 100);
            let c = Cluster::try_start(ClusterOptions {
                binary: Some(binary.clone()),
                isolation: Some(args.isolation.clone()),
                resources: Some(format!(
                    "cpus:64;mem:200000;disk:10000;ports:[{}-{}]",
                    ports.0, ports.1
                )),
                ..ClusterOptions::default()
            })
            .context("starting meseta up")?;
            deploy_apps(&c, args.apps)?;
            let address: SocketAddr = c.dns_address().parse()?;
            let build = if binary.components().any(|p| p.as_os_str() == "release") {
                "release"
            } else {
                "debug"
            };
            cluster = Some(c);
            (address, format!("cluster({build})"))
        }
    };
    let started = Instant::now();
    loop {
        let missing = all_answer(server, &names)?;
        if missing == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("{missing} of {} names do not answer", names.len());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "all {} names answer; loading {server} for {} s with {loader:?}",
        names.len(),
        args.seconds
    );
    let load = match loader {
        Loader::Dnsperf => dnsperf_load(server, &names, args)?,
        _ => builtin_load(server, &names, args)?,
    };
    let mut lat = load.latencies_ms.clone();
    lat.sort_by(|a, b| a.total_cmp(b));
    let mut line = format!(
        "source={source} loader={} apps={} qps={:.0} p50_ms={:.3} p99_ms={:.3} lost={}",
        match loader {
            Loader::Dnsperf => "dnsperf",
            _ => "builtin",
        },
        args.apps,
        load.qps,
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        load.lost
    );
    if let Some(c) = &cluster {
        let mut follow = Vec::new();
        let mut from_kill = Vec::new();
        let mut seen = HashSet::new();
        for m in 0..args.moves {
            let i = (m * 97) % args.apps.max(1);
            if !seen.insert(i) {
                continue;
            }
            let (after_event, after_kill) = measure_move(c, server, i)?;
            println!("move {m}: DNS {after_event:.1} ms after Marathon's TASK_RUNNING, {after_kill:.0} ms after the kill");
            follow.push(after_event);
            from_kill.push(after_kill);
        }
        if !follow.is_empty() {
            follow.sort_by(|a, b| a.total_cmp(b));
            from_kill.sort_by(|a, b| a.total_cmp(b));
            line.push_str(&format!(
                " follow_ms_p50={:.1} follow_ms_max={:.1} follow_from_kill_ms_p50={:.0}",
                percentile(&follow, 50.0),
                follow[follow.len() - 1],
                percentile(&from_kill, 50.0)
            ));
        }
    }
    if let Some(c) = &cluster {
        let metrics = c.dns_http().get("/metrics")?.body;
        let value = |name: &str| -> Option<f64> {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        };
        if let (Some(sum), Some(count)) = (
            value("meseta_dns_record_rebuild_seconds_sum"),
            value("meseta_dns_record_rebuild_seconds_count"),
        ) {
            line.push_str(&format!(
                " rebuilds={count:.0} rebuild_ms_mean={:.2}",
                sum / count.max(1.0) * 1e3
            ));
        }
    }
    println!("{line}");
    Ok(())
}
