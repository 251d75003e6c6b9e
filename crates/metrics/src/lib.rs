//! Prometheus metrics shared by meseta's roles.
//!
//! Each role (master, agent, scheduler, dns) builds **one** registry with
//! [`role_registry`]: the process metrics ([`ProcessCollector`], Prometheus'
//! standard `process_*` names read from `/proc/self`) and the HTTP request
//! metrics ([`HttpMetrics`]) are in it from the start; the role then adds
//! its own collector, which reads the role's state at scrape time (so a
//! number kept for `/metrics/snapshot` is kept once and shown twice), and
//! the histograms it records at the event site ([`seconds_histogram`]).
//!
//! [`routes`] serves the registry at `/metrics` and `/metrics/prometheus`:
//! OpenMetrics text when the scraper asks for it (`Accept:
//! application/openmetrics-text`, what Prometheus sends), the Prometheus
//! text format 0.0.4 otherwise (curl, older tools).
//!
//! Names follow Prometheus' conventions: `meseta_<role>_<what>_<unit>`,
//! counters end in `_total`, durations are seconds.

pub mod collect;
mod http;
mod process;

use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
pub use prometheus_client;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub use http::{track_http, HttpMetrics};
pub use process::ProcessCollector;

/// A registry for one role, with the process metrics and `http`'s request
/// metrics registered.
pub fn role_registry(http: &HttpMetrics) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector));
    http.register(&mut registry);
    registry
}

/// A histogram of durations in seconds, with buckets from 100 µs to about
/// 13 s (doubling), wide enough for an allocation cycle, a Raft commit
/// and an HTTP request alike.
pub fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// The registry as text, in the format `headers` ask for: `(content type,
/// body)`.
pub fn encode(registry: &Registry, headers: &HeaderMap) -> Result<(&'static str, String), String> {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let mut body = String::new();
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut body, registry)
            .map_err(|e| e.to_string())?;
        Ok((
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        ))
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut body, registry)
            .map_err(|e| e.to_string())?;
        Ok((
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            body,
        ))
    }
}

/// The answer to a scrape of `registry`.
pub fn respond(registry: &Registry, headers: &HeaderMap) -> Response {
    match encode(registry, headers) {
        Ok((content_type, body)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}"),
        )
            .into_response(),
    }
}

/// `/metrics` and `/metrics/prometheus` serving `registry`, for a role's
/// router (any state).
pub fn routes<S: Clone + Send + Sync + 'static>(registry: Arc<Registry>) -> Router<S> {
    let scrape = move |headers: HeaderMap| {
        let registry = registry.clone();
        async move { respond(&registry, &headers) }
    };
    Router::new()
        .route("/metrics", get(scrape.clone()))
        .route("/metrics/prometheus", get(scrape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_registry_has_process_and_http_metrics_in_both_formats() {
        let http = HttpMetrics::default();
        http.observe("GET", 200, std::time::Duration::from_millis(3));
        let registry = role_registry(&http);
        let (ct, text) = encode(&registry, &HeaderMap::new()).expect("encodes");
        assert!(ct.starts_with("text/plain; version=0.0.4"));
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        assert!(text.contains("process_open_fds "), "{text}");
        assert!(text.contains("process_start_time_seconds "), "{text}");
        assert!(
            text.contains("meseta_http_requests_total{method=\"GET\",code=\"200\"} 1"),
            "{text}"
        );
        let mut om = HeaderMap::new();
        om.insert(
            header::ACCEPT,
            "application/openmetrics-text;version=1.0.0"
                .parse()
                .expect("header"),
        );
        let (ct, text) = encode(&registry, &om).expect("encodes");
        assert!(ct.starts_with("application/openmetrics-text"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
