//! `/ui/app/{id}`: one app. Tabs: its tasks (host:port links, health,
//! version, start time, stdout/stderr), its configuration, its versions
//! with a diff between any two, and why it waits (the queue's declined
//! offers, the launch delay, the last task failure). The header has the
//! actions: scale, restart, suspend, edit, destroy.

use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use meseta_webui::diff;
use meseta_webui::widgets::{ago, badge, mebibytes, percent_decode, trim_number, url_encode};
use serde_json::{json, Value};

use super::secrets::mask;
use super::{
    app_href, error_page, f, health_bar, health_legend, live_events, n, queue_by_app, s, Api,
    AppStatus, Nav, TaskCounts,
};

/// The fields of `/v2/apps/{id}` that are run-time state, not definition.
const RUNTIME_FIELDS: [&str; 12] = [
    "tasks",
    "tasksStaged",
    "tasksRunning",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "lastTaskFailure",
    "version",
    "versionInfo",
    "taskStats",
    "readinessCheckResults",
    "counts",
];

/// An app's definition as the UI shows and edits it: no run-time fields,
/// no `version` (a `version` in an update means "roll back to it"),
/// secret-looking values masked.
pub(super) fn definition(app: &Value) -> Value {
    let mut d = app.clone();
    if let Some(o) = d.as_object_mut() {
        for k in RUNTIME_FIELDS {
            o.remove(k);
        }
    }
    mask(&mut d);
    d
}

/// The app id in a UI path (`/a/b`, percent-decoded).
pub(super) fn app_id(raw: &str) -> String {
    let decoded = percent_decode(raw);
    format!("/{}", decoded.trim_matches('/'))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tab {
    Tasks,
    Configuration,
    Versions,
    Debug,
}

impl Tab {
    const ALL: [Tab; 4] = [Tab::Tasks, Tab::Configuration, Tab::Versions, Tab::Debug];

    fn key(self) -> &'static str {
        match self {
            Tab::Tasks => "tasks",
            Tab::Configuration => "configuration",
            Tab::Versions => "versions",
            Tab::Debug => "debug",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Tab::Tasks => "Instances",
            Tab::Configuration => "Configuration",
            Tab::Versions => "Versions",
            Tab::Debug => "Debug: why it waits",
        }
    }
}

fn param<'a>(params: &'a [(String, String)], k: &str) -> &'a str {
    params
        .iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

pub(super) async fn page(api: &Api, raw_id: &str, params: &[(String, String)]) -> Response {
    let id = app_id(raw_id);
    let enc = url_encode(&id);
    let tab = Tab::ALL
        .into_iter()
        .find(|t| t.key() == param(params, "tab"))
        .unwrap_or(Tab::Tasks);
    let path = format!("/v2/apps{enc}?embed=app.tasks&embed=app.lastTaskFailure");
    let (chrome, app, queue) = futures::join!(api.chrome(), api.get(&path), api.get("/v2/queue"));
    let app = match app {
        Ok(v) => v.get("app").cloned().unwrap_or(Value::Null),
        Err(e) => return error_page(&chrome, &id, &e),
    };
    let queue = queue_by_app(&queue.unwrap_or(Value::Null));
    let entry = queue.get(&id);
    let status = AppStatus::of(&app, entry);
    let counts = TaskCounts::of(&app);
    let content = match tab {
        Tab::Tasks => tasks_tab(&app),
        Tab::Configuration => config_tab(&app),
        Tab::Versions => versions_tab(api, &id, params).await,
        Tab::Debug => debug_tab(&id, &app, entry),
    };
    let parts: Vec<&str> = id.split('/').filter(|p| !p.is_empty()).collect();
    let body = html! {
        div.crumbs {
            a href="/ui/" { "Applications" }
            @for (i, p) in parts.iter().enumerate() {
                " / "
                @if i + 1 < parts.len() {
                    a href=(format!("/ui/?group={}", url_encode(&format!("/{}", parts[..=i].join("/"))))) { (p) }
                } @else {
                    (p)
                }
            }
        }
        div #r-app data-region {
            h1 {
                (id)
                (badge(status.key(), status.name()))
                span.muted { (counts.running) " of " (counts.instances) " instances running" }
                (health_bar(&counts))
            }
            div.toolbar {
                form.inline data-method="PUT" data-url=(format!("/v2/apps{enc}")) data-done="Scaling" {
                    label for="instances" { "Instances" }
                    input #instances type="number" name="instances" min="0" value=(counts.instances);
                    button type="submit" { "Scale" }
                }
                button data-method="POST" data-url=(format!("/v2/apps{enc}/restart")) data-confirm=(format!("Restart every task of {id}?")) data-done="Restarting" { "Restart" }
                button data-method="PUT" data-url=(format!("/v2/apps{enc}")) data-body=(json!({"instances": 0}).to_string()) data-confirm=(format!("Suspend {id} (scale it to 0)?")) data-done="Suspending" { "Suspend" }
                a.button href=(format!("/ui/edit{enc}")) { "Edit" }
                span.grow {}
                button.danger data-method="DELETE" data-url=(format!("/v2/apps{enc}")) data-confirm=(format!("Destroy {id} and kill its tasks?")) data-done="Destroying" data-go="/ui/" { "Destroy" }
            }
            nav.tabs {
                @for t in Tab::ALL {
                    a href=(format!("{}?tab={}", app_href(&id), t.key())) class=[(t == tab).then_some("active")] { (t.name()) }
                }
            }
            (content)
        }
    };
    chrome.page(StatusCode::OK, &id, Nav::Apps, live_events(), body)
}

/// A task's health as Marathon's UI shows it.
fn task_health(task: &Value) -> (&'static str, &'static str) {
    match task.get("healthCheckResults").and_then(Value::as_array) {
        None => ("", "—"),
        Some(r) if r.is_empty() => ("unknown", "Unknown"),
        Some(r)
            if r.iter()
                .any(|h| h.get("alive") == Some(&Value::Bool(false))) =>
        {
            ("unhealthy", "Unhealthy")
        }
        Some(_) => ("healthy", "Healthy"),
    }
}

fn tasks_tab(app: &Value) -> Markup {
    let mut tasks: Vec<&Value> = app
        .get("tasks")
        .and_then(Value::as_array)
        .map(|t| t.iter().collect())
        .unwrap_or_default();
    tasks.sort_by_key(|t| s(t, "stagedAt").to_string());
    html! {
        div.toolbar {
            button data-method="POST" data-url="/v2/tasks/delete" data-collect="task" data-confirm="Kill the selected tasks (they are replaced)?" data-done="Killing" { "Kill" }
            button data-method="POST" data-url="/v2/tasks/delete?scale=true" data-collect="task" data-confirm="Kill the selected tasks and scale down by as many?" data-done="Killing and scaling" { "Kill & scale" }
            span.muted { (tasks.len()) (if tasks.len() == 1 { " task" } else { " tasks" }) }
        }
        div.table-wrap {
            @if tasks.is_empty() {
                div.empty { "No task runs." }
            } @else {
                table.tasks {
                    thead { tr {
                        th { input type="checkbox" data-select-all="task" aria-label="Select all tasks"; }
                        th { "ID" }
                        th { "Host:ports" }
                        th { "Health" }
                        th { "Status" }
                        th.opt { "Version" }
                        th { "Started" }
                        th { "Output" }
                    } }
                    tbody {
                        @for t in &tasks {
                            @let tid = s(t, "id");
                            @let host = s(t, "host");
                            @let (hclass, htext) = task_health(t);
                            tr data-task=(tid) {
                                td { input type="checkbox" name="task" value=(tid) aria-label="Select"; }
                                td.mono { (tid) }
                                td.nowrap {
                                    @let ports: Vec<u64> = t.get("ports").and_then(Value::as_array).map(|p| p.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
                                    @if ports.is_empty() { (host) }
                                    @for (i, p) in ports.iter().enumerate() {
                                        @if i > 0 { " " }
                                        a href=(format!("http://{host}:{p}/")) rel="noopener noreferrer" target="_blank" { (host) ":" (p) }
                                    }
                                }
                                td { @if hclass.is_empty() { span.muted { (htext) } } @else { (badge(hclass, htext)) } }
                                td { (badge(s(t, "state"), s(t, "state").trim_start_matches("TASK_"))) }
                                td.opt.mono { (s(t, "version")) }
                                td.nowrap { @if s(t, "startedAt").is_empty() { span.muted { "staged " (ago(s(t, "stagedAt"))) } } @else { (ago(s(t, "startedAt"))) } }
                                td.nowrap {
                                    a href=(format!("/ui/task/{}/stdout", url_encode(tid))) { "stdout" }
                                    " · "
                                    a href=(format!("/ui/task/{}/stderr", url_encode(tid))) { "stderr" }
                                }
                            }
                        }
                    }
                }
            }
        }
        (health_legend())
    }
}

fn text_of(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn config_tab(app: &Value) -> Markup {
    let d = definition(app);
    let pretty = serde_json::to_string_pretty(&d).unwrap_or_default();
    let ports: Vec<String> = d
        .get("portDefinitions")
        .and_then(Value::as_array)
        .map(|p| p.iter().map(|x| text_of(x.get("port"))).collect())
        .unwrap_or_default();
    html! {
        div.panel {
            dl.props {
                dt { "Command" } dd.mono { (text_of(d.get("cmd"))) }
                @if let Some(image) = d.pointer("/container/docker/image") {
                    dt { "Image" } dd.mono { (text_of(Some(image))) }
                }
                dt { "CPUs" } dd { (trim_number(f(&d, "cpus"))) }
                dt { "Memory" } dd { (mebibytes(f(&d, "mem"))) }
                dt { "Disk" } dd { (mebibytes(f(&d, "disk"))) }
                dt { "Instances" } dd { (n(&d, "instances")) }
                dt { "Ports" } dd { (ports.join(", ")) }
                dt { "Constraints" } dd.mono { (text_of(d.get("constraints"))) }
                dt { "Labels" } dd {
                    @for (k, v) in d.get("labels").and_then(Value::as_object).into_iter().flatten() {
                        span.chip { (k) ": " (text_of(Some(v))) }
                    }
                }
                dt { "Environment" } dd {
                    @for (k, v) in d.get("env").and_then(Value::as_object).into_iter().flatten() {
                        span.chip.mono { (k) "=" (text_of(Some(v))) }
                    }
                }
                dt { "Health checks" } dd { (d.get("healthChecks").and_then(Value::as_array).map_or(0, Vec::len)) }
                dt { "Version" } dd.mono { (s(app, "version")) }
            }
        }
        h2 { "JSON" }
        pre.json { (pretty) }
    }
}

async fn versions_tab(api: &Api, id: &str, params: &[(String, String)]) -> Markup {
    let enc = url_encode(id);
    let versions: Vec<String> = match api.get(&format!("/v2/apps{enc}/versions")).await {
        Ok(v) => v
            .get("versions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        Err(e) => return html! { div.notice { (e.message) } },
    };
    let pick = |k: &str, default: Option<&String>| -> String {
        let p = param(params, k);
        if !p.is_empty() && versions.iter().any(|v| v == p) {
            p.to_string()
        } else {
            default.cloned().unwrap_or_default()
        }
    };
    let to = pick("to", versions.first());
    let from = pick("from", versions.get(1).or(versions.first()));
    let (path_a, path_b) = (
        format!("/v2/apps{enc}/versions/{}", url_encode(&from)),
        format!("/v2/apps{enc}/versions/{}", url_encode(&to)),
    );
    let (a, b) = futures::join!(api.get(&path_a), api.get(&path_b));
    let render = |r: Result<Value, super::ApiError>| -> String {
        r.map(|v| {
            let mut d = v;
            mask(&mut d);
            serde_json::to_string_pretty(&d).unwrap_or_default()
        })
        .unwrap_or_default()
    };
    let (a, b) = (render(a), render(b));
    let lines = diff::lines(&a, &b);
    let changed = lines
        .iter()
        .filter(|l| !matches!(l, diff::Line::Same(_)))
        .count();
    html! {
        form.toolbar method="get" action=(app_href(id)) {
            input type="hidden" name="tab" value="versions";
            label { "Compare " select name="from" {
                @for v in &versions { option value=(v) selected[*v == from] { (v) } }
            } }
            label { " with " select name="to" {
                @for v in &versions { option value=(v) selected[*v == to] { (v) } }
            } }
            button type="submit" { "Compare" }
            span.muted { (versions.len()) " versions kept" }
        }
        @if from == to {
            p.muted { "Only one version to show." }
        } @else {
            p.muted { (changed) " lines differ" }
        }
        (diff::render(&lines))
        h2 { "All versions" }
        div.table-wrap { table {
            thead { tr { th { "Version" } th { "" } } }
            tbody {
                @for (i, v) in versions.iter().enumerate() {
                    tr {
                        td.mono { (v) @if i == 0 { " " (badge("running", "current")) } }
                        td {
                            @if i > 0 {
                                button data-method="PUT" data-url=(format!("/v2/apps{enc}")) data-body=(json!({"version": v}).to_string()) data-confirm=(format!("Roll {id} back to {v}?")) data-done="Rolling back" { "Apply this version" }
                            }
                        }
                    }
                }
            }
        } }
    }
}

fn debug_tab(id: &str, app: &Value, entry: Option<&Value>) -> Markup {
    let enc = url_encode(id);
    let failure = app.get("lastTaskFailure").filter(|f| !f.is_null());
    html! {
        h2 { "Why it waits" }
        @match entry {
            None => p.muted { "Nothing of " (id) " waits to launch." },
            Some(q) => {
                @let summary = q.get("processedOffersSummary").cloned().unwrap_or(Value::Null);
                @let left = q.pointer("/delay/timeLeftSeconds").and_then(Value::as_u64).unwrap_or(0);
                div.panel {
                    dl.props {
                        dt { "Waiting to launch" } dd { (n(q, "count")) " tasks, since " (ago(s(q, "since"))) }
                        dt { "Launch delay" } dd {
                            @if left > 0 {
                                (left) " s left (backoff after failures) "
                                button data-method="DELETE" data-url=(format!("/v2/queue{enc}/delay")) data-done="Delay reset" { "Launch now" }
                            } @else { "none: waiting for a matching offer" }
                        }
                        dt { "Offers processed" } dd { (n(&summary, "processedOffersCount")) }
                        dt { "Offers declined" } dd { (n(&summary, "unusedOffersCount")) }
                        @if !s(&summary, "lastUnusedOfferAt").is_empty() {
                            dt { "Last declined" } dd { (ago(s(&summary, "lastUnusedOfferAt"))) }
                        }
                    }
                }
                h2 { "Declined offers by reason (last offer of each agent)" }
                (reasons(summary.get("rejectSummaryLastOffers")))
                h2 { "Declined offers by reason (this launch attempt)" }
                (reasons(summary.get("rejectSummaryLaunchAttempt")))
            }
        }
        h2 { "Last task failure" }
        @match failure {
            None => p.muted { "No task of " (id) " has failed." },
            Some(fl) => div.panel { dl.props {
                dt { "Task" } dd.mono { (s(fl, "taskId")) }
                dt { "State" } dd { (badge(s(fl, "state"), s(fl, "state"))) }
                dt { "Message" } dd { (s(fl, "message")) }
                dt { "Host" } dd { (s(fl, "host")) }
                dt { "When" } dd { (ago(s(fl, "timestamp"))) }
                dt { "Version" } dd.mono { (s(fl, "version")) }
            } }
        }
    }
}

fn reasons(list: Option<&Value>) -> Markup {
    let rows: Vec<&Value> = list
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    html! {
        div.table-wrap { table {
            thead { tr { th { "Reason" } th.num { "Declined" } th.num { "Processed" } } }
            tbody {
                @for r in rows {
                    tr class=[(n(r, "declined") > 0).then_some("declined")] {
                        td { (s(r, "reason")) }
                        td.num { @if n(r, "declined") > 0 { strong { (n(r, "declined")) } } @else { "0" } }
                        td.num { (n(r, "processed")) }
                    }
                }
            }
        } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_come_from_the_path_decoded() {
        assert_eq!(app_id("/web/python"), "/web/python");
        assert_eq!(app_id("/a%3Cb%3E/"), "/a<b>");
    }

    #[test]
    fn definitions_drop_run_time_fields_and_hide_secrets() {
        let app = json!({"id": "/a", "version": "v", "tasksRunning": 1, "env": {"TOKEN": "t"}});
        let d = definition(&app);
        assert_eq!(
            d,
            json!({"id": "/a", "env": {"TOKEN": super::super::secrets::MASK}})
        );
    }

    #[test]
    fn task_health_reads_the_check_results() {
        assert_eq!(task_health(&json!({})).1, "—");
        assert_eq!(task_health(&json!({"healthCheckResults": []})).1, "Unknown");
        assert_eq!(
            task_health(&json!({"healthCheckResults": [{"alive": false}]})).1,
            "Unhealthy"
        );
        assert_eq!(
            task_health(&json!({"healthCheckResults": [{"alive": true}]})).1,
            "Healthy"
        );
    }
}
