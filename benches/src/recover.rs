//! `meseta-bench recover`: how long a restarted agent takes to re-attach to
//! its running tasks and have the master see them all RUNNING again.
//!
//! Starts one `meseta master`, one `meseta agent` (linux isolation as root,
//! else posix) and one `meseta scheduler` (the release binary when it was
//! built, else the debug one), deploys one app of `--tasks` `sleep`
//! instances, then `--rounds` times: SIGKILLs the agent, starts it again on
//! the same work dir and measures, from the start of the new process,
//!
//! - `reattach_ms`: the agent answers `/state` registered, with every task
//!   running under its old pid;
//! - `all_running_ms`: the leading master lists the agent active with every
//!   task TASK_RUNNING.
//!
//! It checks that the pids never change (nothing was relaunched). The last
//! line is `tasks=N reattach_ms_p50=… all_running_ms_p50=… all_running_ms_max=…`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use meseta_tests::http::Api;
use meseta_tests::masters::{AgentOptions, Masters};
use meseta_tests::wait::wait_until;
use serde_json::{json, Value};

use crate::launch::percentile;

/// Flags of `meseta-bench recover`.
#[derive(Debug, Clone, clap::Args)]
pub struct RecoverArgs {
    /// Running tasks the agent re-attaches to.
    #[arg(long, default_value_t = 100)]
    pub tasks: usize,
    /// Agent restarts measured.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// The agent's --isolation (default: linux as root, else posix).
    #[arg(long)]
    pub isolation: Option<String>,
}

const STEP: Duration = Duration::from_secs(120);

/// task id → pid of the agent's running tasks, when it is registered.
fn agent_pids(agent: &Api) -> Result<BTreeMap<String, i64>> {
    let state = agent.get_json("/state")?;
    if state["connected"] != Value::Bool(true) {
        bail!("not registered yet");
    }
    Ok(state["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING" && t["pid"].as_i64() > Some(0))
        .filter_map(|t| Some((t["id"].as_str()?.to_string(), t["pid"].as_i64()?)))
        .collect())
}

/// Tasks TASK_RUNNING at the leader on an active agent.
fn master_running(m: &Masters) -> Result<usize> {
    let state = m.state(m.leader()?)?;
    let active = state["slaves"]
        .as_array()
        .and_then(|a| a.first())
        .is_some_and(|a| a["active"] == Value::Bool(true));
    if !active {
        bail!("the agent is not active at the master");
    }
    Ok(state["frameworks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["state"] == "TASK_RUNNING")
        .count())
}

pub fn run(args: &RecoverArgs) -> Result<()> {
    if std::env::var_os("MESETA_BIN").is_none() {
        let release = meseta_tests::binary::target_dir()
            .join("release")
            .join("meseta");
        if release.is_file() {
            std::env::set_var("MESETA_BIN", &release);
        }
    }
    let isolation = args.isolation.clone().unwrap_or_else(|| {
        if meseta_tests::root_with_cgroups().is_ok() {
            "linux".into()
        } else {
            "posix".into()
        }
    });
    let n = args.tasks;
    let mut m = Masters::start(1).context("starting a master")?;
    let cpus = (n as f64 * 0.01 + 1.0).ceil();
    let mem = n * 32 + 1024;
    let agent = m.start_agent_with(AgentOptions {
        isolation: isolation.clone(),
        ..AgentOptions::new(&format!(
            "cpus:{cpus};mem:{mem};disk:10000;ports:[24000-24999]"
        ))
    })?;
    let scheduler = Api::new(&m.start_scheduler()?);
    println!("cluster up ({isolation} isolation); deploying {n} tasks");
    let r = scheduler.post_json(
        "/v2/apps",
        &json!({"id": "/bench/recover", "cmd": "sleep 100000", "instances": n, "cpus": 0.01, "mem": 16}),
    )?;
    ensure!(r.status == 201, "POST /v2/apps: {r}");
    let api = Api::new(m.agent_addr(agent));
    let pids = wait_until(
        "every task running",
        STEP,
        Duration::from_millis(200),
        || {
            let p = agent_pids(&api)?;
            if p.len() == n {
                Ok(p)
            } else {
                Err(anyhow!("{} of {n} running", p.len()))
            }
        },
    )?;
    for pid in pids.values() {
        m.track_task_pid(*pid as i32);
    }
    println!("{n} tasks running");

    let mut reattach = Vec::new();
    let mut all_running = Vec::new();
    for round in 1..=args.rounds {
        m.kill_agent(agent);
        let start = Instant::now();
        m.spawn_agent(agent, &[])?;
        let back = wait_until(
            "the re-attached tasks",
            STEP,
            Duration::from_millis(2),
            || {
                let p = agent_pids(&api)?;
                if p.len() == n {
                    Ok(p)
                } else {
                    Err(anyhow!("{} of {n}", p.len()))
                }
            },
        )?;
        let reattached = start.elapsed();
        ensure!(
            back == pids,
            "pids changed after restart {round}: tasks were relaunched"
        );
        wait_until(
            "the master to see every task running",
            STEP,
            Duration::from_millis(2),
            || {
                let running = master_running(&m)?;
                if running == n {
                    Ok(())
                } else {
                    Err(anyhow!("{running} of {n}"))
                }
            },
        )?;
        let everything = start.elapsed();
        println!(
            "restart {round}/{}: re-attached in {:.1} ms, all RUNNING at the master in {:.1} ms",
            args.rounds,
            reattached.as_secs_f64() * 1000.0,
            everything.as_secs_f64() * 1000.0
        );
        reattach.push(reattached.as_secs_f64() * 1000.0);
        all_running.push(everything.as_secs_f64() * 1000.0);
    }
    reattach.sort_by(f64::total_cmp);
    all_running.sort_by(f64::total_cmp);
    println!(
        "tasks={n} isolation={isolation} reattach_ms_p50={:.1} all_running_ms_p50={:.1} all_running_ms_max={:.1}",
        percentile(&reattach, 50.0),
        percentile(&all_running, 50.0),
        all_running.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
