//! Carries the engine's decisions out against the master and feeds the
//! master's events back into the engine.

use std::sync::Arc;
use std::time::Duration;

use meseta_sdk::SchedulerEvent;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::Action;
use crate::Shared;

pub(crate) struct Driver {
    pub(crate) sdk_events: UnboundedReceiver<SchedulerEvent>,
    pub(crate) actions: UnboundedReceiver<Vec<Action>>,
}

impl Driver {
    pub(crate) async fn run(mut self, shared: Arc<Shared>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ticks = 0u64;
        loop {
            let actions = tokio::select! {
                ev = self.sdk_events.recv() => match ev {
                    Some(ev) => handle_event(&shared, ev).await,
                    None => return,
                },
                acts = self.actions.recv() => match acts {
                    Some(a) => a,
                    None => return,
                },
                _ = tick.tick() => {
                    let actions = shared.engine().tick();
                    sync_state(&shared).await;
                    ticks += 1;
                    if ticks.is_multiple_of(UNCONFIRMED_RECONCILE_TICKS) {
                        reconcile_unconfirmed(&shared).await;
                    }
                    actions
                }
            };
            let actions = persist_launches(&shared, actions).await;
            execute(&shared, actions).await;
        }
    }
}

/// Every this many ticks, tasks not known to run are reconciled again.
const UNCONFIRMED_RECONCILE_TICKS: u64 = 3;

/// Ask the master again about tasks this scheduler has no running status
/// for (tasks loaded from the store after a restart, whose agent had not
/// re-registered with the master when the scheduler subscribed; tasks whose
/// launch is still staging).
async fn reconcile_unconfirmed(shared: &Shared) {
    let unconfirmed: Vec<(String, Option<String>)> = shared
        .engine()
        .tasks
        .values()
        .filter(|t| t.kill_sent.is_none() && t.state != meseta_proto::v1::TaskState::TaskRunning)
        .map(|t| (t.id.clone(), Some(t.agent_id.clone())))
        .collect();
    if unconfirmed.is_empty() {
        return;
    }
    if let Err(e) = shared.client.reconcile(&unconfirmed).await {
        tracing::debug!(error = %e, "reconciling unconfirmed tasks failed");
    }
}

/// Write the engine's durable state to the KV store (deleted tasks, finished
/// deployments, a new framework id). Failures are retried on the next tick.
async fn sync_state(shared: &Shared) {
    let mut gate = shared.store.lock().await;
    let desired = crate::store::desired(&shared.engine(), shared.store.prefix());
    match gate.sync(desired).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(keys = n, "scheduler state written"),
        Err(e) => tracing::warn!(error = %e, "cannot write the scheduler state; retrying"),
    }
}

/// Tasks are recorded in the KV store before they are launched, so a
/// restarted scheduler knows them. When that write fails, the launch does
/// not happen: the offer is declined and the tasks are forgotten (the
/// engine launches them again from a later offer).
async fn persist_launches(shared: &Shared, actions: Vec<Action>) -> Vec<Action> {
    if !actions.iter().any(|a| matches!(a, Action::Accept { .. })) {
        return actions;
    }
    let mut gate = shared.store.lock().await;
    let desired = crate::store::desired(&shared.engine(), shared.store.prefix());
    let Err(e) = gate.sync(desired).await else {
        return actions;
    };
    tracing::warn!(error = %e, "cannot record new tasks in the masters' store; not launching them");
    let mut engine = shared.engine();
    actions
        .into_iter()
        .map(|a| match a {
            Action::Accept {
                offer_id, tasks, ..
            } => {
                for t in &tasks {
                    if let Some(id) = &t.task_id {
                        engine.tasks.remove(&id.value);
                    }
                }
                Action::Decline {
                    offer_id,
                    refuse_seconds: 1.0,
                }
            }
            other => other,
        })
        .collect()
}

async fn handle_event(shared: &Shared, ev: SchedulerEvent) -> Vec<Action> {
    match ev {
        SchedulerEvent::Subscribed {
            framework_id,
            master,
        } => {
            tracing::info!(framework_id = %framework_id, master = %master, "scheduler subscribed");
            let known: Vec<(String, Option<String>)> = {
                let mut engine = shared.engine();
                engine.subscribed(&framework_id);
                engine
                    .tasks
                    .values()
                    .map(|t| (t.id.clone(), Some(t.agent_id.clone())))
                    .collect()
            };
            if !known.is_empty() {
                if let Err(e) = shared.client.reconcile(&known).await {
                    tracing::warn!(error = %e, "reconciliation failed");
                }
            }
            sync_state(shared).await;
            shared.engine().converge()
        }
        SchedulerEvent::Offers(offers) => shared.engine().offers(offers),
        SchedulerEvent::Rescind(_) => Vec::new(),
        SchedulerEvent::Update(status) => shared.engine().status(status),
        SchedulerEvent::Error(message) => {
            tracing::warn!(%message, "master reported an error");
            Vec::new()
        }
        SchedulerEvent::Disconnected => {
            tracing::warn!("scheduler lost the master; resubscribing");
            shared.engine().disconnected();
            Vec::new()
        }
    }
}

async fn execute(shared: &Shared, actions: Vec<Action>) {
    let client = &shared.client;
    for action in actions {
        let result = match &action {
            Action::Accept {
                offer_id,
                tasks,
                refuse_seconds,
            } => {
                client
                    .accept(
                        std::slice::from_ref(offer_id),
                        tasks.clone(),
                        *refuse_seconds,
                    )
                    .await
            }
            Action::Decline {
                offer_id,
                refuse_seconds,
            } => {
                client
                    .decline(std::slice::from_ref(offer_id), *refuse_seconds)
                    .await
            }
            Action::Kill {
                task_id,
                agent_id,
                grace_seconds,
            } => client.kill(task_id, Some(agent_id), *grace_seconds).await,
            Action::Revive => client.revive().await,
            Action::Suppress => client.suppress().await,
            Action::Acknowledge(status) => client.acknowledge(status).await,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, ?action, "call to the master failed");
        }
    }
}
