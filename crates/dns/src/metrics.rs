//! The DNS server's Prometheus metrics (`/metrics` on its HTTP port).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// Where a query was answered.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Zone {
    /// From the records of the Mesos domain.
    Mesos,
    /// By a `--resolvers` upstream (or SERVFAIL when none answered).
    Forwarded,
}

impl Zone {
    /// The label value: `mesos` or `forwarded`.
    pub fn as_str(self) -> &'static str {
        match self {
            Zone::Mesos => "mesos",
            Zone::Forwarded => "forwarded",
        }
    }
}

/// Labels of `meseta_dns_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `mesos` (answered from the records) or `forwarded`.
    pub zone: String,
    /// The answer's response code, e.g. `NOERROR`, `NXDOMAIN`, `SERVFAIL`.
    pub rcode: String,
}

/// Every metric of the DNS role.
pub struct DnsMetrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub forward_seconds: Histogram,
    pub names: Family<KindLabels, Gauge>,
    pub rebuild_seconds: Histogram,
    pub subscriptions: Counter,
    pub events: Counter,
    pub connected: Gauge,
}

/// Labels of `meseta_dns_names`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `address` (A/AAAA) or `service` (SRV).
    pub kind: String,
}

impl DnsMetrics {
    pub fn new() -> DnsMetrics {
        let mut registry = Registry::with_prefix("meseta_dns");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "DNS queries answered, by zone and response code",
            requests.clone(),
        );
        let forward_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register_with_unit(
            "forward",
            "Time to answer a query forwarded to --resolvers",
            Unit::Seconds,
            forward_seconds.clone(),
        );
        let names = Family::<KindLabels, Gauge>::default();
        registry.register("names", "Names in the record store, by kind", names.clone());
        let rebuild_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 14));
        registry.register_with_unit(
            "record_rebuild",
            "Time to rebuild the record store after a change in the cluster",
            Unit::Seconds,
            rebuild_seconds.clone(),
        );
        let subscriptions = Counter::default();
        registry.register(
            "master_subscriptions",
            "Operator event streams opened on the leading master",
            subscriptions.clone(),
        );
        let events = Counter::default();
        registry.register(
            "master_events",
            "Operator events read from the leading master",
            events.clone(),
        );
        let connected = Gauge::default();
        registry.register(
            "master_connected",
            "1 while an event stream from the leading master is open",
            connected.clone(),
        );
        DnsMetrics {
            registry,
            requests,
            forward_seconds,
            names,
            rebuild_seconds,
            subscriptions,
            events,
            connected,
        }
    }

    /// Counts one answered query.
    pub fn request(&self, zone: Zone, rcode: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                zone: zone.as_str().to_string(),
                rcode: rcode.to_string(),
            })
            .inc();
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("the DNS metrics could not be encoded");
        }
        out
    }
}

impl Default for DnsMetrics {
    fn default() -> Self {
        DnsMetrics::new()
    }
}
