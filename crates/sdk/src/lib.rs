//! Framework client for meseta masters: the gRPC twin of the Mesos v1
//! scheduler API. [`start`] subscribes (following the leader among the
//! masters, re-subscribing with the framework id after a disconnection) and
//! hands events to the framework over a channel; [`SchedulerClient`] sends
//! the calls.
//!
//! The framework must [`SchedulerClient::acknowledge`] every status update
//! that carries a uuid once it has acted on it; the agent resends the update
//! until then.

pub mod kv;
pub mod sandbox;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meseta_proto::v1 as pb;
use pb::scheduler_client::SchedulerClient as GrpcClient;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tonic::transport::{Channel, Endpoint};

pub use kv::{KvClient, KvClientError};
pub use meseta_proto::v1;

/// What the framework is told.
#[derive(Debug, Clone)]
pub enum SchedulerEvent {
    /// Subscribed (or re-subscribed after a failover) with this id.
    Subscribed {
        framework_id: String,
        master: String,
    },
    Offers(Vec<pb::Offer>),
    /// An offer is no longer valid.
    Rescind(String),
    Update(pb::TaskStatus),
    /// The master asks the framework to move its tasks off these agents
    /// (they are being drained): start replacements elsewhere, then kill
    /// the tasks there.
    InverseOffers(Vec<pb::InverseOffer>),
    /// The master ended this subscription (another one took the framework
    /// over). Nothing follows: the client does not re-subscribe.
    Error(String),
    /// The connection to the master was lost; outstanding offers are void.
    /// A new `Subscribed` follows when the leader is reached again.
    Disconnected,
}

/// Errors of the framework client.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error("not subscribed to a master")]
    NotConnected,
    #[error("master rejected the call: {0}")]
    Rejected(#[from] tonic::Status),
}

struct Connection {
    master: String,
    client: GrpcClient<Channel>,
    framework_id: String,
}

struct Inner {
    connection: Mutex<Option<Connection>>,
    framework_id: Mutex<Option<String>>,
    /// Fencing epoch carried on every call (`Call.epoch`; 0: none).
    epoch: u64,
}

/// Sends calls for a subscribed framework. Cheap to clone.
#[derive(Clone)]
pub struct SchedulerClient {
    inner: Arc<Inner>,
}

/// Subscribe `info` to the leading master among `masters` and keep the
/// subscription alive. `framework_id` re-subscribes an existing framework
/// (its tasks keep running). `suppressed` subscribes without wanting offers.
pub fn start(
    masters: Vec<String>,
    info: pb::FrameworkInfo,
    framework_id: Option<String>,
    suppressed: bool,
) -> (SchedulerClient, UnboundedReceiver<SchedulerEvent>) {
    start_fenced(masters, info, framework_id, suppressed, 0)
}

/// [`start`] for one of several instances of a framework: every call and
/// SUBSCRIBE carries `epoch` (e.g. the instance's leader lease id, which
/// only grows). The master refuses both from an epoch lower than the
/// highest it has seen for the framework, so an instance that lost its
/// leadership cannot launch or kill once a newer one subscribed.
pub fn start_fenced(
    masters: Vec<String>,
    info: pb::FrameworkInfo,
    framework_id: Option<String>,
    suppressed: bool,
    epoch: u64,
) -> (SchedulerClient, UnboundedReceiver<SchedulerEvent>) {
    let inner = Arc::new(Inner {
        connection: Mutex::new(None),
        framework_id: Mutex::new(framework_id),
        epoch,
    });
    let (tx, rx) = unbounded_channel();
    tokio::spawn(subscription_loop(
        inner.clone(),
        masters,
        info,
        suppressed,
        tx,
    ));
    (SchedulerClient { inner }, rx)
}

async fn connect(target: &str) -> Result<GrpcClient<Channel>, String> {
    let endpoint = Endpoint::from_shared(format!("http://{target}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    Ok(GrpcClient::new(channel)
        .max_decoding_message_size(meseta_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(meseta_proto::MAX_MESSAGE_BYTES))
}

async fn subscription_loop(
    inner: Arc<Inner>,
    masters: Vec<String>,
    info: pb::FrameworkInfo,
    suppressed: bool,
    events: UnboundedSender<SchedulerEvent>,
) {
    if masters.is_empty() {
        let _ = events.send(SchedulerEvent::Error("no masters given".into()));
        return;
    }
    let mut next = 0usize;
    let mut hint: Option<String> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        if events.is_closed() {
            return;
        }
        let target = hint.take().unwrap_or_else(|| {
            let m = masters[next % masters.len()].clone();
            next += 1;
            m
        });
        let mut client = match connect(&target).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(master = %target, error = %e, "cannot reach master");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let framework_id = inner
            .framework_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let call = pb::Call {
            framework_id: framework_id.clone().map(|value| pb::FrameworkId { value }),
            epoch: inner.epoch,
            call: Some(pb::call::Call::Subscribe(pb::call::Subscribe {
                framework_info: Some(pb::FrameworkInfo {
                    id: framework_id.map(|value| pb::FrameworkId { value }),
                    ..info.clone()
                }),
                suppressed_roles: if suppressed {
                    vec![info.role.clone()]
                } else {
                    Vec::new()
                },
            })),
        };
        let mut stream = match client.subscribe(call).await {
            Ok(r) => r.into_inner(),
            Err(status) if status.code() == tonic::Code::PermissionDenied => {
                // Fenced: a newer instance of this framework subscribed.
                tracing::warn!(master = %target, error = %status.message(), "the master refused this connection as stale; not subscribing again");
                let _ = events.send(SchedulerEvent::Error(status.message().to_string()));
                return;
            }
            Err(status) => {
                match meseta_proto::leader_hint(&status) {
                    Some(l) if status.code() == tonic::Code::Unavailable && l != target => {
                        hint = Some(l)
                    }
                    _ => {
                        tracing::debug!(master = %target, error = %status, "subscribe failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
                continue;
            }
        };
        let mut heartbeat = Duration::from_secs(15);
        loop {
            // Three missed heartbeats mean the master is gone.
            let msg = match tokio::time::timeout(heartbeat * 3, stream.message()).await {
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) | Ok(Err(_)) => break,
                Err(_) => {
                    tracing::warn!(master = %target, "no heartbeat from the master; reconnecting");
                    break;
                }
            };
            use pb::event::Event as E;
            let out = match msg.event {
                Some(E::Subscribed(s)) => {
                    let id = s.framework_id.map(|f| f.value).unwrap_or_default();
                    if s.heartbeat_interval_seconds.is_finite()
                        && s.heartbeat_interval_seconds > 0.0
                    {
                        heartbeat = Duration::from_secs_f64(s.heartbeat_interval_seconds);
                    }
                    *inner.framework_id.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(id.clone());
                    *inner.connection.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(Connection {
                            master: target.clone(),
                            client: client.clone(),
                            framework_id: id.clone(),
                        });
                    backoff = Duration::from_millis(100);
                    tracing::info!(master = %target, framework_id = %id, "subscribed");
                    Some(SchedulerEvent::Subscribed {
                        framework_id: id,
                        master: target.clone(),
                    })
                }
                Some(E::Offers(o)) => Some(SchedulerEvent::Offers(o.offers)),
                Some(E::Rescind(r)) => r.offer_id.map(|o| SchedulerEvent::Rescind(o.value)),
                Some(E::Update(u)) => u.status.map(SchedulerEvent::Update),
                Some(E::InverseOffers(o)) => Some(SchedulerEvent::InverseOffers(o.inverse_offers)),
                Some(E::Error(e)) => {
                    // Mesos' contract: after ERROR (another subscription
                    // took this framework over) the scheduler must not
                    // re-subscribe, or two instances would take the
                    // framework from each other in turn.
                    tracing::warn!(master = %target, message = %e.message, "the master ended this subscription; not re-subscribing");
                    *inner.connection.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    let _ = events.send(SchedulerEvent::Error(e.message));
                    return;
                }
                Some(E::Failure(_)) | Some(E::Message(_)) | Some(E::Heartbeat(_)) | None => None,
            };
            if let Some(ev) = out {
                if events.send(ev).is_err() {
                    return;
                }
            }
        }
        *inner.connection.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if events.send(SchedulerEvent::Disconnected).is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
    }
}

fn ids<T>(values: &[String], make: impl Fn(String) -> T) -> Vec<T> {
    values.iter().cloned().map(make).collect()
}

impl SchedulerClient {
    /// The framework id, once subscribed.
    pub fn framework_id(&self) -> Option<String> {
        self.inner
            .framework_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `host:port` of the master this framework is subscribed to.
    pub fn master(&self) -> Option<String> {
        self.inner
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.master.clone())
    }

    async fn call(&self, call: pb::call::Call) -> Result<(), SdkError> {
        let (mut client, framework_id) = {
            let guard = self
                .inner
                .connection
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let c = guard.as_ref().ok_or(SdkError::NotConnected)?;
            (c.client.clone(), c.framework_id.clone())
        };
        client
            .call(pb::Call {
                framework_id: Some(pb::FrameworkId {
                    value: framework_id,
                }),
                epoch: self.inner.epoch,
                call: Some(call),
            })
            .await?;
        Ok(())
    }

    /// ACCEPT offers, launching `tasks`; what is left is refused for
    /// `refuse_seconds`.
    pub async fn accept(
        &self,
        offer_ids: &[String],
        tasks: Vec<pb::TaskInfo>,
        refuse_seconds: f64,
    ) -> Result<(), SdkError> {
        self.call(pb::call::Call::Accept(pb::call::Accept {
            offer_ids: ids(offer_ids, |value| pb::OfferId { value }),
            operations: vec![pb::offer::Operation {
                operation: Some(pb::offer::operation::Operation::Launch(
                    pb::offer::operation::Launch { task_infos: tasks },
                )),
            }],
            filters: Some(pb::Filters { refuse_seconds }),
        }))
        .await
    }

    /// DECLINE offers for `refuse_seconds`.
    pub async fn decline(&self, offer_ids: &[String], refuse_seconds: f64) -> Result<(), SdkError> {
        self.call(pb::call::Call::Decline(pb::call::Decline {
            offer_ids: ids(offer_ids, |value| pb::OfferId { value }),
            filters: Some(pb::Filters { refuse_seconds }),
        }))
        .await
    }

    /// REVIVE: clear filters, resume offers.
    pub async fn revive(&self) -> Result<(), SdkError> {
        self.call(pb::call::Call::Revive(pb::call::Revive {
            roles: Vec::new(),
        }))
        .await
    }

    /// SUPPRESS: no offers until REVIVE.
    pub async fn suppress(&self) -> Result<(), SdkError> {
        self.call(pb::call::Call::Suppress(pb::call::Suppress {
            roles: Vec::new(),
        }))
        .await
    }

    /// KILL a task, optionally overriding its grace period.
    pub async fn kill(
        &self,
        task_id: &str,
        agent_id: Option<&str>,
        grace_seconds: Option<f64>,
    ) -> Result<(), SdkError> {
        self.call(pb::call::Call::Kill(pb::call::Kill {
            task_id: Some(pb::TaskId {
                value: task_id.to_string(),
            }),
            agent_id: agent_id.map(|a| pb::AgentId {
                value: a.to_string(),
            }),
            kill_policy: grace_seconds.map(|g| pb::KillPolicy {
                grace_period_seconds: g,
            }),
        }))
        .await
    }

    /// ACKNOWLEDGE a status update; a no-op for updates without uuid.
    pub async fn acknowledge(&self, status: &pb::TaskStatus) -> Result<(), SdkError> {
        if status.uuid.is_empty() {
            return Ok(());
        }
        self.call(pb::call::Call::Acknowledge(pb::call::Acknowledge {
            agent_id: status.agent_id.clone(),
            task_id: status.task_id.clone(),
            uuid: status.uuid.clone(),
        }))
        .await
    }

    /// RECONCILE the given (task id, agent id) pairs, or every task when empty.
    pub async fn reconcile(&self, tasks: &[(String, Option<String>)]) -> Result<(), SdkError> {
        self.call(pb::call::Call::Reconcile(pb::call::Reconcile {
            tasks: tasks
                .iter()
                .map(|(t, a)| pb::call::reconcile::Task {
                    task_id: Some(pb::TaskId { value: t.clone() }),
                    agent_id: a.clone().map(|value| pb::AgentId { value }),
                })
                .collect(),
        }))
        .await
    }

    /// TEARDOWN: kill every task and unregister the framework.
    pub async fn teardown(&self) -> Result<(), SdkError> {
        self.call(pb::call::Call::Teardown(pb::call::Teardown {}))
            .await
    }
}
