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
                _ = tick.tick() => shared.engine().tick(),
            };
            execute(&shared, actions).await;
        }
    }
}

async fn handle_event(shared: &Shared, ev: SchedulerEvent) -> Vec<Action> {
    match ev {
        SchedulerEvent::Subscribed { framework_id, master } => {
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
            } => client.accept(std::slice::from_ref(offer_id), tasks.clone(), *refuse_seconds).await,
            Action::Decline {
                offer_id,
                refuse_seconds,
            } => client.decline(std::slice::from_ref(offer_id), *refuse_seconds).await,
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
