//! Agents: (re-)registration, disconnection, heartbeats and expiry.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use meseta_core::task::task_state_of;
use meseta_core::{Resources, TaskStateExt};
use meseta_proto::v1 as pb;
use pb::TaskState;

use super::*;

impl MasterState {
    /// Attach a (re-)registered agent. Tasks it reports replace what the
    /// master believed about that agent (the agent is the source of truth
    /// for what runs on it).
    #[allow(clippy::too_many_arguments)]
    pub fn attach_agent(
        &mut self,
        id: &str,
        info: &pb::AgentInfo,
        total: Resources,
        running: &[pb::RunningTask],
        sender: AgentSender,
        session: u64,
    ) {
        let old_offers: Vec<String> = self
            .offers
            .values()
            .filter(|o| o.agent_id == id)
            .map(|o| o.id.clone())
            .collect();
        for offer in old_offers {
            self.rescind_offer(&offer);
        }
        let mut tasks = HashMap::new();
        let mut used = Resources::new();
        for rt in running {
            let Some(task) = &rt.task else { continue };
            let Some(task_id) = task.task_id.as_ref().map(|t| t.value.clone()) else {
                continue;
            };
            let resources = Resources::from_proto(&task.resources).unwrap_or_default();
            let state = task_state_of(rt.state);
            if state.is_terminal() {
                continue;
            }
            used = used.plus(&resources).unwrap_or(used);
            tasks.insert(
                task_id,
                TaskEntry {
                    framework_id: rt
                        .framework_id
                        .as_ref()
                        .map(|f| f.value.clone())
                        .unwrap_or_default(),
                    agent_id: id.to_string(),
                    info: task.clone(),
                    resources,
                    state,
                    statuses: vec![(state, now_secs())],
                    latest: rt.latest_status.clone(),
                },
            );
        }
        // Tasks the master believed ran there but the agent no longer knows
        // (it restarted without them): the framework must hear they are lost.
        // A task the agent reports as ended is not lost: the agent still
        // holds its terminal update and delivers it once registered.
        let reported: std::collections::HashSet<&str> = running
            .iter()
            .filter_map(|rt| rt.task.as_ref()?.task_id.as_ref())
            .map(|t| t.value.as_str())
            .collect();
        let missing: Vec<(String, String)> = self
            .agents
            .get(id)
            .map(|a| {
                a.tasks
                    .iter()
                    .filter(|(tid, _)| !reported.contains(tid.as_str()))
                    .map(|(tid, t)| (tid.clone(), t.framework_id.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (task_id, framework_id) in &missing {
            tracing::warn!(agent = %id, task = %task_id, "re-registered agent no longer runs the task; reporting it lost");
            self.report(
                framework_id,
                task_id,
                id,
                TaskState::TaskLost,
                pb::task_status::Reason::AgentRestarted,
                "the agent re-registered without this task".into(),
            );
        }
        let registered_at = self
            .agents
            .get(id)
            .map(|a| a.registered_at)
            .unwrap_or_else(now_secs);
        let used_by: Vec<(&str, Resources)> = tasks
            .values()
            .map(|t| (t.framework_id.as_str(), t.resources.clone()))
            .collect();
        self.allocator.add_agent(id, total.clone(), &used_by);
        let entry = AgentEntry {
            id: id.to_string(),
            hostname: info.hostname.clone(),
            address: info.address.clone(),
            attributes: info.attributes.clone(),
            total,
            used,
            offered: Resources::new(),
            tasks,
            sender: Some(sender),
            session,
            last_heartbeat: Instant::now(),
            disconnected_at: None,
            registered_at,
        };
        entry.send(pb::master_message::Message::Registered(
            pb::master_message::Registered {
                agent_id: Some(pb::AgentId {
                    value: id.to_string(),
                }),
                heartbeat_interval_seconds: 5.0,
            },
        ));
        let mut announced = info.clone();
        announced.id = Some(pb::AgentId {
            value: id.to_string(),
        });
        announced.resources = entry.total.to_proto();
        self.events.publish(ClusterEvent::AgentAdded {
            info: announced,
            registered_at,
        });
        for task in entry.tasks.values() {
            self.events
                .publish(ClusterEvent::TaskAdded(Box::new(task.clone())));
        }
        self.agents.insert(id.to_string(), entry);
        self.send_pending_kills(id);
    }

    /// The agent's stream ended (or timed out). Its offers are rescinded; its
    /// tasks stay until it re-registers or the re-registration timeout passes.
    pub fn detach_agent(&mut self, id: &str, session: u64) {
        let Some(agent) = self.agents.get_mut(id) else {
            return;
        };
        if agent.session != session {
            return; // a newer connection already replaced this one
        }
        agent.sender = None;
        agent.disconnected_at = Some(Instant::now());
        self.allocator.deactivate_agent(id);
        let offers: Vec<String> = self
            .offers
            .values()
            .filter(|o| o.agent_id == id)
            .map(|o| o.id.clone())
            .collect();
        for offer in offers {
            self.rescind_offer(&offer);
        }
    }

    pub fn heartbeat(&mut self, id: &str, session: u64) {
        if let Some(a) = self.agents.get_mut(id) {
            if a.session == session {
                a.last_heartbeat = Instant::now();
            }
        }
    }

    /// Agents gone longer than `timeout`: their tasks are reported
    /// TASK_UNREACHABLE to their frameworks and the agent is dropped from
    /// memory. Returns the removed agent ids (the caller removes them from
    /// the registry).
    pub fn expire_agents(
        &mut self,
        heartbeat_timeout: Duration,
        reregister_timeout: Duration,
    ) -> Vec<String> {
        let now = Instant::now();
        let stale: Vec<(String, u64)> = self
            .agents
            .values()
            .filter(|a| {
                a.sender.is_some() && now.duration_since(a.last_heartbeat) > heartbeat_timeout
            })
            .map(|a| (a.id.clone(), a.session))
            .collect();
        for (id, session) in stale {
            tracing::warn!(agent = %id, "agent missed heartbeats; treating it as disconnected");
            self.detach_agent(&id, session);
        }
        let gone: Vec<String> = self
            .agents
            .values()
            .filter(|a| {
                a.disconnected_at
                    .is_some_and(|t| now.duration_since(t) > reregister_timeout)
            })
            .map(|a| a.id.clone())
            .collect();
        for id in &gone {
            self.allocator.remove_agent(id);
            self.pending_kills.remove(id);
            if let Some(agent) = self.agents.remove(id) {
                self.events.publish(ClusterEvent::AgentRemoved {
                    agent_id: id.clone(),
                });
                tracing::warn!(agent = %id, tasks = agent.tasks.len(), "agent did not re-register in time; its tasks are unreachable");
                for (task_id, task) in agent.tasks {
                    let st = status(
                        &task_id,
                        id,
                        TaskState::TaskUnreachable,
                        pb::task_status::Reason::AgentRemoved,
                        "agent did not re-register within the timeout".into(),
                    );
                    if let Some(fw) = self.frameworks.get(&task.framework_id) {
                        fw.send(pb::event::Event::Update(pb::event::Update {
                            status: Some(st),
                        }));
                    }
                }
            }
        }
        gone
    }
}
