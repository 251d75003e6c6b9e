//! Process file descriptors (Linux 5.3+): a handle on one process that can
//! be signalled and waited on without the risk of hitting another process
//! that reused its pid.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How often a pidfd that cannot join the reactor is checked.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// A pidfd for `pid`, or None (no such process, or a kernel without
/// pidfds).
pub(crate) fn open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just created this descriptor for us alone.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)`; `None` only checks that the process exists.
pub(crate) fn send_signal(pidfd: &OwnedFd, signal: Option<Signal>) -> nix::Result<()> {
    let signal = signal.map_or(0, |s| s as libc::c_int);
    // SAFETY: a plain system call on a descriptor we own, with a null
    // siginfo (the kernel then fills in a kill(2)-like one) and no flags.
    let result = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if result < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Resolves when the process has exited (it may still be a zombie; this
/// does not reap). Returns the descriptor if the reactor could not watch it,
/// so that a parent can fall back to `waitid`; `polled_fallback` instead
/// makes it poll until the process is gone, for non-children.
pub(crate) async fn wait_exit_fd(pidfd: OwnedFd, polled_fallback: bool) -> Option<OwnedFd> {
    // SAFETY: an OwnedFd is a valid open descriptor that stays open and
    // keeps its number for as long as the AsyncFd owns it.
    let pidfd = match unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) } {
        Ok(registered) => {
            // A pidfd turns readable when its process exits.
            if registered.readable().await.is_ok() {
                return None;
            }
            registered.into_inner()
        }
        Err(e) => e.into_parts().0,
    };
    if !polled_fallback {
        return Some(pidfd);
    }
    while send_signal(&pidfd, None).is_ok() {
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    None
}

/// How the supervisor learns that the init exited.
pub(crate) enum ExitWatch {
    /// A pidfd of the init; `child` when we are its parent.
    Pidfd {
        pidfd: OwnedFd,
        pid: Pid,
        child: bool,
    },
    /// Our child, on a kernel without pidfds: a blocking `waitid`.
    Waitid(Pid),
    /// Already gone (found so at recovery).
    Gone,
}

/// Resolves when the watched process has exited, without reaping it.
pub(crate) async fn wait_exit(watch: ExitWatch) {
    match watch {
        ExitWatch::Gone => {}
        ExitWatch::Waitid(pid) => wait_child(pid).await,
        ExitWatch::Pidfd { pidfd, pid, child } => {
            if wait_exit_fd(pidfd, !child).await.is_some() {
                wait_child(pid).await;
            }
        }
    }
}

/// Parks a blocking thread until our child `pid` exits (without reaping).
async fn wait_child(pid: Pid) {
    let _ = tokio::task::spawn_blocking(move || {
        while let Err(Errno::EINTR) =
            waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
        {}
    })
    .await;
}
