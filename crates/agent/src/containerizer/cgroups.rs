//! The task cgroups of the linux containerizer, on top of `cgroups-rs`.
//!
//! Layout (Mesos' `--cgroups_root`): one cgroup `<root>/<container_id>` per
//! container, where `<root>` (default `meseta`) is relative to the root of
//! each hierarchy:
//!
//! - cgroup v1: `<mount>/<root>/<container_id>` under the `cpu` and `memory`
//!   hierarchies, and `cpuacct`/`pids` when mounted;
//! - cgroup v2 (pure unified host, `/sys/fs/cgroup/cgroup.controllers`
//!   exists): one directory `/sys/fs/cgroup/<root>/<container_id>`, with
//!   `cpu`, `memory` (and `pids`) enabled in the `cgroup.subtree_control` of
//!   its ancestors.
//!
//! Directory creation and the v2 `subtree_control` writes are done here, so
//! that every failure carries its path; limits, membership and listing go
//! through `cgroups-rs`. Every function here blocks on cgroupfs: call them
//! from a blocking thread.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::cpu::CpuController;
use cgroups_rs::hierarchies::{self, V1};
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use cgroups_rs::{Cgroup, CgroupPid, Controllers, MaxValue};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{access, AccessFlags, Pid};

use super::ContainerizerError;

/// `cpu.shares` per requested cpu (Mesos' `CPU_SHARES_PER_CPU`).
pub(crate) const CPU_SHARES_PER_CPU: f64 = 1024.0;
/// Lowest `cpu.shares` the kernel accepts (Mesos' `MIN_CPU_SHARES`).
pub(crate) const MIN_CPU_SHARES: u64 = 2;
/// CFS period when the hard cap is on (Mesos' `CPU_CFS_PERIOD`).
pub(crate) const CFS_PERIOD_US: u64 = 100_000;
/// Lowest CFS quota (Mesos' `MIN_CPU_CFS_QUOTA`).
pub(crate) const MIN_CFS_QUOTA_US: i64 = 1_000;
/// Lowest memory limit (Mesos' `MIN_MEMORY`): below it the init itself may
/// not fit.
pub(crate) const MIN_MEMORY_MB: f64 = 32.0;

/// The resource limits of one container.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Limits {
    pub cpus: f64,
    pub mem_mb: f64,
    /// Hard CPU cap with the CFS quota, on top of the shares.
    pub cfs_quota: bool,
    /// `pids.max`: at most this many processes and threads in the
    /// container (None: no limit, or no pids controller).
    pub pids_max: Option<u64>,
}

impl Limits {
    /// v1 `cpu.shares`: `max(2, cpus * 1024)`.
    pub fn cpu_shares(&self) -> u64 {
        ((self.cpus * CPU_SHARES_PER_CPU) as u64).max(MIN_CPU_SHARES)
    }

    /// v2 `cpu.weight` for the same shares, mapped as runc and systemd do
    /// (`[2, 262144]` onto `[1, 10000]`).
    pub fn cpu_weight(&self) -> u64 {
        let shares = self.cpu_shares().min(262_144);
        1 + ((shares - 2) * 9_999) / 262_142
    }

    /// The CFS quota per [`CFS_PERIOD_US`].
    pub fn cfs_quota_us(&self) -> i64 {
        ((self.cpus * CFS_PERIOD_US as f64) as i64).max(MIN_CFS_QUOTA_US)
    }

    /// The memory limit in bytes: `mem_mb` MiB, at least [`MIN_MEMORY_MB`].
    pub fn memory_bytes(&self) -> i64 {
        (self.mem_mb.max(MIN_MEMORY_MB) * 1024.0 * 1024.0) as i64
    }
}

/// Where task cgroups go on this host.
#[derive(Debug, Clone)]
pub(crate) struct CgroupRoot {
    v2: bool,
    /// Relative to each hierarchy's root, no leading `/`.
    root: String,
    /// v1: (controller, mount point) of each hierarchy used; v2: one entry
    /// ("unified", mount point).
    mounts: Vec<(String, PathBuf)>,
    /// Controller names as `cgroups-rs` knows them.
    controllers: Vec<String>,
}

impl CgroupRoot {
    /// Finds the hierarchies (v2 when the host is purely unified, else v1)
    /// and checks that the cpu and memory controllers are there. Touches
    /// nothing; see [`CgroupRoot::prepare`].
    pub fn detect(root: &str) -> Result<Self, String> {
        let root = root.trim_matches('/').to_string();
        if root.is_empty()
            || root
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(format!("invalid cgroups root '{root}'"));
        }
        if hierarchies::is_cgroup2_unified_mode() {
            let mount = PathBuf::from(hierarchies::UNIFIED_MOUNTPOINT);
            let available = fs::read_to_string(mount.join("cgroup.controllers")).map_err(|e| {
                format!(
                    "cannot read {}: {e}",
                    mount.join("cgroup.controllers").display()
                )
            })?;
            let available: Vec<&str> = available.split_whitespace().collect();
            let mut controllers = Vec::new();
            for (name, required) in [("cpu", true), ("memory", true), ("pids", false)] {
                if available.contains(&name) {
                    controllers.push(name.to_string());
                } else if required {
                    return Err(format!(
                        "the cgroup v2 '{name}' controller is not available"
                    ));
                }
            }
            Ok(CgroupRoot {
                v2: true,
                root,
                mounts: vec![("unified".to_string(), mount)],
                controllers,
            })
        } else {
            let v1 = V1::new();
            let mut mounts = Vec::new();
            for (controller, required) in [
                (Controllers::Cpu, true),
                (Controllers::Mem, true),
                (Controllers::CpuAcct, false),
                (Controllers::Pids, false),
            ] {
                match v1.get_mount_point(controller.clone()) {
                    Some(mount) => mounts.push((controller.to_string(), mount)),
                    None if required => {
                        return Err(format!(
                            "the cgroup v1 '{controller}' hierarchy is not mounted"
                        ))
                    }
                    None => {}
                }
            }
            let controllers = mounts.iter().map(|(name, _)| name.clone()).collect();
            Ok(CgroupRoot {
                v2: false,
                root,
                mounts,
                controllers,
            })
        }
    }

    pub fn is_v2(&self) -> bool {
        self.v2
    }

    /// Whether the pids controller is attached (it is optional).
    pub fn has_pids(&self) -> bool {
        self.controllers.iter().any(|c| c == "pids")
    }

    /// The ids of the containers whose cgroups exist under the root, in any
    /// hierarchy used.
    pub fn container_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .mounts
            .iter()
            .filter_map(|(_, mount)| fs::read_dir(mount.join(&self.root)).ok())
            .flat_map(|entries| entries.filter_map(|e| e.ok()))
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Creates `<root>` in every hierarchy used and, on v2, enables the
    /// controllers for its children. Fails when the hierarchy is not
    /// writable.
    pub fn prepare(&self) -> Result<(), ContainerizerError> {
        for (_, mount) in &self.mounts {
            let dir = mount.join(&self.root);
            fs::create_dir_all(&dir).map_err(|source| ContainerizerError::CgroupCreate {
                path: dir.clone(),
                source,
            })?;
            access(&dir, AccessFlags::W_OK).map_err(|errno| ContainerizerError::CgroupCreate {
                path: dir.clone(),
                source: io::Error::from(errno),
            })?;
        }
        if self.v2 {
            let mount = &self.mounts[0].1;
            // Every ancestor from the hierarchy root down to `<root>` must
            // hand the controllers to its children.
            let mut dir = mount.clone();
            enable_controllers(&dir, &self.controllers)?;
            for component in self.root.split('/') {
                dir.push(component);
                enable_controllers(&dir, &self.controllers)?;
            }
        }
        Ok(())
    }

    fn relative(&self, container_id: &str) -> String {
        format!("{}/{}", self.root, container_id)
    }

    fn dirs(&self, container_id: &str) -> Vec<PathBuf> {
        let rel = self.relative(container_id);
        self.mounts
            .iter()
            .map(|(_, mount)| mount.join(&rel))
            .collect()
    }

    /// Creates the cgroup of `container_id` and applies `limits`. On error
    /// nothing is left behind.
    pub fn create(
        &self,
        container_id: &str,
        limits: Limits,
    ) -> Result<TaskCgroup, ContainerizerError> {
        // EEXIST is an error too: the id is in use (or a leftover of a
        // previous agent), and that cgroup is not ours to touch.
        let mut created = Vec::new();
        for dir in self.dirs(container_id) {
            if let Err(source) = fs::create_dir(&dir) {
                remove_dirs(&created);
                return Err(ContainerizerError::CgroupCreate { path: dir, source });
            }
            created.push(dir);
        }
        let cgroup = self.load(container_id);
        if let Err(e) = cgroup.apply(limits) {
            remove_dirs(&created);
            return Err(e);
        }
        Ok(cgroup)
    }

    /// A handle on the (existing) cgroup of `container_id`.
    pub fn load(&self, container_id: &str) -> TaskCgroup {
        let rel = self.relative(container_id);
        let cgroup = Cgroup::load_with_specified_controllers(
            hierarchies::auto(),
            &rel,
            self.controllers.clone(),
        );
        let dirs = self.dirs(container_id);
        let memory_dir = if self.v2 {
            dirs[0].clone()
        } else {
            self.mounts
                .iter()
                .find(|(name, _)| name == "memory")
                .map(|(_, mount)| mount.join(&rel))
                .unwrap_or_else(|| dirs[0].clone())
        };
        TaskCgroup {
            cgroup,
            v2: self.v2,
            dirs,
            memory_dir,
        }
    }
}

fn enable_controllers(dir: &Path, controllers: &[String]) -> Result<(), ContainerizerError> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&file).map_err(|source| ContainerizerError::CgroupWrite {
        path: file.clone(),
        source: Box::new(source),
    })?;
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    for controller in controllers {
        if enabled.contains(&controller.as_str()) {
            continue;
        }
        fs::write(&file, format!("+{controller}")).map_err(|source| {
            ContainerizerError::CgroupWrite {
                path: file.clone(),
                source: Box::new(source),
            }
        })?;
    }
    Ok(())
}

fn remove_dirs(dirs: &[PathBuf]) {
    for dir in dirs {
        if let Err(e) = fs::remove_dir(dir) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %dir.display(), error = %e, "failed to remove cgroup");
            }
        }
    }
}

/// The cgroup of one container.
#[derive(Debug)]
pub(crate) struct TaskCgroup {
    cgroup: Cgroup,
    v2: bool,
    dirs: Vec<PathBuf>,
    memory_dir: PathBuf,
}

impl TaskCgroup {
    /// The directories of this cgroup, one per hierarchy.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    fn apply(&self, limits: Limits) -> Result<(), ContainerizerError> {
        let write_error =
            |file: &str, source: cgroups_rs::error::Error| ContainerizerError::CgroupWrite {
                path: self.dir_of(file).join(file),
                source: Box::new(source),
            };
        let cpu: &CpuController = self
            .cgroup
            .controller_of()
            .ok_or_else(|| missing("cpu", &self.dirs))?;
        if self.v2 {
            cpu.set_shares(limits.cpu_weight())
                .map_err(|e| write_error("cpu.weight", e))?;
        } else {
            cpu.set_shares(limits.cpu_shares())
                .map_err(|e| write_error("cpu.shares", e))?;
        }
        if limits.cfs_quota {
            cpu.set_cfs_quota_and_period(Some(limits.cfs_quota_us()), Some(CFS_PERIOD_US))
                .map_err(|e| {
                    write_error(
                        if self.v2 {
                            "cpu.max"
                        } else {
                            "cpu.cfs_quota_us"
                        },
                        e,
                    )
                })?;
        }

        let memory: &MemController = self
            .cgroup
            .controller_of()
            .ok_or_else(|| missing("memory", &self.dirs))?;
        let bytes = limits.memory_bytes();
        if self.v2 {
            memory
                .set_limit(bytes)
                .map_err(|e| write_error("memory.max", e))?;
            // No swap: the limit is the limit.
            if self.memory_dir.join("memory.swap.max").exists() {
                memory
                    .set_memswap_limit(0)
                    .map_err(|e| write_error("memory.swap.max", e))?;
            }
        } else {
            memory
                .set_limit(bytes)
                .map_err(|e| write_error("memory.limit_in_bytes", e))?;
            // memory+swap equal to memory: no swap either (present only
            // with swap accounting on).
            if self.memory_dir.join("memory.memsw.limit_in_bytes").exists() {
                memory
                    .set_memswap_limit(bytes)
                    .map_err(|e| write_error("memory.memsw.limit_in_bytes", e))?;
            }
        }
        if let Some(max) = limits.pids_max {
            if let Some(pids) = self.cgroup.controller_of::<PidController>() {
                pids.set_pid_max(MaxValue::Value(i64::try_from(max).unwrap_or(i64::MAX)))
                    .map_err(|e| write_error("pids.max", e))?;
            }
        }
        Ok(())
    }

    /// The container's cpu time (user, system) in seconds and resident
    /// memory in bytes, read from cgroupfs (v1 `cpuacct.stat` and
    /// `memory.stat` `total_rss`; v2 `cpu.stat` and `memory.stat` `anon`).
    pub fn usage(&self) -> (f64, f64, u64) {
        let read = |dir: &Path, file: &str| fs::read_to_string(dir.join(file)).ok();
        let (user, system) = if self.v2 {
            let text = read(&self.dirs[0], "cpu.stat").unwrap_or_default();
            let usec = |key| parse_keyed(&text, key).unwrap_or(0) as f64 / 1e6;
            (usec("user_usec"), usec("system_usec"))
        } else {
            let ticks = super::procfs::ticks_per_second();
            let text = self
                .dirs
                .iter()
                .find_map(|dir| read(dir, "cpuacct.stat"))
                .unwrap_or_default();
            let secs = |key| parse_keyed(&text, key).unwrap_or(0) as f64 / ticks;
            (secs("user"), secs("system"))
        };
        let stat = read(&self.memory_dir, "memory.stat").unwrap_or_default();
        let rss = if self.v2 {
            parse_keyed(&stat, "anon")
        } else {
            parse_keyed(&stat, "total_rss").or_else(|| parse_keyed(&stat, "rss"))
        };
        (user, system, rss.unwrap_or(0))
    }

    fn dir_of(&self, file: &str) -> &Path {
        if file.starts_with("memory.") {
            &self.memory_dir
        } else {
            self.dirs
                .iter()
                .find(|dir| dir.join(file).exists())
                .unwrap_or(&self.dirs[0])
        }
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add_process(&self, pid: u32) -> Result<(), ContainerizerError> {
        self.cgroup
            .add_task_by_tgid(CgroupPid::from(u64::from(pid)))
            .map_err(|source| ContainerizerError::CgroupAttach {
                pid,
                path: self.dirs[0].clone(),
                source: Box::new(source),
            })
    }

    /// The processes in the cgroup (host pids).
    pub fn procs(&self) -> Vec<u32> {
        self.cgroup
            .procs()
            .into_iter()
            .filter_map(|p| u32::try_from(p.pid).ok())
            .filter(|pid| *pid != 0)
            .collect()
    }

    /// SIGKILLs every process in the cgroup: through `cgroup.kill` on v2
    /// (Linux 5.14+), else one by one from `cgroup.procs`.
    pub fn kill_all(&self) {
        if self.v2 {
            let file = self.dirs[0].join("cgroup.kill");
            if file.exists() && fs::write(&file, "1").is_ok() {
                return;
            }
        }
        for pid in self.procs() {
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            // ESRCH: it exited meanwhile, which is what we want.
            let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
        }
    }

    /// How many times the kernel's OOM killer fired in this cgroup (v1
    /// `memory.oom_control`, Linux 4.13+; v2 `memory.events`).
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        fs::read_to_string(self.memory_dir.join(file))
            .ok()
            .and_then(|text| parse_keyed(&text, "oom_kill"))
            .unwrap_or(0)
    }

    /// The highest memory use seen, in bytes, when the kernel tells it.
    pub fn max_memory_usage(&self) -> Option<u64> {
        let files: &[&str] = if self.v2 {
            &["memory.peak", "memory.current"]
        } else {
            &["memory.max_usage_in_bytes"]
        };
        files.iter().find_map(|file| {
            fs::read_to_string(self.memory_dir.join(file))
                .ok()
                .and_then(|text| text.trim().parse().ok())
        })
    }

    /// The memory limit in bytes, when one is set.
    pub fn memory_limit(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        fs::read_to_string(self.memory_dir.join(file))
            .ok()
            .and_then(|text| text.trim().parse().ok())
    }

    /// Removes the cgroup directories, killing what is still inside and
    /// retrying for up to `patience` while the processes drain.
    pub fn remove(&self, patience: Duration) -> Result<(), ContainerizerError> {
        let deadline = Instant::now() + patience;
        for dir in &self.dirs {
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        self.kill_all();
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(source) => {
                        return Err(ContainerizerError::CgroupRemove {
                            path: dir.clone(),
                            source,
                        })
                    }
                }
            }
        }
        Ok(())
    }
}

fn missing(controller: &str, dirs: &[PathBuf]) -> ContainerizerError {
    ContainerizerError::CgroupCreate {
        path: dirs.first().cloned().unwrap_or_default(),
        source: io::Error::new(
            io::ErrorKind::NotFound,
            format!("the {controller} controller is not attached"),
        ),
    }
}

/// Reads `key N` out of a flat keyed cgroup file.
fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(key))
            .then(|| words.next().and_then(|n| n.parse().ok()))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_shares_follow_mesos() {
        let limits = |cpus| Limits {
            cpus,
            mem_mb: 64.0,
            cfs_quota: false,
            pids_max: None,
        };
        assert_eq!(limits(1.0).cpu_shares(), 1024);
        assert_eq!(limits(0.5).cpu_shares(), 512);
        assert_eq!(limits(0.0).cpu_shares(), 2);
        assert_eq!(limits(0.001).cpu_shares(), 2);
        assert_eq!(limits(0.0).cpu_weight(), 1);
        assert_eq!(limits(1.0).cpu_weight(), 39);
        assert_eq!(limits(256.0).cpu_weight(), 10_000);
        assert_eq!(limits(1000.0).cpu_weight(), 10_000);
        assert_eq!(limits(0.5).cfs_quota_us(), 50_000);
        assert_eq!(limits(0.0).cfs_quota_us(), 1_000);
    }

    #[test]
    fn memory_limit_is_mib_with_a_floor() {
        let limits = |mem_mb| Limits {
            cpus: 1.0,
            mem_mb,
            cfs_quota: false,
            pids_max: None,
        };
        assert_eq!(limits(64.0).memory_bytes(), 64 * 1024 * 1024);
        assert_eq!(limits(1.0).memory_bytes(), 32 * 1024 * 1024);
    }

    #[test]
    fn keyed_files_parse() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_keyed(v1, "oom_kill"), Some(3));
        let v2 = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_keyed(v2, "oom_kill"), Some(1));
        assert_eq!(parse_keyed("under_oom 0\n", "oom_kill"), None);
    }

    #[test]
    fn cgroups_root_must_be_relative_and_plain() {
        for bad in ["", "/", "a/../b", "a//b"] {
            assert!(CgroupRoot::detect(bad).is_err(), "{bad:?}");
        }
    }
}
