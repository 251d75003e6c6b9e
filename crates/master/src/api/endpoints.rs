//! Operator HTTP endpoints, in Mesos' shapes: `/master/state` (and
//! `/state.json`, `/state`), `/master/state-summary`, `/master/slaves`,
//! `/master/frameworks`, `/master/tasks`, `/master/roles`, `/version`,
//! `/health`, `/master/redirect`, `/metrics/snapshot`; weights, quota and
//! Raft membership. Writes go through the call handler.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use meseta_core::attributes::Attribute;
use meseta_core::{Resources, TaskStateExt};
use serde_json::{json, Value};

use crate::error::CallError;
use crate::state::{MasterState, TaskEntry};
use crate::Master;

pub(crate) fn router() -> Router<Arc<Master>> {
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/master/state", get(state))
        .route("/master/state.json", get(state))
        .route("/state", get(state))
        .route("/state.json", get(state))
        .route("/master/state-summary", get(state_summary))
        .route("/state-summary", get(state_summary))
        .route("/master/slaves", get(slaves))
        .route("/slaves", get(slaves))
        .route("/master/frameworks", get(frameworks))
        .route("/frameworks", get(frameworks))
        .route("/master/tasks", get(tasks))
        .route("/tasks", get(tasks))
        .route("/version", get(version))
        .route("/master/redirect", get(redirect))
        .route("/redirect", get(redirect))
        .route("/metrics/snapshot", get(metrics))
        .merge(allocator_routes())
        .route(
            "/master/membership",
            get(membership).post(change_membership),
        )
}

fn task_json(t: &TaskEntry) -> Value {
    let statuses: Vec<Value> = t
        .statuses
        .iter()
        .map(|(s, ts)| json!({"state": s.mesos_name(), "timestamp": ts}))
        .collect();
    let id = t
        .info
        .task_id
        .as_ref()
        .map(|i| i.value.clone())
        .unwrap_or_default();
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

/// Mesos' `DrainInfo`: DRAINING while tasks are left, then DRAINED; the
/// config as the operator gave it (`max_grace_period` as a DurationInfo).
fn drain_info_json(drain: &crate::registry::DrainRecord, empty: bool) -> Value {
    let mut config = json!({"mark_gone": drain.mark_gone});
    if let Some(g) = drain.max_grace_period {
        config["max_grace_period"] = json!({"nanoseconds": (g * 1e9) as i64});
    }
    json!({
        "state": if empty { "DRAINED" } else { "DRAINING" },
        "config": config,
    })
}

fn state_json(master: &Master, s: &MasterState) -> Value {
    let leader = master.leader_address();
    let (host, port) = master
        .address
        .rsplit_once(':')
        .unwrap_or((&master.address, ""));
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
            let mut agent = json!({
                "id": a.id,
                "hostname": a.hostname,
                "pid": format!("slave(1)@{}", a.address),
                "address": a.address,
                "active": a.sender.is_some(),
                "deactivated": a.deactivated,
                "registered_time": a.registered_at,
                "resources": a.total.to_mesos_json(),
                "used_resources": a.used.to_mesos_json(),
                "offered_resources": a.offered.to_mesos_json(),
                "unreserved_resources": a.total.filter_roles(&["*"]).to_mesos_json(),
                "attributes": attributes,
                "task_count": a.tasks.len(),
            });
            if let Some(drain) = &a.drain {
                agent["drain_info"] = drain_info_json(drain, a.tasks.is_empty());
            }
            if let Some(since) = a.unreachable_since {
                agent["unreachable_time"] = json!({"nanoseconds": (since * 1e9) as i64});
            }
            agent
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
    let registry = master
        .raft
        .state()
        .lock()
        .map(|r| (r.agents.len(), r.frameworks.len()))
        .unwrap_or((0, 0));
    json!({
        "version": crate::api::MESOS_VERSION,
        "meseta_version": env!("CARGO_PKG_VERSION"),
        "id": master.address,
        "pid": format!("master@{}", master.address),
        "hostname": host,
        "port": port.parse::<u16>().unwrap_or(0),
        "elected": master.raft.is_leader(),
        "start_time": master.started_at,
        "leader": leader.as_ref().map(|l| format!("master@{l}")).unwrap_or_default(),
        "leader_info": leader
            .as_ref()
            .and_then(|l| meseta_proto::mesos::to_json(&crate::api::mesos::master_info_out(l)).ok()),
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
    Json(state_value(&master))
}

/// `/master/state` as a value (the UI renders from it).
pub(crate) fn state_value(master: &Master) -> Value {
    let s = master.state();
    let mut v = state_json(master, &s);
    add_allocation_json(&mut v, &s);
    v
}

/// `/master/state-summary`: agents and frameworks without their tasks, with
/// per-state task counts (what dashboards poll).
async fn state_summary(State(master): State<Arc<Master>>) -> Json<Value> {
    let s = master.state();
    let full = state_json(&master, &s);
    let mut counts: std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<&'static str, u64>,
    > = Default::default();
    for a in s.agents.values() {
        for t in a.tasks.values() {
            *counts
                .entry(t.framework_id.clone())
                .or_default()
                .entry(t.state.mesos_name())
                .or_default() += 1;
            *counts
                .entry(a.id.clone())
                .or_default()
                .entry(t.state.mesos_name())
                .or_default() += 1;
        }
    }
    let with_counts = |items: &Value, drop: &[&str]| -> Value {
        let list = items.as_array().cloned().unwrap_or_default();
        Value::Array(
            list.into_iter()
                .map(|mut v| {
                    for d in drop {
                        if let Some(o) = v.as_object_mut() {
                            o.remove(*d);
                        }
                    }
                    let id = v["id"].as_str().unwrap_or_default().to_string();
                    for state in TASK_STATE_NAMES {
                        let n = counts
                            .get(&id)
                            .and_then(|c| c.get(state))
                            .copied()
                            .unwrap_or(0);
                        v[*state] = json!(n);
                    }
                    v
                })
                .collect(),
        )
    };
    Json(json!({
        "hostname": full["hostname"],
        "cluster": "meseta",
        "leader": full["leader"],
        "slaves": with_counts(&full["slaves"], &[]),
        "frameworks": with_counts(&full["frameworks"], &["tasks", "completed_tasks", "offers"]),
    }))
}

/// Task states by Mesos name, for per-state counts.
const TASK_STATE_NAMES: &[&str] = &[
    "TASK_STAGING",
    "TASK_STARTING",
    "TASK_RUNNING",
    "TASK_KILLING",
    "TASK_FINISHED",
    "TASK_KILLED",
    "TASK_FAILED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_UNREACHABLE",
];

/// `/master/slaves`: `{"slaves": [...], "recovered_slaves": []}`.
async fn slaves(State(master): State<Arc<Master>>) -> Json<Value> {
    let s = master.state();
    let full = state_json(&master, &s);
    Json(json!({"slaves": full["slaves"], "recovered_slaves": []}))
}

/// `/master/frameworks`: `{"frameworks": [...], "completed_frameworks": [],
/// "unregistered_frameworks": []}`.
async fn frameworks(State(master): State<Arc<Master>>) -> Json<Value> {
    let s = master.state();
    let mut full = state_json(&master, &s);
    add_allocation_json(&mut full, &s);
    Json(json!({
        "frameworks": full["frameworks"],
        "completed_frameworks": [],
        "unregistered_frameworks": [],
    }))
}

/// `/master/tasks`: every known task, running and completed,
/// `{"tasks": [...]}` (Mesos' `limit`/`offset` paging is not applied).
async fn tasks(State(master): State<Arc<Master>>) -> Json<Value> {
    let s = master.state();
    let mut list: Vec<Value> = s
        .agents
        .values()
        .flat_map(|a| a.tasks.values())
        .map(task_json)
        .collect();
    for f in s.frameworks.values() {
        list.extend(f.completed.iter().map(task_json));
    }
    Json(json!({"tasks": list}))
}

/// `/version`: Mesos' shape with plain numbers in `version` (client
/// libraries parse it to pick the API they use).
async fn version() -> Json<Value> {
    Json(json!({
        "version": crate::api::MESOS_VERSION,
        "meseta_version": env!("CARGO_PKG_VERSION"),
        "build_date": "",
        "build_time": 0,
        "build_user": "",
    }))
}

async fn redirect(State(master): State<Arc<Master>>) -> Response {
    match master.leader_address() {
        Some(leader) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("http://{leader}"))],
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no leading master is elected",
        )
            .into_response(),
    }
}

async fn metrics(State(master): State<Arc<Master>>) -> Json<Value> {
    Json(metrics_json(&master))
}

/// `/metrics/snapshot`: Mesos' metric names, plus meseta's allocator ones.
pub(crate) fn metrics_json(master: &Master) -> Value {
    let s = master.state();
    let m = &s.metrics;
    let tasks: Vec<&TaskEntry> = s.agents.values().flat_map(|a| a.tasks.values()).collect();
    let count = |name: &str| {
        tasks
            .iter()
            .filter(|t| t.state.mesos_name() == name)
            .count()
    };
    let completed = |name: &str| {
        s.frameworks
            .values()
            .flat_map(|f| f.completed.iter())
            .filter(|t| t.state.mesos_name() == name)
            .count()
    };
    let runs = m.allocation_runs.max(1) as f64;
    let mut out = json!({
        "master/elected": if master.raft.is_leader() { 1 } else { 0 },
        "master/uptime_secs": (crate::state::now_secs() - master.started_at).max(0.0),
        "master/slaves_connected": s.agents.values().filter(|a| a.sender.is_some()).count(),
        "master/slaves_inactive": s.agents.values().filter(|a| a.sender.is_none()).count(),
        "master/frameworks_connected": s.frameworks.values().filter(|f| f.active()).count(),
        "master/frameworks_disconnected": s.frameworks.values().filter(|f| !f.active()).count(),
        "master/frameworks_inactive": s.frameworks.values().filter(|f| !f.active()).count(),
        "master/tasks_killing": count("TASK_KILLING"),
        "master/tasks_unreachable": count("TASK_UNREACHABLE"),
        "master/tasks_finished": completed("TASK_FINISHED"),
        "master/tasks_failed": completed("TASK_FAILED"),
        "master/tasks_killed": completed("TASK_KILLED"),
        "master/tasks_lost": completed("TASK_LOST"),
        "master/tasks_error": completed("TASK_ERROR"),
        "master/tasks_dropped": completed("TASK_DROPPED"),
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
    });
    add_allocator_metrics(&mut out, &s);
    out
}

// ---------------------------------------------------------------------------
// Raft membership (operator endpoints)

/// The Raft configuration as this master knows it.
pub(crate) fn membership_json(master: &Master) -> Value {
    let conf = master
        .raft
        .store()
        .and_then(|s| s.initial_state().ok())
        .map(|st| st.conf_state)
        .unwrap_or_default();
    let peers: serde_json::Map<String, Value> = master
        .raft
        .peers()
        .into_iter()
        .map(|(id, addr)| (id.to_string(), json!(addr)))
        .collect();
    json!({
        "id": master.raft.id(),
        "address": master.address,
        "leader": master.leader_address().unwrap_or_default(),
        "voters": conf.voters,
        "learners": conf.learners,
        "peers": peers,
    })
}

/// `GET /master/membership`: this master's id, the leader, voters, learners
/// and the address of every known node.
async fn membership(State(master): State<Arc<Master>>) -> Json<Value> {
    Json(membership_json(&master))
}

/// Body of `POST /master/membership`.
#[derive(serde::Deserialize)]
struct MembershipChange {
    /// `add` (a voter), `add_learner` or `remove`.
    action: String,
    id: u64,
    #[serde(default)]
    address: String,
}

/// `POST /master/membership {"action":"add"|"add_learner"|"remove","id":N,"address":"host:port"}`:
/// one Raft configuration change, answered by the leader once it is
/// committed (a follower answers 307 to the leader's endpoint). Replace a
/// dead master by removing its id, then adding the new master (started
/// with `--join --node-id M`) under a new id.
async fn change_membership(State(master): State<Arc<Master>>, body: axum::body::Bytes) -> Response {
    use meseta_proto::v1::conf_change_request::Kind;
    let change: MembershipChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"message": format!("invalid membership change: {e}")})),
            )
                .into_response()
        }
    };
    let kind = match change.action.as_str() {
        "add" | "add_voter" => Kind::AddVoter,
        "add_learner" => Kind::AddLearner,
        "remove" => Kind::RemoveNode,
        other => {
            return (StatusCode::BAD_REQUEST, Json(json!({"message": format!("unknown action '{other}': use add, add_learner or remove")}))).into_response()
        }
    };
    if !master.raft.is_leader() {
        return match master.leader_address() {
            Some(leader) => (
                StatusCode::TEMPORARY_REDIRECT,
                [(
                    header::LOCATION,
                    format!("http://{leader}/master/membership"),
                )],
            )
                .into_response(),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"message": "no leading master is elected"})),
            )
                .into_response(),
        };
    }
    let request = meseta_proto::v1::ConfChangeRequest {
        kind: kind as i32,
        node_id: change.id,
        address: change.address.clone(),
    };
    match master.raft.change_membership(request).await {
        Ok(resp) => {
            tracing::info!(action = %change.action, node = change.id, address = %change.address, voters = ?resp.voters, "master membership changed by operator");
            Json(json!({"voters": resp.voters, "learners": resp.learners})).into_response()
        }
        Err(e) => {
            let status = match &e {
                meseta_raftstore::RaftError::NotLeader { .. }
                | meseta_raftstore::RaftError::LeadershipLost { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::CONFLICT,
            };
            (status, Json(json!({"message": e.to_string()}))).into_response()
        }
    }
}

// ---------------------------------------------------------------------------
// Allocation: roles, weights and quota (operator endpoints, Mesos' shapes)
// ---------------------------------------------------------------------------

fn allocator_routes() -> Router<Arc<Master>> {
    Router::new()
        .route("/roles", get(roles))
        .route("/master/roles", get(roles))
        .route("/weights", get(get_weights).put(put_weights))
        .route("/master/weights", get(get_weights).put(put_weights))
        .route("/quota", get(get_quota).post(set_quota))
        .route("/master/quota", get(get_quota).post(set_quota))
        .route("/quota/{role}", axum::routing::delete(remove_quota))
        .route("/master/quota/{role}", axum::routing::delete(remove_quota))
}

/// Apply the weights and quotas of the replicated registry to the
/// allocator (a newly elected leader starts from `--weights`; what
/// operators set through the endpoints overrides it).
pub(crate) fn restore_allocator(master: &Master) {
    let (weights, quotas) = match master.raft.state().lock() {
        Ok(r) => (r.weights.clone(), r.quotas.clone()),
        Err(p) => {
            let r = p.into_inner();
            (r.weights.clone(), r.quotas.clone())
        }
    };
    let mut s = master.state();
    if let Err(e) = s.allocator.set_weights(&weights) {
        tracing::warn!(error = %e, "the registry holds weights the allocator refuses; keeping the previous ones");
    }
    for (role, text) in quotas {
        let applied = Resources::parse(&text)
            .map_err(|e| e.to_string())
            .and_then(|g| {
                s.allocator
                    .set_quota(&role, Some(g))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = applied {
            tracing::warn!(role = %role, quota = %text, error = %e, "the registry holds a quota the allocator refuses");
        }
    }
    if !s.allocator.weights().is_empty() || !s.allocator.quotas().is_empty() {
        tracing::info!(weights = ?s.allocator.weights(), quotas = s.allocator.quotas().len(), "allocator weights and quotas restored from the registry");
    }
}

pub(crate) fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"message": message.into()}))).into_response()
}

/// A refused operator call as `{"message"}` with the status that fits.
fn call_error_response(e: &CallError) -> Response {
    error_response(super::status_of(e), e.to_string())
}

/// Writes go to the leader: a follower redirects (307) like Mesos does.
fn leader_only(master: &Master, path: &str) -> Option<Response> {
    if master.raft.is_leader() {
        return None;
    }
    Some(match master.leader_address() {
        Some(leader) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("http://{leader}{path}"))],
        )
            .into_response(),
        None => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "no leading master is elected",
        ),
    })
}

fn scalars_json(map: &std::collections::BTreeMap<String, f64>) -> Value {
    Value::Object(map.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

/// Per framework: used + offered (`allocated_resources`) and its dominant
/// share; per role: allocated, offered, dominant share, weight, quota.
fn add_allocation_json(v: &mut Value, s: &MasterState) {
    if let Some(frameworks) = v.get_mut("frameworks").and_then(Value::as_array_mut) {
        for f in frameworks.iter_mut() {
            let id = f
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let share = s.allocator.framework_share(&id).unwrap_or(0.0);
            let allocated = s.allocator.framework_allocated(&id).unwrap_or_default();
            f["allocated_resources"] = scalars_json(&allocated);
            f["dominant_share"] = json!(share);
        }
    }
    v["roles"] = roles_json(s);
}

fn roles_json(s: &MasterState) -> Value {
    let roles: Vec<Value> = s
        .allocator
        .roles()
        .into_iter()
        .map(|r| {
            let members: Vec<&str> = s
                .frameworks
                .values()
                .filter(|f| f.role == r.name)
                .map(|f| f.id.as_str())
                .collect();
            let mut offered = Resources::new();
            for o in s.offers.values().filter(|o| members.contains(&o.framework_id.as_str())) {
                let _ = offered.add_all(&o.resources);
            }
            json!({
                "name": r.name,
                "weight": r.weight,
                "frameworks": members,
                "allocated": scalars_json(&r.allocated),
                "offered": offered.to_mesos_json(),
                "dominant_share": r.dominant_share,
                "weighted_share": r.weighted_share,
                "quota": r.quota.as_ref().map(|q| json!({"role": r.name, "guarantee": q.to_mesos_json()})),
            })
        })
        .collect();
    json!(roles)
}

async fn roles(State(master): State<Arc<Master>>) -> Json<Value> {
    let s = master.state();
    Json(json!({"roles": roles_json(&s)}))
}

async fn get_weights(State(master): State<Arc<Master>>) -> Json<Value> {
    let s = master.state();
    let weights: Vec<Value> = s
        .allocator
        .weights()
        .into_iter()
        .map(|(role, weight)| json!({"role": role, "weight": weight}))
        .collect();
    Json(json!(weights))
}

/// `PUT /weights` with Mesos' body `[{"role": "a", "weight": 2.0}, …]`
/// (or `{"a": 2.0, …}`): validated, replicated, then applied.
async fn put_weights(State(master): State<Arc<Master>>, body: axum::body::Bytes) -> Response {
    if let Some(r) = leader_only(&master, "/weights") {
        return r;
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("invalid weights JSON: {e}"),
            )
        }
    };
    let mut weights = std::collections::BTreeMap::new();
    let entries: Vec<(Option<&str>, Option<f64>)> = match &value {
        Value::Array(items) => items
            .iter()
            .map(|i| {
                (
                    i.get("role").and_then(Value::as_str),
                    i.get("weight").and_then(Value::as_f64),
                )
            })
            .collect(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (Some(k.as_str()), v.as_f64()))
            .collect(),
        _ => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "weights must be an array of {role, weight}",
            )
        }
    };
    for (role, weight) in entries {
        let (Some(role), Some(weight)) = (role, weight) else {
            return error_response(
                StatusCode::BAD_REQUEST,
                "every weight needs a string 'role' and a numeric 'weight'",
            );
        };
        weights.insert(role.to_string(), weight);
    }
    if let Err(e) = master.update_weights(weights).await {
        return call_error_response(&e);
    }
    StatusCode::OK.into_response()
}

fn quota_guarantee_json(q: &Resources) -> Value {
    let items: Vec<Value> = q
        .scalars_milli()
        .map(|(name, _, v)| json!({"name": name, "type": "SCALAR", "scalar": {"value": v as f64 / 1000.0}}))
        .collect();
    json!(items)
}

async fn get_quota(State(master): State<Arc<Master>>) -> Json<Value> {
    let s = master.state();
    let infos: Vec<Value> = s
        .allocator
        .quotas()
        .iter()
        .map(|(role, q)| json!({"role": role, "guarantee": quota_guarantee_json(q)}))
        .collect();
    Json(json!({"infos": infos}))
}

/// The guarantee of a quota request: Mesos' resource array
/// (`[{"name": "cpus", "type": "SCALAR", "scalar": {"value": 4}}]`) or
/// `--resources` text (`"cpus:4;mem:1024"`).
fn parse_guarantee(v: &Value) -> Result<Resources, String> {
    match v {
        Value::String(text) => Resources::parse(text).map_err(|e| e.to_string()),
        Value::Array(items) => {
            let mut out = Resources::new();
            for i in items {
                let name = i
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or("every guarantee needs a 'name'")?;
                let value = i
                    .get("scalar")
                    .and_then(|s| s.get("value"))
                    .and_then(Value::as_f64)
                    .ok_or_else(|| format!("guarantee '{name}' needs a scalar value"))?;
                if !(value.is_finite() && value >= 0.0) {
                    return Err(format!("guarantee '{name}' must be a non-negative number"));
                }
                let mut r = meseta_core::Resource::scalar(name, value);
                if let Some(role) = i.get("role").and_then(Value::as_str) {
                    r = r.with_role(role);
                }
                out.add(r).map_err(|e| e.to_string())?;
            }
            Ok(out)
        }
        _ => Err("'guarantee' must be an array of resources or resource text".into()),
    }
}

/// `POST /quota` with `{"role": "r", "guarantee": …}`.
async fn set_quota(State(master): State<Arc<Master>>, body: axum::body::Bytes) -> Response {
    if let Some(r) = leader_only(&master, "/quota") {
        return r;
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(StatusCode::BAD_REQUEST, format!("invalid quota JSON: {e}"))
        }
    };
    let Some(role) = value
        .get("role")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return error_response(StatusCode::BAD_REQUEST, "a quota request needs a 'role'");
    };
    let guarantee = match value.get("guarantee").map(parse_guarantee) {
        Some(Ok(g)) => g,
        Some(Err(e)) => return error_response(StatusCode::BAD_REQUEST, e),
        None => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "a quota request needs a 'guarantee'",
            )
        }
    };
    if let Err(e) = master.set_quota(&role, guarantee.clone()).await {
        return call_error_response(&e);
    }
    Json(json!({"role": role, "guarantee": quota_guarantee_json(&guarantee)})).into_response()
}

/// `DELETE /quota/{role}`.
async fn remove_quota(
    State(master): State<Arc<Master>>,
    axum::extract::Path(role): axum::extract::Path<String>,
) -> Response {
    if let Some(r) = leader_only(&master, &format!("/quota/{role}")) {
        return r;
    }
    if let Err(e) = master.remove_quota(&role).await {
        return call_error_response(&e);
    }
    StatusCode::OK.into_response()
}

fn add_allocator_metrics(v: &mut Value, s: &MasterState) {
    let (agents, frameworks) = s.allocator.counts();
    v["allocator/agents"] = json!(agents);
    v["allocator/frameworks"] = json!(frameworks);
    for r in s.allocator.roles() {
        v[format!("allocator/roles/{}/shares/dominant", r.name)] = json!(r.dominant_share);
        v[format!("allocator/roles/{}/weight", r.name)] = json!(r.weight);
    }
}
