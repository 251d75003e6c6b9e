//! Marathon `/v2` calls the end-to-end tests make against any scheduler
//! address (one started by [`crate::masters::Masters`], or a standby).

use anyhow::{anyhow, Result};
use serde_json::Value;

use crate::http::Api;
use crate::wait::wait_for;

/// POST an app, retrying while the scheduler answers 503 (it looks for the
/// leader or its store); any other answer than 201 fails.
pub fn post_app(scheduler: &Api, app: &Value) -> Result<()> {
    wait_for("POST /v2/apps to be accepted", || {
        let r = scheduler.post_json("/v2/apps", app)?;
        match r.status {
            201 => Ok(()),
            503 => Err(anyhow!("503: {}", r.body)),
            other => Err(anyhow!("unexpected {other}: {}", r.body)),
        }
    })
}

/// Running task ids of an app, sorted.
pub fn running_tasks(scheduler: &Api, app: &str) -> Result<Vec<String>> {
    let tasks = scheduler.get_json(&format!("/v2/apps{app}/tasks"))?;
    let mut ids: Vec<String> = tasks["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Waits until exactly `n` tasks of `app` run; returns their ids, sorted.
pub fn wait_running(scheduler: &Api, app: &str, n: usize) -> Result<Vec<String>> {
    wait_for(&format!("{n} running tasks of {app}"), || {
        let ids = running_tasks(scheduler, app)?;
        if ids.len() == n {
            Ok(ids)
        } else {
            Err(anyhow!("{} running: {ids:?}", ids.len()))
        }
    })
}
