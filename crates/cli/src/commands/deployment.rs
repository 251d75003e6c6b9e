//! `meseta deployment …`: Marathon deployments through `/v2/deployments`.

use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use super::output::{self, text};
use super::{progress, ClientArgs};
use crate::client::CliError;

#[derive(Subcommand, Debug)]
pub enum DeploymentCommand {
    /// List the deployments in progress.
    List,
    /// Follow a deployment until it is done (exit 0) or fails (exit 5).
    Watch {
        id: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Stop a deployment and roll its apps back (Marathon's DELETE).
    Rollback {
        id: String,
        /// Only stop it, leaving the apps as they are now.
        #[arg(long)]
        force: bool,
    },
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

pub async fn run(client: &ClientArgs, cmd: DeploymentCommand) -> Result<(), CliError> {
    let api = client.marathon();
    match cmd {
        DeploymentCommand::List => {
            let answer = api.get("/v2/deployments").await?;
            if client.json {
                output::json(&answer);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = answer
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let actions: Vec<String> = d
                        .get("currentActions")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|a| format!("{} {}", text(a, "action"), text(a, "app")))
                        .collect();
                    vec![
                        text(d, "id"),
                        strings(d, "affectedApps").join(","),
                        format!("{}/{}", text(d, "currentStep"), text(d, "totalSteps")),
                        actions.join(", "),
                        text(d, "version"),
                    ]
                })
                .collect();
            output::table(&["ID", "APPS", "STEP", "ACTIONS", "VERSION"], &rows);
            Ok(())
        }
        DeploymentCommand::Watch { id, timeout } => {
            let list = api.get("/v2/deployments").await?;
            let deployment = list
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| d.get("id").and_then(Value::as_str) == Some(id.as_str()))
                .ok_or_else(|| {
                    CliError::NotFound(format!("Deployment '{id}' does not exist (or is done)"))
                })?;
            let apps = strings(deployment, "affectedApps");
            let app = (apps.len() == 1).then(|| apps[0].clone());
            progress::wait(
                &api,
                &id,
                app.as_deref(),
                std::time::Duration::from_secs(timeout),
            )
            .await
        }
        DeploymentCommand::Rollback { id, force } => {
            let answer = api
                .json(
                    Method::DELETE,
                    &format!(
                        "/v2/deployments/{id}{}",
                        if force { "?force=true" } else { "" }
                    ),
                    None,
                )
                .await?;
            if client.json {
                output::json(&answer);
            } else if let Some(d) = super::deployment_id(&answer) {
                println!("deployment {id} rolled back by deployment {d}");
            } else {
                println!("deployment {id} stopped");
            }
            Ok(())
        }
    }
}
