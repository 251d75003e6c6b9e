//! In-process tests of the raft node: single node over sled, and clusters of
//! nodes talking gRPC on 127.0.0.1 with the fault layer.

mod cluster;
mod common;
mod single;
