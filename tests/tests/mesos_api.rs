//! Mesos' v1 HTTP APIs on three masters, through the real binary:
//!
//! - the example framework (`examples/frameworks/three_tasks.py`, plain
//!   HTTP + JSON) subscribes, launches three command tasks, sees them
//!   RUNNING then FINISHED / FAILED, acknowledges every update, survives
//!   the leader being killed (it follows the new leader and re-subscribes
//!   with its id, keeping its tasks), reconciles, kills the last task and
//!   tears down; an operator SUBSCRIBE stream sees TASK_ADDED and
//!   TASK_UPDATED for all of it;
//! - the same API with protobuf bodies, subscribed through a follower
//!   (307 to the leader), with the calls a framework makes and the calls
//!   it gets wrong (400 with a message);
//! - the Mesos-shaped JSON endpoints, the operator API's GET calls, and
//!   404 for unknown paths while gRPC keeps working on the same port.
//!
//! Every request has a timeout; waits have generous deadlines and check
//! no speed.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use meseta_proto::mesos::v1 as m;
use meseta_proto::mesos::Encoding;
use meseta_tests::http::Api;
use meseta_tests::masters::{leader_of, Masters};
use meseta_tests::mesos_api::{self, RecordStream};
use meseta_tests::wait::wait_for;
use prost::Message as _;
use serde_json::Value;

use m::master as mo;
use m::scheduler as ms;

const SCHEDULER: &str = "/api/v1/scheduler";
const OPERATOR: &str = "/api/v1";
const STEP: Duration = Duration::from_secs(60);
const AGENT: &str = "cpus:2;mem:1024;disk:1000;ports:[31000-31010]";

/// A child process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_agents(masters: &Masters, leader: usize, n: usize) -> Result<()> {
    let api = Api::new(&masters.addrs[leader]);
    wait_for(&format!("{n} agent(s) registered"), || {
        let slaves = api.get_json("/master/slaves")?;
        let got = slaves["slaves"].as_array().map(Vec::len).unwrap_or(0);
        if got == n {
            Ok(())
        } else {
            Err(anyhow!("{got} agents"))
        }
    })
}

/// (task id, state name) of an operator event about a task.
fn task_event(e: &mo::Event) -> Option<(String, String, &'static str)> {
    let name = |raw: i32| {
        m::TaskState::try_from(raw)
            .map(|s| s.as_str_name())
            .unwrap_or("?")
    };
    if let Some(added) = &e.task_added {
        return Some((
            added.task.task_id.value.clone(),
            name(added.task.state).to_string(),
            "TASK_ADDED",
        ));
    }
    if let Some(updated) = &e.task_updated {
        return Some((
            updated.status.task_id.value.clone(),
            name(updated.state).to_string(),
            "TASK_UPDATED",
        ));
    }
    None
}

#[test]
fn example_framework_follows_the_leader_and_operators_see_its_tasks() -> Result<()> {
    Masters::start(3)?.run(|masters| {
        masters.start_agent(AGENT)?;
        let leader = masters.leader()?;
        wait_agents(masters, leader, 1)?;

        // An operator watches the leader.
        let ops = RecordStream::open(
            &masters.addrs[leader],
            OPERATOR,
            Encoding::Json,
            br#"{"type": "SUBSCRIBE"}"#,
        )?;
        let subscribed: mo::Event = ops
            .next_message(STEP)?
            .map(|(e, _)| e)
            .ok_or_else(|| anyhow!("no SUBSCRIBED on the operator stream"))?;
        ensure!(
            subscribed.r#type() == mo::event::Type::Subscribed
                && subscribed
                    .subscribed
                    .as_ref()
                    .and_then(|s| s.get_state.as_ref())
                    .and_then(|s| s.get_agents.as_ref())
                    .is_some_and(|a| a.agents.len() == 1),
            "first operator event: {subscribed:?}"
        );

        let script = meseta_tests::workspace_root().join("examples/frameworks/three_tasks.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("--master")
            .arg(masters.addrs.join(","))
            .arg("--wait-for-failover")
            .arg("--timeout")
            .arg("150")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting python3 with the example framework")?;
        let stdout = child.stdout.take().context("the framework's stdout")?;
        let mut child = Guard(child);
        let (tx, lines) = mpsc::channel::<Value>();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("framework: {line}");
                if let Ok(v) = serde_json::from_str(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        let mut seen: Vec<Value> = Vec::new();
        let until = |seen: &mut Vec<Value>, event: &str, timeout: Duration| -> Result<()> {
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let v = lines
                    .recv_timeout(left)
                    .map_err(|_| anyhow!("the framework printed no {event:?} in time"))?;
                let hit = v["event"] == event;
                if v["event"] == "failed" {
                    bail!("the framework failed: {v}");
                }
                seen.push(v);
                if hit {
                    return Ok(());
                }
            }
        };
        until(&mut seen, "waiting_for_failover", Duration::from_secs(90))?;

        // The operator saw the three tasks added and their updates.
        let mut added = std::collections::BTreeSet::new();
        let mut updated = std::collections::BTreeSet::new();
        let want_updates = [
            ("finish", "TASK_RUNNING"),
            ("fail", "TASK_RUNNING"),
            ("sleeper", "TASK_RUNNING"),
            ("finish", "TASK_FINISHED"),
            ("fail", "TASK_FAILED"),
        ];
        ops.wait_for::<mo::Event, ()>(
            "TASK_ADDED/TASK_UPDATED for the three tasks",
            STEP,
            |e, _| {
                if let Some((task, state, kind)) = task_event(e) {
                    if kind == "TASK_ADDED" {
                        added.insert(task);
                    } else {
                        updated.insert((task, state));
                    }
                }
                let all_updates = want_updates
                    .iter()
                    .all(|(t, s)| updated.contains(&(t.to_string(), s.to_string())));
                (added.len() == 3 && all_updates).then_some(())
            },
        )?;

        // Kill the leader mid-run: the framework follows the new one.
        masters.kill_master(leader);
        let new_leader = masters.wait_leader(Some(leader))?;
        let ops2 = RecordStream::open(
            &masters.addrs[new_leader],
            OPERATOR,
            Encoding::Json,
            br#"{"type": "SUBSCRIBE"}"#,
        )?;
        until(&mut seen, "done", Duration::from_secs(120))?;
        let status = wait_for("the framework to exit", || match child.0.try_wait() {
            Ok(Some(s)) => Ok(s),
            _ => Err("still running"),
        })?;
        ensure!(status.success(), "the framework exited {status}");

        let subscriptions: Vec<&Value> =
            seen.iter().filter(|v| v["event"] == "subscribed").collect();
        ensure!(
            subscriptions.len() >= 2,
            "subscribed {} times",
            subscriptions.len()
        );
        let ids: std::collections::BTreeSet<&str> = subscriptions
            .iter()
            .filter_map(|v| v["framework_id"].as_str())
            .collect();
        ensure!(
            ids.len() == 1,
            "the framework id changed across the failover: {ids:?}"
        );
        for task in ["finish", "fail", "sleeper"] {
            ensure!(
                seen.iter().any(|v| v["event"] == "update"
                    && v["task"] == task
                    && v["state"] == "TASK_RUNNING"
                    && v["agent_id"].is_string()
                    && v["uuid"].is_string()),
                "no TASK_RUNNING with agent_id and uuid for {task}"
            );
        }
        let last = seen.last().cloned().unwrap_or_default();
        ensure!(
            last["states"]["finish"] == "TASK_FINISHED"
                && last["states"]["fail"] == "TASK_FAILED"
                && last["states"]["sleeper"] == "TASK_KILLED",
            "final states: {last}"
        );

        // The new leader's operator stream (or its snapshot) has the kill.
        let mut killed = false;
        if let Some((first, _)) = ops2.next_message::<mo::Event>(STEP)? {
            let snapshot = first
                .subscribed
                .and_then(|s| s.get_state)
                .and_then(|s| s.get_tasks)
                .unwrap_or_default();
            killed = snapshot.completed_tasks.iter().any(|t| {
                t.task_id.value == "sleeper" && t.state == m::TaskState::TaskKilled as i32
            });
        }
        if !killed {
            ops2.wait_for::<mo::Event, ()>(
                "TASK_UPDATED TASK_KILLED for sleeper",
                STEP,
                |e, _| {
                    task_event(e)
                        .filter(|(t, s, _)| t == "sleeper" && s == "TASK_KILLED")
                        .map(|_| ())
                },
            )?;
        }
        // Torn down: the framework is gone from the new leader.
        let frameworks = Api::new(&masters.addrs[new_leader]).get_json("/master/frameworks")?;
        ensure!(
            frameworks["frameworks"]
                .as_array()
                .is_some_and(Vec::is_empty),
            "frameworks after TEARDOWN: {frameworks}"
        );
        Ok(())
    })
}

fn scalar(name: &str, value: f64) -> m::Resource {
    m::Resource {
        name: name.into(),
        r#type: m::value::Type::Scalar as i32,
        scalar: Some(m::value::Scalar { value }),
        ..Default::default()
    }
}

fn command_task(name: &str, agent: &m::AgentId, cmd: &str) -> m::TaskInfo {
    m::TaskInfo {
        name: name.into(),
        task_id: m::TaskId { value: name.into() },
        agent_id: agent.clone(),
        resources: vec![scalar("cpus", 0.1), scalar("mem", 32.0)],
        command: Some(m::CommandInfo {
            value: Some(cmd.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn sched_call(framework_id: &str, kind: ms::call::Type) -> ms::Call {
    ms::Call {
        framework_id: Some(m::FrameworkId {
            value: framework_id.into(),
        }),
        r#type: Some(kind as i32),
        ..Default::default()
    }
}

/// POST a protobuf scheduler call; the status.
fn post_pb(master: &str, stream_id: &str, call: &ms::Call) -> Result<(u16, String)> {
    let (reply, _) = mesos_api::post(
        master,
        SCHEDULER,
        Encoding::Protobuf,
        Some(stream_id),
        call.encode_to_vec(),
    )?;
    Ok((reply.status, reply.body))
}

/// Next UPDATE on a scheduler stream.
fn next_update(stream: &RecordStream) -> Result<m::TaskStatus> {
    stream.wait_for::<ms::Event, _>("an UPDATE", STEP, |e, _| {
        e.update.as_ref().map(|u| u.status.clone())
    })
}

#[test]
fn protobuf_bodies_bad_calls_and_mesos_shaped_endpoints() -> Result<()> {
    Masters::start(3)?.run(|masters| {
        masters.start_agent(AGENT)?;
        let leader = masters.leader()?;
        let leader_addr = masters.addrs[leader].clone();
        let follower = masters.addrs[(leader + 1) % 3].clone();
        wait_agents(masters, leader, 1)?;

        // SUBSCRIBE in protobuf, sent to a follower: 307 to the leader.
        let subscribe = ms::Call {
            r#type: Some(ms::call::Type::Subscribe as i32),
            subscribe: Some(ms::call::Subscribe {
                framework_info: m::FrameworkInfo {
                    user: "root".into(),
                    name: "protobuf-test".into(),
                    failover_timeout: Some(60.0),
                    ..Default::default()
                },
                suppressed_roles: Vec::new(),
            }),
            ..Default::default()
        };
        let stream = RecordStream::open(
            &follower,
            SCHEDULER,
            Encoding::Protobuf,
            &subscribe.encode_to_vec(),
        )?;
        ensure!(
            stream.master == leader_addr,
            "followed to {}",
            stream.master
        );
        let stream_id = stream
            .stream_id
            .clone()
            .ok_or_else(|| anyhow!("no Mesos-Stream-Id"))?;
        let (framework_id, master_info) =
            stream.wait_for::<ms::Event, _>("SUBSCRIBED", STEP, |e, _| {
                e.subscribed
                    .as_ref()
                    .map(|s| (s.framework_id.value.clone(), s.master_info.clone()))
            })?;
        ensure!(
            master_info.as_ref().and_then(|i| i.pid.as_deref())
                == Some(format!("master@{leader_addr}").as_str()),
            "master_info: {master_info:?}"
        );
        let offer = stream.wait_for::<ms::Event, _>("OFFERS", STEP, |e, _| {
            e.offers.as_ref().and_then(|o| o.offers.first().cloned())
        })?;
        ensure!(
            offer
                .allocation_info
                .as_ref()
                .and_then(|a| a.role.as_deref())
                == Some("*"),
            "offer without allocation_info: {offer:?}"
        );

        // Bad calls: 400 with a message.
        let mut no_stream = sched_call(&framework_id, ms::call::Type::Revive);
        no_stream.revive = Some(ms::call::Revive { roles: Vec::new() });
        let (reply, _) = mesos_api::post(
            &leader_addr,
            SCHEDULER,
            Encoding::Protobuf,
            None,
            no_stream.encode_to_vec(),
        )?;
        ensure!(
            reply.status == 400 && reply.body.contains("Mesos-Stream-Id"),
            "no stream id: {reply}"
        );
        let (reply, _) = mesos_api::post(
            &leader_addr,
            SCHEDULER,
            Encoding::Json,
            Some(&stream_id),
            format!(
                r#"{{"type": "LAUNCH_ROCKET", "framework_id": {{"value": "{framework_id}"}}}}"#
            )
            .into_bytes(),
        )?;
        ensure!(
            reply.status == 400 && reply.body.contains("unknown call type"),
            "unknown type: {reply}"
        );
        let mut ghost = sched_call(&framework_id, ms::call::Type::Accept);
        ghost.accept = Some(ms::call::Accept {
            offer_ids: vec![m::OfferId {
                value: "offer-that-never-was".into(),
            }],
            operations: Vec::new(),
            filters: None,
        });
        let (status, body) = post_pb(&leader_addr, &stream_id, &ghost)?;
        ensure!(
            status == 400 && body.contains("offer-that-never-was"),
            "unknown offer: {status} {body}"
        );
        let (reply, _) = mesos_api::post(
            &leader_addr,
            SCHEDULER,
            Encoding::Json,
            Some(&stream_id),
            b"{not json".to_vec(),
        )?;
        ensure!(reply.status == 400, "broken JSON: {reply}");
        let (reply, _) = mesos_api::post_raw(
            &leader_addr,
            SCHEDULER,
            "text/plain",
            Some(&stream_id),
            b"hello".to_vec(),
        )?;
        ensure!(reply.status == 415, "text/plain: {reply}");
        let (reply, headers) = mesos_api::post(
            &follower,
            SCHEDULER,
            Encoding::Protobuf,
            Some(&stream_id),
            no_stream.encode_to_vec(),
        )?;
        let location = headers
            .iter()
            .find(|(k, _)| k == "location")
            .map(|(_, v)| v.as_str());
        ensure!(
            reply.status == 307
                && location.and_then(mesos_api::location_authority).as_deref()
                    == Some(leader_addr.as_str()),
            "follower: {reply} {headers:?}"
        );

        // ACCEPT with two tasks; every agent update has agent_id and uuid
        // and is acknowledged.
        let mut accept = sched_call(&framework_id, ms::call::Type::Accept);
        accept.accept = Some(ms::call::Accept {
            offer_ids: vec![offer.id.clone()],
            operations: vec![m::offer::Operation {
                r#type: Some(m::offer::operation::Type::Launch as i32),
                launch: Some(m::offer::operation::Launch {
                    task_infos: vec![
                        command_task("pb-sleep", &offer.agent_id, "sleep 1000"),
                        command_task("pb-done", &offer.agent_id, "exit 0"),
                    ],
                }),
                ..Default::default()
            }],
            filters: Some(m::Filters {
                refuse_seconds: Some(60.0),
            }),
        });
        let (status, body) = post_pb(&leader_addr, &stream_id, &accept)?;
        ensure!(status == 202, "ACCEPT: {status} {body}");
        let mut sleeping = false;
        let mut done = false;
        while !(sleeping && done) {
            let st = next_update(&stream)?;
            let agent = st
                .agent_id
                .clone()
                .ok_or_else(|| anyhow!("update without agent_id: {st:?}"))?;
            let uuid = st
                .uuid
                .clone()
                .ok_or_else(|| anyhow!("update without uuid: {st:?}"))?;
            let mut ack = sched_call(&framework_id, ms::call::Type::Acknowledge);
            ack.acknowledge = Some(ms::call::Acknowledge {
                agent_id: agent,
                task_id: st.task_id.clone(),
                uuid,
            });
            let (status, body) = post_pb(&leader_addr, &stream_id, &ack)?;
            ensure!(status == 202, "ACKNOWLEDGE: {status} {body}");
            let state = st.state();
            sleeping |= st.task_id.value == "pb-sleep" && state == m::TaskState::TaskRunning;
            done |= st.task_id.value == "pb-done" && state == m::TaskState::TaskFinished;
        }

        // Reconcile, kill, tear down.
        let mut reconcile = sched_call(&framework_id, ms::call::Type::Reconcile);
        reconcile.reconcile = Some(ms::call::Reconcile {
            tasks: vec![ms::call::reconcile::Task {
                task_id: m::TaskId {
                    value: "pb-sleep".into(),
                },
                agent_id: Some(offer.agent_id.clone()),
            }],
        });
        let (status, body) = post_pb(&leader_addr, &stream_id, &reconcile)?;
        ensure!(status == 202, "RECONCILE: {status} {body}");
        let st = next_update(&stream)?;
        ensure!(
            st.task_id.value == "pb-sleep"
                && st.state() == m::TaskState::TaskRunning
                && st.reason() == m::task_status::Reason::Reconciliation
                && st.uuid.is_none(),
            "reconciliation answer: {st:?}"
        );

        check_endpoints(masters, leader, &framework_id)?;

        let mut kill = sched_call(&framework_id, ms::call::Type::Kill);
        kill.kill = Some(ms::call::Kill {
            task_id: m::TaskId {
                value: "pb-sleep".into(),
            },
            agent_id: Some(offer.agent_id.clone()),
            kill_policy: None,
        });
        let (status, body) = post_pb(&leader_addr, &stream_id, &kill)?;
        ensure!(status == 202, "KILL: {status} {body}");
        let st = next_update(&stream)?;
        ensure!(
            st.task_id.value == "pb-sleep" && st.state() == m::TaskState::TaskKilled,
            "after KILL: {st:?}"
        );
        let teardown = sched_call(&framework_id, ms::call::Type::Teardown);
        let (status, body) = post_pb(&leader_addr, &stream_id, &teardown)?;
        ensure!(status == 202, "TEARDOWN: {status} {body}");
        let (status, _) = post_pb(&leader_addr, &stream_id, &teardown)?;
        ensure!(
            status == 403,
            "a torn-down framework is not subscribed: {status}"
        );
        // The stream ends.
        let deadline = Instant::now() + STEP;
        while stream.next(Duration::from_secs(1)).is_some() {
            ensure!(
                Instant::now() < deadline,
                "the stream did not end after TEARDOWN"
            );
        }
        Ok(())
    })
}

/// The JSON endpoints and the operator API, while a task runs.
fn check_endpoints(masters: &Masters, leader: usize, framework_id: &str) -> Result<()> {
    let leader_addr = &masters.addrs[leader];
    let api = Api::new(leader_addr);
    for path in ["/master/state", "/state.json"] {
        let state = api.get_json(path)?;
        ensure!(
            state["leader"] == format!("master@{leader_addr}").as_str()
                && state["pid"] == format!("master@{leader_addr}").as_str()
                && state["leader_info"]["port"].is_number()
                && leader_of(&state) == *leader_addr,
            "{path}: leader {} pid {} leader_info {}",
            state["leader"],
            state["pid"],
            state["leader_info"]
        );
    }
    let version = api.get_json("/version")?;
    let v = version["version"].as_str().unwrap_or_default();
    ensure!(
        v.split('.').count() == 3 && v.split('.').all(|p| p.parse::<u32>().is_ok()),
        "/version: {version}"
    );
    let summary = api.get_json("/master/state-summary")?;
    ensure!(
        summary["frameworks"][0]["TASK_RUNNING"] == 1 && summary["slaves"][0]["TASK_RUNNING"] == 1,
        "/master/state-summary: {summary}"
    );
    let tasks = api.get_json("/master/tasks")?;
    ensure!(
        tasks["tasks"].as_array().is_some_and(|t| t
            .iter()
            .any(|t| t["id"] == "pb-sleep" && t["state"] == "TASK_RUNNING")),
        "/master/tasks: {tasks}"
    );
    let frameworks = api.get_json("/master/frameworks")?;
    ensure!(
        frameworks["frameworks"][0]["id"] == framework_id,
        "/master/frameworks: {frameworks}"
    );
    ensure!(api.get_json("/master/roles")?["roles"].is_array());
    let metrics = api.get_json("/metrics/snapshot")?;
    for name in [
        "master/elected",
        "master/uptime_secs",
        "master/slaves_active",
        "master/tasks_running",
        "master/frameworks_active",
        "allocator/allocation_runs",
    ] {
        ensure!(
            metrics[name].is_number(),
            "/metrics/snapshot lacks {name}: {metrics}"
        );
    }
    ensure!(
        metrics["master/tasks_running"] == 1,
        "tasks running: {metrics}"
    );
    let missing = api.get("/no/such/endpoint")?;
    ensure!(missing.status == 404, "unknown path: {missing}");
    // A follower answers state calls with 307; any master answers health.
    let follower = &masters.addrs[(leader + 1) % 3];
    let (reply, _) = mesos_api::post(
        follower,
        OPERATOR,
        Encoding::Json,
        None,
        br#"{"type": "GET_STATE"}"#.to_vec(),
    )?;
    ensure!(reply.status == 307, "follower GET_STATE: {reply}");
    let health: mo::Response = mesos_api::call(
        follower,
        OPERATOR,
        Encoding::Protobuf,
        &mo::Call {
            r#type: Some(mo::call::Type::GetHealth as i32),
            ..Default::default()
        },
    )?;
    ensure!(health.get_health.is_some_and(|h| h.healthy), "GET_HEALTH");
    // Operator calls in both encodings.
    for encoding in [Encoding::Json, Encoding::Protobuf] {
        let get = |kind: mo::call::Type| -> Result<mo::Response> {
            mesos_api::call(
                leader_addr,
                OPERATOR,
                encoding,
                &mo::Call {
                    r#type: Some(kind as i32),
                    ..Default::default()
                },
            )
        };
        let state = get(mo::call::Type::GetState)?
            .get_state
            .ok_or_else(|| anyhow!("GET_STATE without get_state"))?;
        ensure!(
            state
                .get_tasks
                .as_ref()
                .is_some_and(|t| t.tasks.iter().any(|t| t.task_id.value == "pb-sleep")),
            "GET_STATE tasks: {:?}",
            state.get_tasks
        );
        ensure!(state.get_agents.is_some_and(|a| a.agents.len() == 1));
        ensure!(get(mo::call::Type::GetFrameworks)?
            .get_frameworks
            .is_some_and(|f| f.frameworks.len() == 1));
        ensure!(get(mo::call::Type::GetAgents)?.get_agents.is_some());
        ensure!(get(mo::call::Type::GetTasks)?.get_tasks.is_some());
        ensure!(get(mo::call::Type::GetRoles)?.get_roles.is_some());
        ensure!(get(mo::call::Type::GetExecutors)?.get_executors.is_some());
        ensure!(get(mo::call::Type::GetFlags)?
            .get_flags
            .is_some_and(|f| !f.flags.is_empty()));
        ensure!(get(mo::call::Type::GetVersion)?.get_version.is_some());
        ensure!(get(mo::call::Type::GetMetrics)?
            .get_metrics
            .is_some_and(|m| !m.metrics.is_empty()));
        ensure!(get(mo::call::Type::GetMaster)?
            .get_master
            .and_then(|m| m.master_info)
            .is_some_and(|i| i.pid.as_deref() == Some(format!("master@{leader_addr}").as_str())));
        ensure!(get(mo::call::Type::GetMaintenanceStatus)?
            .get_maintenance_status
            .is_some());
    }
    let (reply, _) = mesos_api::post(
        leader_addr,
        OPERATOR,
        Encoding::Json,
        None,
        br#"{"type": "GET_LOGGING_LEVEL"}"#.to_vec(),
    )?;
    ensure!(
        reply.status == 400 && reply.body.contains("GET_LOGGING_LEVEL"),
        "unsupported operator call: {reply}"
    );
    Ok(())
}
