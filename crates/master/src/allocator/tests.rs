//! Allocator tests: the DRF paper's example, weights, reservations, quota,
//! filters, and (through `MasterState`) that no agent is ever
//! over-committed whatever sequence of calls arrives.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use meseta_core::Resources;
use proptest::prelude::*;

use super::*;

fn res(text: &str) -> Resources {
    Resources::parse(text).expect("valid resource text")
}

/// A framework that launches one task of `task` per offer (if it fits)
/// and gives the rest back without a filter: the DRF paper's progressive
/// filling, one task at a time.
fn fill_one_task_per_offer(
    a: &mut Allocator,
    tasks: &HashMap<&str, Resources>,
    max_rounds: usize,
) -> HashMap<String, usize> {
    let mut launched: HashMap<String, usize> = HashMap::new();
    let now = Instant::now();
    for _ in 0..max_rounds {
        let offers = a.allocate(now);
        if offers.is_empty() {
            break;
        }
        let mut progress = false;
        for o in offers {
            let fid = a.framework_id(o.framework).expect("known").to_string();
            let aid = a.agent_id(o.agent).expect("known").to_string();
            let task = &tasks[fid.as_str()];
            let rest = if o.resources.contains(task) {
                *launched.entry(fid.clone()).or_default() += 1;
                progress = true;
                o.resources.minus(task).expect("contained")
            } else {
                o.resources.clone()
            };
            // Unused resources come back; a framework that cannot use an
            // offer refuses that agent's leftovers for a while (as
            // Marathon does), so the others get their turn.
            let refuse = (!progress).then_some(Duration::from_secs(3600));
            a.recover(&fid, &aid, &rest, refuse, now);
        }
        if !progress {
            break;
        }
    }
    launched
}

#[test]
fn drf_paper_example_gives_three_and_two_tasks() {
    // Ghodsi et al., "Dominant Resource Fairness", section 4: 9 CPUs and
    // 18 GB; user A's tasks need <1 CPU, 4 GB>, user B's <3 CPUs, 1 GB>.
    for a_first in [true, false] {
        let mut a = Allocator::new(AllocatorConfig::default());
        a.add_agent("agent", res("cpus:9;mem:18432"), &[]);
        let order = if a_first { ["A", "B"] } else { ["B", "A"] };
        for f in order {
            a.add_framework(f, "*", false, &[]);
        }
        let tasks = HashMap::from([("A", res("cpus:1;mem:4096")), ("B", res("cpus:3;mem:1024"))]);
        let launched = fill_one_task_per_offer(&mut a, &tasks, 100);
        assert_eq!(launched.get("A"), Some(&3), "A first: {a_first}");
        assert_eq!(launched.get("B"), Some(&2), "A first: {a_first}");
        a.check_sorters()
            .expect("incremental shares match a recomputation");
    }
}

#[test]
fn quota_role_is_served_first_and_headroom_is_kept() {
    let mut a = Allocator::new(AllocatorConfig::default());
    for i in 0..4 {
        a.add_agent(&format!("a{i}"), res("cpus:1;mem:1024"), &[]);
    }
    a.set_quota("q", Some(res("cpus:3"))).expect("valid quota");
    a.add_framework("fa", "a", false, &[]);
    a.add_framework("fq", "q", false, &[]);
    let offers = a.allocate(Instant::now());
    let to_q = offers
        .iter()
        .filter(|o| a.framework_id(o.framework) == Some("fq"))
        .count();
    assert_eq!(to_q, 3, "the quota role gets its guarantee first");
    assert_eq!(offers.len(), 4);

    // With the quota role's framework suppressed, the others still only
    // get what the quota does not need.
    let mut a = Allocator::new(AllocatorConfig::default());
    for i in 0..4 {
        a.add_agent(&format!("a{i}"), res("cpus:1;mem:1024"), &[]);
    }
    a.set_quota("q", Some(res("cpus:3"))).expect("valid quota");
    a.add_framework("fa", "a", false, &[]);
    a.add_framework("fq", "q", true, &[]);
    let offers = a.allocate(Instant::now());
    let cpus: i64 = offers
        .iter()
        .map(|o| o.resources.scalar_milli("cpus"))
        .sum();
    assert_eq!(cpus, 1000, "3 of 4 cpus are held back for the quota");
    a.check_sorters().expect("consistent");
}

#[test]
fn decline_filter_holds_until_more_is_available_or_revive() {
    let mut a = Allocator::new(AllocatorConfig::default());
    a.add_agent("a1", res("cpus:2;mem:1024"), &[]);
    a.add_framework("f", "*", false, &[]);
    let now = Instant::now();
    let o = a.allocate(now).pop().expect("one offer");
    // Launch 1 cpu, decline the rest for an hour.
    let used = res("cpus:1;mem:512");
    let rest = o.resources.minus(&used).expect("contained");
    a.recover("f", "a1", &rest, Some(Duration::from_secs(3600)), now);
    assert!(
        a.allocate(now).is_empty(),
        "the declined resources are filtered"
    );
    // The task ends: more than what was refused is available → offered.
    a.recover("f", "a1", &used, None, now);
    let o = a.allocate(now).pop().expect("more than the filter holds");
    a.recover(
        "f",
        "a1",
        &o.resources,
        Some(Duration::from_secs(3600)),
        now,
    );
    assert!(a.allocate(now).is_empty());
    assert_eq!(
        a.allocate(now + Duration::from_secs(3601)).len(),
        1,
        "filters expire"
    );
    let o = a.allocate(now).pop();
    assert!(o.is_none(), "everything is offered already");
    a.suppress("f");
    a.recover(
        "f",
        "a1",
        &res("cpus:2;mem:1024"),
        Some(Duration::from_secs(3600)),
        now,
    );
    assert!(a.allocate(now).is_empty(), "suppressed");
    a.revive("f");
    assert_eq!(a.allocate(now).len(), 1, "revive clears filters");
}

#[test]
fn weights_parse_and_apply() {
    let cfg = AllocatorConfig {
        weights: parse_weights("a=2,b=1").expect("valid"),
        ..Default::default()
    };
    let mut a = Allocator::new(cfg);
    a.add_framework("fa", "a", false, &[]);
    assert_eq!(
        a.roles().iter().find(|r| r.name == "a").map(|r| r.weight),
        Some(2.0)
    );
    assert!(a
        .set_weights(&BTreeMap::from([("x".to_string(), 0.0)]))
        .is_err());
    assert!(a.set_quota("*", Some(res("cpus:1"))).is_err());
}

/// Allocate `n` equal agents among two roles with weights `w1`, `w2`, each
/// framework keeping everything it is offered. Returns agents per role.
fn weighted_split(n: usize, w1: f64, w2: f64) -> (usize, usize) {
    let cfg = AllocatorConfig {
        weights: BTreeMap::from([("r1".to_string(), w1), ("r2".to_string(), w2)]),
        ..Default::default()
    };
    let mut a = Allocator::new(cfg);
    a.add_framework("f1", "r1", false, &[]);
    a.add_framework("f2", "r2", false, &[]);
    for i in 0..n {
        a.add_agent(&format!("a{i}"), res("cpus:1;mem:1024"), &[]);
    }
    let offers = a.allocate(Instant::now());
    let one = offers
        .iter()
        .filter(|o| a.framework_id(o.framework) == Some("f1"))
        .count();
    (one, offers.len() - one)
}

#[test]
fn weights_two_to_one_split_two_to_one() {
    let (a, b) = weighted_split(30, 2.0, 1.0);
    assert_eq!((a, b), (20, 10));
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Greedy weighted DRF over equal agents: neither role could give up
    /// its last agent and still be above the other (the split is w1:w2
    /// within one agent).
    #[test]
    fn weights_split_in_proportion(n in 2usize..120, w1 in 1u32..5, w2 in 1u32..5) {
        let (a, b) = weighted_split(n, w1 as f64, w2 as f64);
        prop_assert_eq!(a + b, n);
        let (w1, w2) = (w1 as f64, w2 as f64);
        prop_assert!((a.saturating_sub(1)) as f64 / w1 <= b as f64 / w2 + 1e-9, "a={} b={}", a, b);
        prop_assert!((b.saturating_sub(1)) as f64 / w2 <= a as f64 / w1 + 1e-9, "a={} b={}", a, b);
    }

    /// The DRF paper's example scaled by k (one agent of k times the
    /// paper's cluster, or k agents of it): about 3k and 2k tasks.
    #[test]
    fn drf_paper_example_scales(k in 1i64..5, a_first in any::<bool>(), split in any::<bool>()) {
        let mut a = Allocator::new(AllocatorConfig::default());
        if split {
            for i in 0..k {
                a.add_agent(&format!("a{i}"), res("cpus:9;mem:18432"), &[]);
            }
        } else {
            a.add_agent("a0", res(&format!("cpus:{};mem:{}", 9 * k, 18432 * k)), &[]);
        }
        let order = if a_first { ["A", "B"] } else { ["B", "A"] };
        for f in order {
            a.add_framework(f, "*", false, &[]);
        }
        let tasks = HashMap::from([("A", res("cpus:1;mem:4096")), ("B", res("cpus:3;mem:1024"))]);
        let launched = fill_one_task_per_offer(&mut a, &tasks, 1000);
        let (na, nb) = (launched.get("A").copied().unwrap_or(0) as i64, launched.get("B").copied().unwrap_or(0) as i64);
        if k == 1 {
            prop_assert_eq!((na, nb), (3, 2));
        }
        prop_assert!((na - 3 * k).abs() <= 1 && (nb - 2 * k).abs() <= 1, "A={} B={} k={}", na, nb, k);
        prop_assert!(a.check_sorters().is_ok());
    }

    /// Reserved resources are only ever offered to frameworks of their role.
    #[test]
    fn reserved_resources_never_reach_another_role(
        agents in prop::collection::vec((0u32..4, 0u32..4, 0u32..4), 1..20),
        frameworks in prop::collection::vec(prop::sample::select(vec!["r1", "r2", "*"]), 1..6),
        rounds in 1usize..4,
    ) {
        let mut a = Allocator::new(AllocatorConfig::default());
        for (i, (r1, r2, un)) in agents.iter().enumerate() {
            let text = format!("cpus(r1):{r1};mem(r1):{};cpus(r2):{r2};mem(r2):{};cpus:{un};mem:{}", r1 * 256, r2 * 256, un * 256);
            a.add_agent(&format!("a{i}"), res(&text), &[]);
        }
        let mut roles = HashMap::new();
        for (i, role) in frameworks.iter().enumerate() {
            a.add_framework(&format!("f{i}"), role, false, &[]);
            roles.insert(format!("f{i}"), role.to_string());
        }
        let now = Instant::now();
        for round in 0..rounds {
            let offers = a.allocate(now);
            for o in &offers {
                let fid = a.framework_id(o.framework).expect("known").to_string();
                for r in o.resources.iter() {
                    prop_assert!(r.role == "*" || r.role == roles[&fid], "{} of role {} offered to {} of role {}", r, r.role, fid, roles[&fid]);
                }
                // Give half of the offers back.
                if round.is_multiple_of(2) {
                    let aid = a.agent_id(o.agent).expect("known").to_string();
                    a.recover(&fid, &aid, &o.resources, None, now);
                }
            }
        }
        prop_assert!(a.check_sorters().is_ok());
    }
}

// ---------------------------------------------------------------------------
// Through MasterState: no agent is ever over-committed
// ---------------------------------------------------------------------------

mod master {
    use super::*;
    use crate::state::MasterState;
    use meseta_proto::v1 as pb;
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

    #[derive(Debug, Clone)]
    enum Op {
        AddAgent(u8, u8, u8),
        DisconnectAgent(u8),
        ExpireAgents,
        AddFramework(u8, u8),
        DisconnectFramework(u8),
        Teardown(u8),
        Allocate,
        /// Launch tasks of (cpus, mem) out of the n-th outstanding offer.
        Accept(u8, u8, u8, u8),
        Decline(u8, u8),
        Finish(u8),
        Suppress(u8),
        Revive(u8),
        Weights(u8, u8),
        Quota(u8, u8),
        ExpireOffers,
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6, 1u8..5, 0u8..3).prop_map(|(a, c, r)| Op::AddAgent(a, c, r)),
            (0u8..6).prop_map(Op::DisconnectAgent),
            Just(Op::ExpireAgents),
            (0u8..4, 0u8..3).prop_map(|(f, r)| Op::AddFramework(f, r)),
            (0u8..4).prop_map(Op::DisconnectFramework),
            (0u8..4).prop_map(Op::Teardown),
            Just(Op::Allocate),
            Just(Op::Allocate),
            (0u8..8, 1u8..4, 1u8..4, 0u8..3).prop_map(|(o, n, c, r)| Op::Accept(o, n, c, r)),
            (0u8..8, 0u8..3).prop_map(|(o, r)| Op::Decline(o, r)),
            (0u8..16).prop_map(Op::Finish),
            (0u8..4).prop_map(Op::Suppress),
            (0u8..4).prop_map(Op::Revive),
            (1u8..4, 1u8..4).prop_map(|(a, b)| Op::Weights(a, b)),
            (0u8..3, 0u8..4).prop_map(|(r, c)| Op::Quota(r, c)),
            Just(Op::ExpireOffers),
        ]
    }

    const ROLES: [&str; 3] = ["*", "web", "db"];

    struct World {
        s: MasterState,
        session: u64,
        agent_rx: Vec<UnboundedReceiver<Result<pb::MasterMessage, tonic::Status>>>,
        framework_rx: Vec<UnboundedReceiver<Result<pb::Event, tonic::Status>>>,
        next_task: u64,
    }

    impl World {
        fn apply(&mut self, op: &Op) {
            let s = &mut self.s;
            match *op {
                Op::AddAgent(a, c, r) => {
                    let role = ROLES[r as usize];
                    let text = if role == "*" {
                        format!("cpus:{c};mem:{};ports:[31000-31010]", c as u32 * 512)
                    } else {
                        format!(
                            "cpus({role}):{c};mem({role}):512;cpus:1;mem:512;ports:[31000-31010]"
                        )
                    };
                    let (tx, rx) = unbounded_channel();
                    self.agent_rx.push(rx);
                    self.session += 1;
                    let info = pb::AgentInfo {
                        hostname: format!("h{a}"),
                        ..Default::default()
                    };
                    // A re-registering agent reports the tasks it runs.
                    let running: Vec<pb::RunningTask> = s
                        .agents
                        .get(&format!("a{a}"))
                        .map(|ag| {
                            ag.tasks
                                .values()
                                .map(|t| pb::RunningTask {
                                    task: Some(t.info.clone()),
                                    framework_id: Some(pb::FrameworkId {
                                        value: t.framework_id.clone(),
                                    }),
                                    state: pb::TaskState::TaskRunning as i32,
                                    latest_status: None,
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let total = s
                        .agents
                        .get(&format!("a{a}"))
                        .map(|ag| ag.total.clone())
                        .unwrap_or_else(|| res(&text));
                    s.attach_agent(&format!("a{a}"), &info, total, &running, tx, self.session);
                }
                Op::DisconnectAgent(a) => {
                    let session = s
                        .agents
                        .get(&format!("a{a}"))
                        .map(|ag| ag.session)
                        .unwrap_or(0);
                    s.detach_agent(&format!("a{a}"), session);
                }
                Op::ExpireAgents => {
                    s.expire_agents(Duration::from_secs(3600), Duration::ZERO);
                }
                Op::AddFramework(f, r) => {
                    let (tx, rx) = unbounded_channel();
                    self.framework_rx.push(rx);
                    self.session += 1;
                    let info = pb::FrameworkInfo {
                        name: format!("f{f}"),
                        role: ROLES[r as usize].to_string(),
                        ..Default::default()
                    };
                    s.attach_framework(&format!("f{f}"), info, tx, self.session, false, "s");
                }
                Op::DisconnectFramework(f) => {
                    let session = s
                        .frameworks
                        .get(&format!("f{f}"))
                        .map(|fw| fw.session)
                        .unwrap_or(0);
                    s.detach_framework(&format!("f{f}"), session);
                }
                Op::Teardown(f) => s.teardown(&format!("f{f}")),
                Op::Allocate => {
                    s.allocate();
                }
                Op::Accept(o, n, c, r) => {
                    let mut offers: Vec<_> = s.offers.values().cloned().collect();
                    offers.sort_by(|a, b| a.id.cmp(&b.id));
                    let Some(offer) = offers.get(o as usize % offers.len().max(1)) else {
                        return;
                    };
                    let tasks: Vec<pb::TaskInfo> = (0..n)
                        .map(|_| {
                            self.next_task += 1;
                            pb::TaskInfo {
                                name: "t".into(),
                                task_id: Some(pb::TaskId {
                                    value: format!("t{}", self.next_task),
                                }),
                                resources: res(&format!("cpus:{};mem:100", c as f64 / 2.0))
                                    .to_proto(),
                                command: Some(pb::CommandInfo {
                                    value: "sleep 1".into(),
                                    shell: true,
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }
                        })
                        .collect();
                    let _ = s.accept(
                        &offer.framework_id.clone(),
                        pb::call::Accept {
                            offer_ids: vec![pb::OfferId {
                                value: offer.id.clone(),
                            }],
                            operations: vec![pb::offer::Operation {
                                operation: Some(pb::offer::operation::Operation::Launch(
                                    pb::offer::operation::Launch { task_infos: tasks },
                                )),
                            }],
                            filters: Some(pb::Filters {
                                refuse_seconds: r as f64,
                            }),
                        },
                    );
                }
                Op::Decline(o, r) => {
                    let mut offers: Vec<_> = s.offers.values().cloned().collect();
                    offers.sort_by(|a, b| a.id.cmp(&b.id));
                    let Some(offer) = offers.get(o as usize % offers.len().max(1)) else {
                        return;
                    };
                    s.decline(
                        &offer.framework_id.clone(),
                        &pb::call::Decline {
                            offer_ids: vec![pb::OfferId {
                                value: offer.id.clone(),
                            }],
                            filters: (r > 0).then_some(pb::Filters {
                                refuse_seconds: r as f64 * 10.0,
                            }),
                        },
                    );
                }
                Op::Finish(t) => {
                    let mut tasks: Vec<(String, String, String)> = s
                        .agents
                        .values()
                        .flat_map(|a| {
                            a.tasks
                                .iter()
                                .map(|(id, t)| (a.id.clone(), t.framework_id.clone(), id.clone()))
                        })
                        .collect();
                    tasks.sort();
                    let Some((aid, fid, tid)) = tasks.get(t as usize % tasks.len().max(1)).cloned()
                    else {
                        return;
                    };
                    s.status_update(
                        &aid,
                        &fid,
                        pb::TaskStatus {
                            task_id: Some(pb::TaskId { value: tid }),
                            state: pb::TaskState::TaskFinished as i32,
                            ..Default::default()
                        },
                    );
                }
                Op::Suppress(f) => s.suppress(&format!("f{f}")),
                Op::Revive(f) => s.revive(&format!("f{f}")),
                Op::Weights(a, b) => {
                    let w = BTreeMap::from([
                        ("web".to_string(), a as f64),
                        ("db".to_string(), b as f64),
                    ]);
                    s.allocator.set_weights(&w).expect("valid weights");
                }
                Op::Quota(r, c) => {
                    let role = ["web", "db", "other"][r as usize];
                    let q = (c > 0).then(|| res(&format!("cpus:{c}")));
                    s.allocator.set_quota(role, q).expect("valid quota");
                }
                Op::ExpireOffers => {
                    s.offer_timeout = Some(Duration::ZERO);
                    s.expire_offers(Instant::now());
                    s.offer_timeout = None;
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// After any sequence of registrations, allocations, accepts,
        /// declines, status updates, disconnections and teardowns, every
        /// agent has offered + used <= total and the allocator agrees with
        /// the master's books.
        #[test]
        fn no_agent_is_ever_over_committed(ops in prop::collection::vec(arb_op(), 1..80)) {
            let mut w = World { s: MasterState::default(), session: 0, agent_rx: Vec::new(), framework_rx: Vec::new(), next_task: 0 };
            for op in &ops {
                w.apply(op);
                if let Err(e) = w.s.check_invariants() {
                    prop_assert!(false, "after {:?}: {}", op, e);
                }
                if let Err(e) = w.s.allocator.check_sorters() {
                    prop_assert!(false, "after {:?}: {}", op, e);
                }
            }
            // Every offer sent is backed by the agent's resources.
            for o in w.s.offers.values() {
                let agent = &w.s.agents[&o.agent_id];
                prop_assert!(agent.total.contains(&o.resources));
            }
        }
    }

    #[test]
    fn offers_time_out_when_configured() {
        let mut s = MasterState::with_config(AllocatorConfig {
            offer_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        });
        let (atx, _arx) = unbounded_channel();
        s.attach_agent(
            "a1",
            &pb::AgentInfo::default(),
            res("cpus:2;mem:1024"),
            &[],
            atx,
            1,
        );
        let (ftx, mut frx) = unbounded_channel();
        s.attach_framework("f1", pb::FrameworkInfo::default(), ftx, 2, false, "s");
        assert_eq!(s.allocate(), 1);
        assert_eq!(s.expire_offers(Instant::now()), 0, "not stale yet");
        assert_eq!(s.expire_offers(Instant::now() + Duration::from_secs(31)), 1);
        assert!(s.offers.is_empty());
        s.check_invariants().expect("consistent");
        let mut rescinded = false;
        while let Ok(Ok(ev)) = frx.try_recv() {
            rescinded |= matches!(ev.event, Some(pb::event::Event::Rescind(_)));
        }
        assert!(rescinded, "the framework hears of the rescinded offer");
        assert_eq!(s.allocate(), 1, "rescinded resources are offered again");
    }

    #[test]
    fn two_frameworks_share_five_agents_evenly() {
        // The integration scenario in memory: two frameworks each wanting
        // 20 one-cpu tasks, five agents of 2 cpus joining one by one.
        let mut s = MasterState::default();
        let mut rxs = Vec::new();
        for (i, f) in ["a", "b"].iter().enumerate() {
            let (tx, rx) = unbounded_channel();
            rxs.push(rx);
            s.attach_framework(
                f,
                pb::FrameworkInfo {
                    name: f.to_string(),
                    ..Default::default()
                },
                tx,
                i as u64 + 1,
                false,
                "s",
            );
        }
        let mut agent_rx = Vec::new();
        let mut n = 0;
        for i in 0..5 {
            let (tx, rx) = unbounded_channel();
            agent_rx.push(rx);
            s.attach_agent(
                &format!("a{i}"),
                &pb::AgentInfo::default(),
                res("cpus:2;mem:2048"),
                &[],
                tx,
                10 + i,
            );
            // Two passes per join: the second offers what the first
            // left (as the batched allocation loop does).
            for _ in 0..2 {
                s.allocate();
                // Each framework launches as many 1-cpu tasks as fit and, like
                // Marathon, declines for 5 s an offer it cannot use.
                let offers: Vec<_> = s.offers.values().cloned().collect();
                for o in offers {
                    let k = (o.resources.scalar("cpus") as usize).min(2);
                    let tasks: Vec<pb::TaskInfo> = (0..k)
                        .map(|_| {
                            n += 1;
                            pb::TaskInfo {
                                name: "t".into(),
                                task_id: Some(pb::TaskId {
                                    value: format!("t{n}"),
                                }),
                                resources: res("cpus:1;mem:32").to_proto(),
                                command: Some(pb::CommandInfo {
                                    value: "sleep 1".into(),
                                    shell: true,
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }
                        })
                        .collect();
                    if tasks.is_empty() {
                        s.decline(
                            &o.framework_id,
                            &pb::call::Decline {
                                offer_ids: vec![pb::OfferId {
                                    value: o.id.clone(),
                                }],
                                filters: Some(pb::Filters {
                                    refuse_seconds: 5.0,
                                }),
                            },
                        );
                        continue;
                    }
                    let _ = s.accept(
                        &o.framework_id,
                        pb::call::Accept {
                            offer_ids: vec![pb::OfferId {
                                value: o.id.clone(),
                            }],
                            operations: vec![pb::offer::Operation {
                                operation: Some(pb::offer::operation::Operation::Launch(
                                    pb::offer::operation::Launch { task_infos: tasks },
                                )),
                            }],
                            filters: Some(pb::Filters {
                                refuse_seconds: 0.0,
                            }),
                        },
                    );
                }
            }
        }
        let count = |f: &str| {
            s.agents
                .values()
                .flat_map(|a| a.tasks.values())
                .filter(|t| t.framework_id == f)
                .count()
        };
        let (a, b) = (count("a"), count("b"));
        assert_eq!(a + b, 10);
        assert!(a.abs_diff(5) <= 1 && b.abs_diff(5) <= 1, "a={a} b={b}");
        s.check_invariants().expect("consistent");
    }
}
