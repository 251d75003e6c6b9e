//! A container's run directory: the files that let an agent that restarted
//! find the container again and learn how it ended, outside the sandbox so
//! that the task cannot forge them.
//!
//! - `pid`: `PID START_TIME` of the container's init, written durably by the
//!   containerizer *before* it releases the init. An init that was never
//!   released exits by itself when the release pipe closes, so a container
//!   without this file never ran its command.
//! - `status`: the command's status, written durably by the init when the
//!   command ends (see [`super::init`]).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;

use super::{pidfd, procfs};

const PID_FILE: &str = "pid";
const STATUS_FILE: &str = "status";

/// Where the init writes the command's status.
pub(crate) fn status_file(run_dir: &Path) -> PathBuf {
    run_dir.join(STATUS_FILE)
}

/// Records the init's pid and start time, durably (write, sync, rename, sync
/// the directory).
pub(crate) fn write_pid(run_dir: &Path, pid: u32, start_time: u64) -> io::Result<()> {
    let tmp = run_dir.join(".pid.tmp");
    let mut file = File::create(&tmp)?;
    writeln!(file, "{pid} {start_time}")?;
    file.sync_all()?;
    fs::rename(&tmp, run_dir.join(PID_FILE))?;
    File::open(run_dir)?.sync_all()
}

/// The recorded `(pid, start time)`, if a launch got that far.
pub(crate) fn read_pid(run_dir: &Path) -> Option<(u32, u64)> {
    let text = fs::read_to_string(run_dir.join(PID_FILE)).ok()?;
    let mut words = text.split_whitespace();
    let pid = words.next()?.parse::<u32>().ok().filter(|p| *p > 0)?;
    let start_time = words.next()?.parse::<u64>().ok()?;
    Some((pid, start_time))
}

/// What recovery finds of a container's init.
#[derive(Debug)]
pub(crate) enum Found {
    /// Still running; the pidfd names the init itself (it was opened before
    /// the start time was checked, so a reused pid cannot pass).
    Alive { pid: u32, pidfd: OwnedFd },
    /// It ran and is gone (or its pid now names another process).
    Gone { pid: u32 },
    /// The launch never released the init: the command never ran.
    NeverStarted,
}

/// Finds the init recorded in `run_dir`.
pub(crate) fn find(run_dir: &Path) -> Found {
    let Some((pid, start_time)) = read_pid(run_dir) else {
        return Found::NeverStarted;
    };
    let Ok(raw) = i32::try_from(pid) else {
        return Found::Gone { pid };
    };
    match pidfd::open(Pid::from_raw(raw)) {
        Some(pidfd) if procfs::start_time(pid) == Some(start_time) => Found::Alive { pid, pidfd },
        _ => Found::Gone { pid },
    }
}

/// The command's status as the init wrote it, if it did.
pub(crate) fn read_status(run_dir: &Path) -> Option<String> {
    fs::read_to_string(status_file(run_dir))
        .ok()
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_live_process_is_found_and_a_reused_pid_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(find(dir.path()), Found::NeverStarted));
        let me = std::process::id();
        let started = procfs::start_time(me).expect("alive");
        write_pid(dir.path(), me, started).expect("written");
        assert_eq!(read_pid(dir.path()), Some((me, started)));
        assert!(matches!(find(dir.path()), Found::Alive { pid, .. } if pid == me));
        // Same pid, another start time: another process.
        write_pid(dir.path(), me, started + 1).expect("written");
        assert!(matches!(find(dir.path()), Found::Gone { pid } if pid == me));
        std::fs::write(dir.path().join(PID_FILE), "0 5\n").expect("written");
        assert!(matches!(find(dir.path()), Found::NeverStarted));
    }
}
