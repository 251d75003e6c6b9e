//! Service discovery DNS: mesos-dns' names (`<app>.marathon.mesos`,
//! `_<app>._tcp.marathon.mesos`, `leader.mesos`, …) served with
//! hickory-server from the leading master's operator event stream.
//!
//! - [`follow`] subscribes to the leader (`POST /api/v1` SUBSCRIBE) and
//!   keeps a [`ClusterView`]; every batch of events rebuilds the
//!   [`Records`] and swaps them into the [`RecordStore`] whole.
//! - [`server`] answers queries from the store (the domain) or forwards
//!   them to the `resolvers` with a bounded deadline (anything else).
//! - [`http`] is mesos-dns' HTTP API and `/metrics`.
//! - [`names`] holds mesos-dns' naming rules.
//!
//! [`BoundDns::bind`] binds every socket first (so a taken port fails the
//! start), then [`BoundDns::serve`] runs until shutdown.

mod error;
mod follow;
mod http;
pub mod metrics;
pub mod names;
pub mod records;
mod server;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::ServerFuture;
use tokio::sync::watch;

pub use error::DnsError;
pub use metrics::DnsMetrics;
pub use records::{ClusterView, Records};

/// mesos-dns' default domain.
pub const DEFAULT_DOMAIN: &str = "mesos";
/// The TTL of every answer, in seconds: short, because records follow the
/// cluster within moments of a change.
pub const DEFAULT_TTL: u32 = 5;
/// How long a forwarded query may take, all resolvers together.
pub const DEFAULT_RESOLVER_TIMEOUT: Duration = Duration::from_secs(2);
/// A full re-subscription as a safety net, although the stream carries
/// every change.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);

/// How the DNS role runs.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// UDP and TCP address of the DNS server.
    pub listen: SocketAddr,
    /// Address of the HTTP API (`None`: no HTTP API).
    pub http_listen: Option<SocketAddr>,
    /// The masters' `host:port` (any of them; the leader is followed).
    pub masters: Vec<String>,
    pub domain: String,
    /// Upstream resolvers for names outside the domain.
    pub resolvers: Vec<SocketAddr>,
    pub resolver_timeout: Duration,
    pub ttl: u32,
    pub resync: Duration,
}

impl DnsConfig {
    pub fn new(listen: SocketAddr, masters: Vec<String>) -> DnsConfig {
        DnsConfig {
            listen,
            http_listen: None,
            masters,
            domain: DEFAULT_DOMAIN.to_string(),
            resolvers: Vec::new(),
            resolver_timeout: DEFAULT_RESOLVER_TIMEOUT,
            ttl: DEFAULT_TTL,
            resync: DEFAULT_RESYNC,
        }
    }
}

/// A resolver address: `IP` (port 53) or `IP:port` (`[v6]:port`).
pub fn parse_resolver(text: &str) -> Result<SocketAddr, DnsError> {
    let t = text.trim();
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    t.trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| DnsError::InvalidResolver(text.to_string()))
}

/// The `nameserver` entries of a resolv.conf text, except `own` (the DNS
/// server itself must not forward to itself).
pub fn resolvers_from_resolv_conf(text: &str, own: SocketAddr) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| parse_resolver(rest.split('#').next().unwrap_or("")).ok())
        .filter(|r| *r != own)
        .collect()
}

/// The system's resolvers (`/etc/resolv.conf`), except `own`.
pub fn system_resolvers(own: SocketAddr) -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|t| resolvers_from_resolv_conf(&t, own))
        .unwrap_or_default()
}

/// The records being served, swapped whole on every change. Readers take
/// an `Arc` of the current records and never block a rebuild for longer
/// than the pointer swap.
pub struct RecordStore {
    domain: String,
    current: RwLock<Arc<Records>>,
    metrics: Arc<DnsMetrics>,
}

impl RecordStore {
    /// An empty store for `domain`.
    pub fn new(domain: &str, metrics: Arc<DnsMetrics>) -> RecordStore {
        let empty = Records::build(&ClusterView::default(), domain);
        RecordStore {
            domain: domain.to_string(),
            current: RwLock::new(Arc::new(empty)),
            metrics,
        }
    }

    /// Rebuilds the records from `view` and serves them from now on.
    pub fn publish(&self, view: &ClusterView) {
        let started = std::time::Instant::now();
        let mut records = Records::build(view, &self.domain);
        self.metrics
            .rebuild_seconds
            .observe(started.elapsed().as_secs_f64());
        let (addresses, services) = records.counts();
        let mut current = match self.current.write() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        records.serial = current.serial.wrapping_add(1);
        *current = Arc::new(records);
        drop(current);
        let gauge = |kind: &str| {
            self.metrics.names.get_or_create(&metrics::KindLabels {
                kind: kind.to_string(),
            })
        };
        gauge("address").set(addresses as i64);
        gauge("service").set(services as i64);
        tracing::debug!(addresses, services, "DNS records rebuilt");
    }

    /// The records being served.
    pub fn current(&self) -> Arc<Records> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn metrics(&self) -> &Arc<DnsMetrics> {
        &self.metrics
    }
}

/// A DNS role with its sockets bound.
pub struct BoundDns {
    config: DnsConfig,
    store: Arc<RecordStore>,
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
    http: Option<tokio::net::TcpListener>,
    /// Whether to follow the masters (off for a store filled by hand).
    follow: bool,
}

impl BoundDns {
    /// Validates the config and binds the DNS (UDP and TCP) and HTTP
    /// sockets.
    pub async fn bind(config: DnsConfig) -> Result<BoundDns, DnsError> {
        let domain = names::normalize(&config.domain);
        if domain == "." || hickory_proto::rr::Name::from_ascii(&domain).is_err() {
            return Err(DnsError::InvalidDomain(config.domain.clone()));
        }
        let store = Arc::new(RecordStore::new(&domain, Arc::new(DnsMetrics::new())));
        BoundDns::bind_with_store(config, store, true).await
    }

    /// Like [`BoundDns::bind`], serving `store`; with `follow` false no
    /// master is followed and the store keeps what its owner publishes
    /// (benches load many records this way).
    pub async fn bind_with_store(
        config: DnsConfig,
        store: Arc<RecordStore>,
        follow: bool,
    ) -> Result<BoundDns, DnsError> {
        let bind_err = |what, address| {
            move |source| DnsError::Bind {
                what,
                address,
                source,
            }
        };
        let udp = tokio::net::UdpSocket::bind(config.listen)
            .await
            .map_err(bind_err("DNS (UDP)", config.listen))?;
        // The TCP socket on the very port UDP got (the listen port may be 0).
        let udp_addr = udp
            .local_addr()
            .map_err(bind_err("DNS (UDP)", config.listen))?;
        let tcp = tokio::net::TcpListener::bind(udp_addr)
            .await
            .map_err(bind_err("DNS (TCP)", udp_addr))?;
        let http = match config.http_listen {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(bind_err("the DNS HTTP API", a))?,
            ),
            None => None,
        };
        Ok(BoundDns {
            config,
            store,
            udp,
            tcp,
            http,
            follow,
        })
    }

    /// The DNS server's address (UDP and TCP).
    pub fn address(&self) -> SocketAddr {
        self.udp.local_addr().unwrap_or(self.config.listen)
    }

    /// The HTTP API's address, when it has one.
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|h| h.local_addr().ok())
    }

    /// The store the server answers from.
    pub fn store(&self) -> &Arc<RecordStore> {
        &self.store
    }

    /// Serves DNS (and the HTTP API) and follows the leader until
    /// `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), DnsError> {
        let address = self.address();
        let http_address = self.http_address();
        let (stop_tx, stop_rx) = watch::channel(false);
        let handler = server::Handler::new(
            self.store.clone(),
            self.config.resolvers.clone(),
            self.config.resolver_timeout,
            self.config.ttl,
            address,
        );
        let mut dns = ServerFuture::new(handler);
        dns.register_socket(self.udp);
        dns.register_listener(self.tcp, Duration::from_secs(5));
        let follower = self.follow.then(|| {
            tokio::spawn(
                follow::Follower::new(
                    self.config.masters.clone(),
                    self.store.clone(),
                    self.config.resync,
                )
                .run(stop_rx.clone()),
            )
        });
        let http = self.http.map(|listener| {
            let state = Arc::new(http::HttpState {
                store: self.store.clone(),
                config: config_json(&self.config, address, http_address),
            });
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, http::router(state))
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the DNS HTTP API stopped");
                }
            })
        });
        tracing::info!(
            dns = %address,
            http = ?http_address,
            domain = %self.config.domain,
            resolvers = ?self.config.resolvers,
            masters = ?self.config.masters,
            "DNS serving"
        );
        let result = tokio::select! {
            r = dns.block_until_done() => r.map_err(|e| DnsError::Serve(e.to_string())),
            _ = shutdown => dns.shutdown_gracefully().await.map_err(|e| DnsError::Serve(e.to_string())),
        };
        let _ = stop_tx.send(true);
        if let Some(f) = follower {
            let _ = f.await;
        }
        if let Some(h) = http {
            let _ = h.await;
        }
        result
    }
}

/// `/v1/config`: mesos-dns' configuration keys with this server's values.
fn config_json(c: &DnsConfig, dns: SocketAddr, http: Option<SocketAddr>) -> serde_json::Value {
    let domain = c.domain.trim_end_matches('.').to_ascii_lowercase();
    serde_json::json!({
        "Masters": c.masters,
        "Zk": "",
        "RefreshSeconds": c.resync.as_secs(),
        "TTL": c.ttl,
        "Port": dns.port(),
        "Domain": domain,
        "Resolvers": c.resolvers.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "Timeout": c.resolver_timeout.as_secs_f64(),
        "SOAMname": format!("ns1.{domain}."),
        "SOARname": format!("root.ns1.{domain}."),
        "SOARefresh": 60,
        "SOARetry": 600,
        "SOAExpire": 86400,
        "SOAMinttl": c.ttl,
        "Listener": dns.ip().to_string(),
        "HTTPListener": http.map(|h| h.ip().to_string()).unwrap_or_default(),
        "HttpPort": http.map(|h| h.port()).unwrap_or(0),
        "DnsOn": true,
        "HttpOn": http.is_some(),
        "ExternalOn": !c.resolvers.is_empty(),
        "RecurseOn": !c.resolvers.is_empty(),
        "IPSources": ["host"],
        "EnforceRFC952": false,
        "SRVRecordDefaultWeight": 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolvers_parse_with_and_without_port() {
        assert_eq!(
            parse_resolver("10.0.0.2").ok(),
            Some("10.0.0.2:53".parse().expect("addr"))
        );
        assert_eq!(
            parse_resolver("10.0.0.2:5353").ok(),
            Some("10.0.0.2:5353".parse().expect("addr"))
        );
        assert_eq!(
            parse_resolver("::1").ok(),
            Some("[::1]:53".parse().expect("addr"))
        );
        assert!(parse_resolver("dns.example").is_err());
    }

    #[test]
    fn resolv_conf_nameservers_except_ourselves() {
        let own: SocketAddr = "127.0.0.1:53".parse().expect("addr");
        let text =
            "search x\nnameserver 127.0.0.1\nnameserver 10.0.0.2 # corp\n#nameserver 1.1.1.1\n";
        assert_eq!(
            resolvers_from_resolv_conf(text, own),
            vec!["10.0.0.2:53".parse::<SocketAddr>().expect("addr")]
        );
    }
}
