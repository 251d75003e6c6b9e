//! Artifact staging (Marathon's `uris` / `fetch`), end to end: apps whose
//! code comes from a local HTTP server of the test's own, which counts the
//! downloads (issue 11).
//!
//! - a tar.gz holding `run.sh` is extracted and `sh run.sh` runs;
//! - a zip is extracted; `executable` makes a plain file runnable;
//! - two tasks of a `cache: true` app cause one download;
//! - a malicious archive is refused: TASK_FAILED naming the URI, nothing
//!   outside the sandbox;
//! - a Docker task gets its artifacts too.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, ensure, Context, Result};
use meseta_tests::{wait_for, with_cluster, Cluster, ClusterOptions};
use serde_json::{json, Value};

/// A minimal HTTP/1.0 file server over `dir` that counts GETs per path.
struct Server {
    addr: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Server {
    fn start(dir: PathBuf) -> Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counted = hits.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (dir, counted) = (dir.clone(), counted.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let n = conn.read(&mut buf).unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let path = request
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("/")
                        .trim_start_matches('/')
                        .to_string();
                    *counted
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(path.clone())
                        .or_default() += 1;
                    let reply = match std::fs::read(dir.join(&path)) {
                        Ok(body) => {
                            let mut r = format!(
                                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                                body.len()
                            )
                            .into_bytes();
                            r.extend(body);
                            r
                        }
                        Err(_) => b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
                    };
                    let _ = conn.write_all(&reply);
                });
            }
        });
        Ok(Server { addr, hits })
    }

    fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    fn hits(&self, name: &str) -> usize {
        self.hits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().context("running a packer")?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The artifacts: `pkg.tgz` (run.sh), `pkg.zip` (hello.txt), `tool`
/// (a script), and `evil.tgz` (a member that climbs out).
fn artifacts() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let src = d.join("src");
    std::fs::create_dir_all(&src)?;
    std::fs::write(
        src.join("run.sh"),
        "echo \"run.sh ran in $(pwd)\"\nsleep 1000\n",
    )?;
    run(Command::new("tar")
        .arg("-C")
        .arg(&src)
        .args(["-czf"])
        .arg(d.join("pkg.tgz"))
        .arg("run.sh"))?;
    std::fs::write(src.join("hello.txt"), "hello from a zip\n")?;
    run(Command::new("python3")
        .args(["-m", "zipfile", "-c"])
        .arg(d.join("pkg.zip"))
        .arg(src.join("hello.txt")))?;
    std::fs::write(d.join("tool"), "#!/bin/sh\necho tool ran\n")?;
    // tar refuses to write ../ members from a directory walk; build one
    // with python's tarfile, which writes what it is told.
    run(Command::new("python3").arg("-c").arg(format!(
        "import tarfile, io\n\
         t = tarfile.open('{}', 'w:gz')\n\
         data = b'pwned'\n\
         info = tarfile.TarInfo('../../../../escaped-by-meseta-test')\n\
         info.size = len(data)\n\
         t.addfile(info, io.BytesIO(data))\n\
         t.close()\n",
        d.join("evil.tgz").display()
    )))?;
    Ok(dir)
}

fn sandbox_of(c: &Cluster, task: &Value) -> Result<PathBuf> {
    c.task_sandbox(task["id"].as_str().context("task id")?)
}

fn wait_file(path: &Path, text: &str) -> Result<String> {
    wait_for(&format!("{} to hold {text:?}", path.display()), || {
        let got = std::fs::read_to_string(path).unwrap_or_default();
        if got.contains(text) {
            Ok(got)
        } else {
            Err(anyhow!("{got:?}"))
        }
    })
}

#[test]
fn artifacts_are_staged_extracted_cached_and_confined() {
    let files = artifacts().expect("artifacts");
    let server = Server::start(files.path().to_path_buf()).expect("a file server");
    with_cluster(ClusterOptions::default(), |c| {
        c.create_app(&json!({
            "id": "/staged", "cmd": "sh run.sh", "instances": 2, "cpus": 0.1, "mem": 32,
            "fetch": [
                {"uri": server.url("pkg.tgz"), "cache": true},
                {"uri": server.url("pkg.zip")},
                {"uri": server.url("tool"), "executable": true, "extract": false}
            ]
        }))?;
        let tasks = c.wait_running("/staged", 2)?;
        for t in &tasks {
            let sandbox = sandbox_of(c, t)?;
            let out = wait_file(&sandbox.join("stdout"), "run.sh ran in")?;
            ensure!(out.contains(&sandbox.display().to_string()), "{out:?}");
            ensure!(
                std::fs::read_to_string(sandbox.join("hello.txt"))? == "hello from a zip\n",
                "the zip was not extracted"
            );
            ensure!(sandbox.join("pkg.tgz").is_file(), "the archive is kept");
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(sandbox.join("tool"))?.permissions(),
            );
            ensure!(mode & 0o111 != 0, "tool is not executable: {mode:o}");
            let ran = Command::new(sandbox.join("tool")).output()?;
            ensure!(String::from_utf8_lossy(&ran.stdout) == "tool ran\n");
        }
        ensure!(
            server.hits("pkg.tgz") == 1,
            "the cached archive was downloaded {} times",
            server.hits("pkg.tgz")
        );
        ensure!(
            server.hits("pkg.zip") == 2,
            "uncached: one download per task, saw {}",
            server.hits("pkg.zip")
        );

        // A malicious archive fails the task and writes nothing outside.
        c.create_app(&json!({
            "id": "/evil", "cmd": "sleep 1000", "instances": 1, "cpus": 0.1, "mem": 32,
            "backoffSeconds": 3600, "uris": [server.url("evil.tgz")]
        }))?;
        let failure = wait_for("the evil task to fail", || {
            let r = c
                .marathon()
                .get_json("/v2/apps/evil?embed=app.lastTaskFailure")?;
            let f = r["app"]["lastTaskFailure"].clone();
            if f.is_object() {
                Ok(f)
            } else {
                Err(anyhow!("no failure yet"))
            }
        })?;
        ensure!(failure["state"] == "TASK_FAILED", "{failure}");
        let message = failure["message"].as_str().unwrap_or_default();
        ensure!(
            message.contains(&server.url("evil.tgz")),
            "the message does not name the URI: {message}"
        );
        let task = c.agent_task(failure["taskId"].as_str().unwrap_or_default())?;
        ensure!(
            task["latest_status"]["reason"] == "REASON_CONTAINER_LAUNCH_FAILED",
            "{task}"
        );
        let mut dir = c.data_dir().to_path_buf();
        for _ in 0..6 {
            ensure!(
                !dir.join("escaped-by-meseta-test").exists(),
                "the archive wrote into {}",
                dir.display()
            );
            dir = dir.parent().map(Path::to_path_buf).unwrap_or(dir);
        }
        ensure!(!Path::new("/escaped-by-meseta-test").exists());
        Ok(())
    });
}

#[test]
fn a_docker_task_gets_its_artifacts_in_its_sandbox() {
    if !meseta_tests::docker::require_docker("Docker tasks with artifacts") {
        return;
    }
    meseta_tests::docker::ensure_test_image().expect("the test image");
    let files = artifacts().expect("artifacts");
    let server = Server::start(files.path().to_path_buf()).expect("a file server");
    with_cluster(ClusterOptions::default(), |c| {
        c.create_app(&json!({
            "id": "/dstaged", "cmd": "cat $MESOS_SANDBOX/hello.txt; sleep 1000",
            "instances": 1, "cpus": 0.1, "mem": 32,
            "uris": [server.url("pkg.zip")],
            "container": {"type": "DOCKER", "docker": {"image": "busybox"}}
        }))?;
        let tasks = c.wait_running("/dstaged", 1)?;
        let sandbox = sandbox_of(c, &tasks[0])?;
        wait_file(&sandbox.join("stdout"), "hello from a zip")?;
        Ok(())
    });
}
