//! `/v2/apps`: list, create, update (one or a list), delete, restart, an
//! app's tasks and versions.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{
    app_json, deployment_response, embeds, engine_error, flag, message, model_error, param,
    persisted, AppEmbed,
};
use crate::engine::{EngineError, Outcome};
use crate::model::{
    marathon_timestamp, parse_app_definition, parse_app_update, parse_app_updates, parse_timestamp,
    render_app, AppUpdate, ModelError, PathId, ValidationError,
};
use crate::Shared;

pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Json<Value> {
    let embed = embeds(&params);
    let e = AppEmbed {
        tasks: embed.contains("apps.tasks"),
        failure: embed.contains("apps.lastTaskFailure"),
    };
    let id_filter = param(&params, "id");
    let cmd_filter = param(&params, "cmd");
    let engine = shared.engine();
    let apps: Vec<Value> = engine
        .apps()
        .filter(|a| id_filter.is_none_or(|f| a.id.to_string().contains(f)))
        .filter(|a| cmd_filter.is_none_or(|f| a.cmd.as_deref().unwrap_or("").contains(f)))
        .map(|a| app_json(&engine, a, e))
        .collect();
    Json(json!({"apps": apps}))
}

pub(super) async fn create(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let force = flag(&params, "force").unwrap_or(false);
    let app = match parse_app_definition(&body) {
        Ok(a) => a,
        Err(e) => return model_error(e),
    };
    persisted(&shared, |engine| {
        let id = app.id.to_string();
        match engine.create_app(app, force) {
            Ok(o) => {
                let Some(stored) = engine.app(&id) else {
                    return (
                        message(StatusCode::INTERNAL_SERVER_ERROR, "the app vanished"),
                        Vec::new(),
                    );
                };
                let mut body = app_json(engine, stored, AppEmbed::default());
                body["deployments"] = json!([{"id": o.deployment_id}]);
                let mut resp = (StatusCode::CREATED, Json(body)).into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("/v2/apps{id}")) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                (resp, o.actions)
            }
            Err(e) => (engine_error(e), Vec::new()),
        }
    })
    .await
}

fn outcome_response(
    result: Result<Outcome, EngineError>,
    created_status: bool,
) -> (Response, Vec<crate::engine::Action>) {
    match result {
        Ok(o) => {
            let status = if created_status && !o.created.is_empty() {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (
                deployment_response(status, &o.deployment_id, o.version),
                o.actions,
            )
        }
        Err(e) => (engine_error(e), Vec::new()),
    }
}

pub(super) async fn update_list(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let partial = flag(&params, "partialUpdate").unwrap_or(true);
    update_many(&shared, &params, &body, partial).await
}

pub(super) async fn patch_list(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    update_many(&shared, &params, &body, true).await
}

/// `PUT`/`PATCH /v2/apps` with a list: all of it, in one deployment, or
/// nothing.
async fn update_many(
    shared: &Shared,
    params: &[(String, String)],
    body: &[u8],
    partial: bool,
) -> Response {
    let force = flag(params, "force").unwrap_or(false);
    let updates = match parse_app_updates(body) {
        Ok(u) => u,
        Err(e) => return model_error(ModelError::Parse(e)),
    };
    let mut list = Vec::with_capacity(updates.len());
    for (i, u) in updates.into_iter().enumerate() {
        let Some(id) = u.path_id() else {
            return engine_error(EngineError::Invalid(ValidationError::single(
                format!("({i})/id"),
                "is required",
            )));
        };
        list.push((id, u));
    }
    if list.is_empty() {
        return message(StatusCode::OK, "no apps given");
    }
    persisted(shared, |engine| {
        outcome_response(engine.update_apps(&list, partial, force, true), false)
    })
    .await
}

/// Everything under `/v2/apps/…`: the app itself, its tasks, restart, versions.
pub(super) async fn route(
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
    let force = flag(&params, "force").unwrap_or(false);
    match (method.clone(), tail) {
        (Method::GET, []) => get_one(&shared, &id, &params),
        (Method::PUT, []) => {
            let partial = flag(&params, "partialUpdate").unwrap_or(true);
            update_one(&shared, &id, &body, partial, force).await
        }
        (Method::PATCH, []) => update_one(&shared, &id, &body, true, force).await,
        (Method::DELETE, []) => {
            persisted(&shared, |engine| {
                outcome_response(engine.delete_app(&id, force), false)
            })
            .await
        }
        (Method::GET, ["tasks"]) => {
            let engine = shared.engine();
            match engine.app(&id.to_string()) {
                Some(app) => {
                    let checks = !app.health_checks.is_empty();
                    let tasks: Vec<Value> = engine
                        .app_tasks(&id.to_string())
                        .iter()
                        .map(|t| t.to_json(checks))
                        .collect();
                    Json(json!({"tasks": tasks})).into_response()
                }
                None => engine_error(EngineError::AppNotFound(id)),
            }
        }
        (Method::DELETE, ["tasks"]) => kill(&shared, &id, &params, None).await,
        (Method::DELETE, ["tasks", task_id]) => kill(&shared, &id, &params, Some(task_id)).await,
        (Method::POST, ["restart"]) => {
            persisted(&shared, |engine| {
                outcome_response(engine.restart_app(&id, force), false)
            })
            .await
        }
        (Method::GET, ["versions"]) => {
            let engine = shared.engine();
            if engine.app(&id.to_string()).is_none() {
                return engine_error(EngineError::AppNotFound(id));
            }
            let versions: Vec<String> = engine
                .versions(&id.to_string())
                .into_iter()
                .map(marathon_timestamp)
                .collect();
            Json(json!({"versions": versions})).into_response()
        }
        (Method::GET, ["versions", v]) => {
            let engine = shared.engine();
            if engine.app(&id.to_string()).is_none() {
                return engine_error(EngineError::AppNotFound(id));
            }
            let found = parse_timestamp(v)
                .ok()
                .and_then(|t| engine.app_version(&id.to_string(), t));
            match found {
                Some(app) => Json(Value::Object(render_app(app))).into_response(),
                None => engine_error(EngineError::AppVersionNotFound {
                    app: id,
                    version: v.to_string(),
                }),
            }
        }
        _ => message(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not supported on /v2/apps/{rest}"),
        ),
    }
}

fn get_one(shared: &Shared, id: &PathId, params: &[(String, String)]) -> Response {
    let embed = embeds(params);
    let engine = shared.engine();
    match engine.app(&id.to_string()) {
        Some(app) => {
            // Marathon embeds tasks and the last failure in a single app by default.
            let e = AppEmbed {
                tasks: embed.is_empty() || embed.contains("app.tasks"),
                failure: embed.is_empty() || embed.contains("app.lastTaskFailure"),
            };
            Json(json!({"app": app_json(&engine, app, e)})).into_response()
        }
        None => engine_error(EngineError::AppNotFound(id.clone())),
    }
}

async fn update_one(
    shared: &Shared,
    id: &PathId,
    body: &[u8],
    partial: bool,
    force: bool,
) -> Response {
    let update: AppUpdate = match parse_app_update(body) {
        Ok(u) => u,
        Err(e) => return model_error(ModelError::Parse(e)),
    };
    let list = [(id.clone(), update)];
    persisted(shared, |engine| {
        outcome_response(engine.update_apps(&list, partial, force, false), true)
    })
    .await
}

/// `DELETE /v2/apps/{id}/tasks[/{taskId}]?scale=&host=`: kill tasks; with
/// `scale=true` the app's instances go down by as many.
async fn kill(
    shared: &Shared,
    id: &PathId,
    params: &[(String, String)],
    task_id: Option<&str>,
) -> Response {
    let scale = flag(params, "scale").unwrap_or(false);
    let force = flag(params, "force").unwrap_or(false);
    let host = param(params, "host").map(String::from);
    let key = id.to_string();
    persisted(shared, |engine| {
        if engine.app(&key).is_none() {
            return (engine_error(EngineError::AppNotFound(id.clone())), Vec::new());
        }
        let victims: Vec<String> = engine
            .app_tasks(&key)
            .into_iter()
            .filter(|t| task_id.is_none_or(|x| t.id == x))
            .filter(|t| host.as_ref().is_none_or(|h| &t.host == h))
            .map(|t| t.id.clone())
            .collect();
        if let (Some(tid), true) = (task_id, victims.is_empty()) {
            return (
                engine_error(EngineError::TaskNotFound(tid.to_string())),
                Vec::new(),
            );
        }
        let checks = engine
            .app(&key)
            .is_some_and(|a| !a.health_checks.is_empty());
        match engine.kill_tasks(&victims, scale, force) {
            Ok(k) => {
                let resp = match (&k.scaled, task_id) {
                    (Some(o), _) => deployment_response(StatusCode::OK, &o.deployment_id, o.version),
                    (None, Some(_)) => {
                        Json(json!({"task": k.killed.first().map(|t| t.to_json(checks))}))
                            .into_response()
                    }
                    (None, None) => Json(json!({"tasks": k.killed.iter().map(|t| t.to_json(checks)).collect::<Vec<_>>()}))
                        .into_response(),
                };
                (resp, k.actions)
            }
            Err(e) => (engine_error(e), Vec::new()),
        }
    })
    .await
}
