//! The KV gRPC service (`kv.proto`): the frameworks' replicated key-value
//! store with leases, served by the leading master.
//!
//! Contract:
//! - Every call on a follower fails with UNAVAILABLE and the leader's
//!   `host:port` in the `meseta-leader` metadata (when one is known).
//! - Writes (put, delete, lease calls) answer once the command is committed
//!   by a quorum (fsynced) and applied here. ABORTED means the leader lost
//!   its leadership while the write was in flight: its outcome is unknown.
//! - Reads (get, list) are linearizable: they wait for a Raft ReadIndex
//!   round (the leader confirms it still leads and has applied everything
//!   committed before the read started), then read the local state.
//! - A watch streams the committed changes under a prefix, in log order,
//!   starting after `start_index` (0 = from now). It ends with UNAVAILABLE
//!   (leader hint attached) when this master stops leading, and with
//!   OUT_OF_RANGE when `start_index` is older than the kept history;
//!   clients resume with the last index they saw.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use meseta_proto::v1 as pb;
use meseta_raftstore::{error_status, KvCommand, KvError, KvOutput, KvRequest};
use pb::kv_server::{Kv, KvServer};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::registry::{decode_kv_reply, MasterCommand};
use crate::Master;

/// How often the leader looks for expired leases.
pub(crate) const LEASE_CHECK: Duration = Duration::from_millis(200);
/// Events buffered per watch stream before the watcher is considered too slow.
const WATCH_BUFFER: usize = 1024;

/// Milliseconds since the Unix epoch on this master's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The tonic service the master mounts beside its others.
pub(crate) fn service(master: Arc<Master>) -> KvServer<KvApi> {
    KvServer::new(KvApi(master))
        .max_decoding_message_size(meseta_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(meseta_proto::MAX_MESSAGE_BYTES)
}

fn kv_status(e: &KvError) -> Status {
    match e {
        KvError::EmptyKey | KvError::InvalidTtl(_) => Status::invalid_argument(e.to_string()),
        KvError::LeaseNotFound(_) => Status::not_found(e.to_string()),
        KvError::Decode { .. } => Status::internal(e.to_string()),
    }
}

impl Master {
    /// Replicate one KV command stamped with this leader's clock; resolves
    /// with the applied output once it is committed and applied here.
    pub(crate) async fn propose_kv(&self, command: KvCommand) -> Result<KvOutput, Status> {
        let request = KvRequest {
            now_ms: now_ms(),
            command,
        };
        let bytes = MasterCommand::Kv(request).encode();
        let reply = self
            .raft
            .propose(bytes)
            .await
            .map_err(|e| error_status(&e))?;
        match decode_kv_reply(&reply) {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(kv_status(&e)),
            Err(text) => Err(Status::internal(format!("kv command not applied: {text}"))),
        }
    }

    /// Wait until a read of the local state is linearizable.
    pub(crate) async fn linearizable(&self) -> Result<(), Status> {
        self.raft.read_barrier().await.map_err(|e| error_status(&e))
    }
}

fn unexpected(out: KvOutput) -> Status {
    Status::internal(format!("unexpected kv output {out:?}"))
}

fn ttl_ms(seconds: f64) -> Result<u64, Status> {
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(Status::invalid_argument(format!(
            "lease ttl must be a positive number of seconds, got {seconds}"
        )));
    }
    Ok((seconds * 1000.0).ceil() as u64)
}

/// The KV gRPC face of one master.
pub(crate) struct KvApi(Arc<Master>);

#[tonic::async_trait]
impl Kv for KvApi {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let master = &self.0;
        master.ensure_leader()?;
        let key = request.into_inner().key;
        master.linearizable().await?;
        let state = master.raft.state();
        let reply = state
            .lock()
            .map_err(|_| Status::internal("state machine lock poisoned"))?
            .kv
            .get(&key);
        Ok(Response::new(reply))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let master = &self.0;
        master.ensure_leader()?;
        let r = request.into_inner();
        if r.key.is_empty() {
            return Err(Status::invalid_argument("empty key"));
        }
        match master
            .propose_kv(KvCommand::Put {
                key: r.key,
                value: r.value,
                lease: r.lease,
                expected_version: r.expected_version,
            })
            .await?
        {
            KvOutput::Put(p) => Ok(Response::new(p)),
            other => Err(unexpected(other)),
        }
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let master = &self.0;
        master.ensure_leader()?;
        let r = request.into_inner();
        match master
            .propose_kv(KvCommand::Delete {
                key: r.key,
                prefix: r.prefix,
                expected_version: r.expected_version,
            })
            .await?
        {
            KvOutput::Delete(d) => Ok(Response::new(d)),
            other => Err(unexpected(other)),
        }
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let master = &self.0;
        master.ensure_leader()?;
        let r = request.into_inner();
        master.linearizable().await?;
        let state = master.raft.state();
        let reply = state
            .lock()
            .map_err(|_| Status::internal("state machine lock poisoned"))?
            .kv
            .list(&r.prefix, r.limit);
        Ok(Response::new(reply))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let master = self.0.clone();
        master.ensure_leader()?;
        let r = request.into_inner();
        let prefix = r.prefix;
        // "From now" = after everything committed before the call.
        let mut last = if r.start_index == 0 {
            master.linearizable().await?;
            master.raft.applied_index()
        } else {
            r.start_index
        };
        let hub = master
            .raft
            .state()
            .lock()
            .map_err(|_| Status::internal("state machine lock poisoned"))?
            .watches
            .clone();
        let (mut live, past) = hub.watch_from(last);
        let past = past.map_err(|floor| {
            Status::out_of_range(format!(
                "watch start index {last} is compacted; the oldest kept change is after index {floor}"
            ))
        })?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let mut leadership = master.raft.leadership();
        let id = master.raft.id();
        tokio::spawn(async move {
            let matches =
                |e: &pb::WatchEvent| e.kv.as_ref().is_some_and(|kv| kv.key.starts_with(&prefix));
            for e in past {
                last = last.max(e.index);
                if matches(&e) && tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            loop {
                tokio::select! {
                    batch = live.recv() => match batch {
                        Ok(events) => {
                            for e in events.iter() {
                                if e.index <= last {
                                    continue;
                                }
                                if matches(e) && tx.send(Ok(e.clone())).await.is_err() {
                                    return;
                                }
                            }
                            if let Some(e) = events.last() {
                                last = last.max(e.index);
                            }
                        }
                        Err(RecvError::Lagged(_)) => {
                            let _ = tx.send(Err(Status::aborted(format!(
                                "watch fell behind; watch again from index {last}"
                            )))).await;
                            return;
                        }
                        Err(RecvError::Closed) => return,
                    },
                    changed = leadership.changed() => {
                        let still = changed.is_ok() && *leadership.borrow() == Some(id);
                        if !still {
                            let _ = tx.send(Err(master.not_leader_status())).await;
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let master = &self.0;
        master.ensure_leader()?;
        let ttl_ms = ttl_ms(request.into_inner().ttl_seconds)?;
        match master.propose_kv(KvCommand::LeaseGrant { ttl_ms }).await? {
            KvOutput::LeaseGrant(g) => Ok(Response::new(g)),
            other => Err(unexpected(other)),
        }
    }

    async fn lease_keep_alive(
        &self,
        request: Request<pb::LeaseKeepAliveRequest>,
    ) -> Result<Response<pb::LeaseKeepAliveResponse>, Status> {
        let master = &self.0;
        master.ensure_leader()?;
        let lease = request.into_inner().lease;
        match master
            .propose_kv(KvCommand::LeaseKeepAlive { lease })
            .await?
        {
            KvOutput::LeaseKeepAlive(k) => Ok(Response::new(k)),
            other => Err(unexpected(other)),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let master = &self.0;
        master.ensure_leader()?;
        let lease = request.into_inner().lease;
        match master.propose_kv(KvCommand::LeaseRevoke { lease }).await? {
            KvOutput::LeaseRevoke(r) => Ok(Response::new(r)),
            other => Err(unexpected(other)),
        }
    }
}

/// The leader's lease loop: after winning an election, restart every
/// lease's TTL (the failover gap and clock skew never expire a lease
/// early); then, while leading, propose the expiry of leases whose
/// deadline passed on this master's clock.
pub(crate) async fn lease_loop(master: Arc<Master>) {
    let mut leadership = master.raft.leadership();
    let id = master.raft.id();
    loop {
        // Wait to lead.
        while *leadership.borrow_and_update() != Some(id) {
            if leadership.changed().await.is_err() {
                return;
            }
        }
        match master.propose_kv(KvCommand::RenewAllLeases).await {
            Ok(KvOutput::Renewed(n)) if n > 0 => {
                tracing::info!(leases = n, "renewed every kv lease after taking the lead");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not renew kv leases after taking the lead");
                tokio::time::sleep(LEASE_CHECK).await;
                continue;
            }
        }
        let mut tick = tokio::time::interval(LEASE_CHECK);
        while master.raft.is_leader() {
            tick.tick().await;
            let expired = match master.raft.state().lock() {
                Ok(s) => s.kv.expired_leases(now_ms()),
                Err(_) => return,
            };
            if expired.is_empty() {
                continue;
            }
            match master
                .propose_kv(KvCommand::ExpireLeases { leases: expired })
                .await
            {
                Ok(KvOutput::Expired(ids)) if !ids.is_empty() => {
                    tracing::info!(leases = ?ids, "kv leases expired; their keys are deleted");
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "lease expiry proposal failed"),
            }
        }
    }
}
