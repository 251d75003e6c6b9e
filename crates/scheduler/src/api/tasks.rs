//! `/v2/tasks`: every task, and kills by id.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use meseta_proto::v1::TaskState;
use serde_json::{json, Value};

use super::{deployment_response, engine_error, flag, param, persisted};
use crate::engine::{EngineError, MarathonTask};
use crate::model::ValidationError;
use crate::Shared;

pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Json<Value> {
    let status = param(&params, "status").map(str::to_ascii_lowercase);
    let engine = shared.engine();
    let mut tasks: Vec<&MarathonTask> = engine
        .tasks()
        .filter(|t| match status.as_deref() {
            Some("running") => t.state == TaskState::TaskRunning,
            Some("staging") => {
                matches!(t.state, TaskState::TaskStaging | TaskState::TaskStarting)
            }
            _ => true,
        })
        .collect();
    tasks.sort_by(|a, b| a.app_id.cmp(&b.app_id).then(a.staged_at.cmp(&b.staged_at)));
    let rendered: Vec<Value> = tasks
        .iter()
        .map(|t| {
            let checks = engine
                .app(&t.app_id)
                .is_some_and(|a| !a.health_checks.is_empty());
            t.to_json(checks)
        })
        .collect();
    Json(json!({"tasks": rendered}))
}

/// `POST /v2/tasks/delete?scale=` with `{"ids": [...]}`.
pub(super) async fn delete(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let scale = flag(&params, "scale").unwrap_or(false);
    let force = flag(&params, "force").unwrap_or(false);
    let ids: Vec<String> = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => match v.get("ids").and_then(Value::as_array) {
            Some(a) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
            None => {
                return engine_error(EngineError::Invalid(ValidationError::single(
                    "/ids",
                    "is required",
                )))
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
    persisted(&shared, |engine| {
        match engine.kill_tasks(&ids, scale, force) {
            Ok(k) => {
                let resp = match &k.scaled {
                    Some(o) => deployment_response(StatusCode::OK, &o.deployment_id, o.version),
                    None => Json(json!({})).into_response(),
                };
                (resp, k.actions)
            }
            Err(e) => (engine_error(e), Vec::new()),
        }
    })
    .await
}
