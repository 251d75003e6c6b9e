//! A local cluster: one `meseta up` process (master, agent and scheduler) on
//! free loopback ports, in a temporary data dir.
//!
//! The cluster owns the process: dropping it sends SIGTERM (meseta then
//! kills its tasks), waits a few seconds, escalates to SIGKILL, reaps it,
//! kills any task process it left behind and removes the data dir. When the
//! drop happens during a panic (a failed assertion), the tail of meseta's log
//! is printed so the failure comes with the product's side of the story.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::events::EventStream;
use crate::http::{Api, Reply};
use crate::procfs::{self, Process};
use crate::wait::{wait_for, wait_until, DEADLINE, POLL};

/// How long a stopping cluster gets after SIGTERM before SIGKILL. Covers the
/// default task kill grace period (3 s) with room to spare.
pub const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// Lines of meseta's log printed when a test fails.
const LOG_TAIL_LINES: usize = 80;

/// How a cluster is started.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// The `meseta` binary (default: [`crate::meseta_binary`]).
    pub binary: Option<PathBuf>,
    /// `--resources` of the agent (default: 4 cpus, 4 GiB, a block of 100
    /// task ports of this cluster's own, see [`Cluster::task_ports`]).
    pub resources: Option<String>,
    /// `--isolation` (default: `$MESETA_E2E_ISOLATION` if set, else the
    /// agent's choice: linux as root with cgroups, posix otherwise).
    pub isolation: Option<String>,
    /// Extra environment for the meseta process (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
}

/// A running `meseta up`.
pub struct Cluster {
    child: Option<Child>,
    /// Dropped after the process is stopped.
    dir: Option<tempfile::TempDir>,
    log: PathBuf,
    master: Api,
    agent: Api,
    marathon: Api,
    master_addr: String,
    task_ports: (u16, u16),
    /// The DNS server's address (UDP and TCP) and its HTTP API.
    dns_addr: String,
    dns_http: Api,
    /// meseta's processes when it was last told to stop: killed on drop if
    /// any survived.
    leftovers: Vec<Process>,
}

/// `n` distinct free loopback ports. They are free when this returns; a
/// process started right after may still lose one to a race, which
/// [`Cluster::start`] handles by retrying.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding a free loopback port")?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .context("reading a bound port")
        })
        .collect()
}

/// A block of 100 task ports for one cluster, distinct from the blocks of the
/// other clusters of this process (so parallel tests' tasks never compete for
/// a host port) and below the kernel's ephemeral range (32768+), so no
/// client socket takes one either.
fn task_port_block() -> (u16, u16) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // 37 is coprime with 90: 90 clusters in a row get distinct blocks.
    let index = (std::process::id().wrapping_add(n.wrapping_mul(37))) % 90;
    let base = 22000 + (index as u16) * 100;
    (base, base + 99)
}

impl Cluster {
    /// Starts a cluster with default options; panics (with the log) if it
    /// does not come up.
    pub fn start() -> Cluster {
        Cluster::start_with(ClusterOptions::default())
    }

    /// Starts a cluster; panics (with the log) if it does not come up.
    pub fn start_with(options: ClusterOptions) -> Cluster {
        match Cluster::try_start(options) {
            Ok(c) => c,
            Err(e) => panic!("the cluster did not start: {e:#}"),
        }
    }

    /// Starts `meseta up` and waits until the agent is registered and the
    /// scheduler subscribed. Retries on fresh ports when a port was taken
    /// between picking and binding it.
    pub fn try_start(options: ClusterOptions) -> Result<Cluster> {
        let mut last = None;
        for _attempt in 0..3 {
            match Cluster::start_once(&options) {
                Ok(c) => return Ok(c),
                Err(StartError::PortTaken(e)) => last = Some(e),
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("could not start the cluster")))
    }

    fn start_once(options: &ClusterOptions) -> Result<Cluster, StartError> {
        let binary = options.binary.clone().unwrap_or_else(crate::meseta_binary);
        let dir = tempfile::Builder::new()
            .prefix("meseta-e2e-")
            .tempdir()
            .context("creating the cluster's data dir")?;
        let ports = free_ports(5)?;
        let (dns_addr, dns_http_addr) = (
            format!("127.0.0.1:{}", ports[3]),
            format!("127.0.0.1:{}", ports[4]),
        );
        let (master_addr, agent_addr, scheduler_addr) = (
            format!("127.0.0.1:{}", ports[0]),
            format!("127.0.0.1:{}", ports[1]),
            format!("127.0.0.1:{}", ports[2]),
        );
        let task_ports = task_port_block();
        let resources = options.resources.clone().unwrap_or_else(|| {
            format!(
                "cpus:4;mem:4096;disk:4096;ports:[{}-{}]",
                task_ports.0, task_ports.1
            )
        });
        let log = dir.path().join("meseta.log");
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let log_err = log_file.try_clone().context("duplicating the log file")?;
        let mut cmd = Command::new(&binary);
        cmd.arg("up")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--master-listen", &master_addr])
            .args(["--agent-listen", &agent_addr])
            .args(["--scheduler-listen", &scheduler_addr])
            .args(["--resources", &resources])
            .args(["--dns-listen", &dns_addr])
            .args(["--dns-http-listen", &dns_http_addr]);
        let forced = std::env::var("MESETA_E2E_ISOLATION")
            .ok()
            .filter(|s| !s.is_empty());
        if let Some(isolation) = options.isolation.as_ref().or(forced.as_ref()) {
            cmd.args(["--isolation", isolation]);
        }
        cmd.env("NO_COLOR", "1")
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        // SAFETY: runs in the forked child before exec; prctl is a single
        // async-signal-safe system call and nothing is allocated. It makes
        // meseta stop (and kill its tasks) if the test process dies without
        // running Drop, e.g. when `cargo test` is interrupted.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} up", binary.display()))?;
        let mut cluster = Cluster {
            child: Some(child),
            dir: Some(dir),
            log,
            master: Api::new(&master_addr),
            agent: Api::new(&agent_addr),
            marathon: Api::new(&scheduler_addr),
            master_addr,
            task_ports,
            dns_addr,
            dns_http: Api::new(&dns_http_addr),
            leftovers: Vec::new(),
        };
        match cluster.wait_ready() {
            Ok(()) => Ok(cluster),
            Err(e) => {
                let log = cluster.log_text();
                let taken = log.contains("in use") || log.contains("AddrInUse");
                let e = e.context(format!(
                    "meseta up did not come up; its log:\n{}",
                    tail(&log, LOG_TAIL_LINES)
                ));
                // Dropping stops the process and removes the dir.
                drop(cluster);
                Err(if taken {
                    StartError::PortTaken(e)
                } else {
                    StartError::Other(e)
                })
            }
        }
    }

    fn wait_ready(&mut self) -> Result<()> {
        wait_until("the cluster to come up", DEADLINE, POLL, || {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("meseta up exited early with {status}"));
                }
            }
            let state = self
                .master
                .get_json("/master/state")
                .map_err(|e| format!("{e:#}"))?;
            let agents = state["slaves"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|s| s["active"] == true).count());
            let frameworks = state["frameworks"].as_array().map_or(0, Vec::len);
            if agents == 0 || frameworks == 0 {
                return Err(format!(
                    "master sees {agents} active agents and {frameworks} frameworks"
                ));
            }
            self.agent.get("/health").map_err(|e| format!("{e:#}"))?;
            let ping = self.marathon.get("/ping").map_err(|e| format!("{e:#}"))?;
            if !ping.is_success() {
                return Err(format!("scheduler /ping: {ping}"));
            }
            Ok(())
        })
        .map_err(|e| {
            if self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
            {
                e.context("meseta up exited")
            } else {
                e
            }
        })
    }

    /// The scheduler's Marathon API.
    pub fn marathon(&self) -> &Api {
        &self.marathon
    }

    /// The master's operator API.
    pub fn master(&self) -> &Api {
        &self.master
    }

    /// The agent's API.
    pub fn agent(&self) -> &Api {
        &self.agent
    }

    /// `host:port` of the master (for `meseta task log --master`).
    pub fn master_address(&self) -> &str {
        &self.master_addr
    }

    /// The task port range given to the agent (inclusive).
    pub fn task_ports(&self) -> (u16, u16) {
        self.task_ports
    }

    /// The address of the cluster's DNS server (UDP and TCP), `127.0.0.1:port`.
    pub fn dns_address(&self) -> &str {
        &self.dns_addr
    }

    /// The DNS server's HTTP API (mesos-dns' `/v1/…`).
    pub fn dns_http(&self) -> &Api {
        &self.dns_http
    }

    /// The pid of the `meseta up` process (0 once it was stopped).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// The cluster's data dir.
    pub fn data_dir(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).expect(
            "the data dir is only taken by Drop, so it exists while the cluster can be used",
        )
    }

    /// meseta's whole log so far.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            // Keep the last 256 KiB at most.
            if let Ok(len) = f.metadata().map(|m| m.len()) {
                let _ = f.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)));
            }
            let mut raw = Vec::new();
            let _ = f.read_to_end(&mut raw);
            text = String::from_utf8_lossy(&raw).into_owned();
        }
        strip_ansi(&text)
    }

    /// The last `lines` lines of meseta's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_text(), lines)
    }

    /// The agent's isolation (`linux` or `posix`), from its `/state`.
    pub fn isolation(&self) -> Result<String> {
        let state = self.agent.get_json("/state")?;
        Ok(state["isolation"].as_str().unwrap_or_default().to_string())
    }

    /// An event stream of the scheduler; `query` like `?event_type=x` or "".
    pub fn events(&self, query: &str) -> Result<EventStream> {
        EventStream::connect(self.marathon.base(), query)
    }

    // -- Marathon --------------------------------------------------------

    /// POST /v2/apps, which must answer 201; returns the created app.
    pub fn create_app(&self, app: &Value) -> Result<Value> {
        let reply = self.marathon.post_json("/v2/apps", app)?;
        if reply.status != 201 {
            bail!("POST /v2/apps {app}: expected 201, got {reply}");
        }
        Ok(reply.json())
    }

    /// GET /v2/apps{id}: the app, or `None` on 404.
    pub fn app(&self, id: &str) -> Result<Option<Value>> {
        let reply = self.marathon.get(&format!("/v2/apps{id}"))?;
        match reply.status {
            200 => Ok(Some(reply.json()["app"].clone())),
            404 => Ok(None),
            _ => bail!("GET /v2/apps{id}: {reply}"),
        }
    }

    /// GET /v2/apps{id}/tasks.
    pub fn app_tasks(&self, id: &str) -> Result<Vec<Value>> {
        let body = self.marathon.get_json(&format!("/v2/apps{id}/tasks"))?;
        Ok(body["tasks"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until app `id` runs exactly `n` tasks, all TASK_RUNNING, and
    /// counts them in `tasksRunning`; returns the tasks.
    pub fn wait_running(&self, id: &str, n: usize) -> Result<Vec<Value>> {
        wait_for(&format!("{n} running tasks of {id}"), || {
            let tasks = self.app_tasks(id).map_err(|e| format!("{e:#}"))?;
            let running = tasks
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .count();
            if tasks.len() != n || running != n {
                return Err(format!(
                    "{} tasks, {running} running: {}",
                    tasks.len(),
                    Value::Array(tasks)
                ));
            }
            let app = self
                .app(id)
                .map_err(|e| format!("{e:#}"))?
                .ok_or("the app is gone")?;
            if app["tasksRunning"] != n {
                return Err(format!("tasksRunning is {}", app["tasksRunning"]));
            }
            Ok(tasks)
        })
    }

    /// Waits until no deployment of app `id` is listed.
    pub fn wait_deployments_done(&self, id: &str) -> Result<()> {
        wait_for(&format!("the deployments of {id} to finish"), || {
            let list = self
                .marathon
                .get_json("/v2/deployments")
                .map_err(|e| format!("{e:#}"))?;
            let mine: Vec<&Value> = list
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|d| {
                            d["affectedApps"]
                                .as_array()
                                .is_some_and(|x| x.iter().any(|a| a == id))
                        })
                        .collect()
                })
                .unwrap_or_default();
            if mine.is_empty() {
                Ok(())
            } else {
                Err(format!("{mine:?}"))
            }
        })
    }

    /// DELETE /v2/apps{id} (with `force=true` when `force`).
    pub fn delete_app(&self, id: &str, force: bool) -> Result<Reply> {
        let q = if force { "?force=true" } else { "" };
        self.marathon.delete(&format!("/v2/apps{id}{q}"))
    }

    // -- master and agent ------------------------------------------------

    /// GET /master/state.
    pub fn master_state(&self) -> Result<Value> {
        self.master.get_json("/master/state")
    }

    /// A task from the master's `completed_tasks` of any framework.
    pub fn master_completed_task(&self, task_id: &str) -> Result<Option<Value>> {
        let state = self.master_state()?;
        Ok(state["frameworks"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|f| f["completed_tasks"].as_array().cloned().unwrap_or_default())
            .find(|t| t["id"] == task_id))
    }

    /// The agent's record of a task (from `/state`, live or completed).
    pub fn agent_task(&self, task_id: &str) -> Result<Value> {
        let state = self.agent.get_json("/state")?;
        for list in ["tasks", "completed_tasks"] {
            if let Some(t) = state[list]
                .as_array()
                .and_then(|a| a.iter().find(|t| t["id"] == task_id))
            {
                return Ok(t.clone());
            }
        }
        bail!("the agent does not know task {task_id}")
    }

    /// The host pid of a task's init process (the agent's `pid`).
    pub fn task_init_pid(&self, task_id: &str) -> Result<i32> {
        let t = self.agent_task(task_id)?;
        t["pid"]
            .as_i64()
            .filter(|p| *p > 0)
            .map(|p| p as i32)
            .ok_or_else(|| anyhow!("the agent reports no pid for task {task_id}: {t}"))
    }

    /// Every live process of this cluster: meseta's descendants (task inits
    /// and everything under them).
    pub fn processes(&self) -> Vec<Process> {
        match self.pid() {
            0 => Vec::new(),
            pid => procfs::descendants(pid),
        }
    }

    /// Live processes of this cluster whose command line is exactly `argv`.
    pub fn processes_running(&self, argv: &[&str]) -> Vec<Process> {
        self.processes()
            .into_iter()
            .filter(|p| p.cmdline() == argv)
            .collect()
    }

    /// The sandbox directory of a task (the agent's `directory`).
    pub fn task_sandbox(&self, task_id: &str) -> Result<PathBuf> {
        let t = self.agent_task(task_id)?;
        t["directory"]
            .as_str()
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("the agent reports no sandbox for task {task_id}: {t}"))
    }

    /// Runs `meseta <args>` (the CLI) to completion; returns its output.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        let binary = crate::meseta_binary();
        Command::new(&binary)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} {}", binary.display(), args.join(" ")))
    }

    // -- stopping --------------------------------------------------------

    /// Sends SIGTERM (what Ctrl-C does) and waits up to `patience` for the
    /// process to exit; returns its exit status (the process is then reaped
    /// and [`Cluster::pid`] is 0), or `None` if it still runs. Whatever it
    /// started that survives is killed when the cluster is dropped.
    pub fn terminate(&mut self, patience: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        self.leftovers
            .extend(procfs::descendants(child.id() as i32));
        let status = match child.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => {
                procfs::signal(child.id() as i32, Signal::SIGTERM);
                let start = Instant::now();
                loop {
                    if let Ok(Some(status)) = child.try_wait() {
                        break Some(status);
                    }
                    if start.elapsed() >= patience {
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Stops the cluster: SIGTERM, SIGKILL after [`STOP_PATIENCE`], reap,
    /// then SIGKILL every process it had started that still runs.
    fn stop(&mut self) {
        if self.child.is_some() && self.terminate(STOP_PATIENCE).is_none() {
            if let Some(mut child) = self.child.take() {
                eprintln!(
                    "meseta up (pid {}) did not stop within {STOP_PATIENCE:?} of SIGTERM; killing it",
                    child.id()
                );
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for p in self.leftovers.iter().filter(|p| procfs::still_running(p)) {
            procfs::signal(p.pid, Signal::SIGKILL);
        }
    }
}

/// Starts a cluster, runs `body` on it, and panics with `body`'s error while
/// the cluster is still alive, so the failure prints meseta's log tail.
/// Tests written as `with_cluster(options, |c| { …; Ok(()) })` can use `?`.
pub fn with_cluster(options: ClusterOptions, body: impl FnOnce(&mut Cluster) -> Result<()>) {
    let mut cluster = Cluster::start_with(options);
    if let Err(e) = body(&mut cluster) {
        panic!("{e:?}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        self.stop();
        if panicking {
            eprintln!(
                "---- last {LOG_TAIL_LINES} lines of meseta's log ({}) ----\n{}\n---- end of meseta's log ----",
                self.log.display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                eprintln!("warning: could not remove {}: {e}", path.display());
            }
        }
    }
}

enum StartError {
    /// A port was taken meanwhile: try again on other ports.
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Other(e)
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `text` without ANSI escape sequences (colours in tracing's output).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
