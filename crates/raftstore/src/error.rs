//! The crate's error type.

use std::path::PathBuf;

use crate::storage::StoreError;

/// Why a raft operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// This node is not the leader; retry on `leader` (host:port) when known.
    #[error("not the leader (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader { leader: Option<String> },
    /// raft refused or discarded the proposal before it was committed; it was not applied.
    #[error("proposal dropped: {reason}")]
    ProposalDropped { reason: String },
    /// This node lost leadership while the proposal at `index` was in flight:
    /// it may or may not be committed later. Callers must not assume either.
    #[error("leadership lost while proposal at index {index} was pending; outcome unknown")]
    LeadershipLost { index: u64 },
    /// The raft node has stopped (shut down, or stopped after a storage failure).
    #[error("raft node {id} is stopped")]
    Stopped { id: u64 },
    /// The configuration cannot work.
    #[error("invalid raft config: {0}")]
    InvalidConfig(String),
    /// Opening the log store failed.
    #[error("open raft log store in {path}")]
    OpenStore {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    /// A read or write of the log store failed.
    #[error("raft log store")]
    Storage(#[from] StoreError),
    /// raft-rs refused to build the node.
    #[error("create raft node {id}")]
    CreateNode {
        id: u64,
        #[source]
        source: raft::Error,
    },
    /// A membership change was rejected.
    #[error("change membership of node {node_id}: {reason}")]
    ChangeMembership { node_id: u64, reason: String },
    /// The state machine could not restore a snapshot.
    #[error("restore snapshot at index {index}: {reason}")]
    RestoreSnapshot { index: u64, reason: String },
    /// A raft message or snapshot does not decode.
    #[error("decode {what}: {reason}")]
    Decode { what: &'static str, reason: String },
}
