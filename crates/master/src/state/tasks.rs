//! Tasks: status updates from agents, kills, acknowledgements and
//! reconciliation.

use std::time::Instant;

use meseta_core::task::task_state_of;
use meseta_core::TaskStateExt;
use meseta_proto::v1 as pb;
use pb::TaskState;

use super::*;

impl MasterState {
    /// A status update from an agent. Updates the master's view, frees
    /// resources of terminal tasks and forwards the update to the framework.
    pub fn status_update(&mut self, agent_id: &str, framework_id: &str, st: pb::TaskStatus) {
        self.metrics.status_updates += 1;
        let Some(task_id) = st.task_id.as_ref().map(|t| t.value.clone()) else {
            self.metrics.invalid_status_updates += 1;
            return;
        };
        let state = task_state_of(st.state);
        if let Some(agent) = self.agents.get_mut(agent_id) {
            if let Some(task) = agent.tasks.get_mut(&task_id) {
                self.events.publish(ClusterEvent::TaskUpdated {
                    framework_id: task.framework_id.clone(),
                    status: st.clone(),
                });
                if task.state != state {
                    task.statuses.push((state, st.timestamp));
                }
                task.state = state;
                task.latest = Some(st.clone());
                if state.is_terminal() {
                    if let Some(task) = agent.tasks.remove(&task_id) {
                        agent.used = agent.used.saturating_minus(&task.resources);
                        self.allocator.recover(
                            &task.framework_id,
                            agent_id,
                            &task.resources,
                            None,
                            Instant::now(),
                        );
                        if let Some(fw) = self.frameworks.get_mut(&task.framework_id) {
                            fw.completed.push_back(task);
                            while fw.completed.len() > COMPLETED_TASKS_KEPT {
                                fw.completed.pop_front();
                            }
                        }
                    }
                }
            }
        }
        if let Some(fw) = self.frameworks.get(framework_id) {
            fw.send(pb::event::Event::Update(pb::event::Update {
                status: Some(st),
            }));
        }
    }

    pub(crate) fn report(
        &self,
        framework_id: &str,
        task_id: &str,
        agent_id: &str,
        state: TaskState,
        reason: pb::task_status::Reason,
        message: String,
    ) {
        if let Some(fw) = self.frameworks.get(framework_id) {
            fw.send(pb::event::Event::Update(pb::event::Update {
                status: Some(status(task_id, agent_id, state, reason, message)),
            }));
        }
    }

    /// KILL: ask the task's agent to kill it; an unknown task is reported
    /// TASK_LOST so the framework can forget it. A task whose agent is
    /// disconnected, or (`agent_expected`) is in the registry but has not
    /// re-registered with this leader yet, is killed when the agent comes
    /// back: after a failover a framework may ask before the agent returns.
    pub fn kill(&mut self, framework_id: &str, call: &pb::call::Kill, agent_expected: bool) {
        let Some(task_id) = call.task_id.as_ref().map(|t| t.value.clone()) else {
            return;
        };
        let agent = self
            .agents
            .values()
            .find(|a| a.tasks.contains_key(&task_id));
        match agent {
            Some(agent) => {
                let policy = self.drain_capped(
                    &agent.id,
                    call.kill_policy
                        .or_else(|| agent.tasks.get(&task_id).and_then(|t| t.info.kill_policy)),
                );
                if !agent.send(pb::master_message::Message::KillTask(
                    pb::master_message::KillTask {
                        framework_id: Some(pb::FrameworkId {
                            value: framework_id.to_string(),
                        }),
                        task_id: call.task_id.clone(),
                        kill_policy: policy,
                    },
                )) {
                    tracing::warn!(task = %task_id, agent = %agent.id, "kill requested while the agent is disconnected; it is sent when the agent re-registers");
                    let agent_id = agent.id.clone();
                    self.pending_kills
                        .entry(agent_id)
                        .or_default()
                        .push((framework_id.to_string(), call.clone()));
                }
            }
            None => {
                let agent_id = call
                    .agent_id
                    .as_ref()
                    .map(|a| a.value.clone())
                    .unwrap_or_default();
                if agent_expected && !agent_id.is_empty() {
                    tracing::info!(task = %task_id, agent = %agent_id, "kill of a task on an agent that has not re-registered yet; it is sent when the agent does");
                    self.pending_kills
                        .entry(agent_id)
                        .or_default()
                        .push((framework_id.to_string(), call.clone()));
                    return;
                }
                self.report(
                    framework_id,
                    &task_id,
                    &agent_id,
                    TaskState::TaskLost,
                    pb::task_status::Reason::TaskUnknown,
                    "task is unknown to the master".into(),
                );
            }
        }
    }

    /// Kills that waited for `agent_id` to (re-)register: sent now, or
    /// answered TASK_LOST when the agent came back without the task.
    pub(crate) fn send_pending_kills(&mut self, agent_id: &str) {
        let Some(kills) = self.pending_kills.remove(agent_id) else {
            return;
        };
        for (framework_id, call) in kills {
            self.kill(&framework_id, &call, false);
        }
    }

    /// ACKNOWLEDGE: forwarded to the agent that sent the update.
    pub fn acknowledge(&mut self, framework_id: &str, call: &pb::call::Acknowledge) {
        let agent_id = call
            .agent_id
            .as_ref()
            .map(|a| a.value.as_str())
            .unwrap_or("");
        if let Some(agent) = self.agents.get(agent_id) {
            agent.send(pb::master_message::Message::Acknowledgement(
                pb::master_message::StatusUpdateAcknowledgement {
                    framework_id: Some(pb::FrameworkId {
                        value: framework_id.to_string(),
                    }),
                    task_id: call.task_id.clone(),
                    uuid: call.uuid.clone(),
                },
            ));
        }
    }

    /// RECONCILE: the latest known state of the named tasks (or of all the
    /// framework's tasks), without uuids.
    pub fn reconcile(&mut self, framework_id: &str, call: &pb::call::Reconcile) {
        let mut updates = Vec::new();
        let known = |task_id: &str| {
            self.agents.values().find_map(|a| {
                a.tasks
                    .get(task_id)
                    .map(|t| (a.id.clone(), t.state, t.latest.clone()))
            })
        };
        if call.tasks.is_empty() {
            for a in self.agents.values() {
                for (tid, t) in &a.tasks {
                    if t.framework_id == framework_id {
                        updates.push((tid.clone(), a.id.clone(), t.state, t.latest.clone()));
                    }
                }
            }
        } else {
            for t in &call.tasks {
                let tid = t
                    .task_id
                    .as_ref()
                    .map(|x| x.value.clone())
                    .unwrap_or_default();
                match known(&tid) {
                    Some((aid, state, latest)) => updates.push((tid, aid, state, latest)),
                    None => {
                        let aid = t
                            .agent_id
                            .as_ref()
                            .map(|a| a.value.clone())
                            .unwrap_or_default();
                        updates.push((tid, aid, TaskState::TaskLost, None));
                    }
                }
            }
        }
        for (tid, aid, state, latest) in updates {
            let mut st = latest.unwrap_or_else(|| {
                status(
                    &tid,
                    &aid,
                    state,
                    pb::task_status::Reason::Reconciliation,
                    String::new(),
                )
            });
            st.state = state as i32;
            st.uuid.clear();
            st.reason = pb::task_status::Reason::Reconciliation as i32;
            st.source = pb::task_status::Source::Master as i32;
            if let Some(fw) = self.frameworks.get(framework_id) {
                fw.send(pb::event::Event::Update(pb::event::Update {
                    status: Some(st),
                }));
            }
        }
    }
}
