//! Frameworks: subscription, failover (and its timeout), suppress/revive,
//! updates of the framework's info and teardown.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use meseta_core::Resources;
use meseta_proto::v1 as pb;

use super::*;

impl FrameworkEntry {
    /// As operator events show it.
    pub fn view(&self) -> FrameworkView {
        FrameworkView {
            info: self.info.clone(),
            active: self.active(),
            registered_at: self.registered_at,
        }
    }
}

impl MasterState {
    /// Attach a subscribed framework (new, or failing over with its id).
    /// A previous subscription of the same framework gets an ERROR event
    /// ("framework failed over") and its stream is closed; the framework's
    /// tasks are kept. `stream_id` names this subscription.
    pub fn attach_framework(
        &mut self,
        id: &str,
        info: pb::FrameworkInfo,
        sender: FrameworkSender,
        session: u64,
        suppressed: bool,
        stream_id: &str,
    ) {
        let role = if info.role.is_empty() {
            "*".to_string()
        } else {
            info.role.clone()
        };
        let known = self.frameworks.contains_key(id);
        if let Some(old) = self.frameworks.get_mut(id) {
            if let Some(old_sender) = old.sender.take() {
                let _ = old_sender.send(Ok(pb::Event {
                    event: Some(pb::event::Event::Error(pb::event::Error {
                        message: "framework failed over".into(),
                    })),
                }));
            }
            old.info = info;
            old.role = role;
            old.sender = Some(sender);
            old.session = session;
            old.suppressed = suppressed;
            old.disconnected_at = None;
            old.stream_id = stream_id.to_string();
        } else {
            self.frameworks.insert(
                id.to_string(),
                FrameworkEntry {
                    info,
                    id: id.to_string(),
                    role,
                    sender: Some(sender),
                    session,
                    suppressed,
                    registered_at: now_secs(),
                    completed: VecDeque::new(),
                    disconnected_at: None,
                    stream_id: stream_id.to_string(),
                    epoch: 0,
                },
            );
        }
        self.remove_framework_offers(id);
        let role = self
            .frameworks
            .get(id)
            .map(|f| f.role.clone())
            .unwrap_or_default();
        let existing: Vec<(&str, Resources)> = self
            .agents
            .values()
            .flat_map(|a| a.tasks.values())
            .filter(|t| t.framework_id == id)
            .map(|t| (t.agent_id.as_str(), t.resources.clone()))
            .collect();
        self.allocator
            .add_framework(id, &role, suppressed, &existing);
        if let Some(fw) = self.frameworks.get(id) {
            self.events.publish(if known {
                ClusterEvent::FrameworkUpdated(fw.view())
            } else {
                ClusterEvent::FrameworkAdded(fw.view())
            });
        }
    }

    /// The framework's event stream closed; its offers return to the pool
    /// and its failover timeout starts.
    pub fn detach_framework(&mut self, id: &str, session: u64) {
        if let Some(fw) = self.frameworks.get_mut(id) {
            if fw.session == session {
                fw.sender = None;
                fw.disconnected_at = Some(Instant::now());
                self.allocator.deactivate_framework(id);
                self.remove_framework_offers(id);
                if let Some(fw) = self.frameworks.get(id) {
                    self.events
                        .publish(ClusterEvent::FrameworkUpdated(fw.view()));
                }
            }
        }
    }

    /// Frameworks disconnected for longer than their `failover_timeout`
    /// are torn down (their tasks killed). Returns their ids; the caller
    /// removes them from the registry.
    pub fn expire_frameworks(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| {
                f.disconnected_at.is_some_and(|t| {
                    let timeout = f.info.failover_timeout;
                    let timeout = if timeout.is_finite() && timeout > 0.0 {
                        Duration::from_secs_f64(timeout.min(365.0 * 86400.0 * 100.0))
                    } else {
                        Duration::ZERO
                    };
                    now.saturating_duration_since(t) >= timeout
                })
            })
            .map(|f| f.id.clone())
            .collect();
        for id in &expired {
            tracing::warn!(framework = %id, "framework did not re-subscribe within its failover timeout; killing its tasks");
            self.teardown(id);
        }
        expired
    }

    /// UPDATE_FRAMEWORK: new info (the role stays) and suppressed roles.
    pub fn update_framework(
        &mut self,
        framework_id: &str,
        mut info: pb::FrameworkInfo,
        suppressed: bool,
    ) {
        let Some(fw) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        info.role = fw.role.clone();
        info.id = Some(pb::FrameworkId {
            value: framework_id.to_string(),
        });
        fw.info = info;
        if suppressed {
            self.suppress(framework_id);
        } else {
            self.revive(framework_id);
        }
        if let Some(fw) = self.frameworks.get(framework_id) {
            self.events
                .publish(ClusterEvent::FrameworkUpdated(fw.view()));
        }
    }

    /// REVIVE: clear filters and stop suppressing.
    pub fn revive(&mut self, framework_id: &str) {
        if let Some(fw) = self.frameworks.get_mut(framework_id) {
            fw.suppressed = false;
            self.allocator.revive(framework_id);
        }
    }

    /// SUPPRESS: no more offers until REVIVE.
    pub fn suppress(&mut self, framework_id: &str) {
        if let Some(fw) = self.frameworks.get_mut(framework_id) {
            fw.suppressed = true;
            self.allocator.suppress(framework_id);
        }
    }

    /// TEARDOWN: kill every task of the framework and forget it. Its open
    /// stream (if any) is closed.
    pub fn teardown(&mut self, framework_id: &str) {
        for agent in self.agents.values() {
            agent.send(pb::master_message::Message::ShutdownFramework(
                pb::master_message::ShutdownFramework {
                    framework_id: Some(pb::FrameworkId {
                        value: framework_id.to_string(),
                    }),
                },
            ));
        }
        self.remove_framework_offers(framework_id);
        if let Some(fw) = self.frameworks.remove(framework_id) {
            self.events.publish(ClusterEvent::FrameworkRemoved(fw.info));
        }
        self.allocator.remove_framework(framework_id);
    }
}
