//! Hollow agents (`meseta-bench hollow`'s building block): real agents over
//! the fake containerizer, in this test process, against a real `meseta
//! master` and `meseta scheduler`. They register with their own hostnames
//! and attributes, run a Marathon app to RUNNING through the real status
//! update path, and a task the fake host fails is replaced.

use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use meseta_agent::containerizer::{FakeContainerizer, Termination};
use meseta_agent::{AgentConfig, BoundAgent};
use meseta_tests::http::Api;
use meseta_tests::masters::Masters;
use meseta_tests::wait::wait_until;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);

fn launched(fakes: &[FakeContainerizer]) -> usize {
    fakes.iter().map(FakeContainerizer::launch_count).sum()
}

fn running(marathon: &Api) -> Result<u64> {
    let app = marathon.get_json("/v2/apps/hollow/app")?;
    app["app"]["tasksRunning"]
        .as_u64()
        .ok_or_else(|| anyhow!("no tasksRunning in {app}"))
}

#[test]
fn hollow_agents_run_an_app_and_a_failed_task_is_replaced() -> Result<()> {
    let mut m = Masters::start(1)?;
    let scheduler = m.start_scheduler()?;
    let marathon = Api::new(&scheduler);
    let master = Api::new(&m.addrs[m.leader()?]);
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut fakes = Vec::new();
    let mut stops = Vec::new();
    for i in 0..3 {
        let mut config = AgentConfig::new(
            format!("127.1.0.{}:5051", i + 1).parse()?,
            m.addrs.clone(),
            dir.path().join(format!("agent-{i}")),
        );
        config.resources = Some("cpus:1;mem:1024;disk:1000".into());
        config.attributes = Some(format!("rack:r{i}"));
        config.hostname = Some(format!("hollow-{i}"));
        config.switch_user = false;
        let fake = FakeContainerizer::new();
        let bound = runtime
            .block_on(BoundAgent::bind_hollow(config, fake.clone()))
            .with_context(|| format!("hollow agent {i}"))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(bound.serve(async move {
            let _ = rx.await;
        }));
        fakes.push(fake);
        stops.push(tx);
    }
    m.run(|m| {
        let state = wait_until("three hollow agents registered", DEADLINE, POLL, || {
            let state = m.state(m.leader()?)?;
            let n = state["slaves"].as_array().map_or(0, Vec::len);
            ensure!(n == 3, "{n} agents registered");
            Ok(state)
        })?;
        let mut hosts: Vec<String> = state["slaves"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["hostname"].as_str().map(String::from))
            .collect();
        hosts.sort();
        assert_eq!(hosts, ["hollow-0", "hollow-1", "hollow-2"]);
        let racks: Vec<&Value> = state["slaves"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| &a["attributes"]["rack"])
            .collect();
        assert!(racks.iter().all(|r| r.is_string()), "{racks:?}");

        // One instance per rack: the attributes reach the scheduler's
        // constraints.
        let r = marathon.post_json(
            "/v2/apps",
            &json!({"id": "/hollow/app", "cmd": "sleep 1000", "instances": 3,
                    "cpus": 0.1, "mem": 32, "portDefinitions": [],
                    "constraints": [["rack", "UNIQUE"]]}),
        )?;
        ensure!(r.status == 201, "POST /v2/apps: {r}");
        wait_until("3 instances running", DEADLINE, POLL, || {
            let n = running(&marathon)?;
            ensure!(n == 3, "{n} running");
            Ok(())
        })?;
        assert_eq!(launched(&fakes), 3);
        for fake in &fakes {
            assert_eq!(fake.running().len(), 1, "one task per hollow agent");
        }
        let running_at_master =
            master.get_json("/metrics/snapshot")?["master/tasks_running"].clone();
        assert_eq!(running_at_master, json!(3));

        // The fake host fails one task: the scheduler replaces it.
        let victim = fakes[0].running().into_iter().next().context("a task")?;
        assert!(fakes[0].exit(
            &victim,
            Termination {
                exit_code: Some(1),
                signal: None,
                oom_killed: false,
                message: "failed by the test".into(),
            },
        ));
        wait_until("the failed task replaced", DEADLINE, POLL, || {
            let n = running(&marathon)?;
            let l = launched(&fakes);
            ensure!(l == 4 && n == 3, "{l} launched, {n} running");
            Ok(())
        })?;
        let failed = master.get_json("/metrics/snapshot")?["master/tasks_failed"].clone();
        assert_eq!(failed, json!(1));
        Ok(())
    })?;
    for stop in stops {
        let _ = stop.send(());
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}
