//! Replicated masters as separate processes: three `meseta master` on free
//! loopback ports (each with its own data dir), plus agents and schedulers
//! pointed at all of them. Masters can be killed with SIGKILL and restarted
//! from their data dir. A master can join the running cluster under a new
//! id ([`Masters::start_joining_master`]), and the `meseta` CLI can be run
//! against them ([`Masters::cli`]).
//!
//! Dropping a [`Masters`] stops the agents with SIGTERM first (so they kill
//! their tasks), then SIGKILLs every process it started and removes the
//! data dirs. Task pids registered with [`Masters::track_task_pid`] are
//! killed too, in case an agent did not get to it. A panicking test gets the
//! tail of every log printed.

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

    fn terminate(&mut self, patience: Duration) {
        procfs::signal(self.child.id() as i32, Signal::SIGTERM);
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
    others: Vec<Proc>,
    task_pids: Vec<i32>,
    starts: usize,
}

fn spawn(name: &str, args: &[String], log: &Path) -> Result<Proc> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone().context("cloning the log handle")?;
    let child = Command::new(crate::meseta_binary())
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
        let ports = free_ports(n)?;
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut m = Masters {
            dir: tempfile::tempdir().context("creating the data dir")?,
            addrs,
            founders: n,
            masters: (0..n).map(|_| None).collect(),
            others: Vec::new(),
            task_pids: Vec::new(),
            starts: 0,
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
        let port = free_ports(1)?[0];
        let addr = format!("127.0.0.1:{port}");
        let n = self.others.len();
        let args = vec![
            "agent".to_string(),
            "--listen".into(),
            addr.clone(),
            "--masters".into(),
            self.addrs.join(","),
            "--work-dir".into(),
            self.dir
                .path()
                .join(format!("agent{n}"))
                .display()
                .to_string(),
            "--isolation".into(),
            "posix".into(),
            "--resources".into(),
            resources.into(),
        ];
        let log = self.log_path("agent");
        self.others.push(spawn("agent", &args, &log)?);
        Ok(addr)
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

    /// Kill this pid when the cluster is dropped (a task process).
    pub fn track_task_pid(&mut self, pid: i32) {
        self.task_pids.push(pid);
    }

    /// Print the tail of every running process's log (on failure).
    pub fn dump_logs(&self) {
        let procs = self.masters.iter().flatten().chain(self.others.iter());
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
        for p in self.others.iter_mut().filter(|p| p.name == "agent") {
            p.terminate(Duration::from_secs(8));
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
