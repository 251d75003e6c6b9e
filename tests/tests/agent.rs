//! The agent's durability and safety, end to end with the real binary
//! (issue 10): separate `meseta master`, `meseta agent` (linux isolation) and
//! `meseta scheduler` processes.
//!
//! - `kill -9` of the agent and a restart keep the same task ids and pids,
//!   and a later scale-down really kills a re-attached task;
//! - a task that exits while its agent is down is reported after the
//!   restart with its exit status;
//! - an update not yet acknowledged when the agent died is delivered after
//!   the restart, in order;
//! - the master leader dies while an agent restarts: no task is killed;
//! - `--recover cleanup` kills what it finds; containers no checkpoint names
//!   are killed at start;
//! - the files API refuses symlinks out of a sandbox on every endpoint;
//! - `"user": "nobody"` runs as uid 65534, an unknown user fails the task;
//! - a fork bomb hits its pids limit while a neighbour keeps answering;
//! - an agent with a relative `--work-dir` serves `meseta task log`;
//! - `/monitor/statistics` has Mesos' shape.
//!
//! They need root and cgroups: in CI they run for real, elsewhere they skip
//! with a printed reason. Each test runs its own processes on its own ports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use meseta_tests::http::Api;
use meseta_tests::marathon::{post_app, running_tasks, wait_running};
use meseta_tests::masters::{AgentOptions, Masters};
use meseta_tests::procfs;
use meseta_tests::{require_root, wait_for};
use serde_json::{json, Value};

const RESOURCES: &str = "cpus:4;mem:2048;disk:2000;ports:[23100-23199]";

/// One master, one linux agent, one scheduler.
struct Setup {
    masters: Masters,
    scheduler: Api,
}

fn setup(masters: usize, agent: AgentOptions) -> Result<Setup> {
    let mut m = Masters::start(masters)?;
    m.start_agent_with(agent)?;
    let scheduler_addr = m.start_scheduler()?;
    Ok(Setup {
        masters: m,
        scheduler: Api::new(&scheduler_addr),
    })
}

fn linux_agent() -> AgentOptions {
    AgentOptions {
        isolation: "linux".into(),
        ..AgentOptions::new(RESOURCES)
    }
}

/// task id → (pid, sandbox) of the agent's running tasks.
fn agent_tasks(m: &Masters, agent: usize) -> Result<BTreeMap<String, (i32, String)>> {
    let state = m.agent_state(agent)?;
    let mut out = BTreeMap::new();
    for t in state["tasks"].as_array().cloned().unwrap_or_default() {
        if t["state"] == "TASK_RUNNING" {
            let id = t["id"].as_str().unwrap_or_default().to_string();
            let pid = t["pid"].as_i64().unwrap_or(0) as i32;
            let dir = t["directory"].as_str().unwrap_or_default().to_string();
            out.insert(id, (pid, dir));
        }
    }
    Ok(out)
}

/// Waits until the agent is registered and runs exactly `ids`, all with a
/// pid; returns task id → pid.
fn wait_agent_runs(m: &Masters, agent: usize, ids: &[String]) -> Result<BTreeMap<String, i32>> {
    wait_for("the agent to run the tasks, registered", || {
        let state = m.agent_state(agent)?;
        if state["connected"] != Value::Bool(true) {
            bail!("not connected");
        }
        let tasks = agent_tasks(m, agent)?;
        let running: Vec<&String> = tasks.keys().collect();
        if running.len() == ids.len()
            && ids
                .iter()
                .all(|id| tasks.get(id).is_some_and(|(pid, _)| *pid > 0))
        {
            Ok(tasks.into_iter().map(|(k, (pid, _))| (k, pid)).collect())
        } else {
            Err(anyhow!("agent runs {running:?}, want {ids:?}"))
        }
    })
}

/// The command of a task's processes: everything under its init.
fn task_processes(init: i32) -> Vec<procfs::Process> {
    let mut tree: Vec<procfs::Process> = procfs::process(init).into_iter().collect();
    tree.extend(procfs::descendants(init));
    tree.retain(|p| !p.is_zombie());
    tree
}

/// Live processes running exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<procfs::Process> {
    procfs::processes()
        .into_iter()
        .filter(|p| !p.is_zombie() && p.cmdline() == argv)
        .collect()
}

/// The leading master's view of the agent: active, with its tasks' states.
fn master_agent_tasks(m: &Masters) -> Result<(bool, BTreeMap<String, String>)> {
    let leader = m.leader()?;
    let state = m.state(leader)?;
    let active = state["slaves"]
        .as_array()
        .and_then(|a| a.first())
        .map(|a| a["active"] == Value::Bool(true))
        .unwrap_or(false);
    let mut tasks = BTreeMap::new();
    for f in state["frameworks"].as_array().cloned().unwrap_or_default() {
        for t in f["tasks"].as_array().cloned().unwrap_or_default() {
            if let (Some(id), Some(st)) = (t["id"].as_str(), t["state"].as_str()) {
                tasks.insert(id.to_string(), st.to_string());
            }
        }
    }
    Ok((active, tasks))
}

#[test]
fn a_restarted_agent_keeps_its_tasks_and_their_pids() -> Result<()> {
    if !require_root("agent recovery") {
        return Ok(());
    }
    let mut s = setup(1, linux_agent())?;
    let scheduler = s.scheduler.clone();
    s.masters.run(|m| {
        let argv = ["sleep", "4701"];
        post_app(
            &scheduler,
            &json!({"id": "/keep", "cmd": "sleep 4701", "instances": 2, "cpus": 0.1, "mem": 32}),
        )?;
        let ids = wait_running(&scheduler, "/keep", 2)?;
        let pids = wait_agent_runs(m, 0, &ids)?;
        for pid in pids.values() {
            m.track_task_pid(*pid);
        }
        ensure!(processes_running(&argv).len() == 2, "two sleeps run");

        m.kill_agent(0);
        for (id, pid) in &pids {
            ensure!(
                procfs::pid_running(*pid),
                "task {id} (pid {pid}) died with the agent"
            );
        }
        m.restart_agent(0)?;
        let after = wait_agent_runs(m, 0, &ids)?;
        ensure!(after == pids, "pids changed: {pids:?} → {after:?}");
        wait_for(
            "the master to see the agent back with both tasks running",
            || {
                let (active, tasks) = master_agent_tasks(m)?;
                let running = ids
                    .iter()
                    .all(|id| tasks.get(id).map(String::as_str) == Some("TASK_RUNNING"));
                if active && running && tasks.len() == 2 {
                    Ok(())
                } else {
                    Err(anyhow!("active {active}, tasks {tasks:?}"))
                }
            },
        )?;
        // Nothing is replaced: same ids, still two processes, for a while.
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            ensure!(
                running_tasks(&scheduler, "/keep")? == ids,
                "the scheduler replaced tasks"
            );
            let n = processes_running(&argv).len();
            ensure!(n <= 2, "{n} processes for an app of 2");
            std::thread::sleep(Duration::from_millis(200));
        }

        // Scaling down kills a re-attached task for real.
        let r = scheduler.put_json("/v2/apps/keep", &json!({"instances": 1}))?;
        ensure!(r.is_success(), "scale: {r}");
        let left = wait_running(&scheduler, "/keep", 1)?;
        let killed: Vec<&String> = ids.iter().filter(|id| !left.contains(id)).collect();
        ensure!(killed.len() == 1, "one task killed: {killed:?}");
        let killed_pid = pids[killed[0]];
        wait_for("the scaled-down task's process to end", || {
            if procfs::pid_running(killed_pid) {
                Err(anyhow!("pid {killed_pid} still runs"))
            } else {
                Ok(())
            }
        })?;
        wait_for("exactly one sleep to remain", || {
            let n = processes_running(&argv).len();
            if n == 1 {
                Ok(())
            } else {
                Err(anyhow!("{n} sleeps"))
            }
        })?;
        Ok(())
    })
}

#[test]
fn a_task_that_exits_while_its_agent_is_down_is_reported_with_its_status() -> Result<()> {
    if !require_root("agent recovery") {
        return Ok(());
    }
    let mut s = setup(1, linux_agent())?;
    let scheduler = s.scheduler.clone();
    s.masters.run(|m| {
        post_app(
            &scheduler,
            &json!({
                "id": "/ends",
                "cmd": "while [ ! -e \"$MESOS_SANDBOX/go\" ]; do sleep 0.1; done; exit 3",
                "instances": 1, "cpus": 0.1, "mem": 32,
                "backoffSeconds": 3600
            }),
        )?;
        let ids = wait_running(&scheduler, "/ends", 1)?;
        let tasks = agent_tasks(m, 0)?;
        let (pid, sandbox) = tasks.get(&ids[0]).cloned().context("the agent's task")?;

        m.kill_agent(0);
        std::fs::write(Path::new(&sandbox).join("go"), "")?;
        wait_for("the task to exit while the agent is down", || {
            if procfs::pid_running(pid) {
                Err(anyhow!("pid {pid} runs"))
            } else {
                Ok(())
            }
        })?;
        m.restart_agent(0)?;
        let failure = wait_for("the scheduler to learn how the task ended", || {
            let app = scheduler.get_json("/v2/apps/ends?embed=app.lastTaskFailure")?;
            let f = app["app"]["lastTaskFailure"].clone();
            if f["taskId"] == ids[0].as_str() {
                Ok(f)
            } else {
                Err(anyhow!("lastTaskFailure {f}"))
            }
        })?;
        ensure!(failure["state"] == "TASK_FAILED", "{failure}");
        ensure!(
            failure["message"]
                .as_str()
                .unwrap_or_default()
                .contains("exited with status 3"),
            "the exit status was lost: {failure}"
        );
        Ok(())
    })
}

/// A framework of the test's own (the sdk over gRPC) that launches one task
/// and withholds the acknowledgement of TASK_RUNNING: the agent must keep
/// it, and the task's TASK_FAILED behind it, through its restart.
#[test]
fn an_unacknowledged_update_is_delivered_after_the_agent_restarts() -> Result<()> {
    if !require_root("agent recovery") {
        return Ok(());
    }
    let mut m = Masters::start(1)?;
    m.start_agent_with(linux_agent())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    m.run(|m| runtime.block_on(unacknowledged(m)))
}

async fn next_update(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<meseta_sdk::SchedulerEvent>,
    state: meseta_sdk::v1::TaskState,
) -> Result<meseta_sdk::v1::TaskStatus> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| anyhow!("no {state:?} update within 60 s"))?
            .ok_or_else(|| anyhow!("the event stream ended"))?;
        if let meseta_sdk::SchedulerEvent::Update(status) = event {
            if status.state == state as i32 && !status.uuid.is_empty() {
                return Ok(status);
            }
        }
    }
}

async fn unacknowledged(m: &mut Masters) -> Result<()> {
    use meseta_sdk::v1 as pb;
    let info = pb::FrameworkInfo {
        name: "withholding".into(),
        user: "root".into(),
        ..Default::default()
    };
    let (client, mut events) = meseta_sdk::start(m.addrs.clone(), info, None, false);
    let offer = loop {
        match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
            Ok(Some(meseta_sdk::SchedulerEvent::Offers(offers))) if !offers.is_empty() => {
                break offers[0].clone()
            }
            Ok(Some(_)) => continue,
            _ => bail!("no offer within 60 s"),
        }
    };
    let agent_id = offer.agent_id.clone();
    let task = pb::TaskInfo {
        name: "ends".into(),
        task_id: Some(pb::TaskId {
            value: "withheld-1".into(),
        }),
        agent_id: agent_id.clone(),
        resources: meseta_core_resources("cpus:0.1;mem:32"),
        command: Some(pb::CommandInfo {
            value: "while [ ! -e \"$MESOS_SANDBOX/go\" ]; do sleep 0.1; done; exit 3".into(),
            shell: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let offer_id = offer.id.map(|o| o.value).unwrap_or_default();
    client.accept(&[offer_id], vec![task], 5.0).await?;
    let starting = next_update(&mut events, pb::TaskState::TaskStarting).await?;
    client.acknowledge(&starting).await?;
    // TASK_RUNNING arrives and is not acknowledged.
    let running = next_update(&mut events, pb::TaskState::TaskRunning).await?;
    // The harness's HTTP client blocks: its calls go through block_in_place.
    let tasks = tokio::task::block_in_place(|| agent_tasks(m, 0))?;
    let (pid, sandbox) = tasks
        .get("withheld-1")
        .cloned()
        .context("the agent's task")?;
    m.track_task_pid(pid);
    std::fs::write(Path::new(&sandbox).join("go"), "")?;
    let pending = tokio::task::block_in_place(|| {
        wait_for(
            "the agent to hold RUNNING and FAILED unacknowledged",
            || {
                let state = m.agent_state(0)?;
                let t = state["tasks"]
                    .as_array()
                    .and_then(|a| a.iter().find(|t| t["id"] == "withheld-1").cloned())
                    .ok_or_else(|| anyhow!("task not listed"))?;
                let states: Vec<String> = t["unacknowledged_updates"]
                    .as_array()
                    .map(|u| {
                        u.iter()
                            .filter_map(|x| x["state"].as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                if states == ["TASK_RUNNING", "TASK_FAILED"] {
                    Ok(states)
                } else {
                    Err(anyhow!("unacknowledged: {states:?}"))
                }
            },
        )
    })?;
    ensure!(pending.len() == 2);

    m.kill_agent(0);
    tokio::task::block_in_place(|| m.restart_agent(0))?;
    // The same RUNNING update (same uuid) comes again; only once it is
    // acknowledged does the FAILED behind it follow.
    let again = next_update(&mut events, pb::TaskState::TaskRunning).await?;
    ensure!(
        again.uuid == running.uuid,
        "a different RUNNING update came"
    );
    client.acknowledge(&again).await?;
    let failed = next_update(&mut events, pb::TaskState::TaskFailed).await?;
    ensure!(
        failed.message.contains("exited with status 3"),
        "{}",
        failed.message
    );
    ensure!(failed.agent_id == agent_id, "update without the agent id");
    client.acknowledge(&failed).await?;
    tokio::task::block_in_place(|| {
        wait_for("the agent to forget the acknowledged task", || {
            let state = m.agent_state(0)?;
            if state["tasks"].as_array().is_some_and(|t| t.is_empty()) {
                Ok(())
            } else {
                Err(anyhow!("tasks {}", state["tasks"]))
            }
        })
    })?;
    client.teardown().await?;
    Ok(())
}

/// Mesos resources from text, as the sdk's user would build them.
fn meseta_core_resources(text: &str) -> Vec<meseta_sdk::v1::Resource> {
    text.split(';')
        .filter_map(|part| {
            let (name, value) = part.split_once(':')?;
            Some(meseta_sdk::v1::Resource {
                name: name.to_string(),
                r#type: meseta_sdk::v1::value::Type::Scalar as i32,
                scalar: Some(meseta_sdk::v1::value::Scalar {
                    value: value.parse().ok()?,
                }),
                role: "*".into(),
                ..Default::default()
            })
        })
        .collect()
}

#[test]
fn the_leader_dies_while_an_agent_restarts_and_no_task_is_killed() -> Result<()> {
    if !require_root("agent recovery") {
        return Ok(());
    }
    let mut s = setup(3, linux_agent())?;
    let scheduler = s.scheduler.clone();
    s.masters.run(|m| {
        post_app(
            &scheduler,
            &json!({"id": "/through", "cmd": "sleep 4702", "instances": 2, "cpus": 0.1, "mem": 32}),
        )?;
        let ids = wait_running(&scheduler, "/through", 2)?;
        let pids = wait_agent_runs(m, 0, &ids)?;
        for pid in pids.values() {
            m.track_task_pid(*pid);
        }
        let leader = m.leader()?;
        m.kill_agent(0);
        m.kill_master(leader);
        m.restart_agent(0)?;
        let new_leader = m.wait_leader(Some(leader))?;
        let after = wait_agent_runs(m, 0, &ids)?;
        ensure!(after == pids, "pids changed: {pids:?} → {after:?}");
        wait_for(
            "the new leader to see both tasks running on the agent",
            || {
                let state = m.state(new_leader)?;
                let mut running = Vec::new();
                for f in state["frameworks"].as_array().cloned().unwrap_or_default() {
                    for t in f["tasks"].as_array().cloned().unwrap_or_default() {
                        if t["state"] == "TASK_RUNNING" {
                            running.push(t["id"].as_str().unwrap_or_default().to_string());
                        }
                    }
                }
                running.sort();
                if running == ids {
                    Ok(())
                } else {
                    Err(anyhow!("running at the new leader: {running:?}"))
                }
            },
        )?;
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            ensure!(
                running_tasks(&scheduler, "/through")? == ids,
                "tasks were replaced"
            );
            for pid in pids.values() {
                ensure!(procfs::pid_running(*pid), "task pid {pid} died");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    })
}

#[test]
fn recover_cleanup_kills_what_it_finds_and_orphans_are_killed_at_start() -> Result<()> {
    if !require_root("agent recovery") {
        return Ok(());
    }
    let mut s = setup(1, linux_agent())?;
    let scheduler = s.scheduler.clone();
    s.masters.run(|m| {
        post_app(
            &scheduler,
            &json!({"id": "/clean", "cmd": "sleep 4703", "instances": 1, "cpus": 0.1, "mem": 32}),
        )?;
        let ids = wait_running(&scheduler, "/clean", 1)?;
        let pids = wait_agent_runs(m, 0, &ids)?;
        let pid = pids[&ids[0]];
        m.track_task_pid(pid);
        let containers = m.agent_state(0)?["flags"]["containers_cgroup"]
            .as_str()
            .map(String::from)
            .context("the agent names its containers' cgroup")?;

        // A process in this agent's cgroup tree that no checkpoint names.
        let orphan = std::process::Command::new("sleep").arg("4704").spawn()?;
        let orphan_pid = orphan.id() as i32;
        m.track_task_pid(orphan_pid);
        let mut orphan_dirs = Vec::new();
        for hierarchy in ["memory", "cpu", "pids"] {
            let dir = PathBuf::from("/sys/fs/cgroup")
                .join(hierarchy)
                .join(&containers)
                .join("orphan-test");
            if std::fs::create_dir_all(&dir).is_ok() {
                std::fs::write(dir.join("cgroup.procs"), orphan_pid.to_string())?;
                orphan_dirs.push(dir);
            }
        }
        ensure!(!orphan_dirs.is_empty(), "could not plant an orphan");

        m.kill_agent(0);
        m.restart_agent_with(0, &["--recover", "cleanup"])?;
        wait_for("the task and the orphan to be killed", || {
            let alive: Vec<i32> = [pid, orphan_pid]
                .into_iter()
                .filter(|p| procfs::pid_running(*p))
                .collect();
            if alive.is_empty() {
                Ok(())
            } else {
                Err(anyhow!("still alive: {alive:?}"))
            }
        })?;
        for dir in &orphan_dirs {
            ensure!(!dir.exists(), "{} was not removed", dir.display());
        }
        // The master hears the task is gone and the scheduler replaces it.
        wait_for("the killed task to be replaced", || {
            let now = running_tasks(&scheduler, "/clean")?;
            if now.len() == 1 && now != ids {
                Ok(())
            } else {
                Err(anyhow!("running: {now:?}"))
            }
        })?;
        let mut orphan = orphan;
        let _ = orphan.wait();
        Ok(())
    })
}

#[test]
fn the_files_api_never_follows_a_link_out_of_a_sandbox() -> Result<()> {
    if !require_root("the sandbox files API") {
        return Ok(());
    }
    let mut s = setup(1, linux_agent())?;
    let scheduler = s.scheduler.clone();
    s.masters.run(|m| {
        post_app(
            &scheduler,
            &json!({
                "id": "/leaky",
                "cmd": "ln -s /etc/shadow \"$MESOS_SANDBOX/leak\"; ln -s / \"$MESOS_SANDBOX/root\"; \
                        mkdir \"$MESOS_SANDBOX/d\"; echo visible > \"$MESOS_SANDBOX/d/ok.txt\"; sleep 4705",
                "instances": 1, "cpus": 0.1, "mem": 32
            }),
        )?;
        let ids = wait_running(&scheduler, "/leaky", 1)?;
        let tasks = agent_tasks(m, 0)?;
        let (_, sandbox) = tasks.get(&ids[0]).cloned().context("the task")?;
        let agent = Api::new(m.agent_addr(0));
        wait_for("the task to plant its links", || {
            let r = agent.get(&format!("/files/read?path={sandbox}/d/ok.txt"))?;
            if r.status == 200 && r.json()["data"] == "visible\n" {
                Ok(())
            } else {
                Err(anyhow!("{r}"))
            }
        })?;
        let shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
        let secret = shadow.lines().next().unwrap_or("root:").to_string();
        let attempts = [
            format!("/files/read?path={sandbox}/leak"),
            format!("/files/download?path={sandbox}/leak"),
            format!("/files/read?path={sandbox}/root/etc/shadow"),
            format!("/files/download?path={sandbox}/root/etc/shadow"),
            format!("/files/browse?path={sandbox}/root"),
            format!("/files/browse?path={sandbox}/root/etc"),
            "/files/read?path=/etc/shadow".to_string(),
            "/files/download?path=/etc/shadow".to_string(),
            "/files/browse?path=/".to_string(),
            format!("/files/read?path={sandbox}/../../../../../../../../etc/shadow"),
        ];
        for attempt in &attempts {
            let r = agent.get(attempt)?;
            ensure!(
                [400, 403, 404].contains(&r.status),
                "{attempt} answered {}: {}",
                r.status,
                r.body
            );
            ensure!(!r.body.contains(&secret), "{attempt} leaked /etc/shadow");
            ensure!(
                r.json()["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{attempt}: no message in {}",
                r.body
            );
        }
        // Inside is served, and the links are listed as links.
        let listing = agent.get_json(&format!("/files/browse?path={sandbox}"))?;
        let leak = listing
            .as_array()
            .and_then(|a| a.iter().find(|e| e["path"] == format!("{sandbox}/leak")).cloned())
            .context("leak is listed")?;
        ensure!(leak["mode"].as_str().is_some_and(|m| m.starts_with('l')), "{leak}");
        let dl = agent.get(&format!("/files/download?path={sandbox}/d/ok.txt"))?;
        ensure!(dl.status == 200 && dl.body == "visible\n", "{dl}");
        Ok(())
    })
}

#[test]
fn tasks_run_as_their_user_and_an_unknown_user_fails_the_task() -> Result<()> {
    if !require_root("switching users") {
        return Ok(());
    }
    let mut s = setup(1, linux_agent())?;
    let scheduler = s.scheduler.clone();
    s.masters.run(|m| {
        post_app(
            &scheduler,
            &json!({
                "id": "/as-nobody", "user": "nobody",
                "cmd": "id -u > \"$MESOS_SANDBOX/uid\"; touch \"$MESOS_SANDBOX/mine\"; sleep 4706",
                "instances": 1, "cpus": 0.1, "mem": 32
            }),
        )?;
        let ids = wait_running(&scheduler, "/as-nobody", 1)?;
        let (pid, sandbox) = agent_tasks(m, 0)?
            .get(&ids[0])
            .cloned()
            .context("the task")?;
        let agent = Api::new(m.agent_addr(0));
        let uid = wait_for("the task to write its uid", || {
            let r = agent.get(&format!("/files/read?path={sandbox}/uid"))?;
            match r.json()["data"].as_str() {
                Some(d) if !d.is_empty() => Ok(d.trim().to_string()),
                _ => Err(anyhow!("{r}")),
            }
        })?;
        ensure!(uid == "65534", "the task runs as uid {uid}");
        let owner = std::fs::metadata(Path::new(&sandbox).join("mine"))
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))?;
        ensure!(owner == 65534, "its files belong to {owner}");
        // Its processes, as the host sees them.
        for p in task_processes(pid).iter().skip(1) {
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", p.pid)).unwrap_or_default();
            if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
                ensure!(
                    line.split_whitespace().nth(1) == Some("65534"),
                    "{} runs as {line}",
                    p.pid
                );
            }
        }

        post_app(
            &scheduler,
            &json!({
                "id": "/as-ghost", "user": "no-such-user-meseta",
                "cmd": "sleep 4707", "instances": 1, "cpus": 0.1, "mem": 32
            }),
        )?;
        let failure = wait_for("the ghost's task to fail", || {
            let app = scheduler.get_json("/v2/apps/as-ghost?embed=app.lastTaskFailure")?;
            let f = app["app"]["lastTaskFailure"].clone();
            if f["state"] == "TASK_FAILED" {
                Ok(f)
            } else {
                Err(anyhow!("lastTaskFailure {f}"))
            }
        })?;
        ensure!(
            failure["message"]
                .as_str()
                .unwrap_or_default()
                .contains("no-such-user-meseta"),
            "the message does not name the user: {failure}"
        );
        ensure!(
            processes_running(&["sleep", "4707"]).is_empty(),
            "the ghost's command ran"
        );
        Ok(())
    })
}

#[test]
fn a_fork_bomb_hits_its_pids_limit_and_a_neighbour_keeps_answering() -> Result<()> {
    if !require_root("the pids limit") {
        return Ok(());
    }
    let mut agent = linux_agent();
    agent.args = vec!["--cgroups-max-pids".into(), "64".into()];
    let mut s = setup(1, agent)?;
    let scheduler = s.scheduler.clone();
    s.masters.run(|m| {
        post_app(
            &scheduler,
            &json!({
                "id": "/neighbour", "cmd": "exec python3 -m http.server $PORT0 --bind 127.0.0.1",
                "instances": 1, "cpus": 0.5, "mem": 64, "portDefinitions": [{"port": 0}]
            }),
        )?;
        let ids = wait_running(&scheduler, "/neighbour", 1)?;
        let port = scheduler.get_json("/v2/apps/neighbour/tasks")?["tasks"][0]["ports"][0]
            .as_u64()
            .context("the neighbour's port")?;
        let neighbour = Api::new(&format!("127.0.0.1:{port}"));
        wait_for("the neighbour to answer", || neighbour.get("/").and_then(|r| {
            if r.status == 200 { Ok(()) } else { Err(anyhow!("{r}")) }
        }))?;
        let _ = ids;

        post_app(
            &scheduler,
            &json!({"id": "/bomb", "cmd": "b() { b | b & }; b; exec sleep 4710", "instances": 1, "cpus": 0.1, "mem": 128}),
        )?;
        let bomb = wait_running(&scheduler, "/bomb", 1)?;
        let (init, _) = agent_tasks(m, 0)?.get(&bomb[0]).cloned().context("the bomb")?;
        m.track_task_pid(init);
        let cgroup = procfs::cgroup(init, "pids").context("the bomb's pids cgroup")?;
        let dir = Path::new("/sys/fs/cgroup/pids").join(cgroup.trim_start_matches('/'));
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        ensure!(read("pids.max").trim() == "64", "pids.max {}", read("pids.max"));
        wait_for("the bomb to hit its limit", || {
            let refused: u64 = read("pids.events")
                .lines()
                .find_map(|l| l.strip_prefix("max "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            if refused > 0 {
                Ok(())
            } else {
                Err(anyhow!("pids.current {}", read("pids.current")))
            }
        })?;
        // The neighbour answers every request while the bomb runs.
        for _ in 0..20 {
            let r = neighbour.get("/")?;
            ensure!(r.status == 200, "the neighbour failed: {r}");
            let current: u64 = read("pids.current").trim().parse().unwrap_or(0);
            ensure!(current <= 64, "the bomb holds {current} pids");
            std::thread::sleep(Duration::from_millis(100));
        }
        let r = scheduler.delete("/v2/apps/bomb")?;
        ensure!(r.is_success(), "{r}");
        wait_for("the bomb to be gone", || {
            if procfs::pid_running(init) { Err(anyhow!("still there")) } else { Ok(()) }
        })?;
        Ok(())
    })
}

#[test]
fn an_agent_with_a_relative_work_dir_serves_task_logs() -> Result<()> {
    if !require_root("agent recovery") {
        return Ok(());
    }
    let cwd = tempfile::tempdir()?;
    let mut agent = linux_agent();
    agent.work_dir = Some("rel/agent".into());
    agent.cwd = Some(cwd.path().to_path_buf());
    let mut s = setup(1, agent)?;
    let scheduler = s.scheduler.clone();
    s.masters.run(|m| {
        post_app(
            &scheduler,
            &json!({"id": "/logs", "cmd": "echo hello from a relative work dir; sleep 4708", "instances": 1, "cpus": 0.1, "mem": 32}),
        )?;
        let ids = wait_running(&scheduler, "/logs", 1)?;
        let leader = m.leader()?;
        let master = m.addrs[leader].clone();
        let out = wait_for("meseta task log to print the task's stdout", || {
            let out = m.cli(&["task", "log", &ids[0], "--master", &master], Duration::from_secs(20))?;
            if out.contains("hello from a relative work dir") {
                Ok(out)
            } else {
                Err(anyhow!("printed {out:?}"))
            }
        })?;
        ensure!(!out.is_empty());
        let dir = m.agent_state(0)?["flags"]["work_dir"].as_str().unwrap_or_default().to_string();
        ensure!(Path::new(&dir).is_absolute(), "work_dir {dir} is not absolute");
        Ok(())
    })
}

#[test]
fn monitor_statistics_reads_the_tasks_cgroups() -> Result<()> {
    if !require_root("the task cgroups") {
        return Ok(());
    }
    let mut s = setup(1, linux_agent())?;
    let scheduler = s.scheduler.clone();
    s.masters.run(|m| {
        post_app(
            &scheduler,
            &json!({"id": "/busy", "cmd": "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; sleep 4709", "instances": 1, "cpus": 0.25, "mem": 64}),
        )?;
        let ids = wait_running(&scheduler, "/busy", 1)?;
        let agent = Api::new(m.agent_addr(0));
        let entry = wait_for("statistics with cpu time", || {
            let stats = agent.get_json("/monitor/statistics")?;
            let e = stats
                .as_array()
                .and_then(|a| a.iter().find(|e| e["executor_id"] == ids[0].as_str()).cloned())
                .ok_or_else(|| anyhow!("no entry: {stats}"))?;
            let s = &e["statistics"];
            let cpu = s["cpus_user_time_secs"].as_f64().unwrap_or(0.0) + s["cpus_system_time_secs"].as_f64().unwrap_or(0.0);
            if cpu > 0.0 {
                Ok(e)
            } else {
                Err(anyhow!("{e}"))
            }
        })?;
        for key in ["executor_id", "executor_name", "framework_id", "source", "statistics"] {
            ensure!(!entry[key].is_null(), "no {key} in {entry}");
        }
        let s = &entry["statistics"];
        for key in ["cpus_user_time_secs", "cpus_system_time_secs", "cpus_limit", "mem_rss_bytes", "mem_limit_bytes", "timestamp"] {
            ensure!(s[key].is_number(), "no {key} in {s}");
        }
        ensure!(s["cpus_limit"].as_f64() == Some(0.25), "{s}");
        ensure!(s["mem_limit_bytes"].as_u64() == Some(64 * 1024 * 1024), "{s}");
        ensure!(s["mem_rss_bytes"].as_u64() > Some(0), "{s}");
        Ok(())
    })
}
