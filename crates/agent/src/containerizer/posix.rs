//! The posix containerizer: the task's init (see [`super::init`], without
//! namespaces) is a plain child of the agent in a session of its own. No
//! namespaces, no cgroups, no privileges needed (Mesos' `posix/cpu,posix/mem`
//! isolation). Optionally `RLIMIT_AS` caps the address space at the task's
//! memory.
//!
//! The init runs the command in a process group of its own inside the
//! init's session, forwards SIGTERM & co. to that group, and records the
//! command's status in the run directory, so an agent that restarts meanwhile
//! still learns how the task ended. SIGKILL goes to the init and to every
//! process of its session, which is as far as a posix task can be tracked: a
//! process that starts a session of its own escapes it.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{pipe2, setsid, Pid};
use tokio::sync::{oneshot, watch};

use super::init::{CommandStatus, InitArgs, INIT_FAILURE_EXIT_CODE};
use super::pidfd::{self, wait_exit, ExitWatch};
use super::procfs;
use super::run_dir::{self, Found};
use super::{
    blocking, validate_container_id, validate_spec, ContainerInfo, Containerizer,
    ContainerizerError, LaunchSpec, Launched, RecoverSpec, Termination, Usage,
    TASK_INIT_SUBCOMMAND,
};

/// How long `destroy` waits for a SIGKILLed task to go away.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(10);

/// Tasks as plain child processes; works without root.
///
/// Dropping it leaves running tasks running. Clones share their containers.
#[derive(Clone)]
pub struct PosixContainerizer {
    containers: Arc<Mutex<HashMap<String, Arc<Container>>>>,
    init_program: PathBuf,
    address_space_limit: bool,
}

struct Container {
    id: String,
    task_id: String,
    /// The init; also the id of the task's session.
    pid: u32,
    /// Signals go through it: it cannot hit a recycled pid. None once the
    /// init is gone (or was never found alive).
    pidfd: Option<OwnedFd>,
    run_dir: PathBuf,
    exit: watch::Receiver<Option<Termination>>,
    /// Set once the init was reaped or seen gone: from then on its pid (and
    /// session id) may name others, so nothing may be signalled.
    gone: Mutex<bool>,
    /// We sent SIGKILL (tells how an init without a status ended).
    sigkilled: AtomicBool,
}

impl Container {
    fn gone(&self) -> MutexGuard<'_, bool> {
        self.gone.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    async fn wait_exit(&self) {
        let mut exit = self.exit.clone();
        let _ = exit.wait_for(Option::is_some).await;
    }

    /// Signals the init (which forwards SIGTERM & co. to the command).
    fn signal_init(&self, signal: Signal) -> Result<(), ContainerizerError> {
        let gone = self.gone();
        let Some(pidfd) = self.pidfd.as_ref().filter(|_| !*gone) else {
            return Ok(());
        };
        match pidfd::send_signal(pidfd, Some(signal)) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(ContainerizerError::Signal {
                container_id: self.id.clone(),
                source: io::Error::from(errno),
            }),
        }
    }

    /// SIGKILLs the init and every process of its session. Safe while the
    /// init is not reaped: until then its pid, the session's id, cannot be
    /// reused.
    fn kill_session(&self) {
        let gone = self.gone();
        if *gone {
            return;
        }
        self.sigkilled.store(true, Ordering::SeqCst);
        if let Some(pidfd) = &self.pidfd {
            let _ = pidfd::send_signal(pidfd, Some(Signal::SIGKILL));
        }
        for member in procfs::session_members(self.pid) {
            if member.pid != self.pid {
                let _ = kill(Pid::from_raw(member.pid as i32), Signal::SIGKILL);
            }
        }
    }

    /// How the command ended: the init's status file, else how the init
    /// itself ended (`wait`), else unknown.
    fn termination(&self, waited: Option<std::process::ExitStatus>) -> Termination {
        let text = run_dir::read_status(&self.run_dir).unwrap_or_default();
        match CommandStatus::parse(&text) {
            Some(CommandStatus::Exited(code)) => Termination::exited(code),
            Some(CommandStatus::Signaled(signal)) => Termination::signaled(signal, self.pid),
            Some(CommandStatus::InitFailed(message)) => Termination {
                exit_code: Some(INIT_FAILURE_EXIT_CODE),
                signal: None,
                oom_killed: false,
                message: format!("Failed to start the task: {message}"),
            },
            None => match waited.map(|s| (s.code(), s.signal())) {
                Some((Some(code), _)) => Termination::exited(code),
                Some((None, Some(signal))) => Termination::signaled(signal, self.pid),
                _ if self.sigkilled.load(Ordering::SeqCst) => {
                    Termination::signaled(libc::SIGKILL, self.pid)
                }
                _ => Termination {
                    exit_code: None,
                    signal: None,
                    oom_killed: false,
                    message:
                        "Command terminated while the agent was not running; its status is unknown"
                            .into(),
                },
            },
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
    /// `init_program` is exec'd as the task's init with `__task-init …`
    /// (normally `/proc/self/exe`, the agent's own binary).
    pub fn new(init_program: PathBuf) -> Self {
        PosixContainerizer {
            containers: Arc::default(),
            init_program,
            address_space_limit: false,
        }
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

    /// Registers a container and starts its supervisor.
    fn supervise(
        &self,
        container: Container,
        child: Option<Child>,
        exit_tx: watch::Sender<Option<Termination>>,
    ) -> Result<Launched, ContainerizerError> {
        let container = Arc::new(container);
        {
            let mut map = lock(&self.containers);
            if map.contains_key(&container.id) {
                drop(map);
                container.kill_session();
                return Err(ContainerizerError::ContainerExists(container.id.clone()));
            }
            map.insert(container.id.clone(), container.clone());
        }
        let watch = match (
            container.pidfd.as_ref().map(OwnedFd::try_clone),
            child.is_some(),
        ) {
            (Some(Ok(fd)), child) => ExitWatch::Pidfd {
                pidfd: fd,
                pid: Pid::from_raw(container.pid as i32),
                child,
            },
            (_, true) => ExitWatch::Waitid(Pid::from_raw(container.pid as i32)),
            (_, false) => ExitWatch::Gone,
        };
        let pid = container.pid;
        let (done_tx, done_rx) = oneshot::channel();
        tokio::spawn(async move {
            wait_exit(watch).await;
            let finishing = container.clone();
            let termination = blocking("reap", move || {
                // The init exited but is not reaped yet: its session id still
                // names only our processes. Take down what is left of it,
                // then reap.
                finishing.kill_session();
                let waited = child.and_then(|mut c| c.wait().ok());
                *finishing.gone() = true;
                finishing.termination(waited)
            })
            .await
            .unwrap_or_else(|e| Termination {
                exit_code: None,
                signal: None,
                oom_killed: false,
                message: format!("Command terminated, but reaping it failed: {e}"),
            });
            tracing::info!(container_id = %container.id, pid, message = %termination.message, "posix task terminated");
            exit_tx.send_replace(Some(termination.clone()));
            let _ = done_tx.send(termination);
        });
        Ok(Launched { pid, exit: done_rx })
    }
}

impl Containerizer for PosixContainerizer {
    fn name(&self) -> &'static str {
        "posix"
    }

    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'static, Result<Launched, ContainerizerError>> {
        let found = validate_spec(&spec).and_then(|()| {
            if spec.rootfs.is_some() {
                return Err(ContainerizerError::InvalidSpec {
                    task_id: spec.task_id.clone(),
                    reason: "a container image needs linux isolation (the agent runs posix)".into(),
                });
            }
            if lock(&self.containers).contains_key(&spec.container_id) {
                Err(ContainerizerError::ContainerExists(
                    spec.container_id.clone(),
                ))
            } else {
                Ok(())
            }
        });
        let this = self.clone();
        async move {
            found?;
            let (child, pidfd) = {
                let spec = spec.clone();
                let (init_program, limit) = (this.init_program.clone(), this.address_space_limit);
                blocking("launch", move || spawn(&spec, &init_program, limit))
                .await??
            };
            let pid = child.id();
            let (exit_tx, exit_rx) = watch::channel(None);
            let container = Container {
                id: spec.container_id.clone(),
                task_id: spec.task_id.clone(),
                pid,
                pidfd,
                run_dir: spec.run_dir.clone(),
                exit: exit_rx,
                gone: Mutex::new(false),
                sigkilled: AtomicBool::new(false),
            };
            tracing::info!(container_id = %spec.container_id, task_id = %spec.task_id, pid, "launched task as posix process");
            this.supervise(container, Some(child), exit_tx)
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
                container.signal_init(Signal::SIGTERM)?;
                if tokio::time::timeout(grace, container.wait_exit())
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            let killing = container.clone();
            blocking("kill", move || killing.kill_session()).await
        }
        .boxed()
    }

    fn destroy(&self, container_id: &str) -> BoxFuture<'static, Result<(), ContainerizerError>> {
        let containers = self.containers.clone();
        let found = self.get(container_id);
        async move {
            let container = found?;
            if !container.has_exited() {
                let killing = container.clone();
                blocking("kill", move || killing.kill_session()).await?;
                if tokio::time::timeout(DESTROY_TIMEOUT, container.wait_exit())
                    .await
                    .is_err()
                {
                    return Err(ContainerizerError::KillTimeout {
                        container_id: container.id.clone(),
                        waited: DESTROY_TIMEOUT,
                    });
                }
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
        spec: RecoverSpec,
    ) -> BoxFuture<'static, Result<Launched, ContainerizerError>> {
        let this = self.clone();
        async move {
            validate_container_id(&spec.container_id)?;
            let run_dir = spec.run_dir.clone();
            let found = blocking("recover", move || run_dir::find(&run_dir)).await?;
            let (pid, pidfd, never_started) = match found {
                Found::Alive { pid, pidfd } => (pid, Some(pidfd), false),
                Found::Gone { pid } => (pid, None, false),
                Found::NeverStarted => (0, None, true),
            };
            let alive = pidfd.is_some();
            let (exit_tx, exit_rx) = watch::channel(None);
            if never_started {
                // An init still waiting for its release exits by itself.
                let message = "The agent restarted before the task's command started";
                exit_tx.send_replace(Some(Termination {
                    exit_code: None,
                    signal: None,
                    oom_killed: false,
                    message: message.into(),
                }));
            }
            let container = Container {
                id: spec.container_id.clone(),
                task_id: spec.task_id.clone(),
                pid,
                pidfd,
                run_dir: spec.run_dir.clone(),
                exit: exit_rx,
                gone: Mutex::new(!alive),
                sigkilled: AtomicBool::new(false),
            };
            tracing::info!(container_id = %spec.container_id, pid, alive, "recovered posix task");
            if never_started {
                let container = Arc::new(container);
                lock(&this.containers).insert(container.id.clone(), container.clone());
                let (done_tx, done_rx) = oneshot::channel();
                if let Some(t) = container.exit.borrow().clone() {
                    let _ = done_tx.send(t);
                }
                return Ok(Launched { pid, exit: done_rx });
            }
            this.supervise(container, None, exit_tx)
        }
        .boxed()
    }

    fn remove_orphans(&self, _known: &HashSet<String>) -> BoxFuture<'static, Vec<String>> {
        // Posix tasks live in no hierarchy of ours: every one of them is
        // named by the checkpoint written before it started.
        async { Vec::new() }.boxed()
    }

    fn usage(&self, container_id: &str) -> BoxFuture<'static, Result<Usage, ContainerizerError>> {
        let found = self.get(container_id);
        async move {
            let container = found?;
            blocking("usage", move || {
                if *container.gone() {
                    return Usage::default();
                }
                let members = procfs::session_members(container.pid);
                let ticks = procfs::ticks_per_second();
                let page = procfs::page_size();
                Usage {
                    cpus_user_time_secs: members.iter().map(|m| m.utime).sum::<u64>() as f64
                        / ticks,
                    cpus_system_time_secs: members.iter().map(|m| m.stime).sum::<u64>() as f64
                        / ticks,
                    mem_rss_bytes: members.iter().map(|m| m.rss_pages).sum::<u64>() * page,
                    mem_limit_bytes: None,
                    processes: members.len() as u64,
                }
            })
            .await
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

/// Forks the init in a session of its own, records it in the run directory,
/// then releases it. Blocks.
fn spawn(
    spec: &LaunchSpec,
    init_program: &std::path::Path,
    address_space_limit: bool,
) -> Result<(Child, Option<OwnedFd>), ContainerizerError> {
    let spawn_error = |source: io::Error| ContainerizerError::Spawn {
        task_id: spec.task_id.clone(),
        source,
    };
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
    let (sync_read, sync_write) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_error(io::Error::from(e)))?;
    let status_file = run_dir::status_file(&spec.run_dir);
    match std::fs::remove_file(&status_file) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(ContainerizerError::RunDir {
                path: spec.run_dir.clone(),
                source: e,
            })
        }
        _ => {}
    }
    let sync_fd = sync_read.as_raw_fd();
    let init_args = InitArgs {
        sync_fd,
        status_fd: None,
        sandbox: spec.sandbox.clone(),
        status_file: Some(status_file),
        hostname: None,
        namespaces: false,
        user: spec.user.as_ref().map(|u| u.to_init()),
        rootfs: None,
        rootfs_scratch: None,
        command: spec.command.clone(),
    };
    let mut command = Command::new(init_program);
    command.arg0("meseta-init").arg(TASK_INIT_SUBCOMMAND);
    for arg in init_args.to_args() {
        command.arg(std::ffi::OsString::from(
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&arg),
        ));
    }
    command
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.sandbox)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    let memory_bytes = (spec.mem_mb * 1024.0 * 1024.0) as u64;
    // SAFETY: the hook runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: setsid, fcntl and setrlimit are
    // plain system calls and nothing here allocates.
    unsafe {
        command.pre_exec(move || {
            setsid().map_err(io::Error::from)?;
            // The init inherits the release pipe under its own number.
            if libc::fcntl(sync_fd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if address_space_limit && memory_bytes > 0 {
                setrlimit(Resource::RLIMIT_AS, memory_bytes, memory_bytes)
                    .map_err(io::Error::from)?;
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(spawn_error)?;
    drop(sync_read);
    let pid = child.id();
    let abandon = |child: &mut Child| {
        let _ = child.kill();
        let _ = child.wait();
    };
    let pidfd = pidfd::open(Pid::from_raw(pid as i32));
    let recorded = procfs::start_time(pid)
        .ok_or_else(|| io::Error::other("the init vanished before its release"))
        .and_then(|started| run_dir::write_pid(&spec.run_dir, pid, started));
    if let Err(source) = recorded {
        abandon(&mut child);
        return Err(ContainerizerError::RunDir {
            path: spec.run_dir.clone(),
            source,
        });
    }
    // Release the init: it runs the command from now on.
    if let Err(e) = File::from(sync_write).write_all(b"1") {
        abandon(&mut child);
        return Err(spawn_error(e));
    }
    Ok((child, pidfd))
}
