//! The init of a linux container: PID 1 of the task's PID namespace.
//!
//! The linux containerizer clones a child into new PID, mount, UTS and IPC
//! namespaces that immediately execs the agent's own binary as
//!
//! ```text
//! <exe> __task-init --sync-fd N [--status-fd M] --sandbox DIR [--status-file PATH]
//!                   [--hostname NAME] [--namespaces] [--uid U --gid G [--groups G1,G2]]
//!                   [--rootfs DIR --rootfs-scratch DIR] -- COMMAND
//! ```
//!
//! with the task's environment as its environment, stdin on `/dev/null` and
//! stdout/stderr on the sandbox's `stdout`/`stderr` files. [`main`] then:
//!
//! 1. waits for one byte on `--sync-fd`: the agent sends it once the init sits
//!    in the task's cgroups, so the command never runs outside them (EOF
//!    instead means the launch was abandoned: exit without running anything);
//! 2. with `--namespaces` (the init must then be PID 1): makes every mount
//!    private, mounts a fresh `/proc` so the task sees only its own
//!    processes, and sets the hostname; with `--rootfs` (an image's root
//!    filesystem, shared read-only by every container of the image) it
//!    mounts an overlay of it with a writable layer under
//!    `--rootfs-scratch`, the sandbox at `/mnt/mesos/sandbox`, `/proc`,
//!    `/sys` (read-only), a minimal `/dev`, the host's `/etc/resolv.conf`
//!    and `/etc/hosts`, and `pivot_root`s into it;
//! 3. changes into the sandbox and forks `/bin/sh -c COMMAND` with the default
//!    signal mask and dispositions, in a session of its own (as PID 1) or in a
//!    process group of its own inside the init's session (without
//!    namespaces, so that killing the init's session reaches it); with
//!    `--uid`, the child sets its supplementary groups, gid and uid before
//!    the exec, and a failure to do so ends the launch (the command never
//!    runs as the init's user by mistake);
//! 4. forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to every
//!    process of the namespace (`kill(-1, sig)`; without namespaces, to the
//!    command's process group), and reaps every zombie;
//! 5. when the command exits, writes its status (`exit:N`, `signal:N`, or
//!    `error:MESSAGE` if the init itself failed) durably to `--status-file`
//!    (read by an agent that restarted meanwhile) and to `--status-fd` (if
//!    given) and exits with the command's code, or 128 + signal. As PID 1,
//!    its exit makes the kernel kill whatever is left in the namespace.
//!
//! The init is single-threaded (the binary must call [`main`] before starting
//! any runtime), so it may fork freely.

use std::ffi::{CString, OsStr};
use std::fmt;
use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::signal::{kill, killpg, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{
    chdir, execv, fork, getpid, pipe2, read, setgid, setgroups, sethostname, setpgid, setsid,
    setuid, write, ForkResult, Gid, Pid, Uid,
};

use super::TASK_INIT_SUBCOMMAND;

/// Exit code of the init when it fails before the command runs.
pub const INIT_FAILURE_EXIT_CODE: i32 = 125;

/// Signals the init passes on to the task.
const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Who the command runs as, when the init must switch to another user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the user's groups, as `initgroups` would set).
    pub groups: Vec<u32>,
}

/// The command line of the init (after `__task-init`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitArgs {
    /// Read end of the release pipe.
    pub sync_fd: RawFd,
    /// Write end of the status pipe, when the launcher reads one.
    pub status_fd: Option<RawFd>,
    pub sandbox: PathBuf,
    /// Where the status line is also written, for an agent that restarted
    /// while the task ran.
    pub status_file: Option<PathBuf>,
    pub hostname: Option<String>,
    /// Set up the namespaces (mounts, /proc, hostname); requires PID 1.
    pub namespaces: bool,
    /// Switch to this user before exec'ing the command.
    pub user: Option<InitUser>,
    /// Run in this root filesystem (with `--namespaces` only).
    pub rootfs: Option<PathBuf>,
    /// Where the writable layer over `rootfs` lives.
    pub rootfs_scratch: Option<PathBuf>,
    pub command: String,
}

impl InitArgs {
    /// The arguments that follow `__task-init`.
    pub fn to_args(&self) -> Vec<Vec<u8>> {
        let mut args: Vec<Vec<u8>> =
            vec![b"--sync-fd".to_vec(), self.sync_fd.to_string().into_bytes()];
        if let Some(status_fd) = self.status_fd {
            args.push(b"--status-fd".to_vec());
            args.push(status_fd.to_string().into_bytes());
        }
        args.push(b"--sandbox".to_vec());
        args.push(self.sandbox.as_os_str().as_bytes().to_vec());
        if let Some(status_file) = &self.status_file {
            args.push(b"--status-file".to_vec());
            args.push(status_file.as_os_str().as_bytes().to_vec());
        }
        if let Some(hostname) = &self.hostname {
            args.push(b"--hostname".to_vec());
            args.push(hostname.as_bytes().to_vec());
        }
        if self.namespaces {
            args.push(b"--namespaces".to_vec());
        }
        if let Some(user) = &self.user {
            args.push(b"--uid".to_vec());
            args.push(user.uid.to_string().into_bytes());
            args.push(b"--gid".to_vec());
            args.push(user.gid.to_string().into_bytes());
            if !user.groups.is_empty() {
                let groups: Vec<String> = user.groups.iter().map(u32::to_string).collect();
                args.push(b"--groups".to_vec());
                args.push(groups.join(",").into_bytes());
            }
        }
        if let (Some(rootfs), Some(scratch)) = (&self.rootfs, &self.rootfs_scratch) {
            args.push(b"--rootfs".to_vec());
            args.push(rootfs.as_os_str().as_bytes().to_vec());
            args.push(b"--rootfs-scratch".to_vec());
            args.push(scratch.as_os_str().as_bytes().to_vec());
        }
        args.push(b"--".to_vec());
        args.push(self.command.as_bytes().to_vec());
        args
    }

    /// Parses the arguments after `__task-init` (a leading `__task-init` is
    /// skipped too).
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut args = args.iter().peekable();
        if args.peek().map(|a| a.as_str()) == Some(TASK_INIT_SUBCOMMAND) {
            args.next();
        }
        let (mut sync_fd, mut status_fd, mut sandbox, mut hostname) = (None, None, None, None);
        let (mut uid, mut gid, mut groups) = (None, None, Vec::new());
        let mut status_file = None;
        let (mut rootfs, mut rootfs_scratch) = (None, None);
        let mut namespaces = false;
        let mut command = None;
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--sync-fd" => sync_fd = Some(parse_fd("--sync-fd", &value("--sync-fd")?)?),
                "--status-fd" => status_fd = Some(parse_fd("--status-fd", &value("--status-fd")?)?),
                "--sandbox" => sandbox = Some(PathBuf::from(value("--sandbox")?)),
                "--status-file" => status_file = Some(PathBuf::from(value("--status-file")?)),
                "--hostname" => hostname = Some(value("--hostname")?),
                "--namespaces" => namespaces = true,
                "--rootfs" => rootfs = Some(PathBuf::from(value("--rootfs")?)),
                "--rootfs-scratch" => {
                    rootfs_scratch = Some(PathBuf::from(value("--rootfs-scratch")?))
                }
                "--uid" => uid = Some(parse_id("--uid", &value("--uid")?)?),
                "--gid" => gid = Some(parse_id("--gid", &value("--gid")?)?),
                "--groups" => {
                    groups = value("--groups")?
                        .split(',')
                        .filter(|g| !g.is_empty())
                        .map(|g| parse_id("--groups", g))
                        .collect::<Result<_, _>>()?
                }
                "--" => {
                    command = Some(value("--")?);
                    if args.next().is_some() {
                        return Err("exactly one command must follow --".into());
                    }
                }
                other => return Err(format!("unexpected argument '{other}'")),
            }
        }
        let user = match (uid, gid) {
            (Some(uid), Some(gid)) => Some(InitUser { uid, gid, groups }),
            (None, None) if groups.is_empty() => None,
            _ => return Err("--uid and --gid go together (and --groups needs them)".into()),
        };
        if rootfs.is_some() != rootfs_scratch.is_some() {
            return Err("--rootfs and --rootfs-scratch go together".into());
        }
        if rootfs.is_some() && !namespaces {
            return Err("--rootfs needs --namespaces".into());
        }
        Ok(InitArgs {
            rootfs,
            rootfs_scratch,
            sync_fd: sync_fd.ok_or("--sync-fd is required")?,
            status_fd,
            sandbox: sandbox.ok_or("--sandbox is required")?,
            status_file,
            hostname,
            namespaces,
            user,
            command: command.ok_or("a command must follow --")?,
        })
    }
}

fn parse_id(name: &str, value: &str) -> Result<u32, String> {
    value
        .parse::<u32>()
        .map_err(|_| format!("{name} must be a numeric id, got '{value}'"))
}

fn parse_fd(name: &str, value: &str) -> Result<RawFd, String> {
    value
        .parse::<RawFd>()
        .ok()
        .filter(|fd| *fd > 2)
        .ok_or_else(|| format!("{name} must be a file descriptor above 2, got '{value}'"))
}

/// How the command ended, as written to the status pipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandStatus {
    Exited(i32),
    Signaled(i32),
    /// The init failed before or while starting the command.
    InitFailed(String),
}

impl CommandStatus {
    /// The exit code of the init for this status.
    pub fn exit_code(&self) -> i32 {
        match self {
            CommandStatus::Exited(code) => *code,
            CommandStatus::Signaled(signal) => 128 + signal,
            CommandStatus::InitFailed(_) => INIT_FAILURE_EXIT_CODE,
        }
    }

    /// Parses what [`CommandStatus`]'s `Display` wrote.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim_end_matches('\n');
        if let Some(code) = text.strip_prefix("exit:") {
            code.parse().ok().map(CommandStatus::Exited)
        } else if let Some(signal) = text.strip_prefix("signal:") {
            signal.parse().ok().map(CommandStatus::Signaled)
        } else {
            text.strip_prefix("error:")
                .map(|message| CommandStatus::InitFailed(message.to_string()))
        }
    }
}

impl fmt::Display for CommandStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandStatus::Exited(code) => write!(f, "exit:{code}"),
            CommandStatus::Signaled(signal) => write!(f, "signal:{signal}"),
            CommandStatus::InitFailed(message) => write!(f, "error:{}", message.replace('\n', " ")),
        }
    }
}

/// Runs the init; returns its exit code. `args` are the arguments after
/// `__task-init` (see the module documentation). Must be called from a
/// single-threaded process, before any async runtime starts.
pub fn main(args: &[String]) -> i32 {
    let args = match InitArgs::parse(args) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("meseta-init: {message}");
            return INIT_FAILURE_EXIT_CODE;
        }
    };
    // SAFETY: the launcher passed these descriptors to this process for the
    // init alone; nothing else in this process owns them. `take_fd` checks
    // that they are open before taking ownership.
    let sync = match unsafe { take_fd(args.sync_fd) } {
        Ok(sync) => sync,
        Err(e) => {
            eprintln!("meseta-init: {e}");
            return INIT_FAILURE_EXIT_CODE;
        }
    };
    let status = match args.status_fd {
        // SAFETY: as above.
        Some(fd) => match unsafe { take_fd(fd) } {
            Ok(status) => Some(status),
            Err(e) => {
                eprintln!("meseta-init: {e}");
                return INIT_FAILURE_EXIT_CODE;
            }
        },
        None => None,
    };
    let outcome = match wait_for_release(&sync) {
        Ok(true) => {
            drop(sync);
            run(&args).unwrap_or_else(CommandStatus::InitFailed)
        }
        // The agent gave up on this launch: run nothing.
        Ok(false) => CommandStatus::InitFailed("the launch was abandoned by the agent".into()),
        Err(e) => CommandStatus::InitFailed(e),
    };
    if let CommandStatus::InitFailed(message) = &outcome {
        eprintln!("meseta-init: {message}");
    }
    let line = format!("{outcome}\n");
    if let Some(path) = &args.status_file {
        if let Err(e) = write_durably(path, line.as_bytes()) {
            eprintln!("meseta-init: failed to write {}: {e}", path.display());
        }
    }
    // The agent may be gone (EPIPE); the exit code still tells the story.
    if let Some(status) = &status {
        let _ = write_all(status, line.as_bytes());
    }
    outcome.exit_code()
}

/// Writes `bytes` to `path` and syncs it: the status must survive a crash
/// of the host's agent, which reads it after its restart.
fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Takes ownership of an inherited descriptor and keeps it from the command.
///
/// # Safety
/// `fd` must not be owned by anything else in this process.
unsafe fn take_fd(fd: RawFd) -> Result<OwnedFd, String> {
    fcntl_on(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| format!("file descriptor {fd} is not usable: {e}"))?;
    // SAFETY: `fd` is open (checked above) and, per this function's
    // contract, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fcntl_on(fd: RawFd, arg: FcntlArg<'_>) -> nix::Result<libc::c_int> {
    // SAFETY: the borrow lives only for this call; fcntl on a closed
    // descriptor fails with EBADF rather than touching anything else.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, arg)
}

/// True when released, false on EOF (launch abandoned).
fn wait_for_release(sync: &OwnedFd) -> Result<bool, String> {
    let mut byte = [0u8; 1];
    loop {
        match read(sync.as_fd(), &mut byte) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("failed to read the release pipe: {e}")),
        }
    }
}

fn write_all(fd: &OwnedFd, mut bytes: &[u8]) -> nix::Result<()> {
    while !bytes.is_empty() {
        match write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sets up the container, runs the command and waits for it.
fn run(args: &InitArgs) -> Result<CommandStatus, String> {
    let pid1 = getpid() == Pid::from_raw(1);
    if args.namespaces {
        if !pid1 {
            return Err("--namespaces needs the init to be PID 1 of a new PID namespace".into());
        }
        setup_namespaces(args)?;
    }
    let workdir = if args.rootfs.is_some() {
        PathBuf::from(CONTAINER_SANDBOX)
    } else {
        args.sandbox.clone()
    };
    chdir(&workdir)
        .map_err(|e| format!("failed to enter the sandbox {}: {e}", workdir.display()))?;

    let mut waited = SigSet::empty();
    for signal in FORWARDED {
        waited.add(signal);
    }
    waited.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&waited), None)
        .map_err(|e| format!("failed to block signals: {e}"))?;

    let shell = CString::new("/bin/sh").map_err(|e| e.to_string())?;
    let argv = [
        CString::new("sh").map_err(|e| e.to_string())?,
        CString::new("-c").map_err(|e| e.to_string())?,
        CString::new(args.command.as_bytes())
            .map_err(|_| "the command contains a NUL byte".to_string())?,
    ];

    // The child reports a failure before exec (a user it cannot become)
    // here; the pipe closes empty when the exec succeeds.
    let (error_read, error_write) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("failed to create a pipe: {e}"))?;
    let _ = std::io::stdout().flush();
    // SAFETY: the init is single-threaded (its contract), so the child may
    // run any code; it only resets signals, changes identity and execs.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(error_read);
            exec_command(&shell, &argv, pid1, args.user.as_ref(), error_write)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(format!("failed to fork the command: {e}")),
    };
    drop(error_write);
    let mut failure = String::new();
    let _ = std::io::Read::read_to_string(&mut std::fs::File::from(error_read), &mut failure);
    if !failure.is_empty() {
        let _ = nix::sys::wait::waitpid(child, None);
        return Err(failure);
    }

    let status = loop {
        let signal = match waited.wait() {
            Ok(signal) => signal,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("failed to wait for signals: {e}")),
        };
        if signal == Signal::SIGCHLD {
            if let Some(status) = reap(child) {
                break status;
            }
        } else if pid1 {
            // From PID 1, -1 reaches every other process of the namespace.
            let _ = kill(Pid::from_raw(-1), signal);
        } else {
            let _ = killpg(child, signal);
        }
    };
    if !pid1 {
        // Without a namespace to tear down, take the command's session
        // with us.
        let _ = killpg(child, Signal::SIGKILL);
    }
    Ok(status)
}

fn setup_namespaces(args: &InitArgs) -> Result<(), String> {
    // Nothing mounted in here may leak back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("failed to make the mounts private: {e}"))?;
    if let (Some(rootfs), Some(scratch)) = (&args.rootfs, &args.rootfs_scratch) {
        enter_rootfs(rootfs, scratch, &args.sandbox)?;
    } else if let Err(e) = mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        // A /proc of this PID namespace: `ps` sees only the task. Without
        // it the task still runs, seeing the host's processes.
        eprintln!("meseta-init: warning: failed to mount /proc for the task: {e}");
    }
    if let Some(hostname) = &args.hostname {
        sethostname(OsStr::new(hostname))
            .map_err(|e| format!("failed to set the hostname '{hostname}': {e}"))?;
    }
    Ok(())
}

/// Where the sandbox appears inside an image's root filesystem.
const CONTAINER_SANDBOX: &str = "/mnt/mesos/sandbox";

fn mount_error(what: &str, target: &Path, e: Errno) -> String {
    format!("failed to mount {what} at {}: {e}", target.display())
}

/// Builds the container's root from the image's `rootfs` and pivots into
/// it; runs as PID 1 in the container's fresh mount namespace, so nothing
/// of it is visible on the host.
fn enter_rootfs(rootfs: &Path, scratch: &Path, sandbox: &Path) -> Result<(), String> {
    let (upper, work, root) = (
        scratch.join("upper"),
        scratch.join("work"),
        scratch.join("merged"),
    );
    for dir in [&upper, &work, &root] {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        rootfs.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &root,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| mount_error("the image's root filesystem", &root, e))?;
    let inside = |path: &str| root.join(path.trim_start_matches('/'));
    let bind = |source: &Path, target: &Path, flags: MsFlags| {
        mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND | flags,
            None::<&str>,
        )
        .map_err(|e| mount_error(&source.display().to_string(), target, e))
    };
    let sandbox_mount = inside(CONTAINER_SANDBOX);
    std::fs::create_dir_all(&sandbox_mount)
        .map_err(|e| format!("failed to create {}: {e}", sandbox_mount.display()))?;
    bind(sandbox, &sandbox_mount, MsFlags::MS_REC)?;
    let proc_dir = inside("/proc");
    std::fs::create_dir_all(&proc_dir).map_err(|e| e.to_string())?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| mount_error("proc", &proc_dir, e))?;
    let sys = inside("/sys");
    std::fs::create_dir_all(&sys).map_err(|e| e.to_string())?;
    if let Err(e) = bind(Path::new("/sys"), &sys, MsFlags::MS_REC) {
        eprintln!("meseta-init: warning: {e}");
    } else {
        let _ = mount(
            None::<&str>,
            &sys,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        );
    }
    // A minimal /dev: a tmpfs with the usual character devices bound from
    // the host, a private devpts and /dev/shm.
    let dev = inside("/dev");
    std::fs::create_dir_all(&dev).map_err(|e| e.to_string())?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=755"),
    )
    .map_err(|e| mount_error("tmpfs", &dev, e))?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        if std::fs::File::create(&target).is_ok() {
            let _ = bind(&Path::new("/dev").join(node), &target, MsFlags::empty());
        }
    }
    for dir in ["pts", "shm"] {
        let _ = std::fs::create_dir_all(dev.join(dir));
    }
    let _ = mount(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    );
    let _ = std::os::unix::fs::symlink("pts/ptmx", dev.join("ptmx"));
    let _ = mount(
        Some("tmpfs"),
        &dev.join("shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    );
    for file in ["/etc/resolv.conf", "/etc/hosts"] {
        let target = inside(file);
        if Path::new(file).exists() {
            if let Some(parent) = target.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            if !target.exists() {
                let _ = std::fs::File::create(&target);
            }
            let _ = bind(Path::new(file), &target, MsFlags::empty());
        }
    }
    let _ = std::fs::create_dir_all(inside("/tmp"));
    // pivot_root: the old root goes under .meseta-old and is detached.
    let old = inside("/.meseta-old");
    std::fs::create_dir_all(&old).map_err(|e| e.to_string())?;
    nix::unistd::pivot_root(&root, &old)
        .map_err(|e| format!("pivot_root into the image failed: {e}"))?;
    chdir("/").map_err(|e| e.to_string())?;
    nix::mount::umount2("/.meseta-old", nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| format!("failed to detach the host's root: {e}"))?;
    let _ = std::fs::remove_dir("/.meseta-old");
    Ok(())
}

/// In the forked child: become the command, as `user` if given. A failure
/// is written to `error` (close-on-exec, so it closes empty on success) and
/// ends the child with 127.
fn exec_command(
    shell: &CString,
    argv: &[CString],
    own_session: bool,
    user: Option<&InitUser>,
    error: OwnedFd,
) -> ! {
    let fail = |message: String| child_exit(&error, &message);
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    // SAFETY: resetting a disposition to its default installs no handler;
    // the Rust runtime had set SIGPIPE to ignored, which exec would inherit.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if own_session {
        let _ = setsid();
    } else {
        // A group of its own for the forwarded signals, inside the init's
        // session, which the agent kills as a whole.
        let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    }
    if let Some(user) = user {
        let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        if let Err(e) = setgroups(&groups) {
            fail(format!(
                "failed to set the supplementary groups {:?}: {e}",
                user.groups
            ));
        }
        if let Err(e) = setgid(Gid::from_raw(user.gid)) {
            fail(format!("failed to switch to gid {}: {e}", user.gid));
        }
        if let Err(e) = setuid(Uid::from_raw(user.uid)) {
            fail(format!("failed to switch to uid {}: {e}", user.uid));
        }
    }
    let error_text = match execv(shell, argv) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    fail(format!("failed to exec /bin/sh: {error_text}"))
}

/// Reports `message` on the error pipe and ends the forked child.
fn child_exit(error: &OwnedFd, message: &str) -> ! {
    let _ = write_all(error, message.as_bytes());
    // SAFETY: _exit ends this forked child without running the parent's
    // atexit handlers or flushing its copied buffers twice.
    unsafe { libc::_exit(127) }
}

/// Reaps every exited child; returns the command's status once it exited.
fn reap(command: Pid) -> Option<CommandStatus> {
    let mut status = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == command => {
                status = Some(CommandStatus::Exited(code))
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == command => {
                status = Some(CommandStatus::Signaled(signal as i32))
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return status,
            Err(Errno::EINTR) | Ok(_) => continue,
            Err(_) => return status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn args_round_trip() {
        let args = InitArgs {
            sync_fd: 5,
            status_fd: Some(7),
            sandbox: PathBuf::from("/var/lib/meseta/sandbox"),
            status_file: Some(PathBuf::from("/var/lib/meseta/meta/runs/c1/status")),
            hostname: Some("task-host".into()),
            namespaces: true,
            user: Some(InitUser {
                uid: 65534,
                gid: 65534,
                groups: vec![65534, 27],
            }),
            rootfs: Some(PathBuf::from("/var/lib/meseta/agent/images/abc/rootfs")),
            rootfs_scratch: Some(PathBuf::from("/var/lib/meseta/agent/meta/runs/c1/rootfs")),
            command: "echo hi -- there; exit 3".into(),
        };
        let encoded: Vec<String> = args
            .to_args()
            .into_iter()
            .map(|a| String::from_utf8(a).expect("utf-8"))
            .collect();
        assert_eq!(InitArgs::parse(&encoded), Ok(args.clone()));
        let mut with_subcommand = vec![TASK_INIT_SUBCOMMAND.to_string()];
        with_subcommand.extend(encoded);
        assert_eq!(InitArgs::parse(&with_subcommand), Ok(args.clone()));
        let minimal = InitArgs {
            status_fd: None,
            status_file: None,
            hostname: None,
            namespaces: false,
            user: None,
            rootfs: None,
            rootfs_scratch: None,
            ..args
        };
        let encoded: Vec<String> = minimal
            .to_args()
            .into_iter()
            .map(|a| String::from_utf8(a).expect("utf-8"))
            .collect();
        assert_eq!(InitArgs::parse(&encoded), Ok(minimal));
    }

    #[test]
    fn bad_args_are_refused() {
        assert!(InitArgs::parse(&strings(&[
            "--sync-fd",
            "3",
            "--status-fd",
            "4",
            "--sandbox",
            "/x"
        ]))
        .is_err());
        assert!(InitArgs::parse(&strings(&[
            "--sync-fd",
            "1",
            "--status-fd",
            "4",
            "--sandbox",
            "/x",
            "--",
            "true"
        ]))
        .is_err());
        assert!(InitArgs::parse(&strings(&["--bogus"])).is_err());
        // A uid without a gid could leave the command in root's group.
        assert!(InitArgs::parse(&strings(&[
            "--sync-fd",
            "3",
            "--sandbox",
            "/x",
            "--uid",
            "65534",
            "--",
            "true"
        ]))
        .is_err());
        assert!(InitArgs::parse(&strings(&[
            "--sync-fd",
            "3",
            "--status-fd",
            "4",
            "--sandbox",
            "/x",
            "--",
            "a",
            "b"
        ]))
        .is_err());
    }

    #[test]
    fn command_status_round_trips() {
        for status in [
            CommandStatus::Exited(0),
            CommandStatus::Exited(3),
            CommandStatus::Signaled(9),
            CommandStatus::InitFailed("failed to enter the sandbox /x: ENOENT".into()),
        ] {
            assert_eq!(CommandStatus::parse(&format!("{status}\n")), Some(status));
        }
        assert_eq!(CommandStatus::Signaled(15).exit_code(), 143);
        assert_eq!(CommandStatus::parse("garbage"), None);
    }

    #[test]
    fn main_refuses_bad_args_without_running_anything() {
        assert_eq!(main(&strings(&["--nonsense"])), INIT_FAILURE_EXIT_CODE);
    }
}
