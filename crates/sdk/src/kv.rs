//! Client of the masters' replicated key-value store with leases
//! (`kv.proto`), following the leading master like the scheduler client.
//!
//! Retry contract (so a caller never sees a write applied twice):
//! - A call refused by a follower (UNAVAILABLE "not the leader…") or a
//!   master that cannot be connected to was never proposed: the client
//!   moves on (to the named leader, else the next master) and retries until
//!   the call's deadline.
//!   A cached connection to a master that has since died fails the same
//!   way (the channel's reconnect is refused): the call never left.
//! - Reads (`get`, `list`) are retried after any failure.
//! - A write that failed once it reached the leader (connection lost,
//!   ABORTED because leadership changed, timeout) may or may not have been
//!   applied: it is **not** retried and fails with
//!   [`KvClientError::Indeterminate`]. The caller decides (re-read, or
//!   write again if the write is idempotent for it).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meseta_proto::leader_hint;
use meseta_proto::v1 as pb;
use pb::kv_client::KvClient as GrpcKv;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tonic::transport::{Channel, Endpoint};

pub use pb::{KeyValue, WatchEvent};

/// Why a KV call failed.
#[derive(Debug, thiserror::Error)]
pub enum KvClientError {
    /// No leading master answered before the deadline; nothing was applied.
    #[error("no leading master reachable among {masters:?} within {waited:?}: {last}")]
    NoLeader {
        masters: Vec<String>,
        waited: Duration,
        last: String,
    },
    /// A write failed after reaching the leader: it may or may not be applied.
    #[error("outcome of the {op} is unknown: {status}")]
    Indeterminate {
        op: &'static str,
        status: tonic::Status,
    },
    /// The master refused the call (bad argument, unknown lease…); nothing was applied.
    #[error("the master refused the {op}: {status}")]
    Refused {
        op: &'static str,
        status: tonic::Status,
    },
}

impl KvClientError {
    /// True when a write may have been applied despite the error.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, KvClientError::Indeterminate { .. })
    }
}

/// How long one keep-alive attempt may take before the next master is
/// tried. Far below a lease's TTL: a connection to a leader that vanished
/// without a reset (a killed container, a cut host) hangs until HTTP/2's
/// keep-alive notices, which would outlast the lease it is keeping.
const KEEP_ALIVE_ATTEMPT: Duration = Duration::from_millis(1500);

/// The master calls go to, and a connection to it.
type Leader = (String, GrpcKv<Channel>);

/// A KV client over every master's `host:port`. Cheap to clone; clones share
/// the connection to the current leader.
#[derive(Clone)]
pub struct KvClient {
    masters: Arc<Vec<String>>,
    current: Arc<Mutex<Option<Leader>>>,
    next: Arc<Mutex<usize>>,
    /// How long one call keeps looking for the leader.
    deadline: Duration,
    /// How long one attempt at the leader may take.
    attempt_timeout: Duration,
}

/// Longest wait between two attempts while no leader answers. Short: an
/// attempt at a follower costs it one refusal, and while a new leader is
/// being elected every millisecond of sleep past the election is failover
/// time the caller sees.
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// A refusal that proves the call was not proposed.
fn not_leader(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        && (leader_hint(status).is_some() || status.message().starts_with("not the lead"))
}

/// A failure to (re)connect: the request never left this process, so
/// nothing was proposed whatever the call was.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        source = err.source();
    }
    false
}

async fn connect(target: &str) -> Result<GrpcKv<Channel>, String> {
    let endpoint = Endpoint::from_shared(format!("http://{target}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    Ok(GrpcKv::new(channel)
        .max_decoding_message_size(meseta_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(meseta_proto::MAX_MESSAGE_BYTES))
}

impl KvClient {
    /// A client of the masters at `masters` (any order; the leader is found).
    pub fn new(masters: Vec<String>) -> KvClient {
        KvClient {
            masters: Arc::new(masters),
            current: Arc::new(Mutex::new(None)),
            next: Arc::new(Mutex::new(0)),
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(5),
        }
    }

    /// Change how long a call looks for a leader (default 10 s).
    pub fn with_deadline(mut self, deadline: Duration) -> KvClient {
        self.deadline = deadline;
        self
    }

    /// `host:port` of the master calls currently go to.
    pub fn leader(&self) -> Option<String> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(a, _)| a.clone())
    }

    fn forget(&self, target: &str) {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.as_ref().is_some_and(|(a, _)| a == target) {
            *cur = None;
        }
    }

    fn next_master(&self) -> String {
        let mut n = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let m = self.masters[*n % self.masters.len()].clone();
        *n += 1;
        m
    }

    /// Run `f` against the leader, following hints; see the module contract.
    async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        idempotent: bool,
        f: F,
    ) -> Result<T, KvClientError>
    where
        F: Fn(GrpcKv<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_within(op, idempotent, self.attempt_timeout, f)
            .await
    }

    /// [`Self::call`] with its own limit on one attempt.
    async fn call_within<T, F, Fut>(
        &self,
        op: &'static str,
        idempotent: bool,
        attempt_timeout: Duration,
        f: F,
    ) -> Result<T, KvClientError>
    where
        F: Fn(GrpcKv<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let mut hint: Option<String> = None;
        let mut last = String::from("no master tried");
        let mut backoff = Duration::from_millis(20);
        let no_leader = |last: String| KvClientError::NoLeader {
            masters: self.masters.to_vec(),
            waited: started.elapsed(),
            last,
        };
        if self.masters.is_empty() {
            return Err(no_leader("no masters given".into()));
        }
        loop {
            if started.elapsed() > self.deadline {
                return Err(no_leader(last));
            }
            let cached = self
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let (target, client) = match (hint.take(), cached) {
                (Some(h), Some((addr, c))) if h == addr => (addr, c),
                (Some(h), _) => match connect(&h).await {
                    Ok(c) => (h, c),
                    Err(e) => {
                        last = format!("{h}: {e}");
                        continue;
                    }
                },
                (None, Some((addr, c))) => (addr, c),
                (None, None) => {
                    let m = self.next_master();
                    match connect(&m).await {
                        Ok(c) => (m, c),
                        Err(e) => {
                            last = format!("{m}: {e}");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                            continue;
                        }
                    }
                }
            };
            let outcome = tokio::time::timeout(attempt_timeout, f(client.clone())).await;
            match outcome {
                Ok(Ok(resp)) => {
                    *self.current.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((target, client));
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) if not_leader(&status) => {
                    self.forget(&target);
                    last = format!("{target}: {}", status.message());
                    match leader_hint(&status).filter(|l| *l != target) {
                        Some(l) => hint = Some(l),
                        None => {
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                }
                Ok(Err(status)) if never_sent(&status) => {
                    self.forget(&target);
                    last = format!("{target}: {status}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(300));
                }
                Ok(Err(status))
                    if matches!(
                        status.code(),
                        tonic::Code::InvalidArgument
                            | tonic::Code::NotFound
                            | tonic::Code::OutOfRange
                            | tonic::Code::FailedPrecondition
                    ) =>
                {
                    return Err(KvClientError::Refused { op, status });
                }
                Ok(Err(status)) => {
                    self.forget(&target);
                    if !idempotent {
                        return Err(KvClientError::Indeterminate { op, status });
                    }
                    last = format!("{target}: {status}");
                    tokio::time::sleep(backoff).await;
                }
                Err(_) => {
                    self.forget(&target);
                    let status = tonic::Status::deadline_exceeded(format!(
                        "{target} did not answer within {:?}",
                        attempt_timeout
                    ));
                    if !idempotent {
                        return Err(KvClientError::Indeterminate { op, status });
                    }
                    last = status.message().to_string();
                }
            }
        }
    }

    /// Read one key (linearizable). `None` when absent.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvClientError> {
        let req = pb::GetRequest {
            key: key.to_string(),
        };
        let resp = self
            .call("get", true, |mut c| {
                let req = req.clone();
                async move { c.get(req).await }
            })
            .await?;
        Ok(resp.kv.filter(|_| resp.found))
    }

    /// Keys under `prefix`, in key order (linearizable).
    pub async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, KvClientError> {
        let req = pb::ListRequest {
            prefix: prefix.to_string(),
            limit: 0,
        };
        let resp = self
            .call("list", true, |mut c| {
                let req = req.clone();
                async move { c.list(req).await }
            })
            .await?;
        Ok(resp.kvs)
    }

    /// Write `key` (attached to `lease` unless 0).
    pub async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: u64,
    ) -> Result<pb::PutResponse, KvClientError> {
        self.put_request(pb::PutRequest {
            key: key.to_string(),
            value,
            lease,
            expected_version: None,
        })
        .await
    }

    /// Compare-and-set: write only if the key's version is `expected` (0 =
    /// absent). `succeeded` in the answer says whether it happened.
    pub async fn put_if_version(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: u64,
        expected: u64,
    ) -> Result<pb::PutResponse, KvClientError> {
        self.put_request(pb::PutRequest {
            key: key.to_string(),
            value,
            lease,
            expected_version: Some(expected),
        })
        .await
    }

    async fn put_request(&self, req: pb::PutRequest) -> Result<pb::PutResponse, KvClientError> {
        self.call("put", false, |mut c| {
            let req = req.clone();
            async move { c.put(req).await }
        })
        .await
    }

    /// Delete one key; returns how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: &str) -> Result<u64, KvClientError> {
        self.delete_request(pb::DeleteRequest {
            key: key.to_string(),
            expected_version: None,
            prefix: false,
        })
        .await
    }

    /// Delete every key under `prefix`; returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, KvClientError> {
        self.delete_request(pb::DeleteRequest {
            key: prefix.to_string(),
            expected_version: None,
            prefix: true,
        })
        .await
    }

    async fn delete_request(&self, req: pb::DeleteRequest) -> Result<u64, KvClientError> {
        let resp = self
            .call("delete", false, |mut c| {
                let req = req.clone();
                async move { c.delete(req).await }
            })
            .await?;
        Ok(resp.deleted)
    }

    /// A lease living `ttl` unless kept alive; returns its id.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<u64, KvClientError> {
        let req = pb::LeaseGrantRequest {
            ttl_seconds: ttl.as_secs_f64(),
        };
        let resp = self
            .call("lease grant", false, |mut c| async move {
                c.lease_grant(req).await
            })
            .await?;
        Ok(resp.lease)
    }

    /// Restart a lease's TTL; false when the lease no longer exists.
    /// (Idempotent, so retried like a read.)
    pub async fn lease_keep_alive(&self, lease: u64) -> Result<bool, KvClientError> {
        let req = pb::LeaseKeepAliveRequest { lease };
        let resp = self
            .call_within(
                "lease keep-alive",
                true,
                KEEP_ALIVE_ATTEMPT,
                |mut c| async move { c.lease_keep_alive(req).await },
            )
            .await?;
        Ok(resp.found)
    }

    /// Delete a lease and its keys; false when it did not exist.
    pub async fn lease_revoke(&self, lease: u64) -> Result<bool, KvClientError> {
        let req = pb::LeaseRevokeRequest { lease };
        let resp = self
            .call("lease revoke", true, |mut c| async move {
                c.lease_revoke(req).await
            })
            .await?;
        Ok(resp.found)
    }

    /// Watch the changes under `prefix` committed after raft index
    /// `start_index` (0 = from now). The stream follows the leader and
    /// resumes after the last index it delivered, so no change is missed or
    /// repeated (a watch "from now" that has delivered nothing yet resumes
    /// "from now" again, and may miss changes made during the failover); it ends (the receiver closes) only when the history needed
    /// to resume was compacted away, or when the receiver is dropped.
    pub fn watch(&self, prefix: &str, start_index: u64) -> UnboundedReceiver<WatchEvent> {
        let (tx, rx) = unbounded_channel();
        let client = self.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut last = start_index;
            loop {
                let req = pb::WatchRequest {
                    prefix: prefix.clone(),
                    start_index: last,
                };
                let stream = client
                    .call("watch", true, |mut c| {
                        let req = req.clone();
                        async move { c.watch(req).await }
                    })
                    .await;
                let mut stream = match stream {
                    Ok(s) => s,
                    Err(KvClientError::Refused { status, .. }) => {
                        tracing::warn!(prefix = %prefix, error = %status, "kv watch cannot resume");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "kv watch: no leader yet");
                        if tx.is_closed() {
                            return;
                        }
                        continue;
                    }
                };
                loop {
                    tokio::select! {
                        msg = stream.message() => match msg {
                            Ok(Some(ev)) => {
                                last = last.max(ev.index);
                                if tx.send(ev).is_err() {
                                    return;
                                }
                            }
                            Ok(None) | Err(_) => break,
                        },
                        _ = tx.closed() => return,
                    }
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_reconnect_is_known_not_sent_and_a_lost_call_is_not() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let status = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(never_sent(&status));
        assert!(!never_sent(&tonic::Status::unavailable("connection reset")));
        assert!(!never_sent(&tonic::Status::aborted("leadership changed")));
    }
}
