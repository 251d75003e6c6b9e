//! `meseta app …`: Marathon apps through `/v2/apps`.

use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::output::{self, number, text, truncate};
use super::{deployment_id, path_id, progress, read_definition, ClientArgs, WaitArgs};
use crate::client::{Api, CliError};

#[derive(Subcommand, Debug)]
pub enum AppCommand {
    /// List the apps with their instances, health and deployments.
    List,
    /// Show one app and its tasks.
    Show { id: String },
    /// Create an app from a Marathon JSON definition (`-`: stdin) and wait
    /// until it is running (healthy, with health checks).
    Add {
        file: PathBuf,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Replace an app's definition (fields absent keep their values, as
    /// Marathon's PUT does) and wait for the deployment.
    Update {
        id: String,
        file: PathBuf,
        /// Override a deployment in the way.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Set an app's instances and wait for them.
    Scale {
        id: String,
        instances: u64,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Replace every task of an app (rolling, per its upgrade strategy).
    Restart {
        id: String,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove an app and kill its tasks.
    Remove {
        id: String,
        #[arg(long)]
        force: bool,
    },
    /// List an app's stored versions, newest first.
    Versions { id: String },
    /// Go back to a stored version (see `versions`) and wait for it.
    Rollback {
        id: String,
        version: String,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

fn force_query(force: bool) -> &'static str {
    if force {
        "?force=true"
    } else {
        ""
    }
}

pub async fn run(client: &ClientArgs, cmd: AppCommand) -> Result<(), CliError> {
    let api = client.marathon();
    match cmd {
        AppCommand::List => list(&api, client.json).await,
        AppCommand::Show { id } => show(&api, client.json, &id).await,
        AppCommand::Add { file, wait } => {
            let definition = read_definition(&file)?;
            let answer = api
                .json(Method::POST, "/v2/apps", Some(&definition))
                .await?;
            let id = answer
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if !client.json {
                eprintln!("app {id} created");
            }
            finish(&api, client.json, &answer, Some(&id), &wait).await
        }
        AppCommand::Update {
            id,
            file,
            force,
            wait,
        } => {
            let mut definition = read_definition(&file)?;
            if let Some(obj) = definition.as_object_mut() {
                obj.entry("id").or_insert_with(|| json!(id));
            }
            let answer = api
                .json(
                    Method::PUT,
                    &format!("/v2/apps/{}{}", path_id(&id), force_query(force)),
                    Some(&definition),
                )
                .await?;
            finish(&api, client.json, &answer, Some(&id), &wait).await
        }
        AppCommand::Scale {
            id,
            instances,
            force,
            wait,
        } => {
            let answer = api
                .json(
                    Method::PUT,
                    &format!("/v2/apps/{}{}", path_id(&id), force_query(force)),
                    Some(&json!({ "instances": instances })),
                )
                .await?;
            finish(&api, client.json, &answer, Some(&id), &wait).await
        }
        AppCommand::Restart { id, force, wait } => {
            let answer = api
                .json(
                    Method::POST,
                    &format!("/v2/apps/{}/restart{}", path_id(&id), force_query(force)),
                    None,
                )
                .await?;
            finish(&api, client.json, &answer, Some(&id), &wait).await
        }
        AppCommand::Remove { id, force } => {
            let answer = api
                .json(
                    Method::DELETE,
                    &format!("/v2/apps/{}{}", path_id(&id), force_query(force)),
                    None,
                )
                .await?;
            if client.json {
                output::json(&answer);
            } else {
                println!(
                    "app {id} removed (deployment {})",
                    deployment_id(&answer).unwrap_or_else(|| "-".into())
                );
            }
            Ok(())
        }
        AppCommand::Versions { id } => {
            let answer = api
                .get(&format!("/v2/apps/{}/versions", path_id(&id)))
                .await?;
            if client.json {
                output::json(&answer);
            } else {
                let rows: Vec<Vec<String>> = answer
                    .get("versions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|v| vec![v.as_str().unwrap_or_default().to_string()])
                    .collect();
                output::table(&["VERSION"], &rows);
            }
            Ok(())
        }
        AppCommand::Rollback {
            id,
            version,
            force,
            wait,
        } => {
            // Marathon's rollback: PUT with only the stored version.
            let answer = api
                .json(
                    Method::PUT,
                    &format!("/v2/apps/{}{}", path_id(&id), force_query(force)),
                    Some(&json!({ "version": version })),
                )
                .await?;
            finish(&api, client.json, &answer, Some(&id), &wait).await
        }
    }
}

/// Waits for the answer's deployment unless `--detach`, then prints the
/// answer (JSON) or a line.
pub async fn finish(
    api: &Api,
    json: bool,
    answer: &Value,
    app: Option<&str>,
    wait: &WaitArgs,
) -> Result<(), CliError> {
    let deployment = deployment_id(answer);
    let waited = match (&deployment, wait.detach) {
        (Some(d), false) => Some(progress::wait(api, d, app, wait.deadline()).await),
        _ => None,
    };
    if json {
        output::json(answer);
    } else if let Some(d) = &deployment {
        if wait.detach {
            println!("deployment {d} started");
        }
    }
    waited.unwrap_or(Ok(()))
}

async fn list(api: &Api, json: bool) -> Result<(), CliError> {
    let answer = api.get("/v2/apps").await?;
    if json {
        output::json(&answer);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = answer
        .get("apps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|a| {
            let checks = a
                .get("healthChecks")
                .and_then(Value::as_array)
                .is_some_and(|h| !h.is_empty());
            let what = a
                .get("cmd")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    a.pointer("/container/docker/image")
                        .and_then(Value::as_str)
                        .map(|i| format!("image {i}"))
                })
                .unwrap_or_else(|| "-".into());
            let deploying = a
                .get("deployments")
                .and_then(Value::as_array)
                .is_some_and(|d| !d.is_empty());
            vec![
                text(a, "id"),
                format!("{}/{}", number(a, "tasksRunning"), number(a, "instances")),
                if checks {
                    number(a, "tasksHealthy")
                } else {
                    "-".into()
                },
                number(a, "cpus"),
                number(a, "mem"),
                if deploying { "yes" } else { "no" }.into(),
                truncate(&what, 48),
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "RUNNING",
            "HEALTHY",
            "CPUS",
            "MEM",
            "DEPLOYING",
            "CMD",
        ],
        &rows,
    );
    Ok(())
}

async fn show(api: &Api, json: bool, id: &str) -> Result<(), CliError> {
    let answer = api
        .get(&format!(
            "/v2/apps/{}?embed=app.tasks&embed=app.lastTaskFailure",
            path_id(id)
        ))
        .await?;
    if json {
        output::json(&answer);
        return Ok(());
    }
    let a = answer.get("app").unwrap_or(&answer);
    let fields = [
        ("id", text(a, "id")),
        ("cmd", text(a, "cmd")),
        (
            "instances",
            format!(
                "{} (running {}, healthy {}, staged {}, unhealthy {})",
                number(a, "instances"),
                number(a, "tasksRunning"),
                number(a, "tasksHealthy"),
                number(a, "tasksStaged"),
                number(a, "tasksUnhealthy")
            ),
        ),
        (
            "resources",
            format!(
                "cpus {}, mem {} MB, disk {} MB",
                number(a, "cpus"),
                number(a, "mem"),
                number(a, "disk")
            ),
        ),
        ("version", text(a, "version")),
    ];
    for (k, v) in fields {
        println!("{k:<10} {v}");
    }
    if let Some(f) = a.get("lastTaskFailure").filter(|f| f.is_object()) {
        println!(
            "{:<10} {} {} ({})",
            "failure",
            text(f, "state"),
            text(f, "message"),
            text(f, "timestamp")
        );
    }
    let tasks = a.get("tasks").and_then(Value::as_array);
    if let Some(tasks) = tasks.filter(|t| !t.is_empty()) {
        println!();
        super::task::print_tasks(tasks);
    }
    Ok(())
}
