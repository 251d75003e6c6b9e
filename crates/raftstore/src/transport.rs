//! Raft messages between masters over gRPC (`raft.proto`'s `Raft::Send`).
//!
//! Outbound: one task per peer holds one client stream open and feeds it from
//! a bounded queue. The raft thread only ever `try_send`s into that queue, so
//! a slow or dead peer never blocks it; on overflow messages are dropped (raft
//! tolerates loss and retries). A broken stream is reopened after a short backoff.
//!
//! Inbound: [`RaftService`] decodes each envelope and hands it to the node.
//!
//! [`Faults`] drops messages on purpose, so tests can cut nodes off in-process.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use meseta_proto::v1::raft_client::RaftClient;
use meseta_proto::v1::raft_server::{Raft, RaftServer};
use meseta_proto::v1::{ConfChangeRequest, ConfChangeResponse, RaftAck, RaftEnvelope};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

use crate::error::RaftError;
use crate::node::Command;

/// Largest raft message (snapshots included) sent or accepted over gRPC.
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;
/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RECONNECT_BACKOFF: Duration = Duration::from_millis(200);

/// Shared, node-id-keyed address book: id → "host:port".
pub(crate) type PeerMap = Arc<RwLock<BTreeMap<u64, String>>>;

pub(crate) fn read_peers(peers: &PeerMap) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, String>> {
    peers
        .read()
        .expect("peer map lock poisoned: a writer panicked")
}

/// Deliberate message loss between nodes, for tests. Cheap to clone; clones
/// share the same rules, so one `Faults` given to every node of an
/// in-process cluster controls the whole network.
#[derive(Clone, Default, Debug)]
pub struct Faults {
    rules: Arc<RwLock<FaultRules>>,
}

#[derive(Default, Debug)]
struct FaultRules {
    isolated: HashSet<u64>,
    cut: HashSet<(u64, u64)>,
}

impl Faults {
    /// No faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drop every message to and from node `id`.
    pub fn isolate(&self, id: u64) {
        self.write().isolated.insert(id);
    }

    /// Undo [`Faults::isolate`] for `id`.
    pub fn rejoin(&self, id: u64) {
        self.write().isolated.remove(&id);
    }

    /// Drop messages from `from` to `to` (one way).
    pub fn cut(&self, from: u64, to: u64) {
        self.write().cut.insert((from, to));
    }

    /// Remove every fault.
    pub fn heal(&self) {
        let mut rules = self.write();
        rules.isolated.clear();
        rules.cut.clear();
    }

    /// True when a message from `from` to `to` must be dropped.
    pub fn blocks(&self, from: u64, to: u64) -> bool {
        let rules = self
            .rules
            .read()
            .expect("fault rules lock poisoned: a writer panicked");
        rules.isolated.contains(&from)
            || rules.isolated.contains(&to)
            || rules.cut.contains(&(from, to))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, FaultRules> {
        self.rules
            .write()
            .expect("fault rules lock poisoned: a writer panicked")
    }
}

/// Outbound side, owned by the raft thread.
pub(crate) struct Transport {
    id: u64,
    peers: PeerMap,
    faults: Faults,
    runtime: tokio::runtime::Handle,
    /// Feedback to the raft thread (unreachable peers, snapshot outcomes).
    node: std_mpsc::Sender<Command>,
    queues: HashMap<u64, mpsc::Sender<Message>>,
}

impl Transport {
    pub(crate) fn new(
        id: u64,
        peers: PeerMap,
        faults: Faults,
        runtime: tokio::runtime::Handle,
        node: std_mpsc::Sender<Command>,
    ) -> Self {
        Transport {
            id,
            peers,
            faults,
            runtime,
            node,
            queues: HashMap::new(),
        }
    }

    /// Queue `msgs` for their peers without blocking. Returns the peers whose
    /// queue was full or who have no known address, and the snapshot
    /// messages that were dropped, so raft can be told.
    pub(crate) fn send(&mut self, msgs: Vec<Message>) -> Dropped {
        let mut dropped = Dropped::default();
        for msg in msgs {
            let to = msg.to;
            let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
            if self.faults.blocks(self.id, to) {
                if is_snapshot {
                    dropped.snapshots.push(to);
                }
                continue;
            }
            let Some(queue) = self.queue(to) else {
                dropped.unreachable.push(to);
                if is_snapshot {
                    dropped.snapshots.push(to);
                }
                continue;
            };
            if queue.try_send(msg).is_err() {
                dropped.unreachable.push(to);
                if is_snapshot {
                    dropped.snapshots.push(to);
                }
            }
        }
        dropped.unreachable.sort_unstable();
        dropped.unreachable.dedup();
        dropped
    }

    fn queue(&mut self, to: u64) -> Option<&mpsc::Sender<Message>> {
        let alive = self.queues.get(&to).is_some_and(|q| !q.is_closed());
        if !alive {
            if !read_peers(&self.peers).contains_key(&to) {
                tracing::warn!(
                    node = self.id,
                    peer = to,
                    "no address for raft peer; message dropped"
                );
                return None;
            }
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            let task = PeerTask {
                from: self.id,
                to,
                peers: self.peers.clone(),
                faults: self.faults.clone(),
                node: self.node.clone(),
            };
            self.runtime.spawn(task.run(rx));
            self.queues.insert(to, tx);
        }
        self.queues.get(&to)
    }
}

/// Messages [`Transport::send`] could not queue.
#[derive(Default, Debug)]
pub(crate) struct Dropped {
    pub unreachable: Vec<u64>,
    pub snapshots: Vec<u64>,
}

/// One peer's outbound stream.
struct PeerTask {
    from: u64,
    to: u64,
    peers: PeerMap,
    faults: Faults,
    node: std_mpsc::Sender<Command>,
}

impl PeerTask {
    async fn run(self, mut queue: mpsc::Receiver<Message>) {
        let mut reported_down = false;
        loop {
            let addr = read_peers(&self.peers).get(&self.to).cloned();
            let client = match addr {
                Some(addr) => self.connect(&addr).await,
                None => Err("no address".to_string()),
            };
            let mut client = match client {
                Ok(c) => {
                    if reported_down {
                        tracing::info!(
                            node = self.from,
                            peer = self.to,
                            "raft peer reachable again"
                        );
                        reported_down = false;
                    }
                    c
                }
                Err(reason) => {
                    if !reported_down {
                        tracing::warn!(node = self.from, peer = self.to, %reason, "raft peer unreachable");
                        reported_down = true;
                    }
                    let _ = self.node.send(Command::Unreachable { peer: self.to });
                    if !self.backoff(&mut queue).await {
                        return;
                    }
                    continue;
                }
            };
            let (tx, rx) = mpsc::channel::<RaftEnvelope>(64);
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|env| (env, rx))
            });
            let call = client.send(Request::new(stream));
            tokio::pin!(call);
            let ended = loop {
                tokio::select! {
                    res = &mut call => break res.err().map(|s| s.to_string()).unwrap_or_else(|| "stream closed by peer".into()),
                    msg = queue.recv() => {
                        let Some(msg) = msg else { return };
                        if self.faults.blocks(self.from, self.to) {
                            continue;
                        }
                        let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
                        let env = RaftEnvelope { message: msg.write_to_bytes().expect("encoding a raft message into memory cannot fail") };
                        if tx.send(env).await.is_err() {
                            if is_snapshot {
                                let _ = self.node.send(Command::SnapshotStatus { peer: self.to, delivered: false });
                            }
                            break "stream closed".to_string();
                        }
                        if is_snapshot {
                            let _ = self.node.send(Command::SnapshotStatus { peer: self.to, delivered: true });
                        }
                    }
                }
            };
            tracing::debug!(node = self.from, peer = self.to, reason = %ended, "raft stream ended; reconnecting");
            let _ = self.node.send(Command::Unreachable { peer: self.to });
            if !self.backoff(&mut queue).await {
                return;
            }
        }
    }

    async fn connect(&self, addr: &str) -> Result<RaftClient<tonic::transport::Channel>, String> {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad address {addr}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
        Ok(RaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Sleep before reconnecting, dropping what is queued meanwhile (raft
    /// resends). Returns false when the node is gone.
    async fn backoff(&self, queue: &mut mpsc::Receiver<Message>) -> bool {
        let sleep = tokio::time::sleep(RECONNECT_BACKOFF);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                msg = queue.recv() => match msg {
                    None => return false,
                    Some(m) if m.get_msg_type() == MessageType::MsgSnapshot => {
                        let _ = self.node.send(Command::SnapshotStatus { peer: self.to, delivered: false });
                    }
                    Some(_) => {}
                },
            }
        }
    }
}

/// The inbound gRPC service a master mounts next to its own services.
/// Built by [`crate::RaftHandle::raft_service`].
pub struct RaftService {
    id: u64,
    node: std_mpsc::Sender<Command>,
    faults: Faults,
    peers: PeerMap,
}

impl RaftService {
    pub(crate) fn new(
        id: u64,
        node: std_mpsc::Sender<Command>,
        faults: Faults,
        peers: PeerMap,
    ) -> RaftServer<RaftService> {
        RaftServer::new(RaftService {
            id,
            node,
            faults,
            peers,
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn stopped(&self) -> Status {
        Status::unavailable(RaftError::Stopped { id: self.id }.to_string())
    }
}

/// Map a [`RaftError`] to a gRPC status; `NotLeader` carries the leader's
/// address in the [`meseta_proto::LEADER_METADATA`] metadata.
pub fn error_status(err: &RaftError) -> Status {
    match err {
        RaftError::NotLeader { leader } => {
            meseta_proto::with_leader_hint(Status::unavailable(err.to_string()), leader.as_deref())
        }
        RaftError::ChangeMembership { .. } => Status::failed_precondition(err.to_string()),
        RaftError::ProposalDropped { .. } | RaftError::LeadershipLost { .. } => {
            Status::aborted(err.to_string())
        }
        RaftError::Stopped { .. } => Status::unavailable(err.to_string()),
        _ => Status::internal(err.to_string()),
    }
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn send(
        &self,
        request: Request<Streaming<RaftEnvelope>>,
    ) -> Result<Response<RaftAck>, Status> {
        let mut stream = request.into_inner();
        while let Some(env) = stream.message().await? {
            let msg = Message::parse_from_bytes(&env.message)
                .map_err(|e| Status::invalid_argument(format!("decode raft message: {e}")))?;
            if self.faults.blocks(msg.from, self.id) {
                continue;
            }
            if !read_peers(&self.peers).contains_key(&msg.from) {
                tracing::debug!(
                    node = self.id,
                    from = msg.from,
                    "raft message from a node with no known address"
                );
            }
            self.node
                .send(Command::Raft(Box::new(msg)))
                .map_err(|_| self.stopped())?;
        }
        Ok(Response::new(RaftAck {}))
    }

    async fn change_membership(
        &self,
        request: Request<ConfChangeRequest>,
    ) -> Result<Response<ConfChangeResponse>, Status> {
        let (reply, rx) = oneshot::channel();
        self.node
            .send(Command::ChangeMembership {
                request: request.into_inner(),
                reply,
            })
            .map_err(|_| self.stopped())?;
        match rx.await {
            Ok(Ok(resp)) => Ok(Response::new(resp)),
            Ok(Err(e)) => Err(error_status(&e)),
            Err(_) => Err(self.stopped()),
        }
    }
}
