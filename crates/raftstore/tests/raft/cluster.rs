//! Three (or four) nodes over gRPC on 127.0.0.1.

use std::time::Duration;

use meseta_proto::v1::conf_change_request::Kind;
use meseta_proto::v1::raft_client::RaftClient;
use meseta_proto::v1::ConfChangeRequest;
use meseta_raftstore::RaftError;

use crate::common::{commands_of, retry, wait_for, Cluster};

const ELECTION: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_keeps_acknowledged_writes_and_restarted_node_catches_up() {
    let mut c = Cluster::start(3, 1000).await;
    let leader = c.leader(ELECTION).await;
    let h = c.handle(leader).clone();
    for i in 0..5 {
        h.propose(format!("w{i}").into_bytes()).await.unwrap();
    }

    // A follower refuses writes and names the leader.
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();
    match c.handle(follower).propose(b"no".to_vec()).await {
        Err(RaftError::NotLeader { leader: Some(addr) }) => {
            assert_eq!(addr, c.addrs[&leader].to_string())
        }
        other => panic!("expected NotLeader with an address, got {other:?}"),
    }
    assert!(matches!(
        c.handle(follower).read_barrier().await,
        Err(RaftError::NotLeader { .. })
    ));

    c.kill(leader).await;
    let new_leader = c.leader(ELECTION).await;
    assert_ne!(new_leader, leader);
    let nh = c.handle(new_leader).clone();
    nh.read_barrier().await.unwrap();
    assert_eq!(commands_of(&nh), vec!["w0", "w1", "w2", "w3", "w4"]);
    nh.propose(b"after-failover".to_vec()).await.unwrap();

    c.restart(leader).await;
    let back = c.handle(leader).clone();
    wait_for("restarted node catches up", ELECTION, || {
        commands_of(&back).last().map(String::as_str) == Some("after-failover")
    })
    .await;
    assert_eq!(commands_of(&back).len(), 6);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_follower_catches_up_by_snapshot() {
    let mut c = Cluster::start(3, 10).await;
    let leader = c.leader(ELECTION).await;
    let lagging = *c.nodes.keys().find(|id| **id != leader).unwrap();
    c.faults.isolate(lagging);
    let h = c.handle(leader).clone();
    for i in 0..40 {
        h.propose(format!("s{i}").into_bytes()).await.unwrap();
    }
    let first = h.store().unwrap().first_index().unwrap();
    assert!(first > 30, "leader compacted its log (first index {first})");
    c.faults.heal();
    let lag = c.handle(lagging).clone();
    wait_for("lagging follower catches up", ELECTION, || {
        commands_of(&lag).len() == 40
    })
    .await;
    assert_eq!(commands_of(&lag), commands_of(&h));
    assert!(
        lag.state().lock().unwrap().restores >= 1,
        "the follower installed a snapshot"
    );

    // Restarted from its own snapshot + log, it still has everything.
    c.kill(lagging).await;
    c.restart(lagging).await;
    let lag = c.handle(lagging).clone();
    wait_for("restart recovers", ELECTION, || {
        commands_of(&lag).len() == 40
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_steps_down_and_majority_moves_on() {
    let mut c = Cluster::start(3, 1000).await;
    let old = c.leader(ELECTION).await;
    c.handle(old).propose(b"before".to_vec()).await.unwrap();
    c.faults.isolate(old);
    let old_h = c.handle(old).clone();
    wait_for("old leader steps down", ELECTION, || !old_h.is_leader()).await;
    let others: Vec<u64> = c.nodes.keys().copied().filter(|id| *id != old).collect();
    let new = retry("majority elects a leader", ELECTION, || {
        let c = &c;
        let others = others.clone();
        async move {
            others
                .iter()
                .copied()
                .find(|id| c.handle(*id).is_leader())
                .ok_or("no leader yet")
        }
    })
    .await;
    c.handle(new).propose(b"during".to_vec()).await.unwrap();
    c.faults.heal();
    wait_for("old leader learns the new entries", ELECTION, || {
        commands_of(&old_h) == vec!["before", "during"]
    })
    .await;
    c.kill(old).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_a_voter_over_grpc() {
    let mut c = Cluster::start(3, 1000).await;
    let leader = c.leader(ELECTION).await;
    c.handle(leader).propose(b"one".to_vec()).await.unwrap();
    let addr4 = c.start_joiner(4).await;

    // Ask a follower over gRPC: it answers UNAVAILABLE with the leader's address.
    let follower = *c
        .nodes
        .keys()
        .find(|id| **id != leader && **id != 4)
        .unwrap();
    let mut client = RaftClient::connect(format!("http://{}", c.addrs[&follower]))
        .await
        .unwrap();
    let add = ConfChangeRequest {
        kind: Kind::AddVoter as i32,
        node_id: 4,
        address: addr4.clone(),
    };
    let status = client.change_membership(add.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let hint = status
        .metadata()
        .get(meseta_proto::LEADER_METADATA)
        .unwrap();
    assert_eq!(hint.to_str().unwrap(), c.addrs[&leader].to_string());

    let mut client = RaftClient::connect(format!("http://{}", c.addrs[&leader]))
        .await
        .unwrap();
    let resp = client.change_membership(add).await.unwrap().into_inner();
    let mut voters = resp.voters.clone();
    voters.sort();
    assert_eq!(voters, vec![1, 2, 3, 4]);
    c.handle(leader).propose(b"two".to_vec()).await.unwrap();
    let n4 = c.handle(4).clone();
    wait_for("new voter catches up", ELECTION, || {
        commands_of(&n4) == vec!["one", "two"]
    })
    .await;
    assert_eq!(n4.peers().len(), 4, "the joiner learned every address");

    // Addresses survive a restart of the joiner (it is not in the founders' list).
    c.kill(4).await;
    c.restart(4).await;
    let n4 = c.handle(4).clone();
    assert_eq!(n4.peers().get(&4).map(String::as_str), Some(addr4.as_str()));
    wait_for("restarted joiner replays", ELECTION, || {
        commands_of(&n4) == vec!["one", "two"]
    })
    .await;

    let resp = c
        .handle(leader)
        .change_membership(ConfChangeRequest {
            kind: Kind::RemoveNode as i32,
            node_id: 4,
            address: String::new(),
        })
        .await
        .unwrap();
    let mut voters = resp.voters;
    voters.sort();
    assert_eq!(voters, vec![1, 2, 3]);
    c.handle(leader).propose(b"three".to_vec()).await.unwrap();
    assert!(!c.handle(leader).peers().contains_key(&4));
    c.shutdown().await;
}
