use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn req(now_ms: u64, command: KvCommand) -> KvRequest {
    KvRequest { now_ms, command }
}

fn put(key: &str, value: &str, expected_version: Option<u64>) -> KvCommand {
    KvCommand::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        lease: 0,
        expected_version,
    }
}

fn put_ok(out: &Result<KvOutput, KvError>) -> &PutResponse {
    match out {
        Ok(KvOutput::Put(p)) => p,
        other => panic!("expected a put response, got {other:?}"),
    }
}

#[test]
fn put_get_versions_and_indexes() {
    let mut kv = KvStore::new();
    let (out, events) = kv.apply(10, &req(0, put("/a", "1", None)));
    let p = put_ok(&out);
    assert!(p.succeeded);
    assert_eq!(p.kv.as_ref().unwrap().version, 1);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].r#type, EventType::Put as i32);
    let _ = kv.apply(11, &req(0, put("/a", "2", None)));
    let got = kv.get("/a");
    assert!(got.found);
    let a = got.kv.unwrap();
    assert_eq!((a.version, a.create_index, a.mod_index), (2, 10, 11));
    assert_eq!(a.value, b"2");
    assert_eq!(got.index, 11);
    assert!(!kv.get("/missing").found);
}

#[test]
fn compare_and_set() {
    let mut kv = KvStore::new();
    assert!(put_ok(&kv.apply(1, &req(0, put("/k", "a", Some(0)))).0).succeeded);
    let (out, events) = kv.apply(2, &req(0, put("/k", "b", Some(0))));
    let p = put_ok(&out);
    assert!(!p.succeeded, "0 means must not exist");
    assert_eq!(p.current.as_ref().unwrap().value, b"a");
    assert!(events.is_empty());
    assert!(put_ok(&kv.apply(3, &req(0, put("/k", "b", Some(1)))).0).succeeded);
    assert_eq!(kv.get("/k").kv.unwrap().value, b"b");
    let del = |v| KvCommand::Delete {
        key: "/k".into(),
        prefix: false,
        expected_version: Some(v),
    };
    match kv.apply(4, &req(0, del(1))).0 {
        Ok(KvOutput::Delete(d)) => assert!(!d.succeeded),
        other => panic!("{other:?}"),
    }
    match kv.apply(5, &req(0, del(2))).0 {
        Ok(KvOutput::Delete(d)) => assert_eq!((d.succeeded, d.deleted), (true, 1)),
        other => panic!("{other:?}"),
    }
    // Recreated keys start again at version 1.
    let _ = kv.apply(6, &req(0, put("/k", "c", Some(0))));
    assert_eq!(kv.get("/k").kv.unwrap().version, 1);
}

#[test]
fn prefix_list_and_delete() {
    let mut kv = KvStore::new();
    for (i, k) in ["/apps/a", "/apps/b", "/apps/c", "/apps2", "/groups/x"]
        .iter()
        .enumerate()
    {
        let _ = kv.apply(i as u64 + 1, &req(0, put(k, "v", None)));
    }
    let keys = |l: ListResponse| l.kvs.into_iter().map(|k| k.key).collect::<Vec<_>>();
    assert_eq!(
        keys(kv.list("/apps/", 0)),
        vec!["/apps/a", "/apps/b", "/apps/c"]
    );
    assert_eq!(keys(kv.list("/apps/", 2)), vec!["/apps/a", "/apps/b"]);
    assert_eq!(kv.list("", 0).kvs.len(), 5);
    let (out, events) = kv.apply(
        9,
        &req(
            0,
            KvCommand::Delete {
                key: "/apps/".into(),
                prefix: true,
                expected_version: None,
            },
        ),
    );
    assert!(matches!(
        out,
        Ok(KvOutput::Delete(DeleteResponse { deleted: 3, .. }))
    ));
    assert_eq!(events.len(), 3);
    assert!(events
        .iter()
        .all(|e| e.r#type == EventType::Delete as i32 && e.index == 9));
    assert_eq!(keys(kv.list("/", 0)), vec!["/apps2", "/groups/x"]);
}

#[test]
fn leases_expire_by_leader_time_and_keep_alive_wins() {
    let mut kv = KvStore::new();
    let lease = match kv
        .apply(1, &req(1_000, KvCommand::LeaseGrant { ttl_ms: 500 }))
        .0
    {
        Ok(KvOutput::LeaseGrant(g)) => g.lease,
        other => panic!("{other:?}"),
    };
    let _ = kv.apply(
        2,
        &req(
            1_000,
            KvCommand::Put {
                key: "/leader".into(),
                value: b"me".to_vec(),
                lease,
                expected_version: Some(0),
            },
        ),
    );
    assert!(kv.expired_leases(1_400).is_empty());
    assert_eq!(kv.expired_leases(1_500), vec![lease]);
    // The leader proposed expiry at 1500 but a keep-alive at 1450 applied first.
    let _ = kv.apply(3, &req(1_450, KvCommand::LeaseKeepAlive { lease }));
    let (out, events) = kv.apply(
        4,
        &req(
            1_500,
            KvCommand::ExpireLeases {
                leases: vec![lease],
            },
        ),
    );
    assert_eq!(out, Ok(KvOutput::Expired(vec![])));
    assert!(events.is_empty());
    assert!(kv.get("/leader").found);
    let (out, events) = kv.apply(
        5,
        &req(
            1_950,
            KvCommand::ExpireLeases {
                leases: vec![lease],
            },
        ),
    );
    assert_eq!(out, Ok(KvOutput::Expired(vec![lease])));
    assert_eq!(events.len(), 1);
    assert!(!kv.get("/leader").found);
    assert_eq!(
        kv.apply(6, &req(2_000, put_with_lease("/x", lease))).0,
        Err(KvError::LeaseNotFound(lease))
    );
}

fn put_with_lease(key: &str, lease: u64) -> KvCommand {
    KvCommand::Put {
        key: key.into(),
        value: vec![],
        lease,
        expected_version: None,
    }
}

#[test]
fn revoke_deletes_attached_keys_only() {
    let mut kv = KvStore::new();
    let grant =
        |kv: &mut KvStore, i| match kv.apply(i, &req(0, KvCommand::LeaseGrant { ttl_ms: 10 })).0 {
            Ok(KvOutput::LeaseGrant(g)) => g.lease,
            other => panic!("{other:?}"),
        };
    let l1 = grant(&mut kv, 1);
    let l2 = grant(&mut kv, 2);
    let _ = kv.apply(3, &req(0, put_with_lease("/a", l1)));
    let _ = kv.apply(4, &req(0, put_with_lease("/b", l1)));
    let _ = kv.apply(5, &req(0, put_with_lease("/c", l2)));
    // Moving /b to l2 detaches it from l1.
    let _ = kv.apply(6, &req(0, put_with_lease("/b", l2)));
    let (out, events) = kv.apply(7, &req(0, KvCommand::LeaseRevoke { lease: l1 }));
    assert_eq!(
        out,
        Ok(KvOutput::LeaseRevoke(LeaseRevokeResponse { found: true }))
    );
    assert_eq!(events.len(), 1);
    assert!(!kv.get("/a").found && kv.get("/b").found && kv.get("/c").found);
    assert_eq!(
        kv.apply(8, &req(0, KvCommand::LeaseRevoke { lease: l1 })).0,
        Ok(KvOutput::LeaseRevoke(LeaseRevokeResponse { found: false }))
    );
}

#[test]
fn renew_all_leases_after_failover() {
    let mut kv = KvStore::new();
    let _ = kv.apply(1, &req(0, KvCommand::LeaseGrant { ttl_ms: 100 }));
    let _ = kv.apply(2, &req(5_000, KvCommand::RenewAllLeases));
    assert!(kv.expired_leases(5_099).is_empty());
    assert_eq!(kv.lease_deadline(1), Some(5_100));
}

#[test]
fn invalid_commands_change_nothing() {
    let mut kv = KvStore::new();
    let before = kv.clone();
    assert_eq!(
        kv.apply(1, &req(0, put("", "x", None))).0,
        Err(KvError::EmptyKey)
    );
    assert_eq!(
        kv.apply(2, &req(0, KvCommand::LeaseGrant { ttl_ms: 0 })).0,
        Err(KvError::InvalidTtl(0))
    );
    assert_eq!(kv.list("", 0).kvs, before.list("", 0).kvs);
    assert_eq!(
        kv.index(),
        2,
        "refused commands still advance the applied index"
    );
    assert!(KvRequest::decode(b"not json").is_err());
    assert!(KvStore::from_snapshot(b"{").is_err());
}

fn arb_command() -> impl Strategy<Value = KvCommand> {
    let key = prop::sample::select(vec!["/a", "/a/b", "/a/c", "/b", "/bb"]).prop_map(String::from);
    prop_oneof![
        (key.clone(), any::<u8>(), 0u64..3, prop::option::of(0u64..3)).prop_map(
            |(k, v, lease, ev)| {
                KvCommand::Put {
                    key: k,
                    value: vec![v],
                    lease,
                    expected_version: ev,
                }
            }
        ),
        (key, any::<bool>(), prop::option::of(0u64..3)).prop_map(|(k, prefix, ev)| {
            KvCommand::Delete {
                key: k,
                prefix,
                expected_version: ev,
            }
        }),
        (1u64..50).prop_map(|ttl_ms| KvCommand::LeaseGrant { ttl_ms }),
        (0u64..3).prop_map(|lease| KvCommand::LeaseKeepAlive { lease }),
        (0u64..3).prop_map(|lease| KvCommand::LeaseRevoke { lease }),
        prop::collection::vec(0u64..3, 0..3).prop_map(|leases| KvCommand::ExpireLeases { leases }),
    ]
}

proptest! {
    /// Replaying the same requests gives the same state and events, a
    /// snapshot round-trips, and plain puts/deletes match a map model.
    #[test]
    fn deterministic_and_matches_model(cmds in prop::collection::vec((0u64..20, arb_command()), 0..60)) {
        let mut a = KvStore::new();
        let mut b = KvStore::new();
        let mut model: BTreeMap<String, (Vec<u8>, u64)> = BTreeMap::new();
        let mut now = 0;
        for (i, (dt, cmd)) in cmds.into_iter().enumerate() {
            now += dt;
            let index = i as u64 + 1;
            let r = req(now, cmd.clone());
            let prev_version = match &cmd {
                KvCommand::Put { key, .. } => model.get(key).map_or(0, |(_, v)| *v),
                _ => 0,
            };
            let (out_a, ev_a) = a.apply(index, &r);
            let (out_b, ev_b) = b.apply(index, &KvRequest::decode(&r.encode()).unwrap());
            prop_assert_eq!(&out_a, &out_b);
            prop_assert_eq!(&ev_a, &ev_b);
            // Keep the model in step through the events (the contract watchers rely on).
            for e in &ev_a {
                let kv = e.kv.clone().unwrap();
                if e.r#type == EventType::Put as i32 {
                    model.insert(kv.key, (kv.value, kv.version));
                } else {
                    model.remove(&kv.key);
                }
            }
            if let (KvCommand::Put { expected_version: Some(ev), lease: 0, .. }, Ok(KvOutput::Put(p))) = (&cmd, &out_a) {
                prop_assert_eq!(p.succeeded, prev_version == *ev, "compare-and-set against the model");
            }
            let listed: BTreeMap<String, (Vec<u8>, u64)> =
                a.list("", 0).kvs.into_iter().map(|kv| (kv.key, (kv.value, kv.version))).collect();
            prop_assert_eq!(&listed, &model);
            // Every key's lease exists and lists the key.
            for kv in a.list("", 0).kvs {
                if kv.lease != 0 {
                    prop_assert!(a.leases.get(&kv.lease).is_some_and(|l| l.keys.contains(&kv.key)));
                }
            }
        }
        prop_assert_eq!(KvStore::from_snapshot(&a.to_snapshot()).unwrap(), a);
    }
}
