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
        self.rescind_agent_offers(id);
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
            last_ping: Instant::now(),
            disconnected_at: None,
            registered_at,
            unreachable_since: None,
            deactivated: false,
            drain: None,
            drain_kill_at: None,
        };
        entry.send(pb::master_message::Message::Registered(
            pb::master_message::Registered {
                agent_id: Some(pb::AgentId {
                    value: id.to_string(),
                }),
                heartbeat_interval_seconds: self.agent_heartbeat_interval.as_secs_f64(),
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
        self.rescind_agent_offers(id);
    }

    pub fn heartbeat(&mut self, id: &str, session: u64) {
        if let Some(a) = self.agents.get_mut(id) {
            if a.session == session {
                a.last_heartbeat = Instant::now();
            }
        }
    }

    /// Liveness, once a tick: ping every connected agent each
    /// `ping_every`; an agent nothing was heard from for `silence_limit`
    /// (its pings unanswered, or its stream closed) is marked unreachable:
    /// it is deactivated, its offers rescinded and its tasks reported
    /// TASK_UNREACHABLE to partition-aware frameworks and TASK_LOST to the
    /// others (Mesos 1.x). An agent unreachable for `removal_timeout` is
    /// removed: its tasks are reported TASK_GONE (partition-aware
    /// frameworks) and it is forgotten. The caller records both in the
    /// registry.
    pub fn expire_agents(
        &mut self,
        silence_limit: Duration,
        removal_timeout: Duration,
    ) -> AgentExpiry {
        let now = Instant::now();
        let wall = now_secs();
        let ping_every = self.agent_heartbeat_interval;
        let mut out = AgentExpiry::default();
        self.drain_kills(now);
        for a in self.agents.values_mut() {
            if a.sender.is_some() && now.duration_since(a.last_ping) >= ping_every {
                a.last_ping = now;
                a.send(pb::master_message::Message::Ping(
                    pb::master_message::Ping {},
                ));
            }
        }
        let silent: Vec<(String, u64)> = self
            .agents
            .values()
            .filter(|a| {
                a.unreachable_since.is_none()
                    && now.duration_since(a.last_heartbeat) > silence_limit
            })
            .map(|a| (a.id.clone(), a.session))
            .collect();
        for (id, session) in silent {
            self.detach_agent(&id, session);
            self.mark_unreachable(&id, wall, silence_limit);
            out.unreachable.push((id, wall));
        }
        let gone: Vec<String> = self
            .agents
            .values()
            .filter(|a| {
                a.unreachable_since
                    .is_some_and(|t| wall - t > removal_timeout.as_secs_f64())
            })
            .map(|a| a.id.clone())
            .collect();
        for id in gone {
            let reason = format!(
                "the agent was unreachable for more than the agent removal timeout ({}s)",
                removal_timeout.as_secs_f64()
            );
            self.remove_gone_agent(&id, &reason);
            out.gone.push((id, wall, reason));
        }
        let drained: Vec<String> = self
            .agents
            .values()
            .filter(|a| a.drain.as_ref().is_some_and(|d| d.mark_gone) && a.tasks.is_empty())
            .map(|a| a.id.clone())
            .collect();
        for id in drained {
            let reason = "the agent was drained and marked gone by an operator".to_string();
            self.remove_gone_agent(&id, &reason);
            out.gone.push((id, wall, reason));
        }
        out
    }

    /// DEACTIVATE_AGENT (`drain: None`) or DRAIN_AGENT: the agent is
    /// offered no more and its offers are rescinded; a drain also kills
    /// every task on it, each with its own kill grace period capped at the
    /// drain's `max_grace_period`. Unknown agents are ignored (the registry
    /// holds the flag; it applies when the agent registers).
    pub fn deactivate_agent(&mut self, id: &str, drain: Option<crate::registry::DrainRecord>) {
        self.allocator.deactivate_agent(id);
        self.rescind_agent_offers(id);
        let Some(agent) = self.agents.get_mut(id) else {
            return;
        };
        agent.deactivated = true;
        let Some(drain) = drain else {
            return;
        };
        agent.drain = Some(drain.clone());
        agent.drain_kill_at = Some(Instant::now() + DRAIN_REPLACEMENT_PATIENCE);
        let hostname = agent.hostname.clone();
        let frameworks: std::collections::BTreeSet<String> = agent
            .tasks
            .values()
            .map(|t| t.framework_id.clone())
            .collect();
        tracing::info!(agent = %id, tasks = agent.tasks.len(), frameworks = frameworks.len(), max_grace_period = ?drain.max_grace_period, "draining agent: frameworks asked to move their tasks");
        for fid in frameworks {
            if let Some(fw) = self.frameworks.get(&fid) {
                fw.send(pb::event::Event::InverseOffers(pb::event::InverseOffers {
                    inverse_offers: vec![pb::InverseOffer {
                        id: Some(pb::OfferId {
                            value: meseta_core::ids::new_id("inverse-offer"),
                        }),
                        framework_id: Some(pb::FrameworkId { value: fid.clone() }),
                        agent_id: Some(pb::AgentId {
                            value: id.to_string(),
                        }),
                        hostname: hostname.clone(),
                    }],
                }));
            }
        }
    }

    /// A drain whose patience ran out kills every task still on the agent,
    /// each with its own grace period capped at the drain's
    /// `max_grace_period`.
    fn drain_kills(&mut self, now: Instant) {
        let due: Vec<String> = self
            .agents
            .values()
            .filter(|a| a.drain_kill_at.is_some_and(|t| t <= now))
            .map(|a| a.id.clone())
            .collect();
        for id in due {
            let Some(agent) = self.agents.get_mut(&id) else {
                continue;
            };
            agent.drain_kill_at = None;
            let kills: Vec<(String, pb::call::Kill)> = agent
                .tasks
                .iter()
                .map(|(tid, t)| {
                    (
                        t.framework_id.clone(),
                        pb::call::Kill {
                            task_id: Some(pb::TaskId { value: tid.clone() }),
                            agent_id: Some(pb::AgentId { value: id.clone() }),
                            kill_policy: None,
                        },
                    )
                })
                .collect();
            if !kills.is_empty() {
                tracing::info!(agent = %id, tasks = kills.len(), "drain patience over: killing the tasks left on the agent");
            }
            for (framework_id, kill) in kills {
                self.kill(&framework_id, &kill, true);
            }
        }
    }

    /// The kill policy for a task on `agent_id`: `policy` (or the task's
    /// own), its grace capped by the agent's drain `max_grace_period`.
    pub(crate) fn drain_capped(
        &self,
        agent_id: &str,
        policy: Option<pb::KillPolicy>,
    ) -> Option<pb::KillPolicy> {
        let cap = self
            .agents
            .get(agent_id)
            .and_then(|a| a.drain.as_ref())
            .and_then(|d| d.max_grace_period);
        match (policy, cap) {
            (Some(p), Some(c)) => Some(pb::KillPolicy {
                grace_period_seconds: p.grace_period_seconds.min(c),
            }),
            (None, Some(c)) => Some(pb::KillPolicy {
                grace_period_seconds: c,
            }),
            (p, None) => p,
        }
    }

    /// REACTIVATE_AGENT: offered again (once connected).
    pub fn reactivate_agent(&mut self, id: &str) {
        let Some(agent) = self.agents.get_mut(id) else {
            return;
        };
        agent.deactivated = false;
        agent.drain = None;
        agent.drain_kill_at = None;
        if agent.sender.is_some() && agent.unreachable_since.is_none() {
            self.allocator.activate_agent(id);
        }
    }

    /// Mark an agent unreachable now (`since`, seconds since the epoch):
    /// deactivate it, rescind its offers, report its tasks.
    pub fn mark_unreachable(&mut self, id: &str, since: f64, silence: Duration) {
        self.allocator.deactivate_agent(id);
        self.rescind_agent_offers(id);
        let Some(agent) = self.agents.get_mut(id) else {
            return;
        };
        agent.unreachable_since = Some(since);
        agent.sender = None;
        let message = format!(
            "agent {id} is unreachable: nothing heard from it for {}s",
            silence.as_secs_f64()
        );
        tracing::warn!(agent = %id, tasks = agent.tasks.len(), silence_s = silence.as_secs_f64(), "agent missed its pings; marked unreachable");
        let mut reports = Vec::new();
        for (task_id, task) in agent.tasks.iter_mut() {
            if task.state != TaskState::TaskUnreachable {
                task.statuses.push((TaskState::TaskUnreachable, since));
            }
            task.state = TaskState::TaskUnreachable;
            reports.push((task_id.clone(), task.framework_id.clone()));
        }
        for (task_id, framework_id) in reports {
            let aware = self
                .frameworks
                .get(&framework_id)
                .is_none_or(|f| f.partition_aware());
            let state = if aware {
                TaskState::TaskUnreachable
            } else {
                TaskState::TaskLost
            };
            let st = status(
                &task_id,
                id,
                state,
                pb::task_status::Reason::AgentRemoved,
                message.clone(),
            );
            self.events.publish(ClusterEvent::TaskUpdated {
                framework_id: framework_id.clone(),
                status: st.clone(),
            });
            if let Some(fw) = self.frameworks.get(&framework_id) {
                fw.send(pb::event::Event::Update(pb::event::Update {
                    status: Some(st),
                }));
            }
        }
    }

    /// An unreachable agent re-registered in time: its tasks are back.
    /// Each framework is told the state the agent reports (as an
    /// unsolicited reconciliation, without a uuid), so a partition-aware
    /// framework sees its TASK_UNREACHABLE task TASK_RUNNING again.
    pub fn agent_came_back(&mut self, id: &str) {
        let Some(agent) = self.agents.get_mut(id) else {
            return;
        };
        agent.unreachable_since = None;
        tracing::info!(agent = %id, tasks = agent.tasks.len(), "unreachable agent re-registered; its tasks are back");
        let back: Vec<(String, String, TaskState)> = agent
            .tasks
            .iter()
            .map(|(tid, t)| (tid.clone(), t.framework_id.clone(), t.state))
            .collect();
        for (task_id, framework_id, state) in back {
            self.report(
                &framework_id,
                &task_id,
                id,
                state,
                pb::task_status::Reason::Reconciliation,
                "the agent re-registered after being unreachable".into(),
            );
        }
    }

    /// Forget an agent for good (`reason` says why): its tasks are
    /// reported TASK_GONE to partition-aware frameworks (the others were
    /// told TASK_LOST already, or are told now if it was reachable).
    pub fn remove_gone_agent(&mut self, id: &str, reason: &str) {
        self.allocator.remove_agent(id);
        self.pending_kills.remove(id);
        self.rescind_agent_offers(id);
        let Some(agent) = self.agents.remove(id) else {
            return;
        };
        // A connected agent is told at once (an unreachable one when it
        // comes back and finds itself gone).
        agent.send(pb::master_message::Message::Shutdown(
            pb::master_message::Shutdown {
                reason: format!("agent {id} was removed from the cluster: {reason}"),
            },
        ));
        self.events.publish(ClusterEvent::AgentRemoved {
            agent_id: id.to_string(),
        });
        tracing::warn!(agent = %id, tasks = agent.tasks.len(), reason = %reason, "agent marked gone");
        let was_unreachable = agent.unreachable_since.is_some();
        for (task_id, task) in agent.tasks {
            let aware = self
                .frameworks
                .get(&task.framework_id)
                .is_some_and(|f| f.partition_aware());
            let state = match (aware, was_unreachable) {
                (true, _) => TaskState::TaskGone,
                (false, false) => TaskState::TaskLost,
                (false, true) => continue,
            };
            let st = status(
                &task_id,
                id,
                state,
                pb::task_status::Reason::AgentRemoved,
                reason.to_string(),
            );
            if let Some(fw) = self.frameworks.get(&task.framework_id) {
                fw.send(pb::event::Event::Update(pb::event::Update {
                    status: Some(st),
                }));
            }
        }
    }
}

/// What [`MasterState::expire_agents`] changed, for the registry.
#[derive(Debug, Default)]
pub struct AgentExpiry {
    /// Agents marked unreachable, and when (seconds since the epoch).
    pub unreachable: Vec<(String, f64)>,
    /// Agents removed for good: id, when, why.
    pub gone: Vec<(String, f64, String)>,
}
