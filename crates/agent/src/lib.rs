//! The meseta agent: advertises its host's resources to the leading master,
//! launches tasks in a containerizer, supervises them and delivers their
//! status updates reliably (checkpointed, then resent until acknowledged).
//!
//! Tasks outlive the agent process: everything needed to find them again is
//! checkpointed under `--work-dir` ([`checkpoint`]), and an agent that starts
//! on a work dir with a checkpoint re-attaches to the tasks still running,
//! reports the ones that ended while it was down, and kills whatever of its
//! own no checkpoint names (see `tasks::recover`).
//!
//! Serves `/state`, `/health`, `/monitor/statistics` and the sandbox files
//! API (`/files/read`, `/files/download`, `/files/browse`) over HTTP (5051
//! by default); talks to the master over one outbound gRPC stream, so the
//! master never needs to reach the agent.

mod checkpoint;
pub mod containerizer;
pub mod error;
pub mod fetcher;
mod files;
pub mod health;
mod http;
mod link;
mod prometheus;
pub mod resources;
mod status_updates;
mod tasks;
pub mod user;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use meseta_core::attributes::parse_attributes;
use meseta_core::Resources;
use meseta_proto::v1 as pb;
use tokio::net::TcpListener;

use checkpoint::Checkpoint;
pub use checkpoint::CheckpointError;
use containerizer::{Containerizer, LinuxConfig};
pub use error::AgentError;
use status_updates::StatusUpdateManager;
use tasks::TaskTable;

/// Mesos' default `--fetcher_cache_size`: 2 GB.
pub const DEFAULT_FETCHER_CACHE_SIZE: u64 = 2 * 1024 * 1024 * 1024;

/// Where the Docker daemon listens by default.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// What the agent does with the tasks it finds at start (Mesos' `--recover`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoverMode {
    /// Re-attach to every task still running and report the ones that ended
    /// meanwhile.
    #[default]
    Reconnect,
    /// Kill every task found; the master then reports them lost.
    Cleanup,
}

impl std::str::FromStr for RecoverMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reconnect" => Ok(RecoverMode::Reconnect),
            "cleanup" => Ok(RecoverMode::Cleanup),
            other => Err(format!(
                "unknown --recover '{other}' (expected 'reconnect' or 'cleanup')"
            )),
        }
    }
}

/// What happens to the tasks when the agent stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Leave them running; the next agent on this work dir re-attaches (an
    /// agent restart or upgrade, Mesos' SIGTERM).
    KeepTasks,
    /// Kill them and deliver their last updates first (Mesos' SIGUSR1; what
    /// `meseta up` does on Ctrl-C).
    KillTasks,
}

/// How an agent is started (`meseta agent` flags).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// HTTP address to bind (`0.0.0.0:5051`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// `host:port` others use to reach the HTTP endpoint; defaults to the
    /// bound address.
    pub advertise: Option<String>,
    /// Every master's `host:port`; the agent finds the leader among them.
    pub masters: Vec<String>,
    /// `--resources "cpus:2;mem:2048;disk:1000;ports:[31000-31100]"`:
    /// overrides detection per resource name.
    pub resources: Option<String>,
    /// `--attributes "rack:r1;zone:a"`.
    pub attributes: Option<String>,
    pub hostname: Option<String>,
    /// Sandboxes and the checkpoint; made absolute at start. Task users must
    /// be able to traverse it.
    pub work_dir: PathBuf,
    /// `linux`, `posix` (or `fake`), or None to pick (linux as root with
    /// cgroups).
    pub isolation: Option<String>,
    /// Hard CPU caps with CFS quota (Mesos' `--cgroups_enable_cfs`).
    pub cgroups_enable_cfs: bool,
    /// Parent cgroup of this host's agents (Mesos' `--cgroups_root`); each
    /// agent keeps its containers in a child of it named after its work dir.
    pub cgroups_root: String,
    /// Per-task `pids.max` (None: unlimited).
    pub cgroups_max_pids: Option<u64>,
    /// Run tasks as their user (Mesos' `--switch_user`).
    pub switch_user: bool,
    pub recover: RecoverMode,
    /// What [`BoundAgent::serve`] does with the tasks when it stops.
    pub stop: StopMode,
    /// `--containerizers` (Mesos' names: `mesos`, `docker`); None: `mesos`,
    /// and `docker` too when the daemon answers.
    pub containerizers: Option<Vec<String>>,
    /// The Docker daemon's socket.
    pub docker_socket: String,
    /// Most bytes the fetcher cache keeps (Mesos' `--fetcher_cache_size`).
    pub fetcher_cache_size: u64,
}

impl AgentConfig {
    pub fn new(listen: SocketAddr, masters: Vec<String>, work_dir: PathBuf) -> AgentConfig {
        AgentConfig {
            listen,
            advertise: None,
            masters,
            resources: None,
            attributes: None,
            hostname: None,
            work_dir,
            isolation: None,
            cgroups_enable_cfs: false,
            cgroups_root: containerizer::DEFAULT_CGROUPS_ROOT.to_string(),
            cgroups_max_pids: Some(containerizer::DEFAULT_PIDS_MAX),
            switch_user: true,
            recover: RecoverMode::Reconnect,
            stop: StopMode::KeepTasks,
            containerizers: None,
            docker_socket: DEFAULT_DOCKER_SOCKET.to_string(),
            fetcher_cache_size: DEFAULT_FETCHER_CACHE_SIZE,
        }
    }
}

/// Shared by the master link, the task supervisors and the HTTP handlers.
pub(crate) struct Agent {
    pub(crate) config: AgentConfig,
    pub(crate) address: String,
    pub(crate) hostname: String,
    pub(crate) total: Resources,
    pub(crate) attributes: Vec<pb::Attribute>,
    pub(crate) containerizer: Arc<dyn Containerizer>,
    pub(crate) agent_id: Mutex<Option<String>>,
    pub(crate) tasks: Mutex<TaskTable>,
    /// Frameworks with a task here, as last launched.
    pub(crate) frameworks: Mutex<HashMap<String, pb::FrameworkInfo>>,
    pub(crate) link: Arc<link::Link>,
    pub(crate) checkpoint: Arc<Checkpoint>,
    pub(crate) updates: StatusUpdateManager,
    /// The cgroup holding this agent's containers (relative to each
    /// hierarchy's root), under linux isolation.
    pub(crate) containers_cgroup: String,
    /// Root filesystems of images for native tasks.
    pub(crate) images: containerizer::image::ImageStore,
    /// The containerizers this agent runs, by Mesos' names.
    pub(crate) containerizer_names: Vec<&'static str>,
    /// The Docker containerizer (also inside `containerizer`), for COMMAND
    /// health checks of Docker tasks.
    pub(crate) docker: Option<containerizer::DockerContainerizer>,
    /// The running health checks, by task id.
    pub(crate) health: Mutex<HashMap<String, health::Checker>>,
    /// Stages `uris` / `fetch` into sandboxes, with a cache.
    pub(crate) fetcher: fetcher::Fetcher,
}

impl Agent {
    pub(crate) fn tasks(&self) -> MutexGuard<'_, TaskTable> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn frameworks(&self) -> MutexGuard<'_, HashMap<String, pb::FrameworkInfo>> {
        self.frameworks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn agent_id(&self) -> Option<String> {
        self.agent_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn info(&self) -> pb::AgentInfo {
        pb::AgentInfo {
            hostname: self.hostname.clone(),
            address: self.address.clone(),
            resources: self.total.to_proto(),
            attributes: self.attributes.clone(),
            id: self.agent_id().map(|value| pb::AgentId { value }),
        }
    }

    /// Where the container's run directory is (outside its sandbox).
    pub(crate) fn run_dir(&self, container_id: &str) -> PathBuf {
        self.config
            .work_dir
            .join("meta")
            .join("runs")
            .join(container_id)
    }
}

/// The cgroup (under `--cgroups-root`) that holds this agent's containers:
/// named after the work dir, so that several agents on one host never touch
/// each other's tasks, and an agent whose checkpoint was wiped still finds
/// (and kills) what its predecessor on that work dir left.
fn agent_cgroup(work_dir: &Path) -> String {
    // FNV-1a: stable across builds and Rust versions, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in work_dir.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("agent-{hash:016x}")
}

/// The Docker daemon the agent uses, as `--containerizers` asks: required
/// when `docker` is named, tried (and said in one line when missing) when
/// nothing is named.
async fn docker_daemon(config: &AgentConfig) -> Result<Option<bollard::Docker>, AgentError> {
    let names = config.containerizers.clone();
    if let Some(names) = &names {
        for name in names {
            if name != "mesos" && name != "docker" {
                return Err(AgentError::Config(format!(
                    "unknown containerizer '{name}' in --containerizers (expected mesos, docker)"
                )));
            }
        }
        if !names.iter().any(|n| n == "mesos") {
            return Err(AgentError::Config(
                "--containerizers must include mesos (the native containerizer)".into(),
            ));
        }
    }
    let wanted = names.as_ref().map(|n| n.iter().any(|n| n == "docker"));
    if wanted == Some(false) {
        return Ok(None);
    }
    match containerizer::docker::connect(&config.docker_socket).await {
        Ok(docker) => Ok(Some(docker)),
        Err(why) if wanted == Some(true) => Err(AgentError::Config(format!(
            "--containerizers names docker, but the daemon at {} does not answer: {why}",
            config.docker_socket
        ))),
        Err(why) => {
            tracing::info!(socket = %config.docker_socket, "not running Docker tasks: the daemon does not answer ({why}); containerizers: mesos");
            Ok(None)
        }
    }
}

/// An agent bound to its HTTP port, its tasks recovered, ready to run.
pub struct BoundAgent {
    /// None for a hollow agent (no HTTP endpoint).
    listener: Option<TcpListener>,
    agent: Arc<Agent>,
}

impl BoundAgent {
    /// Opens the checkpoint, detects resources, picks the containerizer,
    /// binds the HTTP port and recovers the tasks of an earlier run (see
    /// [`RecoverMode`]) before anything registers with a master.
    pub async fn bind(config: AgentConfig) -> Result<BoundAgent, AgentError> {
        Self::bind_with(config, None).await
    }

    /// A hollow agent, for load tests that stand many hosts up in one
    /// process (`meseta-bench hollow`): the real agent (registration,
    /// heartbeats, launch and kill handling, status updates with their
    /// acknowledgements) over `fake` instead of a host's processes, with
    /// its checkpoint in memory, no Docker and no HTTP endpoint (it
    /// advertises `listen` as its address). `fake` stays the caller's
    /// handle to the tasks: it can end any of them.
    pub async fn bind_hollow(
        config: AgentConfig,
        fake: containerizer::FakeContainerizer,
    ) -> Result<BoundAgent, AgentError> {
        Self::bind_with(config, Some(fake)).await
    }

    async fn bind_with(
        mut config: AgentConfig,
        hollow: Option<containerizer::FakeContainerizer>,
    ) -> Result<BoundAgent, AgentError> {
        if config.masters.is_empty() {
            return Err(AgentError::Config(
                "--masters must name at least one master".into(),
            ));
        }
        let work_dir_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AgentError::WorkDir { path, source }
        };
        config.work_dir =
            std::path::absolute(&config.work_dir).map_err(work_dir_error(&config.work_dir))?;
        let runs = config.work_dir.join("meta").join("runs");
        std::fs::create_dir_all(&runs).map_err(work_dir_error(&runs))?;
        let checkpoint = Arc::new(match hollow {
            Some(_) => Checkpoint::in_memory(),
            None => Checkpoint::open(&config.work_dir.join("meta").join("checkpoint"))?,
        });
        let recovered = checkpoint.load()?;
        let total = resources::detect(&config.work_dir, config.resources.as_deref())?;
        let attributes = match &config.attributes {
            Some(text) => parse_attributes(text)
                .map_err(|e| AgentError::Config(e.to_string()))?
                .iter()
                .map(|a| a.to_proto())
                .collect(),
            None => Vec::new(),
        };
        let cgroups_root = format!(
            "{}/{}",
            config.cgroups_root.trim_matches('/'),
            agent_cgroup(&config.work_dir)
        );
        let is_hollow = hollow.is_some();
        let (native, docker): (Arc<dyn Containerizer>, _) = match hollow {
            Some(fake) => (Arc::new(fake), None),
            None => (
                containerizer::detect_with_config(
                    config.isolation.as_deref(),
                    LinuxConfig {
                        cgroups_root: cgroups_root.clone(),
                        cfs_quota: config.cgroups_enable_cfs,
                        pids_max: config.cgroups_max_pids,
                        ..LinuxConfig::default()
                    },
                )?,
                docker_daemon(&config).await?,
            ),
        };
        let mut containerizer_names = vec!["mesos"];
        let docker_containerizer = docker.clone().map(|d| {
            containerizer_names.push("docker");
            containerizer::DockerContainerizer::new(d, &agent_cgroup(&config.work_dir))
        });
        let containerizer: Arc<dyn Containerizer> =
            Arc::new(containerizer::ComposingContainerizer::new(
                native,
                docker_containerizer
                    .clone()
                    .map(|d| Arc::new(d) as Arc<dyn Containerizer>),
            ));
        let images = containerizer::image::ImageStore::new(config.work_dir.join("images"), docker);
        let fetcher = fetcher::Fetcher::new(fetcher::FetcherConfig {
            cache_dir: config.work_dir.join("cache").join("fetcher"),
            cache_limit_bytes: config.fetcher_cache_size,
        })?;
        // A hollow agent serves no HTTP: ten thousand of them in one
        // process would need ten thousand more file descriptors than a
        // process may have here. It advertises its --listen address.
        let (listener, local) = if is_hollow {
            (None, config.listen)
        } else {
            let listener =
                TcpListener::bind(config.listen)
                    .await
                    .map_err(|source| AgentError::Bind {
                        addr: config.listen.to_string(),
                        source,
                    })?;
            let local = listener.local_addr().map_err(|source| AgentError::Bind {
                addr: config.listen.to_string(),
                source,
            })?;
            (Some(listener), local)
        };
        let hostname = config.hostname.clone().unwrap_or_else(resources::hostname);
        let address = config
            .advertise
            .clone()
            .unwrap_or_else(|| meseta_proto::serve::advertised(local));
        tracing::info!(
            address = %address,
            hostname = %hostname,
            resources = %total,
            isolation = containerizer.name(),
            work_dir = %config.work_dir.display(),
            "agent starting"
        );
        let link = Arc::new(link::Link::default());
        let agent = Arc::new(Agent {
            address,
            hostname,
            total,
            attributes,
            containerizer,
            agent_id: Mutex::new(recovered.agent_id.clone()),
            tasks: Mutex::new(TaskTable::default()),
            frameworks: Mutex::new(HashMap::new()),
            updates: StatusUpdateManager::new(checkpoint.clone(), link.clone()),
            link,
            checkpoint,
            containers_cgroup: cgroups_root,
            images,
            containerizer_names,
            docker: docker_containerizer,
            health: Mutex::new(HashMap::new()),
            fetcher,
            config,
        });
        tasks::recover(&agent, recovered).await;
        Ok(BoundAgent { listener, agent })
    }

    /// `host:port` of the agent's HTTP endpoint.
    pub fn address(&self) -> &str {
        &self.agent.address
    }

    /// Run until `shutdown` resolves, then stop as [`AgentConfig::stop`]
    /// says.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), AgentError> {
        let mode = self.agent.config.stop;
        self.serve_until(async move {
            shutdown.await;
            mode
        })
        .await
    }

    /// Run until `shutdown` resolves with what to do with the tasks.
    pub async fn serve_until(
        self,
        shutdown: impl std::future::Future<Output = StopMode> + Send + 'static,
    ) -> Result<(), AgentError> {
        let agent = self.agent;
        let link_task = tokio::spawn(link::run(agent.clone()));
        let retry_task = tokio::spawn(tasks::retry_loop(agent.clone()));
        let addr = agent.address.clone();
        let (mode_tx, mode_rx) = tokio::sync::oneshot::channel();
        let stop = async move {
            let _ = mode_tx.send(shutdown.await);
        };
        let result = match self.listener {
            Some(listener) => {
                let http_metrics = meseta_metrics::HttpMetrics::default();
                let registry = Arc::new(prometheus::registry(&agent, &http_metrics));
                let router = http::router(agent.clone())
                    .merge(meseta_metrics::routes(registry))
                    .layer(axum::middleware::from_fn_with_state(
                        http_metrics,
                        meseta_metrics::track_http,
                    ));
                meseta_proto::serve::serve(listener, router, stop)
                    .await
                    .map_err(|source| AgentError::Serve { addr, source })
            }
            // A hollow agent (benches) serves no HTTP.
            None => {
                stop.await;
                Ok(())
            }
        };
        let mode = mode_rx.await.unwrap_or(StopMode::KeepTasks);
        if mode == StopMode::KillTasks {
            // While the master link still runs, so the last updates go out.
            tasks::kill_all(&agent).await;
            tasks::wait_delivered(&agent, Duration::from_secs(5)).await;
        } else {
            let running = agent.tasks().tasks.len();
            tracing::info!(
                tasks = running,
                "agent stopping; its tasks keep running for the next agent on this work dir"
            );
        }
        link_task.abort();
        retry_task.abort();
        result
    }
}

/// Agents for unit tests: a fake containerizer, a checkpoint in memory, no
/// master (updates stay queued), a temporary work dir.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::containerizer::FakeContainerizer;

    pub fn test_agent(fake: FakeContainerizer) -> (Arc<Agent>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent = agent_on(fake, Arc::new(Checkpoint::temporary()), dir.path());
        (agent, dir)
    }

    pub fn agent_on(
        fake: FakeContainerizer,
        checkpoint: Arc<Checkpoint>,
        dir: &Path,
    ) -> Arc<Agent> {
        let config = AgentConfig::new(
            "127.0.0.1:0".parse().expect("an address"),
            vec!["127.0.0.1:1".into()],
            dir.to_path_buf(),
        );
        let link = Arc::new(link::Link::default());
        Arc::new(Agent {
            address: "127.0.0.1:5051".into(),
            hostname: "localhost".into(),
            total: Resources::parse("cpus:4;mem:4096").expect("resources"),
            attributes: Vec::new(),
            containerizer: Arc::new(fake),
            images: containerizer::image::ImageStore::new(dir.join("images"), None),
            containerizer_names: vec!["mesos"],
            docker: None,
            health: Mutex::new(HashMap::new()),
            fetcher: fetcher::Fetcher::new(fetcher::FetcherConfig {
                cache_dir: dir.join("cache"),
                cache_limit_bytes: 0,
            })
            .expect("a fetcher"),
            agent_id: Mutex::new(Some("agent-test".into())),
            tasks: Mutex::new(TaskTable::default()),
            frameworks: Mutex::new(HashMap::new()),
            updates: StatusUpdateManager::new(checkpoint.clone(), link.clone()),
            link,
            checkpoint,
            containers_cgroup: String::new(),
            config,
        })
    }

    pub fn task_info(id: &str, command: &str) -> pb::TaskInfo {
        pb::TaskInfo {
            name: id.into(),
            task_id: Some(pb::TaskId { value: id.into() }),
            resources: Resources::parse("cpus:0.1;mem:32")
                .expect("resources")
                .to_proto(),
            command: Some(pb::CommandInfo {
                value: command.into(),
                shell: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_cgroups_follow_the_work_dir() {
        let a = agent_cgroup(Path::new("/var/lib/meseta/agent"));
        assert_eq!(a, agent_cgroup(Path::new("/var/lib/meseta/agent")));
        assert_ne!(a, agent_cgroup(Path::new("/var/lib/meseta/agent2")));
        assert!(a.starts_with("agent-") && a.len() == 22, "{a}");
    }

    #[test]
    fn recover_modes_parse() {
        assert_eq!("reconnect".parse(), Ok(RecoverMode::Reconnect));
        assert_eq!("cleanup".parse(), Ok(RecoverMode::Cleanup));
        assert!("bogus".parse::<RecoverMode>().is_err());
    }
}
