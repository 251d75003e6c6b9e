//! Follows the leading master's operator event stream (`POST /api/v1`
//! SUBSCRIBE, protobuf RecordIO) and keeps the [`ClusterView`] and the
//! published records up to date.
//!
//! Any master will do as an entry point: a follower answers 307 with the
//! leader's URL, and the client follows it, so the stream always comes
//! from the leader (whose address becomes `leader.{domain}`). The stream
//! starts with SUBSCRIBED (the whole state), then carries every task,
//! agent and framework change as it happens; the records are rebuilt once
//! per batch of events that arrived together, and at most every
//! `MIN_REBUILD_INTERVAL` (25 ms) during a burst. When the stream ends (the
//! master stopped leading, died or dropped a slow subscriber), when no
//! byte arrived for three heartbeat intervals, or every `resync` as a
//! safety net, the follower subscribes again, trying the masters in turn;
//! the previous records keep being served meanwhile.
//!
//! A master that just became leader knows only the agents and frameworks
//! that re-registered with it. So that a failover does not blank the
//! records (and clients do not cache NXDOMAIN), the tasks of agents that
//! have not re-registered yet are carried over from the previous leader's
//! view: until the agent re-registers (it brings its tasks again), is
//! removed, or `CARRY` (the master's default re-registration timeout)
//! passes. Frameworks missing from the new snapshot are carried over too
//! (they re-subscribe moments later); only FRAMEWORK_REMOVED drops one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use meseta_proto::mesos::v1 as m;
use meseta_proto::mesos::{recordio, Encoding};
use tokio::sync::watch;

use crate::error::DnsError;
use crate::records::{AgentView, ClusterView, FrameworkView, MasterView, TaskView};
use crate::RecordStore;

use m::master as mr;

/// How long opening a stream may take before the next master is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Silence on the stream (no event, no heartbeat) after which it is
/// considered dead: three of the master's 15 s heartbeats.
const SILENCE: Duration = Duration::from_secs(45);
/// Waits between attempts when no master offers a stream.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long resolving one host name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Rebuilds of the records are at least this far apart: a burst of events
/// (a deployment of many tasks) costs a rebuild per interval, not one per
/// event, and a change waits at most this long for its rebuild.
const MIN_REBUILD_INTERVAL: Duration = Duration::from_millis(25);
/// How long tasks of an agent that has not re-registered with a new leader
/// keep their records.
const CARRY: Duration = Duration::from_secs(120);
/// At most this many SRV ports per task (a task holding a huge range gets
/// its first ones).
const MAX_PORTS_PER_TASK: usize = 64;

pub(crate) struct Follower {
    pub masters: Vec<String>,
    pub store: Arc<RecordStore>,
    pub resync: Duration,
    pub client: reqwest::Client,
    /// Host names already resolved (agents', frameworks', masters').
    resolved: HashMap<String, Vec<IpAddr>>,
    /// The cluster as the current (or last) subscription saw it.
    view: Option<ClusterView>,
    /// Agents carried over from a previous leader, until when.
    carried: HashMap<String, tokio::time::Instant>,
    /// The view changed since it was last published.
    pending: bool,
}

/// Why one subscription ended.
#[derive(Debug)]
enum Ended {
    Stopped,
    Resync,
    Closed,
}

impl Follower {
    pub(crate) fn new(masters: Vec<String>, store: Arc<RecordStore>, resync: Duration) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .unwrap_or_default();
        Follower {
            masters,
            store,
            resync,
            client,
            resolved: HashMap::new(),
            view: None,
            carried: HashMap::new(),
            pending: false,
        }
    }

    /// Follows the leader until `stop` turns true.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        if self.masters.is_empty() {
            tracing::warn!("no --masters given; the DNS server has only static records");
            return;
        }
        let mut next = 0usize;
        let mut backoff = BACKOFF_MIN;
        // Failed attempts in a row, and when that was last told.
        let mut failures = 0usize;
        let mut warned: Option<tokio::time::Instant> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            let master = self.masters[next % self.masters.len()].clone();
            next = next.wrapping_add(1);
            let ended = self.follow(&master, &mut stop).await;
            // What the stream brought before it ended is served.
            self.publish_pending();
            match ended {
                Ok(Ended::Stopped) => return,
                Ok(Ended::Resync) => {
                    tracing::debug!("re-subscribing to the master for a full resync");
                    backoff = BACKOFF_MIN;
                    failures = 0;
                    continue;
                }
                Ok(Ended::Closed) => {
                    tracing::info!(%master, "the master's event stream ended; following the leader again");
                    backoff = BACKOFF_MIN;
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    tracing::debug!(%master, error = %e, "cannot follow the master's events");
                    // Once every master was tried, say so (every 30 s at most).
                    let due = warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(30));
                    if failures >= self.masters.len() && due {
                        tracing::warn!(
                            masters = ?self.masters,
                            last_error = %e,
                            "no master offers its event stream; serving the last records known"
                        );
                        warned = Some(tokio::time::Instant::now());
                    }
                }
            }
            self.store.metrics().connected.set(0);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn follow(
        &mut self,
        master: &str,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Ended, DnsError> {
        let call = mr::Call {
            r#type: Some(mr::call::Type::Subscribe as i32),
            ..Default::default()
        };
        let body = Encoding::Protobuf
            .encode(&call)
            .map_err(|e| DnsError::Stream(e.to_string()))?;
        let url = format!("http://{master}/api/v1");
        let send = self
            .client
            .post(&url)
            .header("content-type", Encoding::Protobuf.content_type())
            .header("accept", Encoding::Protobuf.content_type())
            .body(body)
            .send();
        let response = tokio::time::timeout(CONNECT_TIMEOUT, send)
            .await
            .map_err(|_| DnsError::Stream(format!("{url}: no answer in {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| DnsError::Stream(format!("{url}: {e}")))?;
        if !response.status().is_success() {
            return Err(DnsError::Stream(format!("{url}: {}", response.status())));
        }
        // After a 307 from a follower this is the leader's address.
        let leader = match (response.url().host_str(), response.url().port()) {
            (Some(h), Some(p)) => format!("{}:{p}", h.trim_matches(|c| c == '[' || c == ']')),
            (Some(h), None) => format!("{h}:5050"),
            _ => master.to_string(),
        };
        let masters = self.resolve_masters().await;
        let leader_view = self.resolve_master(&leader).await;
        let metrics = self.store.metrics().clone();
        metrics.subscriptions.inc();
        let mut stream = response.bytes_stream();
        let mut decoder = recordio::Decoder::new();
        // Until this stream's SUBSCRIBED, events are not applied.
        let mut subscribed = false;
        let mut last_publish = tokio::time::Instant::now()
            .checked_sub(MIN_REBUILD_INTERVAL)
            .unwrap_or_else(tokio::time::Instant::now);
        let resync_at = tokio::time::Instant::now() + self.resync;
        loop {
            let publish_at = last_publish + MIN_REBUILD_INTERVAL;
            let chunk = tokio::select! {
                c = tokio::time::timeout(SILENCE, stream.next()) => c,
                _ = tokio::time::sleep_until(publish_at), if self.pending => {
                    self.publish_pending();
                    last_publish = tokio::time::Instant::now();
                    continue;
                }
                _ = tokio::time::sleep_until(resync_at) => return Ok(Ended::Resync),
                _ = stop.changed() => return Ok(Ended::Stopped),
            };
            let bytes = match chunk {
                Err(_) => {
                    tracing::warn!(%leader, "no event or heartbeat from the master for {SILENCE:?}; reconnecting");
                    return Ok(Ended::Closed);
                }
                Ok(None) => return Ok(Ended::Closed),
                Ok(Some(Err(e))) => return Err(DnsError::Stream(format!("{leader}: {e}"))),
                Ok(Some(Ok(b))) => b,
            };
            decoder.push(&bytes);
            // Take in everything that has already arrived before rebuilding.
            while let Some(Some(more)) = stream.next().now_or_never() {
                match more {
                    Ok(b) => decoder.push(&b),
                    Err(e) => return Err(DnsError::Stream(format!("{leader}: {e}"))),
                }
            }
            let mut changed = false;
            while let Some(record) = decoder
                .next_record()
                .map_err(|e| DnsError::Stream(format!("{leader}: {e}")))?
            {
                let event: mr::Event = Encoding::Protobuf
                    .decode(&record)
                    .map_err(|e| DnsError::Stream(format!("{leader}: {e}")))?;
                metrics.events.inc();
                changed |= self
                    .apply(&mut subscribed, event, &leader_view, &masters)
                    .await;
            }
            changed |= self.expire_carried();
            self.pending |= changed && subscribed;
            if self.pending && tokio::time::Instant::now() >= publish_at {
                self.publish_pending();
                last_publish = tokio::time::Instant::now();
            }
        }
    }

    /// Publishes the view if it changed since the last publication.
    fn publish_pending(&mut self) {
        if self.pending {
            if let Some(v) = &self.view {
                self.store.publish(v);
            }
            self.pending = false;
        }
    }

    /// Drops carried-over agents whose time is up; true when any was.
    fn expire_carried(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let expired: Vec<String> = self
            .carried
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let Some(v) = self.view.as_mut() else {
            return false;
        };
        for id in &expired {
            self.carried.remove(id);
            v.agents.remove(id);
            v.tasks.retain(|_, t| &t.agent_id != id);
            tracing::info!(agent = %id, "agent did not re-register with the new leader; its tasks' records are dropped");
        }
        !expired.is_empty()
    }

    /// Applies one event; true when the view changed.
    async fn apply(
        &mut self,
        subscribed: &mut bool,
        event: mr::Event,
        leader: &Option<MasterView>,
        masters: &[MasterView],
    ) -> bool {
        use mr::event::Type as T;
        let kind = event.r#type.and_then(|t| T::try_from(t).ok());
        if kind == Some(T::Subscribed) {
            let mut fresh = ClusterView {
                leader: leader.clone(),
                masters: masters.to_vec(),
                ..ClusterView::default()
            };
            let state = event
                .subscribed
                .and_then(|s| s.get_state)
                .unwrap_or_default();
            for a in state.get_agents.map(|g| g.agents).unwrap_or_default() {
                self.add_agent(&mut fresh, a).await;
            }
            for f in state
                .get_frameworks
                .map(|g| g.frameworks)
                .unwrap_or_default()
            {
                let _ = self.add_framework(&mut fresh, f.framework_info).await;
            }
            let tasks = state.get_tasks.unwrap_or_default();
            for t in tasks.tasks.into_iter().chain(tasks.unreachable_tasks) {
                let _ = add_task(&mut fresh, t);
            }
            let (agents, tasks) = (fresh.agents.len(), fresh.tasks.len());
            let carried = self.carry_over(&mut fresh);
            self.view = Some(fresh);
            *subscribed = true;
            self.store.metrics().connected.set(1);
            tracing::info!(
                leader = ?leader.as_ref().map(|l| format!("{}:{}", l.ip, l.port)),
                agents,
                tasks,
                carried,
                "following the leading master's events"
            );
            return true;
        }
        let Some(v) = self.view.as_mut().filter(|_| *subscribed) else {
            // Events before SUBSCRIBED cannot happen; ignore them if they do.
            return false;
        };
        match kind {
            Some(T::TaskAdded) => {
                if let Some(t) = event.task_added {
                    return add_task(v, t.task);
                }
            }
            Some(T::TaskUpdated) => {
                if let Some(u) = event.task_updated {
                    let id = u.status.task_id.value;
                    let state = u.state;
                    if is_terminal(state) {
                        // Only a running task had records.
                        return v.tasks.remove(&id).is_some_and(|t| t.running);
                    }
                    if let Some(t) = v.tasks.get_mut(&id) {
                        let running = state == m::TaskState::TaskRunning as i32;
                        let changed = t.running != running;
                        t.running = running;
                        if let Some(agent) = u.status.agent_id {
                            if agent.value != t.agent_id && !agent.value.is_empty() {
                                t.agent_id = agent.value;
                                return true;
                            }
                        }
                        return changed;
                    }
                }
            }
            Some(T::AgentAdded) => {
                if let Some(a) = event.agent_added {
                    let id = a.agent.agent_info.id.as_ref().map(|i| i.value.clone());
                    if let Some(id) = id.filter(|id| self.carried.remove(id).is_some()) {
                        // It re-registered: its TASK_ADDED events follow.
                        v.tasks.retain(|_, t| t.agent_id != id);
                    }
                    let mut v = self.view.take().unwrap_or_default();
                    self.add_agent(&mut v, a.agent).await;
                    self.view = Some(v);
                    return true;
                }
            }
            Some(T::AgentRemoved) => {
                if let Some(a) = event.agent_removed {
                    let id = a.agent_id.value;
                    self.carried.remove(&id);
                    v.tasks.retain(|_, t| t.agent_id != id);
                    return v.agents.remove(&id).is_some();
                }
            }
            Some(T::FrameworkAdded) => {
                if let Some(f) = event.framework_added {
                    let mut v = self.view.take().unwrap_or_default();
                    let changed = self.add_framework(&mut v, f.framework.framework_info).await;
                    self.view = Some(v);
                    return changed;
                }
            }
            Some(T::FrameworkUpdated) => {
                if let Some(f) = event.framework_updated {
                    let mut v = self.view.take().unwrap_or_default();
                    let changed = self.add_framework(&mut v, f.framework.framework_info).await;
                    self.view = Some(v);
                    return changed;
                }
            }
            Some(T::FrameworkRemoved) => {
                if let Some(f) = event.framework_removed {
                    let id = f.framework_info.id.map(|i| i.value).unwrap_or_default();
                    v.tasks.retain(|_, t| t.framework_id != id);
                    return v.frameworks.remove(&id).is_some();
                }
            }
            _ => {}
        }
        false
    }

    /// Carries over, from the previous view, the agents (with their tasks)
    /// and frameworks a new snapshot lacks; returns how many agents.
    fn carry_over(&mut self, fresh: &mut ClusterView) -> usize {
        let Some(previous) = self.view.take() else {
            return 0;
        };
        let until = tokio::time::Instant::now() + CARRY;
        let mut carried = 0;
        for (id, agent) in previous.agents {
            if fresh.agents.contains_key(&id) {
                self.carried.remove(&id);
                continue;
            }
            for (task_id, t) in previous.tasks.iter().filter(|(_, t)| t.agent_id == id) {
                fresh
                    .tasks
                    .entry(task_id.clone())
                    .or_insert_with(|| t.clone());
            }
            let deadline = *self.carried.entry(id.clone()).or_insert(until);
            if deadline > tokio::time::Instant::now() {
                fresh.agents.insert(id, agent);
                carried += 1;
            }
        }
        for (id, f) in previous.frameworks {
            fresh.frameworks.entry(id).or_insert(f);
        }
        carried
    }

    async fn add_agent(&mut self, view: &mut ClusterView, a: mr::response::get_agents::Agent) {
        let Some(id) = a.agent_info.id.as_ref().map(|i| i.value.clone()) else {
            return;
        };
        // Mesos' pid, `slave(1)@host:port`: the address the agent serves on.
        let (host, port) = a
            .pid
            .as_deref()
            .and_then(|p| p.rsplit_once('@'))
            .and_then(|(_, addr)| split_host_port(addr))
            .unwrap_or_else(|| {
                (
                    a.agent_info.hostname.clone(),
                    a.agent_info.port.unwrap_or(5051) as u16,
                )
            });
        let mut ips = self.resolve(&host).await;
        if ips.is_empty() && host != a.agent_info.hostname {
            ips = self.resolve(&a.agent_info.hostname).await;
        }
        if ips.is_empty() {
            tracing::warn!(agent = %id, %host, "the agent's address does not resolve; its tasks get no A records");
        }
        view.agents.insert(
            id,
            AgentView {
                hostname: a.agent_info.hostname,
                ips,
                port,
            },
        );
    }

    /// Adds or updates a framework; true when its name or address changed.
    async fn add_framework(&mut self, view: &mut ClusterView, info: m::FrameworkInfo) -> bool {
        let Some(id) = info.id.as_ref().map(|i| i.value.clone()) else {
            return false;
        };
        let ips = match info.hostname.as_deref() {
            Some(h) if !h.is_empty() => self.resolve(h).await,
            _ => Vec::new(),
        };
        let framework = FrameworkView {
            name: info.name,
            ips,
        };
        view.frameworks.insert(id, framework.clone()) != Some(framework)
    }

    async fn resolve_masters(&mut self) -> Vec<MasterView> {
        let mut out = Vec::new();
        for m in self.masters.clone() {
            if let Some(v) = self.resolve_master(&m).await {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        out
    }

    async fn resolve_master(&mut self, address: &str) -> Option<MasterView> {
        let (host, port) = split_host_port(address).unwrap_or((address.to_string(), 5050));
        let ip = self.resolve(&host).await.into_iter().next()?;
        Some(MasterView { ip, port })
    }

    /// A host's addresses: itself when it is an address, else the system
    /// resolver's answer (remembered, failures too, for this process).
    async fn resolve(&mut self, host: &str) -> Vec<IpAddr> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return vec![ip];
        }
        if let Some(ips) = self.resolved.get(host) {
            return ips.clone();
        }
        let ips: Vec<IpAddr> =
            match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 0))).await {
                Ok(Ok(addrs)) => {
                    let mut v: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    v.sort();
                    v.dedup();
                    v
                }
                _ => Vec::new(),
            };
        self.resolved.insert(host.to_string(), ips.clone());
        ips
    }
}

/// Adds (or replaces) a task; true when that changes the records (the task
/// runs, or replaces one that ran).
fn add_task(view: &mut ClusterView, t: m::Task) -> bool {
    if is_terminal(t.state) {
        return view
            .tasks
            .remove(&t.task_id.value)
            .is_some_and(|old| old.running);
    }
    let mut ports = Vec::new();
    for r in t.resources.iter().filter(|r| r.name == "ports") {
        for range in r.ranges.iter().flat_map(|rs| rs.range.iter()) {
            for p in range.begin..=range.end {
                if ports.len() >= MAX_PORTS_PER_TASK {
                    break;
                }
                if let Ok(p) = u16::try_from(p) {
                    ports.push(p);
                }
            }
        }
    }
    let task = TaskView {
        name: t.name,
        framework_id: t.framework_id.value,
        agent_id: t.agent_id.value,
        running: t.state == m::TaskState::TaskRunning as i32,
        ports,
    };
    let running = task.running;
    match view.tasks.insert(t.task_id.value, task) {
        Some(old) => old.running || running,
        None => running,
    }
}

fn is_terminal(state: i32) -> bool {
    use m::TaskState as S;
    [
        S::TaskFinished,
        S::TaskFailed,
        S::TaskKilled,
        S::TaskError,
        S::TaskLost,
        S::TaskDropped,
        S::TaskGone,
        S::TaskGoneByOperator,
    ]
    .iter()
    .any(|s| *s as i32 == state)
}

/// `host:port` (or `[v6]:port`) into its parts.
fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse().ok()?;
    Some((
        host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_split() {
        assert_eq!(
            split_host_port("10.0.0.1:5051"),
            Some(("10.0.0.1".into(), 5051))
        );
        assert_eq!(split_host_port("[::1]:5051"), Some(("::1".into(), 5051)));
        assert_eq!(split_host_port("nohost"), None);
    }

    fn agent(id: &str) -> mr::response::get_agents::Agent {
        mr::response::get_agents::Agent {
            agent_info: m::AgentInfo {
                hostname: "h".into(),
                id: Some(m::AgentId { value: id.into() }),
                ..Default::default()
            },
            pid: Some("slave(1)@10.0.0.7:5051".into()),
            ..Default::default()
        }
    }

    fn task(id: &str, agent: &str, state: m::TaskState) -> m::Task {
        m::Task {
            name: "web.prod".into(),
            task_id: m::TaskId { value: id.into() },
            framework_id: m::FrameworkId { value: "fw".into() },
            agent_id: m::AgentId {
                value: agent.into(),
            },
            state: state as i32,
            resources: vec![m::Resource {
                name: "ports".into(),
                ranges: Some(m::value::Ranges {
                    range: vec![m::value::Range {
                        begin: 31000,
                        end: 31001,
                    }],
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn snapshot(agents: Vec<&str>, tasks: Vec<m::Task>, with_framework: bool) -> mr::Event {
        let frameworks = with_framework
            .then(|| mr::response::get_frameworks::Framework {
                framework_info: m::FrameworkInfo {
                    name: "marathon".into(),
                    id: Some(m::FrameworkId { value: "fw".into() }),
                    ..Default::default()
                },
                ..Default::default()
            })
            .into_iter()
            .collect();
        mr::Event {
            r#type: Some(mr::event::Type::Subscribed as i32),
            subscribed: Some(mr::event::Subscribed {
                get_state: Some(mr::response::GetState {
                    get_tasks: Some(mr::response::GetTasks {
                        tasks,
                        ..Default::default()
                    }),
                    get_agents: Some(mr::response::GetAgents {
                        agents: agents.into_iter().map(agent).collect(),
                        ..Default::default()
                    }),
                    get_frameworks: Some(mr::response::GetFrameworks {
                        frameworks,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                heartbeat_interval_seconds: Some(15.0),
            }),
            ..Default::default()
        }
    }

    fn follower() -> Follower {
        let store = Arc::new(RecordStore::new(
            "mesos.",
            Arc::new(crate::DnsMetrics::new()),
        ));
        Follower::new(
            vec!["127.0.0.1:5050".into()],
            store,
            Duration::from_secs(300),
        )
    }

    fn names(f: &Follower) -> crate::Records {
        crate::Records::build(f.view.as_ref().expect("a view"), "mesos")
    }

    #[tokio::test]
    async fn events_change_the_records() {
        let mut f = follower();
        let mut subscribed = false;
        let running = task("t1", "a-1", m::TaskState::TaskRunning);
        f.apply(
            &mut subscribed,
            subscribed_event_default(running),
            &None,
            &[],
        )
        .await;
        let r = names(&f);
        assert_eq!(r.addresses_of("web-prod.marathon.mesos.").len(), 1);
        assert_eq!(r.services_of("_web-prod._tcp.marathon.mesos.").len(), 2);
        let killed = mr::Event {
            r#type: Some(mr::event::Type::TaskUpdated as i32),
            task_updated: Some(mr::event::TaskUpdated {
                framework_id: m::FrameworkId { value: "fw".into() },
                status: m::TaskStatus {
                    task_id: m::TaskId { value: "t1".into() },
                    state: m::TaskState::TaskKilled as i32,
                    ..Default::default()
                },
                state: m::TaskState::TaskKilled as i32,
            }),
            ..Default::default()
        };
        assert!(f.apply(&mut subscribed, killed, &None, &[]).await);
        assert!(names(&f)
            .addresses_of("web-prod.marathon.mesos.")
            .is_empty());
    }

    fn subscribed_event_default(t: m::Task) -> mr::Event {
        snapshot(vec!["a-1"], vec![t], true)
    }

    #[tokio::test]
    async fn a_new_leader_without_the_agent_keeps_its_tasks_until_it_re_registers() {
        let mut f = follower();
        let mut subscribed = false;
        let running = task("t1", "a-1", m::TaskState::TaskRunning);
        f.apply(
            &mut subscribed,
            subscribed_event_default(running.clone()),
            &None,
            &[],
        )
        .await;
        // The new leader: no agent, no framework yet.
        let mut again = false;
        f.apply(&mut again, snapshot(vec![], vec![], false), &None, &[])
            .await;
        assert_eq!(f.carried.len(), 1);
        assert_eq!(names(&f).addresses_of("web-prod.marathon.mesos.").len(), 1);
        // The agent re-registers; its task comes again with TASK_ADDED.
        let added = mr::Event {
            r#type: Some(mr::event::Type::AgentAdded as i32),
            agent_added: Some(mr::event::AgentAdded {
                agent: agent("a-1"),
            }),
            ..Default::default()
        };
        f.apply(&mut again, added, &None, &[]).await;
        assert!(f.carried.is_empty());
        assert!(names(&f)
            .addresses_of("web-prod.marathon.mesos.")
            .is_empty());
        let task_added = mr::Event {
            r#type: Some(mr::event::Type::TaskAdded as i32),
            task_added: Some(mr::event::TaskAdded { task: running }),
            ..Default::default()
        };
        f.apply(&mut again, task_added, &None, &[]).await;
        assert_eq!(names(&f).addresses_of("web-prod.marathon.mesos.").len(), 1);
    }

    #[test]
    fn terminal_states_drop_tasks() {
        assert!(is_terminal(m::TaskState::TaskKilled as i32));
        assert!(!is_terminal(m::TaskState::TaskRunning as i32));
        assert!(!is_terminal(m::TaskState::TaskUnreachable as i32));
    }
}
