//! Replicated masters as separate processes: three `meseta master` on free
//! loopback ports (each with its own data dir), plus agents and schedulers
//! pointed at all of them. Masters can be killed with SIGKILL and restarted
//! from their data dir. A master can join the running cluster under a new
//! id ([`Masters::start_joining_master`]), and the `meseta` CLI can be run
//! against them ([`Masters::cli`]).
//!
//! Agents can be killed with SIGKILL and restarted on their work dir
//! ([`Masters::kill_agent`], [`Masters::restart_agent`]).
//!
//! Dropping a [`Masters`] stops the agents with SIGUSR1 first (so they kill
//! their tasks: SIGTERM would leave them running for the next agent), then
//! SIGKILLs every process it started, kills what is left in the agents'
//! container cgroups and removes the data dirs. Task pids registered with
//! [`Masters::track_task_pid`] are killed too, in case an agent did not get
//! to it. A panicking test gets the tail of every log printed.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::cluster::free_ports;
use crate::http::Api;
use crate::procfs;
use crate::wait::{wait_until, POLL};

/// How long tests wait for an election or a process to come up.
pub const ELECTION_DEADLINE: Duration = Duration::from_secs(30);

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self, signal: Signal, patience: Duration) {
        procfs::signal(self.child.id() as i32, signal);
        let start = std::time::Instant::now();
        while start.elapsed() < patience {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
}

/// The leader a master's `/master/state` names, as `host:port` (Mesos
/// writes `master@host:port`); empty when it knows none.
pub fn leader_of(state: &Value) -> String {
    state["leader"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("master@")
        .to_string()
}

/// Three (or more) masters and what runs against them.
pub struct Masters {
    dir: tempfile::TempDir,
    /// Every master's `host:port`, index = node id − 1 (masters that
    /// joined later come after the founding ones).
    pub addrs: Vec<String>,
    /// How many of `addrs` founded the cluster (the `--masters` list every
    /// master is started with).
    founders: usize,
    masters: Vec<Option<Proc>>,
    agents: Vec<Agent>,
    others: Vec<Proc>,
    task_pids: Vec<i32>,
    starts: usize,
    /// Extra flags every master is started with.
    master_args: Vec<String>,
}

/// How an agent is started by [`Masters::start_agent_with`].
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub resources: String,
    /// `--isolation` (default `posix`, which needs no root).
    pub isolation: String,
    /// `--work-dir` as given; None: a directory of its own under the data
    /// dir. A relative one is relative to `cwd`.
    pub work_dir: Option<String>,
    /// The agent's working directory (default: the data dir).
    pub cwd: Option<PathBuf>,
    /// Further flags, e.g. `--cgroups-max-pids 64`.
    pub args: Vec<String>,
}

impl AgentOptions {
    pub fn new(resources: &str) -> AgentOptions {
        AgentOptions {
            resources: resources.to_string(),
            isolation: "posix".into(),
            work_dir: None,
            cwd: None,
            args: Vec::new(),
        }
    }
}

/// One agent: how it was started (to restart it the same way), the
/// process while it runs, and the cgroup of its containers.
struct Agent {
    addr: String,
    args: Vec<String>,
    cwd: PathBuf,
    work_dir: PathBuf,
    proc: Option<Proc>,
    /// `<cgroups root>/<agent cgroup>` from its `/state`, once known.
    containers_cgroup: Option<String>,
}

fn spawn(name: &str, args: &[String], log: &Path) -> Result<Proc> {
    spawn_in(name, args, log, None)
}

fn spawn_in(name: &str, args: &[String], log: &Path, cwd: Option<&Path>) -> Result<Proc> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone().context("cloning the log handle")?;
    let mut command = Command::new(crate::meseta_binary());
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let child = command
        .args(args)
        .env(
            "RUST_LOG",
            "info,h2=warn,hyper=warn,tower=warn,tonic=warn,sled=warn,raft=warn",
        )
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Proc {
        name: name.to_string(),
        child,
        log: log.to_path_buf(),
    })
}

impl Masters {
    /// Start `n` masters and wait until one leads.
    pub fn start(n: usize) -> Result<Masters> {
        Masters::start_with_args(n, &[])
    }

    /// [`Masters::start`] with extra flags for every master (e.g.
    /// `--agent-ping-timeout 0.5`).
    pub fn start_with_args(n: usize, master_args: &[&str]) -> Result<Masters> {
        let ports = free_ports(n)?;
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let dir = tempfile::tempdir().context("creating the data dir")?;
        // Task users (e.g. nobody) must reach their sandboxes under it.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .context("opening up the data dir")?;
        let mut m = Masters {
            dir,
            addrs,
            founders: n,
            masters: (0..n).map(|_| None).collect(),
            agents: Vec::new(),
            others: Vec::new(),
            task_pids: Vec::new(),
            starts: 0,
            master_args: master_args.iter().map(|a| a.to_string()).collect(),
        };
        for i in 0..n {
            m.start_master(i)?;
        }
        m.wait_leader(None)?;
        Ok(m)
    }

    /// The data dir root.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&mut self, name: &str) -> PathBuf {
        self.starts += 1;
        self.dir.path().join(format!("{name}.{}.log", self.starts))
    }

    /// The founding masters' `host:port`, the `--masters` list.
    pub fn founding_addrs(&self) -> &[String] {
        &self.addrs[..self.founders]
    }

    /// (Re)start master `i` from its data dir. A master beyond the founding
    /// ones is started with `--join --node-id <i + 1>`.
    pub fn start_master(&mut self, i: usize) -> Result<()> {
        if self.masters[i].is_some() {
            bail!("master {i} is already running");
        }
        let mut args = vec![
            "master".to_string(),
            "--listen".into(),
            self.addrs[i].clone(),
            "--masters".into(),
            self.founding_addrs().join(","),
            "--data-dir".into(),
            self.dir
                .path()
                .join(format!("master{i}"))
                .display()
                .to_string(),
            "--agent-reregister-timeout".into(),
            "60".into(),
        ];
        args.extend(self.master_args.iter().cloned());
        if i >= self.founders {
            args.extend(["--join".into(), "--node-id".into(), (i + 1).to_string()]);
        }
        let log = self.log_path(&format!("master{i}"));
        self.masters[i] = Some(spawn(&format!("master {i}"), &args, &log)?);
        Ok(())
    }

    /// Start a new master on a fresh port and data dir that joins the
    /// running cluster (`--masters <founders> --join --node-id <id>`), with
    /// the next unused id. Returns its index (id − 1); it waits empty until
    /// the leader adds it (`meseta master membership add`).
    pub fn start_joining_master(&mut self) -> Result<usize> {
        let port = free_ports(1)?[0];
        let i = self.addrs.len();
        self.addrs.push(format!("127.0.0.1:{port}"));
        self.masters.push(None);
        self.start_master(i)?;
        Ok(i)
    }

    /// Run the `meseta` CLI with `args` (at most `timeout`), and return its
    /// standard output; fails with its output when it exits non-zero.
    pub fn cli(&mut self, args: &[&str], timeout: Duration) -> Result<String> {
        let out_path = self.log_path("cli.out");
        let err_path = self.log_path("cli.err");
        let out = File::create(&out_path).context("creating the cli output file")?;
        let err = File::create(&err_path).context("creating the cli error file")?;
        let mut child = Command::new(crate::meseta_binary())
            .args(args)
            .env_remove("MESETA_MASTER")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("running meseta {}", args.join(" ")))?;
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for the cli")? {
                break status;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "meseta {} did not finish within {timeout:?}",
                    args.join(" ")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        if !status.success() {
            bail!(
                "meseta {} failed ({status}): {stderr}{stdout}",
                args.join(" ")
            );
        }
        Ok(stdout)
    }

    /// SIGKILL master `i`.
    pub fn kill_master(&mut self, i: usize) {
        if let Some(mut p) = self.masters[i].take() {
            p.kill();
        }
    }

    /// Stop master `i` as its unit would (SIGTERM, SIGKILL after 20 s).
    pub fn stop_master(&mut self, i: usize) {
        if let Some(mut p) = self.masters[i].take() {
            p.terminate(Signal::SIGTERM, Duration::from_secs(20));
        }
    }

    /// What master `i` says in `/master/state`.
    pub fn state(&self, i: usize) -> Result<Value> {
        Api::new(&self.addrs[i]).get_json("/master/state")
    }

    /// Index of the master every running master names as leader, when that
    /// master also says it is elected.
    pub fn leader(&self) -> Result<usize> {
        let mut named = None;
        for (i, p) in self.masters.iter().enumerate() {
            if p.is_none() {
                continue;
            }
            let leader = leader_of(&self.state(i)?);
            if leader.is_empty() {
                bail!("master {i} knows no leader");
            }
            match &named {
                None => named = Some(leader),
                Some(l) if *l != leader => bail!("masters disagree: {l} vs {leader}"),
                _ => {}
            }
        }
        let leader = named.ok_or_else(|| anyhow!("no master is running"))?;
        let i = self
            .addrs
            .iter()
            .position(|a| *a == leader)
            .ok_or_else(|| anyhow!("leader {leader} is not one of ours"))?;
        if self.masters[i].is_none() {
            bail!("the named leader {leader} is not running");
        }
        if self.state(i)?["elected"] != Value::Bool(true) {
            bail!("{leader} does not say it is elected");
        }
        Ok(i)
    }

    /// Wait until a leader other than `not` is agreed on.
    pub fn wait_leader(&self, not: Option<usize>) -> Result<usize> {
        wait_until("an elected leading master", ELECTION_DEADLINE, POLL, || {
            let l = self.leader()?;
            if Some(l) == not {
                bail!("master {l} still leads");
            }
            Ok::<_, anyhow::Error>(l)
        })
    }

    /// Start an agent (posix isolation, no root needed) against every master.
    pub fn start_agent(&mut self, resources: &str) -> Result<String> {
        let i = self.start_agent_with(AgentOptions::new(resources))?;
        Ok(self.agents[i].addr.clone())
    }

    /// Start an agent against every master; returns its index.
    pub fn start_agent_with(&mut self, options: AgentOptions) -> Result<usize> {
        let port = free_ports(1)?[0];
        let addr = format!("127.0.0.1:{port}");
        let n = self.agents.len();
        let cwd = options.cwd.unwrap_or_else(|| self.dir.path().to_path_buf());
        let work_dir = options.work_dir.unwrap_or_else(|| {
            self.dir
                .path()
                .join(format!("agent{n}"))
                .display()
                .to_string()
        });
        let mut args = vec![
            "agent".to_string(),
            "--listen".into(),
            addr.clone(),
            "--masters".into(),
            self.addrs.join(","),
            "--work-dir".into(),
            work_dir.clone(),
            "--isolation".into(),
            options.isolation,
            "--resources".into(),
            options.resources,
        ];
        args.extend(options.args);
        self.agents.push(Agent {
            addr,
            args,
            work_dir: cwd.join(&work_dir),
            cwd,
            proc: None,
            containers_cgroup: None,
        });
        self.restart_agent_with(n, &[])?;
        Ok(n)
    }

    /// `host:port` of agent `i`.
    pub fn agent_addr(&self, i: usize) -> &str {
        &self.agents[i].addr
    }

    /// The (absolute) work dir of agent `i`.
    pub fn agent_work_dir(&self, i: usize) -> &Path {
        &self.agents[i].work_dir
    }

    /// What agent `i` says in `/state`.
    pub fn agent_state(&self, i: usize) -> Result<Value> {
        Api::new(&self.agents[i].addr).get_json("/state")
    }

    /// Starts agent `i`'s process (on its work dir, with its flags and
    /// `extra`) without waiting for it to answer.
    pub fn spawn_agent(&mut self, i: usize, extra: &[&str]) -> Result<()> {
        if self.agents[i].proc.is_some() {
            bail!("agent {i} is already running");
        }
        let log = self.log_path(&format!("agent{i}"));
        let mut args = self.agents[i].args.clone();
        args.extend(extra.iter().map(|a| a.to_string()));
        let cwd = self.agents[i].cwd.clone();
        let proc = spawn_in("agent", &args, &log, Some(&cwd))?;
        self.agents[i].proc = Some(proc);
        Ok(())
    }

    /// The pid of agent `i`'s process, while it runs.
    pub fn agent_pid(&self, i: usize) -> Option<i32> {
        self.agents[i].proc.as_ref().map(|p| p.child.id() as i32)
    }

    /// The log of agent `i`'s latest start.
    pub fn agent_log(&self, i: usize) -> Option<String> {
        self.agents[i]
            .proc
            .as_ref()
            .and_then(|p| std::fs::read_to_string(&p.log).ok())
    }

    /// SIGKILL agent `i` (its tasks keep running).
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut p) = self.agents[i].proc.take() {
            p.kill();
        }
    }

    /// (Re)start agent `i` on its work dir with the flags it was started
    /// with, waiting until it answers `/state`.
    pub fn restart_agent(&mut self, i: usize) -> Result<()> {
        self.restart_agent_with(i, &[])
    }

    /// [`Masters::restart_agent`] with extra flags for this start only.
    pub fn restart_agent_with(&mut self, i: usize, extra: &[&str]) -> Result<()> {
        self.spawn_agent(i, extra)?;
        let api = Api::new(&self.agents[i].addr);
        let state = wait_until(
            &format!("agent {i} to answer /state"),
            ELECTION_DEADLINE,
            POLL,
            || api.get_json("/state"),
        )?;
        if let Some(own) = state["flags"]["containers_cgroup"].as_str() {
            self.agents[i].containers_cgroup = Some(own.to_string());
        }
        Ok(())
    }

    /// Start a scheduler against every master; returns its `/v2` address
    /// once it answers `/ping`.
    pub fn start_scheduler(&mut self) -> Result<String> {
        let port = free_ports(1)?[0];
        let addr = format!("127.0.0.1:{port}");
        let args = vec![
            "scheduler".to_string(),
            "--listen".into(),
            addr.clone(),
            "--masters".into(),
            self.addrs.join(","),
        ];
        let log = self.log_path("scheduler");
        self.others
            .push(spawn(&format!("scheduler {addr}"), &args, &log)?);
        let api = Api::new(&addr);
        wait_until(
            "the scheduler to answer /ping",
            ELECTION_DEADLINE,
            POLL,
            || api.get("/ping"),
        )?;
        Ok(addr)
    }

    /// Wait until the scheduler at `addr` says in `/v2/info` that it is
    /// the elected leader of its framework (it may stand by first while a
    /// previous leader's lease runs out).
    pub fn wait_scheduler_elected(&self, addr: &str, deadline: Duration) -> Result<()> {
        let api = Api::new(addr);
        wait_until(
            &format!("the scheduler {addr} to be elected"),
            deadline,
            POLL,
            || {
                let info = api.get_json("/v2/info")?;
                if info["elected"] == Value::Bool(true) && info["leader"] == addr {
                    Ok(())
                } else {
                    Err(anyhow!(
                        "elected {} leader {}",
                        info["elected"],
                        info["leader"]
                    ))
                }
            },
        )
    }

    /// SIGKILL the scheduler serving `addr`.
    pub fn kill_scheduler(&mut self, addr: &str) {
        let name = format!("scheduler {addr}");
        if let Some(p) = self.others.iter_mut().find(|p| p.name == name) {
            p.kill();
        }
    }

    /// Run a test body; print the logs when it fails.
    pub fn run<T>(&mut self, body: impl FnOnce(&mut Masters) -> Result<T>) -> Result<T> {
        let r = body(self);
        if r.is_err() {
            self.dump_logs();
        }
        r
    }

    /// (name, pid) of every master, agent and scheduler process running
    /// (`master <index>`, `agent`, `scheduler <address>`); for
    /// benches that read their memory.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.masters
            .iter()
            .flatten()
            .chain(self.agents.iter().filter_map(|a| a.proc.as_ref()))
            .chain(self.others.iter())
            .map(|p| (p.name.clone(), p.child.id()))
            .collect()
    }

    /// Kill this pid when the cluster is dropped (a task process).
    pub fn track_task_pid(&mut self, pid: i32) {
        self.task_pids.push(pid);
    }

    /// Print the tail of every running process's log (on failure).
    pub fn dump_logs(&self) {
        let procs = self
            .masters
            .iter()
            .flatten()
            .chain(self.agents.iter().filter_map(|a| a.proc.as_ref()))
            .chain(self.others.iter());
        for p in procs {
            if let Ok(text) = std::fs::read_to_string(&p.log) {
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines.len().saturating_sub(30);
                eprintln!("---- {} ({}) ----", p.name, p.log.display());
                for l in &lines[tail..] {
                    eprintln!("{l}");
                }
            }
        }
    }
}

impl Drop for Masters {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for p in self.agents.iter_mut().filter_map(|a| a.proc.as_mut()) {
            p.terminate(Signal::SIGUSR1, Duration::from_secs(8));
        }
        for a in self.agents.iter_mut() {
            if let Some(mut p) = a.proc.take() {
                p.kill();
            }
            if let Some(cgroup) = &a.containers_cgroup {
                kill_cgroup_tree(cgroup);
            }
        }
        for p in self.others.iter_mut() {
            p.kill();
        }
        for p in self.masters.iter_mut().flatten() {
            p.kill();
        }
        for pid in &self.task_pids {
            if procfs::pid_running(*pid) {
                procfs::signal(*pid, Signal::SIGKILL);
            }
        }
    }
}

/// SIGKILLs every process in the containers of an agent (`cgroup` relative
/// to each hierarchy's root) and removes the empty cgroups: what a test
/// that killed an agent and never restarted it leaves behind.
fn kill_cgroup_tree(cgroup: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let roots: Vec<PathBuf> = hierarchies
        .filter_map(|h| Some(h.ok()?.path().join(cgroup)))
        .chain([Path::new("/sys/fs/cgroup").join(cgroup)])
        .filter(|p| p.is_dir())
        .collect();
    for root in roots {
        let Ok(children) = std::fs::read_dir(&root) else {
            continue;
        };
        for child in children
            .filter_map(|c| c.ok())
            .map(|c| c.path())
            .filter(|p| p.is_dir())
        {
            for _ in 0..50 {
                let procs = std::fs::read_to_string(child.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    procfs::signal(pid, Signal::SIGKILL);
                }
                if std::fs::remove_dir(&child).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir(&root);
    }
}
