//! HTTP request metrics for a role's router: `meseta_http_requests_total`
//! by method and status code, and `meseta_http_request_duration_seconds`.
//! Paths are not a label: they carry app and task ids, and a label per id
//! would grow without bound.

use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

type Labels = [(&'static str, String); 2];

/// Request counts and durations of one role's HTTP server; cloning shares
/// the counters.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<Labels, Counter>,
    duration: Histogram,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            duration: crate::seconds_histogram(),
        }
    }
}

impl HttpMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "meseta_http_requests",
            "HTTP requests answered, by method and status code",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "meseta_http_request_duration",
            "Time from an HTTP request's arrival to its response headers",
            Unit::Seconds,
            self.duration.clone(),
        );
    }

    /// Counts one answered request.
    pub fn observe(&self, method: &str, code: u16, took: Duration) {
        self.requests
            .get_or_create(&[("method", method.to_string()), ("code", code.to_string())])
            .inc();
        self.duration.observe(took.as_secs_f64());
    }
}

/// Middleware (`axum::middleware::from_fn_with_state(metrics, track_http)`)
/// that counts every request of the router it wraps. Streams (event
/// streams, RecordIO subscriptions) count when their headers are sent.
pub async fn track_http(State(metrics): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    metrics.observe(&method, response.status().as_u16(), start.elapsed());
    response
}
