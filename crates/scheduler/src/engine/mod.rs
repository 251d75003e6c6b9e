//! The scheduler's state and decisions: apps and their versions, groups,
//! tasks, deployments, the launch queue, offer matching, health policy.
//!
//! The engine owns the app lifecycle. Its state is private: the `/v2`
//! handlers and the store read it through accessors and change it only
//! through operations (create, update, scale, restart, delete, rollback,
//! forget a deployment, group changes, task kills) that either apply whole
//! and return an [`Outcome`] (the deployment started and the [`Action`]s for
//! the master), or fail with an [`EngineError`] and change nothing.
//!
//! The engine does no IO. The master's events (offers, status updates) and
//! the periodic tick go through the same engine and return actions too, so
//! everything is testable without a cluster. Events for `/v2/events` are
//! kept in an outbox until [`Engine::flush_events`], so that a change the
//! caller undoes (its write to the store failed) never published any.

mod deployment;
mod error;
mod groups;
mod ops;
mod queue;
mod runtime;
mod tasks;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use chrono::{DateTime, Utc};
use meseta_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use deployment::{ActionKind, Deployment, DeploymentAction};
pub use error::EngineError;
pub use groups::{GroupMeta, GroupSnapshot, GroupUpdate};
pub use ops::{KillOutcome, Outcome};
pub use queue::{LaunchStats, UnusedOffer};
pub use runtime::{Needs, ReadinessOutcome, ReadinessProbe};
pub use tasks::{
    host_ip, Backoff, HealthState, MarathonTask, Readiness, ReadinessResponse, TaskCounts,
    TaskFailure,
};

use crate::events::EventBus;
use crate::model::{AppDefinition, PathId};

/// Marathon's default `--max_versions`.
pub const DEFAULT_MAX_VERSIONS: usize = 50;

/// What the driver must do against the master.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Accept {
        offer_id: String,
        tasks: Vec<pb::TaskInfo>,
        refuse_seconds: f64,
    },
    Decline {
        offer_id: String,
        refuse_seconds: f64,
    },
    Kill {
        task_id: String,
        agent_id: String,
        grace_seconds: Option<f64>,
    },
    Revive,
    Suppress,
    Acknowledge(pb::TaskStatus),
}

/// Everything a lifecycle operation may change (cloned to undo one).
#[derive(Debug, Clone, Default)]
struct State {
    apps: BTreeMap<String, AppDefinition>,
    deployments: Vec<Deployment>,
    /// Per app, its stored versions, oldest first, at most `max_versions`.
    versions: BTreeMap<String, VecDeque<AppDefinition>>,
    /// Groups created explicitly (with their dependencies).
    groups: BTreeMap<PathId, GroupMeta>,
    /// Versions of the root group, oldest first, at most `max_versions`.
    group_history: VecDeque<GroupSnapshot>,
    failures: HashMap<String, TaskFailure>,
    backoff: HashMap<String, Backoff>,
}

/// The engine as it was before a change, to undo it.
pub struct Checkpoint {
    state: State,
    kills: HashMap<String, Option<Instant>>,
    outbox: usize,
}

/// All of the scheduler's state.
pub struct Engine {
    state: State,
    tasks: HashMap<String, MarathonTask>,
    /// Task ids per app id (kept with `tasks` by `add_task`/`remove_task`).
    by_app: HashMap<String, BTreeSet<String>>,
    framework_id: Option<String>,
    role: String,
    max_versions: usize,
    events: EventBus,
    outbox: Vec<Value>,
    /// Per app waiting for offers: what the offers it saw lacked.
    stats: HashMap<String, LaunchStats>,
    /// Per deployment, the `stuck` reason last announced on `/v2/events`.
    stuck_announced: HashMap<String, Value>,
    /// Whether offers are suppressed at the master.
    suppressed: bool,
    /// Outstanding offers are void after a disconnection.
    connected: bool,
}

/// The engine's durable state, as the store writes and reads it.
#[derive(Debug, Default, Clone)]
pub struct Durable {
    pub framework_id: Option<String>,
    pub apps: Vec<AppDefinition>,
    pub versions: Vec<AppDefinition>,
    pub groups: Vec<(PathId, GroupMeta)>,
    pub group_history: Vec<GroupSnapshot>,
    pub deployments: Vec<Deployment>,
    pub tasks: Vec<StoredTask>,
}

/// A task's facts that survive a scheduler restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredTask {
    pub id: String,
    pub app_id: String,
    pub version: DateTime<Utc>,
    /// Absent in state written before config versions were kept: `version`.
    #[serde(default)]
    pub config_version: Option<DateTime<Utc>>,
    pub agent_id: String,
    pub host: String,
    pub attributes: Vec<(String, String)>,
    pub ports: Vec<u64>,
    pub service_ports: Vec<u32>,
    pub staged_at: DateTime<Utc>,
    pub grace_seconds: Option<f64>,
}

impl StoredTask {
    fn of(t: &MarathonTask) -> StoredTask {
        StoredTask {
            id: t.id.clone(),
            app_id: t.app_id.clone(),
            version: t.version,
            config_version: Some(t.config_version),
            agent_id: t.agent_id.clone(),
            host: t.host.clone(),
            attributes: t.attributes.clone(),
            ports: t.ports.clone(),
            service_ports: t.service_ports.clone(),
            staged_at: t.staged_at,
            grace_seconds: t.grace_seconds,
        }
    }

    fn into_task(self) -> MarathonTask {
        MarathonTask {
            config_version: self.config_version.unwrap_or(self.version),
            id: self.id,
            app_id: self.app_id,
            version: self.version,
            agent_id: self.agent_id,
            host: self.host,
            attributes: self.attributes,
            ports: self.ports,
            service_ports: self.service_ports,
            staged_at: self.staged_at,
            started_at: None,
            state: pb::TaskState::TaskStaging,
            health: None,
            readiness: None,
            doomed: None,
            last_update: None,
            kill_sent: None,
            grace_seconds: self.grace_seconds,
            unreachable_since: None,
        }
    }
}

impl Engine {
    /// An empty engine for a framework of `role`, publishing on `events`,
    /// keeping at most `max_versions` versions per app and of the root group.
    pub fn new(role: &str, events: EventBus, max_versions: usize) -> Engine {
        Engine {
            state: State::default(),
            tasks: HashMap::new(),
            by_app: HashMap::new(),
            framework_id: None,
            role: role.to_string(),
            max_versions: max_versions.max(1),
            events,
            outbox: Vec::new(),
            stats: HashMap::new(),
            stuck_announced: HashMap::new(),
            suppressed: false,
            connected: false,
        }
    }

    // -- reads -------------------------------------------------------------

    pub fn framework_id(&self) -> Option<&str> {
        self.framework_id.as_deref()
    }

    /// Every app, by id.
    pub fn apps(&self) -> impl Iterator<Item = &AppDefinition> {
        self.state.apps.values()
    }

    pub fn app(&self, id: &str) -> Option<&AppDefinition> {
        self.state.apps.get(id)
    }

    /// Every task.
    pub fn tasks(&self) -> impl Iterator<Item = &MarathonTask> {
        self.tasks.values()
    }

    pub fn task(&self, id: &str) -> Option<&MarathonTask> {
        self.tasks.get(id)
    }

    fn add_task(&mut self, t: MarathonTask) {
        self.by_app
            .entry(t.app_id.clone())
            .or_default()
            .insert(t.id.clone());
        self.tasks.insert(t.id.clone(), t);
    }

    fn remove_task(&mut self, id: &str) -> Option<MarathonTask> {
        let t = self.tasks.remove(id)?;
        if let Some(ids) = self.by_app.get_mut(&t.app_id) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_app.remove(&t.app_id);
            }
        }
        Some(t)
    }

    /// Ids of the apps that have tasks.
    fn apps_with_tasks(&self) -> impl Iterator<Item = &String> {
        self.by_app.keys()
    }

    /// Tasks of an app, oldest first.
    pub fn app_tasks(&self, app_id: &str) -> Vec<&MarathonTask> {
        let mut v: Vec<&MarathonTask> = self
            .by_app
            .get(app_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
            .collect();
        v.sort_by(|a, b| a.staged_at.cmp(&b.staged_at).then(a.id.cmp(&b.id)));
        v
    }

    /// Deployments under way, oldest first.
    pub fn deployments(&self) -> &[Deployment] {
        &self.state.deployments
    }

    /// Deployments of an app that are still under way.
    pub fn deployments_of(&self, app_id: &str) -> Vec<&Deployment> {
        let id = PathId::new(app_id);
        self.state
            .deployments
            .iter()
            .filter(|d| d.affects(&id))
            .collect()
    }

    /// The last failure of an app's task.
    pub fn failure(&self, app_id: &str) -> Option<&TaskFailure> {
        self.state.failures.get(app_id)
    }

    /// An app's launch backoff, if any.
    pub fn backoff(&self, app_id: &str) -> Option<&Backoff> {
        self.state.backoff.get(app_id)
    }

    /// Offer statistics of an app waiting for offers.
    pub fn launch_stats(&self, app_id: &str) -> Option<&LaunchStats> {
        self.stats.get(app_id)
    }

    /// Versions of an app, newest first.
    pub fn versions(&self, app_id: &str) -> Vec<DateTime<Utc>> {
        self.state
            .versions
            .get(app_id)
            .map(|v| v.iter().rev().filter_map(|a| a.version).collect())
            .unwrap_or_default()
    }

    /// An app as it was at `version`.
    pub fn app_version(&self, app_id: &str, version: DateTime<Utc>) -> Option<&AppDefinition> {
        self.state
            .versions
            .get(app_id)?
            .iter()
            .find(|a| a.version == Some(version))
    }

    /// Counts for an app.
    pub fn counts(&self, app_id: &str) -> TaskCounts {
        let tasks = self.app_tasks(app_id);
        TaskCounts {
            staged: tasks
                .iter()
                .filter(|t| {
                    matches!(
                        t.state,
                        pb::TaskState::TaskStaging | pb::TaskState::TaskStarting
                    )
                })
                .count(),
            running: tasks.iter().filter(|t| t.running()).count(),
            healthy: tasks.iter().filter(|t| t.healthy() == Some(true)).count(),
            unhealthy: tasks.iter().filter(|t| t.healthy() == Some(false)).count(),
        }
    }

    /// Whether an app is in a deployment's way (`force` not given).
    fn check_unlocked<'a>(
        &self,
        apps: impl IntoIterator<Item = &'a PathId>,
    ) -> Result<(), EngineError> {
        let mut ids: BTreeSet<String> = BTreeSet::new();
        for app in apps {
            for d in self.state.deployments.iter().filter(|d| d.affects(app)) {
                ids.insert(d.id.clone());
            }
        }
        if ids.is_empty() {
            Ok(())
        } else {
            Err(EngineError::Locked(ids.into_iter().collect()))
        }
    }

    // -- events ------------------------------------------------------------

    fn emit(&mut self, event: Value) {
        self.outbox.push(event);
    }

    /// Publish what is pending, then subscribe to what comes next (tests).
    pub fn flush_and_subscribe(&mut self) -> tokio::sync::broadcast::Receiver<Value> {
        self.flush_events();
        self.events.subscribe()
    }

    /// Publish the events decided so far on `/v2/events`.
    pub fn flush_events(&mut self) {
        for e in self.outbox.drain(..) {
            self.events.publish(e);
        }
    }

    // -- undo --------------------------------------------------------------

    /// The state a lifecycle operation may change, to undo it with
    /// [`Engine::undo`] (used when the change could not be stored).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            state: self.state.clone(),
            kills: self
                .tasks
                .iter()
                .map(|(id, t)| (id.clone(), t.kill_sent))
                .collect(),
            outbox: self.outbox.len(),
        }
    }

    /// Go back to `cp`: apps, versions, groups, deployments, kills decided
    /// since, and the events not yet published.
    pub fn undo(&mut self, cp: Checkpoint) {
        self.state = cp.state;
        for (id, t) in self.tasks.iter_mut() {
            if let Some(k) = cp.kills.get(id) {
                t.kill_sent = *k;
            }
        }
        self.outbox.truncate(cp.outbox);
    }

    // -- durable state -----------------------------------------------------

    /// What the store keeps.
    pub fn durable(&self) -> Durable {
        Durable {
            framework_id: self.framework_id.clone(),
            apps: self.state.apps.values().cloned().collect(),
            versions: self
                .state
                .versions
                .values()
                .flat_map(|v| v.iter().cloned())
                .collect(),
            groups: self
                .state
                .groups
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            group_history: self.state.group_history.iter().cloned().collect(),
            deployments: self.state.deployments.clone(),
            tasks: self.tasks.values().map(StoredTask::of).collect(),
        }
    }

    /// Load what the store kept into a fresh engine. Tasks are TASK_STAGING
    /// until reconciled.
    pub fn restore(&mut self, d: Durable) {
        self.framework_id = d.framework_id;
        for app in d.apps {
            self.state.apps.insert(app.id.to_string(), app);
        }
        let mut versions = d.versions;
        versions.sort_by_key(|a| a.version);
        for v in versions {
            self.state
                .versions
                .entry(v.id.to_string())
                .or_default()
                .push_back(v);
        }
        // State written before versions were kept: the current definition
        // is the first version.
        for app in self.state.apps.values() {
            let list = self.state.versions.entry(app.id.to_string()).or_default();
            if !list.iter().any(|v| v.version == app.version) {
                list.push_back(app.clone());
            }
        }
        self.state.groups = d.groups.into_iter().collect();
        let mut history = d.group_history;
        history.sort_by_key(|s| s.version);
        self.state.group_history = history.into();
        self.state.deployments = d.deployments;
        self.state.deployments.sort_by_key(|d| d.started_at);
        for t in d.tasks {
            let t = t.into_task();
            self.add_task(t);
        }
    }

    /// Forget tasks whose launch did not happen (their record could not be
    /// stored; the offer was declined).
    pub fn forget_tasks(&mut self, ids: &[String]) {
        for id in ids {
            self.remove_task(id);
        }
    }
}
