//! Validation of app definitions with Marathon's error shape:
//! `{"message": "Object is not valid", "details": [{"path": "/cpus",
//! "errors": ["must be greater than or equal to 0.001"]}]}`.
//!
//! Paths follow Marathon: `/` for rules about the whole app, `/field`,
//! `/field(index)/sub` for list elements (`/healthChecks(0)/portIndex`).
//! Messages are Marathon's own where it has a specific one (constraints,
//! ports, cmd/args/container), human-readable bounds otherwise.

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde::Serialize;

use super::app::{AppDefinition, EnvVarValue, UnreachableStrategy};
use super::container::ContainerType;
use super::health::HealthCheckProtocol;
use super::network::NetworkMode;
use super::path::{PathId, PathIdError, RESERVED_SEGMENTS, SEGMENT_PATTERN};

/// The top-level message of every validation failure.
pub const NOT_VALID: &str = "Object is not valid";

/// Marathon's messages used by several rules.
pub mod messages {
    pub const CMD_ARGS_OR_CONTAINER: &str =
        "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.";
    pub const HEALTH_PORT_INDEX: &str =
        "Health check port indices must address an element of the ports array or container port mappings.";
    pub const ONE_MESOS_HEALTH_CHECK: &str =
        "AppDefinition can contain at most one Mesos health check";
    pub const PORT_NAMES_UNIQUE: &str = "Port names must be unique.";
    pub const PORTS_UNIQUE: &str = "Ports must be unique.";
    pub const PATH_EMPTY: &str = "Path must contain at least one path element";
    pub const PORT_RANGE: &str = "must be between 0 and 65535";
    pub const UNDEFINED_SECRET: &str = "references an undefined secret";
    pub const HOST_NETWORK_NAMED: &str = "Host networks may not have names or labels";
    pub const BRIDGE_NETWORK_NAMED: &str = "Bridge networks may not have names";
    pub const NETWORK_MIX: &str =
        "Must specify either a single host network, or else 1-to-n container networks";
    pub const VERSION_ONLY_WITH_ID: &str =
        "The 'version' field may only be combined with the 'id' field.";
}

/// One failed path with its messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detail {
    pub path: String,
    pub errors: Vec<String>,
}

/// A definition that is well-formed JSON but breaks Marathon's rules; the
/// API answers 422 with this serialized as the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationError {
    pub message: String,
    pub details: Vec<Detail>,
}

impl ValidationError {
    /// A failure with a single detail.
    pub fn single(path: impl Into<String>, error: impl Into<String>) -> Self {
        let mut v = Violations::default();
        v.add(path, error);
        Self {
            message: NOT_VALID.to_string(),
            details: v.details,
        }
    }

    /// The messages reported for `path` (empty if none).
    pub fn errors_at(&self, path: &str) -> Vec<&str> {
        self.details
            .iter()
            .filter(|d| d.path == path)
            .flat_map(|d| d.errors.iter().map(String::as_str))
            .collect()
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        for d in &self.details {
            write!(f, "; {}: {}", d.path, d.errors.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationError {}

/// Collects violations, grouped by path in first-seen order.
#[derive(Debug, Default, Clone)]
pub struct Violations {
    details: Vec<Detail>,
}

impl Violations {
    /// Records `error` at `path` (duplicates at one path are kept once).
    pub fn add(&mut self, path: impl Into<String>, error: impl Into<String>) {
        let path = path.into();
        let error = error.into();
        match self.details.iter_mut().find(|d| d.path == path) {
            Some(d) => {
                if !d.errors.contains(&error) {
                    d.errors.push(error)
                }
            }
            None => self.details.push(Detail {
                path,
                errors: vec![error],
            }),
        }
    }

    /// True if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.details.is_empty()
    }

    /// `Ok(())` when empty, else the [`ValidationError`].
    pub fn into_result(self) -> Result<(), ValidationError> {
        if self.details.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                message: NOT_VALID.to_string(),
                details: self.details,
            })
        }
    }

    /// Records an `f64` lower bound.
    pub fn min_f64(&mut self, path: &str, value: f64, min: f64) {
        if value.is_nan() || value < min {
            self.add(path, format!("must be greater than or equal to {min}"));
        }
    }
}

/// Marathon's message for a path id rule.
pub fn path_id_message(e: &PathIdError) -> String {
    match e {
        PathIdError::Empty => messages::PATH_EMPTY.to_string(),
        PathIdError::InvalidSegment { .. } => {
            format!("must fully match regular expression '{SEGMENT_PATTERN}'")
        }
        PathIdError::Reserved { .. } => format!(
            "must not end with any of the following reserved keywords: {}",
            RESERVED_SEGMENTS.join(", ")
        ),
    }
}

fn check_path_id(v: &mut Violations, path: &str, id: &PathId) {
    for e in id.errors() {
        v.add(path, path_id_message(&e));
    }
}

fn check_port(v: &mut Violations, path: String, port: u32) {
    if port > 65535 {
        v.add(path, messages::PORT_RANGE);
    }
}

fn check_port_name(v: &mut Violations, path: String, name: &Option<String>) {
    if let Some(n) = name {
        // Marathon's LegacyName: ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$
        let ok = !n.is_empty()
            && !n.starts_with('-')
            && !n.ends_with('-')
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            v.add(path, "must match ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$");
        }
    }
}

fn check_protocol(v: &mut Violations, path: String, protocol: &str) {
    if !matches!(protocol, "tcp" | "udp" | "udp,tcp") {
        v.add(path, "must be one of tcp, udp, udp,tcp");
    }
}

/// Checks every rule on a normalized definition. Returns all violations at
/// once, never only the first.
pub fn validate_app(app: &AppDefinition) -> Result<(), ValidationError> {
    let mut v = Violations::default();
    check_app(app, &mut v);
    v.into_result()
}

/// [`validate_app`] recording into an existing collector (used by update
/// application, which may already have recorded conversion errors).
pub fn check_app(app: &AppDefinition, v: &mut Violations) {
    check_path_id(v, "/id", &app.id);
    for (i, dep) in app.dependencies.iter().enumerate() {
        check_path_id(v, &format!("/dependencies({i})"), dep);
    }

    // Resources and numbers.
    v.min_f64("/cpus", app.cpus, 0.001);
    v.min_f64("/mem", app.mem, 0.0);
    v.min_f64("/disk", app.disk, 0.0);
    if app.backoff_factor.is_nan() || app.backoff_factor < 1.0 {
        v.add("/backoffFactor", "must be greater than or equal to 1");
    }

    // Command.
    let has_cmd = app.cmd.is_some();
    let has_args = !app.args.is_empty();
    if let Some(cmd) = &app.cmd {
        if cmd.is_empty() {
            v.add("/cmd", "must not be an empty string");
        }
    }
    let container_runs_something = app
        .container
        .as_ref()
        .is_some_and(|c| c.docker.is_some() || c.container_type == ContainerType::Mesos);
    if !((has_cmd ^ has_args) || (!(has_cmd && has_args) && container_runs_something)) {
        v.add("/", messages::CMD_ARGS_OR_CONTAINER);
    }

    // Container.
    if let Some(c) = &app.container {
        match (&c.docker, c.container_type) {
            (None, ContainerType::Docker) => {
                v.add("/container/docker", "must be defined for DOCKER containers")
            }
            (Some(d), _) if d.image.is_empty() => {
                v.add("/container/docker/image", "must not be empty")
            }
            _ => {}
        }
        if let Some(d) = &c.docker {
            for (i, p) in d.parameters.iter().enumerate() {
                if p.key.is_empty() {
                    v.add(
                        format!("/container/docker/parameters({i})/key"),
                        "must not be empty",
                    );
                }
            }
            if c.container_type == ContainerType::Docker && d.pull_config.is_some() {
                v.add(
                    "/container/docker/pullConfig",
                    "pullConfig is not supported with Docker containerizer",
                );
            }
        }
        let mut names = HashSet::new();
        for (i, m) in c.port_mappings().iter().enumerate() {
            let p = format!("/container/portMappings({i})");
            check_port(v, format!("{p}/containerPort"), m.container_port);
            if let Some(h) = m.host_port {
                check_port(v, format!("{p}/hostPort"), h);
            }
            check_port(v, format!("{p}/servicePort"), m.service_port);
            check_port_name(v, format!("{p}/name"), &m.name);
            check_protocol(v, format!("{p}/protocol"), &m.protocol);
            if let Some(n) = &m.name {
                if !names.insert(n) {
                    v.add("/container/portMappings", messages::PORT_NAMES_UNIQUE);
                }
            }
        }
        for (i, vol) in c.volumes.iter().enumerate() {
            match vol.container_path.as_deref() {
                None | Some("") => v.add(
                    format!("/container/volumes({i})/containerPath"),
                    "must not be empty",
                ),
                _ => {}
            }
            if let Some(m) = &vol.mode {
                if m != "RO" && m != "RW" {
                    v.add(
                        format!("/container/volumes({i})/mode"),
                        "must be one of RO, RW",
                    );
                }
            }
        }
    }

    // Networks.
    let host_nets = app
        .networks
        .iter()
        .filter(|n| n.mode == NetworkMode::Host)
        .count();
    if (host_nets > 0 && host_nets != app.networks.len()) || host_nets > 1 {
        v.add("/networks", messages::NETWORK_MIX);
    }
    if app
        .networks
        .iter()
        .any(|n| n.mode == NetworkMode::Host && (n.name.is_some() || !n.labels.is_empty()))
    {
        v.add("/networks", messages::HOST_NETWORK_NAMED);
    }
    if app
        .networks
        .iter()
        .any(|n| n.mode == NetworkMode::ContainerBridge && n.name.is_some())
    {
        v.add("/networks", messages::BRIDGE_NETWORK_NAMED);
    }

    // Port definitions.
    let mut names = HashSet::new();
    let mut ports = HashSet::new();
    for (i, pd) in app.port_definitions.iter().enumerate() {
        let p = format!("/portDefinitions({i})");
        check_port(v, format!("{p}/port"), pd.port);
        check_port_name(v, format!("{p}/name"), &pd.name);
        check_protocol(v, format!("{p}/protocol"), &pd.protocol);
        if let Some(n) = &pd.name {
            if !names.insert(n) {
                v.add("/portDefinitions", messages::PORT_NAMES_UNIQUE);
            }
        }
        if pd.port != 0 && !ports.insert(pd.port) {
            v.add("/portDefinitions", messages::PORTS_UNIQUE);
        }
    }

    // Constraints (arity and operator were checked when converting).
    for (i, c) in app.constraints.iter().enumerate() {
        if let Some(msg) = c.value_error() {
            v.add(format!("/constraints({i})"), msg);
        }
    }

    // Health checks.
    let port_count = app.port_count();
    let mut mesos_checks = 0;
    for (i, hc) in app.health_checks.iter().enumerate() {
        let p = format!("/healthChecks({i})");
        if let HealthCheckProtocol::Unknown(proto) = &hc.protocol {
            v.add(
                format!("{p}/protocol"),
                format!("unknown protocol {proto}: must be one of HTTP, HTTPS, TCP, COMMAND, MESOS_HTTP, MESOS_HTTPS, MESOS_TCP"),
            );
        }
        if hc.protocol == HealthCheckProtocol::Command && hc.command.is_none() {
            v.add(
                format!("{p}/command"),
                "must be defined for COMMAND health checks",
            );
        }
        if hc.command.is_none() && hc.protocol.is_marathon() {
            let ok = match hc.port_index {
                Some(idx) => (idx as usize) < port_count,
                None => hc.port.is_some() || port_count == 1,
            };
            if !ok {
                v.add(p.clone(), messages::HEALTH_PORT_INDEX);
            }
        }
        if let Some(port) = hc.port {
            check_port(v, format!("{p}/port"), port);
        }
        if let Some(ip) = &hc.ip_protocol {
            if ip != "IPv4" && ip != "IPv6" {
                v.add(format!("{p}/ipProtocol"), "must be one of IPv4, IPv6");
            }
        }
        if hc.protocol.is_mesos() && hc.command.is_none() {
            mesos_checks += 1;
        }
    }
    if mesos_checks > 1 {
        v.add("/", messages::ONE_MESOS_HEALTH_CHECK);
    }

    // Readiness checks.
    if app.readiness_checks.len() > 1 {
        v.add("/readinessChecks", "must have at most 1 element");
    }
    let port_names: BTreeSet<&str> = app
        .port_definitions
        .iter()
        .filter_map(|p| p.name.as_deref())
        .chain(
            app.container
                .iter()
                .flat_map(|c| c.port_mappings().iter().filter_map(|m| m.name.as_deref())),
        )
        .collect();
    for (i, rc) in app.readiness_checks.iter().enumerate() {
        if !port_names.contains(rc.port_name.as_str()) {
            v.add(
                format!("/readinessChecks({i})/portName"),
                format!("No port definition reference for portName {}", rc.port_name),
            );
        }
        if rc.protocol != "HTTP" && rc.protocol != "HTTPS" {
            v.add(
                format!("/readinessChecks({i})/protocol"),
                "must be one of HTTP, HTTPS",
            );
        }
        if rc.timeout_seconds == 0 {
            v.add(
                format!("/readinessChecks({i})/timeoutSeconds"),
                "must be greater than or equal to 1",
            );
        }
    }

    // Upgrade strategy.
    let us = &app.upgrade_strategy;
    for (name, val) in [
        ("minimumHealthCapacity", us.minimum_health_capacity),
        ("maximumOverCapacity", us.maximum_over_capacity),
    ] {
        if !(0.0..=1.0).contains(&val) {
            v.add(
                format!("/upgradeStrategy/{name}"),
                "must be between 0 and 1",
            );
        }
    }

    // Unreachable strategy.
    if let UnreachableStrategy::Enabled {
        inactive_after_seconds,
        expunge_after_seconds,
    } = app.unreachable_strategy
    {
        if inactive_after_seconds > expunge_after_seconds {
            v.add(
                "/unreachableStrategy/inactiveAfterSeconds",
                format!(
                    "inactiveAfterSeconds ({inactive_after_seconds}) must be less or equal to expungeAfterSeconds, which is {expunge_after_seconds}"
                ),
            );
        }
    }

    // Environment and secrets.
    for (k, val) in &app.env {
        if k.is_empty() {
            v.add("/env", "environment variable names must not be empty");
        }
        if k.contains('=') || k.contains('\0') {
            v.add(format!("/env({k})"), "must not contain '=' or NUL");
        }
        if let EnvVarValue::Secret { secret } = val {
            if !app.secrets.contains_key(secret) {
                v.add(
                    format!("/env({k})"),
                    format!("{} named '{secret}'", messages::UNDEFINED_SECRET),
                );
            }
        }
    }
    for (name, s) in &app.secrets {
        if s.source.is_empty() {
            v.add(format!("/secrets({name})/source"), "must not be empty");
        }
    }

    // Fetch.
    for (i, f) in app.fetch.iter().enumerate() {
        if f.uri.is_empty() || f.uri.len() > 1024 {
            v.add(
                format!("/fetch({i})/uri"),
                "must be between 1 and 1024 characters",
            );
        }
    }

    // Roles.
    if app.accepted_resource_roles.iter().any(String::is_empty) {
        v.add(
            "/acceptedResourceRoles",
            "must not contain empty role names",
        );
    }

    // GPUs.
    if app.gpus > 0
        && app
            .container
            .as_ref()
            .is_some_and(|c| c.container_type == ContainerType::Docker)
    {
        v.add("/", "GPU resources only work with the Mesos containerizer");
    }
}
