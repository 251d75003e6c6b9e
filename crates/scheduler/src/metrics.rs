//! `/metrics` (and `/metrics/prometheus`) of a scheduler, leader or not.
//!
//! Prometheus text by default (process and HTTP metrics, plus the engine's
//! apps, deployments, tasks and launch queue while this scheduler leads);
//! `Accept: application/json` gets Marathon's Dropwizard-shaped JSON
//! (`version`, `gauges`, `counters`, `histograms`, `meters`, `timers`)
//! with Marathon 1.10's gauge names, for the tools that read it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Instant;

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use meseta_core::TaskStateExt;
use meseta_metrics::collect::{gauges, one};
use meseta_metrics::prometheus_client::collector::Collector;
use meseta_metrics::prometheus_client::encoding::DescriptorEncoder;
use meseta_metrics::prometheus_client::registry::Registry;
use meseta_metrics::HttpMetrics;
use serde_json::{json, Value};

use crate::Shared;

/// The leader's state while this scheduler leads (empty otherwise).
type Leading = Arc<RwLock<Option<Weak<Shared>>>>;

/// A scheduler's registry and what its collector reads.
pub(crate) struct SchedulerMetrics {
    registry: Registry,
    pub(crate) http: HttpMetrics,
    leading: Leading,
    started: Instant,
}

/// Counts read from the engine at scrape time.
#[derive(Debug, Default)]
struct EngineCounts {
    apps: i64,
    groups: i64,
    deployments: i64,
    queue: i64,
    tasks: BTreeMap<&'static str, i64>,
}

fn engine_counts(leading: &Leading) -> Option<EngineCounts> {
    let shared = leading
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()?
        .upgrade()?;
    let engine = shared.engine();
    let mut counts = EngineCounts {
        apps: engine.apps().count() as i64,
        groups: engine.group_ids().len() as i64,
        deployments: engine.deployments().len() as i64,
        queue: engine.queue_len() as i64,
        tasks: BTreeMap::new(),
    };
    for t in engine.tasks() {
        *counts.tasks.entry(t.state.mesos_name()).or_default() += 1;
    }
    Some(counts)
}

impl SchedulerMetrics {
    pub(crate) fn new() -> SchedulerMetrics {
        let http = HttpMetrics::default();
        let mut registry = meseta_metrics::role_registry(&http);
        let leading: Leading = Arc::default();
        registry.register_collector(Box::new(EngineCollector {
            leading: leading.clone(),
        }));
        SchedulerMetrics {
            registry,
            http,
            leading,
            started: Instant::now(),
        }
    }

    /// This scheduler leads with `shared` (until [`SchedulerMetrics::stand_by`]).
    pub(crate) fn lead(&self, shared: &Arc<Shared>) {
        *self.leading.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::downgrade(shared));
    }

    /// This scheduler stopped leading.
    pub(crate) fn stand_by(&self) {
        *self.leading.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The answer to `GET /metrics`: Marathon's JSON for `Accept:
    /// application/json`, Prometheus text otherwise.
    pub(crate) fn respond(&self, headers: &HeaderMap) -> Response {
        let json = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/json"));
        if json {
            return axum::Json(self.marathon_json()).into_response();
        }
        meseta_metrics::respond(&self.registry, headers)
    }

    fn marathon_json(&self) -> Value {
        let counts = engine_counts(&self.leading).unwrap_or_default();
        let task = |s: &str| counts.tasks.get(s).copied().unwrap_or(0);
        let gauge = |v: f64| json!({ "value": v });
        let mut g = serde_json::Map::new();
        let mut put = |name: &str, v: f64| {
            g.insert(name.to_string(), gauge(v));
        };
        put("marathon.apps.active.gauge", counts.apps as f64);
        put("marathon.groups.active.gauge", counts.groups as f64);
        put(
            "marathon.deployments.active.gauge",
            counts.deployments as f64,
        );
        put(
            "marathon.instances.running.gauge",
            task("TASK_RUNNING") as f64,
        );
        put(
            "marathon.instances.staged.gauge",
            (task("TASK_STAGING") + task("TASK_STARTING")) as f64,
        );
        put(
            "marathon.instances.launch-overdue.gauge",
            counts.queue as f64,
        );
        put(
            "marathon.uptime.gauge.seconds",
            self.started.elapsed().as_secs_f64(),
        );
        json!({
            "version": "4.0.0",
            "gauges": g,
            "counters": {},
            "histograms": {},
            "meters": {},
            "timers": {},
        })
    }
}

struct EngineCollector {
    leading: Leading,
}

impl std::fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let leading = self.leading.read().map(|l| l.is_some()).unwrap_or(false);
        f.debug_struct("EngineCollector")
            .field("leading", &leading)
            .finish()
    }
}

impl Collector for EngineCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = engine_counts(&self.leading);
        gauges(
            &mut e,
            "meseta_scheduler_leader",
            "1 while this scheduler leads",
            &one(i64::from(counts.is_some())),
        )?;
        // Only the leader knows the apps; a standby shows none of these.
        let Some(c) = counts else {
            return Ok(());
        };
        gauges(
            &mut e,
            "meseta_scheduler_apps",
            "Apps defined",
            &one(c.apps),
        )?;
        gauges(
            &mut e,
            "meseta_scheduler_groups",
            "Groups defined",
            &one(c.groups),
        )?;
        gauges(
            &mut e,
            "meseta_scheduler_deployments_active",
            "Deployments in progress",
            &one(c.deployments),
        )?;
        gauges(
            &mut e,
            "meseta_scheduler_launch_queue",
            "Tasks still to launch over every app",
            &one(c.queue),
        )?;
        let tasks: Vec<_> = c
            .tasks
            .into_iter()
            .map(|(state, n)| (vec![("state", state.to_string())], n))
            .collect();
        gauges(
            &mut e,
            "meseta_scheduler_tasks",
            "The apps' tasks, by Mesos state",
            &tasks,
        )
    }
}
