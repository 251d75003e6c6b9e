//! The master's call handler: every framework and operator operation,
//! written once, behind both faces. The gRPC services (`grpc.rs`) and the
//! HTTP endpoints (`api/`: Mesos' `/api/v1/scheduler`, `/api/v1` and the
//! JSON endpoints) only translate requests into these calls and render
//! what they return; validation, replication through Raft and the change
//! to [`crate::state::MasterState`] happen here.
//!
//! A call is answered once it has been applied (and, for registry changes,
//! committed). Events that follow from it (offers, status updates) arrive
//! on the framework's [`EventStream`].
//!
//! Authentication and framework principals have their place here when
//! they come: every call passes through [`Master::framework_call`] or one
//! of the operator methods.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use meseta_core::ids::new_id;
use meseta_core::Resources;
use meseta_proto::v1 as pb;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Status;

use crate::error::CallError;
use crate::registry::{FrameworkRecord, RegistryCommand};
use crate::state::now_secs;
use crate::Master;

/// How long a call waits for the leader's lease to be confirmed again.
pub(crate) const LEASE_PATIENCE: Duration = Duration::from_secs(2);

/// How often frameworks get a HEARTBEAT event.
pub(crate) const FRAMEWORK_HEARTBEAT: Duration = Duration::from_secs(15);

/// A framework's event stream: the events the master sends it, in order.
/// Dropping it (the client went away) detaches the framework, which starts
/// its failover timeout.
pub(crate) struct EventStream<T> {
    inner: UnboundedReceiverStream<T>,
    on_drop: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl<T> EventStream<T> {
    /// A stream with nothing to do when dropped.
    pub(crate) fn plain(inner: UnboundedReceiverStream<T>) -> EventStream<T> {
        EventStream {
            inner,
            on_drop: None,
        }
    }
}

impl<T> Stream for EventStream<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl<T> Drop for EventStream<T> {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

/// SUBSCRIBE, in the master's words.
#[derive(Debug, Clone)]
pub(crate) struct SubscribeRequest {
    /// The id to fail over to (from the call or `framework_info.id`).
    pub framework_id: Option<String>,
    pub info: pb::FrameworkInfo,
    /// Roles the framework suppresses from the start.
    pub suppressed_roles: Vec<String>,
    /// Fencing epoch of this connection (`Call.epoch`; 0: not fenced).
    pub epoch: u64,
}

/// Who a framework call comes from, as its face identifies it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Caller<'a> {
    /// HTTP: the `Mesos-Stream-Id` of the subscription.
    Stream(&'a str),
    /// gRPC: the connection's fencing epoch (`Call.epoch`).
    Epoch(u64),
}

/// An accepted subscription.
pub(crate) struct Subscription {
    pub framework_id: String,
    /// Identifies this subscription (`Mesos-Stream-Id` over HTTP).
    pub stream_id: String,
    /// SUBSCRIBED first, then everything else.
    pub events: EventStream<Result<pb::Event, Status>>,
}

impl Master {
    /// Calls are served only by the leader.
    pub(crate) fn leading(&self) -> Result<(), CallError> {
        if self.raft.is_leader() {
            Ok(())
        } else {
            Err(CallError::NotLeader {
                leader: self.leader_address(),
            })
        }
    }

    /// Calls that act on the cluster (offers, launches, kills, drains) are
    /// served only by the leader, and only while a quorum of masters
    /// confirmed its leadership recently (see `crate::fencing`).
    /// A lease that lapsed for a moment (a slow fsync on a loaded host
    /// delays the confirming round) is waited for, up to
    /// [`LEASE_PATIENCE`], before the call is refused.
    pub(crate) async fn acting(&self) -> Result<(), CallError> {
        let deadline = std::time::Instant::now() + LEASE_PATIENCE;
        loop {
            self.leading()?;
            if self.lease.valid() {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(CallError::LeaseLapsed);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SUBSCRIBE: register a new framework, or fail an existing one over to
    /// this subscription (same id: its tasks are kept, its previous stream
    /// gets ERROR and closes). The framework is recorded in the registry
    /// before the stream opens.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        request: SubscribeRequest,
    ) -> Result<Subscription, CallError> {
        self.acting().await?;
        let mut info = request.info;
        if info.name.is_empty() {
            return Err(CallError::Invalid(
                "framework_info.name must not be empty".into(),
            ));
        }
        if info.role.is_empty() {
            info.role = "*".into();
        }
        if !(info.failover_timeout.is_finite() && info.failover_timeout >= 0.0) {
            return Err(CallError::Invalid(
                "framework_info.failover_timeout must be a non-negative number of seconds".into(),
            ));
        }
        let info_id = info
            .id
            .as_ref()
            .map(|f| f.value.clone())
            .filter(|v| !v.is_empty());
        if let (Some(a), Some(b)) = (&request.framework_id, &info_id) {
            if a != b {
                return Err(CallError::Invalid(format!(
                    "the call's framework_id {a} differs from framework_info.id {b}"
                )));
            }
        }
        let given = request.framework_id.or(info_id);
        if let Some(id) = &given {
            let role = self.state().frameworks.get(id).map(|f| f.role.clone());
            if let Some(role) = role.filter(|r| *r != info.role) {
                return Err(CallError::Invalid(format!(
                    "framework {id} has role {role:?}; a framework cannot change its role (asked for {:?})",
                    info.role
                )));
            }
        }
        if let Some(id) = &given {
            let current = self.state().frameworks.get(id).map_or(0, |f| f.epoch);
            if request.epoch < current {
                tracing::warn!(framework = %id, epoch = request.epoch, current, "refused SUBSCRIBE from a connection older than the framework's current one");
                return Err(CallError::StaleEpoch {
                    framework_id: id.clone(),
                    given: request.epoch,
                    current,
                });
            }
        }
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
        self.propose(RegistryCommand::AddFramework(record)).await?;
        let stream_id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = unbounded_channel();
        let _ = tx.send(Ok(event(pb::event::Event::Subscribed(
            pb::event::Subscribed {
                framework_id: Some(pb::FrameworkId { value: id.clone() }),
                heartbeat_interval_seconds: FRAMEWORK_HEARTBEAT.as_secs_f64(),
                master_address: self.address.clone(),
                stream_id: stream_id.clone(),
            },
        ))));
        let session = {
            let mut s = self.state();
            let session = s.new_session();
            s.attach_framework(
                &id,
                info.clone(),
                tx.clone(),
                session,
                !request.suppressed_roles.is_empty(),
                &stream_id,
            );
            if let Some(fw) = s.frameworks.get_mut(&id) {
                fw.epoch = fw.epoch.max(request.epoch);
            }
            session
        };
        tracing::info!(framework = %id, name = %info.name, role = %info.role, "framework {}", if failover { "re-subscribed" } else { "subscribed" });
        spawn_heartbeats(tx);
        self.allocate.notify_one();
        let master = self.clone();
        let drop_id = id.clone();
        Ok(Subscription {
            framework_id: id,
            stream_id,
            events: EventStream {
                inner: UnboundedReceiverStream::new(rx),
                on_drop: Some(Box::new(move || {
                    master.state().detach_framework(&drop_id, session);
                    tracing::info!(framework = %drop_id, "framework disconnected");
                    master.allocate.notify_one();
                })),
            },
        })
    }

    /// Every call but SUBSCRIBE, from the framework `framework_id`. The
    /// caller must be the framework's current connection: over HTTP its
    /// `Mesos-Stream-Id`, over gRPC an epoch no older than the one of the
    /// framework's latest SUBSCRIBE (fencing of deposed instances).
    pub(crate) async fn framework_call(
        &self,
        framework_id: &str,
        caller: Caller<'_>,
        call: pb::call::Call,
    ) -> Result<(), CallError> {
        self.acting().await?;
        if framework_id.is_empty() {
            return Err(CallError::Invalid("the call has no framework_id".into()));
        }
        {
            let s = self.state();
            let fw = s
                .frameworks
                .get(framework_id)
                .ok_or_else(|| CallError::NotSubscribed(framework_id.to_string()))?;
            match caller {
                Caller::Stream(given) if given != fw.stream_id => {
                    return Err(CallError::WrongStream {
                        framework_id: framework_id.to_string(),
                        given: given.to_string(),
                    });
                }
                Caller::Epoch(given) if given < fw.epoch => {
                    tracing::warn!(framework = %framework_id, epoch = given, current = fw.epoch, "refused a call from a deposed connection of the framework");
                    return Err(CallError::StaleEpoch {
                        framework_id: framework_id.to_string(),
                        given,
                        current: fw.epoch,
                    });
                }
                _ => {}
            }
        }
        use pb::call::Call as C;
        match call {
            C::Subscribe(_) => {
                return Err(CallError::Invalid(
                    "SUBSCRIBE opens an event stream; it is not sent as a plain call".into(),
                ))
            }
            C::Accept(accept) => {
                if accept.offer_ids.is_empty() {
                    return Err(CallError::Invalid("ACCEPT names no offer_ids".into()));
                }
                let unsupported = accept.operations.iter().find_map(|op| match &op.operation {
                    Some(pb::offer::operation::Operation::Launch(_)) => None,
                    Some(pb::offer::operation::Operation::Reserve(_)) => Some("RESERVE"),
                    Some(pb::offer::operation::Operation::Unreserve(_)) => Some("UNRESERVE"),
                    None => Some("an operation without a type"),
                });
                if let Some(what) = unsupported {
                    // Nothing is applied; the offers go back as if declined.
                    self.state().decline(
                        framework_id,
                        &pb::call::Decline {
                            offer_ids: accept.offer_ids,
                            filters: accept.filters,
                        },
                    );
                    self.allocate.notify_one();
                    return Err(CallError::Unsupported(format!(
                        "ACCEPT with {what} is not supported: meseta has no dynamic reservations yet; the offers were declined"
                    )));
                }
                let result = self.state().accept(framework_id, accept);
                self.allocate.notify_one();
                result.map_err(|e| CallError::Invalid(format!("invalid offers: {e}")))?;
            }
            C::Decline(decline) => {
                self.state().decline(framework_id, &decline);
                self.allocate.notify_one();
            }
            C::Revive(_) => {
                self.state().revive(framework_id);
                self.allocate.notify_one();
            }
            C::Suppress(_) => self.state().suppress(framework_id),
            C::Kill(kill) => {
                if kill.task_id.as_ref().is_none_or(|t| t.value.is_empty()) {
                    return Err(CallError::Invalid("KILL names no task_id".into()));
                }
                // After a failover the task's agent may not be back yet.
                let agent = kill.agent_id.as_ref().map(|a| a.value.clone());
                let admitted = agent.as_ref().is_some_and(|a| {
                    self.raft
                        .state()
                        .lock()
                        .map(|r| r.agents.contains_key(a))
                        .unwrap_or(false)
                });
                self.state().kill(framework_id, &kill, admitted)
            }
            C::Acknowledge(ack) => {
                if ack.task_id.as_ref().is_none_or(|t| t.value.is_empty()) {
                    return Err(CallError::Invalid("ACKNOWLEDGE names no task_id".into()));
                }
                if ack.agent_id.as_ref().is_none_or(|a| a.value.is_empty()) {
                    return Err(CallError::Invalid("ACKNOWLEDGE names no agent_id".into()));
                }
                if uuid::Uuid::from_slice(&ack.uuid).is_err() {
                    return Err(CallError::Invalid(format!(
                        "ACKNOWLEDGE carries {} bytes of uuid; a status update's uuid has 16",
                        ack.uuid.len()
                    )));
                }
                self.state().acknowledge(framework_id, &ack)
            }
            C::Reconcile(rec) => {
                if let Some(rec) = self.without_reregistering(rec) {
                    self.state().reconcile(framework_id, &rec)
                }
            }
            C::Teardown(_) => self.teardown_framework(framework_id).await?,
            C::UpdateFramework(update) => {
                let info = update.framework_info.ok_or_else(|| {
                    CallError::Invalid("UPDATE_FRAMEWORK without framework_info".into())
                })?;
                self.update_framework(framework_id, info, update.suppressed_roles)
                    .await?
            }
            C::Shutdown(shutdown) => {
                let executor = shutdown.executor_id.map(|e| e.value).unwrap_or_default();
                return Err(CallError::Invalid(format!(
                    "no executor {executor:?}: meseta runs command tasks without custom executors; KILL the task instead"
                )));
            }
            C::Message(_) => {
                return Err(CallError::Unsupported(
                    "MESSAGE has no executor to reach: meseta runs command tasks without custom executors".into(),
                ))
            }
            C::Request(_) => {
                // Mesos' built-in allocator ignores REQUEST; so does ours.
            }
        }
        Ok(())
    }

    /// UPDATE_FRAMEWORK: replace the framework's info (its role stays) and
    /// suppressed roles; replicated like SUBSCRIBE.
    async fn update_framework(
        &self,
        framework_id: &str,
        mut info: pb::FrameworkInfo,
        suppressed_roles: Vec<String>,
    ) -> Result<(), CallError> {
        if info.name.is_empty() {
            return Err(CallError::Invalid(
                "framework_info.name must not be empty".into(),
            ));
        }
        if let Some(id) = info.id.as_ref().filter(|i| !i.value.is_empty()) {
            if id.value != framework_id {
                return Err(CallError::Invalid(format!(
                    "framework_info.id {} is not the calling framework {framework_id}",
                    id.value
                )));
            }
        }
        let (role, registered_at) = {
            let s = self.state();
            let fw = s
                .frameworks
                .get(framework_id)
                .ok_or_else(|| CallError::NotSubscribed(framework_id.to_string()))?;
            (fw.role.clone(), fw.registered_at)
        };
        if info.role.is_empty() {
            info.role = role.clone();
        }
        if info.role != role {
            return Err(CallError::Unsupported(format!(
                "changing a framework's role ({role:?} to {:?}) is not supported",
                info.role
            )));
        }
        let record = FrameworkRecord {
            id: framework_id.to_string(),
            name: info.name.clone(),
            role: role.clone(),
            principal: info.principal.clone(),
            failover_timeout: info.failover_timeout,
            registered_at,
        };
        self.propose(RegistryCommand::AddFramework(record)).await?;
        self.state()
            .update_framework(framework_id, info, !suppressed_roles.is_empty());
        tracing::info!(framework = %framework_id, suppressed = !suppressed_roles.is_empty(), "framework updated its info");
        self.allocate.notify_one();
        Ok(())
    }

    /// TEARDOWN (by the framework, or by an operator): kill its tasks and
    /// remove it from the registry.
    pub(crate) async fn teardown_framework(&self, framework_id: &str) -> Result<(), CallError> {
        self.leading()?;
        if !self.state().frameworks.contains_key(framework_id) {
            return Err(CallError::NotFound(format!(
                "framework {framework_id} is not known to this master"
            )));
        }
        self.state().teardown(framework_id);
        self.propose(RegistryCommand::RemoveFramework {
            id: framework_id.to_string(),
        })
        .await?;
        tracing::info!(framework = %framework_id, "framework torn down");
        self.allocate.notify_one();
        Ok(())
    }

    /// Explicit reconciliation after a failover: tasks of agents that are
    /// in the registry but have not re-registered with this leader yet get
    /// no answer (as in Mesos), instead of TASK_LOST, so a framework that
    /// re-subscribes before the agents come back keeps its running tasks.
    /// Those tasks are reported when their agent re-registers, or
    /// TASK_UNREACHABLE when it does not come back in time. `None` when
    /// nothing is left to ask (an empty list would mean "every task").
    fn without_reregistering(&self, mut rec: pb::call::Reconcile) -> Option<pb::call::Reconcile> {
        if rec.tasks.is_empty() {
            return Some(rec);
        }
        let admitted: std::collections::HashSet<String> = self
            .raft
            .state()
            .lock()
            .map(|r| r.agents.keys().cloned().collect())
            .unwrap_or_default();
        let before = rec.tasks.len();
        {
            let s = self.state();
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

    // -----------------------------------------------------------------------
    // Operator calls: drain and maintenance
    // -----------------------------------------------------------------------

    /// The agent must be admitted (in the registry, not gone).
    fn admitted_agent(&self, agent_id: &str) -> Result<(), CallError> {
        let registry = self.raft.state();
        let r = registry.lock().unwrap_or_else(|p| p.into_inner());
        if r.agents.contains_key(agent_id) {
            Ok(())
        } else if let Some(g) = r.gone.get(agent_id) {
            Err(CallError::Invalid(format!(
                "agent {agent_id} is gone: {}",
                g.reason
            )))
        } else {
            Err(CallError::NotFound(format!("unknown agent {agent_id}")))
        }
    }

    /// DRAIN_AGENT: the agent is deactivated (no offers) and its tasks are
    /// killed, each with its kill grace period capped at
    /// `max_grace_period`; once none is left the agent is DRAINED (and,
    /// with `mark_gone`, removed and told to shut down). Replicated first,
    /// so a new leader keeps draining.
    pub(crate) async fn drain_agent(
        &self,
        agent_id: &str,
        max_grace_period: Option<f64>,
        mark_gone: bool,
    ) -> Result<(), CallError> {
        self.acting().await?;
        self.admitted_agent(agent_id)?;
        if let Some(g) = max_grace_period {
            if !(g.is_finite() && g >= 0.0) {
                return Err(CallError::Invalid(format!(
                    "max_grace_period must be a non-negative duration, got {g}s"
                )));
            }
        }
        let drain = crate::registry::DrainRecord {
            max_grace_period,
            mark_gone,
        };
        self.propose(RegistryCommand::DrainAgent {
            id: agent_id.to_string(),
            max_grace_period,
            mark_gone,
        })
        .await?;
        self.state().deactivate_agent(agent_id, Some(drain));
        tracing::info!(agent = %agent_id, max_grace_period = ?max_grace_period, mark_gone, "agent draining by operator");
        self.allocate.notify_one();
        Ok(())
    }

    /// DEACTIVATE_AGENT: no more offers from the agent; its tasks run on.
    pub(crate) async fn deactivate_agent(&self, agent_id: &str) -> Result<(), CallError> {
        self.acting().await?;
        self.admitted_agent(agent_id)?;
        self.propose(RegistryCommand::DeactivateAgent {
            id: agent_id.to_string(),
        })
        .await?;
        self.state().deactivate_agent(agent_id, None);
        tracing::info!(agent = %agent_id, "agent deactivated by operator");
        Ok(())
    }

    /// REACTIVATE_AGENT: undo a drain or a deactivation.
    pub(crate) async fn reactivate_agent(&self, agent_id: &str) -> Result<(), CallError> {
        self.acting().await?;
        self.admitted_agent(agent_id)?;
        let known = {
            let registry = self.raft.state();
            let r = registry.lock().unwrap_or_else(|p| p.into_inner());
            r.deactivated.contains(agent_id)
        };
        if !known {
            return Err(CallError::Invalid(format!(
                "agent {agent_id} is neither draining nor deactivated"
            )));
        }
        self.propose(RegistryCommand::ReactivateAgent {
            id: agent_id.to_string(),
        })
        .await?;
        self.state().reactivate_agent(agent_id);
        tracing::info!(agent = %agent_id, "agent reactivated by operator");
        self.allocate.notify_one();
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Operator calls: weights and quota
    // -----------------------------------------------------------------------

    /// Replace the named roles' weights (others keep theirs): validated,
    /// replicated, then applied to the allocator.
    pub(crate) async fn update_weights(
        &self,
        weights: BTreeMap<String, f64>,
    ) -> Result<(), CallError> {
        self.leading()?;
        for (role, weight) in &weights {
            crate::allocator::validate_weight(role, *weight)
                .map_err(|e| CallError::Invalid(e.to_string()))?;
        }
        self.propose(RegistryCommand::UpdateWeights {
            weights: weights.clone(),
        })
        .await?;
        self.state()
            .allocator
            .set_weights(&weights)
            .map_err(|e| CallError::Invalid(e.to_string()))?;
        tracing::info!(weights = ?weights, "role weights updated by operator");
        self.allocate.notify_one();
        Ok(())
    }

    /// Set a role's quota guarantee (replacing any previous one).
    pub(crate) async fn set_quota(
        &self,
        role: &str,
        guarantee: Resources,
    ) -> Result<(), CallError> {
        self.leading()?;
        crate::allocator::validate_quota(role, &guarantee)
            .map_err(|e| CallError::Invalid(e.to_string()))?;
        self.propose(RegistryCommand::SetQuota {
            role: role.to_string(),
            guarantee: guarantee.to_string(),
        })
        .await?;
        self.state()
            .allocator
            .set_quota(role, Some(guarantee.clone()))
            .map_err(|e| CallError::Invalid(e.to_string()))?;
        tracing::info!(role = %role, guarantee = %guarantee, "quota set by operator");
        self.allocate.notify_one();
        Ok(())
    }

    /// Remove a role's quota; `NotFound` when it has none.
    pub(crate) async fn remove_quota(&self, role: &str) -> Result<(), CallError> {
        self.leading()?;
        if !self.state().allocator.quotas().contains_key(role) {
            return Err(CallError::NotFound(format!("role '{role}' has no quota")));
        }
        self.propose(RegistryCommand::RemoveQuota {
            role: role.to_string(),
        })
        .await?;
        self.state()
            .allocator
            .set_quota(role, None)
            .map_err(|e| CallError::Invalid(e.to_string()))?;
        tracing::info!(role = %role, "quota removed by operator");
        self.allocate.notify_one();
        Ok(())
    }
}

fn event(e: pb::event::Event) -> pb::Event {
    pb::Event { event: Some(e) }
}

/// HEARTBEAT every [`FRAMEWORK_HEARTBEAT`] while the subscription lives.
/// Holds the sender weakly: when the state drops the framework's sender
/// (teardown, failover to a new stream) the stream ends.
fn spawn_heartbeats(tx: UnboundedSender<Result<pb::Event, Status>>) {
    let weak = tx.downgrade();
    drop(tx);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(FRAMEWORK_HEARTBEAT).await;
            let Some(tx) = weak.upgrade() else { return };
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
