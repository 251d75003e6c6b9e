//! `meseta dns` and the DNS server of `meseta up`: flags, and the wiring
//! of the `meseta-dns` role.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use meseta_dns::{BoundDns, DnsConfig};

fn resolver(text: &str) -> Result<SocketAddr, String> {
    meseta_dns::parse_resolver(text).map_err(|e| e.to_string())
}

fn seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("'{text}' is not a positive number of seconds")),
    }
}

/// `meseta dns`: mesos-dns' names for the cluster, from the leading
/// master's event stream.
#[derive(Args)]
pub struct DnsArgs {
    /// Every master's host:port (any one will do; the leader is followed).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:5050")]
    masters: Vec<String>,
    /// UDP and TCP address of the DNS server.
    #[arg(long, default_value = "0.0.0.0:53")]
    listen: SocketAddr,
    /// Address of the mesos-dns HTTP API (/v1/…) and /metrics.
    #[arg(long, default_value = "0.0.0.0:8123")]
    http_listen: SocketAddr,
    /// Serve no HTTP API.
    #[arg(long)]
    no_http: bool,
    /// The domain answered from the cluster's records.
    #[arg(long, default_value = meseta_dns::DEFAULT_DOMAIN)]
    domain: String,
    /// Resolvers for every other name, IP or IP:port, comma-separated
    /// (default: the nameservers of /etc/resolv.conf).
    #[arg(long, value_delimiter = ',', value_parser = resolver)]
    resolvers: Option<Vec<SocketAddr>>,
    /// Seconds a forwarded query may take, all resolvers together; then
    /// the answer is SERVFAIL.
    #[arg(long, default_value = "2", value_parser = seconds)]
    resolver_timeout: Duration,
    /// TTL of the answers, in seconds.
    #[arg(long, default_value_t = meseta_dns::DEFAULT_TTL)]
    ttl: u32,
}

/// The DNS flags of `meseta up`.
#[derive(Args)]
pub struct UpDnsArgs {
    /// UDP and TCP address of the cluster's DNS server.
    #[arg(long, default_value = "127.0.0.1:8053")]
    dns_listen: SocketAddr,
    /// Address of the DNS server's HTTP API (mesos-dns' /v1/…).
    #[arg(long, default_value = "127.0.0.1:8123")]
    dns_http_listen: SocketAddr,
    /// Resolvers for names outside the cluster's domain (default: the
    /// nameservers of /etc/resolv.conf).
    #[arg(long, value_delimiter = ',', value_parser = resolver)]
    dns_resolvers: Option<Vec<SocketAddr>>,
}

/// Runs `meseta dns` until `stop` resolves.
pub async fn run(a: DnsArgs, stop: impl Future<Output = ()> + Send) -> Result<()> {
    let mut config = DnsConfig::new(a.listen, a.masters);
    config.http_listen = (!a.no_http).then_some(a.http_listen);
    config.domain = a.domain;
    config.resolvers = a
        .resolvers
        .unwrap_or_else(|| meseta_dns::system_resolvers(a.listen));
    config.resolver_timeout = a.resolver_timeout;
    config.ttl = a.ttl;
    let dns = BoundDns::bind(config)
        .await
        .context("starting the DNS server")?;
    crate::notify::ready(&format!("dns serving on {}", dns.address()));
    dns.serve(stop).await.context("dns")
}

/// The DNS server of `meseta up`, bound, following `master`.
pub async fn bind_for_up(a: &UpDnsArgs, master: &str) -> Result<BoundDns> {
    let mut config = DnsConfig::new(a.dns_listen, vec![master.to_string()]);
    config.http_listen = Some(a.dns_http_listen);
    config.resolvers = a
        .dns_resolvers
        .clone()
        .unwrap_or_else(|| meseta_dns::system_resolvers(a.dns_listen));
    BoundDns::bind(config)
        .await
        .context("starting the DNS server")
}
