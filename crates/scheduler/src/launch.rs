//! Matching a Marathon app to an offer: resources (with
//! `acceptedResourceRoles`), host ports, constraints, and the `TaskInfo`
//! with the environment Marathon gives its tasks.

use meseta_core::{Resource, Resources};
use meseta_proto::v1 as pb;

use crate::model::{
    marathon_timestamp, AppDefinition, ConstraintOperator, EnvVarValue, HealthCheck,
    HealthCheckProtocol,
};

/// Where an app's tasks already run, for constraint checks: (hostname,
/// attributes as text) per active task.
pub type Placements = Vec<(String, Vec<(String, String)>)>;

/// One task that fits in an offer, and what it takes from it.
#[derive(Debug, Clone)]
pub struct Fit {
    pub resources: Resources,
    pub host_ports: Vec<u64>,
}

fn offer_attributes(offer: &pb::Offer) -> Vec<(String, String)> {
    offer
        .attributes
        .iter()
        .map(meseta_core::attributes::Attribute::from_proto)
        .map(|a| (a.name, a.value))
        .collect()
}

fn field_value(field: &str, hostname: &str, attributes: &[(String, String)]) -> Option<String> {
    if field == "hostname" {
        return Some(hostname.to_string());
    }
    attributes
        .iter()
        .find(|(k, _)| k == field)
        .map(|(_, v)| v.clone())
}

fn full_match(pattern: &str, value: &str) -> bool {
    // Marathon's LIKE/UNLIKE take a regular expression that must match the
    // whole value; meseta supports the common subset: alternation of
    // literals and `.*` wildcards.
    pattern.split('|').any(|alt| glob_match(alt, value))
}

fn glob_match(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split(".*").collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let mut rest = value;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(idx) => rest = &rest[idx + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Whether the app's constraints allow one more task on this offer's agent.
pub fn constraints_allow(app: &AppDefinition, offer: &pb::Offer, placed: &Placements) -> bool {
    let attrs = offer_attributes(offer);
    app.constraints.iter().all(|c| {
        let here = field_value(&c.field, &offer.hostname, &attrs);
        let values: Vec<Option<String>> = placed
            .iter()
            .map(|(h, a)| field_value(&c.field, h, a))
            .collect();
        match c.operator {
            ConstraintOperator::Unique => here.is_some() && !values.contains(&here),
            ConstraintOperator::Cluster => match (&c.value, &here) {
                (Some(v), Some(h)) => v == h,
                (None, Some(_)) => values.iter().all(|v| v == &here),
                _ => false,
            },
            ConstraintOperator::Like | ConstraintOperator::Is => match (&c.value, &here) {
                (Some(v), Some(h)) if c.operator == ConstraintOperator::Is => v == h,
                (Some(v), Some(h)) => full_match(v, h),
                _ => false,
            },
            ConstraintOperator::Unlike => match (&c.value, &here) {
                (Some(v), Some(h)) => !full_match(v, h),
                _ => true,
            },
            ConstraintOperator::MaxPer => {
                let max: usize = c.value.as_deref().and_then(|v| v.parse().ok()).unwrap_or(1);
                here.is_some() && values.iter().filter(|v| **v == here).count() < max
            }
            ConstraintOperator::GroupBy => {
                // Spread evenly: never put more here than on the least
                // loaded value seen so far, plus one.
                if here.is_none() {
                    return false;
                }
                let here_count = values.iter().filter(|v| **v == here).count();
                let mut counts: std::collections::HashMap<&Option<String>, usize> =
                    Default::default();
                for v in &values {
                    *counts.entry(v).or_default() += 1;
                }
                let groups: usize = c.value.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
                let min = if groups > counts.len() || counts.is_empty() {
                    0
                } else {
                    counts.values().copied().min().unwrap_or(0)
                };
                here_count <= min
            }
        }
    })
}

/// The resources of `available` the app may use: its accepted roles
/// (`["*"]` when unset), among what the offer holds.
fn usable(app: &AppDefinition, available: &Resources) -> Resources {
    let roles: Vec<&str> = if app.accepted_resource_roles.is_empty() {
        vec!["*"]
    } else {
        app.accepted_resource_roles
            .iter()
            .map(String::as_str)
            .collect()
    };
    available.filter_roles(&roles)
}

/// Why an offer could not take a task of an app (Marathon's
/// `NoOfferMatchReason` names, in its order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NoOfferMatchReason {
    UnfulfilledRole,
    UnfulfilledConstraint,
    NoCorrespondingReservationFound,
    AgentMaintenance,
    InsufficientCpus,
    InsufficientMemory,
    InsufficientDisk,
    InsufficientGpus,
    InsufficientPorts,
    DeclinedScarceResources,
}

impl NoOfferMatchReason {
    /// Every reason, in Marathon's order.
    pub const ALL: [NoOfferMatchReason; 10] = [
        Self::UnfulfilledRole,
        Self::UnfulfilledConstraint,
        Self::NoCorrespondingReservationFound,
        Self::AgentMaintenance,
        Self::InsufficientCpus,
        Self::InsufficientMemory,
        Self::InsufficientDisk,
        Self::InsufficientGpus,
        Self::InsufficientPorts,
        Self::DeclinedScarceResources,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnfulfilledRole => "UnfulfilledRole",
            Self::UnfulfilledConstraint => "UnfulfilledConstraint",
            Self::NoCorrespondingReservationFound => "NoCorrespondingReservationFound",
            Self::AgentMaintenance => "AgentMaintenance",
            Self::InsufficientCpus => "InsufficientCpus",
            Self::InsufficientMemory => "InsufficientMemory",
            Self::InsufficientDisk => "InsufficientDisk",
            Self::InsufficientGpus => "InsufficientGpus",
            Self::InsufficientPorts => "InsufficientPorts",
            Self::DeclinedScarceResources => "DeclinedScarceResources",
        }
    }
}

/// Why one more task of `app` does not fit this offer (what is left of it
/// in `available`): every reason that applies, in Marathon's order. Empty
/// when it fits.
pub fn mismatch(
    app: &AppDefinition,
    offer: &pb::Offer,
    available: &Resources,
    placed: &Placements,
    framework_role: &str,
) -> Vec<NoOfferMatchReason> {
    let mut reasons = Vec::new();
    let pool = usable(app, available);
    if pool.is_empty() && !available.is_empty() {
        reasons.push(NoOfferMatchReason::UnfulfilledRole);
    }
    if !constraints_allow(app, offer, placed) {
        reasons.push(NoOfferMatchReason::UnfulfilledConstraint);
    }
    for (name, amount, reason) in [
        ("cpus", app.cpus, NoOfferMatchReason::InsufficientCpus),
        ("mem", app.mem, NoOfferMatchReason::InsufficientMemory),
        ("disk", app.disk, NoOfferMatchReason::InsufficientDisk),
        (
            "gpus",
            app.gpus as f64,
            NoOfferMatchReason::InsufficientGpus,
        ),
    ] {
        if amount > 0.0 && pool.scalar(name) + 1e-9 < amount {
            reasons.push(reason);
        }
    }
    if reasons.is_empty() && fit(app, available, framework_role).is_none() {
        reasons.push(NoOfferMatchReason::InsufficientPorts);
    }
    reasons
}

/// Whether one task of `app` fits into `available`; what it takes if so.
pub fn fit(app: &AppDefinition, available: &Resources, framework_role: &str) -> Option<Fit> {
    let pool = usable(app, available);
    let mut taken = Resources::new();
    for (name, amount) in [
        ("cpus", app.cpus),
        ("mem", app.mem),
        ("disk", app.disk),
        ("gpus", app.gpus as f64),
    ] {
        if amount > 0.0 {
            let t = pool.take_scalar(name, amount, framework_role)?;
            taken = taken.plus(&t).ok()?;
        }
    }
    let wanted = app.port_count();
    let fixed: Vec<u32> = if app.require_ports {
        app.service_ports()
    } else if app.is_host_networking() {
        Vec::new()
    } else {
        app.container
            .as_ref()
            .map(|c| {
                c.port_mappings()
                    .iter()
                    .map(|m| m.host_port.unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut host_ports = Vec::with_capacity(wanted);
    let mut port_pool = pool.clone();
    for i in 0..wanted {
        let want = fixed.get(i).copied().unwrap_or(0);
        let r = if want != 0 {
            port_pool.range_value("ports", want as u64)?
        } else {
            let (values, used) = port_pool.take_range_values("ports", 1)?;
            let mut it = used.iter();
            let r = it.next()?.clone();
            debug_assert_eq!(values.len(), 1);
            r
        };
        let value = match &r.value {
            meseta_core::ResourceValue::Ranges(v) => v.first()?.0,
            _ => return None,
        };
        host_ports.push(value);
        let mut used = Resources::new();
        used.add(r).ok()?;
        port_pool = port_pool.minus(&used).ok()?;
        taken = taken.plus(&used).ok()?;
    }
    if taken.is_empty() {
        // Marathon apps always take something; a 0-cpu 0-mem app still
        // needs a slot, so take the smallest cpu unit.
        taken
            .add(Resource::scalar("cpus", 0.001).with_role("*"))
            .ok()?;
        if !pool.contains(&taken) {
            return None;
        }
    }
    Some(Fit {
        resources: taken,
        host_ports,
    })
}

/// A name as an environment variable suffix: upper case, `_` for anything
/// but letters and digits (`http-api` → `HTTP_API`).
fn env_key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn env_var(name: &str, value: String) -> pb::environment::Variable {
    pb::environment::Variable {
        name: name.to_string(),
        value,
    }
}

/// The task's `ContainerInfo`: the engine (Docker or Mesos), the image, and
/// for Docker the network, the port mappings with the host ports taken from
/// the offer (in mapping order), volumes, parameters and options.
fn container_info(app: &AppDefinition, fit: &Fit) -> Option<pb::ContainerInfo> {
    use crate::model::{ContainerType, NetworkMode};
    use pb::container_info::docker_info::Network;
    let container = app.container.as_ref()?;
    let volumes = container
        .volumes
        .iter()
        .map(|v| pb::Volume {
            container_path: v.container_path.clone().unwrap_or_default(),
            host_path: v.host_path.clone().unwrap_or_default(),
            mode: if v
                .mode
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case("RO"))
            {
                pb::volume::Mode::Ro as i32
            } else {
                pb::volume::Mode::Rw as i32
            },
        })
        .collect();
    let docker = container.docker.as_ref();
    let image = docker.map(|d| d.image.clone()).unwrap_or_default();
    if container.container_type == ContainerType::Mesos {
        return Some(pb::ContainerInfo {
            r#type: pb::container_info::Type::Mesos as i32,
            volumes,
            docker: (!image.is_empty()).then(|| pb::container_info::DockerInfo {
                image,
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let (network, network_name) = match app.networks.first() {
        Some(n) if n.mode == NetworkMode::ContainerBridge => (Network::Bridge, String::new()),
        Some(n) if n.mode == NetworkMode::Container => {
            (Network::User, n.name.clone().unwrap_or_default())
        }
        _ => (Network::Host, String::new()),
    };
    let port_mappings = if network == Network::Host {
        Vec::new()
    } else {
        container
            .port_mappings()
            .iter()
            .zip(&fit.host_ports)
            .map(|(m, host)| pb::container_info::docker_info::PortMapping {
                host_port: *host as u32,
                container_port: m.container_port,
                protocol: m.protocol.clone(),
            })
            .collect()
    };
    Some(pb::ContainerInfo {
        r#type: pb::container_info::Type::Docker as i32,
        volumes,
        docker: Some(pb::container_info::DockerInfo {
            image,
            network: network as i32,
            network_name,
            port_mappings,
            privileged: docker.is_some_and(|d| d.privileged),
            parameters: docker
                .map(|d| {
                    d.parameters
                        .iter()
                        .map(|p| pb::container_info::docker_info::Parameter {
                            key: p.key.clone(),
                            value: p.value.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            force_pull_image: docker.is_some_and(|d| d.force_pull_image),
        }),
        ..Default::default()
    })
}

/// The `TaskInfo` for one task of `app` on `offer`, with Marathon's
/// environment: the app's `env`, `PORT0..n`, `PORT`, `PORTS`, `PORT_<NAME>`,
/// `HOST`, `MARATHON_APP_*`, `MESOS_TASK_ID`.
pub fn task_info(app: &AppDefinition, task_id: &str, offer: &pb::Offer, fit: &Fit) -> pb::TaskInfo {
    let mut vars = Vec::new();
    for (k, v) in &app.env {
        if let EnvVarValue::Value(v) = v {
            vars.push(env_var(k, v.clone()));
        }
    }
    let ports: Vec<String> = fit.host_ports.iter().map(|p| p.to_string()).collect();
    for (i, p) in ports.iter().enumerate() {
        vars.push(env_var(&format!("PORT{i}"), p.clone()));
    }
    if let Some(first) = ports.first() {
        vars.push(env_var("PORT", first.clone()));
    }
    vars.push(env_var("PORTS", ports.join(",")));
    let names: Vec<Option<String>> = if app.is_host_networking() {
        app.port_definitions
            .iter()
            .map(|p| p.name.clone())
            .collect()
    } else {
        app.container
            .as_ref()
            .map(|c| c.port_mappings().iter().map(|m| m.name.clone()).collect())
            .unwrap_or_default()
    };
    for (name, port) in names.iter().zip(&ports) {
        if let Some(n) = name {
            let key = env_key(n);
            vars.push(env_var(&format!("PORT_{key}"), port.clone()));
        }
    }
    if !app.is_host_networking() {
        // Marathon's PORT_<containerPort>: the host port mapped to it.
        if let Some(c) = &app.container {
            for (m, host) in c.port_mappings().iter().zip(&fit.host_ports) {
                let inside = if m.container_port == 0 {
                    *host
                } else {
                    u64::from(m.container_port)
                };
                vars.push(env_var(&format!("PORT_{inside}"), host.to_string()));
            }
        }
    }
    let version = app.version.map(marathon_timestamp).unwrap_or_default();
    vars.push(env_var("HOST", offer.hostname.clone()));
    vars.push(env_var("MESOS_TASK_ID", task_id.to_string()));
    vars.push(env_var("MARATHON_APP_ID", app.id.to_string()));
    vars.push(env_var("MARATHON_APP_VERSION", version));
    vars.push(env_var(
        "MARATHON_APP_DOCKER_IMAGE",
        app.image().unwrap_or("").to_string(),
    ));
    vars.push(env_var("MARATHON_APP_RESOURCE_CPUS", app.cpus.to_string()));
    vars.push(env_var("MARATHON_APP_RESOURCE_MEM", app.mem.to_string()));
    vars.push(env_var("MARATHON_APP_RESOURCE_DISK", app.disk.to_string()));
    vars.push(env_var("MARATHON_APP_RESOURCE_GPUS", app.gpus.to_string()));
    let labels: Vec<&str> = app.labels.keys().map(String::as_str).collect();
    vars.push(env_var("MARATHON_APP_LABELS", labels.join(" ")));
    for (k, v) in &app.labels {
        let key = env_key(k);
        vars.push(env_var(&format!("MARATHON_APP_LABEL_{key}"), v.clone()));
    }
    let (value, shell, arguments) = match (&app.cmd, app.args.is_empty()) {
        (Some(cmd), _) => (cmd.clone(), true, Vec::new()),
        (None, false) => (app.args[0].clone(), false, app.args.clone()),
        (None, true) => (String::new(), true, Vec::new()),
    };
    let container = container_info(app, fit);
    pb::TaskInfo {
        name: app.id.to_hostname(),
        task_id: Some(pb::TaskId {
            value: task_id.to_string(),
        }),
        agent_id: offer.agent_id.clone(),
        resources: fit.resources.to_proto(),
        command: Some(pb::CommandInfo {
            uris: app
                .fetch
                .iter()
                .map(|f| pb::command_info::Uri {
                    value: f.uri.clone(),
                    executable: f.executable,
                    extract: f.extract,
                    cache: f.cache,
                    output_file: f.output_file.clone().unwrap_or_default(),
                })
                .collect(),
            environment: Some(pb::Environment { variables: vars }),
            shell,
            value,
            arguments,
            user: app.user.clone().unwrap_or_default(),
        }),
        container,
        health_check: app
            .health_checks
            .first()
            .map(|hc| health_check_info(app, hc, &fit.host_ports)),
        kill_policy: app.task_kill_grace_period_seconds.map(|s| pb::KillPolicy {
            grace_period_seconds: s as f64,
        }),
        labels: Some(pb::Labels {
            labels: app
                .labels
                .iter()
                .map(|(k, v)| pb::Label {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        }),
    }
}

/// The app's health check as the agent runs it: `portIndex` resolved to
/// the task's host port (a fixed `port` is used as given), Marathon's
/// protocol name and `ignoreHttp1xx` kept beside Mesos' fields.
pub fn health_check_info(
    app: &AppDefinition,
    hc: &HealthCheck,
    host_ports: &[u64],
) -> pb::HealthCheck {
    use pb::health_check::Type;
    let port = match (hc.port, hc.port_index) {
        (Some(p), _) => p,
        (None, Some(i)) => host_ports.get(i as usize).copied().unwrap_or(0) as u32,
        (None, None) => host_ports.first().copied().unwrap_or(0) as u32,
    };
    let (kind, scheme) = match hc.protocol {
        HealthCheckProtocol::Http | HealthCheckProtocol::MesosHttp => (Type::Http, "http"),
        HealthCheckProtocol::Https | HealthCheckProtocol::MesosHttps => (Type::Https, "https"),
        HealthCheckProtocol::Tcp | HealthCheckProtocol::MesosTcp => (Type::Tcp, ""),
        HealthCheckProtocol::Command => (Type::Command, ""),
        HealthCheckProtocol::Unknown(_) => (Type::Unknown, ""),
    };
    let http = matches!(kind, Type::Http | Type::Https).then(|| pb::health_check::HttpCheckInfo {
        scheme: scheme.to_string(),
        port,
        path: hc.path.clone().unwrap_or_else(|| "/".into()),
        statuses: Vec::new(),
    });
    let tcp = (kind == Type::Tcp).then_some(pb::health_check::TcpCheckInfo { port });
    let command = hc.command.as_ref().map(|c| pb::CommandInfo {
        shell: true,
        value: c.value.clone(),
        user: app.user.clone().unwrap_or_default(),
        ..Default::default()
    });
    pb::HealthCheck {
        delay_seconds: f64::from(hc.delay_seconds),
        interval_seconds: f64::from(hc.interval_seconds),
        timeout_seconds: f64::from(hc.timeout_seconds),
        consecutive_failures: hc.max_consecutive_failures,
        grace_period_seconds: f64::from(hc.grace_period_seconds),
        r#type: kind as i32,
        command,
        http,
        tcp,
        protocol: hc.protocol.as_str().to_string(),
        ignore_http1xx: hc.ignore_http1xx,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_like_patterns() {
        assert!(full_match("rack-1|rack-2", "rack-2"));
        assert!(full_match("rack-.*", "rack-9"));
        assert!(!full_match("rack-1", "rack-10"));
        assert!(full_match(".*-b", "zone-b"));
    }
}
