//! The replicated key-value store with leases (what ZooKeeper held for
//! Marathon), as a pure value with no IO: a master embeds a [`KvStore`] in
//! its own [`crate::StateMachine`], proposes [`KvRequest`]s, applies them with
//! [`KvStore::apply`], answers reads with [`KvStore::get`]/[`KvStore::list`]
//! after a read barrier, and broadcasts the returned [`WatchEvent`]s.
//!
//! Determinism: replicas never read a clock. Every request carries the
//! proposing leader's wall-clock time (`now_ms`); lease deadlines are computed
//! from it. Expiry is decided by the leader: it asks
//! [`KvStore::expired_leases`] with its own clock and proposes
//! [`KvCommand::ExpireLeases`]; replicas re-check each lease against the
//! command's `now_ms`, so a keep-alive applied in between wins.
//! A new leader should call [`KvCommand::RenewAllLeases`] once after election,
//! so clock skew between masters and the failover gap never expire a lease early.

use std::collections::{BTreeMap, BTreeSet};

use meseta_proto::v1::watch_event::Type as EventType;
use meseta_proto::v1::{
    DeleteResponse, GetResponse, KeyValue, LeaseGrantResponse, LeaseKeepAliveResponse,
    LeaseRevokeResponse, ListResponse, PutResponse, WatchEvent,
};
use serde::{Deserialize, Serialize};

/// Why a KV command was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Keys must not be empty.
    #[error("empty key")]
    EmptyKey,
    /// The put names a lease that does not exist.
    #[error("lease {0} not found")]
    LeaseNotFound(u64),
    /// A lease TTL must be positive.
    #[error("invalid lease ttl {0} ms")]
    InvalidTtl(u64),
    /// A request or snapshot does not decode.
    #[error("decode kv {what}: {reason}")]
    Decode { what: &'static str, reason: String },
}

/// One state change, proposed through raft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Write `key`; with `expected_version`, only if the key's version equals
    /// it (0 = must not exist).
    Put {
        key: String,
        value: Vec<u8>,
        lease: u64,
        expected_version: Option<u64>,
    },
    /// Delete `key` (or every key under the prefix `key`); with
    /// `expected_version`, only if the single key's version equals it.
    Delete {
        key: String,
        prefix: bool,
        expected_version: Option<u64>,
    },
    /// Create a lease living `ttl_ms` from the request's time.
    LeaseGrant { ttl_ms: u64 },
    /// Push a lease's deadline to request time + its TTL.
    LeaseKeepAlive { lease: u64 },
    /// Delete a lease and every key attached to it.
    LeaseRevoke { lease: u64 },
    /// Revoke those of `leases` whose deadline is ≤ the request's time.
    ExpireLeases { leases: Vec<u64> },
    /// Restart every lease's TTL from the request's time (new leader).
    RenewAllLeases,
}

/// A command with the leader's clock reading, as replicated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvRequest {
    /// Milliseconds since the Unix epoch on the proposing leader.
    pub now_ms: u64,
    pub command: KvCommand,
}

impl KvRequest {
    /// Encode for `RaftHandle::propose`.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a kv request serializes")
    }

    /// Decode a committed command.
    pub fn decode(bytes: &[u8]) -> Result<Self, KvError> {
        serde_json::from_slice(bytes).map_err(|e| KvError::Decode {
            what: "request",
            reason: e.to_string(),
        })
    }
}

/// What applying a [`KvCommand`] answers.
#[derive(Debug, Clone, PartialEq)]
pub enum KvOutput {
    Put(PutResponse),
    Delete(DeleteResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseKeepAlive(LeaseKeepAliveResponse),
    LeaseRevoke(LeaseRevokeResponse),
    /// Leases actually expired.
    Expired(Vec<u64>),
    Renewed(u64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stored {
    value: Vec<u8>,
    version: u64,
    create_index: u64,
    mod_index: u64,
    lease: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Lease {
    ttl_ms: u64,
    deadline_ms: u64,
    keys: BTreeSet<String>,
}

/// The KV state: keys, leases, and the last applied raft index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KvStore {
    keys: BTreeMap<String, Stored>,
    leases: BTreeMap<u64, Lease>,
    next_lease: u64,
    index: u64,
}

impl KvStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raft index of the last applied command.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn key_value(key: &str, s: &Stored) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: s.value.clone(),
            version: s.version,
            create_index: s.create_index,
            mod_index: s.mod_index,
            lease: s.lease,
        }
    }

    /// Read one key.
    pub fn get(&self, key: &str) -> GetResponse {
        let kv = self.keys.get(key).map(|s| Self::key_value(key, s));
        GetResponse {
            found: kv.is_some(),
            kv,
            index: self.index,
        }
    }

    /// Keys under `prefix` in key order, at most `limit` (0 = all).
    pub fn list(&self, prefix: &str, limit: u32) -> ListResponse {
        let limit = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        let kvs = self
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, s)| Self::key_value(k, s))
            .collect();
        ListResponse {
            kvs,
            index: self.index,
        }
    }

    /// Leases whose deadline is ≤ `now_ms` (for the leader to propose
    /// [`KvCommand::ExpireLeases`]).
    pub fn expired_leases(&self, now_ms: u64) -> Vec<u64> {
        self.leases
            .iter()
            .filter(|(_, l)| l.deadline_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Deadline of `lease` in leader milliseconds, if it exists.
    pub fn lease_deadline(&self, lease: u64) -> Option<u64> {
        self.leases.get(&lease).map(|l| l.deadline_ms)
    }

    /// Apply one committed request at raft `index`. Returns the answer for
    /// the proposer and the watch events, in order. A refused command
    /// changes nothing and emits no event.
    pub fn apply(
        &mut self,
        index: u64,
        request: &KvRequest,
    ) -> (Result<KvOutput, KvError>, Vec<WatchEvent>) {
        self.index = self.index.max(index);
        let now = request.now_ms;
        let mut events = Vec::new();
        let out = match &request.command {
            KvCommand::Put {
                key,
                value,
                lease,
                expected_version,
            } => self
                .put(index, key, value, *lease, *expected_version, &mut events)
                .map(KvOutput::Put),
            KvCommand::Delete {
                key,
                prefix,
                expected_version,
            } => Ok(KvOutput::Delete(self.delete(
                index,
                key,
                *prefix,
                *expected_version,
                &mut events,
            ))),
            KvCommand::LeaseGrant { ttl_ms } => {
                if *ttl_ms == 0 {
                    Err(KvError::InvalidTtl(*ttl_ms))
                } else {
                    self.next_lease += 1;
                    let id = self.next_lease;
                    self.leases.insert(
                        id,
                        Lease {
                            ttl_ms: *ttl_ms,
                            deadline_ms: now.saturating_add(*ttl_ms),
                            keys: BTreeSet::new(),
                        },
                    );
                    Ok(KvOutput::LeaseGrant(LeaseGrantResponse {
                        lease: id,
                        ttl_seconds: *ttl_ms as f64 / 1000.0,
                    }))
                }
            }
            KvCommand::LeaseKeepAlive { lease } => {
                let resp = match self.leases.get_mut(lease) {
                    Some(l) => {
                        l.deadline_ms = now.saturating_add(l.ttl_ms);
                        LeaseKeepAliveResponse {
                            found: true,
                            ttl_seconds: l.ttl_ms as f64 / 1000.0,
                        }
                    }
                    None => LeaseKeepAliveResponse {
                        found: false,
                        ttl_seconds: 0.0,
                    },
                };
                Ok(KvOutput::LeaseKeepAlive(resp))
            }
            KvCommand::LeaseRevoke { lease } => Ok(KvOutput::LeaseRevoke(LeaseRevokeResponse {
                found: self.revoke(index, *lease, &mut events),
            })),
            KvCommand::ExpireLeases { leases } => {
                let mut expired = Vec::new();
                for id in leases {
                    let due = self.leases.get(id).is_some_and(|l| l.deadline_ms <= now);
                    if due && self.revoke(index, *id, &mut events) {
                        expired.push(*id);
                    }
                }
                Ok(KvOutput::Expired(expired))
            }
            KvCommand::RenewAllLeases => {
                for l in self.leases.values_mut() {
                    l.deadline_ms = l.deadline_ms.max(now.saturating_add(l.ttl_ms));
                }
                Ok(KvOutput::Renewed(self.leases.len() as u64))
            }
        };
        (out, events)
    }

    fn put(
        &mut self,
        index: u64,
        key: &str,
        value: &[u8],
        lease: u64,
        expected_version: Option<u64>,
        events: &mut Vec<WatchEvent>,
    ) -> Result<PutResponse, KvError> {
        if key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        if lease != 0 && !self.leases.contains_key(&lease) {
            return Err(KvError::LeaseNotFound(lease));
        }
        let current = self.keys.get(key);
        let current_version = current.map_or(0, |s| s.version);
        if expected_version.is_some_and(|v| v != current_version) {
            return Ok(PutResponse {
                succeeded: false,
                kv: None,
                current: current.map(|s| Self::key_value(key, s)),
                index: self.index,
            });
        }
        let old_lease = current.map_or(0, |s| s.lease);
        let stored = Stored {
            value: value.to_vec(),
            version: current_version + 1,
            create_index: current.map_or(index, |s| s.create_index),
            mod_index: index,
            lease,
        };
        if old_lease != 0 && old_lease != lease {
            if let Some(l) = self.leases.get_mut(&old_lease) {
                l.keys.remove(key);
            }
        }
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(key.to_string());
        }
        let kv = Self::key_value(key, &stored);
        self.keys.insert(key.to_string(), stored);
        events.push(WatchEvent {
            r#type: EventType::Put as i32,
            kv: Some(kv.clone()),
            index,
        });
        Ok(PutResponse {
            succeeded: true,
            kv: Some(kv),
            current: None,
            index,
        })
    }

    fn delete(
        &mut self,
        index: u64,
        key: &str,
        prefix: bool,
        expected_version: Option<u64>,
        events: &mut Vec<WatchEvent>,
    ) -> DeleteResponse {
        let targets: Vec<String> = if prefix {
            self.keys
                .range(key.to_string()..)
                .take_while(|(k, _)| k.starts_with(key))
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            let version = self.keys.get(key).map_or(0, |s| s.version);
            if expected_version.is_some_and(|v| v != version) {
                return DeleteResponse {
                    succeeded: false,
                    deleted: 0,
                    index: self.index,
                };
            }
            self.keys
                .contains_key(key)
                .then(|| key.to_string())
                .into_iter()
                .collect()
        };
        for k in &targets {
            self.remove_key(index, k, events);
        }
        DeleteResponse {
            succeeded: true,
            deleted: targets.len() as u64,
            index,
        }
    }

    fn remove_key(&mut self, index: u64, key: &str, events: &mut Vec<WatchEvent>) {
        let Some(old) = self.keys.remove(key) else {
            return;
        };
        if let Some(l) = self.leases.get_mut(&old.lease) {
            l.keys.remove(key);
        }
        events.push(WatchEvent {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: key.to_string(),
                value: Vec::new(),
                version: 0,
                create_index: old.create_index,
                mod_index: index,
                lease: old.lease,
            }),
            index,
        });
    }

    fn revoke(&mut self, index: u64, lease: u64, events: &mut Vec<WatchEvent>) -> bool {
        let Some(l) = self.leases.remove(&lease) else {
            return false;
        };
        for key in l.keys {
            self.remove_key(index, &key, events);
        }
        true
    }

    /// Serialize the whole store (for raft snapshots).
    pub fn to_snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the kv store serializes")
    }

    /// Rebuild a store from [`KvStore::to_snapshot`] bytes.
    pub fn from_snapshot(data: &[u8]) -> Result<Self, KvError> {
        serde_json::from_slice(data).map_err(|e| KvError::Decode {
            what: "snapshot",
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests;
