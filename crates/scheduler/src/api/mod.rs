//! Marathon's `/v2` REST API, in Marathon 1.10's shapes (see
//! MARATHON-WIRE.md for what real clients rely on).
//!
//! Handlers only parse the request, call one engine operation, render the
//! answer and persist the change ([`persisted`]); the engine owns every
//! decision. One module per resource.

mod apps;
mod deployments;
mod groups;
mod queue;
mod tasks;

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::engine::{Action, Engine, EngineError};
use crate::model::{marathon_timestamp, render_app, AppDefinition, ModelError};
use crate::{events, Shared};

/// Marathon's API level we speak.
pub const MARATHON_VERSION: &str = "1.10.19";

/// The router, behind a layer that folds `//` in paths (clients send
/// `/v2/apps//app`).
pub(crate) fn service(shared: Arc<Shared>) -> Router {
    let router = Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route("/v2/info", get(info))
        .route("/v2/leader", get(leader).delete(abdicate))
        .route(
            "/v2/apps",
            get(apps::list)
                .post(apps::create)
                .put(apps::update_list)
                .patch(apps::patch_list),
        )
        .route("/v2/apps/{*rest}", axum::routing::any(apps::route))
        .route("/v2/tasks", get(tasks::list))
        .route("/v2/tasks/delete", post(tasks::delete))
        .route("/v2/deployments", get(deployments::list))
        .route(
            "/v2/deployments/{id}",
            axum::routing::delete(deployments::delete),
        )
        .route("/v2/queue", get(queue::list))
        .route(
            "/v2/queue/{*rest}",
            axum::routing::delete(queue::reset_delay),
        )
        .route(
            "/v2/groups",
            get(groups::get_root)
                .post(groups::create_root)
                .put(groups::update_root)
                .delete(groups::delete_root),
        )
        .route("/v2/groups/{*rest}", axum::routing::any(groups::route))
        .route("/v2/events", get(events::stream))
        .route(
            "/v2/eventSubscriptions",
            get(|| async { Json(json!({"callbackUrls": []})) }),
        )
        .with_state(shared);
    // An outer router with no routes hands every request, slashes folded,
    // to the real one: folding must happen before routing.
    Router::new().fallback_service(tower::ServiceExt::map_request(
        router,
        fold_slashes as fn(Request) -> Request,
    ))
}

fn fold_slashes(mut req: Request) -> Request {
    let path = req.uri().path();
    if path.contains("//") {
        let mut folded = String::with_capacity(path.len());
        for c in path.chars() {
            if !(c == '/' && folded.ends_with('/')) {
                folded.push(c);
            }
        }
        let pq = match req.uri().query() {
            Some(q) => format!("{folded}?{q}"),
            None => folded,
        };
        if let Ok(uri) = pq.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    req
}

// ---------------------------------------------------------------------------
// Helpers shared by the resources
// ---------------------------------------------------------------------------

pub(crate) fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(json!({"message": text.into()}))).into_response()
}

fn model_error(e: ModelError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
    (status, Json(e.to_json())).into_response()
}

fn engine_error(e: EngineError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
    (status, Json(e.to_json())).into_response()
}

/// Query booleans as clients send them: `true`, `True`, `1`.
fn flag(params: &[(String, String)], name: &str) -> Option<bool> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | ""))
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn embeds(params: &[(String, String)]) -> HashSet<String> {
    params
        .iter()
        .filter(|(k, _)| k == "embed")
        .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_string()))
        .collect()
}

/// What of an app's run-time state to embed.
#[derive(Debug, Clone, Copy, Default)]
struct AppEmbed {
    tasks: bool,
    failure: bool,
}

/// An app as GET returns it, with the run-time fields.
fn app_json(engine: &Engine, app: &AppDefinition, embed: AppEmbed) -> Value {
    let id = app.id.to_string();
    let mut m = render_app(app);
    let counts = engine.counts(&id);
    m.insert("tasksStaged".into(), json!(counts.staged));
    m.insert("tasksRunning".into(), json!(counts.running));
    m.insert("tasksHealthy".into(), json!(counts.healthy));
    m.insert("tasksUnhealthy".into(), json!(counts.unhealthy));
    let deployments: Vec<Value> = engine
        .deployments_of(&id)
        .iter()
        .map(|d| json!({"id": d.id}))
        .collect();
    m.insert("deployments".into(), json!(deployments));
    let has_checks = !app.health_checks.is_empty();
    if embed.tasks {
        let tasks: Vec<Value> = engine
            .app_tasks(&id)
            .iter()
            .map(|t| t.to_json(has_checks))
            .collect();
        m.insert("tasks".into(), json!(tasks));
    }
    if embed.failure {
        if let Some(f) = engine.failure(&id) {
            m.insert("lastTaskFailure".into(), f.to_json());
        }
    }
    Value::Object(m)
}

fn deployment_response(
    status: StatusCode,
    deployment_id: &str,
    version: chrono::DateTime<chrono::Utc>,
) -> Response {
    (
        status,
        Json(json!({"deploymentId": deployment_id, "version": marathon_timestamp(version)})),
    )
        .into_response()
}

/// Run a handler that changes the scheduler's state (one engine operation,
/// which either applies whole or changes nothing), and write the change to
/// the masters' KV store before answering. Requests that change state run
/// one at a time. When the write fails the change is undone, nothing is
/// sent to the master, no event is published, and the client gets 503
/// (Marathon's answer when its ZooKeeper is unavailable).
async fn persisted(
    shared: &Shared,
    handler: impl FnOnce(&mut Engine) -> (Response, Vec<Action>),
) -> Response {
    let mut gate = shared.store.lock().await;
    let (response, actions, desired, checkpoint) = {
        let mut engine = shared.engine();
        let checkpoint = engine.checkpoint();
        let (response, actions) = handler(&mut engine);
        if !response.status().is_success() {
            return response;
        }
        let desired = crate::store::desired(&engine, shared.store.prefix());
        (response, actions, desired, checkpoint)
    };
    if let Err(e) = gate.sync(desired).await {
        shared.engine().undo(checkpoint);
        tracing::warn!(error = %e, "state change not stored in the masters' KV; undone");
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the change could not be stored (masters unavailable?); nothing was changed: {e}"
            ),
        );
    }
    shared.engine().flush_events();
    shared.act(actions);
    response
}

// ---------------------------------------------------------------------------
// Info and leader
// ---------------------------------------------------------------------------

async fn info(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let framework_id = shared.engine().framework_id().map(String::from);
    let master = format!("http://{}/", shared.client.master().unwrap_or_default());
    Json(info_json(
        &shared.config,
        &shared.address,
        true,
        &shared.address,
        framework_id,
        master,
    ))
}

/// `/v2/info` of the scheduler at `address` (the leader is `leader`).
pub(crate) fn info_json(
    config: &crate::SchedulerConfig,
    address: &str,
    elected: bool,
    leader: &str,
    framework_id: Option<String>,
    mesos_leader_ui_url: String,
) -> Value {
    let (host, port) = address
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap_or_default();
    json!({
        "name": "marathon",
        "version": MARATHON_VERSION,
        "buildref": concat!("meseta-", env!("CARGO_PKG_VERSION")),
        "elected": elected,
        "leader": leader,
        "frameworkId": framework_id,
        "marathon_config": {
            "master": config.masters.join(","),
            "framework_name": config.framework_name,
            "mesos_role": config.role,
            "failover_timeout": config.failover_timeout,
            "hostname": host,
            "task_launch_timeout": 300000,
            "task_reservation_timeout": 20000,
            "mesos_leader_ui_url": mesos_leader_ui_url,
            "features": [],
            "checkpoint": true,
            "local_port_min": 10000,
            "local_port_max": 20000,
            "executor": "//cmd",
            "leader_proxy_connection_timeout_ms": 5000,
            "leader_proxy_read_timeout_ms": 10000,
            "reconciliation_initial_delay": 15000,
            "reconciliation_interval": 600000,
            "mesos_user": "root",
            "webui_url": format!("http://{address}"),
        },
        "zookeeper_config": {
            "zk": "",
            "zk_timeout": 10000,
            "zk_connection_timeout": 10000,
            "zk_session_timeout": 10000,
            "zk_max_versions": config.max_versions,
        },
        "http_config": {
            "http_port": port.parse::<u16>().unwrap_or(8080),
            "https_port": 8443,
        },
        "event_subscriber": null,
    })
}

async fn leader(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"leader": shared.address}))
}

/// `DELETE /v2/leader`: give the lease up; this scheduler stops acting,
/// stands by and campaigns again (another instance, if any, takes over).
async fn abdicate(State(shared): State<Arc<Shared>>) -> Response {
    shared.abdicate.notify_one();
    message(StatusCode::OK, "Leadership abdicated")
}
