//! Tests of the linux and posix containerizers, for real: namespaces,
//! cgroups, OOM, pids limits, users, recovery after an agent restart.
//!
//! The linux tests need root and a writable cgroup hierarchy. Without them
//! they FAIL when `CI=true` and are skipped with a printed reason otherwise.
//! The posix tests run everywhere (the ones that switch users need root).
//!
//! This binary has its own harness (`harness = false`) because it is also
//! the containers' init: the containerizer execs `/proc/self/exe
//! __task-init …`, which lands in `main` below, as it does in the `meseta`
//! binary. Run: `cargo test -p meseta-agent --test containerizer [FILTER]`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use meseta_agent::containerizer::{
    init, Containerizer, ContainerizerError, LaunchSpec, LinuxConfig, LinuxContainerizer,
    PosixContainerizer, RecoverSpec, TaskUser, TASK_INIT_SUBCOMMAND,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;
type TestFn = fn(Env) -> Pin<Box<dyn Future<Output = TestResult>>>;

/// Parent cgroup of the test containers, apart from a real agent's.
const TEST_CGROUPS_ROOT: &str = "meseta-test";

const TESTS: &[(&str, TestFn)] = &[
    ("containerizer::linux::pid_uts_and_mount_namespaces", |e| {
        Box::pin(namespaces(e))
    }),
    ("containerizer::linux::env_sandbox_and_exit_code", |e| {
        Box::pin(env_sandbox_and_exit_code(e))
    }),
    (
        "containerizer::linux::limits_are_written_and_cgroups_removed",
        |e| Box::pin(limits(e)),
    ),
    ("containerizer::linux::cfs_quota_when_enabled", |e| {
        Box::pin(cfs_quota(e))
    }),
    ("containerizer::linux::sigterm_reaches_the_task", |e| {
        Box::pin(sigterm_trap(e))
    }),
    ("containerizer::linux::kill_leaves_no_process", |e| {
        Box::pin(kill_tree(e))
    }),
    ("containerizer::linux::kill_escalates_to_sigkill", |e| {
        Box::pin(kill_escalates(e))
    }),
    ("containerizer::linux::oom_of_the_command", |e| {
        Box::pin(oom_at_exit(e))
    }),
    (
        "containerizer::linux::oom_of_a_child_kills_the_container",
        |e| Box::pin(oom_of_child(e)),
    ),
    ("containerizer::linux::bad_sandbox_leaves_nothing", |e| {
        Box::pin(bad_sandbox(e))
    }),
    (
        "containerizer::linux::recovered_container_reports_its_status",
        |e| Box::pin(recover_status(e)),
    ),
    (
        "containerizer::linux::recovered_container_can_be_killed",
        |e| Box::pin(recover_kill(e)),
    ),
    ("containerizer::linux::container_gone_during_restart", |e| {
        Box::pin(recover_gone(e))
    }),
    ("containerizer::linux::launch_never_released", |e| {
        Box::pin(recover_never_started(e))
    }),
    ("containerizer::linux::init_has_a_session_of_its_own", |e| {
        Box::pin(own_session(e))
    }),
    ("containerizer::linux::pids_limit_stops_a_fork_bomb", |e| {
        Box::pin(pids_limit(e))
    }),
    ("containerizer::linux::runs_as_the_task_user", |e| {
        Box::pin(linux_user(e))
    }),
    ("containerizer::linux::orphans_are_killed", |e| {
        Box::pin(orphans(e))
    }),
    ("containerizer::linux::usage_is_read_from_cgroups", |e| {
        Box::pin(usage(e))
    }),
    ("containerizer::posix::exit_code_env_and_output", |e| {
        Box::pin(posix_exit(e))
    }),
    ("containerizer::posix::kill_escalates_to_sigkill", |e| {
        Box::pin(posix_kill_escalates(e))
    }),
    ("containerizer::posix::kill_takes_the_whole_session", |e| {
        Box::pin(posix_kill_session(e))
    }),
    (
        "containerizer::posix::status_recorded_while_the_agent_was_down",
        |e| Box::pin(posix_recover_status(e)),
    ),
    ("containerizer::posix::recovered_task_can_be_killed", |e| {
        Box::pin(posix_recover_kill(e))
    }),
    ("containerizer::posix::runs_as_the_task_user", |e| {
        Box::pin(posix_user(e))
    }),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(TASK_INIT_SUBCOMMAND) {
        // We are a container's init, exactly as `meseta __task-init` is.
        std::process::exit(init::main(&args[2..]));
    }
    if args.iter().any(|a| a == "--list") {
        for (name, _) in TESTS {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&str> = args[1..]
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let exact = args.iter().any(|a| a == "--exact");
    let selected: Vec<&(&str, TestFn)> = TESTS
        .iter()
        .filter(|(name, _)| {
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| if exact { name == f } else { name.contains(f) })
        })
        .collect();
    println!("\nrunning {} tests", selected.len());
    if selected.is_empty() {
        return ExitCode::SUCCESS;
    }

    let mut selected = selected;
    if let Err(why) = LinuxContainerizer::new(config(false)) {
        if std::env::var("CI").as_deref() == Ok("true") {
            println!("FAILED: linux containerizer tests cannot run in CI: {why}");
            return ExitCode::FAILURE;
        }
        let before = selected.len();
        selected.retain(|(name, _)| !name.starts_with("containerizer::linux::"));
        println!(
            "skipping {} linux containerizer tests: {why}",
            before - selected.len()
        );
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            println!("FAILED: cannot start a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let mut failed = Vec::new();
    for (name, test) in selected {
        let env = Env { name };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(20), test(env)).await })
        }));
        let verdict = match outcome {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(e))) => Some(e.to_string()),
            Ok(Err(_)) => Some("timed out after 20 s".to_string()),
            Err(panic) => Some(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into()),
            ),
        };
        match verdict {
            None => println!("test {name} ... ok"),
            Some(why) => {
                println!("test {name} ... FAILED\n    {why}");
                failed.push(name);
            }
        }
    }
    remove_leftovers();
    println!(
        "\ntest result: {}. {} failed; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Kills and removes what failed tests of this run left in the cgroups.
fn remove_leftovers() {
    let tag = format!("-{}-", std::process::id());
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let roots = hierarchies
        .filter_map(|h| Some(h.ok()?.path().join(TEST_CGROUPS_ROOT)))
        .chain([Path::new("/sys/fs/cgroup").join(TEST_CGROUPS_ROOT)]);
    for root in roots {
        let Ok(children) = std::fs::read_dir(&root) else {
            continue;
        };
        for child in children.filter_map(|c| c.ok()) {
            if !child.file_name().to_string_lossy().contains(&tag) {
                continue;
            }
            let dir = child.path();
            for _ in 0..100 {
                for pid in cgroup_procs(std::slice::from_ref(&dir)) {
                    // SAFETY: kill takes plain integers and touches no memory.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
                if std::fs::remove_dir(&dir).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn config(cfs_quota: bool) -> LinuxConfig {
    LinuxConfig {
        cgroups_root: TEST_CGROUPS_ROOT.into(),
        cfs_quota,
        ..LinuxConfig::default()
    }
}

/// A launch's sandbox and run directory; dropped with the test.
struct Dirs {
    sandbox: tempfile::TempDir,
    run: tempfile::TempDir,
}

impl Dirs {
    fn path(&self) -> &Path {
        self.sandbox.path()
    }
}

/// Per-test context.
#[derive(Clone, Copy)]
struct Env {
    name: &'static str,
}

impl Env {
    fn containerizer(&self, cfs_quota: bool) -> Result<LinuxContainerizer, ContainerizerError> {
        LinuxContainerizer::new(config(cfs_quota))
    }

    fn posix(&self) -> PosixContainerizer {
        PosixContainerizer::new(PathBuf::from("/proc/self/exe"))
    }

    /// A unique container id and a fresh sandbox and run directory.
    fn spec(&self, command: &str) -> Result<(LaunchSpec, Dirs), std::io::Error> {
        let sandbox = tempfile::tempdir()?;
        let run = tempfile::tempdir()?;
        let short = self.name.rsplit("::").next().unwrap_or(self.name);
        let container_id = format!(
            "{short}-{}-{}",
            std::process::id(),
            sandbox_suffix(sandbox.path())
        );
        let spec = LaunchSpec {
            container_id,
            task_id: format!("task-{short}"),
            command: command.to_string(),
            env: vec![
                (
                    "PATH".into(),
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ),
                ("MESOS_SANDBOX".into(), sandbox.path().display().to_string()),
            ],
            sandbox: sandbox.path().to_path_buf(),
            cpus: 0.5,
            mem_mb: 64.0,
            hostname: None,
            run_dir: run.path().to_path_buf(),
            user: None,
            docker: None,
            rootfs: None,
        };
        Ok((spec, Dirs { sandbox, run }))
    }
}

fn sandbox_suffix(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().trim_start_matches('.').to_string())
        .unwrap_or_default()
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

async fn wait_for_text(path: &Path, text: &str) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !read(path).contains(text) {
        if Instant::now() > deadline {
            return Err(format!(
                "{} never contained {text:?}: {:?}",
                path.display(),
                read(path)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Whether `pid` is a live (non-zombie) process on the host.
fn alive(pid: u32) -> bool {
    let stat = read(format!("/proc/{pid}/stat"));
    match stat.rsplit_once(')') {
        Some((_, rest)) => rest.split_whitespace().next() != Some("Z"),
        None => false,
    }
}

/// The processes in a container's cgroup, read from the first hierarchy.
fn cgroup_procs(cgroups: &[PathBuf]) -> Vec<u32> {
    cgroups
        .first()
        .map(|dir| read(dir.join("cgroup.procs")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The cgroup directory holding `file`.
fn dir_with(cgroups: &[PathBuf], file: &str) -> Result<PathBuf, String> {
    cgroups
        .iter()
        .find(|dir| dir.join(file).exists())
        .cloned()
        .ok_or_else(|| format!("no cgroup of {cgroups:?} has {file}"))
}

fn cgroups_of(c: &LinuxContainerizer, container_id: &str) -> Result<Vec<PathBuf>, String> {
    c.containers()
        .into_iter()
        .find(|info| info.container_id == container_id)
        .map(|info| info.cgroups)
        .ok_or_else(|| format!("container {container_id} is not listed"))
}

fn proc_mounts() -> usize {
    read("/proc/self/mountinfo")
        .lines()
        .filter(|l| l.contains(" - proc "))
        .count()
}

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

async fn namespaces(env: Env) -> TestResult {
    let c = env.containerizer(false)?;
    let host_proc_mounts = proc_mounts();
    let (mut spec, sandbox) =
        env.spec("echo pid=$$; hostname; echo procs=$(ls /proc | grep -c '^[0-9]')")?;
    spec.hostname = Some("meseta-task-host".into());
    let id = spec.container_id.clone();
    let launched = c.launch(spec).await?;
    check!(launched.pid > 1, "host pid of the init: {}", launched.pid);
    let termination = launched.exit.await?;
    let stdout = read(sandbox.path().join("stdout"));
    check!(
        termination.exit_code == Some(0),
        "{termination:?}; stderr {:?}",
        read(sandbox.path().join("stderr"))
    );
    let pid: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("no pid in {stdout:?}"))?;
    check!(
        pid <= 3,
        "the task's shell is pid {pid} inside: not in a new PID namespace"
    );
    check!(
        stdout.contains("\nmeseta-task-host\n"),
        "hostname not set: {stdout:?}"
    );
    let procs: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("no process count in {stdout:?}"))?;
    check!(procs <= 5, "/proc inside shows {procs} processes");
    let host_hostname = read("/proc/sys/kernel/hostname");
    check!(
        host_hostname.trim() != "meseta-task-host",
        "the host's hostname changed"
    );
    check!(
        proc_mounts() == host_proc_mounts,
        "a /proc mount leaked to the host"
    );
    check!(
        std::path::Path::new("/proc/1").exists(),
        "the host's /proc is gone"
    );
    c.destroy(&id).await?;
    Ok(())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn env_sandbox_and_exit_code(env: Env) -> TestResult {
    let c = env.containerizer(false)?;
    let fds_before = open_fds();
    let (mut spec, sandbox) = env.spec("echo \"$GREETING\"; pwd; echo oops >&2; cat; exit 7")?;
    spec.env
        .push(("GREETING".into(), "hello 'quoted' $world".into()));
    let id = spec.container_id.clone();
    let termination = c.launch(spec).await?.exit.await?;
    check!(termination.exit_code == Some(7), "{termination:?}");
    check!(
        termination.message == "Command exited with status 7",
        "{}",
        termination.message
    );
    check!(!termination.oom_killed, "{termination:?}");
    let stdout = read(sandbox.path().join("stdout"));
    let expected = format!("hello 'quoted' $world\n{}\n", sandbox.path().display());
    check!(stdout == expected, "stdout {stdout:?} != {expected:?}");
    check!(
        read(sandbox.path().join("stderr")) == "oops\n",
        "stderr {:?}",
        read(sandbox.path().join("stderr"))
    );
    c.destroy(&id).await?;
    // The supervisor drops its handles just after it reported the exit.
    let deadline = Instant::now() + Duration::from_secs(2);
    while open_fds() > fds_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check!(
        open_fds() <= fds_before,
        "descriptors leaked: {fds_before} before, {} after",
        open_fds()
    );
    Ok(())
}

async fn limits(env: Env) -> TestResult {
    let c = env.containerizer(false)?;
    let (mut spec, _sandbox) = env.spec("sleep 100")?;
    spec.mem_mb = 48.0;
    spec.cpus = 0.25;
    let id = spec.container_id.clone();
    let launched = c.launch(spec).await?;
    let cgroups = cgroups_of(&c, &id)?;
    let procs = cgroup_procs(&cgroups);
    check!(
        procs.contains(&launched.pid),
        "init {} not in its cgroup: {procs:?}",
        launched.pid
    );
    let bytes = 48 * 1024 * 1024;
    if let Ok(memory) = dir_with(&cgroups, "memory.limit_in_bytes") {
        let limit = read(memory.join("memory.limit_in_bytes"));
        check!(
            limit.trim() == bytes.to_string(),
            "memory.limit_in_bytes {limit:?}"
        );
        let cpu = dir_with(&cgroups, "cpu.shares")?;
        let shares = read(cpu.join("cpu.shares"));
        check!(shares.trim() == "256", "cpu.shares {shares:?}");
        let quota = read(cpu.join("cpu.cfs_quota_us"));
        check!(
            quota.trim() == "-1",
            "no CFS quota by default, got {quota:?}"
        );
    } else {
        let memory = dir_with(&cgroups, "memory.max")?;
        let limit = read(memory.join("memory.max"));
        check!(limit.trim() == bytes.to_string(), "memory.max {limit:?}");
        let weight = read(memory.join("cpu.weight"));
        check!(weight.trim() == "10", "cpu.weight {weight:?}");
    }
    c.kill(&id, Duration::ZERO).await?;
    let termination = launched.exit.await?;
    check!(termination.signal == Some(libc::SIGKILL), "{termination:?}");
    c.destroy(&id).await?;
    for dir in &cgroups {
        check!(
            !dir.exists(),
            "{} still exists after destroy",
            dir.display()
        );
    }
    check!(
        c.containers().iter().all(|i| i.container_id != id),
        "still listed after destroy"
    );
    check!(
        matches!(
            c.destroy(&id).await,
            Err(ContainerizerError::UnknownContainer(_))
        ),
        "destroying twice must say unknown container"
    );
    Ok(())
}

async fn cfs_quota(env: Env) -> TestResult {
    let c = env.containerizer(true)?;
    let (spec, _sandbox) = env.spec("sleep 100")?;
    let id = spec.container_id.clone();
    let launched = c.launch(spec).await?;
    let cgroups = cgroups_of(&c, &id)?;
    if let Ok(cpu) = dir_with(&cgroups, "cpu.cfs_quota_us") {
        let quota = read(cpu.join("cpu.cfs_quota_us"));
        let period = read(cpu.join("cpu.cfs_period_us"));
        check!(
            quota.trim() == "50000" && period.trim() == "100000",
            "quota {quota:?} period {period:?}"
        );
    } else {
        let cpu = dir_with(&cgroups, "cpu.max")?;
        let max = read(cpu.join("cpu.max"));
        check!(max.trim() == "50000 100000", "cpu.max {max:?}");
    }
    c.destroy(&id).await?;
    let termination = launched.exit.await?;
    check!(
        termination.signal == Some(libc::SIGKILL),
        "destroy kills a running container: {termination:?}"
    );
    Ok(())
}

async fn sigterm_trap(env: Env) -> TestResult {
    let c = env.containerizer(false)?;
    let (spec, sandbox) =
        env.spec("trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done")?;
    let id = spec.container_id.clone();
    let launched = c.launch(spec).await?;
    let stdout = sandbox.path().join("stdout");
    wait_for_text(&stdout, "ready").await?;
    let started = Instant::now();
    c.kill(&id, Duration::from_secs(10)).await?;
    let termination = launched.exit.await?;
    check!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}: SIGTERM was not forwarded",
        started.elapsed()
    );
    check!(termination.exit_code == Some(0), "{termination:?}");
    check!(
        read(&stdout).contains("bye"),
        "no bye in {:?}",
        read(&stdout)
    );
    c.destroy(&id).await?;
    Ok(())
}

/// Waits until the cgroup holds `count` processes; returns them.
async fn wait_for_procs(cgroups: &[PathBuf], count: usize) -> Result<Vec<u32>, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = cgroup_procs(cgroups);
        if procs.len() >= count {
            return Ok(procs);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the cgroup never held {count} processes: {procs:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn kill_tree(env: Env) -> TestResult {
    let c = env.containerizer(false)?;
    let (spec, _sandbox) = env.spec("sleep 100 & sleep 100 & wait")?;
    let id = spec.container_id.clone();
    let launched = c.launch(spec).await?;
    let cgroups = cgroups_of(&c, &id)?;
    // init, sh and the two sleeps.
    let procs = wait_for_procs(&cgroups, 4).await?;
    c.kill(&id, Duration::from_secs(1)).await?;
    let termination = launched.exit.await?;
    check!(termination.signal == Some(libc::SIGTERM), "{termination:?}");
    check!(
        termination.message
            == format!(
                "Command terminated with signal Terminated (pid {})",
                launched.pid
            ),
        "{}",
        termination.message
    );
    let survivors: Vec<u32> = procs.into_iter().filter(|p| alive(*p)).collect();
    check!(
        survivors.is_empty(),
        "processes survived the kill: {survivors:?}"
    );
    c.destroy(&id).await?;
    Ok(())
}

async fn kill_escalates(env: Env) -> TestResult {
    let c = env.containerizer(false)?;
    // Ignored dispositions are inherited: nothing of it dies of SIGTERM.
    let (spec, _sandbox) = env.spec("trap '' TERM; sleep 100 & sleep 100 & wait")?;
    let id = spec.container_id.clone();
    let launched = c.launch(spec).await?;
    let cgroups = cgroups_of(&c, &id)?;
    let procs = wait_for_procs(&cgroups, 4).await?;
    let started = Instant::now();
    c.kill(&id, Duration::from_secs(1)).await?;
    check!(
        started.elapsed() >= Duration::from_secs(1),
        "kill returned before the grace period"
    );
    let termination = launched.exit.await?;
    check!(termination.signal == Some(libc::SIGKILL), "{termination:?}");
    let survivors: Vec<u32> = procs.into_iter().filter(|p| alive(*p)).collect();
    check!(
        survivors.is_empty(),
        "processes survived SIGKILL: {survivors:?}"
    );
    c.destroy(&id).await?;
    for dir in &cgroups {
        check!(
            !dir.exists(),
            "{} still exists after destroy",
            dir.display()
        );
    }
    Ok(())
}

async fn oom_at_exit(env: Env) -> TestResult {
    let c = env.containerizer(false)?;
    // tail keeps all of a newline-free input in memory.
    let (mut spec, _sandbox) = env.spec("head -c 200m /dev/zero | tail")?;
    spec.mem_mb = 32.0;
    let id = spec.container_id.clone();
    let termination = c.launch(spec).await?.exit.await?;
    check!(termination.oom_killed, "{termination:?}");
    check!(
        termination
            .message
            .starts_with("Memory limit exceeded: Requested: 32MB"),
        "{}",
        termination.message
    );
    check!(!termination.success(), "{termination:?}");
    c.destroy(&id).await?;
    Ok(())
}

async fn oom_of_child(env: Env) -> TestResult {
    let c = env.containerizer(false)?;
    // The shell survives the OOM kill of tail; the container must not.
    let (mut spec, _sandbox) = env.spec("head -c 200m /dev/zero | tail; sleep 100")?;
    spec.mem_mb = 32.0;
    let id = spec.container_id.clone();
    let launched = c.launch(spec).await?;
    let termination = tokio::time::timeout(Duration::from_secs(5), launched.exit)
        .await
        .map_err(|_| "the container kept running after an OOM kill")??;
    check!(termination.oom_killed, "{termination:?}");
    check!(termination.signal == Some(libc::SIGKILL), "{termination:?}");
    c.destroy(&id).await?;
    Ok(())
}

async fn bad_sandbox(env: Env) -> TestResult {
    let c = env.containerizer(false)?;
    let (mut spec, _sandbox) = env.spec("true")?;
    spec.sandbox = PathBuf::from("/nonexistent/meseta/sandbox");
    let id = spec.container_id.clone();
    match c.launch(spec).await {
        Err(ContainerizerError::SandboxFile { .. }) => {}
        other => return Err(format!("expected a sandbox error, got {other:?}").into()),
    }
    check!(c.containers().is_empty(), "a failed launch is listed");
    let leftover = ["memory", "cpu"]
        .iter()
        .map(|h| {
            Path::new("/sys/fs/cgroup")
                .join(h)
                .join(TEST_CGROUPS_ROOT)
                .join(&id)
        })
        .chain([Path::new("/sys/fs/cgroup")
            .join(TEST_CGROUPS_ROOT)
            .join(&id)])
        .find(|p| p.exists());
    check!(leftover.is_none(), "cgroup left behind: {leftover:?}");
    Ok(())
}

fn recover_spec(spec: &LaunchSpec) -> RecoverSpec {
    RecoverSpec {
        container_id: spec.container_id.clone(),
        task_id: spec.task_id.clone(),
        run_dir: spec.run_dir.clone(),
        docker: false,
    }
}

async fn recover_status(env: Env) -> TestResult {
    let before_restart = env.containerizer(false)?;
    let (spec, _dirs) = env.spec("sleep 0.3; exit 5")?;
    let id = spec.container_id.clone();
    let recover = recover_spec(&spec);
    let launched = before_restart.launch(spec).await?;
    let info = before_restart
        .containers()
        .into_iter()
        .find(|i| i.container_id == id)
        .ok_or("not listed")?;
    check!(
        info.pid == launched.pid && !info.cgroups.is_empty(),
        "{info:?}"
    );

    let after_restart = env.containerizer(false)?;
    let recovered = after_restart.recover(recover).await?;
    check!(
        recovered.pid == launched.pid,
        "recovered pid {}",
        recovered.pid
    );
    check!(
        after_restart.containers() == vec![info.clone()],
        "{:?}",
        after_restart.containers()
    );
    let termination = recovered.exit.await?;
    check!(termination.exit_code == Some(5), "{termination:?}");
    check!(
        launched.exit.await?.exit_code == Some(5),
        "the original supervisor disagrees"
    );
    after_restart.destroy(&id).await?;
    for dir in &info.cgroups {
        check!(
            !dir.exists(),
            "{} still exists after destroy",
            dir.display()
        );
    }
    before_restart.destroy(&id).await?;
    Ok(())
}

async fn recover_kill(env: Env) -> TestResult {
    let before_restart = env.containerizer(false)?;
    let (spec, dirs) =
        env.spec("trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done")?;
    let id = spec.container_id.clone();
    let recover = recover_spec(&spec);
    let launched = before_restart.launch(spec).await?;
    wait_for_text(&dirs.path().join("stdout"), "ready").await?;

    let after_restart = env.containerizer(false)?;
    let recovered = after_restart.recover(recover).await?;
    after_restart.kill(&id, Duration::from_secs(5)).await?;
    let termination = recovered.exit.await?;
    check!(termination.exit_code == Some(0), "{termination:?}");
    check!(
        read(dirs.path().join("stdout")).contains("bye"),
        "SIGTERM did not reach the task"
    );
    launched.exit.await?;
    after_restart.destroy(&id).await?;
    before_restart.destroy(&id).await?;
    Ok(())
}

async fn recover_gone(env: Env) -> TestResult {
    let before_restart = env.containerizer(false)?;
    let (spec, dirs) = env.spec("exit 4")?;
    let id = spec.container_id.clone();
    let recover = recover_spec(&spec);
    let launched = before_restart.launch(spec).await?;
    launched.exit.await?;
    before_restart.destroy(&id).await?;

    // The init recorded the status in the run directory: it is known.
    let after_restart = env.containerizer(false)?;
    let termination = after_restart.recover(recover.clone()).await?.exit.await?;
    check!(termination.exit_code == Some(4), "{termination:?}");
    // Its pid may belong to another process by now: kill must not touch it.
    after_restart.kill(&id, Duration::ZERO).await?;
    after_restart.destroy(&id).await?;

    // Without the status file the end is unknown, and said so.
    std::fs::remove_file(dirs.run.path().join("status"))?;
    let termination = after_restart.recover(recover).await?.exit.await?;
    check!(
        termination.exit_code.is_none() && termination.signal.is_none(),
        "{termination:?}"
    );
    check!(
        termination.message.contains("unknown"),
        "{}",
        termination.message
    );
    after_restart.destroy(&id).await?;
    Ok(())
}

async fn recover_never_started(env: Env) -> TestResult {
    // A run directory without a pid file: the agent died before releasing
    // the init, so the command never ran.
    let c = env.containerizer(false)?;
    let (spec, _dirs) = env.spec("true")?;
    let id = spec.container_id.clone();
    let termination = c.recover(recover_spec(&spec)).await?.exit.await?;
    check!(
        termination
            .message
            .contains("before the task's command started"),
        "{}",
        termination.message
    );
    c.destroy(&id).await?;
    Ok(())
}

/// The session id of `pid` (field 6 of /proc/<pid>/stat).
fn session_of(pid: u32) -> Option<u32> {
    let stat = read(format!("/proc/{pid}/stat"));
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(3)?.parse().ok()
}

async fn own_session(env: Env) -> TestResult {
    let c = env.containerizer(false)?;
    let (spec, _dirs) = env.spec("sleep 100")?;
    let id = spec.container_id.clone();
    let launched = c.launch(spec).await?;
    let ours = session_of(std::process::id()).ok_or("no session of ours")?;
    let init = session_of(launched.pid).ok_or("no session of the init")?;
    check!(init == launched.pid, "the init leads no session: {init}");
    check!(init != ours, "the init shares our session {ours}");
    let status = read(format!("/proc/{}/status", launched.pid));
    check!(
        status.lines().any(|l| l.starts_with("PPid:")),
        "no status of the init"
    );
    c.destroy(&id).await?;
    Ok(())
}

async fn pids_limit(env: Env) -> TestResult {
    let mut limited = config(false);
    limited.pids_max = Some(32);
    let c = LinuxContainerizer::new(limited)?;
    // Forks far past the limit; the shell that spawns survives its failed
    // forks or dies of them, either way the host is not touched.
    let (spec, dirs) = env.spec(
        "echo started; (i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done) 2>fork-errors; \
         echo after; sleep 30",
    )?;
    let id = spec.container_id.clone();
    let launched = c.launch(spec).await?;
    wait_for_text(&dirs.path().join("stdout"), "after").await?;
    let cgroups = cgroups_of(&c, &id)?;
    let pids = dir_with(&cgroups, "pids.max")?;
    check!(read(pids.join("pids.max")).trim() == "32", "pids.max");
    let current: u64 = read(pids.join("pids.current"))
        .trim()
        .parse()
        .unwrap_or(999);
    check!(current <= 32, "pids.current {current} over the limit");
    let refused: u64 = read(pids.join("pids.events"))
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    check!(refused > 0, "no fork was refused (pids.events)");
    c.destroy(&id).await?;
    launched.exit.await?;
    Ok(())
}

/// `nobody`, when the host has it and we are root.
fn nobody() -> Option<TaskUser> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("nobody").ok()??;
    Some(TaskUser {
        name: "nobody".into(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups: vec![user.gid.as_raw()],
    })
}

/// Gives the sandbox (and its stdout/stderr) to `user`, as the agent does.
fn give(dirs: &Dirs, user: &TaskUser) -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    for name in ["stdout", "stderr"] {
        std::fs::write(dirs.path().join(name), "")?;
        std::os::unix::fs::chown(dirs.path().join(name), Some(user.uid), Some(user.gid))?;
    }
    std::os::unix::fs::chown(dirs.path(), Some(user.uid), Some(user.gid))?;
    std::fs::set_permissions(dirs.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

async fn run_as_nobody(c: &dyn Containerizer, env: Env) -> TestResult {
    let Some(user) = nobody() else {
        println!("    (skipped: needs root and a 'nobody' user)");
        return Ok(());
    };
    let (mut spec, dirs) = env.spec("id -u; id -g; id -G; touch mine && stat -c %u mine")?;
    give(&dirs, &user)?;
    spec.user = Some(user.clone());
    let id = spec.container_id.clone();
    let termination = c.launch(spec).await?.exit.await?;
    let stdout = read(dirs.path().join("stdout"));
    check!(
        termination.exit_code == Some(0),
        "{termination:?} stderr {:?}",
        read(dirs.path().join("stderr"))
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let uid = user.uid.to_string();
    check!(lines.first() == Some(&uid.as_str()), "uid: {stdout:?}");
    check!(
        lines.get(1) == Some(&user.gid.to_string().as_str()),
        "gid: {stdout:?}"
    );
    check!(
        !lines.get(2).is_some_and(|g| g.split(' ').any(|g| g == "0")),
        "kept root's group: {stdout:?}"
    );
    check!(
        lines.get(3) == Some(&uid.as_str()),
        "files it makes: {stdout:?}"
    );
    c.destroy(&id).await?;
    Ok(())
}

async fn linux_user(env: Env) -> TestResult {
    let c = env.containerizer(false)?;
    run_as_nobody(&c, env).await
}

async fn posix_user(env: Env) -> TestResult {
    run_as_nobody(&env.posix(), env).await
}

async fn orphans(env: Env) -> TestResult {
    let before_restart = env.containerizer(false)?;
    let (spec, _dirs) = env.spec("sleep 100")?;
    let id = spec.container_id.clone();
    let launched = before_restart.launch(spec).await?;
    let cgroups = cgroups_of(&before_restart, &id)?;

    // A new agent whose checkpoint does not name it.
    let after_restart = env.containerizer(false)?;
    let mut known = std::collections::HashSet::new();
    known.insert("some-other-container".to_string());
    let removed = after_restart.remove_orphans(&known).await;
    check!(removed.contains(&id), "not removed: {removed:?}");
    let termination = tokio::time::timeout(Duration::from_secs(5), launched.exit)
        .await
        .map_err(|_| "the orphan survived")??;
    check!(termination.signal == Some(libc::SIGKILL), "{termination:?}");
    for dir in &cgroups {
        check!(!dir.exists(), "{} still exists", dir.display());
    }
    before_restart.destroy(&id).await?;
    Ok(())
}

async fn usage(env: Env) -> TestResult {
    let c = env.containerizer(false)?;
    let (spec, dirs) =
        env.spec("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo busy-done; sleep 100")?;
    let id = spec.container_id.clone();
    c.launch(spec).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !read(dirs.path().join("stdout")).contains("busy-done") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let u = c.usage(&id).await?;
    let cpu_time = u.cpus_user_time_secs + u.cpus_system_time_secs;
    check!(cpu_time.is_normal(), "no cpu time: {u:?}");
    check!(u.mem_rss_bytes > 0, "no memory: {u:?}");
    check!(u.mem_limit_bytes == Some(64 * 1024 * 1024), "{u:?}");
    check!(u.processes >= 2, "{u:?}");
    c.destroy(&id).await?;
    Ok(())
}

async fn posix_exit(env: Env) -> TestResult {
    let c = env.posix();
    let (mut spec, dirs) = env.spec("echo hi; echo \"$GREETING\"; echo oops >&2; pwd; exit 3")?;
    spec.env.push(("GREETING".into(), "hello from env".into()));
    let id = spec.container_id.clone();
    let termination = c.launch(spec).await?.exit.await?;
    check!(termination.exit_code == Some(3), "{termination:?}");
    check!(
        termination.message == "Command exited with status 3",
        "{}",
        termination.message
    );
    let stdout = read(dirs.path().join("stdout"));
    check!(stdout.starts_with("hi\nhello from env\n"), "{stdout:?}");
    check!(
        stdout.contains(&dirs.path().display().to_string()),
        "cwd: {stdout:?}"
    );
    check!(read(dirs.path().join("stderr")) == "oops\n", "stderr");
    check!(c.containers().len() == 1, "not listed");
    c.destroy(&id).await?;
    check!(c.containers().is_empty(), "listed after destroy");
    Ok(())
}

async fn posix_kill_escalates(env: Env) -> TestResult {
    let c = env.posix();
    let (spec, dirs) = env.spec("trap '' TERM; echo ready; sleep 100")?;
    let id = spec.container_id.clone();
    let launched = c.launch(spec).await?;
    wait_for_text(&dirs.path().join("stdout"), "ready").await?;
    let started = Instant::now();
    c.kill(&id, Duration::from_millis(300)).await?;
    check!(
        started.elapsed() >= Duration::from_millis(300),
        "kill returned before the grace period"
    );
    let termination = launched.exit.await?;
    check!(termination.signal == Some(libc::SIGKILL), "{termination:?}");
    c.destroy(&id).await?;
    Ok(())
}

/// Live processes whose session is `session`.
fn session_members(session: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|p| session_of(*p) == Some(session) && alive(*p))
                .collect()
        })
        .unwrap_or_default()
}

async fn posix_kill_session(env: Env) -> TestResult {
    let c = env.posix();
    // One background child moves to a process group of its own: it still
    // belongs to the task's session.
    let (spec, dirs) = env
        .spec("sleep 100 & sleep 100 & setsid -w true; (set -m; sleep 100 &); echo ready; wait")?;
    let id = spec.container_id.clone();
    let launched = c.launch(spec).await?;
    wait_for_text(&dirs.path().join("stdout"), "ready").await?;
    let ours = session_of(std::process::id()).ok_or("no session of ours")?;
    check!(
        session_of(launched.pid) == Some(launched.pid) && launched.pid != ours,
        "the init leads no session of its own"
    );
    let members = session_members(launched.pid);
    check!(members.len() >= 4, "init, sh and sleeps: {members:?}");
    c.kill(&id, Duration::from_secs(1)).await?;
    launched.exit.await?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while !session_members(launched.pid).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = session_members(launched.pid);
    check!(left.is_empty(), "survivors: {left:?}");
    c.destroy(&id).await?;
    Ok(())
}

async fn posix_recover_status(env: Env) -> TestResult {
    let before_restart = env.posix();
    let (spec, dirs) = env.spec("while [ ! -e go ]; do sleep 0.05; done; exit 6")?;
    let id = spec.container_id.clone();
    let recover = recover_spec(&spec);
    let launched = before_restart.launch(spec).await?;

    // The agent "restarts": a new containerizer re-attaches, the task ends
    // while only the new one watches.
    let after_restart = env.posix();
    let recovered = after_restart.recover(recover).await?;
    check!(recovered.pid == launched.pid, "pid {}", recovered.pid);
    std::fs::write(dirs.path().join("go"), "")?;
    let termination = recovered.exit.await?;
    check!(termination.exit_code == Some(6), "{termination:?}");
    launched.exit.await?;
    after_restart.destroy(&id).await?;
    before_restart.destroy(&id).await?;
    Ok(())
}

async fn posix_recover_kill(env: Env) -> TestResult {
    let before_restart = env.posix();
    let (spec, dirs) =
        env.spec("trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done")?;
    let id = spec.container_id.clone();
    let recover = recover_spec(&spec);
    let launched = before_restart.launch(spec).await?;
    wait_for_text(&dirs.path().join("stdout"), "ready").await?;
    let after_restart = env.posix();
    let recovered = after_restart.recover(recover).await?;
    after_restart.kill(&id, Duration::from_secs(5)).await?;
    let termination = recovered.exit.await?;
    check!(termination.exit_code == Some(0), "{termination:?}");
    check!(read(dirs.path().join("stdout")).contains("bye"), "no bye");
    launched.exit.await?;
    after_restart.destroy(&id).await?;
    before_restart.destroy(&id).await?;
    Ok(())
}
