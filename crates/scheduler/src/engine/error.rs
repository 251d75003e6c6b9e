//! Why an engine operation was refused. Every refusal leaves the engine
//! exactly as it was.

use crate::model::{ModelError, PathId, ValidationError};

/// A refused lifecycle operation; the API renders each in Marathon's shape.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("App '{0}' does not exist")]
    AppNotFound(PathId),
    #[error("An app with id [{0}] already exists.")]
    AppExists(PathId),
    #[error("Group '{0}' does not exist")]
    GroupNotFound(PathId),
    #[error("Group {0} is already created. Use PUT to change this group.")]
    GroupExists(PathId),
    #[error("App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{}'.", .0.first().map(String::as_str).unwrap_or(""))]
    Locked(Vec<String>),
    #[error("App '{app}' does not exist in version {version}")]
    AppVersionNotFound { app: PathId, version: String },
    #[error("Group '{group}' does not exist in version {version}")]
    GroupVersionNotFound { group: PathId, version: String },
    #[error("DeploymentPlan {0} does not exist")]
    DeploymentNotFound(String),
    #[error("Task '{0}' does not exist")]
    TaskNotFound(String),
    #[error("{0}")]
    Invalid(ValidationError),
    #[error("{0}")]
    Model(#[from] ModelError),
}

impl EngineError {
    /// The HTTP status Marathon answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::AppNotFound(_)
            | Self::GroupNotFound(_)
            | Self::AppVersionNotFound { .. }
            | Self::GroupVersionNotFound { .. }
            | Self::DeploymentNotFound(_)
            | Self::TaskNotFound(_) => 404,
            Self::AppExists(_) | Self::GroupExists(_) | Self::Locked(_) => 409,
            Self::Invalid(_) => 422,
            Self::Model(e) => e.http_status(),
        }
    }

    /// The body in Marathon's shape (`{"message", "details"}`, 409s list
    /// the deployments).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Invalid(e) => serde_json::to_value(e).unwrap_or_default(),
            Self::Model(e) => e.to_json(),
            Self::Locked(ids) => serde_json::json!({
                "message": self.to_string(),
                "deployments": ids.iter().map(|id| serde_json::json!({"id": id})).collect::<Vec<_>>(),
            }),
            _ => serde_json::json!({"message": self.to_string()}),
        }
    }

    /// A validation error whose paths are under `prefix` (`(1)` for the
    /// second app of a list, `/apps(0)` inside a group).
    pub fn under(self, prefix: &str) -> EngineError {
        match self {
            Self::Invalid(e) => Self::Invalid(prefixed(e, prefix)),
            Self::Model(ModelError::Invalid(e)) => Self::Invalid(prefixed(e, prefix)),
            other => other,
        }
    }
}

fn prefixed(mut e: ValidationError, prefix: &str) -> ValidationError {
    for d in &mut e.details {
        d.path = if d.path == "/" {
            prefix.to_string()
        } else {
            format!("{prefix}{}", d.path)
        };
    }
    e
}

impl From<ValidationError> for EngineError {
    fn from(e: ValidationError) -> Self {
        EngineError::Invalid(e)
    }
}
