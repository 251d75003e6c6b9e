//! Replicated masters, end to end with the real binary: leader failover
//! kills no task and the scheduler keeps working; a killed master comes
//! back from its data dir and follows; no acknowledged KV write is lost when
//! the leader is killed mid-load; all masters restarted at once keep their
//! state; a restarted scheduler finds its apps and keeps its tasks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use meseta_tests::http::Api;
use meseta_tests::masters::Masters;
use meseta_tests::procfs;
use meseta_tests::wait::{wait_for, wait_until, POLL};
use serde_json::{json, Value};

/// task id → pid, from the leading master's `/master/state`.
fn task_pids(masters: &Masters, leader: usize) -> Result<BTreeMap<String, i64>> {
    let state = masters.state(leader)?;
    let mut out = BTreeMap::new();
    for f in state["frameworks"].as_array().cloned().unwrap_or_default() {
        for t in f["tasks"].as_array().cloned().unwrap_or_default() {
            if t["state"] == "TASK_RUNNING" {
                if let (Some(id), Some(pid)) = (t["id"].as_str(), t["pid"].as_i64()) {
                    out.insert(id.to_string(), pid);
                }
            }
        }
    }
    Ok(out)
}

/// Running task ids of an app, from the scheduler.
fn running_tasks(scheduler: &Api, app: &str) -> Result<Vec<String>> {
    let tasks = scheduler.get_json(&format!("/v2/apps{app}/tasks"))?;
    let mut ids: Vec<String> = tasks["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect();
    ids.sort();
    Ok(ids)
}

fn wait_running(scheduler: &Api, app: &str, n: usize) -> Result<Vec<String>> {
    wait_for(&format!("{n} running tasks of {app}"), || {
        let ids = running_tasks(scheduler, app)?;
        if ids.len() == n {
            Ok(ids)
        } else {
            Err(anyhow!("{} running: {ids:?}", ids.len()))
        }
    })
}

/// POST an app, retrying while the scheduler answers 503 (its store looks
/// for the new leader); any other answer than 201 fails.
fn post_app(scheduler: &Api, app: &Value) -> Result<()> {
    wait_for("POST /v2/apps to be accepted", || {
        let r = scheduler.post_json("/v2/apps", app)?;
        match r.status {
            201 => Ok(()),
            503 => Err(anyhow!("503: {}", r.body)),
            other => Err(anyhow!("unexpected {other}: {}", r.body)),
        }
    })
}

#[test]
fn leader_failover_keeps_tasks_and_the_scheduler_working() -> Result<()> {
    Masters::start(3)?.run(failover)
}

fn failover(masters: &mut Masters) -> Result<()> {
    let first_leader = masters.leader()?;
    masters.start_agent("cpus:4;mem:2048;disk:1000;ports:[31000-31100]")?;
    let sched_addr = masters.start_scheduler()?;
    let scheduler = Api::new(&sched_addr);

    post_app(
        &scheduler,
        &json!({"id": "/sleepy", "cmd": "sleep 1000", "instances": 2, "cpus": 0.1, "mem": 16}),
    )?;
    let tasks = wait_running(&scheduler, "/sleepy", 2)?;
    let pids = wait_for("the leader to report both task pids", || {
        let p = task_pids(masters, first_leader)?;
        if tasks.iter().all(|t| p.contains_key(t)) {
            Ok(p)
        } else {
            Err(anyhow!("pids known: {p:?}"))
        }
    })?;
    for pid in pids.values() {
        masters.track_task_pid(*pid as i32);
        ensure!(
            procfs::pid_running(*pid as i32),
            "task pid {pid} is not running"
        );
    }

    // kill -9 the leader: another master takes over.
    masters.kill_master(first_leader);
    let second_leader = masters.wait_leader(Some(first_leader))?;
    ensure!(second_leader != first_leader);
    let state = masters.state(second_leader)?;
    ensure!(
        state["elected"] == Value::Bool(true),
        "the new leader does not say so: {state}"
    );

    // The scheduler keeps working through the new leader.
    post_app(
        &scheduler,
        &json!({"id": "/after-failover", "cmd": "sleep 1000", "instances": 1, "cpus": 0.1, "mem": 16}),
    )?;
    wait_running(&scheduler, "/after-failover", 1)?;
    // The old tasks are the same tasks, same processes.
    ensure!(
        running_tasks(&scheduler, "/sleepy")? == tasks,
        "the app's tasks changed"
    );
    let after = wait_for("the new leader to learn the tasks from the agent", || {
        let p = task_pids(masters, second_leader)?;
        if tasks.iter().all(|t| p.contains_key(t)) {
            Ok(p)
        } else {
            Err(anyhow!("pids known: {p:?}"))
        }
    })?;
    for t in &tasks {
        ensure!(
            after.get(t) == pids.get(t),
            "task {t} changed pid: {:?} → {:?}",
            pids.get(t),
            after.get(t)
        );
    }
    for pid in after.values() {
        masters.track_task_pid(*pid as i32);
    }
    for pid in pids.values() {
        ensure!(procfs::pid_running(*pid as i32), "task pid {pid} died");
    }

    // The killed master restarts from its data dir and follows.
    masters.start_master(first_leader)?;
    let leader_addr = masters.addrs[second_leader].clone();
    wait_for("the restarted master to follow the new leader", || {
        let s = masters.state(first_leader)?;
        if s["leader"] == leader_addr.as_str() && s["elected"] == Value::Bool(false) {
            Ok(())
        } else {
            Err(anyhow!("leader {} elected {}", s["leader"], s["elected"]))
        }
    })?;

    // All three masters restarted at once come back with their state.
    for i in 0..3 {
        masters.kill_master(i);
    }
    for i in 0..3 {
        masters.start_master(i)?;
    }
    let third_leader = masters.wait_leader(None)?;
    let state = masters.state(third_leader)?;
    ensure!(
        state["registered_agents"].as_u64() >= Some(1),
        "the registry lost its agent: {state}"
    );
    ensure!(
        state["registered_frameworks"].as_u64() >= Some(1),
        "the registry lost its framework: {state}"
    );

    // A scheduler restarted on another port sees the same apps and keeps the
    // same tasks (it re-subscribes with the stored framework id).
    masters.kill_scheduler(&sched_addr);
    let sched2 = Api::new(&masters.start_scheduler()?);
    let apps = sched2.get_json("/v2/apps")?;
    let mut ids: Vec<&str> = apps["apps"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["id"].as_str()).collect())
        .unwrap_or_default();
    ids.sort();
    ensure!(
        ids == ["/after-failover", "/sleepy"],
        "apps after the restarts: {ids:?}"
    );
    ensure!(
        wait_running(&sched2, "/sleepy", 2)? == tasks,
        "the restarted scheduler replaced tasks"
    );
    for pid in pids.values() {
        ensure!(
            procfs::pid_running(*pid as i32),
            "task pid {pid} died after the restarts"
        );
    }
    // Still two: nothing extra was launched either.
    std::thread::sleep(Duration::from_secs(2));
    ensure!(
        running_tasks(&sched2, "/sleepy")? == tasks,
        "tasks changed after the scheduler restart"
    );
    Ok(())
}

/// Writers put distinct keys while the leader is killed; every write that
/// was acknowledged must be readable afterwards, also after all masters
/// restart at once.
#[test]
fn no_acknowledged_kv_write_is_lost_when_the_leader_dies() -> Result<()> {
    let mut masters = Masters::start(3)?;
    let leader = masters.leader()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building a runtime")?;
    let client = meseta_sdk::KvClient::new(masters.addrs.clone());
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        writers.push(runtime.spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("/load/{w}/{n}");
                let value = format!("v{w}-{n}");
                if client
                    .put(&key, value.clone().into_bytes(), 0)
                    .await
                    .is_ok()
                {
                    acked
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((key, value));
                }
                n += 1;
            }
        }));
    }
    let count = || acked.lock().unwrap_or_else(|p| p.into_inner()).len();
    wait_for("some acknowledged writes", || {
        if count() > 200 {
            Ok(())
        } else {
            Err(anyhow!("{} so far", count()))
        }
    })?;
    masters.kill_master(leader);
    let before_kill = count();
    let new_leader = masters.wait_leader(Some(leader))?;
    wait_for("writes to resume on the new leader", || {
        if count() > before_kill + 200 {
            Ok(())
        } else {
            Err(anyhow!("{} so far", count()))
        }
    })?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        runtime.block_on(w).context("a writer panicked")?;
    }
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    masters.start_master(leader)?;

    let check = |what: &str| -> Result<()> {
        let stored = runtime
            .block_on(client.list("/load/"))
            .map_err(|e| anyhow!("{e}"))?;
        let stored: BTreeMap<String, Vec<u8>> =
            stored.into_iter().map(|kv| (kv.key, kv.value)).collect();
        for (k, v) in &acked {
            match stored.get(k) {
                Some(got) if got == v.as_bytes() => {}
                Some(got) => bail!(
                    "{what}: {k} holds {:?}, acknowledged {v}",
                    String::from_utf8_lossy(got)
                ),
                None => bail!(
                    "{what}: acknowledged write {k} is lost ({} acked, {} stored)",
                    acked.len(),
                    stored.len()
                ),
            }
        }
        Ok(())
    };
    check(&format!("after the failover to master {new_leader}"))?;
    for i in 0..3 {
        masters.kill_master(i);
    }
    for i in 0..3 {
        masters.start_master(i)?;
    }
    masters.wait_leader(None)?;
    wait_until(
        "the cluster to serve reads again",
        Duration::from_secs(30),
        POLL,
        || {
            runtime
                .block_on(client.get("/load/0/0"))
                .map_err(|e| anyhow!("{e}"))
        },
    )?;
    check("after restarting every master")?;
    Ok(())
}
