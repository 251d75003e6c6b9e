//! `meseta task log`: find the task's agent through the master, its sandbox
//! through the agent, and print the file (Mesos' `/files/read`), with
//! `meseta_sdk::sandbox`.

use anyhow::{Context, Result};

/// Print `stdout` (or `stderr`) of `task_id`.
pub async fn print(master: &str, task_id: &str, stderr: bool) -> Result<()> {
    let client = reqwest::Client::new();
    let sandbox = meseta_sdk::sandbox::locate(&client, master, task_id).await?;
    let file = if stderr { "stderr" } else { "stdout" };
    let chunk = sandbox
        .read(&client, file, 0, None)
        .await
        .with_context(|| format!("reading {file} of task {task_id}"))?;
    print!("{}", chunk.data);
    Ok(())
}
