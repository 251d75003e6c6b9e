//! Containerizers: how the agent starts, signals and cleans up a task's
//! processes.
//!
//! Two implementations sit behind the [`Containerizer`] trait:
//!
//! - [`LinuxContainerizer`] (`--isolation linux`, the default as root): the
//!   task runs under an init process (see [`init`]) that is PID 1 of new PID,
//!   mount, UTS and IPC namespaces, inside its own cgroups with cpu shares (and
//!   optionally a CFS quota) and a memory limit. Hitting the memory limit is
//!   reported as [`Termination::oom_killed`].
//! - [`PosixContainerizer`] (`--isolation posix`): the same init without
//!   namespaces, in a session of its own; needs no privileges.
//! - [`FakeContainerizer`]: no processes at all; tests and hollow agents
//!   drive its containers' exits by hand.
//!
//! [`detect`] picks one the way Mesos' agent does with `--isolation`: linux
//! when the agent runs as root with a writable cgroup hierarchy, posix
//! otherwise (saying why in one warning line).
//!
//! Every implementation keeps the same contract: [`Containerizer::launch`]
//! returns once the task's command is running (or failed to start), the exit
//! arrives exactly once through [`Launched::exit`], [`Containerizer::kill`]
//! signals and escalates, and [`Containerizer::destroy`] releases what the
//! container held once it is no longer needed.
//!
//! A task never depends on the agent process: the init runs in a session of
//! its own with no parent-death signal, in cgroups outside the agent's, and
//! the containerizer records the init's pid and start time in the
//! container's run directory ([`run_dir`]) before the command starts. An
//! agent that restarts re-attaches with [`Containerizer::recover`] and kills
//! what no checkpoint names with [`Containerizer::remove_orphans`].

mod cgroups;
mod compose;
pub mod docker;
mod fake;
pub mod image;
pub mod init;
mod linux;
mod pidfd;
mod posix;
pub(crate) mod procfs;
pub(crate) mod run_dir;

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

pub use compose::ComposingContainerizer;
pub use docker::DockerContainerizer;
pub use fake::FakeContainerizer;
pub use linux::{LinuxConfig, LinuxContainerizer, DEFAULT_CGROUPS_ROOT, DEFAULT_PIDS_MAX};
pub use posix::PosixContainerizer;

/// Name of the hidden subcommand of the `meseta` binary that runs
/// [`init::main`]. The linux containerizer execs the agent's own binary as
/// `<exe> __task-init <args…>`.
pub const TASK_INIT_SUBCOMMAND: &str = "__task-init";

/// Everything a containerizer needs to start one task.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchSpec {
    /// Unique per launch; becomes the cgroup name, so it must be a single path
    /// component (no `/`, not `.` or `..`, no NUL).
    pub container_id: String,
    pub task_id: String,
    /// Run as `/bin/sh -c "$command"`.
    pub command: String,
    /// The complete environment of the task; nothing of the agent's own
    /// environment is inherited. The caller fills `PORT0`, `MESOS_SANDBOX`, ….
    pub env: Vec<(String, String)>,
    /// Must exist already. The task's working directory; its `stdout` and
    /// `stderr` files are appended to here.
    pub sandbox: PathBuf,
    pub cpus: f64,
    pub mem_mb: f64,
    /// Hostname inside the task's UTS namespace (linux only; `None` keeps the
    /// host's).
    pub hostname: Option<String>,
    /// The container's run directory (must exist; outside the sandbox): the
    /// init's pid and the command's status are recorded there, see
    /// [`run_dir`]. Pass the same directory to [`Containerizer::recover`].
    pub run_dir: PathBuf,
    /// The user the command runs as; `None` runs it as the agent's user.
    pub user: Option<TaskUser>,
    /// A Docker task (the Docker containerizer runs it); None: a native one.
    pub docker: Option<DockerSpec>,
    /// A native task with an image: its root filesystem, see [`image`].
    pub rootfs: Option<PathBuf>,
}

/// How a Docker task's container is networked (Marathon's `network`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DockerNetwork {
    #[default]
    Host,
    Bridge,
    None,
    /// A user-defined Docker network, by name.
    User(String),
}

/// One port mapping of a bridged container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerPortMapping {
    /// The host port taken from the offer.
    pub host_port: u32,
    /// 0: the same as the host port.
    pub container_port: u32,
    /// `tcp`, `udp` or `udp,tcp`.
    pub protocol: String,
}

/// A host directory mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerVolume {
    /// Absolute (relative host paths are resolved inside the sandbox by
    /// the agent).
    pub host_path: PathBuf,
    /// Absolute, or relative to the container's sandbox.
    pub container_path: String,
    pub read_only: bool,
}

/// What a Docker task asks of its container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DockerSpec {
    pub image: String,
    pub force_pull: bool,
    pub network: DockerNetwork,
    pub port_mappings: Vec<DockerPortMapping>,
    pub volumes: Vec<DockerVolume>,
    /// `docker run` options as key/value pairs.
    pub parameters: Vec<(String, String)>,
    pub privileged: bool,
    pub labels: Vec<(String, String)>,
    /// Marathon `args`: the image's arguments, its entrypoint kept. None:
    /// [`LaunchSpec::command`] runs through `/bin/sh -c`, or the image's own
    /// command when that is empty.
    pub args: Option<Vec<String>>,
}

/// A resolved user a task runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl TaskUser {
    pub(crate) fn to_init(&self) -> init::InitUser {
        init::InitUser {
            uid: self.uid,
            gid: self.gid,
            groups: self.groups.clone(),
        }
    }
}

/// How a task's command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// Exit code of the command when it exited normally.
    pub exit_code: Option<i32>,
    /// The signal that terminated the command (or its container).
    pub signal: Option<i32>,
    /// The container hit its memory limit and the kernel killed (part of) it.
    pub oom_killed: bool,
    /// Human-readable, in Mesos' words: `Command exited with status 0`,
    /// `Command terminated with signal Killed (pid 1234)`,
    /// `Memory limit exceeded: …`.
    pub message: String,
}

impl Termination {
    /// True when the command exited on its own with status 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.oom_killed
    }

    pub(crate) fn exited(code: i32) -> Self {
        Termination {
            exit_code: Some(code),
            signal: None,
            oom_killed: false,
            message: format!("Command exited with status {code}"),
        }
    }

    pub(crate) fn signaled(signal: i32, pid: u32) -> Self {
        Termination {
            exit_code: None,
            signal: Some(signal),
            oom_killed: false,
            message: format!(
                "Command terminated with signal {} (pid {pid})",
                signal_description(signal)
            ),
        }
    }
}

/// A started task.
#[derive(Debug)]
pub struct Launched {
    /// The pid of the task's top process as the host sees it (the init for
    /// linux, the `sh` for posix).
    pub pid: u32,
    /// Resolves once, when the task has terminated and been reaped. If the
    /// containerizer is dropped first the sender is dropped too.
    pub exit: tokio::sync::oneshot::Receiver<Termination>,
}

/// What a containerizer lists about a container it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub container_id: String,
    pub task_id: String,
    /// See [`Launched::pid`].
    pub pid: u32,
    /// The cgroup directories of the container (empty for posix).
    pub cgroups: Vec<PathBuf>,
}

/// What the agent checkpointed of a container, to re-attach to it after a
/// restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverSpec {
    pub container_id: String,
    pub task_id: String,
    /// The [`LaunchSpec::run_dir`] it was launched with.
    pub run_dir: PathBuf,
    /// It is a Docker container.
    pub docker: bool,
}

/// Resource usage of a container, as Mesos' `ResourceStatistics` has it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub cpus_user_time_secs: f64,
    pub cpus_system_time_secs: f64,
    pub mem_rss_bytes: u64,
    /// The memory limit the container runs under, when it has one.
    pub mem_limit_bytes: Option<u64>,
    /// Live processes in the container.
    pub processes: u64,
}

/// Starts, signals and cleans up task containers.
pub trait Containerizer: Send + Sync + 'static {
    /// `"linux"`, `"posix"` or `"fake"`: the `--isolation` value this
    /// implements.
    fn name(&self) -> &'static str;

    /// Starts `spec.command`. Resolves once the command runs (inside its
    /// limits) or with the reason it could not be started; on error nothing
    /// of the container is left behind.
    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'static, Result<Launched, ContainerizerError>>;

    /// SIGTERMs the whole task, then SIGKILLs every process of it if it is
    /// still alive after `grace` (a zero `grace` goes straight to SIGKILL). Resolves when the last signal was sent (or
    /// the task exited); the exit itself arrives through [`Launched::exit`].
    /// Killing a container that already exited is a no-op.
    fn kill(
        &self,
        container_id: &str,
        grace: Duration,
    ) -> BoxFuture<'static, Result<(), ContainerizerError>>;

    /// Forgets the container and removes what it held (cgroups…). Meant for
    /// after the exit; a container still running is killed first (no grace).
    fn destroy(&self, container_id: &str) -> BoxFuture<'static, Result<(), ContainerizerError>>;

    /// The containers launched (or recovered) and not yet destroyed.
    fn containers(&self) -> Vec<ContainerInfo>;

    /// Re-attaches to a container that an earlier run of the agent launched,
    /// from its run directory. Its exit arrives through the returned
    /// [`Launched::exit`] (at once if it ended while the agent was down, with
    /// the status the init recorded); [`Containerizer::kill`] and
    /// [`Containerizer::destroy`] work on it as on a launched one. A
    /// container whose launch never released its command ends at once with
    /// a message saying so; a pid that now names another process is never
    /// signalled.
    fn recover(
        &self,
        spec: RecoverSpec,
    ) -> BoxFuture<'static, Result<Launched, ContainerizerError>>;

    /// Kills and removes every container of this agent's that is neither in
    /// `known` nor held by this containerizer (a leftover of an earlier run
    /// that no checkpoint names). Returns the ids removed; each is logged.
    fn remove_orphans(&self, known: &HashSet<String>) -> BoxFuture<'static, Vec<String>>;

    /// The container's resource usage now.
    fn usage(&self, container_id: &str) -> BoxFuture<'static, Result<Usage, ContainerizerError>>;
}

/// Errors of the containerizers. Each variant names the failed operation.
#[derive(Debug, thiserror::Error)]
pub enum ContainerizerError {
    #[error("unknown isolation '{0}' (expected 'linux' or 'posix')")]
    UnknownIsolation(String),
    #[error("linux isolation is unavailable: {0}")]
    LinuxUnavailable(String),
    #[error("invalid container id '{0}': must be one non-empty path component")]
    InvalidContainerId(String),
    #[error("container {0} already exists")]
    ContainerExists(String),
    #[error("unknown container {0}")]
    UnknownContainer(String),
    #[error("invalid launch spec for task {task_id}: {reason}")]
    InvalidSpec { task_id: String, reason: String },
    #[error("failed to open sandbox file {path}: {source}")]
    SandboxFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to create cgroup {path}: {source}")]
    CgroupCreate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to write cgroup file {path}: {source}")]
    CgroupWrite {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to move pid {pid} into cgroup {path}: {source}")]
    CgroupAttach {
        pid: u32,
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to remove cgroup {path}: {source}")]
    CgroupRemove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to spawn task {task_id}: {source}")]
    Spawn {
        task_id: String,
        source: std::io::Error,
    },
    #[error("failed to signal container {container_id}: {source}")]
    Signal {
        container_id: String,
        source: std::io::Error,
    },
    #[error("container {container_id} did not exit after SIGKILL within {waited:?}")]
    KillTimeout {
        container_id: String,
        waited: Duration,
    },
    #[error("docker: {0}")]
    Docker(String),
    #[error("image '{image}': {reason}")]
    Image { image: String, reason: String },
    #[error("this agent runs no Docker containerizer (start it with --containerizers mesos,docker and a Docker daemon)")]
    NoDocker,
    #[error("failed to write the run directory {path}: {source}")]
    RunDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("blocking {operation} task failed: {source}")]
    Blocking {
        operation: &'static str,
        source: tokio::task::JoinError,
    },
}

/// Picks the containerizer for `--isolation`, with default settings.
///
/// `requested`: `Some("linux")` fails when linux isolation is unavailable,
/// `Some("posix")` always works, `None` picks linux when the agent is root
/// and the cgroup hierarchy is writable, else posix with one `warn` line
/// saying why.
pub fn detect(requested: Option<&str>) -> Result<Arc<dyn Containerizer>, ContainerizerError> {
    detect_with_config(requested, LinuxConfig::default())
}

/// [`detect`], with the CFS hard cap (Mesos' `--cgroups_enable_cfs`) on or
/// off for the linux containerizer.
pub fn detect_with(
    requested: Option<&str>,
    cfs_quota: bool,
) -> Result<Arc<dyn Containerizer>, ContainerizerError> {
    detect_with_config(
        requested,
        LinuxConfig {
            cfs_quota,
            ..LinuxConfig::default()
        },
    )
}

/// [`detect`] with every setting of the linux containerizer (the posix one
/// uses its `init_program`).
pub fn detect_with_config(
    requested: Option<&str>,
    config: LinuxConfig,
) -> Result<Arc<dyn Containerizer>, ContainerizerError> {
    let posix = |config: &LinuxConfig| PosixContainerizer::new(config.init_program.clone());
    match requested {
        Some("posix") => Ok(Arc::new(posix(&config))),
        Some("linux") => Ok(Arc::new(LinuxContainerizer::new(config)?)),
        Some("fake") => Ok(Arc::new(FakeContainerizer::new())),
        Some(other) => Err(ContainerizerError::UnknownIsolation(other.to_string())),
        None => match LinuxContainerizer::new(config.clone()) {
            Ok(linux) => Ok(Arc::new(linux)),
            Err(ContainerizerError::LinuxUnavailable(why)) => {
                tracing::warn!("using posix isolation (no namespaces, no cgroup limits): {why}");
                Ok(Arc::new(posix(&config)))
            }
            Err(other) => Err(other),
        },
    }
}

/// Checks that `id` can name a cgroup directory.
pub(crate) fn validate_container_id(id: &str) -> Result<(), ContainerizerError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 200
        && !id.contains(['/', '\0', '\n']);
    if ok {
        Ok(())
    } else {
        Err(ContainerizerError::InvalidContainerId(id.to_string()))
    }
}

/// Checks that the strings of `spec` can travel through `execve`.
pub(crate) fn validate_spec(spec: &LaunchSpec) -> Result<(), ContainerizerError> {
    validate_container_id(&spec.container_id)?;
    let invalid = |reason: String| ContainerizerError::InvalidSpec {
        task_id: spec.task_id.clone(),
        reason,
    };
    if spec.command.contains('\0') {
        return Err(invalid("the command contains a NUL byte".into()));
    }
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            return Err(invalid(format!("invalid environment variable '{key}'")));
        }
    }
    if let Some(hostname) = &spec.hostname {
        if hostname.is_empty() || hostname.len() > 64 || hostname.contains(['\0', '/']) {
            return Err(invalid(format!("invalid hostname '{hostname}'")));
        }
    }
    if spec.run_dir.as_os_str().is_empty() || spec.run_dir.to_str().is_none() {
        return Err(invalid(format!(
            "the run directory {} must be a UTF-8 path",
            spec.run_dir.display()
        )));
    }
    if !spec.cpus.is_finite() || spec.cpus < 0.0 || !spec.mem_mb.is_finite() || spec.mem_mb < 0.0 {
        return Err(invalid(format!(
            "cpus {} and mem {} must be finite and non-negative",
            spec.cpus, spec.mem_mb
        )));
    }
    Ok(())
}

/// Describes a signal as `strsignal(3)` does on Linux, which is what Mesos
/// prints in its termination messages.
pub fn signal_description(signal: i32) -> SignalDescription {
    SignalDescription(signal)
}

/// Display of a signal number, see [`signal_description`].
#[derive(Debug, Clone, Copy)]
pub struct SignalDescription(i32);

impl fmt::Display for SignalDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self.0 {
            libc::SIGHUP => "Hangup",
            libc::SIGINT => "Interrupt",
            libc::SIGQUIT => "Quit",
            libc::SIGILL => "Illegal instruction",
            libc::SIGTRAP => "Trace/breakpoint trap",
            libc::SIGABRT => "Aborted",
            libc::SIGBUS => "Bus error",
            libc::SIGFPE => "Floating point exception",
            libc::SIGKILL => "Killed",
            libc::SIGUSR1 => "User defined signal 1",
            libc::SIGSEGV => "Segmentation fault",
            libc::SIGUSR2 => "User defined signal 2",
            libc::SIGPIPE => "Broken pipe",
            libc::SIGALRM => "Alarm clock",
            libc::SIGTERM => "Terminated",
            libc::SIGCHLD => "Child exited",
            libc::SIGCONT => "Continued",
            libc::SIGSTOP => "Stopped (signal)",
            libc::SIGTSTP => "Stopped",
            libc::SIGTTIN => "Stopped (tty input)",
            libc::SIGTTOU => "Stopped (tty output)",
            libc::SIGXCPU => "CPU time limit exceeded",
            libc::SIGXFSZ => "File size limit exceeded",
            libc::SIGSYS => "Bad system call",
            other => return write!(f, "Unknown signal {other}"),
        };
        f.write_str(text)
    }
}

/// Runs blocking work (fork, cgroupfs, waitpid) on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(operation: &'static str, f: F) -> Result<T, ContainerizerError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| ContainerizerError::Blocking { operation, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            container_id: "c1".into(),
            task_id: "t1".into(),
            command: "true".into(),
            env: vec![("A".into(), "b".into())],
            sandbox: PathBuf::from("/tmp"),
            cpus: 0.1,
            mem_mb: 32.0,
            hostname: None,
            run_dir: PathBuf::from("/tmp/run"),
            user: None,
            docker: None,
            rootfs: None,
        }
    }

    #[test]
    fn container_ids_must_be_one_path_component() {
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(validate_container_id(bad).is_err(), "{bad:?}");
        }
        for good in ["c1", "task.1-abc_x", "4f5e0c4c-5a9e-4b5e"] {
            assert!(validate_container_id(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn specs_with_unpassable_strings_are_refused() {
        assert!(validate_spec(&spec()).is_ok());
        let mut s = spec();
        s.command = "a\0b".into();
        assert!(validate_spec(&s).is_err());
        let mut s = spec();
        s.env.push(("A=B".into(), "x".into()));
        assert!(validate_spec(&s).is_err());
        let mut s = spec();
        s.mem_mb = f64::NAN;
        assert!(validate_spec(&s).is_err());
    }

    #[test]
    fn termination_messages_follow_mesos() {
        assert_eq!(
            Termination::exited(0).message,
            "Command exited with status 0"
        );
        assert_eq!(
            Termination::signaled(9, 1234).message,
            "Command terminated with signal Killed (pid 1234)"
        );
        assert_eq!(signal_description(15).to_string(), "Terminated");
        assert_eq!(signal_description(99).to_string(), "Unknown signal 99");
    }

    #[test]
    fn unknown_isolation_is_refused() {
        assert!(matches!(
            detect(Some("bogus")),
            Err(ContainerizerError::UnknownIsolation(_))
        ));
        let posix = detect(Some("posix")).expect("posix is always available");
        assert_eq!(posix.name(), "posix");
    }
}
