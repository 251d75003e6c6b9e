//! Translation between Mesos' v1 messages (`mesos.v1.*`, what HTTP clients
//! send and read) and meseta's own (`meseta.v1.*`, what the call handler
//! speaks). Pure functions, no state: enums go by name (Mesos numbers its
//! task states and reasons differently), reservations map to meseta's one
//! role per resource, durations to seconds.

use meseta_proto::mesos::v1 as m;
use meseta_proto::v1 as pb;

use crate::error::CallError;

fn invalid(msg: impl Into<String>) -> CallError {
    CallError::Invalid(msg.into())
}

// ---------------------------------------------------------------------------
// Inbound: Mesos → meseta
// ---------------------------------------------------------------------------

/// The role a Mesos resource is reserved for ("*" when unreserved): the
/// innermost reservation of the refined form, else the legacy `role`.
fn resource_role(r: &m::Resource) -> String {
    if let Some(role) = r.reservations.last().and_then(|res| res.role.clone()) {
        return role;
    }
    r.role().to_string()
}

pub(crate) fn resource_in(r: &m::Resource) -> pb::Resource {
    pb::Resource {
        name: r.name.clone(),
        r#type: r.r#type,
        scalar: r.scalar.map(|s| pb::value::Scalar { value: s.value }),
        ranges: r.ranges.as_ref().map(ranges_in),
        set: r.set.as_ref().map(|s| pb::value::Set {
            item: s.item.clone(),
        }),
        role: resource_role(r),
    }
}

fn ranges_in(r: &m::value::Ranges) -> pb::value::Ranges {
    pb::value::Ranges {
        range: r
            .range
            .iter()
            .map(|x| pb::value::Range {
                begin: x.begin,
                end: x.end,
            })
            .collect(),
    }
}

fn labels_in(l: &m::Labels) -> pb::Labels {
    pb::Labels {
        labels: l
            .labels
            .iter()
            .map(|x| pb::Label {
                key: x.key.clone(),
                value: x.value().to_string(),
            })
            .collect(),
    }
}

/// A Mesos FrameworkInfo as meseta's: one role (`roles` may name at most
/// one, as meseta frameworks have a single role).
pub(crate) fn framework_info_in(f: &m::FrameworkInfo) -> Result<pb::FrameworkInfo, CallError> {
    let role = match f.roles.as_slice() {
        [] => f.role().to_string(),
        [one] => one.clone(),
        many => {
            return Err(invalid(format!(
                "framework_info.roles names {} roles; a meseta framework has one role",
                many.len()
            )))
        }
    };
    Ok(pb::FrameworkInfo {
        user: f.user.clone(),
        name: f.name.clone(),
        id: f.id.as_ref().map(|i| pb::FrameworkId {
            value: i.value.clone(),
        }),
        failover_timeout: f.failover_timeout(),
        checkpoint: f.checkpoint(),
        role,
        hostname: f.hostname().to_string(),
        principal: f.principal().to_string(),
        webui_url: f.webui_url().to_string(),
        labels: f.labels.as_ref().map(labels_in),
        capabilities: f
            .capabilities
            .iter()
            .filter_map(|c| {
                let name = c.r#type?;
                let name = m::framework_info::capability::Type::try_from(name)
                    .ok()?
                    .as_str_name();
                let t = pb::framework_info::capability::Type::from_str_name(name)?;
                Some(pb::framework_info::Capability { r#type: t as i32 })
            })
            .collect(),
    })
}

fn duration_secs(d: &m::DurationInfo) -> f64 {
    d.nanoseconds as f64 / 1e9
}

fn command_in(c: &m::CommandInfo) -> pb::CommandInfo {
    pb::CommandInfo {
        uris: c
            .uris
            .iter()
            .map(|u| pb::command_info::Uri {
                value: u.value.clone(),
                executable: u.executable(),
                extract: u.extract(),
                cache: u.cache(),
                output_file: u.output_file().to_string(),
            })
            .collect(),
        environment: c.environment.as_ref().map(|e| pb::Environment {
            variables: e
                .variables
                .iter()
                .map(|v| pb::environment::Variable {
                    name: v.name.clone(),
                    value: v.value().to_string(),
                })
                .collect(),
        }),
        shell: c.shell(),
        value: c.value().to_string(),
        arguments: c.arguments.clone(),
        user: c.user().to_string(),
    }
}

fn container_in(c: &m::ContainerInfo) -> pb::ContainerInfo {
    use m::container_info::docker_info::Network as MNet;
    use pb::container_info::docker_info::Network as Net;
    let kind = match m::container_info::Type::try_from(c.r#type) {
        Ok(m::container_info::Type::Docker) => pb::container_info::Type::Docker,
        _ => pb::container_info::Type::Mesos,
    };
    pb::ContainerInfo {
        r#type: kind as i32,
        volumes: c
            .volumes
            .iter()
            .map(|v| pb::Volume {
                container_path: v.container_path.clone(),
                host_path: v.host_path().to_string(),
                mode: match m::volume::Mode::try_from(v.mode) {
                    Ok(m::volume::Mode::Ro) => pb::volume::Mode::Ro,
                    _ => pb::volume::Mode::Rw,
                } as i32,
            })
            .collect(),
        hostname: c.hostname().to_string(),
        docker: c.docker.as_ref().map(|d| pb::container_info::DockerInfo {
            image: d.image.clone(),
            network: match d.network() {
                MNet::Host => Net::Host,
                MNet::Bridge => Net::Bridge,
                MNet::None => Net::None,
                MNet::User => Net::User,
            } as i32,
            port_mappings: d
                .port_mappings
                .iter()
                .map(|p| pb::container_info::docker_info::PortMapping {
                    host_port: p.host_port,
                    container_port: p.container_port,
                    protocol: p.protocol().to_string(),
                })
                .collect(),
            privileged: d.privileged(),
            parameters: d
                .parameters
                .iter()
                .map(|p| pb::container_info::docker_info::Parameter {
                    key: p.key.clone(),
                    value: p.value.clone(),
                })
                .collect(),
            force_pull_image: d.force_pull_image(),
            // Mesos names user networks in ContainerInfo.network_infos,
            // which this mapping does not carry.
            network_name: String::new(),
        }),
    }
}

fn health_check_in(h: &m::HealthCheck) -> pb::HealthCheck {
    pb::HealthCheck {
        delay_seconds: h.delay_seconds(),
        interval_seconds: h.interval_seconds(),
        timeout_seconds: h.timeout_seconds(),
        consecutive_failures: h.consecutive_failures(),
        grace_period_seconds: h.grace_period_seconds(),
        r#type: h.r#type.unwrap_or(0),
        command: h.command.as_ref().map(command_in),
        http: h.http.as_ref().map(|x| pb::health_check::HttpCheckInfo {
            scheme: x.scheme().to_string(),
            port: x.port,
            path: x.path().to_string(),
            statuses: x.statuses.clone(),
        }),
        tcp: h
            .tcp
            .as_ref()
            .map(|x| pb::health_check::TcpCheckInfo { port: x.port }),
        // A Mesos framework's check is one of Mesos' protocols.
        protocol: match pb::health_check::Type::try_from(h.r#type.unwrap_or(0)) {
            Ok(pb::health_check::Type::Command) => "COMMAND",
            Ok(pb::health_check::Type::Tcp) => "MESOS_TCP",
            Ok(pb::health_check::Type::Http | pb::health_check::Type::Https)
                if h.http.as_ref().is_some_and(|x| x.scheme() == "https") =>
            {
                "MESOS_HTTPS"
            }
            Ok(pb::health_check::Type::Http | pb::health_check::Type::Https) => "MESOS_HTTP",
            _ => "",
        }
        .to_string(),
        ignore_http1xx: false,
    }
}

/// A Mesos TaskInfo as meseta's. Tasks with a custom executor are refused:
/// meseta runs command tasks (and the tasks of a LAUNCH_GROUP) itself.
pub(crate) fn task_info_in(t: &m::TaskInfo) -> Result<pb::TaskInfo, CallError> {
    if t.executor.is_some() {
        return Err(CallError::Unsupported(format!(
            "task {}: custom executors are not supported; give the task a command",
            t.task_id.value
        )));
    }
    Ok(pb::TaskInfo {
        name: t.name.clone(),
        task_id: Some(pb::TaskId {
            value: t.task_id.value.clone(),
        }),
        agent_id: Some(pb::AgentId {
            value: t.agent_id.value.clone(),
        }),
        resources: t.resources.iter().map(resource_in).collect(),
        command: t.command.as_ref().map(command_in),
        container: t.container.as_ref().map(container_in),
        health_check: t.health_check.as_ref().map(health_check_in),
        kill_policy: t
            .kill_policy
            .as_ref()
            .and_then(|k| k.grace_period.as_ref())
            .map(|g| pb::KillPolicy {
                grace_period_seconds: duration_secs(g),
            }),
        labels: t.labels.as_ref().map(labels_in),
    })
}

fn offer_ids_in(ids: &[m::OfferId]) -> Vec<pb::OfferId> {
    ids.iter()
        .map(|o| pb::OfferId {
            value: o.value.clone(),
        })
        .collect()
}

fn filters_in(f: &Option<m::Filters>) -> Option<pb::Filters> {
    f.as_ref().map(|f| pb::Filters {
        refuse_seconds: f.refuse_seconds(),
    })
}

fn operation_in(op: &m::offer::Operation) -> Result<pb::offer::Operation, CallError> {
    use m::offer::operation::Type as T;
    use pb::offer::operation::Operation as O;
    let operation = match op.r#type() {
        T::Launch => {
            let launch = op
                .launch
                .as_ref()
                .ok_or_else(|| invalid("a LAUNCH operation without 'launch'"))?;
            O::Launch(pb::offer::operation::Launch {
                task_infos: launch
                    .task_infos
                    .iter()
                    .map(task_info_in)
                    .collect::<Result<_, _>>()?,
            })
        }
        T::LaunchGroup => {
            // The group's tasks run as command tasks of their own: meseta
            // has no default executor to share between them.
            let group = op
                .launch_group
                .as_ref()
                .ok_or_else(|| invalid("a LAUNCH_GROUP operation without 'launch_group'"))?;
            O::Launch(pb::offer::operation::Launch {
                task_infos: group
                    .task_group
                    .tasks
                    .iter()
                    .map(task_info_in)
                    .collect::<Result<_, _>>()?,
            })
        }
        T::Reserve => O::Reserve(pb::offer::operation::Reserve {
            resources: op
                .reserve
                .as_ref()
                .map(|r| r.resources.iter().map(resource_in).collect())
                .unwrap_or_default(),
        }),
        T::Unreserve => O::Unreserve(pb::offer::operation::Unreserve {
            resources: op
                .unreserve
                .as_ref()
                .map(|r| r.resources.iter().map(resource_in).collect())
                .unwrap_or_default(),
        }),
        other => {
            return Err(CallError::Unsupported(format!(
                "offer operation {} is not supported: meseta has no persistent volumes or disk profiles yet",
                other.as_str_name()
            )))
        }
    };
    Ok(pb::offer::Operation {
        operation: Some(operation),
    })
}

/// A Mesos scheduler call (not SUBSCRIBE) as meseta's. `Ok(None)` for a
/// call that needs nothing from the master (inverse offers: meseta never
/// makes any, so there is none to accept or decline).
pub(crate) fn call_in(call: m::scheduler::Call) -> Result<Option<pb::call::Call>, CallError> {
    use m::scheduler::call::Type as T;
    use pb::call::Call as C;
    fn need<T>(part: Option<T>, what: &str) -> Result<T, CallError> {
        part.ok_or_else(|| {
            invalid(format!(
                "a {what} call must carry '{}'",
                what.to_lowercase()
            ))
        })
    }
    let kind = call.r#type();
    Ok(Some(match kind {
        T::Unknown => {
            return Err(invalid(
                "unknown call type: 'type' must name a scheduler call (SUBSCRIBE, ACCEPT, …)",
            ))
        }
        T::Subscribe => {
            return Err(invalid(
                "SUBSCRIBE must be the first call of a stream, sent without Mesos-Stream-Id",
            ))
        }
        T::Teardown => C::Teardown(pb::call::Teardown {}),
        T::Accept => {
            let a = need(call.accept, "ACCEPT")?;
            C::Accept(pb::call::Accept {
                offer_ids: offer_ids_in(&a.offer_ids),
                operations: a
                    .operations
                    .iter()
                    .map(operation_in)
                    .collect::<Result<_, _>>()?,
                filters: filters_in(&a.filters),
            })
        }
        T::Decline => {
            let d = need(call.decline, "DECLINE")?;
            C::Decline(pb::call::Decline {
                offer_ids: offer_ids_in(&d.offer_ids),
                filters: filters_in(&d.filters),
            })
        }
        T::AcceptInverseOffers | T::DeclineInverseOffers => {
            let ids = call
                .accept_inverse_offers
                .map(|a| a.inverse_offer_ids)
                .or(call.decline_inverse_offers.map(|d| d.inverse_offer_ids))
                .unwrap_or_default();
            if let Some(id) = ids.first() {
                return Err(invalid(format!(
                    "inverse offer {} is unknown (meseta has no maintenance schedule, so it makes none)",
                    id.value
                )));
            }
            return Ok(None);
        }
        T::Revive => C::Revive(pb::call::Revive {
            roles: call.revive.map(|r| r.roles).unwrap_or_default(),
        }),
        T::Suppress => C::Suppress(pb::call::Suppress {
            roles: call.suppress.map(|r| r.roles).unwrap_or_default(),
        }),
        T::Kill => {
            let k = need(call.kill, "KILL")?;
            C::Kill(pb::call::Kill {
                task_id: Some(pb::TaskId {
                    value: k.task_id.value,
                }),
                agent_id: k.agent_id.map(|a| pb::AgentId { value: a.value }),
                kill_policy: k
                    .kill_policy
                    .and_then(|p| p.grace_period)
                    .map(|g| pb::KillPolicy {
                        grace_period_seconds: duration_secs(&g),
                    }),
            })
        }
        T::Shutdown => {
            let s = need(call.shutdown, "SHUTDOWN")?;
            C::Shutdown(pb::call::Shutdown {
                executor_id: Some(pb::ExecutorId {
                    value: s.executor_id.value,
                }),
                agent_id: Some(pb::AgentId {
                    value: s.agent_id.value,
                }),
            })
        }
        T::Acknowledge => {
            let a = need(call.acknowledge, "ACKNOWLEDGE")?;
            C::Acknowledge(pb::call::Acknowledge {
                agent_id: Some(pb::AgentId {
                    value: a.agent_id.value,
                }),
                task_id: Some(pb::TaskId {
                    value: a.task_id.value,
                }),
                uuid: a.uuid,
            })
        }
        T::Reconcile => {
            let r = call.reconcile.unwrap_or_default();
            C::Reconcile(pb::call::Reconcile {
                tasks: r
                    .tasks
                    .into_iter()
                    .map(|t| pb::call::reconcile::Task {
                        task_id: Some(pb::TaskId {
                            value: t.task_id.value,
                        }),
                        agent_id: t.agent_id.map(|a| pb::AgentId { value: a.value }),
                    })
                    .collect(),
            })
        }
        T::Message => {
            let msg = need(call.message, "MESSAGE")?;
            C::Message(pb::call::Message {
                agent_id: Some(pb::AgentId {
                    value: msg.agent_id.value,
                }),
                executor_id: Some(pb::ExecutorId {
                    value: msg.executor_id.value,
                }),
                data: msg.data,
            })
        }
        T::Request => C::Request(pb::call::Request {
            resources: call
                .request
                .map(|r| {
                    r.requests
                        .iter()
                        .flat_map(|q| q.resources.iter().map(resource_in))
                        .collect()
                })
                .unwrap_or_default(),
        }),
        T::UpdateFramework => {
            let u = need(call.update_framework, "UPDATE_FRAMEWORK")?;
            C::UpdateFramework(pb::call::UpdateFramework {
                framework_info: Some(framework_info_in(&u.framework_info)?),
                suppressed_roles: u.suppressed_roles,
            })
        }
        T::AcknowledgeOperationStatus | T::ReconcileOperations => {
            return Err(CallError::Unsupported(format!(
                "{} is not supported: meseta has no offer operation feedback",
                kind.as_str_name()
            )))
        }
    }))
}

// ---------------------------------------------------------------------------
// Outbound: meseta → Mesos
// ---------------------------------------------------------------------------

/// A resource as Mesos shows it: `role` ("*" unreserved) and, when
/// reserved, one STATIC reservation for that role; `allocated_to` adds
/// the `allocation_info` of offered or used resources.
pub(crate) fn resource_out(r: &pb::Resource, allocated_to: Option<&str>) -> m::Resource {
    let role = if r.role.is_empty() { "*" } else { &r.role };
    m::Resource {
        name: r.name.clone(),
        r#type: r.r#type,
        scalar: r.scalar.map(|s| m::value::Scalar { value: s.value }),
        ranges: r.ranges.as_ref().map(|x| m::value::Ranges {
            range: x
                .range
                .iter()
                .map(|y| m::value::Range {
                    begin: y.begin,
                    end: y.end,
                })
                .collect(),
        }),
        set: r.set.as_ref().map(|s| m::value::Set {
            item: s.item.clone(),
        }),
        role: Some(role.to_string()),
        allocation_info: allocated_to.map(|role| m::resource::AllocationInfo {
            role: Some(role.to_string()),
        }),
        reservation: None,
        reservations: if role == "*" {
            Vec::new()
        } else {
            vec![m::resource::ReservationInfo {
                r#type: Some(m::resource::reservation_info::Type::Static as i32),
                role: Some(role.to_string()),
                principal: None,
                labels: None,
            }]
        },
        disk: None,
    }
}

pub(crate) fn resources_out(list: &[pb::Resource], allocated_to: Option<&str>) -> Vec<m::Resource> {
    list.iter().map(|r| resource_out(r, allocated_to)).collect()
}

fn attribute_out(a: &pb::Attribute) -> m::Attribute {
    m::Attribute {
        name: a.name.clone(),
        r#type: a.r#type,
        scalar: a.scalar.map(|s| m::value::Scalar { value: s.value }),
        ranges: a.ranges.as_ref().map(|x| m::value::Ranges {
            range: x
                .range
                .iter()
                .map(|y| m::value::Range {
                    begin: y.begin,
                    end: y.end,
                })
                .collect(),
        }),
        set: a.set.as_ref().map(|s| m::value::Set {
            item: s.item.clone(),
        }),
        text: a.text.as_ref().map(|t| m::value::Text {
            value: t.value.clone(),
        }),
    }
}

fn labels_out(l: &pb::Labels) -> m::Labels {
    m::Labels {
        labels: l
            .labels
            .iter()
            .map(|x| m::Label {
                key: x.key.clone(),
                value: Some(x.value.clone()),
            })
            .collect(),
    }
}

/// `host:port` split, the port 0 when absent or not a number.
pub(crate) fn split_address(address: &str) -> (String, u16) {
    match address.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().unwrap_or(0)),
        None => (address.to_string(), 0),
    }
}

fn address_out(address: &str) -> m::Address {
    let (host, port) = split_address(address);
    let ip = host
        .parse::<std::net::Ipv4Addr>()
        .ok()
        .map(|ip| ip.to_string());
    m::Address {
        hostname: Some(host),
        ip,
        port: i32::from(port),
    }
}

/// MasterInfo of the master at `address` (`host:port`).
pub(crate) fn master_info_out(address: &str) -> m::MasterInfo {
    let (host, port) = split_address(address);
    // Mesos packs the IPv4 address in network order into a uint32.
    let ip = host
        .parse::<std::net::Ipv4Addr>()
        .map(|ip| u32::from_le_bytes(ip.octets()))
        .unwrap_or(0);
    m::MasterInfo {
        id: address.to_string(),
        ip,
        port: u32::from(port),
        pid: Some(format!("master@{address}")),
        hostname: Some(host),
        version: Some(crate::api::MESOS_VERSION.to_string()),
        address: Some(address_out(address)),
    }
}

pub(crate) fn framework_info_out(f: &pb::FrameworkInfo) -> m::FrameworkInfo {
    m::FrameworkInfo {
        user: f.user.clone(),
        name: f.name.clone(),
        id: f.id.as_ref().map(|i| m::FrameworkId {
            value: i.value.clone(),
        }),
        failover_timeout: Some(f.failover_timeout),
        checkpoint: Some(f.checkpoint),
        role: Some(if f.role.is_empty() {
            "*".into()
        } else {
            f.role.clone()
        }),
        roles: Vec::new(),
        hostname: Some(f.hostname.clone()).filter(|h| !h.is_empty()),
        principal: Some(f.principal.clone()).filter(|p| !p.is_empty()),
        webui_url: Some(f.webui_url.clone()).filter(|w| !w.is_empty()),
        capabilities: f
            .capabilities
            .iter()
            .filter_map(|c| {
                let name = pb::framework_info::capability::Type::try_from(c.r#type)
                    .ok()?
                    .as_str_name();
                let t = m::framework_info::capability::Type::from_str_name(name)?;
                Some(m::framework_info::Capability {
                    r#type: Some(t as i32),
                })
            })
            .collect(),
        labels: f.labels.as_ref().map(labels_out),
    }
}

pub(crate) fn agent_info_out(a: &pb::AgentInfo) -> m::AgentInfo {
    let (_, port) = split_address(&a.address);
    m::AgentInfo {
        hostname: a.hostname.clone(),
        port: Some(i32::from(port)),
        resources: resources_out(&a.resources, None),
        attributes: a.attributes.iter().map(attribute_out).collect(),
        id: a.id.as_ref().map(|i| m::AgentId {
            value: i.value.clone(),
        }),
    }
}

/// A task state by its Mesos name (the numbers differ).
pub(crate) fn task_state_out(raw: i32) -> i32 {
    let name = pb::TaskState::try_from(raw)
        .map(|s| s.as_str_name())
        .unwrap_or("TASK_UNKNOWN");
    m::TaskState::from_str_name(name).unwrap_or(m::TaskState::TaskUnknown) as i32
}

fn reason_out(raw: i32) -> Option<i32> {
    let name = pb::task_status::Reason::try_from(raw).ok()?.as_str_name();
    m::task_status::Reason::from_str_name(name).map(|r| r as i32)
}

pub(crate) fn task_status_out(s: &pb::TaskStatus) -> m::TaskStatus {
    m::TaskStatus {
        task_id: m::TaskId {
            value: s
                .task_id
                .as_ref()
                .map(|t| t.value.clone())
                .unwrap_or_default(),
        },
        state: task_state_out(s.state),
        message: Some(s.message.clone()).filter(|m| !m.is_empty()),
        source: Some(s.source),
        reason: reason_out(s.reason),
        data: None,
        agent_id: s
            .agent_id
            .as_ref()
            .filter(|a| !a.value.is_empty())
            .map(|a| m::AgentId {
                value: a.value.clone(),
            }),
        executor_id: None,
        timestamp: Some(s.timestamp),
        uuid: Some(s.uuid.clone()).filter(|u| !u.is_empty()),
        healthy: s.healthy,
        labels: s.labels.as_ref().map(labels_out),
    }
}

/// An offer to a framework of role `role`.
pub(crate) fn offer_out(o: &pb::Offer, role: &str) -> m::Offer {
    let id = |x: &Option<pb::OfferId>| x.as_ref().map(|i| i.value.clone()).unwrap_or_default();
    let (host, port) = split_address(&o.agent_address);
    m::Offer {
        id: m::OfferId { value: id(&o.id) },
        framework_id: m::FrameworkId {
            value: o
                .framework_id
                .as_ref()
                .map(|f| f.value.clone())
                .unwrap_or_default(),
        },
        agent_id: m::AgentId {
            value: o
                .agent_id
                .as_ref()
                .map(|a| a.value.clone())
                .unwrap_or_default(),
        },
        hostname: o.hostname.clone(),
        url: (port != 0).then(|| m::Url {
            scheme: "http".into(),
            address: address_out(&format!("{host}:{port}")),
            path: Some("/slave(1)".into()),
            query: Vec::new(),
            fragment: None,
        }),
        resources: resources_out(&o.resources, Some(role)),
        attributes: o.attributes.iter().map(attribute_out).collect(),
        executor_ids: Vec::new(),
        unavailability: None,
        allocation_info: Some(m::resource::AllocationInfo {
            role: Some(role.to_string()),
        }),
    }
}

/// A scheduler event as Mesos sends it; `role` is the subscriber's.
pub(crate) fn event_out(e: &pb::Event, role: &str) -> Option<m::scheduler::Event> {
    use m::scheduler::event as me;
    use m::scheduler::event::Type as T;
    use pb::event::Event as E;
    let mut out = m::scheduler::Event::default();
    match e.event.as_ref()? {
        E::Subscribed(s) => {
            out.r#type = Some(T::Subscribed as i32);
            out.subscribed = Some(me::Subscribed {
                framework_id: m::FrameworkId {
                    value: s
                        .framework_id
                        .as_ref()
                        .map(|f| f.value.clone())
                        .unwrap_or_default(),
                },
                heartbeat_interval_seconds: Some(s.heartbeat_interval_seconds),
                master_info: Some(master_info_out(&s.master_address)),
            });
        }
        E::Offers(o) => {
            out.r#type = Some(T::Offers as i32);
            out.offers = Some(me::Offers {
                offers: o.offers.iter().map(|x| offer_out(x, role)).collect(),
            });
        }
        E::Rescind(r) => {
            out.r#type = Some(T::Rescind as i32);
            out.rescind = Some(me::Rescind {
                offer_id: m::OfferId {
                    value: r
                        .offer_id
                        .as_ref()
                        .map(|o| o.value.clone())
                        .unwrap_or_default(),
                },
            });
        }
        E::Update(u) => {
            out.r#type = Some(T::Update as i32);
            out.update = Some(me::Update {
                status: task_status_out(u.status.as_ref()?),
            });
        }
        E::Message(msg) => {
            out.r#type = Some(T::Message as i32);
            out.message = Some(me::Message {
                agent_id: m::AgentId {
                    value: msg
                        .agent_id
                        .as_ref()
                        .map(|a| a.value.clone())
                        .unwrap_or_default(),
                },
                executor_id: m::ExecutorId {
                    value: msg
                        .executor_id
                        .as_ref()
                        .map(|x| x.value.clone())
                        .unwrap_or_default(),
                },
                data: msg.data.clone(),
            });
        }
        E::Failure(f) => {
            out.r#type = Some(T::Failure as i32);
            out.failure = Some(me::Failure {
                agent_id: f.agent_id.as_ref().map(|a| m::AgentId {
                    value: a.value.clone(),
                }),
                executor_id: f.executor_id.as_ref().map(|x| m::ExecutorId {
                    value: x.value.clone(),
                }),
                status: Some(f.status),
            });
        }
        E::Error(err) => {
            out.r#type = Some(T::Error as i32);
            out.error = Some(me::Error {
                message: err.message.clone(),
            });
        }
        E::Heartbeat(_) => out.r#type = Some(T::Heartbeat as i32),
        // Not rendered on the HTTP face yet: its frameworks see the drain's
        // kills when the master's patience runs out.
        E::InverseOffers(_) => return None,
    }
    Some(out)
}

/// A task as Mesos' `Task` (operator API).
pub(crate) fn task_out(t: &crate::state::TaskEntry, role: Option<&str>) -> m::Task {
    let task_id = t
        .info
        .task_id
        .as_ref()
        .map(|i| i.value.clone())
        .unwrap_or_default();
    let statuses = match &t.latest {
        Some(latest) => vec![task_status_out(latest)],
        None => Vec::new(),
    };
    m::Task {
        name: t.info.name.clone(),
        task_id: m::TaskId {
            value: task_id.clone(),
        },
        framework_id: m::FrameworkId {
            value: t.framework_id.clone(),
        },
        executor_id: None,
        agent_id: m::AgentId {
            value: t.agent_id.clone(),
        },
        state: task_state_out(t.state as i32),
        resources: resources_out(&t.resources.to_proto(), role),
        statuses,
        status_update_state: t.latest.as_ref().map(|s| task_state_out(s.state)),
        status_update_uuid: t
            .latest
            .as_ref()
            .map(|s| s.uuid.clone())
            .filter(|u| !u.is_empty()),
        labels: t.info.labels.as_ref().map(labels_out),
        container: None,
        user: t
            .info
            .command
            .as_ref()
            .map(|c| c.user.clone())
            .filter(|u| !u.is_empty()),
        health_check: None,
        kill_policy: t.info.kill_policy.map(|k| m::KillPolicy {
            grace_period: Some(m::DurationInfo {
                nanoseconds: (k.grace_period_seconds * 1e9) as i64,
            }),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_states_and_reasons_map_by_name() {
        assert_eq!(
            task_state_out(pb::TaskState::TaskStaging as i32),
            m::TaskState::TaskStaging as i32
        );
        assert_eq!(
            task_state_out(pb::TaskState::TaskRunning as i32),
            m::TaskState::TaskRunning as i32
        );
        assert_eq!(
            reason_out(pb::task_status::Reason::ContainerLimitationMemory as i32),
            Some(m::task_status::Reason::ContainerLimitationMemory as i32)
        );
        assert_eq!(reason_out(pb::task_status::Reason::None as i32), None);
    }

    #[test]
    fn framework_roles_and_resource_reservations() {
        let mut info = m::FrameworkInfo {
            user: "u".into(),
            name: "n".into(),
            roles: vec!["web".into()],
            ..Default::default()
        };
        assert_eq!(framework_info_in(&info).expect("one role").role, "web");
        info.roles.push("db".into());
        assert!(framework_info_in(&info).is_err());
        info.roles.clear();
        assert_eq!(framework_info_in(&info).expect("default").role, "*");

        let reserved = pb::Resource {
            name: "cpus".into(),
            r#type: 0,
            scalar: Some(pb::value::Scalar { value: 2.0 }),
            role: "web".into(),
            ..Default::default()
        };
        let out = resource_out(&reserved, Some("web"));
        assert_eq!(out.reservations.len(), 1);
        assert_eq!(resource_in(&out).role, "web");
        assert_eq!(master_info_out("127.0.0.1:5050").ip, 16_777_343);
    }
}
