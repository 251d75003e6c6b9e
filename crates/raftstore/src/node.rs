//! The raft node: one dedicated thread owns `raft::RawNode`, its storage IO
//! and the apply loop; [`RaftHandle`] talks to it over a channel and gets
//! replies by proposal id.
//!
//! The thread's loop, per round:
//! 1. wait for a command or the next tick, then drain *every* queued command
//!    (proposals, raft messages…) into the node, so that many proposals share
//!    one `Ready` and one fsync;
//! 2. handle the `Ready` in raft-rs' order: send `messages`, persist the
//!    snapshot + entries + hard state in one flushed batch, restore the
//!    snapshot into the state machine, send `persisted_messages`, apply
//!    committed entries, `advance`, then the `LightReady` likewise;
//! 3. take a snapshot and compact the log every `snapshot_interval` applied entries.
//!
//! Bootstrap: a node whose log is empty and whose id is in `peers` writes the
//! same initial snapshot as every other founding member (index 5, term 5, the
//! voters of `peers`, no state). A node whose id is *not* in `peers` starts
//! empty and waits for the leader to add it (`change_membership`) and send it
//! a snapshot.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use meseta_metrics::prometheus_client::metrics::histogram::Histogram;

use meseta_proto::v1::conf_change_request::Kind;
use meseta_proto::v1::raft_server::RaftServer;
use meseta_proto::v1::{ConfChangeRequest, ConfChangeResponse};
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, Snapshot,
};
use raft::{RawNode, ReadState, SnapshotStatus, StateRole};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::error::RaftError;
use crate::storage::{LogBatch, LogStore, RaftStorage, SledLogStore};
use crate::transport::{read_peers, Faults, PeerMap, RaftService, Transport};

/// Index and term of the initial snapshot every founding member writes.
pub const INIT_INDEX: u64 = 5;
const INIT_TERM: u64 = 5;
/// Metadata key of the persisted peer address book.
const META_PEERS: &str = "peers";
/// Most commands handled between two `Ready`s, so ticks are never starved.
const MAX_DRAIN: usize = 4096;

/// The replicated application state. `apply` runs on the raft thread under
/// the lock returned by [`RaftHandle::state`]; it must be deterministic (same
/// commands in the same order ⇒ same state and outputs on every replica) and
/// must not block.
pub trait StateMachine: Send + 'static {
    /// Apply one committed command at `index`; the returned bytes go back to the proposer.
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8>;
    /// Serialize the whole state (for raft snapshots / log compaction).
    fn snapshot(&self) -> Vec<u8>;
    /// Replace the state with a snapshot taken at `index`.
    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), String>;
}

/// How to run one raft node.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This node's id (1-based, unique in the cluster).
    pub id: u64,
    /// Every founding voter: (id, "host:port" of its gRPC server), including
    /// self. A node not listed here joins an existing cluster instead.
    pub peers: Vec<(u64, String)>,
    /// Directory of the sled log.
    pub data_dir: PathBuf,
    /// Duration of one raft tick.
    pub tick: Duration,
    /// Election timeout in ticks (randomized in `[n, 2n)`).
    pub election_ticks: usize,
    /// Heartbeat interval in ticks; must be less than `election_ticks`.
    pub heartbeat_ticks: usize,
    /// Snapshot the state machine and compact the log every N applied entries (0 = never).
    pub snapshot_interval: u64,
    /// Also wait until the entries applied since the last snapshot add up
    /// to at least this many times that snapshot's size (0 = no such
    /// wait). With 1.0 the cost of snapshots stays proportional to the
    /// bytes written however large the state grows, and the log holds at
    /// most about the state's size again.
    pub snapshot_log_ratio: f64,
}

impl RaftConfig {
    /// A config with production defaults: 100 ms ticks, ~1 s election
    /// timeout, heartbeat every 200 ms, snapshot every 10 000 entries.
    pub fn new(id: u64, peers: Vec<(u64, String)>, data_dir: impl Into<PathBuf>) -> Self {
        RaftConfig {
            id,
            peers,
            data_dir: data_dir.into(),
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_interval: 10_000,
            snapshot_log_ratio: 1.0,
        }
    }

    fn validate(&self) -> Result<(), RaftError> {
        if self.id == 0 {
            return Err(RaftError::InvalidConfig("node id 0 is reserved".into()));
        }
        if self.tick.is_zero() {
            return Err(RaftError::InvalidConfig("tick must be positive".into()));
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(RaftError::InvalidConfig(format!(
                "election ticks ({}) must exceed heartbeat ticks ({}) > 0",
                self.election_ticks, self.heartbeat_ticks
            )));
        }
        Ok(())
    }
}

/// Test and embedding hooks for [`RaftHandle::start_with`].
#[derive(Default, Clone)]
pub struct StartOptions {
    /// Use this log store instead of opening sled in `data_dir`.
    pub store: Option<Arc<dyn LogStore>>,
    /// Fault rules applied to this node's messages (shared between the nodes
    /// of an in-process test cluster).
    pub faults: Faults,
}

/// What the raft thread is asked to do.
pub(crate) enum Command {
    Propose {
        command: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, RaftError>>,
    },
    ReadBarrier {
        reply: oneshot::Sender<Result<(), RaftError>>,
    },
    ChangeMembership {
        request: ConfChangeRequest,
        reply: oneshot::Sender<Result<ConfChangeResponse, RaftError>>,
    },
    Raft(Box<Message>),
    Unreachable {
        peer: u64,
    },
    SnapshotStatus {
        peer: u64,
        delivered: bool,
    },
    Shutdown,
}

/// A cheap, cloneable handle to a running raft node.
pub struct RaftHandle<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for RaftHandle<S> {
    fn clone(&self) -> Self {
        RaftHandle {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<S> {
    id: u64,
    commands: std_mpsc::Sender<Command>,
    state: Arc<Mutex<S>>,
    leader: watch::Receiver<Option<u64>>,
    peers: PeerMap,
    /// Taken by `shutdown`, so the sled lock is released even while clones live.
    store: Mutex<Option<Arc<dyn LogStore>>>,
    faults: Faults,
    applied: Arc<AtomicU64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Seconds from a proposal to its entry committed and applied here
    /// (`meseta_raft_commit_seconds`).
    commit_seconds: Histogram,
}

impl<S: StateMachine> RaftHandle<S> {
    /// Open the sled log in `config.data_dir`, recover (restore the last
    /// snapshot into `state`, then re-apply the committed log), and start the
    /// raft thread. A single-voter cluster campaigns at once. Must be called
    /// inside a tokio runtime (the transport spawns its tasks there).
    pub async fn start(config: RaftConfig, state: S) -> Result<RaftHandle<S>, RaftError> {
        Self::start_with(config, state, StartOptions::default()).await
    }

    /// [`RaftHandle::start`] with a chosen log store and fault rules.
    pub async fn start_with(
        config: RaftConfig,
        state: S,
        options: StartOptions,
    ) -> Result<RaftHandle<S>, RaftError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::current();
        let store = match options.store {
            Some(s) => s,
            None => {
                let dir = config.data_dir.clone();
                let opened = tokio::task::spawn_blocking(move || SledLogStore::open(&dir))
                    .await
                    .map_err(|e| RaftError::InvalidConfig(format!("open task failed: {e}")))?;
                Arc::new(opened.map_err(|source| RaftError::OpenStore {
                    path: config.data_dir.clone(),
                    source,
                })?)
            }
        };
        let faults = options.faults;
        let (tx, rx) = std_mpsc::channel();
        let (leader_tx, leader_rx) = watch::channel(None);
        let state = Arc::new(Mutex::new(state));
        let applied = Arc::new(AtomicU64::new(0));
        let peers: PeerMap = Arc::new(RwLock::new(BTreeMap::new()));

        let driver = {
            let store = store.clone();
            let state = state.clone();
            let peers = peers.clone();
            let applied = applied.clone();
            let transport = Transport::new(
                config.id,
                peers.clone(),
                faults.clone(),
                runtime,
                tx.clone(),
            );
            let config = config.clone();
            tokio::task::spawn_blocking(move || {
                Driver::open(config, store, state, peers, transport, leader_tx, applied)
            })
            .await
            .map_err(|e| RaftError::InvalidConfig(format!("recovery task failed: {e}")))??
        };
        let id = config.id;
        let thread = std::thread::Builder::new()
            .name(format!("raft-{id}"))
            .spawn(move || driver.run(rx))
            .map_err(|e| RaftError::InvalidConfig(format!("spawn raft thread: {e}")))?;
        Ok(RaftHandle {
            shared: Arc::new(Shared {
                id,
                commands: tx,
                state,
                leader: leader_rx,
                peers,
                store: Mutex::new(Some(store)),
                faults,
                applied,
                thread: Mutex::new(Some(thread)),
                commit_seconds: meseta_metrics::seconds_histogram(),
            }),
        })
    }
}

impl<S> RaftHandle<S> {
    fn send(&self, cmd: Command) -> Result<(), RaftError> {
        self.shared
            .commands
            .send(cmd)
            .map_err(|_| RaftError::Stopped { id: self.shared.id })
    }

    fn stopped(&self) -> RaftError {
        RaftError::Stopped { id: self.shared.id }
    }

    /// Propose a command; resolves once it is committed *and* applied
    /// locally, with `apply()`'s output. On a follower it fails at once with
    /// [`RaftError::NotLeader`]. [`RaftError::LeadershipLost`] means the
    /// outcome is unknown (the command may still be applied).
    pub async fn propose(&self, command: Vec<u8>) -> Result<Vec<u8>, RaftError> {
        let started = Instant::now();
        let (reply, rx) = oneshot::channel();
        self.send(Command::Propose { command, reply })?;
        let out = rx.await.map_err(|_| self.stopped())??;
        self.shared
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(out)
    }

    /// The histogram of committed proposals' latency in seconds (from
    /// [`RaftHandle::propose`] to the entry applied on this node), for the
    /// role's metrics registry; clones share the observations.
    pub fn commit_histogram(&self) -> Histogram {
        self.shared.commit_seconds.clone()
    }

    /// Linearizable read barrier (raft ReadIndex): resolves when the local
    /// state machine has applied everything committed at the time of the
    /// call and this node was still the leader. Read the state after it.
    pub async fn read_barrier(&self) -> Result<(), RaftError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ReadBarrier { reply })?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// Add a voter or learner (with its address) or remove a node; resolves
    /// once the change is applied locally, with the new configuration.
    /// Leader only; one change at a time.
    pub async fn change_membership(
        &self,
        request: ConfChangeRequest,
    ) -> Result<ConfChangeResponse, RaftError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ChangeMembership { request, reply })?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// The state machine. `apply` runs under this lock: hold it briefly.
    pub fn state(&self) -> Arc<Mutex<S>> {
        self.shared.state.clone()
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// True while this node believes it is the leader.
    pub fn is_leader(&self) -> bool {
        *self.shared.leader.borrow() == Some(self.shared.id)
    }

    /// Current leader id and address, if known.
    pub fn leader(&self) -> Option<(u64, String)> {
        let id = (*self.shared.leader.borrow())?;
        let addr = read_peers(&self.shared.peers).get(&id).cloned()?;
        Some((id, addr))
    }

    /// Watch leader changes (`None` while there is no known leader).
    pub fn leadership(&self) -> watch::Receiver<Option<u64>> {
        self.shared.leader.clone()
    }

    /// Known peer addresses (id → host:port), including self.
    pub fn peers(&self) -> BTreeMap<u64, String> {
        read_peers(&self.shared.peers).clone()
    }

    /// Highest log index applied to the state machine.
    pub fn applied_index(&self) -> u64 {
        self.shared.applied.load(Ordering::Acquire)
    }

    /// Number of fsyncs the log store has done (batching shows up here); 0 after shutdown.
    pub fn sync_count(&self) -> u64 {
        self.store().map_or(0, |s| s.sync_count())
    }

    /// The log store, for inspection (first index, snapshot…); `None` after
    /// shutdown. Do not keep it: a held store keeps the sled directory locked.
    pub fn store(&self) -> Option<Arc<dyn LogStore>> {
        self.shared
            .store
            .lock()
            .expect("store slot lock poisoned")
            .clone()
    }

    /// This node's fault rules (tests).
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// The tonic service a master mounts on its gRPC port so peers can reach this node.
    pub fn raft_service(&self) -> RaftServer<RaftService> {
        RaftService::new(
            self.shared.id,
            self.shared.commands.clone(),
            self.shared.faults.clone(),
            self.shared.peers.clone(),
        )
    }

    /// Stop the raft thread and wait for it. Pending proposals fail with
    /// [`RaftError::Stopped`]; every handle clone stops working.
    pub async fn shutdown(self) {
        let _ = self.shared.commands.send(Command::Shutdown);
        let thread = self
            .shared
            .thread
            .lock()
            .expect("thread slot lock poisoned")
            .take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let store = self
            .shared
            .store
            .lock()
            .expect("store slot lock poisoned")
            .take();
        drop(store);
    }
}

// ---------------------------------------------------------------------------
// Snapshot payload: our header (peer addresses) + the state machine's bytes.

#[derive(Serialize, Deserialize, Default)]
struct SnapshotHeader {
    peers: BTreeMap<u64, String>,
    /// False for the bootstrap snapshot, which carries no state.
    has_state: bool,
}

fn encode_snapshot(peers: &BTreeMap<u64, String>, state: Option<Vec<u8>>) -> Vec<u8> {
    let header = SnapshotHeader {
        peers: peers.clone(),
        has_state: state.is_some(),
    };
    let json = serde_json::to_vec(&header).expect("a map of ids to strings serializes");
    let mut out = Vec::with_capacity(4 + json.len() + state.as_ref().map_or(0, Vec::len));
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    if let Some(s) = state {
        out.extend_from_slice(&s);
    }
    out
}

fn decode_snapshot(data: &[u8]) -> Result<(SnapshotHeader, &[u8]), RaftError> {
    let bad = |reason: String| RaftError::Decode {
        what: "snapshot header",
        reason,
    };
    let len: [u8; 4] = data
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| bad("too short".into()))?;
    let len = u32::from_be_bytes(len) as usize;
    let json = data
        .get(4..4 + len)
        .ok_or_else(|| bad("truncated".into()))?;
    let header: SnapshotHeader = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    Ok((header, &data[4 + len..]))
}

// ---------------------------------------------------------------------------
// Proposal context: kind byte + proposing node id + sequence number.

const CTX_COMMAND: u8 = 1;
const CTX_MEMBERSHIP: u8 = 2;

fn proposal_ctx(kind: u8, node: u64, seq: u64) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(17);
    ctx.push(kind);
    ctx.extend_from_slice(&node.to_be_bytes());
    ctx.extend_from_slice(&seq.to_be_bytes());
    ctx
}

enum Reply {
    Command(oneshot::Sender<Result<Vec<u8>, RaftError>>),
    Membership(oneshot::Sender<Result<ConfChangeResponse, RaftError>>),
}

impl Reply {
    fn fail(self, err: RaftError) {
        match self {
            Reply::Command(tx) => {
                let _ = tx.send(Err(err));
            }
            Reply::Membership(tx) => {
                let _ = tx.send(Err(err));
            }
        }
    }
}

struct Pending {
    ctx: Vec<u8>,
    reply: Reply,
}

/// What applying one entry produced, for its proposer.
enum Outcome {
    Command(Vec<u8>),
    Membership(Result<ConfChangeResponse, RaftError>),
    Nothing,
}

fn lock<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    m.lock()
        .expect("state machine lock poisoned: apply panicked")
}

// ---------------------------------------------------------------------------
// The raft thread.

struct Driver<S> {
    id: u64,
    raw: RawNode<RaftStorage>,
    store: Arc<dyn LogStore>,
    state: Arc<Mutex<S>>,
    peers: PeerMap,
    transport: Transport,
    leader_tx: watch::Sender<Option<u64>>,
    role: StateRole,
    tick: Duration,
    snapshot_interval: u64,
    applied: u64,
    applied_shared: Arc<AtomicU64>,
    snapshot_index: u64,
    snapshot_log_ratio: f64,
    /// Bytes of entries applied since the last snapshot, and that
    /// snapshot's size (see [`RaftConfig::snapshot_log_ratio`]).
    bytes_since_snapshot: u64,
    last_snapshot_bytes: u64,
    next_seq: u64,
    /// In-flight proposals by log index.
    proposals: BTreeMap<u64, Pending>,
    /// Read barriers waiting for this leader's first commit in its term.
    reads_deferred: Vec<oneshot::Sender<Result<(), RaftError>>>,
    /// Read barriers sent to raft, by context.
    reads_in_flight: HashMap<Vec<u8>, oneshot::Sender<Result<(), RaftError>>>,
    /// Read barriers confirmed by a quorum, waiting for apply to reach their index.
    reads_confirmed: Vec<(u64, oneshot::Sender<Result<(), RaftError>>)>,
}

impl<S: StateMachine> Driver<S> {
    fn open(
        config: RaftConfig,
        store: Arc<dyn LogStore>,
        state: Arc<Mutex<S>>,
        peers: PeerMap,
        transport: Transport,
        leader_tx: watch::Sender<Option<u64>>,
        applied_shared: Arc<AtomicU64>,
    ) -> Result<Self, RaftError> {
        let id = config.id;
        // Address book: what was persisted, overridden by the config's addresses.
        let mut book: BTreeMap<u64, String> = match store.get_meta(META_PEERS)? {
            Some(raw) => serde_json::from_slice(&raw).map_err(|e| RaftError::Decode {
                what: "peer addresses",
                reason: e.to_string(),
            })?,
            None => BTreeMap::new(),
        };
        // `--masters` seeds the address book on first start only: later the
        // stored book (kept by membership changes) is the truth, so a member
        // removed since is not brought back by a restart with the old list.
        if book.is_empty() {
            for (pid, addr) in &config.peers {
                book.insert(*pid, addr.clone());
            }
        }
        store.put_meta(
            META_PEERS,
            &serde_json::to_vec(&book).expect("peer map serializes"),
        )?;

        let initial = store.initial_state()?;
        let founding = config.peers.iter().any(|(pid, _)| *pid == id);
        if !initial.initialized() && store.last_index()? == 0 && founding {
            let mut cs = ConfState {
                voters: config.peers.iter().map(|(pid, _)| *pid).collect(),
                ..ConfState::default()
            };
            cs.voters.sort_unstable();
            cs.voters.dedup();
            let mut snap = Snapshot {
                data: encode_snapshot(&book, None).into(),
                ..Snapshot::default()
            };
            let meta = snap.mut_metadata();
            meta.index = INIT_INDEX;
            meta.term = INIT_TERM;
            meta.set_conf_state(cs);
            store.write(LogBatch {
                snapshot: Some(snap),
                ..LogBatch::default()
            })?;
            tracing::info!(node = id, voters = ?config.peers, "bootstrapped new raft cluster member");
        } else if !initial.initialized() && !founding {
            tracing::info!(
                node = id,
                "raft node starts empty; waiting to be added to a cluster"
            );
        }
        *peers.write().expect("peer map lock poisoned") = book;

        // Restore the state machine from the last snapshot; raft re-delivers
        // the committed entries after it.
        let snap = store.snapshot()?;
        let snapshot_index = snap.get_metadata().index;
        if snapshot_index > 0 {
            let (header, data) = decode_snapshot(&snap.data)?;
            if header.has_state {
                lock(&state)
                    .restore(snapshot_index, data)
                    .map_err(|reason| RaftError::RestoreSnapshot {
                        index: snapshot_index,
                        reason,
                    })?;
            }
        }
        applied_shared.store(snapshot_index, Ordering::Release);

        let raft_config = raft::Config {
            id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied: snapshot_index,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..raft::Config::default()
        };
        raft_config
            .validate()
            .map_err(|e| RaftError::InvalidConfig(e.to_string()))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut raw = RawNode::new(&raft_config, RaftStorage::new(store.clone()), &logger)
            .map_err(|source| RaftError::CreateNode { id, source })?;
        let voters = raw.raft.prs().conf().to_conf_state().voters;
        if voters == [id] {
            raw.campaign()
                .map_err(|source| RaftError::CreateNode { id, source })?;
        }
        let mut driver = Driver {
            id,
            raw,
            store,
            state,
            peers,
            transport,
            leader_tx,
            role: StateRole::Follower,
            tick: config.tick,
            snapshot_interval: config.snapshot_interval,
            applied: snapshot_index,
            applied_shared,
            snapshot_index,
            snapshot_log_ratio: config.snapshot_log_ratio,
            bytes_since_snapshot: 0,
            last_snapshot_bytes: 0,
            next_seq: 1,
            proposals: BTreeMap::new(),
            reads_deferred: Vec::new(),
            reads_in_flight: HashMap::new(),
            reads_confirmed: Vec::new(),
        };
        // Publish a single voter's leadership before `start` returns.
        let (leader, role) = (driver.raw.raft.leader_id, driver.raw.raft.state);
        driver.on_soft_state(leader, role);
        Ok(driver)
    }

    fn run(mut self, commands: std_mpsc::Receiver<Command>) {
        let mut next_tick = Instant::now() + self.tick;
        let outcome = loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut stop = false;
            match commands.recv_timeout(wait) {
                Ok(cmd) => stop = self.handle(cmd),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => stop = true,
            }
            let mut drained = 0;
            while !stop && drained < MAX_DRAIN {
                match commands.try_recv() {
                    Ok(cmd) => stop = self.handle(cmd),
                    Err(_) => break,
                }
                drained += 1;
            }
            if stop {
                break Ok(());
            }
            let now = Instant::now();
            if now >= next_tick {
                self.raw.tick();
                next_tick = now + self.tick;
            }
            if let Err(e) = self.on_ready() {
                break Err(e);
            }
        };
        if let Err(e) = &outcome {
            tracing::error!(node = self.id, error = %e, "raft node stopped after a failure");
        } else {
            tracing::info!(node = self.id, "raft node stopped");
        }
        self.leader_tx.send_replace(None);
        let id = self.id;
        let err = move || RaftError::Stopped { id };
        for (_, p) in std::mem::take(&mut self.proposals) {
            p.reply.fail(err());
        }
        self.fail_reads(err);
    }

    /// Returns true when the loop must stop.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Propose { command, reply } => self.propose(command, reply),
            Command::ReadBarrier { reply } => self.read_barrier(reply),
            Command::ChangeMembership { request, reply } => self.change_membership(request, reply),
            Command::Raft(msg) => {
                if let Err(e) = self.raw.step(*msg) {
                    tracing::debug!(node = self.id, error = %e, "raft message rejected");
                }
            }
            Command::Unreachable { peer } => self.raw.report_unreachable(peer),
            Command::SnapshotStatus { peer, delivered } => {
                let status = if delivered {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(peer, status);
            }
            Command::Shutdown => return true,
        }
        false
    }

    fn not_leader(&self) -> RaftError {
        let leader = self.raw.raft.leader_id;
        RaftError::NotLeader {
            leader: (leader != 0)
                .then(|| read_peers(&self.peers).get(&leader).cloned())
                .flatten(),
        }
    }

    fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    fn track(&mut self, ctx: Vec<u8>, reply: Reply) {
        let index = self.raw.raft.raft_log.last_index();
        if let Some(old) = self.proposals.insert(index, Pending { ctx, reply }) {
            old.reply.fail(RaftError::ProposalDropped {
                reason: format!("log entry {index} was overwritten by a newer leader"),
            });
        }
    }

    fn propose(&mut self, command: Vec<u8>, reply: oneshot::Sender<Result<Vec<u8>, RaftError>>) {
        if !self.is_leader() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let ctx = proposal_ctx(CTX_COMMAND, self.id, self.next_seq);
        self.next_seq += 1;
        match self.raw.propose(ctx.clone(), command) {
            Ok(()) => self.track(ctx, Reply::Command(reply)),
            Err(e) => {
                let _ = reply.send(Err(RaftError::ProposalDropped {
                    reason: e.to_string(),
                }));
            }
        }
    }

    fn change_membership(
        &mut self,
        request: ConfChangeRequest,
        reply: oneshot::Sender<Result<ConfChangeResponse, RaftError>>,
    ) {
        let node_id = request.node_id;
        let fail = |reason: &str| RaftError::ChangeMembership {
            node_id,
            reason: reason.to_string(),
        };
        if !self.is_leader() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if node_id == 0 {
            let _ = reply.send(Err(fail("node id 0 is reserved")));
            return;
        }
        let mut cc = ConfChange {
            node_id,
            ..ConfChange::default()
        };
        match request.kind() {
            Kind::AddVoter | Kind::AddLearner => {
                if request.address.is_empty() {
                    let _ = reply.send(Err(fail("an added node needs an address")));
                    return;
                }
                cc.set_change_type(if request.kind() == Kind::AddVoter {
                    ConfChangeType::AddNode
                } else {
                    ConfChangeType::AddLearnerNode
                });
                cc.context = request.address.clone().into_bytes().into();
            }
            Kind::RemoveNode => cc.set_change_type(ConfChangeType::RemoveNode),
        }
        let ctx = proposal_ctx(CTX_MEMBERSHIP, self.id, self.next_seq);
        self.next_seq += 1;
        match self.raw.propose_conf_change(ctx.clone(), cc) {
            Ok(()) => self.track(ctx, Reply::Membership(reply)),
            Err(e) => {
                let _ = reply.send(Err(fail(&e.to_string())));
            }
        }
    }

    fn read_barrier(&mut self, reply: oneshot::Sender<Result<(), RaftError>>) {
        if !self.is_leader() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if self.raw.raft.commit_to_current_term() {
            self.issue_read(reply);
        } else {
            // raft drops ReadIndex until the leader commits in its term.
            self.reads_deferred.push(reply);
        }
    }

    fn issue_read(&mut self, reply: oneshot::Sender<Result<(), RaftError>>) {
        let ctx = self.next_seq.to_be_bytes().to_vec();
        self.next_seq += 1;
        self.raw.read_index(ctx.clone());
        self.reads_in_flight.insert(ctx, reply);
    }

    fn fail_reads(&mut self, err: impl Fn() -> RaftError) {
        for r in self.reads_deferred.drain(..) {
            let _ = r.send(Err(err()));
        }
        for (_, r) in self.reads_in_flight.drain() {
            let _ = r.send(Err(err()));
        }
        for (_, r) in self.reads_confirmed.drain(..) {
            let _ = r.send(Err(err()));
        }
    }

    fn on_read_states(&mut self, states: Vec<ReadState>) {
        for rs in states {
            if let Some(reply) = self.reads_in_flight.remove(&rs.request_ctx) {
                self.reads_confirmed.push((rs.index, reply));
            }
        }
    }

    fn settle_reads(&mut self) {
        let applied = self.applied;
        let mut waiting = Vec::new();
        for (index, reply) in self.reads_confirmed.drain(..) {
            if applied >= index {
                let _ = reply.send(Ok(()));
            } else {
                waiting.push((index, reply));
            }
        }
        self.reads_confirmed = waiting;
        if self.is_leader()
            && !self.reads_deferred.is_empty()
            && self.raw.raft.commit_to_current_term()
        {
            for reply in std::mem::take(&mut self.reads_deferred) {
                self.issue_read(reply);
            }
        }
    }

    fn on_soft_state(&mut self, leader_id: u64, role: StateRole) {
        let leader = (leader_id != 0).then_some(leader_id);
        if *self.leader_tx.borrow() != leader {
            self.leader_tx.send_replace(leader);
            tracing::info!(node = self.id, leader = ?leader, term = self.raw.raft.term, "raft leader changed");
        }
        if role == self.role {
            return;
        }
        if role == StateRole::Leader {
            tracing::info!(
                node = self.id,
                term = self.raw.raft.term,
                "became raft leader"
            );
        } else if self.role == StateRole::Leader {
            tracing::info!(
                node = self.id,
                term = self.raw.raft.term,
                "stepped down as raft leader"
            );
            for (index, p) in std::mem::take(&mut self.proposals) {
                p.reply.fail(RaftError::LeadershipLost { index });
            }
            let not_leader = self.not_leader();
            let leader = match &not_leader {
                RaftError::NotLeader { leader } => leader.clone(),
                _ => None,
            };
            self.fail_reads(|| RaftError::NotLeader {
                leader: leader.clone(),
            });
        }
        self.role = role;
    }

    fn send(&mut self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        let dropped = self.transport.send(msgs);
        for peer in dropped.unreachable {
            self.raw.report_unreachable(peer);
        }
        for peer in dropped.snapshots {
            self.raw.report_snapshot(peer, SnapshotStatus::Failure);
        }
    }

    fn on_ready(&mut self) -> Result<(), RaftError> {
        if self.raw.store().take_snapshot_request() && self.applied > self.snapshot_index {
            self.take_snapshot()?;
        }
        if !self.raw.has_ready() {
            self.settle_reads();
            return Ok(());
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            let (leader, role) = (ss.leader_id, ss.raft_state);
            self.on_soft_state(leader, role);
        }
        self.send(rd.take_messages());

        let snapshot = (!rd.snapshot().is_empty()).then(|| rd.snapshot().clone());
        let batch = LogBatch {
            snapshot: snapshot.clone(),
            entries: rd.take_entries(),
            hard_state: rd.hs().cloned(),
            conf_state: None,
        };
        if !batch.is_empty() {
            self.store.write(batch)?;
        }
        if let Some(snap) = snapshot {
            self.restore(&snap)?;
        }
        self.send(rd.take_persisted_messages());
        self.on_read_states(rd.take_read_states());
        self.apply(rd.take_committed_entries())?;

        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.store.set_commit(commit)?;
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();

        self.maybe_snapshot()?;
        self.settle_reads();
        Ok(())
    }

    /// Install a snapshot received from the leader (already persisted).
    fn restore(&mut self, snap: &Snapshot) -> Result<(), RaftError> {
        let index = snap.get_metadata().index;
        let (header, data) = decode_snapshot(&snap.data)?;
        {
            // The snapshot's address book is the cluster's at that index
            // (removed members are gone from it); keep our own entry.
            let mut book = self.peers.write().expect("peer map lock poisoned");
            let own = book.get(&self.id).cloned();
            *book = header.peers;
            if let Some(own) = own {
                book.entry(self.id).or_insert(own);
            }
        }
        self.persist_peers()?;
        if header.has_state {
            lock(&self.state)
                .restore(index, data)
                .map_err(|reason| RaftError::RestoreSnapshot { index, reason })?;
        }
        // Proposals at or before the snapshot can no longer be matched.
        let stale: Vec<u64> = self.proposals.range(..=index).map(|(i, _)| *i).collect();
        for i in stale {
            if let Some(p) = self.proposals.remove(&i) {
                p.reply.fail(RaftError::LeadershipLost { index: i });
            }
        }
        self.applied = index;
        self.snapshot_index = index;
        self.applied_shared.store(index, Ordering::Release);
        tracing::info!(node = self.id, index, "restored raft snapshot from leader");
        Ok(())
    }

    fn persist_peers(&self) -> Result<(), RaftError> {
        let raw = serde_json::to_vec(&*read_peers(&self.peers)).expect("peer map serializes");
        self.store.put_meta(META_PEERS, &raw)?;
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        if entries.is_empty() {
            return Ok(());
        }
        let state = self.state.clone();
        let mut sm = lock(&state);
        for e in entries {
            let index = e.index;
            let outcome = match e.get_entry_type() {
                EntryType::EntryNormal => {
                    if e.context.first() == Some(&CTX_COMMAND) {
                        Outcome::Command(sm.apply(index, &e.data))
                    } else {
                        Outcome::Nothing
                    }
                }
                EntryType::EntryConfChange => match ConfChange::parse_from_bytes(&e.data) {
                    Ok(cc) => {
                        let address = String::from_utf8_lossy(&cc.context).into_owned();
                        let (node, kind) = (cc.node_id, cc.get_change_type());
                        let applied = self.raw.apply_conf_change(&cc);
                        Outcome::Membership(self.on_conf_change(applied, node, kind, address))
                    }
                    Err(err) => Outcome::Membership(Err(RaftError::Decode {
                        what: "conf change",
                        reason: err.to_string(),
                    })),
                },
                EntryType::EntryConfChangeV2 => match ConfChangeV2::parse_from_bytes(&e.data) {
                    Ok(cc) => {
                        let address = String::from_utf8_lossy(&cc.context).into_owned();
                        let first = cc.changes.first().map(|c| (c.node_id, c.get_change_type()));
                        let (node, kind) = first.unwrap_or((0, ConfChangeType::AddNode));
                        let applied = self.raw.apply_conf_change(&cc);
                        Outcome::Membership(self.on_conf_change(applied, node, kind, address))
                    }
                    Err(err) => Outcome::Membership(Err(RaftError::Decode {
                        what: "conf change",
                        reason: err.to_string(),
                    })),
                },
            };
            self.applied = index;
            self.bytes_since_snapshot += e.data.len() as u64;
            self.settle(index, &e.context, outcome);
        }
        drop(sm);
        self.applied_shared.store(self.applied, Ordering::Release);
        Ok(())
    }

    /// Persist the outcome of `RawNode::apply_conf_change` and update the address book.
    fn on_conf_change(
        &mut self,
        applied: raft::Result<ConfState>,
        node: u64,
        kind: ConfChangeType,
        address: String,
    ) -> Result<ConfChangeResponse, RaftError> {
        let cs = applied.map_err(|e| RaftError::ChangeMembership {
            node_id: node,
            reason: e.to_string(),
        })?;
        self.store.set_conf_state(cs.clone())?;
        {
            let mut book = self.peers.write().expect("peer map lock poisoned");
            match kind {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode if !address.is_empty() => {
                    book.insert(node, address.clone());
                }
                ConfChangeType::RemoveNode => {
                    book.remove(&node);
                }
                _ => {}
            }
        }
        self.persist_peers()?;
        tracing::info!(node = self.id, changed = node, change = ?kind, %address, voters = ?cs.voters, learners = ?cs.learners, "raft membership changed");
        if kind == ConfChangeType::RemoveNode && node == self.id {
            tracing::warn!(
                node = self.id,
                "this node was removed from the raft cluster"
            );
        }
        Ok(ConfChangeResponse {
            voters: cs.voters.clone(),
            learners: cs.learners.clone(),
        })
    }

    /// Answer the proposer of the entry at `index`, and fail proposals whose
    /// index was passed without their entry.
    fn settle(&mut self, index: u64, ctx: &[u8], outcome: Outcome) {
        while let Some(entry) = self.proposals.first_entry() {
            if *entry.key() >= index {
                break;
            }
            let (i, p) = entry.remove_entry();
            p.reply.fail(RaftError::ProposalDropped {
                reason: format!("log entry {i} was replaced by a newer leader"),
            });
        }
        let Some(p) = self.proposals.remove(&index) else {
            return;
        };
        if p.ctx.as_slice() != ctx {
            p.reply.fail(RaftError::ProposalDropped {
                reason: format!("log entry {index} was replaced by a newer leader"),
            });
            return;
        }
        match (p.reply, outcome) {
            (Reply::Command(tx), Outcome::Command(out)) => {
                let _ = tx.send(Ok(out));
            }
            (Reply::Membership(tx), Outcome::Membership(res)) => {
                let _ = tx.send(res);
            }
            (reply, _) => reply.fail(RaftError::ProposalDropped {
                reason: "raft discarded the proposal (another membership change is pending)".into(),
            }),
        }
    }

    fn maybe_snapshot(&mut self) -> Result<(), RaftError> {
        if self.snapshot_interval == 0
            || self.applied < self.snapshot_index + self.snapshot_interval
            || (self.bytes_since_snapshot as f64)
                < self.snapshot_log_ratio * self.last_snapshot_bytes as f64
        {
            return Ok(());
        }
        self.take_snapshot()
    }

    /// Snapshot the state machine at the applied index and compact the log up to it.
    fn take_snapshot(&mut self) -> Result<(), RaftError> {
        let index = self.applied;
        let data = lock(&self.state).snapshot();
        let payload = encode_snapshot(&read_peers(&self.peers), Some(data));
        let size = payload.len();
        let conf_state = self.raw.raft.prs().conf().to_conf_state();
        self.store.create_snapshot(index, conf_state, payload)?;
        self.store.compact(index)?;
        self.snapshot_index = index;
        self.bytes_since_snapshot = 0;
        self.last_snapshot_bytes = size as u64;
        tracing::info!(
            node = self.id,
            index,
            bytes = size,
            "raft snapshot taken; log compacted"
        );
        Ok(())
    }
}
