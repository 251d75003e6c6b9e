//! The Marathon 1.10 app model: definitions, updates, validation and the
//! JSON the `/v2` API returns.
//!
//! Request bodies go through two steps, which map to two HTTP answers:
//!
//! 1. [`parse_app_update`] (or [`parse_app_updates`] for a list): JSON
//!    syntax and types. A failure is a [`ParseError`] → **400**
//!    `{"message": "Invalid JSON", "details": [...]}`.
//! 2. [`AppUpdate::to_app`] (create / replace) or [`AppUpdate::apply_to`]
//!    (partial update): Marathon's rules. A failure is a [`ValidationError`]
//!    → **422** `{"message": "Object is not valid", "details": [...]}`.
//!
//! [`parse_app_definition`] does both for `POST /v2/apps`. Responses use
//! [`render_app`]; service ports are assigned with [`assign_service_ports`].

mod app;
mod constraints;
mod container;
mod health;
mod network;
mod path;
mod render;
mod service_ports;
mod timestamp;
mod update;
mod validate;

pub use app::{
    AppChange, AppDefinition, EnvVarValue, FetchUri, KillSelection, SecretDef, UnreachableStrategy,
    UpgradeStrategy, VersionInfo, DEFAULT_BACKOFF_FACTOR, DEFAULT_BACKOFF_SECONDS, DEFAULT_CPUS,
    DEFAULT_DISK, DEFAULT_INSTANCES, DEFAULT_MAX_LAUNCH_DELAY_SECONDS, DEFAULT_MEM,
    DEFAULT_PORT_NAME,
};
pub use constraints::{Constraint, ConstraintOperator, RawConstraints};
pub use container::{
    Container, ContainerType, DockerContainer, DockerNetwork, DockerParameter, PortMapping, Volume,
};
pub use health::{CommandCheck, HealthCheck, HealthCheckProtocol, ReadinessCheck};
pub use network::{is_host_networking, Network, NetworkMode, PortDefinition};
pub use path::{segment_is_valid, PathId, PathIdError};
pub use render::render_app;
pub use service_ports::{
    assign_service_ports, ServicePortAllocator, SERVICE_PORT_MAX, SERVICE_PORT_MIN,
};
pub use timestamp::{marathon_timestamp, now_millis, parse_timestamp, truncate_to_millis};
pub use update::{normalize, AppUpdate, IpAddress};
pub use validate::{validate_app, Detail, ValidationError, Violations, NOT_VALID};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Errors of the app model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The body is not JSON or has wrong types (HTTP 400).
    #[error("malformed app JSON: {0}")]
    Parse(#[from] ParseError),
    /// The body is well-formed but breaks Marathon's rules (HTTP 422).
    #[error("invalid app definition: {0}")]
    Invalid(#[from] ValidationError),
    /// An id that is not a valid Marathon path.
    #[error("invalid app id: {0}")]
    PathId(#[from] PathIdError),
    /// No free service port is left.
    #[error("no free service port in {min}..={max}")]
    ServicePortsExhausted { min: u32, max: u32 },
}

impl ModelError {
    /// The HTTP status Marathon answers with for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            // Marathon: broken JSON is 400, well-formed JSON with a value
            // of the wrong type is 422 "Invalid JSON".
            Self::Parse(e) if e.kind == ParseErrorKind::Syntax => 400,
            Self::Parse(_) => 422,
            Self::Invalid(_) | Self::PathId(_) => 422,
            Self::ServicePortsExhausted { .. } => 503,
        }
    }

    /// The response body in Marathon's error shape.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Parse(e) => e.to_json(),
            Self::Invalid(e) => serde_json::to_value(e).unwrap_or_default(),
            Self::PathId(e) => {
                serde_json::to_value(ValidationError::single("/id", validate::path_id_message(e)))
                    .unwrap_or_default()
            }
            Self::ServicePortsExhausted { .. } => {
                serde_json::json!({ "message": self.to_string() })
            }
        }
    }
}

/// What was wrong with a body that could not be read as app JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ParseErrorKind {
    /// Not JSON at all (syntax, truncated body, empty body).
    Syntax,
    /// JSON, but a value has the wrong type (`"cpus": "a lot"`).
    Data,
}

/// A body that is not JSON, or JSON with a value of the wrong type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} error at {path}: {message}")]
pub struct ParseError {
    pub kind: ParseErrorKind,
    /// Marathon-style path of the offending value (`/healthChecks(0)/intervalSeconds`),
    /// `/` when unknown.
    pub path: String,
    /// serde's description (`invalid type: string "x", expected f64`).
    pub message: String,
}

impl ParseError {
    /// `{"message": "Invalid JSON", "details": [{"path", "errors"}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "message": "Invalid JSON",
            "details": [{ "path": self.path, "errors": [self.message] }],
        })
    }
}

/// Converts serde_path_to_error's path into Marathon's notation.
fn marathon_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("({index})")),
            Segment::Map { key } => {
                out.push('/');
                out.push_str(key);
            }
            Segment::Enum { variant } => {
                out.push('/');
                out.push_str(variant);
            }
            Segment::Unknown => {}
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Reads `body` as `T`, reporting where it failed.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = marathon_path(e.path());
        let inner = e.into_inner();
        let kind = match inner.classify() {
            serde_json::error::Category::Data => ParseErrorKind::Data,
            _ => ParseErrorKind::Syntax,
        };
        ParseError {
            kind,
            path,
            message: inner.to_string(),
        }
    })?;
    de.end().map_err(|e| ParseError {
        kind: ParseErrorKind::Syntax,
        path: "/".to_string(),
        message: e.to_string(),
    })?;
    Ok(value)
}

/// Parses one app body (POST, PUT, PATCH of one app). Unknown keys are
/// ignored. The body must be a JSON object.
pub fn parse_app_update(body: &[u8]) -> Result<AppUpdate, ParseError> {
    parse_json(body)
}

/// Parses a list of app bodies (`PUT`/`PATCH /v2/apps`).
pub fn parse_app_updates(body: &[u8]) -> Result<Vec<AppUpdate>, ParseError> {
    parse_json(body)
}

/// `POST /v2/apps`: parse, build from defaults, validate. The id comes from
/// the body (relative ids become absolute).
pub fn parse_app_definition(body: &[u8]) -> Result<AppDefinition, ModelError> {
    let update = parse_app_update(body)?;
    Ok(update.to_app(None)?)
}
