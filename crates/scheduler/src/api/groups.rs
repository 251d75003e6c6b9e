//! `/v2/groups`: the group tree (with `embed`), create, update (`scaleBy`,
//! `version` rollback), delete, versions.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{
    app_json, deployment_response, embeds, engine_error, flag, message, model_error, persisted,
    AppEmbed,
};
use crate::engine::{Engine, EngineError, GroupUpdate};
use crate::model::{marathon_timestamp, now_millis, parse_json, ModelError, PathId};
use crate::Shared;

/// What of a group to embed (`embed=group.groups`, `group.apps`,
/// `group.apps.tasks`, `group.apps.lastTaskFailure`, …); without `embed`,
/// apps and groups.
struct GroupEmbed {
    groups: bool,
    apps: bool,
    app: AppEmbed,
}

impl GroupEmbed {
    fn of(embed: &HashSet<String>) -> GroupEmbed {
        if embed.is_empty() {
            return GroupEmbed {
                groups: true,
                apps: true,
                app: AppEmbed::default(),
            };
        }
        GroupEmbed {
            groups: embed.contains("group.groups"),
            apps: embed.iter().any(|e| e.starts_with("group.apps")),
            app: AppEmbed {
                tasks: embed.contains("group.apps.tasks"),
                failure: embed.contains("group.apps.lastTaskFailure"),
            },
        }
    }
}

fn group_json(engine: &Engine, id: &PathId, embed: &GroupEmbed) -> Value {
    let apps: Vec<Value> = if embed.apps {
        engine
            .group_apps(id)
            .into_iter()
            .map(|a| app_json(engine, a, embed.app))
            .collect()
    } else {
        Vec::new()
    };
    let groups: Vec<Value> = if embed.groups {
        engine
            .subgroups(id)
            .iter()
            .map(|g| group_json(engine, g, embed))
            .collect()
    } else {
        Vec::new()
    };
    let dependencies: Vec<String> = engine
        .group_meta(id)
        .map(|m| m.dependencies.iter().map(|d| d.to_string()).collect())
        .unwrap_or_default();
    json!({
        "id": id.to_string(),
        "apps": apps,
        "groups": groups,
        "pods": [],
        "dependencies": dependencies,
        "version": marathon_timestamp(engine.group_version(id).unwrap_or_else(now_millis)),
    })
}

fn get_group(shared: &Shared, id: &PathId, params: &[(String, String)]) -> Response {
    let engine = shared.engine();
    if !engine.group_exists(id) {
        return engine_error(EngineError::GroupNotFound(id.clone()));
    }
    Json(group_json(&engine, id, &GroupEmbed::of(&embeds(params)))).into_response()
}

async fn change(
    shared: &Shared,
    base: &PathId,
    body: &[u8],
    create: bool,
    params: &[(String, String)],
) -> Response {
    let update = match parse_json::<GroupUpdate>(body) {
        Ok(u) => u,
        Err(e) => return model_error(ModelError::Parse(e)),
    };
    let force = flag(params, "force").unwrap_or(false);
    persisted(shared, |engine| {
        match engine.update_group(base, &update, create, force) {
            Ok(o) => {
                let status = if create {
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
    })
    .await
}

async fn delete(shared: &Shared, id: &PathId, params: &[(String, String)]) -> Response {
    let force = flag(params, "force").unwrap_or(false);
    persisted(shared, |engine| match engine.delete_group(id, force) {
        Ok(o) => (
            deployment_response(StatusCode::OK, &o.deployment_id, o.version),
            o.actions,
        ),
        Err(e) => (engine_error(e), Vec::new()),
    })
    .await
}

fn versions(shared: &Shared, id: &PathId) -> Response {
    let engine = shared.engine();
    if !engine.group_exists(id) {
        return engine_error(EngineError::GroupNotFound(id.clone()));
    }
    let v: Vec<String> = engine
        .group_versions(id)
        .into_iter()
        .map(marathon_timestamp)
        .collect();
    Json(v).into_response()
}

pub(super) async fn get_root(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    get_group(&shared, &PathId::root(), &params)
}

pub(super) async fn create_root(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    change(&shared, &PathId::root(), &body, true, &params).await
}

pub(super) async fn update_root(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    change(&shared, &PathId::root(), &body, false, &params).await
}

pub(super) async fn delete_root(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    delete(&shared, &PathId::root(), &params).await
}

/// Everything under `/v2/groups/…`.
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
    let (id, tail): (PathId, &[&str]) = match segments.iter().rposition(|s| *s == "versions") {
        Some(i) => (PathId::new(&segments[..i].join("/")), &segments[i..]),
        None => (PathId::new(&segments.join("/")), &[]),
    };
    match (method.clone(), tail) {
        (Method::GET, []) => get_group(&shared, &id, &params),
        (Method::POST, []) => change(&shared, &id, &body, true, &params).await,
        (Method::PUT, []) | (Method::PATCH, []) => {
            change(&shared, &id, &body, false, &params).await
        }
        (Method::DELETE, []) => delete(&shared, &id, &params).await,
        (Method::GET, ["versions"]) => versions(&shared, &id),
        _ => message(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not supported on /v2/groups/{rest}"),
        ),
    }
}
