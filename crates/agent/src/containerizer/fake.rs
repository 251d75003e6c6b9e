//! A containerizer that starts no process: each "container" is an entry in
//! memory whose exit the test (or a hollow agent) decides. Clones share the
//! same containers, so a clone handed to a new agent plays the host after an
//! agent restart: [`FakeContainerizer::restart`] detaches every container,
//! and the new agent re-attaches with [`Containerizer::recover`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::oneshot;

use super::{
    validate_spec, ContainerInfo, Containerizer, ContainerizerError, LaunchSpec, Launched,
    RecoverSpec, Termination, Usage,
};

/// See the module documentation.
#[derive(Clone, Default)]
pub struct FakeContainerizer {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    next_pid: u32,
    containers: HashMap<String, Fake>,
    launches: Vec<LaunchSpec>,
    kills: Vec<(String, Duration)>,
    fail_launches: Option<String>,
    /// Exit senders of the agent run that "died": kept, so that its
    /// supervisors (still alive in a test process) never see an exit.
    dead_agent: Vec<oneshot::Sender<Termination>>,
}

struct Fake {
    task_id: String,
    pid: u32,
    /// Held by the agent that launched or recovered it.
    attached: bool,
    exit_tx: Option<oneshot::Sender<Termination>>,
    ended: Option<Termination>,
}

impl Fake {
    fn end(&mut self, termination: Termination) {
        if self.ended.is_some() {
            return;
        }
        if let Some(tx) = self.exit_tx.take() {
            let _ = tx.send(termination.clone());
        }
        self.ended = Some(termination);
    }
}

impl FakeContainerizer {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends a container's command with `termination`.
    pub fn exit(&self, container_id: &str, termination: Termination) -> bool {
        match self.state().containers.get_mut(container_id) {
            Some(fake) => {
                fake.end(termination);
                true
            }
            None => false,
        }
    }

    /// Every launch spec received, oldest first.
    pub fn launches(&self) -> Vec<LaunchSpec> {
        self.state().launches.clone()
    }

    /// How many launches were received (cheaper than [`Self::launches`]).
    pub fn launch_count(&self) -> usize {
        self.state().launches.len()
    }

    /// Every kill received: (container id, grace).
    pub fn kills(&self) -> Vec<(String, Duration)> {
        self.state().kills.clone()
    }

    /// Ids of the containers whose command still runs.
    pub fn running(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .state()
            .containers
            .iter()
            .filter(|(_, f)| f.ended.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Makes every later launch fail with `reason` (None: succeed again).
    pub fn fail_launches(&self, reason: Option<&str>) {
        self.state().fail_launches = reason.map(str::to_string);
    }

    /// The agent process died: containers keep running, unattached.
    pub fn restart(&self) {
        let mut state = self.state();
        let mut dead = Vec::new();
        for fake in state.containers.values_mut() {
            fake.attached = false;
            dead.extend(fake.exit_tx.take());
        }
        state.dead_agent.extend(dead);
    }
}

impl Containerizer for FakeContainerizer {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'static, Result<Launched, ContainerizerError>> {
        let result = validate_spec(&spec).and_then(|()| {
            let mut state = self.state();
            state.launches.push(spec.clone());
            if let Some(reason) = state.fail_launches.clone() {
                return Err(ContainerizerError::InvalidSpec {
                    task_id: spec.task_id.clone(),
                    reason,
                });
            }
            if state.containers.contains_key(&spec.container_id) {
                return Err(ContainerizerError::ContainerExists(spec.container_id));
            }
            state.next_pid += 1;
            let pid = 100_000 + state.next_pid;
            let (tx, rx) = oneshot::channel();
            state.containers.insert(
                spec.container_id.clone(),
                Fake {
                    task_id: spec.task_id.clone(),
                    pid,
                    attached: true,
                    exit_tx: Some(tx),
                    ended: None,
                },
            );
            Ok(Launched { pid, exit: rx })
        });
        async move { result }.boxed()
    }

    fn kill(
        &self,
        container_id: &str,
        grace: Duration,
    ) -> BoxFuture<'static, Result<(), ContainerizerError>> {
        let result = {
            let mut state = self.state();
            state.kills.push((container_id.to_string(), grace));
            match state.containers.get_mut(container_id) {
                Some(fake) => {
                    let signal = if grace.is_zero() {
                        libc::SIGKILL
                    } else {
                        libc::SIGTERM
                    };
                    let pid = fake.pid;
                    fake.end(Termination::signaled(signal, pid));
                    Ok(())
                }
                None => Err(ContainerizerError::UnknownContainer(
                    container_id.to_string(),
                )),
            }
        };
        async move { result }.boxed()
    }

    fn destroy(&self, container_id: &str) -> BoxFuture<'static, Result<(), ContainerizerError>> {
        let result = match self.state().containers.remove(container_id) {
            Some(_) => Ok(()),
            None => Err(ContainerizerError::UnknownContainer(
                container_id.to_string(),
            )),
        };
        async move { result }.boxed()
    }

    fn containers(&self) -> Vec<ContainerInfo> {
        self.state()
            .containers
            .iter()
            .filter(|(_, f)| f.attached)
            .map(|(id, f)| ContainerInfo {
                container_id: id.clone(),
                task_id: f.task_id.clone(),
                pid: f.pid,
                cgroups: Vec::new(),
            })
            .collect()
    }

    fn recover(
        &self,
        spec: RecoverSpec,
    ) -> BoxFuture<'static, Result<Launched, ContainerizerError>> {
        let result = {
            let mut state = self.state();
            let (tx, rx) = oneshot::channel();
            match state.containers.get_mut(&spec.container_id) {
                Some(fake) if fake.attached => {
                    Err(ContainerizerError::ContainerExists(spec.container_id))
                }
                Some(fake) => {
                    fake.attached = true;
                    match fake.ended.clone() {
                        Some(t) => {
                            let _ = tx.send(t);
                        }
                        None => fake.exit_tx = Some(tx),
                    }
                    Ok(Launched {
                        pid: fake.pid,
                        exit: rx,
                    })
                }
                None => {
                    let _ = tx.send(Termination {
                        exit_code: None,
                        signal: None,
                        oom_killed: false,
                        message: "The agent restarted before the task's command started".into(),
                    });
                    Ok(Launched { pid: 0, exit: rx })
                }
            }
        };
        async move { result }.boxed()
    }

    fn remove_orphans(&self, known: &HashSet<String>) -> BoxFuture<'static, Vec<String>> {
        let mut state = self.state();
        let orphans: Vec<String> = state
            .containers
            .iter()
            .filter(|(id, f)| !f.attached && !known.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &orphans {
            state.containers.remove(id);
        }
        async move { orphans }.boxed()
    }

    fn usage(&self, container_id: &str) -> BoxFuture<'static, Result<Usage, ContainerizerError>> {
        let result = match self.state().containers.get(container_id) {
            Some(f) => Ok(Usage {
                processes: u64::from(f.ended.is_none()),
                ..Usage::default()
            }),
            None => Err(ContainerizerError::UnknownContainer(
                container_id.to_string(),
            )),
        };
        async move { result }.boxed()
    }
}
