//! What the deployment tests need: the artifacts a deployment ships (the
//! release binary, the `.deb`, the Debian box image, the compose image),
//! commands run with a deadline, containers removed on drop, and gates for
//! the tools (`systemd-analyze`, `vagrant`, `docker-compose`, …) that skip
//! with a printed reason outside CI and fail in CI.
//!
//! Every artifact is built at most once per test process; the box image
//! (debootstrap, the slow one) at most once per machine, as the build script
//! skips an image built by the same recipe.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

pub use crate::binary::release_binary;
use crate::binary::target_dir;
use crate::workspace_root;

/// The box image `vagrant up --provider=docker` and the package test boot.
pub const BOX_IMAGE: &str = "meseta-box:bookworm";

/// The image the compose cluster runs in the tests.
pub const COMPOSE_IMAGE: &str = "meseta-compose-test:latest";

/// Where the tests keep what they build (under the cargo target dir).
pub fn work_dir() -> PathBuf {
    target_dir().join("meseta-tests")
}

/// Whether `tool` is on the PATH (for optional checks such as lintian).
pub fn require_tool_quiet(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Gate for a test that needs `tool` on the PATH (and root, as every
/// deployment test installs or boots something): in CI it must be there
/// (`.ci/run` installs it), elsewhere the test skips with the reason.
pub fn require_tool(tool: &str, what: &str) -> bool {
    if !crate::require_root(what) {
        return false;
    }
    if require_tool_quiet(tool) {
        return true;
    }
    if crate::in_ci() {
        panic!("{what} needs {tool} in CI (.ci/run installs it), but it is not on the PATH");
    }
    println!("skipping {what}: {tool} is not installed (it runs for real in CI)");
    false
}

/// A finished command: its status and output as text.
#[derive(Debug)]
pub struct Ran {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Fails, with the output, unless the command succeeded.
    pub fn ok(self, what: &str) -> Result<Ran> {
        if self.success {
            Ok(self)
        } else {
            bail!(
                "{what} failed ({:?}):\n--- stdout\n{}\n--- stderr\n{}",
                self.code,
                tail(&self.stdout, 40),
                tail(&self.stderr, 40)
            )
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `cmd` to its end or until `timeout` (then kills it and fails).
/// Output goes through files, so a chatty command never blocks on a pipe.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Ran> {
    let dir = tempfile::tempdir().context("a dir for the command's output")?;
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let described = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("starting {described}"))?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for a command")? {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let out = std::fs::read_to_string(&out_path).unwrap_or_default();
            let err = std::fs::read_to_string(&err_path).unwrap_or_default();
            bail!(
                "{described} did not finish within {timeout:?}:\n{}\n{}",
                tail(&out, 30),
                tail(&err, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Ran {
        success: status.success(),
        code: status.code(),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    })
}

/// `docker ARGS` within `timeout`, failing unless it succeeds; its stdout.
pub fn docker(args: &[&str], timeout: Duration) -> Result<String> {
    let ran = run(Command::new("docker").args(args), timeout)?;
    Ok(ran.ok(&format!("docker {}", args.join(" ")))?.stdout)
}

/// `docker exec CONTAINER sh -c SCRIPT`, whatever its exit status.
pub fn exec(container: &str, script: &str, timeout: Duration) -> Result<Ran> {
    run(
        Command::new("docker").args(["exec", container, "sh", "-c", script]),
        timeout,
    )
}

/// Removes a container (and its anonymous volumes) when dropped.
pub struct ContainerGuard(pub String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = run(
            Command::new("docker").args(["rm", "-f", "-v", &self.0]),
            Duration::from_secs(60),
        );
    }
}

/// Holds an exclusive lock on a file under [`work_dir`] (one builder of an
/// artifact at a time across test processes) until dropped.
fn lock(name: &str) -> Result<nix::fcntl::Flock<std::fs::File>> {
    std::fs::create_dir_all(work_dir()).context("creating the tests' work dir")?;
    let file = std::fs::File::create(work_dir().join(format!("{name}.lock")))
        .with_context(|| format!("creating the {name} lock"))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("locking the {name} lock: {e}"))
}

fn once(
    cell: &'static OnceLock<Result<PathBuf, String>>,
    build: impl FnOnce() -> Result<PathBuf>,
) -> Result<PathBuf> {
    cell.get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

/// `meseta_<version>_amd64.deb`, built from the release binary with
/// `deploy/deb/build.sh`, once per test process.
pub fn deb() -> Result<PathBuf> {
    static DEB: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    once(&DEB, || {
        let binary = release_binary()?;
        let out = work_dir().join(format!("deb-{}", std::process::id()));
        let _held = lock("deb")?;
        let ran = run(
            Command::new(workspace_root().join("deploy/deb/build.sh"))
                .arg("--binary")
                .arg(&binary)
                .arg("--out")
                .arg(&out),
            Duration::from_secs(300),
        )?
        .ok("deploy/deb/build.sh")?;
        let path = PathBuf::from(ran.stdout.trim());
        if !path.is_file() {
            bail!(
                "deploy/deb/build.sh printed {:?}, not a file",
                ran.stdout.trim()
            );
        }
        Ok(path)
    })
}

/// [`BOX_IMAGE`], built by `vagrant/docker/build-box.sh --if-missing`
/// (debootstrap of Debian bookworm; about a minute the first time on a
/// machine, nothing after).
pub fn box_image() -> Result<&'static str> {
    static BOX: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    once(&BOX, || {
        let _held = lock("box")?;
        run(
            Command::new(workspace_root().join("vagrant/docker/build-box.sh")).args([
                "--tag",
                BOX_IMAGE,
                "--if-missing",
            ]),
            Duration::from_secs(600),
        )?
        .ok("vagrant/docker/build-box.sh")?;
        Ok(PathBuf::from(BOX_IMAGE))
    })?;
    Ok(BOX_IMAGE)
}

/// [`COMPOSE_IMAGE`], built from the release binary by
/// `deploy/compose/build-image.sh`, once per test process.
pub fn compose_image() -> Result<&'static str> {
    static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    once(&IMAGE, || {
        let binary = release_binary()?;
        let _held = lock("compose-image")?;
        run(
            Command::new(workspace_root().join("deploy/compose/build-image.sh"))
                .arg("--binary")
                .arg(&binary)
                .args(["--tag", COMPOSE_IMAGE]),
            Duration::from_secs(300),
        )?
        .ok("deploy/compose/build-image.sh")?;
        Ok(PathBuf::from(COMPOSE_IMAGE))
    })?;
    Ok(COMPOSE_IMAGE)
}

/// Whether `binary` has the `meseta dns` role (it is being built in
/// parallel; until it lands the DNS checks are skipped, saying so).
pub fn has_dns_role(binary: &Path) -> Result<bool> {
    let ran = run(
        Command::new(binary).args(["dns", "--help"]),
        Duration::from_secs(30),
    )?;
    if ran.success {
        return Ok(true);
    }
    if ran.stderr.contains("unrecognized subcommand") {
        return Ok(false);
    }
    bail!("meseta dns --help failed oddly: {}", ran.stderr)
}

/// `n` distinct free loopback ports below the kernel's ephemeral range (so
/// no client socket takes one between this call and the server binding it),
/// picked from a block that depends on the process id.
pub fn free_low_ports(n: usize) -> Result<Vec<u16>> {
    let mut ports = Vec::new();
    let start = 20000 + (std::process::id() % 1000) as u16 * 10;
    for port in (start..32000).chain(20000..start) {
        if ports.len() == n {
            break;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            ports.push(port);
        }
    }
    if ports.len() < n {
        bail!("found only {} free ports of {n}", ports.len());
    }
    Ok(ports)
}
