//! `meseta task log`: find the task's agent through the master, its sandbox
//! through the agent, and print the file (Mesos' `/files/read`), with
//! `meseta_sdk::sandbox`. `--follow` keeps reading from where the last read
//! ended, once a second, until Ctrl-C or until the agent no longer serves
//! the file.

use std::io::Write as _;
use std::time::Duration;

use crate::client::CliError;

/// How often `--follow` reads again.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// Most one read asks for (the agent caps a read at 4 MiB).
const CHUNK: u64 = 1 << 20;

/// Print `stdout` (or `stderr`) of `task_id`; `master` is the leading
/// master's `host:port`.
pub async fn print(
    master: &str,
    task_id: &str,
    stderr: bool,
    follow: bool,
) -> Result<(), CliError> {
    use meseta_sdk::sandbox::SandboxError;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    let sandbox = meseta_sdk::sandbox::locate(&client, master, task_id)
        .await
        .map_err(|e| match e {
            SandboxError::TaskUnknown { .. } | SandboxError::NoSandbox { .. } => {
                CliError::NotFound(e.to_string())
            }
            SandboxError::Http { .. } | SandboxError::AgentGone { .. } => {
                CliError::Unreachable(e.to_string())
            }
            SandboxError::Status { .. } => CliError::Refused {
                status: 0,
                message: e.to_string(),
            },
        })?;
    let file = if stderr { "stderr" } else { "stdout" };
    let mut offset = 0u64;
    loop {
        let chunk = sandbox
            .read(&client, file, offset, Some(CHUNK))
            .await
            .map_err(|e| CliError::Unreachable(format!("reading {file} of task {task_id}: {e}")))?;
        let read = chunk.data.len() as u64;
        if read > 0 {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) ends the command quietly.
            if out.write_all(chunk.data.as_bytes()).is_err() || out.flush().is_err() {
                return Ok(());
            }
            offset = chunk.offset + read;
        }
        if read >= CHUNK {
            continue;
        }
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}
