//! The posix containerizer: the task is a plain `sh -c` child of the agent
//! in a session (and process group) of its own. No namespaces, no cgroups,
//! no privileges needed (Mesos' `posix/cpu,posix/mem` isolation, minus the
//! usage accounting). Optionally `RLIMIT_AS` caps the address space at the
//! task's memory.
//!
//! Kill signals the process group, so the command's children are reached as
//! long as they stay in it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use nix::errno::Errno;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{setsid, Pid};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};

use super::pidfd;
use super::{
    blocking, validate_container_id, validate_spec, ContainerInfo, Containerizer,
    ContainerizerError, LaunchSpec, Launched, Termination,
};

/// How long `destroy` waits for a SIGKILLed task to go away.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(10);

/// Tasks as plain child processes; works without root.
///
/// Dropping it leaves running tasks running.
#[derive(Default)]
pub struct PosixContainerizer {
    containers: Arc<Mutex<HashMap<String, Arc<Container>>>>,
    address_space_limit: bool,
}

struct Container {
    id: String,
    task_id: String,
    /// The `sh`; also the id of the task's session and process group.
    pid: u32,
    exit: watch::Receiver<Option<Termination>>,
    /// We sent the group SIGKILL (tells how a recovered task ended).
    sigkilled: AtomicBool,
}

impl Container {
    fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    async fn wait_exit(&self) {
        let mut exit = self.exit.clone();
        let _ = exit.wait_for(Option::is_some).await;
    }

    /// Signals the task's process group; a group already gone is fine.
    fn signal_group(&self, signal: Signal) -> Result<(), ContainerizerError> {
        let Ok(raw) = i32::try_from(self.pid) else {
            return Ok(());
        };
        if signal == Signal::SIGKILL && !self.has_exited() {
            self.sigkilled.store(true, Ordering::SeqCst);
        }
        match killpg(Pid::from_raw(raw), signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(ContainerizerError::Signal {
                container_id: self.id.clone(),
                source: io::Error::from(errno),
            }),
        }
    }
}

fn lock(
    containers: &Mutex<HashMap<String, Arc<Container>>>,
) -> MutexGuard<'_, HashMap<String, Arc<Container>>> {
    // Every operation on the map is a single insert/remove: still
    // consistent after a panic elsewhere.
    containers
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PosixContainerizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Also cap each task's address space (`RLIMIT_AS`) at its `mem`. Off by
    /// default: runtimes that reserve large address ranges (JVM, Go) fail
    /// under it although their resident memory would fit.
    pub fn with_address_space_limit(mut self, on: bool) -> Self {
        self.address_space_limit = on;
        self
    }

    fn get(&self, container_id: &str) -> Result<Arc<Container>, ContainerizerError> {
        lock(&self.containers)
            .get(container_id)
            .cloned()
            .ok_or_else(|| ContainerizerError::UnknownContainer(container_id.to_string()))
    }
}

impl Containerizer for PosixContainerizer {
    fn name(&self) -> &'static str {
        "posix"
    }

    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'static, Result<Launched, ContainerizerError>> {
        let containers = self.containers.clone();
        let address_space_limit = self.address_space_limit;
        async move {
            validate_spec(&spec)?;
            if lock(&containers).contains_key(&spec.container_id) {
                return Err(ContainerizerError::ContainerExists(spec.container_id));
            }
            let child = {
                let spec = spec.clone();
                blocking("launch", move || spawn(&spec, address_space_limit)).await??
            };
            let pid = child.id().ok_or_else(|| ContainerizerError::Spawn {
                task_id: spec.task_id.clone(),
                source: io::Error::other("the child exited before its pid was known"),
            })?;
            let (exit_tx, exit_rx) = watch::channel(None);
            let container = Arc::new(Container {
                id: spec.container_id.clone(),
                task_id: spec.task_id.clone(),
                pid,
                exit: exit_rx,
                sigkilled: AtomicBool::new(false),
            });
            {
                let mut map = lock(&containers);
                if map.contains_key(&spec.container_id) {
                    // Lost a race with a launch of the same id: undo ours.
                    drop(map);
                    let _ = container.signal_group(Signal::SIGKILL);
                    return Err(ContainerizerError::ContainerExists(spec.container_id));
                }
                map.insert(spec.container_id.clone(), container);
            }
            tracing::info!(container_id = %spec.container_id, task_id = %spec.task_id, pid, "launched task as posix process");
            let (done_tx, done_rx) = oneshot::channel();
            tokio::spawn(supervise(child, pid, exit_tx, done_tx));
            Ok(Launched { pid, exit: done_rx })
        }
        .boxed()
    }

    fn kill(
        &self,
        container_id: &str,
        grace: Duration,
    ) -> BoxFuture<'static, Result<(), ContainerizerError>> {
        let found = self.get(container_id);
        async move {
            let container = found?;
            if container.has_exited() {
                return Ok(());
            }
            if !grace.is_zero() {
                container.signal_group(Signal::SIGTERM)?;
                let _ = tokio::time::timeout(grace, container.wait_exit()).await;
            }
            // Whatever of the group outlived the grace (or the shell).
            container.signal_group(Signal::SIGKILL)
        }
        .boxed()
    }

    fn destroy(&self, container_id: &str) -> BoxFuture<'static, Result<(), ContainerizerError>> {
        let containers = self.containers.clone();
        let found = self.get(container_id);
        async move {
            let container = found?;
            // Also takes down background processes the shell left behind.
            container.signal_group(Signal::SIGKILL)?;
            if tokio::time::timeout(DESTROY_TIMEOUT, container.wait_exit())
                .await
                .is_err()
            {
                return Err(ContainerizerError::KillTimeout {
                    container_id: container.id.clone(),
                    waited: DESTROY_TIMEOUT,
                });
            }
            let mut map = lock(&containers);
            if map
                .get(&container.id)
                .is_some_and(|c| Arc::ptr_eq(c, &container))
            {
                map.remove(&container.id);
            }
            Ok(())
        }
        .boxed()
    }

    fn recover(
        &self,
        info: ContainerInfo,
    ) -> BoxFuture<'static, Result<Launched, ContainerizerError>> {
        let containers = self.containers.clone();
        async move {
            validate_container_id(&info.container_id)?;
            let raw_pid = info.recovered_pid()?;
            // Open the pidfd first, then check the process still leads the
            // task's session: the pidfd then names the task's shell, not a
            // process that reused its pid.
            let pidfd = pidfd::open(Pid::from_raw(raw_pid)).filter(|_| leads_own_session(info.pid));
            let (exit_tx, exit_rx) = watch::channel(None);
            let container = Arc::new(Container {
                id: info.container_id.clone(),
                task_id: info.task_id.clone(),
                pid: info.pid,
                exit: exit_rx,
                sigkilled: AtomicBool::new(false),
            });
            {
                let mut map = lock(&containers);
                if map.contains_key(&info.container_id) {
                    return Err(ContainerizerError::ContainerExists(info.container_id));
                }
                map.insert(info.container_id.clone(), container.clone());
            }
            tracing::info!(container_id = %info.container_id, pid = info.pid, alive = pidfd.is_some(), "recovered posix task");
            let (done_tx, done_rx) = oneshot::channel();
            tokio::spawn(async move {
                if let Some(pidfd) = pidfd {
                    pidfd::wait_exit(pidfd, true).await;
                }
                // Not our child: its exit status went to its new parent.
                let termination = if container.sigkilled.load(Ordering::SeqCst) {
                    Termination::signaled(libc::SIGKILL, container.pid)
                } else {
                    Termination {
                        exit_code: None,
                        signal: None,
                        oom_killed: false,
                        message: "Command terminated, but its status is unknown after an agent restart".into(),
                    }
                };
                exit_tx.send_replace(Some(termination.clone()));
                let _ = done_tx.send(termination);
            });
            Ok(Launched {
                pid: info.pid,
                exit: done_rx,
            })
        }
        .boxed()
    }

    fn containers(&self) -> Vec<ContainerInfo> {
        lock(&self.containers)
            .values()
            .map(|c| ContainerInfo {
                container_id: c.id.clone(),
                task_id: c.task_id.clone(),
                pid: c.pid,
                cgroups: Vec::new(),
            })
            .collect()
    }
}

/// Whether `pid` is a live process that leads its own session and process
/// group, as the shell of a posix task does.
fn leads_own_session(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // After the ")" closing the command name: state ppid pgrp session.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let own = pid.to_string();
    fields.first() != Some(&"Z")
        && fields.get(2) == Some(&own.as_str())
        && fields.get(3) == Some(&own.as_str())
}

/// Forks the task. Blocks; needs the tokio runtime's context (the blocking
/// pool has it).
fn spawn(spec: &LaunchSpec, address_space_limit: bool) -> Result<Child, ContainerizerError> {
    let sandbox_file = |name: &str| -> Result<File, ContainerizerError> {
        let path = spec.sandbox.join(name);
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|source| ContainerizerError::SandboxFile { path, source })
    };
    let stdout = sandbox_file("stdout")?;
    let stderr = sandbox_file("stderr")?;
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(&spec.command)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.sandbox)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .kill_on_drop(false);
    let memory_bytes = (spec.mem_mb * 1024.0 * 1024.0) as u64;
    // SAFETY: the hook runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: setsid and setrlimit are plain
    // system calls and nothing here allocates.
    unsafe {
        command.pre_exec(move || {
            setsid().map_err(io::Error::from)?;
            if address_space_limit && memory_bytes > 0 {
                setrlimit(Resource::RLIMIT_AS, memory_bytes, memory_bytes)
                    .map_err(io::Error::from)?;
            }
            Ok(())
        });
    }
    command.spawn().map_err(|source| ContainerizerError::Spawn {
        task_id: spec.task_id.clone(),
        source,
    })
}

async fn supervise(
    mut child: Child,
    pid: u32,
    exit_tx: watch::Sender<Option<Termination>>,
    done_tx: oneshot::Sender<Termination>,
) {
    let termination = match child.wait().await {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Termination::exited(code),
            (None, Some(signal)) => Termination::signaled(signal, pid),
            (None, None) => Termination {
                exit_code: None,
                signal: None,
                oom_killed: false,
                message: format!("Command terminated with unknown status {status}"),
            },
        },
        Err(e) => Termination {
            exit_code: None,
            signal: None,
            oom_killed: false,
            message: format!("Command terminated, but waiting for it failed: {e}"),
        },
    };
    tracing::info!(pid, message = %termination.message, "posix task terminated");
    exit_tx.send_replace(Some(termination.clone()));
    let _ = done_tx.send(termination);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn spec(sandbox: &Path, id: &str, command: &str) -> LaunchSpec {
        LaunchSpec {
            container_id: id.to_string(),
            task_id: format!("task-{id}"),
            command: command.to_string(),
            env: vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("GREETING".into(), "hello from env".into()),
            ],
            sandbox: sandbox.to_path_buf(),
            cpus: 0.1,
            mem_mb: 64.0,
            hostname: None,
        }
    }

    /// Pids of live (non-zombie) processes in process group `pgid`.
    fn group_members(pgid: u32) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    return false;
                };
                // After the ")" closing comm: state, ppid, pgrp.
                let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                    return false;
                };
                let fields: Vec<&str> = rest.split_whitespace().collect();
                fields.first() != Some(&"Z")
                    && fields.get(2).and_then(|p| p.parse::<u32>().ok()) == Some(pgid)
            })
            .collect()
    }

    fn read(path: PathBuf) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[tokio::test]
    async fn exit_code_and_stdout_reach_the_caller() -> TestResult {
        let dir = tempfile::tempdir()?;
        let posix = PosixContainerizer::new();
        let launched = posix
            .launch(spec(
                dir.path(),
                "c1",
                "echo hi; echo \"$GREETING\"; echo oops >&2; pwd; exit 3",
            ))
            .await?;
        let termination = launched.exit.await?;
        assert_eq!(termination.exit_code, Some(3));
        assert_eq!(termination.message, "Command exited with status 3");
        let stdout = read(dir.path().join("stdout"));
        assert!(stdout.starts_with("hi\nhello from env\n"), "{stdout:?}");
        assert!(
            stdout.contains(&dir.path().display().to_string()),
            "cwd: {stdout:?}"
        );
        assert_eq!(read(dir.path().join("stderr")), "oops\n");
        assert_eq!(posix.containers().len(), 1);
        posix.destroy("c1").await?;
        assert!(posix.containers().is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn kill_escalates_to_sigkill_after_grace() -> TestResult {
        let dir = tempfile::tempdir()?;
        let posix = PosixContainerizer::new();
        let launched = posix
            .launch(spec(
                dir.path(),
                "c2",
                "trap '' TERM; echo ready; sleep 100",
            ))
            .await?;
        wait_for_file(&dir.path().join("stdout"), "ready").await;
        let started = Instant::now();
        posix.kill("c2", Duration::from_millis(300)).await?;
        assert!(started.elapsed() >= Duration::from_millis(300));
        let termination = launched.exit.await?;
        assert_eq!(termination.signal, Some(libc::SIGKILL), "{termination:?}");
        assert!(termination
            .message
            .starts_with("Command terminated with signal Killed"));
        posix.destroy("c2").await?;
        Ok(())
    }

    #[tokio::test]
    async fn kill_takes_the_whole_process_group() -> TestResult {
        let dir = tempfile::tempdir()?;
        let posix = PosixContainerizer::new();
        let launched = posix
            .launch(spec(
                dir.path(),
                "c3",
                "sleep 100 & sleep 100 & echo ready; wait",
            ))
            .await?;
        wait_for_file(&dir.path().join("stdout"), "ready").await;
        let members = group_members(launched.pid);
        assert!(members.len() >= 3, "sh and two sleeps: {members:?}");
        posix.kill("c3", Duration::from_secs(1)).await?;
        let termination = launched.exit.await?;
        assert_eq!(termination.signal, Some(libc::SIGTERM), "{termination:?}");
        // SIGKILL went to the group right after the shell died.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !group_members(launched.pid).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(group_members(launched.pid), Vec::<u32>::new());
        posix.destroy("c3").await?;
        Ok(())
    }

    #[tokio::test]
    async fn unknown_and_duplicate_containers_are_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let posix = PosixContainerizer::new();
        assert!(matches!(
            posix.kill("nope", Duration::ZERO).await,
            Err(ContainerizerError::UnknownContainer(_))
        ));
        let launched = posix.launch(spec(dir.path(), "c4", "sleep 100")).await?;
        assert!(matches!(
            posix.launch(spec(dir.path(), "c4", "true")).await,
            Err(ContainerizerError::ContainerExists(_))
        ));
        posix.destroy("c4").await?;
        assert_eq!(launched.exit.await?.signal, Some(libc::SIGKILL));
        Ok(())
    }

    #[tokio::test]
    async fn recovered_tasks_can_be_killed_and_report_their_end() -> TestResult {
        let dir = tempfile::tempdir()?;
        let before_restart = PosixContainerizer::new();
        let launched = before_restart
            .launch(spec(dir.path(), "c5", "sleep 100"))
            .await?;
        let info = before_restart.containers().pop().ok_or("not listed")?;
        assert_eq!(info.pid, launched.pid);

        let after_restart = PosixContainerizer::new();
        let recovered = after_restart.recover(info.clone()).await?;
        assert_eq!(recovered.pid, launched.pid);
        assert_eq!(after_restart.containers(), vec![info]);
        after_restart.kill("c5", Duration::ZERO).await?;
        let termination = recovered.exit.await?;
        assert_eq!(termination.signal, Some(libc::SIGKILL), "{termination:?}");
        assert_eq!(launched.exit.await?.signal, Some(libc::SIGKILL));
        after_restart.destroy("c5").await?;
        before_restart.destroy("c5").await?;
        Ok(())
    }

    #[tokio::test]
    async fn a_task_gone_during_the_restart_ends_at_recovery() -> TestResult {
        let dir = tempfile::tempdir()?;
        let before_restart = PosixContainerizer::new();
        let launched = before_restart
            .launch(spec(dir.path(), "c6", "true"))
            .await?;
        let info = before_restart.containers().pop().ok_or("not listed")?;
        launched.exit.await?;
        before_restart.destroy("c6").await?;

        let after_restart = PosixContainerizer::new();
        let termination = after_restart.recover(info).await?.exit.await?;
        assert_eq!((termination.exit_code, termination.signal), (None, None));
        assert!(
            termination.message.contains("unknown"),
            "{}",
            termination.message
        );
        after_restart.destroy("c6").await?;
        Ok(())
    }

    async fn wait_for_file(path: &Path, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !read(path.to_path_buf()).contains(text) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
