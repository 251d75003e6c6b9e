//! Marathon's `/v2` REST API, in Marathon 1.10's shapes (see
//! MARATHON-WIRE.md for what real clients rely on).

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::engine::{Engine, MarathonTask};
use crate::model::{
    assign_service_ports, marathon_timestamp, now_millis, parse_app_definition, parse_app_update,
    parse_app_updates, render_app, AppChange, AppDefinition, ModelError, PathId,
    ServicePortAllocator,
};
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
            get(list_apps)
                .post(create_app)
                .put(update_apps)
                .patch(patch_apps),
        )
        .route("/v2/apps/{*rest}", axum::routing::any(app_route))
        .route("/v2/tasks", get(list_tasks))
        .route("/v2/tasks/delete", post(delete_tasks))
        .route("/v2/deployments", get(list_deployments))
        .route(
            "/v2/deployments/{id}",
            axum::routing::delete(delete_deployment),
        )
        .route("/v2/queue", get(queue))
        .route("/v2/groups", get(groups))
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
// Helpers
// ---------------------------------------------------------------------------

fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(json!({"message": text.into()}))).into_response()
}

fn not_found(id: &PathId) -> Response {
    message(StatusCode::NOT_FOUND, format!("App '{id}' does not exist"))
}

fn model_error(e: ModelError) -> Response {
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

fn embeds(params: &[(String, String)]) -> HashSet<String> {
    params
        .iter()
        .filter(|(k, _)| k == "embed")
        .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_string()))
        .collect()
}

/// An app as GET returns it, with the run-time fields.
fn app_json(engine: &Engine, app: &AppDefinition, with_tasks: bool, with_failure: bool) -> Value {
    let id = app.id.to_string();
    let mut m: Map<String, Value> = render_app(app);
    let (staged, running, healthy, unhealthy) = engine.counts(&id);
    m.insert("tasksStaged".into(), json!(staged));
    m.insert("tasksRunning".into(), json!(running));
    m.insert("tasksHealthy".into(), json!(healthy));
    m.insert("tasksUnhealthy".into(), json!(unhealthy));
    let deployments: Vec<Value> = engine
        .deployments_of(&id)
        .iter()
        .map(|d| json!({"id": d.id}))
        .collect();
    m.insert("deployments".into(), json!(deployments));
    if with_tasks {
        let tasks: Vec<Value> = engine.app_tasks(&id).iter().map(|t| t.to_json()).collect();
        m.insert("tasks".into(), json!(tasks));
    }
    if with_failure {
        if let Some(f) = engine.failures.get(&id) {
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

/// 409 when the app is in the middle of a deployment and `force` is not set.
fn locked(engine: &Engine, app_id: &str, force: bool) -> Option<Response> {
    if force {
        return None;
    }
    let ds = engine.deployments_of(app_id);
    if ds.is_empty() {
        return None;
    }
    let ids: Vec<Value> = ds.iter().map(|d| json!({"id": d.id})).collect();
    let first = ds[0].id.clone();
    Some(
        (
            StatusCode::CONFLICT,
            Json(json!({
                "message": format!("App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{first}'."),
                "deployments": ids,
            })),
        )
            .into_response(),
    )
}

fn used_service_ports(engine: &Engine, except: Option<&str>) -> Vec<u32> {
    engine
        .apps
        .values()
        .filter(|a| Some(a.id.to_string().as_str()) != except)
        .flat_map(|a| a.service_ports())
        .filter(|p| *p != 0)
        .collect()
}

/// Store a new or changed definition and start its deployment. Returns the
/// deployment id and version, or an error response.
/// An error answer, boxed: a `Response` is large.
type Rejection = Box<Response>;

fn store(
    engine: &mut Engine,
    mut app: AppDefinition,
    existing: Option<&AppDefinition>,
    force: bool,
) -> Result<(String, chrono::DateTime<chrono::Utc>, AppChange), Rejection> {
    let id = app.id.to_string();
    if let Some(resp) = locked(engine, &id, force) {
        return Err(Box::new(resp));
    }
    let mut ports = ServicePortAllocator::new(used_service_ports(engine, Some(&id)));
    assign_service_ports(&mut app, &mut ports).map_err(|e| Box::new(model_error(e)))?;
    let change = match existing {
        Some(cur) => cur.change_to(&app),
        None => AppChange::Config,
    };
    let now = now_millis();
    match existing {
        Some(cur) if change == AppChange::None => {
            app.version = cur.version;
            app.version_info = cur.version_info;
        }
        _ => app.stamp_version(now, change),
    }
    let version = app.version.unwrap_or(now);
    let action = match (existing, change) {
        (None, _) => "StartApplication",
        (Some(_), AppChange::Config) => "RestartApplication",
        (Some(_), _) => "ScaleApplication",
    };
    if change == AppChange::Config {
        engine.backoff.remove(&id);
    }
    engine.apps.insert(id.clone(), app);
    let d = engine.start_deployment(&id, version, action);
    Ok((d.id, version, change))
}

fn api_post_event(engine: &Engine, app: &AppDefinition, uri: &str) {
    engine.events.publish(json!({
        "eventType": "api_post_event",
        "timestamp": marathon_timestamp(now_millis()),
        "clientIp": "127.0.0.1",
        "uri": uri,
        "appDefinition": Value::Object(render_app(app)),
    }));
}

/// Run a handler that changes the scheduler's state, and write the change
/// to the masters' KV store before answering. Requests that change state
/// run one at a time. When the write fails the change is undone, nothing is
/// sent to the master, and the client gets 503 (Marathon's answer when its
/// ZooKeeper is unavailable). Events already published on `/v2/events` by
/// the undone change are not taken back.
async fn persisted(shared: &Shared, handler: impl FnOnce() -> Response) -> Response {
    let mut gate = shared.store.lock().await;
    let undo = crate::store::Undo::take(&shared.engine());
    shared.hold_actions();
    let response = handler();
    let actions = shared.release_actions();
    if response.status().is_success() {
        let desired = crate::store::desired(&shared.engine(), shared.store.prefix());
        if let Err(e) = gate.sync(desired).await {
            undo.restore(&mut shared.engine());
            tracing::warn!(error = %e, "state change not stored in the masters' KV; undone");
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the change could not be stored (masters unavailable?); nothing was changed: {e}"),
            );
        }
    }
    shared.act(actions);
    response
}

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

async fn info(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let framework_id = shared.engine().framework_id.clone();
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
            "zk_max_versions": 50,
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

async fn list_apps(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Json<Value> {
    let embed = embeds(&params);
    let with_tasks = embed.contains("apps.tasks");
    let with_failure = embed.contains("apps.lastTaskFailure");
    let id_filter = params
        .iter()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.clone());
    let cmd_filter = params
        .iter()
        .find(|(k, _)| k == "cmd")
        .map(|(_, v)| v.clone());
    let engine = shared.engine();
    let apps: Vec<Value> = engine
        .apps
        .values()
        .filter(|a| {
            id_filter
                .as_ref()
                .is_none_or(|f| a.id.to_string().contains(f.as_str()))
        })
        .filter(|a| {
            cmd_filter
                .as_ref()
                .is_none_or(|f| a.cmd.as_deref().unwrap_or("").contains(f.as_str()))
        })
        .map(|a| app_json(&engine, a, with_tasks, with_failure))
        .collect();
    Json(json!({"apps": apps}))
}

async fn create_app(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let force = flag(&params, "force").unwrap_or(false);
    let app = match parse_app_definition(&body) {
        Ok(a) => a,
        Err(e) => return model_error(e),
    };
    let id = app.id.to_string();
    persisted(&shared, || create_stored(&shared, app, &id, force)).await
}

fn create_stored(shared: &Shared, app: AppDefinition, id: &str, force: bool) -> Response {
    let id = id.to_string();
    let mut engine = shared.engine();
    if engine.apps.contains_key(&id) {
        return message(
            StatusCode::CONFLICT,
            format!("An app with id [{id}] already exists."),
        );
    }
    let (deployment, _, _) = match store(&mut engine, app, None, force) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Some(stored) = engine.apps.get(&id).cloned() else {
        return message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "app vanished while being stored",
        );
    };
    tracing::info!(app = %id, instances = stored.instances, deployment = %deployment, "app created");
    api_post_event(&engine, &stored, "/v2/apps");
    let mut body = app_json(&engine, &stored, false, false);
    body["deployments"] = json!([{"id": deployment}]);
    let actions = engine.converge();
    drop(engine);
    shared.act(actions);
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v2/apps{id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Apply one update body to the app `id` (or create it), Marathon's PUT.
fn put_one(
    engine: &mut Engine,
    id: &PathId,
    body: &crate::model::AppUpdate,
    partial: bool,
    force: bool,
) -> Result<(StatusCode, String, chrono::DateTime<chrono::Utc>), Rejection> {
    let key = id.to_string();
    let existing = engine.apps.get(&key).cloned();
    let next = match &existing {
        Some(cur) if partial => body.apply_to(cur),
        _ => body.to_app(Some(id)),
    }
    .map_err(|e| Box::new(model_error(ModelError::Invalid(e))))?;
    let created = existing.is_none();
    let (deployment, version, change) = store(engine, next, existing.as_ref(), force)?;
    tracing::info!(app = %key, deployment = %deployment, ?change, "app updated");
    if let Some(stored) = engine.apps.get(&key) {
        api_post_event(engine, stored, &format!("/v2/apps{key}"));
    }
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        deployment,
        version,
    ))
}

async fn update_apps(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let partial = flag(&params, "partialUpdate").unwrap_or(true);
    persisted(&shared.clone(), || {
        multi_update(shared, &params, &body, partial)
    })
    .await
}

async fn patch_apps(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    persisted(&shared.clone(), || {
        multi_update(shared, &params, &body, true)
    })
    .await
}

fn multi_update(
    shared: Arc<Shared>,
    params: &[(String, String)],
    body: &[u8],
    partial: bool,
) -> Response {
    let force = flag(params, "force").unwrap_or(false);
    let updates = match parse_app_updates(body) {
        Ok(u) => u,
        Err(e) => return model_error(ModelError::Parse(e)),
    };
    let mut engine = shared.engine();
    // Validate all first so a bad entry changes nothing.
    for (i, u) in updates.iter().enumerate() {
        let Some(id) = u.path_id() else {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"message": "Object is not valid", "details": [{"path": format!("({i})/id"), "errors": ["is required"]}]})),
            )
                .into_response();
        };
        let existing = engine.apps.get(&id.to_string());
        let checked = match existing {
            Some(cur) if partial => u.apply_to(cur),
            _ => u.to_app(Some(&id)),
        };
        if let Err(e) = checked {
            return model_error(ModelError::Invalid(e));
        }
        if let Some(r) = locked(&engine, &id.to_string(), force) {
            return r;
        }
    }
    let mut last = None;
    for u in &updates {
        let Some(id) = u.path_id() else { continue };
        match put_one(&mut engine, &id, u, partial, force) {
            Ok((_, d, v)) => last = Some((d, v)),
            Err(r) => return *r,
        }
    }
    let actions = engine.converge();
    drop(engine);
    shared.act(actions);
    match last {
        Some((d, v)) => deployment_response(StatusCode::OK, &d, v),
        None => message(StatusCode::OK, "no apps given"),
    }
}

/// Everything under `/v2/apps/…`: the app itself, its tasks, restart, versions.
async fn app_route(
    State(shared): State<Arc<Shared>>,
    Path(rest): Path<String>,
    method: Method,
    Query(params): Query<Vec<(String, String)>>,
    req: Request<Body>,
) -> Response {
    let body = match axum::body::to_bytes(req.into_body(), 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            return message(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )
        }
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    // `/v2/apps/a/b/tasks/x`: the app id is what stands before a keyword.
    let keyword = segments
        .iter()
        .rposition(|s| matches!(*s, "tasks" | "restart" | "versions"))
        .filter(|&i| i > 0);
    let (app_segments, tail): (&[&str], &[&str]) = match keyword {
        Some(i) => (&segments[..i], &segments[i..]),
        None => (&segments[..], &[]),
    };
    let id = PathId::new(&app_segments.join("/"));
    match (method.clone(), tail) {
        (Method::GET, []) => get_app(&shared, &id, &params),
        (Method::PUT, []) => {
            let partial = flag(&params, "partialUpdate").unwrap_or(true);
            persisted(&shared, || put_app(&shared, &id, &params, &body, partial)).await
        }
        (Method::PATCH, []) => {
            persisted(&shared, || put_app(&shared, &id, &params, &body, true)).await
        }
        (Method::DELETE, []) => persisted(&shared, || delete_app(&shared, &id, &params)).await,
        (Method::GET, ["tasks"]) => app_tasks(&shared, &id),
        (Method::DELETE, ["tasks"]) => {
            persisted(&shared, || kill_app_tasks(&shared, &id, &params, None)).await
        }
        (Method::DELETE, ["tasks", task_id]) => {
            persisted(&shared, || {
                kill_app_tasks(&shared, &id, &params, Some(task_id))
            })
            .await
        }
        (Method::POST, ["restart"]) => {
            persisted(&shared, || restart_app(&shared, &id, &params)).await
        }
        (Method::GET, ["versions"]) => {
            let engine = shared.engine();
            match engine.apps.get(&id.to_string()) {
                Some(app) => Json(json!({"versions": app.version.map(marathon_timestamp).into_iter().collect::<Vec<_>>()})).into_response(),
                None => not_found(&id),
            }
        }
        (Method::GET, ["versions", v]) => {
            let engine = shared.engine();
            match engine.apps.get(&id.to_string()) {
                Some(app) if app.version.map(marathon_timestamp).as_deref() == Some(*v) => {
                    Json(Value::Object(render_app(app))).into_response()
                }
                Some(_) => message(
                    StatusCode::NOT_FOUND,
                    format!("App '{id}' does not exist in version {v}"),
                ),
                None => not_found(&id),
            }
        }
        _ => message(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not supported on /v2/apps/{rest}"),
        ),
    }
}

fn get_app(shared: &Shared, id: &PathId, params: &[(String, String)]) -> Response {
    let embed = embeds(params);
    let engine = shared.engine();
    match engine.apps.get(&id.to_string()) {
        Some(app) => {
            // Marathon embeds tasks and the last failure in a single app by default.
            let with_tasks = embed.is_empty() || embed.contains("app.tasks");
            let with_failure = embed.is_empty() || embed.contains("app.lastTaskFailure");
            Json(json!({"app": app_json(&engine, app, with_tasks, with_failure)})).into_response()
        }
        None => not_found(id),
    }
}

fn put_app(
    shared: &Shared,
    id: &PathId,
    params: &[(String, String)],
    body: &[u8],
    partial: bool,
) -> Response {
    let force = flag(params, "force").unwrap_or(false);
    let update = match parse_app_update(body) {
        Ok(u) => u,
        Err(e) => return model_error(ModelError::Parse(e)),
    };
    let mut engine = shared.engine();
    let result = put_one(&mut engine, id, &update, partial, force);
    let actions = engine.converge();
    drop(engine);
    shared.act(actions);
    match result {
        Ok((status, d, v)) => deployment_response(status, &d, v),
        Err(r) => *r,
    }
}

fn delete_app(shared: &Shared, id: &PathId, params: &[(String, String)]) -> Response {
    let force = flag(params, "force").unwrap_or(false);
    let key = id.to_string();
    let mut engine = shared.engine();
    if !engine.apps.contains_key(&key) {
        return not_found(id);
    }
    if let Some(r) = locked(&engine, &key, force) {
        return r;
    }
    engine.apps.remove(&key);
    engine.backoff.remove(&key);
    engine.failures.remove(&key);
    let now = now_millis();
    let d = engine.start_deployment(&key, now, "StopApplication");
    tracing::info!(app = %key, deployment = %d.id, "app deleted");
    let actions = engine.converge();
    drop(engine);
    shared.act(actions);
    deployment_response(StatusCode::OK, &d.id, now)
}

fn app_tasks(shared: &Shared, id: &PathId) -> Response {
    let engine = shared.engine();
    if !engine.apps.contains_key(&id.to_string()) {
        return not_found(id);
    }
    let tasks: Vec<Value> = engine
        .app_tasks(&id.to_string())
        .iter()
        .map(|t| t.to_json())
        .collect();
    Json(json!({"tasks": tasks})).into_response()
}

/// `DELETE /v2/apps/{id}/tasks[/{taskId}]?scale=&host=`: kill tasks; with
/// `scale=true` the app's instances go down by as many.
fn kill_app_tasks(
    shared: &Shared,
    id: &PathId,
    params: &[(String, String)],
    task_id: Option<&str>,
) -> Response {
    let scale = flag(params, "scale").unwrap_or(false);
    let force = flag(params, "force").unwrap_or(false);
    let host = params
        .iter()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.clone());
    let key = id.to_string();
    let mut engine = shared.engine();
    if !engine.apps.contains_key(&key) {
        return not_found(id);
    }
    let victims: Vec<MarathonTask> = engine
        .app_tasks(&key)
        .into_iter()
        .filter(|t| task_id.is_none_or(|x| t.id == x))
        .filter(|t| host.as_ref().is_none_or(|h| &t.host == h))
        .cloned()
        .collect();
    if let Some(tid) = task_id {
        if victims.is_empty() {
            return message(
                StatusCode::NOT_FOUND,
                format!("Task '{tid}' does not exist"),
            );
        }
    }
    let mut actions = Vec::new();
    for t in &victims {
        actions.extend(engine.kill_task(&t.id));
    }
    let response = if scale {
        let Some(mut app) = engine.apps.get(&key).cloned() else {
            return not_found(id);
        };
        let existing = app.clone();
        app.instances = app.instances.saturating_sub(victims.len() as u32);
        match store(&mut engine, app, Some(&existing), force) {
            Ok((d, v, _)) => deployment_response(StatusCode::OK, &d, v),
            Err(r) => return *r,
        }
    } else {
        match task_id {
            Some(_) => Json(json!({"task": victims.first().map(|t| t.to_json())})).into_response(),
            None => Json(json!({"tasks": victims.iter().map(|t| t.to_json()).collect::<Vec<_>>()}))
                .into_response(),
        }
    };
    actions.extend(engine.converge());
    drop(engine);
    shared.act(actions);
    response
}

fn restart_app(shared: &Shared, id: &PathId, params: &[(String, String)]) -> Response {
    let force = flag(params, "force").unwrap_or(false);
    let key = id.to_string();
    let mut engine = shared.engine();
    let Some(mut app) = engine.apps.get(&key).cloned() else {
        return not_found(id);
    };
    if let Some(r) = locked(&engine, &key, force) {
        return r;
    }
    let now = now_millis();
    app.stamp_version(now, AppChange::Config);
    let version = app.version.unwrap_or(now);
    engine.apps.insert(key.clone(), app);
    let d = engine.start_deployment(&key, version, "RestartApplication");
    let actions = engine.converge();
    drop(engine);
    shared.act(actions);
    deployment_response(StatusCode::OK, &d.id, version)
}

async fn list_tasks(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Json<Value> {
    let status = params
        .iter()
        .find(|(k, _)| k == "status")
        .map(|(_, v)| v.to_ascii_lowercase());
    let engine = shared.engine();
    let mut tasks: Vec<&MarathonTask> = engine
        .tasks
        .values()
        .filter(|t| match status.as_deref() {
            Some("running") => t.state == meseta_proto::v1::TaskState::TaskRunning,
            Some("staging") => matches!(
                t.state,
                meseta_proto::v1::TaskState::TaskStaging
                    | meseta_proto::v1::TaskState::TaskStarting
            ),
            _ => true,
        })
        .collect();
    tasks.sort_by(|a, b| a.app_id.cmp(&b.app_id).then(a.staged_at.cmp(&b.staged_at)));
    Json(json!({"tasks": tasks.iter().map(|t| t.to_json()).collect::<Vec<_>>()}))
}

async fn delete_tasks(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let scale = flag(&params, "scale").unwrap_or(false);
    let ids: Vec<String> = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => match v.get("ids").and_then(Value::as_array) {
            Some(a) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
            None => {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(json!({"message": "Object is not valid", "details": [{"path": "/ids", "errors": ["is required"]}]})),
                )
                    .into_response()
            }
        },
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"message": "Invalid JSON", "details": [{"path": "/", "errors": [e.to_string()]}]})),
            )
                .into_response()
        }
    };
    persisted(&shared, || kill_listed_tasks(&shared, &ids, scale)).await
}

fn kill_listed_tasks(shared: &Shared, ids: &[String], scale: bool) -> Response {
    let mut engine = shared.engine();
    let mut actions = Vec::new();
    let mut per_app: std::collections::BTreeMap<String, u32> = Default::default();
    for id in ids {
        if let Some(t) = engine.tasks.get(id) {
            *per_app.entry(t.app_id.clone()).or_default() += 1;
        }
        actions.extend(engine.kill_task(id));
    }
    let mut last = None;
    if scale {
        for (app_id, n) in per_app {
            let Some(mut app) = engine.apps.get(&app_id).cloned() else {
                continue;
            };
            let existing = app.clone();
            app.instances = app.instances.saturating_sub(n);
            if let Ok((d, v, _)) = store(&mut engine, app, Some(&existing), true) {
                last = Some((d, v));
            }
        }
    }
    actions.extend(engine.converge());
    drop(engine);
    shared.act(actions);
    match last {
        Some((d, v)) => deployment_response(StatusCode::OK, &d, v),
        None => Json(json!({})).into_response(),
    }
}

async fn list_deployments(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let engine = shared.engine();
    Json(Value::Array(
        engine.deployments.iter().map(|d| d.to_json()).collect(),
    ))
}

async fn delete_deployment(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    persisted(&shared, || forget_deployment(&shared, &id)).await
}

fn forget_deployment(shared: &Shared, id: &str) -> Response {
    let mut engine = shared.engine();
    let before = engine.deployments.len();
    engine.deployments.retain(|d| d.id != id);
    if engine.deployments.len() == before {
        return message(
            StatusCode::NOT_FOUND,
            format!("DeploymentPlan {id} does not exist"),
        );
    }
    // meseta does not roll back: the deployment stops being tracked and the
    // app keeps converging to its current definition.
    let now = now_millis();
    deployment_response(StatusCode::ACCEPTED, id, now)
}

async fn queue(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let engine = shared.engine();
    let queue: Vec<Value> = engine
        .apps
        .values()
        .filter_map(|app| {
            let needs = engine.needs(&app.id.to_string());
            (needs.launch > 0).then(|| {
                json!({
                    "count": needs.launch,
                    "delay": {"overdue": engine.backoff.get(&app.id.to_string()).is_none_or(|b| b.not_before.is_none()), "timeLeftSeconds": 0},
                    "app": Value::Object(render_app(app)),
                    "since": marathon_timestamp(app.version.unwrap_or_else(now_millis)),
                })
            })
        })
        .collect();
    Json(json!({"queue": queue}))
}

async fn groups(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let engine = shared.engine();
    let apps: Vec<Value> = engine
        .apps
        .values()
        .map(|a| Value::Object(render_app(a)))
        .collect();
    let version = engine
        .apps
        .values()
        .filter_map(|a| a.version)
        .max()
        .unwrap_or_else(now_millis);
    Json(json!({
        "id": "/",
        "apps": apps,
        "groups": [],
        "pods": [],
        "dependencies": [],
        "version": marathon_timestamp(version),
    }))
}
