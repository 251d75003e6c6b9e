//! Service discovery DNS end to end, queried with `dig` (Debian's
//! bind9-dnsutils): the seed demo's shape (a key-value server named
//! `redis`, a `frontend` that finds it as `redis.marathon.mesos` through
//! meseta's DNS), records that follow a task move, NXDOMAIN, forwarding
//! and a quick SERVFAIL, and mesos-dns' HTTP API.
//!
//! Native tasks use the host's resolv.conf, which does not point at the
//! cluster's DNS here, so the frontend resolves through it explicitly: it
//! runs `dig @<meseta's DNS>` for `REDIS_HOST` (A) and `REDIS_SERVICE`
//! (SRV, the host port) on every request, so it also follows a move.

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use meseta_tests::marathon::{post_app, wait_running};
use meseta_tests::masters::Masters;
use meseta_tests::{in_ci, wait_for, wait_until, with_cluster, Api, Cluster, ClusterOptions};
use serde_json::{json, Value};

/// A line protocol key-value server: `SET k v`, `GET k`, `PING`.
const KV_SERVER: &str = r#"
import os, socketserver
data = {}
class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            parts = line.decode().strip().split(' ', 2)
            if parts[0] == 'SET' and len(parts) == 3:
                data[parts[1]] = parts[2]
                self.wfile.write(b'+OK\n')
            elif parts[0] == 'GET' and len(parts) == 2:
                self.wfile.write(('$' + data.get(parts[1], '') + '\n').encode())
            elif parts[0] == 'PING':
                self.wfile.write(b'+PONG\n')
            else:
                self.wfile.write(b'-ERR\n')
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(('0.0.0.0', int(os.environ['PORT0'])), Handler).serve_forever()
"#;

/// An HTTP frontend over the key-value server: `/set?key=k&value=v`,
/// `/get?key=k`, `/health` (PING). It finds the server through meseta's
/// DNS on every request.
const FRONTEND: &str = r#"
import json, os, socket, subprocess, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
dns_ip, dns_port = os.environ['MESETA_DNS'].rsplit(':', 1)
def dig(name, qtype):
    out = subprocess.run(['dig', '+short', '+time=2', '+tries=1', '@' + dns_ip, '-p', dns_port, name, qtype],
                         capture_output=True, text=True, timeout=10).stdout
    return [l for l in out.splitlines() if l and not l.startswith(';')]
def redis(command):
    host = dig(os.environ['REDIS_HOST'], 'A')[0]
    port = int(dig(os.environ['REDIS_SERVICE'], 'SRV')[0].split()[2])
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall((command + '\n').encode())
        return host + ':' + str(port), s.makefile().readline().strip()
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        try:
            if url.path == '/set':
                where, reply = redis('SET %s %s' % (q['key'], q['value']))
            elif url.path == '/get':
                where, reply = redis('GET %s' % q['key'])
            elif url.path == '/health':
                where, reply = redis('PING')
            else:
                self.send_error(404)
                return
            body, code = json.dumps({'redis': where, 'reply': reply}).encode(), 200
        except Exception as e:
            body, code = json.dumps({'error': repr(e)}).encode(), 503
        self.send_response(code)
        self.send_header('content-type', 'application/json')
        self.send_header('content-length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
ThreadingHTTPServer(('0.0.0.0', int(os.environ['PORT0'])), Handler).serve_forever()
"#;

/// Whether dig is here: with `CI=true` it must be (.ci/run installs it);
/// elsewhere the test is skipped with a printed reason.
fn require_dig(what: &str) -> bool {
    let found = Command::new("dig")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        return true;
    }
    if in_ci() {
        panic!("{what} needs dig (bind9-dnsutils) in CI");
    }
    println!("skipping {what}: dig is not installed (apt-get install bind9-dnsutils)");
    false
}

/// One dig answer: the response code and the answer section.
#[derive(Debug)]
struct Dig {
    status: String,
    /// `(type, data)` of each answer record.
    answers: Vec<(String, String)>,
}

impl Dig {
    fn data(&self, rtype: &str) -> Vec<String> {
        self.answers
            .iter()
            .filter(|(t, _)| t == rtype)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// SRV answers as (port, target).
    fn srv(&self) -> Vec<(u16, String)> {
        self.data("SRV")
            .iter()
            .filter_map(|d| {
                let f: Vec<&str> = d.split_whitespace().collect();
                Some((f.get(2)?.parse().ok()?, f.get(3)?.to_string()))
            })
            .collect()
    }
}

/// `dig @server name type` with a bounded wait (`+time=5 +tries=1`).
fn dig(server: &str, name: &str, rtype: &str) -> Result<Dig> {
    let (ip, port) = server
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("{server}: not ip:port"))?;
    let out = Command::new("dig")
        .args([
            &format!("@{ip}"),
            "-p",
            port,
            "+time=5",
            "+tries=1",
            "+noall",
            "+comments",
            "+answer",
            name,
            rtype,
        ])
        .output()
        .context("running dig")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .and_then(|s| s.split(',').next())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("dig {name} {rtype} @{server} got no answer: {text}"))?;
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // name ttl class type data…
            (f.len() >= 5).then(|| (f[3].to_string(), f[4..].join(" ")))
        })
        .collect();
    Ok(Dig { status, answers })
}

/// The IP the master knows agent `agent_id` by (its pid's host).
fn agent_ip(c: &Cluster, agent_id: &str) -> Result<String> {
    let state = c.master_state()?;
    let agent = state["slaves"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == agent_id))
        .ok_or_else(|| anyhow!("agent {agent_id} is not in /master/state"))?;
    let pid = agent["pid"].as_str().unwrap_or_default();
    let host = pid
        .rsplit_once('@')
        .and_then(|(_, a)| a.rsplit_once(':'))
        .map(|(h, _)| h.to_string())
        .ok_or_else(|| anyhow!("agent pid {pid:?} has no host"))?;
    Ok(host)
}

fn redis_app() -> Value {
    json!({
        "id": "/redis", "instances": 1, "cpus": 0.1, "mem": 64,
        "cmd": "exec python3 -c \"$KV_SERVER\"",
        "env": {"KV_SERVER": KV_SERVER},
        "portDefinitions": [{"port": 0, "name": "redis"}],
        "healthChecks": [{"protocol": "TCP", "portIndex": 0, "gracePeriodSeconds": 30,
                          "intervalSeconds": 1, "timeoutSeconds": 2, "maxConsecutiveFailures": 3}],
    })
}

fn frontend_app(dns: &str) -> Value {
    json!({
        "id": "/frontend", "instances": 1, "cpus": 0.1, "mem": 64,
        "cmd": "exec python3 -c \"$FRONTEND\"",
        "env": {
            "FRONTEND": FRONTEND,
            "REDIS_HOST": "redis.marathon.mesos",
            "REDIS_SERVICE": "_redis._tcp.marathon.mesos",
            "MESETA_DNS": dns,
        },
        "portDefinitions": [{"port": 0, "name": "http"}],
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0,
                          "gracePeriodSeconds": 30, "intervalSeconds": 1, "timeoutSeconds": 5,
                          "maxConsecutiveFailures": 3}],
    })
}

/// Waits until app `id` has `n` running tasks, all healthy; returns them.
fn wait_healthy(c: &Cluster, id: &str, n: usize) -> Result<Vec<Value>> {
    wait_until(
        &format!("{n} healthy tasks of {id}"),
        Duration::from_secs(90),
        Duration::from_millis(200),
        || {
            let tasks = c.app_tasks(id).map_err(|e| format!("{e:#}"))?;
            let healthy = tasks
                .iter()
                .filter(|t| {
                    t["state"] == "TASK_RUNNING"
                        && t["healthCheckResults"]
                            .as_array()
                            .is_some_and(|r| !r.is_empty() && r.iter().all(|h| h["alive"] == true))
                })
                .count();
            if tasks.len() == n && healthy == n {
                Ok(tasks)
            } else {
                Err(format!("{} tasks, {healthy} healthy", tasks.len()))
            }
        },
    )
}

fn task_port(task: &Value) -> Result<u16> {
    task["ports"][0]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| anyhow!("task has no port: {task}"))
}

/// GET on a frontend task, answering the frontend's JSON.
fn frontend_get(task: &Value, path: &str) -> Result<Value> {
    let api = Api::new(&format!("127.0.0.1:{}", task_port(task)?));
    let reply = api.get(path)?;
    ensure!(reply.status == 200, "frontend {path}: {reply}");
    Ok(reply.json())
}

#[test]
fn the_seed_demo_finds_redis_by_name_scales_and_follows_a_move() {
    if !require_dig("the DNS seed demo") {
        return;
    }
    with_cluster(ClusterOptions::default(), |c| {
        let dns = c.dns_address().to_string();
        c.create_app(&redis_app())?;
        let redis = wait_healthy(c, "/redis", 1)?;
        let (redis_port, redis_agent) = (
            task_port(&redis[0])?,
            redis[0]["slaveId"].as_str().unwrap_or_default().to_string(),
        );
        let host = agent_ip(c, &redis_agent)?;

        // A: the host of the running task; SRV: its host port, at a target
        // that resolves to the same host.
        let a = wait_for("redis.marathon.mesos to resolve", || {
            let d = dig(&dns, "redis.marathon.mesos", "A").map_err(|e| format!("{e:#}"))?;
            if d.data("A").is_empty() {
                Err(format!("{d:?}"))
            } else {
                Ok(d)
            }
        })?;
        ensure!(a.status == "NOERROR", "{a:?}");
        ensure!(
            a.data("A") == vec![host.clone()],
            "A {:?}, host {host}",
            a.data("A")
        );
        let srv = dig(&dns, "_redis._tcp.marathon.mesos", "SRV")?;
        let targets = srv.srv();
        ensure!(targets.len() == 1, "SRV {srv:?}");
        ensure!(
            targets[0].0 == redis_port,
            "SRV port {:?}, task port {redis_port}",
            targets[0]
        );
        let target = targets[0].1.clone();
        ensure!(
            target.starts_with("redis-") && target.ends_with(".marathon.slave.mesos."),
            "SRV target {target}"
        );
        let target_a = dig(&dns, &target, "A")?;
        ensure!(
            target_a.data("A") == vec![host.clone()],
            "{target}: {target_a:?}"
        );

        // The frontend reaches redis through the DNS, stores and reads.
        c.create_app(&frontend_app(&dns))?;
        let fronts = wait_healthy(c, "/frontend", 1)?;
        let set = frontend_get(&fronts[0], "/set?key=greeting&value=hello")?;
        ensure!(set["reply"] == "+OK", "set: {set}");
        ensure!(
            set["redis"] == format!("{host}:{redis_port}"),
            "the frontend found redis at {}, it runs at {host}:{redis_port}",
            set["redis"]
        );
        let got = frontend_get(&fronts[0], "/get?key=greeting")?;
        ensure!(got["reply"] == "$hello", "get: {got}");

        // Scale the frontend to 2 (the /v2 API): both instances read it.
        let reply = c
            .marathon()
            .put_json("/v2/apps/frontend", &json!({"instances": 2}))?;
        ensure!(reply.is_success(), "scale: {reply}");
        let fronts = wait_healthy(c, "/frontend", 2)?;
        for f in &fronts {
            let got = frontend_get(f, "/get?key=greeting")?;
            ensure!(got["reply"] == "$hello", "{} get: {got}", f["id"]);
        }
        let front_a = dig(&dns, "frontend.marathon.mesos", "A")?;
        ensure!(!front_a.data("A").is_empty(), "{front_a:?}");
        ensure!(
            dig(&dns, "_frontend._tcp.marathon.mesos", "SRV")?
                .srv()
                .len()
                == 2,
            "two frontend SRV records"
        );

        // Move redis: kill its task; Marathon starts a replacement (a new
        // task id, so a new SRV target, and the port it was given).
        let events = c.events("?event_type=status_update_event")?;
        let old_id = redis[0]["id"].as_str().unwrap_or_default().to_string();
        let killed_at = Instant::now();
        let reply = c
            .marathon()
            .delete(&format!("/v2/apps/redis/tasks/{old_id}"))?;
        ensure!(reply.is_success(), "kill: {reply}");
        let (moved, seen_at) = wait_until(
            "the SRV record to follow redis' replacement",
            Duration::from_secs(60),
            Duration::from_millis(10),
            || {
                let d =
                    dig(&dns, "_redis._tcp.marathon.mesos", "SRV").map_err(|e| format!("{e:#}"))?;
                let t = d.srv();
                if t.len() == 1 && t[0].1 != target {
                    Ok((t[0].clone(), Instant::now()))
                } else {
                    Err(format!("{t:?}"))
                }
            },
        )?;
        let replacement = c.wait_running("/redis", 1)?;
        ensure!(replacement[0]["id"] != old_id.as_str(), "{replacement:?}");
        ensure!(
            moved.0 == task_port(&replacement[0])?,
            "SRV {moved:?} vs the replacement {}",
            replacement[0]
        );
        let new_id = replacement[0]["id"].as_str().unwrap_or_default();
        let running_event = events
            .drain()
            .into_iter()
            .find(|e| e.data["taskId"] == new_id && e.data["taskStatus"] == "TASK_RUNNING");
        println!(
            "dns_follow_from_kill_ms={:.1}",
            seen_at.duration_since(killed_at).as_secs_f64() * 1e3
        );
        match running_event {
            // Negative: the DNS had the replacement before Marathon's event
            // stream reported it running.
            Some(e) => println!(
                "dns_follow_after_marathon_running_event_ms={:.1}",
                if seen_at >= e.received {
                    (seen_at - e.received).as_secs_f64() * 1e3
                } else {
                    -((e.received - seen_at).as_secs_f64() * 1e3)
                }
            ),
            None => {
                println!("dns_follow_after_marathon_running_event_ms=unknown (event not seen yet)")
            }
        }

        // The frontend follows the move too (redis' data went with the old
        // task: store again through the new one).
        let fronts = wait_healthy(c, "/frontend", 2)?;
        let set = wait_for("the frontend to store through the moved redis", || {
            let v = frontend_get(&fronts[0], "/set?key=greeting&value=again")
                .map_err(|e| format!("{e:#}"))?;
            if v["reply"] == "+OK" {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        })?;
        ensure!(
            set["redis"]
                .as_str()
                .is_some_and(|r| r.ends_with(&format!(":{}", moved.0))),
            "the frontend used {} after the move to port {}",
            set["redis"],
            moved.0
        );
        let got = frontend_get(&fronts[1], "/get?key=greeting")?;
        ensure!(got["reply"] == "$again", "get after the move: {got}");
        Ok(())
    });
}

/// A `meseta dns` process, stopped on drop.
struct DnsProcess {
    child: Child,
    log: std::path::PathBuf,
}

impl DnsProcess {
    fn start(dir: &Path, name: &str, args: &[&str]) -> Result<DnsProcess> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(meseta_tests::meseta_binary())
            .arg("dns")
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting meseta dns")?;
        Ok(DnsProcess { child, log })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DnsProcess {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn names_nxdomain_forwarding_servfail_and_the_http_api() {
    if !require_dig("the DNS names test") {
        return;
    }
    with_cluster(ClusterOptions::default(), |c| {
        let dns = c.dns_address().to_string();
        c.create_app(&json!({
            "id": "/prod/web", "instances": 2, "cpus": 0.1, "mem": 32,
            "cmd": "sleep 1000", "portDefinitions": [{"port": 0}],
        }))?;
        let tasks = c.wait_running("/prod/web", 2)?;
        let host = agent_ip(c, tasks[0]["slaveId"].as_str().unwrap_or_default())?;
        let mut ports: Vec<u16> = tasks.iter().map(task_port).collect::<Result<_>>()?;
        ports.sort();

        // Nested ids are reversed with dashes.
        let srv = wait_for("both tasks of /prod/web in SRV", || {
            let d =
                dig(&dns, "_web-prod._tcp.marathon.mesos", "SRV").map_err(|e| format!("{e:#}"))?;
            let mut p: Vec<u16> = d.srv().iter().map(|s| s.0).collect();
            p.sort();
            if p == ports {
                Ok(d)
            } else {
                Err(format!("{d:?}"))
            }
        })?;
        ensure!(srv.status == "NOERROR", "{srv:?}");
        let a = dig(&dns, "web-prod.marathon.mesos", "A")?;
        ensure!(a.data("A") == vec![host.clone()], "{a:?}");
        let slave = dig(&dns, "web-prod.marathon.slave.mesos", "A")?;
        ensure!(slave.data("A") == vec![host.clone()], "{slave:?}");

        // The masters and the leader.
        let master_port = c
            .master_address()
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string();
        for name in ["leader.mesos", "master.mesos"] {
            let d = dig(&dns, name, "A")?;
            ensure!(
                d.data("A") == vec!["127.0.0.1".to_string()],
                "{name}: {d:?}"
            );
        }
        let leader_srv = dig(&dns, "_leader._tcp.mesos", "SRV")?;
        ensure!(
            leader_srv.srv().first().map(|s| s.0.to_string()) == Some(master_port.clone()),
            "{leader_srv:?}"
        );

        // The server itself (SOA/NS name it ns1.mesos).
        let ns = dig(&dns, "mesos", "NS")?;
        ensure!(ns.data("NS") == vec!["ns1.mesos.".to_string()], "{ns:?}");
        let ns1 = dig(&dns, "ns1.mesos", "A")?;
        ensure!(ns1.data("A") == vec!["127.0.0.1".to_string()], "{ns1:?}");

        // Unknown names in the domain: NXDOMAIN.
        let nx = dig(&dns, "nothing-here.marathon.mesos", "A")?;
        ensure!(nx.status == "NXDOMAIN" && nx.answers.is_empty(), "{nx:?}");
        let nx_srv = dig(&dns, "_nothing._tcp.marathon.mesos", "SRV")?;
        ensure!(nx_srv.status == "NXDOMAIN", "{nx_srv:?}");

        // mesos-dns' HTTP API.
        let http = c.dns_http();
        let version = http.get_json("/v1/version")?;
        ensure!(version["Service"] == "Mesos-DNS", "{version}");
        let config = http.get_json("/v1/config")?;
        ensure!(
            config["Domain"] == "mesos" && config["TTL"].as_u64().is_some(),
            "{config}"
        );
        let hosts = http.get_json("/v1/hosts/web-prod.marathon.mesos")?;
        ensure!(
            hosts == json!([{"host": "web-prod.marathon.mesos.", "ip": host}]),
            "{hosts}"
        );
        let services = http.get_json("/v1/services/_web-prod._tcp.marathon.mesos")?;
        let mut http_ports: Vec<String> = services
            .as_array()
            .ok_or_else(|| anyhow!("{services}"))?
            .iter()
            .map(|s| {
                ensure!(
                    s["service"] == "_web-prod._tcp.marathon.mesos" && s["ip"] == host.as_str(),
                    "{s}"
                );
                Ok(s["port"].as_str().unwrap_or_default().to_string())
            })
            .collect::<Result<_>>()?;
        http_ports.sort();
        ensure!(
            http_ports == ports.iter().map(u16::to_string).collect::<Vec<_>>(),
            "{services}"
        );
        let unknown = http.get_json("/v1/hosts/nothing.marathon.mesos")?;
        ensure!(unknown == json!([{"host": "", "ip": ""}]), "{unknown}");
        let metrics = http.get("/metrics")?;
        ensure!(
            metrics.status == 200
                && metrics
                    .body
                    .contains("meseta_dns_requests_total{zone=\"mesos\",rcode=\"NXDOMAIN\"}"),
            "{metrics}"
        );

        // `meseta dns` on its own, for another domain, forwarding the rest
        // to the cluster's DNS; and one whose only resolver never answers.
        let dir = tempfile::tempdir()?;
        let ports = meseta_tests::cluster::free_ports(2)?;
        let (forwarder, deaf) = (
            format!("127.0.0.1:{}", ports[0]),
            format!("127.0.0.1:{}", ports[1]),
        );
        let blackhole = UdpSocket::bind("127.0.0.1:0")?;
        let blackhole_addr = blackhole.local_addr()?.to_string();
        let fwd = DnsProcess::start(
            dir.path(),
            "forwarder",
            &[
                "--masters",
                c.master_address(),
                "--listen",
                &forwarder,
                "--no-http",
                "--domain",
                "cluster.internal",
                "--resolvers",
                &dns,
            ],
        )?;
        let dead = DnsProcess::start(
            dir.path(),
            "deaf",
            &[
                "--masters",
                c.master_address(),
                "--listen",
                &deaf,
                "--no-http",
                "--resolvers",
                &blackhole_addr,
                "--resolver-timeout",
                "1",
            ],
        )?;
        let own = wait_for("the standalone DNS to serve its own domain", || {
            let d = dig(&forwarder, "web-prod.marathon.cluster.internal", "A")
                .map_err(|e| format!("{e:#}\n{}", fwd.log()))?;
            if d.data("A").is_empty() {
                Err(format!("{d:?}"))
            } else {
                Ok(d)
            }
        })?;
        ensure!(own.data("A") == vec![host.clone()], "{own:?}");
        let forwarded = dig(&forwarder, "web-prod.marathon.mesos", "A")?;
        ensure!(
            forwarded.status == "NOERROR" && forwarded.data("A") == vec![host.clone()],
            "forwarded: {forwarded:?}"
        );
        let forwarded_nx = dig(&forwarder, "nothing.marathon.mesos", "A")?;
        ensure!(forwarded_nx.status == "NXDOMAIN", "{forwarded_nx:?}");

        wait_for("the deaf DNS to answer its own names", || {
            let d =
                dig(&deaf, "leader.mesos", "A").map_err(|e| format!("{e:#}\n{}", dead.log()))?;
            if d.data("A").is_empty() {
                Err(format!("{d:?}"))
            } else {
                Ok(())
            }
        })?;
        // dig waits 5 s; a SERVFAIL (not a timeout) proves the bound.
        let started = Instant::now();
        let servfail = dig(&deaf, "example.org", "A")?;
        let took = started.elapsed();
        ensure!(servfail.status == "SERVFAIL", "{servfail:?}");
        println!(
            "dns_servfail_with_dead_resolver_ms={:.0}",
            took.as_secs_f64() * 1e3
        );
        drop(blackhole);
        if servfail.answers.is_empty() {
            Ok(())
        } else {
            bail!("SERVFAIL with answers: {servfail:?}")
        }
    });
}

#[test]
fn records_follow_the_leader_through_a_master_failover() {
    if !require_dig("the DNS failover test") {
        return;
    }
    let result = Masters::start(3).and_then(|mut m| m.run(failover));
    if let Err(e) = result {
        panic!("{e:?}");
    }
}

fn srv_port(d: &Dig) -> Option<u16> {
    d.srv().first().map(|s| s.0)
}

fn master_port(addr: &str) -> Result<u16> {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("{addr}: no port"))
}

fn failover(m: &mut Masters) -> Result<()> {
    let leader = m.leader()?;
    // Task ports below the blocks the single-process clusters use.
    m.start_agent("cpus:4;mem:2048;disk:1000;ports:[21500-21599]")?;
    let scheduler = Api::new(&m.start_scheduler()?);
    post_app(
        &scheduler,
        &json!({"id": "/web", "cmd": "sleep 1000", "instances": 1, "cpus": 0.1, "mem": 16,
                "portDefinitions": [{"port": 0}]}),
    )?;
    wait_running(&scheduler, "/web", 1)?;
    let dns = format!("127.0.0.1:{}", meseta_tests::cluster::free_ports(1)?[0]);
    let masters = m.founding_addrs().join(",");
    let process = DnsProcess::start(
        m.dir(),
        "dns",
        &[
            "--masters",
            &masters,
            "--listen",
            &dns,
            "--no-http",
            "--resolvers",
            "127.0.0.1:9",
        ],
    )?;
    let leader_port = master_port(&m.addrs[leader])?;
    wait_for("the DNS to follow the first leader", || {
        let l = dig(&dns, "_leader._tcp.mesos", "SRV")
            .map_err(|e| format!("{e:#}\n{}", process.log()))?;
        let web = dig(&dns, "web.marathon.mesos", "A").map_err(|e| format!("{e:#}"))?;
        if srv_port(&l) == Some(leader_port) && !web.data("A").is_empty() {
            Ok(())
        } else {
            Err(format!("{l:?} {web:?}"))
        }
    })?;
    let masters_a = dig(&dns, "master.mesos", "A")?;
    ensure!(
        masters_a.data("A") == vec!["127.0.0.1".to_string()],
        "{masters_a:?}"
    );
    let all_masters = dig(&dns, "_master._tcp.mesos", "SRV")?;
    ensure!(all_masters.srv().len() == 3, "{all_masters:?}");

    m.kill_master(leader);
    let new_leader = m.wait_leader(Some(leader))?;
    let new_port = master_port(&m.addrs[new_leader])?;
    // Until the DNS follows the new leader, and after, the app's name
    // keeps answering: the records are not blanked by the failover.
    let mut blank = Vec::new();
    wait_until(
        "leader.mesos to follow the new leader",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            let web = dig(&dns, "web.marathon.mesos", "A").map_err(|e| format!("{e:#}"))?;
            if web.data("A").is_empty() {
                blank.push(format!("{web:?}"));
            }
            let l = dig(&dns, "_leader._tcp.mesos", "SRV").map_err(|e| format!("{e:#}"))?;
            if srv_port(&l) == Some(new_port) {
                Ok(())
            } else {
                Err(format!("{l:?}"))
            }
        },
    )?;
    ensure!(
        blank.is_empty(),
        "web.marathon.mesos went blank during the failover: {blank:?}"
    );
    // Once the agent re-registered with the new leader, its task is
    // there from the new leader's own view.
    wait_for("the agent to re-register with the new leader", || {
        let state = m.state(new_leader).map_err(|e| format!("{e:#}"))?;
        let tasks = state["slaves"].as_array().map_or(0, Vec::len);
        if tasks == 1 {
            Ok(())
        } else {
            Err(state["slaves"].to_string())
        }
    })?;
    let web = dig(&dns, "web.marathon.mesos", "A")?;
    ensure!(web.data("A") == vec!["127.0.0.1".to_string()], "{web:?}");
    Ok(())
}
