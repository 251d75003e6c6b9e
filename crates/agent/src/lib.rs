//! The meseta agent: advertises its host's resources to the leading master,
//! launches tasks in a containerizer, supervises them and delivers their
//! status updates reliably (each update is resent until acknowledged).
//!
//! Serves `/state`, `/health` and `/files/read` over HTTP (5051 by default);
//! talks to the master over one outbound gRPC stream, so the master never
//! needs to reach the agent.

pub mod containerizer;
pub mod error;
pub mod health;
mod http;
mod link;
pub mod resources;
mod tasks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use meseta_core::attributes::parse_attributes;
use meseta_core::Resources;
use meseta_proto::v1 as pb;
use tokio::net::TcpListener;

use containerizer::Containerizer;
pub use error::AgentError;
use tasks::TaskTable;

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
    pub work_dir: PathBuf,
    /// `linux`, `posix`, or None to pick (linux as root with cgroups).
    pub isolation: Option<String>,
    /// Hard CPU caps with CFS quota (Mesos' `--cgroups_enable_cfs`).
    pub cgroups_enable_cfs: bool,
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
    pub(crate) link: link::Link,
}

impl Agent {
    pub(crate) fn tasks(&self) -> MutexGuard<'_, TaskTable> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
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
}

/// An agent bound to its HTTP port, ready to run.
pub struct BoundAgent {
    listener: TcpListener,
    agent: Arc<Agent>,
}

impl BoundAgent {
    /// Detect resources, pick the containerizer, bind the HTTP port.
    pub async fn bind(config: AgentConfig) -> Result<BoundAgent, AgentError> {
        if config.masters.is_empty() {
            return Err(AgentError::Config(
                "--masters must name at least one master".into(),
            ));
        }
        std::fs::create_dir_all(&config.work_dir).map_err(|source| AgentError::WorkDir {
            path: config.work_dir.clone(),
            source,
        })?;
        let total = resources::detect(&config.work_dir, config.resources.as_deref())?;
        let attributes = match &config.attributes {
            Some(text) => parse_attributes(text)
                .map_err(|e| AgentError::Config(e.to_string()))?
                .iter()
                .map(|a| a.to_proto())
                .collect(),
            None => Vec::new(),
        };
        let containerizer =
            containerizer::detect_with(config.isolation.as_deref(), config.cgroups_enable_cfs)?;
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
        let hostname = config.hostname.clone().unwrap_or_else(resources::hostname);
        let address = config
            .advertise
            .clone()
            .unwrap_or_else(|| meseta_proto::serve::advertised(local));
        let agent_id = link::load_agent_id(&config.work_dir);
        tracing::info!(
            address = %address,
            hostname = %hostname,
            resources = %total,
            isolation = containerizer.name(),
            "agent starting"
        );
        let agent = Arc::new(Agent {
            address,
            hostname,
            total,
            attributes,
            containerizer,
            agent_id: Mutex::new(agent_id),
            tasks: Mutex::new(TaskTable::default()),
            link: link::Link::default(),
            config,
        });
        Ok(BoundAgent { listener, agent })
    }

    /// `host:port` of the agent's HTTP endpoint.
    pub fn address(&self) -> &str {
        &self.agent.address
    }

    /// Run until `shutdown` resolves; then kill the tasks this agent started.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), AgentError> {
        let agent = self.agent;
        let link_task = tokio::spawn(link::run(agent.clone()));
        let retry_task = tokio::spawn(tasks::retry_loop(agent.clone()));
        let addr = agent.address.clone();
        let result =
            meseta_proto::serve::serve(self.listener, http::router(agent.clone()), shutdown)
                .await
                .map_err(|source| AgentError::Serve { addr, source });
        link_task.abort();
        retry_task.abort();
        tasks::kill_all(&agent).await;
        result
    }
}
