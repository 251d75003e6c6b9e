//! The gRPC faces of the master: the agent stream and the framework API
//! (the twin of the Mesos v1 scheduler API).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use meseta_core::ids::new_id;
use meseta_core::task::task_state_of;
use meseta_core::{Resources, TaskStateExt};
use meseta_proto::v1 as pb;
use pb::agent_service_server::{AgentService, AgentServiceServer};
use pb::scheduler_server::{Scheduler, SchedulerServer};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::registry::{AgentRecord, FrameworkRecord, RegistryCommand};
use crate::state::now_secs;
use crate::Master;

/// How often frameworks get a HEARTBEAT event.
const FRAMEWORK_HEARTBEAT: Duration = Duration::from_secs(15);

/// Every gRPC service of the master, as one axum router.
pub(crate) fn routes(master: Arc<Master>) -> axum::Router {
    tonic::service::Routes::new(AgentServiceServer::new(AgentApi(master.clone())))
        .add_service(SchedulerServer::new(FrameworkApi(master.clone())))
        .add_service(crate::kv::service(master.clone()))
        .add_service(master.raft.raft_service())
        .into_axum_router()
}

/// A stream that runs a closure when the client goes away (the response
/// stream is dropped).
pub(crate) struct Guarded<T> {
    inner: UnboundedReceiverStream<T>,
    on_drop: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl<T> Stream for Guarded<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl<T> Drop for Guarded<T> {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

struct AgentApi(Arc<Master>);

#[tonic::async_trait]
impl AgentService for AgentApi {
    type SessionStream = Guarded<Result<pb::MasterMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let master = self.0.clone();
        master.ensure_leader()?;
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream closed before REGISTER"))?;
        let Some(pb::agent_message::Message::Register(register)) = first.message else {
            return Err(Status::invalid_argument(
                "the first message of an agent session must be REGISTER",
            ));
        };
        let info = register
            .agent_info
            .ok_or_else(|| Status::invalid_argument("REGISTER without agent_info"))?;
        let total = Resources::from_proto(&info.resources)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let reregistering = info.id.as_ref().is_some_and(|i| !i.value.is_empty());
        let id = info
            .id
            .as_ref()
            .map(|i| i.value.clone())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| new_id("agent"));
        let known = master
            .raft
            .state()
            .lock()
            .map(|r| r.agents.get(&id).cloned())
            .ok()
            .flatten();
        let record = AgentRecord {
            id: id.clone(),
            hostname: info.hostname.clone(),
            address: info.address.clone(),
            resources: total.to_string(),
            registered_at: known
                .as_ref()
                .map(|k| k.registered_at)
                .unwrap_or_else(now_secs),
        };
        if known.as_ref() != Some(&record) {
            master
                .propose(RegistryCommand::AdmitAgent(record))
                .await
                .map_err(|e| e.to_status())?;
        }
        let (tx, rx) = unbounded_channel();
        let session = {
            let mut s = master.state();
            let session = s.new_session();
            s.attach_agent(&id, &info, total.clone(), &register.tasks, tx, session);
            session
        };
        tracing::info!(
            agent = %id,
            hostname = %info.hostname,
            address = %info.address,
            resources = %total,
            tasks = register.tasks.len(),
            "agent {}",
            if reregistering { "re-registered" } else { "registered" }
        );
        master.allocate.notify_one();
        let reader_master = master.clone();
        let reader_id = id.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(msg)) => handle_agent_message(&reader_master, &reader_id, session, msg),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(agent = %reader_id, error = %e, "agent stream error");
                        break;
                    }
                }
            }
            reader_master.state().detach_agent(&reader_id, session);
            tracing::warn!(agent = %reader_id, "agent disconnected");
        });
        Ok(Response::new(Guarded {
            inner: UnboundedReceiverStream::new(rx),
            on_drop: None,
        }))
    }
}

fn handle_agent_message(master: &Master, agent_id: &str, session: u64, msg: pb::AgentMessage) {
    match msg.message {
        Some(pb::agent_message::Message::Heartbeat(_)) => {
            master.state().heartbeat(agent_id, session)
        }
        Some(pb::agent_message::Message::StatusUpdate(update)) => {
            let Some(status) = update.status else { return };
            let framework_id = update.framework_id.map(|f| f.value).unwrap_or_default();
            let terminal = task_state_of(status.state).is_terminal();
            {
                let mut s = master.state();
                s.heartbeat(agent_id, session);
                s.status_update(agent_id, &framework_id, status);
            }
            if terminal {
                master.allocate.notify_one();
            }
        }
        Some(pb::agent_message::Message::Register(_)) => {
            tracing::warn!(agent = %agent_id, "ignoring a second REGISTER on an open session");
        }
        None => {}
    }
}

struct FrameworkApi(Arc<Master>);

#[tonic::async_trait]
impl Scheduler for FrameworkApi {
    type SubscribeStream = Guarded<Result<pb::Event, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::Call>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let master = self.0.clone();
        master.ensure_leader()?;
        let call = request.into_inner();
        let Some(pb::call::Call::Subscribe(subscribe)) = call.call else {
            return Err(Status::invalid_argument(
                "Subscribe takes a call carrying `subscribe`",
            ));
        };
        let mut info = subscribe
            .framework_info
            .ok_or_else(|| Status::invalid_argument("SUBSCRIBE without framework_info"))?;
        if info.name.is_empty() {
            return Err(Status::invalid_argument(
                "framework_info.name must not be empty",
            ));
        }
        if info.role.is_empty() {
            info.role = "*".into();
        }
        let given = call
            .framework_id
            .map(|f| f.value)
            .or_else(|| info.id.as_ref().map(|f| f.value.clone()))
            .filter(|v| !v.is_empty());
        let failover = given.is_some();
        let id = given.unwrap_or_else(|| new_id("framework"));
        info.id = Some(pb::FrameworkId { value: id.clone() });
        let record = FrameworkRecord {
            id: id.clone(),
            name: info.name.clone(),
            role: info.role.clone(),
            principal: info.principal.clone(),
            failover_timeout: info.failover_timeout,
            registered_at: now_secs(),
        };
        master
            .propose(RegistryCommand::AddFramework(record))
            .await
            .map_err(|e| e.to_status())?;
        let (tx, rx) = unbounded_channel();
        let _ = tx.send(Ok(event(pb::event::Event::Subscribed(
            pb::event::Subscribed {
                framework_id: Some(pb::FrameworkId { value: id.clone() }),
                heartbeat_interval_seconds: FRAMEWORK_HEARTBEAT.as_secs_f64(),
                master_address: master.address.clone(),
            },
        ))));
        let session = {
            let mut s = master.state();
            let session = s.new_session();
            s.attach_framework(
                &id,
                info.clone(),
                tx.clone(),
                session,
                !subscribe.suppressed_roles.is_empty(),
            );
            session
        };
        tracing::info!(framework = %id, name = %info.name, role = %info.role, "framework {}", if failover { "re-subscribed" } else { "subscribed" });
        spawn_heartbeats(tx);
        master.allocate.notify_one();
        let drop_master = master.clone();
        let drop_id = id.clone();
        Ok(Response::new(Guarded {
            inner: UnboundedReceiverStream::new(rx),
            on_drop: Some(Box::new(move || {
                drop_master.state().detach_framework(&drop_id, session);
                tracing::info!(framework = %drop_id, "framework disconnected");
                drop_master.allocate.notify_one();
            })),
        }))
    }

    async fn call(&self, request: Request<pb::Call>) -> Result<Response<pb::CallResponse>, Status> {
        let master = &self.0;
        master.ensure_leader()?;
        let call = request.into_inner();
        let framework_id = call
            .framework_id
            .map(|f| f.value)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Status::invalid_argument("call without framework_id"))?;
        if !master.state().frameworks.contains_key(&framework_id) {
            return Err(Status::failed_precondition(format!(
                "framework {framework_id} is not subscribed"
            )));
        }
        use pb::call::Call as C;
        match call.call {
            None => return Err(Status::invalid_argument("empty call")),
            Some(C::Subscribe(_)) => {
                return Err(Status::invalid_argument(
                    "SUBSCRIBE goes through the Subscribe method",
                ))
            }
            Some(C::Accept(accept)) => {
                master.state().accept(&framework_id, accept);
                master.allocate.notify_one();
            }
            Some(C::Decline(decline)) => {
                master.state().decline(&framework_id, &decline);
                master.allocate.notify_one();
            }
            Some(C::Revive(_)) => {
                master.state().revive(&framework_id);
                master.allocate.notify_one();
            }
            Some(C::Suppress(_)) => master.state().suppress(&framework_id),
            Some(C::Kill(kill)) => master.state().kill(&framework_id, &kill),
            Some(C::Acknowledge(ack)) => master.state().acknowledge(&framework_id, &ack),
            Some(C::Reconcile(rec)) => {
                if let Some(rec) = without_reregistering(master, rec) {
                    master.state().reconcile(&framework_id, &rec)
                }
            }
            Some(C::Teardown(_)) => {
                master.state().teardown(&framework_id);
                master
                    .propose(RegistryCommand::RemoveFramework {
                        id: framework_id.clone(),
                    })
                    .await
                    .map_err(|e| e.to_status())?;
                tracing::info!(framework = %framework_id, "framework torn down");
                master.allocate.notify_one();
            }
            Some(C::Shutdown(_)) | Some(C::Message(_)) => {
                return Err(Status::unimplemented("meseta runs tasks without custom executors; SHUTDOWN and MESSAGE have no executor to reach"));
            }
            Some(C::Request(_)) => {
                // Mesos ignores REQUEST in its built-in allocator; so do we.
            }
        }
        Ok(Response::new(pb::CallResponse {}))
    }
}

/// Explicit reconciliation after a failover: tasks of agents that are in
/// the registry but have not re-registered with this leader yet get no
/// answer (as in Mesos), instead of TASK_LOST, so a framework that
/// re-subscribes before the agents come back keeps its running tasks. Those
/// tasks are reported when their agent re-registers, or TASK_UNREACHABLE
/// when it does not come back in time. `None` when nothing is left to ask
/// (an empty list would mean "every task").
fn without_reregistering(
    master: &Master,
    mut rec: pb::call::Reconcile,
) -> Option<pb::call::Reconcile> {
    if rec.tasks.is_empty() {
        return Some(rec);
    }
    let admitted: std::collections::HashSet<String> = master
        .raft
        .state()
        .lock()
        .map(|r| r.agents.keys().cloned().collect())
        .unwrap_or_default();
    let before = rec.tasks.len();
    {
        let s = master.state();
        rec.tasks.retain(|t| {
            let agent = t.agent_id.as_ref().map(|a| a.value.as_str()).unwrap_or("");
            !admitted.contains(agent) || s.agents.contains_key(agent)
        });
    }
    if rec.tasks.len() < before {
        tracing::info!(
            skipped = before - rec.tasks.len(),
            "reconciliation skips tasks of agents that have not re-registered yet"
        );
    }
    (!rec.tasks.is_empty()).then_some(rec)
}

fn event(e: pb::event::Event) -> pb::Event {
    pb::Event { event: Some(e) }
}

fn spawn_heartbeats(tx: UnboundedSender<Result<pb::Event, Status>>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(FRAMEWORK_HEARTBEAT).await;
            if tx
                .send(Ok(event(pb::event::Event::Heartbeat(
                    pb::event::Heartbeat {},
                ))))
                .is_err()
            {
                return;
            }
        }
    });
}
