//! `/ui/sandbox?task=ID&path=REL`: a task's sandbox directory, and
//! `/ui/sandbox/file?task=ID&path=REL`: the tail of one of its files. The
//! master finds the task's agent in its own state, the sandbox directory in
//! the agent's `/state`, and reads the agent's `/files/browse` and
//! `/files/read` itself (the agent confines every path to task
//! sandboxes; paths with `..` are refused here already).

use std::sync::OnceLock;
use std::time::Duration;

use axum::response::Response;
use maud::{html, Markup};
use meseta_webui::widgets::{ago_secs, bytes, url_encode};
use serde_json::Value;

use super::{file_href, param, s, sandbox_href, MasterState, Nav, Params, View, POLL_MS};

/// How much of the end of a file the page shows.
const TAIL_BYTES: u64 = 64 * 1024;

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default()
    })
}

/// Where a task's files are.
struct Sandbox {
    agent: String,
    hostname: String,
    directory: String,
}

async fn get_json(url: &str) -> Result<Value, String> {
    let resp = client()
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| format!("GET {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET {url}: {status}: {}", s(&body, "message")));
    }
    Ok(body)
}

fn encode_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn locate(view: &View, task: &str) -> Result<Sandbox, String> {
    let (_, t) = view
        .tasks()
        .into_iter()
        .find(|(_, t)| s(t, "id") == task)
        .ok_or_else(|| format!("task {task} is unknown to this master"))?;
    let agent_id = s(t, "slave_id");
    let agent = view
        .agent(agent_id)
        .ok_or_else(|| format!("agent {agent_id} of task {task} is not registered"))?;
    let address = s(agent, "address").to_string();
    let state = get_json(&format!("http://{address}/state")).await?;
    let directory = ["tasks", "completed_tasks"]
        .iter()
        .flat_map(|k| {
            state
                .get(*k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find(|e| s(e, "id") == task)
        .map(|e| s(e, "directory").to_string())
        .filter(|d| !d.is_empty())
        .ok_or_else(|| format!("agent {address} no longer has the sandbox of task {task}"))?;
    Ok(Sandbox {
        agent: address,
        hostname: s(agent, "hostname").to_string(),
        directory,
    })
}

/// A relative path inside a sandbox, or why it is refused.
fn relative(path: &str) -> Result<String, String> {
    let rel = path.trim_matches('/');
    if rel.split('/').any(|c| c == "..") {
        return Err(format!("{path}: a sandbox path may not contain .."));
    }
    Ok(rel.to_string())
}

impl Sandbox {
    fn absolute(&self, rel: &str) -> String {
        if rel.is_empty() {
            self.directory.clone()
        } else {
            format!("{}/{rel}", self.directory.trim_end_matches('/'))
        }
    }
}

fn crumbs(task: &str, rel: &str) -> Markup {
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    html! {
        div.crumbs {
            a href="/ui/tasks" { "Tasks" } " / "
            a href=(sandbox_href(task, "")) { "sandbox of " (task) }
            @for (i, p) in parts.iter().enumerate() {
                " / "
                @if i + 1 < parts.len() { a href=(sandbox_href(task, &parts[..=i].join("/"))) { (p) } } @else { (p) }
            }
        }
    }
}

pub(super) async fn browse(
    axum::extract::State(master): MasterState,
    axum::extract::Query(params): Params,
) -> Response {
    let view = View::of(&master);
    let task = param(&params, "task").to_string();
    let listing = async {
        let rel = relative(param(&params, "path"))?;
        let sb = locate(&view, &task).await?;
        let url = format!(
            "http://{}/files/browse?{}",
            sb.agent,
            encode_query(&[("path", &sb.absolute(&rel))])
        );
        let entries = get_json(&url).await?;
        Ok::<_, String>((sb, rel, entries))
    }
    .await;
    let body = match &listing {
        Err(e) => html! { (crumbs(&task, "")) h1 { "Sandbox" } div.notice { (e) } },
        Ok((sb, rel, entries)) => {
            let mut entries: Vec<&Value> = entries
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            entries.sort_by_key(|e| (!s(e, "mode").starts_with('d'), s(e, "path").to_string()));
            let base = format!("{}/", sb.directory.trim_end_matches('/'));
            html! {
                (crumbs(&task, rel))
                h1 { "Sandbox" span.muted { "on " (sb.hostname) " (" (sb.agent) ")" } }
                p.muted.mono { (sb.absolute(rel)) }
                div #r-sandbox data-region {
                    div.table-wrap { table.sandbox {
                        thead { tr { th { "Mode" } th { "Name" } th.num { "Size" } th { "Modified" } th.opt { "Owner" } } }
                        tbody {
                            @if entries.is_empty() { tr { td colspan="5" { span.muted { "empty" } } } }
                            @for e in &entries {
                                @let path = s(e, "path");
                                @let r = path.strip_prefix(&base).unwrap_or(path);
                                @let name = r.rsplit('/').next().unwrap_or(r);
                                @let dir = s(e, "mode").starts_with('d');
                                tr data-entry=(name) {
                                    td.mono { (s(e, "mode")) }
                                    td { @if dir { a.folder href=(sandbox_href(&task, r)) { (name) } } @else { a href=(file_href(&task, r)) { (name) } } }
                                    td.num { (bytes(e.get("size").and_then(Value::as_u64).unwrap_or(0))) }
                                    td { (ago_secs(e.get("mtime").and_then(Value::as_f64).unwrap_or(0.0))) }
                                    td.opt { (s(e, "uid")) }
                                }
                            }
                        }
                    } }
                }
            }
        }
    };
    view.page("Sandbox", Nav::Tasks, super::polling(), body)
}

pub(super) async fn file(
    axum::extract::State(master): MasterState,
    axum::extract::Query(params): Params,
) -> Response {
    let view = View::of(&master);
    let task = param(&params, "task").to_string();
    let tail = async {
        let rel = relative(param(&params, "path"))?;
        let sb = locate(&view, &task).await?;
        let path = sb.absolute(&rel);
        let size = get_json(&format!(
            "http://{}/files/read?{}",
            sb.agent,
            encode_query(&[("path", &path), ("offset", "-1")])
        ))
        .await?
        .get("offset")
        .and_then(Value::as_u64)
        .unwrap_or(0);
        let from = size.saturating_sub(TAIL_BYTES).to_string();
        let chunk = get_json(&format!(
            "http://{}/files/read?{}",
            sb.agent,
            encode_query(&[
                ("path", &path),
                ("offset", &from),
                ("length", &TAIL_BYTES.to_string())
            ])
        ))
        .await?;
        Ok::<_, String>((rel, size, chunk))
    }
    .await;
    let rel = relative(param(&params, "path")).unwrap_or_default();
    let body = html! {
        (crumbs(&task, &rel))
        h1 { (rel) }
        div #r-file data-region {
            @match &tail {
                Err(e) => div.notice { (e) },
                Ok((_, size, chunk)) => {
                    @let offset = chunk.get("offset").and_then(Value::as_u64).unwrap_or(0);
                    p.muted {
                        (bytes(*size))
                        @if offset > 0 { ", the last " (bytes(size - offset)) " shown" }
                        " · refreshed every " (POLL_MS / 1000) " s"
                    }
                    @let data = s(chunk, "data");
                    @if data.is_empty() { pre.log { span.muted { "(empty)" } } } @else { pre.log { (data) } }
                }
            }
        }
    };
    view.page(&rel, Nav::Tasks, super::polling(), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_paths_may_not_climb_out() {
        assert_eq!(relative("/logs/x/").as_deref(), Ok("logs/x"));
        assert_eq!(relative("").as_deref(), Ok(""));
        assert!(relative("../etc").is_err());
        assert!(relative("a/../../b").is_err());
    }
}
