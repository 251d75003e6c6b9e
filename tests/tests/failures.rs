//! The five failures the product must survive, under load, with every host
//! in a network namespace of its own (`meseta_tests::netns`): three
//! masters, five agents and two schedulers, each a `meseta` process on its
//! own address, the test talking to them from a sixth namespace. One app of
//! `MESETA_FAILURE_TASKS` native `sleep` tasks (default 100; the issue's
//! figure is 1,000, which this 2-core CI machine runs in a few minutes
//! more) is spread over the agents, then:
//!
//! 1. a task dies: it is replaced;
//! 2. an agent is `kill -9`ed and restarted: nothing is replaced;
//! 3. an agent's host is cut off for longer than the app's
//!    `unreachableStrategy.inactiveAfterSeconds`: replacements start
//!    elsewhere, and after healing the count is exact (the surplus goes by
//!    `killSelection`, the originals come back);
//! 4. the leading master is partitioned into the minority: no task is
//!    killed, writes continue, and the old leader stops acting before the
//!    new one is elected;
//! 5. the leading scheduler is partitioned away, then (the new leader)
//!    `kill -9`ed: each time the standby takes over; the cut-off one
//!    stopped acting before the other was elected, and stands by once
//!    healed (or restarted).
//!
//! After each: every acknowledged write (apps created through `/v2`) is
//! still there, the app has exactly its instances running, and no task was
//! killed that did not have to be (every task id from before is still
//! running, but the one the failure took). Each scenario prints its
//! outcome. Needs root (namespaces, nft); skipped with a printed reason
//! elsewhere, never in CI.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use meseta_tests::cluster::strip_ansi;
use meseta_tests::netns::{pids_in, require_netns, Net};
use meseta_tests::{meseta_binary, wait_until, Api};
use serde_json::json;

const MASTERS: [&str; 3] = ["m1", "m2", "m3"];
const AGENTS: [&str; 5] = ["a1", "a2", "a3", "a4", "a5"];
const SCHEDULERS: [&str; 2] = ["s1", "s2"];
/// The app under load.
const APP: &str = "/load";
/// Seconds an unreachable task counts before it is replaced.
const INACTIVE_AFTER: u64 = 8;
/// Generous: a debug build on a loaded 2-core machine.
const LONG: Duration = Duration::from_secs(240);
const POLL: Duration = Duration::from_millis(500);

fn tasks_wanted() -> usize {
    std::env::var("MESETA_FAILURE_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(100)
}

struct Suite {
    net: Net,
    dir: tempfile::TempDir,
    binary: PathBuf,
    pids: HashMap<String, u32>,
    starts: HashMap<String, usize>,
    /// Apps whose creation `/v2` acknowledged (201).
    written: Vec<String>,
    n: usize,
}

impl Suite {
    fn start(n: usize) -> Result<Suite> {
        let mut names: Vec<&str> = Vec::new();
        names.extend(MASTERS);
        names.extend(AGENTS);
        names.extend(SCHEDULERS);
        names.push("ctl");
        let net = Net::new(&names)?;
        net.enter("ctl")?;
        let dir = tempfile::tempdir().context("creating the data dir")?;
        let mut suite = Suite {
            net,
            dir,
            binary: meseta_binary(),
            pids: HashMap::new(),
            starts: HashMap::new(),
            written: Vec::new(),
            n,
        };
        for m in MASTERS {
            suite.start_role(m)?;
        }
        suite.wait_leader("the first master election")?;
        for a in AGENTS {
            suite.start_role(a)?;
        }
        for s in SCHEDULERS {
            suite.start_role(s)?;
        }
        Ok(suite)
    }

    fn ip(&self, node: &str) -> String {
        self.net.node(node).ip.clone()
    }

    fn masters_arg(&self) -> String {
        MASTERS
            .iter()
            .map(|m| format!("{}:5050", self.ip(m)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn log_path(&self, node: &str, start: usize) -> PathBuf {
        self.dir.path().join(format!("{node}.{start}.log"))
    }

    /// Start (or restart) the role that lives on `node`.
    fn start_role(&mut self, node: &str) -> Result<()> {
        let ip = self.ip(node);
        let data = self.dir.path().join(node);
        let masters = self.masters_arg();
        // Each agent holds at most a quarter of the tasks (memory bound),
        // so the other four have room for one agent's replacements.
        let per_agent = self.n.div_ceil(4);
        let args: Vec<String> = match &node[..1] {
            "m" => vec![
                "master".into(),
                "--listen".into(),
                format!("{ip}:5050"),
                "--masters".into(),
                masters,
                "--data-dir".into(),
                data.display().to_string(),
                "--agent-ping-timeout".into(),
                "1".into(),
                "--max-agent-ping-timeouts".into(),
                "3".into(),
                "--agent-removal-timeout".into(),
                "3600".into(),
            ],
            "a" => vec![
                "agent".into(),
                "--listen".into(),
                format!("{ip}:5051"),
                "--hostname".into(),
                ip.clone(),
                "--masters".into(),
                masters,
                "--work-dir".into(),
                data.display().to_string(),
                "--isolation".into(),
                "posix".into(),
                "--no-switch-user".into(),
                "--resources".into(),
                format!(
                    "cpus:{};mem:{};disk:1000;ports:[31000-31010]",
                    per_agent,
                    per_agent * 16 + 8
                ),
            ],
            _ => vec![
                "scheduler".into(),
                "--listen".into(),
                format!("{ip}:8080"),
                "--masters".into(),
                masters,
            ],
        };
        let start = {
            let s = self.starts.entry(node.to_string()).or_insert(0);
            *s += 1;
            *s
        };
        let log = self.log_path(node, start);
        let binary = self.binary.clone();
        let pid = self.net.spawn(node, &binary, &args, &log)?;
        self.pids.insert(node.to_string(), pid);
        Ok(())
    }

    fn kill9(&mut self, node: &str) -> Result<()> {
        let pid = self
            .pids
            .remove(node)
            .ok_or_else(|| anyhow!("{node} is not running"))?;
        meseta_tests::procfs::signal(pid as i32, nix::sys::signal::Signal::SIGKILL);
        wait_until(&format!("{node} to die"), LONG, POLL, || {
            self.net.reap();
            if meseta_tests::procfs::pid_running(pid as i32)
                && !meseta_tests::procfs::process(pid as i32).is_some_and(|p| p.is_zombie())
            {
                Err("still running")
            } else {
                Ok(())
            }
        })
    }

    /// Everything `node`'s processes logged, all starts, ANSI stripped.
    fn log(&self, node: &str) -> String {
        let starts = self.starts.get(node).copied().unwrap_or(0);
        (1..=starts)
            .map(|s| std::fs::read_to_string(self.log_path(node, s)).unwrap_or_default())
            .map(|t| strip_ansi(&t))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn master_api(&self, node: &str) -> Api {
        Api::new(&format!("{}:5050", self.ip(node)))
    }

    /// The leader the reachable masters agree on, as a node name.
    fn leader(&self, skip: Option<&str>) -> Result<String, String> {
        let mut named = BTreeSet::new();
        let mut answered = 0;
        for m in MASTERS.iter().filter(|m| Some(**m) != skip) {
            if let Ok(state) = self.master_api(m).get_json("/master/state") {
                answered += 1;
                named.insert(meseta_tests::masters::leader_of(&state));
            }
        }
        match (answered, named.len()) {
            (a, 1) if a >= 2 => {
                let addr = named.into_iter().next().unwrap_or_default();
                let ip = addr.split(':').next().unwrap_or_default().to_string();
                self.net
                    .node_at(&ip)
                    .map(|n| n.name.clone())
                    .ok_or_else(|| format!("leader {addr:?} is no node"))
            }
            _ => Err(format!("{answered} masters answered, naming {named:?}")),
        }
    }

    fn wait_leader(&self, what: &str) -> Result<String> {
        wait_until(what, LONG, POLL, || self.leader(None))
    }

    /// The scheduler that leads (`/v2/info` `elected`), as a node name.
    fn leading_scheduler(&self) -> Result<String, String> {
        for s in SCHEDULERS {
            if !self.pids.contains_key(s) {
                continue;
            }
            let api = Api::new(&format!("{}:8080", self.ip(s)));
            if let Ok(info) = api.get_json("/v2/info") {
                if info["elected"] == json!(true) {
                    return Ok(s.to_string());
                }
            }
        }
        Err("no scheduler says it is elected".into())
    }

    fn marathon(&self) -> Result<Api> {
        let s = wait_until("a leading scheduler", LONG, POLL, || {
            self.leading_scheduler()
        })?;
        Ok(Api::new(&format!("{}:8080", self.ip(&s))))
    }

    /// The app's tasks: id → (state, host).
    fn tasks(&self, api: &Api) -> Result<BTreeMap<String, (String, String)>> {
        let v = api.get_json(&format!("/v2/apps{APP}/tasks"))?;
        let tasks = v["tasks"]
            .as_array()
            .ok_or_else(|| anyhow!("no tasks list in {v}"))?;
        Ok(tasks
            .iter()
            .map(|t| {
                (
                    t["id"].as_str().unwrap_or_default().to_string(),
                    (
                        t["state"].as_str().unwrap_or_default().to_string(),
                        t["host"].as_str().unwrap_or_default().to_string(),
                    ),
                )
            })
            .collect())
    }

    /// Wait until the app runs exactly its instances, all TASK_RUNNING;
    /// the running ids.
    fn wait_exact(&self, what: &str) -> Result<BTreeSet<String>> {
        let n = self.n;
        wait_until(what, LONG, POLL, || -> Result<BTreeSet<String>, String> {
            let api = self.marathon().map_err(|e| e.to_string())?;
            let tasks = self.tasks(&api).map_err(|e| e.to_string())?;
            let running = tasks.values().filter(|(s, _)| s == "TASK_RUNNING").count();
            if tasks.len() == n && running == n {
                Ok(tasks.into_keys().collect())
            } else {
                Err(format!(
                    "{} tasks, {running} running, want {n}",
                    tasks.len()
                ))
            }
        })
    }

    /// Create a small app (0 instances) through `/v2`, retrying while the
    /// cluster cannot take writes; it is an acknowledged write once 201.
    fn write(&mut self, id: &str) -> Result<()> {
        let app = json!({"id": id, "cmd": "sleep 100000", "instances": 0, "cpus": 0.01, "mem": 16, "portDefinitions": []});
        wait_until(
            &format!("the write of {id} to be acknowledged"),
            LONG,
            POLL,
            || {
                let api = self.marathon().map_err(|e| e.to_string())?;
                let reply = api.post_json("/v2/apps", &app).map_err(|e| e.to_string())?;
                match reply.status {
                    201 => Ok(()),
                    // A retry of a write that was applied after all.
                    409 if api.get_json(&format!("/v2/apps{id}")).is_ok() => Ok(()),
                    _ => Err(reply.to_string()),
                }
            },
        )?;
        self.written.push(id.to_string());
        Ok(())
    }

    /// The invariants every scenario ends with.
    fn check(
        &self,
        scenario: &str,
        before: &BTreeSet<String>,
        taken: &BTreeSet<String>,
    ) -> Result<BTreeSet<String>> {
        let now = self.wait_exact(&format!(
            "{scenario}: the app back to exactly its instances"
        ))?;
        let api = self.marathon()?;
        for id in &self.written {
            api.get_json(&format!("/v2/apps{id}"))
                .with_context(|| format!("{scenario}: acknowledged write {id} is lost"))?;
        }
        let killed: Vec<&String> = before
            .iter()
            .filter(|t| !now.contains(*t) && !taken.contains(*t))
            .collect();
        if !killed.is_empty() {
            bail!("{scenario}: tasks killed that did not have to be: {killed:?}");
        }
        Ok(now)
    }

    /// Agents' task counts by node, from the leading master.
    fn agents_by_tasks(&self) -> Result<Vec<(String, u64)>> {
        let leader = self.leader(None).map_err(|e| anyhow!(e))?;
        let state = self.master_api(&leader).get_json("/master/state")?;
        let mut out = Vec::new();
        for a in state["slaves"].as_array().into_iter().flatten() {
            let host = a["hostname"].as_str().unwrap_or_default();
            if let Some(node) = self.net.node_at(host) {
                out.push((node.name.clone(), a["task_count"].as_u64().unwrap_or(0)));
            }
        }
        out.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        Ok(out)
    }
}

impl Drop for Suite {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in self.starts.keys() {
                let log = self.log(node);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("----- {node} (last lines) -----");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// The timestamp tracing puts first on a line (RFC 3339, UTC).
fn stamp(line: &str) -> Option<chrono_like::Stamp> {
    chrono_like::parse(line.split_whitespace().next()?)
}

/// RFC 3339 timestamps compared as text: tracing writes them in one fixed
/// UTC format, so text order is time order.
mod chrono_like {
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    pub struct Stamp(pub String);
    pub fn parse(s: &str) -> Option<Stamp> {
        (s.len() >= 20 && s.as_bytes().get(10) == Some(&b'T')).then(|| Stamp(s.to_string()))
    }

    impl Stamp {
        /// The same day's time `ms` milliseconds earlier (None across
        /// midnight, which the callers treat as "cannot tell").
        pub fn minus_ms(&self, ms: u64) -> Option<Stamp> {
            let (date, time) = self.0.split_once('T')?;
            let time = time.trim_end_matches('Z');
            let mut parts = time.split(':');
            let h: u64 = parts.next()?.parse().ok()?;
            let m: u64 = parts.next()?.parse().ok()?;
            let (s, frac) = parts.next()?.split_once('.')?;
            let s: u64 = s.parse().ok()?;
            let micros: u64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
            let total = ((h * 60 + m) * 60 + s) * 1_000_000 + micros;
            let t = total.checked_sub(ms * 1000)?;
            Some(Stamp(format!(
                "{date}T{:02}:{:02}:{:02}.{:06}Z",
                t / 3_600_000_000,
                t / 60_000_000 % 60,
                t / 1_000_000 % 60,
                t % 1_000_000
            )))
        }
    }
}

/// When the master that logged `line` stopped acting: the line's stamp
/// less its `lapsed_ms_ago` (the lease ran out before the line was written).
fn lapsed_at(line: &str) -> Option<chrono_like::Stamp> {
    let ago: u64 = line
        .split("lapsed_ms_ago=")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    stamp(line)?.minus_ms(ago)
}

/// The first line of `log` holding `needle` stamped after `after`.
fn first_line_after<'a>(log: &'a str, needle: &str, after: &chrono_like::Stamp) -> Option<&'a str> {
    log.lines()
        .find(|l| l.contains(needle) && stamp(l).is_some_and(|s| s > *after))
}

/// Now, as tracing stamps its lines.
fn utc_now() -> Result<chrono_like::Stamp> {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"])
        .output()
        .context("running date")?;
    chrono_like::parse(String::from_utf8_lossy(&out.stdout).trim())
        .ok_or_else(|| anyhow!("date printed no timestamp"))
}

/// The pid of the `sleep` of task `task_id`, found in its agent's namespace
/// by the task's environment.
fn task_sleep_pid(ns: &str, task_id: &str) -> Option<i32> {
    let marker = format!("MESOS_TASK_ID={task_id}");
    pids_in(ns).into_iter().find(|pid| {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let cmd = meseta_tests::procfs::cmdline(*pid);
        cmd.first().is_some_and(|c| c.ends_with("sleep"))
            && environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes())
    })
}

#[test]
fn five_failures_under_load() -> Result<()> {
    if !require_netns("the failure suite") {
        return Ok(());
    }
    let n = tasks_wanted();
    let started = Instant::now();
    let mut suite = Suite::start(n)?;
    let api = suite.marathon()?;
    let app = json!({
        "id": APP,
        "cmd": "sleep 100000",
        "instances": n,
        "cpus": 0.01,
        "mem": 16,
        "portDefinitions": [],
        "backoffSeconds": 1,
        "unreachableStrategy": {"inactiveAfterSeconds": INACTIVE_AFTER, "expungeAfterSeconds": 3600},
        "killSelection": "YOUNGEST_FIRST",
    });
    let reply = api.post_json("/v2/apps", &app)?;
    if reply.status != 201 {
        bail!("creating {APP}: {reply}");
    }
    suite.written.push(APP.to_string());
    let mut ids = suite.wait_exact("the load to run")?;
    let spread = suite.agents_by_tasks()?;
    println!(
        "load: {n} tasks running across {:?} after {:.1?}",
        spread,
        started.elapsed()
    );

    // 1. A task dies: it is replaced.
    {
        let t0 = Instant::now();
        let api = suite.marathon()?;
        let tasks = suite.tasks(&api)?;
        let (victim, (_, host)) = tasks
            .iter()
            .next()
            .ok_or_else(|| anyhow!("no task to kill"))?;
        let node = suite
            .net
            .node_at(host)
            .ok_or_else(|| anyhow!("task host {host} is no node"))?
            .clone();
        let pid = wait_until("the victim's sleep process", LONG, POLL, || {
            task_sleep_pid(&node.ns, victim).ok_or("not found")
        })?;
        meseta_tests::procfs::signal(pid, nix::sys::signal::Signal::SIGKILL);
        let taken: BTreeSet<String> = [victim.clone()].into();
        let now = wait_until("the dead task to be replaced", LONG, POLL, || {
            let ids = suite.wait_exact("running").map_err(|e| e.to_string())?;
            if ids.contains(victim) {
                Err("the killed task is still listed".to_string())
            } else {
                Ok(ids)
            }
        })?;
        suite.write("/w/after-task-death")?;
        let replacement: Vec<String> = now.difference(&ids).cloned().collect();
        ids = suite.check("task death", &ids, &taken)?;
        println!(
            "scenario 1 (a task dies): task {victim} killed on {}, replaced by {replacement:?}; exactly {n} running, {:.1?}",
            node.name,
            t0.elapsed()
        );
    }

    // 2. An agent is kill -9ed and restarted: nothing is replaced.
    {
        let t0 = Instant::now();
        let (agent, count) = suite.agents_by_tasks()?[0].clone();
        suite.kill9(&agent)?;
        std::thread::sleep(Duration::from_secs(1));
        suite.start_role(&agent)?;
        let leader = suite.wait_leader("a leader")?;
        let master = suite.master_api(&leader);
        let host = suite.ip(&agent);
        wait_until(
            "the restarted agent to re-register with its tasks",
            LONG,
            POLL,
            || {
                let state = master
                    .get_json("/master/state")
                    .map_err(|e| e.to_string())?;
                let a = state["slaves"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["hostname"] == json!(host))
                    .cloned()
                    .ok_or("not registered")?;
                if a["active"] == json!(true) && a["task_count"].as_u64() == Some(count) {
                    Ok(())
                } else {
                    Err(format!(
                        "active {} with {} tasks",
                        a["active"], a["task_count"]
                    ))
                }
            },
        )?;
        let now = suite.check("agent restart", &ids, &BTreeSet::new())?;
        if now != ids {
            bail!(
                "agent restart: tasks were replaced: new {:?}",
                now.difference(&ids).collect::<Vec<_>>()
            );
        }
        suite.write("/w/after-agent-restart")?;
        println!(
            "scenario 2 (agent kill -9 and restart): {agent} with {count} tasks re-attached; nothing replaced, {:.1?}",
            t0.elapsed()
        );
    }

    // 3. An agent's host is cut off past inactiveAfterSeconds.
    {
        let t0 = Instant::now();
        let (agent, count) = suite.agents_by_tasks()?[0].clone();
        let host = suite.ip(&agent);
        let api = suite.marathon()?;
        let on_agent: BTreeSet<String> = suite
            .tasks(&api)?
            .into_iter()
            .filter(|(_, (_, h))| *h == host)
            .map(|(id, _)| id)
            .collect();
        suite.net.cut(&agent)?;
        wait_until(
            "the cut agent's tasks to be TASK_UNREACHABLE",
            LONG,
            POLL,
            || {
                let api = suite.marathon().map_err(|e| e.to_string())?;
                let tasks = suite.tasks(&api).map_err(|e| e.to_string())?;
                let unreachable = on_agent
                    .iter()
                    .filter(|id| tasks.get(*id).is_some_and(|(s, _)| s == "TASK_UNREACHABLE"))
                    .count();
                if unreachable == on_agent.len() {
                    Ok(())
                } else {
                    Err(format!("{unreachable} of {} unreachable", on_agent.len()))
                }
            },
        )?;
        let unreachable_at = t0.elapsed();
        let replaced = wait_until("replacements to run elsewhere", LONG, POLL, || {
            let api = suite.marathon().map_err(|e| e.to_string())?;
            let tasks = suite.tasks(&api).map_err(|e| e.to_string())?;
            let running_elsewhere = tasks
                .iter()
                .filter(|(_, (s, h))| s == "TASK_RUNNING" && *h != host)
                .count();
            if running_elsewhere == n {
                Ok(tasks.len() - n)
            } else {
                Err(format!("{running_elsewhere} running elsewhere"))
            }
        })?;
        let replaced_at = t0.elapsed();
        suite.write("/w/during-agent-cut")?;
        suite.net.heal(&agent)?;
        // The originals come back; the replacements (the youngest) go.
        let now = suite.check("agent cut off", &ids, &BTreeSet::new())?;
        let back = on_agent.iter().filter(|id| now.contains(*id)).count();
        if back != on_agent.len() {
            bail!(
                "agent cut off: only {back} of {} tasks of the healed agent kept",
                on_agent.len()
            );
        }
        ids = now;
        println!(
            "scenario 3 (agent host cut off): {agent} ({count} tasks) unreachable after {:.1?}, {} replacements running after {:.1?}; healed: originals back, surplus killed, exactly {n} running, {:.1?}",
            unreachable_at,
            on_agent.len().max(replaced),
            replaced_at,
            t0.elapsed()
        );
    }

    // 4. The leading master is partitioned into the minority.
    {
        let t0 = Instant::now();
        let old = suite.wait_leader("a leader")?;
        let cut_at = utc_now()?;
        let lapses_before = suite.log(&old).matches("cannot confirm leadership").count();
        suite.net.cut(&old)?;
        let new = wait_until("a new leader among the majority", LONG, POLL, || {
            suite.leader(Some(&old)).and_then(|l| {
                if l == old {
                    Err("still the old leader".into())
                } else {
                    Ok(l)
                }
            })
        })?;
        let elected_at = t0.elapsed();
        suite.write("/w/during-master-partition")?;
        let old_log = suite.log(&old);
        let new_log = suite.log(&new);
        let lapse = first_line_after(&old_log, "cannot confirm leadership", &cut_at)
            .ok_or_else(|| anyhow!("the cut-off leader {old} never stopped acting"))?;
        let elected = first_line_after(&new_log, "became raft leader", &cut_at)
            .ok_or_else(|| anyhow!("{new} logged no election after the cut"))?;
        let (lapse_at, elected_at_stamp) = (lapsed_at(lapse), stamp(elected));
        if lapse_at.is_none() || elected_at_stamp.is_none() || lapse_at >= elected_at_stamp {
            bail!("the old leader stopped acting at {lapse_at:?}, not before the new one was elected at {elected_at_stamp:?}");
        }
        // Agents and the scheduler follow the new leader; nothing is killed.
        let now = suite.check("master partition", &ids, &BTreeSet::new())?;
        suite.net.heal(&old)?;
        wait_until("the old leader to rejoin as a follower", LONG, POLL, || {
            let state = suite
                .master_api(&old)
                .get_json("/master/state")
                .map_err(|e| e.to_string())?;
            if state["elected"] == json!(false)
                && meseta_tests::masters::leader_of(&state).starts_with(&suite.ip(&new))
            {
                Ok(())
            } else {
                Err(format!(
                    "elected {} leader {}",
                    state["elected"], state["leader"]
                ))
            }
        })?;
        ids = suite.check("master partition healed", &now, &BTreeSet::new())?;
        println!(
            "scenario 4 (leading master partitioned away): cut at {}, {old} stopped acting ({}) before {new} was elected ({}) after {:.1?}; writes continued; no task killed; {old} rejoined as follower, {:.1?} (lease lapses under load before the cut: {lapses_before})",
            cut_at.0,
            lapse_at.map(|s| s.0).unwrap_or_default(),
            elected_at_stamp.map(|s| s.0).unwrap_or_default(),
            elected_at,
            t0.elapsed()
        );
    }

    // 5a. The leading scheduler is partitioned away: the standby takes
    // over, and the old one stopped acting before that.
    {
        let t0 = Instant::now();
        let old = wait_until("a leading scheduler", LONG, POLL, || {
            suite.leading_scheduler()
        })?;
        let cut_at = utc_now()?;
        suite.net.cut(&old)?;
        let new = wait_until("the standby to take over", LONG, POLL, || {
            suite.leading_scheduler().and_then(|s| {
                if s == old {
                    Err("only the cut-off one says it leads".to_string())
                } else {
                    Ok(s)
                }
            })
        })?;
        let took_over = t0.elapsed();
        suite.write("/w/during-scheduler-partition")?;
        let (old_log, new_log) = (suite.log(&old), suite.log(&new));
        let stopped = first_line_after(&old_log, "stopped acting", &cut_at)
            .ok_or_else(|| anyhow!("the cut-off scheduler {old} never stopped acting"))?;
        let elected = first_line_after(&new_log, "elected leader of the framework", &cut_at)
            .ok_or_else(|| anyhow!("{new} logged no election after the cut"))?;
        let (stopped_at, elected_at) = (stamp(stopped), stamp(elected));
        if stopped_at.is_none() || elected_at.is_none() || stopped_at >= elected_at {
            bail!("the old scheduler stopped acting at {stopped_at:?}, not before the new one was elected at {elected_at:?}");
        }
        suite.net.heal(&old)?;
        let standby = Api::new(&format!("{}:8080", suite.ip(&old)));
        wait_until("the healed scheduler to stand by", LONG, POLL, || {
            let info = standby.get_json("/v2/info").map_err(|e| e.to_string())?;
            if info["elected"] == json!(false) {
                Ok(())
            } else {
                Err(info.to_string())
            }
        })?;
        let now = suite.check("scheduler partition", &ids, &BTreeSet::new())?;
        if now != ids {
            bail!("the scheduler partition changed the tasks");
        }
        println!(
            "scenario 5a (leading scheduler partitioned away): {old} stopped acting ({}) before {new} was elected ({}), {:.1?} after the cut; writes continued; nothing relaunched; {old} healed as standby, {:.1?}",
            stopped_at.map(|s| s.0).unwrap_or_default(),
            elected_at.map(|s| s.0).unwrap_or_default(),
            took_over,
            t0.elapsed()
        );
    }

    // 5b. The leading scheduler is kill -9ed: the standby takes over.
    {
        let t0 = Instant::now();
        let old = wait_until("a leading scheduler", LONG, POLL, || {
            suite.leading_scheduler()
        })?;
        suite.kill9(&old)?;
        let new = wait_until("the standby to take over", LONG, POLL, || {
            suite.leading_scheduler()
        })?;
        if new == old {
            bail!("the killed scheduler still leads");
        }
        let took_over = t0.elapsed();
        suite.write("/w/after-scheduler-failover")?;
        ids = suite.check("scheduler failover", &ids, &BTreeSet::new())?;
        suite.start_role(&old)?;
        let standby = Api::new(&format!("{}:8080", suite.ip(&old)));
        wait_until("the old scheduler to stand by", LONG, POLL, || {
            let info = standby.get_json("/v2/info").map_err(|e| e.to_string())?;
            if info["elected"] == json!(false) {
                Ok(())
            } else {
                Err(info.to_string())
            }
        })?;
        let after = suite.check("scheduler failover, old one back", &ids, &BTreeSet::new())?;
        if after != ids {
            bail!("the restarted scheduler changed the tasks");
        }
        println!(
            "scenario 5b (leading scheduler kill -9): {new} took over after {:.1?}; nothing relaunched; {old} restarted as standby, {:.1?}",
            took_over,
            t0.elapsed()
        );
    }
    println!(
        "all five failures survived with {n} tasks; {} acknowledged writes kept; {:.1?} in all",
        suite.written.len(),
        started.elapsed()
    );
    Ok(())
}
