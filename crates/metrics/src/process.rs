//! Prometheus' standard process metrics for this process, read from
//! `/proc/self` at scrape time (the names of the Go and Python clients'
//! process collectors, so existing dashboards work).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
/// `process_start_time_seconds`, `process_threads`. A value that cannot be
/// read (not Linux, `/proc` not mounted) is left out rather than shown as 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessCollector;

/// What `/proc/self/stat` says, in Prometheus' units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProcStat {
    pub cpu_seconds: f64,
    pub threads: i64,
    /// Seconds since the Unix epoch.
    pub start_time: f64,
    pub virtual_bytes: i64,
    pub resident_bytes: i64,
}

fn sysconf(name: libc::c_int) -> Option<i64> {
    // SAFETY: sysconf has no preconditions; it reads a system constant.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v)
}

/// Parses `/proc/self/stat` (`stat`) with the boot time from `/proc/stat`
/// (`btime`), clock ticks per second and the page size.
pub(crate) fn parse_stat(stat: &str, boot_time: f64, ticks: f64, page: i64) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state) of proc(5).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    Some(ProcStat {
        cpu_seconds: (field(14)? + field(15)?) / ticks,
        threads: field(20)? as i64,
        start_time: boot_time + field(22)? / ticks,
        virtual_bytes: field(23)? as i64,
        resident_bytes: field(24)? as i64 * page,
    })
}

fn boot_time() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn read_stat() -> Option<ProcStat> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let ticks = sysconf(libc::_SC_CLK_TCK)? as f64;
    let page = sysconf(libc::_SC_PAGESIZE)?;
    parse_stat(&stat, boot_time()?, ticks, page)
}

fn open_fds() -> Option<i64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as i64)
}

fn max_fds() -> Option<i64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some(limit.rlim_cur as i64)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut gauge = |name: &str, help: &str, value: i64| -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(value);
            let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(m)
        };
        if let Some(n) = open_fds() {
            gauge("process_open_fds", "Number of open file descriptors", n)?;
        }
        if let Some(n) = max_fds() {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors",
                n,
            )?;
        }
        let Some(stat) = read_stat() else {
            return Ok(());
        };
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            stat.resident_bytes,
        )?;
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            stat.virtual_bytes,
        )?;
        gauge("process_threads", "Number of OS threads", stat.threads)?;
        let start = ConstGauge::new(stat.start_time);
        let m = encoder.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            None,
            start.metric_type(),
        )?;
        start.encode(m)?;
        let cpu = ConstCounter::new(stat.cpu_seconds);
        let m = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?;
        cpu.encode(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        // A command name with a space and a parenthesis, as proc(5) allows.
        let stat = "4242 (meseta (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 150 0 0 20 0 7 0 12345 104857600 2560 18446744073709551615";
        let s = parse_stat(stat, 1_700_000_000.0, 100.0, 4096).expect("parses");
        assert_eq!(s.cpu_seconds, 4.0);
        assert_eq!(s.threads, 7);
        assert_eq!(s.start_time, 1_700_000_123.45);
        assert_eq!(s.virtual_bytes, 104_857_600);
        assert_eq!(s.resident_bytes, 2560 * 4096);
    }

    #[test]
    fn this_process_is_readable() {
        let s = read_stat().expect("/proc/self/stat is readable on Linux");
        assert!(s.resident_bytes > 0 && s.threads >= 1 && s.start_time > 1.0e9);
        assert!(open_fds().is_some_and(|n| n > 0));
    }
}
