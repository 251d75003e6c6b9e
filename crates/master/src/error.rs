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

/// Why a framework or operator call was refused. Each face renders it in
/// its own shape: gRPC as a status code, HTTP as a status with the message
/// as the body (Mesos' v1 API) or as `{"message"}` (operator endpoints).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// This master does not lead; `leader` is who does, when known.
    #[error("not the leading master (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader { leader: Option<String> },
    /// The call is malformed or names something that does not exist.
    #[error("{0}")]
    Invalid(String),
    /// The framework is not subscribed to this master.
    #[error("framework {0} is not subscribed")]
    NotSubscribed(String),
    /// The call names a stream other than the framework's current one.
    #[error("the Mesos-Stream-Id {given:?} is not the current stream of framework {framework_id}")]
    WrongStream { framework_id: String, given: String },
    /// Fencing: the call comes from a connection older than the
    /// framework's current one (a deposed scheduler instance).
    #[error("framework {framework_id}: the call's epoch {given} is older than the framework's current connection (epoch {current}); a newer instance of this framework has taken over")]
    StaleEpoch {
        framework_id: String,
        given: u64,
        current: u64,
    },
    /// This master leads in Raft but could not confirm it with a quorum
    /// recently (it may be cut off): it does not act until it can.
    #[error("this master cannot confirm its leadership with a quorum of masters; not acting")]
    LeaseLapsed,
    /// The thing the call names does not exist (operator calls).
    #[error("{0}")]
    NotFound(String),
    /// meseta does not do this (yet); nothing was changed.
    #[error("{0}")]
    Unsupported(String),
    /// The change could not be replicated; nothing was applied.
    #[error("not replicated: {0}")]
    Replication(#[from] MasterError),
}

impl CallError {
    /// The gRPC status a caller sees; a follower names the leader in the
    /// `meseta-leader` metadata.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            CallError::NotLeader { leader } => not_leader_status(leader.as_deref()),
            CallError::Invalid(m) | CallError::NotFound(m) => {
                tonic::Status::invalid_argument(m.clone())
            }
            CallError::NotSubscribed(_) | CallError::WrongStream { .. } => {
                tonic::Status::failed_precondition(self.to_string())
            }
            CallError::StaleEpoch { .. } => tonic::Status::permission_denied(self.to_string()),
            CallError::LeaseLapsed => not_leader_status(None),
            CallError::Unsupported(m) => tonic::Status::unimplemented(m.clone()),
            CallError::Replication(e) => e.to_status(),
        }
    }
}
