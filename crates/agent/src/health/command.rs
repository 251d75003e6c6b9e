//! COMMAND health checks: how a command is run for a task.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

/// How a check command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// It exited with this code (0 is healthy).
    Exited(i32),
    /// It was killed by this signal (a timeout kills it).
    Signaled(i32),
}

/// Runs a health check command for one task. The agent's implementation
/// must run it inside the task's namespaces and cgroups (as Mesos does)
/// and kill it when `timeout` passes; an `Err` is a check that could not
/// run at all (reported unhealthy with that cause).
pub trait CommandRunner: Send + Sync + 'static {
    fn run(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<CommandOutcome, String>> + Send + '_>>;
}

/// `sh -c COMMAND` in the task's sandbox with the task's environment, in
/// the agent's own namespaces: right for posix isolation and tests, not for
/// tasks isolated in namespaces.
#[derive(Debug, Clone)]
pub struct ShellRunner {
    pub sandbox: PathBuf,
    pub env: Vec<(String, String)>,
}

impl CommandRunner for ShellRunner {
    fn run(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<CommandOutcome, String>> + Send + '_>> {
        let command = command.to_string();
        Box::pin(async move {
            let mut child = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&command)
                .current_dir(&self.sandbox)
                .env_clear()
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot run the check command: {e}"))?;
            match tokio::time::timeout(timeout, child.wait()).await {
                Ok(Ok(status)) => {
                    use std::os::unix::process::ExitStatusExt;
                    Ok(match (status.code(), status.signal()) {
                        (Some(c), _) => CommandOutcome::Exited(c),
                        (None, Some(s)) => CommandOutcome::Signaled(s),
                        (None, None) => CommandOutcome::Exited(-1),
                    })
                }
                Ok(Err(e)) => Err(format!("waiting for the check command: {e}")),
                Err(_) => {
                    let _ = child.kill().await;
                    Ok(CommandOutcome::Signaled(libc::SIGKILL))
                }
            }
        })
    }
}
