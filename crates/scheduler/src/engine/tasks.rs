//! Tasks as Marathon shows them: launch facts, Mesos state, health and
//! readiness results, and the app-level records kept beside them (last
//! failure, launch backoff).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use meseta_core::TaskStateExt;
use meseta_proto::v1::TaskState;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::model::marathon_timestamp;

/// A task's health as Marathon's `healthCheckResults` show it, built from
/// the `healthy` field of the status updates the agent sends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthState {
    pub alive: bool,
    pub consecutive_failures: u32,
    pub first_success: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_failure: Option<DateTime<Utc>>,
    pub last_failure_cause: Option<String>,
}

/// The last HTTP answer of a readiness check (`lastResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessResponse {
    pub status: u16,
    #[serde(rename = "contentType")]
    pub content_type: String,
    pub body: String,
}

/// What a task's readiness check found (Marathon's `readinessCheckResults`).
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    pub name: String,
    pub ready: bool,
    pub last_response: Option<ReadinessResponse>,
    /// Whether a probe has answered (or failed) yet.
    pub checked: bool,
    /// Why the last probe was not ready (`HTTP 404`, `no answer`).
    pub last_cause: Option<String>,
    /// When the next probe is due.
    pub next_probe: Instant,
}

/// A task as Marathon shows it.
#[derive(Debug, Clone)]
pub struct MarathonTask {
    pub id: String,
    pub app_id: String,
    /// The app's `version` when the task was launched.
    pub version: DateTime<Utc>,
    /// The app's `versionInfo.lastConfigChangeAt` when the task was launched:
    /// the task belongs to the app's current configuration exactly when this
    /// equals the app's (scaling moves `version`, not this).
    pub config_version: DateTime<Utc>,
    pub agent_id: String,
    pub host: String,
    pub attributes: Vec<(String, String)>,
    pub ports: Vec<u64>,
    pub service_ports: Vec<u32>,
    pub staged_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub state: TaskState,
    pub health: Option<HealthState>,
    pub readiness: Option<Readiness>,
    /// Since when the task failed `maxConsecutiveFailures` health checks in a
    /// row: it is replaced, then killed.
    pub doomed: Option<Instant>,
    /// When the last status update arrived (or the launch was sent); None
    /// for a task loaded from the store and not heard of since.
    pub last_update: Option<Instant>,
    /// When a kill was last sent; None while the task should run.
    pub kill_sent: Option<Instant>,
    pub grace_seconds: Option<f64>,
    /// Since when the master reports the task TASK_UNREACHABLE (its agent
    /// is cut off); `unreachableStrategy` decides from this when it is
    /// replaced and when it is expunged.
    pub unreachable_since: Option<DateTime<Utc>>,
}

impl MarathonTask {
    /// Marathon's task JSON. `has_health_checks`: the app defines health
    /// checks, so `healthCheckResults` is present (empty until a result).
    pub fn to_json(&self, has_health_checks: bool) -> Value {
        let mut v = json!({
            "id": self.id,
            "appId": self.app_id,
            "slaveId": self.agent_id,
            "host": self.host,
            "state": self.state.mesos_name(),
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
        if has_health_checks || self.health.is_some() {
            let results: Vec<Value> = self
                .health
                .iter()
                .map(|h| {
                    json!({
                        "alive": h.alive,
                        "consecutiveFailures": h.consecutive_failures,
                        "firstSuccess": h.first_success.map(marathon_timestamp),
                        "lastSuccess": h.last_success.map(marathon_timestamp),
                        "lastFailure": h.last_failure.map(marathon_timestamp),
                        "lastFailureCause": h.last_failure_cause,
                        "instanceId": self.id,
                    })
                })
                .collect();
            v["healthCheckResults"] = json!(results);
        }
        v
    }

    /// Not being killed.
    pub fn active(&self) -> bool {
        self.kill_sent.is_none()
    }

    /// The latest health check result, if any.
    pub fn healthy(&self) -> Option<bool> {
        self.health.as_ref().map(|h| h.alive)
    }

    pub fn running(&self) -> bool {
        self.state == TaskState::TaskRunning
    }
}

/// The task's host as an IP address for `ipAddresses` (127.0.0.1 for names).
pub fn host_ip(host: &str) -> String {
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

/// An app's task counts (`tasksStaged`, `tasksRunning`, `tasksHealthy`,
/// `tasksUnhealthy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskCounts {
    pub staged: usize,
    pub running: usize,
    pub healthy: usize,
    pub unhealthy: usize,
}
