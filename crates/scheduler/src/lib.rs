//! meseta's Marathon-compatible scheduler: a framework (through
//! `meseta-sdk`) that keeps Marathon apps running, with Marathon's `/v2`
//! REST API and event stream on port 8080.

mod api;
mod driver;
pub mod engine;
pub mod events;
pub mod launch;
pub mod model;
pub mod store;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt as _;

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
    /// The scheduler's state in the masters' KV store.
    pub(crate) store: store::Store,
    /// Actions held while an API change is being stored.
    held: Mutex<Option<Vec<Action>>>,
}

impl Shared {
    pub(crate) fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hand actions decided under the engine lock to the driver (or keep
    /// them, between [`Shared::hold_actions`] and [`Shared::release_actions`]).
    pub(crate) fn act(&self, actions: Vec<Action>) {
        if actions.is_empty() {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.as_mut() {
            Some(h) => h.extend(actions),
            None => {
                let _ = self.actions.send(actions);
            }
        }
    }

    /// Keep what [`Shared::act`] is given until [`Shared::release_actions`]
    /// (used while a state change is being stored; callers hold the store gate).
    pub(crate) fn hold_actions(&self) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(Vec::new());
    }

    /// Stop holding; returns what was held.
    pub(crate) fn release_actions(&self) -> Vec<Action> {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default()
    }
}

/// A scheduler bound to its HTTP port.
pub struct BoundScheduler {
    listener: TcpListener,
    config: SchedulerConfig,
    address: String,
    info: pb::FrameworkInfo,
}

impl BoundScheduler {
    /// Bind the `/v2` port. Nothing is read or subscribed until [`BoundScheduler::serve`].
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
        Ok(BoundScheduler {
            listener,
            config,
            address,
            info,
        })
    }

    /// `host:port` of the `/v2` API.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Load the state from the masters' KV store (waiting for a leading
    /// master), subscribe with the stored framework id (so running tasks are
    /// kept and reconciled), then serve until `shutdown` resolves. Requests
    /// that arrive while the state loads wait in the listen queue.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), SchedulerError> {
        let shutdown = shutdown.boxed().shared();
        let config = self.config;
        let store = store::Store::new(config.masters.clone(), &config.framework_name);
        let loaded = loop {
            let attempt = tokio::select! {
                r = store.load() => r,
                _ = shutdown.clone() => return Ok(()),
            };
            match attempt {
                Ok(l) => break l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load the scheduler state from the masters yet; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.clone() => return Ok(()),
                    }
                }
            }
        };
        tracing::info!(
            apps = loaded.apps.len(),
            tasks = loaded.tasks.len(),
            deployments = loaded.deployments.len(),
            framework_id = ?loaded.framework_id,
            "scheduler state loaded from the masters"
        );
        let events = EventBus::default();
        let mut engine = Engine::new(&config.role, events.clone());
        let framework_id = loaded.framework_id.clone();
        store::restore(&mut engine, loaded);
        let (client, sdk_events) =
            meseta_sdk::start(config.masters.clone(), self.info, framework_id, false);
        let (actions_tx, actions_rx) = unbounded_channel();
        let shared = Arc::new(Shared {
            engine: Mutex::new(engine),
            actions: actions_tx,
            events,
            config,
            address: self.address,
            client,
            store,
            held: Mutex::new(None),
        });
        let driver = driver::Driver {
            sdk_events,
            actions: actions_rx,
        };
        tracing::info!(address = %shared.address, framework = %shared.config.framework_name, "scheduler listening");
        let driver = tokio::spawn(driver.run(shared.clone()));
        let addr = shared.address.clone();
        let result =
            meseta_proto::serve::serve(self.listener, api::service(shared.clone()), shutdown)
                .await
                .map_err(|source| SchedulerError::Serve { addr, source });
        driver.abort();
        result
    }
}
