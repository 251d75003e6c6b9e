//! `meseta-bench hollow`: many agents in one process against real masters
//! and a real Marathon scheduler, to measure scheduling at a scale this
//! machine cannot host for real (kubemark's hollow nodes, for meseta).
//!
//! Starts `--masters` `meseta master` processes and one `meseta
//! scheduler` (the release binary when built, else the debug one, or
//! `MESETA_BIN`), then `--agents` hollow agents in this process: each is the
//! real agent ([`meseta_agent::BoundAgent::bind_hollow`]) with its own
//! loopback address (127.1.x.y:5051, advertised: a hollow agent serves no
//! HTTP, as this machine allows 20,000 open files per process), id,
//! `--resources`, attributes (`rack`, `zone`), one gRPC session to the
//! leading master, its
//! checkpoint in memory and a [`FakeContainerizer`] for a host: a launch
//! "starts" at once, so the agent reports TASK_STARTING then TASK_RUNNING,
//! and the bench can end any task.
//!
//! Once every agent is registered it POSTs one app of `--instances`
//! instances to `/v2/apps` and measures from the POST:
//!
//! - `placements_per_s`: instances over the time until the last one's
//!   launch reached its agent;
//! - `all_running_ms`: until the scheduler's `/v2/apps/<id>` says every
//!   instance is running (TASK_RUNNING received and acknowledged).
//!
//! With `--inject` it then fails one task (the fake containerizer ends it
//! with exit code 1) and measures until the scheduler runs a replacement
//! (`task_replaced_ms`). (An agent's death at scale waits for the master's
//! agent-unreachable handling; not measured here yet.)
//!
//! The master's and the scheduler's resident memory (`VmRSS`) are read
//! once everything runs. The last line holds every figure:
//! `agents=… instances=… placements_per_s=… all_running_ms=…
//! master_rss_mb=… scheduler_rss_mb=…`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use meseta_agent::containerizer::{FakeContainerizer, Termination};
use meseta_agent::{AgentConfig, BoundAgent, StopMode};
use meseta_tests::http::Api;
use meseta_tests::masters::Masters;
use serde_json::json;

/// Flags of `meseta-bench hollow`.
#[derive(Debug, Clone, clap::Args)]
pub struct HollowArgs {
    /// Hollow agents to run in this process.
    #[arg(long, default_value_t = 100)]
    pub agents: usize,
    /// Instances of the one app deployed.
    #[arg(long, default_value_t = 1000)]
    pub instances: usize,
    /// Masters (Raft replicas) to start.
    #[arg(long, default_value_t = 1)]
    pub masters: usize,
    /// Every hollow agent's --resources.
    #[arg(
        long,
        default_value = "cpus:16;mem:65536;disk:100000;ports:[31000-32000]"
    )]
    pub resources: String,
    /// Each instance's cpus.
    #[arg(long, default_value_t = 0.01)]
    pub cpus: f64,
    /// Each instance's mem (MB).
    #[arg(long, default_value_t = 16.0)]
    pub mem: f64,
    /// After the deployment: fail a task and time its replacement.
    #[arg(long)]
    pub inject: bool,
    /// Give up on any one step after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
}

/// One hollow agent: its fake host and how to stop it.
struct Hollow {
    fake: FakeContainerizer,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Raises the soft (and, as root, the hard) limit of open files: every
/// hollow agent holds a listener and a connection, and the masters
/// started from here inherit the limit for the agents' sessions.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct given, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: want.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return want;
        }
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            return lim.rlim_max;
        }
        lim.rlim_cur
    }
}

/// Resident memory of a process in MB (`VmRSS` of /proc/<pid>/status).
pub fn rss_mb(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kb / 1024.0)
}

/// Uses the release build of `meseta` when there is one.
pub fn prefer_release_binary() {
    if std::env::var_os("MESETA_BIN").is_none() {
        let release = meseta_tests::binary::target_dir()
            .join("release")
            .join("meseta");
        if release.is_file() {
            std::env::set_var("MESETA_BIN", &release);
        }
    }
}

/// Loopback address of hollow agent `i` (127.1.0.0/16: one "host" each,
/// so 10,000 listeners and connections do not run out of ports).
fn agent_ip(i: usize) -> Result<String> {
    ensure!(i < 65_536, "at most 65,536 hollow agents");
    Ok(format!("127.1.{}.{}", i / 256, i % 256))
}

async fn start_agents(args: &HollowArgs, masters: &[String], dir: &Path) -> Result<Vec<Hollow>> {
    let mut agents = Vec::with_capacity(args.agents);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..args.agents {
        let ip = agent_ip(i)?;
        let mut config = AgentConfig::new(
            format!("{ip}:5051").parse().context("agent address")?,
            masters.to_vec(),
            dir.join(format!("agent-{i}")),
        );
        config.resources = Some(args.resources.clone());
        config.attributes = Some(format!("rack:r{};zone:z{}", i % 100, i % 3));
        config.hostname = Some(format!("hollow-{i}"));
        config.isolation = Some("fake".into());
        config.switch_user = false;
        config.stop = StopMode::KeepTasks;
        config.fetcher_cache_size = 0;
        let fake = FakeContainerizer::new();
        set.spawn(async move {
            let bound = BoundAgent::bind_hollow(config, fake.clone())
                .await
                .with_context(|| format!("hollow agent {i}"))?;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                let _ = bound
                    .serve(async move {
                        let _ = rx.await;
                    })
                    .await;
            });
            Ok::<_, anyhow::Error>((
                i,
                Hollow {
                    fake,
                    stop: Some(tx),
                },
            ))
        });
        // Bounded concurrency: each bind makes directories.
        while set.len() >= 64 {
            if let Some(r) = set.join_next().await {
                agents.push(r.context("hollow agent task")??);
            }
        }
    }
    while let Some(r) = set.join_next().await {
        agents.push(r.context("hollow agent task")??);
    }
    agents.sort_by_key(|(i, _)| *i);
    Ok(agents.into_iter().map(|(_, h)| h).collect())
}

/// Polls `f` every `every` until it returns Some, or fails after `timeout`.
async fn poll<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() > timeout {
            bail!("{what}: not after {timeout:?} ({last})");
        }
        tokio::time::sleep(every).await;
    }
}

fn metric(api: &Api, name: &str) -> Result<f64> {
    let snapshot = api.get_json("/metrics/snapshot")?;
    snapshot[name]
        .as_f64()
        .ok_or_else(|| anyhow!("no {name} in /metrics/snapshot"))
}

/// (running, staged) of the app, as the scheduler counts them.
fn app_counts(marathon: &Api, id: &str) -> Result<(u64, u64)> {
    let app = marathon.get_json(&format!("/v2/apps{id}"))?;
    Ok((
        app["app"]["tasksRunning"].as_u64().unwrap_or(0),
        app["app"]["tasksStaged"].as_u64().unwrap_or(0),
    ))
}

/// Runs the bench and prints its figures.
pub fn run(args: &HollowArgs) -> Result<()> {
    ensure!(args.agents > 0, "--agents must be at least 1");
    let files = raise_nofile(1 << 20);
    prefer_release_binary();
    println!(
        "open files limit {files}; starting {} master(s) and a scheduler ({})",
        args.masters,
        meseta_tests::meseta_binary().display()
    );
    let mut masters = Masters::start(args.masters)?;
    let scheduler_addr = masters.start_scheduler()?;
    let marathon = Api::new(&scheduler_addr);
    let leader = masters.leader()?;
    let leader_api = Api::new(&masters.addrs[leader]);
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let step = Duration::from_secs(args.timeout);
    let id = "/bench/hollow";

    let result = runtime.block_on(async {
        let started = Instant::now();
        let mut agents = start_agents(args, &masters.addrs, dir.path()).await?;
        println!(
            "{} hollow agents bound in {:.1} s",
            agents.len(),
            started.elapsed().as_secs_f64()
        );
        let n = args.agents as f64;
        poll(
            "every agent registered",
            step,
            Duration::from_millis(200),
            || {
                let active = metric(&leader_api, "master/slaves_active")?;
                Ok((active >= n).then_some(()))
            },
        )
        .await?;
        let registered = started.elapsed();
        println!(
            "{} agents registered in {:.1} s",
            args.agents,
            registered.as_secs_f64()
        );
        let master_pid = masters
            .pids()
            .into_iter()
            .find(|(name, _)| name == &format!("master {leader}"))
            .map(|(_, pid)| pid);
        let scheduler_pid = masters
            .pids()
            .into_iter()
            .find(|(name, _)| name.starts_with("scheduler"))
            .map(|(_, pid)| pid);
        let idle_master_rss = master_pid.map(rss_mb).transpose()?;

        let m = args.instances;
        let start = Instant::now();
        let r = marathon.post_json(
            "/v2/apps",
            &json!({"id": id, "cmd": "sleep 100000", "instances": m,
                    "cpus": args.cpus, "mem": args.mem, "portDefinitions": []}),
        )?;
        ensure!(r.status == 201, "POST /v2/apps: {r}");
        let fakes: Vec<FakeContainerizer> = agents.iter().map(|a| a.fake.clone()).collect();
        let launched = |fakes: &[FakeContainerizer]| -> usize {
            fakes.iter().map(FakeContainerizer::launch_count).sum()
        };
        let mut last_print = Instant::now();
        let placed = poll(
            "every instance placed",
            step,
            Duration::from_millis(5),
            || {
                let l = launched(&fakes);
                if last_print.elapsed() > Duration::from_secs(2) {
                    println!(
                        "  {l} of {m} launched after {:.1} s",
                        start.elapsed().as_secs_f64()
                    );
                    last_print = Instant::now();
                }
                Ok((l >= m).then(|| start.elapsed()))
            },
        )
        .await?;
        println!(
            "{m} instances placed in {:.0} ms",
            placed.as_secs_f64() * 1000.0
        );
        let every = if m >= 10_000 { 100 } else { 10 };
        let running = poll(
            "every instance running at the scheduler",
            step,
            Duration::from_millis(every),
            || {
                let (running, _) = app_counts(&marathon, id)?;
                Ok((running as usize >= m).then(|| start.elapsed()))
            },
        )
        .await?;
        println!(
            "{m} instances running in {:.0} ms",
            running.as_secs_f64() * 1000.0
        );
        let mut line = format!(
            "agents={} instances={m} register_s={:.1} placements_per_s={:.0} all_running_ms={:.0}",
            args.agents,
            registered.as_secs_f64(),
            m as f64 / placed.as_secs_f64(),
            running.as_secs_f64() * 1000.0
        );
        if let Some(rss) = idle_master_rss {
            line.push_str(&format!(" master_rss_mb_before={rss:.1}"));
        }
        if let Some(pid) = master_pid {
            line.push_str(&format!(" master_rss_mb={:.1}", rss_mb(pid)?));
        }
        if let Some(pid) = scheduler_pid {
            line.push_str(&format!(" scheduler_rss_mb={:.1}", rss_mb(pid)?));
        }
        if args.inject {
            line.push_str(&inject(&agents, &marathon, id, m, step).await?);
        }
        for a in &mut agents {
            if let Some(stop) = a.stop.take() {
                let _ = stop.send(());
            }
        }
        Ok::<_, anyhow::Error>(line)
    });
    match result {
        Ok(line) => {
            drop(masters);
            runtime.shutdown_timeout(Duration::from_secs(5));
            println!("{line}");
            Ok(())
        }
        Err(e) => {
            masters.dump_logs();
            Err(e)
        }
    }
}

/// Fails one task; returns the figure.
async fn inject(
    agents: &[Hollow],
    marathon: &Api,
    id: &str,
    m: usize,
    step: Duration,
) -> Result<String> {
    let fakes: Vec<FakeContainerizer> = agents.iter().map(|a| a.fake.clone()).collect();
    let launched: usize = fakes.iter().map(FakeContainerizer::launch_count).sum();
    let victim = fakes
        .iter()
        .find_map(|f| f.running().into_iter().next().map(|c| (f.clone(), c)))
        .context("no running task to fail")?;
    let start = Instant::now();
    victim.0.exit(
        &victim.1,
        Termination {
            exit_code: Some(1),
            signal: None,
            oom_killed: false,
            message: "failed by meseta-bench hollow --inject".into(),
        },
    );
    let replaced = poll(
        "the failed task replaced",
        step,
        Duration::from_millis(5),
        || {
            let now: usize = fakes.iter().map(FakeContainerizer::launch_count).sum();
            let (running, _) = app_counts(marathon, id)?;
            Ok((now > launched && running as usize >= m).then(|| start.elapsed()))
        },
    )
    .await?;
    println!(
        "a failed task was replaced and running in {:.0} ms",
        replaced.as_secs_f64() * 1000.0
    );
    Ok(format!(
        " task_replaced_ms={:.0}",
        replaced.as_secs_f64() * 1000.0
    ))
}
