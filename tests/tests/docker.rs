//! Docker tasks and images, end to end with the real binary and this
//! machine's Docker daemon (issue 11). The daemon has no registry: the test
//! image is built locally ([`meseta_tests::docker::ensure_test_image`]).
//!
//! - `simple-docker.json` verbatim runs in the daemon and `meseta task log`
//!   shows its output;
//! - a BRIDGE app with `hostPort: 0` answers on the host port `/v2` reports,
//!   and DELETE leaves no container;
//! - RW volumes are visible on the host, RO ones are read-only;
//! - a memory hog fails with the memory reason;
//! - `kill -9` of the agent and a restart keep the same containers and ids;
//! - a missing image with `forcePullImage` fails the task naming the image;
//! - a MESOS container with an image sees the image's root filesystem.
//!
//! In CI they run for real; elsewhere they skip with a reason when Docker
//! or root is missing.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use meseta_tests::docker::{containers_named, ensure_test_image, require_docker, TEST_IMAGE_OS};
use meseta_tests::http::Api;
use meseta_tests::masters::{AgentOptions, Masters};
use meseta_tests::{wait_for, with_cluster, Cluster, ClusterOptions};
use serde_json::{json, Value};

fn seed_app(name: &str) -> Result<Value> {
    let path = meseta_tests::workspace_root()
        .join("../shared/fixtures/seed-apps")
        .join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn docker_ready(what: &str) -> Result<bool> {
    if !require_docker(what) {
        return Ok(false);
    }
    ensure_test_image()?;
    Ok(true)
}

/// The agent's container id of a task.
fn container_of(c: &Cluster, task_id: &str) -> Result<String> {
    c.agent_task(task_id)?["container_id"]
        .as_str()
        .map(String::from)
        .context("no container id")
}

/// Waits until the app's last task failure is set; returns it.
fn last_failure(c: &Cluster, app: &str) -> Result<Value> {
    wait_for(&format!("a task failure of {app}"), || {
        let r = c
            .marathon()
            .get_json(&format!("/v2/apps{app}?embed=app.lastTaskFailure"))?;
        let f = r["app"]["lastTaskFailure"].clone();
        if f.is_object() {
            Ok(f)
        } else {
            Err(anyhow!("no failure yet: {}", r["app"]["tasksRunning"]))
        }
    })
}

#[test]
fn the_simple_docker_seed_app_runs_in_the_daemon_and_logs() {
    if !docker_ready("Docker tasks").expect("the test image") {
        return;
    }
    with_cluster(ClusterOptions::default(), |c| {
        let state = c.agent().get_json("/state")?;
        ensure!(
            state["containerizers"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "docker")),
            "the agent runs no docker containerizer: {}",
            state["containerizers"]
        );
        let app = seed_app("simple-docker.json")?;
        c.create_app(&app)?;
        let id = app["id"]
            .as_str()
            .map(|s| format!("/{}", s.trim_start_matches('/')))
            .unwrap_or_default();
        // `echo` ends at once and Marathon restarts it: any task will do.
        let (task, log) = wait_for("a task of the app to have printed", || {
            let state = c.agent().get_json("/state")?;
            let task = state["completed_tasks"]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|t| {
                            t["id"]
                                .as_str()
                                .is_some_and(|i| i.starts_with("simple-docker."))
                        })
                        .cloned()
                })
                .ok_or_else(|| anyhow!("no finished task yet"))?;
            let id = task["id"].as_str().unwrap_or_default().to_string();
            let out = c.cli(&["task", "log", &id, "--master", c.master_address()])?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.contains("hello from docker") {
                Ok((task, text))
            } else {
                Err(anyhow!(
                    "log so far: {text:?} {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        })?;
        ensure!(
            task["latest_status"]["message"] == "Container exited with status 0",
            "{task}"
        );
        ensure!(log.trim() == "hello from docker", "{log:?}");
        let r = c.delete_app(&id, true)?;
        ensure!(r.is_success(), "{r}");
        Ok(())
    });
}

#[test]
fn a_bridged_app_answers_on_its_host_port_and_delete_leaves_no_container() {
    if !docker_ready("Docker tasks").expect("the test image") {
        return;
    }
    with_cluster(ClusterOptions::default(), |c| {
        c.create_app(&json!({
            "id": "/bridged",
            "cmd": "mkdir -p /tmp/www && echo \"bridge $PORT0 $PORT_8080\" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
            "cpus": 0.1, "mem": 32, "instances": 1,
            "container": {"type": "DOCKER", "docker": {"image": "busybox", "network": "BRIDGE",
                "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}]}}
        }))?;
        let tasks = c.wait_running("/bridged", 1)?;
        let port = tasks[0]["ports"][0].as_u64().context("a host port")?;
        let (low, high) = c.task_ports();
        ensure!(
            (low as u64..=high as u64).contains(&port),
            "port {port} is not from the offer"
        );
        let api = Api::new(&format!("127.0.0.1:{port}"));
        let body = wait_for("the container to answer on the host port", || {
            let r = api.get("/")?;
            if r.status == 200 {
                Ok(r.body)
            } else {
                Err(anyhow!("{r}"))
            }
        })?;
        ensure!(
            body.trim() == format!("bridge {port} {port}"),
            "PORT0 / PORT_8080: {body:?}"
        );
        let task_id = tasks[0]["id"].as_str().context("task id")?.to_string();
        let container = container_of(c, &task_id)?;
        let listed = containers_named(&format!("mesos-{container}"))?;
        ensure!(
            listed.len() == 1 && listed[0].state == "running",
            "{listed:?}"
        );

        let r = c.delete_app("/bridged", false)?;
        ensure!(r.is_success(), "{r}");
        wait_for("the container to be gone", || {
            let left = containers_named(&format!("mesos-{container}"))?;
            if left.is_empty() {
                Ok(())
            } else {
                Err(anyhow!("{left:?}"))
            }
        })?;
        Ok(())
    });
}

#[test]
fn volumes_are_shared_with_the_host() {
    if !docker_ready("Docker volumes").expect("the test image") {
        return;
    }
    let host_dir = tempfile::tempdir().expect("a host dir");
    std::fs::write(host_dir.path().join("given"), "from the host\n").expect("write");
    let host = host_dir.path().display().to_string();
    with_cluster(ClusterOptions::default(), move |c| {
        c.create_app(&json!({
            "id": "/volumes",
            "cmd": "echo written > /data/out; cat /ro/given > /data/read; (echo x > /ro/nope) 2>/data/ro-error; ls $MESOS_SANDBOX > /data/sandbox; sleep 1000",
            "cpus": 0.1, "mem": 32, "instances": 1,
            "container": {"type": "DOCKER",
                "docker": {"image": "busybox"},
                "volumes": [
                    {"containerPath": "/data", "hostPath": "data", "mode": "RW"},
                    {"containerPath": "/ro", "hostPath": host, "mode": "RO"}
                ]}
        }))?;
        let tasks = c.wait_running("/volumes", 1)?;
        let task_id = tasks[0]["id"].as_str().context("task id")?.to_string();
        let sandbox = c.task_sandbox(&task_id)?;
        let data = sandbox.join("data");
        let read = |f: &str| std::fs::read_to_string(data.join(f)).unwrap_or_default();
        wait_for("the container to write into its volume", || {
            if read("sandbox").contains("stdout") {
                Ok(())
            } else {
                Err(anyhow!("{:?}", std::fs::read_dir(&data).map(|d| d.count())))
            }
        })?;
        ensure!(read("out") == "written\n", "RW volume: {:?}", read("out"));
        ensure!(
            read("read") == "from the host\n",
            "RO volume content: {:?}",
            read("read")
        );
        ensure!(
            read("ro-error").contains("Read-only"),
            "RO volume was writable: {:?}",
            read("ro-error")
        );
        ensure!(
            !Path::new(&host).join("nope").exists(),
            "wrote through a RO volume"
        );
        Ok(())
    });
}

#[test]
fn a_memory_hog_in_a_container_fails_with_the_memory_reason() {
    if !docker_ready("Docker memory limits").expect("the test image") {
        return;
    }
    with_cluster(ClusterOptions::default(), |c| {
        c.create_app(&json!({
            "id": "/hog",
            "cmd": "head -c 300m /dev/zero | tail; sleep 1000",
            "cpus": 0.1, "mem": 32, "instances": 1, "backoffSeconds": 3600,
            "container": {"type": "DOCKER", "docker": {"image": "busybox"}}
        }))?;
        let failure = last_failure(c, "/hog")?;
        ensure!(failure["state"] == "TASK_FAILED", "{failure}");
        ensure!(
            failure["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Memory limit exceeded"),
            "{failure}"
        );
        let task_id = failure["taskId"].as_str().context("task id")?;
        let task = c.agent_task(task_id)?;
        ensure!(
            task["latest_status"]["reason"] == "REASON_CONTAINER_LIMITATION_MEMORY",
            "{task}"
        );
        Ok(())
    });
}

#[test]
fn a_missing_image_fails_the_task_naming_the_image() {
    if !docker_ready("Docker images").expect("the test image") {
        return;
    }
    with_cluster(ClusterOptions::default(), |c| {
        let started = Instant::now();
        c.create_app(&json!({
            "id": "/absent",
            "cmd": "true",
            "cpus": 0.1, "mem": 32, "instances": 1, "backoffSeconds": 3600,
            "container": {"type": "DOCKER", "docker": {"image": "meseta-test/no-such-image:1", "forcePullImage": true}}
        }))?;
        let failure = last_failure(c, "/absent")?;
        ensure!(failure["state"] == "TASK_FAILED", "{failure}");
        ensure!(
            failure["message"]
                .as_str()
                .unwrap_or_default()
                .contains("meseta-test/no-such-image:1"),
            "the message does not name the image: {failure}"
        );
        // Informational: a failed pull must not hang the launch.
        println!("the failed pull was reported after {:?}", started.elapsed());
        Ok(())
    });
}

#[test]
fn a_mesos_container_runs_in_its_images_root_filesystem() {
    if !docker_ready("images for the native containerizer").expect("the test image") {
        return;
    }
    with_cluster(ClusterOptions::default(), |c| {
        let isolation = c.isolation()?;
        ensure!(
            isolation == "linux",
            "images need linux isolation, the agent runs {isolation}"
        );
        c.create_app(&json!({
            "id": "/imaged",
            "cmd": "cat /etc/os-release; echo sandbox=$MESOS_SANDBOX; pwd; ls /bin/busybox; sleep 1000",
            "cpus": 0.1, "mem": 32, "instances": 2,
            "container": {"type": "MESOS", "docker": {"image": "busybox"}}
        }))?;
        let tasks = c.wait_running("/imaged", 2)?;
        for t in &tasks {
            let id = t["id"].as_str().context("task id")?.to_string();
            let sandbox = c.task_sandbox(&id)?;
            let out = wait_for("the task's output", || {
                let out = std::fs::read_to_string(sandbox.join("stdout")).unwrap_or_default();
                if out.contains("/bin/busybox") {
                    Ok(out)
                } else {
                    Err(anyhow!(
                        "{out:?}; stderr {:?}",
                        std::fs::read_to_string(sandbox.join("stderr"))
                    ))
                }
            })?;
            ensure!(
                out.contains(TEST_IMAGE_OS),
                "the task sees another os-release: {out:?}"
            );
            ensure!(
                out.contains("sandbox=/mnt/mesos/sandbox\n/mnt/mesos/sandbox\n"),
                "{out:?}"
            );
            let host_os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
            ensure!(!host_os.contains(TEST_IMAGE_OS), "the host itself changed");
        }
        // One extraction serves both tasks.
        let images = c.data_dir().join("data/agent/images");
        let extracted: Vec<_> = std::fs::read_dir(&images)?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(".complete").exists())
            .collect();
        ensure!(extracted.len() == 1, "{} extractions", extracted.len());
        Ok(())
    });
}

#[test]
fn a_restarted_agent_keeps_its_docker_containers() -> anyhow::Result<()> {
    if !docker_ready("Docker recovery")? {
        return Ok(());
    }
    let mut m = Masters::start(1)?;
    m.start_agent_with(AgentOptions {
        isolation: "linux".into(),
        args: vec!["--containerizers".into(), "mesos,docker".into()],
        ..AgentOptions::new("cpus:4;mem:2048;disk:2000;ports:[23200-23299]")
    })?;
    let scheduler = Api::new(&m.start_scheduler()?);
    m.run(|m| {
        let r = scheduler.post_json(
            "/v2/apps",
            &json!({
                "id": "/dsleep", "cmd": "echo started; sleep 1000",
                "cpus": 0.1, "mem": 32, "instances": 2,
                "container": {"type": "DOCKER", "docker": {"image": "busybox"}}
            }),
        )?;
        ensure!(r.status == 201, "{r}");
        fn running(m: &Masters) -> Result<Vec<(String, String)>> {
            let state = m.agent_state(0)?;
            let mut out: Vec<(String, String)> = state["tasks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .map(|t| {
                    (
                        t["id"].as_str().unwrap_or_default().to_string(),
                        t["container_id"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            out.sort();
            Ok(out)
        }
        let before = wait_for("two docker tasks running", || {
            let r = running(m)?;
            if r.len() == 2 {
                Ok(r)
            } else {
                Err(anyhow!("{r:?}"))
            }
        })?;
        let docker_ids = |tasks: &[(String, String)]| -> Result<Vec<String>> {
            let mut ids = Vec::new();
            for (_, container) in tasks {
                let listed = containers_named(&format!("mesos-{container}"))?;
                ensure!(
                    listed.len() == 1 && listed[0].state == "running",
                    "{listed:?}"
                );
                ids.push(listed[0].id.clone());
            }
            Ok(ids)
        };
        let ids_before = docker_ids(&before)?;

        m.kill_agent(0);
        std::thread::sleep(Duration::from_millis(500));
        ensure!(
            docker_ids(&before)? == ids_before,
            "containers died with the agent"
        );
        m.restart_agent(0)?;
        let after = wait_for("the agent to re-attach both containers", || {
            let state = m.agent_state(0)?;
            let r = running(m)?;
            if state["connected"] == Value::Bool(true) && r.len() == 2 {
                Ok(r)
            } else {
                Err(anyhow!("{r:?}"))
            }
        })?;
        ensure!(after == before, "tasks changed: {before:?} → {after:?}");
        ensure!(
            docker_ids(&after)? == ids_before,
            "the containers were replaced"
        );
        // The output copied before the restart is not copied again.
        let state = m.agent_state(0)?;
        for t in state["tasks"].as_array().cloned().unwrap_or_default() {
            let dir = t["directory"].as_str().unwrap_or_default().to_string();
            let out = std::fs::read_to_string(Path::new(&dir).join("stdout")).unwrap_or_default();
            ensure!(out == "started\n", "stdout after the restart: {out:?}");
        }
        let r = scheduler.delete("/v2/apps/dsleep")?;
        ensure!(r.is_success(), "{r}");
        wait_for("every container of the app to be removed", || {
            let left: Vec<String> = before
                .iter()
                .filter(|(_, c)| {
                    !containers_named(&format!("mesos-{c}"))
                        .unwrap_or_default()
                        .is_empty()
                })
                .map(|(_, c)| c.clone())
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(anyhow!("left: {left:?}"))
            }
        })?;
        Ok(())
    })
}
