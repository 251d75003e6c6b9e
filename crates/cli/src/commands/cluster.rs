//! `meseta cluster status`: the leading master, the agents, frameworks and
//! tasks it knows, and the leading scheduler (`/v2/info`).

use serde_json::{json, Value};

use super::output::{self, text};
use super::ClientArgs;
use crate::client::CliError;

fn count(state: &Value, key: &str) -> usize {
    state.get(key).and_then(Value::as_array).map_or(0, Vec::len)
}

pub async fn status(client: &ClientArgs) -> Result<(), CliError> {
    let master = client.master();
    let state = master.get("/master/state").await?;
    let marathon = client.marathon().get("/v2/info").await;
    let tasks: usize = state
        .get("frameworks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|f| count(f, "tasks"))
        .sum();
    let active_agents = state
        .get("slaves")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| a.get("active") == Some(&Value::Bool(true)))
        .count();
    if client.json {
        let marathon = match &marathon {
            Ok(info) => info.clone(),
            Err(e) => json!({ "error": e.to_string() }),
        };
        output::json(&json!({
            "master": {
                "leader": state.get("leader"),
                "version": state.get("version"),
                "agents": count(&state, "slaves"),
                "agents_active": active_agents,
                "frameworks": count(&state, "frameworks"),
                "tasks": tasks,
            },
            "marathon": marathon,
        }));
        return Ok(());
    }
    let leader = text(&state, "leader");
    println!("master leader  {}", leader.trim_start_matches("master@"));
    println!("mesos version  {}", text(&state, "version"));
    println!(
        "agents         {} ({active_agents} active)",
        count(&state, "slaves")
    );
    println!("frameworks     {}", count(&state, "frameworks"));
    println!("tasks          {tasks}");
    match marathon {
        Ok(info) => {
            println!(
                "marathon       {} (version {})",
                text(&info, "leader"),
                text(&info, "version")
            );
            println!("framework id   {}", text(&info, "frameworkId"));
        }
        Err(e) => println!("marathon       unreachable: {e}"),
    }
    Ok(())
}
