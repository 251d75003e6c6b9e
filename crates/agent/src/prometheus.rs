//! `/metrics` (and `/metrics/prometheus`): the agent in Prometheus text,
//! read from the task table, the resources and the status update manager
//! at scrape time.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use meseta_core::{Resources, TaskStateExt};
use meseta_metrics::collect::{counter, gauges, one};
use meseta_metrics::prometheus_client::collector::Collector;
use meseta_metrics::prometheus_client::encoding::DescriptorEncoder;
use meseta_metrics::prometheus_client::registry::Registry;
use meseta_metrics::HttpMetrics;

use crate::Agent;

/// The agent's registry: process and HTTP metrics and [`AgentCollector`].
pub(crate) fn registry(agent: &Arc<Agent>, http: &HttpMetrics) -> Registry {
    let mut registry = meseta_metrics::role_registry(http);
    registry.register_collector(Box::new(AgentCollector {
        agent: Arc::downgrade(agent),
    }));
    registry
}

#[derive(Debug)]
struct AgentCollector {
    agent: Weak<Agent>,
}

impl Collector for AgentCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(agent) = self.agent.upgrade() else {
            return Ok(());
        };
        gauges(
            &mut e,
            "meseta_agent_connected",
            "1 while the agent's stream to the leading master is up",
            &one(i64::from(agent.link.connected())),
        )?;
        let (by_state, used) = {
            let table = agent.tasks();
            let mut by_state: BTreeMap<&'static str, i64> = BTreeMap::new();
            let mut used = Resources::new();
            for t in table.tasks.values() {
                *by_state.entry(t.state.mesos_name()).or_default() += 1;
                if !t.state.is_terminal() {
                    if let Ok(r) = Resources::from_proto(&t.info.resources) {
                        used = used.plus(&r).unwrap_or(used);
                    }
                }
            }
            (by_state, used)
        };
        let tasks: Vec<_> = by_state
            .into_iter()
            .map(|(state, n)| (vec![("state", state.to_string())], n))
            .collect();
        gauges(
            &mut e,
            "meseta_agent_tasks",
            "Tasks on this agent, by Mesos state (terminal ones until their last update is acknowledged)",
            &tasks,
        )?;
        // Scalars in Mesos' units (cpus; mem and disk in MB), as thousandths
        // so fractional cpus survive the integer gauge.
        let mut resources = Vec::new();
        for name in ["cpus", "mem", "disk", "gpus"] {
            let total = agent.total.scalar_milli(name);
            if total == 0 {
                continue;
            }
            resources.push((
                vec![("resource", name.to_string()), ("kind", "total".into())],
                total,
            ));
            resources.push((
                vec![("resource", name.to_string()), ("kind", "used".into())],
                used.scalar_milli(name),
            ));
        }
        gauges(
            &mut e,
            "meseta_agent_resources_milli",
            "Scalar resources of this agent in thousandths of Mesos' unit (cpus, MB), total and used by tasks",
            &resources,
        )?;
        let updates = agent.updates.counts();
        counter(
            &mut e,
            "meseta_agent_task_status_updates",
            "Task status updates generated (checkpointed, then sent)",
            updates.generated,
        )?;
        counter(
            &mut e,
            "meseta_agent_task_status_updates_acknowledged",
            "Task status updates the framework acknowledged",
            updates.acknowledged,
        )?;
        gauges(
            &mut e,
            "meseta_agent_task_status_updates_pending",
            "Task status updates waiting for an acknowledgement",
            &one(updates.pending as i64),
        )
    }
}
