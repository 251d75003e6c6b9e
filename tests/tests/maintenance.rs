//! Fencing of deposed framework connections and agent drain/maintenance,
//! through the master's public APIs (gRPC for frameworks, Mesos' v1
//! operator API `POST /api/v1` and `/master/state` for operators). Real
//! processes on loopback; posix isolation, no root needed.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use meseta_sdk::SchedulerEvent;
use meseta_tests::masters::{Masters, ELECTION_DEADLINE};
use meseta_tests::{wait_until, Api};
use serde_json::{json, Value};

const POLL: Duration = Duration::from_millis(200);

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

async fn subscribed(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<SchedulerEvent>,
) -> Result<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
            Ok(Some(SchedulerEvent::Subscribed { framework_id, .. })) => return Ok(framework_id),
            Ok(Some(SchedulerEvent::Error(e))) => bail!("refused: {e}"),
            Ok(Some(_)) => continue,
            _ => bail!("not subscribed within 60 s"),
        }
    }
}

async fn refused(events: &mut tokio::sync::mpsc::UnboundedReceiver<SchedulerEvent>) -> Result<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
            Ok(Some(SchedulerEvent::Error(e))) => return Ok(e),
            Ok(Some(SchedulerEvent::Subscribed { .. })) => bail!("a stale connection was subscribed"),
            Ok(Some(_)) => continue,
            _ => bail!("no answer within 60 s"),
        }
    }
}

#[test]
fn a_framework_connection_older_than_the_current_one_cannot_act() -> Result<()> {
    let mut m = Masters::start(3)?;
    let rt = runtime()?;
    m.run(|m| {
        let leading = m.addrs[m.leader()?].clone();
        rt.block_on(async {
            use meseta_sdk::v1 as pb;
            let info = pb::FrameworkInfo {
                name: "fenced".into(),
                user: "root".into(),
                failover_timeout: 60.0,
                ..Default::default()
            };
            // The instance that leads with lease 5.
            let (leader, mut leader_events) =
                meseta_sdk::start_fenced(m.addrs.clone(), info.clone(), None, false, 5);
            let id = subscribed(&mut leader_events).await?;
            leader.revive().await?;
            // A deposed instance (lease 3) cannot take the framework back.
            let (_stale, mut stale_events) =
                meseta_sdk::start_fenced(m.addrs.clone(), info.clone(), Some(id.clone()), false, 3);
            let why = refused(&mut stale_events).await?;
            if !why.contains("epoch 3") || !why.contains("epoch 5") {
                bail!("the refusal does not say why: {why}");
            }
            // The current one still acts.
            leader.revive().await?;
            // A newer leader (lease 9) takes over; the old one's calls are
            // refused from then on, with the reason.
            let (newer, mut newer_events) =
                meseta_sdk::start_fenced(m.addrs.clone(), info, Some(id.clone()), false, 9);
            if subscribed(&mut newer_events).await? != id {
                bail!("the newer instance got another framework id");
            }
            newer.revive().await?;
            // The deposed client was told (ERROR) and stops calling...
            if leader.revive().await.is_ok() {
                bail!("the deposed client still calls");
            }
            // ...and a call that still carries its epoch, sent straight to
            // the leading master, is refused with the reason.
            let mut raw =
                pb::scheduler_client::SchedulerClient::connect(format!("http://{leading}")).await?;
            let stale = raw
                .call(pb::Call {
                    framework_id: Some(pb::FrameworkId { value: id.clone() }),
                    epoch: 5,
                    call: Some(pb::call::Call::Kill(pb::call::Kill {
                        task_id: Some(pb::TaskId {
                            value: "any".into(),
                        }),
                        agent_id: None,
                        kill_policy: None,
                    })),
                })
                .await
                .err()
                .ok_or_else(|| anyhow!("a call from a deposed connection was accepted"))?;
            if stale.code() != tonic::Code::PermissionDenied
                || !stale.message().contains("older than the framework's current connection")
            {
                bail!("unexpected refusal: {stale:?}");
            }
            let current = raw
                .call(pb::Call {
                    framework_id: Some(pb::FrameworkId { value: id }),
                    epoch: 9,
                    call: Some(pb::call::Call::Revive(pb::call::Revive { roles: vec![] })),
                })
                .await;
            if let Err(e) = current {
                bail!("the current connection's call was refused: {e}");
            }
            Ok(())
        })
    })
}

fn operator(master: &Api, call: Value) -> Result<()> {
    let reply = master.post_json("/api/v1", &call)?;
    if !reply.is_success() {
        bail!("{call}: {reply}");
    }
    Ok(())
}

fn agent_in_state(master: &Api, agent_id: &str) -> Result<Value> {
    let state = master.get_json("/master/state")?;
    state["slaves"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["id"] == json!(agent_id))
        .cloned()
        .ok_or_else(|| anyhow!("agent {agent_id} not in /master/state"))
}

#[test]
fn a_drained_agent_gets_no_offers_its_tasks_move_and_it_can_be_reactivated() -> Result<()> {
    let mut m = Masters::start(1)?;
    m.run(|m| {
        let first = m.start_agent("cpus:2;mem:1024;disk:100;ports:[31000-31010]")?;
        let scheduler = m.start_scheduler()?;
        m.wait_scheduler_elected(&scheduler, ELECTION_DEADLINE)?;
        let marathon = Api::new(&scheduler);
        let master = Api::new(&m.addrs[0]);
        let app = json!({"id": "/drained", "cmd": "sleep 100000", "instances": 2,
            "cpus": 0.1, "mem": 16, "portDefinitions": [], "backoffSeconds": 1});
        let reply = marathon.post_json("/v2/apps", &app)?;
        if reply.status != 201 {
            bail!("creating the app: {reply}");
        }
        let running_on = |marathon: &Api| -> Result<Vec<(String, String)>> {
            let v = marathon.get_json("/v2/apps/drained/tasks")?;
            Ok(v["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["state"] == json!("TASK_RUNNING"))
                .map(|t| {
                    (
                        t["id"].as_str().unwrap_or_default().to_string(),
                        t["slaveId"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect())
        };
        let before = wait_until("two tasks running", ELECTION_DEADLINE, POLL, || {
            let r = running_on(&marathon)?;
            if r.len() == 2 {
                Ok(r)
            } else {
                Err(anyhow!("{} running", r.len()))
            }
        })?;
        let drained = before[0].1.clone();
        let _ = first;
        m.start_agent("cpus:2;mem:1024;disk:100;ports:[31011-31020]")?;
        operator(
            &master,
            json!({"type": "DRAIN_AGENT", "drain_agent": {
                "agent_id": {"value": drained},
                "max_grace_period": {"seconds": 1}}}),
        )?;
        // The tasks are killed and replaced on the other agent; the drained
        // one reports DRAINED once nothing runs on it.
        wait_until("the tasks to move off the drained agent", Duration::from_secs(90), POLL, || {
            let r = running_on(&marathon)?;
            if r.len() == 2 && r.iter().all(|(_, a)| *a != drained) {
                Ok(())
            } else {
                Err(anyhow!("running: {r:?}"))
            }
        })?;
        let a = wait_until("DRAINED in /master/state", Duration::from_secs(60), POLL, || {
            let a = agent_in_state(&master, &drained)?;
            if a["drain_info"]["state"] == json!("DRAINED") {
                Ok(a)
            } else {
                Err(anyhow!("{a}"))
            }
        })?;
        if a["deactivated"] != json!(true)
            || a["drain_info"]["config"]["max_grace_period"]["nanoseconds"] != json!(1_000_000_000)
        {
            bail!("drain not shown as Mesos does: {a}");
        }
        // Drained: no offer made from it.
        let offered = a["offered_resources"]["cpus"].as_f64().unwrap_or(0.0);
        if offered > 0.0 {
            bail!("a drained agent is offered: {a}");
        }
        // Reactivated: offered again, shown so.
        operator(
            &master,
            json!({"type": "REACTIVATE_AGENT", "reactivate_agent": {"agent_id": {"value": drained}}}),
        )?;
        let a = agent_in_state(&master, &drained)?;
        if a["deactivated"] != json!(false) || !a["drain_info"].is_null() {
            bail!("still drained after REACTIVATE_AGENT: {a}");
        }
        // Unknown agents are refused with the reason.
        let reply = master.post_json(
            "/api/v1",
            &json!({"type": "DRAIN_AGENT", "drain_agent": {"agent_id": {"value": "agent-nope"}}}),
        )?;
        if reply.status != 404 || !reply.body.contains("agent-nope") {
            bail!("draining an unknown agent: {reply}");
        }
        // DEACTIVATE_AGENT keeps tasks but offers nothing.
        operator(
            &master,
            json!({"type": "DEACTIVATE_AGENT", "deactivate_agent": {"agent_id": {"value": drained}}}),
        )?;
        let a = agent_in_state(&master, &drained)?;
        if a["deactivated"] != json!(true) || !a["drain_info"].is_null() {
            bail!("DEACTIVATE_AGENT not shown: {a}");
        }
        Ok(())
    })
}
