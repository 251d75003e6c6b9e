//! The local Docker daemon, for the Docker tests: whether it is there, the
//! test image (built here: no registry is reachable), and the containers a
//! test left.
//!
//! The test image `busybox:latest` is a root filesystem of Debian's
//! `busybox-static` (`/bin/busybox` and its applets), with an
//! `/etc/os-release` of its own (`NAME="meseta test image (busybox)"`), an
//! `/etc/passwd` with `nobody`, and `PATH=/bin`, imported with `docker
//! import`. It is built once per machine; concurrent test processes wait
//! for one build (a lock file).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The image the tests run (the name `simple-docker.json` uses).
pub const TEST_IMAGE: &str = "busybox:latest";
/// What the test image's `/etc/os-release` says.
pub const TEST_IMAGE_OS: &str = "meseta test image (busybox)";

/// Whether the daemon answers.
pub fn docker_available() -> Result<(), String> {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "the Docker daemon does not answer: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Gate for a test that needs the Docker daemon (and root): in CI it must
/// run, elsewhere it may skip with a printed reason.
pub fn require_docker(what: &str) -> bool {
    if !crate::require_root(what) {
        return false;
    }
    match docker_available() {
        Ok(()) => true,
        Err(reason) if crate::in_ci() => panic!("{what} needs Docker in CI, but: {reason}"),
        Err(reason) => {
            println!("skipping {what}: {reason} (it runs for real in CI)");
            false
        }
    }
}

fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .with_context(|| format!("running docker {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds [`TEST_IMAGE`] unless the daemon has it.
pub fn ensure_test_image() -> Result<()> {
    if docker(&["image", "inspect", TEST_IMAGE]).is_ok() {
        return Ok(());
    }
    // One builder at a time across test processes.
    let lock = std::fs::File::create(std::env::temp_dir().join("meseta-test-image.lock"))
        .context("creating the image lock")?;
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("locking the image lock: {e}"))
        .and_then(|held| {
            if docker(&["image", "inspect", TEST_IMAGE]).is_err() {
                build_test_image()?;
            }
            drop(held);
            Ok(())
        })
}

fn build_test_image() -> Result<()> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        bail!("/bin/busybox is missing: install Debian's busybox-static (.ci/run does)");
    }
    eprintln!(
        "building the test image {TEST_IMAGE} from {}",
        busybox.display()
    );
    let root = tempfile::tempdir().context("a rootfs dir")?;
    let r = root.path();
    for dir in ["bin", "etc", "tmp", "root", "var/www"] {
        std::fs::create_dir_all(r.join(dir))?;
    }
    std::fs::copy(busybox, r.join("bin/busybox"))?;
    let applets = Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(applet))?;
        }
    }
    std::fs::write(
        r.join("etc/os-release"),
        format!("NAME=\"{TEST_IMAGE_OS}\"\n"),
    )?;
    std::fs::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    std::fs::write(r.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    let tar = Command::new("tar")
        .arg("-C")
        .arg(r)
        .args(["-c", "."])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running tar")?;
    let import = Command::new("docker")
        .args(["import", "-c", "ENV PATH=/bin", "-", TEST_IMAGE])
        .stdin(tar.stdout.context("tar's output")?)
        .output()
        .context("running docker import")?;
    if !import.status.success() {
        bail!(
            "docker import failed: {}",
            String::from_utf8_lossy(&import.stderr).trim()
        );
    }
    eprintln!("built {TEST_IMAGE}");
    Ok(())
}

/// One container as `docker ps -a` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedContainer {
    pub id: String,
    pub name: String,
    /// `running`, `exited`, …
    pub state: String,
}

/// Every container (running or not) whose name starts with `prefix`.
pub fn containers_named(prefix: &str) -> Result<Vec<ListedContainer>> {
    let out = docker(&[
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        &format!("name=^{prefix}"),
        "--format",
        "{{.ID}}\t{{.Names}}\t{{.State}}",
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut parts = l.split('\t');
            Some(ListedContainer {
                id: parts.next()?.to_string(),
                name: parts.next()?.to_string(),
                state: parts.next()?.to_string(),
            })
        })
        .collect())
}

/// Removes (force) the containers named `mesos-<id>` for `container_ids`.
pub fn remove_containers(container_ids: &[String]) {
    for id in container_ids {
        let _ = docker(&["rm", "-f", &format!("mesos-{id}")]);
    }
}
