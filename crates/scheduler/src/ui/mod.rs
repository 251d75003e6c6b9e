//! Marathon's web UI, at `/` and `/ui/` on the scheduler's port.
//!
//! The UI is a client of the `/v2` API like any other: every page is
//! rendered on the server from the JSON that `/v2` answers (fetched
//! in-process through the same front as an outside request, so a standby
//! scheduler renders the leader's state), and every action the user takes
//! is a `/v2` request the page's script sends. The one exception is saving
//! an edited app ([`editor::save`]): the page shows secret-looking values
//! hidden, and the server puts the real ones back before it forwards the
//! update to `/v2`.
//!
//! | path | page |
//! | --- | --- |
//! | `/ui/` | apps, filtered by text, status, label and group; groups as folders |
//! | `/ui/app/{id}` | an app: tasks, configuration, versions with a diff, why it waits, last failure |
//! | `/ui/new`, `/ui/edit/{id}` | the app editor: form fields and the JSON, kept in step |
//! | `/ui/deployments` | deployments with their steps, roll back, stop |
//! | `/ui/task/{id}/stdout`, `…/stderr` | the tail of a task's output, read through the agent's files API |
//!
//! Pages refresh their live regions after each `/v2/events` event.

mod apps;
mod deployments;
mod editor;
mod logs;
mod secrets;
mod view;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use maud::{html, Markup};
use meseta_webui::layout::NavItem;
use meseta_webui::{Live, Page};
use serde_json::Value;

/// How the UI reaches `/v2`: a request in, the answer out (the scheduler's
/// own front, so leader, standby and "no leader yet" behave as for anyone).
pub(crate) type Backend = Arc<dyn Fn(Request) -> BoxFuture<'static, Response> + Send + Sync>;

/// Whether `path` belongs to the UI.
pub(crate) fn is_ui_path(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// Serves one UI request.
pub(crate) async fn serve(backend: Backend, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if path == "/" || path == "/ui" {
        return redirect("/ui/");
    }
    if let Some(asset) = meseta_webui::assets::serve(&path) {
        return asset;
    }
    let api = Api { backend };
    let query = req.uri().query().unwrap_or("").to_string();
    let params: Vec<(String, String)> = axum::extract::Query::try_from_uri(req.uri())
        .map(|q: axum::extract::Query<Vec<(String, String)>>| q.0)
        .unwrap_or_default();
    let method = req.method().clone();
    let rest = path.strip_prefix("/ui").unwrap_or(&path).to_string();
    match (method, rest.as_str()) {
        (Method::GET, "/") => apps::page(&api, &params).await,
        (Method::GET, "/new") => editor::create_page(&api, &params).await,
        (Method::GET, "/deployments") => deployments::page(&api).await,
        (Method::GET, r) if r.starts_with("/app/") => {
            app_page(&api, &r["/app".len()..], &params).await
        }
        (Method::GET, r) if r.starts_with("/edit/") => {
            editor::edit_page(&api, &r["/edit".len()..]).await
        }
        (Method::GET, r) if r.starts_with("/task/") => {
            logs::page(&api, &r["/task/".len()..], &query).await
        }
        (Method::PUT, r) if r.starts_with("/api/apps/") => {
            editor::save(&api, &r["/api/apps".len()..], &query, req).await
        }
        _ => not_found(&api, &path).await,
    }
}

async fn app_page(api: &Api, id: &str, params: &[(String, String)]) -> Response {
    view::page(api, id, params).await
}

fn redirect(to: &str) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

async fn not_found(api: &Api, path: &str) -> Response {
    let chrome = api.chrome().await;
    let body = html! {
        h1 { "Not found" }
        p.muted { "Nothing is served at " code { (path) } "." }
        p { a href="/ui/" { "Back to the applications" } }
    };
    chrome.page(
        StatusCode::NOT_FOUND,
        "Not found",
        Nav::None,
        Live::Off,
        body,
    )
}

// ---------------------------------------------------------------------------
// The /v2 client

/// An answer of `/v2` that was not a success.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

/// The UI's `/v2` client.
#[derive(Clone)]
pub(crate) struct Api {
    backend: Backend,
}

/// Largest `/v2` answer the UI reads (1,000 apps with tasks fit easily).
const MAX_ANSWER: usize = 256 << 20;

impl Api {
    /// Sends `req` to `/v2`; the status and body come back.
    pub async fn send(&self, req: Request) -> (StatusCode, axum::body::Bytes) {
        let resp = (self.backend)(req).await;
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), MAX_ANSWER)
            .await
            .unwrap_or_default();
        (status, body)
    }

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::ACCEPT, "application/json")
            .body(Body::empty())
            .map_err(|e| ApiError {
                status: StatusCode::BAD_REQUEST,
                message: format!("bad path {path}: {e}"),
            })?;
        let (status, body) = self.send(req).await;
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = json
                .get("message")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(ApiError { status, message });
        }
        Ok(json)
    }

    /// What every page's header shows: the deployments under way and the
    /// leader; fetched with the page (failures leave them out).
    pub async fn chrome(&self) -> Chrome {
        let (info, deployments) = futures::join!(self.get("/v2/info"), self.get("/v2/deployments"));
        let info = info.unwrap_or(Value::Null);
        Chrome {
            deployments: deployments
                .ok()
                .and_then(|d| d.as_array().map(Vec::len))
                .unwrap_or(0),
            leader: info
                .get("leader")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            mesos: info
                .pointer("/marathon_config/mesos_leader_ui_url")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        }
    }
}

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Apps,
    Deployments,
    None,
}

/// The header of every page.
pub(crate) struct Chrome {
    pub deployments: usize,
    pub leader: String,
    pub mesos: String,
}

impl Chrome {
    pub fn page(
        &self,
        status: StatusCode,
        title: &str,
        nav: Nav,
        live: Live,
        body: Markup,
    ) -> Response {
        let aside = html! {
            @if !self.leader.is_empty() {
                span.muted title="The scheduler that leads" { "leader " (self.leader) }
            }
            @if !self.mesos.is_empty() {
                a href=(self.mesos) { "Mesos ↗" }
            }
        };
        let page = Page {
            title: title.to_string(),
            product: "Marathon",
            home: "/ui/".into(),
            nav: vec![
                NavItem::new("Applications", "/ui/", nav == Nav::Apps),
                NavItem::new("Deployments", "/ui/deployments", nav == Nav::Deployments)
                    .with_badge(self.deployments),
                NavItem::new("Create application", "/ui/new", false),
            ],
            aside,
            live,
            body,
        };
        meseta_webui::html_response(status, page.render())
    }
}

/// Live updates from the event stream, with a slow poll for what no event
/// announces (a launch delay running out).
pub(crate) fn live_events() -> Live {
    Live::Events {
        url: "/v2/events".into(),
        fallback_ms: 10_000,
    }
}

/// A page that says what went wrong with `/v2`.
pub(crate) fn error_page(chrome: &Chrome, what: &str, e: &ApiError) -> Response {
    let body = html! {
        h1 { (what) }
        div.notice { (e.status.as_u16()) " — " (e.message) }
        p { a href="/ui/" { "Back to the applications" } }
    };
    let status = if e.status.is_client_error() || e.status.is_server_error() {
        e.status
    } else {
        StatusCode::BAD_GATEWAY
    };
    chrome.page(status, what, Nav::None, live_events(), body)
}

// ---------------------------------------------------------------------------
// Reading Marathon's JSON

pub(crate) fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

pub(crate) fn n(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// An app's status as Marathon's UI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum AppStatus {
    Running,
    Deploying,
    Suspended,
    Delayed,
    Waiting,
}

impl AppStatus {
    pub const ALL: [AppStatus; 5] = [
        AppStatus::Running,
        AppStatus::Deploying,
        AppStatus::Suspended,
        AppStatus::Delayed,
        AppStatus::Waiting,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AppStatus::Running => "Running",
            AppStatus::Deploying => "Deploying",
            AppStatus::Suspended => "Suspended",
            AppStatus::Delayed => "Delayed",
            AppStatus::Waiting => "Waiting",
        }
    }

    /// The query value and CSS class.
    pub fn key(self) -> &'static str {
        match self {
            AppStatus::Running => "running",
            AppStatus::Deploying => "deploying",
            AppStatus::Suspended => "suspended",
            AppStatus::Delayed => "delayed",
            AppStatus::Waiting => "waiting",
        }
    }

    pub fn parse(key: &str) -> Option<AppStatus> {
        AppStatus::ALL.into_iter().find(|s| s.key() == key)
    }

    /// Marathon UI's rules, from `/v2/apps` and the app's `/v2/queue`
    /// entry: delayed while a launch backoff runs, waiting while launches
    /// wait for offers, deploying while a deployment is under way,
    /// suspended with no instance wanted or running, else running.
    pub fn of(app: &Value, queue_entry: Option<&Value>) -> AppStatus {
        if let Some(q) = queue_entry {
            let overdue = q
                .pointer("/delay/overdue")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            return if overdue {
                AppStatus::Waiting
            } else {
                AppStatus::Delayed
            };
        }
        let deploying = app
            .get("deployments")
            .and_then(Value::as_array)
            .is_some_and(|d| !d.is_empty());
        if deploying {
            AppStatus::Deploying
        } else if n(app, "instances") == 0 && n(app, "tasksRunning") == 0 {
            AppStatus::Suspended
        } else {
            AppStatus::Running
        }
    }
}

/// The `/v2/queue` entries by app id.
pub(crate) fn queue_by_app(queue: &Value) -> std::collections::HashMap<String, Value> {
    queue
        .get("queue")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let id = e.pointer("/app/id").and_then(Value::as_str)?;
            Some((id.to_string(), e.clone()))
        })
        .collect()
}

/// The health bar of an app (or a group's apps added up): healthy,
/// unhealthy, running with no health result, staged, out of the
/// instances wanted.
pub(crate) fn health_bar(c: &TaskCounts) -> Markup {
    use meseta_webui::widgets::{stacked_bar, Segment};
    let unknown = c.running.saturating_sub(c.healthy + c.unhealthy);
    stacked_bar(
        &[
            Segment::new("seg-healthy", c.healthy as f64, "healthy"),
            Segment::new("seg-unhealthy", c.unhealthy as f64, "unhealthy"),
            Segment::new("seg-unknown", unknown as f64, "running, health unknown"),
            Segment::new("seg-staged", c.staged as f64, "staged"),
        ],
        c.instances.max(c.running + c.staged) as f64,
    )
}

/// Task counts of an app or a group.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TaskCounts {
    pub instances: u64,
    pub running: u64,
    pub staged: u64,
    pub healthy: u64,
    pub unhealthy: u64,
}

impl TaskCounts {
    pub fn of(app: &Value) -> TaskCounts {
        TaskCounts {
            instances: n(app, "instances"),
            running: n(app, "tasksRunning"),
            staged: n(app, "tasksStaged"),
            healthy: n(app, "tasksHealthy"),
            unhealthy: n(app, "tasksUnhealthy"),
        }
    }

    pub fn add(&mut self, o: &TaskCounts) {
        self.instances += o.instances;
        self.running += o.running;
        self.staged += o.staged;
        self.healthy += o.healthy;
        self.unhealthy += o.unhealthy;
    }
}

/// The legend of health bars.
pub(crate) fn health_legend() -> Markup {
    html! {
        div.legend {
            span { i.healthy {} "healthy" }
            span { i.unhealthy {} "unhealthy" }
            span { i.unknown {} "running, no health result" }
            span { i.staged {} "staged" }
        }
    }
}

/// `/ui/app{id}` for an app id (which starts with `/`).
pub(crate) fn app_href(id: &str) -> String {
    format!("/ui/app{}", meseta_webui::widgets::url_encode(id))
}
