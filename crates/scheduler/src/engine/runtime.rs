//! The running side of the engine: what each app needs now (launches and
//! kills under its upgrade strategy and health policy), offers, status
//! updates, health results, readiness checks, deployment progress.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use meseta_core::task::task_state_of;
use meseta_core::{Resources, TaskStateExt};
use meseta_proto::v1 as pb;
use pb::TaskState;
use serde_json::{json, Value};

use super::deployment::{ActionKind, Deployment};
use super::queue::LaunchStats;
use super::tasks::{host_ip, HealthState, Readiness, ReadinessResponse, TaskFailure};
use super::{Action, Engine, MarathonTask};
use crate::launch::{constraints_allow, fit, mismatch, task_info, Placements};
use crate::model::{
    marathon_timestamp, now_millis, AppDefinition, KillSelection, PathId, UnreachableStrategy,
};

/// Decline offers for this long while there is nothing to launch.
const IDLE_REFUSE_SECONDS: f64 = 120.0;
/// Decline an offer that does not fit for this long.
const MISFIT_REFUSE_SECONDS: f64 = 5.0;
/// Kill again when a task has not died this long after the kill.
const KILL_RETRY: Duration = Duration::from_secs(10);
/// An unhealthy task whose replacement is not healthy this long after it
/// was condemned is killed anyway.
pub const UNHEALTHY_REPLACEMENT_PATIENCE: Duration = Duration::from_secs(30);

/// The version a task must have been launched for to match the app's
/// current configuration: scaling changes `version` but not this.
pub(super) fn config_version(app: &AppDefinition) -> DateTime<Utc> {
    app.version_info
        .map(|v| v.last_config_change_at)
        .or(app.version)
        .unwrap_or_else(now_millis)
}

/// What one app needs now.
#[derive(Debug, Default, PartialEq)]
pub struct Needs {
    pub launch: usize,
    pub kill: Vec<String>,
}

/// A readiness check the driver must run: `GET url`, ready when the status
/// is one of `ready_statuses`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadinessProbe {
    pub task_id: String,
    pub url: String,
    pub timeout: Duration,
    pub ready_statuses: Vec<u16>,
}

/// What a readiness probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadinessOutcome {
    pub task_id: String,
    /// The answer; None when the request failed.
    pub response: Option<ReadinessResponse>,
}

impl Engine {
    /// The definition an app runs now: during a deployment, an app whose
    /// step has not come yet keeps its definition from before.
    pub(super) fn effective(&self, id: &str) -> Option<&AppDefinition> {
        let pid = PathId::new(id);
        for d in &self.state.deployments {
            if let Some(step) = d.step_of(&pid) {
                if step > d.current_step {
                    return d.original_of(&pid);
                }
            }
        }
        self.state.apps.get(id)
    }

    /// Whether an unreachable task no longer counts as an instance
    /// (`unreachableStrategy.inactiveAfterSeconds` passed, or the strategy
    /// is `disabled`): a replacement starts elsewhere.
    pub(super) fn unreachable_inactive(
        app: Option<&AppDefinition>,
        t: &MarathonTask,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(since) = t.unreachable_since else {
            return false;
        };
        match app.map(|a| a.unreachable_strategy) {
            Some(UnreachableStrategy::Enabled {
                inactive_after_seconds,
                ..
            }) => (now - since).num_milliseconds() >= (inactive_after_seconds as i64) * 1000,
            _ => true,
        }
    }

    /// Whether an unreachable task is to be forgotten
    /// (`unreachableStrategy.expungeAfterSeconds` passed, or `disabled`).
    fn unreachable_expunged(
        app: Option<&AppDefinition>,
        t: &MarathonTask,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(since) = t.unreachable_since else {
            return false;
        };
        match app.map(|a| a.unreachable_strategy) {
            Some(UnreachableStrategy::Enabled {
                expunge_after_seconds,
                ..
            }) => (now - since).num_milliseconds() >= (expunge_after_seconds as i64) * 1000,
            _ => true,
        }
    }

    fn health_ok(app: &AppDefinition, t: &MarathonTask) -> bool {
        t.running() && (app.health_checks.is_empty() || t.healthy() == Some(true))
    }

    fn ready(app: &AppDefinition, t: &MarathonTask) -> bool {
        Self::health_ok(app, t)
            && (app.readiness_checks.is_empty() || t.readiness.as_ref().is_some_and(|r| r.ready))
    }

    /// What `app_id` needs now: tasks to launch and tasks to kill.
    ///
    /// A configuration change replaces old tasks under the app's upgrade
    /// strategy: never fewer than `ceil(N × minimumHealthCapacity)` healthy
    /// tasks, never more than `floor(N × (1 + maximumOverCapacity))` tasks
    /// (one more when both are equal, to make progress); an old task is
    /// killed when a new one is healthy and ready, or to make room, unhealthy
    /// ones first. A task condemned by its health checks is replaced first
    /// and killed once its replacement is ready (or after
    /// [`UNHEALTHY_REPLACEMENT_PATIENCE`]).
    pub fn needs(&self, app_id: &str) -> Needs {
        let mut needs = Needs::default();
        let now_ts = now_millis();
        let defined = self.state.apps.get(app_id);
        // Unreachable tasks count until they are inactive; then they are
        // neither counted nor killed (they cannot be reached), and a
        // replacement starts. When one comes back it counts again and the
        // surplus goes by killSelection below.
        let active: Vec<&MarathonTask> = self
            .app_tasks(app_id)
            .into_iter()
            .filter(|t| t.active() && !Self::unreachable_inactive(defined, t, now_ts))
            .collect();
        let Some(app) = self.effective(app_id) else {
            needs.kill = active.iter().map(|t| t.id.clone()).collect();
            return needs;
        };
        let config = config_version(app);
        let n = app.instances as usize;
        let (mut current, old): (Vec<&MarathonTask>, Vec<&MarathonTask>) =
            active.iter().partition(|t| t.config_version == config);
        let doomed: Vec<&MarathonTask> = current
            .iter()
            .copied()
            .filter(|t| t.doomed.is_some())
            .collect();
        current.retain(|t| t.doomed.is_none());
        if current.len() > n {
            // Scale down: tasks not running or unhealthy first, then by
            // killSelection (YOUNGEST_FIRST kills the newest).
            let mut victims = current.clone();
            if app.kill_selection == KillSelection::YoungestFirst {
                victims.reverse();
            }
            victims.sort_by_key(|t| Self::health_ok(app, t));
            needs
                .kill
                .extend(victims.iter().take(current.len() - n).map(|t| t.id.clone()));
            current.retain(|t| !needs.kill.contains(&t.id));
        }
        let want_new = n.saturating_sub(current.len());
        let ready_new = current.iter().filter(|t| Self::ready(app, t)).count();
        let now = Instant::now();
        for t in &doomed {
            let replaced = ready_new >= n;
            let waited = t
                .doomed
                .is_some_and(|d| now.duration_since(d) >= UNHEALTHY_REPLACEMENT_PATIENCE);
            if replaced || waited {
                needs.kill.push(t.id.clone());
            }
        }
        let doomed_left =
            doomed.len() - doomed.iter().filter(|t| needs.kill.contains(&t.id)).count();
        if old.is_empty() {
            needs.launch = want_new;
            return needs;
        }
        let us = app.upgrade_strategy;
        let min_healthy = (n as f64 * us.minimum_health_capacity).ceil() as usize;
        let mut max_cap = (n as f64 * (1.0 + us.maximum_over_capacity)).floor() as usize;
        if max_cap <= min_healthy {
            max_cap = min_healthy + 1;
        }
        let old_healthy = |t: &MarathonTask| t.running() && t.healthy() != Some(false);
        // Unhealthy old tasks first, then the oldest.
        let mut old_sorted = old.clone();
        old_sorted.sort_by_key(|t| old_healthy(t));
        let keep_old = n.saturating_sub(ready_new);
        let surplus = old_sorted.len().saturating_sub(keep_old);
        let (gone, remaining) = old_sorted.split_at(surplus);
        needs.kill.extend(gone.iter().map(|t| t.id.clone()));
        let total = remaining.len() + current.len() + doomed_left;
        let room_needed = (total + want_new).saturating_sub(max_cap);
        let unhealthy_old = remaining.iter().filter(|t| !old_healthy(t)).count();
        let healthy_old = remaining.len() - unhealthy_old;
        let killable = unhealthy_old
            + (healthy_old + ready_new)
                .saturating_sub(min_healthy)
                .min(healthy_old);
        let more = room_needed.min(killable);
        needs
            .kill
            .extend(remaining.iter().take(more).map(|t| t.id.clone()));
        needs.launch = want_new.min(max_cap.saturating_sub(total - more));
        needs
    }

    /// Tasks still to launch, over every app, ignoring backoff.
    pub fn queue_len(&self) -> usize {
        self.state.apps.keys().map(|id| self.needs(id).launch).sum()
    }

    fn launchable(&self, app_id: &str, now: Instant) -> bool {
        self.state
            .backoff
            .get(app_id)
            .and_then(|b| b.not_before)
            .is_none_or(|t| t <= now)
    }

    /// Advance deployments, kill what should not run, ask for offers if
    /// something must launch.
    pub fn converge(&mut self) -> Vec<Action> {
        self.advance_deployments();
        let mut actions = Vec::new();
        let ids: BTreeSet<String> = self
            .state
            .apps
            .keys()
            .cloned()
            .chain(self.apps_with_tasks().cloned())
            .collect();
        for id in &ids {
            let kills = self.needs(id).kill;
            for task_id in kills {
                if let Some(t) = self.tasks.get(&task_id) {
                    if t.doomed.is_some() && t.health.as_ref().is_some_and(|h| !h.alive) {
                        let event = json!({
                            "eventType": "unhealthy_instance_kill_event",
                            "timestamp": marathon_timestamp(now_millis()),
                            "appId": t.app_id,
                            "taskId": t.id,
                            "instanceId": t.id,
                            "version": marathon_timestamp(t.version),
                            "reason": t.health.as_ref().and_then(|h| h.last_failure_cause.clone()).unwrap_or_default(),
                            "host": t.host,
                            "slaveId": t.agent_id,
                        });
                        self.emit(event);
                    }
                }
                actions.extend(self.kill_task(&task_id));
            }
        }
        let now = Instant::now();
        let waiting: Vec<String> = self
            .state
            .apps
            .keys()
            .filter(|id| self.needs(id).launch > 0)
            .cloned()
            .collect();
        self.stats.retain(|id, _| waiting.contains(id));
        for id in &waiting {
            self.stats
                .entry(id.clone())
                .or_insert_with(|| LaunchStats::new(now_millis()));
        }
        let want = waiting.iter().any(|id| self.launchable(id, now));
        if want && self.connected {
            // Revive whenever work appears: it also clears refuse filters.
            self.suppressed = false;
            actions.push(Action::Revive);
        }
        self.advance_deployments();
        self.announce_stuck();
        actions
    }

    /// Publish a `deployment_info` event (with `stuck`) when a deployment
    /// becomes stuck or its reason changes.
    fn announce_stuck(&mut self) {
        let mut now_stuck = HashMap::new();
        for d in &self.state.deployments {
            if let Some(s) = self.stuck(d) {
                now_stuck.insert(d.id.clone(), (s, d.clone()));
            }
        }
        self.stuck_announced
            .retain(|id, _| now_stuck.contains_key(id));
        for (id, (reason, d)) in now_stuck {
            let same = self.stuck_announced.get(&id).is_some_and(|r| {
                r["lastFailureCause"] == reason["lastFailureCause"]
                    && r["tasksHealthy"] == reason["tasksHealthy"]
            });
            if same {
                continue;
            }
            tracing::warn!(deployment = %id, reason = %reason, "deployment stuck");
            let plan = self.plan_json(&d);
            self.emit(json!({
                "eventType": "deployment_info",
                "timestamp": marathon_timestamp(now_millis()),
                "plan": plan,
                "currentStep": d.current_step_json(),
                "stuck": reason,
            }));
            self.stuck_announced.insert(id, reason);
        }
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

    /// The framework (re-)subscribed.
    pub fn subscribed(&mut self, framework_id: &str) {
        self.framework_id = Some(framework_id.to_string());
        self.connected = true;
        self.suppressed = false;
    }

    pub fn disconnected(&mut self) {
        self.connected = false;
    }

    /// Offers: pack as many queued tasks as fit; decline the rest. Each
    /// waiting app records what it found lacking (`/v2/queue`).
    ///
    /// What each app needs (a walk over its tasks) and the queue length are
    /// worked out once per OFFERS event and counted down as tasks launch,
    /// not again for every offer: at ten thousand agents an event holds ten
    /// thousand offers.
    pub fn offers(&mut self, offers: Vec<pb::Offer>) -> Vec<Action> {
        let mut actions = Vec::new();
        let now = Instant::now();
        let mut queued = self.queue_len();
        let app_ids: Vec<String> = self.state.apps.keys().cloned().collect();
        let mut wanting: Vec<(String, usize, AppDefinition)> = Vec::new();
        for app_id in app_ids {
            if !self.launchable(&app_id, now) {
                continue;
            }
            let want = self.needs(&app_id).launch;
            if want == 0 {
                continue;
            }
            if let Some(app) = self.effective(&app_id).cloned() {
                wanting.push((app_id, want, app));
            }
        }
        for offer in offers {
            let offer_id = offer
                .id
                .as_ref()
                .map(|o| o.value.clone())
                .unwrap_or_default();
            let agent = offer
                .agent_id
                .as_ref()
                .map(|a| a.value.clone())
                .unwrap_or_default();
            let mut available = Resources::from_proto(&offer.resources).unwrap_or_default();
            let mut launched = Vec::new();
            for (app_id, want, app) in wanting.iter_mut() {
                let (app_id, app) = (&*app_id, &*app);
                if *want == 0 {
                    continue;
                }
                let mut used = false;
                // Where the app runs already: only constraints look at it.
                let mut placed: Placements = if app.constraints.is_empty() {
                    Vec::new()
                } else {
                    self.app_tasks(app_id)
                        .iter()
                        .filter(|t| t.active())
                        .map(|t| (t.host.clone(), t.attributes.clone()))
                        .collect()
                };
                while *want > 0 {
                    let f = if constraints_allow(app, &offer, &placed) {
                        fit(app, &available, &self.role)
                    } else {
                        None
                    };
                    let Some(f) = f else {
                        if !used {
                            let reasons = mismatch(app, &offer, &available, &placed, &self.role);
                            if let Some(s) = self.stats.get_mut(app_id) {
                                s.unused(&offer, reasons, now_millis());
                            }
                        }
                        break;
                    };
                    let task_id = format!("{}.{}", app.id.safe_task_prefix(), uuid::Uuid::new_v4());
                    let info = task_info(app, &task_id, &offer, &f);
                    available = available.saturating_minus(&f.resources);
                    let now_ts = now_millis();
                    let task = MarathonTask {
                        id: task_id.clone(),
                        app_id: app_id.to_string(),
                        version: app.version.unwrap_or(now_ts),
                        config_version: config_version(app),
                        agent_id: agent.clone(),
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
                        health: None,
                        readiness: None,
                        doomed: None,
                        last_update: Some(Instant::now()),
                        kill_sent: None,
                        grace_seconds: app.task_kill_grace_period_seconds.map(f64::from),
                        unreachable_since: None,
                    };
                    tracing::debug!(task = %task_id, app = %app_id, host = %offer.hostname, "launching task");
                    if !app.constraints.is_empty() {
                        placed.push((task.host.clone(), task.attributes.clone()));
                    }
                    self.add_task(task);
                    launched.push(info);
                    if !used {
                        used = true;
                        if let Some(s) = self.stats.get_mut(app_id) {
                            s.used(&agent, now_millis());
                        }
                    }
                    *want -= 1;
                    queued = queued.saturating_sub(1);
                }
            }
            if launched.is_empty() {
                actions.push(Action::Decline {
                    offer_id,
                    refuse_seconds: if queued == 0 {
                        IDLE_REFUSE_SECONDS
                    } else {
                        MISFIT_REFUSE_SECONDS
                    },
                });
            } else {
                tracing::info!(tasks = launched.len(), host = %offer.hostname, "launching tasks");
                actions.push(Action::Accept {
                    offer_id,
                    tasks: launched,
                    refuse_seconds: if queued == 0 {
                        MISFIT_REFUSE_SECONDS
                    } else {
                        0.0
                    },
                });
            }
        }
        if self.queue_len() == 0 && !self.suppressed {
            self.suppressed = true;
            actions.push(Action::Suppress);
        }
        actions
    }

    /// The master drains `agent_id` (an inverse offer): every task there
    /// is condemned like an unhealthy one, so a replacement starts
    /// elsewhere first and the task is killed once it is ready (or after
    /// [`UNHEALTHY_REPLACEMENT_PATIENCE`]).
    pub fn drain_agent(&mut self, agent_id: &str) -> Vec<Action> {
        let now = Instant::now();
        let mut condemned = 0;
        for t in self.tasks.values_mut() {
            if t.agent_id == agent_id && t.doomed.is_none() && t.kill_sent.is_none() {
                t.doomed = Some(now);
                condemned += 1;
            }
        }
        tracing::info!(agent = %agent_id, tasks = condemned, "agent draining: replacing its tasks elsewhere before they are killed");
        self.converge()
    }

    /// A status update from the master (a state change or a health check
    /// result). Always acknowledged.
    pub fn status(&mut self, status: pb::TaskStatus) -> Vec<Action> {
        let mut actions = Vec::new();
        let task_id = status
            .task_id
            .as_ref()
            .map(|t| t.value.clone())
            .unwrap_or_default();
        let state = task_state_of(status.state);
        let now = now_millis();
        let Some(task) = self.tasks.get_mut(&task_id) else {
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
            actions.push(Action::Acknowledge(status));
            return actions;
        };
        if state == TaskState::TaskRunning && task.started_at.is_none() {
            task.started_at = Some(now);
        }
        let changed = task.state != state;
        task.last_update = Some(Instant::now());
        task.state = state;
        if state == TaskState::TaskUnreachable {
            if task.unreachable_since.is_none() {
                let since =
                    DateTime::<Utc>::from_timestamp_millis((status.timestamp * 1000.0) as i64)
                        .filter(|t| *t <= now)
                        .unwrap_or(now);
                tracing::warn!(task = %task.id, app = %task.app_id, agent = %task.agent_id, message = %status.message, "task unreachable; unreachableStrategy decides when it is replaced");
                task.unreachable_since = Some(since);
            }
        } else if task.unreachable_since.take().is_some() && !state.is_terminal() {
            tracing::info!(task = %task.id, app = %task.app_id, state = state.mesos_name(), "unreachable task is back");
        }
        if let Some(a) = status.agent_id.as_ref().filter(|a| !a.value.is_empty()) {
            task.agent_id = a.value.clone();
        }
        let mut events = Vec::new();
        if changed {
            events.push(json!({
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
            }));
        }
        let app_id = task.app_id.clone();
        if let (Some(healthy), false) = (status.healthy, state.is_terminal()) {
            let (max_failures, check) = self
                .state
                .apps
                .get(&app_id)
                .and_then(|a| a.health_checks.first())
                .map(|hc| {
                    (
                        hc.max_consecutive_failures,
                        serde_json::to_value(hc).unwrap_or_default(),
                    )
                })
                .unwrap_or((0, Value::Null));
            let h = task.health.get_or_insert_with(HealthState::default);
            let was = (h.first_success.is_some() || h.last_failure.is_some()).then_some(h.alive);
            if healthy {
                h.first_success.get_or_insert(now);
                h.last_success = Some(now);
                h.consecutive_failures = 0;
                h.alive = true;
            } else {
                h.consecutive_failures += 1;
                h.last_failure = Some(now);
                h.last_failure_cause = Some(status.message.clone()).filter(|m| !m.is_empty());
                h.alive = false;
                events.push(json!({
                    "eventType": "failed_health_check_event",
                    "timestamp": marathon_timestamp(now),
                    "appId": app_id,
                    "taskId": task.id,
                    "instanceId": task.id,
                    "healthCheck": check,
                }));
                if max_failures > 0
                    && h.consecutive_failures >= max_failures
                    && task.doomed.is_none()
                    && task.kill_sent.is_none()
                {
                    tracing::warn!(task = %task.id, failures = h.consecutive_failures, "task unhealthy: replacing it");
                    task.doomed = Some(Instant::now());
                }
            }
            if was != Some(healthy) {
                events.push(json!({
                    "eventType": "health_status_changed_event",
                    "timestamp": marathon_timestamp(now),
                    "appId": app_id,
                    "taskId": task.id,
                    "instanceId": task.id,
                    "version": marathon_timestamp(task.version),
                    "alive": healthy,
                }));
            }
        }
        for e in events {
            self.emit(e);
        }
        let disabled = self
            .state
            .apps
            .get(&app_id)
            .is_none_or(|a| a.unreachable_strategy == UnreachableStrategy::Disabled);
        if state.is_terminal() || (state == TaskState::TaskUnreachable && disabled) {
            self.task_ended(&task_id, state, &status.message);
        } else if state == TaskState::TaskRunning {
            if let Some(b) = self.state.backoff.get_mut(&app_id) {
                // A task that reached RUNNING resets the app's backoff.
                b.delay = Duration::ZERO;
            }
        }
        actions.extend(self.converge());
        actions.push(Action::Acknowledge(status));
        actions
    }

    fn task_ended(&mut self, task_id: &str, state: TaskState, message: &str) {
        let Some(task) = self.remove_task(task_id) else {
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
            self.state.failures.insert(
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
        if let Some(app) = self.state.apps.get(&task.app_id) {
            // The app's task died: it is replaced, after a backoff that grows
            // while tasks keep dying without running for long.
            let b = self.state.backoff.entry(task.app_id.clone()).or_default();
            let base = Duration::from_secs(u64::from(app.backoff_seconds));
            let max = Duration::from_secs(u64::from(app.max_launch_delay_seconds));
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

    /// Once a second: retry kills, lift expired backoffs, replace unhealthy
    /// tasks whose patience ran out, advance deployments.
    pub fn tick(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let now = Instant::now();
        let now_ts = now_millis();
        let expunged: Vec<(String, String)> = self
            .tasks
            .values()
            .filter(|t| Self::unreachable_expunged(self.state.apps.get(&t.app_id), t, now_ts))
            .map(|t| (t.id.clone(), t.app_id.clone()))
            .collect();
        for (id, app) in &expunged {
            // Marathon's expunge: the instance is forgotten; should it come
            // back, it is an unknown task and is killed.
            tracing::warn!(task = %id, app = %app, "unreachable task expunged (unreachableStrategy.expungeAfterSeconds)");
            self.remove_task(id);
        }
        let unreachable = self.tasks.values().any(|t| t.unreachable_since.is_some());
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
        for b in self.state.backoff.values_mut() {
            if b.not_before.is_some_and(|t| t <= now) {
                b.not_before = None;
                expired = true;
            }
        }
        let doomed = self
            .tasks
            .values()
            .any(|t| t.doomed.is_some() && t.active());
        if expired
            || doomed
            || unreachable
            || !expunged.is_empty()
            || (!self.suppressed && self.queue_len() > 0)
        {
            actions.extend(self.converge());
        } else {
            self.advance_deployments();
            self.announce_stuck();
        }
        actions
    }

    // -- deployments ---------------------------------------------------------

    /// Whether one action of a deployment is done.
    fn action_done(&self, d: &Deployment, kind: ActionKind, app_id: &PathId) -> bool {
        let key = app_id.to_string();
        let tasks = self.app_tasks(&key);
        if kind == ActionKind::StopApplication {
            return tasks.is_empty();
        }
        let Some(app) = self.state.apps.get(&key) else {
            return tasks.is_empty();
        };
        let config = config_version(app);
        let n = app.instances as usize;
        tasks.len() == n
            && tasks.iter().all(|t| {
                t.active()
                    && t.config_version == config
                    && t.doomed.is_none()
                    && Self::health_ok(app, t)
                    && (t.staged_at < d.started_at || Self::ready(app, t))
            })
    }

    fn step_done(&self, d: &Deployment) -> bool {
        d.current_actions()
            .iter()
            .all(|a| self.action_done(d, a.kind, &a.app))
    }

    /// Move deployments to their next step as steps finish; announce the
    /// finished ones.
    fn advance_deployments(&mut self) {
        let mut i = 0;
        while i < self.state.deployments.len() {
            let mut finished = false;
            loop {
                let d = &self.state.deployments[i];
                if d.current_step >= d.steps.len() {
                    finished = true;
                    break;
                }
                if !self.step_done(d) {
                    break;
                }
                let d = self.state.deployments[i].clone();
                let plan = self.plan_json(&d);
                self.emit(json!({
                    "eventType": "deployment_step_success",
                    "timestamp": marathon_timestamp(now_millis()),
                    "plan": plan,
                    "currentStep": d.current_step_json(),
                }));
                self.state.deployments[i].current_step += 1;
            }
            if finished {
                let d = self.state.deployments.remove(i);
                tracing::info!(deployment = %d.id, "deployment finished");
                let ts = marathon_timestamp(now_millis());
                let plan = self.plan_json(&d);
                self.emit(json!({"eventType": "deployment_success", "timestamp": ts, "id": d.id, "plan": plan}));
                if let Some(g) = &d.group {
                    self.emit(json!({"eventType": "group_change_success", "timestamp": ts,
                        "groupId": g.to_string(), "version": marathon_timestamp(d.version)}));
                }
                for a in d.steps.iter().flatten() {
                    if a.kind == ActionKind::StopApplication {
                        self.emit(json!({"eventType": "app_terminated_event", "timestamp": ts, "appId": a.app.to_string()}));
                    }
                }
            } else {
                i += 1;
            }
        }
    }

    /// Why a deployment is not progressing, when there is evidence: its
    /// current step's app has unhealthy or failed new tasks.
    pub fn stuck(&self, d: &Deployment) -> Option<Value> {
        for a in d.current_actions() {
            if a.kind == ActionKind::StopApplication || self.action_done(d, a.kind, &a.app) {
                continue;
            }
            let key = a.app.to_string();
            let app = self.state.apps.get(&key)?;
            let config = config_version(app);
            let new: Vec<&MarathonTask> = self
                .app_tasks(&key)
                .into_iter()
                .filter(|t| t.config_version == config)
                .collect();
            let unhealthy: Vec<&MarathonTask> = new
                .iter()
                .copied()
                .filter(|t| t.healthy() == Some(false))
                .collect();
            let failure = self
                .state
                .failures
                .get(&key)
                .filter(|f| f.timestamp >= d.started_at);
            let unready = new.iter().find_map(|t| {
                t.readiness
                    .as_ref()
                    .filter(|r| r.checked && !r.ready)
                    .and_then(|r| r.last_cause.clone())
            });
            if unhealthy.is_empty() && failure.is_none() && unready.is_none() {
                continue;
            }
            let cause = unhealthy
                .iter()
                .filter_map(|t| t.health.as_ref())
                .filter_map(|h| h.last_failure.map(|at| (at, h.last_failure_cause.clone())))
                .max_by_key(|(at, _)| *at)
                .map(|(_, c)| c.unwrap_or_else(|| "health check failed".into()))
                .or(unready)
                .or_else(|| failure.map(|f| f.message.clone()));
            return Some(json!({
                "step": d.current_step + 1,
                "action": a.kind.as_str(),
                "app": key,
                "tasksWanted": app.instances,
                "tasksRunning": new.iter().filter(|t| t.running()).count(),
                "tasksHealthy": new.iter().filter(|t| Self::health_ok(app, t)).count(),
                "tasksReady": new.iter().filter(|t| Self::ready(app, t)).count(),
                "lastFailureCause": cause,
            }));
        }
        None
    }

    /// A deployment in Marathon's JSON (with `stuck` while it cannot progress).
    pub fn deployment_json(&self, d: &Deployment) -> Value {
        d.to_json(|app| self.readiness_results(d, app), self.stuck(d))
    }

    fn readiness_results(&self, d: &Deployment, app_id: &PathId) -> Vec<Value> {
        let key = app_id.to_string();
        let Some(app) = self.state.apps.get(&key) else {
            return Vec::new();
        };
        let preserve = app
            .readiness_checks
            .first()
            .is_some_and(|r| r.preserve_last_response);
        self.app_tasks(&key)
            .into_iter()
            .filter(|t| t.staged_at >= d.started_at)
            .filter_map(|t| {
                let r = t.readiness.as_ref()?;
                let mut v = json!({"name": r.name, "taskId": t.id, "ready": r.ready});
                if preserve {
                    if let Some(resp) = &r.last_response {
                        v["lastResponse"] = serde_json::to_value(resp).unwrap_or_default();
                    }
                }
                Some(v)
            })
            .collect()
    }

    // -- readiness checks ------------------------------------------------------

    /// Readiness checks due now: new tasks of apps in a deployment's current
    /// step that run (and are healthy) but are not ready yet. Each is handed
    /// out once per `intervalSeconds`.
    pub fn readiness_probes(&mut self) -> Vec<ReadinessProbe> {
        let now = Instant::now();
        let mut probes = Vec::new();
        let mut due: Vec<(String, String, Duration, u32)> = Vec::new();
        for d in &self.state.deployments {
            for a in d.current_actions() {
                let key = a.app.to_string();
                let Some(app) = self.state.apps.get(&key) else {
                    continue;
                };
                let Some(rc) = app.readiness_checks.first() else {
                    continue;
                };
                let port_index = app
                    .port_definitions
                    .iter()
                    .position(|p| p.name.as_deref() == Some(rc.port_name.as_str()))
                    .or_else(|| {
                        app.container.as_ref().and_then(|c| {
                            c.port_mappings()
                                .iter()
                                .position(|m| m.name.as_deref() == Some(rc.port_name.as_str()))
                        })
                    });
                let config = config_version(app);
                for t in self.app_tasks(&key) {
                    if t.config_version != config
                        || !Self::health_ok(app, t)
                        || t.readiness
                            .as_ref()
                            .is_some_and(|r| r.ready || r.next_probe > now)
                    {
                        continue;
                    }
                    let Some(port) = port_index.and_then(|i| t.ports.get(i)) else {
                        continue;
                    };
                    let scheme = if rc.protocol == "HTTPS" {
                        "https"
                    } else {
                        "http"
                    };
                    let path = if rc.path.starts_with('/') {
                        rc.path.clone()
                    } else {
                        format!("/{}", rc.path)
                    };
                    probes.push(ReadinessProbe {
                        task_id: t.id.clone(),
                        url: format!("{scheme}://{}:{port}{path}", t.host),
                        timeout: Duration::from_secs(u64::from(rc.timeout_seconds.max(1))),
                        ready_statuses: rc
                            .http_status_codes_for_ready
                            .iter()
                            .filter_map(|c| u16::try_from(*c).ok())
                            .collect(),
                    });
                    due.push((
                        t.id.clone(),
                        rc.name.clone(),
                        Duration::from_secs(u64::from(rc.interval_seconds.max(1))),
                        0,
                    ));
                }
            }
        }
        for (task_id, name, interval, _) in due {
            if let Some(t) = self.tasks.get_mut(&task_id) {
                let r = t.readiness.get_or_insert(Readiness {
                    name,
                    ready: false,
                    last_response: None,
                    checked: false,
                    last_cause: None,
                    next_probe: now,
                });
                r.next_probe = now + interval;
            }
        }
        probes
    }

    /// A readiness probe's result; converges (the deployment may move on).
    pub fn readiness_result(
        &mut self,
        probe: &ReadinessProbe,
        outcome: ReadinessOutcome,
    ) -> Vec<Action> {
        let Some(t) = self.tasks.get_mut(&outcome.task_id) else {
            return Vec::new();
        };
        let Some(r) = t.readiness.as_mut() else {
            return Vec::new();
        };
        r.ready = outcome
            .response
            .as_ref()
            .is_some_and(|resp| probe.ready_statuses.contains(&resp.status));
        r.checked = true;
        r.last_cause = match &outcome.response {
            _ if r.ready => None,
            Some(resp) => Some(format!("readiness check answered HTTP {}", resp.status)),
            None => Some("readiness check got no answer".to_string()),
        };
        if r.ready {
            tracing::info!(task = %outcome.task_id, "task ready");
        }
        r.last_response = outcome.response;
        self.converge()
    }
}
