//! meseta's Marathon-compatible scheduler: a framework (through
//! `meseta-sdk`) that keeps Marathon apps running, with Marathon's `/v2`
//! REST API and event stream on port 8080.

mod api;
mod driver;
pub mod election;
pub mod engine;
pub mod events;
pub mod launch;
mod metrics;
pub mod model;
pub mod store;
mod ui;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt as _;

use axum::extract::Request;
use axum::response::{IntoResponse as _, Response};
use meseta_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::{watch, Notify};

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
    /// `host:port` other schedulers and clients reach this one at (the
    /// leader's address in `/v2/leader` and in the leader election); default:
    /// the listen address, `127.0.0.1` for an unspecified one.
    pub advertise: Option<String>,
    pub framework_name: String,
    pub role: String,
    /// Seconds the master keeps the framework's tasks while it is away.
    pub failover_timeout: f64,
    /// The framework's user (Marathon's `--mesos_user`): tasks of apps that
    /// name no `user` run as it.
    pub mesos_user: String,
    /// Versions kept per app and of the root group (`--max-versions`).
    pub max_versions: usize,
}

impl SchedulerConfig {
    pub fn new(listen: SocketAddr, masters: Vec<String>) -> SchedulerConfig {
        SchedulerConfig {
            listen,
            masters,
            advertise: None,
            framework_name: "marathon".into(),
            role: "*".into(),
            failover_timeout: 604800.0,
            mesos_user: current_user(),
            max_versions: engine::DEFAULT_MAX_VERSIONS,
        }
    }
}

/// The name of the user running this process (`root` if it has none).
fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".into())
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
    /// Notified by `DELETE /v2/leader`.
    pub(crate) abdicate: Arc<Notify>,
}

impl Shared {
    pub(crate) fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hand actions decided by the engine to the driver.
    pub(crate) fn act(&self, actions: Vec<Action>) {
        if !actions.is_empty() {
            let _ = self.actions.send(actions);
        }
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
        let address = config
            .advertise
            .clone()
            .unwrap_or_else(|| meseta_proto::serve::advertised(local));
        let hostname = address
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_default();
        let info = pb::FrameworkInfo {
            user: config.mesos_user.clone(),
            name: config.framework_name.clone(),
            failover_timeout: config.failover_timeout,
            checkpoint: true,
            role: config.role.clone(),
            hostname,
            webui_url: format!("http://{address}"),
            // Told TASK_UNREACHABLE (not TASK_LOST) for tasks on agents the
            // master lost, so `unreachableStrategy` decides (Marathon 1.4+).
            capabilities: vec![pb::framework_info::Capability {
                r#type: pb::framework_info::capability::Type::PartitionAware as i32,
            }],
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

    /// Serve until `shutdown` resolves: campaign for the leadership of the
    /// framework name (see [`election`]); while another scheduler leads,
    /// stand by (answer `/ping`, `/v2/info`, `/v2/leader`, proxy the rest to
    /// the leader); once elected, load the state from the masters' KV store,
    /// subscribe with the stored framework id (so running tasks are kept and
    /// reconciled) and serve `/v2`. A leader that loses its lease, or
    /// abdicates, stops acting and stands by again. Requests that arrive
    /// while no leader is known, or while this scheduler loads its state,
    /// wait (up to [`PENDING_WAIT`]).
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), SchedulerError> {
        let shutdown = shutdown.boxed().shared();
        let config = self.config;
        let address = self.address;
        let (mode_tx, mode_rx) = watch::channel(Mode::Pending);
        let metrics = Arc::new(metrics::SchedulerMetrics::new());
        let front = Front {
            mode: mode_rx,
            config: Arc::new(config.clone()),
            me: Arc::from(address.as_str()),
            proxy: election::proxy_client(),
            metrics: metrics.clone(),
        };
        let router = axum::Router::new()
            .fallback(move |req: Request| front.clone().dispatch(req))
            .layer(axum::middleware::from_fn_with_state(
                metrics.http.clone(),
                meseta_metrics::track_http,
            ));
        let http = tokio::spawn(meseta_proto::serve::serve(
            self.listener,
            router,
            shutdown.clone(),
        ));
        tracing::info!(address = %address, framework = %config.framework_name, "scheduler listening");
        let election = Arc::new(election::Election::new(
            config.masters.clone(),
            &config.framework_name,
            &address,
        ));
        loop {
            let standby = |leader: &str| {
                mode_tx.send_if_modified(|m| match m {
                    Mode::Standby(l) if l == leader => false,
                    _ => {
                        tracing::info!(%leader, "standing by: another scheduler leads");
                        *m = Mode::Standby(leader.to_string());
                        true
                    }
                });
            };
            let unreachable = |why: &str| {
                mode_tx.send_if_modified(|m| match m {
                    Mode::Unreachable(w) if w == why => false,
                    _ => {
                        *m = Mode::Unreachable(why.to_string());
                        true
                    }
                });
            };
            let term = tokio::select! {
                t = election.campaign(standby, unreachable) => t,
                _ = shutdown.clone() => break,
            };
            mode_tx.send_replace(Mode::Pending);
            let end = lead(
                &config,
                &address,
                self.info.clone(),
                &election,
                term,
                FrontHandles {
                    mode: &mode_tx,
                    metrics: &metrics,
                },
                shutdown.clone(),
            )
            .await;
            metrics.stand_by();
            mode_tx.send_replace(Mode::Pending);
            match end {
                TermEnd::Shutdown => {
                    election.revoke(term.lease).await;
                    tracing::info!("leader lease revoked on shutdown");
                    break;
                }
                TermEnd::Abdicated => {
                    election.revoke(term.lease).await;
                    tracing::warn!("abdicated: leader lease revoked; standing by");
                }
                TermEnd::Lost(why) => {
                    tracing::error!(reason = %why, "lost the leadership; stopped acting, standing by");
                    election.revoke(term.lease).await;
                }
            }
        }
        let addr = address.clone();
        match http.await {
            Ok(r) => r.map_err(|source| SchedulerError::Serve { addr, source }),
            Err(e) => Err(SchedulerError::Serve {
                addr,
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

/// How long a request waits for a leader to be known (or for this
/// scheduler to finish loading) before it is answered 503.
pub const PENDING_WAIT: Duration = Duration::from_secs(15);

/// What the HTTP front does with requests.
#[derive(Clone)]
enum Mode {
    /// No leader known yet, or this scheduler is loading its state: wait.
    Pending,
    /// No master answers (why): `/v2` is answered 503 at once.
    Unreachable(String),
    /// Another scheduler (`host:port`) leads.
    Standby(String),
    /// This scheduler leads: its `/v2` router.
    Leader(axum::Router),
}

#[derive(Clone)]
struct Front {
    mode: watch::Receiver<Mode>,
    config: Arc<SchedulerConfig>,
    me: Arc<str>,
    proxy: reqwest::Client,
    /// Served by every scheduler itself, leader or not.
    metrics: Arc<metrics::SchedulerMetrics>,
}

impl Front {
    fn dispatch(self, req: Request) -> futures::future::BoxFuture<'static, Response> {
        Box::pin(async move {
            // Marathon answers `/ping` always, at once.
            if req.uri().path().trim_end_matches('/') == "/ping" {
                return "pong".into_response();
            }
            if matches!(
                req.uri().path().trim_end_matches('/'),
                "/metrics" | "/metrics/prometheus"
            ) && req.method() == axum::http::Method::GET
            {
                return self.metrics.respond(req.headers());
            }
            // Web UIs refuse cross-site writes (browsers send Origin; API
            // clients send none and are not affected). Checked here, before
            // a standby proxies the request without its Origin.
            let authority = req.uri().authority().map(|a| a.to_string());
            if let Some(why) =
                meseta_webui::cross_site(req.method(), req.headers(), authority.as_deref())
            {
                return meseta_webui::security::forbidden(&why);
            }
            // The UI renders from `/v2`, asked through this same front.
            if ui::is_ui_path(req.uri().path()) {
                let front = self.clone();
                let backend: ui::Backend = Arc::new(move |r| front.clone().dispatch(r));
                return ui::serve(backend, req).await;
            }
            self.dispatch_api(req).await
        })
    }

    async fn dispatch_api(mut self, req: Request) -> Response {
        let me = self.me.clone();
        // A leader key naming this very address is a previous run's lease:
        // wait for it to expire like for an unknown leader.
        let ready = |m: &Mode| match m {
            Mode::Pending => false,
            Mode::Unreachable(_) => true,
            Mode::Standby(l) => **l != *me,
            Mode::Leader(_) => true,
        };
        let unavailable = |why: String| {
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"message": why})),
            )
                .into_response()
        };
        let mode = match tokio::time::timeout(PENDING_WAIT, self.mode.wait_for(ready)).await {
            Ok(Ok(m)) => m.clone(),
            _ => return unavailable("Could not determine the current leader".into()),
        };
        match mode {
            Mode::Leader(router) => match tower::ServiceExt::oneshot(router, req).await {
                Ok(r) => r,
                Err(never) => match never {},
            },
            Mode::Standby(leader) => {
                election::standby(&self.config, &self.me, &leader, &self.proxy, req).await
            }
            Mode::Unreachable(why) => unavailable(format!(
                "Could not determine the current leader: no master is reachable ({why})"
            )),
            Mode::Pending => unavailable("Could not determine the current leader".into()),
        }
    }
}

/// What a leader publishes to the HTTP front: the mode requests are served
/// in, and the state `/metrics` reads.
struct FrontHandles<'a> {
    mode: &'a watch::Sender<Mode>,
    metrics: &'a metrics::SchedulerMetrics,
}

/// How a leadership term ended.
enum TermEnd {
    Shutdown,
    Abdicated,
    Lost(String),
}

/// Lead while `term`'s lease is held: load the state, subscribe, drive and
/// serve `/v2` (through `mode`), until the lease is lost, this scheduler
/// abdicates or `shutdown` resolves. Then stop acting: no call to the master
/// and no write to the store is made by this term afterwards.
async fn lead(
    config: &SchedulerConfig,
    address: &str,
    info: pb::FrameworkInfo,
    election: &election::Election,
    term: election::Term,
    front: FrontHandles<'_>,
    shutdown: futures::future::Shared<futures::future::BoxFuture<'static, ()>>,
) -> TermEnd {
    let FrontHandles { mode, metrics } = front;
    let keeper = election.hold(term);
    tokio::pin!(keeper);
    let store = store::Store::new(config.masters.clone(), &config.framework_name);
    let loaded = loop {
        let attempt = tokio::select! {
            r = store.load() => r,
            why = &mut keeper => return TermEnd::Lost(why),
            _ = shutdown.clone() => return TermEnd::Shutdown,
        };
        match attempt {
            Ok(l) => break l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the scheduler state from the masters yet; retrying");
                mode.send_replace(Mode::Unreachable(e.to_string()));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    why = &mut keeper => return TermEnd::Lost(why),
                    _ = shutdown.clone() => return TermEnd::Shutdown,
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
    let mut engine = Engine::new(&config.role, events.clone(), config.max_versions);
    let framework_id = loaded.framework_id.clone();
    store::restore(&mut engine, loaded);
    // The lease id only grows: it fences this term's calls against the
    // master once a later leader of this framework subscribed.
    let (client, sdk_events) = meseta_sdk::start_fenced(
        config.masters.clone(),
        info,
        framework_id,
        false,
        term.lease,
    );
    let (actions_tx, actions_rx) = unbounded_channel();
    let abdicate = Arc::new(Notify::new());
    let shared = Arc::new(Shared {
        engine: Mutex::new(engine),
        actions: actions_tx,
        events,
        config: config.clone(),
        address: address.to_string(),
        client,
        store,
        abdicate: abdicate.clone(),
    });
    let driver = driver::Driver {
        sdk_events,
        actions: actions_rx,
    };
    let driver = tokio::spawn(driver.run(shared.clone()));
    metrics.lead(&shared);
    mode.send_replace(Mode::Leader(api::service(shared.clone())));
    tracing::info!(address = %address, "leading: serving /v2");
    let end = tokio::select! {
        why = &mut keeper => TermEnd::Lost(why),
        _ = abdicate.notified() => TermEnd::Abdicated,
        _ = shutdown.clone() => TermEnd::Shutdown,
    };
    // Stop acting: new requests wait (the caller switches the mode), the
    // driver (the only caller of the master) stops, and the store refuses
    // writes: after waiting for the one in flight, unless the lease may be
    // gone already.
    mode.send_replace(Mode::Pending);
    driver.abort();
    let _ = driver.await;
    shared.store.fence(!matches!(end, TermEnd::Lost(_))).await;
    end
}
