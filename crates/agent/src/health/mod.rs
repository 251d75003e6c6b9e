//! Health checks of the tasks this agent runs (Marathon's HTTP, HTTPS,
//! TCP and COMMAND checks, Mesos' MESOS_HTTP, MESOS_HTTPS and MESOS_TCP),
//! so that checking scales with agents, not with the scheduler. Results
//! ride on status updates (`TaskStatus.healthy`).
//!
//! One [`Checker`] per task with a health check. It probes its [`Target`]
//! every `interval`; a probe that does not answer within `timeout` fails.
//! Failures during `grace_period` (from [`Checker::spawn`]) are ignored
//! until the first success. Mesos' protocols and COMMAND wait `delay`
//! before the first probe; Marathon's HTTP/HTTPS/TCP start at once.
//!
//! What is reported (the `report` callback; each report should become one
//! status update with the task's current state, `healthy`, the cause as
//! `message` and reason `REASON_TASK_HEALTH_CHECK_STATUS_UPDATED`):
//! - the first result, and every change between healthy and unhealthy;
//! - while unhealthy, each further failure up to `max_consecutive_failures`
//!   in a row (the scheduler counts them to decide on a replacement), then
//!   nothing until the task is healthy again.
//!
//! The checker never kills the task: the scheduler replaces an unhealthy
//! task first and kills it once the replacement is healthy. COMMAND checks
//! run through a [`CommandRunner`], which must run them inside the task's
//! namespaces and cgroups; [`ShellRunner`] runs `sh -c` in the sandbox
//! (posix isolation, tests).

mod command;
mod probe;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use meseta_proto::v1 as pb;

pub use command::{CommandOutcome, CommandRunner, NamespaceRunner, ShellRunner};

/// Why a health check could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("health check of unknown type {0}")]
    UnknownType(i32),
    #[error("{0} health check without a port")]
    NoPort(&'static str),
    #[error("COMMAND health check without a command")]
    NoCommand,
}

/// How a task is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `GET path`; 200–399 is healthy. `tls`: HTTPS (certificates are not
    /// verified: tasks use self-signed ones).
    Http {
        tls: bool,
        port: u16,
        path: String,
        ignore_1xx: bool,
    },
    /// A TCP connection is accepted.
    Tcp { port: u16 },
    /// The command exits 0.
    Command { command: String },
}

/// A task's health check, as the scheduler sent it in `TaskInfo.health_check`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSpec {
    pub probe: Probe,
    /// Mesos' protocols (and COMMAND) wait `delay` before the first probe.
    pub mesos: bool,
    pub delay: Duration,
    pub interval: Duration,
    pub timeout: Duration,
    pub grace_period: Duration,
    /// Failures in a row the scheduler tolerates (0: never replaced).
    pub max_consecutive_failures: u32,
}

fn secs(s: f64, default: f64) -> Duration {
    let s = if s.is_finite() && s > 0.0 { s } else { default };
    Duration::from_secs_f64(s.min(86_400.0))
}

impl HealthSpec {
    /// Read `TaskInfo.health_check`. Marathon's defaults fill what is zero.
    pub fn from_proto(hc: &pb::HealthCheck) -> Result<HealthSpec, HealthError> {
        use pb::health_check::Type;
        let port = |p: u32, what: &'static str| {
            u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or(HealthError::NoPort(what))
        };
        let probe = match Type::try_from(hc.r#type) {
            Ok(Type::Http) | Ok(Type::Https) => {
                let http = hc.http.clone().unwrap_or_default();
                let tls = hc.r#type == Type::Https as i32 || http.scheme == "https";
                Probe::Http {
                    tls,
                    port: port(http.port, "HTTP")?,
                    path: if http.path.is_empty() {
                        "/".into()
                    } else {
                        http.path
                    },
                    ignore_1xx: hc.ignore_http1xx,
                }
            }
            Ok(Type::Tcp) => Probe::Tcp {
                port: port(hc.tcp.as_ref().map_or(0, |t| t.port), "TCP")?,
            },
            Ok(Type::Command) => Probe::Command {
                command: hc
                    .command
                    .as_ref()
                    .map(|c| c.value.clone())
                    .filter(|c| !c.is_empty())
                    .ok_or(HealthError::NoCommand)?,
            },
            _ => return Err(HealthError::UnknownType(hc.r#type)),
        };
        let mesos = hc.protocol.starts_with("MESOS_")
            || matches!(probe, Probe::Command { .. })
            || hc.protocol.is_empty();
        Ok(HealthSpec {
            probe,
            mesos,
            delay: secs(hc.delay_seconds, 15.0),
            interval: secs(hc.interval_seconds, 60.0),
            timeout: secs(hc.timeout_seconds, 20.0),
            grace_period: Duration::from_secs_f64(hc.grace_period_seconds.clamp(0.0, 86_400.0)),
            max_consecutive_failures: hc.consecutive_failures,
        })
    }
}

/// Where network probes go: the task's address as seen from the agent
/// (`127.0.0.1` for host networking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: IpAddr,
}

/// One reported result.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthResult {
    pub healthy: bool,
    /// Failures in a row, this one included (0 when healthy).
    pub consecutive_failures: u32,
    /// Why the check failed (`HTTP 500`, `connection refused`, `timed out
    /// after 2s`, `exit status 1`).
    pub cause: Option<String>,
    pub at: SystemTime,
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    Healthy,
    Unhealthy(String),
    /// A 1xx answer with `ignore_http1xx`: no result.
    Ignored,
}

/// Decides which probe results are reported (see the module doc).
#[derive(Debug)]
pub(crate) struct Policy {
    max_consecutive_failures: u32,
    grace_until: Instant,
    ever_healthy: bool,
    reported: Option<bool>,
    failures: u32,
}

impl Policy {
    pub(crate) fn new(spec: &HealthSpec, started: Instant) -> Policy {
        Policy {
            max_consecutive_failures: spec.max_consecutive_failures,
            grace_until: started + spec.grace_period,
            ever_healthy: false,
            reported: None,
            failures: 0,
        }
    }

    /// The result to report for `verdict` at `now`, if any.
    pub(crate) fn judge(&mut self, verdict: Verdict, now: Instant) -> Option<HealthResult> {
        let at = SystemTime::now();
        match verdict {
            Verdict::Ignored => None,
            Verdict::Healthy => {
                self.ever_healthy = true;
                self.failures = 0;
                if self.reported == Some(true) {
                    return None;
                }
                self.reported = Some(true);
                Some(HealthResult {
                    healthy: true,
                    consecutive_failures: 0,
                    cause: None,
                    at,
                })
            }
            Verdict::Unhealthy(cause) => {
                if !self.ever_healthy && now < self.grace_until {
                    return None;
                }
                self.failures += 1;
                let changed = self.reported != Some(false);
                if !changed && self.failures > self.max_consecutive_failures {
                    return None;
                }
                self.reported = Some(false);
                Some(HealthResult {
                    healthy: false,
                    consecutive_failures: self.failures,
                    cause: Some(cause),
                    at,
                })
            }
        }
    }
}

/// A running health check. Dropping it (or [`Checker::stop`]) stops it.
pub struct Checker {
    task: tokio::task::JoinHandle<()>,
}

impl Checker {
    /// Start checking `target` per `spec` on the current tokio runtime;
    /// `report` is called from the checker's task with each result to
    /// report. COMMAND checks run through `exec`. Call this when the task
    /// reaches TASK_RUNNING (the grace period starts now); after an agent
    /// restart, when the recovered task is re-attached.
    pub fn spawn(
        spec: HealthSpec,
        target: Target,
        exec: impl CommandRunner,
        report: impl Fn(HealthResult) + Send + Sync + 'static,
    ) -> Checker {
        let exec: Arc<dyn CommandRunner> = Arc::new(exec);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut policy = Policy::new(&spec, started);
            if spec.mesos {
                tokio::time::sleep(spec.delay).await;
            }
            loop {
                let verdict = probe::run(&spec, &target, exec.as_ref()).await;
                tracing::debug!(?verdict, probe = ?spec.probe, "health check");
                if let Some(result) = policy.judge(verdict, Instant::now()) {
                    report(result);
                }
                tokio::time::sleep(spec.interval).await;
            }
        });
        Checker { task }
    }

    /// Stop checking (the task was killed or ended).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}
