//! Carries the engine's decisions out against the master and feeds the
//! master's events back into the engine.

use std::sync::Arc;
use std::time::Duration;

use meseta_sdk::SchedulerEvent;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::{Action, ReadinessOutcome, ReadinessProbe, ReadinessResponse};
use crate::Shared;

pub(crate) struct Driver {
    pub(crate) sdk_events: UnboundedReceiver<SchedulerEvent>,
    pub(crate) actions: UnboundedReceiver<Vec<Action>>,
}

/// At most this many more master events are handled before the calls
/// they decided are made.
const EVENT_BATCH: usize = 255;

/// The most of a readiness answer's body kept (`lastResponse.body`).
const READINESS_BODY_LIMIT: usize = 4096;

impl Driver {
    pub(crate) async fn run(mut self, shared: Arc<Shared>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ticks = 0u64;
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
        let http = readiness_client();
        loop {
            let actions = tokio::select! {
                r = ready_rx.recv() => match r {
                    Some((probe, outcome)) => {
                        let probe: ReadinessProbe = probe;
                        shared.engine().readiness_result(&probe, outcome)
                    }
                    None => Vec::new(),
                },
                ev = self.sdk_events.recv() => match ev {
                    Some(ev) => {
                        // Take what else is waiting too (status updates come
                        // in bursts): one round of calls for all of them.
                        let mut actions = handle_event(&shared, ev).await;
                        for _ in 0..EVENT_BATCH {
                            match self.sdk_events.try_recv() {
                                Ok(ev) => actions.extend(handle_event(&shared, ev).await),
                                Err(_) => break,
                            }
                        }
                        actions
                    }
                    None => return,
                },
                acts = self.actions.recv() => match acts {
                    Some(a) => a,
                    None => return,
                },
                _ = tick.tick() => {
                    let actions = shared.engine().tick();
                    let probes = shared.engine().readiness_probes();
                    for probe in probes {
                        tokio::spawn(run_probe(http.clone(), probe, ready_tx.clone()));
                    }
                    sync_state(&shared).await;
                    ticks += 1;
                    if ticks.is_multiple_of(UNCONFIRMED_RECONCILE_TICKS) {
                        reconcile_unconfirmed(&shared).await;
                    }
                    actions
                }
            };
            let actions = persist_launches(&shared, actions).await;
            shared.engine().flush_events();
            execute(&shared, actions).await;
        }
    }
}

/// Every this many ticks, tasks not known to run are reconciled again.
const UNCONFIRMED_RECONCILE_TICKS: u64 = 3;

/// A task not running that has heard nothing for this long is reconciled.
const UNCONFIRMED_AFTER: Duration = Duration::from_secs(10);

/// Ask the master again about tasks this scheduler has no running status
/// for and no news of lately (tasks loaded from the store after a restart,
/// whose agent had not re-registered with the master when the scheduler
/// subscribed; launches that went quiet). Launches in progress are left
/// alone: reconciling a thousand staging tasks would double their updates.
async fn reconcile_unconfirmed(shared: &Shared) {
    let unconfirmed: Vec<(String, Option<String>)> = shared
        .engine()
        .tasks()
        .filter(|t| t.kill_sent.is_none() && t.state != meseta_proto::v1::TaskState::TaskRunning)
        .filter(|t| {
            t.last_update
                .is_none_or(|at| at.elapsed() > UNCONFIRMED_AFTER)
        })
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
                let ids: Vec<String> = tasks
                    .iter()
                    .filter_map(|t| t.task_id.as_ref().map(|i| i.value.clone()))
                    .collect();
                engine.forget_tasks(&ids);
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
                    .tasks()
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
        SchedulerEvent::InverseOffers(inverse) => {
            let mut engine = shared.engine();
            let mut actions = Vec::new();
            for o in inverse {
                let agent = o.agent_id.map(|a| a.value).unwrap_or_default();
                actions.extend(engine.drain_agent(&agent));
            }
            actions
        }
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
    // Acknowledgements are independent of each other and of the rest: send
    // them together, not one round trip after another.
    let (acks, actions): (Vec<Action>, Vec<Action>) = actions
        .into_iter()
        .partition(|a| matches!(a, Action::Acknowledge(_)));
    let acks = futures::future::join_all(acks.into_iter().map(|a| async move {
        if let Action::Acknowledge(status) = &a {
            if let Err(e) = client.acknowledge(status).await {
                tracing::debug!(error = %e, "acknowledgement failed");
            }
        }
    }));
    let rest = async {
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
    };
    futures::future::join(acks, rest).await;
}

/// The client readiness checks use: no redirects followed, and HTTPS
/// without certificate verification (tasks serve self-signed
/// certificates; the check is about the task answering).
pub(crate) fn readiness_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap_or_default()
}

/// One readiness check: `GET` the task's URL; the answer (or None) goes
/// back to the driver loop.
pub(crate) async fn run_probe(
    http: reqwest::Client,
    probe: ReadinessProbe,
    results: tokio::sync::mpsc::UnboundedSender<(ReadinessProbe, ReadinessOutcome)>,
) {
    let answer = http.get(&probe.url).timeout(probe.timeout).send().await;
    let response = match answer {
        Ok(r) => {
            let status = r.status().as_u16();
            let content_type = r
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = match tokio::time::timeout(probe.timeout, r.bytes()).await {
                Ok(Ok(b)) => {
                    String::from_utf8_lossy(&b[..b.len().min(READINESS_BODY_LIMIT)]).into_owned()
                }
                _ => String::new(),
            };
            Some(ReadinessResponse {
                status,
                content_type,
                body,
            })
        }
        Err(e) => {
            tracing::debug!(task = %probe.task_id, url = %probe.url, error = %e, "readiness check failed");
            None
        }
    };
    let outcome = ReadinessOutcome {
        task_id: probe.task_id.clone(),
        response,
    };
    let _ = results.send((probe, outcome));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An HTTPS server with a self-signed certificate answering `code`.
    async fn https_server(code: u16) -> u16 {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(s).await {
                        let mut buf = [0u8; 2048];
                        let _ = tls.read(&mut buf).await;
                        let answer = format!(
                            "HTTP/1.1 {code} X\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        );
                        let _ = tls.write_all(answer.as_bytes()).await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn https_readiness_checks_accept_self_signed_certificates() {
        let port = https_server(200).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let probe = ReadinessProbe {
            task_id: "t".into(),
            url: format!("https://127.0.0.1:{port}/ready"),
            timeout: Duration::from_secs(5),
            ready_statuses: vec![200],
        };
        run_probe(readiness_client(), probe, tx).await;
        let (_, outcome) = rx.recv().await.expect("a result");
        let response = outcome.response.expect("an answer");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "ok");
        assert_eq!(response.content_type, "text/plain");
    }
}
