//! Blocking HTTP/JSON helpers with timeouts.

use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::Method;
use serde_json::Value;

/// How long one request may take before it is an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A response: status and body, with the body read as JSON on demand.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    /// The body as JSON, or `Value::Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

/// One HTTP endpoint (`http://host:port`), e.g. the scheduler's `/v2` API.
#[derive(Clone)]
pub struct Api {
    base: String,
    client: Client,
}

/// A blocking client with connect and request timeouts.
pub fn client() -> Client {
    Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("building a reqwest client with only timeouts set cannot fail")
}

impl Api {
    /// `address` is `host:port`.
    pub fn new(address: &str) -> Api {
        Api {
            base: format!("http://{address}"),
            client: client(),
        }
    }

    /// `http://host:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn send(
        &self,
        method: Method,
        path: &str,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<Reply> {
        let url = self.url(path);
        let req = build(self.client.request(method.clone(), &url));
        let resp = req.send().with_context(|| format!("{method} {url}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .text()
            .with_context(|| format!("{method} {url}: reading the body"))?;
        Ok(Reply { status, body })
    }

    pub fn get(&self, path: &str) -> Result<Reply> {
        self.send(Method::GET, path, |r| r)
    }

    /// GET that must answer 2xx with JSON.
    pub fn get_json(&self, path: &str) -> Result<Value> {
        let reply = self.get(path)?;
        if !reply.is_success() {
            anyhow::bail!("GET {path}: {reply}");
        }
        serde_json::from_str(&reply.body)
            .with_context(|| format!("GET {path}: body is not JSON: {}", reply.body))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Result<Reply> {
        self.send(Method::POST, path, |r| r.json(body))
    }

    /// POST of a body exactly as given (e.g. a fixture file, or broken JSON).
    pub fn post_raw(&self, path: &str, body: &str) -> Result<Reply> {
        let body = body.to_string();
        self.send(Method::POST, path, |r| {
            r.header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
        })
    }

    pub fn put_json(&self, path: &str, body: &Value) -> Result<Reply> {
        self.send(Method::PUT, path, |r| r.json(body))
    }

    pub fn put_raw(&self, path: &str, body: &str) -> Result<Reply> {
        let body = body.to_string();
        self.send(Method::PUT, path, |r| {
            r.header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
        })
    }

    pub fn patch_json(&self, path: &str, body: &Value) -> Result<Reply> {
        self.send(Method::PATCH, path, |r| r.json(body))
    }

    pub fn delete(&self, path: &str) -> Result<Reply> {
        self.send(Method::DELETE, path, |r| r)
    }
}
