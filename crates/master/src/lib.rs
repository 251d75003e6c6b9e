//! The meseta master: admits agents, keeps the registry in Raft, offers
//! resources to frameworks, routes launches to agents and status updates
//! back to frameworks. Serves gRPC (agents, frameworks, Raft peers) and the
//! operator HTTP endpoints on one port (5050 by default).

pub mod allocator;
mod api;
pub mod error;
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
    /// An agent silent this long is treated as disconnected.
    pub agent_ping_timeout: Duration,
    /// A disconnected agent that does not come back within this has its
    /// tasks reported TASK_UNREACHABLE.
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
            agent_ping_timeout: Duration::from_secs(30),
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
            tick: Duration::from_millis(50),
            election_ticks: 8,
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
            state: Mutex::new(MasterState::with_config(config.allocator.clone())),
            allocate: Notify::new(),
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
        let router = grpc::routes(master.clone())
            .merge(api::router(master.clone()))
            .fallback(api::not_found)
            // Cross-site writes are refused on the UI's origin (API and
            // gRPC clients send no Origin and are not affected).
            .layer(axum::middleware::from_fn(meseta_webui::refuse_cross_site));
        let addr = master.address.clone();
        let result = meseta_proto::serve::serve(self.listener, router, shutdown)
            .await
            .map_err(|source| MasterError::Serve { addr, source });
        background.abort();
        leases.abort();
        master.raft.clone().shutdown().await;
        result
    }
}

/// Allocation on events (batched: a burst of notifications is one pass) and
/// every second; agent liveness; leadership changes.
async fn background_loop(master: Arc<Master>) {
    let mut leadership = master.raft.leadership();
    let mut was_leader = master.raft.is_leader();
    if was_leader {
        api::restore_allocator(&master);
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = master.allocate.notified() => {}
            _ = tick.tick() => {
                let gone = {
                    let mut s = master.state();
                    s.expire_agents(master.config.agent_ping_timeout, master.config.agent_reregister_timeout)
                };
                for id in gone {
                    if let Err(e) = master.propose(RegistryCommand::RemoveAgent { id: id.clone() }).await {
                        tracing::warn!(agent = %id, error = %e, "could not remove the agent from the registry");
                    }
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
            if leader {
                tracing::info!(address = %master.address, "elected leading master");
                api::restore_allocator(&master);
            } else {
                tracing::warn!(address = %master.address, leader = ?master.leader_address(), "no longer the leading master; dropping agents and frameworks");
                *master.state() = MasterState::with_config(master.config.allocator.clone());
            }
            was_leader = leader;
        }
        if leader {
            master.state().allocate();
        }
    }
}
