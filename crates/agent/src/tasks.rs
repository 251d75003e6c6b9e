//! Task supervision: launch, kill, the end of a task, and recovery after an
//! agent restart. Status updates go through the status update manager
//! ([`crate::status_updates`]), which checkpoints them before they are sent.
//!
//! A task is checkpointed (TaskInfo, container id, sandbox, run directory,
//! state) before its container starts, and stays checkpointed until its
//! terminal update is acknowledged; then its record, its updates and its run
//! directory are removed (the sandbox stays for operators).

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meseta_core::task::task_state_of;
use meseta_core::{Resources, TaskStateExt};
use meseta_proto::v1 as pb;
use pb::task_status::Reason;
use pb::TaskState;

use crate::checkpoint::Recovered;
use crate::containerizer::docker::CONTAINER_SANDBOX;
use crate::containerizer::{
    DockerNetwork, DockerPortMapping, DockerSpec, DockerVolume, LaunchSpec, Launched, RecoverSpec,
    TaskUser, Termination,
};
use crate::status_updates::Acked;
use crate::{user, Agent, RecoverMode};

/// Marathon's default `taskKillGracePeriodSeconds` when none is given.
const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);
/// How often overdue updates are looked for.
const RETRY_TICK: Duration = Duration::from_secs(1);
const COMPLETED_KEPT: usize = 100;

/// One task this agent runs (or ran, until its terminal update is acked).
#[derive(Debug, Clone)]
pub(crate) struct TaskRecord {
    pub framework_id: String,
    pub info: pb::TaskInfo,
    pub container_id: String,
    pub sandbox: PathBuf,
    pub run_dir: PathBuf,
    pub state: TaskState,
    /// The init's pid as the host sees it (0 until started).
    pub pid: u32,
    pub killing: bool,
    /// The user it runs as (None: the agent's).
    pub user: Option<String>,
    pub latest: Option<pb::TaskStatus>,
    /// The task's environment, for COMMAND health checks (not
    /// checkpointed: rebuilt at recovery).
    pub env: Vec<(String, String)>,
}

impl TaskRecord {
    pub(crate) fn task_id(&self) -> String {
        self.info
            .task_id
            .as_ref()
            .map(|t| t.value.clone())
            .unwrap_or_default()
    }

    fn to_checkpoint(&self) -> pb::TaskCheckpoint {
        pb::TaskCheckpoint {
            framework_id: Some(pb::FrameworkId {
                value: self.framework_id.clone(),
            }),
            task: Some(self.info.clone()),
            container_id: self.container_id.clone(),
            sandbox: self.sandbox.display().to_string(),
            run_dir: self.run_dir.display().to_string(),
            state: self.state as i32,
            killing: self.killing,
            user: self.user.clone().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct TaskTable {
    pub tasks: std::collections::HashMap<String, TaskRecord>,
    pub completed: VecDeque<TaskRecord>,
}

impl TaskTable {
    /// What the agent reports when (re-)registering: every task it holds,
    /// including those whose terminal update is not acknowledged yet.
    pub(crate) fn running_tasks(&self) -> Vec<pb::RunningTask> {
        self.tasks
            .values()
            .map(|t| pb::RunningTask {
                framework_id: Some(pb::FrameworkId {
                    value: t.framework_id.clone(),
                }),
                task: Some(t.info.clone()),
                state: t.state as i32,
                latest_status: t.latest.clone(),
            })
            .collect()
    }
}

pub(crate) fn status_update(
    framework_id: &str,
    status: pb::TaskStatus,
) -> pb::agent_message::Message {
    pb::agent_message::Message::StatusUpdate(pb::agent_message::StatusUpdate {
        framework_id: Some(pb::FrameworkId {
            value: framework_id.to_string(),
        }),
        status: Some(status),
    })
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Records a new state of `task_id` (in memory and in its checkpoint) and
/// hands the update to the status update manager, which flushes the
/// checkpoint before sending it.
async fn update(agent: &Agent, task_id: &str, state: TaskState, reason: Reason, message: String) {
    record_update(agent, task_id, state, reason, message, None).await
}

/// [`update`], carrying a health check result.
async fn record_update(
    agent: &Agent,
    task_id: &str,
    state: TaskState,
    reason: Reason,
    message: String,
    healthy: Option<bool>,
) {
    let agent_id = agent.agent_id().unwrap_or_default();
    let (framework_id, status) = {
        let mut table = agent.tasks();
        let Some(task) = table.tasks.get_mut(task_id) else {
            return;
        };
        let status = pb::TaskStatus {
            task_id: Some(pb::TaskId {
                value: task_id.to_string(),
            }),
            state: state as i32,
            message,
            source: pb::task_status::Source::Executor as i32,
            reason: reason as i32,
            agent_id: Some(pb::AgentId { value: agent_id }),
            timestamp: now_secs(),
            uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
            pid: task.pid,
            healthy,
            ..Default::default()
        };
        task.state = state;
        task.latest = Some(status.clone());
        if let Err(e) = agent.checkpoint.put_task(&task.to_checkpoint()) {
            tracing::error!(task = %task_id, error = %e, "could not checkpoint the task's state");
        }
        (task.framework_id.clone(), status)
    };
    agent.updates.update(&framework_id, status).await;
}

/// The framework acknowledged an update. Once the terminal one is, the task
/// is forgotten: its checkpoint and run directory go, its record moves to
/// the completed tasks.
pub(crate) fn acknowledge(agent: &Arc<Agent>, task_id: &str, uuid: &[u8]) {
    if agent.updates.acknowledge(task_id, uuid) != (Acked::Head { done: true }) {
        return;
    }
    let done = {
        let mut table = agent.tasks();
        let done = table.tasks.remove(task_id);
        if let Some(done) = &done {
            table.completed.push_back(done.clone());
            while table.completed.len() > COMPLETED_KEPT {
                table.completed.pop_front();
            }
        }
        done
    };
    let Some(done) = done else {
        return;
    };
    forget(agent, &done);
}

/// Removes what the checkpoint holds of a finished task (and of its
/// framework, when it was the last task of it).
fn forget(agent: &Arc<Agent>, done: &TaskRecord) {
    let task_id = done.task_id();
    if let Err(e) = agent.checkpoint.remove_task(&task_id) {
        tracing::warn!(task = %task_id, error = %e, "could not remove the task's checkpoint");
    }
    let last_of_framework = !agent
        .tasks()
        .tasks
        .values()
        .any(|t| t.framework_id == done.framework_id);
    if last_of_framework {
        agent.frameworks().remove(&done.framework_id);
        if let Err(e) = agent.checkpoint.remove_framework(&done.framework_id) {
            tracing::warn!(framework = %done.framework_id, error = %e, "could not remove the framework's checkpoint");
        }
    }
    let run_dir = done.run_dir.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = std::fs::remove_dir_all(&run_dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %run_dir.display(), error = %e, "could not remove a run directory");
            }
        }
    });
}

/// Resends overdue updates until they are acknowledged.
pub(crate) async fn retry_loop(agent: Arc<Agent>) {
    loop {
        tokio::time::sleep(RETRY_TICK).await;
        agent.updates.resend_due(Instant::now());
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The command line a task runs under `sh -c`.
fn command_line(command: &pb::CommandInfo) -> String {
    if command.shell || command.arguments.is_empty() {
        command.value.clone()
    } else {
        let args: Vec<String> = command.arguments.iter().map(|a| shell_quote(a)).collect();
        args.join(" ")
    }
}

/// Where a task's command sees its sandbox.
#[derive(Debug, Clone, PartialEq)]
enum Placement {
    /// On the host's filesystem (a native task without an image).
    Host,
    /// Inside a container with its own root filesystem: the sandbox is at
    /// `/mnt/mesos/sandbox`; `image_env` is what the image sets (native
    /// tasks with an image; empty for Docker, whose daemon adds the image's
    /// environment itself).
    Container { image_env: Vec<(String, String)> },
}

/// The task's environment: a few of the agent's own basics (host tasks) or
/// the image's (containers), the command's variables (Marathon's PORTs,
/// HOST…), then what Mesos sets.
fn environment(
    agent: &Agent,
    framework_id: &str,
    task: &pb::TaskInfo,
    sandbox: &Path,
    user: Option<&TaskUser>,
    placement: &Placement,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    match placement {
        Placement::Host => {
            for key in ["PATH", "LANG", "LC_ALL", "TZ"] {
                if let Ok(v) = std::env::var(key) {
                    env.push((key.to_string(), v));
                }
            }
            if !env.iter().any(|(k, _)| k == "PATH") {
                env.push((
                    "PATH".into(),
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ));
            }
        }
        Placement::Container { image_env } => env.extend(image_env.iter().cloned()),
    }
    let set = |env: &mut Vec<(String, String)>, k: &str, v: String| {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v));
    };
    if let Some(vars) = task.command.as_ref().and_then(|c| c.environment.as_ref()) {
        for v in &vars.variables {
            set(&mut env, &v.name, v.value.clone());
        }
    }
    let host_sandbox = sandbox.display().to_string();
    let task_id = task
        .task_id
        .as_ref()
        .map(|t| t.value.clone())
        .unwrap_or_default();
    match placement {
        Placement::Host => {
            set(&mut env, "MESOS_SANDBOX", host_sandbox.clone());
            set(&mut env, "HOME", host_sandbox.clone());
        }
        Placement::Container { image_env } => {
            set(&mut env, "MESOS_SANDBOX", CONTAINER_SANDBOX.into());
            if !image_env.iter().any(|(k, _)| k == "PATH") {
                set(
                    &mut env,
                    "PATH",
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                );
            }
        }
    }
    set(&mut env, "MESOS_DIRECTORY", host_sandbox);
    if let Some(user) = user {
        set(&mut env, "USER", user.name.clone());
        set(&mut env, "MESOS_USER", user.name.clone());
    }
    set(&mut env, "MESOS_TASK_ID", task_id);
    set(&mut env, "MESOS_FRAMEWORK_ID", framework_id.to_string());
    set(
        &mut env,
        "MESOS_AGENT_ID",
        agent.agent_id().unwrap_or_default(),
    );
    set(&mut env, "MESOS_AGENT_ENDPOINT", agent.address.clone());
    if !env.iter().any(|(k, _)| k == "HOST") {
        set(&mut env, "HOST", agent.hostname.clone());
    }
    env
}

/// Whether the task runs in a Docker container.
fn is_docker(task: &pb::TaskInfo) -> bool {
    task.container
        .as_ref()
        .is_some_and(|c| c.r#type == pb::container_info::Type::Docker as i32)
}

/// The image a native (`MESOS`) task runs in, if it names one.
fn native_image(task: &pb::TaskInfo) -> Option<String> {
    task.container
        .as_ref()
        .filter(|c| c.r#type == pb::container_info::Type::Mesos as i32)
        .and_then(|c| c.docker.as_ref())
        .map(|d| d.image.clone())
        .filter(|i| !i.is_empty())
}

/// What a Docker task asks of its container, from its TaskInfo. Relative
/// host paths of volumes are made inside the sandbox.
fn docker_spec(task: &pb::TaskInfo, sandbox: &Path) -> Result<DockerSpec, String> {
    let container = task.container.clone().unwrap_or_default();
    let docker = container.docker.clone().unwrap_or_default();
    if docker.image.trim().is_empty() {
        return Err("the Docker task names no image".into());
    }
    use pb::container_info::docker_info::Network;
    let network = match Network::try_from(docker.network).unwrap_or(Network::Host) {
        Network::Host => DockerNetwork::Host,
        Network::Bridge => DockerNetwork::Bridge,
        Network::None => DockerNetwork::None,
        Network::User => DockerNetwork::User(docker.network_name.clone()),
    };
    let mut volumes = Vec::new();
    for v in &container.volumes {
        if v.host_path.is_empty() || v.container_path.is_empty() {
            return Err(format!(
                "volume '{}' needs a hostPath and a containerPath (persistent and external volumes are not supported)",
                v.container_path
            ));
        }
        let host = Path::new(&v.host_path);
        let host_path = if host.is_absolute() {
            host.to_path_buf()
        } else {
            if host
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(format!(
                    "volume hostPath '{}' must stay inside the sandbox",
                    v.host_path
                ));
            }
            sandbox.join(host)
        };
        volumes.push(DockerVolume {
            host_path,
            container_path: v.container_path.clone(),
            read_only: v.mode == pb::volume::Mode::Ro as i32,
        });
    }
    let command = task.command.clone().unwrap_or_default();
    Ok(DockerSpec {
        image: docker.image.clone(),
        force_pull: docker.force_pull_image,
        network,
        port_mappings: docker
            .port_mappings
            .iter()
            .map(|m| DockerPortMapping {
                host_port: m.host_port,
                container_port: m.container_port,
                protocol: if m.protocol.is_empty() {
                    "tcp".into()
                } else {
                    m.protocol.clone()
                },
            })
            .collect(),
        volumes,
        parameters: docker
            .parameters
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect(),
        privileged: docker.privileged,
        labels: task
            .labels
            .as_ref()
            .map(|l| {
                l.labels
                    .iter()
                    .map(|l| (l.key.clone(), l.value.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        args: (!command.shell && !command.arguments.is_empty()).then(|| command.arguments.clone()),
    })
}

/// RunTask from the master: record and checkpoint the task, start it in the
/// containerizer, report STARTING / RUNNING, then supervise it to its end.
pub(crate) fn launch(agent: Arc<Agent>, framework: Option<pb::FrameworkInfo>, task: pb::TaskInfo) {
    let Some(task_id) = task.task_id.as_ref().map(|t| t.value.clone()) else {
        tracing::warn!("ignoring a RunTask without a task id");
        return;
    };
    let framework_id = framework
        .as_ref()
        .and_then(|f| f.id.as_ref())
        .map(|f| f.value.clone())
        .unwrap_or_default();
    let container_id = uuid::Uuid::new_v4().to_string();
    let sandbox = agent
        .config
        .work_dir
        .join("frameworks")
        .join(sanitize(&framework_id))
        .join("tasks")
        .join(sanitize(&task_id))
        .join("runs")
        .join(&container_id);
    let run_dir = agent.run_dir(&container_id);
    let command_user = task
        .command
        .as_ref()
        .map(|c| c.user.clone())
        .unwrap_or_default();
    let framework_user = framework
        .as_ref()
        .map(|f| f.user.clone())
        .unwrap_or_default();
    let resolved = user::resolve(agent.config.switch_user, &command_user, &framework_user);
    {
        let mut table = agent.tasks();
        if table.tasks.contains_key(&task_id) {
            tracing::warn!(task = %task_id, "ignoring a duplicate RunTask");
            return;
        }
        table.tasks.insert(
            task_id.clone(),
            TaskRecord {
                framework_id: framework_id.clone(),
                info: task.clone(),
                container_id: container_id.clone(),
                sandbox: sandbox.clone(),
                run_dir: run_dir.clone(),
                state: TaskState::TaskStaging,
                pid: 0,
                killing: false,
                user: resolved
                    .as_ref()
                    .ok()
                    .and_then(|u| u.as_ref().map(|u| u.name.clone())),
                latest: None,
                env: Vec::new(),
            },
        );
    }
    if let Some(info) = framework {
        let new = agent
            .frameworks()
            .insert(framework_id.clone(), info.clone())
            .as_ref()
            != Some(&info);
        if new {
            if let Err(e) = agent.checkpoint.put_framework(&info) {
                tracing::error!(framework = %framework_id, error = %e, "could not checkpoint the framework");
            }
        }
    }
    tokio::spawn(async move {
        let started = match resolved {
            Ok(task_user) => {
                start(
                    &agent,
                    &framework_id,
                    &task,
                    &task_id,
                    &container_id,
                    &sandbox,
                    &run_dir,
                    task_user,
                )
                .await
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(message) = started {
            tracing::warn!(task = %task_id, error = %message, "task launch failed");
            update(
                &agent,
                &task_id,
                TaskState::TaskFailed,
                Reason::ContainerLaunchFailed,
                message,
            )
            .await;
        }
    });
}

/// Creates the sandbox (owned by the task's user), its `stdout`/`stderr`,
/// and the run directory.
fn prepare_dirs(sandbox: &Path, run_dir: &Path, user: Option<&TaskUser>) -> Result<(), String> {
    std::fs::create_dir_all(sandbox)
        .map_err(|e| format!("cannot create sandbox {}: {e}", sandbox.display()))?;
    std::fs::create_dir_all(run_dir)
        .map_err(|e| format!("cannot create run directory {}: {e}", run_dir.display()))?;
    let mut owned = vec![sandbox.to_path_buf()];
    for name in ["stdout", "stderr"] {
        let path = sandbox.join(name);
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        owned.push(path);
    }
    if let Some(user) = user {
        for path in owned {
            std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid)).map_err(|e| {
                format!(
                    "cannot give {} to user '{}': {e}",
                    path.display(),
                    user.name
                )
            })?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn start(
    agent: &Arc<Agent>,
    framework_id: &str,
    task: &pb::TaskInfo,
    task_id: &str,
    container_id: &str,
    sandbox: &Path,
    run_dir: &Path,
    task_user: Option<TaskUser>,
) -> Result<(), String> {
    let docker = is_docker(task);
    let command = task.command.as_ref().map(command_line).unwrap_or_default();
    // A Docker image brings its own command; anything else needs one.
    if command.trim().is_empty() && !docker {
        return Err("the task has no command".into());
    }
    let resources = Resources::from_proto(&task.resources).map_err(|e| e.to_string())?;
    // Docker tasks run as their image says (a `user` parameter overrides).
    let task_user = if docker { None } else { task_user };
    {
        let (sandbox, run_dir, task_user) = (
            sandbox.to_path_buf(),
            run_dir.to_path_buf(),
            task_user.clone(),
        );
        tokio::task::spawn_blocking(move || prepare_dirs(&sandbox, &run_dir, task_user.as_ref()))
            .await
            .map_err(|e| format!("preparing the sandbox failed: {e}"))??;
    }
    // Flushes the task's checkpoint too: it is on disk before the container
    // exists.
    update(
        agent,
        task_id,
        TaskState::TaskStarting,
        Reason::None,
        String::new(),
    )
    .await;
    // Artifact staging, in this task's own flow: it shows as TASK_STARTING
    // and never holds up other launches.
    if let Some(uris) = task
        .command
        .as_ref()
        .map(|c| &c.uris)
        .filter(|u| !u.is_empty())
    {
        let owner = task_user.as_ref().map(|u| (u.uid, u.gid));
        agent
            .fetcher
            .fetch(uris, sandbox, owner)
            .await
            .map_err(|e| e.to_string())?;
    }
    let (docker_spec, rootfs, placement) = if docker {
        let spec = docker_spec(task, sandbox)?;
        for v in &spec.volumes {
            if v.host_path.starts_with(sandbox) {
                std::fs::create_dir_all(&v.host_path)
                    .map_err(|e| format!("cannot create volume {}: {e}", v.host_path.display()))?;
            }
        }
        (
            Some(spec),
            None,
            Placement::Container {
                image_env: Vec::new(),
            },
        )
    } else if let Some(image) = native_image(task) {
        let provisioned = agent
            .images
            .provision(&image)
            .await
            .map_err(|e| e.to_string())?;
        let placement = Placement::Container {
            image_env: provisioned.env,
        };
        (None, Some(provisioned.rootfs), placement)
    } else {
        (None, None, Placement::Host)
    };
    let env = environment(
        agent,
        framework_id,
        task,
        sandbox,
        task_user.as_ref(),
        &placement,
    );
    if let Some(t) = agent.tasks().tasks.get_mut(task_id) {
        t.env = env.clone();
    }
    let spec = LaunchSpec {
        container_id: container_id.to_string(),
        task_id: task_id.to_string(),
        command,
        env,
        sandbox: sandbox.to_path_buf(),
        cpus: resources.scalar("cpus"),
        mem_mb: resources.scalar("mem"),
        hostname: task
            .container
            .as_ref()
            .map(|c| c.hostname.clone())
            .filter(|h| !h.is_empty() && rootfs.is_some()),
        run_dir: run_dir.to_path_buf(),
        user: task_user,
        docker: docker_spec,
        rootfs,
    };
    let launched = agent
        .containerizer
        .launch(spec)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(task = %task_id, pid = launched.pid, sandbox = %sandbox.display(), "task running");
    running(agent, task_id, container_id, launched).await;
    Ok(())
}

/// The container runs: record its pid, report RUNNING (unless it already
/// was), honour a kill that arrived meanwhile, and supervise it.
async fn running(agent: &Arc<Agent>, task_id: &str, container_id: &str, launched: Launched) {
    let (killing, grace, reported) = {
        let mut table = agent.tasks();
        match table.tasks.get_mut(task_id) {
            Some(t) => {
                t.pid = launched.pid;
                (
                    t.killing,
                    kill_grace(&t.info, None),
                    t.state == TaskState::TaskRunning,
                )
            }
            None => (false, DEFAULT_KILL_GRACE, true),
        }
    };
    // A recovered launch that never started its command (pid 0) did not run.
    if !reported && launched.pid != 0 {
        update(
            agent,
            task_id,
            TaskState::TaskRunning,
            Reason::None,
            String::new(),
        )
        .await;
    }
    if killing {
        // A kill arrived while the container was starting (or before the
        // agent restarted).
        let _ = agent.containerizer.kill(container_id, grace).await;
    } else if launched.pid != 0 {
        start_health(agent, task_id, container_id, launched.pid);
    }
    let agent = agent.clone();
    let (task_id, container_id) = (task_id.to_string(), container_id.to_string());
    tokio::spawn(async move {
        let termination = launched.exit.await.unwrap_or_else(|_| Termination {
            exit_code: None,
            signal: None,
            oom_killed: false,
            message: "the containerizer lost the task".into(),
        });
        finish(&agent, &task_id, &container_id, termination).await;
    });
}

async fn finish(agent: &Arc<Agent>, task_id: &str, container_id: &str, t: Termination) {
    stop_health(agent, task_id);
    let killing = agent.tasks().tasks.get(task_id).is_some_and(|r| r.killing);
    let (state, reason) = if t.oom_killed {
        (TaskState::TaskFailed, Reason::ContainerLimitationMemory)
    } else if killing {
        (TaskState::TaskKilled, Reason::None)
    } else if t.success() {
        (TaskState::TaskFinished, Reason::None)
    } else {
        (TaskState::TaskFailed, Reason::CommandExecutorFailed)
    };
    tracing::info!(task = %task_id, state = state.mesos_name(), message = %t.message, "task ended");
    update(agent, task_id, state, reason, t.message).await;
    if let Err(e) = agent.containerizer.destroy(container_id).await {
        tracing::warn!(task = %task_id, error = %e, "could not clean up the container");
    }
}

/// Starts the task's health check, if it has one: network probes go to the
/// task's ports on this host; COMMAND checks run inside the task's container
/// (its namespaces and cgroups, or `docker exec`).
fn start_health(agent: &Arc<Agent>, task_id: &str, container_id: &str, pid: u32) {
    let Some(record) = agent.tasks().tasks.get(task_id).cloned() else {
        return;
    };
    let Some(check) = record.info.health_check.as_ref() else {
        return;
    };
    let spec = match crate::health::HealthSpec::from_proto(check) {
        Ok(spec) => spec,
        Err(e) => {
            tracing::warn!(task = %task_id, error = %e, "the task's health check cannot run");
            return;
        }
    };
    let in_container = is_docker(&record.info) || native_image(&record.info).is_some();
    let env = if record.env.is_empty() {
        let placement = if in_container {
            Placement::Container {
                image_env: Vec::new(),
            }
        } else {
            Placement::Host
        };
        environment(
            agent,
            &record.framework_id,
            &record.info,
            &record.sandbox,
            None,
            &placement,
        )
    } else {
        record.env.clone()
    };
    let runner: Box<dyn crate::health::CommandRunner> = if is_docker(&record.info) {
        match &agent.docker {
            Some(docker) => Box::new(docker.exec_runner(container_id, env)),
            None => return,
        }
    } else if agent.containerizer.name() == "linux" {
        let cgroups = agent
            .containerizer
            .containers()
            .into_iter()
            .find(|c| c.container_id == container_id)
            .map(|c| c.cgroups)
            .unwrap_or_default();
        let user = record
            .user
            .as_deref()
            .and_then(|u| nix::unistd::User::from_name(u).ok().flatten())
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()));
        Box::new(crate::health::NamespaceRunner {
            pid,
            cgroup_procs: cgroups.iter().map(|d| d.join("cgroup.procs")).collect(),
            workdir: if in_container {
                PathBuf::from(CONTAINER_SANDBOX)
            } else {
                record.sandbox.clone()
            },
            env,
            user,
        })
    } else {
        Box::new(crate::health::ShellRunner {
            sandbox: record.sandbox.clone(),
            env,
        })
    };
    let target = crate::health::Target {
        host: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    };
    let (reporting, id) = (agent.clone(), task_id.to_string());
    let checker = crate::health::Checker::spawn(spec, target, runner, move |result| {
        let (agent, id) = (reporting.clone(), id.clone());
        tokio::spawn(async move { health_update(&agent, &id, result).await });
    });
    tracing::debug!(task = %task_id, "health check started");
    agent
        .health
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(task_id.to_string(), checker);
}

fn stop_health(agent: &Agent, task_id: &str) {
    agent
        .health
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(task_id);
}

/// A health check result becomes a status update in the task's current
/// state, with `healthy` set (Mesos' REASON_TASK_HEALTH_CHECK_STATUS_UPDATED).
async fn health_update(agent: &Arc<Agent>, task_id: &str, result: crate::health::HealthResult) {
    let state = {
        let table = agent.tasks();
        match table.tasks.get(task_id) {
            Some(t) if !t.state.is_terminal() && !t.killing => t.state,
            _ => return,
        }
    };
    if !result.healthy {
        tracing::info!(task = %task_id, failures = result.consecutive_failures, cause = ?result.cause, "health check failed");
    }
    record_update(
        agent,
        task_id,
        state,
        Reason::TaskHealthCheckStatusUpdated,
        result.cause.unwrap_or_default(),
        Some(result.healthy),
    )
    .await;
}

fn kill_grace(task: &pb::TaskInfo, policy: Option<pb::KillPolicy>) -> Duration {
    policy
        .or(task.kill_policy)
        .map(|p| p.grace_period_seconds)
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
        .unwrap_or(DEFAULT_KILL_GRACE)
}

/// KillTask: SIGTERM, then SIGKILL after the grace period. The exit is
/// reported TASK_KILLED. Unknown tasks are reported TASK_LOST.
pub(crate) fn kill(agent: Arc<Agent>, task_id: &str, policy: Option<pb::KillPolicy>) {
    let found = {
        let mut table = agent.tasks();
        table.tasks.get_mut(task_id).map(|t| {
            let first = !t.killing;
            t.killing = true;
            if first {
                if let Err(e) = agent.checkpoint.put_task(&t.to_checkpoint()) {
                    tracing::warn!(task = %task_id, error = %e, "could not checkpoint the kill");
                }
            }
            (
                t.container_id.clone(),
                kill_grace(&t.info, policy),
                t.pid != 0,
                task_state_of(t.state as i32).is_terminal(),
                first,
            )
        })
    };
    match found {
        Some((_, _, _, true, _)) => {}
        Some((container_id, grace, started, false, first)) => {
            if !first {
                tracing::debug!(task = %task_id, "kill requested again");
            }
            stop_health(&agent, task_id);
            if started {
                tracing::info!(task = %task_id, grace_secs = grace.as_secs_f64(), "killing task");
                tokio::spawn(async move {
                    if let Err(e) = agent.containerizer.kill(&container_id, grace).await {
                        tracing::warn!(container = %container_id, error = %e, "kill failed");
                    }
                });
            }
        }
        None => {
            let agent_id = agent.agent_id().unwrap_or_default();
            let status = pb::TaskStatus {
                task_id: Some(pb::TaskId {
                    value: task_id.to_string(),
                }),
                state: TaskState::TaskLost as i32,
                message: "task is unknown to the agent".into(),
                source: pb::task_status::Source::Agent as i32,
                reason: Reason::TaskUnknown as i32,
                agent_id: Some(pb::AgentId { value: agent_id }),
                timestamp: now_secs(),
                ..Default::default()
            };
            let fid = agent
                .tasks()
                .completed
                .iter()
                .find(|t| t.info.task_id.as_ref().is_some_and(|i| i.value == task_id))
                .map(|t| t.framework_id.clone())
                .unwrap_or_default();
            agent.link.send(status_update(&fid, status));
        }
    }
}

/// Kill every task of a framework (TEARDOWN).
pub(crate) fn kill_framework(agent: Arc<Agent>, framework_id: &str) {
    let ids: Vec<String> = agent
        .tasks()
        .tasks
        .iter()
        .filter(|(_, t)| t.framework_id == framework_id)
        .map(|(id, _)| id.clone())
        .collect();
    for id in ids {
        kill(agent.clone(), &id, None);
    }
}

/// Stopping with [`crate::StopMode::KillTasks`]: kill every task and wait
/// (bounded) for their ends to be reported.
pub(crate) async fn kill_all(agent: &Arc<Agent>) {
    let ids: Vec<(String, Duration)> = agent
        .tasks()
        .tasks
        .values()
        .filter(|t| !t.state.is_terminal())
        .map(|t| (t.task_id(), kill_grace(&t.info, None)))
        .collect();
    if ids.is_empty() {
        return;
    }
    tracing::info!(tasks = ids.len(), "stopping: killing this agent's tasks");
    for (id, _) in &ids {
        kill(agent.clone(), id, None);
    }
    let longest = ids.iter().map(|(_, g)| *g).max().unwrap_or_default();
    let deadline = Instant::now() + longest + Duration::from_secs(10);
    while Instant::now() < deadline {
        let alive = agent.tasks().tasks.values().any(|t| !t.state.is_terminal());
        if !alive {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Whatever is left (a container that ignores SIGKILL cannot be, but a
    // launch still in flight can) is destroyed without waiting for it.
    let left: Vec<String> = agent
        .tasks()
        .tasks
        .values()
        .filter(|t| !t.state.is_terminal())
        .map(|t| t.container_id.clone())
        .collect();
    for cid in left {
        let _ = agent.containerizer.destroy(&cid).await;
    }
}

/// Waits (at most `patience`) until every update was acknowledged.
pub(crate) async fn wait_delivered(agent: &Arc<Agent>, patience: Duration) {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        let pending = {
            let ids: Vec<String> = agent.tasks().tasks.keys().cloned().collect();
            ids.iter().any(|id| agent.updates.has_pending(id))
        };
        if !pending || !agent.link.connected() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What recovery found, for the one log line it ends with.
#[derive(Debug, Default)]
struct RecoverySummary {
    reattached: usize,
    ended: usize,
    failed: usize,
    killed: usize,
    orphans: usize,
}

/// At start: rebuild the task table from the checkpoint and re-attach to
/// every container still running (or, with `--recover cleanup`, kill them
/// all and forget them); then kill whatever container of this agent no
/// checkpoint names. Tasks that ended while the agent was down are reported
/// with the status their init recorded. Runs before the first registration.
pub(crate) async fn recover(agent: &Arc<Agent>, recovered: Recovered) {
    let mut summary = RecoverySummary::default();
    *agent.frameworks() = recovered.frameworks;
    let mut known = HashSet::new();
    let mut attach = Vec::new();
    for task in recovered.tasks {
        let cp = task.checkpoint;
        let Some(info) = cp.task.clone() else {
            continue;
        };
        let framework_id = cp
            .framework_id
            .as_ref()
            .map(|f| f.value.clone())
            .unwrap_or_default();
        let state = task_state_of(cp.state);
        let record = TaskRecord {
            framework_id: framework_id.clone(),
            info,
            container_id: cp.container_id.clone(),
            sandbox: PathBuf::from(&cp.sandbox),
            run_dir: if cp.run_dir.is_empty() {
                agent.run_dir(&cp.container_id)
            } else {
                PathBuf::from(&cp.run_dir)
            },
            state,
            pid: 0,
            killing: cp.killing,
            user: Some(cp.user.clone()).filter(|u| !u.is_empty()),
            latest: task.updates.last().map(|(_, s)| s.clone()),
            env: Vec::new(),
        };
        let task_id = record.task_id();
        if agent.config.recover == RecoverMode::Reconnect {
            agent.updates.recover(&task_id, &framework_id, task.updates);
        }
        if !state.is_terminal() {
            known.insert(record.container_id.clone());
            attach.push((
                task_id.clone(),
                record.container_id.clone(),
                record.run_dir.clone(),
            ));
        }
        agent.tasks().tasks.insert(task_id, record);
    }
    for (task_id, container_id, run_dir) in attach {
        let docker = agent
            .tasks()
            .tasks
            .get(&task_id)
            .is_some_and(|t| is_docker(&t.info));
        let spec = RecoverSpec {
            container_id: container_id.clone(),
            task_id: task_id.clone(),
            run_dir,
            docker,
        };
        match agent.containerizer.recover(spec).await {
            Ok(launched) if agent.config.recover == RecoverMode::Cleanup => {
                let _ = agent
                    .containerizer
                    .kill(&container_id, Duration::ZERO)
                    .await;
                let _ = launched.exit.await;
                let _ = agent.containerizer.destroy(&container_id).await;
                tracing::info!(task = %task_id, "killed a task found at start (--recover cleanup)");
                summary.killed += 1;
            }
            Ok(launched) => {
                summary.reattached += 1;
                running(agent, &task_id, &container_id, launched).await;
            }
            Err(e) => {
                summary.failed += 1;
                tracing::warn!(task = %task_id, error = %e, "could not re-attach to the task");
                update(
                    agent,
                    &task_id,
                    TaskState::TaskFailed,
                    Reason::ExecutorTerminated,
                    format!("The agent could not re-attach to the task after its restart: {e}"),
                )
                .await;
            }
        }
    }
    if agent.config.recover == RecoverMode::Cleanup {
        // Nothing survives: the master reports every task it knew here lost
        // when this agent re-registers without them.
        known.clear();
        let records: Vec<TaskRecord> = agent.tasks().tasks.drain().map(|(_, r)| r).collect();
        for record in &records {
            agent.updates.forget(&record.task_id());
            forget(agent, record);
        }
    }
    let orphans = agent.containerizer.remove_orphans(&known).await;
    summary.orphans = orphans.len();
    summary.ended = agent
        .tasks()
        .tasks
        .values()
        .filter(|t| t.state.is_terminal())
        .count();
    if let Err(e) = agent.checkpoint.flush().await {
        tracing::error!(error = %e, "could not flush the checkpoint after recovery");
    }
    let total = summary.reattached + summary.ended + summary.failed + summary.killed;
    if total + summary.orphans > 0 {
        tracing::info!(
            reattached = summary.reattached,
            ended_while_down = summary.ended,
            failed = summary.failed,
            killed = summary.killed,
            orphans_killed = summary.orphans,
            mode = ?agent.config.recover,
            "recovered the tasks of the previous agent run"
        );
    }
}

/// A path component from an id (ids come from the network).
fn sanitize(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        "_".to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_ids_into_path_components() {
        assert_eq!(sanitize("web.1234"), "web.1234");
        assert_eq!(sanitize("../etc"), ".._etc");
        assert_eq!(sanitize(".."), "_");
        assert_eq!(sanitize(""), "_");
        assert_eq!(sanitize("a/b"), "a_b");
    }

    #[test]
    fn command_lines() {
        let shell = pb::CommandInfo {
            value: "echo $HOME".into(),
            shell: true,
            ..Default::default()
        };
        assert_eq!(command_line(&shell), "echo $HOME");
        let argv = pb::CommandInfo {
            value: "/bin/echo".into(),
            shell: false,
            arguments: vec!["/bin/echo".into(), "it's".into()],
            ..Default::default()
        };
        assert_eq!(command_line(&argv), r"'/bin/echo' 'it'\''s'");
    }
}

/// The task logic against the fake containerizer: no root, no processes.
#[cfg(test)]
mod supervision_tests {
    use super::*;
    use crate::containerizer::FakeContainerizer;
    use crate::test_support::{task_info, test_agent};

    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn states(agent: &Agent, task_id: &str) -> Vec<TaskState> {
        agent
            .updates
            .unacknowledged(task_id)
            .iter()
            .map(|s| task_state_of(s.state))
            .collect()
    }

    /// Acknowledges the head update of `task_id`.
    fn ack_head(agent: &Arc<Agent>, task_id: &str) {
        let uuid = agent.updates.unacknowledged(task_id)[0].uuid.clone();
        acknowledge(agent, task_id, &uuid);
    }

    fn framework() -> Option<pb::FrameworkInfo> {
        Some(pb::FrameworkInfo {
            id: Some(pb::FrameworkId { value: "f1".into() }),
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn a_task_reports_each_state_in_order_and_is_forgotten_once_acknowledged() {
        let fake = FakeContainerizer::new();
        let (agent, _dir) = test_agent(fake.clone());
        launch(agent.clone(), framework(), task_info("t1", "sleep 1"));
        eventually("the launch", || fake.running().len() == 1).await;
        eventually("RUNNING", || states(&agent, "t1").len() == 2).await;
        assert_eq!(
            states(&agent, "t1"),
            vec![TaskState::TaskStarting, TaskState::TaskRunning]
        );
        let cp = agent.checkpoint.load().expect("load");
        assert_eq!(cp.tasks.len(), 1, "the task is checkpointed");
        assert_eq!(cp.tasks[0].updates.len(), 2, "so are its updates");
        assert!(cp.frameworks.contains_key("f1"));

        let container = fake.running()[0].clone();
        fake.exit(&container, Termination::exited(0));
        eventually("FINISHED", || states(&agent, "t1").len() == 3).await;
        ack_head(&agent, "t1");
        ack_head(&agent, "t1");
        assert!(
            agent.tasks().tasks.contains_key("t1"),
            "terminal not acked yet"
        );
        ack_head(&agent, "t1");
        assert!(!agent.tasks().tasks.contains_key("t1"));
        assert_eq!(agent.tasks().completed.len(), 1);
        let cp = agent.checkpoint.load().expect("load");
        assert!(cp.tasks.is_empty() && cp.frameworks.is_empty(), "{cp:?}");
    }

    #[tokio::test]
    async fn a_restarted_agent_reattaches_and_keeps_the_unacknowledged_updates() {
        let fake = FakeContainerizer::new();
        let (before, dir) = test_agent(fake.clone());
        launch(before.clone(), framework(), task_info("t1", "sleep 1"));
        launch(before.clone(), framework(), task_info("t2", "sleep 1"));
        eventually("both running", || {
            ["t1", "t2"].iter().all(|t| states(&before, t).len() == 2)
        })
        .await;
        ack_head(&before, "t1");
        let pids: Vec<u32> = {
            let mut p: Vec<u32> = before.tasks().tasks.values().map(|t| t.pid).collect();
            p.sort();
            p
        };

        // The agent process dies; its containers run on.
        fake.restart();
        let checkpoint = before.checkpoint.clone();
        drop(before);
        let after = crate::test_support::agent_on(fake.clone(), checkpoint.clone(), dir.path());
        recover(&after, checkpoint.load().expect("load")).await;
        let mut recovered: Vec<u32> = after.tasks().tasks.values().map(|t| t.pid).collect();
        recovered.sort();
        assert_eq!(recovered, pids, "same containers, same pids");
        assert_eq!(states(&after, "t1"), vec![TaskState::TaskRunning]);
        assert_eq!(
            states(&after, "t2"),
            vec![TaskState::TaskStarting, TaskState::TaskRunning]
        );

        // A kill reaches the re-attached container and ends as KILLED.
        kill(after.clone(), "t1", None);
        eventually("the kill", || !fake.kills().is_empty()).await;
        eventually("KILLED", || {
            states(&after, "t1").last() == Some(&TaskState::TaskKilled)
        })
        .await;
    }

    #[tokio::test]
    async fn an_exit_while_the_agent_was_down_is_reported_at_recovery() {
        let fake = FakeContainerizer::new();
        let (before, dir) = test_agent(fake.clone());
        launch(before.clone(), framework(), task_info("t1", "exit 3"));
        eventually("running", || states(&before, "t1").len() == 2).await;
        fake.restart();
        let container = fake.running()[0].clone();
        fake.exit(&container, Termination::exited(3));
        let checkpoint = before.checkpoint.clone();
        drop(before);
        let after = crate::test_support::agent_on(fake.clone(), checkpoint.clone(), dir.path());
        recover(&after, checkpoint.load().expect("load")).await;
        eventually("FAILED", || states(&after, "t1").len() == 3).await;
        let last = after.updates.unacknowledged("t1").pop().expect("an update");
        assert_eq!(task_state_of(last.state), TaskState::TaskFailed);
        assert_eq!(last.message, "Command exited with status 3");
    }

    #[tokio::test]
    async fn recover_cleanup_kills_everything_and_forgets_it() {
        let fake = FakeContainerizer::new();
        let (before, dir) = test_agent(fake.clone());
        launch(before.clone(), framework(), task_info("t1", "sleep 1"));
        eventually("running", || states(&before, "t1").len() == 2).await;
        fake.restart();
        let checkpoint = before.checkpoint.clone();
        drop(before);
        let mut after = crate::test_support::agent_on(fake.clone(), checkpoint.clone(), dir.path());
        Arc::get_mut(&mut after).expect("sole owner").config.recover = RecoverMode::Cleanup;
        recover(&after, checkpoint.load().expect("load")).await;
        assert!(fake.running().is_empty(), "the task was not killed");
        assert!(after.tasks().tasks.is_empty());
        assert!(!after.updates.has_pending("t1"));
        assert!(checkpoint.load().expect("load").tasks.is_empty());
    }

    #[tokio::test]
    async fn an_unknown_user_fails_the_task_without_starting_it() {
        let fake = FakeContainerizer::new();
        let (agent, _dir) = test_agent(fake.clone());
        let mut task = task_info("t1", "true");
        if let Some(c) = task.command.as_mut() {
            c.user = "no-such-user-meseta".into();
        }
        launch(agent.clone(), framework(), task);
        eventually("FAILED", || !states(&agent, "t1").is_empty()).await;
        let update = agent.updates.unacknowledged("t1").pop().expect("an update");
        assert_eq!(task_state_of(update.state), TaskState::TaskFailed);
        assert!(
            update.message.contains("no-such-user-meseta"),
            "{}",
            update.message
        );
        assert!(fake.launches().is_empty(), "the container was started");
    }
}
