//! Marathon's lifecycle features end to end, through `meseta up`: groups
//! and their dependencies, versions and rollback, the launch queue's
//! reasons, all-or-nothing multi-app updates, readiness-gated and stuck
//! deployments and their rollback, and a scheduler that answers with no
//! master. None of these needs health results from the agent (those are
//! in `health.rs`).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use meseta_tests::{meseta_binary, wait_for, wait_until, with_cluster, Api, ClusterOptions};
use serde_json::{json, Value};

fn sleeper(id: &str, instances: u32) -> Value {
    json!({"id": id, "cmd": "sleep 1000", "instances": instances, "cpus": 0.1, "mem": 32,
           "portDefinitions": []})
}

fn deployment_of<'a>(list: &'a Value, app: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|d| {
        d["affectedApps"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == app))
    })
}

/// A group db → web: db's step runs first (web is not launched before db
/// runs), the tree and its versions are served, scaleBy and DELETE work,
/// `group_change_success` is streamed.
#[test]
fn a_group_deploys_its_dependencies_first() {
    with_cluster(ClusterOptions::default(), |c| {
        let events = c.events("")?;
        let group = json!({"id": "/stack", "apps": [
            {"id": "web", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "portDefinitions": [],
             "dependencies": ["/stack/db"]},
            {"id": "db", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "portDefinitions": []},
        ]});
        let reply = c.marathon().post_json("/v2/groups", &group)?;
        ensure!(reply.status == 201, "POST /v2/groups: {reply}");
        ensure!(reply.json()["deploymentId"].is_string(), "{reply}");
        let again = c.marathon().post_json("/v2/groups", &group)?;
        ensure!(again.status == 409, "POST of an existing group: {again}");
        let plan = c.marathon().get_json("/v2/deployments")?;
        let d =
            deployment_of(&plan, "/stack/db").ok_or_else(|| anyhow!("no deployment: {plan}"))?;
        ensure!(
            d["steps"]
                == json!([{"actions": [{"action": "StartApplication", "app": "/stack/db"}]},
                                 {"actions": [{"action": "StartApplication", "app": "/stack/web"}]}]),
            "steps: {d}"
        );
        c.wait_running("/stack/db", 1)?;
        c.wait_running("/stack/web", 1)?;
        c.wait_deployments_done("/stack/web")?;
        // Order on the stream: db ran before web was even staged.
        let seen = events.drain();
        let at = |app: &str, status: &str| {
            seen.iter().position(|e| {
                e.kind == "status_update_event"
                    && e.str("appId") == Some(app)
                    && e.str("taskStatus") == Some(status)
            })
        };
        let db_running =
            at("/stack/db", "TASK_RUNNING").ok_or_else(|| anyhow!("no db TASK_RUNNING"))?;
        let web_first = seen
            .iter()
            .position(|e| e.kind == "status_update_event" && e.str("appId") == Some("/stack/web"))
            .ok_or_else(|| anyhow!("no web status update"))?;
        ensure!(db_running < web_first, "web started before db ran");
        ensure!(
            seen.iter()
                .any(|e| e.kind == "group_change_success" && e.str("groupId") == Some("/stack")),
            "no group_change_success: {:?}",
            seen.iter().map(|e| e.kind.clone()).collect::<Vec<_>>()
        );

        let root = c.marathon().get_json("/v2/groups")?;
        ensure!(
            root["id"] == "/" && root["groups"][0]["id"] == "/stack",
            "tree: {root}"
        );
        let stack = c
            .marathon()
            .get_json("/v2/groups/stack?embed=group.apps&embed=group.apps.tasks")?;
        let apps = stack["apps"].as_array().cloned().unwrap_or_default();
        ensure!(
            apps.len() == 2
                && apps
                    .iter()
                    .all(|a| a["tasks"].as_array().is_some_and(|t| t.len() == 1)),
            "{stack}"
        );
        let versions = c.marathon().get_json("/v2/groups/stack/versions")?;
        ensure!(
            versions.as_array().is_some_and(|v| !v.is_empty()),
            "versions: {versions}"
        );

        let reply = c
            .marathon()
            .put_json("/v2/groups/stack", &json!({"scaleBy": 2}))?;
        ensure!(reply.status == 200, "scaleBy: {reply}");
        c.wait_running("/stack/db", 2)?;
        c.wait_running("/stack/web", 2)?;
        c.wait_deployments_done("/stack/web")?;
        let reply = c.marathon().delete("/v2/groups/stack")?;
        ensure!(reply.status == 200, "DELETE group: {reply}");
        wait_for("the group's tasks to be gone", || {
            let tasks = c
                .marathon()
                .get_json("/v2/tasks")
                .map_err(|e| e.to_string())?;
            match tasks["tasks"].as_array().map(Vec::len) {
                Some(0) => Ok(()),
                n => Err(format!("{n:?} tasks")),
            }
        })?;
        ensure!(c.app("/stack/db")?.is_none(), "/stack/db survived");
        Ok(())
    });
}

/// Every change is a version, listed newest first and served as it was;
/// `PUT {"version"}` rolls back.
#[test]
fn versions_are_kept_and_rolled_back_to() {
    with_cluster(ClusterOptions::default(), |c| {
        let id = "/versioned";
        let created = c.create_app(&sleeper(id, 1))?;
        let first = created["version"].as_str().unwrap_or_default().to_string();
        c.wait_running(id, 1)?;
        c.wait_deployments_done(id)?;
        let r = c
            .marathon()
            .put_json(&format!("/v2/apps{id}"), &json!({"instances": 2}))?;
        ensure!(r.status == 200, "scale: {r}");
        c.wait_deployments_done(id)?;
        let r = c
            .marathon()
            .post_json(&format!("/v2/apps{id}/restart"), &json!({}))?;
        ensure!(r.status == 200, "restart: {r}");
        c.wait_deployments_done(id)?;
        let r = c
            .marathon()
            .put_json(&format!("/v2/apps{id}"), &json!({"cmd": "sleep 1001"}))?;
        ensure!(r.status == 200, "change: {r}");
        c.wait_deployments_done(id)?;
        let versions = c.marathon().get_json(&format!("/v2/apps{id}/versions"))?;
        let list: Vec<String> = versions["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        ensure!(list.len() == 4, "4 versions expected: {versions}");
        ensure!(
            list.windows(2).all(|w| w[0] > w[1]),
            "newest first: {list:?}"
        );
        ensure!(list[3] == first, "the oldest is the creation: {list:?}");
        let old = c
            .marathon()
            .get_json(&format!("/v2/apps{id}/versions/{first}"))?;
        ensure!(
            old["cmd"] == "sleep 1000" && old["instances"] == 1,
            "as it was: {old}"
        );
        let r = c
            .marathon()
            .put_json(&format!("/v2/apps{id}"), &json!({"version": first}))?;
        ensure!(r.status == 200, "rollback: {r}");
        c.wait_running(id, 1)?;
        c.wait_deployments_done(id)?;
        let app = c.app(id)?.ok_or_else(|| anyhow!("gone"))?;
        ensure!(
            app["cmd"] == "sleep 1000" && app["instances"] == 1,
            "rolled back: {app}"
        );
        Ok(())
    });
}

/// A constraint nothing matches: `/v2/queue` counts UnfulfilledConstraint
/// and lists the unused offers; the delay can be reset.
#[test]
fn the_queue_says_why_an_app_waits() {
    with_cluster(ClusterOptions::default(), |c| {
        let id = "/picky";
        let mut app = sleeper(id, 1);
        app["constraints"] = json!([["hostname", "CLUSTER", "no-such-host"]]);
        c.create_app(&app)?;
        let entry = wait_for("the queue to count UnfulfilledConstraint", || {
            let q = c
                .marathon()
                .get_json("/v2/queue?embed=lastUnusedOffers")
                .map_err(|e| e.to_string())?;
            let entry = q["queue"]
                .as_array()
                .and_then(|a| a.iter().find(|e| e["app"]["id"] == id).cloned())
                .ok_or_else(|| format!("not queued: {q}"))?;
            let declined = entry["processedOffersSummary"]["rejectSummaryLaunchAttempt"]
                .as_array()
                .and_then(|s| s.iter().find(|x| x["reason"] == "UnfulfilledConstraint"))
                .and_then(|x| x["declined"].as_u64())
                .unwrap_or(0);
            if declined > 0 {
                Ok(entry)
            } else {
                Err(format!("{entry}"))
            }
        })?;
        ensure!(entry["count"] == 1, "{entry}");
        ensure!(
            entry["processedOffersSummary"]["processedOffersCount"].as_u64() > Some(0),
            "{entry}"
        );
        let unused = &entry["lastUnusedOffers"][0];
        ensure!(
            unused["reason"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x == "UnfulfilledConstraint"))
                && unused["offer"]["hostname"].is_string(),
            "lastUnusedOffers: {entry}"
        );
        let r = c.marathon().delete(&format!("/v2/queue{id}/delay"))?;
        ensure!(r.status == 204, "DELETE delay: {r}");
        let r = c.marathon().delete("/v2/queue/nothing/delay")?;
        ensure!(r.status == 404, "DELETE delay of no app: {r}");
        Ok(())
    });
}

/// `PUT /v2/apps` with a list whose second entry is invalid changes
/// nothing: no instances, no versions, no deployments, no new app.
#[test]
fn a_multi_app_put_with_one_bad_entry_changes_nothing() {
    with_cluster(ClusterOptions::default(), |c| {
        c.create_app(&sleeper("/one", 1))?;
        c.wait_running("/one", 1)?;
        c.wait_deployments_done("/one")?;
        let before = c.marathon().get_json("/v2/apps/one/versions")?;
        let r = c.marathon().put_json(
            "/v2/apps",
            &json!([{"id": "/one", "instances": 3}, {"id": "/two", "cmd": "sleep 1", "cpus": -1}]),
        )?;
        ensure!(r.status == 422, "expected 422: {r}");
        let details = r.json()["details"].clone();
        ensure!(
            details
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x["path"] == "(1)/cpus")),
            "details name the entry: {r}"
        );
        std::thread::sleep(Duration::from_millis(500));
        let one = c.app("/one")?.ok_or_else(|| anyhow!("/one vanished"))?;
        ensure!(one["instances"] == 1, "/one changed: {one}");
        ensure!(c.app("/two")?.is_none(), "/two was created");
        ensure!(
            c.marathon().get_json("/v2/apps/one/versions")? == before,
            "a version was added"
        );
        let deployments = c.marathon().get_json("/v2/deployments")?;
        ensure!(
            deployments.as_array().is_some_and(Vec::is_empty),
            "{deployments}"
        );
        ensure!(c.app_tasks("/one")?.len() == 1, "tasks changed");
        // Both valid: both apply, in one deployment.
        let r = c.marathon().put_json(
            "/v2/apps",
            &json!([{"id": "/one", "instances": 2}, {"id": "/two", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "portDefinitions": []}]),
        )?;
        ensure!(r.status == 200, "{r}");
        c.wait_running("/one", 2)?;
        c.wait_running("/two", 1)?;
        Ok(())
    });
}

/// An upgrade whose new task never gets ready shows as stuck with the
/// cause in `/v2/deployments`, locks the app (409), and `DELETE` rolls it
/// back: the old definition, and the old task kept running throughout.
#[test]
fn a_stuck_upgrade_says_why_and_delete_rolls_it_back() {
    with_cluster(ClusterOptions::default(), |c| {
        let id = "/upgrade";
        let readiness = |path: &str| json!([{"path": path, "portName": "http-api", "intervalSeconds": 1, "timeoutSeconds": 1}]);
        c.create_app(&json!({
            "id": id, "instances": 1, "cpus": 0.1, "mem": 64,
            "cmd": "exec python3 -m http.server $PORT0",
            "portDefinitions": [{"port": 0, "name": "http-api"}],
            "readinessChecks": readiness("/"),
        }))?;
        let old = c.wait_running(id, 1)?;
        c.wait_deployments_done(id)?;
        let r = c.marathon().put_json(
            &format!("/v2/apps{id}"),
            &json!({"readinessChecks": readiness("/never-ready")}),
        )?;
        ensure!(r.status == 200, "{r}");
        let deployment = r.json()["deploymentId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let stuck = wait_for("the deployment to say it is stuck", || {
            let list = c
                .marathon()
                .get_json("/v2/deployments")
                .map_err(|e| e.to_string())?;
            let d = deployment_of(&list, id).ok_or("no deployment")?.clone();
            if d["stuck"]["lastFailureCause"].is_string() {
                Ok(d)
            } else {
                Err(format!("{d}"))
            }
        })?;
        ensure!(
            stuck["id"] == deployment.as_str() && stuck["stuck"]["app"] == id,
            "{stuck}"
        );
        ensure!(
            stuck["stuck"]["lastFailureCause"] == "readiness check answered HTTP 404"
                && stuck["stuck"]["tasksReady"] == 0,
            "{stuck}"
        );
        let locked = c
            .marathon()
            .put_json(&format!("/v2/apps{id}"), &json!({"instances": 2}))?;
        ensure!(locked.status == 409, "the app must be locked: {locked}");
        ensure!(
            locked.json()["deployments"][0]["id"] == deployment.as_str(),
            "{locked}"
        );
        let r = c
            .marathon()
            .delete(&format!("/v2/deployments/{deployment}"))?;
        ensure!(
            r.status == 200 && r.json()["deploymentId"].is_string(),
            "rollback: {r}"
        );
        c.wait_deployments_done(id)?;
        let app = c.app(id)?.ok_or_else(|| anyhow!("gone"))?;
        ensure!(
            app["readinessChecks"][0]["path"] == "/",
            "not rolled back: {app}"
        );
        let tasks = c.wait_running(id, 1)?;
        ensure!(
            tasks[0]["id"] == old[0]["id"],
            "the old task was replaced: {tasks:?}"
        );
        Ok(())
    });
}

/// A readiness check holds the deployment until the task answers 200;
/// meanwhile `currentActions[].readinessCheckResults` say not ready.
#[test]
fn a_readiness_check_gates_the_deployment() {
    with_cluster(ClusterOptions::default(), |c| {
        let id = "/ready";
        c.create_app(&json!({
            "id": id, "instances": 1, "cpus": 0.1, "mem": 64,
            "cmd": "sleep 3; exec python3 -m http.server $PORT0",
            "portDefinitions": [{"port": 0, "name": "http-api"}],
            "readinessChecks": [{"path": "/", "portName": "http-api", "intervalSeconds": 1, "timeoutSeconds": 1}],
        }))?;
        c.wait_running(id, 1)?;
        let pending = wait_for("a readiness result that is not ready", || {
            let list = c
                .marathon()
                .get_json("/v2/deployments")
                .map_err(|e| e.to_string())?;
            let d = deployment_of(&list, id)
                .ok_or("the deployment is already over")?
                .clone();
            let r = &d["currentActions"][0]["readinessCheckResults"][0];
            if r["ready"] == false && r["taskId"].is_string() {
                Ok(d)
            } else {
                Err(format!("{d}"))
            }
        })?;
        ensure!(
            pending["currentActions"][0]["action"] == "StartApplication",
            "{pending}"
        );
        c.wait_deployments_done(id)?;
        Ok(())
    });
}

/// A scheduler whose masters are all down answers `/ping` at once and
/// `/v2/*` with 503 in Marathon's shape; nothing hangs.
#[test]
fn a_scheduler_with_no_master_answers() -> Result<()> {
    let free = |n: usize| -> Result<Vec<u16>> {
        let ls: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<_>>()?;
        ls.iter().map(|l| Ok(l.local_addr()?.port())).collect()
    };
    let ports = free(2)?;
    let listen = format!("127.0.0.1:{}", ports[0]);
    let dead_master = format!("127.0.0.1:{}", ports[1]);
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Killed(
        Command::new(meseta_binary())
            .args(["scheduler", "--listen", &listen, "--masters", &dead_master])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting meseta scheduler")?,
    );
    let api = Api::new(&listen);
    let ping = wait_until(
        "/ping to answer",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || api.get("/ping").map_err(|e| format!("{e:#}")),
    )?;
    ensure!(
        ping.status == 200 && ping.body.trim() == "pong",
        "/ping: {ping}"
    );
    let apps = wait_until(
        "/v2/apps to answer 503",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || match api.get("/v2/apps") {
            Ok(r) if r.status == 503 => Ok(r),
            Ok(r) => Err(format!("{r}")),
            Err(e) => Err(format!("{e:#}")),
        },
    )?;
    ensure!(
        apps.json()["message"].is_string(),
        "Marathon's shape: {apps}"
    );
    // Later requests are answered at once (well within the client timeout).
    for _ in 0..3 {
        let r = api.get("/v2/apps")?;
        if r.status != 503 {
            bail!("expected 503, got {r}");
        }
        ensure!(api.get("/ping")?.status == 200, "ping");
    }
    Ok(())
}

/// The Python `marathon` client (which refuses unknown keys) reads apps,
/// tasks, deployments, the queue, groups and versions.
#[test]
fn the_python_client_reads_what_we_serve() {
    let has_client = Command::new("python3")
        .args(["-c", "import marathon"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_client {
        if meseta_tests::in_ci() {
            panic!("the Python marathon client is not installed (pip install marathon)");
        }
        println!("skipping: `import marathon` fails (pip install marathon)");
        return;
    }
    with_cluster(ClusterOptions::default(), |c| {
        c.create_app(&sleeper("/py/one", 1))?;
        let mut waiting = sleeper("/py/waiting", 1);
        waiting["constraints"] = json!([["hostname", "CLUSTER", "no-such-host"]]);
        c.create_app(&waiting)?;
        c.wait_running("/py/one", 1)?;
        let script = format!(
            r#"
from marathon import MarathonClient
c = MarathonClient('{base}')
apps = c.list_apps(embed_tasks=True, embed_counts=True, embed_deployments=True, embed_last_task_failure=True)
assert sorted(a.id for a in apps) == ['/py/one', '/py/waiting'], apps
one = c.get_app('/py/one')
assert one.tasks_running == 1, one
assert len(c.list_tasks('/py/one')) == 1
deployments = c.list_deployments()
assert any('/py/waiting' in d.affected_apps for d in deployments), deployments
queue = c.list_queue(embed_last_unused_offers=True)
assert any(q.app.id == '/py/waiting' for q in queue), queue
groups = c.list_groups()
root = c.get_group('/py')
assert sorted(a.id for a in root.apps) == ['/py/one', '/py/waiting'], root
assert c.list_versions('/py/one')
print('ok')
"#,
            base = c.marathon().base()
        );
        let out = Command::new("python3").args(["-c", &script]).output()?;
        ensure!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
            "the Python client failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    });
}
