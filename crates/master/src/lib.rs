//! The meseta master: admits agents, keeps the registry in Raft, offers
//! resources to frameworks, routes launches to agents and status updates
//! back to frameworks. Serves gRPC (agents, frameworks, Raft peers) and the
//! operator HTTP endpoints on one port (5050 by default).

pub mod allocator;
mod api;
pub mod error;
mod fencing;

/// Raft's clock: one tick, and the shortest election timeout in ticks (the
/// leader lease in [`fencing`] is derived from both).
pub(crate) const RAFT_TICK_MS: u64 = 50;
pub(crate) const ELECTION_TICKS: usize = 8;

mod grpc;
mod handler;
mod kv;
pub mod registry;
pub mod state;
mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use meseta_raftstore::{Faults, RaftConfig, RaftHandle, StartOptions};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use error::{CallError, MasterError};
use registry::{MasterCommand, Registry, RegistryCommand};
use state::MasterState;

/// How a master is started (`meseta master` flags).
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Address to bind, e.g. `0.0.0.0:5050` (port 0 picks a free one).
    pub listen: SocketAddr,
    /// `host:port` other processes use to reach this master; defaults to
    /// the bound address. Must appear in `masters` when that is given.
    pub advertise: Option<String>,
    /// Every master's `host:port` (`--masters A,B,C`); empty = just this one.
    /// The founding members of the Raft cluster have ids 1..=n in this order.
    pub masters: Vec<String>,
    /// This master's Raft node id; default: its position in `masters` (1-based).
    pub node_id: Option<u64>,
    /// Join an existing cluster instead of founding one: the node starts
    /// empty and waits for the leader to add it (`POST /master/membership`).
    /// Needs `node_id`, an id the cluster never used.
    pub join: bool,
    pub data_dir: PathBuf,
    /// The master pings each agent this often and expects an answer
    /// within it (`--agent-ping-timeout`, Mesos' default 15 s).
    pub agent_ping_timeout: Duration,
    /// An agent that missed this many pings in a row (nothing heard from it
    /// for `agent_ping_timeout × max_agent_ping_timeouts`) is marked
    /// unreachable: its offers are rescinded and its tasks reported
    /// TASK_UNREACHABLE (TASK_LOST to frameworks that are not partition
    /// aware). `--max-agent-ping-timeouts`, Mesos' default 5.
    pub max_agent_ping_timeouts: u32,
    /// An agent unreachable this long is marked gone: its tasks are
    /// reported TASK_GONE and, should it come back, it is told to shut
    /// them down (`--agent-removal-timeout`).
    pub agent_removal_timeout: Duration,
    /// After a failover, an agent in the registry that has not
    /// re-registered with the new leader within this is marked
    /// unreachable (Mesos' `--agent_reregister_timeout`).
    pub agent_reregister_timeout: Duration,
    /// Deliberate loss of Raft messages (tests cut masters off in-process
    /// by sharing one `Faults` between them); empty in production.
    pub raft_faults: Faults,
    /// Role weights and offer timeout (`--weights`, `--offer-timeout`).
    pub allocator: allocator::AllocatorConfig,
}

impl MasterConfig {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> MasterConfig {
        MasterConfig {
            listen,
            advertise: None,
            masters: Vec::new(),
            node_id: None,
            join: false,
            data_dir,
            agent_ping_timeout: Duration::from_secs(15),
            max_agent_ping_timeouts: 5,
            agent_removal_timeout: Duration::from_secs(600),
            agent_reregister_timeout: Duration::from_secs(120),
            raft_faults: Faults::new(),
            allocator: allocator::AllocatorConfig::default(),
        }
    }
}

/// Shared by the gRPC services, the HTTP handlers and the background loops.
pub(crate) struct Master {
    pub(crate) address: String,
    pub(crate) raft: RaftHandle<Registry>,
    state: Mutex<MasterState>,
    pub(crate) allocate: Notify,
    /// The leader's lease: acting needs it (see [`fencing`]).
    pub(crate) lease: fencing::LeaderLease,
    pub(crate) config: MasterConfig,
    /// When this master started (seconds since the epoch).
    pub(crate) started_at: f64,
}

impl Master {
    /// Lock the in-memory state. A poisoned lock means a bug panicked while
    /// holding it; the state itself is still consistent per operation.
    pub(crate) fn state(&self) -> MutexGuard<'_, MasterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn leader_address(&self) -> Option<String> {
        self.raft.leader().map(|(_, addr)| addr)
    }

    pub(crate) fn ensure_leader(&self) -> Result<(), tonic::Status> {
        if self.raft.is_leader() {
            Ok(())
        } else {
            Err(self.not_leader_status())
        }
    }

    /// How long an agent may stay silent before it is marked unreachable.
    pub(crate) fn agent_silence_limit(&self) -> Duration {
        self.config.agent_ping_timeout * self.config.max_agent_ping_timeouts.max(1)
    }

    /// UNAVAILABLE naming the current leader, for callers of a follower.
    pub(crate) fn not_leader_status(&self) -> tonic::Status {
        error::not_leader_status(self.leader_address().as_deref())
    }

    /// Replicate a registry change; resolves once committed and applied.
    pub(crate) async fn propose(&self, cmd: RegistryCommand) -> Result<(), MasterError> {
        let bytes = MasterCommand::Registry(cmd).encode();
        let reply = self.raft.propose(bytes).await?;
        if reply.is_empty() {
            Ok(())
        } else {
            Err(MasterError::Registry(
                String::from_utf8_lossy(&reply).into_owned(),
            ))
        }
    }
}

/// A master bound to its port, ready to serve.
pub struct BoundMaster {
    listener: TcpListener,
    master: Arc<Master>,
}

impl BoundMaster {
    /// Bind the port and start the Raft node.
    pub async fn bind(config: MasterConfig) -> Result<BoundMaster, MasterError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| MasterError::Bind {
                    addr: config.listen.to_string(),
                    source,
                })?;
        let local = listener.local_addr().map_err(|source| MasterError::Bind {
            addr: config.listen.to_string(),
            source,
        })?;
        let address = config
            .advertise
            .clone()
            .unwrap_or_else(|| meseta_proto::serve::advertised(local));
        let masters = if config.masters.is_empty() {
            vec![address.clone()]
        } else {
            config.masters.clone()
        };
        let position = masters.iter().position(|m| m == &address);
        let id = match (config.node_id, position) {
            (Some(0), _) => return Err(MasterError::InvalidNodeId(0)),
            (Some(id), _) => id,
            (None, Some(p)) if !config.join => p as u64 + 1,
            _ => {
                return Err(MasterError::NotAMember {
                    address: address.clone(),
                    masters: masters.clone(),
                })
            }
        };
        // Founding members: ids 1..=n in `--masters` order (a joining
        // master is given the same list, for the addresses of the founding
        // ids; its own id is not among them, so it does not bootstrap and
        // waits to be added; the leader's snapshot brings the current book).
        let peers: Vec<(u64, String)> = masters
            .iter()
            .enumerate()
            .map(|(i, m)| (i as u64 + 1, m.clone()))
            .filter(|(pid, _)| !config.join || *pid != id)
            .collect();

        if config.join {
            tracing::info!(node = id, %address, "joining an existing master cluster; waiting to be added by its leader");
        }
        let raft_config = RaftConfig {
            id,
            peers,
            data_dir: config.data_dir.join("raft"),
            // Election timeout 0.4–0.8 s (randomized in [8, 16) ticks of
            // 50 ms), heartbeats every 100 ms: failover under 1 s at the
            // median (docs/architecture.md, "Scale and performance").
            tick: Duration::from_millis(RAFT_TICK_MS),
            election_ticks: ELECTION_TICKS,
            heartbeat_ticks: 2,
            snapshot_interval: 10_000,
            snapshot_log_ratio: 1.0,
        };
        let options = StartOptions {
            store: None,
            faults: config.raft_faults.clone(),
        };
        let raft = RaftHandle::start_with(raft_config, Registry::default(), options).await?;
        let master = Arc::new(Master {
            address,
            raft,
            state: Mutex::new(fresh_state(&config)),
            allocate: Notify::new(),
            lease: fencing::LeaderLease::default(),
            config,
            started_at: state::now_secs(),
        });
        Ok(BoundMaster { listener, master })
    }

    /// `host:port` this master is reached at.
    pub fn address(&self) -> &str {
        &self.master.address
    }

    /// Serve until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), MasterError> {
        let master = self.master;
        tracing::info!(address = %master.address, "master listening");
        let background = tokio::spawn(background_loop(master.clone()));
        let leases = tokio::spawn(kv::lease_loop(master.clone()));
        let http = meseta_metrics::HttpMetrics::default();
        let registry = Arc::new(api::prometheus::registry(&master, &http));
        let fencing = tokio::spawn(fencing::lease_loop(master.clone()));
        let router = grpc::routes(master.clone())
            .merge(api::router(master.clone()))
            .merge(meseta_metrics::routes(registry))
            .fallback(api::not_found)
            .layer(axum::middleware::from_fn_with_state(
                http,
                meseta_metrics::track_http,
            ))
            // Cross-site writes are refused on the UI's origin (API and
            // gRPC clients send no Origin and are not affected).
            .layer(axum::middleware::from_fn(meseta_webui::refuse_cross_site));
        let addr = master.address.clone();
        let result = meseta_proto::serve::serve(self.listener, router, shutdown)
            .await
            .map_err(|source| MasterError::Serve { addr, source });
        background.abort();
        leases.abort();
        fencing.abort();
        master.raft.clone().shutdown().await;
        result
    }
}

/// Allocation on events (batched: a burst of notifications is one pass) and
/// every second; agent liveness; leadership changes.
async fn background_loop(master: Arc<Master>) {
    let mut leadership = master.raft.leadership();
    let mut was_leader = master.raft.is_leader();
    let mut leading_since = std::time::Instant::now();
    if was_leader {
        api::restore_allocator(&master);
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = master.allocate.notified() => {}
            _ = tick.tick() => {
                if master.raft.is_leader() {
                    agent_liveness(&master, leading_since).await;
                }
                let expired = master.state().expire_frameworks(std::time::Instant::now());
                for id in expired {
                    if let Err(e) = master.propose(RegistryCommand::RemoveFramework { id: id.clone() }).await {
                        tracing::warn!(framework = %id, error = %e, "could not remove the framework from the registry");
                    }
                }
            }
            changed = leadership.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let leader = master.raft.is_leader();
        if leader != was_leader {
            master.lease.drop_lease();
            if leader {
                tracing::info!(address = %master.address, "elected leading master");
                leading_since = std::time::Instant::now();
                api::restore_allocator(&master);
            } else {
                tracing::warn!(address = %master.address, leader = ?master.leader_address(), "no longer the leading master; dropping agents and frameworks");
                *master.state() = fresh_state(&master.config);
            }
            was_leader = leader;
        }
        // A leader that cannot confirm its lease makes no offers.
        if leader && master.lease.valid() {
            master.state().allocate();
        }
    }
}

/// An empty in-memory state for this master's configuration.
fn fresh_state(config: &MasterConfig) -> MasterState {
    let mut state = MasterState::with_config(config.allocator.clone());
    state.agent_heartbeat_interval = config.agent_ping_timeout;
    state
}

/// Pings, unreachable and gone agents (see [`MasterState::expire_agents`]),
/// recorded in the registry; and, `--agent-reregister-timeout` after this
/// master became leader, agents of the registry that never re-registered
/// with it are marked unreachable too.
async fn agent_liveness(master: &Master, leading_since: std::time::Instant) {
    let expiry = master.state().expire_agents(
        master.agent_silence_limit(),
        master.config.agent_removal_timeout,
    );
    for (id, at) in expiry.unreachable {
        if let Err(e) = master
            .propose(RegistryCommand::MarkAgentUnreachable { id: id.clone(), at })
            .await
        {
            tracing::warn!(agent = %id, error = %e, "could not record the unreachable agent in the registry");
        }
    }
    for (id, at, reason) in expiry.gone {
        if let Err(e) = master
            .propose(RegistryCommand::MarkAgentGone {
                id: id.clone(),
                at,
                reason,
            })
            .await
        {
            tracing::warn!(agent = %id, error = %e, "could not record the removed agent in the registry");
        }
    }
    // Unreachable agents this leader never saw (it was elected while they
    // were cut off) are removed on the same clock, from the registry's time.
    let now = state::now_secs();
    let removal = master.config.agent_removal_timeout.as_secs_f64();
    let (never_back, overdue): (Vec<String>, Vec<String>) = {
        let registry = master.raft.state();
        let r = registry.lock().unwrap_or_else(|p| p.into_inner());
        let s = master.state();
        let never_back = if leading_since.elapsed() > master.config.agent_reregister_timeout {
            r.agents
                .keys()
                .filter(|id| !r.unreachable.contains_key(*id) && !s.agents.contains_key(*id))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let overdue = r
            .unreachable
            .iter()
            .filter(|(id, at)| now - **at > removal && !s.agents.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        (never_back, overdue)
    };
    for id in never_back {
        tracing::warn!(agent = %id, "agent did not re-register with this leader within the re-registration timeout; marked unreachable");
        if let Err(e) = master
            .propose(RegistryCommand::MarkAgentUnreachable {
                id: id.clone(),
                at: now,
            })
            .await
        {
            tracing::warn!(agent = %id, error = %e, "could not record the unreachable agent in the registry");
        }
    }
    for id in overdue {
        let reason = format!(
            "the agent was unreachable for more than the agent removal timeout ({removal}s)"
        );
        tracing::warn!(agent = %id, "agent marked gone");
        if let Err(e) = master
            .propose(RegistryCommand::MarkAgentGone {
                id: id.clone(),
                at: now,
                reason,
            })
            .await
        {
            tracing::warn!(agent = %id, error = %e, "could not record the removed agent in the registry");
        }
    }
}
