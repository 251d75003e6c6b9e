//! `/metrics` (and `/metrics/prometheus`): the master in Prometheus text.
//!
//! The counters are the ones `/metrics/snapshot` shows under Mesos' names
//! (kept once, in [`crate::state::Metrics`], and read at scrape time); the
//! histograms are recorded where the work happens: an allocation cycle in
//! `MasterState::allocate`, a Raft commit in `RaftHandle::propose`.

use std::collections::BTreeMap;
use std::sync::Arc;

use meseta_core::TaskStateExt;
use meseta_metrics::collect::{counter, gauges, one};
use meseta_metrics::prometheus_client::collector::Collector;
use meseta_metrics::prometheus_client::encoding::DescriptorEncoder;
use meseta_metrics::prometheus_client::registry::{Registry, Unit};
use meseta_metrics::HttpMetrics;

use crate::Master;

/// The master's registry: process and HTTP metrics, the master's state
/// ([`MasterCollector`]), the allocation and Raft commit histograms.
pub(crate) fn registry(master: &Arc<Master>, http: &HttpMetrics) -> Registry {
    let mut registry = meseta_metrics::role_registry(http);
    registry.register_with_unit(
        "meseta_allocator_cycle",
        "Time one DRF allocation cycle took",
        Unit::Seconds,
        master.state().metrics.allocation_seconds.clone(),
    );
    registry.register_with_unit(
        "meseta_raft_commit",
        "Time from a Raft proposal on this master to its entry committed and applied",
        Unit::Seconds,
        master.raft.commit_histogram(),
    );
    registry.register_collector(Box::new(MasterCollector {
        master: Arc::downgrade(master),
    }));
    registry
}

/// Reads the master's state on every scrape.
#[derive(Debug)]
struct MasterCollector {
    master: std::sync::Weak<Master>,
}

impl Collector for MasterCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(master) = self.master.upgrade() else {
            return Ok(());
        };
        let elected = i64::from(master.raft.is_leader());
        let s = master.state();
        let m = &s.metrics;
        gauges(
            &mut e,
            "meseta_master_elected",
            "1 when this master is the leader",
            &one(elected),
        )?;
        let connected = s.agents.values().filter(|a| a.sender.is_some()).count() as i64;
        let agents = [
            (vec![("state", "connected".to_string())], connected),
            (
                vec![("state", "disconnected".to_string())],
                s.agents.len() as i64 - connected,
            ),
        ];
        gauges(
            &mut e,
            "meseta_master_agents",
            "Agents registered with the master, by connection state",
            &agents,
        )?;
        let active = s.frameworks.values().filter(|f| f.active()).count() as i64;
        let frameworks = [
            (vec![("state", "active".to_string())], active),
            (
                vec![("state", "inactive".to_string())],
                s.frameworks.len() as i64 - active,
            ),
        ];
        gauges(
            &mut e,
            "meseta_master_frameworks",
            "Frameworks registered with the master, by state",
            &frameworks,
        )?;
        let mut by_state: BTreeMap<&'static str, i64> = BTreeMap::new();
        for t in s.agents.values().flat_map(|a| a.tasks.values()) {
            *by_state.entry(t.state.mesos_name()).or_default() += 1;
        }
        let tasks: Vec<_> = by_state
            .into_iter()
            .map(|(state, n)| (vec![("state", state.to_string())], n))
            .collect();
        gauges(
            &mut e,
            "meseta_master_tasks",
            "Tasks the master knows on its agents, by Mesos state",
            &tasks,
        )?;
        gauges(
            &mut e,
            "meseta_master_offers_outstanding",
            "Offers sent and not yet accepted, declined or rescinded",
            &one(s.offers.len() as i64),
        )?;
        let counters: [(&str, &str, u64); 7] = [
            (
                "meseta_master_offers_sent",
                "Offers sent to frameworks",
                m.offers_sent,
            ),
            (
                "meseta_master_offers_declined",
                "Offers frameworks declined",
                m.offers_declined,
            ),
            (
                "meseta_master_offers_rescinded",
                "Offers the master rescinded",
                m.offers_rescinded,
            ),
            (
                "meseta_master_tasks_launched",
                "Tasks launched through accepted offers",
                m.tasks_launched,
            ),
            (
                "meseta_master_task_status_updates",
                "Task status updates received from agents",
                m.status_updates,
            ),
            (
                "meseta_master_invalid_task_status_updates",
                "Task status updates dropped as invalid",
                m.invalid_status_updates,
            ),
            (
                "meseta_allocator_cycles",
                "DRF allocation cycles run",
                m.allocation_runs,
            ),
        ];
        for (name, help, value) in counters {
            counter(&mut e, name, help, value)?;
        }
        Ok(())
    }
}
