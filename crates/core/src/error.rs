//! Errors of the core vocabulary.

/// What went wrong parsing or combining core values.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CoreError {
    #[error("invalid resource '{text}': {reason}")]
    InvalidResource { text: String, reason: String },
    #[error("invalid attribute '{text}': {reason}")]
    InvalidAttribute { text: String, reason: String },
    #[error("resource '{name}' has type {found}, expected {expected}")]
    TypeMismatch {
        name: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("not enough '{name}' (role {role}) to subtract")]
    Insufficient { name: String, role: String },
}
