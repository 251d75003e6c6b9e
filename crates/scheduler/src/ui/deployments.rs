//! `/ui/deployments`: what is being deployed, step by step, with the
//! progress of the step under way, why it is stuck if it is, and the
//! buttons to roll back or to stop.

use std::collections::{BTreeSet, HashMap};

use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use meseta_webui::widgets::{ago, badge, stacked_bar, url_encode, Segment};
use serde_json::Value;

use super::{app_href, error_page, live_events, n, s, Api, Nav};

/// The apps whose progress is shown at most (one request each).
const MAX_PROGRESS_APPS: usize = 50;

pub(super) async fn page(api: &Api) -> Response {
    let (chrome, deployments) = futures::join!(api.chrome(), api.get("/v2/deployments"));
    let deployments = match deployments {
        Ok(v) => v.as_array().cloned().unwrap_or_default(),
        Err(e) => return error_page(&chrome, "Deployments", &e),
    };
    // Only the apps of the steps under way (not every app) are read.
    let current: BTreeSet<String> = deployments
        .iter()
        .flat_map(|d| {
            d.get("currentActions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .map(|a| s(&a, "app").to_string())
        .filter(|id| !id.is_empty())
        .take(MAX_PROGRESS_APPS)
        .collect();
    let paths: Vec<String> = current
        .iter()
        .map(|id| format!("/v2/apps{}", url_encode(id)))
        .collect();
    let answers = futures::future::join_all(paths.iter().map(|p| api.get(p))).await;
    let apps: HashMap<String, Value> = answers
        .into_iter()
        .filter_map(|r| r.ok().and_then(|v| v.get("app").cloned()))
        .map(|a| (s(&a, "id").to_string(), a))
        .collect();
    let body = html! {
        h1 { "Deployments" }
        div #r-deployments data-region {
            @if deployments.is_empty() {
                div.table-wrap { div.empty { "No deployment is under way." } }
            } @else {
                div.table-wrap { table.deployments {
                    thead { tr {
                        th { "Deployment" }
                        th { "Affected apps" }
                        th { "Steps" }
                        th { "Progress" }
                        th { "" }
                    } }
                    tbody {
                        @for d in &deployments { (row(d, &apps)) }
                    }
                } }
            }
        }
    };
    chrome.page(
        StatusCode::OK,
        "Deployments",
        Nav::Deployments,
        live_events(),
        body,
    )
}

fn row(d: &Value, apps: &HashMap<String, Value>) -> Markup {
    let id = s(d, "id");
    let current = n(d, "currentStep");
    let total = n(d, "totalSteps");
    let steps: Vec<&Value> = d
        .get("steps")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let current_actions: Vec<&Value> = d
        .get("currentActions")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let stuck = d.get("stuck").filter(|v| !v.is_null());
    html! {
        tr data-deployment=(id) {
            td {
                div.mono { (id) }
                div.muted { "started " (ago(s(d, "version"))) }
            }
            td {
                @for a in d.get("affectedApps").and_then(Value::as_array).into_iter().flatten() {
                    @let app = a.as_str().unwrap_or_default();
                    div { a href=(app_href(app)) { (app) } }
                }
            }
            td {
                div { "step " (current) " of " (total) }
                ol.steps {
                    @for (i, step) in steps.iter().enumerate() {
                        @let number = i as u64 + 1;
                        @let class = if number < current { "done" } else if number == current { "current" } else { "pending" };
                        li class=(class) {
                            @for (j, action) in step.get("actions").and_then(Value::as_array).into_iter().flatten().enumerate() {
                                @if j > 0 { ", " }
                                (s(action, "action")) " " (s(action, "app"))
                            }
                            @if number < current { " ✓" }
                        }
                    }
                }
            }
            td {
                @for a in &current_actions {
                    @let app_id = s(a, "app");
                    (progress(s(a, "action"), app_id, apps.get(app_id)))
                }
                @if let Some(st) = stuck {
                    div.notice {
                        strong { "Stuck" } " at step " (n(st, "step")) ": "
                        (n(st, "tasksHealthy")) " of " (n(st, "tasksWanted")) " new tasks healthy, "
                        (n(st, "tasksReady")) " ready"
                        @if !s(st, "lastFailureCause").is_empty() {
                            br; "last failure: " (s(st, "lastFailureCause"))
                        }
                    }
                }
            }
            td.nowrap {
                button data-method="DELETE" data-url=(format!("/v2/deployments/{id}")) data-confirm="Roll this deployment back (a new deployment restores what was before)?" data-done="Rolling back" { "Rollback" }
                " "
                button.danger data-method="DELETE" data-url=(format!("/v2/deployments/{id}?force=true")) data-confirm="Stop this deployment where it is (nothing is rolled back)?" data-done="Stopped" { "Stop" }
            }
        }
    }
}

/// The step under way for one app: its running and healthy tasks against
/// the instances wanted.
fn progress(action: &str, app_id: &str, app: Option<&Value>) -> Markup {
    let Some(app) = app else {
        return html! { div { (action) " " (app_id) } };
    };
    let wanted = n(app, "instances");
    let running = n(app, "tasksRunning");
    let healthy = n(app, "tasksHealthy");
    let staged = n(app, "tasksStaged");
    html! {
        div.usage title=(format!("{action} {app_id}")) {
            (badge("deploying", action))
            (stacked_bar(&[
                Segment::new("seg-healthy", healthy as f64, "healthy"),
                Segment::new("seg-unknown", running.saturating_sub(healthy) as f64, "running"),
                Segment::new("seg-staged", staged as f64, "staged"),
            ], wanted as f64))
            span.figures { (running) " of " (wanted) " running" }
        }
    }
}
