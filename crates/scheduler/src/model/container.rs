//! `container`: engine type, Docker image and options, port mappings and
//! volumes.
//!
//! The deprecated `container.docker.network` and `container.docker.portMappings`
//! are accepted on input and moved to `networks` / `container.portMappings`
//! by normalization (see `update.rs`); they are never rendered.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Container engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ContainerType {
    /// Marathon's default when `type` is absent.
    #[default]
    Docker,
    Mesos,
}

/// Deprecated `container.docker.network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DockerNetwork {
    Bridge,
    Host,
    None,
    User,
}

/// `{"key": "...", "value": "..."}`: a `docker run` option.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerParameter {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

fn tcp() -> String {
    "tcp".to_string()
}

/// One entry of `container.portMappings` (bridge / container networking).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Port inside the container; 0 means "same as the host port".
    #[serde(default)]
    pub container_port: u32,
    /// Host port; 0 = dynamic from the offer, absent = no host port
    /// (container networks). Set to 0 for bridge networking by normalization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "tcp")]
    pub protocol: String,
    /// 0 asks for a scheduler-assigned service port.
    #[serde(default)]
    pub service_port: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_names: Vec<String>,
}

/// `container.docker`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerContainer {
    /// Required for Docker containers (validated, not a parse error).
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub force_pull_image: bool,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub parameters: Vec<DockerParameter>,
    /// Deprecated; moved to `networks` by normalization, never rendered.
    #[serde(default, skip_serializing)]
    pub network: Option<DockerNetwork>,
    /// Deprecated; moved to `container.portMappings`, never rendered.
    #[serde(default, skip_serializing)]
    pub port_mappings: Option<Vec<PortMapping>>,
    /// Deprecated docker credential, kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Value>,
    /// `{"secret": "..."}` naming a registry config secret, kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_config: Option<Value>,
}

/// One entry of `container.volumes`. Host volumes (`hostPath`) are typed;
/// persistent, external and secret volumes keep their extra keys as given.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `RO` or `RW`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `persistent`, `external`, `secret`, … as given.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `container`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(rename = "type", default)]
    pub container_type: ContainerType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerContainer>,
    /// Present only for non-host networking once normalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_info: Option<Value>,
}

impl Container {
    /// The image to run, if any (Docker or Mesos containerizer with a Docker image).
    pub fn image(&self) -> Option<&str> {
        self.docker
            .as_ref()
            .map(|d| d.image.as_str())
            .filter(|i| !i.is_empty())
    }

    /// Port mappings, empty when none.
    pub fn port_mappings(&self) -> &[PortMapping] {
        self.port_mappings.as_deref().unwrap_or(&[])
    }
}
