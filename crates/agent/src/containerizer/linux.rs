//! The linux containerizer: namespaces + cgroups (Mesos' `linux` launcher
//! with the `cgroups/cpu,cgroups/mem,namespaces/pid` isolators).
//!
//! Launch, in a blocking thread:
//!
//! 1. create the container's cgroups and write its limits ([`super::cgroups`]);
//! 2. open the sandbox's `stdout`/`stderr` (append) and three pipes: release
//!    (agent → init), status (init → agent) and exec-error (child → agent);
//! 3. `clone` a child with `CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS |
//!    CLONE_NEWIPC` that only moves descriptors into place and `execve`s the
//!    init program (the agent's own binary, `__task-init`, see [`super::init`]);
//! 4. once the exec succeeded, move the init into the cgroups and record its
//!    pid and start time in the run directory, then release it: only then
//!    does it start the command, so the task never runs outside its limits
//!    and never runs unrecorded.
//!
//! The cloned child starts a session of its own before the exec and gets no
//! parent-death signal: a task outlives the agent process.
//!
//! A supervisor task per container waits for the init to exit (through a
//! pidfd, or a blocking `waitid` on kernels without one), checks the cgroup's
//! OOM counter meanwhile (an OOM kill anywhere in the container ends the whole
//! container, as in Mesos), then reaps the init and builds the
//! [`Termination`] from the status the init wrote.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sched::{clone, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{geteuid, pipe2, Pid};
use tokio::sync::{oneshot, watch};

use super::cgroups::{CgroupRoot, Limits, TaskCgroup};
use super::init::{CommandStatus, InitArgs, INIT_FAILURE_EXIT_CODE};
use super::pidfd::{self, wait_exit, ExitWatch};
use super::procfs;
use super::run_dir::{self, Found};
use super::{
    blocking, validate_container_id, validate_spec, ContainerInfo, Containerizer,
    ContainerizerError, LaunchSpec, Launched, RecoverSpec, Termination, Usage,
    TASK_INIT_SUBCOMMAND,
};

/// Default cgroup (relative to each hierarchy's root) that holds the
/// containers, like Mesos' `--cgroups_root=mesos`.
pub const DEFAULT_CGROUPS_ROOT: &str = "meseta";

/// Default [`LinuxConfig::pids_max`] (the agent's `--cgroups-max-pids`).
pub const DEFAULT_PIDS_MAX: u64 = 4096;

/// How often a running container's OOM counter is read.
const OOM_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long `destroy` waits for a SIGKILLed container to go away.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `destroy` retries removing a cgroup while its processes drain.
const CGROUP_REMOVE_PATIENCE: Duration = Duration::from_secs(5);
/// Stack of the cloned child, which only moves descriptors and execs.
const CLONE_STACK_SIZE: usize = 64 * 1024;

/// Settings of the linux containerizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxConfig {
    /// Parent cgroup of all containers, relative to each hierarchy's root
    /// (Mesos' `--cgroups_root`).
    pub cgroups_root: String,
    /// Also cap each container's CPU time with the CFS quota
    /// (`cpus × 100 ms` per 100 ms), Mesos' `--cgroups_enable_cfs`. Off:
    /// shares only.
    pub cfs_quota: bool,
    /// The program exec'd as the container's init with `__task-init …`; it
    /// must dispatch that subcommand to [`super::init::main`]. Default:
    /// `/proc/self/exe`, the agent's own binary (still the right one if the
    /// file is replaced on disk while the agent runs).
    pub init_program: PathBuf,
    /// At most this many processes and threads per container (the cgroup
    /// pids controller, when the host has it), so that a fork bomb stays
    /// inside its task. None: no limit.
    pub pids_max: Option<u64>,
}

impl Default for LinuxConfig {
    fn default() -> Self {
        LinuxConfig {
            cgroups_root: DEFAULT_CGROUPS_ROOT.to_string(),
            cfs_quota: false,
            init_program: PathBuf::from("/proc/self/exe"),
            pids_max: Some(DEFAULT_PIDS_MAX),
        }
    }
}

/// Tasks in PID/mount/UTS/IPC namespaces and cgroups. Needs root and a
/// writable cgroup hierarchy (v1 or v2).
///
/// Dropping it leaves running containers running (an agent restart must not
/// kill tasks); their supervisors keep running on the tokio runtime.
pub struct LinuxContainerizer {
    inner: Arc<Inner>,
}

struct Inner {
    config: LinuxConfig,
    cgroups: CgroupRoot,
    containers: Mutex<HashMap<String, Arc<Container>>>,
}

impl Inner {
    fn containers(&self) -> MutexGuard<'_, HashMap<String, Arc<Container>>> {
        // A panic while holding this lock leaves a map that is still
        // consistent (every operation on it is a single insert/remove).
        self.containers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self, container_id: &str) -> Result<Arc<Container>, ContainerizerError> {
        self.containers()
            .get(container_id)
            .cloned()
            .ok_or_else(|| ContainerizerError::UnknownContainer(container_id.to_string()))
    }
}

impl LinuxContainerizer {
    /// Checks root, finds the cgroup hierarchies and creates the
    /// `cgroups_root` cgroup. Blocks on cgroupfs: call it at startup.
    ///
    /// Fails with [`ContainerizerError::LinuxUnavailable`] (saying why) when
    /// linux isolation cannot work here.
    pub fn new(config: LinuxConfig) -> Result<Self, ContainerizerError> {
        if !geteuid().is_root() {
            return Err(ContainerizerError::LinuxUnavailable(
                "the agent is not running as root".into(),
            ));
        }
        let cgroups = CgroupRoot::detect(&config.cgroups_root)
            .map_err(ContainerizerError::LinuxUnavailable)?;
        cgroups.prepare().map_err(|e| {
            ContainerizerError::LinuxUnavailable(format!(
                "the cgroup hierarchy is not writable: {e}"
            ))
        })?;
        if let Err(e) = std::fs::metadata(&config.init_program) {
            return Err(ContainerizerError::LinuxUnavailable(format!(
                "the init program {} is not usable: {e}",
                config.init_program.display()
            )));
        }
        if config.pids_max.is_some() && !cgroups.has_pids() {
            tracing::warn!("the cgroup pids controller is not available: tasks get no pids limit");
        }
        tracing::debug!(
            cgroup_v2 = cgroups.is_v2(),
            cgroups_root = %config.cgroups_root,
            cfs_quota = config.cfs_quota,
            "linux containerizer ready"
        );
        Ok(LinuxContainerizer {
            inner: Arc::new(Inner {
                config,
                cgroups,
                containers: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// True when the tasks' cgroups are on the unified (v2) hierarchy.
    pub fn cgroup_v2(&self) -> bool {
        self.inner.cgroups.is_v2()
    }
}

impl Containerizer for LinuxContainerizer {
    fn name(&self) -> &'static str {
        "linux"
    }

    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'static, Result<Launched, ContainerizerError>> {
        let inner = self.inner.clone();
        async move {
            validate_spec(&spec)?;
            if spec.sandbox.to_str().is_none() {
                return Err(ContainerizerError::InvalidSpec {
                    task_id: spec.task_id.clone(),
                    reason: "the sandbox path is not UTF-8".into(),
                });
            }
            if inner.containers().contains_key(&spec.container_id) {
                return Err(ContainerizerError::ContainerExists(spec.container_id));
            }
            let limits = Limits {
                cpus: spec.cpus,
                mem_mb: spec.mem_mb,
                cfs_quota: inner.config.cfs_quota,
                pids_max: inner.config.pids_max,
            };
            let spawned = {
                let inner = inner.clone();
                let spec = spec.clone();
                blocking("launch", move || spawn_container(&inner, &spec, limits)).await??
            };
            let (exit_tx, exit_rx) = watch::channel(None);
            let (pidfd, exit_watch) = match spawned
                .pidfd
                .map(|fd| fd.try_clone().map(|clone| (fd, clone)))
            {
                Some(Ok((pidfd, watched))) => (
                    Some(pidfd),
                    ExitWatch::Pidfd {
                        pidfd: watched,
                        pid: spawned.pid,
                        child: true,
                    },
                ),
                _ => (None, ExitWatch::Waitid(spawned.pid)),
            };
            let container = Arc::new(Container {
                id: spec.container_id.clone(),
                task_id: spec.task_id.clone(),
                pid: spawned.pid,
                pidfd,
                cgroup: spawned.cgroup,
                limits,
                run_dir: spec.run_dir.clone(),
                reaped: Mutex::new(false),
                oom: AtomicBool::new(false),
                sigkilled: AtomicBool::new(false),
                exit: exit_rx,
            });
            inner
                .containers()
                .insert(spec.container_id.clone(), container.clone());
            tracing::info!(
                container_id = %spec.container_id,
                task_id = %spec.task_id,
                pid = spawned.pid.as_raw(),
                "launched task in linux container"
            );
            let (done_tx, done_rx) = oneshot::channel();
            let reaper = Reaper::Child {
                status_pipe: spawned.status,
            };
            tokio::spawn(supervise(container, exit_watch, reaper, exit_tx, done_tx));
            Ok(Launched {
                pid: spawned.pid.as_raw() as u32,
                exit: done_rx,
            })
        }
        .boxed()
    }

    fn kill(
        &self,
        container_id: &str,
        grace: Duration,
    ) -> BoxFuture<'static, Result<(), ContainerizerError>> {
        let found = self.inner.get(container_id);
        async move {
            let container = found?;
            if container.has_exited() {
                return Ok(());
            }
            if !grace.is_zero() {
                // The init forwards SIGTERM to every process of the namespace.
                container.signal(Signal::SIGTERM)?;
                if tokio::time::timeout(grace, container.wait_exit()).await.is_ok() {
                    return Ok(());
                }
                tracing::info!(container_id = %container.id, ?grace, "container still alive after grace, sending SIGKILL");
            }
            container.kill_everything().await
        }
        .boxed()
    }

    fn destroy(&self, container_id: &str) -> BoxFuture<'static, Result<(), ContainerizerError>> {
        let inner = self.inner.clone();
        let found = self.inner.get(container_id);
        async move {
            let container = found?;
            if !container.has_exited() {
                container.kill_everything().await?;
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
            let removing = container.clone();
            blocking("cgroup removal", move || {
                removing.cgroup.remove(CGROUP_REMOVE_PATIENCE)
            })
            .await??;
            let mut containers = inner.containers();
            if containers
                .get(&container.id)
                .is_some_and(|c| Arc::ptr_eq(c, &container))
            {
                containers.remove(&container.id);
            }
            Ok(())
        }
        .boxed()
    }

    fn recover(
        &self,
        spec: RecoverSpec,
    ) -> BoxFuture<'static, Result<Launched, ContainerizerError>> {
        let inner = self.inner.clone();
        async move {
            validate_container_id(&spec.container_id)?;
            if inner.containers().contains_key(&spec.container_id) {
                return Err(ContainerizerError::ContainerExists(spec.container_id));
            }
            let (cgroup, found) = {
                let inner = inner.clone();
                let spec = spec.clone();
                blocking("recover", move || {
                    (inner.cgroups.load(&spec.container_id), run_dir::find(&spec.run_dir))
                })
                .await?
            };
            let mem_mb = cgroup.memory_limit().map_or(0.0, |bytes| bytes as f64 / (1024.0 * 1024.0));
            let (pid, pidfd, watch, never_started) = match found {
                Found::Alive { pid, pidfd } => match pidfd.try_clone() {
                    Ok(watched) => {
                        let raw = Pid::from_raw(pid as i32);
                        (raw, Some(pidfd), ExitWatch::Pidfd { pidfd: watched, pid: raw, child: false }, false)
                    }
                    Err(_) => (Pid::from_raw(pid as i32), None, ExitWatch::Gone, false),
                },
                Found::Gone { pid } => (Pid::from_raw(pid as i32), None, ExitWatch::Gone, false),
                Found::NeverStarted => (Pid::from_raw(0), None, ExitWatch::Gone, true),
            };
            let alive = pidfd.is_some();
            let (exit_tx, exit_rx) = watch::channel(None);
            let container = Arc::new(Container {
                id: spec.container_id.clone(),
                task_id: spec.task_id.clone(),
                pid,
                pidfd,
                cgroup,
                limits: Limits {
                    cpus: 0.0,
                    mem_mb,
                    cfs_quota: false,
                    pids_max: None,
                },
                run_dir: spec.run_dir.clone(),
                // Never signal a pid that is not provably the init.
                reaped: Mutex::new(!alive),
                oom: AtomicBool::new(false),
                sigkilled: AtomicBool::new(false),
                exit: exit_rx,
            });
            inner.containers().insert(spec.container_id.clone(), container.clone());
            tracing::info!(container_id = %spec.container_id, pid = pid.as_raw(), alive, "recovered linux container");
            let (done_tx, done_rx) = oneshot::channel();
            let reaper = if never_started { Reaper::NeverStarted } else { Reaper::Orphan };
            tokio::spawn(supervise(container, watch, reaper, exit_tx, done_tx));
            Ok(Launched {
                pid: pid.as_raw() as u32,
                exit: done_rx,
            })
        }
        .boxed()
    }

    fn remove_orphans(&self, known: &HashSet<String>) -> BoxFuture<'static, Vec<String>> {
        let inner = self.inner.clone();
        let known = known.clone();
        async move {
            let held: HashSet<String> = inner.containers().keys().cloned().collect();
            blocking("orphan removal", move || {
                let mut removed = Vec::new();
                for id in inner.cgroups.container_ids() {
                    if known.contains(&id) || held.contains(&id) {
                        continue;
                    }
                    let cgroup = inner.cgroups.load(&id);
                    let procs = cgroup.procs();
                    cgroup.kill_all();
                    match cgroup.remove(CGROUP_REMOVE_PATIENCE) {
                        Ok(()) => {
                            tracing::warn!(container_id = %id, processes = procs.len(), ?procs, "killed a container no checkpoint names");
                            removed.push(id);
                        }
                        Err(e) => {
                            tracing::warn!(container_id = %id, error = %e, "failed to remove a container no checkpoint names")
                        }
                    }
                }
                removed
            })
            .await
            .unwrap_or_default()
        }
        .boxed()
    }

    fn usage(&self, container_id: &str) -> BoxFuture<'static, Result<Usage, ContainerizerError>> {
        let found = self.inner.get(container_id);
        async move {
            let container = found?;
            blocking("usage", move || {
                let (user, system, rss) = container.cgroup.usage();
                Usage {
                    cpus_user_time_secs: user,
                    cpus_system_time_secs: system,
                    mem_rss_bytes: rss,
                    mem_limit_bytes: container.cgroup.memory_limit(),
                    processes: container.cgroup.procs().len() as u64,
                }
            })
            .await
        }
        .boxed()
    }

    fn containers(&self) -> Vec<ContainerInfo> {
        self.inner
            .containers()
            .values()
            .map(|c| ContainerInfo {
                container_id: c.id.clone(),
                task_id: c.task_id.clone(),
                pid: c.pid.as_raw() as u32,
                cgroups: c.cgroup.dirs().to_vec(),
            })
            .collect()
    }
}

/// One launched container.
struct Container {
    id: String,
    task_id: String,
    /// The init, as the host sees it.
    pid: Pid,
    /// Signals go through it when there is one: it cannot hit a recycled pid.
    pidfd: Option<OwnedFd>,
    cgroup: TaskCgroup,
    limits: Limits,
    /// The run directory: the init writes the command's status there (read
    /// after a recovery).
    run_dir: PathBuf,
    /// Set once the init was reaped (or, recovered, seen gone): from then on
    /// its pid may name another process, so nothing may signal it. Held
    /// while signalling and reaping.
    reaped: Mutex<bool>,
    /// The OOM killer fired in the container.
    oom: AtomicBool,
    /// We sent the init SIGKILL.
    sigkilled: AtomicBool,
    exit: watch::Receiver<Option<Termination>>,
}

impl Container {
    fn reaped(&self) -> MutexGuard<'_, bool> {
        self.reaped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    async fn wait_exit(&self) {
        let mut exit = self.exit.clone();
        // An error means the supervisor is gone, which it only is after
        // sending the exit.
        let _ = exit.wait_for(Option::is_some).await;
    }

    /// Signals the init unless it was already reaped.
    fn signal(&self, signal: Signal) -> Result<(), ContainerizerError> {
        let reaped = self.reaped();
        if *reaped {
            return Ok(());
        }
        let sent = match &self.pidfd {
            Some(pidfd) => pidfd::send_signal(pidfd, Some(signal)),
            None => kill(self.pid, signal),
        };
        match sent {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(ContainerizerError::Signal {
                container_id: self.id.clone(),
                source: io::Error::from(errno),
            }),
        }
    }

    /// SIGKILLs the init (the kernel then kills its whole PID namespace) and
    /// every process still in the container's cgroup.
    async fn kill_everything(self: &Arc<Self>) -> Result<(), ContainerizerError> {
        self.sigkilled.store(true, Ordering::SeqCst);
        self.signal(Signal::SIGKILL)?;
        let container = self.clone();
        blocking("cgroup kill", move || container.cgroup.kill_all()).await
    }

    /// Reaps the exited init (when it is our child) and tells how the
    /// command ended. Blocks.
    fn finish(&self, reaper: Reaper) -> Termination {
        let mut text = String::new();
        let wait_status = match reaper {
            Reaper::Child { status_pipe } => {
                let wait_status = {
                    let mut reaped = self.reaped();
                    let status = loop {
                        match waitpid(self.pid, None) {
                            Err(Errno::EINTR) => continue,
                            other => break other,
                        }
                    };
                    *reaped = true;
                    status
                };
                // The init wrote its line before exiting; every writer is
                // closed now.
                let _ = File::from(status_pipe).read_to_string(&mut text);
                Some(wait_status)
            }
            Reaper::Orphan => {
                // Whoever is its parent now reaps it; the status file says
                // how the command ended.
                *self.reaped() = true;
                text = run_dir::read_status(&self.run_dir).unwrap_or_default();
                None
            }
            Reaper::NeverStarted => {
                *self.reaped() = true;
                // An init still waiting for its release exits by itself; a
                // stray process in the cgroup does not outlive this.
                self.cgroup.kill_all();
                return Termination {
                    exit_code: None,
                    signal: None,
                    oom_killed: false,
                    message: "The agent restarted before the task's command started".into(),
                };
            }
        };
        let pid = self.pid.as_raw() as u32;
        let mut termination = match CommandStatus::parse(&text) {
            Some(CommandStatus::Exited(code)) => Termination::exited(code),
            Some(CommandStatus::Signaled(signal)) => Termination::signaled(signal, pid),
            Some(CommandStatus::InitFailed(message)) => Termination {
                exit_code: Some(INIT_FAILURE_EXIT_CODE),
                signal: None,
                oom_killed: false,
                message: format!("Failed to start the task: {message}"),
            },
            // No status: the init itself was killed (SIGKILL escalation, OOM).
            None => match wait_status {
                Some(Ok(WaitStatus::Exited(_, code))) => Termination::exited(code),
                Some(Ok(WaitStatus::Signaled(_, signal, _))) => {
                    Termination::signaled(signal as i32, pid)
                }
                None if self.sigkilled.load(Ordering::SeqCst) => {
                    Termination::signaled(libc::SIGKILL, pid)
                }
                None => Termination {
                    exit_code: None,
                    signal: None,
                    oom_killed: false,
                    message:
                        "Command terminated while the agent was not running; its status is unknown"
                            .into(),
                },
                Some(other) => Termination {
                    exit_code: None,
                    signal: None,
                    oom_killed: false,
                    message: format!("Command terminated, but its status is unknown ({other:?})"),
                },
            },
        };
        if self.oom.load(Ordering::SeqCst) || self.cgroup.oom_kills() > 0 {
            const MIB: f64 = 1024.0 * 1024.0;
            let requested = self.limits.memory_bytes() as f64 / MIB;
            let used = self
                .cgroup
                .max_memory_usage()
                .map(|bytes| format!("{}MB", (bytes as f64 / MIB).round()))
                .unwrap_or_else(|| "unknown".into());
            termination.oom_killed = true;
            termination.message =
                format!("Memory limit exceeded: Requested: {requested}MB Maximum Used: {used}");
        }
        termination
    }
}

/// What the blocking part of a launch hands back.
struct Spawned {
    pid: Pid,
    pidfd: Option<OwnedFd>,
    status: OwnedFd,
    cgroup: TaskCgroup,
}

fn spawn_container(
    inner: &Inner,
    spec: &LaunchSpec,
    limits: Limits,
) -> Result<Spawned, ContainerizerError> {
    let cgroup = inner.cgroups.create(&spec.container_id, limits)?;
    match start_init(&inner.config, spec, &cgroup) {
        Ok((pid, status)) => Ok(Spawned {
            pid,
            pidfd: pidfd::open(pid),
            status,
            cgroup,
        }),
        Err(e) => {
            if let Err(cleanup) = cgroup.remove(CGROUP_REMOVE_PATIENCE) {
                tracing::warn!(container_id = %spec.container_id, error = %cleanup, "failed to clean up after a failed launch");
            }
            Err(e)
        }
    }
}

/// Everything the cloned child touches, prepared beforehand: between clone
/// and exec the child may only make async-signal-safe calls, so it must not
/// allocate.
struct ChildPlan {
    /// (source, target) descriptors for stdin, stdout and stderr.
    stdio: [(RawFd, RawFd); 3],
    /// Descriptors the init inherits under their own numbers.
    inherit: [RawFd; 2],
    exec_error: RawFd,
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    mask: libc::sigset_t,
}

/// Clones the init into its namespaces, waits for its exec, moves it into the
/// cgroup, records it in the run directory and releases it. Returns its pid
/// and the status pipe's read end.
fn start_init(
    config: &LinuxConfig,
    spec: &LaunchSpec,
    cgroup: &TaskCgroup,
) -> Result<(Pid, OwnedFd), ContainerizerError> {
    let spawn_error = |source: io::Error| ContainerizerError::Spawn {
        task_id: spec.task_id.clone(),
        source,
    };
    let sandbox_file = |name: &str| {
        let path = spec.sandbox.join(name);
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map(OwnedFd::from)
            .map_err(|source| ContainerizerError::SandboxFile { path, source })
    };
    let stdout = above_stdio(sandbox_file("stdout")?).map_err(spawn_error)?;
    let stderr = above_stdio(sandbox_file("stderr")?).map_err(spawn_error)?;
    let stdin = File::open("/dev/null")
        .map(OwnedFd::from)
        .and_then(above_stdio)
        .map_err(spawn_error)?;
    let pipe = || {
        let (read, write) = pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_error(e.into()))?;
        Ok::<_, ContainerizerError>((
            above_stdio(read).map_err(spawn_error)?,
            above_stdio(write).map_err(spawn_error)?,
        ))
    };
    let (sync_read, sync_write) = pipe()?;
    let (status_read, status_write) = pipe()?;
    let (exec_error_read, exec_error_write) = pipe()?;

    let init_args = InitArgs {
        sync_fd: sync_read.as_raw_fd(),
        status_fd: Some(status_write.as_raw_fd()),
        sandbox: spec.sandbox.clone(),
        status_file: Some(run_dir::status_file(&spec.run_dir)),
        hostname: spec.hostname.clone(),
        namespaces: true,
        user: spec.user.as_ref().map(|u| u.to_init()),
        rootfs: spec.rootfs.clone(),
        rootfs_scratch: spec.rootfs.as_ref().map(|_| spec.run_dir.join("rootfs")),
        command: spec.command.clone(),
    };
    let invalid = |what: &str| ContainerizerError::InvalidSpec {
        task_id: spec.task_id.clone(),
        reason: format!("{what} contains a NUL byte"),
    };
    let program = CString::new(config.init_program.as_os_str().as_bytes())
        .map_err(|_| invalid("the init program path"))?;
    let mut argv = vec![
        CString::new("meseta-init").map_err(|_| invalid("argv"))?,
        CString::new(TASK_INIT_SUBCOMMAND).map_err(|_| invalid("argv"))?,
    ];
    for arg in init_args.to_args() {
        argv.push(CString::new(arg).map_err(|_| invalid("the command or sandbox"))?);
    }
    let envp = spec
        .env
        .iter()
        .map(|(key, value)| CString::new(format!("{key}={value}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| invalid("the environment"))?;
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = envp
        .iter()
        .map(|e| e.as_ptr())
        .chain([std::ptr::null()])
        .collect();

    let plan = ChildPlan {
        stdio: [
            (stdin.as_raw_fd(), libc::STDIN_FILENO),
            (stdout.as_raw_fd(), libc::STDOUT_FILENO),
            (stderr.as_raw_fd(), libc::STDERR_FILENO),
        ],
        inherit: [sync_read.as_raw_fd(), status_write.as_raw_fd()],
        exec_error: exec_error_write.as_raw_fd(),
        program: program.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        mask: *SigSet::empty().as_ref(),
    };
    let mut stack = vec![0u8; CLONE_STACK_SIZE];
    let flags = CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    // SAFETY: without CLONE_VM the child gets a copy of this address space,
    // so `plan`, the C strings it points into and `stack` stay valid in it.
    // The child runs `exec_init`, which makes only async-signal-safe libc
    // calls (no allocation, no locks) before execve or _exit, as required
    // after forking a multi-threaded process; it needs a few hundred bytes
    // of the 64 KiB stack.
    let cloned = unsafe {
        clone(
            Box::new(|| exec_init(&plan)),
            &mut stack,
            flags,
            Some(libc::SIGCHLD),
        )
    };
    let pid = cloned.map_err(|e| spawn_error(e.into()))?;

    // The child holds its own copies now.
    drop((
        stdin,
        stdout,
        stderr,
        sync_read,
        status_write,
        exec_error_write,
    ));

    if let Some(error) = read_exec_error(exec_error_read) {
        let _ = waitpid(pid, None);
        return Err(spawn_error(io::Error::new(
            error.kind(),
            format!(
                "failed to exec the container init {}: {error}",
                config.init_program.display()
            ),
        )));
    }
    let abandon = |pid: Pid| {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    };
    if let Err(e) = cgroup.add_process(pid.as_raw() as u32) {
        abandon(pid);
        return Err(e);
    }
    // A stale status of an earlier launch in this run directory must not
    // speak for this one; then the init is recorded before it may start.
    let recorded = match std::fs::remove_file(run_dir::status_file(&spec.run_dir)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => procfs::start_time(pid.as_raw() as u32)
            .ok_or_else(|| io::Error::other("the init vanished before its release"))
            .and_then(|started| run_dir::write_pid(&spec.run_dir, pid.as_raw() as u32, started)),
    };
    if let Err(source) = recorded {
        abandon(pid);
        return Err(ContainerizerError::RunDir {
            path: spec.run_dir.clone(),
            source,
        });
    }
    // Release the init: it runs the command from now on.
    let mut sync_write = File::from(sync_write);
    if let Err(e) = io::Write::write_all(&mut sync_write, b"1") {
        abandon(pid);
        return Err(spawn_error(e));
    }
    Ok((pid, status_read))
}

/// Moves `fd` to a number above 2, so that placing stdin/stdout/stderr in
/// the child cannot overwrite it. The result is close-on-exec.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > libc::STDERR_FILENO {
        return Ok(fd);
    }
    let raised = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raised) })
}

/// Runs in the cloned child: place the descriptors, exec the init. On
/// failure, report errno on the exec-error pipe and exit 127.
fn exec_init(plan: &ChildPlan) -> isize {
    // SAFETY: only async-signal-safe calls on memory prepared before the
    // clone (see ChildPlan); every pointer is valid and NUL-terminated.
    unsafe {
        // The agent's threads may block signals; the init starts clean.
        libc::sigprocmask(libc::SIG_SETMASK, &plan.mask, std::ptr::null_mut());
        // A session of its own: signals to the agent's process group or
        // session (a terminal's Ctrl-C, a unit's stop) do not reach the task.
        if libc::setsid() < 0 {
            child_fail(plan.exec_error);
        }
        for (source, target) in plan.stdio {
            // dup2 clears close-on-exec on the target.
            if libc::dup2(source, target) < 0 {
                child_fail(plan.exec_error);
            }
        }
        for fd in plan.inherit {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                child_fail(plan.exec_error);
            }
        }
        libc::execve(plan.program, plan.argv, plan.envp);
        child_fail(plan.exec_error)
    }
}

/// Writes errno to the exec-error pipe and exits the child.
///
/// # Safety
/// Only for the cloned child before exec (async-signal-safe calls only).
unsafe fn child_fail(exec_error: RawFd) -> ! {
    // SAFETY: errno location, write and _exit are async-signal-safe; the
    // buffer lives on this stack.
    unsafe {
        let errno = *libc::__errno_location();
        let bytes = errno.to_ne_bytes();
        libc::write(exec_error, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}

/// None when the child exec'd (the pipe closed empty), else its errno.
fn read_exec_error(pipe: OwnedFd) -> Option<io::Error> {
    let mut pipe = File::from(pipe);
    let mut bytes = Vec::with_capacity(4);
    match pipe.read_to_end(&mut bytes) {
        Ok(_) if bytes.is_empty() => None,
        Ok(_) => {
            let mut errno = [0u8; 4];
            let n = bytes.len().min(4);
            errno[..n].copy_from_slice(&bytes[..n]);
            Some(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
        }
        Err(e) => Some(e),
    }
}

/// How the supervisor ends a container once its init exited.
enum Reaper {
    /// Our child: reap it, read its status pipe.
    Child { status_pipe: OwnedFd },
    /// Recovered after an agent restart: someone else reaps it; read the
    /// status file.
    Orphan,
    /// Recovered, but its launch never released the command.
    NeverStarted,
}

/// Watches one container until its init exits, then reports the exit.
async fn supervise(
    container: Arc<Container>,
    watch: ExitWatch,
    reaper: Reaper,
    exit_tx: watch::Sender<Option<Termination>>,
    done_tx: oneshot::Sender<Termination>,
) {
    let exited = wait_exit(watch);
    tokio::pin!(exited);
    let mut oom_poll = tokio::time::interval(OOM_POLL_INTERVAL);
    oom_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut exited => break,
            _ = oom_poll.tick(), if !container.oom.load(Ordering::SeqCst) => {
                let checked = container.clone();
                let hit = blocking("oom check", move || checked.cgroup.oom_kills() > 0).await.unwrap_or(false);
                if hit {
                    tracing::info!(container_id = %container.id, "memory limit exceeded, killing container");
                    container.oom.store(true, Ordering::SeqCst);
                    if let Err(e) = container.kill_everything().await {
                        tracing::warn!(container_id = %container.id, error = %e, "failed to kill container after OOM");
                    }
                }
            }
        }
    }
    let reaping = container.clone();
    let termination = blocking("reap", move || reaping.finish(reaper))
        .await
        .unwrap_or_else(|e| Termination {
            exit_code: None,
            signal: None,
            oom_killed: false,
            message: format!("Command terminated, but reaping it failed: {e}"),
        });
    tracing::info!(container_id = %container.id, message = %termination.message, "container terminated");
    exit_tx.send_replace(Some(termination.clone()));
    let _ = done_tx.send(termination);
}
