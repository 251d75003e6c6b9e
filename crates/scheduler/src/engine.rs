//! The scheduler's state and decisions: apps, their tasks, the launch queue
//! (what each app still needs), offer matching, kills, deployments.
//!
//! The engine does no IO. Each entry point returns the [`Action`]s the
//! driver must carry out against the master (accept, decline, kill, revive,
//! suppress, acknowledge), so the same logic serves the HTTP API, the master
//! event stream and the periodic tick, and is testable without a cluster.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use meseta_core::task::task_state_of;
use meseta_core::{Resources, TaskStateExt};
use meseta_proto::v1 as pb;
use pb::TaskState;
use serde_json::{json, Value};

use crate::events::EventBus;
use crate::launch::{constraints_allow, fit, task_info, Placements};
use crate::model::{marathon_timestamp, now_millis, AppDefinition, KillSelection};

/// The version a task must have been launched at (or after) to match the
/// app's current configuration: scaling changes `version` but not this.
fn config_version(app: &AppDefinition) -> DateTime<Utc> {
    app.version_info
        .map(|v| v.last_config_change_at)
        .or(app.version)
        .unwrap_or_else(now_millis)
}

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

/// Decline offers for this long while there is nothing to launch.
const IDLE_REFUSE_SECONDS: f64 = 120.0;
/// Decline an offer that does not fit for this long.
const MISFIT_REFUSE_SECONDS: f64 = 5.0;
/// Kill again when a task has not died this long after the kill.
const KILL_RETRY: Duration = Duration::from_secs(10);

/// A task as Marathon shows it.
#[derive(Debug, Clone)]
pub struct MarathonTask {
    pub id: String,
    pub app_id: String,
    pub version: DateTime<Utc>,
    pub agent_id: String,
    pub host: String,
    pub attributes: Vec<(String, String)>,
    pub ports: Vec<u64>,
    pub service_ports: Vec<u32>,
    pub staged_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub state: TaskState,
    pub healthy: Option<bool>,
    /// When a kill was last sent; None while the task should run.
    pub kill_sent: Option<Instant>,
    pub grace_seconds: Option<f64>,
}

impl MarathonTask {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "appId": self.app_id,
            "slaveId": self.agent_id,
            "host": self.host,
            "state": meseta_core::task::TaskStateExt::mesos_name(&self.state),
            "ports": self.ports,
            "servicePorts": self.service_ports,
            "stagedAt": marathon_timestamp(self.staged_at),
            "version": marathon_timestamp(self.version),
            "ipAddresses": [{"ipAddress": host_ip(&self.host), "protocol": "IPv4"}],
            "localVolumes": [],
        });
        if let Some(s) = self.started_at {
            v["startedAt"] = json!(marathon_timestamp(s));
        }
        if let Some(h) = self.healthy {
            v["healthCheckResults"] = json!([{
                "alive": h,
                "consecutiveFailures": if h { 0 } else { 1 },
                "firstSuccess": null,
                "lastFailure": null,
                "lastSuccess": null,
                "lastFailureCause": null,
                "instanceId": self.id,
            }]);
        }
        v
    }

    fn active(&self) -> bool {
        self.kill_sent.is_none()
    }
}

fn host_ip(host: &str) -> String {
    if host.parse::<std::net::IpAddr>().is_ok() {
        host.to_string()
    } else {
        "127.0.0.1".to_string()
    }
}

/// The last failure of an app's task (`lastTaskFailure`).
#[derive(Debug, Clone)]
pub struct TaskFailure {
    pub app_id: String,
    pub task_id: String,
    pub host: String,
    pub message: String,
    pub state: TaskState,
    pub timestamp: DateTime<Utc>,
    pub version: DateTime<Utc>,
    pub agent_id: String,
}

impl TaskFailure {
    pub fn to_json(&self) -> Value {
        json!({
            "appId": self.app_id,
            "host": self.host,
            "message": self.message,
            "state": self.state.mesos_name(),
            "taskId": self.task_id,
            "timestamp": marathon_timestamp(self.timestamp),
            "version": marathon_timestamp(self.version),
            "slaveId": self.agent_id,
        })
    }
}

/// Launch backoff of an app whose tasks keep failing (Marathon's
/// backoffSeconds × backoffFactor, capped at maxLaunchDelaySeconds).
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    pub delay: Duration,
    pub not_before: Option<Instant>,
}

/// A deployment: an app change the scheduler is carrying out.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub id: String,
    pub version: DateTime<Utc>,
    pub app_id: String,
    /// StartApplication | ScaleApplication | RestartApplication | StopApplication
    pub action: &'static str,
}

impl Deployment {
    pub fn to_json(&self) -> Value {
        let action = json!({"action": self.action, "app": self.app_id});
        json!({
            "id": self.id,
            "version": marathon_timestamp(self.version),
            "affectedApps": [self.app_id],
            "affectedPods": [],
            "steps": [{"actions": [action]}],
            "currentActions": [{"action": self.action, "app": self.app_id, "readinessCheckResults": []}],
            "currentStep": 1,
            "totalSteps": 1,
        })
    }
}

/// All of the scheduler's state.
pub struct Engine {
    pub apps: BTreeMap<String, AppDefinition>,
    pub tasks: HashMap<String, MarathonTask>,
    pub deployments: Vec<Deployment>,
    pub failures: HashMap<String, TaskFailure>,
    pub backoff: HashMap<String, Backoff>,
    pub framework_id: Option<String>,
    pub role: String,
    pub events: EventBus,
    /// Whether offers are suppressed at the master.
    suppressed: bool,
    /// Outstanding offers are void after a disconnection.
    connected: bool,
}

/// What one app still needs.
#[derive(Debug, Default, PartialEq)]
pub struct Needs {
    pub launch: usize,
    pub kill: Vec<String>,
}

impl Engine {
    pub fn new(role: &str, events: EventBus) -> Engine {
        Engine {
            apps: BTreeMap::new(),
            tasks: HashMap::new(),
            deployments: Vec::new(),
            failures: HashMap::new(),
            backoff: HashMap::new(),
            framework_id: None,
            role: role.to_string(),
            events,
            suppressed: false,
            connected: false,
        }
    }

    /// Tasks of an app, oldest first.
    pub fn app_tasks(&self, app_id: &str) -> Vec<&MarathonTask> {
        let mut v: Vec<&MarathonTask> =
            self.tasks.values().filter(|t| t.app_id == app_id).collect();
        v.sort_by(|a, b| a.staged_at.cmp(&b.staged_at).then(a.id.cmp(&b.id)));
        v
    }

    /// What `app_id` needs now: tasks to launch and tasks to kill. New
    /// versions replace old ones as the new tasks run (Marathon's default
    /// upgrade strategy: start new, then stop old).
    pub fn needs(&self, app_id: &str) -> Needs {
        let mut needs = Needs::default();
        let tasks = self.app_tasks(app_id);
        let Some(app) = self.apps.get(app_id) else {
            needs.kill = tasks
                .iter()
                .filter(|t| t.active())
                .map(|t| t.id.clone())
                .collect();
            return needs;
        };
        let config = config_version(app);
        let instances = app.instances as usize;
        let mut current: Vec<&MarathonTask> = tasks
            .iter()
            .copied()
            .filter(|t| t.active() && t.version >= config)
            .collect();
        let old: Vec<&MarathonTask> = tasks
            .iter()
            .copied()
            .filter(|t| t.active() && t.version < config)
            .collect();
        if current.len() > instances {
            // YOUNGEST_FIRST kills the newest tasks; OLDEST_FIRST the oldest.
            if app.kill_selection == KillSelection::YoungestFirst {
                current.reverse();
            }
            needs.kill.extend(
                current
                    .iter()
                    .take(current.len() - instances)
                    .map(|t| t.id.clone()),
            );
        } else {
            needs.launch = instances - current.len();
        }
        let current_running = current
            .iter()
            .filter(|t| t.state == TaskState::TaskRunning && t.healthy != Some(false))
            .count()
            .min(instances);
        let keep_old = instances.saturating_sub(current_running);
        if old.len() > keep_old {
            needs
                .kill
                .extend(old.iter().take(old.len() - keep_old).map(|t| t.id.clone()));
        }
        needs
    }

    /// Tasks still to launch, over every app, ignoring backoff.
    pub fn queue_len(&self) -> usize {
        self.apps.keys().map(|id| self.needs(id).launch).sum()
    }

    fn launchable(&self, app_id: &str, now: Instant) -> bool {
        self.backoff
            .get(app_id)
            .and_then(|b| b.not_before)
            .is_none_or(|t| t <= now)
    }

    /// Kill what should not run; ask for offers if something must launch.
    pub fn converge(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let ids: Vec<String> = self
            .apps
            .keys()
            .cloned()
            .chain(self.tasks.values().map(|t| t.app_id.clone()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for id in ids {
            for task_id in self.needs(&id).kill {
                actions.extend(self.kill_task(&task_id));
            }
        }
        let now = Instant::now();
        let want = self
            .apps
            .keys()
            .any(|id| self.launchable(id, now) && self.needs(id).launch > 0);
        if want && self.connected {
            // Revive whenever work appears: it also clears refuse filters.
            self.suppressed = false;
            actions.push(Action::Revive);
        }
        self.check_deployments();
        actions
    }

    /// Send a kill for a task (once; retried by [`Engine::tick`]).
    pub fn kill_task(&mut self, task_id: &str) -> Vec<Action> {
        let Some(task) = self.tasks.get_mut(task_id) else {
            return Vec::new();
        };
        if task.kill_sent.is_some() {
            return Vec::new();
        }
        task.kill_sent = Some(Instant::now());
        vec![Action::Kill {
            task_id: task.id.clone(),
            agent_id: task.agent_id.clone(),
            grace_seconds: task.grace_seconds,
        }]
    }

    /// The framework (re-)subscribed: reconcile every known task.
    pub fn subscribed(&mut self, framework_id: &str) {
        self.framework_id = Some(framework_id.to_string());
        self.connected = true;
        self.suppressed = false;
    }

    pub fn disconnected(&mut self) {
        self.connected = false;
    }

    /// Offers: pack as many queued tasks as fit; decline the rest.
    pub fn offers(&mut self, offers: Vec<pb::Offer>) -> Vec<Action> {
        let mut actions = Vec::new();
        let now = Instant::now();
        for offer in offers {
            let offer_id = offer
                .id
                .as_ref()
                .map(|o| o.value.clone())
                .unwrap_or_default();
            let mut available = Resources::from_proto(&offer.resources).unwrap_or_default();
            let mut launched = Vec::new();
            let app_ids: Vec<String> = self.apps.keys().cloned().collect();
            for app_id in app_ids {
                if !self.launchable(&app_id, now) {
                    continue;
                }
                let mut want = self.needs(&app_id).launch;
                while want > 0 {
                    let Some(app) = self.apps.get(&app_id) else {
                        break;
                    };
                    let placed: Placements = self
                        .app_tasks(&app_id)
                        .iter()
                        .filter(|t| t.active())
                        .map(|t| (t.host.clone(), t.attributes.clone()))
                        .collect();
                    if !constraints_allow(app, &offer, &placed) {
                        break;
                    }
                    let Some(f) = fit(app, &available, &self.role) else {
                        break;
                    };
                    let task_id = format!("{}.{}", app.id.safe_task_prefix(), uuid::Uuid::new_v4());
                    let info = task_info(app, &task_id, &offer, &f);
                    available = available.saturating_minus(&f.resources);
                    let now_ts = now_millis();
                    let task = MarathonTask {
                        id: task_id.clone(),
                        app_id: app_id.clone(),
                        version: app.version.unwrap_or(now_ts),
                        agent_id: offer
                            .agent_id
                            .as_ref()
                            .map(|a| a.value.clone())
                            .unwrap_or_default(),
                        host: offer.hostname.clone(),
                        attributes: offer
                            .attributes
                            .iter()
                            .map(meseta_core::attributes::Attribute::from_proto)
                            .map(|a| (a.name, a.value))
                            .collect(),
                        ports: f.host_ports.clone(),
                        service_ports: app.service_ports(),
                        staged_at: now_ts,
                        started_at: None,
                        state: TaskState::TaskStaging,
                        healthy: None,
                        kill_sent: None,
                        grace_seconds: app.task_kill_grace_period_seconds.map(f64::from),
                    };
                    tracing::info!(task = %task_id, app = %app_id, host = %offer.hostname, "launching task");
                    self.tasks.insert(task_id, task);
                    launched.push(info);
                    want -= 1;
                }
            }
            if launched.is_empty() {
                let refuse = if self.queue_len() == 0 {
                    IDLE_REFUSE_SECONDS
                } else {
                    MISFIT_REFUSE_SECONDS
                };
                actions.push(Action::Decline {
                    offer_id,
                    refuse_seconds: refuse,
                });
            } else {
                let refuse = if self.queue_len() == 0 {
                    MISFIT_REFUSE_SECONDS
                } else {
                    0.0
                };
                actions.push(Action::Accept {
                    offer_id,
                    tasks: launched,
                    refuse_seconds: refuse,
                });
            }
        }
        if self.queue_len() == 0 && !self.suppressed {
            self.suppressed = true;
            actions.push(Action::Suppress);
        }
        actions
    }

    /// A status update from the master. Always acknowledged.
    pub fn status(&mut self, status: pb::TaskStatus) -> Vec<Action> {
        let mut actions = Vec::new();
        let task_id = status
            .task_id
            .as_ref()
            .map(|t| t.value.clone())
            .unwrap_or_default();
        let state = task_state_of(status.state);
        let now = now_millis();
        match self.tasks.get_mut(&task_id) {
            Some(task) => {
                if state == TaskState::TaskRunning && task.started_at.is_none() {
                    task.started_at = Some(now);
                }
                if status.healthy.is_some() {
                    task.healthy = status.healthy;
                }
                task.state = state;
                if status
                    .agent_id
                    .as_ref()
                    .is_some_and(|a| !a.value.is_empty())
                {
                    task.agent_id = status
                        .agent_id
                        .as_ref()
                        .map(|a| a.value.clone())
                        .unwrap_or_default();
                }
                let event = json!({
                    "eventType": "status_update_event",
                    "timestamp": marathon_timestamp(now),
                    "slaveId": task.agent_id,
                    "taskId": task.id,
                    "taskStatus": state.mesos_name(),
                    "message": status.message,
                    "appId": task.app_id,
                    "host": task.host,
                    "ipAddresses": [{"ipAddress": host_ip(&task.host), "protocol": "IPv4"}],
                    "ports": task.ports,
                    "version": marathon_timestamp(task.version),
                });
                self.events.publish(event);
                if state.is_terminal() || state == TaskState::TaskUnreachable {
                    self.task_ended(&task_id, state, &status.message);
                } else if state == TaskState::TaskRunning {
                    if let Some(b) = self.backoff.get_mut(&self.tasks[&task_id].app_id) {
                        // A task that reached RUNNING resets the app's backoff.
                        b.delay = Duration::ZERO;
                    }
                }
                actions.extend(self.converge());
            }
            None => {
                if !state.is_terminal() && state != TaskState::TaskUnreachable {
                    // A task this scheduler does not know (e.g. its app was
                    // deleted while the scheduler was away): kill it.
                    tracing::warn!(task = %task_id, "killing a task of no known app");
                    actions.push(Action::Kill {
                        task_id: task_id.clone(),
                        agent_id: status
                            .agent_id
                            .as_ref()
                            .map(|a| a.value.clone())
                            .unwrap_or_default(),
                        grace_seconds: None,
                    });
                }
            }
        }
        actions.push(Action::Acknowledge(status));
        actions
    }

    fn task_ended(&mut self, task_id: &str, state: TaskState, message: &str) {
        let Some(task) = self.tasks.remove(task_id) else {
            return;
        };
        let expected = task.kill_sent.is_some();
        tracing::info!(task = %task_id, app = %task.app_id, state = state.mesos_name(), message, "task ended");
        if expected {
            return;
        }
        let now = now_millis();
        if matches!(
            state,
            TaskState::TaskFailed
                | TaskState::TaskError
                | TaskState::TaskLost
                | TaskState::TaskDropped
                | TaskState::TaskGone
                | TaskState::TaskUnreachable
        ) {
            self.failures.insert(
                task.app_id.clone(),
                TaskFailure {
                    app_id: task.app_id.clone(),
                    task_id: task.id.clone(),
                    host: task.host.clone(),
                    message: message.to_string(),
                    state,
                    timestamp: now,
                    version: task.version,
                    agent_id: task.agent_id.clone(),
                },
            );
        }
        if let Some(app) = self.apps.get(&task.app_id) {
            // The app's task died: it is replaced, after a backoff that grows
            // while tasks keep dying without reaching RUNNING for long.
            let b = self.backoff.entry(task.app_id.clone()).or_default();
            let base = Duration::from_secs(app.backoff_seconds as u64);
            let max = Duration::from_secs(app.max_launch_delay_seconds as u64);
            b.delay = if b.delay.is_zero() {
                base
            } else {
                b.delay.mul_f64(app.backoff_factor.max(1.0)).min(max)
            };
            let ran_long = task
                .started_at
                .is_some_and(|s| (now - s).num_seconds() > 60);
            if ran_long {
                b.delay = Duration::ZERO;
            }
            b.not_before = Some(Instant::now() + b.delay);
        }
    }

    /// Once a second: retry kills, lift expired backoffs, finish deployments.
    pub fn tick(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let now = Instant::now();
        for task in self.tasks.values_mut() {
            if task
                .kill_sent
                .is_some_and(|t| now.duration_since(t) > KILL_RETRY)
            {
                task.kill_sent = Some(now);
                actions.push(Action::Kill {
                    task_id: task.id.clone(),
                    agent_id: task.agent_id.clone(),
                    grace_seconds: task.grace_seconds,
                });
            }
        }
        let mut expired = false;
        for b in self.backoff.values_mut() {
            if b.not_before.is_some_and(|t| t <= now) {
                b.not_before = None;
                expired = true;
            }
        }
        if expired || (!self.suppressed && self.queue_len() > 0) {
            actions.extend(self.converge());
        } else {
            self.check_deployments();
        }
        actions
    }

    /// Start tracking a deployment for `app_id`, replacing any older one.
    pub fn start_deployment(
        &mut self,
        app_id: &str,
        version: DateTime<Utc>,
        action: &'static str,
    ) -> Deployment {
        self.deployments.retain(|d| d.app_id != app_id);
        let d = Deployment {
            id: uuid::Uuid::new_v4().to_string(),
            version,
            app_id: app_id.to_string(),
            action,
        };
        self.deployments.push(d.clone());
        self.events.publish(json!({
            "eventType": "deployment_info",
            "timestamp": marathon_timestamp(now_millis()),
            "plan": d.to_json(),
            "currentStep": {"actions": [{"action": action, "app": app_id}]},
        }));
        d
    }

    /// Deployments of an app that are still under way.
    pub fn deployments_of(&self, app_id: &str) -> Vec<&Deployment> {
        self.deployments
            .iter()
            .filter(|d| d.app_id == app_id)
            .collect()
    }

    fn deployment_done(&self, d: &Deployment) -> bool {
        let tasks = self.app_tasks(&d.app_id);
        match self.apps.get(&d.app_id) {
            None => tasks.is_empty(),
            Some(app) => {
                let config = config_version(app);
                let running = tasks
                    .iter()
                    .filter(|t| {
                        t.version >= config && t.active() && t.state == TaskState::TaskRunning
                    })
                    .count();
                let others = tasks
                    .iter()
                    .filter(|t| t.version < config || !t.active())
                    .count();
                running == app.instances as usize
                    && others == 0
                    && tasks.len() == app.instances as usize
            }
        }
    }

    fn check_deployments(&mut self) {
        let done: Vec<Deployment> = self
            .deployments
            .iter()
            .filter(|d| self.deployment_done(d))
            .cloned()
            .collect();
        if done.is_empty() {
            return;
        }
        self.deployments
            .retain(|d| !done.iter().any(|x| x.id == d.id));
        for d in done {
            tracing::info!(deployment = %d.id, app = %d.app_id, action = d.action, "deployment finished");
            let ts = marathon_timestamp(now_millis());
            self.events.publish(json!({
                "eventType": "deployment_step_success",
                "timestamp": ts,
                "plan": d.to_json(),
                "currentStep": {"actions": [{"action": d.action, "app": d.app_id}]},
            }));
            self.events.publish(json!({
                "eventType": "deployment_success",
                "timestamp": ts,
                "id": d.id,
                "plan": d.to_json(),
            }));
            if d.action == "StopApplication" {
                self.events.publish(json!({
                    "eventType": "app_terminated_event",
                    "timestamp": ts,
                    "appId": d.app_id,
                }));
            }
        }
    }

    /// Counts for an app: (staged, running, healthy, unhealthy).
    pub fn counts(&self, app_id: &str) -> (usize, usize, usize, usize) {
        let tasks = self.app_tasks(app_id);
        let staged = tasks
            .iter()
            .filter(|t| matches!(t.state, TaskState::TaskStaging | TaskState::TaskStarting))
            .count();
        let running = tasks
            .iter()
            .filter(|t| t.state == TaskState::TaskRunning)
            .count();
        let healthy = tasks.iter().filter(|t| t.healthy == Some(true)).count();
        let unhealthy = tasks.iter().filter(|t| t.healthy == Some(false)).count();
        (staged, running, healthy, unhealthy)
    }
}
