//! `meseta task log`: find the task's agent through the master, its sandbox
//! through the agent, and print the file (Mesos' `/files/read`).

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value> {
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .with_context(|| format!("GET {url}: reading the JSON body"))?;
    if !status.is_success() {
        bail!(
            "GET {url}: {status}: {}",
            body.get("message").and_then(Value::as_str).unwrap_or("")
        );
    }
    Ok(body)
}

fn find_task<'a>(list: Option<&'a Value>, task_id: &str) -> Option<&'a Value> {
    list?
        .as_array()?
        .iter()
        .find(|t| t.get("id").and_then(Value::as_str) == Some(task_id))
}

/// Print `stdout` (or `stderr`) of `task_id`.
pub async fn print(master: &str, task_id: &str, stderr: bool) -> Result<()> {
    let client = reqwest::Client::new();
    let mut state = get_json(&client, &format!("http://{master}/master/state")).await?;
    if let Some(leader) = state
        .get("leader")
        .and_then(Value::as_str)
        .map(|l| l.trim_start_matches("master@"))
        .filter(|l| !l.is_empty() && *l != master)
    {
        state = get_json(&client, &format!("http://{leader}/master/state")).await?;
    }
    let frameworks = state
        .get("frameworks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let task = frameworks
        .iter()
        .find_map(|f| {
            find_task(f.get("tasks"), task_id)
                .or_else(|| find_task(f.get("completed_tasks"), task_id))
        })
        .ok_or_else(|| anyhow!("task {task_id} is unknown to the master at {master}"))?;
    let agent_id = task
        .get("slave_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let agent = state
        .get("slaves")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|s| s.get("id").and_then(Value::as_str) == Some(agent_id))
        })
        .ok_or_else(|| anyhow!("agent {agent_id} of task {task_id} is not connected"))?;
    let address = agent
        .get("address")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("agent {agent_id} has no address"))?;
    let agent_state = get_json(&client, &format!("http://{address}/state")).await?;
    let entry = find_task(agent_state.get("tasks"), task_id)
        .or_else(|| find_task(agent_state.get("completed_tasks"), task_id))
        .ok_or_else(|| anyhow!("agent {address} no longer has the sandbox of task {task_id}"))?;
    let dir = entry
        .get("directory")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("agent {address} reports no sandbox for task {task_id}"))?;
    let file = if stderr { "stderr" } else { "stdout" };
    let path = format!("{dir}/{file}");
    let url = reqwest::Url::parse_with_params(
        &format!("http://{address}/files/read"),
        &[("path", path.as_str())],
    )
    .context("building the files URL")?;
    let body = get_json(&client, url.as_str()).await?;
    print!(
        "{}",
        body.get("data").and_then(Value::as_str).unwrap_or_default()
    );
    Ok(())
}
