//! The scheduler engine's decisions, without a cluster: offers in, actions
//! out.

use meseta_core::Resources;
use meseta_proto::v1 as pb;
use meseta_scheduler::engine::{Action, Engine, EngineError, GroupUpdate};
use meseta_scheduler::events::EventBus;
use meseta_scheduler::model::{
    parse_app_definition, parse_app_update, parse_json, AppDefinition, PathId,
};
use serde_json::Value;

fn app(json: &str) -> AppDefinition {
    parse_app_definition(json.as_bytes()).expect("valid app")
}

fn offer(id: &str, host: &str, resources: &str) -> pb::Offer {
    pb::Offer {
        id: Some(pb::OfferId { value: id.into() }),
        framework_id: Some(pb::FrameworkId { value: "f".into() }),
        agent_id: Some(pb::AgentId {
            value: format!("agent-{host}"),
        }),
        hostname: host.into(),
        resources: Resources::parse(resources)
            .expect("valid resources")
            .to_proto(),
        ..Default::default()
    }
}

fn engine_with(apps: &[AppDefinition]) -> Engine {
    let mut e = Engine::new("*", EventBus::default(), 50);
    e.subscribed("f");
    for a in apps {
        e.create_app(a.clone(), false).expect("created");
    }
    e
}

/// PUT of one app (partial update), forced past deployments.
fn put(e: &mut Engine, id: &str, body: &str) -> Result<String, EngineError> {
    let u = parse_app_update(body.as_bytes()).expect("parses");
    e.update_apps(&[(PathId::new(id), u)], true, true, false)
        .map(|o| o.deployment_id)
}

fn ids_of(tasks: &[pb::TaskInfo]) -> Vec<String> {
    tasks
        .iter()
        .filter_map(|t| t.task_id.as_ref().map(|i| i.value.clone()))
        .collect()
}

fn kills(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Kill { task_id, .. } => Some(task_id.clone()),
            _ => None,
        })
        .collect()
}

fn health(task: &str, healthy: bool, message: &str) -> pb::TaskStatus {
    pb::TaskStatus {
        healthy: Some(healthy),
        message: message.into(),
        ..status(task, pb::TaskState::TaskRunning)
    }
}

/// Every event the engine published since the last call.
fn events(e: &mut Engine, rx: &mut tokio::sync::broadcast::Receiver<Value>) -> Vec<Value> {
    e.flush_events();
    let mut out = Vec::new();
    while let Ok(v) = rx.try_recv() {
        out.push(v);
    }
    out
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|v| v["eventType"].as_str().map(String::from))
        .collect()
}

const BIG: &str = "cpus:64;mem:65536;ports:[31000-32000]";

fn launched(actions: &[Action]) -> Vec<pb::TaskInfo> {
    actions
        .iter()
        .flat_map(|a| match a {
            Action::Accept { tasks, .. } => tasks.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn status(task: &str, state: pb::TaskState) -> pb::TaskStatus {
    pb::TaskStatus {
        task_id: Some(pb::TaskId { value: task.into() }),
        state: state as i32,
        uuid: vec![1, 2, 3],
        ..Default::default()
    }
}

fn env(task: &pb::TaskInfo, name: &str) -> Option<String> {
    task.command
        .as_ref()?
        .environment
        .as_ref()?
        .variables
        .iter()
        .find(|v| v.name == name)
        .map(|v| v.value.clone())
}

#[test]
fn packs_instances_into_one_offer_with_ports_and_environment() {
    let web = app(
        r#"{"id": "/web", "cmd": "serve", "instances": 3, "cpus": 0.5, "mem": 64,
                      "portDefinitions": [{"port": 0, "name": "http"}], "env": {"MODE": "prod"}}"#,
    );
    let mut e = engine_with(&[web]);
    let actions = e.offers(vec![offer(
        "o1",
        "h1",
        "cpus:1;mem:1024;ports:[31000-31010]",
    )]);
    let tasks = launched(&actions);
    // 1 cpu holds two tasks of 0.5; the third waits for another offer.
    assert_eq!(tasks.len(), 2);
    assert_eq!(e.needs("/web").launch, 1);
    let ports: Vec<String> = tasks.iter().filter_map(|t| env(t, "PORT0")).collect();
    assert_eq!(ports, vec!["31000", "31001"]);
    let t = &tasks[0];
    assert_eq!(env(t, "PORT").as_deref(), Some("31000"));
    assert_eq!(env(t, "PORTS").as_deref(), Some("31000"));
    assert_eq!(env(t, "PORT_HTTP").as_deref(), Some("31000"));
    assert_eq!(env(t, "HOST").as_deref(), Some("h1"));
    assert_eq!(env(t, "MODE").as_deref(), Some("prod"));
    assert_eq!(env(t, "MARATHON_APP_ID").as_deref(), Some("/web"));
    assert_eq!(
        env(t, "MESOS_TASK_ID"),
        t.task_id.as_ref().map(|i| i.value.clone())
    );
    assert!(t
        .task_id
        .as_ref()
        .is_some_and(|i| i.value.starts_with("web.")));
}

#[test]
fn declines_and_suppresses_when_nothing_fits_or_nothing_is_queued() {
    let big = app(r#"{"id": "/big", "cmd": "x", "cpus": 4, "mem": 64}"#);
    let mut e = engine_with(&[big]);
    let actions = e.offers(vec![offer("o1", "h1", "cpus:1;mem:1024")]);
    assert!(matches!(actions[0], Action::Decline { refuse_seconds, .. } if refuse_seconds <= 5.0));
    e.delete_app(&PathId::new("/big"), true).expect("deleted");
    let actions = e.offers(vec![offer("o2", "h1", "cpus:8;mem:1024")]);
    assert!(matches!(actions[0], Action::Decline { refuse_seconds, .. } if refuse_seconds >= 60.0));
    assert!(actions.contains(&Action::Suppress));
}

#[test]
fn scaling_keeps_running_tasks_and_config_change_replaces_them() {
    let a = app(r#"{"id": "/a", "cmd": "sleep 1000", "instances": 2, "cpus": 0.1, "mem": 16}"#);
    let mut e = engine_with(std::slice::from_ref(&a));
    let first: Vec<String> = launched(&e.offers(vec![offer(
        "o1",
        "h1",
        "cpus:4;mem:1024;ports:[31000-31100]",
    )]))
    .iter()
    .filter_map(|t| t.task_id.as_ref().map(|i| i.value.clone()))
    .collect();
    assert_eq!(first.len(), 2);
    for t in &first {
        e.status(status(t, pb::TaskState::TaskRunning));
    }
    // Scale to 3: a scale-only version keeps both tasks and launches one.
    put(&mut e, "/a", r#"{"instances": 3}"#).expect("scaled");
    let needs = e.needs("/a");
    assert_eq!(needs.launch, 1);
    assert!(
        needs.kill.is_empty(),
        "scaling must not kill {:?}",
        needs.kill
    );
    // A new command is a config change: new tasks start, old ones are
    // killed only as the new ones run.
    put(&mut e, "/a", r#"{"cmd": "sleep 2000"}"#).expect("changed");
    let needs = e.needs("/a");
    assert_eq!(needs.launch, 3);
    assert!(
        needs.kill.is_empty(),
        "old tasks must run until new ones do"
    );
    let new: Vec<String> = launched(&e.offers(vec![offer(
        "o2",
        "h1",
        "cpus:4;mem:1024;ports:[31000-31100]",
    )]))
    .iter()
    .filter_map(|t| t.task_id.as_ref().map(|i| i.value.clone()))
    .collect();
    assert_eq!(new.len(), 3);
    // 2 old + 1 new running: still 3 instances' worth, nothing to kill yet.
    let n = |a: Vec<Action>| kills(&a).len();
    assert_eq!(n(e.status(status(&new[0], pb::TaskState::TaskRunning))), 0);
    assert_eq!(n(e.status(status(&new[1], pb::TaskState::TaskRunning))), 1);
    assert_eq!(n(e.status(status(&new[2], pb::TaskState::TaskRunning))), 1);
    assert_eq!(e.needs("/a"), Default::default());
}

#[test]
fn a_dead_task_is_replaced_and_recorded_as_last_failure() {
    let a = app(
        r#"{"id": "/a", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16, "backoffSeconds": 0}"#,
    );
    let mut e = engine_with(&[a]);
    let t = launched(&e.offers(vec![offer(
        "o1",
        "h1",
        "cpus:1;mem:1024;ports:[31000-31100]",
    )]))[0]
        .task_id
        .clone()
        .expect("task id")
        .value;
    e.status(status(&t, pb::TaskState::TaskRunning));
    assert_eq!(e.needs("/a").launch, 0);
    let mut failed = status(&t, pb::TaskState::TaskFailed);
    failed.message = "Command exited with status 137".into();
    let actions = e.status(failed.clone());
    // Every update is acknowledged, and the task is wanted again.
    assert!(actions.contains(&Action::Acknowledge(failed)));
    assert!(actions.contains(&Action::Revive));
    assert_eq!(e.needs("/a").launch, 1);
    let f = e.failure("/a").expect("last failure");
    assert_eq!(f.task_id, t);
    assert_eq!(f.message, "Command exited with status 137");
}

#[test]
fn unknown_running_tasks_are_killed() {
    let mut e = engine_with(&[]);
    let actions = e.status(status("ghost.1", pb::TaskState::TaskRunning));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Kill { task_id, .. } if task_id == "ghost.1")));
}

#[test]
fn hostname_unique_spreads_tasks() {
    let a = app(
        r#"{"id": "/u", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 16,
                    "constraints": [["hostname", "UNIQUE"]]}"#,
    );
    let mut e = engine_with(&[a]);
    let tasks = launched(&e.offers(vec![offer(
        "o1",
        "h1",
        "cpus:4;mem:1024;ports:[31000-31100]",
    )]));
    assert_eq!(tasks.len(), 1);
    let tasks = launched(&e.offers(vec![offer(
        "o2",
        "h1",
        "cpus:4;mem:1024;ports:[31000-31100]",
    )]));
    assert!(tasks.is_empty());
    let tasks = launched(&e.offers(vec![offer(
        "o3",
        "h2",
        "cpus:4;mem:1024;ports:[31000-31100]",
    )]));
    assert_eq!(tasks.len(), 1);
}

#[test]
fn accepted_resource_roles_decide_which_resources_a_task_takes() {
    let public = app(
        r#"{"id": "/p", "cmd": "x", "cpus": 1, "mem": 16, "acceptedResourceRoles": ["slave_public"]}"#,
    );
    let mut e = engine_with(&[public]);
    // Only unreserved resources: the app may not use them.
    assert!(launched(&e.offers(vec![offer(
        "o1",
        "h1",
        "cpus:4;mem:1024;ports:[31000-31100]"
    )]))
    .is_empty());
    let tasks = launched(&e.offers(vec![offer("o2", "h1", "cpus(slave_public):2;mem(slave_public):256;ports(slave_public):[31000-31010];cpus:4;mem:1024")]));
    assert_eq!(tasks.len(), 1);
    let used = Resources::from_proto(&tasks[0].resources).expect("valid");
    assert_eq!(used.filter_roles(&["slave_public"]).scalar("cpus"), 1.0);
    assert_eq!(used.filter_roles(&["*"]).scalar("cpus"), 0.0);
}

/// Launch what the engine wants on one big offer; returns the new task ids.
fn launch_all(e: &mut Engine, offer_id: &str) -> Vec<String> {
    ids_of(&launched(&e.offers(vec![offer(offer_id, "h1", BIG)])))
}

fn healthy_count(e: &Engine, app: &str) -> usize {
    e.counts(app).healthy
}

#[test]
fn health_results_are_counted_rendered_and_announced() {
    let a = app(
        r#"{"id": "/hc", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 16,
            "healthChecks": [{"protocol": "HTTP", "path": "/health"}]}"#,
    );
    let mut e = engine_with(&[a]);
    let mut rx = e.flush_and_subscribe();
    let t = launch_all(&mut e, "o1");
    assert_eq!(t.len(), 2);
    for id in &t {
        e.status(status(id, pb::TaskState::TaskRunning));
    }
    assert_eq!(healthy_count(&e, "/hc"), 0);
    e.status(health(&t[0], true, ""));
    e.status(health(&t[1], true, ""));
    assert_eq!(e.counts("/hc").healthy, 2);
    let ev = events(&mut e, &mut rx);
    assert_eq!(
        kinds(&ev)
            .iter()
            .filter(|k| *k == "health_status_changed_event")
            .count(),
        2
    );
    e.status(health(&t[0], false, "HTTP 500"));
    let c = e.counts("/hc");
    assert_eq!((c.healthy, c.unhealthy), (1, 1));
    let json = e.task(&t[0]).expect("task").to_json(true);
    let r = &json["healthCheckResults"][0];
    assert_eq!(r["alive"], false);
    assert_eq!(r["consecutiveFailures"], 1);
    assert_eq!(r["lastFailureCause"], "HTTP 500");
    assert_eq!(r["instanceId"], t[0].as_str());
    assert!(r["firstSuccess"].is_string() && r["lastFailure"].is_string());
    let ev = events(&mut e, &mut rx);
    assert!(kinds(&ev).contains(&"failed_health_check_event".to_string()));
    assert!(ev
        .iter()
        .any(|v| v["eventType"] == "health_status_changed_event" && v["alive"] == false));
}

#[test]
fn an_unhealthy_task_is_replaced_before_it_is_killed() {
    let a = app(
        r#"{"id": "/hc", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16,
            "healthChecks": [{"protocol": "TCP", "maxConsecutiveFailures": 2}]}"#,
    );
    let mut e = engine_with(&[a]);
    let mut rx = e.flush_and_subscribe();
    let old = launch_all(&mut e, "o1").remove(0);
    e.status(status(&old, pb::TaskState::TaskRunning));
    e.status(health(&old, true, ""));
    assert!(kills(&e.status(health(&old, false, "connection refused"))).is_empty());
    // The second failure in a row condemns it: a replacement is wanted,
    // the old task keeps running meanwhile.
    let actions = e.status(health(&old, false, "connection refused"));
    assert!(
        kills(&actions).is_empty(),
        "killed before replaced: {actions:?}"
    );
    assert_eq!(e.needs("/hc").launch, 1);
    let new = launch_all(&mut e, "o2").remove(0);
    assert!(kills(&e.status(status(&new, pb::TaskState::TaskRunning))).is_empty());
    let actions = e.status(health(&new, true, ""));
    assert_eq!(kills(&actions), vec![old.clone()]);
    let ev = events(&mut e, &mut rx);
    let kill = ev
        .iter()
        .find(|v| v["eventType"] == "unhealthy_instance_kill_event")
        .expect("unhealthy_instance_kill_event");
    assert_eq!(kill["taskId"], old.as_str());
    assert_eq!(kill["reason"], "connection refused");
}

#[test]
fn a_rolling_upgrade_keeps_minimum_health_capacity_and_maximum_over_capacity() {
    let a = app(
        r#"{"id": "/r", "cmd": "v1", "instances": 4, "cpus": 0.1, "mem": 16,
            "healthChecks": [{"protocol": "TCP"}],
            "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0}}"#,
    );
    let mut e = engine_with(&[a]);
    for id in launch_all(&mut e, "o0") {
        e.status(status(&id, pb::TaskState::TaskRunning));
        e.status(health(&id, true, ""));
    }
    assert!(e.deployments().is_empty(), "the start deployment is done");
    let d = put(&mut e, "/r", r#"{"cmd": "v2"}"#).expect("upgrade");
    let mut rounds = 0;
    while e.deployments().iter().any(|x| x.id == d) {
        rounds += 1;
        assert!(rounds < 50, "the upgrade does not finish");
        // Kills sent so far take effect: those tasks end.
        let killing: Vec<String> = e
            .tasks()
            .filter(|t| !t.active())
            .map(|t| t.id.clone())
            .collect();
        let alive = e.tasks().filter(|t| t.active()).count();
        assert!(alive <= 4, "{alive} tasks run, over capacity 4");
        let healthy = e
            .tasks()
            .filter(|t| t.healthy() == Some(true) && t.running())
            .count();
        assert!(healthy >= 2, "only {healthy} healthy tasks");
        for k in killing {
            e.status(status(&k, pb::TaskState::TaskKilled));
        }
        for id in launch_all(&mut e, &format!("o{rounds}")) {
            e.status(status(&id, pb::TaskState::TaskRunning));
            e.status(health(&id, true, ""));
        }
        e.tick();
    }
    let tasks = e.app_tasks("/r");
    assert_eq!(tasks.len(), 4);
    assert!(tasks.iter().all(|t| t.active()));
    let version = e.app("/r").and_then(|a| a.version).expect("version");
    assert!(tasks.iter().all(|t| t.version == version));
}

#[test]
fn a_deployment_that_never_gets_healthy_says_why_and_rolls_back() {
    let a = app(
        r#"{"id": "/s", "cmd": "good", "instances": 1, "cpus": 0.1, "mem": 16,
            "healthChecks": [{"protocol": "HTTP", "maxConsecutiveFailures": 0}]}"#,
    );
    let mut e = engine_with(&[a]);
    let good = launch_all(&mut e, "o1").remove(0);
    e.status(status(&good, pb::TaskState::TaskRunning));
    e.status(health(&good, true, ""));
    assert!(e.deployments().is_empty());
    let mut rx = e.flush_and_subscribe();
    let d = put(&mut e, "/s", r#"{"cmd": "bad"}"#).expect("upgrade");
    let bad = launch_all(&mut e, "o2").remove(0);
    e.status(status(&bad, pb::TaskState::TaskRunning));
    e.status(health(&bad, false, "HTTP 503 Service Unavailable"));
    let ev = events(&mut e, &mut rx);
    assert!(
        ev.iter().any(|v| v["eventType"] == "deployment_info"
            && v["stuck"]["lastFailureCause"] == "HTTP 503 Service Unavailable"),
        "the stuck deployment is announced: {ev:?}"
    );
    let dep = e
        .deployments()
        .iter()
        .find(|x| x.id == d)
        .expect("under way")
        .clone();
    let json = e.deployment_json(&dep);
    assert_eq!(json["stuck"]["tasksHealthy"], 0);
    assert_eq!(
        json["stuck"]["lastFailureCause"],
        "HTTP 503 Service Unavailable"
    );
    assert_eq!(json["currentStep"], 1);
    // Locked without force.
    let u = parse_app_update(br#"{"instances": 2}"#).expect("parses");
    assert!(matches!(
        e.update_apps(&[(PathId::new("/s"), u)], true, false, false),
        Err(EngineError::Locked(_))
    ));
    // DELETE rolls back: the old definition, its old task kept, the new killed.
    let rollback = e.delete_deployment(&d, false).expect("rolled back");
    assert_eq!(
        e.app("/s").and_then(|a| a.cmd.clone()).as_deref(),
        Some("good")
    );
    assert!(kills(&rollback.actions).contains(&bad));
    assert!(!kills(&rollback.actions).contains(&good));
    e.status(status(&bad, pb::TaskState::TaskKilled));
    e.tick();
    assert!(e.deployments().is_empty(), "{:?}", e.deployments());
}

#[test]
fn forcing_a_deployment_to_stop_keeps_the_new_definition() {
    let a = app(r#"{"id": "/f", "cmd": "one", "instances": 1, "cpus": 0.1, "mem": 16}"#);
    let mut e = engine_with(&[a]);
    let d = e.deployments()[0].id.clone();
    e.delete_deployment(&d, true).expect("stopped");
    assert!(e.deployments().is_empty());
    assert_eq!(e.needs("/f").launch, 1, "the app still converges");
}

#[test]
fn a_multi_app_update_with_one_bad_entry_changes_nothing() {
    let a = app(r#"{"id": "/a", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16}"#);
    let b = app(r#"{"id": "/b", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16}"#);
    let mut e = engine_with(&[a, b]);
    let before = e.durable();
    let list = vec![
        (
            PathId::new("/a"),
            parse_app_update(br#"{"instances": 5}"#).expect("parses"),
        ),
        (
            PathId::new("/b"),
            parse_app_update(br#"{"cpus": -1}"#).expect("parses"),
        ),
    ];
    match e.update_apps(&list, true, true, true) {
        Err(EngineError::Invalid(v)) => {
            assert!(v.details.iter().any(|d| d.path == "(1)/cpus"), "{v:?}")
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    let after = e.durable();
    assert_eq!(e.app("/a").map(|a| a.instances), Some(1));
    assert_eq!(before.versions.len(), after.versions.len());
    assert_eq!(before.deployments.len(), after.deployments.len());
    assert_eq!(before.group_history.len(), after.group_history.len());
    // Both good: one deployment for both.
    let list = vec![
        (
            PathId::new("/a"),
            parse_app_update(br#"{"instances": 2}"#).expect("parses"),
        ),
        (
            PathId::new("/b"),
            parse_app_update(br#"{"instances": 3}"#).expect("parses"),
        ),
    ];
    let o = e.update_apps(&list, true, true, true).expect("applied");
    let d = e
        .deployments()
        .iter()
        .find(|d| d.id == o.deployment_id)
        .expect("deployment");
    assert_eq!(d.affected().count(), 2);
}

#[test]
fn versions_are_kept_newest_first_bounded_and_rolled_back_to() {
    let mut e = Engine::new("*", EventBus::default(), 3);
    e.subscribed("f");
    e.create_app(app(r#"{"id": "/v", "cmd": "one", "instances": 1}"#), false)
        .expect("created");
    let first = e.app("/v").and_then(|a| a.version).expect("version");
    put(&mut e, "/v", r#"{"instances": 2}"#).expect("scaled");
    e.restart_app(&PathId::new("/v"), true).expect("restarted");
    let versions = e.versions("/v");
    assert_eq!(versions.len(), 3);
    assert!(versions.windows(2).all(|w| w[0] > w[1]), "newest first");
    assert_eq!(versions[2], first);
    put(&mut e, "/v", r#"{"cmd": "two"}"#).expect("changed");
    assert_eq!(e.versions("/v").len(), 3, "bounded by max_versions");
    let v = e.versions("/v")[2];
    let old = e.app_version("/v", v).expect("kept").clone();
    let body = format!(
        r#"{{"version": "{}"}}"#,
        meseta_scheduler::model::marathon_timestamp(v)
    );
    put(&mut e, "/v", &body).expect("rolled back");
    let now = e.app("/v").expect("app");
    assert_eq!(now.cmd, old.cmd);
    assert_eq!(now.instances, old.instances);
    assert!(now.version > Some(v), "a rollback is a new version");
}

#[test]
fn group_dependencies_order_the_deployment_steps() {
    let mut e = Engine::new("*", EventBus::default(), 50);
    e.subscribed("f");
    let body = r#"{"id": "/stack", "apps": [
        {"id": "web", "cmd": "web", "cpus": 0.1, "mem": 16, "dependencies": ["/stack/db"]},
        {"id": "db", "cmd": "db", "cpus": 0.1, "mem": 16}
    ]}"#;
    let u: GroupUpdate = parse_json(body.as_bytes()).expect("parses");
    let o = e
        .update_group(&PathId::root(), &u, true, false)
        .expect("created");
    let d = e
        .deployments()
        .iter()
        .find(|d| d.id == o.deployment_id)
        .expect("deployment")
        .clone();
    let steps: Vec<Vec<String>> = d
        .steps
        .iter()
        .map(|s| s.iter().map(|a| a.app.to_string()).collect())
        .collect();
    assert_eq!(steps, vec![vec!["/stack/db"], vec!["/stack/web"]]);
    // Only db launches in step 1.
    let first = launch_all(&mut e, "o1");
    assert_eq!(first.len(), 1);
    assert!(first[0].starts_with("stack_db."));
    assert_eq!(e.needs("/stack/web").launch, 0);
    e.status(status(&first[0], pb::TaskState::TaskRunning));
    let second = launch_all(&mut e, "o2");
    assert_eq!(second.len(), 1);
    assert!(second[0].starts_with("stack_web."));
    assert!(e.group_exists(&PathId::new("/stack")));
    assert_eq!(e.group_apps(&PathId::new("/stack")).len(), 2);
    // Creating it again is refused; scaleBy doubles every app.
    assert!(matches!(
        e.update_group(&PathId::root(), &u, true, false),
        Err(EngineError::GroupExists(_))
    ));
    let scale: GroupUpdate = parse_json(br#"{"scaleBy": 2}"#).expect("parses");
    e.update_group(&PathId::new("/stack"), &scale, false, true)
        .expect("scaled");
    assert_eq!(e.app("/stack/db").map(|a| a.instances), Some(2));
    assert_eq!(e.app("/stack/web").map(|a| a.instances), Some(2));
    // Delete removes both apps.
    e.delete_group(&PathId::new("/stack"), true)
        .expect("deleted");
    assert!(e.apps_under(&PathId::new("/stack")).is_empty());
}

#[test]
fn the_queue_says_why_offers_were_not_used() {
    let a = app(
        r#"{"id": "/q", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16,
            "constraints": [["hostname", "CLUSTER", "nowhere"]]}"#,
    );
    let b = app(r#"{"id": "/big", "cmd": "x", "instances": 1, "cpus": 100, "mem": 16}"#);
    let mut e = engine_with(&[a, b]);
    e.offers(vec![offer("o1", "h1", BIG), offer("o2", "h2", BIG)]);
    let q = e.launch_stats("/q").expect("stats");
    assert_eq!(q.processed, 2);
    assert_eq!(q.unused, 2);
    let summary = q.summary_json();
    let step = |s: &Value, reason: &str| {
        s["rejectSummaryLaunchAttempt"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["reason"] == reason).cloned())
            .expect("reason listed")
    };
    assert_eq!(step(&summary, "UnfulfilledConstraint")["declined"], 2);
    assert_eq!(
        q.last_unused_json()[0]["reason"][0],
        "UnfulfilledConstraint"
    );
    let big = e.launch_stats("/big").expect("stats").summary_json();
    assert_eq!(step(&big, "InsufficientCpus")["declined"], 2);
    assert_eq!(step(&big, "InsufficientCpus")["processed"], 2);
}

#[test]
fn readiness_checks_gate_the_deployment() {
    let a = app(
        r#"{"id": "/rd", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16,
            "portDefinitions": [{"port": 0, "name": "http-api"}],
            "readinessChecks": [{"path": "/ready", "intervalSeconds": 1}]}"#,
    );
    let mut e = engine_with(&[a]);
    let t = launch_all(&mut e, "o1").remove(0);
    assert!(e.readiness_probes().is_empty(), "not running yet");
    e.status(status(&t, pb::TaskState::TaskRunning));
    let probes = e.readiness_probes();
    assert_eq!(probes.len(), 1);
    assert!(
        probes[0].url.starts_with("http://h1:31000/ready"),
        "{}",
        probes[0].url
    );
    assert!(e.readiness_probes().is_empty(), "once per interval");
    let not_ready = meseta_scheduler::engine::ReadinessOutcome {
        task_id: t.clone(),
        response: Some(meseta_scheduler::engine::ReadinessResponse {
            status: 503,
            content_type: "text/plain".into(),
            body: "warming up".into(),
        }),
    };
    e.readiness_result(&probes[0], not_ready);
    assert_eq!(e.deployments().len(), 1);
    let json = e.deployment_json(&e.deployments()[0].clone());
    assert_eq!(
        json["currentActions"][0]["readinessCheckResults"][0]["ready"],
        false
    );
    assert_eq!(
        json["stuck"]["lastFailureCause"],
        "readiness check answered HTTP 503"
    );
    let ready = meseta_scheduler::engine::ReadinessOutcome {
        task_id: t.clone(),
        response: Some(meseta_scheduler::engine::ReadinessResponse {
            status: 200,
            content_type: "text/plain".into(),
            body: "ok".into(),
        }),
    };
    e.readiness_result(&probes[0], ready);
    assert!(e.deployments().is_empty());
}

#[test]
fn an_upgrade_that_never_gets_ready_is_stuck() {
    let a = app(
        r#"{"id": "/rd", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16,
            "portDefinitions": [{"port": 0, "name": "http-api"}],
            "readinessChecks": [{"path": "/", "intervalSeconds": 1}]}"#,
    );
    let mut e = engine_with(&[a]);
    let old = launch_all(&mut e, "o1").remove(0);
    e.status(status(&old, pb::TaskState::TaskRunning));
    let probes = e.readiness_probes();
    let answer = |task: &str, code: u16| meseta_scheduler::engine::ReadinessOutcome {
        task_id: task.to_string(),
        response: Some(meseta_scheduler::engine::ReadinessResponse {
            status: code,
            content_type: String::new(),
            body: String::new(),
        }),
    };
    e.readiness_result(&probes[0], answer(&old, 200));
    assert!(e.deployments().is_empty());
    put(
        &mut e,
        "/rd",
        r#"{"readinessChecks": [{"path": "/never", "intervalSeconds": 1}]}"#,
    )
    .expect("changed");
    let new = launch_all(&mut e, "o2").remove(0);
    e.status(status(&new, pb::TaskState::TaskRunning));
    let probes = e.readiness_probes();
    assert_eq!(probes.len(), 1, "{probes:?}");
    e.readiness_result(&probes[0], answer(&new, 404));
    let d = e.deployments()[0].clone();
    let json = e.deployment_json(&d);
    assert_eq!(
        json["stuck"]["lastFailureCause"], "readiness check answered HTTP 404",
        "{json}"
    );
}

fn unreachable_since(task: &str, secs_ago: f64) -> pb::TaskStatus {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs_f64();
    pb::TaskStatus {
        timestamp: now - secs_ago,
        message: "agent unreachable".into(),
        ..status(task, pb::TaskState::TaskUnreachable)
    }
}

/// Two running instances, one of them then unreachable `secs_ago`.
fn partitioned(kill_selection: &str, secs_ago: f64) -> (Engine, String, String) {
    let a = app(&format!(
        r#"{{"id": "/p", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 16, "backoffSeconds": 0,
            "portDefinitions": [], "killSelection": "{kill_selection}",
            "unreachableStrategy": {{"inactiveAfterSeconds": 60, "expungeAfterSeconds": 600}}}}"#
    ));
    let mut e = engine_with(&[a]);
    let ids = ids_of(&launched(&e.offers(vec![offer("o1", "h1", BIG)])));
    assert_eq!(ids.len(), 2);
    for t in &ids {
        e.status(status(t, pb::TaskState::TaskRunning));
    }
    e.status(unreachable_since(&ids[0], secs_ago));
    // Replacements are staged later (ages are by staging time, in ms).
    std::thread::sleep(std::time::Duration::from_millis(5));
    (e, ids[0].clone(), ids[1].clone())
}

#[test]
fn an_unreachable_task_counts_until_inactive_after_seconds() {
    let (mut e, cut, _) = partitioned("YOUNGEST_FIRST", 5.0);
    assert_eq!(e.needs("/p").launch, 0, "still within inactiveAfterSeconds");
    assert!(e.app_tasks("/p").iter().any(|t| t.id == cut));
    assert!(
        kills(&e.tick()).is_empty(),
        "an unreachable task is not killed"
    );
}

#[test]
fn an_inactive_unreachable_task_is_replaced_and_the_surplus_goes_youngest_first() {
    let (mut e, cut, _) = partitioned("YOUNGEST_FIRST", 120.0);
    assert_eq!(
        e.needs("/p").launch,
        1,
        "past inactiveAfterSeconds: replaced"
    );
    let replacement = ids_of(&launched(&e.offers(vec![offer("o2", "h2", BIG)])));
    assert_eq!(replacement.len(), 1);
    e.status(status(&replacement[0], pb::TaskState::TaskRunning));
    assert!(
        e.app_tasks("/p").iter().any(|t| t.id == cut),
        "not expunged yet"
    );
    // The partition heals: the original is back; the youngest goes.
    let actions = e.status(status(&cut, pb::TaskState::TaskRunning));
    assert_eq!(kills(&actions), replacement);
}

#[test]
fn oldest_first_keeps_the_replacement() {
    let (mut e, cut, other) = partitioned("OLDEST_FIRST", 120.0);
    let replacement = ids_of(&launched(&e.offers(vec![offer("o2", "h2", BIG)])));
    e.status(status(&replacement[0], pb::TaskState::TaskRunning));
    let actions = e.status(status(&cut, pb::TaskState::TaskRunning));
    // The two originals were staged together; one of them goes.
    let killed = kills(&actions);
    assert_eq!(killed.len(), 1);
    assert!(killed[0] == cut || killed[0] == other, "{killed:?}");
}

#[test]
fn an_unreachable_task_is_expunged_after_expunge_after_seconds() {
    let (mut e, cut, _) = partitioned("YOUNGEST_FIRST", 700.0);
    e.tick();
    assert!(!e.app_tasks("/p").iter().any(|t| t.id == cut), "expunged");
    // Should it come back, it is unknown now: killed.
    let actions = e.status(status(&cut, pb::TaskState::TaskRunning));
    assert_eq!(kills(&actions), vec![cut]);
}
