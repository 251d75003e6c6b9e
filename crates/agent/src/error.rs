//! Errors of the agent.

use std::path::PathBuf;

use crate::containerizer::ContainerizerError;

/// What failed in the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid agent configuration: {0}")]
    Config(String),
    #[error("invalid --resources: {0}")]
    Resources(#[from] meseta_core::CoreError),
    #[error("work dir {path}: {source}")]
    WorkDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("serve http on {addr}: {source}")]
    Serve {
        addr: String,
        source: std::io::Error,
    },
    #[error("containerizer: {0}")]
    Containerizer(#[from] ContainerizerError),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error("fetcher: {0}")]
    Fetcher(#[from] crate::fetcher::FetchError),
}
