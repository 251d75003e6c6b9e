//! The client commands (`meseta app|group|deployment|task|agent|framework|
//! cluster …`), like the dcos CLI, over the HTTP APIs: the scheduler's
//! Marathon `/v2` and the master's operator endpoints. People get tables;
//! `--json` prints the API's own objects for scripts.

pub mod agent;
pub mod app;
pub mod cluster;
pub mod deployment;
pub mod framework;
pub mod group;
pub mod output;
pub mod progress;
pub mod task;

use std::path::Path;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::{Api, CliError, Service};

/// Where the APIs are and how to print, shared by every client command.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The scheduler(s), `host:port`, comma separated: the leader is found
    /// from any of them (`/v2/leader`), the next is tried when one is down.
    #[arg(
        long,
        global = true,
        env = "MESETA_MARATHON",
        default_value = "127.0.0.1:8080",
        value_delimiter = ','
    )]
    pub marathon: Vec<String>,
    /// The master(s), `host:port`, comma separated: the leader is found from
    /// any of them (`/master/state`), the next is tried when one is down.
    #[arg(
        long,
        global = true,
        env = "MESETA_MASTER",
        default_value = "127.0.0.1:5050",
        value_delimiter = ','
    )]
    pub master: Vec<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ClientArgs {
    pub fn marathon(&self) -> Api {
        Api::new(Service::Marathon, &self.marathon)
    }

    pub fn master(&self) -> Api {
        Api::new(Service::Master, &self.master)
    }
}

/// How `app add|update|scale|restart` wait for their deployment.
#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Return once the API accepted the change, without waiting for the
    /// deployment.
    #[arg(long)]
    pub detach: bool,
    /// Give up waiting after this many seconds (exit code 5).
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub timeout: u64,
}

impl WaitArgs {
    pub fn deadline(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }
}

/// Reads a JSON definition from `path` (`-`: stdin).
pub fn read_definition(path: &Path) -> Result<Value, CliError> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| CliError::Usage(format!("reading stdin: {e}")))?
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("reading {}: {e}", path.display())))?
    };
    serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{} is not JSON: {e}", path.display())))
}

/// Marathon path ids in URLs: `/prod/web` → `prod/web`.
pub fn path_id(id: &str) -> String {
    id.trim_matches('/').to_string()
}

/// The deployment id of a Marathon answer: `deploymentId` (PUT, restart,
/// scale, DELETE) or `deployments[0].id` (POST /v2/apps).
pub fn deployment_id(answer: &Value) -> Option<String> {
    answer
        .get("deploymentId")
        .and_then(Value::as_str)
        .or_else(|| {
            answer
                .get("deployments")
                .and_then(Value::as_array)
                .and_then(|d| d.first())
                .and_then(|d| d.get("id"))
                .and_then(Value::as_str)
        })
        .map(str::to_string)
}

/// The client commands, each with where the APIs are ([`ClientArgs`]).
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Apps: list, show, add, update, scale, restart, remove, versions, rollback.
    App {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: app::AppCommand,
    },
    /// Groups: list, show, add, remove.
    Group {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Deployments: list, watch, rollback.
    Deployment {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: deployment::DeploymentCommand,
    },
    /// Tasks: list, log (--follow), kill (--scale).
    Task {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: task::TaskCommand,
    },
    /// Frameworks registered with the master: `meseta framework list`.
    Framework {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: FrameworkCommand,
    },
    /// The cluster at a glance: `meseta cluster status`.
    Cluster {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum FrameworkCommand {
    /// List the frameworks with their tasks and resources.
    List,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Leaders, agents, frameworks and tasks.
    Status,
}

impl ClientCommand {
    pub async fn run(self) -> Result<(), CliError> {
        match self {
            ClientCommand::App { client, command } => app::run(&client, command).await,
            ClientCommand::Group { client, command } => group::run(&client, command).await,
            ClientCommand::Deployment { client, command } => {
                deployment::run(&client, command).await
            }
            ClientCommand::Task { client, command } => task::run(&client, command).await,
            ClientCommand::Framework {
                client,
                command: FrameworkCommand::List,
            } => framework::list(&client).await,
            ClientCommand::Cluster {
                client,
                command: ClusterCommand::Status,
            } => cluster::status(&client).await,
        }
    }
}
