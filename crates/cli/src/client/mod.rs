//! The CLI's HTTP client: finds the leader from any of the addresses it is
//! given, falls over to the next address when one does not answer, and
//! turns an API's error answer into a [`CliError`] with the API's own
//! message (Marathon's `message` and `details`, the master's body).
//!
//! - The scheduler's leader comes from `GET /v2/leader` (`{"leader":
//!   "host:port"}`); a standby would proxy, but asking the leader saves a hop
//!   and keeps working while the standby is the one that is down.
//! - The master's leader comes from `/master/state`'s `leader`
//!   (`master@host:port`).

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

/// Exit codes, documented in README.md ("Exit codes"); 0 is success.
pub mod exit {
    /// The API refused the request (validation, conflict, any other error).
    pub const REFUSED: i32 = 1;
    /// Wrong usage: unknown flag, missing argument, unreadable file.
    pub const USAGE: i32 = 2;
    /// No address given answered.
    pub const UNREACHABLE: i32 = 3;
    /// The app, group, deployment, task or agent does not exist.
    pub const NOT_FOUND: i32 = 4;
    /// The deployment failed, was rolled back or did not finish in time.
    pub const DEPLOYMENT_FAILED: i32 = 5;
}

/// What went wrong, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API answered with an error (4xx/5xx other than 404).
    #[error("{message}")]
    Refused { status: u16, message: String },
    /// 404, or the thing is missing from a listing.
    #[error("{0}")]
    NotFound(String),
    /// None of the addresses answered, or the API has no leader (503).
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    DeploymentFailed(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Refused { .. } => exit::REFUSED,
            CliError::NotFound(_) => exit::NOT_FOUND,
            CliError::Unreachable(_) => exit::UNREACHABLE,
            CliError::Usage(_) => exit::USAGE,
            CliError::DeploymentFailed(_) => exit::DEPLOYMENT_FAILED,
        }
    }
}

/// Which API an [`Api`] talks to (how its leader is found).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The scheduler's Marathon `/v2` API.
    Marathon,
    /// The master's operator endpoints.
    Master,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Marathon => "marathon",
            Service::Master => "master",
        }
    }
}

/// A client for one API, given every address it may be reached at.
pub struct Api {
    service: Service,
    addresses: Vec<String>,
    http: reqwest::Client,
    /// The leader found by the first request (tried first afterwards).
    leader: tokio::sync::Mutex<Option<String>>,
}

/// The message of an error body: Marathon's `message` with its `details`
/// (`path: errors`), a `message` or `error` field, or the text itself.
pub fn error_message(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        let t = body.trim();
        return if t.is_empty() {
            "(no message)".into()
        } else {
            t.to_string()
        };
    };
    let mut out = v
        .get("message")
        .or_else(|| v.get("error"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string());
    for d in v
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let path = d.get("path").and_then(Value::as_str).unwrap_or("");
        let errors: Vec<String> = match d.get("errors") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                .collect(),
            Some(other) => vec![other.to_string()],
            None => Vec::new(),
        };
        out.push_str(&format!("\n  {path}: {}", errors.join("; ")));
    }
    // Marathon's 409 names the deployments in the way.
    for d in v
        .get("deployments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(id) = d.get("id").and_then(Value::as_str) {
            out.push_str(&format!(
                "\n  deployment in the way: {id} (retry with --force)"
            ));
        }
    }
    out
}

impl Api {
    /// `addresses`: `host:port` or `http://host:port`, tried in order.
    pub fn new(service: Service, addresses: &[String]) -> Api {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            // The leader is found explicitly; a redirect would hide which
            // address answered.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let addresses = addresses
            .iter()
            .flat_map(|a| a.split(','))
            .map(|a| {
                a.trim()
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string()
            })
            .filter(|a| !a.is_empty())
            .collect();
        Api {
            service,
            addresses,
            http,
            leader: tokio::sync::Mutex::new(None),
        }
    }

    /// The leader's `host:port`: the first address that answers names it
    /// (or is it). Addresses that do not answer are skipped.
    pub async fn leader(&self) -> Result<String, CliError> {
        let mut cached = self.leader.lock().await;
        if let Some(l) = cached.as_ref() {
            return Ok(l.clone());
        }
        let mut failures = Vec::new();
        for address in &self.addresses {
            match self.ask_leader(address).await {
                Ok(leader) => {
                    tracing::debug!(service = self.service.name(), %address, %leader, "leader found");
                    *cached = Some(leader.clone());
                    return Ok(leader);
                }
                Err(e) => {
                    tracing::debug!(service = self.service.name(), %address, error = %e, "address skipped");
                    failures.push(format!("{address}: {e}"));
                }
            }
        }
        Err(CliError::Unreachable(format!(
            "no {} answered ({})",
            self.service.name(),
            if failures.is_empty() {
                "no address given".to_string()
            } else {
                failures.join("; ")
            }
        )))
    }

    async fn ask_leader(&self, address: &str) -> Result<String, String> {
        let path = match self.service {
            Service::Marathon => "/v2/leader",
            Service::Master => "/master/state",
        };
        let resp = self
            .http
            .get(format!("http://{address}{path}"))
            .send()
            .await
            .map_err(|e| short(&e))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let named = match self.service {
            Service::Marathon => body.get("leader").and_then(Value::as_str),
            Service::Master => body
                .get("leader")
                .and_then(Value::as_str)
                .map(|l| l.trim_start_matches("master@")),
        }
        .filter(|l| !l.is_empty())
        .map(str::to_string);
        match named {
            Some(l) => Ok(l),
            // Marathon answers 404 while no leader is elected: the address
            // itself waits for one and proxies, so use it.
            None if status.is_success() || status.as_u16() == 404 => Ok(address.to_string()),
            None => Err(format!("{status}")),
        }
    }

    /// Sends a request to the leader; when the leader does not answer (or
    /// redirects, no longer leading), the leader is looked up again from
    /// every address (once).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, CliError> {
        let mut last = String::new();
        for attempt in 0..2 {
            let leader = self.leader().await?;
            let url = format!("http://{leader}{path}");
            let mut req = self.http.request(method.clone(), &url);
            if let Some(b) = body {
                req = req.json(b);
            }
            match req.send().await {
                // A master that stopped leading redirects to the new
                // leader: look it up again rather than follow blindly.
                Ok(resp) if resp.status().is_redirection() && attempt == 0 => {
                    tracing::debug!(%url, status = %resp.status(), "no longer the leader; looking it up again");
                    *self.leader.lock().await = None;
                }
                Ok(resp) => return Ok(resp),
                Err(e) if e.is_connect() || e.is_timeout() => {
                    last = format!("{url}: {}", short(&e));
                    tracing::debug!(attempt, error = %last, "leader did not answer; looking it up again");
                    *self.leader.lock().await = None;
                }
                Err(e) => return Err(CliError::Unreachable(format!("{url}: {}", short(&e)))),
            }
        }
        Err(CliError::Unreachable(last))
    }

    /// A request whose answer is JSON; an error status becomes a
    /// [`CliError`] with the API's message.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let resp = self.send(method.clone(), path, body).await?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| CliError::Unreachable(format!("{method} {path}: {}", short(&e))))?;
        if status.as_u16() == 404 {
            return Err(CliError::NotFound(error_message(&text)));
        }
        // 503: the API is up but has no leader (an election, no master).
        if status.as_u16() == 503 {
            return Err(CliError::Unreachable(format!(
                "{method} {path}: {status}: {}",
                error_message(&text)
            )));
        }
        if !status.is_success() {
            return Err(CliError::Refused {
                status: status.as_u16(),
                message: format!("{method} {path}: {status}: {}", error_message(&text)),
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| CliError::Refused {
            status: status.as_u16(),
            message: format!("{method} {path}: the answer is not JSON: {e}"),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.json(Method::GET, path, None).await
    }
}

/// A reqwest error without its URL (which the caller names): its kind and
/// the innermost cause ("cannot connect: Connection refused").
fn short(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_decode() {
        "bad answer"
    } else {
        "request failed"
    };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut innermost = None;
    while let Some(c) = cause {
        innermost = Some(c.to_string());
        cause = c.source();
    }
    match innermost {
        Some(c) => format!("{kind}: {c}"),
        None => kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marathon_errors_show_message_and_details() {
        let body = r#"{"message":"Object is not valid","details":[{"path":"/cpus","errors":["error.min"]}]}"#;
        assert_eq!(
            error_message(body),
            "Object is not valid\n  /cpus: error.min"
        );
        assert_eq!(error_message("plain text\n"), "plain text");
        assert_eq!(error_message(""), "(no message)");
    }

    #[test]
    fn addresses_are_split_and_normalised() {
        let api = Api::new(
            Service::Marathon,
            &["http://a:1/, b:2".to_string(), "c:3".to_string()],
        );
        assert_eq!(api.addresses, ["a:1", "b:2", "c:3"]);
    }
}
