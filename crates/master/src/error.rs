//! Errors of the master.

/// What failed in the master.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("serve http/grpc on {addr}: {source}")]
    Serve {
        addr: String,
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(#[from] meseta_raftstore::RaftError),
    #[error("not the leader (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader { leader: Option<String> },
    #[error("registry command rejected: {0}")]
    Registry(String),
    #[error(
        "own address {address} is not in --masters {masters:?} (a joining master needs --node-id)"
    )]
    NotAMember {
        address: String,
        masters: Vec<String>,
    },
    #[error("invalid raft node id {0}: ids start at 1")]
    InvalidNodeId(u64),
}

impl MasterError {
    /// The gRPC status a caller sees; a follower names the leader in the
    /// `meseta-leader` metadata so clients can follow it.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            MasterError::NotLeader { leader } => not_leader_status(leader.as_deref()),
            MasterError::Raft(meseta_raftstore::RaftError::NotLeader { leader }) => {
                not_leader_status(leader.as_deref())
            }
            other => tonic::Status::internal(other.to_string()),
        }
    }
}

/// UNAVAILABLE with the leader's address in metadata.
pub fn not_leader_status(leader: Option<&str>) -> tonic::Status {
    let status = tonic::Status::unavailable(format!(
        "not the leading master; leader: {}",
        leader.unwrap_or("unknown")
    ));
    meseta_proto::with_leader_hint(status, leader)
}
