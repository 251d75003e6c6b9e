//! A task's sandbox through the HTTP APIs, as `meseta task log` and the
//! scheduler's UI read it: the master's `/master/state` names the task's
//! agent (following the leader), the agent's `/state` its sandbox
//! directory, and the agent's files API (`/files/read`, `/files/browse`)
//! serves the files.

use serde_json::Value;

/// Errors reading a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("GET {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("GET {url}: {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("task {task} is unknown to the master at {master}")]
    TaskUnknown { task: String, master: String },
    #[error("agent {agent} of task {task} is not connected")]
    AgentGone { agent: String, task: String },
    #[error("agent {agent} no longer has the sandbox of task {task}")]
    NoSandbox { agent: String, task: String },
}

/// Where a task's files are: its agent's `host:port` and the sandbox
/// directory on that agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub agent: String,
    pub directory: String,
}

/// A piece of a file: its text (lossy UTF-8) from `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub data: String,
    pub offset: u64,
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, SandboxError> {
    let http = |source| SandboxError::Http {
        url: url.to_string(),
        source,
    };
    let resp = client.get(url).send().await.map_err(http)?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(http)?;
    if !status.is_success() {
        return Err(SandboxError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            message: body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        });
    }
    Ok(body)
}

fn find_task<'a>(list: Option<&'a Value>, task_id: &str) -> Option<&'a Value> {
    list?
        .as_array()?
        .iter()
        .find(|t| t.get("id").and_then(Value::as_str) == Some(task_id))
}

/// Finds the sandbox of `task_id` through the master at `master`
/// (`host:port`; a follower's state names the leader, which is asked).
pub async fn locate(
    client: &reqwest::Client,
    master: &str,
    task_id: &str,
) -> Result<Sandbox, SandboxError> {
    let mut state = get_json(client, &format!("http://{master}/master/state")).await?;
    if let Some(leader) = state
        .get("leader")
        .and_then(Value::as_str)
        .map(|l| l.trim_start_matches("master@").to_string())
        .filter(|l| !l.is_empty() && l != master)
    {
        state = get_json(client, &format!("http://{leader}/master/state")).await?;
    }
    let task = state
        .get("frameworks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|f| {
            find_task(f.get("tasks"), task_id)
                .or_else(|| find_task(f.get("completed_tasks"), task_id))
        })
        .ok_or_else(|| SandboxError::TaskUnknown {
            task: task_id.to_string(),
            master: master.to_string(),
        })?;
    let agent_id = task
        .get("slave_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let gone = || SandboxError::AgentGone {
        agent: agent_id.to_string(),
        task: task_id.to_string(),
    };
    let address = state
        .get("slaves")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|s| s.get("id").and_then(Value::as_str) == Some(agent_id))
        })
        .and_then(|a| a.get("address").and_then(Value::as_str))
        .ok_or_else(gone)?
        .to_string();
    let agent_state = get_json(client, &format!("http://{address}/state")).await?;
    let directory = find_task(agent_state.get("tasks"), task_id)
        .or_else(|| find_task(agent_state.get("completed_tasks"), task_id))
        .and_then(|t| t.get("directory").and_then(Value::as_str))
        .filter(|d| !d.is_empty())
        .ok_or_else(|| SandboxError::NoSandbox {
            agent: address.clone(),
            task: task_id.to_string(),
        })?
        .to_string();
    Ok(Sandbox {
        agent: address,
        directory,
    })
}

impl Sandbox {
    /// The absolute path on the agent of `relative` (a path in the sandbox).
    pub fn path(&self, relative: &str) -> String {
        let rel = relative.trim_start_matches('/');
        if rel.is_empty() {
            self.directory.clone()
        } else {
            format!("{}/{rel}", self.directory.trim_end_matches('/'))
        }
    }

    fn files_url(&self, endpoint: &str, params: &[(&str, String)]) -> String {
        let mut url = format!("http://{}/files/{endpoint}?", self.agent);
        let pairs: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        url.push_str(&pairs.join("&"));
        url
    }

    /// `/files/read` of `relative` from `offset` (at most `length` bytes;
    /// the agent caps a read at 4 MiB).
    pub async fn read(
        &self,
        client: &reqwest::Client,
        relative: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Chunk, SandboxError> {
        let mut params = vec![
            ("path", self.path(relative)),
            ("offset", offset.to_string()),
        ];
        if let Some(l) = length {
            params.push(("length", l.to_string()));
        }
        let body = get_json(client, &self.files_url("read", &params)).await?;
        Ok(Chunk {
            data: body
                .get("data")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            offset: body.get("offset").and_then(Value::as_u64).unwrap_or(offset),
        })
    }

    /// The size of `relative` in bytes (`/files/read` with `offset=-1`).
    pub async fn size(
        &self,
        client: &reqwest::Client,
        relative: &str,
    ) -> Result<u64, SandboxError> {
        let params = [("path", self.path(relative)), ("offset", "-1".to_string())];
        let body = get_json(client, &self.files_url("read", &params)).await?;
        Ok(body.get("offset").and_then(Value::as_u64).unwrap_or(0))
    }

    /// The last `max` bytes of `relative`, and the file's size.
    pub async fn tail(
        &self,
        client: &reqwest::Client,
        relative: &str,
        max: u64,
    ) -> Result<(Chunk, u64), SandboxError> {
        let size = self.size(client, relative).await?;
        let from = size.saturating_sub(max);
        let chunk = self.read(client, relative, from, Some(max)).await?;
        Ok((chunk, size))
    }

    /// `/files/browse` of the directory `relative`: the agent's entries
    /// (`path`, `size`, `mode`, `mtime`, `uid`, `gid`, `nlink`).
    pub async fn browse(
        &self,
        client: &reqwest::Client,
        relative: &str,
    ) -> Result<Vec<Value>, SandboxError> {
        let params = [("path", self.path(relative))];
        let body = get_json(client, &self.files_url("browse", &params)).await?;
        Ok(body.as_array().cloned().unwrap_or_default())
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_joined_under_the_sandbox() {
        let s = Sandbox {
            agent: "127.0.0.1:5051".into(),
            directory: "/var/lib/meseta/sandbox/t1".into(),
        };
        assert_eq!(s.path("stdout"), "/var/lib/meseta/sandbox/t1/stdout");
        assert_eq!(s.path("/logs/a"), "/var/lib/meseta/sandbox/t1/logs/a");
        assert_eq!(s.path(""), "/var/lib/meseta/sandbox/t1");
        assert_eq!(
            s.files_url("read", &[("path", "/a b".into())]),
            "http://127.0.0.1:5051/files/read?path=/a%20b"
        );
    }
}
