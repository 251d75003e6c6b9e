//! The `meseta` CLI, its Prometheus metrics and its logs, end to end
//! (issue 15): the real binary against a `meseta up` cluster.
//!
//! - `meseta app add` of an example waits for the deployment, printing
//!   progress, and exits 0 once the app runs; `--json` of the list commands
//!   is valid JSON with the API's objects; completions are generated; an
//!   invalid app shows Marathon's message with exit code 1; a dead first
//!   address is skipped; `task kill --scale` lowers the instances.
//! - `/metrics` of master, agent and scheduler parse with Prometheus' own
//!   parser (Python's `prometheus_client`) and hold the named metrics with
//!   values where there was activity.
//! - A role's log written to a file carries no escape codes, and
//!   `--log-format json` writes one JSON object a line.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use meseta_tests::cluster::free_ports;
use meseta_tests::{in_ci, meseta_binary, wait_for, wait_until, with_cluster, Cluster};
use serde_json::Value;

/// `meseta <args>` with the cluster's addresses, each list led by a
/// dead address (leader following must skip it).
fn cli(c: &Cluster, args: &[&str]) -> Result<Output> {
    let dead = format!("127.0.0.1:{}", free_ports(1)?[0]);
    let marathon = format!("{dead},{}", c.marathon().base());
    let master = format!("{dead},{}", c.master_address());
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--marathon", &marathon, "--master", &master]);
    c.cli(&all)
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(out: Output, what: &str) -> Result<String> {
    let (stdout, stderr) = text(&out);
    ensure!(
        out.status.success(),
        "{what}: {} \nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    Ok(stdout)
}

fn json_of(c: &Cluster, args: &[&str]) -> Result<Value> {
    let mut all = args.to_vec();
    all.push("--json");
    let stdout = ok(cli(c, &all)?, &all.join(" "))?;
    serde_json::from_str(&stdout).with_context(|| format!("{args:?} --json printed:\n{stdout}"))
}

#[test]
fn the_cli_deploys_lists_kills_and_explains_errors() {
    with_cluster(Default::default(), |c| {
        let example = meseta_tests::workspace_root().join("examples/apps/sleep.json");
        let definition: Value = serde_json::from_str(&std::fs::read_to_string(&example)?)?;
        let id = definition["id"].as_str().context("example id")?.to_string();
        let instances = definition["instances"].as_u64().context("instances")?;
        ensure!(instances >= 2, "the example must run 2+ instances");

        // app add waits for the deployment and exits 0 once it runs.
        let out = cli(c, &["app", "add", example.to_str().context("path")?])?;
        let (_, stderr) = text(&out);
        ok(out, "meseta app add")?;
        ensure!(
            stderr.contains("deployment ")
                && stderr.contains(&format!("{instances}/{instances} running")),
            "no progress lines on stderr:\n{stderr}"
        );
        ensure!(
            !stderr.contains('\u{1b}'),
            "escape codes off a terminal:\n{stderr}"
        );
        let app = c.app(&id)?.context("the app exists")?;
        ensure!(
            app["tasksRunning"].as_u64() == Some(instances),
            "app add returned before the tasks ran: {app}"
        );

        // --json of every list command is the API's JSON.
        let apps = json_of(c, &["app", "list"])?;
        ensure!(
            apps["apps"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["id"] == id.as_str())),
            "{apps}"
        );
        let tasks = json_of(c, &["task", "list", "--app", &id])?;
        let tasks = tasks["tasks"].as_array().cloned().context("tasks")?;
        ensure!(tasks.len() as u64 == instances, "{tasks:?}");
        let agents = json_of(c, &["agent", "list"])?;
        ensure!(
            agents
                .as_array()
                .is_some_and(|a| a.len() == 1 && a[0]["id"].is_string()),
            "{agents}"
        );
        let frameworks = json_of(c, &["framework", "list"])?;
        ensure!(
            frameworks
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["name"] == "marathon")),
            "{frameworks}"
        );
        let groups = json_of(c, &["group", "list"])?;
        ensure!(groups["id"] == "/", "{groups}");
        let deployments = json_of(c, &["deployment", "list"])?;
        ensure!(deployments.is_array(), "{deployments}");
        let status = json_of(c, &["cluster", "status"])?;
        ensure!(
            status["master"]["agents"] == 1 && status["marathon"]["name"].is_string(),
            "{status}"
        );
        let versions = json_of(c, &["app", "versions", &id])?;
        ensure!(
            versions["versions"]
                .as_array()
                .is_some_and(|v| !v.is_empty()),
            "{versions}"
        );

        // People get tables.
        let table = ok(cli(c, &["app", "list"])?, "app list")?;
        ensure!(
            table.starts_with("ID")
                && table.contains(&id)
                && table.contains(&format!("{instances}/{instances}")),
            "{table}"
        );

        // task kill --scale lowers the instances by one.
        let victim = tasks[0]["id"].as_str().context("task id")?.to_string();
        let out = ok(
            cli(c, &["task", "kill", &victim, "--scale"])?,
            "task kill --scale",
        )?;
        ensure!(out.contains("scaled down"), "{out}");
        wait_for("the app to scale down to one less", || {
            let app = c.app(&id).map_err(|e| e.to_string())?.ok_or("app gone")?;
            let left = c.app_tasks(&id).map_err(|e| e.to_string())?;
            if app["instances"].as_u64() == Some(instances - 1)
                && left.len() as u64 == instances - 1
                && left.iter().all(|t| t["id"] != victim.as_str())
            {
                Ok(())
            } else {
                Err(format!(
                    "instances {}, tasks {}",
                    app["instances"],
                    left.len()
                ))
            }
        })?;

        // scale waits too.
        // scale waits for the new instance.
        ok(
            cli(c, &["app", "scale", &id, &instances.to_string()])?,
            "app scale",
        )?;
        ensure!(
            c.app(&id)?.context("app")?["tasksRunning"].as_u64() == Some(instances),
            "scale returned early"
        );

        // restart waits for replacements of every task; rollback to the
        // first version brings back its instances after a scale down.
        let before: Vec<Value> = c.app_tasks(&id)?;
        ok(cli(c, &["app", "restart", &id])?, "app restart")?;
        let replaced = c
            .app_tasks(&id)?
            .into_iter()
            .filter(|t| t["state"] == "TASK_RUNNING" && !before.iter().any(|b| b["id"] == t["id"]))
            .count();
        ensure!(
            replaced as u64 == instances,
            "restart returned with {replaced} new tasks"
        );
        wait_for("the restarted app's old tasks to be gone", || {
            let now = c.app_tasks(&id).map_err(|e| e.to_string())?;
            if now
                .iter()
                .any(|t| before.iter().any(|b| b["id"] == t["id"]))
            {
                Err(format!("{} tasks", now.len()))
            } else {
                Ok(())
            }
        })?;
        ok(
            cli(c, &["app", "scale", &id, "1", "--detach"])?,
            "app scale --detach",
        )?;
        c.wait_deployments_done(&id)?;
        let versions = json_of(c, &["app", "versions", &id])?;
        let oldest = versions["versions"]
            .as_array()
            .and_then(|v| v.last())
            .and_then(Value::as_str)
            .context("oldest version")?
            .to_string();
        ok(cli(c, &["app", "rollback", &id, &oldest])?, "app rollback")?;
        let app = c.app(&id)?.context("app")?;
        ensure!(
            app["instances"].as_u64() == Some(instances)
                && app["tasksRunning"].as_u64() == Some(instances),
            "rollback to {oldest}: {app}"
        );

        // On a terminal the wait is an indicatif bar (run under `script`,
        // which gives the command a pseudo-terminal).
        let marathon = c.marathon().base().to_string();
        let command = format!(
            "{} app scale {id} 3 --marathon {marathon} --master {}",
            meseta_binary().display(),
            c.master_address()
        );
        let out = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .context("running script (bsdutils)")?;
        let shown = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "scale on a terminal: {} {shown}",
            out.status
        );
        ensure!(
            shown.contains("3/3") && shown.contains('\u{1b}') && shown.contains("running"),
            "no progress bar on a terminal: {shown:?}"
        );
        ensure!(
            c.app(&id)?.context("app")?["tasksRunning"] == 3,
            "scale on a terminal returned early"
        );

        // Groups.
        let dir = tempfile::tempdir()?;
        let group = dir.path().join("group.json");
        std::fs::write(
            &group,
            r#"{"id": "/grp", "apps": [{"id": "/grp/a", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 1}]}"#,
        )?;
        ok(
            cli(c, &["group", "add", group.to_str().context("path")?])?,
            "group add",
        )?;
        let shown = json_of(c, &["group", "show", "/grp"])?;
        ensure!(shown["apps"][0]["id"] == "/grp/a", "{shown}");
        ensure!(
            c.app("/grp/a")?.context("group app")?["tasksRunning"] == 1,
            "group add returned early"
        );
        let listed = ok(cli(c, &["group", "list"])?, "group list")?;
        ensure!(
            listed.contains("/grp") && listed.contains("/grp/a"),
            "{listed}"
        );
        ok(cli(c, &["group", "remove", "/grp"])?, "group remove")?;

        // A deployment that cannot finish: --detach, watch times out (5),
        // rollback stops it.
        let huge = dir.path().join("huge.json");
        std::fs::write(
            &huge,
            r#"{"id": "/huge", "cmd": "sleep 1000", "cpus": 64, "mem": 16, "instances": 1}"#,
        )?;
        let out = ok(
            cli(
                c,
                &["app", "add", huge.to_str().context("path")?, "--detach"],
            )?,
            "app add --detach",
        )?;
        ensure!(out.contains("deployment "), "{out}");
        let deployments = json_of(c, &["deployment", "list"])?;
        let deployment = deployments
            .as_array()
            .and_then(|d| d.iter().find(|d| d["affectedApps"][0] == "/huge"))
            .and_then(|d| d["id"].as_str())
            .with_context(|| format!("no deployment of /huge in {deployments}"))?
            .to_string();
        let out = cli(c, &["deployment", "watch", &deployment, "--timeout", "2"])?;
        let (_, stderr) = text(&out);
        ensure!(
            out.status.code() == Some(5),
            "watch: {} {stderr}",
            out.status
        );
        ensure!(stderr.contains("timed out"), "{stderr}");
        ok(
            cli(c, &["deployment", "rollback", &deployment])?,
            "deployment rollback",
        )?;
        wait_for("the rolled back deployment to be gone", || {
            let list = json_of(c, &["deployment", "list"]).map_err(|e| e.to_string())?;
            if list
                .as_array()
                .is_some_and(|d| d.iter().all(|d| d["id"] != deployment.as_str()))
            {
                Ok(())
            } else {
                Err(list.to_string())
            }
        })?;

        // Errors: the API's message and a documented exit code.
        let bad = dir.path().join("bad.json");
        std::fs::write(
            &bad,
            r#"{"id": "/bad", "cmd": "sleep 1", "cpus": -1, "instances": 1}"#,
        )?;
        let out = cli(c, &["app", "add", bad.to_str().context("path")?])?;
        let (_, stderr) = text(&out);
        ensure!(
            out.status.code() == Some(1),
            "invalid app: {} {stderr}",
            out.status
        );
        ensure!(
            stderr.contains("/cpus") && stderr.contains("422"),
            "no API message: {stderr}"
        );
        let out = cli(c, &["app", "show", "/does-not-exist"])?;
        let (_, stderr) = text(&out);
        ensure!(
            out.status.code() == Some(4),
            "missing app: {} {stderr}",
            out.status
        );
        ensure!(stderr.contains("does not exist"), "{stderr}");
        let out = c.cli(&[
            "app",
            "list",
            "--marathon",
            &format!("127.0.0.1:{}", free_ports(1)?[0]),
        ])?;
        ensure!(out.status.code() == Some(3), "unreachable: {}", out.status);
        let out = c.cli(&["app", "frobnicate"])?;
        ensure!(out.status.code() == Some(2), "usage: {}", out.status);

        // Completion scripts.
        for (shell, marker) in [
            ("bash", "_meseta()"),
            ("zsh", "#compdef meseta"),
            ("fish", "complete -c meseta"),
        ] {
            let script = ok(c.cli(&["completions", shell])?, shell)?;
            ensure!(
                script.contains(marker) && script.contains("deployment"),
                "{shell} completion:\n{}",
                &script[..script.len().min(400)]
            );
        }

        // task log reads the sandbox through the leading master.
        let left = c.app_tasks(&id)?;
        let task = left
            .first()
            .and_then(|t| t["id"].as_str())
            .context("a task")?;
        ok(cli(c, &["task", "log", task])?, "task log")?;
        ok(cli(c, &["app", "remove", &id])?, "app remove")?;

        add_waits_for_health(c)?;
        follow_a_log(c)?;
        drain_and_reactivate(c)?;
        Ok(())
    });
}

/// `app add` of the http-server example with an HTTP health check waits
/// until the task is healthy, not merely running.
fn add_waits_for_health(c: &Cluster) -> Result<()> {
    let example = meseta_tests::workspace_root().join("examples/apps/http-server.json");
    let mut app: Value = serde_json::from_str(&std::fs::read_to_string(&example)?)?;
    app["healthChecks"] = serde_json::json!([{
        "protocol": "MESOS_HTTP", "path": "/", "portIndex": 0,
        "gracePeriodSeconds": 60, "intervalSeconds": 1, "timeoutSeconds": 5,
        "delaySeconds": 0, "maxConsecutiveFailures": 3,
    }]);
    let id = app["id"].as_str().context("id")?.to_string();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("web.json");
    std::fs::write(&file, app.to_string())?;
    let out = cli(c, &["app", "add", file.to_str().context("path")?])?;
    let (_, stderr) = text(&out);
    ok(out, "app add with a health check")?;
    ensure!(
        stderr.contains("1/1 healthy"),
        "no healthy progress:\n{stderr}"
    );
    let app = c.app(&id)?.context("app")?;
    ensure!(
        app["tasksHealthy"] == 1,
        "app add returned before the task was healthy: {app}"
    );
    ok(cli(c, &["app", "remove", &id])?, "app remove")?;
    Ok(())
}

/// `task log --follow` prints what the task writes after the command
/// started.
fn follow_a_log(c: &Cluster) -> Result<()> {
    let app = serde_json::json!({
        "id": "/ticker", "cpus": 0.1, "mem": 32, "instances": 1,
        "cmd": "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done",
    });
    c.create_app(&app)?;
    let task = c.wait_running("/ticker", 1)?;
    let task = task[0]["id"].as_str().context("task id")?.to_string();
    let marathon = c.marathon().base().to_string();
    let mut child = Command::new(meseta_binary())
        .args(["task", "log", &task, "--follow", "--marathon", &marathon])
        .args(["--master", c.master_address()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut first = None;
    let result = wait_for("--follow to print ticks written after it started", || {
        while let Ok(line) = rx.try_recv() {
            let n: u64 = line
                .strip_prefix("tick ")
                .and_then(|n| n.trim().parse().ok())
                .ok_or_else(|| format!("unexpected line {line:?}"))?;
            let start = *first.get_or_insert(n);
            if n >= start + 5 {
                return Ok(());
            }
        }
        Err(format!("first tick seen: {first:?}"))
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    result?;
    ok(cli(c, &["app", "remove", "/ticker"])?, "app remove /ticker")?;
    Ok(())
}

/// `agent drain` / `reactivate` speak Mesos' operator calls: the agent shows
/// as draining, then active again.
fn drain_and_reactivate(c: &Cluster) -> Result<()> {
    let agents = json_of(c, &["agent", "list"])?;
    let agent = agents[0]["id"].as_str().context("agent id")?.to_string();
    ok(
        cli(c, &["agent", "drain", &agent, "--grace", "2"])?,
        "agent drain",
    )?;
    wait_for("the agent to show as draining or deactivated", || {
        let agents = json_of(c, &["agent", "list"]).map_err(|e| e.to_string())?;
        let a = &agents[0];
        if a["deactivated"] == true || a["drain_info"].is_object() {
            Ok(())
        } else {
            Err(a.to_string())
        }
    })?;
    let table = ok(cli(c, &["agent", "list"])?, "agent list")?;
    ensure!(
        ["draining", "drained", "deactivated"]
            .iter()
            .any(|s| table.contains(s)),
        "{table}"
    );
    ok(
        cli(c, &["agent", "reactivate", &agent])?,
        "agent reactivate",
    )?;
    wait_for("the agent to be active again", || {
        let agents = json_of(c, &["agent", "list"]).map_err(|e| e.to_string())?;
        let a = &agents[0];
        if a["deactivated"] != true && a["active"] == true {
            Ok(())
        } else {
            Err(a.to_string())
        }
    })?;
    Ok(())
}

/// Python's `prometheus_client` parser, or why it cannot run (a skip
/// outside CI; `.ci/run` installs it).
fn require_prometheus_parser() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    match (found, in_ci()) {
        (true, _) => true,
        (false, true) => panic!("python3 -m pip install prometheus_client (see .ci/run)"),
        (false, false) => {
            println!("skipping the metrics test: python3's prometheus_client is missing (CI installs it)");
            false
        }
    }
}

/// Parses `text` with `prometheus_client`'s parser (`openmetrics`: the
/// strict OpenMetrics one) into `name{labels} -> value`.
fn parse_metrics(text: &str, openmetrics: bool) -> Result<BTreeMap<String, f64>> {
    let parser = if openmetrics {
        "from prometheus_client.openmetrics.parser import text_string_to_metric_families"
    } else {
        "from prometheus_client.parser import text_string_to_metric_families"
    };
    let script = format!(
        "import sys, json\n{parser}\nout = {{}}\n\
         for fam in text_string_to_metric_families(sys.stdin.read()):\n\
         \x20   for s in fam.samples:\n\
         \x20       labels = ','.join(f'{{k}}={{v}}' for k, v in sorted(s.labels.items()))\n\
         \x20       out[s.name + '{{' + labels + '}}'] = s.value\n\
         print(json.dumps(out))\n"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running python3")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "the Prometheus parser refused the text: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn scrape(base: &str, path: &str, accept: Option<&str>) -> Result<(String, String)> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut req = client.get(format!("{base}{path}"));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send()?;
    ensure!(resp.status().is_success(), "{path}: {}", resp.status());
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok((ct, resp.text()?))
}

fn value(m: &BTreeMap<String, f64>, key: &str) -> Result<f64> {
    m.get(key)
        .copied()
        .ok_or_else(|| anyhow!("{key} missing from {:?}", m.keys().collect::<Vec<_>>()))
}

#[test]
fn every_role_serves_prometheus_metrics_that_parse() {
    if !require_prometheus_parser() {
        return;
    }
    with_cluster(Default::default(), |c| {
        let app = serde_json::json!({"id": "/metered", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "instances": 1});
        c.create_app(&app)?;
        c.wait_running("/metered", 1)?;
        c.wait_deployments_done("/metered")?;

        // The master, in both formats; counters moved with the launch.
        let master = c.master().base().to_string();
        let (ct, body) = scrape(&master, "/metrics", None)?;
        ensure!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        let m = parse_metrics(&body, false)?;
        ensure!(
            value(&m, "meseta_master_offers_sent_total{}")? >= 1.0,
            "{body}"
        );
        ensure!(
            value(&m, "meseta_master_tasks_launched_total{}")? >= 1.0,
            "{body}"
        );
        ensure!(
            value(&m, "meseta_master_task_status_updates_total{}")? >= 1.0,
            "{body}"
        );
        ensure!(
            value(&m, "meseta_allocator_cycle_seconds_count{}")? >= 1.0,
            "{body}"
        );
        ensure!(
            value(&m, "meseta_raft_commit_seconds_count{}")? >= 1.0,
            "{body}"
        );
        ensure!(
            value(&m, "meseta_master_agents{state=connected}")? == 1.0,
            "{body}"
        );
        ensure!(
            value(&m, "meseta_master_frameworks{state=active}")? == 1.0,
            "{body}"
        );
        ensure!(
            value(&m, "meseta_master_tasks{state=TASK_RUNNING}")? >= 1.0,
            "{body}"
        );
        ensure!(value(&m, "meseta_master_elected{}")? == 1.0, "{body}");
        ensure!(
            value(&m, "process_resident_memory_bytes{}")? > 0.0,
            "{body}"
        );
        ensure!(value(&m, "process_cpu_seconds_total{}")? > 0.0, "{body}");
        ensure!(value(&m, "process_open_fds{}")? > 0.0, "{body}");
        ensure!(value(&m, "process_start_time_seconds{}")? > 1.0e9, "{body}");
        ensure!(
            m.iter()
                .any(|(k, v)| k.starts_with("meseta_http_requests_total{code=200") && *v >= 1.0),
            "{body}"
        );
        let (ct, body) = scrape(
            &master,
            "/metrics/prometheus",
            Some("application/openmetrics-text;version=1.0.0"),
        )?;
        ensure!(ct.starts_with("application/openmetrics-text"), "{ct}");
        let om = parse_metrics(&body, true)?;
        ensure!(
            value(&om, "meseta_master_offers_sent_total{}")? >= 1.0,
            "{body}"
        );
        // Mesos' names stay on /metrics/snapshot.
        let snapshot = c.master().get_json("/metrics/snapshot")?;
        ensure!(
            snapshot["master/offers_sent"]
                .as_u64()
                .is_some_and(|n| n >= 1),
            "{snapshot}"
        );

        // The agent.
        let (_, body) = scrape(c.agent().base(), "/metrics", None)?;
        let a = parse_metrics(&body, false)?;
        ensure!(
            value(&a, "meseta_agent_tasks{state=TASK_RUNNING}")? >= 1.0,
            "{body}"
        );
        ensure!(
            value(&a, "meseta_agent_task_status_updates_total{}")? >= 1.0,
            "{body}"
        );
        ensure!(value(&a, "meseta_agent_connected{}")? == 1.0, "{body}");
        ensure!(
            value(&a, "meseta_agent_resources_milli{kind=used,resource=cpus}")? >= 100.0,
            "{body}"
        );

        // The scheduler; Marathon's JSON for Accept: application/json.
        let marathon = c.marathon().base().to_string();
        let (_, body) = scrape(&marathon, "/metrics", None)?;
        let s = parse_metrics(&body, false)?;
        ensure!(value(&s, "meseta_scheduler_leader{}")? == 1.0, "{body}");
        ensure!(value(&s, "meseta_scheduler_apps{}")? == 1.0, "{body}");
        ensure!(
            value(&s, "meseta_scheduler_deployments_active{}")? == 0.0,
            "{body}"
        );
        ensure!(
            value(&s, "meseta_scheduler_tasks{state=TASK_RUNNING}")? == 1.0,
            "{body}"
        );
        ensure!(
            s.iter().any(
                |(k, v)| k.starts_with("meseta_http_requests_total{code=201,method=POST")
                    && *v >= 1.0
            ),
            "{body}"
        );
        // Every metric the Grafana dashboard in deploy/ queries exists.
        let served: std::collections::BTreeSet<String> = m
            .keys()
            .chain(a.keys())
            .chain(s.keys())
            .filter_map(|k| k.split('{').next().map(str::to_string))
            .collect();
        let dashboard = meseta_tests::workspace_root().join("deploy/grafana/meseta.json");
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&dashboard)?)?;
        let mut queried = 0;
        for panel in dashboard["panels"].as_array().context("panels")? {
            for target in panel["targets"].as_array().context("targets")? {
                let expr = target["expr"].as_str().context("expr")?;
                for name in expr
                    .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                    .filter(|w| w.starts_with("meseta_") || w.starts_with("process_"))
                {
                    queried += 1;
                    ensure!(
                        served.contains(name),
                        "the dashboard queries {name}, which no role serves"
                    );
                }
            }
        }
        ensure!(
            queried >= 10,
            "the dashboard queries only {queried} metrics"
        );
        let (ct, body) = scrape(&marathon, "/metrics", Some("application/json"))?;
        ensure!(ct.starts_with("application/json"), "{ct}");
        let j: Value = serde_json::from_str(&body)?;
        ensure!(
            j["gauges"]["marathon.apps.active.gauge"]["value"] == 1.0,
            "{j}"
        );
        ensure!(
            j["gauges"]["marathon.instances.running.gauge"]["value"] == 1.0,
            "{j}"
        );

        // A deployment that cannot finish shows as active, its task queued.
        let huge = serde_json::json!({"id": "/huge", "cmd": "sleep 1000", "cpus": 64, "mem": 16, "instances": 1});
        c.create_app(&huge)?;
        let (_, body) = scrape(&marathon, "/metrics", None)?;
        let s = parse_metrics(&body, false)?;
        ensure!(
            value(&s, "meseta_scheduler_deployments_active{}")? == 1.0,
            "{body}"
        );
        ensure!(
            value(&s, "meseta_scheduler_launch_queue{}")? >= 1.0,
            "{body}"
        );
        ensure!(value(&s, "meseta_scheduler_apps{}")? == 2.0, "{body}");
        let (_, body) = scrape(&marathon, "/metrics", Some("application/json"))?;
        let j: Value = serde_json::from_str(&body)?;
        ensure!(
            j["gauges"]["marathon.deployments.active.gauge"]["value"] == 1.0,
            "{j}"
        );
        c.delete_app("/huge", true)?;
        Ok(())
    });
}

/// Runs `meseta master` on a free port with its stderr in a file, as a
/// service manager would (no terminal, NO_COLOR unset), until its log
/// says it listens; returns the log.
fn master_log(extra: &[&str]) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("master.log");
    let port = free_ports(1)?[0];
    let mut child = Command::new(meseta_binary())
        .args(extra)
        .arg("master")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let waited = wait_until(
        "the master to log that it listens",
        meseta_tests::DEADLINE,
        Duration::from_millis(200),
        || {
            let text = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
            if text.contains("master listening") {
                Ok(text)
            } else {
                Err(format!("log so far: {text}"))
            }
        },
    );
    let _ = child.kill();
    let _ = child.wait();
    waited
}

#[test]
fn logs_in_a_file_have_no_escape_codes_and_json_lines_parse() -> Result<()> {
    let text = master_log(&[])?;
    ensure!(
        !text.contains('\u{1b}'),
        "escape codes in a log file:\n{text}"
    );
    ensure!(text.lines().any(|l| l.contains("INFO")), "{text}");

    let json = master_log(&["--log-format", "json"])?;
    let mut lines = 0;
    for line in json.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        ensure!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        lines += 1;
    }
    ensure!(lines >= 1, "no JSON log line:\n{json}");
    ensure!(json.contains("\"message\":\"master listening\""), "{json}");
    Ok(())
}

/// From a follower master and a standby scheduler the CLI reaches the
/// leaders; when a leader dies, a list led by its dead address reaches the
/// new one.
#[test]
fn the_cli_follows_the_leaders_through_failovers() -> Result<()> {
    use meseta_tests::masters::{Masters, ELECTION_DEADLINE};
    const T: Duration = Duration::from_secs(120);
    let mut m = Masters::start(3)?;
    m.start_agent("cpus:2;mem:1024")?;
    let first = m.start_scheduler()?;
    m.wait_scheduler_elected(&first, ELECTION_DEADLINE)?;
    let standby = m.start_scheduler()?;
    m.run(|m| {
        let addrs = m.addrs.clone();
        let leader = m.leader()?;
        let follower = (leader + 1) % addrs.len();
        let status: Value = serde_json::from_str(&m.cli(
            &["cluster", "status", "--json", "--master", &addrs[follower], "--marathon", &standby],
            T,
        )?)?;
        ensure!(
            status["master"]["leader"] == format!("master@{}", addrs[leader]).as_str(),
            "{status}"
        );
        ensure!(status["marathon"]["leader"] == first.as_str(), "{status}");

        // An app added through the standby's address, waited for.
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("app.json");
        std::fs::write(
            &file,
            r#"{"id": "/followed", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 1, "portDefinitions": []}"#,
        )?;
        let path = file.to_str().context("path")?;
        m.cli(&["app", "add", path, "--marathon", &standby], T)?;

        // The leading master dies: a list led by its address finds the next.
        m.kill_master(leader);
        m.wait_leader(Some(leader))?;
        let masters = format!("{},{}", addrs[leader], addrs[follower]);
        wait_for("the agent to be listed by the new leader", || {
            let out = m
                .cli(&["agent", "list", "--json", "--master", &masters], T)
                .map_err(|e| format!("{e:#}"))?;
            let agents: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
            match agents.as_array() {
                Some(a) if a.len() == 1 => Ok(()),
                _ => Err(out),
            }
        })?;

        // The leading scheduler dies: the standby takes over.
        m.kill_scheduler(&first);
        m.wait_scheduler_elected(&standby, Duration::from_secs(90))?;
        let schedulers = format!("{first},{standby}");
        let apps: Value = serde_json::from_str(
            &m.cli(&["app", "list", "--json", "--marathon", &schedulers], T)?,
        )?;
        ensure!(
            apps["apps"].as_array().is_some_and(|a| a.iter().any(|x| x["id"] == "/followed")),
            "{apps}"
        );
        Ok(())
    })
}
