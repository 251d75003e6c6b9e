//! Operator HTTP endpoints, in Mesos' shapes: `/master/state`, `/health`,
//! `/master/redirect`, `/metrics/snapshot`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use meseta_core::attributes::Attribute;
use meseta_core::{Resources, TaskStateExt};
use serde_json::{json, Value};

use crate::state::{MasterState, TaskEntry};
use crate::Master;

pub(crate) fn router(master: Arc<Master>) -> Router {
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/master/state", get(state))
        .route("/master/state.json", get(state))
        .route("/state", get(state))
        .route("/master/redirect", get(redirect))
        .route("/redirect", get(redirect))
        .route("/metrics/snapshot", get(metrics))
        .with_state(master)
}

fn task_json(t: &TaskEntry) -> Value {
    let statuses: Vec<Value> = t
        .statuses
        .iter()
        .map(|(s, ts)| json!({"state": s.mesos_name(), "timestamp": ts}))
        .collect();
    let id = t.info.task_id.as_ref().map(|i| i.value.clone()).unwrap_or_default();
    let mut v = json!({
        "id": id,
        "name": t.info.name,
        "framework_id": t.framework_id,
        "slave_id": t.agent_id,
        "state": t.state.mesos_name(),
        "resources": t.resources.to_mesos_json(),
        "statuses": statuses,
    });
    if let Some(pid) = t.latest.as_ref().map(|s| s.pid).filter(|p| *p != 0) {
        v["pid"] = json!(pid);
    }
    v
}

fn state_json(master: &Master, s: &MasterState) -> Value {
    let leader = master.leader_address();
    let (host, port) = master.address.rsplit_once(':').unwrap_or((&master.address, ""));
    let agents: Vec<Value> = s
        .agents
        .values()
        .map(|a| {
            let attributes: serde_json::Map<String, Value> = a
                .attributes
                .iter()
                .map(Attribute::from_proto)
                .map(|at| (at.name, json!(at.value)))
                .collect();
            json!({
                "id": a.id,
                "hostname": a.hostname,
                "pid": format!("slave(1)@{}", a.address),
                "address": a.address,
                "active": a.sender.is_some(),
                "registered_time": a.registered_at,
                "resources": a.total.to_mesos_json(),
                "used_resources": a.used.to_mesos_json(),
                "offered_resources": a.offered.to_mesos_json(),
                "unreserved_resources": a.total.filter_roles(&["*"]).to_mesos_json(),
                "attributes": attributes,
                "task_count": a.tasks.len(),
            })
        })
        .collect();
    let frameworks: Vec<Value> = s
        .frameworks
        .values()
        .map(|f| {
            let mut used = Resources::new();
            let mut tasks = Vec::new();
            for a in s.agents.values() {
                for t in a.tasks.values().filter(|t| t.framework_id == f.id) {
                    used = used.plus(&t.resources).unwrap_or(used);
                    tasks.push(task_json(t));
                }
            }
            let mut offered = Resources::new();
            let mut offers = Vec::new();
            for o in s.offers.values().filter(|o| o.framework_id == f.id) {
                offered = offered.plus(&o.resources).unwrap_or(offered);
                offers.push(json!({"id": o.id, "slave_id": o.agent_id, "resources": o.resources.to_mesos_json()}));
            }
            json!({
                "id": f.id,
                "name": f.info.name,
                "role": f.role,
                "principal": f.info.principal,
                "user": f.info.user,
                "hostname": f.info.hostname,
                "webui_url": f.info.webui_url,
                "failover_timeout": f.info.failover_timeout,
                "active": f.active(),
                "connected": f.active(),
                "suppressed": f.suppressed,
                "registered_time": f.registered_at,
                "used_resources": used.to_mesos_json(),
                "offered_resources": offered.to_mesos_json(),
                "tasks": tasks,
                "completed_tasks": f.completed.iter().map(task_json).collect::<Vec<_>>(),
                "offers": offers,
            })
        })
        .collect();
    let registry = master.raft.state().lock().map(|r| (r.agents.len(), r.frameworks.len())).unwrap_or((0, 0));
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "id": master.address,
        "pid": format!("master@{}", master.address),
        "hostname": host,
        "port": port.parse::<u16>().unwrap_or(0),
        "elected": master.raft.is_leader(),
        "leader": leader.clone().unwrap_or_default(),
        "leader_info": leader.as_ref().map(|l| {
            let (h, p) = l.rsplit_once(':').unwrap_or((l, ""));
            json!({"hostname": h, "port": p.parse::<u16>().unwrap_or(0)})
        }),
        "activated_slaves": s.agents.values().filter(|a| a.sender.is_some()).count(),
        "deactivated_slaves": s.agents.values().filter(|a| a.sender.is_none()).count(),
        "registered_agents": registry.0,
        "registered_frameworks": registry.1,
        "slaves": agents,
        "frameworks": frameworks,
        "completed_frameworks": [],
        "unregistered_frameworks": [],
    })
}

async fn state(State(master): State<Arc<Master>>) -> Json<Value> {
    let s = master.state();
    Json(state_json(&master, &s))
}

async fn redirect(State(master): State<Arc<Master>>) -> Response {
    match master.leader_address() {
        Some(leader) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("http://{leader}"))],
        )
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no leading master is elected").into_response(),
    }
}

async fn metrics(State(master): State<Arc<Master>>) -> Json<Value> {
    let s = master.state();
    let m = &s.metrics;
    let tasks: Vec<&TaskEntry> = s.agents.values().flat_map(|a| a.tasks.values()).collect();
    let count = |name: &str| tasks.iter().filter(|t| t.state.mesos_name() == name).count();
    let runs = m.allocation_runs.max(1) as f64;
    Json(json!({
        "master/elected": if master.raft.is_leader() { 1 } else { 0 },
        "master/slaves_active": s.agents.values().filter(|a| a.sender.is_some()).count(),
        "master/slaves_disconnected": s.agents.values().filter(|a| a.sender.is_none()).count(),
        "master/frameworks_active": s.frameworks.values().filter(|f| f.active()).count(),
        "master/tasks_staging": count("TASK_STAGING"),
        "master/tasks_starting": count("TASK_STARTING"),
        "master/tasks_running": count("TASK_RUNNING"),
        "master/tasks_launched": m.tasks_launched,
        "master/outstanding_offers": s.offers.len(),
        "master/offers_sent": m.offers_sent,
        "master/offers_declined": m.offers_declined,
        "master/offers_rescinded": m.offers_rescinded,
        "master/messages_status_update": m.status_updates,
        "master/invalid_status_updates": m.invalid_status_updates,
        "allocator/allocation_runs": m.allocation_runs,
        "allocator/allocation_run_ms": m.allocation_time_last.as_secs_f64() * 1000.0,
        "allocator/allocation_run_ms/mean": m.allocation_time_total.as_secs_f64() * 1000.0 / runs,
    }))
}
