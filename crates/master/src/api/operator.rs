//! `POST /api/v1`: Mesos' v1 operator API on the master.
//!
//! Calls (`mesos.v1.master.Call`, JSON or protobuf like the scheduler
//! API): GET_HEALTH, GET_FLAGS, GET_VERSION, GET_METRICS and GET_MASTER are
//! answered by any master; GET_STATE, GET_AGENTS, GET_FRAMEWORKS,
//! GET_EXECUTORS, GET_TASKS, GET_ROLES, GET_MAINTENANCE_STATUS, TEARDOWN
//! and SUBSCRIBE by the leader (a follower answers 307 to it). Other calls
//! answer 400 naming what to use instead.
//!
//! SUBSCRIBE answers a RecordIO stream: SUBSCRIBED with the whole state,
//! then TASK_ADDED, TASK_UPDATED, AGENT_ADDED, AGENT_REMOVED,
//! FRAMEWORK_ADDED, FRAMEWORK_UPDATED, FRAMEWORK_REMOVED as they happen,
//! and HEARTBEAT every 15 s. The snapshot and the subscription are taken
//! under one lock, so no change falls between them. A subscriber that
//! falls far behind, or a master that stops leading, ends the stream; the
//! client subscribes again (to the leader) and gets a fresh snapshot.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use meseta_proto::mesos::v1 as m;
use meseta_proto::mesos::{recordio, Encoding};
use mr::response as r;
use tokio::sync::broadcast::error::RecvError;

use m::master as mr;

use super::mesos::{
    agent_info_out, framework_info_out, master_info_out, offer_out, resources_out, task_out,
    task_status_out,
};
use super::{encodings, mesos_error, plain};
use crate::error::CallError;
use crate::state::{AgentEntry, ClusterEvent, FrameworkEntry, FrameworkView, MasterState};
use crate::Master;

/// The endpoint's path.
pub(crate) const PATH: &str = "/api/v1";

/// How often an operator stream gets HEARTBEAT.
const HEARTBEAT: Duration = Duration::from_secs(15);

pub(crate) fn router() -> Router<Arc<Master>> {
    Router::new().route(PATH, post(operator))
}

fn time_info(secs: f64) -> m::TimeInfo {
    m::TimeInfo {
        nanoseconds: (secs * 1e9) as i64,
    }
}

fn agent_out(a: &AgentEntry) -> r::get_agents::Agent {
    let info = meseta_proto::v1::AgentInfo {
        hostname: a.hostname.clone(),
        address: a.address.clone(),
        resources: a.total.to_proto(),
        attributes: a.attributes.clone(),
        id: Some(meseta_proto::v1::AgentId {
            value: a.id.clone(),
        }),
    };
    let mut allocated = a.used.clone();
    let _ = allocated.add_all(&a.offered);
    r::get_agents::Agent {
        agent_info: agent_info_out(&info),
        active: a.sender.is_some(),
        deactivated: Some(a.deactivated),
        version: super::MESOS_VERSION.to_string(),
        pid: Some(format!("slave(1)@{}", a.address)),
        registered_time: Some(time_info(a.registered_at)),
        reregistered_time: None,
        total_resources: resources_out(&a.total.to_proto(), None),
        allocated_resources: resources_out(&allocated.to_proto(), None),
        offered_resources: resources_out(&a.offered.to_proto(), None),
        drain_info: a.drain.as_ref().map(|d| m::DrainInfo {
            state: if a.tasks.is_empty() {
                m::DrainState::Drained
            } else {
                m::DrainState::Draining
            } as i32,
            config: m::DrainConfig {
                max_grace_period: d.max_grace_period.map(|g| m::DurationInfo {
                    nanoseconds: (g * 1e9) as i64,
                }),
                mark_gone: Some(d.mark_gone),
            },
        }),
    }
}

fn framework_view_out(v: &FrameworkView) -> r::get_frameworks::Framework {
    r::get_frameworks::Framework {
        framework_info: framework_info_out(&v.info),
        active: v.active,
        connected: v.active,
        recovered: false,
        registered_time: Some(time_info(v.registered_at)),
        reregistered_time: None,
        unregistered_time: None,
        offers: Vec::new(),
        inverse_offers: Vec::new(),
        allocated_resources: Vec::new(),
        offered_resources: Vec::new(),
    }
}

fn framework_out(s: &MasterState, f: &FrameworkEntry) -> r::get_frameworks::Framework {
    let mut out = framework_view_out(&f.view());
    let mut offered = meseta_core::Resources::new();
    for o in s.offers.values().filter(|o| o.framework_id == f.id) {
        let _ = offered.add_all(&o.resources);
        let agent = s.agents.get(&o.agent_id);
        let offer = meseta_proto::v1::Offer {
            id: Some(meseta_proto::v1::OfferId {
                value: o.id.clone(),
            }),
            framework_id: Some(meseta_proto::v1::FrameworkId {
                value: f.id.clone(),
            }),
            agent_id: Some(meseta_proto::v1::AgentId {
                value: o.agent_id.clone(),
            }),
            hostname: agent.map(|a| a.hostname.clone()).unwrap_or_default(),
            resources: o.resources.to_proto(),
            attributes: agent.map(|a| a.attributes.clone()).unwrap_or_default(),
            agent_address: agent.map(|a| a.address.clone()).unwrap_or_default(),
        };
        out.offers.push(offer_out(&offer, &f.role));
    }
    let mut used = meseta_core::Resources::new();
    for t in s.agents.values().flat_map(|a| a.tasks.values()) {
        if t.framework_id == f.id {
            let _ = used.add_all(&t.resources);
        }
    }
    let _ = used.add_all(&offered);
    out.allocated_resources = resources_out(&used.to_proto(), Some(&f.role));
    out.offered_resources = resources_out(&offered.to_proto(), Some(&f.role));
    out
}

fn get_agents(s: &MasterState) -> r::GetAgents {
    r::GetAgents {
        agents: s.agents.values().map(agent_out).collect(),
        recovered_agents: Vec::new(),
    }
}

fn get_frameworks(s: &MasterState) -> r::GetFrameworks {
    r::GetFrameworks {
        frameworks: s.frameworks.values().map(|f| framework_out(s, f)).collect(),
        completed_frameworks: Vec::new(),
    }
}

fn role_of(s: &MasterState, framework_id: &str) -> Option<String> {
    s.frameworks.get(framework_id).map(|f| f.role.clone())
}

fn get_tasks(s: &MasterState) -> r::GetTasks {
    let mut tasks = Vec::new();
    let mut unreachable = Vec::new();
    for t in s.agents.values().flat_map(|a| a.tasks.values()) {
        let out = task_out(t, role_of(s, &t.framework_id).as_deref());
        if t.state == meseta_proto::v1::TaskState::TaskUnreachable {
            unreachable.push(out);
        } else {
            tasks.push(out);
        }
    }
    let completed = s
        .frameworks
        .values()
        .flat_map(|f| f.completed.iter().map(move |t| task_out(t, Some(&f.role))))
        .collect();
    r::GetTasks {
        pending_tasks: Vec::new(),
        tasks,
        unreachable_tasks: unreachable,
        completed_tasks: completed,
    }
}

fn get_state(s: &MasterState) -> r::GetState {
    r::GetState {
        get_tasks: Some(get_tasks(s)),
        get_executors: Some(r::GetExecutors {
            executors: Vec::new(),
        }),
        get_frameworks: Some(get_frameworks(s)),
        get_agents: Some(get_agents(s)),
    }
}

fn get_roles(s: &MasterState) -> r::GetRoles {
    r::GetRoles {
        roles: s
            .allocator
            .roles()
            .into_iter()
            .map(|role| {
                let frameworks = s
                    .frameworks
                    .values()
                    .filter(|f| f.role == role.name)
                    .map(|f| m::FrameworkId {
                        value: f.id.clone(),
                    })
                    .collect();
                let resources = role
                    .allocated
                    .iter()
                    .map(|(name, v)| m::Resource {
                        name: name.clone(),
                        r#type: m::value::Type::Scalar as i32,
                        scalar: Some(m::value::Scalar { value: *v }),
                        ..Default::default()
                    })
                    .collect();
                m::Role {
                    name: role.name.clone(),
                    weight: role.weight,
                    frameworks,
                    resources,
                }
            })
            .collect(),
    }
}

fn flags(master: &Master) -> r::GetFlags {
    let c = &master.config;
    let flag = |name: &str, value: String| m::Flag {
        name: name.to_string(),
        value: Some(value),
    };
    let weights: Vec<String> = c
        .allocator
        .weights
        .iter()
        .map(|(role, w)| format!("{role}={w}"))
        .collect();
    r::GetFlags {
        flags: vec![
            flag("listen", c.listen.to_string()),
            flag("advertise", master.address.clone()),
            flag("masters", c.masters.join(",")),
            flag("data_dir", c.data_dir.display().to_string()),
            flag(
                "agent_ping_timeout",
                format!("{}secs", c.agent_ping_timeout.as_secs_f64()),
            ),
            flag(
                "max_agent_ping_timeouts",
                c.max_agent_ping_timeouts.to_string(),
            ),
            flag(
                "agent_removal_timeout",
                format!("{}secs", c.agent_removal_timeout.as_secs_f64()),
            ),
            flag(
                "agent_reregister_timeout",
                format!("{}secs", c.agent_reregister_timeout.as_secs_f64()),
            ),
            flag("weights", weights.join(",")),
            flag(
                "offer_timeout",
                c.allocator
                    .offer_timeout
                    .map(|t| format!("{}secs", t.as_secs_f64()))
                    .unwrap_or_default(),
            ),
        ],
    }
}

fn metrics(master: &Master) -> r::GetMetrics {
    let values = super::endpoints::metrics_json(master);
    let metrics = values
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(name, v)| {
                    v.as_f64().map(|value| m::Metric {
                        name: name.clone(),
                        value: Some(value),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    r::GetMetrics { metrics }
}

fn respond(encoding: Encoding, response: mr::Response) -> Response {
    match encoding.encode(&response) {
        Ok(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoding.content_type())],
            bytes,
        )
            .into_response(),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn operator(State(master): State<Arc<Master>>, headers: HeaderMap, body: Bytes) -> Response {
    use mr::call::Type as T;
    use mr::response::Type as R;
    let (request, encoding) = match encodings(&headers) {
        Ok(e) => e,
        Err((status, message)) => return plain(status, message),
    };
    let call: mr::Call = match request.decode(&body) {
        Ok(c) => c,
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("failed to parse the call: {e}"),
            )
        }
    };
    let kind = call.r#type();
    // Calls about the cluster's state are the leader's to answer.
    let leader_only = !matches!(
        kind,
        T::GetHealth | T::GetFlags | T::GetVersion | T::GetMetrics | T::GetMaster | T::Unknown
    );
    if leader_only {
        if let Err(e) = master.leading() {
            return mesos_error(&e, PATH);
        }
    }
    let mut out = mr::Response::default();
    match kind {
        T::Unknown => {
            return plain(
                StatusCode::BAD_REQUEST,
                "unknown call type: 'type' must name an operator call (GET_STATE, SUBSCRIBE, …)",
            )
        }
        T::GetHealth => {
            out.r#type = Some(R::GetHealth as i32);
            out.get_health = Some(r::GetHealth { healthy: true });
        }
        T::GetFlags => {
            out.r#type = Some(R::GetFlags as i32);
            out.get_flags = Some(flags(&master));
        }
        T::GetVersion => {
            out.r#type = Some(R::GetVersion as i32);
            out.get_version = Some(r::GetVersion {
                version_info: version_info(),
            });
        }
        T::GetMetrics => {
            out.r#type = Some(R::GetMetrics as i32);
            out.get_metrics = Some(metrics(&master));
        }
        T::GetMaster => {
            out.r#type = Some(R::GetMaster as i32);
            out.get_master = Some(r::GetMaster {
                master_info: master
                    .leader_address()
                    .map(|l| master_info_out(&l))
                    .or_else(|| Some(master_info_out(&master.address))),
                start_time: Some(master.started_at),
                elected_time: None,
            });
        }
        T::GetState => {
            out.r#type = Some(R::GetState as i32);
            out.get_state = Some(get_state(&master.state()));
        }
        T::GetAgents => {
            out.r#type = Some(R::GetAgents as i32);
            out.get_agents = Some(get_agents(&master.state()));
        }
        T::GetFrameworks => {
            out.r#type = Some(R::GetFrameworks as i32);
            out.get_frameworks = Some(get_frameworks(&master.state()));
        }
        T::GetExecutors => {
            out.r#type = Some(R::GetExecutors as i32);
            out.get_executors = Some(r::GetExecutors {
                executors: Vec::new(),
            });
        }
        T::GetTasks => {
            out.r#type = Some(R::GetTasks as i32);
            out.get_tasks = Some(get_tasks(&master.state()));
        }
        T::GetRoles => {
            out.r#type = Some(R::GetRoles as i32);
            out.get_roles = Some(get_roles(&master.state()));
        }
        T::GetMaintenanceStatus => {
            out.r#type = Some(R::GetMaintenanceStatus as i32);
            out.get_maintenance_status = Some(r::GetMaintenanceStatus {
                status: mr::ClusterStatus::default(),
            });
        }
        T::Teardown => {
            let Some(teardown) = call.teardown else {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "a TEARDOWN call must carry 'teardown'",
                );
            };
            return match master
                .teardown_framework(&teardown.framework_id.value)
                .await
            {
                Ok(()) => StatusCode::OK.into_response(),
                Err(e) => mesos_error(&e, PATH),
            };
        }
        T::DrainAgent => {
            let Some(drain) = call.drain_agent else {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "a DRAIN_AGENT call must carry 'drain_agent'",
                );
            };
            let grace = drain.max_grace_period.as_ref().map(|d| {
                d.seconds() as f64 + f64::from(d.nanos()) / 1e9 + d.nanoseconds() as f64 / 1e9
            });
            return match master
                .drain_agent(&drain.agent_id.value, grace, drain.mark_gone())
                .await
            {
                Ok(()) => StatusCode::OK.into_response(),
                Err(e) => mesos_error(&e, PATH),
            };
        }
        T::DeactivateAgent => {
            let Some(d) = call.deactivate_agent else {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "a DEACTIVATE_AGENT call must carry 'deactivate_agent'",
                );
            };
            return match master.deactivate_agent(&d.agent_id.value).await {
                Ok(()) => StatusCode::OK.into_response(),
                Err(e) => mesos_error(&e, PATH),
            };
        }
        T::ReactivateAgent => {
            let Some(r) = call.reactivate_agent else {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "a REACTIVATE_AGENT call must carry 'reactivate_agent'",
                );
            };
            return match master.reactivate_agent(&r.agent_id.value).await {
                Ok(()) => StatusCode::OK.into_response(),
                Err(e) => mesos_error(&e, PATH),
            };
        }
        T::Subscribe => return subscribe(master, encoding),
        other => {
            let hint = match other {
                T::GetWeights | T::UpdateWeights => "; use GET/PUT /weights",
                T::GetQuota | T::SetQuota | T::RemoveQuota | T::UpdateQuota => {
                    "; use GET/POST /quota and DELETE /quota/{role}"
                }
                _ => "",
            };
            return mesos_error(
                &CallError::Unsupported(format!(
                    "operator call {} is not supported by meseta{hint}",
                    other.as_str_name()
                )),
                PATH,
            );
        }
    }
    respond(encoding, out)
}

fn version_info() -> m::VersionInfo {
    m::VersionInfo {
        version: super::MESOS_VERSION.to_string(),
        build_date: None,
        build_time: None,
        build_user: None,
        git_sha: None,
        git_branch: None,
        git_tag: Some(format!("meseta-{}", env!("CARGO_PKG_VERSION"))),
    }
}

/// A cluster change as Mesos' operator event.
fn event_out(e: &ClusterEvent) -> mr::Event {
    use mr::event as me;
    use mr::event::Type as T;
    let mut out = mr::Event::default();
    match e {
        ClusterEvent::TaskAdded(t) => {
            out.r#type = Some(T::TaskAdded as i32);
            out.task_added = Some(me::TaskAdded {
                task: task_out(t, None),
            });
        }
        ClusterEvent::TaskUpdated {
            framework_id,
            status,
        } => {
            let status = task_status_out(status);
            out.r#type = Some(T::TaskUpdated as i32);
            out.task_updated = Some(me::TaskUpdated {
                framework_id: m::FrameworkId {
                    value: framework_id.clone(),
                },
                state: status.state,
                status,
            });
        }
        ClusterEvent::AgentAdded {
            info,
            registered_at,
        } => {
            out.r#type = Some(T::AgentAdded as i32);
            out.agent_added = Some(me::AgentAdded {
                agent: r::get_agents::Agent {
                    agent_info: agent_info_out(info),
                    active: true,
                    deactivated: Some(false),
                    version: super::MESOS_VERSION.to_string(),
                    pid: Some(format!("slave(1)@{}", info.address)),
                    registered_time: Some(time_info(*registered_at)),
                    reregistered_time: None,
                    total_resources: resources_out(&info.resources, None),
                    allocated_resources: Vec::new(),
                    offered_resources: Vec::new(),
                    drain_info: None,
                },
            });
        }
        ClusterEvent::AgentRemoved { agent_id } => {
            out.r#type = Some(T::AgentRemoved as i32);
            out.agent_removed = Some(me::AgentRemoved {
                agent_id: m::AgentId {
                    value: agent_id.clone(),
                },
            });
        }
        ClusterEvent::FrameworkAdded(v) => {
            out.r#type = Some(T::FrameworkAdded as i32);
            out.framework_added = Some(me::FrameworkAdded {
                framework: framework_view_out(v),
            });
        }
        ClusterEvent::FrameworkUpdated(v) => {
            out.r#type = Some(T::FrameworkUpdated as i32);
            out.framework_updated = Some(me::FrameworkUpdated {
                framework: framework_view_out(v),
            });
        }
        ClusterEvent::FrameworkRemoved(info) => {
            out.r#type = Some(T::FrameworkRemoved as i32);
            out.framework_removed = Some(me::FrameworkRemoved {
                framework_info: framework_info_out(info),
            });
        }
    }
    out
}

fn subscribe(master: Arc<Master>, encoding: Encoding) -> Response {
    let (snapshot, mut events) = {
        let s = master.state();
        (get_state(&s), s.events.subscribe())
    };
    tracing::info!("operator subscribed to the master's events");
    let first = mr::Event {
        r#type: Some(mr::event::Type::Subscribed as i32),
        subscribed: Some(mr::event::Subscribed {
            get_state: Some(snapshot),
            heartbeat_interval_seconds: Some(HEARTBEAT.as_secs_f64()),
        }),
        ..Default::default()
    };
    let frame = move |e: &mr::Event| -> Option<Bytes> {
        match encoding.encode(e) {
            Ok(b) => Some(Bytes::from(recordio::frame(&b))),
            Err(err) => {
                tracing::error!(error = %err, "an operator event could not be encoded; skipped");
                None
            }
        }
    };
    let stream = async_stream::stream! {
        if let Some(b) = frame(&first) {
            yield Ok::<_, Infallible>(b);
        }
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        loop {
            tokio::select! {
                received = events.recv() => match received {
                    Ok(e) => if let Some(b) = frame(&event_out(&e)) { yield Ok(b) },
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "operator subscriber fell behind; closing its stream");
                        break;
                    }
                    Err(RecvError::Closed) => break,
                },
                _ = heartbeat.tick() => {
                    let hb = mr::Event { r#type: Some(mr::event::Type::Heartbeat as i32), ..Default::default() };
                    if let Some(b) = frame(&hb) { yield Ok(b) }
                }
            }
        }
    };
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
