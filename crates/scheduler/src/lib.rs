//! meseta's Marathon-compatible scheduler: a framework (through
//! `meseta-sdk`) that keeps Marathon apps running, with Marathon's `/v2`
//! REST API and event stream on port 8080.

mod api;
mod driver;
pub mod engine;
pub mod events;
pub mod launch;
pub mod model;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use meseta_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use engine::{Action, Engine};
use events::EventBus;

/// Errors of the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("invalid scheduler configuration: {0}")]
    Config(String),
    #[error("bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("serve http on {addr}: {source}")]
    Serve {
        addr: String,
        source: std::io::Error,
    },
}

/// How a scheduler is started (`meseta scheduler` flags).
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// HTTP address of the `/v2` API (`0.0.0.0:8080`).
    pub listen: SocketAddr,
    /// Every master's `host:port`.
    pub masters: Vec<String>,
    pub framework_name: String,
    pub role: String,
    /// Seconds the master keeps the framework's tasks while it is away.
    pub failover_timeout: f64,
}

impl SchedulerConfig {
    pub fn new(listen: SocketAddr, masters: Vec<String>) -> SchedulerConfig {
        SchedulerConfig {
            listen,
            masters,
            framework_name: "marathon".into(),
            role: "*".into(),
            failover_timeout: 604800.0,
        }
    }
}

/// State shared by the HTTP API and the driver.
pub(crate) struct Shared {
    engine: Mutex<Engine>,
    actions: UnboundedSender<Vec<Action>>,
    pub(crate) events: EventBus,
    pub(crate) config: SchedulerConfig,
    pub(crate) address: String,
    pub(crate) client: meseta_sdk::SchedulerClient,
}

impl Shared {
    pub(crate) fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hand actions decided under the engine lock to the driver.
    pub(crate) fn act(&self, actions: Vec<Action>) {
        if !actions.is_empty() {
            let _ = self.actions.send(actions);
        }
    }
}

/// A scheduler bound to its HTTP port.
pub struct BoundScheduler {
    listener: TcpListener,
    shared: Arc<Shared>,
    driver: driver::Driver,
}

impl BoundScheduler {
    /// Bind the `/v2` port and start subscribing to the masters.
    pub async fn bind(config: SchedulerConfig) -> Result<BoundScheduler, SchedulerError> {
        if config.masters.is_empty() {
            return Err(SchedulerError::Config(
                "--masters must name at least one master".into(),
            ));
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| SchedulerError::Bind {
                    addr: config.listen.to_string(),
                    source,
                })?;
        let local = listener
            .local_addr()
            .map_err(|source| SchedulerError::Bind {
                addr: config.listen.to_string(),
                source,
            })?;
        let address = if local.ip().is_unspecified() {
            format!("127.0.0.1:{}", local.port())
        } else {
            local.to_string()
        };
        let hostname = address
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_default();
        let info = pb::FrameworkInfo {
            user: "root".into(),
            name: config.framework_name.clone(),
            failover_timeout: config.failover_timeout,
            checkpoint: true,
            role: config.role.clone(),
            hostname,
            webui_url: format!("http://{address}"),
            ..Default::default()
        };
        let (client, sdk_events) = meseta_sdk::start(config.masters.clone(), info, None, false);
        let events = EventBus::default();
        let (actions_tx, actions_rx) = unbounded_channel();
        let shared = Arc::new(Shared {
            engine: Mutex::new(Engine::new(&config.role, events.clone())),
            actions: actions_tx,
            events,
            config,
            address,
            client,
        });
        let driver = driver::Driver {
            sdk_events,
            actions: actions_rx,
        };
        Ok(BoundScheduler {
            listener,
            shared,
            driver,
        })
    }

    /// `host:port` of the `/v2` API.
    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// Serve until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), SchedulerError> {
        let shared = self.shared;
        tracing::info!(address = %shared.address, framework = %shared.config.framework_name, "scheduler listening");
        let driver = tokio::spawn(self.driver.run(shared.clone()));
        let addr = shared.address.clone();
        let result =
            meseta_proto::serve::serve(self.listener, api::service(shared.clone()), shutdown)
                .await
                .map_err(|source| SchedulerError::Serve { addr, source });
        driver.abort();
        result
    }
}
