//! `meseta framework list`: frameworks as the master sees them.

use serde_json::{json, Value};

use super::output::{self, fmt_number, text};
use super::ClientArgs;
use crate::client::CliError;

pub async fn list(client: &ClientArgs) -> Result<(), CliError> {
    let state = client.master().get("/master/state").await?;
    let frameworks = state.get("frameworks").cloned().unwrap_or(json!([]));
    if client.json {
        output::json(&frameworks);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = frameworks
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let used = |name: &str| {
                f.pointer(&format!("/used_resources/{name}"))
                    .and_then(Value::as_f64)
                    .map_or("-".into(), fmt_number)
            };
            vec![
                text(f, "id"),
                text(f, "name"),
                text(f, "role"),
                if f.get("active") == Some(&Value::Bool(true)) {
                    "active"
                } else {
                    "inactive"
                }
                .into(),
                f.get("tasks")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
                    .to_string(),
                used("cpus"),
                used("mem"),
                text(f, "webui_url"),
            ]
        })
        .collect();
    output::table(
        &[
            "ID", "NAME", "ROLE", "STATE", "TASKS", "CPUS", "MEM", "WEBUI",
        ],
        &rows,
    );
    Ok(())
}
