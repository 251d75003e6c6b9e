//! Offers: allocation passes, ACCEPT (launch validation), DECLINE, rescinds
//! and the offer timeout.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use meseta_core::ids::new_id;
use meseta_core::Resources;
use meseta_proto::v1 as pb;
use pb::TaskState;

use super::*;

impl MasterState {
    pub(crate) fn remove_framework_offers(&mut self, framework_id: &str) {
        let ids: Vec<String> = self
            .offers
            .values()
            .filter(|o| o.framework_id == framework_id)
            .map(|o| o.id.clone())
            .collect();
        for id in ids {
            self.rescind_offer(&id);
        }
    }

    /// Take back every outstanding offer of agent `id`.
    pub fn rescind_agent_offers(&mut self, id: &str) {
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

    /// Take an offer back (agent gone, framework gone, or timed out).
    pub fn rescind_offer(&mut self, offer_id: &str) {
        let Some(offer) = self.offers.remove(offer_id) else {
            return;
        };
        if let Some(agent) = self.agents.get_mut(&offer.agent_id) {
            agent.offered = agent.offered.saturating_minus(&offer.resources);
        }
        self.allocator.recover(
            &offer.framework_id,
            &offer.agent_id,
            &offer.resources,
            None,
            Instant::now(),
        );
        if let Some(fw) = self.frameworks.get(&offer.framework_id) {
            self.metrics.offers_rescinded += 1;
            fw.send(pb::event::Event::Rescind(pb::event::Rescind {
                offer_id: Some(pb::OfferId { value: offer.id }),
            }));
        }
    }

    /// Remove offers a framework used or declined, returning their agent and
    /// resources. Offers that are not the framework's are reported as errors.
    pub(crate) fn take_offers(
        &mut self,
        framework_id: &str,
        offer_ids: &[pb::OfferId],
    ) -> Result<Option<(String, Resources)>, String> {
        let mut agent_id: Option<String> = None;
        for oid in offer_ids {
            match self.offers.get(&oid.value) {
                Some(o) if o.framework_id == framework_id => {
                    if agent_id.as_ref().is_some_and(|a| a != &o.agent_id) {
                        return Err("offers span more than one agent".into());
                    }
                    agent_id = Some(o.agent_id.clone());
                }
                Some(_) => return Err(format!("offer {} belongs to another framework", oid.value)),
                None => return Err(format!("offer {} is no longer valid", oid.value)),
            }
        }
        let Some(agent_id) = agent_id else {
            return Ok(None);
        };
        let mut total = Resources::new();
        for oid in offer_ids {
            if let Some(o) = self.offers.remove(&oid.value) {
                if let Some(agent) = self.agents.get_mut(&o.agent_id) {
                    agent.offered = agent.offered.saturating_minus(&o.resources);
                }
                total = total.plus(&o.resources).unwrap_or(total);
            }
        }
        Ok(Some((agent_id, total)))
    }

    /// Give resources a framework did not use back to the allocator,
    /// refusing them to that framework for `refuse_seconds` (default 5 s;
    /// 0 or less: no filter).
    pub(crate) fn recover_unused(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        resources: &Resources,
        filters: Option<&pb::Filters>,
    ) {
        let secs = filters
            .map(|f| f.refuse_seconds)
            .unwrap_or(DEFAULT_REFUSE_SECONDS);
        let refuse = (secs > 0.0 && secs.is_finite())
            .then(|| Duration::from_secs_f64(secs.min(365.0 * 86400.0)));
        self.allocator
            .recover(framework_id, agent_id, resources, refuse, Instant::now());
    }

    /// ACCEPT: launch tasks out of the offered resources. Every task gets an
    /// outcome; rejected tasks are also reported to the framework as
    /// TASK_ERROR / TASK_DROPPED status updates, as Mesos does. When the
    /// offers themselves are invalid (unknown, another framework's, spread
    /// over agents, none given) nothing is launched, every task is reported
    /// TASK_DROPPED and the reason is returned as the error.
    pub fn accept(
        &mut self,
        framework_id: &str,
        call: pb::call::Accept,
    ) -> Result<Vec<(String, LaunchOutcome)>, String> {
        let tasks: Vec<pb::TaskInfo> = call
            .operations
            .into_iter()
            .filter_map(|op| match op.operation {
                Some(pb::offer::operation::Operation::Launch(l)) => Some(l.task_infos),
                _ => None,
            })
            .flatten()
            .collect();
        let mut outcomes = Vec::new();
        let taken = self.take_offers(framework_id, &call.offer_ids);
        let (agent_id, mut remaining) = match taken {
            Ok(Some(t)) => t,
            Ok(None) | Err(_) => {
                let msg = match taken {
                    Err(e) => e,
                    _ => "no offers given".to_string(),
                };
                for t in tasks {
                    let tid = t.task_id.map(|t| t.value).unwrap_or_default();
                    self.report(
                        framework_id,
                        &tid,
                        "",
                        TaskState::TaskDropped,
                        pb::task_status::Reason::InvalidOffers,
                        msg.clone(),
                    );
                    outcomes.push((tid, LaunchOutcome::Rejected(msg.clone())));
                }
                return Err(msg);
            }
        };
        let framework = self.frameworks.get(framework_id).map(|f| f.info.clone());
        for mut task in tasks {
            let tid = task
                .task_id
                .as_ref()
                .map(|t| t.value.clone())
                .unwrap_or_default();
            let verdict = self.validate_task(&agent_id, &task, &remaining);
            match verdict {
                Ok(res) => {
                    remaining = remaining.saturating_minus(&res);
                    task.agent_id = Some(pb::AgentId {
                        value: agent_id.clone(),
                    });
                    let Some(agent) = self.agents.get_mut(&agent_id) else {
                        continue;
                    };
                    agent.used = agent.used.plus(&res).unwrap_or_else(|_| agent.used.clone());
                    let now = now_secs();
                    let entry = TaskEntry {
                        framework_id: framework_id.to_string(),
                        agent_id: agent_id.clone(),
                        info: task.clone(),
                        resources: res,
                        state: TaskState::TaskStaging,
                        statuses: vec![(TaskState::TaskStaging, now)],
                        latest: None,
                    };
                    self.events
                        .publish(ClusterEvent::TaskAdded(Box::new(entry.clone())));
                    agent.tasks.insert(tid.clone(), entry);
                    let sent = agent.send(pb::master_message::Message::RunTask(
                        pb::master_message::RunTask {
                            framework: framework.clone(),
                            task: Some(task),
                        },
                    ));
                    if sent {
                        self.metrics.tasks_launched += 1;
                        outcomes.push((tid, LaunchOutcome::Launched));
                    } else {
                        if let Some(agent) = self.agents.get_mut(&agent_id) {
                            if let Some(t) = agent.tasks.remove(&tid) {
                                agent.used = agent.used.saturating_minus(&t.resources);
                                self.allocator.recover(
                                    framework_id,
                                    &agent_id,
                                    &t.resources,
                                    None,
                                    Instant::now(),
                                );
                            }
                        }
                        let msg = "agent is disconnected".to_string();
                        self.report(
                            framework_id,
                            &tid,
                            &agent_id,
                            TaskState::TaskDropped,
                            pb::task_status::Reason::AgentDisconnected,
                            msg.clone(),
                        );
                        outcomes.push((tid, LaunchOutcome::Rejected(msg)));
                    }
                }
                Err(msg) => {
                    self.report(
                        framework_id,
                        &tid,
                        &agent_id,
                        TaskState::TaskError,
                        pb::task_status::Reason::TaskInvalid,
                        msg.clone(),
                    );
                    outcomes.push((tid, LaunchOutcome::Rejected(msg)));
                }
            }
        }
        if !remaining.is_empty() {
            self.recover_unused(framework_id, &agent_id, &remaining, call.filters.as_ref());
        }
        Ok(outcomes)
    }

    pub(crate) fn validate_task(
        &self,
        agent_id: &str,
        task: &pb::TaskInfo,
        remaining: &Resources,
    ) -> Result<Resources, String> {
        let tid = task
            .task_id
            .as_ref()
            .map(|t| t.value.as_str())
            .unwrap_or("");
        if tid.is_empty() {
            return Err("task has no id".into());
        }
        if tid.contains('/') || tid.contains('\0') || tid == "." || tid == ".." {
            return Err(format!(
                "task id '{tid}' contains characters that are not allowed"
            ));
        }
        let res = Resources::from_proto(&task.resources).map_err(|e| e.to_string())?;
        if res.is_empty() {
            return Err("task uses no resources".into());
        }
        if !remaining.contains(&res) {
            return Err(format!(
                "task uses more resources ({res}) than the offers hold ({remaining})"
            ));
        }
        if task.command.as_ref().is_none_or(|c| c.value.is_empty()) && task.container.is_none() {
            return Err("task has neither a command nor a container".into());
        }
        let agent = self.agents.get(agent_id).ok_or("agent is not registered")?;
        if agent.tasks.contains_key(tid) {
            return Err(format!("task id '{tid}' is already in use on this agent"));
        }
        Ok(res)
    }

    /// DECLINE: the offers go back; the agent is filtered for this framework.
    pub fn decline(&mut self, framework_id: &str, call: &pb::call::Decline) {
        self.metrics.offers_declined += call.offer_ids.len() as u64;
        if let Ok(Some((agent_id, resources))) = self.take_offers(framework_id, &call.offer_ids) {
            self.recover_unused(framework_id, &agent_id, &resources, call.filters.as_ref());
        }
    }

    /// Rescind offers outstanding longer than `--offer-timeout` (none when
    /// no timeout is set). Returns how many were rescinded.
    pub fn expire_offers(&mut self, now: Instant) -> usize {
        let Some(timeout) = self.offer_timeout else {
            return 0;
        };
        let stale: Vec<String> = self
            .offers
            .values()
            .filter(|o| now.saturating_duration_since(o.created) >= timeout)
            .map(|o| o.id.clone())
            .collect();
        for id in &stale {
            tracing::info!(offer = %id, timeout_secs = timeout.as_secs_f64(), "rescinding an offer that was not used in time");
            self.rescind_offer(id);
        }
        stale.len()
    }

    /// One allocation pass: stale offers are rescinded, then the DRF
    /// allocator decides who gets each agent's available resources (see
    /// [`crate::allocator`]), and the offers are sent on the frameworks'
    /// streams, one OFFERS event per framework. Returns how many offers
    /// were made.
    pub fn allocate(&mut self) -> usize {
        let started = Instant::now();
        self.expire_offers(started);
        let allocations = self.allocator.allocate(started);
        let made = allocations.len();
        let mut per_framework: HashMap<String, Vec<pb::Offer>> = HashMap::new();
        for alloc in allocations {
            let (Some(fid), Some(aid)) = (
                self.allocator
                    .framework_id(alloc.framework)
                    .map(str::to_string),
                self.allocator.agent_id(alloc.agent).map(str::to_string),
            ) else {
                continue;
            };
            let Some(agent) = self.agents.get_mut(&aid) else {
                // The allocator knows an agent the master forgot: give the
                // resources back rather than offering a ghost.
                self.allocator
                    .recover(&fid, &aid, &alloc.resources, None, started);
                continue;
            };
            if let Err(e) = agent.offered.add_all(&alloc.resources) {
                tracing::error!(agent = %aid, error = %e, "offer does not match the agent's resources; not sent");
                self.allocator
                    .recover(&fid, &aid, &alloc.resources, None, started);
                continue;
            }
            let offer_id = new_id("offer");
            per_framework
                .entry(fid.clone())
                .or_default()
                .push(pb::Offer {
                    id: Some(pb::OfferId {
                        value: offer_id.clone(),
                    }),
                    framework_id: Some(pb::FrameworkId { value: fid.clone() }),
                    agent_id: Some(pb::AgentId { value: aid.clone() }),
                    hostname: agent.hostname.clone(),
                    resources: alloc.resources.to_proto(),
                    attributes: agent.attributes.clone(),
                    agent_address: agent.address.clone(),
                });
            self.offers.insert(
                offer_id.clone(),
                OfferEntry {
                    id: offer_id,
                    framework_id: fid,
                    agent_id: aid,
                    resources: alloc.resources,
                    created: started,
                },
            );
        }
        for (fid, offers) in per_framework {
            if let Some(fw) = self.frameworks.get(&fid) {
                self.metrics.offers_sent += offers.len() as u64;
                fw.send(pb::event::Event::Offers(pb::event::Offers { offers }));
            }
        }
        let took = started.elapsed();
        self.metrics.allocation_runs += 1;
        self.metrics.allocation_time_total += took;
        self.metrics.allocation_time_last = took;
        self.metrics.allocation_seconds.observe(took.as_secs_f64());
        made
    }
}
