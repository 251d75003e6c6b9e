//! End-to-end harness: starts the real `meseta` binary on loopback and drives
//! it through its public APIs (Marathon `/v2`, the master's and the agent's
//! operator endpoints, the `meseta` CLI), the way Garage's
//! `src/garage/tests/common/garage.rs` drives Garage.
//!
//! - [`binary`] finds (and if needed builds) `target/debug/meseta`, and the
//!   release binary deployments ship.
//! - [`deploy`] builds the deployment artifacts (.deb, box and compose
//!   images) once and runs commands and containers with deadlines.
//! - [`cluster::Cluster`] runs `meseta up` on free ports in a temporary data
//!   dir, captures its log, and on drop stops it (SIGTERM, then SIGKILL),
//!   kills whatever task process it left and removes the dir. A test that
//!   panics gets the log tail printed.
//! - [`http`] has blocking JSON helpers with timeouts; [`events`] reads
//!   Marathon's `/v2/events` stream on a thread of its own; [`mesos_api`]
//!   speaks Mesos' v1 HTTP APIs (JSON or protobuf, RecordIO streams).
//! - [`procfs`] inspects real processes: parents, command lines, cgroups,
//!   namespaces.
//! - [`wait::wait_until`] polls for an eventual condition under a generous
//!   deadline. Deadlines are there so a broken build fails instead of
//!   hanging; tests never assert that something was fast (that is measured
//!   in `benches/`).
//! - [`browser::Browser`] drives headless Chromium over the DevTools
//!   protocol (UI tests); [`browser::require_browser`] gates them.
//! - [`require_root`] decides whether a root-only test runs: in CI
//!   (`CI=true`) it must, elsewhere it may skip with a printed reason.

pub mod binary;
pub mod browser;
pub mod cluster;
pub mod deploy;
pub mod docker;
pub mod events;
pub mod http;
pub mod marathon;
pub mod masters;
pub mod mesos_api;
pub mod netns;
pub mod procfs;
pub mod wait;

pub use binary::meseta_binary;
pub use cluster::{with_cluster, Cluster, ClusterOptions};
pub use events::{Event, EventStream};
pub use http::{Api, Reply};
pub use wait::{wait_for, wait_until, DEADLINE};

use std::path::Path;

/// Whether this run is CI (`CI=true`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Whether tasks can be isolated for real here: root and a writable cgroup
/// hierarchy (v1 `memory` controller or a v2 root).
pub fn root_with_cgroups() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not running as root".into());
    }
    let candidates = [
        Path::new("/sys/fs/cgroup/memory"),
        Path::new("/sys/fs/cgroup/unified"),
        Path::new("/sys/fs/cgroup"),
    ];
    let writable = candidates.iter().any(|p| {
        (p.join("cgroup.procs").exists())
            && nix::unistd::access(*p, nix::unistd::AccessFlags::W_OK).is_ok()
    });
    if writable {
        Ok(())
    } else {
        Err("no writable cgroup hierarchy under /sys/fs/cgroup".into())
    }
}

/// Gate for a test that needs root and cgroups. Returns `true` when the test
/// can run. Without them: with `CI=true` this panics (CI must run it for
/// real), elsewhere it prints `skipping <what>: <reason>` and returns
/// `false`, so the skip is never silent.
pub fn require_root(what: &str) -> bool {
    match root_with_cgroups() {
        Ok(()) => true,
        Err(reason) if in_ci() => {
            panic!("{what} needs root and writable cgroups in CI, but: {reason}")
        }
        Err(reason) => {
            println!("skipping {what}: {reason} (it runs for real in CI)");
            false
        }
    }
}

/// The repository root (the workspace directory holding `tests/`).
pub fn workspace_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf())
}
