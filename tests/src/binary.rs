//! Where the `meseta` binary under test is, built on demand.
//!
//! `env!("CARGO_BIN_EXE_meseta")` only exists inside the `meseta` package, so
//! the binary is found at `$CARGO_TARGET_DIR/debug/meseta` (default: the
//! workspace's `target/`). `MESETA_BIN` overrides the path. When the binary
//! is missing, or older than a source file of the workspace, it is built
//! once per test process with `cargo build -p meseta`; if that build fails
//! but an older binary exists, the older one is used and a warning printed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};

/// The target directory cargo builds into.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                crate::workspace_root().join(dir)
            }
        }
        None => crate::workspace_root().join("target"),
    }
}

/// The debug `meseta` binary, built if it is missing or stale. Panics when
/// there is no binary and none can be built (a test cannot run without it).
pub fn meseta_binary() -> PathBuf {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BINARY.get_or_init(|| locate().map_err(|e| format!("{e:#}")));
    match found {
        Ok(path) => path.clone(),
        Err(e) => panic!("no meseta binary to test: {e}"),
    }
}

/// The release `meseta` binary, the one deployments ship (packages, images),
/// built with `cargo build --release -p meseta` if it is missing or stale
/// (`.ci/run` builds it first). `MESETA_DIST_BIN` overrides the path.
pub fn release_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| locate_profile("release", "MESETA_DIST_BIN").map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!("no release meseta binary: {e}"))
}

fn locate() -> Result<PathBuf> {
    locate_profile("debug", "MESETA_BIN")
}

fn locate_profile(profile: &str, env_var: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{env_var}={} is not a file", path.display());
        }
        return Ok(path);
    }
    let path = target_dir().join(profile).join("meseta");
    let built_at = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let stale = match built_at {
        None => true,
        Some(t) => newest_source().is_some_and(|src| src > t),
    };
    if !stale {
        return Ok(path);
    }
    match build(profile) {
        Ok(()) if path.is_file() => Ok(path),
        Ok(()) => bail!(
            "cargo build -p meseta succeeded but {} does not exist",
            path.display()
        ),
        Err(e) if built_at.is_some() => {
            eprintln!(
                "warning: rebuilding meseta failed ({e:#}); testing the older binary at {}",
                path.display()
            );
            Ok(path)
        }
        Err(e) => Err(e),
    }
}

fn build(profile: &str) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut args = vec!["build", "-p", "meseta"];
    if profile == "release" {
        args.push("--release");
    }
    eprintln!(
        "building meseta (cargo {}) for the end-to-end tests",
        args.join(" ")
    );
    let out = Command::new(cargo)
        .args(&args)
        .current_dir(crate::workspace_root())
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .context("running cargo build -p meseta")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "cargo build -p meseta failed ({}):\n{}",
            out.status,
            tail.join("\n")
        );
    }
    Ok(())
}

/// The newest modification time of the sources the binary is built from.
fn newest_source() -> Option<SystemTime> {
    let root = crate::workspace_root();
    let mut newest = None;
    for dir in ["crates", "proto"] {
        walk(&root.join(dir), &mut newest);
    }
    for file in ["Cargo.toml", "Cargo.lock"] {
        consider(&root.join(file), &mut newest);
    }
    newest
}

fn walk(dir: &Path, newest: &mut Option<SystemTime>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if path
                .file_name()
                .is_some_and(|n| n == "target" || n == "tests")
            {
                continue;
            }
            walk(&path, newest);
        } else if path
            .extension()
            .is_some_and(|e| e == "rs" || e == "proto" || e == "toml")
        {
            consider(&path, newest);
        }
    }
}

fn consider(path: &Path, newest: &mut Option<SystemTime>) {
    if let Ok(t) = std::fs::metadata(path).and_then(|m| m.modified()) {
        if newest.is_none_or(|n| t > n) {
            *newest = Some(t);
        }
    }
}
