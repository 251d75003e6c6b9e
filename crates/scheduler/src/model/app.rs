//! The canonical Marathon app definition ([`AppDefinition`]) and its small
//! value types.
//!
//! An `AppDefinition` is always normalized: absolute id, deprecated fields
//! (`ports`, `uris`, `ipAddress`, `container.docker.network`,
//! `container.docker.portMappings`) translated into their canonical
//! replacements, defaults filled in. Build one from JSON with
//! [`crate::model::parse_app_definition`] or [`crate::model::AppUpdate`];
//! serialize it with [`crate::model::render_app`] (its `Serialize` impl does
//! the same).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::constraints::Constraint;
use super::container::Container;
use super::health::{HealthCheck, ReadinessCheck};
use super::network::{is_host_networking, Network, PortDefinition};
use super::path::PathId;
use super::timestamp;

/// Default `instances`.
pub const DEFAULT_INSTANCES: u32 = 1;
/// Default `cpus`.
pub const DEFAULT_CPUS: f64 = 1.0;
/// Default `mem` (MiB).
pub const DEFAULT_MEM: f64 = 128.0;
/// Default `disk` (MiB).
pub const DEFAULT_DISK: f64 = 0.0;
/// Default `backoffSeconds`.
pub const DEFAULT_BACKOFF_SECONDS: u32 = 1;
/// Default `backoffFactor`.
pub const DEFAULT_BACKOFF_FACTOR: f64 = 1.15;
/// Default `maxLaunchDelaySeconds` (Marathon 1.10: 300, i.e. 5 minutes).
pub const DEFAULT_MAX_LAUNCH_DELAY_SECONDS: u32 = 300;
/// Name Marathon gives the default port definition / port mapping.
pub const DEFAULT_PORT_NAME: &str = "default";

/// An `env` value: a plain string or a reference to one of the app's secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvVarValue {
    Value(String),
    Secret { secret: String },
}

impl Serialize for EnvVarValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(v) => s.serialize_str(v),
            Self::Secret { secret } => serde_json::json!({ "secret": secret }).serialize(s),
        }
    }
}

/// Accepts a string, `{"secret": "name"}`, and (leniently) numbers and
/// booleans, which become strings.
impl<'de> Deserialize<'de> for EnvVarValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Self::Value(s)),
            Value::Number(n) => Ok(Self::Value(n.to_string())),
            Value::Bool(b) => Ok(Self::Value(b.to_string())),
            Value::Object(o) => match o.get("secret") {
                Some(Value::String(s)) if o.len() == 1 => Ok(Self::Secret { secret: s.clone() }),
                _ => Err(D::Error::custom(
                    "env value must be a string or {\"secret\": \"<name>\"}",
                )),
            },
            _ => Err(D::Error::custom(
                "env value must be a string or {\"secret\": \"<name>\"}",
            )),
        }
    }
}

fn yes() -> bool {
    true
}

/// One entry of `fetch`: an artifact the fetcher downloads into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchUri {
    pub uri: String,
    /// Unpack archives (Marathon's default: true).
    #[serde(default = "yes")]
    pub extract: bool,
    #[serde(default)]
    pub executable: bool,
    #[serde(default)]
    pub cache: bool,
    /// File name in the sandbox (Marathon's internal `outputFile`); on the
    /// wire it is `destPath`, and `outputFile` is accepted too.
    #[serde(
        default,
        rename = "destPath",
        alias = "outputFile",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_file: Option<String>,
}

/// Archive suffixes for which a legacy `uris` entry is extracted.
pub const EXTRACTABLE_SUFFIXES: [&str; 9] = [
    ".tar", ".tar.gz", ".tar.bz2", ".tar.xz", ".gz", ".tgz", ".tbz2", ".txz", ".zip",
];

impl FetchUri {
    /// The `fetch` entry for a legacy `uris` element: extracted when the
    /// URI's path ends with an archive suffix, as Marathon does.
    pub fn from_legacy_uri(uri: &str) -> Self {
        let path = uri.split(['?', '#']).next().unwrap_or(uri);
        Self {
            uri: uri.to_string(),
            extract: EXTRACTABLE_SUFFIXES.iter().any(|s| path.ends_with(s)),
            executable: false,
            cache: false,
            output_file: None,
        }
    }
}

/// A secret declaration: `{"source": "<store path>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretDef {
    pub source: String,
}

fn one() -> f64 {
    1.0
}

/// How a deployment replaces instances: both values are fractions of
/// `instances` in `[0, 1]`; Marathon's default is 1 / 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    #[serde(default = "one")]
    pub minimum_health_capacity: f64,
    #[serde(default = "one")]
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        Self {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

/// What happens to instances on unreachable agents: `"disabled"` or
/// `{"inactiveAfterSeconds", "expungeAfterSeconds"}` (Marathon 1.10 default:
/// enabled with 0 / 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnreachableStrategy {
    Disabled,
    Enabled {
        inactive_after_seconds: u64,
        expunge_after_seconds: u64,
    },
}

impl Default for UnreachableStrategy {
    fn default() -> Self {
        Self::Enabled {
            inactive_after_seconds: 0,
            expunge_after_seconds: 0,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UnreachableEnabledWire {
    #[serde(default)]
    inactive_after_seconds: u64,
    #[serde(default)]
    expunge_after_seconds: u64,
}

impl Serialize for UnreachableStrategy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Self::Disabled => s.serialize_str("disabled"),
            Self::Enabled {
                inactive_after_seconds,
                expunge_after_seconds,
            } => UnreachableEnabledWire {
                inactive_after_seconds,
                expunge_after_seconds,
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for UnreachableStrategy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) if s == "disabled" => Ok(Self::Disabled),
            v @ Value::Object(_) => {
                let w: UnreachableEnabledWire =
                    serde_json::from_value(v).map_err(D::Error::custom)?;
                Ok(Self::Enabled {
                    inactive_after_seconds: w.inactive_after_seconds,
                    expunge_after_seconds: w.expunge_after_seconds,
                })
            }
            _ => Err(D::Error::custom(
                "unreachableStrategy must be \"disabled\" or an object",
            )),
        }
    }
}

/// Which instances go first when scaling down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KillSelection {
    #[default]
    YoungestFirst,
    OldestFirst,
}

/// When the app was last scaled and last changed in a way that replaces
/// its tasks. Rendered as Marathon timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    #[serde(with = "timestamp::required")]
    pub last_scaling_at: DateTime<Utc>,
    #[serde(with = "timestamp::required")]
    pub last_config_change_at: DateTime<Utc>,
}

/// How a new definition differs from the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppChange {
    /// Nothing but possibly `version`/`versionInfo` differs.
    None,
    /// Only `instances` differs: a scale, tasks are kept.
    ScaleOnly,
    /// Anything else differs: a restart/upgrade of the tasks.
    Config,
}

/// A normalized Marathon 1.10 app definition.
///
/// Invariants kept by every constructor in this module: `id` is absolute;
/// `networks` is non-empty; with host networking `container.portMappings` is
/// `None`; with other networking `portDefinitions` is empty and
/// `requirePorts` is false; health checks carry `path` / `portIndex` as
/// Marathon fills them. Validation is separate ([`crate::model::validate_app`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AppDefinition {
    pub id: PathId,
    pub cmd: Option<String>,
    pub args: Vec<String>,
    pub user: Option<String>,
    pub env: BTreeMap<String, EnvVarValue>,
    pub instances: u32,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: u32,
    pub executor: String,
    pub constraints: Vec<Constraint>,
    /// Artifacts; legacy `uris` are translated into entries here.
    pub fetch: Vec<FetchUri>,
    /// Pre-Marathon-1.5 `storeUrls`, kept as given.
    pub store_urls: Vec<String>,
    pub backoff_seconds: u32,
    pub backoff_factor: f64,
    pub max_launch_delay_seconds: u32,
    pub container: Option<Container>,
    pub health_checks: Vec<HealthCheck>,
    pub readiness_checks: Vec<ReadinessCheck>,
    pub dependencies: Vec<PathId>,
    pub upgrade_strategy: UpgradeStrategy,
    pub labels: BTreeMap<String, String>,
    pub accepted_resource_roles: Vec<String>,
    pub networks: Vec<Network>,
    /// Host-networking ports; legacy `ports` are translated into entries here.
    pub port_definitions: Vec<PortDefinition>,
    pub require_ports: bool,
    /// Deprecated, no effect; kept as given.
    pub residency: Option<Value>,
    pub secrets: BTreeMap<String, SecretDef>,
    pub task_kill_grace_period_seconds: Option<u32>,
    pub unreachable_strategy: UnreachableStrategy,
    pub kill_selection: KillSelection,
    /// Set by the scheduler when the definition is stored.
    pub version: Option<DateTime<Utc>>,
    pub version_info: Option<VersionInfo>,
    /// Newer optional fields: rendered only when set.
    pub role: Option<String>,
    pub tty: Option<bool>,
    pub resource_limits: Option<Value>,
    pub check: Option<Value>,
    pub executor_resources: Option<Value>,
}

impl AppDefinition {
    /// An app with id `id` and every Marathon default: 1 instance, 1 cpu,
    /// 128 MiB, host networking with one port definition (port 0, named
    /// `default`), no command (so not yet valid).
    pub fn new(id: PathId) -> Self {
        Self {
            id,
            cmd: None,
            args: Vec::new(),
            user: None,
            env: BTreeMap::new(),
            instances: DEFAULT_INSTANCES,
            cpus: DEFAULT_CPUS,
            mem: DEFAULT_MEM,
            disk: DEFAULT_DISK,
            gpus: 0,
            executor: String::new(),
            constraints: Vec::new(),
            fetch: Vec::new(),
            store_urls: Vec::new(),
            backoff_seconds: DEFAULT_BACKOFF_SECONDS,
            backoff_factor: DEFAULT_BACKOFF_FACTOR,
            max_launch_delay_seconds: DEFAULT_MAX_LAUNCH_DELAY_SECONDS,
            container: None,
            health_checks: Vec::new(),
            readiness_checks: Vec::new(),
            dependencies: Vec::new(),
            upgrade_strategy: UpgradeStrategy::default(),
            labels: BTreeMap::new(),
            accepted_resource_roles: Vec::new(),
            networks: vec![Network::host()],
            port_definitions: vec![PortDefinition {
                name: Some(DEFAULT_PORT_NAME.to_string()),
                ..PortDefinition::new(0)
            }],
            require_ports: false,
            residency: None,
            secrets: BTreeMap::new(),
            task_kill_grace_period_seconds: None,
            unreachable_strategy: UnreachableStrategy::default(),
            kill_selection: KillSelection::default(),
            version: None,
            version_info: None,
            role: None,
            tty: None,
            resource_limits: None,
            check: None,
            executor_resources: None,
        }
    }

    /// True when the app uses host networking (ports come from
    /// `portDefinitions`), false for bridge / container networks (ports come
    /// from `container.portMappings`).
    pub fn is_host_networking(&self) -> bool {
        is_host_networking(&self.networks)
    }

    /// Number of ports each task gets (the valid range of health check
    /// `portIndex`): port mappings when present, else port definitions.
    pub fn port_count(&self) -> usize {
        match self.container.as_ref().map(|c| c.port_mappings()) {
            Some(pm) if !pm.is_empty() => pm.len(),
            _ => self.port_definitions.len(),
        }
    }

    /// The app's service ports in port order: `portDefinitions[].port` for
    /// host networking, `portMappings[].servicePort` otherwise. Zeros mean
    /// "not yet assigned" (see [`crate::model::assign_service_ports`]).
    pub fn service_ports(&self) -> Vec<u32> {
        if self.is_host_networking() {
            self.port_definitions.iter().map(|p| p.port).collect()
        } else {
            self.container
                .as_ref()
                .map(|c| c.port_mappings().iter().map(|m| m.service_port).collect())
                .unwrap_or_default()
        }
    }

    /// The image to run, if the app has a container with one.
    pub fn image(&self) -> Option<&str> {
        self.container.as_ref().and_then(Container::image)
    }

    /// Compares `self` (current) with `next`, ignoring `version` and
    /// `versionInfo`: [`AppChange::ScaleOnly`] when only `instances` differ
    /// (Marathon bumps `lastScalingAt`), [`AppChange::Config`] for anything
    /// else (Marathon bumps `lastConfigChangeAt` and replaces tasks).
    pub fn change_to(&self, next: &AppDefinition) -> AppChange {
        let mut a = self.clone();
        let mut b = next.clone();
        for app in [&mut a, &mut b] {
            app.version = None;
            app.version_info = None;
        }
        if a == b {
            return AppChange::None;
        }
        b.instances = a.instances;
        if a == b {
            AppChange::ScaleOnly
        } else {
            AppChange::Config
        }
    }

    /// Stamps a new version at `at` (truncated to milliseconds):
    /// `version = at`; for [`AppChange::ScaleOnly`] only `lastScalingAt`
    /// moves (keeping the previous `lastConfigChangeAt`, or `at` if there was
    /// none); for [`AppChange::Config`] both move; for [`AppChange::None`]
    /// nothing changes. Call it on the definition about to be stored.
    pub fn stamp_version(&mut self, at: DateTime<Utc>, change: AppChange) {
        let at = timestamp::truncate_to_millis(at);
        match change {
            AppChange::None => {}
            AppChange::ScaleOnly => {
                let config = self
                    .version_info
                    .map(|v| v.last_config_change_at)
                    .unwrap_or(at);
                self.version = Some(at);
                self.version_info = Some(VersionInfo {
                    last_scaling_at: at,
                    last_config_change_at: config,
                });
            }
            AppChange::Config => {
                self.version = Some(at);
                self.version_info = Some(VersionInfo {
                    last_scaling_at: at,
                    last_config_change_at: at,
                });
            }
        }
    }
}

/// Renders Marathon's full form (same as [`crate::model::render_app`]).
impl Serialize for AppDefinition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        super::render::render_app(self).serialize(s)
    }
}

/// Reads any Marathon app JSON (rendered or user-written) and normalizes
/// it, without validation: meant for stored definitions. User input goes
/// through [`crate::model::parse_app_definition`], which validates.
impl<'de> Deserialize<'de> for AppDefinition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let update = super::update::AppUpdate::deserialize(d)?;
        update
            .to_app_unvalidated(None)
            .map_err(|e| D::Error::custom(e.to_string()))
    }
}
