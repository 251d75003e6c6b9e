//! `meseta task …`: the scheduler's tasks (`/v2/tasks`) and their sandbox
//! logs (through the master and the task's agent).

use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use super::output::{self, text};
use super::{path_id, ClientArgs};
use crate::client::CliError;

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// List the apps' tasks.
    List {
        /// Only this app's tasks.
        #[arg(long)]
        app: Option<String>,
    },
    /// Print a task's stdout (or stderr) from its sandbox.
    Log {
        task_id: String,
        /// Print stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
        /// Keep printing what the task writes, like `tail -f` (Ctrl-C ends).
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Kill a task; its app replaces it unless `--scale`.
    Kill {
        task_id: String,
        /// Lower the app's instances by one instead of replacing the task.
        #[arg(long)]
        scale: bool,
    },
}

pub async fn run(client: &ClientArgs, cmd: TaskCommand) -> Result<(), CliError> {
    match cmd {
        TaskCommand::List { app } => {
            let api = client.marathon();
            let path = match &app {
                Some(a) => format!("/v2/apps/{}/tasks", path_id(a)),
                None => "/v2/tasks".to_string(),
            };
            let answer = api.get(&path).await?;
            if client.json {
                output::json(&answer);
            } else {
                let tasks = answer
                    .get("tasks")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                print_tasks(&tasks);
            }
            Ok(())
        }
        TaskCommand::Log {
            task_id,
            stderr,
            follow,
        } => {
            let master = client.master().leader().await?;
            crate::task_log::print(&master, &task_id, stderr, follow).await
        }
        TaskCommand::Kill { task_id, scale } => {
            let api = client.marathon();
            let tasks = api.get("/v2/tasks").await?;
            let app = tasks
                .get("tasks")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|t| t.get("id").and_then(Value::as_str) == Some(task_id.as_str()))
                .and_then(|t| t.get("appId").and_then(Value::as_str))
                .map(str::to_string)
                .ok_or_else(|| CliError::NotFound(format!("Task '{task_id}' does not exist")))?;
            let answer = api
                .json(
                    Method::DELETE,
                    &format!("/v2/apps/{}/tasks/{task_id}?scale={scale}", path_id(&app)),
                    None,
                )
                .await?;
            if client.json {
                output::json(&answer);
            } else if let Some(d) = super::deployment_id(&answer) {
                println!("task {task_id} killed; app {app} scaled down (deployment {d})");
            } else {
                println!("task {task_id} killed; app {app} replaces it");
            }
            Ok(())
        }
    }
}

/// A table of Marathon tasks.
pub fn print_tasks(tasks: &[Value]) {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let ports: Vec<String> = t
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| p.to_string())
                .collect();
            let health = match t.get("healthCheckResults").and_then(Value::as_array) {
                Some(r) if !r.is_empty() => {
                    if r.iter().all(|c| c.get("alive") == Some(&Value::Bool(true))) {
                        "healthy"
                    } else {
                        "unhealthy"
                    }
                }
                _ => "-",
            };
            vec![
                text(t, "id"),
                text(t, "appId"),
                text(t, "host"),
                if ports.is_empty() {
                    "-".into()
                } else {
                    ports.join(",")
                },
                text(t, "state"),
                health.into(),
                text(t, "startedAt"),
            ]
        })
        .collect();
    output::table(
        &["ID", "APP", "HOST", "PORTS", "STATE", "HEALTH", "STARTED"],
        &rows,
    );
}
