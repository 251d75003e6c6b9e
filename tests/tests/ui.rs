//! The web UIs in a real browser (headless Chromium over the DevTools
//! protocol), against a real cluster (`meseta up`): Marathon's on the
//! scheduler, the Mesos master's on the master. Screenshots of every page
//! go to `target/ui-screenshots/<test>/` for a person to look at.

use anyhow::{anyhow, ensure, Context, Result};
use meseta_tests::browser::{require_browser, screenshot_dir, Browser};
use meseta_tests::{wait_for, with_cluster, ClusterOptions};
use serde_json::{json, Value};

/// A JavaScript string literal of `s`.
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Sets a form control's value as a person typing would (an `input` event).
fn type_into(b: &mut Browser, selector: &str, value: &str) -> Result<()> {
    let ok = b.eval(&format!(
        "(() => {{ const el = document.querySelector({}); if (!el) return false; el.value = {}; \
         el.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
        js(selector),
        js(value)
    ))?;
    ensure!(ok == true, "no {selector} on the page");
    Ok(())
}

/// Clicks the first button whose text is `text`.
fn click_button(b: &mut Browser, text: &str) -> Result<()> {
    let ok = b.eval(&format!(
        "(() => {{ const el = [...document.querySelectorAll('button')].find(x => x.textContent.trim() === {}); \
         if (!el) return false; el.click(); return true; }})()",
        js(text)
    ))?;
    ensure!(ok == true, "no button {text:?} on the page");
    Ok(())
}

/// Clicks the first element matching `selector`.
fn click(b: &mut Browser, selector: &str) -> Result<()> {
    let ok = b.eval(&format!(
        "(() => {{ const el = document.querySelector({}); if (!el) return false; el.click(); return true; }})()",
        js(selector)
    ))?;
    ensure!(ok == true, "nothing matches {selector}");
    Ok(())
}

fn task_ids(tasks: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = tasks
        .iter()
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect();
    ids.sort();
    ids
}

/// A write as a page of another site would send it.
fn cross_site_post(url: &str, body: &Value) -> Result<u16> {
    let resp = meseta_tests::http::client()
        .post(url)
        .header("Origin", "http://evil.example")
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .with_context(|| format!("POST {url}"))?;
    Ok(resp.status().as_u16())
}

/// Marathon's UI: an app created through `/v2` is listed with its label
/// rendered as text, a change shows without reload, the form creates an
/// app (and shows 422 details next to the fields), scale, restart, kill
/// and destroy work from the page, a task's stdout is readable, a
/// deployment's progress shows and goes, secrets stay hidden, and a
/// cross-site write is refused while API clients keep working.
#[test]
fn marathon_ui_drives_apps_and_deployments_in_a_browser() {
    let Some(mut b) = require_browser("the Marathon UI test") else {
        return;
    };
    with_cluster(ClusterOptions::default(), |c| {
        let shots = screenshot_dir("marathon_ui");
        let base = c.marathon().base().to_string();
        c.create_app(&json!({
            "id": "/web/hello", "cmd": "echo hello-ui; sleep 1000", "instances": 1,
            "cpus": 0.1, "mem": 32, "portDefinitions": [{"port": 0}],
            "labels": {"note": "<script>alert(1)</script>"},
            "env": {"DB_PASSWORD": "hunter2", "MODE": "demo"},
        }))?;
        c.create_app(
            &json!({"id": "/web/other", "cmd": "sleep 1000", "instances": 1,
            "cpus": 0.1, "mem": 32, "portDefinitions": []}),
        )?;
        c.wait_running("/web/hello", 1)?;

        // `/` leads to the apps; the group is a folder.
        b.goto(&format!("{base}/"))?;
        b.wait_true(
            "the web folder",
            "location.pathname === '/ui/' && [...document.querySelectorAll('a.folder')].some(a => a.textContent === 'web')",
        )?;
        println!("apps page load: {:.0} ms", b.load_ms()?);
        b.screenshot(&shots.join("apps.png"))?;
        click(&mut b, "a.folder")?;
        b.wait_true(
            "the app row",
            "!!document.querySelector('tr[data-app=\"/web/hello\"]')",
        )?;

        // The label is text: no script element but the UI's own.
        let label_is_text = b.eval(
            "document.querySelectorAll('script').length === 1 && \
             [...document.querySelectorAll('.chip')].some(c => c.textContent.includes('<script>alert(1)</script>'))",
        )?;
        ensure!(label_is_text == true, "the label is not rendered as text");

        // A change made elsewhere shows without a reload.
        b.eval("window.__notReloaded = 42")?;
        let r = c
            .marathon()
            .put_json("/v2/apps/web/hello", &json!({"instances": 2}))?;
        ensure!(r.is_success(), "scale through /v2: {r}");
        b.wait_true(
            "2 of 2 running, live",
            "window.__notReloaded === 42 && document.querySelector('tr[data-app=\"/web/hello\"]').innerText.includes('2 of 2')",
        )?;
        b.screenshot(&shots.join("apps-group.png"))?;

        // Text filter.
        type_into(&mut b, "input[name=q]", "other")?;
        b.wait_true(
            "the filter",
            "!document.querySelector('tr[data-app=\"/web/hello\"]') && !!document.querySelector('tr[data-app=\"/web/other\"]')",
        )?;

        // The app page: tasks with host:port links, and secrets hidden.
        b.goto(&format!("{base}/ui/app/web/hello"))?;
        b.wait_true(
            "two task rows",
            "document.querySelectorAll('tr[data-task]').length === 2",
        )?;
        let port_link = b.eval("!!document.querySelector('tr[data-task] a[href^=\"http://\"]')")?;
        ensure!(port_link == true, "no host:port link");
        println!("app page load: {:.0} ms", b.load_ms()?);
        b.screenshot(&shots.join("app.png"))?;
        b.goto(&format!("{base}/ui/app/web/hello?tab=configuration"))?;
        let text = b.text()?;
        ensure!(!text.contains("hunter2"), "a secret is shown: {text}");
        ensure!(
            text.contains("MODE=demo") && text.contains("DB_PASSWORD=••••••••"),
            "{text}"
        );
        b.screenshot(&shots.join("app-configuration.png"))?;
        b.goto(&format!("{base}/ui/edit/web/hello"))?;
        let editor = b.eval("document.querySelector('#app-json').value")?;
        ensure!(
            !editor.to_string().contains("hunter2"),
            "the editor shows a secret"
        );

        // stdout through the agent's files API.
        b.goto(&format!("{base}/ui/app/web/hello"))?;
        click(&mut b, "tr[data-task] a[href$=\"/stdout\"]")?;
        b.wait_true(
            "the task's stdout",
            "!!document.querySelector('pre.log') && document.querySelector('pre.log').textContent.includes('hello-ui')",
        )?;
        b.screenshot(&shots.join("task-stdout.png"))?;

        // Create through the form: bad input first, details next to fields.
        b.goto(&format!("{base}/ui/new"))?;
        type_into(&mut b, "#field-id", "/Bad_ID")?;
        type_into(&mut b, "#field-cpus", "-1")?;
        type_into(&mut b, "#field-cmd", "sleep 1000")?;
        click(&mut b, "#app-editor button[type=submit]")?;
        b.wait_true(
            "422 details beside the id and cpus fields",
            "document.querySelector('#field-id').closest('.field').querySelector('.field-error').textContent.includes('must fully match') && \
             document.querySelector('#field-cpus').closest('.field').querySelector('.field-error').textContent.includes('greater than')",
        )?;
        b.screenshot(&shots.join("create-422.png"))?;
        type_into(&mut b, "#field-id", "/made/in-ui")?;
        type_into(&mut b, "#field-cpus", "0.1")?;
        type_into(&mut b, "#field-mem", "32")?;
        type_into(&mut b, "#field-labels", "made=ui")?;
        let doc = b.eval("JSON.parse(document.querySelector('#app-json').value)")?;
        ensure!(
            doc["id"] == "/made/in-ui" && doc["labels"]["made"] == "ui" && doc["cpus"] == 0.1,
            "the JSON did not follow the form: {doc}"
        );
        click(&mut b, "#app-editor button[type=submit]")?;
        b.wait_true(
            "the new app's page",
            "location.pathname === '/ui/app/made/in-ui'",
        )?;
        c.wait_running("/made/in-ui", 1)?;

        // Scale from the page.
        b.wait_true("the scale form", "!!document.querySelector('#instances')")?;
        b.eval("document.querySelector('#instances').value = '2'")?;
        click(&mut b, "form[data-method] button[type=submit]")?;
        let scaled = c.wait_running("/made/in-ui", 2)?;
        b.wait_true(
            "the page to show 2 of 2",
            "document.querySelector('h1').innerText.includes('2 of 2 instances running')",
        )?;

        // Restart from the page: every task is replaced.
        let before = task_ids(&scaled);
        click_button(&mut b, "Restart")?;
        wait_for("the restart to replace both tasks", || {
            let tasks = c.app_tasks("/made/in-ui").map_err(|e| format!("{e:#}"))?;
            let ids = task_ids(&tasks);
            let running = tasks
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .count();
            if running == 2 && ids.len() == 2 && ids.iter().all(|i| !before.contains(i)) {
                Ok(())
            } else {
                Err(format!("{ids:?} (before {before:?})"))
            }
        })?;
        c.wait_deployments_done("/made/in-ui")?;

        // Kill one task and scale down, from the page.
        b.goto(&format!("{base}/ui/app/made/in-ui"))?;
        b.wait_true(
            "two tasks",
            "document.querySelectorAll('tr[data-task]').length === 2",
        )?;
        click(&mut b, "tr[data-task] input[name=task]")?;
        click_button(&mut b, "Kill & scale")?;
        c.wait_running("/made/in-ui", 1)?;
        let app = c
            .app("/made/in-ui")?
            .ok_or_else(|| anyhow!("the app is gone"))?;
        ensure!(app["instances"] == 1, "not scaled down: {app}");

        // Destroy from the page.
        click_button(&mut b, "Destroy")?;
        b.wait_true("the apps list", "location.pathname === '/ui/'")?;
        wait_for("the app to be destroyed", || match c.app("/made/in-ui") {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        })?;

        // A deployment that cannot finish shows its progress; rolled back
        // from the page, it goes away without a reload.
        c.create_app(
            &json!({"id": "/stuck/big", "cmd": "sleep 1000", "instances": 1,
            "cpus": 100, "mem": 32, "portDefinitions": []}),
        )?;
        b.goto(&format!("{base}/ui/deployments"))?;
        b.wait_true(
            "the deployment's progress",
            "!!document.querySelector('tr[data-deployment]') && document.body.innerText.includes('/stuck/big') && \
             document.body.innerText.includes('0 of 1 running')",
        )?;
        b.screenshot(&shots.join("deployments.png"))?;
        b.goto(&format!("{base}/ui/app/stuck/big?tab=debug"))?;
        b.wait_true(
            "why it waits",
            "document.body.innerText.includes('InsufficientCpus')",
        )?;
        b.screenshot(&shots.join("app-debug.png"))?;
        b.goto(&format!("{base}/ui/deployments"))?;
        b.wait_true(
            "the deployment",
            "!!document.querySelector('tr[data-deployment]')",
        )?;
        b.eval("window.__notReloaded = 7")?;
        click_button(&mut b, "Rollback")?;
        b.wait_true(
            "the deployments to be gone, live",
            "window.__notReloaded === 7 && document.body.innerText.includes('No deployment is under way')",
        )?;

        // Cross-site writes are refused; API clients are not affected.
        let status = cross_site_post(
            &format!("{base}/v2/apps"),
            &json!({"id": "/evil", "cmd": "sleep 1"}),
        )?;
        ensure!(status == 403, "a cross-site POST got {status}");
        ensure!(
            c.app("/evil")?.is_none(),
            "the cross-site POST created an app"
        );
        let reply = c.marathon().post_json(
            "/v2/apps",
            &json!({"id": "/plain-client", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "portDefinitions": []}),
        )?;
        ensure!(reply.status == 201, "an API client without Origin: {reply}");

        // A phone-sized window: the page does not overflow sideways.
        b.viewport(390, 844, true)?;
        b.goto(&format!("{base}/ui/"))?;
        b.wait_true("the list", "!!document.querySelector('table.apps')")?;
        let fits = b.eval("document.documentElement.scrollWidth <= window.innerWidth + 1")?;
        ensure!(fits == true, "the apps page overflows a phone-sized window");
        b.screenshot(&shots.join("apps-phone.png"))?;
        Ok(())
    });
}

/// The master's UI: the leader and its Raft role, agents with usage bars,
/// the framework and its role, tasks that appear without reload, and a
/// task's sandbox listing and stdout tail; cross-site writes refused.
#[test]
fn master_ui_shows_the_cluster_and_a_task_sandbox() {
    let Some(mut b) = require_browser("the master UI test") else {
        return;
    };
    with_cluster(ClusterOptions::default(), |c| {
        let shots = screenshot_dir("master_ui");
        let base = c.master().base().to_string();
        c.create_app(
            &json!({"id": "/sandboxed", "cmd": "echo hello-from-sandbox; sleep 1000",
            "instances": 1, "cpus": 0.1, "mem": 32, "portDefinitions": []}),
        )?;
        let tasks = c.wait_running("/sandboxed", 1)?;
        let task = tasks[0]["id"].as_str().unwrap_or_default().to_string();

        b.goto(&format!("{base}/"))?;
        b.wait_true(
            "the leader and its role",
            &format!(
                "document.body.innerText.includes({}) && !!document.querySelector('table.masters .badge.leader')",
                js(c.master_address())
            ),
        )?;
        let resources = b.eval("document.querySelectorAll('tr[data-resource] svg.bar').length")?;
        ensure!(resources.as_u64() >= Some(3), "resource bars: {resources}");
        println!("master page load: {:.0} ms", b.load_ms()?);
        b.screenshot(&shots.join("cluster.png"))?;

        b.goto(&format!("{base}/ui/agents"))?;
        b.wait_true(
            "the agent with bars",
            "document.querySelectorAll('tr[data-agent] svg.bar').length >= 3",
        )?;
        b.screenshot(&shots.join("agents.png"))?;

        b.goto(&format!("{base}/ui/frameworks"))?;
        b.wait_true(
            "the framework and its role",
            "!!document.querySelector('tr[data-framework]') && document.body.innerText.includes('marathon') && !!document.querySelector('tr[data-role]')",
        )?;
        b.screenshot(&shots.join("frameworks.png"))?;

        b.goto(&format!("{base}/ui/tasks"))?;
        b.wait_true(
            "the task",
            &format!(
                "!!document.querySelector('tr[data-task=' + {} + ']')",
                js(&js(&task))
            ),
        )?;
        b.eval("window.__notReloaded = 1")?;
        c.create_app(
            &json!({"id": "/second", "cmd": "sleep 1000", "instances": 1,
            "cpus": 0.1, "mem": 32, "portDefinitions": []}),
        )?;
        let second = c.wait_running("/second", 1)?;
        let second = second[0]["id"].as_str().unwrap_or_default().to_string();
        b.wait_true(
            "the new task, live",
            &format!(
                "window.__notReloaded === 1 && !!document.querySelector('tr[data-task=' + {} + ']')",
                js(&js(&second))
            ),
        )?;
        b.screenshot(&shots.join("tasks.png"))?;

        click(
            &mut b,
            &format!("tr[data-task={}] a[href^=\"/ui/sandbox?\"]", js(&task)),
        )?;
        b.wait_true(
            "the sandbox listing",
            "!!document.querySelector('tr[data-entry=stdout]') && !!document.querySelector('tr[data-entry=stderr]')",
        )?;
        b.screenshot(&shots.join("sandbox.png"))?;
        click(&mut b, "tr[data-entry=stdout] a")?;
        b.wait_true(
            "the stdout tail",
            "!!document.querySelector('pre.log') && document.querySelector('pre.log').textContent.includes('hello-from-sandbox')",
        )?;
        b.screenshot(&shots.join("sandbox-stdout.png"))?;

        // `..` never leaves the sandbox.
        b.goto(&format!("{base}/ui/sandbox?task={task}&path=../.."))?;
        b.wait_true(
            "the refusal",
            "document.body.innerText.includes('may not contain ..')",
        )?;

        let status = cross_site_post(
            &format!("{base}/quota"),
            &json!({"role": "evil", "guarantee": "cpus:1"}),
        )?;
        ensure!(
            status == 403,
            "a cross-site POST to the master got {status}"
        );
        let quota = c.master().get_json("/quota")?;
        ensure!(
            !quota.to_string().contains("evil"),
            "quota set cross-site: {quota}"
        );
        Ok(())
    });
}
