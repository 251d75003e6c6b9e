//! Task supervision and reliable status updates.
//!
//! Each task keeps a queue of status updates not yet acknowledged; only the
//! head is in flight (as Mesos' status update manager does, so a framework
//! sees a task's states in order). The head is resent on reconnection and
//! every few seconds until the framework acknowledges it.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meseta_core::task::task_state_of;
use meseta_core::{Resources, TaskStateExt};
use meseta_proto::v1 as pb;
use pb::task_status::Reason;
use pb::TaskState;

use crate::containerizer::{LaunchSpec, Termination};
use crate::Agent;

/// Marathon's default `taskKillGracePeriodSeconds` when none is given.
const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);
const RETRY_INTERVAL: Duration = Duration::from_secs(5);
const COMPLETED_KEPT: usize = 100;

/// One task this agent runs (or ran, until its terminal update is acked).
#[derive(Debug, Clone)]
pub(crate) struct TaskRecord {
    pub framework_id: String,
    pub info: pb::TaskInfo,
    pub container_id: String,
    pub sandbox: PathBuf,
    pub state: TaskState,
    pub pid: u32,
    pub killing: bool,
    /// Updates not yet acknowledged; the head is in flight.
    pub pending: VecDeque<pb::TaskStatus>,
    pub latest: Option<pb::TaskStatus>,
}

#[derive(Debug, Default)]
pub(crate) struct TaskTable {
    pub tasks: HashMap<String, TaskRecord>,
    pub completed: VecDeque<TaskRecord>,
}

impl TaskTable {
    /// What the agent reports when (re-)registering.
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

fn status_update(framework_id: &str, status: pb::TaskStatus) -> pb::agent_message::Message {
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

/// Queue an update for `task_id` and send it if it is the only one pending.
fn update(agent: &Agent, task_id: &str, state: TaskState, reason: Reason, message: String) {
    let agent_id = agent.agent_id().unwrap_or_default();
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
        ..Default::default()
    };
    task.state = state;
    task.latest = Some(status.clone());
    task.pending.push_back(status.clone());
    if task.pending.len() == 1 {
        let fid = task.framework_id.clone();
        drop(table);
        agent.link.send(status_update(&fid, status));
    }
}

/// The framework acknowledged an update: drop it and send the next one. A
/// task whose terminal update is acknowledged is forgotten.
pub(crate) fn acknowledge(agent: &Agent, task_id: &str, uuid: &[u8]) {
    let mut table = agent.tasks();
    let Some(task) = table.tasks.get_mut(task_id) else {
        return;
    };
    if task.pending.front().is_none_or(|head| head.uuid != uuid) {
        return; // a duplicate or stale acknowledgement
    }
    task.pending.pop_front();
    if let Some(next) = task.pending.front().cloned() {
        let fid = task.framework_id.clone();
        drop(table);
        agent.link.send(status_update(&fid, next));
        return;
    }
    if task.state.is_terminal() {
        if let Some(done) = table.tasks.remove(task_id) {
            table.completed.push_back(done);
            while table.completed.len() > COMPLETED_KEPT {
                table.completed.pop_front();
            }
        }
    }
}

/// Send the head update of every task again (after reconnecting).
pub(crate) fn resend_pending(agent: &Agent) {
    let heads: Vec<(String, pb::TaskStatus)> = agent
        .tasks()
        .tasks
        .values()
        .filter_map(|t| {
            t.pending
                .front()
                .map(|h| (t.framework_id.clone(), h.clone()))
        })
        .collect();
    for (fid, status) in heads {
        if !agent.link.send(status_update(&fid, status)) {
            return;
        }
    }
}

/// Resend unacknowledged updates until they are acknowledged.
pub(crate) async fn retry_loop(agent: Arc<Agent>) {
    loop {
        tokio::time::sleep(RETRY_INTERVAL).await;
        resend_pending(&agent);
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

/// The task's environment: a few of the agent's own basics, the command's
/// variables (Marathon's PORTs, HOST…), then what Mesos sets.
fn environment(
    agent: &Agent,
    framework_id: &str,
    task: &pb::TaskInfo,
    sandbox: &std::path::Path,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
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
    let set = |env: &mut Vec<(String, String)>, k: &str, v: String| {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v));
    };
    if let Some(vars) = task.command.as_ref().and_then(|c| c.environment.as_ref()) {
        for v in &vars.variables {
            set(&mut env, &v.name, v.value.clone());
        }
    }
    let sandbox = sandbox.display().to_string();
    let task_id = task
        .task_id
        .as_ref()
        .map(|t| t.value.clone())
        .unwrap_or_default();
    set(&mut env, "MESOS_SANDBOX", sandbox.clone());
    set(&mut env, "MESOS_DIRECTORY", sandbox.clone());
    set(&mut env, "HOME", sandbox);
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

/// RunTask from the master: record the task, start it in the containerizer,
/// report STARTING / RUNNING, then supervise it to its end.
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
                state: TaskState::TaskStaging,
                pid: 0,
                killing: false,
                pending: VecDeque::new(),
                latest: None,
            },
        );
    }
    tokio::spawn(async move {
        if let Err(message) = start(
            &agent,
            &framework_id,
            &task,
            &task_id,
            &container_id,
            &sandbox,
        )
        .await
        {
            tracing::warn!(task = %task_id, error = %message, "task launch failed");
            update(
                &agent,
                &task_id,
                TaskState::TaskFailed,
                Reason::ContainerLaunchFailed,
                message,
            );
        }
    });
}

async fn start(
    agent: &Arc<Agent>,
    framework_id: &str,
    task: &pb::TaskInfo,
    task_id: &str,
    container_id: &str,
    sandbox: &std::path::Path,
) -> Result<(), String> {
    if let Some(container) = &task.container {
        if container.r#type == pb::container_info::Type::Docker as i32 {
            return Err("this agent runs no Docker containerizer; the task needs one".into());
        }
    }
    let command = task
        .command
        .as_ref()
        .map(command_line)
        .filter(|c| !c.trim().is_empty())
        .ok_or("the task has no command")?;
    tokio::fs::create_dir_all(sandbox)
        .await
        .map_err(|e| format!("cannot create sandbox {}: {e}", sandbox.display()))?;
    let resources = Resources::from_proto(&task.resources).map_err(|e| e.to_string())?;
    update(
        agent,
        task_id,
        TaskState::TaskStarting,
        Reason::None,
        String::new(),
    );
    let spec = LaunchSpec {
        container_id: container_id.to_string(),
        task_id: task_id.to_string(),
        command,
        env: environment(agent, framework_id, task, sandbox),
        sandbox: sandbox.to_path_buf(),
        cpus: resources.scalar("cpus"),
        mem_mb: resources.scalar("mem"),
        hostname: None,
    };
    let launched = agent
        .containerizer
        .launch(spec)
        .await
        .map_err(|e| e.to_string())?;
    let killing = {
        let mut table = agent.tasks();
        match table.tasks.get_mut(task_id) {
            Some(t) => {
                t.pid = launched.pid;
                t.killing
            }
            None => false,
        }
    };
    tracing::info!(task = %task_id, pid = launched.pid, sandbox = %sandbox.display(), "task running");
    update(
        agent,
        task_id,
        TaskState::TaskRunning,
        Reason::None,
        String::new(),
    );
    if killing {
        // A kill arrived while the container was starting.
        let grace = kill_grace(task, None);
        let _ = agent.containerizer.kill(container_id, grace).await;
    }
    let termination = launched.exit.await.unwrap_or_else(|_| Termination {
        exit_code: None,
        signal: None,
        oom_killed: false,
        message: "the containerizer lost the task".into(),
    });
    finish(agent, task_id, container_id, termination).await;
    Ok(())
}

async fn finish(agent: &Arc<Agent>, task_id: &str, container_id: &str, t: Termination) {
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
    update(agent, task_id, state, reason, t.message);
    if let Err(e) = agent.containerizer.destroy(container_id).await {
        tracing::warn!(task = %task_id, error = %e, "could not clean up the container");
    }
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

/// On shutdown: kill every task and wait (bounded) for them to end.
pub(crate) async fn kill_all(agent: &Arc<Agent>) {
    let containers: Vec<(String, Duration)> = agent
        .tasks()
        .tasks
        .values_mut()
        .filter(|t| !t.state.is_terminal())
        .map(|t| {
            t.killing = true;
            (t.container_id.clone(), kill_grace(&t.info, None))
        })
        .collect();
    if containers.is_empty() {
        return;
    }
    tracing::info!(
        tasks = containers.len(),
        "stopping: killing this agent's tasks"
    );
    let kills = containers
        .iter()
        .map(|(cid, grace)| agent.containerizer.kill(cid, *grace));
    let _ = tokio::time::timeout(Duration::from_secs(15), futures::future::join_all(kills)).await;
    for (cid, _) in containers {
        let _ = agent.containerizer.destroy(&cid).await;
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
