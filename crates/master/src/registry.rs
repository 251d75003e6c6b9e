//! The replicated registry: what the master must never forget, kept in the
//! Raft log. Everything else (offers, tasks, connections) lives in memory and
//! is rebuilt after a failover from agents and frameworks re-registering.
//!
//! The same state machine holds the frameworks' key-value store with leases
//! ([`KvStore`]): one Raft log orders registry changes and KV writes alike.
//! A committed entry is either a [`RegistryCommand`] (JSON, as before the KV
//! existed, so old logs still replay) or a [`KvRequest`] behind the one-byte
//! tag [`KV_TAG`]; see [`MasterCommand`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use meseta_proto::v1 as pb;
use meseta_raftstore::{KvError, KvOutput, KvRequest, KvStore};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// An agent the master admitted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentRecord {
    pub id: String,
    pub hostname: String,
    /// host:port of the agent's HTTP endpoint.
    pub address: String,
    /// `--resources` text form of the agent's total resources.
    pub resources: String,
    pub registered_at: f64,
}

/// A framework the master knows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FrameworkRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    pub principal: String,
    pub failover_timeout: f64,
    pub registered_at: f64,
}

/// A change to the registry; proposed through Raft, applied on every master.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RegistryCommand {
    AdmitAgent(AgentRecord),
    RemoveAgent {
        id: String,
    },
    AddFramework(FrameworkRecord),
    RemoveFramework {
        id: String,
    },
    /// Operator role weights (`PUT /weights`): each named role's weight is
    /// replaced; roles not named keep theirs.
    UpdateWeights {
        weights: BTreeMap<String, f64>,
    },
    /// A role's quota guarantee in `--resources` text, e.g. `cpus:4;mem:1024`
    /// (`POST /quota`); replaces the role's previous quota.
    SetQuota {
        role: String,
        guarantee: String,
    },
    /// Remove a role's quota (`DELETE /quota/{role}`).
    RemoveQuota {
        role: String,
    },
    /// The master lost contact with the agent (missed pings): its tasks
    /// were reported TASK_UNREACHABLE (Mesos' unreachable list). `at` is
    /// the leader's clock, seconds since the epoch.
    MarkAgentUnreachable {
        id: String,
        at: f64,
    },
    /// An unreachable agent re-registered in time.
    MarkAgentReachable {
        id: String,
    },
    /// The agent is gone for good (unreachable past
    /// `--agent-removal-timeout`, or drained with `mark_gone`): it is no
    /// longer admitted, and if it comes back it is told to shut down.
    MarkAgentGone {
        id: String,
        at: f64,
        reason: String,
    },
    /// DRAIN_AGENT: no offers, tasks killed with at most this grace.
    DrainAgent {
        id: String,
        max_grace_period: Option<f64>,
        mark_gone: bool,
    },
    /// DEACTIVATE_AGENT: no offers; tasks keep running.
    DeactivateAgent {
        id: String,
    },
    /// REACTIVATE_AGENT: undo a drain or a deactivation.
    ReactivateAgent {
        id: String,
    },
}

/// A drain an operator asked for (Mesos' `DrainConfig`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrainRecord {
    /// Upper bound of each task's kill grace period, in seconds.
    pub max_grace_period: Option<f64>,
    /// Mark the agent gone once drained.
    pub mark_gone: bool,
}

/// An agent that must not come back, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GoneRecord {
    pub at: f64,
    pub reason: String,
}

/// First byte of a proposal that carries a [`KvRequest`] (registry commands
/// are JSON and start with `{` or `"`).
pub const KV_TAG: u8 = b'K';

/// One replicated command of the master's state machine.
#[derive(Debug, Clone)]
pub enum MasterCommand {
    Registry(RegistryCommand),
    Kv(KvRequest),
}

impl MasterCommand {
    /// The bytes proposed through Raft.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            MasterCommand::Registry(cmd) => {
                serde_json::to_vec(cmd).expect("registry commands serialize: plain data")
            }
            MasterCommand::Kv(req) => {
                let body = req.encode();
                let mut out = Vec::with_capacity(body.len() + 1);
                out.push(KV_TAG);
                out.extend_from_slice(&body);
                out
            }
        }
    }

    /// Decode a committed entry.
    pub fn decode(bytes: &[u8]) -> Result<MasterCommand, String> {
        match bytes.split_first() {
            Some((&KV_TAG, rest)) => KvRequest::decode(rest)
                .map(MasterCommand::Kv)
                .map_err(|e| e.to_string()),
            _ => serde_json::from_slice(bytes)
                .map(MasterCommand::Registry)
                .map_err(|e| format!("undecodable registry command: {e}")),
        }
    }
}

/// How many recent KV watch events are kept for watches that start in the past.
pub const WATCH_HISTORY: usize = 10_000;

/// Committed KV changes, for `Watch` streams: a broadcast of every applied
/// batch plus a bounded history of recent events. Not replicated: each
/// master fills it as it applies the log.
#[derive(Clone)]
pub struct WatchHub {
    sender: broadcast::Sender<Arc<Vec<pb::WatchEvent>>>,
    history: Arc<Mutex<History>>,
}

#[derive(Default)]
struct History {
    events: VecDeque<pb::WatchEvent>,
    /// Events at or below this index are no longer in `events`.
    floor: u64,
}

impl Default for WatchHub {
    fn default() -> Self {
        let (sender, _) = broadcast::channel(1024);
        WatchHub {
            sender,
            history: Arc::new(Mutex::new(History::default())),
        }
    }
}

impl std::fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHub")
            .field("receivers", &self.sender.receiver_count())
            .finish()
    }
}

impl WatchHub {
    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, events: Vec<pb::WatchEvent>) {
        if events.is_empty() {
            return;
        }
        {
            let mut h = self.history();
            for e in &events {
                h.events.push_back(e.clone());
            }
            while h.events.len() > WATCH_HISTORY {
                if let Some(old) = h.events.pop_front() {
                    h.floor = h.floor.max(old.index);
                }
            }
        }
        let _ = self.sender.send(Arc::new(events));
    }

    /// Forget the history (after a snapshot replaced the state at `index`).
    fn reset(&self, index: u64) {
        let mut h = self.history();
        h.events.clear();
        h.floor = index;
    }

    /// Subscribe to future batches, and return the kept events after
    /// `after` (in order). `Err(floor)` when events after `after` were
    /// already dropped from the history. Subscribe first, then replay: an
    /// event may appear in both; callers skip indexes they already sent.
    #[allow(clippy::type_complexity)]
    pub fn watch_from(
        &self,
        after: u64,
    ) -> (
        broadcast::Receiver<Arc<Vec<pb::WatchEvent>>>,
        Result<Vec<pb::WatchEvent>, u64>,
    ) {
        let rx = self.sender.subscribe();
        let h = self.history();
        let past = if after < h.floor {
            Err(h.floor)
        } else {
            Ok(h.events
                .iter()
                .filter(|e| e.index > after)
                .cloned()
                .collect())
        };
        (rx, past)
    }
}

/// The registry state machine (registry + KV store).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Registry {
    pub agents: BTreeMap<String, AgentRecord>,
    pub frameworks: BTreeMap<String, FrameworkRecord>,
    pub applied_index: u64,
    /// Role weights set by operators (they override `--weights`).
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
    /// Quota guarantees per role, in `--resources` text.
    #[serde(default)]
    pub quotas: BTreeMap<String, String>,
    /// Agents the leader lost contact with, and since when (seconds
    /// since the epoch); they stay admitted and may re-register.
    #[serde(default)]
    pub unreachable: BTreeMap<String, f64>,
    /// Agents removed for good; one that comes back is told to shut down.
    #[serde(default)]
    pub gone: BTreeMap<String, GoneRecord>,
    /// Agents being drained (DRAIN_AGENT).
    #[serde(default)]
    pub draining: BTreeMap<String, DrainRecord>,
    /// Agents deactivated (DEACTIVATE_AGENT, or drained): never offered.
    #[serde(default)]
    pub deactivated: std::collections::BTreeSet<String>,
    /// The frameworks' key-value store with leases.
    #[serde(default)]
    pub kv: KvStore,
    /// Watch fan-out (local to this master).
    #[serde(skip)]
    pub watches: WatchHub,
}

/// Reply bytes of an applied KV request: tag byte, then the protobuf answer
/// (or the error). Decoded by the proposer with [`decode_kv_reply`].
pub fn encode_kv_reply(reply: &Result<KvOutput, KvError>) -> Vec<u8> {
    let mut out = Vec::new();
    match reply {
        Ok(KvOutput::Put(r)) => {
            out.push(1);
            r.encode(&mut out).expect("a Vec grows");
        }
        Ok(KvOutput::Delete(r)) => {
            out.push(2);
            r.encode(&mut out).expect("a Vec grows");
        }
        Ok(KvOutput::LeaseGrant(r)) => {
            out.push(3);
            r.encode(&mut out).expect("a Vec grows");
        }
        Ok(KvOutput::LeaseKeepAlive(r)) => {
            out.push(4);
            r.encode(&mut out).expect("a Vec grows");
        }
        Ok(KvOutput::LeaseRevoke(r)) => {
            out.push(5);
            r.encode(&mut out).expect("a Vec grows");
        }
        Ok(KvOutput::Expired(ids)) => {
            out.push(6);
            for id in ids {
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        Ok(KvOutput::Renewed(n)) => {
            out.push(7);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Err(KvError::EmptyKey) => out.push(0x80),
        Err(KvError::LeaseNotFound(id)) => {
            out.push(0x81);
            out.extend_from_slice(&id.to_be_bytes());
        }
        Err(KvError::InvalidTtl(ms)) => {
            out.push(0x82);
            out.extend_from_slice(&ms.to_be_bytes());
        }
        Err(KvError::Decode { what, reason }) => {
            out.push(0x83);
            out.extend_from_slice(format!("{what}: {reason}").as_bytes());
        }
    }
    out
}

fn be_u64(bytes: &[u8]) -> Result<u64, String> {
    bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| "truncated kv reply".to_string())
}

/// Inverse of [`encode_kv_reply`]. The outer `Err` means the bytes are not
/// a KV reply at all (e.g. the entry did not decode on apply).
pub fn decode_kv_reply(bytes: &[u8]) -> Result<Result<KvOutput, KvError>, String> {
    let (tag, body) = bytes
        .split_first()
        .ok_or_else(|| "empty kv reply".to_string())?;
    let proto = |e: prost::DecodeError| e.to_string();
    Ok(match tag {
        1 => Ok(KvOutput::Put(pb::PutResponse::decode(body).map_err(proto)?)),
        2 => Ok(KvOutput::Delete(
            pb::DeleteResponse::decode(body).map_err(proto)?,
        )),
        3 => Ok(KvOutput::LeaseGrant(
            pb::LeaseGrantResponse::decode(body).map_err(proto)?,
        )),
        4 => Ok(KvOutput::LeaseKeepAlive(
            pb::LeaseKeepAliveResponse::decode(body).map_err(proto)?,
        )),
        5 => Ok(KvOutput::LeaseRevoke(
            pb::LeaseRevokeResponse::decode(body).map_err(proto)?,
        )),
        6 => Ok(KvOutput::Expired(
            body.chunks(8).map(be_u64).collect::<Result<_, _>>()?,
        )),
        7 => Ok(KvOutput::Renewed(be_u64(body)?)),
        0x80 => Err(KvError::EmptyKey),
        0x81 => Err(KvError::LeaseNotFound(be_u64(body)?)),
        0x82 => Err(KvError::InvalidTtl(be_u64(body)?)),
        0x83 => Err(KvError::Decode {
            what: "request",
            reason: String::from_utf8_lossy(body).into_owned(),
        }),
        _ => return Err(String::from_utf8_lossy(bytes).into_owned()),
    })
}

impl Registry {
    /// Apply one command; deterministic on every replica.
    pub fn apply_command(&mut self, cmd: RegistryCommand) {
        match cmd {
            RegistryCommand::AdmitAgent(a) => {
                self.agents.insert(a.id.clone(), a);
            }
            RegistryCommand::RemoveAgent { id } => {
                self.agents.remove(&id);
            }
            RegistryCommand::AddFramework(f) => {
                self.frameworks.insert(f.id.clone(), f);
            }
            RegistryCommand::RemoveFramework { id } => {
                self.frameworks.remove(&id);
            }
            RegistryCommand::UpdateWeights { weights } => {
                self.weights.extend(weights);
            }
            RegistryCommand::SetQuota { role, guarantee } => {
                self.quotas.insert(role, guarantee);
            }
            RegistryCommand::RemoveQuota { role } => {
                self.quotas.remove(&role);
            }
            RegistryCommand::MarkAgentUnreachable { id, at } => {
                if self.agents.contains_key(&id) {
                    self.unreachable.entry(id).or_insert(at);
                }
            }
            RegistryCommand::MarkAgentReachable { id } => {
                self.unreachable.remove(&id);
            }
            RegistryCommand::MarkAgentGone { id, at, reason } => {
                self.agents.remove(&id);
                self.unreachable.remove(&id);
                self.draining.remove(&id);
                self.deactivated.remove(&id);
                self.gone.insert(id, GoneRecord { at, reason });
            }
            RegistryCommand::DrainAgent {
                id,
                max_grace_period,
                mark_gone,
            } => {
                self.deactivated.insert(id.clone());
                self.draining.insert(
                    id,
                    DrainRecord {
                        max_grace_period,
                        mark_gone,
                    },
                );
            }
            RegistryCommand::DeactivateAgent { id } => {
                self.deactivated.insert(id);
            }
            RegistryCommand::ReactivateAgent { id } => {
                self.deactivated.remove(&id);
                self.draining.remove(&id);
            }
        }
    }
}

/// Reply bytes of an applied command: for a registry command, empty on
/// success and an error text otherwise; for a KV request,
/// [`encode_kv_reply`]'s bytes.
impl meseta_raftstore::StateMachine for Registry {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        self.applied_index = index;
        match MasterCommand::decode(command) {
            Ok(MasterCommand::Registry(cmd)) => {
                self.apply_command(cmd);
                Vec::new()
            }
            Ok(MasterCommand::Kv(req)) => {
                let (reply, events) = self.kv.apply(index, &req);
                self.watches.publish(events);
                encode_kv_reply(&reply)
            }
            Err(e) => e.into_bytes(),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("registry serializes: plain maps of strings and numbers")
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), String> {
        let mut r: Registry = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        r.applied_index = index;
        r.watches = std::mem::take(&mut self.watches);
        r.watches.reset(index);
        *self = r;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meseta_raftstore::StateMachine;

    #[test]
    fn apply_and_snapshot_round_trip() {
        let mut r = Registry::default();
        let cmd = RegistryCommand::AddFramework(FrameworkRecord {
            id: "f1".into(),
            name: "marathon".into(),
            role: "*".into(),
            principal: String::new(),
            failover_timeout: 604800.0,
            registered_at: 1.0,
        });
        assert!(r
            .apply(1, &serde_json::to_vec(&cmd).expect("encodes"))
            .is_empty());
        assert!(!r.apply(2, b"garbage").is_empty());
        let mut back = Registry::default();
        back.restore(2, &r.snapshot()).expect("restores");
        assert_eq!(back.frameworks.len(), 1);
        assert_eq!(back.applied_index, 2);
    }
}
