//! MasterState unit tests: no network, channels stand in for streams.

use super::*;
use tokio::sync::mpsc::unbounded_channel;

fn agent_info(host: &str) -> pb::AgentInfo {
    pb::AgentInfo {
        hostname: host.into(),
        address: format!("{host}:5051"),
        ..Default::default()
    }
}

fn task(id: &str, cpus: f64, mem: f64) -> pb::TaskInfo {
    pb::TaskInfo {
        name: id.into(),
        task_id: Some(pb::TaskId { value: id.into() }),
        resources: Resources::parse(&format!("cpus:{cpus};mem:{mem}"))
            .expect("valid")
            .to_proto(),
        command: Some(pb::CommandInfo {
            value: "sleep 1".into(),
            shell: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn tasks_missing_from_a_reregistration_are_reported_lost() {
    let mut s = MasterState::default();
    let (atx, _arx) = unbounded_channel();
    let total = Resources::parse("cpus:2;mem:1024").expect("valid");
    s.attach_agent("a1", &agent_info("h1"), total.clone(), &[], atx, 1);
    let (ftx, mut frx) = unbounded_channel();
    s.attach_framework("f1", pb::FrameworkInfo::default(), ftx, 2, false, "s");
    assert_eq!(s.allocate(), 1);
    let offer_id = s.offers.keys().next().cloned().expect("one offer");
    s.accept(
        "f1",
        pb::call::Accept {
            offer_ids: vec![pb::OfferId { value: offer_id }],
            operations: vec![pb::offer::Operation {
                operation: Some(pb::offer::operation::Operation::Launch(
                    pb::offer::operation::Launch {
                        task_infos: vec![task("t1", 1.0, 512.0)],
                    },
                )),
            }],
            filters: None,
        },
    )
    .expect("valid offers");
    // The agent comes back (restarted) without the task.
    let (atx2, _arx2) = unbounded_channel();
    s.attach_agent("a1", &agent_info("h1"), total, &[], atx2, 3);
    let mut lost = false;
    while let Ok(Ok(ev)) = frx.try_recv() {
        if let Some(pb::event::Event::Update(u)) = ev.event {
            let st = u.status.expect("status");
            if st.task_id.as_ref().is_some_and(|t| t.value == "t1") {
                lost = st.state == TaskState::TaskLost as i32;
            }
        }
    }
    assert!(lost, "the framework must hear that t1 is lost");
    assert!(s.agents["a1"].used.is_empty());
}

#[test]
fn tasks_that_ended_while_the_agent_was_down_are_not_reported_lost() {
    let mut s = MasterState::default();
    let (atx, _arx) = unbounded_channel();
    let total = Resources::parse("cpus:2;mem:1024").expect("valid");
    s.attach_agent("a1", &agent_info("h1"), total.clone(), &[], atx, 1);
    let (ftx, mut frx) = unbounded_channel();
    s.attach_framework("f1", pb::FrameworkInfo::default(), ftx, 2, false, "s");
    assert_eq!(s.allocate(), 1);
    let offer_id = s.offers.keys().next().cloned().expect("one offer");
    s.accept(
        "f1",
        pb::call::Accept {
            offer_ids: vec![pb::OfferId { value: offer_id }],
            operations: vec![pb::offer::Operation {
                operation: Some(pb::offer::operation::Operation::Launch(
                    pb::offer::operation::Launch {
                        task_infos: vec![task("t1", 1.0, 512.0)],
                    },
                )),
            }],
            filters: None,
        },
    )
    .expect("valid offers");
    // The agent restarted; the task finished meanwhile and its terminal
    // update is still unacknowledged on the agent.
    let ended = pb::RunningTask {
        framework_id: Some(pb::FrameworkId { value: "f1".into() }),
        task: Some(task("t1", 1.0, 512.0)),
        state: TaskState::TaskFinished as i32,
        latest_status: None,
    };
    let (atx2, _arx2) = unbounded_channel();
    s.attach_agent("a1", &agent_info("h1"), total, &[ended], atx2, 3);
    while let Ok(Ok(ev)) = frx.try_recv() {
        if let Some(pb::event::Event::Update(u)) = ev.event {
            let st = u.status.expect("status");
            assert_ne!(st.state, TaskState::TaskLost as i32, "{st:?}");
        }
    }
    assert!(s.agents["a1"].used.is_empty());
    assert!(s.agents["a1"].tasks.is_empty());
}

#[test]
fn offers_accept_and_free_keep_agents_within_capacity() {
    let mut s = MasterState::default();
    let (atx, mut arx) = unbounded_channel();
    s.attach_agent(
        "a1",
        &agent_info("h1"),
        Resources::parse("cpus:2;mem:1024").expect("valid"),
        &[],
        atx,
        1,
    );
    let (ftx, mut frx) = unbounded_channel();
    s.attach_framework("f1", pb::FrameworkInfo::default(), ftx, 2, false, "s");
    assert_eq!(s.allocate(), 1);
    let offer = match frx.try_recv() {
        Ok(Ok(pb::Event {
            event: Some(pb::event::Event::Offers(o)),
        })) => o.offers[0].clone(),
        other => panic!("expected offers, got {other:?}"),
    };
    // Offered + used never exceed the total.
    assert_eq!(s.allocate(), 0);
    let outcomes = s
        .accept(
            "f1",
            pb::call::Accept {
                offer_ids: vec![offer.id.clone().expect("id")],
                operations: vec![pb::offer::Operation {
                    operation: Some(pb::offer::operation::Operation::Launch(
                        pb::offer::operation::Launch {
                            task_infos: vec![task("t1", 1.0, 512.0), task("t2", 1.5, 10.0)],
                        },
                    )),
                }],
                filters: Some(pb::Filters {
                    refuse_seconds: 0.0,
                }),
            },
        )
        .expect("valid offers");
    assert_eq!(outcomes[0].1, LaunchOutcome::Launched);
    assert!(matches!(outcomes[1].1, LaunchOutcome::Rejected(_)));
    let a = &s.agents["a1"];
    assert_eq!(a.used.scalar("cpus"), 1.0);
    assert!(a
        .total
        .contains(&a.used.plus(&a.offered).expect("same types")));
    // The agent got the RunTask; the framework got TASK_ERROR for t2.
    let _registered = arx.try_recv().expect("registered");
    assert!(matches!(
        arx.try_recv(),
        Ok(Ok(pb::MasterMessage {
            message: Some(pb::master_message::Message::RunTask(_))
        }))
    ));
    // The rest is offered again, then freed resources come back.
    assert_eq!(s.allocate(), 1);
    let finished = pb::TaskStatus {
        task_id: Some(pb::TaskId { value: "t1".into() }),
        state: TaskState::TaskFinished as i32,
        ..Default::default()
    };
    s.status_update("a1", "f1", finished);
    assert!(s.agents["a1"].used.is_empty());
}

#[test]
fn decline_filters_agent_until_revive() {
    let mut s = MasterState::default();
    let (atx, _arx) = unbounded_channel();
    s.attach_agent(
        "a1",
        &agent_info("h1"),
        Resources::parse("cpus:2;mem:1024").expect("valid"),
        &[],
        atx,
        1,
    );
    let (ftx, _frx) = unbounded_channel();
    s.attach_framework("f1", pb::FrameworkInfo::default(), ftx, 2, false, "s");
    assert_eq!(s.allocate(), 1);
    let oid = s.offers.keys().next().cloned().expect("one offer");
    s.decline(
        "f1",
        &pb::call::Decline {
            offer_ids: vec![pb::OfferId { value: oid }],
            filters: Some(pb::Filters {
                refuse_seconds: 60.0,
            }),
        },
    );
    assert_eq!(s.allocate(), 0);
    s.revive("f1");
    assert_eq!(s.allocate(), 1);
    s.suppress("f1");
    let oid = s.offers.keys().next().cloned().expect("one offer");
    s.decline(
        "f1",
        &pb::call::Decline {
            offer_ids: vec![pb::OfferId { value: oid }],
            filters: None,
        },
    );
    s.revive("f1");
    s.suppress("f1");
    assert_eq!(s.allocate(), 0);
}

#[test]
fn reserved_resources_only_reach_their_role() {
    let mut s = MasterState::default();
    let (atx, _arx) = unbounded_channel();
    s.attach_agent(
        "a1",
        &agent_info("h1"),
        Resources::parse("cpus(web):2;mem(web):100").expect("valid"),
        &[],
        atx,
        1,
    );
    let (ftx, _frx) = unbounded_channel();
    s.attach_framework(
        "f1",
        pb::FrameworkInfo {
            role: "db".into(),
            ..Default::default()
        },
        ftx,
        2,
        false,
        "s",
    );
    assert_eq!(s.allocate(), 0);
    let (ftx2, _frx2) = unbounded_channel();
    s.attach_framework(
        "f2",
        pb::FrameworkInfo {
            role: "web".into(),
            ..Default::default()
        },
        ftx2,
        3,
        false,
        "s",
    );
    assert_eq!(s.allocate(), 1);
    assert!(s.offers.values().all(|o| o.framework_id == "f2"));
}

#[test]
fn a_kill_waits_for_an_agent_that_has_not_re_registered() {
    let mut s = MasterState::default();
    let (ftx, mut frx) = unbounded_channel();
    s.attach_framework("f1", pb::FrameworkInfo::default(), ftx, 1, false, "s");
    let kill = pb::call::Kill {
        task_id: Some(pb::TaskId { value: "t1".into() }),
        agent_id: Some(pb::AgentId { value: "a1".into() }),
        kill_policy: None,
    };
    s.kill("f1", &kill, true);
    assert!(
        frx.try_recv().is_err(),
        "no TASK_LOST while the agent may come back"
    );
    let running = pb::RunningTask {
        framework_id: Some(pb::FrameworkId { value: "f1".into() }),
        task: Some(task("t1", 1.0, 64.0)),
        state: TaskState::TaskRunning as i32,
        latest_status: None,
    };
    let (atx, mut arx) = unbounded_channel();
    let total = Resources::parse("cpus:2;mem:1024").expect("valid");
    s.attach_agent("a1", &agent_info("h1"), total, &[running], atx, 2);
    let _registered = arx.try_recv().expect("registered");
    assert!(matches!(
        arx.try_recv(),
        Ok(Ok(pb::MasterMessage {
            message: Some(pb::master_message::Message::KillTask(_))
        }))
    ));
    // Without the agent in the registry, an unknown task is lost at once.
    s.kill(
        "f1",
        &pb::call::Kill {
            task_id: Some(pb::TaskId { value: "t9".into() }),
            ..kill
        },
        false,
    );
    let lost = frx.try_recv().expect("an update");
    assert!(matches!(
        lost,
        Ok(pb::Event { event: Some(pb::event::Event::Update(ref u)) })
            if u.status.as_ref().is_some_and(|st| st.state == TaskState::TaskLost as i32)
    ));
}

#[test]
fn frameworks_past_their_failover_timeout_are_torn_down() {
    let mut s = MasterState::default();
    let mut ops = s.events.subscribe();
    let (ftx, _frx) = unbounded_channel();
    let info = pb::FrameworkInfo {
        failover_timeout: 10.0,
        ..Default::default()
    };
    s.attach_framework("f1", info, ftx, 1, false, "s");
    assert!(matches!(
        ops.try_recv(),
        Ok(ClusterEvent::FrameworkAdded(_))
    ));
    s.detach_framework("f1", 1);
    let now = Instant::now();
    assert!(s.expire_frameworks(now).is_empty());
    assert_eq!(
        s.expire_frameworks(now + Duration::from_secs(11)),
        vec!["f1".to_string()]
    );
    assert!(s.frameworks.is_empty());
    let mut removed = false;
    while let Ok(e) = ops.try_recv() {
        removed |= matches!(e, ClusterEvent::FrameworkRemoved(_));
    }
    assert!(removed, "operators hear FRAMEWORK_REMOVED");
}

fn updates(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Result<pb::Event, tonic::Status>>,
) -> Vec<pb::TaskStatus> {
    let mut out = Vec::new();
    while let Ok(Ok(ev)) = rx.try_recv() {
        if let Some(pb::event::Event::Update(u)) = ev.event {
            out.extend(u.status);
        }
    }
    out
}

fn running(framework: &str, id: &str) -> pb::RunningTask {
    pb::RunningTask {
        framework_id: Some(pb::FrameworkId {
            value: framework.into(),
        }),
        task: Some(task(id, 0.5, 64.0)),
        state: TaskState::TaskRunning as i32,
        latest_status: None,
    }
}

fn partition_aware_info() -> pb::FrameworkInfo {
    pb::FrameworkInfo {
        capabilities: vec![pb::framework_info::Capability {
            r#type: pb::framework_info::capability::Type::PartitionAware as i32,
        }],
        ..Default::default()
    }
}

#[test]
fn a_silent_agent_is_unreachable_to_partition_aware_frameworks_and_lost_to_others() {
    let mut s = MasterState::default();
    let (atx, _arx) = unbounded_channel();
    let total = Resources::parse("cpus:4;mem:1024").expect("valid");
    let (aware_tx, mut aware) = unbounded_channel();
    let (plain_tx, mut plain) = unbounded_channel();
    s.attach_framework("aware", partition_aware_info(), aware_tx, 1, false, "s1");
    s.attach_framework(
        "plain",
        pb::FrameworkInfo::default(),
        plain_tx,
        2,
        false,
        "s2",
    );
    s.attach_agent(
        "a1",
        &agent_info("h1"),
        total.clone(),
        &[running("aware", "t1"), running("plain", "t2")],
        atx,
        3,
    );
    assert!(s.allocate() > 0, "the agent's free resources are offered");
    // Nothing heard for longer than the silence limit.
    s.agents.get_mut("a1").expect("attached").last_heartbeat -= Duration::from_secs(10);
    let expiry = s.expire_agents(Duration::from_secs(3), Duration::from_secs(3600));
    assert_eq!(expiry.unreachable.len(), 1);
    assert!(expiry.gone.is_empty());
    assert!(s.offers.is_empty(), "its offers are rescinded");
    let aware_states: Vec<i32> = updates(&mut aware).iter().map(|u| u.state).collect();
    assert!(
        aware_states.contains(&(TaskState::TaskUnreachable as i32)),
        "{aware_states:?}"
    );
    let plain_states: Vec<i32> = updates(&mut plain).iter().map(|u| u.state).collect();
    assert!(
        plain_states.contains(&(TaskState::TaskLost as i32)),
        "{plain_states:?}"
    );
    assert_eq!(s.allocate(), 0, "an unreachable agent is not offered");
    // It re-registers in time with its tasks: they are running again.
    let (atx2, _arx2) = unbounded_channel();
    s.attach_agent(
        "a1",
        &agent_info("h1"),
        total,
        &[running("aware", "t1"), running("plain", "t2")],
        atx2,
        4,
    );
    s.agent_came_back("a1");
    let back = updates(&mut aware);
    assert!(
        back.iter().any(|u| u.state == TaskState::TaskRunning as i32
            && u.task_id.as_ref().is_some_and(|t| t.value == "t1")),
        "{back:?}"
    );
    s.check_invariants().expect("books agree");
}

#[test]
fn an_agent_unreachable_past_the_removal_timeout_is_gone() {
    let mut s = MasterState::default();
    let (atx, _arx) = unbounded_channel();
    let (ftx, mut frx) = unbounded_channel();
    s.attach_framework("aware", partition_aware_info(), ftx, 1, false, "s1");
    s.attach_agent(
        "a1",
        &agent_info("h1"),
        Resources::parse("cpus:4;mem:1024").expect("valid"),
        &[running("aware", "t1")],
        atx,
        2,
    );
    s.mark_unreachable("a1", now_secs() - 100.0, Duration::from_secs(3));
    let expiry = s.expire_agents(Duration::from_secs(3), Duration::from_secs(50));
    assert_eq!(expiry.gone.len(), 1, "{expiry:?}");
    assert!(!s.agents.contains_key("a1"));
    let states: Vec<i32> = updates(&mut frx).iter().map(|u| u.state).collect();
    assert!(states.contains(&(TaskState::TaskGone as i32)), "{states:?}");
    s.check_invariants().expect("books agree");
}

#[test]
fn draining_an_agent_asks_for_replacements_then_kills_its_tasks_with_a_capped_grace() {
    let mut s = MasterState::default();
    let (atx, mut arx) = unbounded_channel();
    let (ftx, mut frx) = unbounded_channel();
    s.attach_framework("f1", pb::FrameworkInfo::default(), ftx, 1, false, "s1");
    let mut t = running("f1", "t1");
    if let Some(info) = t.task.as_mut() {
        info.kill_policy = Some(pb::KillPolicy {
            grace_period_seconds: 30.0,
        });
    }
    s.attach_agent(
        "a1",
        &agent_info("h1"),
        Resources::parse("cpus:4;mem:1024").expect("valid"),
        &[t],
        atx,
        2,
    );
    let _registered = arx.try_recv();
    s.deactivate_agent(
        "a1",
        Some(crate::registry::DrainRecord {
            max_grace_period: Some(2.0),
            mark_gone: false,
        }),
    );
    assert_eq!(s.allocate(), 0, "a draining agent is not offered");
    let inverse = std::iter::from_fn(|| frx.try_recv().ok())
        .find_map(|e| match e.ok()?.event? {
            pb::event::Event::InverseOffers(o) => Some(o),
            _ => None,
        })
        .expect("the framework is asked to move its tasks");
    assert_eq!(
        inverse.inverse_offers[0]
            .agent_id
            .as_ref()
            .map(|a| a.value.as_str()),
        Some("a1")
    );
    s.expire_agents(Duration::from_secs(3600), Duration::from_secs(3600));
    assert!(
        !std::iter::from_fn(|| arx.try_recv().ok()).any(|m| matches!(
            m,
            Ok(pb::MasterMessage {
                message: Some(pb::master_message::Message::KillTask(_))
            })
        )),
        "no kill while the framework may still replace the task"
    );
    // The patience runs out: the master kills what is left.
    s.agents.get_mut("a1").expect("attached").drain_kill_at = Some(Instant::now());
    s.expire_agents(Duration::from_secs(3600), Duration::from_secs(3600));
    let kill = std::iter::from_fn(|| arx.try_recv().ok())
        .find_map(|m| match m.ok()?.message? {
            pb::master_message::Message::KillTask(k) => Some(k),
            _ => None,
        })
        .expect("the task is killed");
    assert_eq!(kill.kill_policy.map(|k| k.grace_period_seconds), Some(2.0));
    s.reactivate_agent("a1");
    assert!(s.allocate() > 0, "a reactivated agent is offered again");
}
