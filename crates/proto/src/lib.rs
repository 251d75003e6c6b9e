//! Generated protobuf messages and tonic services of `proto/meseta/v1`.

/// Generated code; lints are not ours to fix there.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("meseta.v1");
}

pub mod mesos;
pub mod serve;

/// gRPC metadata key in which a follower master names the leader.
pub const LEADER_METADATA: &str = "meseta-leader";

/// Largest gRPC message any meseta client or server takes or sends
/// (tonic's default of 4 MB is below what a scheduler's KV state, an OFFERS
/// event or an ACCEPT holds at ten thousand agents and tasks).
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// `status` with the leader's `host:port` added in [`LEADER_METADATA`].
pub fn with_leader_hint(mut status: tonic::Status, leader: Option<&str>) -> tonic::Status {
    if let Some(value) = leader.and_then(|l| l.parse().ok()) {
        status.metadata_mut().insert(LEADER_METADATA, value);
    }
    status
}

/// The leader a follower named in `status`, if any.
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(LEADER_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}
