//! One voter, no network.

use std::time::Duration;

use futures::future::join_all;
use meseta_raftstore::{LogStore, MemLogStore, RaftError, RaftHandle, StartOptions};

use crate::common::{commands_of, fast_config, wait_for, Journal};

fn solo(dir: &std::path::Path) -> meseta_raftstore::RaftConfig {
    fast_config(1, vec![(1, "127.0.0.1:1".into())], dir.to_path_buf())
}

#[tokio::test]
async fn single_node_proposes_and_applies_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = RaftHandle::start(solo(dir.path()), Journal::default())
        .await
        .unwrap();
    assert!(node.is_leader(), "a single voter elects itself on start");
    assert_eq!(node.leader(), Some((1, "127.0.0.1:1".to_string())));
    let out = node.propose(b"a".to_vec()).await.unwrap();
    let index: u64 = String::from_utf8(out)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(index > meseta_raftstore::node::INIT_INDEX);
    assert_eq!(
        node.propose(b"b".to_vec()).await.unwrap(),
        format!("{}:b", index + 1).into_bytes()
    );
    node.read_barrier().await.unwrap();
    assert_eq!(commands_of(&node), vec!["a", "b"]);
    assert_eq!(*node.leadership().borrow(), Some(1));
    node.shutdown().await;
}

#[tokio::test]
async fn restart_replays_the_log_and_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let node = RaftHandle::start(solo(dir.path()), Journal::default())
        .await
        .unwrap();
    for i in 0..10 {
        node.propose(format!("c{i}").into_bytes()).await.unwrap();
    }
    let before = node.state().lock().unwrap().applied.clone();
    node.shutdown().await;

    let node = RaftHandle::start(solo(dir.path()), Journal::default())
        .await
        .unwrap();
    wait_for("replay", Duration::from_secs(5), || {
        node.state().lock().unwrap().applied.len() == 10
    })
    .await;
    assert_eq!(
        node.state().lock().unwrap().applied,
        before,
        "same commands at the same indexes"
    );
    node.propose(b"after".to_vec()).await.unwrap();
    assert_eq!(commands_of(&node).last().map(String::as_str), Some("after"));
    node.shutdown().await;
}

#[tokio::test]
async fn snapshots_compact_the_log_and_restore_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = solo(dir.path());
    config.snapshot_interval = 10;
    let node = RaftHandle::start(config.clone(), Journal::default())
        .await
        .unwrap();
    for i in 0..35 {
        node.propose(format!("c{i}").into_bytes()).await.unwrap();
    }
    let store = node.store().unwrap();
    let snap_index = store.snapshot().unwrap().get_metadata().index;
    assert!(snap_index >= 30, "snapshot taken (at {snap_index})");
    assert!(
        store.first_index().unwrap() > snap_index.min(30),
        "log compacted"
    );
    let expected = node.state().lock().unwrap().applied.clone();
    drop(store);
    node.shutdown().await;

    let node = RaftHandle::start(config, Journal::default()).await.unwrap();
    wait_for("recovery", Duration::from_secs(5), || {
        node.state().lock().unwrap().applied.len() == 35
    })
    .await;
    let state = node.state();
    let journal = state.lock().unwrap().clone();
    assert_eq!(journal.restores, 1, "recovery started from the snapshot");
    assert_eq!(journal.applied, expected);
    node.shutdown().await;
}

#[tokio::test]
async fn concurrent_proposals_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let node = RaftHandle::start(solo(dir.path()), Journal::default())
        .await
        .unwrap();
    node.propose(b"warm-up".to_vec()).await.unwrap();
    let before = node.sync_count();
    const N: usize = 300;
    let outs = join_all((0..N).map(|i| {
        let node = node.clone();
        async move { node.propose(format!("p{i}").into_bytes()).await }
    }))
    .await;
    assert!(outs.iter().all(Result::is_ok));
    let syncs = node.sync_count() - before;
    assert!(syncs < (N / 5) as u64, "{N} proposals took {syncs} fsyncs");
    let mut seen = commands_of(&node);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), N + 1);
    node.shutdown().await;
}

#[tokio::test]
async fn works_on_the_in_memory_store_and_fails_after_shutdown() {
    let store = MemLogStore::new();
    let dir = tempfile::tempdir().unwrap();
    let node = RaftHandle::start_with(
        solo(dir.path()),
        Journal::default(),
        StartOptions {
            store: Some(std::sync::Arc::new(store.clone())),
            ..StartOptions::default()
        },
    )
    .await
    .unwrap();
    node.propose(b"x".to_vec()).await.unwrap();
    assert!(store.last_index().unwrap() > meseta_raftstore::node::INIT_INDEX);
    let other = node.clone();
    node.shutdown().await;
    assert!(matches!(
        other.propose(b"y".to_vec()).await,
        Err(RaftError::Stopped { id: 1 })
    ));
    assert!(!other.is_leader());
}

#[tokio::test]
async fn snapshot_log_ratio_spaces_snapshots_by_bytes_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = solo(dir.path());
    config.snapshot_interval = 10;
    config.snapshot_log_ratio = 1.0;
    let node = RaftHandle::start(config, Journal::default()).await.unwrap();
    // Each journal entry snapshots larger than its 3-byte command, so after
    // the first snapshot (at 10 entries) the next one waits for as many
    // bytes of log as that snapshot holds: 25 more commands are not enough.
    for i in 0..35 {
        node.propose(format!("c{i:02}").into_bytes()).await.unwrap();
    }
    let store = node.store().unwrap();
    let first = store.snapshot().unwrap().get_metadata().index;
    let snapshot_bytes = store.snapshot().unwrap().get_data().len() as u64;
    assert!(first > 0, "the first snapshot is taken by count alone");
    assert!(
        first < 30,
        "count alone would have snapshotted again at 20 and 30 (snapshot at {first})"
    );
    assert!(
        snapshot_bytes > 25 * 3,
        "the journal snapshot outweighs 25 commands"
    );
    for i in 0..(snapshot_bytes / 3 + 10) {
        node.propose(format!("d{i:02}").into_bytes()).await.unwrap();
    }
    let later = store.snapshot().unwrap().get_metadata().index;
    assert!(
        later > first + 25,
        "a later snapshot follows once enough was written ({first} → {later})"
    );
    drop(store);
    node.shutdown().await;
}
