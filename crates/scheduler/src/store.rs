//! The scheduler's durable state in the masters' replicated KV store (what
//! ZooKeeper held for Marathon): the framework id, app definitions,
//! deployments and the task ↔ app mapping. Any scheduler instance with the
//! same framework name reads the same state, so a restarted scheduler (or
//! one started elsewhere) carries on where the last one stopped.
//!
//! Layout, under `/meseta/frameworks/<framework name>/`:
//! - `framework_id` → the framework id (UTF-8);
//! - `apps/<app id>` → the app as Marathon renders it (JSON);
//! - `deployments/<id>` → a deployment (JSON);
//! - `tasks/<task id>` → the task's launch facts (JSON), written before the
//!   task is launched, deleted when it ends.
//!
//! Writing: [`desired`] renders the engine as this key → bytes map, and
//! [`StoreGuard::sync`] writes the difference with what was last written.
//! One [`StoreGuard`] at a time: API requests hold it from their change to
//! their answer, so a failed write can be undone before anyone else writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use meseta_proto::v1::TaskState;
use meseta_sdk::{KvClient, KvClientError};
use serde::{Deserialize, Serialize};

use crate::engine::{Backoff, Deployment, Engine, MarathonTask, TaskFailure};
use crate::model::AppDefinition;

/// Why the scheduler could not read or write its state.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("kv store: {0}")]
    Kv(#[from] KvClientError),
    #[error("stored {key} does not decode: {reason}")]
    Decode { key: String, reason: String },
    /// This scheduler stopped leading: it writes nothing any more.
    #[error("this scheduler is no longer the leader")]
    Fenced,
}

/// A task's facts that survive a scheduler restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredTask {
    id: String,
    app_id: String,
    version: DateTime<Utc>,
    agent_id: String,
    host: String,
    attributes: Vec<(String, String)>,
    ports: Vec<u64>,
    service_ports: Vec<u32>,
    staged_at: DateTime<Utc>,
    grace_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredDeployment {
    id: String,
    version: DateTime<Utc>,
    app_id: String,
    action: String,
}

fn deployment_action(action: &str) -> &'static str {
    match action {
        "StartApplication" => "StartApplication",
        "ScaleApplication" => "ScaleApplication",
        "StopApplication" => "StopApplication",
        _ => "RestartApplication",
    }
}

/// What a scheduler finds in the store when it starts.
#[derive(Debug, Default)]
pub struct Loaded {
    pub framework_id: Option<String>,
    pub apps: Vec<AppDefinition>,
    pub deployments: Vec<Deployment>,
    /// Tasks as launched; their state is TASK_STAGING until reconciled.
    pub tasks: Vec<MarathonTask>,
}

/// The scheduler's handle on its KV state.
pub struct Store {
    kv: KvClient,
    prefix: String,
    written: tokio::sync::Mutex<BTreeMap<String, Vec<u8>>>,
    /// Set when this scheduler stops leading ([`Store::fence`]).
    fenced: AtomicBool,
}

/// Exclusive right to write; see the module doc.
pub struct StoreGuard<'a> {
    kv: &'a KvClient,
    fenced: &'a AtomicBool,
    written: tokio::sync::MutexGuard<'a, BTreeMap<String, Vec<u8>>>,
}

impl Store {
    /// The state of framework `framework_name` on the masters `masters`.
    pub fn new(masters: Vec<String>, framework_name: &str) -> Store {
        Store {
            kv: KvClient::new(masters).with_deadline(Duration::from_secs(5)),
            prefix: format!("/meseta/frameworks/{framework_name}/"),
            written: tokio::sync::Mutex::new(BTreeMap::new()),
            fenced: AtomicBool::new(false),
        }
    }

    /// Refuse every later write. With `wait`, first wait (at most 6 s) for
    /// the write in progress, if any, so that none is in flight after this.
    pub async fn fence(&self, wait: bool) {
        if wait {
            let gate = tokio::time::timeout(Duration::from_secs(6), self.written.lock()).await;
            self.fenced.store(true, Ordering::SeqCst);
            drop(gate);
        } else {
            self.fenced.store(true, Ordering::SeqCst);
        }
    }

    /// The key prefix of this framework's state.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Read everything (a linearizable list) and remember it as written.
    pub async fn load(&self) -> Result<Loaded, StoreError> {
        let mut written = self.written.lock().await;
        let kvs = self.kv.list(&self.prefix).await?;
        let mut loaded = Loaded::default();
        written.clear();
        for kv in kvs {
            let Some(rest) = kv.key.strip_prefix(&self.prefix) else {
                continue;
            };
            let bad = |reason: String| StoreError::Decode {
                key: kv.key.clone(),
                reason,
            };
            if rest == "framework_id" {
                let id = String::from_utf8(kv.value.clone()).map_err(|e| bad(e.to_string()))?;
                loaded.framework_id = Some(id).filter(|i| !i.is_empty());
            } else if rest.starts_with("apps/") {
                let app: AppDefinition =
                    serde_json::from_slice(&kv.value).map_err(|e| bad(e.to_string()))?;
                loaded.apps.push(app);
            } else if rest.starts_with("deployments/") {
                let d: StoredDeployment =
                    serde_json::from_slice(&kv.value).map_err(|e| bad(e.to_string()))?;
                loaded.deployments.push(Deployment {
                    id: d.id,
                    version: d.version,
                    app_id: d.app_id,
                    action: deployment_action(&d.action),
                });
            } else if rest.starts_with("tasks/") {
                let t: StoredTask =
                    serde_json::from_slice(&kv.value).map_err(|e| bad(e.to_string()))?;
                loaded.tasks.push(MarathonTask {
                    id: t.id,
                    app_id: t.app_id,
                    version: t.version,
                    agent_id: t.agent_id,
                    host: t.host,
                    attributes: t.attributes,
                    ports: t.ports,
                    service_ports: t.service_ports,
                    staged_at: t.staged_at,
                    started_at: None,
                    state: TaskState::TaskStaging,
                    healthy: None,
                    kill_sent: None,
                    grace_seconds: t.grace_seconds,
                });
            } else {
                continue;
            }
            written.insert(kv.key, kv.value);
        }
        Ok(loaded)
    }

    /// Wait for the right to write.
    pub async fn lock(&self) -> StoreGuard<'_> {
        StoreGuard {
            kv: &self.kv,
            fenced: &self.fenced,
            written: self.written.lock().await,
        }
    }
}

impl StoreGuard<'_> {
    /// Make the store hold `desired`: put what changed, delete what is gone.
    /// Returns how many keys were written. On error, the keys written so far
    /// are remembered as written and the rest are tried again next time.
    pub async fn sync(&mut self, desired: BTreeMap<String, Vec<u8>>) -> Result<usize, StoreError> {
        let puts: Vec<(String, Vec<u8>)> = desired
            .iter()
            .filter(|(k, v)| self.written.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let deletes: Vec<String> = self
            .written
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        let changes = puts.len() + deletes.len();
        if changes == 0 {
            return Ok(0);
        }
        if self.fenced.load(Ordering::SeqCst) {
            return Err(StoreError::Fenced);
        }
        let kv = self.kv;
        let put_results = futures::future::join_all(puts.into_iter().map(|(k, v)| async move {
            let r = kv.put(&k, v.clone(), 0).await;
            (k, v, r)
        }))
        .await;
        let delete_results = futures::future::join_all(deletes.into_iter().map(|k| async move {
            let r = kv.delete(&k).await;
            (k, r)
        }))
        .await;
        let mut first_error = None;
        for (k, v, r) in put_results {
            match r {
                Ok(_) => {
                    self.written.insert(k, v);
                }
                Err(e) => {
                    // Unknown outcome: forget what we believed, rewrite next time.
                    self.written.remove(&k);
                    first_error.get_or_insert(e);
                }
            }
        }
        for (k, r) in delete_results {
            match r {
                Ok(_) => {
                    self.written.remove(&k);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(changes),
        }
    }
}

/// The engine's durable state as KV keys and values (see the module doc).
pub fn desired(engine: &Engine, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    if let Some(id) = &engine.framework_id {
        out.insert(format!("{prefix}framework_id"), id.as_bytes().to_vec());
    }
    for (id, app) in &engine.apps {
        let json = serde_json::to_vec(app).expect("a rendered app serializes");
        out.insert(format!("{prefix}apps{id}"), json);
    }
    for d in &engine.deployments {
        let stored = StoredDeployment {
            id: d.id.clone(),
            version: d.version,
            app_id: d.app_id.clone(),
            action: d.action.to_string(),
        };
        out.insert(
            format!("{prefix}deployments/{}", d.id),
            serde_json::to_vec(&stored).expect("a deployment serializes"),
        );
    }
    for t in engine.tasks.values() {
        let stored = StoredTask {
            id: t.id.clone(),
            app_id: t.app_id.clone(),
            version: t.version,
            agent_id: t.agent_id.clone(),
            host: t.host.clone(),
            attributes: t.attributes.clone(),
            ports: t.ports.clone(),
            service_ports: t.service_ports.clone(),
            staged_at: t.staged_at,
            grace_seconds: t.grace_seconds,
        };
        out.insert(
            format!("{prefix}tasks/{}", t.id),
            serde_json::to_vec(&stored).expect("a task serializes"),
        );
    }
    out
}

/// Put the loaded state into a fresh engine.
pub fn restore(engine: &mut Engine, loaded: Loaded) {
    engine.framework_id = loaded.framework_id;
    for app in loaded.apps {
        engine.apps.insert(app.id.to_string(), app);
    }
    engine.deployments = loaded.deployments;
    for t in loaded.tasks {
        engine.tasks.insert(t.id.clone(), t);
    }
}

/// What an API request may change, to undo it when its write fails.
pub(crate) struct Undo {
    apps: BTreeMap<String, AppDefinition>,
    deployments: Vec<Deployment>,
    backoff: HashMap<String, Backoff>,
    failures: HashMap<String, TaskFailure>,
    kills: HashMap<String, Option<Instant>>,
}

impl Undo {
    pub(crate) fn take(engine: &Engine) -> Undo {
        Undo {
            apps: engine.apps.clone(),
            deployments: engine.deployments.clone(),
            backoff: engine.backoff.clone(),
            failures: engine.failures.clone(),
            kills: engine
                .tasks
                .iter()
                .map(|(id, t)| (id.clone(), t.kill_sent))
                .collect(),
        }
    }

    pub(crate) fn restore(self, engine: &mut Engine) {
        engine.apps = self.apps;
        engine.deployments = self.deployments;
        engine.backoff = self.backoff;
        engine.failures = self.failures;
        for (id, t) in engine.tasks.iter_mut() {
            if let Some(k) = self.kills.get(id) {
                t.kill_sent = *k;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventBus;

    #[test]
    fn desired_state_round_trips_through_load_format() {
        let mut engine = Engine::new("*", EventBus::default());
        let app: AppDefinition =
            serde_json::from_str(r#"{"id":"/web","cmd":"sleep 100","instances":2}"#).expect("app");
        engine.apps.insert("/web".into(), app);
        engine.framework_id = Some("fw-1".into());
        let d = engine.start_deployment("/web", chrono::Utc::now(), "StartApplication");
        let out = desired(&engine, "/p/");
        assert_eq!(
            out.get("/p/framework_id").map(Vec::as_slice),
            Some(&b"fw-1"[..])
        );
        let back: AppDefinition = serde_json::from_slice(&out["/p/apps/web"]).expect("decodes");
        assert_eq!(back.instances, 2);
        let dep: StoredDeployment =
            serde_json::from_slice(&out[&format!("/p/deployments/{}", d.id)]).expect("decodes");
        assert_eq!(deployment_action(&dep.action), "StartApplication");
    }
}
