//! The gRPC faces of the master: the agent stream and the framework API
//! (the twin of the Mesos v1 scheduler API). The framework service only
//! translates: every call goes to the call handler (`crate::handler`).

use std::sync::Arc;

use meseta_core::ids::new_id;
use meseta_core::task::task_state_of;
use meseta_core::{Resources, TaskStateExt};
use meseta_proto::v1 as pb;
use pb::agent_service_server::{AgentService, AgentServiceServer};
use pb::scheduler_server::{Scheduler, SchedulerServer};
use tokio::sync::mpsc::unbounded_channel;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::handler::{EventStream, SubscribeRequest};
use crate::registry::{AgentRecord, RegistryCommand};
use crate::state::now_secs;
use crate::Master;

/// Every gRPC service of the master, as one axum router.
pub(crate) fn routes(master: Arc<Master>) -> axum::Router {
    let max = meseta_proto::MAX_MESSAGE_BYTES;
    tonic::service::Routes::new(
        AgentServiceServer::new(AgentApi(master.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    )
    .add_service(
        SchedulerServer::new(FrameworkApi(master.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    )
    .add_service(crate::kv::service(master.clone()))
    .add_service(master.raft.raft_service())
    .into_axum_router()
}

struct AgentApi(Arc<Master>);

/// What the registry says of an agent that opens a session.
struct AgentAdmission {
    known: Option<AgentRecord>,
    gone: Option<crate::registry::GoneRecord>,
    unreachable: bool,
    deactivated: bool,
    drain: Option<crate::registry::DrainRecord>,
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    type SessionStream = EventStream<Result<pb::MasterMessage, Status>>;

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
        let admission = {
            let registry = master.raft.state();
            let r = registry.lock().unwrap_or_else(|p| p.into_inner());
            AgentAdmission {
                known: r.agents.get(&id).cloned(),
                gone: r.gone.get(&id).cloned(),
                unreachable: r.unreachable.contains_key(&id),
                deactivated: r.deactivated.contains(&id),
                drain: r.draining.get(&id).cloned(),
            }
        };
        if let Some(gone) = admission.gone {
            // Mesos: a removed agent that comes back is told to shut down.
            tracing::warn!(agent = %id, hostname = %info.hostname, reason = %gone.reason, "a removed agent tried to re-register; telling it to shut down its tasks");
            let (tx, rx) = unbounded_channel();
            let _ = tx.send(Ok(pb::MasterMessage {
                message: Some(pb::master_message::Message::Shutdown(
                    pb::master_message::Shutdown {
                        reason: format!("agent {id} was removed from the cluster: {}", gone.reason),
                    },
                )),
            }));
            return Ok(Response::new(EventStream::plain(
                UnboundedReceiverStream::new(rx),
            )));
        }
        let known = admission.known;
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
            if admission.deactivated {
                s.deactivate_agent(&id, admission.drain.clone());
            }
            if admission.unreachable {
                s.agent_came_back(&id);
            }
            session
        };
        if admission.unreachable {
            if let Err(e) = master
                .propose(RegistryCommand::MarkAgentReachable { id: id.clone() })
                .await
            {
                tracing::warn!(agent = %id, error = %e, "could not record in the registry that the agent is reachable again");
            }
        }
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
        Ok(Response::new(EventStream::plain(
            UnboundedReceiverStream::new(rx),
        )))
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
    type SubscribeStream = EventStream<Result<pb::Event, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::Call>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let call = request.into_inner();
        let Some(pb::call::Call::Subscribe(subscribe)) = call.call else {
            return Err(Status::invalid_argument(
                "Subscribe takes a call carrying `subscribe`",
            ));
        };
        let info = subscribe
            .framework_info
            .ok_or_else(|| Status::invalid_argument("SUBSCRIBE without framework_info"))?;
        let request = SubscribeRequest {
            framework_id: call.framework_id.map(|f| f.value).filter(|v| !v.is_empty()),
            info,
            suppressed_roles: subscribe.suppressed_roles,
            epoch: call.epoch,
        };
        let subscription = self.0.subscribe(request).await.map_err(|e| e.to_status())?;
        Ok(Response::new(subscription.events))
    }

    async fn call(&self, request: Request<pb::Call>) -> Result<Response<pb::CallResponse>, Status> {
        let call = request.into_inner();
        let framework_id = call.framework_id.map(|f| f.value).unwrap_or_default();
        let epoch = call.epoch;
        let call = call
            .call
            .ok_or_else(|| Status::invalid_argument("empty call"))?;
        self.0
            .framework_call(&framework_id, crate::handler::Caller::Epoch(epoch), call)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::CallResponse {}))
    }
}
