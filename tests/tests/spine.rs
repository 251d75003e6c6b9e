//! The spine, end to end (issue 2, "How it is checked"): a Marathon app
//! POSTed to `meseta up` becomes real, isolated processes, through a real
//! master and agent, and the `/v2` API answers as Marathon does.
//!
//! Every test starts its own cluster on its own ports, so they run in
//! parallel. Waits have generous deadlines; nothing here checks speed (the
//! launch latency is measured by `meseta-bench launch`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use meseta_tests::procfs::{self, Process};
use meseta_tests::{
    in_ci, require_root, wait_for, wait_until, with_cluster, Cluster, ClusterOptions,
};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

fn ids(tasks: &[Value]) -> BTreeSet<String> {
    tasks
        .iter()
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect()
}

fn task_id(task: &Value) -> Result<String> {
    task["id"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| anyhow!("task without id: {task}"))
}

fn ports_of(task: &Value) -> Vec<u64> {
    task["ports"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// `[a-b]` or `[a-b, c-d]` (Mesos' ranges text) as inclusive pairs.
fn parse_ranges(text: &str) -> Vec<(u64, u64)> {
    text.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .filter_map(|r| {
            let (a, b) = r.trim().split_once('-')?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        })
        .collect()
}

/// The init pid and every live process under it, for each task.
fn task_trees(c: &Cluster, tasks: &[Value]) -> Result<Vec<(String, i32, Vec<Process>)>> {
    tasks
        .iter()
        .map(|t| {
            let id = task_id(t)?;
            let init = c.task_init_pid(&id)?;
            let mut tree: Vec<Process> = procfs::process(init).into_iter().collect();
            tree.extend(procfs::descendants(init));
            Ok((id, init, tree))
        })
        .collect()
}

/// The task memory cgroups (meseta's, under `/meseta/`) that hold `pids`,
/// for checking later that they are empty or removed. Empty under posix
/// isolation, where tasks share the agent's cgroup.
fn memory_cgroups(pids: &[i32]) -> BTreeSet<PathBuf> {
    pids.iter()
        .filter(|p| {
            procfs::cgroup(**p, "memory")
                .or_else(|| procfs::cgroup(**p, ""))
                .is_some_and(|c| c.starts_with("/meseta/"))
        })
        .filter_map(|p| procfs::memory_limit_file(*p))
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect()
}

/// Waits until none of `procs` runs and every cgroup in `cgroups` is empty
/// or gone (a process that escaped the tree would still sit in its cgroup).
fn wait_all_gone(what: &str, procs: &[Process], cgroups: &BTreeSet<PathBuf>) -> Result<()> {
    wait_for(what, || {
        let alive: Vec<String> = procs
            .iter()
            .filter(|p| procfs::still_running(p))
            .map(|p| format!("{} {:?}", p.pid, p.cmdline()))
            .collect();
        if !alive.is_empty() {
            return Err(format!("still running: {alive:?}"));
        }
        for dir in cgroups {
            if let Ok(members) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                let members: Vec<&str> = members.lines().collect();
                if !members.is_empty() {
                    return Err(format!("cgroup {} still holds {members:?}", dir.display()));
                }
            }
        }
        Ok(())
    })
}

/// The master's view of the only agent: `used_resources` is what the
/// running tasks asked for, and offered + used never exceeds the total
/// (invariant 4).
fn check_agent_accounting(c: &Cluster, cpus: f64, mem: f64) -> Result<()> {
    let state = c.master_state()?;
    let agent = &state["slaves"][0];
    let get = |kind: &str, key: &str| agent[kind][key].as_f64().unwrap_or(0.0);
    for (key, expected) in [("cpus", cpus), ("mem", mem)] {
        let used = get("used_resources", key);
        ensure!(
            (used - expected).abs() < 1e-6,
            "the master counts {used} {key} used on the agent, expected {expected}: {agent}"
        );
        let (offered, total) = (get("offered_resources", key), get("resources", key));
        ensure!(
            offered + used <= total + 1e-6,
            "{key}: offered {offered} + used {used} > total {total}"
        );
    }
    Ok(())
}

fn sleeper(id: &str, instances: u32) -> Value {
    json!({"id": id, "cmd": "sleep 1000", "instances": instances, "cpus": 0.1, "mem": 32})
}

/// POST 2 × `sleep 1000` → 2 running tasks that are 2 real `sleep 1000`
/// processes, each under its own task init (and, with linux isolation, in
/// its task's cgroup and PID namespace); DELETE → none of them is left.
#[test]
fn two_instances_are_two_real_processes_and_delete_leaves_none() {
    with_cluster(ClusterOptions::default(), |c| {
        let id = "/sleepers";
        c.create_app(&sleeper(id, 2))?;
        let tasks = c.wait_running(id, 2)?;
        let sleeps = wait_for("exactly 2 `sleep 1000` processes of this cluster", || {
            let p = c.processes_running(&["sleep", "1000"]);
            if p.len() == 2 {
                Ok(p)
            } else {
                Err(format!("{} of them: {p:?}", p.len()))
            }
        })?;
        let trees = task_trees(c, &tasks)?;
        let linux = c.isolation()? == "linux";
        let agent_tasks = c.agent().get_json("/state")?["tasks"].clone();
        let mut owners = BTreeSet::new();
        for sleep in &sleeps {
            let (owner, init, _) = trees
                .iter()
                .find(|(_, _, tree)| tree.iter().any(|p| p.pid == sleep.pid))
                .ok_or_else(|| anyhow!("sleep {} is under no task init: {trees:?}", sleep.pid))?;
            owners.insert(owner.clone());
            if linux {
                ensure!(
                    procfs::cmdline(*init).iter().any(|a| a == "__task-init"),
                    "task {owner}'s pid {init} is not a task init: {:?}",
                    procfs::cmdline(*init)
                );
                let container = agent_tasks
                    .as_array()
                    .and_then(|a| a.iter().find(|t| t["id"] == owner.as_str()))
                    .and_then(|t| t["container_id"].as_str())
                    .ok_or_else(|| anyhow!("no container_id for {owner} in the agent's /state"))?;
                for controller in ["memory", "cpu"] {
                    let cg = procfs::cgroup(sleep.pid, controller).unwrap_or_default();
                    ensure!(
                        cg.starts_with("/meseta/") && cg.ends_with(container),
                        "sleep {} of {owner} is in {controller} cgroup {cg:?}, not its container's ({container})",
                        sleep.pid
                    );
                }
                ensure!(
                    procfs::namespace(sleep.pid, "pid")
                        != procfs::namespace(std::process::id() as i32, "pid"),
                    "sleep {} shares the host's PID namespace",
                    sleep.pid
                );
            }
        }
        ensure!(
            owners.len() == 2,
            "both sleeps belong to the same task: {owners:?}"
        );
        check_agent_accounting(c, 0.2, 64.0)?;

        let all: Vec<Process> = trees.iter().flat_map(|(_, _, t)| t.clone()).collect();
        let cgroups = memory_cgroups(&sleeps.iter().map(|p| p.pid).collect::<Vec<_>>());
        c.wait_deployments_done(id)?;
        let reply = c.delete_app(id, false)?;
        ensure!(reply.status == 200, "DELETE {id}: {reply}");
        ensure!(
            reply.json()["deploymentId"].is_string(),
            "DELETE {id} answered without deploymentId: {reply}"
        );
        wait_all_gone(
            "the app's processes to be gone after DELETE",
            &all,
            &cgroups,
        )?;
        ensure!(c.app(id)?.is_none(), "{id} still exists after DELETE");
        wait_for("the master to release the app's resources", || {
            check_agent_accounting(c, 0.0, 0.0).map_err(|e| format!("{e:#}"))
        })?;
        wait_for("no task process of the cluster", || {
            let left = c.processes();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        })?;
        Ok(())
    });
}

/// `python3 -m http.server $PORT0` with `portDefinitions: [{"port": 0}]`
/// answers on the host:port `/v2/apps/{id}/tasks` reports; the service port
/// comes from 10000–20000 and the host port from the agent's offer.
#[test]
fn http_server_answers_on_the_reported_host_and_port() {
    with_cluster(ClusterOptions::default(), |c| {
        let id = "/web/server";
        let created = c.create_app(&json!({
            "id": id,
            "cmd": "python3 -m http.server $PORT0",
            "instances": 1,
            "cpus": 0.1,
            "mem": 64,
            "portDefinitions": [{"port": 0}],
        }))?;
        let service_port = created["portDefinitions"][0]["port"].as_u64().unwrap_or(0);
        ensure!(
            (10000..=20000).contains(&service_port),
            "service port {service_port} of the created app is not in 10000-20000: {created}"
        );
        let tasks = c.wait_running(id, 1)?;
        let task = &tasks[0];
        let host = task["host"]
            .as_str()
            .ok_or_else(|| anyhow!("task without host: {task}"))?
            .to_string();
        let ports = ports_of(task);
        ensure!(ports.len() == 1, "expected one host port: {task}");
        let service_ports: Vec<u64> = task["servicePorts"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        ensure!(
            service_ports == vec![service_port],
            "task servicePorts {service_ports:?} != app's [{service_port}]"
        );

        let state = c.master_state()?;
        let ranges = parse_ranges(
            state["slaves"][0]["resources"]["ports"]
                .as_str()
                .unwrap_or_default(),
        );
        ensure!(
            !ranges.is_empty(),
            "the agent advertises no port ranges: {}",
            state["slaves"][0]
        );
        ensure!(
            ranges.iter().any(|(a, b)| (*a..=*b).contains(&ports[0])),
            "task port {} is outside the agent's ranges {ranges:?}",
            ports[0]
        );

        let url = format!("http://{host}:{}/", ports[0]);
        let http = meseta_tests::http::client();
        let status = wait_for(&format!("GET {url} to answer 200"), || {
            match http.get(&url).send() {
                Ok(r) if r.status().as_u16() == 200 => Ok(200),
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(format!("{e}")),
            }
        })?;
        ensure!(status == 200);
        Ok(())
    });
}

/// `PUT {"instances": 3}` adds one task and keeps the two running ones; a
/// PUT that changes `cmd` replaces every task.
#[test]
fn scaling_keeps_tasks_and_a_changed_cmd_replaces_them() {
    with_cluster(ClusterOptions::default(), |c| {
        let id = "/scaled";
        c.create_app(&sleeper(id, 2))?;
        let first = ids(&c.wait_running(id, 2)?);
        c.wait_deployments_done(id)?;

        let reply = c
            .marathon()
            .put_json(&format!("/v2/apps{id}"), &json!({"instances": 3}))?;
        ensure!(reply.status == 200, "PUT instances 3: {reply}");
        let body = reply.json();
        ensure!(
            body["deploymentId"].is_string() && body["version"].is_string(),
            "PUT must answer {{deploymentId, version}}: {reply}"
        );
        let scaled = ids(&c.wait_running(id, 3)?);
        ensure!(
            first.is_subset(&scaled),
            "scaling replaced tasks: before {first:?}, after {scaled:?}"
        );
        let app = c.app(id)?.ok_or_else(|| anyhow!("{id} vanished"))?;
        ensure!(
            app["instances"] == 3 && app["cmd"] == "sleep 1000",
            "after scaling: {app}"
        );
        c.wait_deployments_done(id)?;

        let events = c.events("?event_type=status_update_event")?;
        let reply = c
            .marathon()
            .put_json(&format!("/v2/apps{id}"), &json!({"cmd": "sleep 1001"}))?;
        ensure!(reply.status == 200, "PUT cmd: {reply}");
        let version = reply.json()["version"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let replaced = wait_for("3 new tasks running the new cmd", || {
            let tasks = c.app_tasks(id).map_err(|e| format!("{e:#}"))?;
            let now = ids(&tasks);
            let running = tasks
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .count();
            if tasks.len() == 3
                && running == 3
                && now.is_disjoint(&scaled)
                && tasks.iter().all(|t| t["version"] == version.as_str())
            {
                Ok(now)
            } else {
                Err(format!("{running}/{} running, ids {now:?}", tasks.len()))
            }
        })?;
        wait_for("3 `sleep 1001` and no `sleep 1000` processes", || {
            let new = c.processes_running(&["sleep", "1001"]).len();
            let old = c.processes_running(&["sleep", "1000"]).len();
            if new == 3 && old == 0 {
                Ok(())
            } else {
                Err(format!("{new} new, {old} old"))
            }
        })?;
        ensure!(
            c.app(id)?.is_some_and(|a| a["tasksRunning"] == 3),
            "tasksRunning is not 3 after the restart"
        );

        // Bonus, reported rather than asserted: a rolling restart starts a
        // new task before the last old one is killed.
        let seen = events.drain();
        let first_new_running = seen
            .iter()
            .filter(|e| {
                e.str("taskStatus") == Some("TASK_RUNNING")
                    && e.str("taskId").is_some_and(|t| replaced.contains(t))
            })
            .map(|e| e.received)
            .min();
        let last_old_killed = seen
            .iter()
            .filter(|e| {
                e.str("taskStatus") == Some("TASK_KILLED")
                    && e.str("taskId").is_some_and(|t| scaled.contains(t))
            })
            .map(|e| e.received)
            .max();
        match (first_new_running, last_old_killed) {
            (Some(new), Some(old)) => println!(
                "rolling restart: a new task ran before the last old one was killed: {}",
                new < old
            ),
            _ => println!("rolling restart: not every status update was seen on the event stream"),
        }
        Ok(())
    });
}

/// `kill -9` of a task's command → the task is TASK_FAILED (the master lists
/// it in `completed_tasks`), `lastTaskFailure` names it, and a new task
/// replaces it.
#[test]
fn killed_task_process_is_replaced_and_reported_failed() {
    with_cluster(ClusterOptions::default(), |c| {
        let id = "/victim";
        c.create_app(&sleeper(id, 1))?;
        let tasks = c.wait_running(id, 1)?;
        let old = task_id(&tasks[0])?;
        let (_, init, _) = task_trees(c, &tasks)?.remove(0);
        let command = wait_for("the task's `sleep 1000` under its init", || {
            let mut tree: Vec<Process> = procfs::process(init).into_iter().collect();
            tree.extend(procfs::descendants(init));
            tree.into_iter()
                .find(|p| p.cmdline() == ["sleep", "1000"])
                .ok_or_else(|| format!("processes under {init}: {:?}", procfs::descendants(init)))
        })?;
        procfs::signal(command.pid, Signal::SIGKILL);

        let new_tasks = wait_for("a new task to replace the killed one", || {
            let tasks = c.app_tasks(id).map_err(|e| format!("{e:#}"))?;
            let running: Vec<Value> = tasks
                .into_iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .collect();
            if running.len() == 1 && running[0]["id"] != old.as_str() {
                Ok(running)
            } else {
                Err(format!("{running:?}"))
            }
        })?;
        ensure!(task_id(&new_tasks[0])? != old);

        let app = c
            .marathon()
            .get_json(&format!("/v2/apps{id}?embed=app.lastTaskFailure"))?["app"]
            .clone();
        let failure = &app["lastTaskFailure"];
        ensure!(
            failure.is_object(),
            "no lastTaskFailure after kill -9: {app}"
        );
        ensure!(
            failure["taskId"] == old.as_str() && failure["state"] == "TASK_FAILED",
            "lastTaskFailure does not name {old} as TASK_FAILED: {failure}"
        );
        let completed = wait_for(
            "the master to list the killed task in completed_tasks",
            || {
                c.master_completed_task(&old)
                    .map_err(|e| format!("{e:#}"))?
                    .ok_or_else(|| "not there yet".to_string())
            },
        )?;
        ensure!(
            completed["state"] == "TASK_FAILED",
            "the master reports {old} as {}",
            completed["state"]
        );
        ensure!(
            !procfs::still_running(&command),
            "the killed process still runs"
        );
        Ok(())
    });
}

/// The task's environment is Marathon's: PORT0..n, PORT, PORTS, HOST,
/// MESOS_SANDBOX, MESOS_TASK_ID, MARATHON_APP_ID, MARATHON_APP_VERSION and
/// the app's own `env`.
#[test]
fn task_environment_is_marathons() {
    with_cluster(ClusterOptions::default(), |c| {
        let id = "/env/printer";
        c.create_app(&json!({
            "id": id,
            "cmd": "env > \"$MESOS_SANDBOX/env.txt\"; echo done >> \"$MESOS_SANDBOX/env.txt\"; sleep 1000",
            "instances": 1,
            "cpus": 0.1,
            "mem": 32,
            "env": {"MESETA_E2E_GREETING": "hello e2e"},
            "portDefinitions": [{"port": 0}, {"port": 0}],
        }))?;
        let tasks = c.wait_running(id, 1)?;
        let task = &tasks[0];
        let tid = task_id(task)?;
        let sandbox = c.task_sandbox(&tid)?;
        let file = sandbox.join("env.txt");
        let text = wait_for(&format!("{} to be written", file.display()), || {
            let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
            if text.lines().any(|l| l == "done") {
                Ok(text)
            } else {
                Err(format!("incomplete: {text:?}"))
            }
        })?;
        let env: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let ports = ports_of(task);
        ensure!(ports.len() == 2, "expected 2 host ports: {task}");
        let app = c.app(id)?.ok_or_else(|| anyhow!("{id} vanished"))?;
        let sandbox_text = sandbox.display().to_string();
        let expected: Vec<(&str, String)> = vec![
            ("PORT0", ports[0].to_string()),
            ("PORT1", ports[1].to_string()),
            ("PORT", ports[0].to_string()),
            ("PORTS", format!("{},{}", ports[0], ports[1])),
            (
                "HOST",
                task["host"].as_str().unwrap_or_default().to_string(),
            ),
            ("MESOS_SANDBOX", sandbox_text),
            ("MESOS_TASK_ID", tid.clone()),
            ("MARATHON_APP_ID", id.to_string()),
            (
                "MARATHON_APP_VERSION",
                app["version"].as_str().unwrap_or_default().to_string(),
            ),
            ("MESETA_E2E_GREETING", "hello e2e".to_string()),
        ];
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(k, v)| env.get(k) != Some(&v.as_str()))
            .map(|(k, v)| format!("{k}: expected {v:?}, got {:?}", env.get(k)))
            .collect();
        ensure!(
            wrong.is_empty(),
            "wrong task environment: {wrong:#?}\nwhole env:\n{text}"
        );
        Ok(())
    });
}

/// With linux isolation (root + cgroups; real in CI): the task sees itself
/// as a low pid in a PID namespace with its own /proc, has its own UTS, mount
/// and IPC namespaces, and its cgroups carry its `mem` and `cpus`.
#[test]
fn tasks_are_isolated_in_namespaces_and_cgroups() {
    if !require_root("tasks_are_isolated_in_namespaces_and_cgroups") {
        return;
    }
    let linux = ClusterOptions {
        isolation: Some("linux".into()),
        ..ClusterOptions::default()
    };
    with_cluster(linux, |c| {
        ensure!(
            c.isolation()? == "linux",
            "as root with cgroups the agent should isolate with linux, not {}",
            c.isolation()?
        );
        let id = "/isolated";
        c.create_app(&json!({
            "id": id,
            "cmd": "echo \"pid=$$\"; echo \"procs=$(ls /proc | grep -c '^[0-9][0-9]*$')\"; echo \"hostname=$(hostname)\"; echo done; sleep 1000",
            "instances": 1,
            "cpus": 0.25,
            "mem": 48,
        }))?;
        let tasks = c.wait_running(id, 1)?;
        let tid = task_id(&tasks[0])?;
        let stdout = c.task_sandbox(&tid)?.join("stdout");
        let text = wait_for("the task's report on stdout", || {
            let text = std::fs::read_to_string(&stdout).map_err(|e| e.to_string())?;
            if text.lines().any(|l| l == "done") {
                Ok(text)
            } else {
                Err(format!("{text:?}"))
            }
        })?;
        let field = |name: &str| -> Option<String> {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")).map(String::from))
        };
        let pid: u32 = field("pid")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("no pid line: {text}"))?;
        ensure!(
            pid <= 3,
            "inside the task `echo $$` is {pid}: no PID namespace of its own"
        );
        let procs: u32 = field("procs")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("no procs line: {text}"))?;
        let host_procs = procfs::processes().len();
        ensure!(
            procs <= 8,
            "the task sees {procs} pids in /proc (the host has {host_procs}): /proc is not its own"
        );
        println!(
            "inside the task: pid {pid}, {procs} pids in /proc, hostname {:?}",
            field("hostname")
        );

        let init = c.task_init_pid(&tid)?;
        let me = std::process::id() as i32;
        for ns in ["pid", "mnt", "uts", "ipc"] {
            let (theirs, ours) = (procfs::namespace(init, ns), procfs::namespace(me, ns));
            ensure!(
                theirs.is_some() && theirs != ours,
                "the task shares the host's {ns} namespace ({theirs:?})"
            );
        }

        let sleep = wait_for("the task's sleep", || {
            procfs::descendants(init)
                .into_iter()
                .find(|p| p.cmdline() == ["sleep", "1000"])
                .ok_or("not found")
        })?;
        let limit_file = procfs::memory_limit_file(sleep.pid)
            .ok_or_else(|| anyhow!("no memory cgroup for pid {}", sleep.pid))?;
        let limit = std::fs::read_to_string(&limit_file)
            .with_context(|| format!("reading {}", limit_file.display()))?;
        ensure!(
            limit.trim() == (48u64 * 1024 * 1024).to_string(),
            "{} is {}, expected 48 MiB",
            limit_file.display(),
            limit.trim()
        );
        if let Some(cpu) = procfs::cgroup(sleep.pid, "cpu").filter(|p| p.starts_with("/meseta/")) {
            let file = Path::new("/sys/fs/cgroup/cpu")
                .join(cpu.trim_start_matches('/'))
                .join("cpu.shares");
            let shares = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            ensure!(
                shares.trim() == "256",
                "{} is {}, expected 256 for 0.25 cpus",
                file.display(),
                shares.trim()
            );
        }
        Ok(())
    });
}

/// Deleting an app whose command ignores SIGTERM: the task gets SIGTERM
/// first (its trap prints), survives it, is SIGKILLed after
/// `taskKillGracePeriodSeconds`, and ends as TASK_KILLED.
#[test]
fn kill_escalates_to_sigkill_after_the_grace_period() {
    with_cluster(ClusterOptions::default(), |c| {
        let id = "/stubborn";
        c.create_app(&json!({
            "id": id,
            "cmd": "trap 'echo got-TERM' TERM; echo ready; while :; do sleep 0.1; done",
            "instances": 1,
            "cpus": 0.1,
            "mem": 32,
            "taskKillGracePeriodSeconds": 2,
        }))?;
        let tasks = c.wait_running(id, 1)?;
        let tid = task_id(&tasks[0])?;
        let stdout = c.task_sandbox(&tid)?.join("stdout");
        let read = || std::fs::read_to_string(&stdout).unwrap_or_default();
        wait_for("the task to print ready", || {
            if read().contains("ready") {
                Ok(())
            } else {
                Err(read())
            }
        })?;
        let init = c.task_init_pid(&tid)?;
        let init_proc =
            procfs::process(init).ok_or_else(|| anyhow!("task init {init} is not running"))?;
        let mut tree = vec![init_proc.clone()];
        tree.extend(procfs::descendants(init));
        let cgroups = memory_cgroups(&[init]);
        c.wait_deployments_done(id)?;
        let events = c.events("?event_type=status_update_event")?;

        let reply = c.delete_app(id, false)?;
        ensure!(reply.status == 200, "DELETE {id}: {reply}");
        let deleted = Instant::now();
        let survived = wait_until(
            "the task to receive SIGTERM",
            Duration::from_secs(30),
            Duration::from_millis(20),
            || {
                if read().contains("got-TERM") {
                    Ok(procfs::still_running(&init_proc))
                } else {
                    Err(read())
                }
            },
        )?;
        ensure!(
            survived,
            "the task was gone as soon as it got SIGTERM, before its 2 s grace period"
        );
        wait_all_gone(
            "the task to be SIGKILLed after its grace period",
            &tree,
            &cgroups,
        )?;
        println!(
            "the TERM-ignoring task was gone {:.1?} after DELETE (grace 2 s)",
            deleted.elapsed()
        );

        let killed = events.next_matching(Duration::from_secs(30), |e| {
            e.str("taskId") == Some(tid.as_str())
                && e.data["taskStatus"]
                    .as_str()
                    .is_some_and(|s| s != "TASK_RUNNING")
        });
        let killed = killed.ok_or_else(|| anyhow!("no terminal status_update_event for {tid}"))?;
        ensure!(
            killed.data["taskStatus"] == "TASK_KILLED",
            "the deleted task ended as {}",
            killed.data
        );
        ensure!(
            killed.data["appId"] == id,
            "status_update_event without the app id: {}",
            killed.data
        );
        let completed = wait_for("the master to list the task as completed", || {
            c.master_completed_task(&tid)
                .map_err(|e| format!("{e:#}"))?
                .ok_or_else(|| "not yet".to_string())
        })?;
        ensure!(
            completed["state"] == "TASK_KILLED",
            "the master reports the deleted task as {}",
            completed["state"]
        );
        Ok(())
    });
}

/// Marathon's error shapes, and no partial state behind them: 400 for broken
/// JSON, 422 with `details[].path` for an invalid app, 404 for a missing app,
/// 409 for a POST of an existing id.
#[test]
fn bad_input_gets_marathons_errors_and_changes_nothing() {
    with_cluster(ClusterOptions::default(), |c| {
        let api = c.marathon();

        let broken = api.post_raw("/v2/apps", r#"{"id": "/broken", "cmd": "#)?;
        ensure!(
            broken.status == 400,
            "malformed JSON: expected 400, got {broken}"
        );
        ensure!(
            broken.json()["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "400 without message: {broken}"
        );

        let invalid = api.post_json(
            "/v2/apps",
            &json!({"id": "/negative", "cmd": "sleep 1000", "cpus": -1}),
        )?;
        ensure!(
            invalid.status == 422,
            "cpus -1: expected 422, got {invalid}"
        );
        let body = invalid.json();
        ensure!(
            body["message"].is_string(),
            "422 without message: {invalid}"
        );
        let details = body["details"].as_array().cloned().unwrap_or_default();
        ensure!(
            !details.is_empty()
                && details
                    .iter()
                    .all(|d| d["path"].is_string() && d["errors"].is_array()),
            "422 details must be [{{path, errors}}]: {invalid}"
        );
        ensure!(
            details
                .iter()
                .any(|d| d["path"].as_str().is_some_and(|p| p.contains("cpus"))),
            "no detail points at /cpus: {invalid}"
        );

        let missing = api.get("/v2/apps/x")?;
        ensure!(
            missing.status == 404,
            "GET missing app: expected 404, got {missing}"
        );
        ensure!(
            missing.json() == json!({"message": "App '/x' does not exist"}),
            "404 body: {missing}"
        );

        let original = c.create_app(
            &json!({"id": "/exists", "cmd": "sleep 1000", "instances": 0, "cpus": 0.1, "mem": 32}),
        )?;
        let again = api.post_json(
            "/v2/apps",
            &json!({"id": "/exists", "cmd": "sleep 2000", "instances": 2, "cpus": 0.1, "mem": 32}),
        )?;
        ensure!(
            again.status == 409,
            "POST of an existing id: expected 409, got {again}"
        );
        ensure!(
            again.json()["message"].is_string(),
            "409 without message: {again}"
        );

        let bad_put = api.put_json("/v2/apps/exists", &json!({"cpus": -1}))?;
        ensure!(
            bad_put.status == 422,
            "PUT cpus -1: expected 422, got {bad_put}"
        );
        let broken_put = api.put_raw("/v2/apps/exists", "{\"instances\": ")?;
        ensure!(
            broken_put.status == 400,
            "PUT of malformed JSON: expected 400, got {broken_put}"
        );

        // Nothing was created or changed.
        let apps = api.get_json("/v2/apps")?;
        let listed: Vec<&str> = apps["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["id"].as_str())
            .collect();
        ensure!(
            listed == ["/exists"],
            "after the bad requests /v2/apps lists {listed:?}"
        );
        let app = c
            .app("/exists")?
            .ok_or_else(|| anyhow!("/exists vanished"))?;
        for key in ["cmd", "instances", "cpus", "version"] {
            ensure!(
                app[key] == original[key],
                "{key} changed from {} to {}",
                original[key],
                app[key]
            );
        }
        for gone in ["/broken", "/negative"] {
            ensure!(
                c.app(gone)?.is_none(),
                "{gone} exists after a rejected POST"
            );
        }
        let tasks = api.get_json("/v2/tasks")?;
        ensure!(
            tasks["tasks"].as_array().is_some_and(Vec::is_empty),
            "tasks exist after bad requests: {tasks}"
        );
        let deployments = api.get_json("/v2/deployments")?;
        let stray: Vec<&Value> = deployments
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| {
                d["affectedApps"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x != "/exists"))
            })
            .collect();
        ensure!(stray.is_empty(), "deployments for rejected apps: {stray:?}");
        Ok(())
    });
}

fn seed_apps_dir() -> PathBuf {
    match std::env::var_os("MESETA_SEED_APPS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/seed-apps"),
    }
}

/// Whether a string looks like a timestamp (`2026-…T…`).
fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 19 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[10] == b'T'
}

/// Every string under `v` that looks like a timestamp, with its path.
fn timestamps(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) if looks_like_timestamp(s) => out.push((path.to_string(), s.clone())),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| timestamps(x, &format!("{path}[{i}]"), out)),
        Value::Object(m) => m
            .iter()
            .for_each(|(k, x)| timestamps(x, &format!("{path}/{k}"), out)),
        _ => {}
    }
}

fn same_number(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => a == b,
    }
}

/// What is wrong with `got` (GET of the app POSTed as `sent`): missing
/// defaults, lost fields, timestamps without `Z`.
fn seed_app_problems(sent: &Value, got: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut need = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    need(
        got["labels"].is_object(),
        format!("labels is {}", got["labels"]),
    );
    let us = &got["upgradeStrategy"];
    need(
        us["minimumHealthCapacity"].is_number() && us["maximumOverCapacity"].is_number(),
        format!("upgradeStrategy is {us}"),
    );
    let vi = &got["versionInfo"];
    need(
        vi["lastScalingAt"].is_string() && vi["lastConfigChangeAt"].is_string(),
        format!("versionInfo is {vi}"),
    );
    need(
        got["version"].is_string(),
        format!("version is {}", got["version"]),
    );
    need(
        got["backoffSeconds"].is_number(),
        format!("backoffSeconds is {}", got["backoffSeconds"]),
    );
    need(
        matches!(
            got["killSelection"].as_str(),
            Some("YOUNGEST_FIRST" | "OLDEST_FIRST")
        ),
        format!("killSelection is {}", got["killSelection"]),
    );
    let sent_checks = sent["healthChecks"].as_array().cloned().unwrap_or_default();
    let got_checks = got["healthChecks"].as_array().cloned().unwrap_or_default();
    need(
        sent_checks.len() == got_checks.len(),
        format!(
            "{} health checks sent, {} returned",
            sent_checks.len(),
            got_checks.len()
        ),
    );
    for (i, (s, g)) in sent_checks.iter().zip(&got_checks).enumerate() {
        for field in [
            "protocol",
            "path",
            "portIndex",
            "gracePeriodSeconds",
            "intervalSeconds",
            "timeoutSeconds",
            "maxConsecutiveFailures",
            "delaySeconds",
            "ignoreHttp1xx",
        ] {
            need(
                !g[field].is_null(),
                format!("healthChecks[{i}] lacks {field}: {g}"),
            );
            if !s[field].is_null() {
                need(
                    same_number(&s[field], &g[field]),
                    format!(
                        "healthChecks[{i}].{field} sent {} returned {}",
                        s[field], g[field]
                    ),
                );
            }
        }
    }
    for field in ["cmd", "instances", "cpus", "mem", "disk"] {
        if !sent[field].is_null() {
            need(
                same_number(&sent[field], &got[field]),
                format!("{field} sent {} returned {}", sent[field], got[field]),
            );
        }
    }
    if let Some(env) = sent["env"].as_object() {
        for (k, v) in env {
            need(
                got["env"][k] == *v,
                format!("env {k} sent {v} returned {}", got["env"][k]),
            );
        }
    }
    if let Some(image) = sent["container"]["docker"]["image"].as_str() {
        need(
            got["container"]["docker"]["image"] == image,
            format!(
                "docker image sent {image} returned {}",
                got["container"]["docker"]["image"]
            ),
        );
    }
    let mut stamps = Vec::new();
    timestamps(got, "", &mut stamps);
    need(
        !stamps.is_empty(),
        "no timestamps at all (version, versionInfo)".to_string(),
    );
    for (path, s) in stamps {
        need(
            s.ends_with('Z'),
            format!("timestamp {path} = {s} does not end in Z"),
        );
    }
    problems
}

/// Every file of the seed fixtures is accepted by POST /v2/apps exactly as
/// written and comes back complete (scale-2/scale-3 are PUT bodies).
#[test]
fn seed_apps_are_accepted_as_written() {
    let dir = seed_apps_dir();
    if !dir.is_dir() {
        if in_ci() {
            panic!(
                "the seed app fixtures are missing at {} (CI=true)",
                dir.display()
            );
        }
        println!(
            "skipping seed_apps_are_accepted_as_written: no fixtures at {}",
            dir.display()
        );
        return;
    }
    with_cluster(ClusterOptions::default(), |c| {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        ensure!(!files.is_empty(), "no fixtures in {}", dir.display());
        let mut failures = Vec::new();
        let mut scale_bodies = Vec::new();
        for file in &files {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let sent: Value =
                serde_json::from_str(&text).with_context(|| format!("{name} is not JSON"))?;
            if name.starts_with("scale-") {
                scale_bodies.push((name, text));
                continue;
            }
            let id = format!(
                "/{}",
                sent["id"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches('/')
            );
            let reply = c.marathon().post_raw("/v2/apps", &text)?;
            if reply.status != 201 {
                failures.push(format!("{name}: POST answered {reply}"));
                continue;
            }
            match c.app(&id)? {
                None => failures.push(format!("{name}: GET {id} is 404 after a 201")),
                Some(got) => failures.extend(
                    seed_app_problems(&sent, &got)
                        .into_iter()
                        .map(|p| format!("{name}: {p}")),
                ),
            }
            let deleted = c.delete_app(&id, true)?;
            if deleted.status != 200 {
                failures.push(format!("{name}: DELETE {id}?force=true answered {deleted}"));
            }
            wait_for(&format!("{id} to be deleted"), || match c.app(&id) {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err("still there".to_string()),
                Err(e) => Err(format!("{e:#}")),
            })?;
        }

        // The scale bodies, PUT as written onto a running app.
        let id = "/seed/scaled";
        c.create_app(
            &json!({"id": id, "cmd": "sleep 1000", "instances": 1, "cpus": 0.01, "mem": 32}),
        )?;
        c.wait_running(id, 1)?;
        for (name, text) in &scale_bodies {
            let sent: Value = serde_json::from_str(text)?;
            let n = sent["instances"]
                .as_u64()
                .ok_or_else(|| anyhow!("{name} has no instances"))? as usize;
            c.wait_deployments_done(id)?;
            let reply = c.marathon().put_raw(&format!("/v2/apps{id}"), text)?;
            if reply.status != 200 || !reply.json()["deploymentId"].is_string() {
                failures.push(format!("{name}: PUT answered {reply}"));
                continue;
            }
            c.wait_running(id, n)?;
        }
        c.delete_app(id, true)?;
        if !failures.is_empty() {
            bail!(
                "{} problem(s) with the seed apps:\n  {}",
                failures.len(),
                failures.join("\n  ")
            );
        }
        Ok(())
    });
}

/// `meseta task log TASK_ID` prints the task's stdout, `--stderr` its stderr.
#[test]
fn task_log_prints_stdout_and_stderr() {
    with_cluster(ClusterOptions::default(), |c| {
        let id = "/chatty";
        c.create_app(&json!({
            "id": id,
            "cmd": "echo \"to-stdout $MESOS_TASK_ID\"; echo \"to-stderr $MESOS_TASK_ID\" >&2; sleep 1000",
            "instances": 1,
            "cpus": 0.1,
            "mem": 32,
        }))?;
        let tasks = c.wait_running(id, 1)?;
        let tid = task_id(&tasks[0])?;
        let master = c.master_address().to_string();
        for (flag, expected, unexpected) in [
            (None, format!("to-stdout {tid}"), "to-stderr"),
            (Some("--stderr"), format!("to-stderr {tid}"), "to-stdout"),
        ] {
            let mut args = vec!["task", "log", tid.as_str(), "--master", master.as_str()];
            args.extend(flag);
            let out = wait_for(
                &format!("`meseta {}` to print {expected:?}", args.join(" ")),
                || {
                    let out = c.cli(&args).map_err(|e| format!("{e:#}"))?;
                    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                    if out.status.success() && stdout.contains(&expected) {
                        Ok(stdout)
                    } else {
                        Err(format!(
                            "{}: stdout {stdout:?} stderr {:?}",
                            out.status,
                            String::from_utf8_lossy(&out.stderr)
                        ))
                    }
                },
            )?;
            ensure!(
                !out.contains(unexpected),
                "`meseta {}` mixed the streams: {out:?}",
                args.join(" ")
            );
        }
        let unknown = c.cli(&["task", "log", "no-such-task", "--master", &master])?;
        ensure!(
            !unknown.status.success(),
            "`meseta task log` of an unknown task succeeded"
        );
        Ok(())
    });
}

/// `/v2/info` has exactly the keys of Marathon 1.10 that clients build
/// objects from (MARATHON-WIRE.md), with the `*_config` objects present.
#[test]
fn info_has_exactly_marathons_keys() {
    with_cluster(ClusterOptions::default(), |c| {
        let info = c.marathon().get_json("/v2/info")?;
        let keys: BTreeSet<&str> = info
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let expected: BTreeSet<&str> = [
            "name",
            "version",
            "buildref",
            "elected",
            "leader",
            "frameworkId",
            "marathon_config",
            "zookeeper_config",
            "http_config",
            "event_subscriber",
        ]
        .into_iter()
        .collect();
        ensure!(
            keys == expected,
            "/v2/info keys differ: extra {:?}, missing {:?}",
            keys.difference(&expected),
            expected.difference(&keys)
        );
        for k in ["marathon_config", "zookeeper_config", "http_config"] {
            ensure!(info[k].is_object(), "{k} is {}", info[k]);
        }
        let version = info["version"].as_str().unwrap_or_default();
        let parts: Vec<&str> = version.split('.').collect();
        ensure!(
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
            "version {version:?} is not a plain Marathon version number"
        );
        ensure!(
            info["name"] == "marathon" && info["elected"] == true,
            "/v2/info: {info}"
        );
        ensure!(
            info["frameworkId"].as_str().is_some_and(|f| !f.is_empty()),
            "no frameworkId once subscribed: {info}"
        );
        Ok(())
    });
}

/// SIGTERM (Ctrl-C) of `meseta up` stops it cleanly and leaves no task
/// process behind.
#[test]
fn sigterm_of_meseta_up_leaves_no_task_process() {
    with_cluster(ClusterOptions::default(), |c| {
        let id = "/orphans";
        c.create_app(&sleeper(id, 2))?;
        let tasks = c.wait_running(id, 2)?;
        let trees = task_trees(c, &tasks)?;
        let procs: Vec<Process> = trees.iter().flat_map(|(_, _, t)| t.clone()).collect();
        ensure!(
            procs
                .iter()
                .filter(|p| p.cmdline() == ["sleep", "1000"])
                .count()
                == 2,
            "expected 2 sleeps under the task inits: {procs:?}"
        );
        let cgroups = memory_cgroups(&procs.iter().map(|p| p.pid).collect::<Vec<_>>());
        let status = c
            .terminate(meseta_tests::cluster::STOP_PATIENCE)
            .ok_or_else(|| {
                anyhow!(
                    "meseta up still runs {:?} after SIGTERM",
                    meseta_tests::cluster::STOP_PATIENCE
                )
            })?;
        ensure!(
            status.success(),
            "meseta up exited with {status} after SIGTERM"
        );
        wait_all_gone(
            "the tasks to be gone after meseta up stopped",
            &procs,
            &cgroups,
        )?;
        Ok(())
    });
}

/// SIGTERM stops `meseta up` even while a client (a UI, marathon-lb) holds
/// `/v2/events` open, and its task goes with it.
#[test]
fn sigterm_stops_meseta_up_with_an_event_stream_attached() {
    with_cluster(ClusterOptions::default(), |c| {
        let id = "/watched";
        c.create_app(&sleeper(id, 1))?;
        let tasks = c.wait_running(id, 1)?;
        let procs: Vec<Process> = task_trees(c, &tasks)?
            .into_iter()
            .flat_map(|(_, _, t)| t)
            .collect();
        let cgroups = memory_cgroups(&procs.iter().map(|p| p.pid).collect::<Vec<_>>());
        let events = c.events("")?;
        events
            .next_matching(Duration::from_secs(10), |e| {
                e.kind == "event_stream_attached"
            })
            .ok_or_else(|| anyhow!("no event_stream_attached on /v2/events"))?;
        let patience = meseta_tests::cluster::STOP_PATIENCE;
        let status = c.terminate(patience).ok_or_else(|| {
            anyhow!("meseta up still runs {patience:?} after SIGTERM while a /v2/events client is connected")
        })?;
        ensure!(
            status.success(),
            "meseta up exited with {status} after SIGTERM"
        );
        wait_all_gone(
            "the task to be gone after meseta up stopped",
            &procs,
            &cgroups,
        )?;
        drop(events);
        Ok(())
    });
}
