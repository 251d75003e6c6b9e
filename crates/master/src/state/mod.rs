//! The master's memory: connected agents with their resources and tasks,
//! subscribed frameworks, outstanding offers. Rebuilt after a failover from
//! agents and frameworks re-registering (the registry in Raft is what
//! survives). All methods are synchronous and called under one lock by the
//! master's call handler (`crate::handler`) and the agent service;
//! outbound messages go through unbounded channels (and operator events
//! through a broadcast) so nothing blocks while the lock is held.
//!
//! The methods live by concern: [`agents`] (registration, expiry),
//! [`frameworks`] (subscription, failover timeout, teardown), [`offers`]
//! (allocation, ACCEPT/DECLINE, rescinds) and [`tasks`] (status updates,
//! kill, acknowledge, reconcile).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::allocator::{Allocator, AllocatorConfig};

pub mod agents;
pub mod frameworks;
pub mod offers;
pub mod tasks;
#[cfg(test)]
mod tests;

use meseta_core::Resources;
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
/// How long a drain lets frameworks replace their tasks elsewhere (after
/// its inverse offers) before the master kills what is left.
pub const DRAIN_REPLACEMENT_PATIENCE: Duration = Duration::from_secs(60);
/// Mesos' default `refuse_seconds` when a framework sends no filter.
pub const DEFAULT_REFUSE_SECONDS: f64 = 5.0;

/// Whether `info` declares Mesos' PARTITION_AWARE capability.
pub fn partition_aware(info: &pb::FrameworkInfo) -> bool {
    info.capabilities
        .iter()
        .any(|c| c.r#type == pb::framework_info::capability::Type::PartitionAware as i32)
}

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
    /// When the master last heard anything from it (answers to pings,
    /// heartbeats, status updates).
    pub last_heartbeat: Instant,
    /// When the master last pinged it.
    pub last_ping: Instant,
    pub disconnected_at: Option<Instant>,
    pub registered_at: f64,
    /// Since when (seconds since the epoch) it is marked unreachable; its
    /// tasks were reported TASK_UNREACHABLE / TASK_LOST.
    pub unreachable_since: Option<f64>,
    /// DEACTIVATE_AGENT or DRAIN_AGENT: it is never offered.
    pub deactivated: bool,
    /// DRAIN_AGENT's config while the agent drains.
    pub drain: Option<crate::registry::DrainRecord>,
    /// When the drain kills what its frameworks left on the agent (they
    /// were sent inverse offers to replace their tasks first); None once
    /// done, or when not draining.
    pub drain_kill_at: Option<Instant>,
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
    /// When its event stream closed; it is torn down once this is older
    /// than `info.failover_timeout`.
    pub disconnected_at: Option<Instant>,
    /// The current subscription's id (HTTP calls must carry it as
    /// `Mesos-Stream-Id`).
    pub stream_id: String,
    /// The highest fencing epoch a subscription of this framework brought
    /// (`Call.epoch`); calls with a lower one are refused.
    pub epoch: u64,
}

impl FrameworkEntry {
    pub fn active(&self) -> bool {
        self.sender.is_some()
    }

    /// Whether it declared Mesos' PARTITION_AWARE capability (it is told
    /// TASK_UNREACHABLE and TASK_GONE, others TASK_LOST).
    pub fn partition_aware(&self) -> bool {
        partition_aware(&self.info)
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

/// Counters for `/metrics/snapshot` and `/metrics` (Prometheus).
#[derive(Debug, Clone)]
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
    /// Seconds per allocation cycle (`meseta_allocator_cycle_seconds`).
    pub allocation_seconds: meseta_metrics::prometheus_client::metrics::histogram::Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            allocation_runs: 0,
            allocation_time_total: Duration::ZERO,
            allocation_time_last: Duration::ZERO,
            offers_sent: 0,
            offers_declined: 0,
            offers_rescinded: 0,
            tasks_launched: 0,
            status_updates: 0,
            invalid_status_updates: 0,
            allocation_seconds: meseta_metrics::seconds_histogram(),
        }
    }
}

/// Everything the leading master keeps in memory.
///
/// Agents' `used` and `offered` and the allocator's view move together:
/// every method that changes one tells the other, so that for every agent
/// `allocator.agent_allocated == used + offered <= total`.
#[derive(Debug)]
pub struct MasterState {
    pub agents: BTreeMap<String, AgentEntry>,
    pub frameworks: BTreeMap<String, FrameworkEntry>,
    pub offers: HashMap<String, OfferEntry>,
    pub metrics: Metrics,
    /// The DRF allocator (owns DECLINE filters, weights and quota).
    pub allocator: Allocator,
    /// Offers older than this are rescinded by [`MasterState::allocate`].
    pub offer_timeout: Option<Duration>,
    /// What changed, for operator SUBSCRIBE streams.
    pub events: ClusterEvents,
    /// Kills waiting for their agent to (re-)register: agent id →
    /// (framework id, KILL call).
    pub pending_kills: HashMap<String, Vec<(String, pb::call::Kill)>>,
    /// How often agents are pinged and heartbeat (`--agent-ping-timeout`).
    pub agent_heartbeat_interval: Duration,
    next_session: u64,
}

/// A change operators can watch (`/api/v1` SUBSCRIBE), in the master's
/// words; the operator face renders each as Mesos' `master.Event`.
#[derive(Debug, Clone)]
pub enum ClusterEvent {
    TaskAdded(Box<TaskEntry>),
    TaskUpdated {
        framework_id: String,
        status: pb::TaskStatus,
    },
    AgentAdded {
        info: pb::AgentInfo,
        registered_at: f64,
    },
    AgentRemoved {
        agent_id: String,
    },
    FrameworkAdded(FrameworkView),
    FrameworkUpdated(FrameworkView),
    FrameworkRemoved(pb::FrameworkInfo),
}

/// A framework as operator events show it.
#[derive(Debug, Clone)]
pub struct FrameworkView {
    pub info: pb::FrameworkInfo,
    pub active: bool,
    pub registered_at: f64,
}

/// The broadcast of [`ClusterEvent`]s. A subscriber that falls more than
/// [`ClusterEvents::CAPACITY`] events behind loses its stream (it
/// re-subscribes and gets a fresh snapshot). Dropped with the state when
/// the master stops leading, which ends every operator stream.
#[derive(Debug, Clone)]
pub struct ClusterEvents(tokio::sync::broadcast::Sender<ClusterEvent>);

impl ClusterEvents {
    /// Events a subscriber may lag behind before its stream ends.
    pub const CAPACITY: usize = 4096;

    /// Tell subscribers, if any.
    pub fn publish(&self, event: ClusterEvent) {
        if self.0.receiver_count() > 0 {
            let _ = self.0.send(event);
        }
    }

    /// Events from now on. Subscribe under the state lock together with
    /// the snapshot, so nothing falls between the two.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ClusterEvent> {
        self.0.subscribe()
    }
}

impl Default for ClusterEvents {
    fn default() -> Self {
        ClusterEvents(tokio::sync::broadcast::channel(Self::CAPACITY).0)
    }
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

impl Default for MasterState {
    fn default() -> Self {
        MasterState {
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            offers: HashMap::new(),
            metrics: Metrics::default(),
            allocator: Allocator::default(),
            offer_timeout: None,
            events: ClusterEvents::default(),
            pending_kills: HashMap::new(),
            agent_heartbeat_interval: Duration::from_secs(15),
            next_session: 0,
        }
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
