//! meseta raftstore: the raft-rs driver of the masters.
//!
//! - [`storage`]: the durable log behind the [`LogStore`] trait (sled, memory).
//! - [`node`]: [`RaftHandle`], the one thread that owns `RawNode`, and the
//!   [`StateMachine`] it applies committed commands to.
//! - [`transport`]: raft messages between masters over gRPC, with a fault layer for tests.
//! - [`kv`]: the replicated key-value store with leases that masters embed.

pub mod error;
pub mod kv;
pub mod node;
pub mod storage;
pub mod transport;

pub use error::RaftError;
pub use kv::{KvCommand, KvError, KvOutput, KvRequest, KvStore};
pub use node::{RaftConfig, RaftHandle, StartOptions, StateMachine};
pub use storage::{LogBatch, LogStore, MemLogStore, RaftStorage, SledLogStore, StoreError};
pub use transport::{error_status, Faults, RaftService};
