//! The agent's one outbound gRPC stream to the leading master: register
//! (or re-register with the tasks it runs), heartbeats and status updates
//! up; launches, kills and acknowledgements down. Follows the leader named
//! by a follower master and reconnects with backoff.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meseta_proto::v1 as pb;
use pb::agent_service_client::AgentServiceClient;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Endpoint;

use crate::status_updates::UpdateSink;
use crate::{tasks, Agent};

const HEARTBEAT: Duration = Duration::from_secs(5);

/// The sending half of the current master stream, if connected.
#[derive(Default)]
pub(crate) struct Link {
    tx: Mutex<Option<UnboundedSender<pb::AgentMessage>>>,
}

impl Link {
    /// Send on the current stream; false when disconnected (the caller
    /// keeps the message and resends it later).
    pub(crate) fn send(&self, message: pb::agent_message::Message) -> bool {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(tx) => tx
                .send(pb::AgentMessage {
                    message: Some(message),
                })
                .is_ok(),
            None => false,
        }
    }

    pub(crate) fn connected(&self) -> bool {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    fn set(&self, tx: Option<UnboundedSender<pb::AgentMessage>>) {
        *self.tx.lock().unwrap_or_else(|p| p.into_inner()) = tx;
    }
}

impl UpdateSink for Link {
    fn send_update(&self, framework_id: &str, status: &pb::TaskStatus) -> bool {
        self.send(tasks::status_update(framework_id, status.clone()))
    }
}

enum SessionEnd {
    /// The master we reached is not the leader; it named this one.
    NotLeader(Option<String>),
    Failed(String),
    Closed,
    /// The master removed this agent and told it to shut down.
    Shutdown(String),
}

/// Keep a session with the leading master open, forever.
pub(crate) async fn run(agent: Arc<Agent>) {
    let masters = agent.config.masters.clone();
    let mut next = 0usize;
    let mut hint: Option<String> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let target = hint.take().unwrap_or_else(|| {
            let m = masters[next % masters.len()].clone();
            next += 1;
            m
        });
        match session(&agent, &target).await {
            SessionEnd::NotLeader(Some(leader)) if leader != target => {
                tracing::debug!(master = %target, leader = %leader, "following the leader");
                hint = Some(leader);
                continue;
            }
            SessionEnd::NotLeader(_) => {
                tracing::debug!(master = %target, "master has no leader yet");
            }
            SessionEnd::Failed(e) => {
                tracing::debug!(master = %target, error = %e, "cannot reach master");
            }
            SessionEnd::Closed => {
                tracing::warn!(master = %target, "lost the master connection; reconnecting");
                backoff = Duration::from_millis(100);
            }
            SessionEnd::Shutdown(reason) => {
                // Mesos: an agent the master removed kills its tasks; it
                // then starts over as a new agent.
                tracing::error!(master = %target, reason = %reason, "the master told this agent to shut down; killing every task and registering again as a new agent");
                tasks::kill_all(&agent).await;
                *agent.agent_id.lock().unwrap_or_else(|p| p.into_inner()) = None;
                let cleared = match agent.checkpoint.set_agent_id("") {
                    Ok(()) => agent.checkpoint.flush().await,
                    Err(e) => Err(e),
                };
                if let Err(e) = cleared {
                    tracing::warn!(error = %e, "could not clear the checkpointed agent id");
                }
                backoff = Duration::from_millis(100);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn session(agent: &Arc<Agent>, target: &str) -> SessionEnd {
    let endpoint = match Endpoint::from_shared(format!("http://{target}")) {
        Ok(e) => e
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20)),
        Err(e) => return SessionEnd::Failed(e.to_string()),
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return SessionEnd::Failed(e.to_string()),
    };
    let mut client = AgentServiceClient::new(channel)
        .max_decoding_message_size(meseta_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(meseta_proto::MAX_MESSAGE_BYTES);
    let (tx, rx) = unbounded_channel();
    let register = pb::agent_message::Register {
        agent_info: Some(agent.info()),
        tasks: agent.tasks().running_tasks(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let _ = tx.send(pb::AgentMessage {
        message: Some(pb::agent_message::Message::Register(register)),
    });
    let mut inbound = match client.session(UnboundedReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(status) if status.code() == tonic::Code::Unavailable => {
            let leader = meseta_proto::leader_hint(&status);
            return SessionEnd::NotLeader(leader);
        }
        Err(status) => return SessionEnd::Failed(status.to_string()),
    };
    let mut heartbeat: Option<tokio::task::JoinHandle<()>> = None;
    let end = loop {
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break SessionEnd::Closed,
            Err(status) if status.code() == tonic::Code::Unavailable => {
                let leader = meseta_proto::leader_hint(&status);
                break SessionEnd::NotLeader(leader);
            }
            Err(_) => break SessionEnd::Closed,
        };
        use pb::master_message::Message as M;
        match msg.message {
            Some(M::Registered(r)) => {
                let id = r.agent_id.map(|a| a.value).unwrap_or_default();
                let previous = agent.agent_id();
                *agent.agent_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
                if previous.as_deref() != Some(id.as_str()) {
                    let saved = agent.checkpoint.set_agent_id(&id);
                    let flushed = match saved {
                        Ok(()) => agent.checkpoint.flush().await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = flushed {
                        tracing::warn!(error = %e, "could not checkpoint the agent id");
                    }
                }
                agent.link.set(Some(tx.clone()));
                tracing::info!(master = %target, agent_id = %id, tasks = agent.tasks().tasks.len(), "registered with the leading master");
                agent.updates.resend_all();
                let hb_tx = tx.clone();
                // Heartbeat as often as the master pings (it marks an agent
                // unreachable after a few silent intervals).
                let every = if r.heartbeat_interval_seconds.is_finite()
                    && r.heartbeat_interval_seconds > 0.0
                {
                    Duration::from_secs_f64(r.heartbeat_interval_seconds.clamp(0.1, 60.0))
                        .min(HEARTBEAT)
                } else {
                    HEARTBEAT
                };
                heartbeat = Some(tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        let beat = pb::AgentMessage {
                            message: Some(pb::agent_message::Message::Heartbeat(
                                pb::agent_message::Heartbeat {},
                            )),
                        };
                        if hb_tx.send(beat).is_err() {
                            return;
                        }
                    }
                }));
            }
            Some(M::RunTask(run)) => match run.task {
                Some(task) => tasks::launch(agent.clone(), run.framework, task),
                None => tracing::warn!("RunTask without a task"),
            },
            Some(M::KillTask(kill)) => {
                let task_id = kill.task_id.map(|t| t.value).unwrap_or_default();
                tasks::kill(agent.clone(), &task_id, kill.kill_policy);
            }
            Some(M::Acknowledgement(ack)) => {
                let task_id = ack.task_id.map(|t| t.value).unwrap_or_default();
                tasks::acknowledge(agent, &task_id, &ack.uuid);
            }
            Some(M::ShutdownFramework(s)) => {
                let fid = s.framework_id.map(|f| f.value).unwrap_or_default();
                tasks::kill_framework(agent.clone(), &fid);
            }
            Some(M::Shutdown(s)) => break SessionEnd::Shutdown(s.reason),
            Some(M::Ping(_)) => {
                let _ = tx.send(pb::AgentMessage {
                    message: Some(pb::agent_message::Message::Heartbeat(
                        pb::agent_message::Heartbeat {},
                    )),
                });
            }
            None => {}
        }
    };
    agent.link.set(None);
    if let Some(h) = heartbeat {
        h.abort();
    }
    end
}
