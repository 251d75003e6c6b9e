//! DRF through the real binary (issue 4, "How it is checked"): one master,
//! two Marathon schedulers with different framework names, each with an
//! app of 20 one-cpu instances waiting, then five agents of
//! `cpus:2;mem:2048` join. After offers settle each framework runs 5 tasks
//! (±1): DRF hands new resources to the framework furthest below its
//! share, so neither takes everything.
//!
//! The processes here are started one by one (not with `meseta up`), each
//! on its own free port with its own work dir, and stopped on drop. Waits
//! have generous deadlines; nothing checks speed.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use meseta_tests::cluster::free_ports;
use meseta_tests::http::Api;
use meseta_tests::{meseta_binary, wait_for, wait_until};
use serde_json::{json, Value};

/// Child processes stopped (SIGTERM, then SIGKILL) when dropped, last
/// started first.
struct Processes {
    children: Vec<(String, Child)>,
    logs: std::path::PathBuf,
}

impl Processes {
    fn spawn(&mut self, name: &str, args: &[&str]) -> Result<()> {
        let log = std::fs::File::create(self.logs.join(format!("{name}.log")))
            .context("creating a log file")?;
        let err = log.try_clone().context("cloning the log file")?;
        let child = Command::new(meseta_binary())
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// The last lines of every process' log (for a failing test).
    fn log_tails(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.children {
            let text =
                std::fs::read_to_string(self.logs.join(format!("{name}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "--- {name} ---\n{}\n",
                lines[lines.len().saturating_sub(15)..].join("\n")
            ));
        }
        out
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in self.children.iter_mut().rev() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        for (_, child) in self.children.iter_mut().rev() {
            let stopped = wait_until(
                "a process to stop",
                Duration::from_secs(10),
                Duration::from_millis(50),
                || match child.try_wait() {
                    Ok(Some(_)) => Ok(()),
                    _ => Err("still running"),
                },
            );
            if stopped.is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Running tasks per framework name, from the master's `/master/state`.
fn running_per_framework(master: &Api) -> Result<Vec<(String, usize)>> {
    let state = master.get_json("/master/state")?;
    let frameworks = state["frameworks"].as_array().cloned().unwrap_or_default();
    Ok(frameworks
        .iter()
        .map(|f| {
            let running = f["tasks"].as_array().map_or(0, |t| {
                t.iter().filter(|t| t["state"] == "TASK_RUNNING").count()
            });
            (f["name"].as_str().unwrap_or_default().to_string(), running)
        })
        .collect())
}

fn app(id: &str) -> Value {
    json!({"id": id, "cmd": "sleep 300", "cpus": 1, "mem": 16, "instances": 20})
}

fn scenario(dir: &Path, procs: &mut Processes) -> Result<()> {
    let ports = free_ports(8)?;
    let master_addr = format!("127.0.0.1:{}", ports[0]);
    procs.spawn(
        "master",
        &[
            "master",
            "--listen",
            &master_addr,
            "--data-dir",
            &dir.join("master").display().to_string(),
        ],
    )?;
    let master = Api::new(&master_addr);
    wait_for("the master to lead", || {
        let state = master
            .get_json("/master/state")
            .map_err(|e| format!("{e:#}"))?;
        if state["elected"] == true {
            Ok(())
        } else {
            Err(format!("elected = {}", state["elected"]))
        }
    })?;

    let mut marathons = Vec::new();
    for (i, name) in ["a", "b"].iter().enumerate() {
        let addr = format!("127.0.0.1:{}", ports[1 + i]);
        procs.spawn(
            &format!("scheduler-{name}"),
            &[
                "scheduler",
                "--listen",
                &addr,
                "--masters",
                &master_addr,
                "--framework-name",
                name,
            ],
        )?;
        marathons.push(Api::new(&addr));
    }
    wait_for("both frameworks to subscribe", || {
        let n = running_per_framework(&master)
            .map_err(|e| format!("{e:#}"))?
            .len();
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} frameworks"))
        }
    })?;
    for (marathon, id) in marathons.iter().zip(["/drf-a", "/drf-b"]) {
        let reply = wait_for("the scheduler to take the app", || {
            let r = marathon
                .post_json("/v2/apps", &app(id))
                .map_err(|e| format!("{e:#}"))?;
            if r.is_success() {
                Ok(r)
            } else {
                Err(format!("{} {}", r.status, r.body))
            }
        })?;
        if !reply.is_success() {
            bail!("POST /v2/apps {id}: {} {}", reply.status, reply.body);
        }
    }

    for i in 0..5 {
        let addr = format!("127.0.0.1:{}", ports[3 + i]);
        let work = dir.join(format!("agent-{i}")).display().to_string();
        procs.spawn(
            &format!("agent-{i}"),
            &[
                "agent",
                "--listen",
                &addr,
                "--masters",
                &master_addr,
                "--resources",
                "cpus:2;mem:2048",
                "--isolation",
                "posix",
                "--work-dir",
                &work,
                "--hostname",
                &format!("agent-{i}.local"),
            ],
        )?;
    }

    // Settled: all 10 cpus run tasks, and the split stays the same across
    // several polls.
    let mut last = Vec::new();
    let mut stable = 0;
    let split = wait_until(
        "10 running tasks and a stable split",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || {
            let mut now = running_per_framework(&master).map_err(|e| format!("{e:#}"))?;
            now.sort();
            let total: usize = now.iter().map(|(_, n)| n).sum();
            if total == 10 && now == last {
                stable += 1;
            } else {
                stable = 0;
            }
            last = now.clone();
            if stable >= 4 {
                Ok(now)
            } else {
                Err(format!("{now:?}"))
            }
        },
    )?;
    for (name, n) in &split {
        if n.abs_diff(5) > 1 {
            bail!("framework {name} runs {n} tasks, expected 5 ± 1: {split:?}");
        }
    }

    // The allocation is visible to operators.
    let state = master.get_json("/master/state")?;
    let roles = state["roles"].as_array().cloned().unwrap_or_default();
    let star = roles
        .iter()
        .find(|r| r["name"] == "*")
        .context("role '*' in /master/state")?;
    if star["dominant_share"].as_f64().unwrap_or(0.0) <= 0.0 {
        bail!("role '*' has no dominant share: {star}");
    }
    for f in state["frameworks"].as_array().cloned().unwrap_or_default() {
        if f["dominant_share"].as_f64().is_none() || !f["allocated_resources"].is_object() {
            bail!("framework without allocation figures: {}", f["name"]);
        }
    }
    let metrics = master.get_json("/metrics/snapshot")?;
    if metrics["allocator/allocation_runs"].as_u64().unwrap_or(0) == 0 {
        bail!("no allocation runs counted: {metrics}");
    }

    // Stop the tasks before the processes (agents keep tasks running
    // across their own restart, so stopping them would leave orphans).
    for (marathon, id) in marathons.iter().zip(["/drf-a", "/drf-b"]) {
        // The apps' deployments cannot finish (20 wanted, 5 fit): force.
        let reply = marathon.delete(&format!("/v2/apps{id}?force=true"))?;
        if !reply.is_success() {
            bail!("DELETE /v2/apps{id}: {} {}", reply.status, reply.body);
        }
    }
    wait_for("every task to end", || {
        let left: usize = running_per_framework(&master)
            .map_err(|e| format!("{e:#}"))?
            .iter()
            .map(|(_, n)| n)
            .sum();
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} tasks running"))
        }
    })?;
    Ok(())
}

#[test]
fn two_marathons_share_five_agents_by_drf() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut procs = Processes {
        children: Vec::new(),
        logs: dir.path().to_path_buf(),
    };
    if let Err(e) = scenario(dir.path(), &mut procs) {
        panic!("{e:#}\n{}", procs.log_tails());
    }
}
