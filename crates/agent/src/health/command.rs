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
            let child = tokio::process::Command::new("/bin/sh")
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
            wait_check(child, timeout).await
        })
    }
}

/// Waits for a check command, killing it when `timeout` passes.
async fn wait_check(
    mut child: tokio::process::Child,
    timeout: Duration,
) -> Result<CommandOutcome, String> {
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
}

/// A boxed runner is a runner (the agent picks one per task).
impl CommandRunner for Box<dyn CommandRunner> {
    fn run(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<CommandOutcome, String>> + Send + '_>> {
        self.as_ref().run(command, timeout)
    }
}

/// Runs the check inside a linux task's container: the process joins the
/// task's cgroups (before exec) and `nsenter` enters the mount, UTS, IPC and
/// PID namespaces of its init, then `sh -c` runs in `workdir` (the sandbox
/// as the task sees it), as `user` when the task switched users.
#[derive(Debug, Clone)]
pub struct NamespaceRunner {
    /// The task's init, as the host sees it.
    pub pid: u32,
    /// `cgroup.procs` of each of the task's cgroups.
    pub cgroup_procs: Vec<PathBuf>,
    pub workdir: PathBuf,
    pub env: Vec<(String, String)>,
    /// (uid, gid) to run as.
    pub user: Option<(u32, u32)>,
}

impl CommandRunner for NamespaceRunner {
    fn run(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<CommandOutcome, String>> + Send + '_>> {
        let script = format!(
            "cd '{}' && {command}",
            self.workdir.display().to_string().replace('\'', r"'\''")
        );
        Box::pin(async move {
            use std::os::fd::AsRawFd;
            let cgroups: Vec<std::fs::File> = self
                .cgroup_procs
                .iter()
                .map(|p| {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(p)
                        .map_err(|e| format!("cannot open {}: {e}", p.display()))
                })
                .collect::<Result<_, _>>()?;
            let fds: Vec<i32> = cgroups.iter().map(|f| f.as_raw_fd()).collect();
            let mut cmd = tokio::process::Command::new("nsenter");
            cmd.arg("--target")
                .arg(self.pid.to_string())
                .args(["--mount", "--uts", "--ipc", "--pid"]);
            if let Some((uid, gid)) = self.user {
                cmd.arg(format!("--setuid={uid}"))
                    .arg(format!("--setgid={gid}"));
            }
            cmd.args(["--", "/bin/sh", "-c", &script])
                .env_clear()
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true);
            // SAFETY: runs in the forked child before exec; write(2) on
            // descriptors opened before the fork is async-signal-safe and
            // nothing here allocates. "0" moves the writing process itself.
            unsafe {
                cmd.pre_exec(move || {
                    for fd in &fds {
                        if libc::write(*fd, b"0\n".as_ptr().cast(), 2) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .map_err(|e| format!("cannot run the check command: {e}"))?;
            drop(cgroups);
            wait_check(child, timeout).await
        })
    }
}
