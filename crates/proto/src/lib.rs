//! Generated protobuf messages and tonic services of `proto/meseta/v1`.

/// Generated code; lints are not ours to fix there.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("meseta.v1");
}

pub mod serve;

/// gRPC metadata key in which a follower master names the leader.
pub const LEADER_METADATA: &str = "meseta-leader";
