//! Health checks end to end: the agent runs the app's checks, the results
//! ride on status updates, and the scheduler counts them, gates rolling
//! upgrades on them and replaces unhealthy tasks.
//! COMMAND checks run inside the task's container (its namespaces and
//! cgroups under linux isolation).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Result};
use meseta_tests::{in_ci, wait_for, wait_until, with_cluster, Cluster, ClusterOptions};
use serde_json::{json, Value};

/// A web server in the task's sandbox (`www/`), healthy while `www/ok`
/// exists; `marker` changes its configuration. Failures in the first
/// `grace` seconds before a success do not count.
fn web_with_grace(id: &str, instances: u32, marker: &str, health_path: &str, grace: u32) -> Value {
    let mut app = web(id, instances, marker, health_path);
    app["healthChecks"][0]["gracePeriodSeconds"] = json!(grace);
    app
}

fn web(id: &str, instances: u32, marker: &str, health_path: &str) -> Value {
    json!({
        "id": id, "instances": instances, "cpus": 0.1, "mem": 64,
        "cmd": format!("mkdir -p www && touch www/ok && cd www && exec python3 -m http.server $PORT0 # {marker}"),
        "healthChecks": [{"protocol": "HTTP", "path": health_path, "portIndex": 0,
                          "gracePeriodSeconds": 30, "intervalSeconds": 1, "timeoutSeconds": 2,
                          "maxConsecutiveFailures": 3}],
    })
}

fn healthy_of(c: &Cluster, id: &str) -> Result<u64> {
    let app = c.app(id)?.ok_or_else(|| anyhow!("{id} is gone"))?;
    Ok(app["tasksHealthy"].as_u64().unwrap_or(0))
}

fn wait_healthy(c: &Cluster, id: &str, n: u64) -> Result<Vec<Value>> {
    wait_for(&format!("{n} healthy tasks of {id}"), || {
        let app = c
            .app(id)
            .map_err(|e| format!("{e:#}"))?
            .ok_or("the app is gone")?;
        if app["tasksHealthy"] == n && app["tasks"].as_array().is_some_and(|t| t.len() as u64 == n)
        {
            Ok(app["tasks"].as_array().cloned().unwrap_or_default())
        } else {
            Err(format!(
                "tasksHealthy {} of {} tasks",
                app["tasksHealthy"],
                app["tasks"].as_array().map_or(0, Vec::len)
            ))
        }
    })
}

fn ids(tasks: &[Value]) -> BTreeSet<String> {
    tasks
        .iter()
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect()
}

/// 4 instances with an HTTP check reach `tasksHealthy: 4`; an upgrade with
/// `minimumHealthCapacity: 0.5`, `maximumOverCapacity: 0` never has fewer
/// than 2 healthy (sampled every 100 ms); afterwards all 4 tasks run the
/// new version and `deployment_success` was streamed.
#[test]
fn a_rolling_upgrade_keeps_half_the_tasks_healthy() {
    with_cluster(ClusterOptions::default(), |c| {
        let id = "/rolling";
        c.create_app(&web(id, 4, "v1", "/ok"))?;
        let before = ids(&wait_healthy(c, id, 4)?);
        c.wait_deployments_done(id)?;
        let events = c.events("?event_type=deployment_success")?;
        let mut v2 = web(id, 4, "v2", "/ok");
        v2["upgradeStrategy"] = json!({"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0});
        let reply = c.marathon().put_json(&format!("/v2/apps{id}"), &v2)?;
        ensure!(reply.status == 200, "PUT: {reply}");
        let deployment = reply.json()["deploymentId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let version = reply.json()["version"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut samples = 0;
        loop {
            let healthy = healthy_of(c, id)?;
            samples += 1;
            ensure!(
                healthy >= 2,
                "only {healthy} healthy tasks during the upgrade"
            );
            let list = c.marathon().get_json("/v2/deployments")?;
            if !list
                .as_array()
                .is_some_and(|a| a.iter().any(|d| d["id"] == deployment.as_str()))
            {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the upgrade did not finish: {list}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("{samples} samples, never below 2 healthy");
        let tasks = wait_healthy(c, id, 4)?;
        ensure!(
            tasks.iter().all(|t| t["version"] == version.as_str()),
            "not all on {version}: {tasks:?}"
        );
        ensure!(ids(&tasks).is_disjoint(&before), "old tasks survived");
        events
            .next_matching(Duration::from_secs(10), |e| {
                e.str("id") == Some(deployment.as_str())
            })
            .ok_or_else(|| anyhow!("no deployment_success for {deployment}"))?;
        Ok(())
    });
}

/// A task whose health endpoint starts failing is replaced, and the
/// replacement runs before the old task is killed.
#[test]
fn an_unhealthy_task_is_replaced_before_it_is_killed() {
    with_cluster(ClusterOptions::default(), |c| {
        let id = "/flaky";
        c.create_app(&web(id, 1, "v1", "/ok"))?;
        let old = wait_healthy(c, id, 1)?;
        let old_id = old[0]["id"].as_str().unwrap_or_default().to_string();
        c.wait_deployments_done(id)?;
        let events = c.events("")?;
        let sandbox = c.task_sandbox(&old_id)?;
        std::fs::remove_file(sandbox.join("www/ok"))?;
        // Read the stream until the old task's end, keeping every event.
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        let killed_at = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = events
                .next(left)
                .ok_or_else(|| anyhow!("the unhealthy task was not killed; saw {seen:?}"))?;
            let done = e.kind == "status_update_event"
                && e.str("taskId") == Some(old_id.as_str())
                && e.str("taskStatus") == Some("TASK_KILLED");
            seen.push(e);
            if done {
                break seen.len() - 1;
            }
        };
        let replacement_running = seen[..killed_at].iter().position(|e| {
            e.kind == "status_update_event"
                && e.str("appId") == Some(id)
                && e.str("taskId") != Some(old_id.as_str())
                && e.str("taskStatus") == Some("TASK_RUNNING")
        });
        ensure!(
            replacement_running.is_some(),
            "the old task was killed before a replacement ran: {:?}",
            seen.iter()
                .map(|e| (
                    e.kind.clone(),
                    e.str("taskId").map(String::from),
                    e.str("taskStatus").map(String::from)
                ))
                .collect::<Vec<_>>()
        );
        ensure!(
            seen.iter().any(|e| e.kind == "failed_health_check_event"),
            "no failed_health_check_event"
        );
        ensure!(
            seen.iter()
                .any(|e| e.kind == "unhealthy_instance_kill_event"
                    && e.str("taskId") == Some(old_id.as_str())),
            "no unhealthy_instance_kill_event"
        );
        let tasks = wait_healthy(c, id, 1)?;
        ensure!(tasks[0]["id"] != old_id.as_str(), "not replaced");
        Ok(())
    });
}

/// An upgrade to a version that never gets healthy shows in
/// `/v2/deployments` as stuck with its cause; `DELETE` rolls it back.
#[test]
fn an_upgrade_that_never_gets_healthy_is_stuck_and_rolled_back() {
    with_cluster(ClusterOptions::default(), |c| {
        let id = "/never";
        c.create_app(&web(id, 1, "v1", "/ok"))?;
        let old = wait_healthy(c, id, 1)?;
        c.wait_deployments_done(id)?;
        let reply = c.marathon().put_json(
            &format!("/v2/apps{id}"),
            &web_with_grace(id, 1, "v2", "/missing", 2),
        )?;
        ensure!(reply.status == 200, "{reply}");
        let deployment = reply.json()["deploymentId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let stuck = wait_for("the deployment to be stuck on health", || {
            let list = c
                .marathon()
                .get_json("/v2/deployments")
                .map_err(|e| e.to_string())?;
            let d = list
                .as_array()
                .and_then(|a| a.iter().find(|d| d["id"] == deployment.as_str()).cloned())
                .ok_or("no deployment")?;
            if d["stuck"]["lastFailureCause"]
                .as_str()
                .is_some_and(|c| c.contains("404"))
            {
                Ok(d)
            } else {
                Err(format!("{d}"))
            }
        })?;
        ensure!(stuck["stuck"]["tasksHealthy"] == 0, "{stuck}");
        let r = c
            .marathon()
            .delete(&format!("/v2/deployments/{deployment}"))?;
        ensure!(r.status == 200, "rollback: {r}");
        c.wait_deployments_done(id)?;
        let tasks = wait_healthy(c, id, 1)?;
        ensure!(
            ids(&tasks) == ids(&old),
            "the healthy old task was not kept: {tasks:?}"
        );
        Ok(())
    });
}

/// What real clients see: a load-balancer config generator reading
/// `/v2/apps?embed=apps.tasks` (marathon-lb's rule: every health check
/// result alive) and the Python `marathon` client.
#[test]
fn clients_see_the_healthy_tasks() {
    with_cluster(ClusterOptions::default(), |c| {
        let id = "/backend";
        c.create_app(&web(id, 2, "v1", "/ok"))?;
        wait_healthy(c, id, 2)?;
        let backends = wait_until(
            "2 healthy backends",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                let apps = c
                    .marathon()
                    .get_json("/v2/apps?embed=apps.tasks")
                    .map_err(|e| format!("{e:#}"))?;
                let app = apps["apps"]
                    .as_array()
                    .and_then(|a| a.iter().find(|a| a["id"] == id).cloned())
                    .ok_or("not listed")?;
                let backends: Vec<String> = app["tasks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|t| {
                        t["healthCheckResults"]
                            .as_array()
                            .is_some_and(|r| !r.is_empty() && r.iter().all(|x| x["alive"] == true))
                    })
                    .map(|t| format!("{}:{}", t["host"].as_str().unwrap_or(""), t["ports"][0]))
                    .collect();
                if backends.len() == 2 {
                    Ok(backends)
                } else {
                    Err(format!("{backends:?}"))
                }
            },
        )?;
        println!("load balancer backends: {backends:?}");
        let script = format!(
            "from marathon import MarathonClient\n\
             c = MarathonClient('{}')\n\
             app = c.get_app('{id}', embed_tasks=True)\n\
             print(sum(1 for t in app.tasks if t.health_check_results and all(r.alive for r in t.health_check_results)))\n",
            c.marathon().base()
        );
        let has_client = Command::new("python3")
            .args(["-c", "import marathon"])
            .status()
            .is_ok_and(|s| s.success());
        if !has_client {
            if in_ci() {
                anyhow::bail!("the Python marathon client is not installed (pip install marathon)");
            }
            println!(
                "skipping the Python client part: `import marathon` fails (pip install marathon)"
            );
            return Ok(());
        }
        let out = Command::new("python3").args(["-c", &script]).output()?;
        ensure!(
            out.status.success(),
            "the Python client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            String::from_utf8_lossy(&out.stdout).trim() == "2",
            "the Python client sees {}",
            String::from_utf8_lossy(&out.stdout)
        );
        Ok(())
    });
}

/// A COMMAND check runs inside the task's PID namespace and cgroups: from
/// there `/proc/1` is the task's own init, which it is not on the host.
#[test]
fn command_checks_run_inside_the_tasks_container() {
    if !meseta_tests::require_root("COMMAND health checks in the task's namespaces") {
        return;
    }
    with_cluster(ClusterOptions::default(), |c| {
        ensure!(c.isolation()? == "linux", "needs linux isolation");
        c.create_app(&json!({
            "id": "/inside", "instances": 1, "cpus": 0.1, "mem": 32,
            "cmd": "sleep 1000",
            "healthChecks": [{"protocol": "COMMAND",
                "command": {"value": "grep -q meseta-init /proc/1/cmdline && grep -q /meseta/ /proc/self/cgroup"},
                "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 5,
                "maxConsecutiveFailures": 3}],
        }))?;
        wait_healthy(c, "/inside", 1)?;
        Ok(())
    });
}
