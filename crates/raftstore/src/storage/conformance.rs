//! One suite of tests run against every [`LogStore`] implementation.
//! A new backend is added by one entry in `harnesses()` below.

// Protobuf messages read best built field by field here.
#![allow(clippy::field_reassign_with_default)]

use super::*;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::Storage as _;

fn entry(index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e.data = format!("cmd-{index}-{term}").into_bytes().into();
    e
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|i| entry(i, term)).collect()
}

fn voters(ids: &[u64]) -> ConfState {
    let mut cs = ConfState::default();
    cs.voters = ids.to_vec();
    cs
}

fn snapshot(index: u64, term: u64, ids: &[u64], data: &[u8]) -> Snapshot {
    build_snapshot(index, term, voters(ids), data.to_vec())
}

fn indexes(es: &[Entry]) -> Vec<u64> {
    es.iter().map(|e| e.index).collect()
}

/// A store under test, plus a way to reopen it as after a process restart.
pub(crate) trait Harness {
    fn store(&self) -> Arc<dyn LogStore>;
    /// Drop the current handle and reopen from durable state.
    fn reopen(&mut self);
}

struct MemHarness(MemLogStore);
impl Harness for MemHarness {
    fn store(&self) -> Arc<dyn LogStore> {
        Arc::new(self.0.clone())
    }
    fn reopen(&mut self) {}
}

struct SledHarness {
    dir: tempfile::TempDir,
    store: Option<Arc<SledLogStore>>,
}
impl Harness for SledHarness {
    fn store(&self) -> Arc<dyn LogStore> {
        self.store.clone().expect("store is open between reopens")
    }
    fn reopen(&mut self) {
        self.store = None;
        // sled's background flusher can hold the directory's lock for a
        // moment after the last handle is dropped (seen under CPU load); a
        // restarted process never meets this, so wait for it here.
        let mut attempts = 0;
        let store = loop {
            match SledLogStore::open(self.dir.path()) {
                Ok(s) => break s,
                Err(e) if attempts < 40 => {
                    attempts += 1;
                    eprintln!("reopen sled store: {e}; retrying");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("reopen sled store: {e}"),
            }
        };
        self.store = Some(Arc::new(store));
    }
}

fn harnesses() -> Vec<(&'static str, Box<dyn Harness>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sled = Arc::new(SledLogStore::open(dir.path()).expect("open sled store"));
    vec![
        ("mem", Box::new(MemHarness(MemLogStore::new()))),
        (
            "sled",
            Box::new(SledHarness {
                dir,
                store: Some(sled),
            }),
        ),
    ]
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                for (backend, mut h) in harnesses() {
                    eprintln!("{}: {}", stringify!($name), backend);
                    super::conformance::cases::$name(&mut *h);
                }
            }
        )*
    };
}

conformance!(
    empty_store,
    append_and_read,
    append_overwrites_conflicting_suffix,
    append_rejects_gap_and_compacted,
    hard_and_conf_state,
    snapshot_then_compact,
    apply_snapshot_replaces_log,
    stale_snapshot_rejected,
    size_limit_returns_at_least_one,
    restart_recovers_everything,
    meta_round_trip,
    raft_storage_adapter,
    writes_count_syncs,
);

pub(crate) mod cases {
    use super::*;

    pub fn empty_store(h: &mut dyn Harness) {
        let s = h.store();
        assert_eq!(s.first_index().unwrap(), 1);
        assert_eq!(s.last_index().unwrap(), 0);
        assert_eq!(s.term(0).unwrap(), 0);
        assert!(matches!(s.term(1), Err(StoreError::Unavailable { .. })));
        assert_eq!(s.snapshot().unwrap().get_metadata().index, 0);
        assert!(!s.initial_state().unwrap().initialized());
    }

    pub fn append_and_read(h: &mut dyn Harness) {
        let s = h.store();
        s.append(&entries(1..=5, 1)).unwrap();
        assert_eq!(s.last_index().unwrap(), 5);
        assert_eq!(indexes(&s.entries(2, 5, None).unwrap()), vec![2, 3, 4]);
        assert_eq!(s.entries(3, 4, None).unwrap()[0], entry(3, 1));
        assert_eq!(s.term(5).unwrap(), 1);
        assert!(s.entries(3, 3, None).unwrap().is_empty());
        assert!(matches!(
            s.entries(4, 7, None),
            Err(StoreError::Unavailable { .. })
        ));
        s.append(&entries(6..=7, 2)).unwrap();
        assert_eq!(s.term(7).unwrap(), 2);
    }

    pub fn append_overwrites_conflicting_suffix(h: &mut dyn Harness) {
        let s = h.store();
        s.append(&entries(1..=6, 1)).unwrap();
        s.append(&entries(4..=4, 2)).unwrap();
        assert_eq!(s.last_index().unwrap(), 4);
        assert_eq!(s.term(4).unwrap(), 2);
        assert_eq!(s.term(3).unwrap(), 1);
        assert!(matches!(s.term(5), Err(StoreError::Unavailable { .. })));
        drop(s);
        h.reopen();
        let s = h.store();
        assert_eq!(s.last_index().unwrap(), 4);
        assert_eq!(indexes(&s.entries(1, 5, None).unwrap()), vec![1, 2, 3, 4]);
    }

    pub fn append_rejects_gap_and_compacted(h: &mut dyn Harness) {
        let s = h.store();
        s.append(&entries(1..=3, 1)).unwrap();
        assert!(matches!(
            s.append(&entries(5..=6, 1)),
            Err(StoreError::InvalidWrite(_))
        ));
        s.create_snapshot(2, voters(&[1]), vec![]).unwrap();
        s.compact(2).unwrap();
        assert!(matches!(
            s.append(&entries(2..=4, 2)),
            Err(StoreError::InvalidWrite(_))
        ));
        // Nothing changed by the failed writes.
        assert_eq!(s.last_index().unwrap(), 3);
        assert_eq!(s.term(3).unwrap(), 1);
    }

    pub fn hard_and_conf_state(h: &mut dyn Harness) {
        let s = h.store();
        let mut hs = HardState::default();
        hs.term = 3;
        hs.vote = 2;
        hs.commit = 0;
        s.set_hard_state(hs.clone()).unwrap();
        s.set_conf_state(voters(&[1, 2, 3])).unwrap();
        s.append(&entries(1..=2, 3)).unwrap();
        s.set_commit(2).unwrap();
        let st = s.initial_state().unwrap();
        assert_eq!(st.hard_state.term, 3);
        assert_eq!(st.hard_state.vote, 2);
        assert_eq!(st.hard_state.commit, 2);
        assert_eq!(st.conf_state.voters, vec![1, 2, 3]);
        assert!(st.initialized());
    }

    pub fn snapshot_then_compact(h: &mut dyn Harness) {
        let s = h.store();
        s.append(&entries(1..=10, 1)).unwrap();
        s.append(&entries(11..=12, 2)).unwrap();
        assert!(
            matches!(s.compact(5), Err(StoreError::InvalidWrite(_))),
            "compacting past the snapshot must fail"
        );
        let snap = s
            .create_snapshot(11, voters(&[1, 2]), b"state".to_vec())
            .unwrap();
        assert_eq!(snap.get_metadata().term, 2);
        s.compact(8).unwrap();
        assert_eq!(s.first_index().unwrap(), 9);
        assert_eq!(s.term(8).unwrap(), 1);
        assert!(matches!(s.term(7), Err(StoreError::Compacted { .. })));
        assert!(matches!(
            s.entries(8, 10, None),
            Err(StoreError::Compacted { .. })
        ));
        assert_eq!(
            indexes(&s.entries(9, 13, None).unwrap()),
            vec![9, 10, 11, 12]
        );
        // Compacting again at or before the point is a no-op.
        s.compact(3).unwrap();
        s.compact(11).unwrap();
        assert_eq!(s.first_index().unwrap(), 12);
        assert_eq!(s.term(11).unwrap(), 2);
        let got = s.snapshot().unwrap();
        assert_eq!(got.get_metadata().index, 11);
        assert_eq!(&got.data[..], b"state");
        assert_eq!(got.get_metadata().get_conf_state().voters, vec![1, 2]);
    }

    pub fn apply_snapshot_replaces_log(h: &mut dyn Harness) {
        let s = h.store();
        s.append(&entries(1..=4, 1)).unwrap();
        s.apply_snapshot(snapshot(20, 3, &[1, 2, 3], b"leader"))
            .unwrap();
        assert_eq!(s.first_index().unwrap(), 21);
        assert_eq!(s.last_index().unwrap(), 20);
        assert_eq!(s.term(20).unwrap(), 3);
        let st = s.initial_state().unwrap();
        assert_eq!(st.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(st.hard_state.commit, 20);
        assert_eq!(st.hard_state.term, 3);
        // A snapshot plus the entries that follow it, in one batch.
        s.write(LogBatch {
            snapshot: Some(snapshot(30, 4, &[1, 2], b"newer")),
            entries: entries(31..=32, 4),
            ..LogBatch::default()
        })
        .unwrap();
        assert_eq!(s.first_index().unwrap(), 31);
        assert_eq!(indexes(&s.entries(31, 33, None).unwrap()), vec![31, 32]);
        drop(s);
        h.reopen();
        let s = h.store();
        assert_eq!(s.first_index().unwrap(), 31);
        assert_eq!(s.last_index().unwrap(), 32);
        assert_eq!(s.term(30).unwrap(), 4);
        assert_eq!(&s.snapshot().unwrap().data[..], b"newer");
    }

    pub fn stale_snapshot_rejected(h: &mut dyn Harness) {
        let s = h.store();
        s.apply_snapshot(snapshot(10, 2, &[1], b"")).unwrap();
        assert!(matches!(
            s.apply_snapshot(snapshot(5, 1, &[1], b"")),
            Err(StoreError::SnapshotOutOfDate { .. })
        ));
        assert_eq!(s.first_index().unwrap(), 11);
    }

    pub fn size_limit_returns_at_least_one(h: &mut dyn Harness) {
        let s = h.store();
        s.append(&entries(1..=10, 1)).unwrap();
        let one = u64::from(entry(1, 1).compute_size());
        assert_eq!(s.entries(1, 11, Some(0)).unwrap().len(), 1);
        assert_eq!(s.entries(1, 11, Some(one * 3)).unwrap().len(), 3);
        assert_eq!(s.entries(1, 11, Some(u64::MAX)).unwrap().len(), 10);
    }

    pub fn restart_recovers_everything(h: &mut dyn Harness) {
        {
            let s = h.store();
            s.set_conf_state(voters(&[1, 2, 3])).unwrap();
            let mut hs = HardState::default();
            hs.term = 2;
            hs.vote = 1;
            hs.commit = 7;
            s.write(LogBatch {
                entries: entries(1..=9, 2),
                hard_state: Some(hs),
                ..LogBatch::default()
            })
            .unwrap();
            s.create_snapshot(7, voters(&[1, 2, 3]), b"sm".to_vec())
                .unwrap();
            s.compact(6).unwrap();
        }
        h.reopen();
        let s = h.store();
        let st = s.initial_state().unwrap();
        assert_eq!(st.hard_state.commit, 7);
        assert_eq!(st.hard_state.vote, 1);
        assert_eq!(st.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(s.first_index().unwrap(), 7);
        assert_eq!(s.last_index().unwrap(), 9);
        assert_eq!(s.term(6).unwrap(), 2);
        assert_eq!(s.snapshot().unwrap().get_metadata().index, 7);
        assert_eq!(&s.snapshot().unwrap().data[..], b"sm");
        assert_eq!(s.entries(7, 10, None).unwrap()[2], entry(9, 2));
    }

    pub fn meta_round_trip(h: &mut dyn Harness) {
        let s = h.store();
        assert_eq!(s.get_meta("peers").unwrap(), None);
        s.put_meta("peers", b"1=a:1").unwrap();
        drop(s);
        h.reopen();
        assert_eq!(
            h.store().get_meta("peers").unwrap().as_deref(),
            Some(&b"1=a:1"[..])
        );
    }

    pub fn raft_storage_adapter(h: &mut dyn Harness) {
        let s = h.store();
        s.append(&entries(1..=5, 1)).unwrap();
        s.create_snapshot(3, voters(&[1]), b"x".to_vec()).unwrap();
        s.compact(3).unwrap();
        let r = RaftStorage::new(s);
        assert_eq!(r.first_index().unwrap(), 4);
        assert_eq!(r.last_index().unwrap(), 5);
        assert_eq!(
            r.entries(2, 4, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(raft::StorageError::Compacted))
        );
        assert_eq!(
            r.term(9),
            Err(raft::Error::Store(raft::StorageError::Unavailable))
        );
        assert_eq!(r.snapshot(0, 1).unwrap().get_metadata().index, 3);
        assert!(!r.take_snapshot_request());
        // Peer 2 is not in the snapshot's configuration: ask for a fresh one.
        assert_eq!(
            r.snapshot(0, 2),
            Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable
            ))
        );
        assert!(r.take_snapshot_request());
        assert!(!r.take_snapshot_request());
        assert_eq!(
            r.snapshot(4, 1),
            Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable
            ))
        );
    }

    pub fn writes_count_syncs(h: &mut dyn Harness) {
        let s = h.store();
        let before = s.sync_count();
        s.write(LogBatch {
            entries: entries(1..=100, 1),
            hard_state: Some(HardState::default()),
            conf_state: Some(voters(&[1])),
            ..LogBatch::default()
        })
        .unwrap();
        assert_eq!(s.sync_count(), before + 1);
        s.set_commit(50).unwrap();
        assert_eq!(
            s.sync_count(),
            before + 1,
            "commit-only updates do not fsync"
        );
    }
}
