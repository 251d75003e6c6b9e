//! Real processes, read from `/proc`: what a task really started, under
//! which parent, in which cgroups and namespaces.
//!
//! Processes come and go while they are read; one that vanished midway is
//! simply left out. A zombie (state `Z`) counts as gone: its code no longer
//! runs, only its exit status waits to be reaped.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One process, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    /// `R`, `S`, `D`, `Z`, …
    pub state: char,
    /// Start time in clock ticks since boot: with `pid`, identifies the
    /// process even after its pid is reused.
    pub start_time: u64,
    pub comm: String,
}

impl Process {
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }

    /// The command line, or empty if the process is gone (or a zombie).
    pub fn cmdline(&self) -> Vec<String> {
        cmdline(self.pid)
    }
}

/// Reads `/proc/<pid>/stat`.
pub fn process(pid: i32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so
    // split at the last `)`.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // rest[0] = state (field 3), rest[1] = ppid (4), rest[19] = starttime (22).
    Some(Process {
        pid,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
        comm,
    })
}

/// Every process readable now.
pub fn processes() -> Vec<Process> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter_map(process)
        .collect()
}

/// The live (non-zombie) descendants of `root`, not including it.
pub fn descendants(root: i32) -> Vec<Process> {
    let all = processes();
    let mut children: HashMap<i32, Vec<&Process>> = HashMap::new();
    for p in &all {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for c in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(c.pid) {
                stack.push(c.pid);
                if !c.is_zombie() {
                    out.push((*c).clone());
                }
            }
        }
    }
    out
}

/// The command line of `pid` as its arguments; empty if gone.
pub fn cmdline(pid: i32) -> Vec<String> {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(raw) => raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Whether the process `p` (same pid *and* start time) still runs.
pub fn still_running(p: &Process) -> bool {
    process(p.pid).is_some_and(|now| now.start_time == p.start_time && !now.is_zombie())
}

/// Whether `pid` exists and is not a zombie.
pub fn pid_running(pid: i32) -> bool {
    process(pid).is_some_and(|p| !p.is_zombie())
}

/// The cgroup of `pid` in the v1 hierarchy that has `controller`
/// (e.g. `memory`), or in the v2 hierarchy when `controller` is empty.
/// The path is relative to the hierarchy's root, e.g. `/meseta/<id>`.
pub fn cgroup(pid: i32, controller: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        let hit = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        hit.then(|| path.to_string())
    })
}

/// The directory of `pid`'s memory cgroup and the name of its limit file:
/// `memory.limit_in_bytes` under cgroup v1, `memory.max` under v2.
pub fn memory_limit_file(pid: i32) -> Option<PathBuf> {
    if let Some(path) = cgroup(pid, "memory").filter(|p| p != "/") {
        return Some(
            Path::new("/sys/fs/cgroup/memory")
                .join(path.trim_start_matches('/'))
                .join("memory.limit_in_bytes"),
        );
    }
    let path = cgroup(pid, "")?;
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(|root| {
            Path::new(root)
                .join(path.trim_start_matches('/'))
                .join("memory.max")
        })
        .find(|f| f.exists())
}

/// The namespace `kind` (`pid`, `mnt`, `uts`, `ipc`, `net`) of `pid`, as the
/// kernel names it (`pid:[4026531836]`).
pub fn namespace(pid: i32, kind: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Sends `signal` to `pid`; errors (already gone) are ignored.
pub fn signal(pid: i32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid), signal);
}
