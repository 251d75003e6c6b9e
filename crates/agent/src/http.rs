//! The agent's HTTP endpoints: `/health`, `/state` (Mesos' shape) and
//! `/files/read` / `/files/download` for sandbox files, confined to the
//! agent's work dir.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use meseta_core::attributes::Attribute;
use meseta_core::{Resources, TaskStateExt};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::tasks::TaskRecord;
use crate::Agent;

/// Largest chunk `/files/read` returns at once.
const MAX_READ: u64 = 4 * 1024 * 1024;

pub(crate) fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/state", get(state))
        .route("/slave(1)/state", get(state))
        .route("/files/read", get(read))
        .route("/files/download", get(download))
        .with_state(agent)
}

fn task_json(t: &TaskRecord) -> Value {
    let resources = Resources::from_proto(&t.info.resources).unwrap_or_default();
    json!({
        "id": t.info.task_id.as_ref().map(|i| i.value.clone()).unwrap_or_default(),
        "name": t.info.name,
        "framework_id": t.framework_id,
        "state": t.state.mesos_name(),
        "resources": resources.to_mesos_json(),
        "container_id": t.container_id,
        "directory": t.sandbox.display().to_string(),
        "pid": t.pid,
        "pending_updates": t.pending.len(),
    })
}

async fn state(State(agent): State<Arc<Agent>>) -> Json<Value> {
    let table = agent.tasks();
    let mut used = Resources::new();
    for t in table.tasks.values().filter(|t| !t.state.is_terminal()) {
        if let Ok(r) = Resources::from_proto(&t.info.resources) {
            used = used.plus(&r).unwrap_or(used);
        }
    }
    let attributes: serde_json::Map<String, Value> = agent
        .attributes
        .iter()
        .map(Attribute::from_proto)
        .map(|a| (a.name, json!(a.value)))
        .collect();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "id": agent.agent_id().unwrap_or_default(),
        "pid": format!("slave(1)@{}", agent.address),
        "hostname": agent.hostname,
        "address": agent.address,
        "isolation": agent.containerizer.name(),
        "connected": agent.link.connected(),
        "resources": agent.total.to_mesos_json(),
        "used_resources": used.to_mesos_json(),
        "attributes": attributes,
        "flags": {
            "work_dir": agent.config.work_dir.display().to_string(),
            "masters": agent.config.masters.join(","),
        },
        "tasks": table.tasks.values().map(task_json).collect::<Vec<_>>(),
        "completed_tasks": table.completed.iter().map(task_json).collect::<Vec<_>>(),
    }))
}

#[derive(Deserialize)]
struct ReadParams {
    path: String,
    offset: Option<i64>,
    length: Option<u64>,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"message": message}))).into_response()
}

/// Resolve `path` to a file inside the work dir; `..` and paths elsewhere
/// are refused.
fn confine(agent: &Agent, path: &str) -> Result<PathBuf, (StatusCode, String)> {
    let p = Path::new(path);
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err((StatusCode::BAD_REQUEST, "path must not contain '..'".into()));
    }
    let root = &agent.config.work_dir;
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    };
    if !full.starts_with(root) {
        return Err((
            StatusCode::FORBIDDEN,
            format!("{path} is outside the agent's work dir"),
        ));
    }
    Ok(full)
}

/// Mesos' `/files/read`: `{"data": "...", "offset": N}`; `offset=-1` asks
/// only for the file's size.
async fn read(State(agent): State<Arc<Agent>>, Query(q): Query<ReadParams>) -> Response {
    let full = match confine(&agent, &q.path) {
        Ok(p) => p,
        Err((status, text)) => return error(status, text),
    };
    let bytes = match tokio::fs::read(&full).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return error(StatusCode::NOT_FOUND, format!("{} does not exist", q.path))
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read {}: {e}", q.path),
            )
        }
    };
    let size = bytes.len() as u64;
    let offset = match q.offset {
        Some(o) if o < 0 => return Json(json!({"data": "", "offset": size})).into_response(),
        Some(o) => (o as u64).min(size),
        None => 0,
    };
    let length = q.length.unwrap_or(MAX_READ).min(MAX_READ);
    let end = offset.saturating_add(length).min(size);
    let data = String::from_utf8_lossy(&bytes[offset as usize..end as usize]).into_owned();
    Json(json!({"data": data, "offset": offset})).into_response()
}

async fn download(State(agent): State<Arc<Agent>>, Query(q): Query<ReadParams>) -> Response {
    let full = match confine(&agent, &q.path) {
        Ok(p) => p,
        Err((status, text)) => return error(status, text),
    };
    match tokio::fs::read(&full).await {
        Ok(b) => b.into_response(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            error(StatusCode::NOT_FOUND, format!("{} does not exist", q.path))
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read {}: {e}", q.path),
        ),
    }
}
