//! The status update manager: every update a task makes is checkpointed,
//! then sent, then resent with backoff until the framework's
//! acknowledgement comes back through the master, as Mesos promises.
//!
//! - Per task, updates form a stream; only its head is in flight, so a
//!   framework sees a task's states in order. The next one goes out when the
//!   head is acknowledged.
//! - An update is sent only once it is durable (its checkpoint flushed), so
//!   an update a framework saw is never forgotten by an agent that restarts.
//! - The head is resent every [`RETRY_MIN`], doubling up to [`RETRY_MAX`]
//!   while no acknowledgement comes, and at once after every
//!   (re-)registration with a master (failover, agent restart).
//! - A stream whose terminal update is acknowledged is done: the caller then
//!   removes the task's checkpoint.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use meseta_core::task::task_state_of;
use meseta_core::TaskStateExt;
use meseta_proto::v1 as pb;

use crate::checkpoint::Checkpoint;

/// First resend of an unacknowledged update.
pub(crate) const RETRY_MIN: Duration = Duration::from_secs(5);
/// Longest wait between resends.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(60);

/// Where updates go: the agent's stream to the leading master.
pub(crate) trait UpdateSink: Send + Sync {
    /// Sends `status`; false when no master is connected (the manager keeps
    /// it and sends it again after the next registration).
    fn send_update(&self, framework_id: &str, status: &pb::TaskStatus) -> bool;
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    status: pb::TaskStatus,
    /// Its checkpoint reached the disk: it may be sent.
    durable: bool,
}

#[derive(Debug)]
struct Stream {
    framework_id: String,
    pending: VecDeque<Pending>,
    next_seq: u64,
    /// When the head is due to be sent (again); None: not sent yet.
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Stream {
    fn new(framework_id: &str) -> Stream {
        Stream {
            framework_id: framework_id.to_string(),
            pending: VecDeque::new(),
            next_seq: 1,
            retry_at: None,
            backoff: RETRY_MIN,
        }
    }

    /// Sends the head if it is durable; schedules its resend.
    fn send_head(&mut self, sink: &dyn UpdateSink, now: Instant) {
        let Some(head) = self.pending.front().filter(|p| p.durable) else {
            return;
        };
        sink.send_update(&self.framework_id, &head.status);
        self.retry_at = Some(now + self.backoff);
    }
}

/// What an acknowledgement did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Acked {
    /// Not the head's uuid: a duplicate or a stale acknowledgement, ignored.
    Ignored,
    /// The head was acknowledged; `done` when it was the task's terminal
    /// update and nothing is left to deliver.
    Head { done: bool },
}

/// Status update counts, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UpdateCounts {
    pub generated: u64,
    pub acknowledged: u64,
    pub pending: usize,
}

/// See the module documentation.
pub(crate) struct StatusUpdateManager {
    streams: Mutex<HashMap<String, Stream>>,
    /// Updates generated and acknowledged since start (for `/metrics`).
    generated: AtomicU64,
    acknowledged: AtomicU64,
    checkpoint: Arc<Checkpoint>,
    sink: Arc<dyn UpdateSink>,
}

fn task_id_of(status: &pb::TaskStatus) -> String {
    status
        .task_id
        .as_ref()
        .map(|t| t.value.clone())
        .unwrap_or_default()
}

impl StatusUpdateManager {
    pub fn new(checkpoint: Arc<Checkpoint>, sink: Arc<dyn UpdateSink>) -> StatusUpdateManager {
        StatusUpdateManager {
            streams: Mutex::new(HashMap::new()),
            generated: AtomicU64::new(0),
            acknowledged: AtomicU64::new(0),
            checkpoint,
            sink,
        }
    }

    fn streams(&self) -> MutexGuard<'_, HashMap<String, Stream>> {
        // Every change under this lock is a whole push/pop: consistent even
        // after a panic elsewhere.
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checkpoints `status` (with whatever else the caller wrote to the
    /// checkpoint before), flushes, then sends it if it is the head of its
    /// task's stream. A failed flush is logged and the update still
    /// delivered: the framework must learn what happened even when the disk
    /// fails.
    pub async fn update(&self, framework_id: &str, status: pb::TaskStatus) {
        self.generated.fetch_add(1, Ordering::Relaxed);
        let task_id = task_id_of(&status);
        let seq = {
            let mut streams = self.streams();
            let stream = streams
                .entry(task_id.clone())
                .or_insert_with(|| Stream::new(framework_id));
            let seq = stream.next_seq;
            stream.next_seq += 1;
            if let Err(e) = self.checkpoint.put_update(&task_id, seq, &status) {
                tracing::error!(task = %task_id, error = %e, "could not checkpoint a status update; sending it anyway");
            }
            stream.pending.push_back(Pending {
                seq,
                status,
                durable: false,
            });
            seq
        };
        if let Err(e) = self.checkpoint.flush().await {
            tracing::error!(task = %task_id, error = %e, "could not flush the checkpoint; sending the update anyway");
        }
        let mut streams = self.streams();
        let Some(stream) = streams.get_mut(&task_id) else {
            return;
        };
        let was_ready = stream.pending.front().is_some_and(|p| p.durable);
        // The flush covered every write made before it.
        for p in stream.pending.iter_mut().filter(|p| p.seq <= seq) {
            p.durable = true;
        }
        if !was_ready {
            stream.send_head(self.sink.as_ref(), Instant::now());
        }
    }

    /// Updates generated and acknowledged since this agent started, and
    /// those waiting for an acknowledgement now.
    pub fn counts(&self) -> UpdateCounts {
        UpdateCounts {
            generated: self.generated.load(Ordering::Relaxed),
            acknowledged: self.acknowledged.load(Ordering::Relaxed),
            pending: self.streams().values().map(|s| s.pending.len()).sum(),
        }
    }

    /// The framework acknowledged `uuid` for `task_id`.
    pub fn acknowledge(&self, task_id: &str, uuid: &[u8]) -> Acked {
        let mut streams = self.streams();
        let Some(stream) = streams.get_mut(task_id) else {
            return Acked::Ignored;
        };
        if stream.pending.front().is_none_or(|h| h.status.uuid != uuid) {
            return Acked::Ignored;
        }
        let Some(head) = stream.pending.pop_front() else {
            return Acked::Ignored;
        };
        if let Err(e) = self.checkpoint.remove_update(task_id, head.seq) {
            // Worst case the update is sent once more after a restart.
            tracing::warn!(task = %task_id, error = %e, "could not remove an acknowledged update from the checkpoint");
        }
        self.acknowledged.fetch_add(1, Ordering::Relaxed);
        stream.backoff = RETRY_MIN;
        stream.retry_at = None;
        let terminal = task_state_of(head.status.state).is_terminal();
        if stream.pending.is_empty() {
            if terminal {
                streams.remove(task_id);
                return Acked::Head { done: true };
            }
            return Acked::Head { done: false };
        }
        stream.send_head(self.sink.as_ref(), Instant::now());
        Acked::Head { done: false }
    }

    /// Sends every stream's head now (after a (re-)registration).
    pub fn resend_all(&self) {
        let now = Instant::now();
        for stream in self.streams().values_mut() {
            stream.backoff = RETRY_MIN;
            stream.send_head(self.sink.as_ref(), now);
        }
    }

    /// Resends the heads whose acknowledgement is overdue, doubling their
    /// wait each time.
    pub fn resend_due(&self, now: Instant) {
        for stream in self.streams().values_mut() {
            if stream.retry_at.is_some_and(|at| at <= now) {
                stream.backoff = (stream.backoff * 2).min(RETRY_MAX);
                stream.send_head(self.sink.as_ref(), now);
            }
        }
    }

    /// Restores a task's unacknowledged updates from the checkpoint; they go
    /// out at the next [`StatusUpdateManager::resend_all`].
    pub fn recover(&self, task_id: &str, framework_id: &str, updates: Vec<(u64, pb::TaskStatus)>) {
        if updates.is_empty() {
            return;
        }
        let mut stream = Stream::new(framework_id);
        stream.next_seq = updates.iter().map(|(seq, _)| seq + 1).max().unwrap_or(1);
        stream.pending = updates
            .into_iter()
            .map(|(seq, status)| Pending {
                seq,
                status,
                durable: true,
            })
            .collect();
        self.streams().insert(task_id.to_string(), stream);
    }

    /// Drops a task's stream (its checkpoint is being removed).
    pub fn forget(&self, task_id: &str) {
        self.streams().remove(task_id);
    }

    /// The task's updates not yet acknowledged, oldest first.
    pub fn unacknowledged(&self, task_id: &str) -> Vec<pb::TaskStatus> {
        self.streams()
            .get(task_id)
            .map(|s| s.pending.iter().map(|p| p.status.clone()).collect())
            .unwrap_or_default()
    }

    /// Whether anything of `task_id` waits for an acknowledgement.
    pub fn has_pending(&self, task_id: &str) -> bool {
        self.streams().contains_key(task_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what was sent; can be disconnected.
    #[derive(Default)]
    struct FakeSink {
        sent: Mutex<Vec<pb::TaskStatus>>,
        disconnected: std::sync::atomic::AtomicBool,
    }

    impl UpdateSink for FakeSink {
        fn send_update(&self, _framework_id: &str, status: &pb::TaskStatus) -> bool {
            if self.disconnected.load(std::sync::atomic::Ordering::SeqCst) {
                return false;
            }
            self.sent.lock().expect("lock").push(status.clone());
            true
        }
    }

    impl FakeSink {
        fn states(&self) -> Vec<i32> {
            self.sent
                .lock()
                .expect("lock")
                .iter()
                .map(|s| s.state)
                .collect()
        }
        fn clear(&self) {
            self.sent.lock().expect("lock").clear();
        }
    }

    fn status(task: &str, state: pb::TaskState, uuid: u8) -> pb::TaskStatus {
        pb::TaskStatus {
            task_id: Some(pb::TaskId { value: task.into() }),
            state: state as i32,
            uuid: vec![uuid],
            ..Default::default()
        }
    }

    use pb::TaskState::{
        TaskFinished as Finished, TaskRunning as Running, TaskStarting as Starting,
    };

    fn manager() -> (StatusUpdateManager, Arc<FakeSink>, Arc<Checkpoint>) {
        let sink = Arc::new(FakeSink::default());
        let checkpoint = Arc::new(Checkpoint::temporary());
        (
            StatusUpdateManager::new(checkpoint.clone(), sink.clone()),
            sink,
            checkpoint,
        )
    }

    #[tokio::test]
    async fn updates_go_out_in_order_one_acknowledgement_at_a_time() {
        let (m, sink, _) = manager();
        m.update("f", status("t", Starting, 1)).await;
        m.update("f", status("t", Running, 2)).await;
        m.update("f", status("t", Finished, 3)).await;
        assert_eq!(sink.states(), vec![Starting as i32]);
        assert_eq!(m.acknowledge("t", &[2]), Acked::Ignored, "not the head");
        assert_eq!(m.acknowledge("t", &[1]), Acked::Head { done: false });
        assert_eq!(m.acknowledge("t", &[1]), Acked::Ignored, "a duplicate");
        assert_eq!(m.acknowledge("t", &[2]), Acked::Head { done: false });
        assert_eq!(
            sink.states(),
            vec![Starting as i32, Running as i32, Finished as i32]
        );
        assert_eq!(m.acknowledge("t", &[3]), Acked::Head { done: true });
        assert!(!m.has_pending("t"));
    }

    #[tokio::test]
    async fn every_update_is_checkpointed_before_it_is_sent_and_removed_when_acknowledged() {
        let (m, _sink, checkpoint) = manager();
        checkpoint
            .put_task(&pb::TaskCheckpoint {
                task: Some(pb::TaskInfo {
                    task_id: Some(pb::TaskId { value: "t".into() }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .expect("write");
        m.update("f", status("t", Starting, 1)).await;
        m.update("f", status("t", Running, 2)).await;
        let stored = |c: &Checkpoint| -> Vec<i32> {
            c.load().expect("load").tasks[0]
                .updates
                .iter()
                .map(|(_, s)| s.state)
                .collect()
        };
        assert_eq!(stored(&checkpoint), vec![Starting as i32, Running as i32]);
        m.acknowledge("t", &[1]);
        assert_eq!(stored(&checkpoint), vec![Running as i32]);
    }

    #[tokio::test]
    async fn the_head_is_resent_with_backoff_and_at_once_after_registration() {
        let (m, sink, _) = manager();
        sink.disconnected
            .store(true, std::sync::atomic::Ordering::SeqCst);
        m.update("f", status("t", Running, 1)).await;
        assert!(sink.states().is_empty());
        sink.disconnected
            .store(false, std::sync::atomic::Ordering::SeqCst);
        m.resend_all();
        assert_eq!(sink.states(), vec![Running as i32]);
        sink.clear();
        let start = Instant::now();
        m.resend_due(start + RETRY_MIN / 2);
        assert!(sink.states().is_empty(), "not due yet");
        m.resend_due(start + RETRY_MIN + Duration::from_millis(1));
        assert_eq!(sink.states().len(), 1);
        // The next wait is twice as long.
        m.resend_due(start + RETRY_MIN * 2);
        assert_eq!(sink.states().len(), 1);
        m.resend_due(start + RETRY_MIN * 4);
        assert_eq!(sink.states().len(), 2);
    }

    #[tokio::test]
    async fn recovered_updates_resume_where_they_stopped() {
        let (m, sink, _) = manager();
        m.recover(
            "t",
            "f",
            vec![(4, status("t", Running, 4)), (5, status("t", Finished, 5))],
        );
        assert_eq!(m.unacknowledged("t").len(), 2);
        m.resend_all();
        assert_eq!(sink.states(), vec![Running as i32]);
        m.update("f", status("t", Finished, 6)).await;
        assert_eq!(m.acknowledge("t", &[4]), Acked::Head { done: false });
        assert_eq!(m.acknowledge("t", &[5]), Acked::Head { done: false });
        assert_eq!(m.acknowledge("t", &[6]), Acked::Head { done: true });
    }
}
