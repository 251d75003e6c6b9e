//! The scheduler engine's decisions, without a cluster: offers in, actions
//! out.

use meseta_core::Resources;
use meseta_proto::v1 as pb;
use meseta_scheduler::engine::{Action, Engine};
use meseta_scheduler::events::EventBus;
use meseta_scheduler::model::{parse_app_definition, AppChange, AppDefinition};

fn app(json: &str) -> AppDefinition {
    let mut app = parse_app_definition(json.as_bytes()).expect("valid app");
    app.stamp_version(meseta_scheduler::model::now_millis(), AppChange::Config);
    app
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
    let mut e = Engine::new("*", EventBus::default());
    e.subscribed("f");
    for a in apps {
        e.apps.insert(a.id.to_string(), a.clone());
    }
    e
}

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
    e.apps.clear();
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
    let mut scaled = a.clone();
    scaled.instances = 3;
    let change = a.change_to(&scaled);
    assert_eq!(change, AppChange::ScaleOnly);
    scaled.stamp_version(
        meseta_scheduler::model::now_millis() + chrono::Duration::seconds(1),
        change,
    );
    e.apps.insert("/a".into(), scaled.clone());
    let needs = e.needs("/a");
    assert_eq!(needs.launch, 1);
    assert!(
        needs.kill.is_empty(),
        "scaling must not kill {:?}",
        needs.kill
    );
    // A new command is a config change: new tasks start, old ones are
    // killed only as the new ones run.
    let mut changed = scaled.clone();
    changed.cmd = Some("sleep 2000".into());
    let change = scaled.change_to(&changed);
    assert_eq!(change, AppChange::Config);
    changed.stamp_version(
        meseta_scheduler::model::now_millis() + chrono::Duration::seconds(2),
        change,
    );
    e.apps.insert("/a".into(), changed);
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
    let kills = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Kill { .. }))
            .count()
    };
    // 2 old + 1 new running: still 3 instances' worth, nothing to kill yet.
    assert_eq!(
        kills(&e.status(status(&new[0], pb::TaskState::TaskRunning))),
        0
    );
    assert_eq!(
        kills(&e.status(status(&new[1], pb::TaskState::TaskRunning))),
        1
    );
    assert_eq!(
        kills(&e.status(status(&new[2], pb::TaskState::TaskRunning))),
        1
    );
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
    let f = e.failures.get("/a").expect("last failure");
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
