//! The scheduler's durable state in the masters' replicated KV store (what
//! ZooKeeper held for Marathon): the framework id, app definitions,
//! deployments and the task ↔ app mapping. Any scheduler instance with the
//! same framework name reads the same state, so a restarted scheduler (or
//! one started elsewhere) carries on where the last one stopped.
//!
//! Layout, under `/meseta/frameworks/<framework name>/`:
//! - `framework_id` → the framework id (UTF-8);
//! - `apps/<app id>` → the app as Marathon renders it (JSON);
//! - `app-versions/<app id>/<version>` → each kept version of an app;
//! - `groups/<group id>` → a group created explicitly (its dependencies);
//! - `group-versions/<version>` → a version of the root group (which
//!   version of each app, and the explicit groups);
//! - `deployments/<id>` → a deployment: steps, current step, each affected
//!   app's previous definition (JSON);
//! - `tasks/<task id>` → the task's launch facts (JSON), written before the
//!   task is launched, deleted when it ends.
//!
//! Writing: [`desired`] renders the engine as this key → bytes map, and
//! [`StoreGuard::sync`] writes the difference with what was last written.
//! One [`StoreGuard`] at a time: API requests hold it from their change to
//! their answer, so a failed write can be undone before anyone else writes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use meseta_sdk::{KvClient, KvClientError};
use serde::{Deserialize, Serialize};

use crate::engine::{
    ActionKind, Deployment, DeploymentAction, Durable, Engine, GroupMeta, GroupSnapshot, StoredTask,
};
use crate::model::{marathon_timestamp, AppDefinition, PathId};

/// Most KV writes one [`StoreGuard::sync`] keeps in flight (the
/// KV bench's best throughput is at a few hundred concurrent writers).
const SYNC_IN_FLIGHT: usize = 256;

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

/// A deployment as written before deployments had steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LegacyDeployment {
    id: String,
    version: DateTime<Utc>,
    app_id: String,
    action: String,
}

impl LegacyDeployment {
    fn upgrade(self) -> Deployment {
        let kind = match self.action.as_str() {
            "StartApplication" => ActionKind::StartApplication,
            "ScaleApplication" => ActionKind::ScaleApplication,
            "StopApplication" => ActionKind::StopApplication,
            _ => ActionKind::RestartApplication,
        };
        let app = PathId::new(&self.app_id);
        Deployment {
            id: self.id,
            version: self.version,
            steps: vec![vec![DeploymentAction {
                kind,
                app: app.clone(),
            }]],
            current_step: 0,
            original: vec![(app, None)],
            group: None,
            started_at: self.version,
        }
    }
}

/// What a scheduler finds in the store when it starts.
pub type Loaded = Durable;

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
            let decode = |bytes: &[u8]| -> Result<serde_json::Value, StoreError> {
                serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))
            };
            if rest == "framework_id" {
                let id = String::from_utf8(kv.value.clone()).map_err(|e| bad(e.to_string()))?;
                loaded.framework_id = Some(id).filter(|i| !i.is_empty());
            } else if rest.starts_with("apps/") {
                let app: AppDefinition =
                    serde_json::from_slice(&kv.value).map_err(|e| bad(e.to_string()))?;
                loaded.apps.push(app);
            } else if rest.starts_with("app-versions/") {
                let app: AppDefinition =
                    serde_json::from_slice(&kv.value).map_err(|e| bad(e.to_string()))?;
                loaded.versions.push(app);
            } else if let Some(g) = rest.strip_prefix("groups") {
                let meta: GroupMeta =
                    serde_json::from_slice(&kv.value).map_err(|e| bad(e.to_string()))?;
                loaded.groups.push((PathId::new(g), meta));
            } else if rest.starts_with("group-versions/") {
                let s: GroupSnapshot =
                    serde_json::from_slice(&kv.value).map_err(|e| bad(e.to_string()))?;
                loaded.group_history.push(s);
            } else if rest.starts_with("deployments/") {
                let v = decode(&kv.value)?;
                let d = match serde_json::from_value::<Deployment>(v.clone()) {
                    Ok(d) => d,
                    Err(_) => serde_json::from_value::<LegacyDeployment>(v)
                        .map_err(|e| bad(e.to_string()))?
                        .upgrade(),
                };
                loaded.deployments.push(d);
            } else if rest.starts_with("tasks/") {
                let t: StoredTask =
                    serde_json::from_slice(&kv.value).map_err(|e| bad(e.to_string()))?;
                loaded.tasks.push(t);
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
        // At most SYNC_IN_FLIGHT writes at once: ten thousand new tasks
        // sent all together queued the leader lease's keep-alive behind
        // them long enough to lose the lease.
        let put_results: Vec<_> =
            futures::stream::iter(puts.into_iter().map(|(k, v)| async move {
                let r = kv.put(&k, v.clone(), 0).await;
                (k, v, r)
            }))
            .buffer_unordered(SYNC_IN_FLIGHT)
            .collect()
            .await;
        let delete_results: Vec<_> =
            futures::stream::iter(deletes.into_iter().map(|k| async move {
                let r = kv.delete(&k).await;
                (k, r)
            }))
            .buffer_unordered(SYNC_IN_FLIGHT)
            .collect()
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
    let d = engine.durable();
    let mut out = BTreeMap::new();
    let json = |v: &dyn erased::Json| v.bytes();
    if let Some(id) = &d.framework_id {
        out.insert(format!("{prefix}framework_id"), id.as_bytes().to_vec());
    }
    for app in &d.apps {
        out.insert(format!("{prefix}apps{}", app.id), json(app));
    }
    for app in &d.versions {
        let v = app.version.map(marathon_timestamp).unwrap_or_default();
        out.insert(format!("{prefix}app-versions{}/{v}", app.id), json(app));
    }
    for (id, meta) in &d.groups {
        out.insert(format!("{prefix}groups{id}"), json(meta));
    }
    for s in &d.group_history {
        out.insert(
            format!("{prefix}group-versions/{}", marathon_timestamp(s.version)),
            json(s),
        );
    }
    for dep in &d.deployments {
        out.insert(format!("{prefix}deployments/{}", dep.id), json(dep));
    }
    for t in &d.tasks {
        out.insert(format!("{prefix}tasks/{}", t.id), json(t));
    }
    out
}

mod erased {
    /// Serialize our own plain data types: cannot fail (no non-string map
    /// keys, no custom serializer that errors).
    pub trait Json {
        fn bytes(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn bytes(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("the scheduler's state serializes")
        }
    }
}

/// Put the loaded state into a fresh engine.
pub fn restore(engine: &mut Engine, loaded: Loaded) {
    engine.restore(loaded);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventBus;
    use crate::model::parse_app_definition;

    #[test]
    fn desired_state_round_trips_through_load_format() {
        let mut engine = Engine::new("*", EventBus::default(), 50);
        let app =
            parse_app_definition(br#"{"id":"/web","cmd":"sleep 100","instances":2}"#).expect("app");
        let outcome = engine.create_app(app, false).expect("created");
        engine.subscribed("fw-1");
        let out = desired(&engine, "/p/");
        assert_eq!(
            out.get("/p/framework_id").map(Vec::as_slice),
            Some(&b"fw-1"[..])
        );
        let back: AppDefinition = serde_json::from_slice(&out["/p/apps/web"]).expect("decodes");
        assert_eq!(back.instances, 2);
        let dep: Deployment =
            serde_json::from_slice(&out[&format!("/p/deployments/{}", outcome.deployment_id)])
                .expect("decodes");
        assert_eq!(dep.steps[0][0].kind, ActionKind::StartApplication);
        let version = marathon_timestamp(outcome.version);
        assert!(out.contains_key(&format!("/p/app-versions/web/{version}")));
        assert!(out.contains_key(&format!("/p/group-versions/{version}")));
    }

    #[test]
    fn deployments_written_before_steps_still_load() {
        let legacy = r#"{"id":"d1","version":"2026-01-01T00:00:00.000Z","app_id":"/web","action":"ScaleApplication"}"#;
        let d = serde_json::from_str::<LegacyDeployment>(legacy)
            .expect("decodes")
            .upgrade();
        assert_eq!(d.steps[0][0].kind, ActionKind::ScaleApplication);
        assert_eq!(d.steps[0][0].app.to_string(), "/web");
    }
}
