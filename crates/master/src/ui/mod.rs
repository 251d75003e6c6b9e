//! The Mesos master's web UI, at `/` on the master's port: the cluster
//! (leader, masters and their Raft roles, total, allocated and offered
//! resources), agents with their attributes and used against total
//! resources, frameworks and roles (dominant shares, weights, quota), and
//! tasks with their sandboxes (directory listing and log tail, read by the
//! master from the agent's files API: the browser talks only to the
//! master).
//!
//! Pages are rendered from the same values `/master/state` and
//! `/master/membership` answer, and refresh themselves by polling (every
//! [`POLL_MS`]). A follower has no agents or frameworks to show: its pages
//! say so and link to the leader's.

mod agents;
mod cluster;
mod frameworks;
mod sandbox;
mod tasks;

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use meseta_webui::layout::NavItem;
use meseta_webui::{Live, Page};
use serde_json::Value;

use crate::Master;

/// How often pages refresh themselves.
pub(crate) const POLL_MS: u32 = 2000;

type Params = Query<Vec<(String, String)>>;

/// The UI's routes.
pub(crate) fn router() -> Router<Arc<Master>> {
    Router::new()
        .route("/", get(cluster::page))
        .route("/ui", get(cluster::page))
        .route("/ui/", get(cluster::page))
        .route("/ui/agents", get(agents::page))
        .route("/ui/frameworks", get(frameworks::page))
        .route("/ui/tasks", get(tasks::page))
        .route("/ui/sandbox", get(sandbox::browse))
        .route("/ui/sandbox/file", get(sandbox::file))
        .route("/ui/assets/{file}", get(asset))
}

async fn asset(uri: axum::http::Uri) -> Response {
    meseta_webui::assets::serve(uri.path())
        .unwrap_or_else(|| (StatusCode::NOT_FOUND, "no such asset").into_response())
}

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Cluster,
    Agents,
    Frameworks,
    Tasks,
}

/// The state a page is rendered from.
pub(crate) struct View {
    pub state: Value,
    pub membership: Value,
}

impl View {
    pub fn of(master: &Master) -> View {
        View {
            state: crate::api::endpoints::state_value(master),
            membership: crate::api::endpoints::membership_json(master),
        }
    }

    pub fn leading(&self) -> bool {
        self.state.get("elected").and_then(Value::as_bool) == Some(true)
    }

    pub fn leader(&self) -> &str {
        s(&self.membership, "leader")
    }

    pub fn list(&self, key: &str) -> Vec<&Value> {
        self.state
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }

    /// Every task, running and completed, with its framework.
    pub fn tasks(&self) -> Vec<(&Value, &Value)> {
        let mut out = Vec::new();
        for f in self.list("frameworks") {
            for key in ["tasks", "completed_tasks"] {
                for t in f.get(key).and_then(Value::as_array).into_iter().flatten() {
                    out.push((f, t));
                }
            }
        }
        out
    }

    pub fn agent(&self, id: &str) -> Option<&Value> {
        self.list("slaves").into_iter().find(|a| s(a, "id") == id)
    }

    /// The page with the header and, on a follower, a pointer to the leader.
    pub fn page(&self, title: &str, nav: Nav, live: Live, body: Markup) -> Response {
        let leader = self.leader().to_string();
        let aside = html! {
            @if leader.is_empty() {
                span.muted { "no leader elected" }
            } @else {
                span.muted { "leader " a href=(format!("http://{leader}/")) { (leader) } }
            }
        };
        let notice = html! {
            @if !self.leading() {
                div.notice {
                    "This master follows; agents, frameworks and tasks are served by the leader"
                    @if !leader.is_empty() { ": " a href=(format!("http://{leader}/")) { (leader) } }
                    "."
                }
            }
        };
        let page = Page {
            title: title.to_string(),
            product: "Mesos",
            home: "/".into(),
            nav: vec![
                NavItem::new("Cluster", "/", nav == Nav::Cluster),
                NavItem::new("Agents", "/ui/agents", nav == Nav::Agents),
                NavItem::new(
                    "Frameworks & roles",
                    "/ui/frameworks",
                    nav == Nav::Frameworks,
                ),
                NavItem::new("Tasks", "/ui/tasks", nav == Nav::Tasks),
            ],
            aside,
            live,
            body: html! { (notice) (body) },
        };
        meseta_webui::html_response(StatusCode::OK, page.render())
    }
}

pub(crate) fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

pub(crate) fn param<'a>(params: &'a [(String, String)], k: &str) -> &'a str {
    params
        .iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// The scalar `name` of a Mesos resources object (`{"cpus": 4, …}`).
pub(crate) fn scalar(resources: Option<&Value>, name: &str) -> f64 {
    resources
        .and_then(|r| r.get(name))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

/// When a task last changed state (seconds since the epoch).
pub(crate) fn task_time(t: &Value) -> f64 {
    t.get("statuses")
        .and_then(Value::as_array)
        .and_then(|a| a.last())
        .map(|st| f(st, "timestamp"))
        .unwrap_or(0.0)
}

/// A link to a task's sandbox.
pub(crate) fn sandbox_href(task: &str, path: &str) -> String {
    use meseta_webui::widgets::url_encode;
    let mut href = format!("/ui/sandbox?task={}", url_encode(task));
    if !path.is_empty() {
        href.push_str(&format!("&path={}", url_encode(path)));
    }
    href
}

/// A link to the tail of a file in a task's sandbox.
pub(crate) fn file_href(task: &str, rel: &str) -> String {
    use meseta_webui::widgets::url_encode;
    format!(
        "/ui/sandbox/file?task={}&path={}",
        url_encode(task),
        url_encode(rel)
    )
}

/// `Live` for pages that poll.
pub(crate) fn polling() -> Live {
    Live::Poll(POLL_MS)
}

pub(crate) type MasterState = State<Arc<Master>>;
