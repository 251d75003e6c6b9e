//! `meseta group …`: Marathon groups through `/v2/groups`.

use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use super::output::{self, text};
use super::{path_id, read_definition, ClientArgs, WaitArgs};
use crate::client::CliError;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List every group (nested ones included) with its apps.
    List,
    /// Show one group with its apps and subgroups.
    Show { id: String },
    /// Create a group (with its apps) from a JSON definition (`-`: stdin)
    /// and wait for its deployment.
    Add {
        file: PathBuf,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove a group with its apps and subgroups.
    Remove {
        id: String,
        #[arg(long)]
        force: bool,
    },
}

fn flatten<'a>(group: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(group);
    for g in group
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        flatten(g, out);
    }
}

fn rows(root: &Value) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    flatten(root, &mut all);
    all.iter()
        .map(|g| {
            let apps: Vec<String> = g
                .get("apps")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| a.get("id").and_then(Value::as_str).map(str::to_string))
                .collect();
            let groups = g
                .get("groups")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            vec![
                text(g, "id"),
                apps.len().to_string(),
                groups.to_string(),
                text(g, "version"),
                output::truncate(&apps.join(","), 60),
            ]
        })
        .collect()
}

pub async fn run(client: &ClientArgs, cmd: GroupCommand) -> Result<(), CliError> {
    let api = client.marathon();
    match cmd {
        GroupCommand::List | GroupCommand::Show { .. } => {
            let path = match &cmd {
                GroupCommand::Show { id } => format!("/v2/groups/{}", path_id(id)),
                _ => "/v2/groups".to_string(),
            };
            let answer = api.get(&path).await?;
            if client.json {
                output::json(&answer);
            } else {
                output::table(
                    &["ID", "APPS", "GROUPS", "VERSION", "APP IDS"],
                    &rows(&answer),
                );
            }
            Ok(())
        }
        GroupCommand::Add { file, wait } => {
            let definition = read_definition(&file)?;
            let answer = api
                .json(Method::POST, "/v2/groups", Some(&definition))
                .await?;
            super::app::finish(&api, client.json, &answer, None, &wait).await
        }
        GroupCommand::Remove { id, force } => {
            let answer = api
                .json(
                    Method::DELETE,
                    &format!(
                        "/v2/groups/{}{}",
                        path_id(&id),
                        if force { "?force=true" } else { "" }
                    ),
                    None,
                )
                .await?;
            if client.json {
                output::json(&answer);
            } else {
                println!(
                    "group {id} removed (deployment {})",
                    super::deployment_id(&answer).unwrap_or_else(|| "-".into())
                );
            }
            Ok(())
        }
    }
}
