//! The replicated registry: what the master must never forget, kept in the
//! Raft log. Everything else (offers, tasks, connections) lives in memory and
//! is rebuilt after a failover from agents and frameworks re-registering.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    RemoveAgent { id: String },
    AddFramework(FrameworkRecord),
    RemoveFramework { id: String },
}

/// The registry state machine.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Registry {
    pub agents: BTreeMap<String, AgentRecord>,
    pub frameworks: BTreeMap<String, FrameworkRecord>,
    pub applied_index: u64,
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
        }
    }
}

/// Reply bytes of an applied command: empty on success, an error text otherwise.
impl meseta_raftstore::StateMachine for Registry {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        self.applied_index = index;
        match serde_json::from_slice::<RegistryCommand>(command) {
            Ok(cmd) => {
                self.apply_command(cmd);
                Vec::new()
            }
            Err(e) => format!("undecodable registry command: {e}").into_bytes(),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("registry serializes: plain maps of strings and numbers")
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), String> {
        let mut r: Registry = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        r.applied_index = index;
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
        assert!(r.apply(1, &serde_json::to_vec(&cmd).expect("encodes")).is_empty());
        assert!(!r.apply(2, b"garbage").is_empty());
        let mut back = Registry::default();
        back.restore(2, &r.snapshot()).expect("restores");
        assert_eq!(back.frameworks.len(), 1);
        assert_eq!(back.applied_index, 2);
    }
}
