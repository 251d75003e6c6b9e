//! `meseta agent list|drain|reactivate`: agents as the master sees them
//! (`/master/state`), drained and reactivated with Mesos' v1 operator calls
//! (`POST /api/v1`, `DRAIN_AGENT` and `REACTIVATE_AGENT`).

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::output::{self, fmt_number, text};
use super::ClientArgs;
use crate::client::CliError;

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// List the agents with their state and resources.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Drain an agent: no new offers from it, its tasks are killed (after
    /// at most the grace period), and it stays deactivated.
    Drain {
        agent_id: String,
        /// The longest grace period a task on it gets before it is killed.
        #[arg(long, value_name = "SECONDS")]
        grace: Option<u64>,
        /// Mark the agent gone once drained (it may never come back).
        #[arg(long)]
        mark_gone: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Reactivate a drained or deactivated agent: its resources are offered
    /// again.
    Reactivate {
        agent_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// The body of `DRAIN_AGENT` in Mesos' JSON (master.proto `Call.DrainAgent`:
/// `agent_id`, `max_grace_period` a `google.protobuf.Duration`, `mark_gone`).
pub fn drain_call(agent_id: &str, grace: Option<u64>, mark_gone: bool) -> Value {
    let mut drain = json!({ "agent_id": { "value": agent_id } });
    if let Some(secs) = grace {
        drain["max_grace_period"] = json!({ "seconds": secs });
    }
    if mark_gone {
        drain["mark_gone"] = json!(true);
    }
    json!({ "type": "DRAIN_AGENT", "drain_agent": drain })
}

/// The body of `REACTIVATE_AGENT` (master.proto `Call.ReactivateAgent`).
pub fn reactivate_call(agent_id: &str) -> Value {
    json!({
        "type": "REACTIVATE_AGENT",
        "reactivate_agent": { "agent_id": { "value": agent_id } },
    })
}

/// An agent's state word: active, inactive (disconnected), deactivated,
/// draining or drained (Mesos' `drain_info.state`).
fn agent_state(a: &Value) -> String {
    if let Some(state) = a.pointer("/drain_info/state").and_then(Value::as_str) {
        return state.to_ascii_lowercase();
    }
    if a.get("deactivated") == Some(&Value::Bool(true)) {
        return "deactivated".into();
    }
    if a.get("active") == Some(&Value::Bool(false)) {
        return "inactive".into();
    }
    "active".into()
}

fn scalar(a: &Value, field: &str, name: &str) -> f64 {
    a.get(field)
        .and_then(|r| r.get(name))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

pub async fn run(cmd: AgentCommand) -> Result<(), CliError> {
    match cmd {
        AgentCommand::List { client } => {
            let state = client.master().get("/master/state").await?;
            let agents = state.get("slaves").cloned().unwrap_or(json!([]));
            if client.json {
                output::json(&agents);
                return Ok(());
            }
            let tasks_on = |id: &str| {
                state
                    .get("frameworks")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .flat_map(|f| {
                        f.get("tasks")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                    })
                    .filter(|t| t.get("slave_id").and_then(Value::as_str) == Some(id))
                    .count()
            };
            let rows: Vec<Vec<String>> = agents
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    let id = a.get("id").and_then(Value::as_str).unwrap_or_default();
                    let pair = |name: &str| {
                        format!(
                            "{}/{}",
                            fmt_number(scalar(a, "used_resources", name)),
                            fmt_number(scalar(a, "resources", name))
                        )
                    };
                    vec![
                        id.to_string(),
                        text(a, "hostname"),
                        text(a, "address"),
                        agent_state(a),
                        tasks_on(id).to_string(),
                        pair("cpus"),
                        pair("mem"),
                    ]
                })
                .collect();
            output::table(
                &["ID", "HOSTNAME", "ADDRESS", "STATE", "TASKS", "CPUS", "MEM"],
                &rows,
            );
            Ok(())
        }
        AgentCommand::Drain {
            agent_id,
            grace,
            mark_gone,
            client,
        } => {
            let call = drain_call(&agent_id, grace, mark_gone);
            operator_call(&client, &call).await?;
            if !client.json {
                println!("agent {agent_id} draining");
            }
            Ok(())
        }
        AgentCommand::Reactivate { agent_id, client } => {
            operator_call(&client, &reactivate_call(&agent_id)).await?;
            if !client.json {
                println!("agent {agent_id} reactivated");
            }
            Ok(())
        }
    }
}

/// One `POST /api/v1` call to the leading master. The answer (Mesos sends
/// 200 or 202 with no body for these calls) is printed with `--json`.
async fn operator_call(client: &ClientArgs, call: &Value) -> Result<(), CliError> {
    let answer = client
        .master()
        .json(Method::POST, "/api/v1", Some(call))
        .await?;
    if client.json {
        output::json(&answer);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_have_mesos_shapes() {
        assert_eq!(
            drain_call("a1", Some(30), false),
            json!({"type": "DRAIN_AGENT", "drain_agent": {
                "agent_id": {"value": "a1"}, "max_grace_period": {"seconds": 30}}})
        );
        assert_eq!(
            reactivate_call("a1"),
            json!({"type": "REACTIVATE_AGENT", "reactivate_agent": {"agent_id": {"value": "a1"}}})
        );
        assert_eq!(
            agent_state(&json!({"active": true, "drain_info": {"state": "DRAINING"}})),
            "draining"
        );
        assert_eq!(
            agent_state(&json!({"active": true, "deactivated": true})),
            "deactivated"
        );
    }
}
