//! The Docker containerizer (Mesos' `docker`): tasks of `"container":
//! {"type": "DOCKER"}` run as containers of the local Docker daemon, driven
//! through its API with bollard.
//!
//! - A container is named `mesos-<container_id>` (Mesos' naming) and
//!   labelled `meseta.agent=<agent>`, `meseta.container_id`,
//!   `meseta.task_id`, beside the task's own labels: a restarted agent finds
//!   its containers by name, and removes the ones with its agent label that
//!   no checkpoint names.
//! - The command runs as Mesos runs it: `cmd` through `/bin/sh -c` (the
//!   entrypoint replaced), `args` as the image's arguments (its entrypoint
//!   kept), neither: the image's own. The sandbox is mounted at
//!   `/mnt/mesos/sandbox` (`MESOS_SANDBOX`), which is also the working
//!   directory.
//! - `cpus` become CPU shares, `mem` the memory limit (no swap unless a
//!   `memory-swap` parameter says otherwise); a container the kernel killed
//!   for memory is reported like a native one.
//! - Output is copied from the daemon's log stream into the sandbox's
//!   `stdout`/`stderr`, with the last copied timestamp kept in the run
//!   directory so a re-attached agent resumes where the previous one
//!   stopped, without duplicates.
//! - A kill is `docker stop` with the grace period (SIGKILL at once for a
//!   zero grace); destroy removes the container.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding, ResourcesUlimits};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, KillContainerOptions,
    ListContainersOptions, LogsOptions, RemoveContainerOptions, StatsOptions, StopContainerOptions,
    WaitContainerOptions,
};
use bollard::Docker;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::{oneshot, watch};

use super::{
    ContainerInfo, Containerizer, ContainerizerError, DockerNetwork, DockerSpec, LaunchSpec,
    Launched, RecoverSpec, Termination, Usage,
};

/// Where the sandbox appears inside a container (Mesos' path).
pub const CONTAINER_SANDBOX: &str = "/mnt/mesos/sandbox";
/// Longest wait for an image pull before the task fails.
const PULL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the end of a task waits for its last output to be copied.
const LOG_DRAIN: Duration = Duration::from_secs(3);
/// Mesos' lowest memory limit.
const MIN_MEMORY_MB: f64 = 32.0;
const LABEL_AGENT: &str = "meseta.agent";
const LABEL_CONTAINER: &str = "meseta.container_id";
const LABEL_TASK: &str = "meseta.task_id";
/// In the run directory: the timestamp of the last output line copied.
const LOG_MARK: &str = "docker-log-mark";

/// The daemon's name for a container.
pub fn container_name(container_id: &str) -> String {
    format!("mesos-{container_id}")
}

/// Connects to the daemon at `socket` and checks that it answers.
pub async fn connect(socket: &str) -> Result<Docker, String> {
    let docker = Docker::connect_with_unix(socket, 120, bollard::API_DEFAULT_VERSION)
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(3), docker.ping()).await {
        Ok(Ok(_)) => Ok(docker),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the daemon did not answer within 3 s".into()),
    }
}

fn docker_error(context: &str) -> impl FnOnce(bollard::errors::Error) -> ContainerizerError + '_ {
    move |e| ContainerizerError::Docker(format!("{context}: {e}"))
}

fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Tasks as Docker containers. Clones share their containers.
#[derive(Clone)]
pub struct DockerContainerizer {
    docker: Docker,
    /// The value of this agent's `meseta.agent` label.
    agent: String,
    containers: Arc<Mutex<HashMap<String, Arc<Container>>>>,
}

struct Container {
    id: String,
    task_id: String,
    run_dir: PathBuf,
    mem_mb: f64,
    exit: watch::Receiver<Option<Termination>>,
    killed: AtomicBool,
}

impl Container {
    fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    async fn wait_exit(&self) {
        let mut exit = self.exit.clone();
        let _ = exit.wait_for(Option::is_some).await;
    }
}

impl DockerContainerizer {
    /// `agent` names this agent in the `meseta.agent` label of its
    /// containers.
    pub fn new(docker: Docker, agent: &str) -> DockerContainerizer {
        DockerContainerizer {
            docker,
            agent: agent.to_string(),
            containers: Arc::default(),
        }
    }

    fn containers(&self) -> MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, container_id: &str) -> Result<Arc<Container>, ContainerizerError> {
        self.containers()
            .get(container_id)
            .cloned()
            .ok_or_else(|| ContainerizerError::UnknownContainer(container_id.to_string()))
    }

    /// Makes the image available, pulling it when asked to or when it is
    /// missing; a pull that fails or takes too long fails the launch.
    async fn ensure_image(&self, image: &str, force_pull: bool) -> Result<(), ContainerizerError> {
        let present = match self.docker.inspect_image(image).await {
            Ok(_) => true,
            Err(e) if not_found(&e) => false,
            Err(e) => return Err(docker_error("inspect image")(e)),
        };
        if present && !force_pull {
            return Ok(());
        }
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let pull = async {
            let mut progress = self.docker.create_image(Some(options), None, None);
            while let Some(step) = progress.next().await {
                step.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        };
        let failed = |reason: String| ContainerizerError::Image {
            image: image.to_string(),
            reason,
        };
        match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(failed(format!("the pull failed: {reason}"))),
            Err(_) => Err(failed(format!(
                "the pull did not finish within {}s",
                PULL_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Starts watching a container: copies its output, reports its end.
    /// `since` (seconds after the epoch) is when the container started, or
    /// earlier: its events are replayed from then, so an OOM in the first
    /// milliseconds is not missed.
    fn supervise(
        &self,
        container: Arc<Container>,
        sandbox: PathBuf,
        since: i64,
        exit_tx: watch::Sender<Option<Termination>>,
    ) -> oneshot::Receiver<Termination> {
        let (done_tx, done_rx) = oneshot::channel();
        let docker = self.docker.clone();
        tokio::spawn(async move {
            let name = container_name(&container.id);
            let logs = tokio::spawn(copy_logs(
                docker.clone(),
                name.clone(),
                sandbox,
                container.run_dir.clone(),
            ));
            let mut waiting = docker.wait_container(
                &name,
                Some(WaitContainerOptions {
                    condition: "not-running".into(),
                }),
            );
            // An OOM kill anywhere in the container ends the whole container,
            // as for native tasks (Docker itself only kills the process).
            let mut filters = HashMap::new();
            filters.insert("container".to_string(), vec![name.clone()]);
            filters.insert("event".to_string(), vec!["oom".to_string()]);
            let subscribe = || {
                docker.events(Some(EventsOptions {
                    filters: Some(filters.clone()),
                    since: Some(since.to_string()),
                    ..Default::default()
                }))
            };
            let mut ooms = Box::pin(subscribe());
            let mut oom = false;
            loop {
                tokio::select! {
                    // Ends when the container stops (an exit code above 0
                    // arrives as an error, which says the same).
                    step = waiting.next() => if step.is_none() { break },
                    event = ooms.next(), if !oom => match event {
                        Some(Ok(_)) => {
                            oom = true;
                            tracing::info!(container_id = %container.id, "memory limit exceeded, killing container");
                            let _ = docker
                                .kill_container(&name, Some(KillContainerOptions { signal: "SIGKILL".into() }))
                                .await;
                        }
                        // The event stream broke (a busy daemon): open it
                        // again from the container's start, so an OOM in
                        // between is replayed rather than missed.
                        other => {
                            tracing::debug!(container_id = %container.id, error = ?other.map(|e| e.err()), "docker event stream ended; resubscribing");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            ooms = Box::pin(subscribe());
                        }
                    },
                }
            }
            let _ = tokio::time::timeout(LOG_DRAIN, logs).await;
            let mut termination = termination_of(&docker, &name, container.mem_mb).await;
            if oom && !termination.oom_killed && !container.killed.load(Ordering::SeqCst) {
                termination.oom_killed = true;
                termination.message = format!(
                    "Memory limit exceeded: Requested: {}MB Maximum Used: unknown",
                    container.mem_mb.max(MIN_MEMORY_MB)
                );
            }
            tracing::info!(container_id = %container.id, message = %termination.message, "docker container terminated");
            exit_tx.send_replace(Some(termination.clone()));
            let _ = done_tx.send(termination);
        });
        done_rx
    }
}

/// How a stopped container ended, from the daemon's record of it.
async fn termination_of(docker: &Docker, name: &str, mem_mb: f64) -> Termination {
    let inspected = match docker.inspect_container(name, None).await {
        Ok(i) => i,
        Err(e) => {
            return Termination {
                exit_code: None,
                signal: None,
                oom_killed: false,
                message: format!("Container terminated, but its status is unknown: {e}"),
            }
        }
    };
    let state = inspected.state.unwrap_or_default();
    let code = state.exit_code.unwrap_or(-1) as i32;
    if state.oom_killed == Some(true) {
        return Termination {
            exit_code: Some(code),
            signal: None,
            oom_killed: true,
            message: format!(
                "Memory limit exceeded: Requested: {}MB Maximum Used: unknown",
                mem_mb.max(MIN_MEMORY_MB)
            ),
        };
    }
    Termination {
        exit_code: Some(code),
        signal: (code > 128).then_some(code - 128),
        oom_killed: false,
        message: format!("Container exited with status {code}"),
    }
}

/// The last output timestamp copied, kept in the run directory.
fn read_mark(run_dir: &Path) -> Option<String> {
    std::fs::read_to_string(run_dir.join(LOG_MARK))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The mark file, written in place: one fixed-size record, overwritten
/// after every chunk copied (a crash between a chunk and its mark copies
/// that one chunk twice, never loses one).
struct Mark(Option<std::fs::File>);

impl Mark {
    fn open(run_dir: &Path) -> Mark {
        Mark(
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(run_dir.join(LOG_MARK))
                .ok(),
        )
    }

    fn write(&self, timestamp: &str) {
        if let Some(file) = &self.0 {
            use std::os::unix::fs::FileExt;
            // Padded: a shorter timestamp never leaves a longer one's tail.
            let record = format!("{timestamp:<48}\n");
            let _ = file.write_at(record.as_bytes(), 0);
        }
    }
}

/// Seconds since the epoch of an RFC 3339 timestamp as the daemon writes it
/// (`2026-12-03T15:00:00.123456789Z`), for the logs API's `since`.
fn epoch_seconds(timestamp: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(timestamp)
        .ok()
        .map(|t| t.timestamp())
}

/// Copies the container's output into the sandbox until the container
/// stops. Lines at or before the mark in the run directory were copied by
/// a previous agent and are skipped.
async fn copy_logs(docker: Docker, name: String, sandbox: PathBuf, run_dir: PathBuf) {
    let mark = read_mark(&run_dir);
    let since = mark.as_deref().and_then(epoch_seconds).unwrap_or(0);
    let options = LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        timestamps: true,
        since: i32::try_from(since).unwrap_or(0),
        tail: "all".into(),
        ..Default::default()
    };
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(sandbox.join(name))
    };
    let (Ok(mut stdout), Ok(mut stderr)) = (open("stdout"), open("stderr")) else {
        tracing::warn!(container = %name, sandbox = %sandbox.display(), "cannot open the sandbox's output files");
        return;
    };
    let mut last = mark;
    let marks = Mark::open(&run_dir);
    let mut stream = docker.logs(&name, Some(options));
    while let Some(item) = stream.next().await {
        let Ok(output) = item else { break };
        let (file, message) = match output {
            bollard::container::LogOutput::StdOut { message } => (&mut stdout, message),
            bollard::container::LogOutput::StdErr { message } => (&mut stderr, message),
            bollard::container::LogOutput::Console { message } => (&mut stdout, message),
            bollard::container::LogOutput::StdIn { .. } => continue,
        };
        let (timestamp, text) = split_timestamp(&message);
        if let (Some(ts), Some(seen)) = (timestamp, last.as_deref()) {
            if ts <= seen {
                continue; // copied before the agent restarted
            }
        }
        if file.write_all(text).is_err() {
            break;
        }
        if let Some(ts) = timestamp {
            marks.write(ts);
            last = Some(ts.to_string());
        }
    }
}

/// `"<RFC 3339 timestamp> <text>"` → (timestamp, text).
fn split_timestamp(message: &[u8]) -> (Option<&str>, &[u8]) {
    match message.iter().position(|b| *b == b' ') {
        Some(space) => match std::str::from_utf8(&message[..space]) {
            Ok(ts) if ts.len() >= 20 && ts.as_bytes()[4] == b'-' => {
                (Some(ts), &message[space + 1..])
            }
            _ => (None, message),
        },
        None => (None, message),
    }
}

/// A size like docker's CLI takes (`512m`, `1g`, `1024`, `-1`).
fn parse_size(text: &str) -> Result<i64, String> {
    let t = text.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (number, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let factor: i64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("'{text}' is not a size")),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("'{text}' is not a size"));
    }
    Ok((n * factor as f64) as i64)
}

fn key_value(text: &str) -> (String, String) {
    match text.split_once('=') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => (text.to_string(), String::new()),
    }
}

/// The daemon's create request for a task.
pub(crate) fn create_body(
    spec: &LaunchSpec,
    docker: &DockerSpec,
    agent: &str,
) -> Result<ContainerCreateBody, String> {
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut labels: HashMap<String, String> = docker.labels.iter().cloned().collect();
    labels.insert(LABEL_AGENT.into(), agent.to_string());
    labels.insert(LABEL_CONTAINER.into(), spec.container_id.clone());
    labels.insert(LABEL_TASK.into(), spec.task_id.clone());
    let mut binds = vec![format!("{}:{CONTAINER_SANDBOX}", spec.sandbox.display())];
    for v in &docker.volumes {
        let container_path = if v.container_path.starts_with('/') {
            v.container_path.clone()
        } else {
            format!("{CONTAINER_SANDBOX}/{}", v.container_path)
        };
        let mode = if v.read_only { "ro" } else { "rw" };
        binds.push(format!("{}:{container_path}:{mode}", v.host_path.display()));
    }
    let memory = (spec.mem_mb.max(MIN_MEMORY_MB) * 1024.0 * 1024.0) as i64;
    let mut host = HostConfig {
        cpu_shares: Some(((spec.cpus * 1024.0) as i64).max(2)),
        memory: Some(memory),
        // The limit is the limit: no swap on top (a parameter may say
        // otherwise).
        memory_swap: Some(memory),
        privileged: Some(docker.privileged),
        ..Default::default()
    };
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed = Vec::new();
    match &docker.network {
        DockerNetwork::Host => host.network_mode = Some("host".into()),
        DockerNetwork::None => host.network_mode = Some("none".into()),
        DockerNetwork::Bridge | DockerNetwork::User(_) => {
            host.network_mode = Some(match &docker.network {
                DockerNetwork::User(name) => name.clone(),
                _ => "bridge".into(),
            });
            for m in &docker.port_mappings {
                let container_port = if m.container_port == 0 {
                    m.host_port
                } else {
                    m.container_port
                };
                for protocol in m
                    .protocol
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                {
                    let key = format!("{container_port}/{protocol}");
                    exposed.push(key.clone());
                    if m.host_port != 0 {
                        port_bindings
                            .entry(key)
                            .or_insert_with(|| Some(Vec::new()))
                            .get_or_insert_with(Vec::new)
                            .push(PortBinding {
                                host_ip: None,
                                host_port: Some(m.host_port.to_string()),
                            });
                    }
                }
            }
        }
    }
    if !port_bindings.is_empty() {
        host.port_bindings = Some(port_bindings);
    }
    let mut body = ContainerCreateBody {
        image: Some(docker.image.clone()),
        working_dir: Some(CONTAINER_SANDBOX.into()),
        ..Default::default()
    };
    match (&docker.args, spec.command.trim().is_empty()) {
        (Some(args), _) => body.cmd = Some(args.clone()),
        (None, false) => {
            body.entrypoint = Some(vec!["/bin/sh".into(), "-c".into()]);
            body.cmd = Some(vec![spec.command.clone()]);
        }
        (None, true) => {}
    }
    let push = |list: &mut Option<Vec<String>>, value: String| {
        list.get_or_insert_with(Vec::new).push(value)
    };
    for (key, value) in &docker.parameters {
        match key.as_str() {
            "label" | "l" => {
                let (k, v) = key_value(value);
                labels.insert(k, v);
            }
            "env" | "e" => env.push(value.clone()),
            "user" | "u" => body.user = Some(value.clone()),
            "hostname" | "h" => body.hostname = Some(value.clone()),
            "workdir" | "w" => body.working_dir = Some(value.clone()),
            "entrypoint" => body.entrypoint = Some(vec![value.clone()]),
            "volume" | "v" => binds.push(value.clone()),
            "cap-add" => push(&mut host.cap_add, value.clone()),
            "cap-drop" => push(&mut host.cap_drop, value.clone()),
            "add-host" => push(&mut host.extra_hosts, value.replacen('=', ":", 1)),
            "dns" => push(&mut host.dns, value.clone()),
            "dns-search" => push(&mut host.dns_search, value.clone()),
            "dns-opt" | "dns-option" => push(&mut host.dns_options, value.clone()),
            "security-opt" => push(&mut host.security_opt, value.clone()),
            "group-add" => push(&mut host.group_add, value.clone()),
            "memory-swap" => host.memory_swap = Some(parse_size(value)?),
            "memory-reservation" => host.memory_reservation = Some(parse_size(value)?),
            "shm-size" => host.shm_size = Some(parse_size(value)?),
            "oom-score-adj" => {
                host.oom_score_adj = Some(value.parse().map_err(|_| format!("oom-score-adj '{value}' is not a number"))?)
            }
            "pids-limit" => {
                host.pids_limit = Some(value.parse().map_err(|_| format!("pids-limit '{value}' is not a number"))?)
            }
            "init" => host.init = Some(value.is_empty() || value == "true"),
            "read-only" => host.readonly_rootfs = Some(value.is_empty() || value == "true"),
            "pid" => host.pid_mode = Some(value.clone()),
            "ipc" => host.ipc_mode = Some(value.clone()),
            "uts" => host.uts_mode = Some(value.clone()),
            "log-driver" => {
                host.log_config.get_or_insert_with(Default::default).typ = Some(value.clone())
            }
            "log-opt" => {
                let (k, v) = key_value(value);
                host.log_config
                    .get_or_insert_with(Default::default)
                    .config
                    .get_or_insert_with(HashMap::new)
                    .insert(k, v);
            }
            "sysctl" => {
                let (k, v) = key_value(value);
                host.sysctls.get_or_insert_with(HashMap::new).insert(k, v);
            }
            "tmpfs" => {
                let (path, options) = value.split_once(':').unwrap_or((value, ""));
                host.tmpfs
                    .get_or_insert_with(HashMap::new)
                    .insert(path.to_string(), options.to_string());
            }
            "ulimit" => {
                let (name, limits) = key_value(value);
                let (soft, hard) = limits.split_once(':').unwrap_or((&limits, &limits));
                let parse = |s: &str| s.parse::<i64>().map_err(|_| format!("ulimit '{value}' is not NAME=SOFT[:HARD]"));
                push_ulimit(&mut host, name, parse(soft)?, parse(hard)?);
            }
            "device" => {
                let mut parts = value.splitn(3, ':');
                let on_host = parts.next().unwrap_or_default().to_string();
                let in_container = parts.next().map(str::to_string).unwrap_or_else(|| on_host.clone());
                let permissions = parts.next().unwrap_or("rwm").to_string();
                host.devices.get_or_insert_with(Vec::new).push(bollard::models::DeviceMapping {
                    path_on_host: Some(on_host),
                    path_in_container: Some(in_container),
                    cgroup_permissions: Some(permissions),
                });
            }
            other => {
                return Err(format!(
                    "unsupported Docker parameter '{other}' (meseta maps label, env, user, hostname, workdir, entrypoint, volume, cap-add, cap-drop, add-host, dns, dns-search, dns-opt, security-opt, group-add, memory-swap, memory-reservation, shm-size, oom-score-adj, pids-limit, init, read-only, pid, ipc, uts, log-driver, log-opt, sysctl, tmpfs, ulimit, device)"
                ))
            }
        }
    }
    host.binds = Some(binds);
    body.env = Some(env);
    body.labels = Some(labels);
    if !exposed.is_empty() {
        body.exposed_ports = Some(exposed);
    }
    body.host_config = Some(host);
    Ok(body)
}

fn push_ulimit(host: &mut HostConfig, name: String, soft: i64, hard: i64) {
    host.ulimits
        .get_or_insert_with(Vec::new)
        .push(ResourcesUlimits {
            name: Some(name),
            soft: Some(soft),
            hard: Some(hard),
        });
}

impl Containerizer for DockerContainerizer {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'static, Result<Launched, ContainerizerError>> {
        let this = self.clone();
        async move {
            let Some(docker_spec) = spec.docker.clone() else {
                return Err(ContainerizerError::InvalidSpec {
                    task_id: spec.task_id.clone(),
                    reason: "not a Docker task".into(),
                });
            };
            if this.containers().contains_key(&spec.container_id) {
                return Err(ContainerizerError::ContainerExists(spec.container_id));
            }
            let body = create_body(&spec, &docker_spec, &this.agent).map_err(|reason| {
                ContainerizerError::InvalidSpec {
                    task_id: spec.task_id.clone(),
                    reason,
                }
            })?;
            this.ensure_image(&docker_spec.image, docker_spec.force_pull)
                .await?;
            let name = container_name(&spec.container_id);
            let created_at = chrono::Utc::now().timestamp() - 1;
            this.docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(name.clone()),
                        ..Default::default()
                    }),
                    body,
                )
                .await
                .map_err(docker_error("create container"))?;
            if let Err(e) = this.docker.start_container(&name, None).await {
                let _ = this
                    .docker
                    .remove_container(&name, Some(RemoveContainerOptions { force: true, ..Default::default() }))
                    .await;
                return Err(docker_error("start container")(e));
            }
            let pid = this
                .docker
                .inspect_container(&name, None)
                .await
                .ok()
                .and_then(|i| i.state?.pid)
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(0);
            let (exit_tx, exit_rx) = watch::channel(None);
            let container = Arc::new(Container {
                id: spec.container_id.clone(),
                task_id: spec.task_id.clone(),
                run_dir: spec.run_dir.clone(),
                mem_mb: spec.mem_mb,
                exit: exit_rx,
                killed: AtomicBool::new(false),
            });
            this.containers()
                .insert(spec.container_id.clone(), container.clone());
            tracing::info!(container_id = %spec.container_id, task_id = %spec.task_id, image = %docker_spec.image, pid, "launched task as docker container");
            let exit = this.supervise(container, spec.sandbox.clone(), created_at, exit_tx);
            Ok(Launched { pid, exit })
        }
        .boxed()
    }

    fn kill(
        &self,
        container_id: &str,
        grace: Duration,
    ) -> BoxFuture<'static, Result<(), ContainerizerError>> {
        let found = self.get(container_id);
        let docker = self.docker.clone();
        async move {
            let container = found?;
            if container.has_exited() {
                return Ok(());
            }
            container.killed.store(true, Ordering::SeqCst);
            let name = container_name(&container.id);
            let result = if grace.is_zero() {
                docker
                    .kill_container(
                        &name,
                        Some(KillContainerOptions {
                            signal: "SIGKILL".into(),
                        }),
                    )
                    .await
            } else {
                // Whole seconds for the daemon; never shorter than asked.
                let t = grace.as_secs_f64().ceil() as i32;
                docker
                    .stop_container(
                        &name,
                        Some(StopContainerOptions {
                            t: Some(t),
                            signal: None,
                        }),
                    )
                    .await
            };
            match result {
                Ok(()) => Ok(()),
                // Already stopped or gone.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 304 | 404 | 409,
                    ..
                }) => Ok(()),
                Err(e) => Err(docker_error("stop container")(e)),
            }
        }
        .boxed()
    }

    fn destroy(&self, container_id: &str) -> BoxFuture<'static, Result<(), ContainerizerError>> {
        let found = self.get(container_id);
        let this = self.clone();
        async move {
            let container = found?;
            let name = container_name(&container.id);
            match this
                .docker
                .remove_container(
                    &name,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await
            {
                Ok(()) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(docker_error("remove container")(e)),
            }
            if tokio::time::timeout(Duration::from_secs(10), container.wait_exit())
                .await
                .is_err()
            {
                return Err(ContainerizerError::KillTimeout {
                    container_id: container.id.clone(),
                    waited: Duration::from_secs(10),
                });
            }
            let mut map = this.containers();
            if map
                .get(&container.id)
                .is_some_and(|c| Arc::ptr_eq(c, &container))
            {
                map.remove(&container.id);
            }
            Ok(())
        }
        .boxed()
    }

    fn containers(&self) -> Vec<ContainerInfo> {
        self.containers()
            .values()
            .map(|c| ContainerInfo {
                container_id: c.id.clone(),
                task_id: c.task_id.clone(),
                pid: 0,
                cgroups: Vec::new(),
            })
            .collect()
    }

    fn recover(
        &self,
        spec: RecoverSpec,
    ) -> BoxFuture<'static, Result<Launched, ContainerizerError>> {
        let this = self.clone();
        async move {
            if this.containers().contains_key(&spec.container_id) {
                return Err(ContainerizerError::ContainerExists(spec.container_id));
            }
            let name = container_name(&spec.container_id);
            let (exit_tx, exit_rx) = watch::channel(None);
            let inspected = match this.docker.inspect_container(&name, None).await {
                Ok(i) => Some(i),
                Err(e) if not_found(&e) => None,
                Err(e) => return Err(docker_error("inspect container")(e)),
            };
            let mem_mb = inspected
                .as_ref()
                .and_then(|i| i.host_config.as_ref()?.memory)
                .map_or(0.0, |b| b as f64 / (1024.0 * 1024.0));
            let container = Arc::new(Container {
                id: spec.container_id.clone(),
                task_id: spec.task_id.clone(),
                run_dir: spec.run_dir.clone(),
                mem_mb,
                exit: exit_rx,
                killed: AtomicBool::new(false),
            });
            this.containers()
                .insert(spec.container_id.clone(), container.clone());
            let Some(inspected) = inspected else {
                tracing::info!(container_id = %spec.container_id, "docker container is gone");
                let termination = Termination {
                    exit_code: None,
                    signal: None,
                    oom_killed: false,
                    message:
                        "The container is gone: it was removed while the agent was not running"
                            .into(),
                };
                exit_tx.send_replace(Some(termination.clone()));
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(termination);
                return Ok(Launched { pid: 0, exit: rx });
            };
            let pid = inspected
                .state
                .as_ref()
                .and_then(|s| s.pid)
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(0);
            let inspected_started = inspected.state.as_ref().and_then(|s| s.started_at.clone());
            // The sandbox is the host side of the container's sandbox mount.
            let sandbox = inspected
                .mounts
                .unwrap_or_default()
                .into_iter()
                .find(|m| m.destination.as_deref() == Some(CONTAINER_SANDBOX))
                .and_then(|m| m.source)
                .map(PathBuf::from)
                .unwrap_or_else(|| spec.run_dir.clone());
            let started_at = inspected_started
                .as_deref()
                .and_then(epoch_seconds)
                .unwrap_or_else(|| chrono::Utc::now().timestamp());
            tracing::info!(container_id = %spec.container_id, pid, "recovered docker container");
            let exit = this.supervise(container, sandbox, started_at, exit_tx);
            Ok(Launched { pid, exit })
        }
        .boxed()
    }

    fn remove_orphans(&self, known: &HashSet<String>) -> BoxFuture<'static, Vec<String>> {
        let this = self.clone();
        let known = known.clone();
        async move {
            let mut filters = HashMap::new();
            filters.insert("label".to_string(), vec![format!("{LABEL_AGENT}={}", this.agent)]);
            let listed = match this
                .docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(filters),
                    ..Default::default()
                }))
                .await
            {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list docker containers to remove orphans");
                    return Vec::new();
                }
            };
            let held: HashSet<String> = this.containers().keys().cloned().collect();
            let mut removed = Vec::new();
            for c in listed {
                let Some(id) = c.labels.as_ref().and_then(|l| l.get(LABEL_CONTAINER)).cloned() else {
                    continue;
                };
                if known.contains(&id) || held.contains(&id) {
                    continue;
                }
                let name = container_name(&id);
                match this
                    .docker
                    .remove_container(&name, Some(RemoveContainerOptions { force: true, ..Default::default() }))
                    .await
                {
                    Ok(()) => {
                        tracing::warn!(container_id = %id, state = ?c.state, "removed a docker container no checkpoint names");
                        removed.push(id);
                    }
                    Err(e) => tracing::warn!(container_id = %id, error = %e, "failed to remove an orphan docker container"),
                }
            }
            removed
        }
        .boxed()
    }

    fn usage(&self, container_id: &str) -> BoxFuture<'static, Result<Usage, ContainerizerError>> {
        let found = self.get(container_id);
        let docker = self.docker.clone();
        async move {
            let container = found?;
            let name = container_name(&container.id);
            let mut stats = docker.stats(
                &name,
                Some(StatsOptions {
                    stream: false,
                    one_shot: true,
                }),
            );
            let s = match stats.next().await {
                Some(Ok(s)) => s,
                Some(Err(e)) => return Err(docker_error("container stats")(e)),
                None => return Err(ContainerizerError::Docker("no stats".into())),
            };
            let cpu = s.cpu_stats.and_then(|c| c.cpu_usage).unwrap_or_default();
            let memory = s.memory_stats.unwrap_or_default();
            let inner = memory.stats.unwrap_or_default();
            let rss = inner
                .get("total_rss")
                .or_else(|| inner.get("rss"))
                .or_else(|| inner.get("anon"))
                .copied()
                .or(memory.usage)
                .unwrap_or(0);
            Ok(Usage {
                cpus_user_time_secs: cpu.usage_in_usermode.unwrap_or(0) as f64 / 1e9,
                cpus_system_time_secs: cpu.usage_in_kernelmode.unwrap_or(0) as f64 / 1e9,
                mem_rss_bytes: rss,
                mem_limit_bytes: memory.limit,
                processes: s.pids_stats.and_then(|p| p.current).unwrap_or(0),
            })
        }
        .boxed()
    }
}

/// Runs COMMAND health checks inside a Docker task's container (`docker
/// exec`), with the task's environment.
pub struct DockerExecRunner {
    pub docker: Docker,
    pub container_id: String,
    pub env: Vec<(String, String)>,
}

impl DockerContainerizer {
    /// A runner for COMMAND checks of `container_id`.
    pub fn exec_runner(&self, container_id: &str, env: Vec<(String, String)>) -> DockerExecRunner {
        DockerExecRunner {
            docker: self.docker.clone(),
            container_id: container_id.to_string(),
            env,
        }
    }
}

impl crate::health::CommandRunner for DockerExecRunner {
    fn run(
        &self,
        command: &str,
        timeout: Duration,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<crate::health::CommandOutcome, String>>
                + Send
                + '_,
        >,
    > {
        let command = command.to_string();
        Box::pin(async move {
            let name = container_name(&self.container_id);
            let config = bollard::exec::CreateExecOptions::<String> {
                cmd: Some(vec!["/bin/sh".into(), "-c".into(), command]),
                env: Some(self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                working_dir: Some(CONTAINER_SANDBOX.into()),
                ..Default::default()
            };
            let exec = self
                .docker
                .create_exec(&name, config)
                .await
                .map_err(|e| format!("docker exec failed: {e}"))?;
            self.docker
                .start_exec(
                    &exec.id,
                    Some(bollard::exec::StartExecOptions {
                        detach: true,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| format!("docker exec failed: {e}"))?;
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let inspected = self
                    .docker
                    .inspect_exec(&exec.id)
                    .await
                    .map_err(|e| format!("docker exec failed: {e}"))?;
                if inspected.running != Some(true) {
                    let code = inspected.exit_code.unwrap_or(-1) as i32;
                    return Ok(crate::health::CommandOutcome::Exited(code));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(crate::health::CommandOutcome::Signaled(libc::SIGKILL));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerizer::{DockerPortMapping, DockerVolume};

    fn spec(docker: DockerSpec) -> LaunchSpec {
        LaunchSpec {
            container_id: "c1".into(),
            task_id: "web.1".into(),
            command: "echo hi".into(),
            env: vec![("MESOS_SANDBOX".into(), CONTAINER_SANDBOX.into())],
            sandbox: PathBuf::from("/var/lib/meseta/agent/frameworks/f/tasks/t/runs/c1"),
            cpus: 0.5,
            mem_mb: 64.0,
            hostname: None,
            run_dir: PathBuf::from("/var/lib/meseta/agent/meta/runs/c1"),
            user: None,
            docker: Some(docker.clone()),
            rootfs: None,
        }
    }

    fn docker() -> DockerSpec {
        DockerSpec {
            image: "busybox".into(),
            ..DockerSpec::default()
        }
    }

    #[test]
    fn a_shell_command_replaces_the_entrypoint_and_limits_follow_the_task() {
        let body = create_body(&spec(docker()), &docker(), "agent-1").expect("valid");
        assert_eq!(
            body.entrypoint,
            Some(vec!["/bin/sh".to_string(), "-c".to_string()])
        );
        assert_eq!(body.cmd, Some(vec!["echo hi".to_string()]));
        assert_eq!(body.working_dir.as_deref(), Some(CONTAINER_SANDBOX));
        let host = body.host_config.expect("host config");
        assert_eq!(host.cpu_shares, Some(512));
        assert_eq!(host.memory, Some(64 * 1024 * 1024));
        assert_eq!(host.memory_swap, host.memory);
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert!(host.binds.expect("binds")[0].ends_with(":/mnt/mesos/sandbox"));
        let labels = body.labels.expect("labels");
        assert_eq!(labels[LABEL_AGENT], "agent-1");
        assert_eq!(labels[LABEL_CONTAINER], "c1");
    }

    #[test]
    fn args_keep_the_image_entrypoint() {
        let d = DockerSpec {
            args: Some(vec!["--port".into(), "80".into()]),
            ..docker()
        };
        let body = create_body(&spec(d.clone()), &d, "a").expect("valid");
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.cmd, Some(vec!["--port".to_string(), "80".to_string()]));
    }

    #[test]
    fn bridge_ports_volumes_and_parameters() {
        let d = DockerSpec {
            network: DockerNetwork::Bridge,
            port_mappings: vec![
                DockerPortMapping {
                    host_port: 31001,
                    container_port: 8080,
                    protocol: "tcp".into(),
                },
                DockerPortMapping {
                    host_port: 31002,
                    container_port: 0,
                    protocol: "udp,tcp".into(),
                },
            ],
            volumes: vec![DockerVolume {
                host_path: PathBuf::from("/data"),
                container_path: "/storage".into(),
                read_only: false,
            }],
            parameters: vec![
                ("label".into(), "team=a".into()),
                ("env".into(), "X=1".into()),
                ("memory-swap".into(), "1g".into()),
                ("cap-add".into(), "NET_ADMIN".into()),
                ("ulimit".into(), "nofile=1024:2048".into()),
            ],
            ..docker()
        };
        let body = create_body(&spec(d.clone()), &d, "a").expect("valid");
        let host = body.host_config.clone().expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
        let ports = host.port_bindings.expect("bindings");
        assert_eq!(
            ports["8080/tcp"].as_ref().expect("bound")[0]
                .host_port
                .as_deref(),
            Some("31001")
        );
        assert!(ports.contains_key("31002/udp") && ports.contains_key("31002/tcp"));
        assert!(host
            .binds
            .expect("binds")
            .contains(&"/data:/storage:rw".to_string()));
        assert_eq!(host.memory_swap, Some(1 << 30));
        assert_eq!(host.cap_add, Some(vec!["NET_ADMIN".to_string()]));
        assert_eq!(host.ulimits.expect("ulimits")[0].hard, Some(2048));
        assert_eq!(body.labels.expect("labels")["team"], "a");
        assert!(body.env.expect("env").contains(&"X=1".to_string()));
    }

    #[test]
    fn unknown_parameters_are_refused_by_name() {
        let d = DockerSpec {
            parameters: vec![("frobnicate".into(), "yes".into())],
            ..docker()
        };
        let err = create_body(&spec(d.clone()), &d, "a").expect_err("refused");
        assert!(err.contains("frobnicate"), "{err}");
    }

    #[test]
    fn sizes_and_timestamps_parse() {
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("-1"), Ok(-1));
        assert!(parse_size("lots").is_err());
        let (ts, text) = split_timestamp(b"2026-12-03T15:00:00.123456789Z hello\n");
        assert_eq!(ts, Some("2026-12-03T15:00:00.123456789Z"));
        assert_eq!(text, b"hello\n");
        assert_eq!(epoch_seconds("2026-12-03T15:00:00.5Z"), Some(1_796_310_000));
        assert_eq!(
            split_timestamp(b"no timestamp"),
            (None, &b"no timestamp"[..])
        );
    }
}
