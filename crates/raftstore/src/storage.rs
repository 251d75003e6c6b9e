//! Durable raft state behind the [`LogStore`] trait: the log, the hard state,
//! the conf state, the latest snapshot and a few metadata keys.
//!
//! Two implementations: [`SledLogStore`] (on disk, what a master runs) and
//! [`MemLogStore`] (tests). Both pass the same conformance suite
//! (`storage::conformance`), so a third backend only has to pass it too.
//! [`RaftStorage`] adapts any `LogStore` to `raft::Storage`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState};

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The entry was discarded by log compaction.
    #[error("log entry {index} is compacted (first index is {first})")]
    Compacted { index: u64, first: u64 },
    /// The entry is past the end of the log.
    #[error("log entry {index} is unavailable (last index is {last})")]
    Unavailable { index: u64, last: u64 },
    /// A snapshot older than the one already stored.
    #[error("snapshot at index {index} is older than the stored one at {current}")]
    SnapshotOutOfDate { index: u64, current: u64 },
    /// A write that would break the log's invariants (gap, overwrite of a compacted entry…).
    #[error("invalid log write: {0}")]
    InvalidWrite(String),
    /// The sled database failed.
    #[error("sled {op} failed in {path}")]
    Sled {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    /// Bytes read back from disk do not decode.
    #[error("decode {what} from storage")]
    Decode {
        what: String,
        #[source]
        source: protobuf::ProtobufError,
    },
    /// A stored value has the wrong shape.
    #[error("corrupt {what} in storage")]
    Corrupt { what: String },
}

impl From<StoreError> for raft::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted { .. } => raft::Error::Store(raft::StorageError::Compacted),
            StoreError::Unavailable { .. } => raft::Error::Store(raft::StorageError::Unavailable),
            StoreError::SnapshotOutOfDate { .. } => {
                raft::Error::Store(raft::StorageError::SnapshotOutOfDate)
            }
            other => raft::Error::Store(raft::StorageError::Other(Box::new(other))),
        }
    }
}

/// One atomic, durable write to a [`LogStore`]. Applied in this order:
/// the snapshot (which discards the whole log and sets the conf state and
/// commit from its metadata), then the entries (which replace any existing
/// entries from `entries[0].index` on), then the hard state, then the conf
/// state.
#[derive(Debug, Default, Clone)]
pub struct LogBatch {
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub conf_state: Option<ConfState>,
}

impl LogBatch {
    /// True when the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.conf_state.is_none()
    }
}

/// The raft log and its companions, persisted.
///
/// Contract shared by every implementation (checked by the conformance suite):
/// - Writes (`write`, `create_snapshot`, `compact`, `put_meta`) are atomic and
///   durable (fsynced) when they return `Ok`; `set_commit` is atomic but may be
///   lost on a crash (raft re-learns the commit index).
/// - `first_index()` is the compaction point + 1; `term(first_index() - 1)`
///   stays answerable. An empty store has first index 1, last index 0.
/// - The stored snapshot's index is always ≥ the compaction point, so any
///   entry raft can no longer read is covered by the snapshot.
/// - Reads never panic on bad indexes: they return `Compacted`/`Unavailable`.
pub trait LogStore: Send + Sync + 'static {
    /// Hard state and conf state as last written.
    fn initial_state(&self) -> Result<RaftState, StoreError>;
    /// Apply `batch` atomically and fsync.
    fn write(&self, batch: LogBatch) -> Result<(), StoreError>;
    /// Update only the hard state's commit index, without fsync.
    fn set_commit(&self, commit: u64) -> Result<(), StoreError>;
    /// Store a snapshot of the state machine as of `index` (which must be in
    /// the log, or be the current compaction point) with `conf_state` and `data`.
    fn create_snapshot(
        &self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<Snapshot, StoreError>;
    /// Discard the entries with index ≤ `through`. `through` must not pass the
    /// stored snapshot's index; compacting at or before the compaction point is a no-op.
    fn compact(&self, through: u64) -> Result<(), StoreError>;
    /// Entries `[low, high)`, limited to `max_size` bytes but at least one entry.
    fn entries(&self, low: u64, high: u64, max_size: Option<u64>)
        -> Result<Vec<Entry>, StoreError>;
    /// Term of the entry at `index`, for `first_index() - 1 ..= last_index()`.
    fn term(&self, index: u64) -> Result<u64, StoreError>;
    /// First index readable with `entries`.
    fn first_index(&self) -> Result<u64, StoreError>;
    /// Index of the last entry (the compaction point when the log is empty).
    fn last_index(&self) -> Result<u64, StoreError>;
    /// The latest snapshot (index 0 when none was stored).
    fn snapshot(&self) -> Result<Snapshot, StoreError>;
    /// Read a metadata value (node-local facts such as peer addresses).
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Write a metadata value durably.
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// How many fsyncs this store has done (for batching tests and metrics).
    fn sync_count(&self) -> u64;

    /// Append (and overwrite from `entries[0].index` on) durably.
    fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        self.write(LogBatch {
            entries: entries.to_vec(),
            ..LogBatch::default()
        })
    }
    /// Persist the hard state durably.
    fn set_hard_state(&self, hs: HardState) -> Result<(), StoreError> {
        self.write(LogBatch {
            hard_state: Some(hs),
            ..LogBatch::default()
        })
    }
    /// Persist the conf state durably.
    fn set_conf_state(&self, cs: ConfState) -> Result<(), StoreError> {
        self.write(LogBatch {
            conf_state: Some(cs),
            ..LogBatch::default()
        })
    }
    /// Replace the log with a snapshot received from the leader, durably.
    fn apply_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.write(LogBatch {
            snapshot: Some(snapshot),
            ..LogBatch::default()
        })
    }
}

/// Keep a prefix of `entries` whose encoded size stays within `max_size`,
/// always at least one entry.
fn limit_size(entries: &mut Vec<Entry>, max_size: Option<u64>) {
    let Some(max) = max_size else { return };
    let mut total = 0u64;
    let keep = entries
        .iter()
        .take_while(|e| {
            total += u64::from(e.compute_size());
            total <= max
        })
        .count();
    entries.truncate(keep.max(1));
}

/// Position of the log relative to compaction, kept in memory by both stores.
#[derive(Debug, Clone, Default)]
struct LogBounds {
    /// Last compacted index (entries ≤ this are gone) and its term.
    truncated_index: u64,
    truncated_term: u64,
    /// Index of the last entry, `truncated_index` when the log is empty.
    last_index: u64,
    /// Index of the stored snapshot (0 = none).
    snapshot_index: u64,
}

impl LogBounds {
    fn check_range(&self, low: u64, high: u64) -> Result<(), StoreError> {
        if low <= self.truncated_index {
            return Err(StoreError::Compacted {
                index: low,
                first: self.truncated_index + 1,
            });
        }
        if high > self.last_index + 1 {
            return Err(StoreError::Unavailable {
                index: high - 1,
                last: self.last_index,
            });
        }
        Ok(())
    }

    fn check_term(&self, index: u64) -> Result<Option<u64>, StoreError> {
        if index == self.truncated_index {
            return Ok(Some(self.truncated_term));
        }
        if index < self.truncated_index {
            return Err(StoreError::Compacted {
                index,
                first: self.truncated_index + 1,
            });
        }
        if index > self.last_index {
            return Err(StoreError::Unavailable {
                index,
                last: self.last_index,
            });
        }
        Ok(None)
    }

    fn check_append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        let first = entries[0].index;
        if first <= self.truncated_index {
            return Err(StoreError::InvalidWrite(format!(
                "append at {first} overwrites compacted entries (compacted through {})",
                self.truncated_index
            )));
        }
        if first > self.last_index + 1 {
            return Err(StoreError::InvalidWrite(format!(
                "append at {first} leaves a gap after last index {}",
                self.last_index
            )));
        }
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(StoreError::InvalidWrite(format!(
                    "entries not contiguous: {} then {}",
                    pair[0].index, pair[1].index
                )));
            }
        }
        Ok(())
    }

    fn check_snapshot(&self, snap: &Snapshot) -> Result<(), StoreError> {
        let index = snap.get_metadata().index;
        if index < self.snapshot_index || index < self.truncated_index {
            return Err(StoreError::SnapshotOutOfDate {
                index,
                current: self.snapshot_index.max(self.truncated_index),
            });
        }
        Ok(())
    }
}

fn apply_snapshot_to_state(state: &mut RaftState, snap: &Snapshot) {
    let meta = snap.get_metadata();
    state.conf_state = meta.get_conf_state().clone();
    state.hard_state.commit = state.hard_state.commit.max(meta.index);
    state.hard_state.term = state.hard_state.term.max(meta.term);
}

// ---------------------------------------------------------------------------
// In memory

#[derive(Default)]
struct MemInner {
    state: RaftState,
    bounds: LogBounds,
    /// `entries[i].index == bounds.truncated_index + 1 + i`.
    entries: Vec<Entry>,
    snapshot: Snapshot,
    meta: BTreeMap<String, Vec<u8>>,
}

/// A [`LogStore`] in memory: for tests and simulations. "Durable" means
/// "survives until the value is dropped"; clones share the same log, so a
/// test can "restart" a node by building a new one on a clone.
#[derive(Clone, Default)]
pub struct MemLogStore {
    inner: Arc<Mutex<MemInner>>,
    syncs: Arc<AtomicU64>,
}

impl MemLogStore {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemInner> {
        self.inner
            .lock()
            .expect("mem log store lock poisoned: a writer panicked")
    }
}

impl LogStore for MemLogStore {
    fn initial_state(&self) -> Result<RaftState, StoreError> {
        Ok(self.lock().state.clone())
    }

    fn write(&self, batch: LogBatch) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let mut bounds = inner.bounds.clone();
        let mut state = inner.state.clone();
        if let Some(snap) = &batch.snapshot {
            bounds.check_snapshot(snap)?;
            let meta = snap.get_metadata();
            bounds.truncated_index = meta.index;
            bounds.truncated_term = meta.term;
            bounds.last_index = meta.index;
            bounds.snapshot_index = meta.index;
            apply_snapshot_to_state(&mut state, snap);
        }
        if !batch.entries.is_empty() {
            bounds.check_append(&batch.entries)?;
        }
        // Validation done: mutate.
        if let Some(snap) = batch.snapshot {
            inner.entries.clear();
            inner.snapshot = snap;
        }
        if let Some(first) = batch.entries.first() {
            let keep = (first.index - bounds.truncated_index - 1) as usize;
            inner.entries.truncate(keep);
            bounds.last_index = batch.entries.last().map_or(0, |e| e.index);
            inner.entries.extend(batch.entries);
        }
        if let Some(hs) = batch.hard_state {
            state.hard_state = hs;
        }
        if let Some(cs) = batch.conf_state {
            state.conf_state = cs;
        }
        inner.bounds = bounds;
        inner.state = state;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn set_commit(&self, commit: u64) -> Result<(), StoreError> {
        self.lock().state.hard_state.commit = commit;
        Ok(())
    }

    fn create_snapshot(
        &self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<Snapshot, StoreError> {
        let mut inner = self.lock();
        let term = match inner.bounds.check_term(index)? {
            Some(t) => t,
            None => inner.entries[(index - inner.bounds.truncated_index - 1) as usize].term,
        };
        if index < inner.bounds.snapshot_index {
            return Err(StoreError::SnapshotOutOfDate {
                index,
                current: inner.bounds.snapshot_index,
            });
        }
        let snap = build_snapshot(index, term, conf_state, data);
        inner.snapshot = snap.clone();
        inner.bounds.snapshot_index = index;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(snap)
    }

    fn compact(&self, through: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let b = inner.bounds.clone();
        if through <= b.truncated_index {
            return Ok(());
        }
        check_compact(&b, through)?;
        let drop = (through - b.truncated_index) as usize;
        let term = inner.entries[drop - 1].term;
        inner.entries.drain(..drop);
        inner.bounds.truncated_index = through;
        inner.bounds.truncated_term = term;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: Option<u64>,
    ) -> Result<Vec<Entry>, StoreError> {
        let inner = self.lock();
        inner.bounds.check_range(low, high)?;
        if low >= high {
            return Ok(Vec::new());
        }
        let off = inner.bounds.truncated_index + 1;
        let mut out = inner.entries[(low - off) as usize..(high - off) as usize].to_vec();
        limit_size(&mut out, max_size);
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64, StoreError> {
        let inner = self.lock();
        match inner.bounds.check_term(index)? {
            Some(t) => Ok(t),
            None => Ok(inner.entries[(index - inner.bounds.truncated_index - 1) as usize].term),
        }
    }

    fn first_index(&self) -> Result<u64, StoreError> {
        Ok(self.lock().bounds.truncated_index + 1)
    }

    fn last_index(&self) -> Result<u64, StoreError> {
        Ok(self.lock().bounds.last_index)
    }

    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Ok(self.lock().snapshot.clone())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().meta.get(key).cloned())
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.lock().meta.insert(key.to_string(), value.to_vec());
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

fn check_compact(b: &LogBounds, through: u64) -> Result<(), StoreError> {
    if through > b.last_index {
        return Err(StoreError::InvalidWrite(format!(
            "compact through {through} past last index {}",
            b.last_index
        )));
    }
    if through > b.snapshot_index {
        return Err(StoreError::InvalidWrite(format!(
            "compact through {through} past the snapshot at {}",
            b.snapshot_index
        )));
    }
    Ok(())
}

fn build_snapshot(index: u64, term: u64, conf_state: ConfState, data: Vec<u8>) -> Snapshot {
    let mut snap = Snapshot {
        data: data.into(),
        ..Snapshot::default()
    };
    let meta = snap.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(conf_state);
    snap
}

// ---------------------------------------------------------------------------
// sled

const LOG_PREFIX: u8 = b'l';
const KEY_HARD_STATE: &[u8] = b"m:hard_state";
const KEY_CONF_STATE: &[u8] = b"m:conf_state";
const KEY_SNAPSHOT: &[u8] = b"m:snapshot";
/// Name of the sled tree that holds [`KEY_SNAPSHOT`].
const SNAPSHOT_TREE: &[u8] = b"snapshot";
const KEY_TRUNCATED: &[u8] = b"m:truncated";
const USER_META_PREFIX: &str = "u:";

fn log_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = LOG_PREFIX;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn log_key_index(key: &[u8]) -> Result<u64, StoreError> {
    let raw: [u8; 8] = key
        .get(1..9)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt {
            what: format!("log key {key:?}"),
        })?;
    Ok(u64::from_be_bytes(raw))
}

/// A [`LogStore`] in a sled database (one tree; log entries keyed by
/// big-endian index, metadata under `m:`/`u:` keys). Every durable write ends
/// with `Db::flush`.
pub struct SledLogStore {
    db: sled::Db,
    /// The snapshot lives in a tree of its own: sled rewrites a whole leaf
    /// on every change to any key in it, and next to the hard state (written
    /// on every batch) a multi-megabyte snapshot turned each fsync into a
    /// rewrite of the snapshot.
    snapshots: sled::Tree,
    path: PathBuf,
    cache: Mutex<(RaftState, LogBounds)>,
    syncs: AtomicU64,
}

impl SledLogStore {
    /// Open (or create) the store in directory `path` and recover its state.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = sled::Config::new()
            .path(&path)
            .open()
            .map_err(|source| StoreError::Sled {
                op: "open",
                path: path.clone(),
                source,
            })?;
        let snapshots = db
            .open_tree(SNAPSHOT_TREE)
            .map_err(|source| StoreError::Sled {
                op: "open snapshot tree",
                path: path.clone(),
                source,
            })?;
        let store = SledLogStore {
            db,
            snapshots,
            path,
            cache: Mutex::new(Default::default()),
            syncs: AtomicU64::new(0),
        };
        let recovered = store.recover()?;
        *store.lock() = recovered;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, (RaftState, LogBounds)> {
        self.cache
            .lock()
            .expect("sled log store lock poisoned: a writer panicked")
    }

    fn sled_err(&self, op: &'static str) -> impl FnOnce(sled::Error) -> StoreError + '_ {
        move |source| StoreError::Sled {
            op,
            path: self.path.clone(),
            source,
        }
    }

    fn get_raw(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        self.db.get(key).map_err(self.sled_err("get"))
    }

    fn get_snapshot_raw(&self) -> Result<Option<sled::IVec>, StoreError> {
        self.snapshots
            .get(KEY_SNAPSHOT)
            .map_err(self.sled_err("get snapshot"))
    }

    /// Apply `batch` to the main tree and, when given, store `snapshot`, in
    /// one atomic step.
    fn apply_atomically(
        &self,
        batch: sled::Batch,
        snapshot: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        use sled::transaction::TransactionError;
        use sled::Transactional;
        let Some(snapshot) = snapshot else {
            return self.db.apply_batch(batch).map_err(self.sled_err("write"));
        };
        let main: &sled::Tree = &self.db;
        (main, &self.snapshots)
            .transaction(|(m, snaps)| {
                m.apply_batch(&batch)?;
                snaps.insert(KEY_SNAPSHOT, snapshot.as_slice())?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(source) => (self.sled_err("write"))(source),
                TransactionError::Abort(()) => StoreError::Sled {
                    op: "write",
                    path: self.path.clone(),
                    source: sled::Error::Unsupported("transaction aborted".into()),
                },
            })
    }

    fn decode<M: protobuf::Message>(what: &str, bytes: &[u8]) -> Result<M, StoreError> {
        M::parse_from_bytes(bytes).map_err(|source| StoreError::Decode {
            what: what.to_string(),
            source,
        })
    }

    fn recover(&self) -> Result<(RaftState, LogBounds), StoreError> {
        let mut state = RaftState::default();
        if let Some(v) = self.get_raw(KEY_HARD_STATE)? {
            state.hard_state = Self::decode("hard state", &v)?;
        }
        if let Some(v) = self.get_raw(KEY_CONF_STATE)? {
            state.conf_state = Self::decode("conf state", &v)?;
        }
        let mut bounds = LogBounds::default();
        if let Some(v) = self.get_raw(KEY_TRUNCATED)? {
            if v.len() != 16 {
                return Err(StoreError::Corrupt {
                    what: "compaction point".into(),
                });
            }
            let (i, t) = v.split_at(8);
            bounds.truncated_index = u64::from_be_bytes(i.try_into().expect("split at 8"));
            bounds.truncated_term = u64::from_be_bytes(t.try_into().expect("split at 8"));
        }
        if let Some(v) = self.get_snapshot_raw()? {
            let snap: Snapshot = Self::decode("snapshot", &v)?;
            bounds.snapshot_index = snap.get_metadata().index;
        }
        let last = self
            .db
            .range(log_key(0)..=log_key(u64::MAX))
            .next_back()
            .transpose()
            .map_err(self.sled_err("scan"))?;
        bounds.last_index = match last {
            Some((k, _)) => log_key_index(&k)?,
            None => bounds.truncated_index,
        };
        Ok((state, bounds))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(self.sled_err("flush"))?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn remove_log_range(
        &self,
        batch: &mut sled::Batch,
        from: u64,
        through: u64,
    ) -> Result<(), StoreError> {
        if from > through {
            return Ok(());
        }
        for kv in self.db.range(log_key(from)..=log_key(through)) {
            let (k, _) = kv.map_err(self.sled_err("scan"))?;
            batch.remove(k);
        }
        Ok(())
    }
}

fn encode<M: protobuf::Message>(m: &M) -> Vec<u8> {
    m.write_to_bytes()
        .expect("encoding a raft protobuf message into memory cannot fail")
}

fn truncated_bytes(index: u64, term: u64) -> Vec<u8> {
    let mut v = index.to_be_bytes().to_vec();
    v.extend_from_slice(&term.to_be_bytes());
    v
}

impl LogStore for SledLogStore {
    fn initial_state(&self) -> Result<RaftState, StoreError> {
        Ok(self.lock().0.clone())
    }

    fn write(&self, batch: LogBatch) -> Result<(), StoreError> {
        let mut cache = self.lock();
        let (mut state, mut bounds) = cache.clone();
        let mut b = sled::Batch::default();
        if let Some(snap) = &batch.snapshot {
            bounds.check_snapshot(snap)?;
            self.remove_log_range(&mut b, 0, u64::MAX)?;
            let meta = snap.get_metadata();
            bounds.truncated_index = meta.index;
            bounds.truncated_term = meta.term;
            bounds.last_index = meta.index;
            bounds.snapshot_index = meta.index;
            apply_snapshot_to_state(&mut state, snap);
            b.insert(KEY_TRUNCATED, truncated_bytes(meta.index, meta.term));
            b.insert(KEY_HARD_STATE, encode(&state.hard_state));
            b.insert(KEY_CONF_STATE, encode(&state.conf_state));
        }
        if let Some(first) = batch.entries.first() {
            bounds.check_append(&batch.entries)?;
            let new_last = batch.entries.last().map_or(first.index, |e| e.index);
            // Entries past the new end were written by an older leader: drop them.
            if batch.snapshot.is_none() {
                self.remove_log_range(&mut b, new_last + 1, bounds.last_index)?;
            }
            for e in &batch.entries {
                b.insert(&log_key(e.index), encode(e));
            }
            bounds.last_index = new_last;
        }
        if let Some(hs) = batch.hard_state {
            b.insert(KEY_HARD_STATE, encode(&hs));
            state.hard_state = hs;
        }
        if let Some(cs) = batch.conf_state {
            b.insert(KEY_CONF_STATE, encode(&cs));
            state.conf_state = cs;
        }
        self.apply_atomically(b, batch.snapshot.as_ref().map(encode))?;
        self.flush()?;
        *cache = (state, bounds);
        Ok(())
    }

    fn set_commit(&self, commit: u64) -> Result<(), StoreError> {
        let mut cache = self.lock();
        let mut hs = cache.0.hard_state.clone();
        hs.commit = commit;
        self.db
            .insert(KEY_HARD_STATE, encode(&hs))
            .map_err(self.sled_err("write"))?;
        cache.0.hard_state = hs;
        Ok(())
    }

    fn create_snapshot(
        &self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<Snapshot, StoreError> {
        let mut cache = self.lock();
        let term = match cache.1.check_term(index)? {
            Some(t) => t,
            None => {
                let v = self
                    .get_raw(&log_key(index))?
                    .ok_or(StoreError::Unavailable {
                        index,
                        last: cache.1.last_index,
                    })?;
                Self::decode::<Entry>("log entry", &v)?.term
            }
        };
        if index < cache.1.snapshot_index {
            return Err(StoreError::SnapshotOutOfDate {
                index,
                current: cache.1.snapshot_index,
            });
        }
        let snap = build_snapshot(index, term, conf_state, data);
        self.snapshots
            .insert(KEY_SNAPSHOT, encode(&snap))
            .map_err(self.sled_err("write"))?;
        self.flush()?;
        cache.1.snapshot_index = index;
        Ok(snap)
    }

    fn compact(&self, through: u64) -> Result<(), StoreError> {
        let mut cache = self.lock();
        let bounds = cache.1.clone();
        if through <= bounds.truncated_index {
            return Ok(());
        }
        check_compact(&bounds, through)?;
        let v = self
            .get_raw(&log_key(through))?
            .ok_or(StoreError::Unavailable {
                index: through,
                last: bounds.last_index,
            })?;
        let term = Self::decode::<Entry>("log entry", &v)?.term;
        let mut b = sled::Batch::default();
        self.remove_log_range(&mut b, bounds.truncated_index + 1, through)?;
        b.insert(KEY_TRUNCATED, truncated_bytes(through, term));
        self.db.apply_batch(b).map_err(self.sled_err("compact"))?;
        self.flush()?;
        cache.1.truncated_index = through;
        cache.1.truncated_term = term;
        Ok(())
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: Option<u64>,
    ) -> Result<Vec<Entry>, StoreError> {
        // Hold the cache lock so a concurrent write cannot tear the range.
        let cache = self.lock();
        cache.1.check_range(low, high)?;
        if low >= high {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for kv in self.db.range(log_key(low)..log_key(high)) {
            let (k, v) = kv.map_err(self.sled_err("scan"))?;
            let e: Entry = Self::decode("log entry", &v)?;
            let expected = low + out.len() as u64;
            if e.index != expected || log_key_index(&k)? != expected {
                return Err(StoreError::Corrupt {
                    what: format!("log entry {expected} (found {})", e.index),
                });
            }
            size += u64::from(e.compute_size());
            let over = max_size.is_some_and(|m| size > m);
            if over && !out.is_empty() {
                break;
            }
            out.push(e);
            if over {
                break;
            }
        }
        if out.is_empty() {
            return Err(StoreError::Corrupt {
                what: format!("log range {low}..{high} is missing"),
            });
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64, StoreError> {
        let cache = self.lock();
        if let Some(t) = cache.1.check_term(index)? {
            return Ok(t);
        }
        let v = self
            .get_raw(&log_key(index))?
            .ok_or_else(|| StoreError::Corrupt {
                what: format!("log entry {index} is missing"),
            })?;
        Ok(Self::decode::<Entry>("log entry", &v)?.term)
    }

    fn first_index(&self) -> Result<u64, StoreError> {
        Ok(self.lock().1.truncated_index + 1)
    }

    fn last_index(&self) -> Result<u64, StoreError> {
        Ok(self.lock().1.last_index)
    }

    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        match self.get_snapshot_raw()? {
            Some(v) => Self::decode("snapshot", &v),
            None => Ok(Snapshot::default()),
        }
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .get_raw(format!("{USER_META_PREFIX}{key}").as_bytes())?
            .map(|v| v.to_vec()))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.db
            .insert(format!("{USER_META_PREFIX}{key}").as_bytes(), value)
            .map_err(self.sled_err("write"))?;
        self.flush()
    }

    fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------
// raft::Storage adapter

/// Adapts a shared [`LogStore`] to `raft::Storage`, the interface `RawNode` reads through.
///
/// When raft asks for a snapshot the stored one cannot serve (too old, or
/// taken before the receiving peer joined the configuration), the call
/// answers "temporarily unavailable" and raises a flag; the node takes a
/// fresh snapshot ([`RaftStorage::take_snapshot_request`]) and raft retries.
#[derive(Clone)]
pub struct RaftStorage {
    store: Arc<dyn LogStore>,
    snapshot_wanted: Arc<std::sync::atomic::AtomicBool>,
}

impl RaftStorage {
    /// Wrap `store`.
    pub fn new(store: Arc<dyn LogStore>) -> Self {
        RaftStorage {
            store,
            snapshot_wanted: Arc::default(),
        }
    }

    /// True (once) when raft needed a snapshot the store could not serve.
    pub fn take_snapshot_request(&self) -> bool {
        self.snapshot_wanted.swap(false, Ordering::AcqRel)
    }

    /// The wrapped store, for the writes raft-rs leaves to the application.
    pub fn store(&self) -> &Arc<dyn LogStore> {
        &self.store
    }
}

impl raft::Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(self.store.initial_state()?)
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        Ok(self.store.entries(low, high, max_size.into())?)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        Ok(self.store.term(idx)?)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.store.first_index()?)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.store.last_index()?)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let snap = self.store.snapshot()?;
        let meta = snap.get_metadata();
        let cs = meta.get_conf_state();
        let knows_peer = to == 0 || cs.voters.contains(&to) || cs.learners.contains(&to);
        if meta.index < request_index || !knows_peer {
            self.snapshot_wanted.store(true, Ordering::Release);
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(snap)
    }
}

#[cfg(test)]
pub(crate) mod conformance;
