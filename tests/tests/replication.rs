//! Replicated masters, end to end with the real binary: leader failover
//! kills no task and the scheduler keeps working; a killed master comes
//! back from its data dir and follows; no acknowledged KV write is lost when
//! the leader is killed mid-load; all masters restarted at once keep their
//! state; a restarted scheduler finds its apps and keeps its tasks; a
//! standby scheduler proxies to the leader and takes over when it dies.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use meseta_tests::http::Api;
use meseta_tests::marathon::{post_app, running_tasks, wait_running};
use meseta_tests::masters::{leader_of, Masters, ELECTION_DEADLINE};
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
        if leader_of(&s) == leader_addr && s["elected"] == Value::Bool(false) {
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
    let sched2_addr = masters.start_scheduler()?;
    // It stands by until the killed scheduler's leader lease runs out.
    masters.wait_scheduler_elected(&sched2_addr, ELECTION_DEADLINE)?;
    let sched2 = Api::new(&sched2_addr);
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

/// `meseta master membership list` against `master`, as JSON.
fn membership_list(masters: &mut Masters, master: &str) -> Result<Value> {
    let out = masters.cli(
        &["master", "membership", "list", "--master", master],
        Duration::from_secs(20),
    )?;
    serde_json::from_str(&out).with_context(|| format!("membership list printed {out:?}"))
}

/// The voter ids in a membership answer.
fn voters(membership: &Value) -> Vec<u64> {
    membership["voters"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// A dead follower is removed and a new master (started with `--join
/// --node-id 4`) added through the CLI; the newcomer gets the state by
/// snapshot, and once the old leader is killed a quorum needs it, so a new
/// leader and a working KV prove it votes.
#[test]
fn a_dead_master_is_replaced_through_the_membership_api() -> Result<()> {
    Masters::start(3)?.run(replace_a_dead_master)
}

fn replace_a_dead_master(masters: &mut Masters) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a runtime")?;
    let leader = masters.leader()?;
    let leader_addr = masters.addrs[leader].clone();

    // State before the replacement: an agent in the registry and KV keys.
    masters.start_agent("cpus:1;mem:256;disk:100;ports:[31000-31010]")?;
    wait_for("the agent to be in the registry", || {
        let s = masters.state(leader)?;
        if s["registered_agents"].as_u64() == Some(1) {
            Ok(())
        } else {
            Err(anyhow!("registered_agents {}", s["registered_agents"]))
        }
    })?;
    let client = meseta_sdk::KvClient::new(masters.addrs.clone());
    let keys: Vec<(String, String)> = (0..5)
        .map(|n| (format!("/replace/{n}"), format!("value-{n}")))
        .collect();
    for (k, v) in &keys {
        runtime
            .block_on(client.put(k, v.clone().into_bytes(), 0))
            .map_err(|e| anyhow!("put {k}: {e}"))?;
    }

    // The founding members are ids 1..=3 in --masters order.
    let before = membership_list(masters, &leader_addr)?;
    ensure!(
        voters(&before) == [1, 2, 3],
        "voters at the start: {before}"
    );
    let follower = (leader + 1) % 3;
    let survivor = (leader + 2) % 3;
    let dead_id = follower as u64 + 1;
    ensure!(
        before["peers"][dead_id.to_string()] == masters.addrs[follower].as_str(),
        "node {dead_id} is not at {}: {before}",
        masters.addrs[follower]
    );

    // kill -9 a follower and remove it.
    masters.kill_master(follower);
    masters.cli(
        &[
            "master",
            "membership",
            "remove",
            "--id",
            &dead_id.to_string(),
            "--master",
            &leader_addr,
        ],
        Duration::from_secs(20),
    )?;
    let after_remove = membership_list(masters, &leader_addr)?;
    ensure!(
        !voters(&after_remove).contains(&dead_id),
        "node {dead_id} is still a voter after its removal: {after_remove}"
    );

    // A new master on a fresh port and data dir joins as node 4.
    let newcomer = masters.start_joining_master()?;
    ensure!(newcomer == 3, "the new master got index {newcomer}");
    let new_addr = masters.addrs[newcomer].clone();
    wait_for("the joining master to answer /master/state", || {
        masters.state(newcomer)
    })?;
    masters.cli(
        &[
            "master",
            "membership",
            "add",
            "--id",
            "4",
            "--address",
            &new_addr,
            "--master",
            &leader_addr,
        ],
        Duration::from_secs(20),
    )?;

    // It follows the leader and has the state, by snapshot.
    wait_for("node 4 to follow the leader with the registry", || {
        let s = masters.state(newcomer)?;
        if leader_of(&s) != leader_addr || s["elected"] != Value::Bool(false) {
            bail!("leader {} elected {}", s["leader"], s["elected"]);
        }
        if s["registered_agents"].as_u64() != Some(1) {
            bail!("registered_agents {}", s["registered_agents"]);
        }
        Ok(())
    })?;
    wait_for("the membership to be 4 in, the dead node out", || {
        let m = membership_list(masters, &leader_addr)?;
        let v = voters(&m);
        if v.contains(&4) && !v.contains(&dead_id) && v.len() == 3 {
            Ok(())
        } else {
            Err(anyhow!("{m}"))
        }
    })?;
    let own = Api::new(&new_addr);
    wait_for("node 4's own view of the membership", || {
        let m = own.get_json("/master/membership")?;
        let v = voters(&m);
        // Its address book, from the leader's snapshot, no longer names the
        // removed member either.
        let dead_listed = !m["peers"][dead_id.to_string()].is_null();
        if m["id"] == 4 && v.contains(&4) && !v.contains(&dead_id) && v.len() == 3 && !dead_listed {
            Ok(())
        } else {
            Err(anyhow!("{m}"))
        }
    })?;
    let check_keys = |client: &meseta_sdk::KvClient, what: &str| -> Result<()> {
        for (k, v) in &keys {
            let got = runtime
                .block_on(client.get(k))
                .map_err(|e| anyhow!("{what}: get {k}: {e}"))?;
            ensure!(
                got.as_ref().map(|kv| kv.value.as_slice()) == Some(v.as_bytes()),
                "{what}: {k} holds {:?}, wrote {v}",
                got.map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            );
        }
        Ok(())
    };
    check_keys(&client, "after node 4 joined")?;

    // Kill the original leader: the survivor and node 4 are the only
    // quorum of {survivor, leader, 4}, so electing anyone needs node 4's vote.
    masters.kill_master(leader);
    let new_leader = masters.wait_leader(Some(leader))?;
    ensure!(
        new_leader == survivor || new_leader == newcomer,
        "master {new_leader} leads, not one of the survivors"
    );
    let client = meseta_sdk::KvClient::new(vec![masters.addrs[survivor].clone(), new_addr.clone()]);
    // Reads retry until a leader serves them; the write is then made once.
    check_keys(&client, "after the old leader died")?;
    runtime
        .block_on(client.put("/replace/after", b"node 4 votes".to_vec(), 0))
        .map_err(|e| anyhow!("put after the failover: {e}"))?;
    let got = runtime
        .block_on(client.get("/replace/after"))
        .map_err(|e| anyhow!("get after the failover: {e}"))?;
    ensure!(
        got.as_ref().map(|kv| kv.value.as_slice()) == Some(b"node 4 votes".as_slice()),
        "/replace/after holds {got:?}"
    );
    let last = membership_list(masters, &new_addr)?;
    ensure!(
        leader_of(&last) == masters.addrs[new_leader],
        "membership names another leader than master {new_leader}: {last}"
    );
    Ok(())
}

/// Scheduler A leads, B (started second) stands by and proxies to A; after
/// `kill -9` of A, B takes the leader lease once it runs out, loads the
/// state, keeps A's task (same pid) and launches new apps.
#[test]
fn a_standby_scheduler_takes_over() -> Result<()> {
    Masters::start(3)?.run(standby_takes_over)
}

fn standby_takes_over(masters: &mut Masters) -> Result<()> {
    masters.start_agent("cpus:4;mem:2048;disk:1000;ports:[31000-31100]")?;
    let a_addr = masters.start_scheduler()?;
    masters.wait_scheduler_elected(&a_addr, ELECTION_DEADLINE)?;
    let b_addr = masters.start_scheduler()?;
    let a = Api::new(&a_addr);
    let b = Api::new(&b_addr);

    // B stands by and names A.
    let info = wait_for("B to stand by for A", || {
        let info = b.get_json("/v2/info")?;
        if info["elected"] == Value::Bool(false) && info["leader"] == a_addr.as_str() {
            Ok(info)
        } else {
            Err(anyhow!(
                "elected {} leader {}",
                info["elected"],
                info["leader"]
            ))
        }
    })?;
    for field in ["marathon_config", "zookeeper_config", "http_config"] {
        ensure!(
            info[field].is_object(),
            "B's /v2/info lacks {field}: {info}"
        );
    }
    ensure!(
        b.get_json("/v2/leader")?["leader"] == a_addr.as_str(),
        "B's /v2/leader does not name A"
    );
    ensure!(
        a.get_json("/v2/info")?["elected"] == Value::Bool(true),
        "A does not say it is elected"
    );

    // A request to B is proxied to A.
    post_app(
        &b,
        &json!({"id": "/kept", "cmd": "sleep 1000", "instances": 1, "cpus": 0.1, "mem": 16}),
    )?;
    ensure!(
        a.get_json("/v2/apps/kept")?["app"]["id"] == "/kept",
        "the app POSTed to B is not on A"
    );
    let tasks = wait_running(&b, "/kept", 1)?;
    let leader = masters.leader()?;
    let pids = wait_for("the master to report the task's pid", || {
        let p = task_pids(masters, leader)?;
        match tasks
            .iter()
            .map(|t| p.get(t).copied())
            .collect::<Option<Vec<i64>>>()
        {
            Some(pids) => Ok(pids),
            None => Err(anyhow!("pids known: {p:?}")),
        }
    })?;
    for pid in &pids {
        masters.track_task_pid(*pid as i32);
    }

    // kill -9 A: B takes over once A's lease runs out.
    masters.kill_scheduler(&a_addr);
    masters.wait_scheduler_elected(&b_addr, Duration::from_secs(20))?;
    ensure!(
        b.get_json("/v2/leader")?["leader"] == b_addr.as_str(),
        "B's /v2/leader does not name B"
    );
    ensure!(
        b.get_json("/v2/apps/kept")?["app"]["id"] == "/kept",
        "B does not see the app"
    );
    ensure!(
        wait_running(&b, "/kept", 1)? == tasks,
        "the new leader replaced the task"
    );
    let after = wait_for("the master to report the task's pid again", || {
        let p = task_pids(masters, leader)?;
        match tasks
            .iter()
            .map(|t| p.get(t).copied())
            .collect::<Option<Vec<i64>>>()
        {
            Some(pids) => Ok(pids),
            None => Err(anyhow!("pids known: {p:?}")),
        }
    })?;
    ensure!(after == pids, "the task changed pid: {pids:?} → {after:?}");
    for pid in &pids {
        ensure!(procfs::pid_running(*pid as i32), "task pid {pid} died");
    }

    // The new leader launches new apps.
    post_app(
        &b,
        &json!({"id": "/after-takeover", "cmd": "sleep 1000", "instances": 1, "cpus": 0.1, "mem": 16}),
    )?;
    wait_running(&b, "/after-takeover", 1)?;
    ensure!(
        running_tasks(&b, "/kept")? == tasks,
        "the kept app's tasks changed"
    );
    Ok(())
}
