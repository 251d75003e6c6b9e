//! What this host offers, detected as Mesos does, overridable per name with
//! `--resources`.

use std::path::Path;

use meseta_core::{Resource, Resources};

use crate::AgentError;

/// Mesos' default port range.
pub const DEFAULT_PORTS: (u64, u64) = (31000, 32000);

/// Detected cpus, mem, disk and ports, with every resource named in
/// `overrides` replacing the detected one of that name.
pub fn detect(work_dir: &Path, overrides: Option<&str>) -> Result<Resources, AgentError> {
    let given = match overrides {
        Some(text) => Resources::parse(text)?,
        None => Resources::new(),
    };
    let named = |name: &str| given.iter().any(|r| r.name == name);
    let mut total = given.clone();
    if !named("cpus") {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        total.add(Resource::scalar("cpus", cpus as f64))?;
    }
    if !named("mem") {
        total.add(Resource::scalar(
            "mem",
            usable(mem_total_mb().unwrap_or(1024.0), 1024.0),
        ))?;
    }
    if !named("disk") {
        total.add(Resource::scalar(
            "disk",
            usable(disk_total_mb(work_dir).unwrap_or(1024.0), 5120.0),
        ))?;
    }
    if !named("ports") {
        total.add(Resource::ranges("ports", &[DEFAULT_PORTS]))?;
    }
    Ok(total)
}

/// Mesos leaves some for the host: `reserve` MB, or half when the total is
/// under twice that.
fn usable(total_mb: f64, reserve_mb: f64) -> f64 {
    if total_mb >= 2.0 * reserve_mb {
        (total_mb - reserve_mb).floor()
    } else {
        (total_mb / 2.0).floor()
    }
}

fn mem_total_mb() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn disk_total_mb(path: &Path) -> Option<f64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks() as f64 * st.fragment_size() as f64 / (1024.0 * 1024.0))
}

/// This host's name, as Mesos reports it; `127.0.0.1` when the name does
/// not resolve (so task addresses stay usable on a laptop).
pub fn hostname() -> String {
    use std::net::ToSocketAddrs;
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| {
            (h.as_str(), 0u16)
                .to_socket_addrs()
                .is_ok_and(|mut a| a.next().is_some())
        })
        .unwrap_or_else(|| "127.0.0.1".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_and_overrides() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = detect(dir.path(), None).expect("detects");
        assert!(r.scalar("cpus") >= 1.0);
        assert!(r.scalar("mem") > 0.0);
        assert_eq!(r.ranges("ports"), vec![DEFAULT_PORTS]);
        let o = detect(
            dir.path(),
            Some("cpus:2;mem:2048;disk:1000;ports:[31000-31100]"),
        )
        .expect("valid");
        assert_eq!(o.scalar("cpus"), 2.0);
        assert_eq!(o.scalar("mem"), 2048.0);
        assert_eq!(o.ranges("ports"), vec![(31000, 31100)]);
        let partial = detect(dir.path(), Some("cpus(slave_public):1")).expect("valid");
        assert_eq!(partial.filter_roles(&["slave_public"]).scalar("cpus"), 1.0);
        assert!(partial.filter_roles(&["*"]).scalar("mem") > 0.0);
        assert!(detect(dir.path(), Some("cpus:lots")).is_err());
    }

    #[test]
    fn leaves_room_for_the_host() {
        assert_eq!(usable(8192.0, 1024.0), 7168.0);
        assert_eq!(usable(1000.0, 1024.0), 500.0);
    }
}
