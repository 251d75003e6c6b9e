//! App networking: `networks[]` and host-mode `portDefinitions[]`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Marathon's network modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum NetworkMode {
    /// A named (CNI / overlay) network; the task gets its own IP.
    #[default]
    #[serde(rename = "container")]
    Container,
    /// Docker-style bridge (`container/bridge`); host ports map to container ports.
    #[serde(rename = "container/bridge")]
    ContainerBridge,
    /// The agent's network namespace.
    #[serde(rename = "host")]
    Host,
}

/// One entry of `networks`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(default)]
    pub mode: NetworkMode,
    /// Network name (container mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Network {
    /// `{"mode": "host"}`, Marathon's default network.
    pub fn host() -> Self {
        Self {
            mode: NetworkMode::Host,
            ..Self::default()
        }
    }

    /// `{"mode": "container/bridge"}`.
    pub fn bridge() -> Self {
        Self {
            mode: NetworkMode::ContainerBridge,
            ..Self::default()
        }
    }
}

/// True if `networks` means host networking (empty is host, as in Marathon).
pub fn is_host_networking(networks: &[Network]) -> bool {
    networks.is_empty() || networks.iter().all(|n| n.mode == NetworkMode::Host)
}

fn tcp() -> String {
    "tcp".to_string()
}

/// One entry of `portDefinitions` (host networking).
///
/// `port: 0` asks for a service port assigned by the scheduler (10000–20000);
/// a non-zero port is kept as the service port (and used as host port when
/// `requirePorts` is true).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    #[serde(default)]
    pub port: u32,
    /// `tcp` (default), `udp` or `udp,tcp`.
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl PortDefinition {
    /// A `tcp` port definition with the given port and nothing else.
    pub fn new(port: u32) -> Self {
        Self {
            port,
            protocol: tcp(),
            name: None,
            labels: BTreeMap::new(),
        }
    }
}
