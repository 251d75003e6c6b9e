//! Leader election among the schedulers of one framework name, through the
//! masters' KV store (what ZooKeeper's leader latch was for Marathon).
//!
//! A candidate takes a lease ([`LEASE_TTL`]) and compare-and-sets
//! `/meseta/frameworks/<name>/leader` = its `host:port`, expecting the key
//! absent and attaching it to the lease. The winner keeps the lease alive
//! every [`KEEP_ALIVE_EVERY`]; the others stand by, read the key every
//! [`STANDBY_POLL`] (to name the leader and proxy `/v2` to it) and campaign
//! again once it is gone (revoked, or its lease expired on the masters).
//!
//! A leader stops acting (see [`Election::hold`]) before its lease can have
//! expired: the lease lives at least [`LEASE_TTL`] after the last successful
//! keep-alive was *sent*, and the leader gives up [`SAFETY_MARGIN`] earlier.
//!
//! A standby answers `/ping`, `/v2/info` (`elected: false`), `/v2/leader`
//! itself and proxies every other request to the leader ([`proxy`]).

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use meseta_sdk::{KvClient, KvClientError};
use serde_json::json;

use crate::SchedulerConfig;

/// Time to live of the leader lease.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often the leader renews its lease.
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(1);
/// How much before the lease could expire a leader that cannot renew it stops.
pub const SAFETY_MARGIN: Duration = Duration::from_millis(500);
/// How often a standby reads the leader key.
pub const STANDBY_POLL: Duration = Duration::from_millis(500);
/// Header a standby puts on what it proxies (a second standby refuses it
/// rather than proxy again: no loops while views of the leader differ).
pub const PROXIED_HEADER: &str = "x-meseta-proxied-by";

/// The leader lease this scheduler holds.
#[derive(Debug, Clone, Copy)]
pub struct Term {
    pub lease: u64,
    /// When the last successful grant / keep-alive was sent: the lease lives
    /// at least until `renewed + LEASE_TTL` on the masters.
    renewed: Instant,
}

/// One look at the leader key.
enum Attempt {
    Won(Term),
    Held(String),
}

/// This scheduler's candidacy for its framework name.
pub struct Election {
    kv: KvClient,
    key: String,
    me: String,
}

impl Election {
    pub fn new(masters: Vec<String>, framework_name: &str, me: &str) -> Election {
        Election {
            kv: KvClient::new(masters).with_deadline(Duration::from_secs(3)),
            key: format!("/meseta/frameworks/{framework_name}/leader"),
            me: me.to_string(),
        }
    }

    /// The leader key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Campaign until this scheduler holds the lease; `standby(leader)` is
    /// called with the current leader's address whenever another one holds
    /// it, `unreachable(why)` whenever no master answers.
    pub async fn campaign(
        &self,
        mut standby: impl FnMut(&str),
        mut unreachable: impl FnMut(&str),
    ) -> Term {
        let mut last_error: Option<String> = None;
        loop {
            match self.try_once().await {
                Ok(Attempt::Won(term)) => {
                    tracing::info!(key = %self.key, lease = term.lease, "elected leader of the framework");
                    return term;
                }
                Ok(Attempt::Held(leader)) => {
                    last_error = None;
                    if !leader.is_empty() {
                        standby(&leader);
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    unreachable(&e);
                    if last_error.as_ref() != Some(&e) {
                        tracing::warn!(error = %e, "cannot campaign for leadership yet; retrying");
                    }
                    last_error = Some(e);
                }
            }
            tokio::time::sleep(STANDBY_POLL).await;
        }
    }

    async fn try_once(&self) -> Result<Attempt, KvClientError> {
        if let Some(kv) = self.kv.get(&self.key).await? {
            return Ok(Attempt::Held(
                String::from_utf8_lossy(&kv.value).into_owned(),
            ));
        }
        let sent = Instant::now();
        let lease = self.kv.lease_grant(LEASE_TTL).await?;
        let term = Term {
            lease,
            renewed: sent,
        };
        let put = self
            .kv
            .put_if_version(&self.key, self.me.as_bytes().to_vec(), lease, 0)
            .await;
        match put {
            Ok(r) if r.succeeded => Ok(Attempt::Won(term)),
            Ok(r) => {
                self.revoke(lease).await;
                let holder = r
                    .current
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
                    .unwrap_or_default();
                Ok(Attempt::Held(holder))
            }
            Err(e) if e.is_indeterminate() => {
                // Applied or not: the key says.
                match self.kv.get(&self.key).await {
                    Ok(Some(kv)) if kv.lease == lease => Ok(Attempt::Won(term)),
                    _ => {
                        self.revoke(lease).await;
                        Err(e)
                    }
                }
            }
            Err(e) => {
                self.revoke(lease).await;
                Err(e)
            }
        }
    }

    /// Keep `term`'s lease alive; returns (why) once this scheduler can no
    /// longer be sure it holds it. Never returns while the lease is kept.
    pub async fn hold(&self, mut term: Term) -> String {
        loop {
            let deadline = term.renewed + LEASE_TTL - SAFETY_MARGIN;
            let now = Instant::now();
            if now >= deadline {
                return format!(
                    "the leader lease was not renewed for {:?}",
                    now - term.renewed
                );
            }
            let sent = Instant::now();
            let left = deadline - sent;
            match tokio::time::timeout(left, self.kv.lease_keep_alive(term.lease)).await {
                Ok(Ok(true)) => term.renewed = sent,
                Ok(Ok(false)) => return "the leader lease no longer exists".to_string(),
                Ok(Err(e)) => tracing::warn!(error = %e, "leader lease keep-alive failed"),
                Err(_) => continue,
            }
            let next = (sent + KEEP_ALIVE_EVERY).min(term.renewed + LEASE_TTL - SAFETY_MARGIN);
            tokio::time::sleep_until(next.into()).await;
        }
    }

    /// Give the lease up (the leader key goes with it). Best effort.
    pub async fn revoke(&self, lease: u64) {
        match tokio::time::timeout(Duration::from_secs(3), self.kv.lease_revoke(lease)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, lease, "cannot revoke the leader lease"),
            Err(_) => tracing::warn!(lease, "revoking the leader lease timed out"),
        }
    }
}

/// What a standby does with a request while `leader` leads.
pub async fn standby(
    config: &SchedulerConfig,
    me: &str,
    leader: &str,
    client: &reqwest::Client,
    req: Request,
) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (path.trim_end_matches('/'), &method) {
        ("/ping", _) => return "pong".into_response(),
        ("/v2/info", &Method::GET) => {
            let master = format!(
                "http://{}/",
                config.masters.first().cloned().unwrap_or_default()
            );
            return Json(crate::api::info_json(
                config, me, false, leader, None, master,
            ))
            .into_response();
        }
        ("/v2/leader", &Method::GET) => return Json(json!({"leader": leader})).into_response(),
        ("/v2/leader", &Method::DELETE) => {
            return message(StatusCode::NOT_FOUND, "There is no leadership to abdicate")
        }
        _ => {}
    }
    proxy(me, leader, client, req).await
}

fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(json!({"message": text.into()}))).into_response()
}

/// Forward `req` to the leader: method, path and query, body, content type
/// and accept; answer with its status, content type and (streamed) body.
async fn proxy(me: &str, leader: &str, client: &reqwest::Client, req: Request) -> Response {
    if leader.is_empty() || leader == me {
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Could not determine the current leader",
        );
    }
    if req.headers().contains_key(PROXIED_HEADER) {
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not the leader (leader: {leader}); the request was already proxied once"),
        );
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return message(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let url = format!("http://{leader}{path_and_query}");
    let mut out = client
        .request(parts.method, &url)
        .header(PROXIED_HEADER, me)
        .body(body);
    for name in [header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v.clone());
        }
    }
    let resp = match out.send().await {
        Ok(r) => r,
        Err(e) => {
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the leader {leader} did not answer: {e}"),
            )
        }
    };
    let mut answer = Response::builder().status(resp.status().as_u16());
    for name in [
        header::CONTENT_TYPE,
        header::LOCATION,
        header::CACHE_CONTROL,
    ] {
        if let Some(v) = resp.headers().get(name.as_str()) {
            if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
                answer = answer.header(name, v);
            }
        }
    }
    answer
        .body(Body::from_stream(resp.bytes_stream()))
        .unwrap_or_else(|e| message(StatusCode::BAD_GATEWAY, e.to_string()))
}

/// The HTTP client a standby proxies with (no redirects followed: the
/// leader's answer goes back as it is).
pub fn proxy_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client with a timeout and no redirects builds")
}
