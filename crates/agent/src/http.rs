//! The agent's HTTP endpoints: `/health`, `/state` (Mesos' shape, plus each
//! task's unacknowledged updates), `/monitor/statistics` (Mesos' shape, read
//! from the containers' cgroups) and the sandbox files API (`/files/read`,
//! `/files/download`, `/files/browse`), which serves nothing outside task
//! sandboxes (see [`crate::files`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use meseta_core::attributes::Attribute;
use meseta_core::{Resources, TaskStateExt};
use serde::Deserialize;
use serde_json::{json, Value};

use meseta_proto::v1 as pb;

use crate::files::{self, FilesError};
use crate::tasks::TaskRecord;
use crate::Agent;

/// Largest chunk `/files/read` returns at once.
const MAX_READ: u64 = 4 * 1024 * 1024;

pub(crate) fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/state", get(state))
        .route("/state.json", get(state))
        .route("/slave(1)/state", get(state))
        .route("/files/read", get(read))
        .route("/files/read.json", get(read))
        .route("/files/download", get(download))
        .route("/files/download.json", get(download))
        .route("/files/browse", get(browse))
        .route("/files/browse.json", get(browse))
        .route("/monitor/statistics", get(statistics))
        .route("/monitor/statistics.json", get(statistics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .with_state(agent)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn task_json(agent: &Agent, t: &TaskRecord, live: bool) -> Value {
    let resources = Resources::from_proto(&t.info.resources).unwrap_or_default();
    let task_id = t.task_id();
    let unacknowledged: Vec<Value> = if live {
        agent
            .updates
            .unacknowledged(&task_id)
            .iter()
            .map(|u| {
                json!({
                    "state": meseta_core::task::task_state_of(u.state).mesos_name(),
                    "uuid": hex(&u.uuid),
                    "timestamp": u.timestamp,
                    "message": u.message,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    json!({
        "id": task_id,
        "name": t.info.name,
        "framework_id": t.framework_id,
        "state": t.state.mesos_name(),
        "resources": resources.to_mesos_json(),
        "container_id": t.container_id,
        "directory": t.sandbox.display().to_string(),
        "pid": t.pid,
        "user": t.user,
        "unacknowledged_updates": unacknowledged,
        "latest_status": t.latest.as_ref().map(|s| json!({
            "state": meseta_core::task::task_state_of(s.state).mesos_name(),
            "reason": pb::task_status::Reason::try_from(s.reason)
                .map(|r| r.as_str_name())
                .unwrap_or("REASON_NONE"),
            "message": s.message,
            "timestamp": s.timestamp,
        })),
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
    let config = &agent.config;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "id": agent.agent_id().unwrap_or_default(),
        "pid": format!("slave(1)@{}", agent.address),
        "hostname": agent.hostname,
        "address": agent.address,
        "isolation": agent.containerizer.name(),
        "containerizers": agent.containerizer_names,
        "connected": agent.link.connected(),
        "resources": agent.total.to_mesos_json(),
        "used_resources": used.to_mesos_json(),
        "attributes": attributes,
        "flags": {
            "work_dir": config.work_dir.display().to_string(),
            "masters": config.masters.join(","),
            "recover": format!("{:?}", config.recover).to_lowercase(),
            "switch_user": config.switch_user,
            "cgroups_root": config.cgroups_root,
            "containers_cgroup": (agent.containerizer.name() == "linux").then(|| agent.containers_cgroup.clone()),
            "cgroups_max_pids": config.cgroups_max_pids,
            "cgroups_enable_cfs": config.cgroups_enable_cfs,
            "containerizers": agent.containerizer_names.join(","),
            "docker_socket": config.docker_socket,
        },
        "tasks": table.tasks.values().map(|t| task_json(&agent, t, true)).collect::<Vec<_>>(),
        "completed_tasks": table.completed.iter().map(|t| task_json(&agent, t, false)).collect::<Vec<_>>(),
    }))
}

#[derive(Deserialize)]
struct FileParams {
    path: Option<String>,
    offset: Option<i64>,
    length: Option<u64>,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"message": message}))).into_response()
}

impl IntoResponse for FilesError {
    fn into_response(self) -> Response {
        let status = match &self {
            FilesError::BadRequest(_) => StatusCode::BAD_REQUEST,
            FilesError::Forbidden(_) => StatusCode::FORBIDDEN,
            FilesError::NotFound(_) => StatusCode::NOT_FOUND,
            FilesError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error(status, self.to_string())
    }
}

fn path_of(q: &FileParams) -> Result<String, FilesError> {
    q.path
        .clone()
        .ok_or_else(|| FilesError::BadRequest("missing 'path'".into()))
}

/// Runs a blocking files operation off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FilesError> + Send + 'static,
) -> Result<T, FilesError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FilesError::Io(e.to_string()))?
}

/// Mesos' `/files/read`: `{"data": "...", "offset": N}`; `offset=-1` asks
/// only for the file's size.
async fn read(
    State(agent): State<Arc<Agent>>,
    Query(q): Query<FileParams>,
) -> Result<Response, FilesError> {
    let path = path_of(&q)?;
    let work_dir = agent.config.work_dir.clone();
    let (offset, length) = (q.offset, q.length.unwrap_or(MAX_READ).min(MAX_READ));
    let (data, offset) = blocking(move || {
        let (file, size) = files::open_file(&work_dir, &path)?;
        let offset = match offset {
            Some(o) if o < 0 => return Ok((Vec::new(), size)),
            Some(o) => (o as u64).min(size),
            None => 0,
        };
        Ok((files::read_at(&file, offset, length)?, offset))
    })
    .await?;
    Ok(Json(json!({
        "data": String::from_utf8_lossy(&data),
        "offset": offset,
    }))
    .into_response())
}

async fn download(
    State(agent): State<Arc<Agent>>,
    Query(q): Query<FileParams>,
) -> Result<Response, FilesError> {
    let path = path_of(&q)?;
    let work_dir = agent.config.work_dir.clone();
    let name = std::path::Path::new(&path)
        .file_name()
        .map(|n| n.to_string_lossy().replace('"', ""))
        .unwrap_or_else(|| "download".into());
    let (file, size) = blocking(move || files::open_file(&work_dir, &path)).await?;
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Mesos' `/files/browse`: the entries of a sandbox directory.
async fn browse(
    State(agent): State<Arc<Agent>>,
    Query(q): Query<FileParams>,
) -> Result<Json<Vec<files::Entry>>, FilesError> {
    let path = path_of(&q)?;
    let work_dir = agent.config.work_dir.clone();
    Ok(Json(
        blocking(move || files::browse(&work_dir, &path)).await?,
    ))
}

/// Mesos' `/monitor/statistics`: one entry per running task (its command
/// executor), with cpu time and memory read from its container.
async fn statistics(State(agent): State<Arc<Agent>>) -> Json<Value> {
    let tasks: Vec<TaskRecord> = agent
        .tasks()
        .tasks
        .values()
        .filter(|t| !t.state.is_terminal() && t.pid != 0)
        .cloned()
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        let Ok(usage) = agent.containerizer.usage(&t.container_id).await else {
            continue; // ended meanwhile
        };
        let task_id = t.task_id();
        let resources = Resources::from_proto(&t.info.resources).unwrap_or_default();
        let mem_limit = usage
            .mem_limit_bytes
            .unwrap_or((resources.scalar("mem") * 1024.0 * 1024.0) as u64);
        let command = t
            .info
            .command
            .as_ref()
            .map(|c| c.value.clone())
            .unwrap_or_default();
        out.push(json!({
            "executor_id": task_id,
            "executor_name": format!("Command Executor (Task: {task_id}) (Command: sh -c '{command}')"),
            "framework_id": t.framework_id,
            "source": task_id,
            "statistics": {
                "timestamp": std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
                "cpus_user_time_secs": usage.cpus_user_time_secs,
                "cpus_system_time_secs": usage.cpus_system_time_secs,
                "cpus_limit": resources.scalar("cpus"),
                "mem_rss_bytes": usage.mem_rss_bytes,
                "mem_limit_bytes": mem_limit,
                "processes": usage.processes,
            },
        }));
    }
    Json(Value::Array(out))
}
