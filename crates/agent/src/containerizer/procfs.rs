//! What the agent reads of processes from `/proc`: a process's start time
//! (which, with its pid, names it even after the pid is reused), its session
//! and its cpu and memory use.

use std::path::Path;

/// One line of `/proc/<pid>/stat`, the fields the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    pub pid: u32,
    /// `R`, `S`, `D`, `Z`, …
    pub state: char,
    pub ppid: u32,
    pub session: u32,
    /// User and system time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Start time in clock ticks after boot.
    pub start_time: u64,
    /// Resident set size in pages.
    pub rss_pages: u64,
}

impl Stat {
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses the text of `/proc/<pid>/stat`. The command name may hold spaces
/// and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(pid: u32, text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 of proc(5).
    let field = |n: usize| fields.get(n - 3).copied();
    let number = |n: usize| field(n)?.parse::<u64>().ok();
    Some(Stat {
        pid,
        state: field(3)?.chars().next()?,
        ppid: u32::try_from(number(4)?).ok()?,
        session: u32::try_from(number(6)?).ok()?,
        utime: number(14)?,
        stime: number(15)?,
        start_time: number(22)?,
        rss_pages: number(24)?,
    })
}

/// `/proc/<pid>/stat`, or None when the process is gone.
pub(crate) fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// The start time of a live (non-zombie) process `pid`.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    stat(pid).filter(|s| !s.is_zombie()).map(|s| s.start_time)
}

/// Every live process of session `session` (its leader included).
pub(crate) fn session_members(session: u32) -> Vec<Stat> {
    let Ok(entries) = std::fs::read_dir(Path::new("/proc")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .filter(|s| s.session == session && !s.is_zombie())
        .collect()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub(crate) fn ticks_per_second() -> f64 {
    // SAFETY: sysconf takes an integer name and touches no memory.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The size of a memory page in bytes.
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf takes an integer name and touches no memory.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = "4242 (we ird) (name)) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    7 3 0 0 20 0 1 0 98765 1000000 250 18446744073709551615";
        let s = parse_stat(4242, line).expect("parses");
        assert_eq!(s.state, 'S');
        assert_eq!((s.ppid, s.session), (1, 4242));
        assert_eq!((s.utime, s.stime), (7, 3));
        assert_eq!(s.start_time, 98765);
        assert_eq!(s.rss_pages, 250);
        assert!(parse_stat(1, "garbage").is_none());
    }

    #[test]
    fn this_process_has_a_start_time() {
        let me = std::process::id();
        let started = start_time(me).expect("we are alive");
        assert_eq!(stat(me).map(|s| s.start_time), Some(started));
        assert!(ticks_per_second() > 0.0);
    }
}
