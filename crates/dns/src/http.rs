//! mesos-dns' HTTP API, in its JSON shapes, plus `/metrics`:
//!
//! - `GET /v1/version`: `{"Service", "URL", "Version"}`;
//! - `GET /v1/config`: the configuration under mesos-dns' key names;
//! - `GET /v1/hosts/{host}`: `[{"host", "ip"}]`, the A/AAAA records;
//! - `GET /v1/services/{service}`: `[{"service", "host", "ip", "port"}]`,
//!   the SRV records with their targets' addresses, the port a string.
//!
//! As in mesos-dns, a name with no record answers 200 with one entry of
//! empty strings, and only names in the Mesos domain are looked up.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::names::normalize;
use crate::RecordStore;

pub(crate) struct HttpState {
    pub store: Arc<RecordStore>,
    pub config: Value,
}

pub(crate) fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/v1/version", get(version))
        .route("/v1/config", get(config))
        .route("/v1/hosts/{host}", get(hosts))
        .route("/v1/services/{service}", get(services))
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

async fn version() -> Json<Value> {
    Json(json!({
        "Service": "Mesos-DNS",
        "URL": "https://github.com/mesosphere/mesos-dns",
        "Version": format!("meseta-{}", env!("CARGO_PKG_VERSION")),
    }))
}

async fn config(State(s): State<Arc<HttpState>>) -> Json<Value> {
    Json(s.config.clone())
}

async fn hosts(State(s): State<Arc<HttpState>>, Path(host): Path<String>) -> Json<Value> {
    let name = normalize(&host);
    let records = s.store.current();
    let mut out: Vec<Value> = records
        .addresses_of(&name)
        .iter()
        .map(|ip| json!({"host": name, "ip": ip.to_string()}))
        .collect();
    if out.is_empty() {
        out.push(json!({"host": "", "ip": ""}));
    }
    Json(Value::Array(out))
}

async fn services(State(s): State<Arc<HttpState>>, Path(service): Path<String>) -> Json<Value> {
    let name = normalize(&service);
    let records = s.store.current();
    let mut out = Vec::new();
    for srv in records.services_of(&name) {
        for ip in records.addresses_of(&srv.target).iter().take(1) {
            out.push(json!({
                "service": service,
                "host": srv.target,
                "ip": ip.to_string(),
                "port": srv.port.to_string(),
            }));
        }
    }
    if out.is_empty() {
        out.push(json!({"service": "", "host": "", "ip": "", "port": ""}));
    }
    Json(Value::Array(out))
}

async fn metrics(State(s): State<Arc<HttpState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.store.metrics().render(),
    )
        .into_response()
}
