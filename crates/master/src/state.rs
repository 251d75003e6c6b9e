//! The master's memory: connected agents with their resources and tasks,
//! subscribed frameworks, outstanding offers. Rebuilt after a failover from
//! agents and frameworks re-registering (the registry in Raft is what
//! survives). All methods are synchronous and called under one lock by the
//! gRPC services; outbound messages go through unbounded channels so nothing
//! blocks while the lock is held.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use meseta_core::ids::new_id;

use crate::allocator::{Allocator, AllocatorConfig};
use meseta_core::task::task_state_of;
use meseta_core::{Resources, TaskStateExt};
use meseta_proto::v1 as pb;
use pb::TaskState;
use tokio::sync::mpsc::UnboundedSender;
use tonic::Status;

/// Channel to one connected agent's stream.
pub type AgentSender = UnboundedSender<Result<pb::MasterMessage, Status>>;
/// Channel to one subscribed framework's event stream.
pub type FrameworkSender = UnboundedSender<Result<pb::Event, Status>>;

/// Completed tasks kept per framework for `/master/state`.
const COMPLETED_TASKS_KEPT: usize = 200;
/// Mesos' default `refuse_seconds` when a framework sends no filter.
pub const DEFAULT_REFUSE_SECONDS: f64 = 5.0;

pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A task as the master sees it.
#[derive(Debug, Clone)]
pub struct TaskEntry {
    pub framework_id: String,
    pub agent_id: String,
    pub info: pb::TaskInfo,
    pub resources: Resources,
    pub state: TaskState,
    /// (state, timestamp) history, oldest first.
    pub statuses: Vec<(TaskState, f64)>,
    pub latest: Option<pb::TaskStatus>,
}

/// A registered agent.
#[derive(Debug)]
pub struct AgentEntry {
    pub id: String,
    pub hostname: String,
    pub address: String,
    pub attributes: Vec<pb::Attribute>,
    pub total: Resources,
    pub used: Resources,
    pub offered: Resources,
    pub tasks: HashMap<String, TaskEntry>,
    /// None while disconnected.
    pub sender: Option<AgentSender>,
    /// Distinguishes this connection from an older one of the same agent.
    pub session: u64,
    pub last_heartbeat: Instant,
    pub disconnected_at: Option<Instant>,
    pub registered_at: f64,
}

impl AgentEntry {
    /// What can still be offered: total − used − offered.
    pub fn available(&self) -> Resources {
        self.total
            .saturating_minus(&self.used)
            .saturating_minus(&self.offered)
    }

    fn send(&self, msg: pb::master_message::Message) -> bool {
        match &self.sender {
            Some(s) => s.send(Ok(pb::MasterMessage { message: Some(msg) })).is_ok(),
            None => false,
        }
    }
}

/// A subscribed framework.
#[derive(Debug)]
pub struct FrameworkEntry {
    pub info: pb::FrameworkInfo,
    pub id: String,
    pub role: String,
    pub sender: Option<FrameworkSender>,
    pub session: u64,
    pub suppressed: bool,
    pub registered_at: f64,
    pub completed: VecDeque<TaskEntry>,
}

impl FrameworkEntry {
    pub fn active(&self) -> bool {
        self.sender.is_some()
    }

    fn send(&self, event: pb::event::Event) -> bool {
        match &self.sender {
            Some(s) => s.send(Ok(pb::Event { event: Some(event) })).is_ok(),
            None => false,
        }
    }
}

/// An outstanding offer.
#[derive(Debug, Clone)]
pub struct OfferEntry {
    pub id: String,
    pub framework_id: String,
    pub agent_id: String,
    pub resources: Resources,
    /// When the offer was made (for `--offer-timeout`).
    pub created: Instant,
}

/// Counters for `/metrics/snapshot`.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub allocation_runs: u64,
    pub allocation_time_total: Duration,
    pub allocation_time_last: Duration,
    pub offers_sent: u64,
    pub offers_declined: u64,
    pub offers_rescinded: u64,
    pub tasks_launched: u64,
    pub status_updates: u64,
    pub invalid_status_updates: u64,
}

/// Everything the leading master keeps in memory.
///
/// Agents' `used` and `offered` and the allocator's view move together:
/// every method that changes one tells the other, so that for every agent
/// `allocator.agent_allocated == used + offered <= total`.
#[derive(Debug, Default)]
pub struct MasterState {
    pub agents: BTreeMap<String, AgentEntry>,
    pub frameworks: BTreeMap<String, FrameworkEntry>,
    pub offers: HashMap<String, OfferEntry>,
    pub metrics: Metrics,
    /// The DRF allocator (owns DECLINE filters, weights and quota).
    pub allocator: Allocator,
    /// Offers older than this are rescinded by [`MasterState::allocate`].
    pub offer_timeout: Option<Duration>,
    next_session: u64,
}

/// The outcome of a launch request for one task.
#[derive(Debug, PartialEq)]
pub enum LaunchOutcome {
    Launched,
    Rejected(String),
}

fn status(
    task_id: &str,
    agent_id: &str,
    state: TaskState,
    reason: pb::task_status::Reason,
    message: String,
) -> pb::TaskStatus {
    pb::TaskStatus {
        task_id: Some(pb::TaskId {
            value: task_id.to_string(),
        }),
        state: state as i32,
        message,
        source: pb::task_status::Source::Master as i32,
        reason: reason as i32,
        agent_id: Some(pb::AgentId {
            value: agent_id.to_string(),
        }),
        timestamp: now_secs(),
        ..Default::default()
    }
}

impl MasterState {
    /// An empty state whose allocator starts from `config`.
    pub fn with_config(config: AllocatorConfig) -> MasterState {
        MasterState {
            offer_timeout: config.offer_timeout,
            allocator: Allocator::new(config),
            ..Default::default()
        }
    }

    pub fn new_session(&mut self) -> u64 {
        self.next_session += 1;
        self.next_session
    }

    // -----------------------------------------------------------------------
    // Agents
    // -----------------------------------------------------------------------

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
        self.agents.insert(id.to_string(), entry);
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
            if let Some(agent) = self.agents.remove(id) {
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

    // -----------------------------------------------------------------------
    // Frameworks
    // -----------------------------------------------------------------------

    /// Attach a subscribed framework (new, or failing over with its id).
    pub fn attach_framework(
        &mut self,
        id: &str,
        info: pb::FrameworkInfo,
        sender: FrameworkSender,
        session: u64,
        suppressed: bool,
    ) {
        let role = if info.role.is_empty() {
            "*".to_string()
        } else {
            info.role.clone()
        };
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
    }

    /// The framework's event stream closed; its offers return to the pool.
    pub fn detach_framework(&mut self, id: &str, session: u64) {
        if let Some(fw) = self.frameworks.get_mut(id) {
            if fw.session == session {
                fw.sender = None;
                self.allocator.deactivate_framework(id);
                self.remove_framework_offers(id);
            }
        }
    }

    fn remove_framework_offers(&mut self, framework_id: &str) {
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
    fn take_offers(
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
    fn recover_unused(
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
    /// TASK_ERROR / TASK_DROPPED status updates, as Mesos does.
    pub fn accept(
        &mut self,
        framework_id: &str,
        call: pb::call::Accept,
    ) -> Vec<(String, LaunchOutcome)> {
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
                return outcomes;
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
                    agent.tasks.insert(
                        tid.clone(),
                        TaskEntry {
                            framework_id: framework_id.to_string(),
                            agent_id: agent_id.clone(),
                            info: task.clone(),
                            resources: res,
                            state: TaskState::TaskStaging,
                            statuses: vec![(TaskState::TaskStaging, now)],
                            latest: None,
                        },
                    );
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
        outcomes
    }

    fn validate_task(
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

    fn report(
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

    /// DECLINE: the offers go back; the agent is filtered for this framework.
    pub fn decline(&mut self, framework_id: &str, call: &pb::call::Decline) {
        self.metrics.offers_declined += call.offer_ids.len() as u64;
        if let Ok(Some((agent_id, resources))) = self.take_offers(framework_id, &call.offer_ids) {
            self.recover_unused(framework_id, &agent_id, &resources, call.filters.as_ref());
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

    /// KILL: ask the task's agent to kill it; an unknown task is reported
    /// TASK_LOST so the framework can forget it.
    pub fn kill(&mut self, framework_id: &str, call: &pb::call::Kill) {
        let Some(task_id) = call.task_id.as_ref().map(|t| t.value.clone()) else {
            return;
        };
        let agent = self
            .agents
            .values()
            .find(|a| a.tasks.contains_key(&task_id));
        match agent {
            Some(agent) => {
                let policy = call
                    .kill_policy
                    .or_else(|| agent.tasks.get(&task_id).and_then(|t| t.info.kill_policy));
                if !agent.send(pb::master_message::Message::KillTask(
                    pb::master_message::KillTask {
                        framework_id: Some(pb::FrameworkId {
                            value: framework_id.to_string(),
                        }),
                        task_id: call.task_id.clone(),
                        kill_policy: policy,
                    },
                )) {
                    tracing::warn!(task = %task_id, agent = %agent.id, "kill requested while the agent is disconnected; it is sent again when the agent re-registers");
                }
            }
            None => {
                let agent_id = call
                    .agent_id
                    .as_ref()
                    .map(|a| a.value.clone())
                    .unwrap_or_default();
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

    /// TEARDOWN: kill every task of the framework and forget it.
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
        self.frameworks.remove(framework_id);
        self.allocator.remove_framework(framework_id);
    }

    // -----------------------------------------------------------------------
    // Allocation
    // -----------------------------------------------------------------------

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
        made
    }

    /// Check that the allocator and the agents agree and that no agent is
    /// over-committed; the first violation found, described. For tests and
    /// debugging: this walks every agent.
    pub fn check_invariants(&self) -> Result<(), String> {
        for a in self.agents.values() {
            let committed = a
                .used
                .plus(&a.offered)
                .map_err(|e| format!("agent {}: used + offered: {e}", a.id))?;
            if !a.total.contains(&committed) {
                return Err(format!(
                    "agent {} over-committed: total {} < used {} + offered {}",
                    a.id, a.total, a.used, a.offered
                ));
            }
            let allocated = self
                .allocator
                .agent_allocated(&a.id)
                .ok_or_else(|| format!("agent {} unknown to the allocator", a.id))?;
            for name in ["cpus", "mem", "disk"] {
                if allocated.scalar_milli(name) != committed.scalar_milli(name) {
                    return Err(format!(
                        "agent {}: allocator has {allocated} allocated, master {committed}",
                        a.id
                    ));
                }
            }
        }
        if let Some(o) = self
            .offers
            .values()
            .find(|o| !self.agents.contains_key(&o.agent_id))
        {
            return Err(format!("offer {} names unknown agent {}", o.id, o.agent_id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::unbounded_channel;

    fn agent_info(host: &str) -> pb::AgentInfo {
        pb::AgentInfo {
            hostname: host.into(),
            address: format!("{host}:5051"),
            ..Default::default()
        }
    }

    fn task(id: &str, cpus: f64, mem: f64) -> pb::TaskInfo {
        pb::TaskInfo {
            name: id.into(),
            task_id: Some(pb::TaskId { value: id.into() }),
            resources: Resources::parse(&format!("cpus:{cpus};mem:{mem}"))
                .expect("valid")
                .to_proto(),
            command: Some(pb::CommandInfo {
                value: "sleep 1".into(),
                shell: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn tasks_missing_from_a_reregistration_are_reported_lost() {
        let mut s = MasterState::default();
        let (atx, _arx) = unbounded_channel();
        let total = Resources::parse("cpus:2;mem:1024").expect("valid");
        s.attach_agent("a1", &agent_info("h1"), total.clone(), &[], atx, 1);
        let (ftx, mut frx) = unbounded_channel();
        s.attach_framework("f1", pb::FrameworkInfo::default(), ftx, 2, false);
        assert_eq!(s.allocate(), 1);
        let offer_id = s.offers.keys().next().cloned().expect("one offer");
        s.accept(
            "f1",
            pb::call::Accept {
                offer_ids: vec![pb::OfferId { value: offer_id }],
                operations: vec![pb::offer::Operation {
                    operation: Some(pb::offer::operation::Operation::Launch(
                        pb::offer::operation::Launch {
                            task_infos: vec![task("t1", 1.0, 512.0)],
                        },
                    )),
                }],
                filters: None,
            },
        );
        // The agent comes back (restarted) without the task.
        let (atx2, _arx2) = unbounded_channel();
        s.attach_agent("a1", &agent_info("h1"), total, &[], atx2, 3);
        let mut lost = false;
        while let Ok(Ok(ev)) = frx.try_recv() {
            if let Some(pb::event::Event::Update(u)) = ev.event {
                let st = u.status.expect("status");
                if st.task_id.as_ref().is_some_and(|t| t.value == "t1") {
                    lost = st.state == TaskState::TaskLost as i32;
                }
            }
        }
        assert!(lost, "the framework must hear that t1 is lost");
        assert!(s.agents["a1"].used.is_empty());
    }

    #[test]
    fn tasks_that_ended_while_the_agent_was_down_are_not_reported_lost() {
        let mut s = MasterState::default();
        let (atx, _arx) = unbounded_channel();
        let total = Resources::parse("cpus:2;mem:1024").expect("valid");
        s.attach_agent("a1", &agent_info("h1"), total.clone(), &[], atx, 1);
        let (ftx, mut frx) = unbounded_channel();
        s.attach_framework("f1", pb::FrameworkInfo::default(), ftx, 2, false);
        assert_eq!(s.allocate(), 1);
        let offer_id = s.offers.keys().next().cloned().expect("one offer");
        s.accept(
            "f1",
            pb::call::Accept {
                offer_ids: vec![pb::OfferId { value: offer_id }],
                operations: vec![pb::offer::Operation {
                    operation: Some(pb::offer::operation::Operation::Launch(
                        pb::offer::operation::Launch {
                            task_infos: vec![task("t1", 1.0, 512.0)],
                        },
                    )),
                }],
                filters: None,
            },
        );
        // The agent restarted; the task finished meanwhile and its terminal
        // update is still unacknowledged on the agent.
        let ended = pb::RunningTask {
            framework_id: Some(pb::FrameworkId { value: "f1".into() }),
            task: Some(task("t1", 1.0, 512.0)),
            state: TaskState::TaskFinished as i32,
            latest_status: None,
        };
        let (atx2, _arx2) = unbounded_channel();
        s.attach_agent("a1", &agent_info("h1"), total, &[ended], atx2, 3);
        while let Ok(Ok(ev)) = frx.try_recv() {
            if let Some(pb::event::Event::Update(u)) = ev.event {
                let st = u.status.expect("status");
                assert_ne!(st.state, TaskState::TaskLost as i32, "{st:?}");
            }
        }
        assert!(s.agents["a1"].used.is_empty());
        assert!(s.agents["a1"].tasks.is_empty());
    }

    #[test]
    fn offers_accept_and_free_keep_agents_within_capacity() {
        let mut s = MasterState::default();
        let (atx, mut arx) = unbounded_channel();
        s.attach_agent(
            "a1",
            &agent_info("h1"),
            Resources::parse("cpus:2;mem:1024").expect("valid"),
            &[],
            atx,
            1,
        );
        let (ftx, mut frx) = unbounded_channel();
        s.attach_framework("f1", pb::FrameworkInfo::default(), ftx, 2, false);
        assert_eq!(s.allocate(), 1);
        let offer = match frx.try_recv() {
            Ok(Ok(pb::Event {
                event: Some(pb::event::Event::Offers(o)),
            })) => o.offers[0].clone(),
            other => panic!("expected offers, got {other:?}"),
        };
        // Offered + used never exceed the total.
        assert_eq!(s.allocate(), 0);
        let outcomes = s.accept(
            "f1",
            pb::call::Accept {
                offer_ids: vec![offer.id.clone().expect("id")],
                operations: vec![pb::offer::Operation {
                    operation: Some(pb::offer::operation::Operation::Launch(
                        pb::offer::operation::Launch {
                            task_infos: vec![task("t1", 1.0, 512.0), task("t2", 1.5, 10.0)],
                        },
                    )),
                }],
                filters: Some(pb::Filters {
                    refuse_seconds: 0.0,
                }),
            },
        );
        assert_eq!(outcomes[0].1, LaunchOutcome::Launched);
        assert!(matches!(outcomes[1].1, LaunchOutcome::Rejected(_)));
        let a = &s.agents["a1"];
        assert_eq!(a.used.scalar("cpus"), 1.0);
        assert!(a
            .total
            .contains(&a.used.plus(&a.offered).expect("same types")));
        // The agent got the RunTask; the framework got TASK_ERROR for t2.
        let _registered = arx.try_recv().expect("registered");
        assert!(matches!(
            arx.try_recv(),
            Ok(Ok(pb::MasterMessage {
                message: Some(pb::master_message::Message::RunTask(_))
            }))
        ));
        // The rest is offered again, then freed resources come back.
        assert_eq!(s.allocate(), 1);
        let finished = pb::TaskStatus {
            task_id: Some(pb::TaskId { value: "t1".into() }),
            state: TaskState::TaskFinished as i32,
            ..Default::default()
        };
        s.status_update("a1", "f1", finished);
        assert!(s.agents["a1"].used.is_empty());
    }

    #[test]
    fn decline_filters_agent_until_revive() {
        let mut s = MasterState::default();
        let (atx, _arx) = unbounded_channel();
        s.attach_agent(
            "a1",
            &agent_info("h1"),
            Resources::parse("cpus:2;mem:1024").expect("valid"),
            &[],
            atx,
            1,
        );
        let (ftx, _frx) = unbounded_channel();
        s.attach_framework("f1", pb::FrameworkInfo::default(), ftx, 2, false);
        assert_eq!(s.allocate(), 1);
        let oid = s.offers.keys().next().cloned().expect("one offer");
        s.decline(
            "f1",
            &pb::call::Decline {
                offer_ids: vec![pb::OfferId { value: oid }],
                filters: Some(pb::Filters {
                    refuse_seconds: 60.0,
                }),
            },
        );
        assert_eq!(s.allocate(), 0);
        s.revive("f1");
        assert_eq!(s.allocate(), 1);
        s.suppress("f1");
        let oid = s.offers.keys().next().cloned().expect("one offer");
        s.decline(
            "f1",
            &pb::call::Decline {
                offer_ids: vec![pb::OfferId { value: oid }],
                filters: None,
            },
        );
        s.revive("f1");
        s.suppress("f1");
        assert_eq!(s.allocate(), 0);
    }

    #[test]
    fn reserved_resources_only_reach_their_role() {
        let mut s = MasterState::default();
        let (atx, _arx) = unbounded_channel();
        s.attach_agent(
            "a1",
            &agent_info("h1"),
            Resources::parse("cpus(web):2;mem(web):100").expect("valid"),
            &[],
            atx,
            1,
        );
        let (ftx, _frx) = unbounded_channel();
        s.attach_framework(
            "f1",
            pb::FrameworkInfo {
                role: "db".into(),
                ..Default::default()
            },
            ftx,
            2,
            false,
        );
        assert_eq!(s.allocate(), 0);
        let (ftx2, _frx2) = unbounded_channel();
        s.attach_framework(
            "f2",
            pb::FrameworkInfo {
                role: "web".into(),
                ..Default::default()
            },
            ftx2,
            3,
            false,
        );
        assert_eq!(s.allocate(), 1);
        assert!(s.offers.values().all(|o| o.framework_id == "f2"));
    }
}
