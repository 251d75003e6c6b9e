//! App health checks and readiness checks (Marathon 1.10 `healthChecks[]`,
//! `readinessChecks[]`), with Marathon's defaults.
//!
//! Deserialization fills the numeric defaults; [`HealthCheck::normalize`]
//! fills `path` and `portIndex` the way Marathon's normalization does, so the
//! stored check renders with every field present (marathon-lb reads them as
//! required keys).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Health check protocols. An unknown protocol is kept (not a parse error)
/// so that validation can report it with a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum HealthCheckProtocol {
    #[default]
    Http,
    Https,
    Tcp,
    Command,
    MesosHttp,
    MesosHttps,
    MesosTcp,
    /// Anything else; invalid.
    Unknown(String),
}

impl HealthCheckProtocol {
    /// The wire name (`MESOS_HTTP`).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Http => "HTTP",
            Self::Https => "HTTPS",
            Self::Tcp => "TCP",
            Self::Command => "COMMAND",
            Self::MesosHttp => "MESOS_HTTP",
            Self::MesosHttps => "MESOS_HTTPS",
            Self::MesosTcp => "MESOS_TCP",
            Self::Unknown(s) => s,
        }
    }

    /// Maps a wire name (exact, upper case) to a protocol.
    pub fn from_wire(s: &str) -> Self {
        match s {
            "HTTP" => Self::Http,
            "HTTPS" => Self::Https,
            "TCP" => Self::Tcp,
            "COMMAND" => Self::Command,
            "MESOS_HTTP" => Self::MesosHttp,
            "MESOS_HTTPS" => Self::MesosHttps,
            "MESOS_TCP" => Self::MesosTcp,
            other => Self::Unknown(other.to_string()),
        }
    }

    /// HTTP-like checks use `path`.
    pub fn uses_path(&self) -> bool {
        matches!(
            self,
            Self::Http | Self::Https | Self::MesosHttp | Self::MesosHttps
        )
    }

    /// Checks executed by Mesos on the agent rather than by Marathon.
    pub fn is_mesos(&self) -> bool {
        matches!(
            self,
            Self::Command | Self::MesosHttp | Self::MesosHttps | Self::MesosTcp
        )
    }

    /// Checks Marathon itself performs (HTTP, HTTPS, TCP).
    pub fn is_marathon(&self) -> bool {
        matches!(self, Self::Http | Self::Https | Self::Tcp)
    }
}

impl Serialize for HealthCheckProtocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for HealthCheckProtocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::from_wire(&String::deserialize(d)?))
    }
}

/// `{"value": "<shell command>"}` of a COMMAND health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandCheck {
    pub value: String,
}

/// Default grace period (seconds) before failures count.
pub const DEFAULT_GRACE_PERIOD_SECONDS: u32 = 300;
/// Default interval between checks (seconds).
pub const DEFAULT_INTERVAL_SECONDS: u32 = 60;
/// Default check timeout (seconds).
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 20;
/// Default consecutive failures before the task is killed (0 = never).
pub const DEFAULT_MAX_CONSECUTIVE_FAILURES: u32 = 3;
/// Default delay before the first (Mesos) check (seconds).
pub const DEFAULT_DELAY_SECONDS: u32 = 15;

fn d_grace() -> u32 {
    DEFAULT_GRACE_PERIOD_SECONDS
}
fn d_interval() -> u32 {
    DEFAULT_INTERVAL_SECONDS
}
fn d_timeout() -> u32 {
    DEFAULT_TIMEOUT_SECONDS
}
fn d_failures() -> u32 {
    DEFAULT_MAX_CONSECUTIVE_FAILURES
}
fn d_delay() -> u32 {
    DEFAULT_DELAY_SECONDS
}

/// One entry of an app's `healthChecks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    #[serde(default)]
    pub protocol: HealthCheckProtocol,
    /// HTTP path; `/` after normalization for HTTP-like protocols.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Index into the app's ports; `0` after normalization when neither
    /// `port` nor `portIndex` was given and the app has ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<u32>,
    /// A fixed port to check instead of `portIndex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// The command of a COMMAND check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandCheck>,
    #[serde(default = "d_grace")]
    pub grace_period_seconds: u32,
    #[serde(default = "d_interval")]
    pub interval_seconds: u32,
    #[serde(default = "d_timeout")]
    pub timeout_seconds: u32,
    #[serde(default = "d_failures")]
    pub max_consecutive_failures: u32,
    #[serde(default = "d_delay")]
    pub delay_seconds: u32,
    #[serde(default)]
    pub ignore_http1xx: bool,
    /// `IPv4` (default) or `IPv6`; only rendered when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol: Option<String>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            protocol: HealthCheckProtocol::Http,
            path: None,
            port_index: None,
            port: None,
            command: None,
            grace_period_seconds: DEFAULT_GRACE_PERIOD_SECONDS,
            interval_seconds: DEFAULT_INTERVAL_SECONDS,
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            max_consecutive_failures: DEFAULT_MAX_CONSECUTIVE_FAILURES,
            delay_seconds: DEFAULT_DELAY_SECONDS,
            ignore_http1xx: false,
            ip_protocol: None,
        }
    }
}

impl HealthCheck {
    /// Fills Marathon's implicit values: `path` `/` for HTTP-like checks,
    /// `portIndex` 0 for port-based checks given neither `port` nor
    /// `portIndex` when the app has at least one port (`app_has_ports`).
    /// Idempotent.
    pub fn normalize(&mut self, app_has_ports: bool) {
        if self.protocol.uses_path() && self.path.is_none() {
            self.path = Some("/".to_string());
        }
        if self.protocol != HealthCheckProtocol::Command
            && self.port.is_none()
            && self.port_index.is_none()
            && app_has_ports
        {
            self.port_index = Some(0);
        }
    }
}

fn d_rc_name() -> String {
    "readinessCheck".to_string()
}
fn d_rc_protocol() -> String {
    "HTTP".to_string()
}
fn d_rc_path() -> String {
    "/".to_string()
}
fn d_rc_port_name() -> String {
    "http-api".to_string()
}
fn d_rc_interval() -> u32 {
    30
}
fn d_rc_timeout() -> u32 {
    10
}
fn d_rc_codes() -> Vec<u32> {
    vec![200]
}

/// One entry of `readinessChecks` (at most one per app), with Marathon's
/// defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheck {
    #[serde(default = "d_rc_name")]
    pub name: String,
    /// `HTTP` or `HTTPS`.
    #[serde(default = "d_rc_protocol")]
    pub protocol: String,
    #[serde(default = "d_rc_path")]
    pub path: String,
    /// Name of the port (portDefinitions / portMappings) to query.
    #[serde(default = "d_rc_port_name")]
    pub port_name: String,
    #[serde(default = "d_rc_interval")]
    pub interval_seconds: u32,
    #[serde(default = "d_rc_timeout")]
    pub timeout_seconds: u32,
    #[serde(default = "d_rc_codes")]
    pub http_status_codes_for_ready: Vec<u32>,
    #[serde(default)]
    pub preserve_last_response: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_normalize() {
        let mut hc: HealthCheck = serde_json::from_str(r#"{"protocol":"HTTP"}"#).expect("parses");
        hc.normalize(true);
        let v = serde_json::to_value(&hc).expect("serializes");
        assert_eq!(
            v,
            serde_json::json!({
                "protocol": "HTTP", "path": "/", "portIndex": 0,
                "gracePeriodSeconds": 300, "intervalSeconds": 60, "timeoutSeconds": 20,
                "maxConsecutiveFailures": 3, "delaySeconds": 15, "ignoreHttp1xx": false
            })
        );
        let mut cmd: HealthCheck =
            serde_json::from_str(r#"{"protocol":"COMMAND","command":{"value":"true"}}"#)
                .expect("parses");
        cmd.normalize(true);
        assert_eq!(cmd.port_index, None);
        assert_eq!(cmd.path, None);
        let odd: HealthCheck = serde_json::from_str(r#"{"protocol":"GOPHER"}"#).expect("parses");
        assert_eq!(odd.protocol, HealthCheckProtocol::Unknown("GOPHER".into()));
    }
}
