//! The agent's checkpoint: what it must know after a restart to re-attach to
//! its tasks and finish delivering their status updates. It lives in a sled
//! database under `<work_dir>/meta/checkpoint` (one process at a time: sled
//! locks it, so two agents cannot share a work dir).
//!
//! Trees:
//! - `meta`: `agent_id`;
//! - `frameworks`: framework id → `FrameworkInfo` of every framework with a
//!   task here;
//! - `tasks`: task id → `TaskCheckpoint` (TaskInfo, container id, sandbox,
//!   run directory, state, kill requested, user);
//! - `updates`: (task id, sequence number) → `TaskStatus` not yet
//!   acknowledged, in the order they were made.
//!
//! Writes reach the disk at [`Checkpoint::flush`]; the agent flushes before
//! it acts on what it wrote (launching, sending an update). Flushes are
//! group commits: one at a time on a blocking thread, and a caller whose
//! writes a flush already covered does not start another. (sled's own
//! `flush_async`, many at once on sled's thread pool, deadlocked here: with
//! a hundred tasks starting together every pool thread waited for a write
//! that only a pool thread could do.) What the
//! container's init writes itself (its pid, the command's exit status) is in
//! the container's run directory, see [`crate::containerizer`].
//!
//! A hollow agent (`meseta-bench hollow`: thousands of agents in one
//! process) keeps the same trees in memory ([`Checkpoint::in_memory`]):
//! the same code paths run, minus a sled database and its disk per agent.
//!
//! Values are protobuf (`proto/meseta/v1/agent.proto` and `master.proto`). A
//! record that no longer decodes is logged and skipped, so a damaged entry
//! costs that task, not the agent.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use meseta_proto::v1 as pb;
use prost::Message;

/// What failed in the checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "cannot open the agent checkpoint {path}: {source} (is another agent using this work dir?)"
    )]
    Open { path: PathBuf, source: sled::Error },
    #[error("agent checkpoint {op}: {source}")]
    Store {
        op: &'static str,
        source: sled::Error,
    },
    #[error("agent checkpoint flush did not finish: {0}")]
    FlushAborted(String),
}

/// One task found in the checkpoint, with its unacknowledged updates.
#[derive(Debug, Clone)]
pub(crate) struct RecoveredTask {
    pub checkpoint: pb::TaskCheckpoint,
    /// (sequence number, update), oldest first.
    pub updates: Vec<(u64, pb::TaskStatus)>,
}

/// Everything the checkpoint holds.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub agent_id: Option<String>,
    pub frameworks: HashMap<String, pb::FrameworkInfo>,
    pub tasks: Vec<RecoveredTask>,
}

/// One tree of the checkpoint: sled's, or a map in memory (hollow agents).
enum Tree {
    Sled(sled::Tree),
    Memory(Mutex<BTreeMap<Vec<u8>, Vec<u8>>>),
}

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

impl Tree {
    fn memory() -> Tree {
        Tree::Memory(Mutex::new(BTreeMap::new()))
    }

    fn map(
        m: &Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    ) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) -> Result<(), sled::Error> {
        match self {
            Tree::Sled(t) => t.insert(key.as_ref(), value.into()).map(|_| ()),
            Tree::Memory(m) => {
                Self::map(m).insert(key.as_ref().to_vec(), value.into());
                Ok(())
            }
        }
    }

    fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), sled::Error> {
        match self {
            Tree::Sled(t) => t.remove(key.as_ref()).map(|_| ()),
            Tree::Memory(m) => {
                Self::map(m).remove(key.as_ref());
                Ok(())
            }
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, sled::Error> {
        match self {
            Tree::Sled(t) => Ok(t.get(key)?.map(|v| v.to_vec())),
            Tree::Memory(m) => Ok(Self::map(m).get(key).cloned()),
        }
    }

    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, sled::Error> {
        match self {
            Tree::Sled(t) => t
                .scan_prefix(prefix)
                .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect(),
            Tree::Memory(m) => Ok(Self::map(m)
                .range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()),
        }
    }
}

/// See the module documentation.
pub(crate) struct Checkpoint {
    /// None: in memory.
    db: Option<sled::Db>,
    meta: Tree,
    frameworks: Tree,
    tasks: Tree,
    updates: Tree,
    /// Flush requests made so far (each one's writes precede it).
    flush_requests: AtomicU64,
    /// Held by the one flush in progress; holds the last request number a
    /// finished flush covered.
    flushed: tokio::sync::Mutex<u64>,
}

const AGENT_ID: &[u8] = b"agent_id";

/// Key of one update: the task id, length-prefixed (task ids come from the
/// network and may hold any byte), then the sequence number, big-endian so
/// that a task's updates sort in order.
fn update_key(task_id: &str, seq: u64) -> Vec<u8> {
    let mut key = update_prefix(task_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn update_prefix(task_id: &str) -> Vec<u8> {
    let len = u32::try_from(task_id.len()).unwrap_or(u32::MAX);
    let mut key = len.to_be_bytes().to_vec();
    key.extend_from_slice(task_id.as_bytes());
    key
}

fn split_update_key(key: &[u8]) -> Option<(String, u64)> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?) as usize;
    let task_id = std::str::from_utf8(key.get(4..4 + len)?).ok()?.to_string();
    let seq = u64::from_be_bytes(key.get(4 + len..)?.try_into().ok()?);
    Some((task_id, seq))
}

impl Checkpoint {
    /// Opens (or creates) the checkpoint in `dir`.
    pub fn open(dir: &Path) -> Result<Checkpoint, CheckpointError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(8 * 1024 * 1024)
            .flush_every_ms(None);
        Self::with_config(config, dir)
    }

    /// A checkpoint in memory only (tests).
    #[cfg(test)]
    pub fn temporary() -> Checkpoint {
        Self::with_config(
            sled::Config::new().temporary(true),
            Path::new("(temporary)"),
        )
        .expect("a temporary sled database opens")
    }

    fn with_config(config: sled::Config, dir: &Path) -> Result<Checkpoint, CheckpointError> {
        let open_error = |source| CheckpointError::Open {
            path: dir.to_path_buf(),
            source,
        };
        let db = config.open().map_err(open_error)?;
        let tree = |name: &str| db.open_tree(name).map(Tree::Sled).map_err(open_error);
        Ok(Checkpoint {
            meta: tree("meta")?,
            frameworks: tree("frameworks")?,
            tasks: tree("tasks")?,
            updates: tree("updates")?,
            db: Some(db),
            flush_requests: AtomicU64::new(0),
            flushed: tokio::sync::Mutex::new(0),
        })
    }

    /// A checkpoint that lives in memory only: nothing survives the
    /// process. For hollow agents, which stand in for many hosts in one
    /// load-test process.
    pub fn in_memory() -> Checkpoint {
        Checkpoint {
            db: None,
            meta: Tree::memory(),
            frameworks: Tree::memory(),
            tasks: Tree::memory(),
            updates: Tree::memory(),
            flush_requests: AtomicU64::new(0),
            flushed: tokio::sync::Mutex::new(0),
        }
    }

    fn store(op: &'static str) -> impl FnOnce(sled::Error) -> CheckpointError {
        move |source| CheckpointError::Store { op, source }
    }

    /// Makes every write made before this call durable.
    pub async fn flush(&self) -> Result<(), CheckpointError> {
        let ticket = self.flush_requests.fetch_add(1, Ordering::SeqCst) + 1;
        let mut flushed = self.flushed.lock().await;
        if *flushed >= ticket {
            // A flush that started after our writes has finished.
            return Ok(());
        }
        let covers = self.flush_requests.load(Ordering::SeqCst);
        let Some(db) = self.db.clone() else {
            *flushed = covers;
            return Ok(());
        };
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| CheckpointError::FlushAborted(e.to_string()))?
            .map_err(Self::store("flush"))?;
        *flushed = covers;
        Ok(())
    }

    pub fn set_agent_id(&self, id: &str) -> Result<(), CheckpointError> {
        self.meta
            .insert(AGENT_ID, id.as_bytes())
            .map(|_| ())
            .map_err(Self::store("write the agent id"))
    }

    pub fn put_framework(&self, info: &pb::FrameworkInfo) -> Result<(), CheckpointError> {
        let id = info
            .id
            .as_ref()
            .map(|i| i.value.clone())
            .unwrap_or_default();
        self.frameworks
            .insert(id.as_bytes(), info.encode_to_vec())
            .map(|_| ())
            .map_err(Self::store("write a framework"))
    }

    pub fn remove_framework(&self, framework_id: &str) -> Result<(), CheckpointError> {
        self.frameworks
            .remove(framework_id.as_bytes())
            .map(|_| ())
            .map_err(Self::store("remove a framework"))
    }

    pub fn put_task(&self, task: &pb::TaskCheckpoint) -> Result<(), CheckpointError> {
        let id = task
            .task
            .as_ref()
            .and_then(|t| t.task_id.as_ref())
            .map(|t| t.value.clone())
            .unwrap_or_default();
        self.tasks
            .insert(id.as_bytes(), task.encode_to_vec())
            .map(|_| ())
            .map_err(Self::store("write a task"))
    }

    /// Forgets a task and its updates.
    pub fn remove_task(&self, task_id: &str) -> Result<(), CheckpointError> {
        self.tasks
            .remove(task_id.as_bytes())
            .map_err(Self::store("remove a task"))?;
        let keys = self
            .updates
            .scan_prefix(&update_prefix(task_id))
            .map_err(Self::store("list updates"))?;
        for (key, _) in keys {
            self.updates
                .remove(key)
                .map_err(Self::store("remove an update"))?;
        }
        Ok(())
    }

    pub fn put_update(
        &self,
        task_id: &str,
        seq: u64,
        status: &pb::TaskStatus,
    ) -> Result<(), CheckpointError> {
        self.updates
            .insert(update_key(task_id, seq), status.encode_to_vec())
            .map(|_| ())
            .map_err(Self::store("write an update"))
    }

    pub fn remove_update(&self, task_id: &str, seq: u64) -> Result<(), CheckpointError> {
        self.updates
            .remove(update_key(task_id, seq))
            .map(|_| ())
            .map_err(Self::store("remove an update"))
    }

    /// Everything checkpointed, for recovery.
    pub fn load(&self) -> Result<Recovered, CheckpointError> {
        let mut recovered = Recovered {
            agent_id: self
                .meta
                .get(AGENT_ID)
                .map_err(Self::store("read the agent id"))?
                .and_then(|v| String::from_utf8(v).ok())
                .filter(|s| !s.is_empty()),
            ..Recovered::default()
        };
        for (key, value) in self
            .frameworks
            .scan_prefix(&[])
            .map_err(Self::store("read frameworks"))?
        {
            match pb::FrameworkInfo::decode(value.as_ref()) {
                Ok(info) => {
                    let id = String::from_utf8_lossy(&key).into_owned();
                    recovered.frameworks.insert(id, info);
                }
                Err(e) => {
                    tracing::error!(key = %String::from_utf8_lossy(&key), error = %e, "skipping a damaged framework checkpoint")
                }
            }
        }
        let mut updates: HashMap<String, Vec<(u64, pb::TaskStatus)>> = HashMap::new();
        for (key, value) in self
            .updates
            .scan_prefix(&[])
            .map_err(Self::store("read updates"))?
        {
            let decoded = split_update_key(&key).zip(pb::TaskStatus::decode(value.as_ref()).ok());
            match decoded {
                Some(((task_id, seq), status)) => {
                    updates.entry(task_id).or_default().push((seq, status))
                }
                None => tracing::error!("skipping a damaged status update checkpoint"),
            }
        }
        for (key, value) in self
            .tasks
            .scan_prefix(&[])
            .map_err(Self::store("read tasks"))?
        {
            let task_id = String::from_utf8_lossy(&key).into_owned();
            match pb::TaskCheckpoint::decode(value.as_ref()) {
                Ok(checkpoint) => {
                    let mut updates = updates.remove(&task_id).unwrap_or_default();
                    updates.sort_by_key(|(seq, _)| *seq);
                    recovered.tasks.push(RecoveredTask {
                        checkpoint,
                        updates,
                    });
                }
                Err(e) => {
                    tracing::error!(task = %task_id, error = %e, "skipping a damaged task checkpoint")
                }
            }
        }
        for task_id in updates.keys() {
            tracing::warn!(task = %task_id, "dropping status updates of a task the checkpoint does not hold");
        }
        Ok(recovered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> pb::TaskCheckpoint {
        pb::TaskCheckpoint {
            framework_id: Some(pb::FrameworkId { value: "f1".into() }),
            task: Some(pb::TaskInfo {
                task_id: Some(pb::TaskId { value: id.into() }),
                ..Default::default()
            }),
            container_id: format!("c-{id}"),
            state: pb::TaskState::TaskRunning as i32,
            ..Default::default()
        }
    }

    fn status(id: &str, state: pb::TaskState) -> pb::TaskStatus {
        pb::TaskStatus {
            task_id: Some(pb::TaskId { value: id.into() }),
            state: state as i32,
            ..Default::default()
        }
    }

    #[test]
    fn update_keys_round_trip_and_sort_per_task() {
        for id in ["t", "web.1", "odd\0id", ""] {
            assert_eq!(
                split_update_key(&update_key(id, 7)),
                Some((id.to_string(), 7))
            );
        }
        assert!(update_key("a", 2) < update_key("a", 10));
        // A task id that is a prefix of another does not share its updates.
        assert!(!update_key("ab", 1).starts_with(&update_prefix("a")));
    }

    #[tokio::test]
    async fn what_is_written_is_loaded_and_removal_takes_the_updates() {
        round_trip(Checkpoint::temporary()).await;
    }

    /// The hollow agents' store keeps the same contract as sled's.
    #[tokio::test]
    async fn the_in_memory_checkpoint_loads_what_was_written_too() {
        round_trip(Checkpoint::in_memory()).await;
    }

    async fn round_trip(c: Checkpoint) {
        c.set_agent_id("agent-1").expect("write");
        c.put_framework(&pb::FrameworkInfo {
            id: Some(pb::FrameworkId { value: "f1".into() }),
            user: "nobody".into(),
            ..Default::default()
        })
        .expect("write");
        c.put_task(&task("t1")).expect("write");
        c.put_task(&task("t2")).expect("write");
        c.put_update("t1", 2, &status("t1", pb::TaskState::TaskRunning))
            .expect("write");
        c.put_update("t1", 1, &status("t1", pb::TaskState::TaskStarting))
            .expect("write");
        c.put_update("t2", 1, &status("t2", pb::TaskState::TaskStarting))
            .expect("write");
        c.flush().await.expect("flush");

        let loaded = c.load().expect("load");
        assert_eq!(loaded.agent_id.as_deref(), Some("agent-1"));
        assert_eq!(loaded.frameworks["f1"].user, "nobody");
        let t1 = loaded
            .tasks
            .iter()
            .find(|t| t.checkpoint.container_id == "c-t1")
            .expect("t1");
        let seqs: Vec<u64> = t1.updates.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![1, 2]);

        c.remove_update("t1", 1).expect("remove");
        c.remove_task("t2").expect("remove");
        let loaded = c.load().expect("load");
        assert_eq!(loaded.tasks.len(), 1);
        assert_eq!(loaded.tasks[0].updates.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_concurrent_flushes_all_finish() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = std::sync::Arc::new(Checkpoint::open(dir.path()).expect("opens"));
        let mut writers = Vec::new();
        for i in 0..200u64 {
            let c = c.clone();
            writers.push(tokio::spawn(async move {
                c.put_update(
                    &format!("t{i}"),
                    1,
                    &status("t", pb::TaskState::TaskRunning),
                )
                .expect("write");
                c.flush().await.expect("flush");
            }));
        }
        let all = futures::future::join_all(writers);
        tokio::time::timeout(std::time::Duration::from_secs(30), all)
            .await
            .expect("every flush finished");
        drop(c);
        let reopened = Checkpoint::open(dir.path()).expect("reopens");
        let updates = reopened.updates.scan_prefix(&[]).expect("list").len();
        assert_eq!(updates, 200);
    }

    #[test]
    fn a_second_agent_cannot_open_the_same_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Checkpoint::open(dir.path()).expect("opens");
        let second = Checkpoint::open(dir.path());
        assert!(matches!(second, Err(CheckpointError::Open { .. })));
        drop(first);
    }
}
