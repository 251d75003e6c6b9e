//! App JSON as received ([`AppUpdate`]: every field optional, deprecated
//! fields included) and how it becomes an [`AppDefinition`].
//!
//! * Create (`POST /v2/apps`) and replace (`PUT ?partialUpdate=false`):
//!   [`AppUpdate::to_app`] starts from Marathon's defaults.
//! * Partial update (`PUT`, Marathon 1.10's default, and `PATCH`):
//!   [`AppUpdate::apply_to`]: fields absent (or `null`) keep the current value;
//!   a field that is present replaces the current value as a whole
//!   (`{"env": {"A": "1"}}` replaces all of `env`).
//!
//! Both normalize deprecated fields the way Marathon 1.10 does and then
//! validate; a `ValidationError` lists every broken rule. Unknown keys are
//! ignored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::app::{
    AppDefinition, EnvVarValue, FetchUri, KillSelection, SecretDef, UnreachableStrategy,
    UpgradeStrategy, VersionInfo, DEFAULT_PORT_NAME,
};
use super::constraints::{Constraint, RawConstraints};
use super::container::{Container, ContainerType, DockerNetwork, PortMapping};
use super::health::{HealthCheck, ReadinessCheck};
use super::network::{is_host_networking, Network, NetworkMode, PortDefinition};
use super::path::PathId;
use super::timestamp;
use super::validate::{check_app, messages, ValidationError, Violations};

/// Deprecated `ipAddress` (IP-per-task); translated into `networks`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddress {
    #[serde(default)]
    pub network_name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// `discovery.ports` are not translated (rarely used, deprecated).
    #[serde(default)]
    pub discovery: Option<Value>,
}

/// An app body as sent by a client: every field optional. Used for POST
/// (with defaults), PUT/PATCH (partial or replace) and stored JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AppUpdate {
    pub id: Option<String>,
    pub cmd: Option<String>,
    pub args: Option<Vec<String>>,
    pub user: Option<String>,
    pub env: Option<BTreeMap<String, EnvVarValue>>,
    pub instances: Option<i64>,
    pub cpus: Option<f64>,
    pub mem: Option<f64>,
    pub disk: Option<f64>,
    pub gpus: Option<i64>,
    pub executor: Option<String>,
    pub constraints: Option<RawConstraints>,
    /// Deprecated: becomes `fetch`.
    pub uris: Option<Vec<String>>,
    pub fetch: Option<Vec<FetchUri>>,
    pub store_urls: Option<Vec<String>>,
    pub backoff_seconds: Option<i64>,
    pub backoff_factor: Option<f64>,
    pub max_launch_delay_seconds: Option<i64>,
    pub container: Option<Container>,
    pub health_checks: Option<Vec<HealthCheck>>,
    pub readiness_checks: Option<Vec<ReadinessCheck>>,
    pub dependencies: Option<Vec<String>>,
    pub upgrade_strategy: Option<UpgradeStrategy>,
    pub labels: Option<BTreeMap<String, String>>,
    pub accepted_resource_roles: Option<Vec<String>>,
    /// Deprecated: becomes `networks`.
    pub ip_address: Option<IpAddress>,
    pub networks: Option<Vec<Network>>,
    /// Deprecated: becomes `portDefinitions` (host networking only).
    pub ports: Option<Vec<u32>>,
    pub port_definitions: Option<Vec<PortDefinition>>,
    pub require_ports: Option<bool>,
    pub residency: Option<Value>,
    pub secrets: Option<BTreeMap<String, SecretDef>>,
    pub task_kill_grace_period_seconds: Option<i64>,
    pub unreachable_strategy: Option<UnreachableStrategy>,
    pub kill_selection: Option<KillSelection>,
    /// In an update body: roll back to this version (only with `id`).
    #[serde(with = "timestamp::option")]
    pub version: Option<DateTime<Utc>>,
    pub version_info: Option<VersionInfo>,
    pub role: Option<String>,
    pub tty: Option<bool>,
    pub resource_limits: Option<Value>,
    pub check: Option<Value>,
    pub executor_resources: Option<Value>,
}

impl AppUpdate {
    /// The body's `id` resolved to an absolute path (`web` → `/web`).
    pub fn path_id(&self) -> Option<PathId> {
        self.id.as_deref().map(PathId::new)
    }

    /// True if the body only sets `instances` (and maybe `id`): a pure scale
    /// request such as `{"instances": 3}`.
    pub fn is_scale_only(&self) -> bool {
        let probe = AppUpdate {
            id: self.id.clone(),
            instances: self.instances,
            ..AppUpdate::default()
        };
        self.instances.is_some() && *self == probe
    }

    /// True if the body asks to roll back to `version` (only `id` and
    /// `version` set). Marathon refuses `version` combined with other fields.
    pub fn is_version_rollback(&self) -> bool {
        self.version.is_some()
    }

    fn version_violation(&self, v: &mut Violations) {
        if self.version.is_some() {
            let probe = AppUpdate {
                id: self.id.clone(),
                version: self.version,
                ..AppUpdate::default()
            };
            if *self != probe {
                v.add("/", messages::VERSION_ONLY_WITH_ID);
            }
        }
    }

    /// Builds a new definition from Marathon's defaults (create, or replace
    /// with `partialUpdate=false`). The id is the body's `id`, or
    /// `id_from_path` when the body has none; when both are given the path
    /// wins (as in `PUT /v2/apps/{id}`). `version`/`versionInfo` in the body
    /// are ignored (the scheduler stamps versions). Validates.
    pub fn to_app(&self, id_from_path: Option<&PathId>) -> Result<AppDefinition, ValidationError> {
        let mut v = Violations::default();
        let app = self.build(None, id_from_path, &mut v);
        if let Some(app) = &app {
            check_app(app, &mut v);
        }
        v.into_result()?;
        app.ok_or_else(|| ValidationError::single("/id", "is required"))
    }

    /// Applies the present fields to `current` (partial update, Marathon
    /// 1.10's `partialUpdate=true` and PATCH), keeping `current.id`,
    /// `version` and `versionInfo`, then normalizes and validates. A body
    /// with `version` is a rollback: the caller handles it (see
    /// [`AppUpdate::is_version_rollback`]); here it is only checked not to be
    /// combined with other fields.
    pub fn apply_to(&self, current: &AppDefinition) -> Result<AppDefinition, ValidationError> {
        let mut v = Violations::default();
        self.version_violation(&mut v);
        let app = self.build(Some(current), Some(&current.id), &mut v);
        if let Some(app) = &app {
            check_app(app, &mut v);
        }
        v.into_result()?;
        app.ok_or_else(|| ValidationError::single("/id", "is required"))
    }

    /// Like [`AppUpdate::to_app`] but only conversion errors fail (no rule
    /// validation), and `version`/`versionInfo` are kept: for reading stored
    /// definitions.
    pub fn to_app_unvalidated(
        &self,
        id_from_path: Option<&PathId>,
    ) -> Result<AppDefinition, ValidationError> {
        let mut v = Violations::default();
        let app = self.build(None, id_from_path, &mut v);
        v.into_result()?;
        let mut app = app.ok_or_else(|| ValidationError::single("/id", "is required"))?;
        app.version = self.version.map(timestamp::truncate_to_millis);
        app.version_info = self.version_info;
        Ok(app)
    }

    /// Merge + normalization. `None` only when no id is known at all.
    fn build(
        &self,
        base: Option<&AppDefinition>,
        id_from_path: Option<&PathId>,
        v: &mut Violations,
    ) -> Option<AppDefinition> {
        let creating = base.is_none();
        let id = id_from_path.cloned().or_else(|| self.path_id())?;
        let mut app = match base {
            Some(b) => AppDefinition { id, ..b.clone() },
            None => AppDefinition::new(id),
        };

        if let Some(x) = &self.cmd {
            app.cmd = Some(x.clone());
        }
        if let Some(x) = &self.args {
            app.args = x.clone();
        }
        if let Some(x) = &self.user {
            app.user = Some(x.clone());
        }
        if let Some(x) = &self.env {
            app.env = x.clone();
        }
        if let Some(x) = self.instances {
            app.instances = int_field(v, "/instances", x);
        }
        if let Some(x) = self.cpus {
            app.cpus = x;
        }
        if let Some(x) = self.mem {
            app.mem = x;
        }
        if let Some(x) = self.disk {
            app.disk = x;
        }
        if let Some(x) = self.gpus {
            app.gpus = int_field(v, "/gpus", x);
        }
        if let Some(x) = &self.executor {
            app.executor = x.clone();
        }
        if let Some(raw) = &self.constraints {
            app.constraints = convert_constraints(raw, v);
        }
        self.merge_fetch(&mut app, v);
        if let Some(x) = &self.store_urls {
            app.store_urls = x.clone();
        }
        if let Some(x) = self.backoff_seconds {
            app.backoff_seconds = int_field(v, "/backoffSeconds", x);
        }
        if let Some(x) = self.backoff_factor {
            app.backoff_factor = x;
        }
        if let Some(x) = self.max_launch_delay_seconds {
            app.max_launch_delay_seconds = int_field(v, "/maxLaunchDelaySeconds", x);
        }
        if let Some(x) = &self.health_checks {
            app.health_checks = x.clone();
        }
        if let Some(x) = &self.readiness_checks {
            app.readiness_checks = x.clone();
        }
        if let Some(x) = &self.dependencies {
            // Relative dependencies are resolved against the app's group.
            let group = app.id.parent();
            app.dependencies = x.iter().map(|d| group.resolve(d)).collect();
        }
        if let Some(x) = self.upgrade_strategy {
            app.upgrade_strategy = x;
        }
        if let Some(x) = &self.labels {
            app.labels = x.clone();
        }
        if let Some(x) = &self.accepted_resource_roles {
            app.accepted_resource_roles = x.clone();
        }
        if let Some(x) = self.require_ports {
            app.require_ports = x;
        }
        if let Some(x) = &self.residency {
            app.residency = Some(x.clone());
        }
        if let Some(x) = &self.secrets {
            app.secrets = x.clone();
        }
        if let Some(x) = self.task_kill_grace_period_seconds {
            app.task_kill_grace_period_seconds =
                Some(int_field(v, "/taskKillGracePeriodSeconds", x));
        }
        if let Some(x) = self.unreachable_strategy {
            app.unreachable_strategy = x;
        }
        if let Some(x) = self.kill_selection {
            app.kill_selection = x;
        }
        if let Some(x) = &self.role {
            app.role = Some(x.clone());
        }
        if let Some(x) = self.tty {
            app.tty = Some(x);
        }
        if let Some(x) = &self.resource_limits {
            app.resource_limits = Some(x.clone());
        }
        if let Some(x) = &self.check {
            app.check = Some(x.clone());
        }
        if let Some(x) = &self.executor_resources {
            app.executor_resources = Some(x.clone());
        }

        let docker_network = self.merge_container(&mut app, v);
        self.merge_networks(&mut app, docker_network, creating, v);
        self.merge_ports(&mut app, v);
        normalize(&mut app);
        Some(app)
    }

    fn merge_fetch(&self, app: &mut AppDefinition, v: &mut Violations) {
        let uris = self.uris.as_deref().unwrap_or(&[]);
        match (&self.uris, &self.fetch) {
            (Some(_), Some(fetch)) if !uris.is_empty() && !fetch.is_empty() => {
                // Tolerated when both say the same (our own rendering emits both).
                if uris.iter().eq(fetch.iter().map(|f| &f.uri)) {
                    app.fetch = fetch.clone();
                } else {
                    v.add("/", "cannot specify both uris and fetch fields");
                }
            }
            (Some(_), _) if !uris.is_empty() => {
                app.fetch = uris.iter().map(|u| FetchUri::from_legacy_uri(u)).collect();
            }
            (_, Some(fetch)) => app.fetch = fetch.clone(),
            (Some(_), None) => app.fetch = Vec::new(),
            (None, None) => {}
        }
    }

    /// Replaces the container (if given), moving `docker.portMappings` to
    /// `container.portMappings`. Returns the deprecated `docker.network`.
    fn merge_container(
        &self,
        app: &mut AppDefinition,
        v: &mut Violations,
    ) -> Option<DockerNetwork> {
        let mut c = self.container.clone()?;
        let mut network = None;
        if let Some(d) = c.docker.as_mut() {
            network = d.network.take();
            if let Some(pm) = d.port_mappings.take() {
                if !pm.is_empty()
                    && !c.port_mappings().is_empty()
                    && c.port_mappings() != pm.as_slice()
                {
                    v.add(
                        "/container",
                        "cannot specify both portMappings and docker.portMappings",
                    );
                } else if c.port_mappings().is_empty() {
                    c.port_mappings = Some(pm);
                }
            }
        }
        app.container = Some(c);
        network
    }

    fn merge_networks(
        &self,
        app: &mut AppDefinition,
        docker_network: Option<DockerNetwork>,
        creating: bool,
        v: &mut Violations,
    ) {
        let legacy = match (&self.ip_address, docker_network) {
            (None, None) => None,
            (_, Some(DockerNetwork::None)) => {
                v.add(
                    "/container/docker/network",
                    "unsupported docker network type NONE",
                );
                None
            }
            (ip, Some(net)) => {
                let labels = ip.as_ref().map(|i| i.labels.clone()).unwrap_or_default();
                Some(vec![match net {
                    DockerNetwork::Host => Network::host(),
                    DockerNetwork::Bridge => Network {
                        labels,
                        ..Network::bridge()
                    },
                    _ => Network {
                        mode: NetworkMode::Container,
                        name: ip.as_ref().and_then(|i| i.network_name.clone()),
                        labels,
                    },
                }])
            }
            (Some(ip), None) => Some(vec![Network {
                mode: NetworkMode::Container,
                name: ip.network_name.clone(),
                labels: ip.labels.clone(),
            }]),
        };
        let given = self.networks.as_ref().filter(|n| !n.is_empty());
        match (given, legacy) {
            (Some(n), Some(l)) => {
                if *n != l {
                    let msg = if self.ip_address.is_some() {
                        "must not specify both networks and ipAddress"
                    } else {
                        "must not specify both container.docker.network and networks"
                    };
                    v.add("/", msg);
                }
                app.networks = n.clone();
            }
            (Some(n), None) => app.networks = n.clone(),
            (None, Some(l)) => app.networks = l,
            (None, None) => {
                if creating || self.networks.is_some() {
                    app.networks = vec![Network::host()];
                }
            }
        }
    }

    fn merge_ports(&self, app: &mut AppDefinition, v: &mut Violations) {
        let host = is_host_networking(&app.networks);
        let defs = self.port_definitions.as_ref();
        let ports = self.ports.as_ref();
        match (defs, ports) {
            (Some(d), Some(p)) if host && !d.is_empty() && !p.is_empty() => {
                // Tolerated when both agree (our own rendering emits both).
                if p.iter().eq(d.iter().map(|x| &x.port)) {
                    app.port_definitions = d.clone();
                } else {
                    v.add("/", "cannot specify both ports and port definitions");
                }
            }
            (Some(d), _) if !d.is_empty() || ports.is_none_or(|p| p.is_empty()) => {
                app.port_definitions = d.clone();
            }
            (_, Some(p)) => {
                app.port_definitions = p.iter().map(|&port| PortDefinition::new(port)).collect()
            }
            // Kept: the current ports on update, Marathon's default port
            // (held by AppDefinition::new) on create.
            (None, None) => {}
            (Some(d), None) => app.port_definitions = d.clone(),
        }
    }
}

fn int_field(v: &mut Violations, path: &str, x: i64) -> u32 {
    if x < 0 {
        v.add(path, "must be greater than or equal to 0");
        0
    } else if x > i64::from(i32::MAX) {
        v.add(path, format!("must be less than or equal to {}", i32::MAX));
        0
    } else {
        // In range 0..=i32::MAX, so it fits.
        x as u32
    }
}

fn convert_constraints(raw: &RawConstraints, v: &mut Violations) -> Vec<Constraint> {
    let mut out = Vec::with_capacity(raw.0.len());
    for (i, parts) in raw.0.iter().enumerate() {
        match Constraint::from_parts(parts) {
            Ok(c) => {
                if !out.contains(&c) {
                    out.push(c)
                }
            }
            Err(msg) => v.add(format!("/constraints({i})"), msg),
        }
    }
    out
}

/// Brings a merged definition into canonical form; idempotent.
///
/// * empty `networks` → `[{"mode": "host"}]`;
/// * host networking: no `container.portMappings`;
/// * other networking: no `portDefinitions`, `requirePorts` false, a
///   container with at least the default port mapping (Mesos container if
///   none was given), bridge mappings without `hostPort` get `hostPort: 0`;
/// * health checks get `path` / `portIndex` filled.
pub fn normalize(app: &mut AppDefinition) {
    if app.networks.is_empty() {
        app.networks = vec![Network::host()];
    }
    let host = is_host_networking(&app.networks);
    let bridge = app
        .networks
        .iter()
        .any(|n| n.mode == NetworkMode::ContainerBridge);
    let default_mapping = || PortMapping {
        name: Some(DEFAULT_PORT_NAME.to_string()),
        protocol: "tcp".to_string(),
        ..PortMapping::default()
    };
    if host {
        if let Some(c) = app.container.as_mut() {
            c.port_mappings = None;
        }
    } else {
        app.port_definitions.clear();
        app.require_ports = false;
        let c = app.container.get_or_insert_with(|| Container {
            container_type: ContainerType::Mesos,
            ..Container::default()
        });
        if c.port_mappings.is_none() {
            c.port_mappings = Some(vec![default_mapping()]);
        }
        if bridge {
            for m in c.port_mappings.iter_mut().flatten() {
                m.host_port.get_or_insert(0);
            }
        }
    }
    let has_ports = app.port_count() > 0;
    for hc in &mut app.health_checks {
        hc.normalize(has_ports);
    }
}
