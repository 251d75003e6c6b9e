//! The record store: what the cluster looks like ([`ClusterView`], kept
//! up to date from the master's events) and the DNS records made from it
//! ([`Records`], rebuilt whole after each batch of changes and swapped in
//! atomically, so a query never sees half an update).
//!
//! Records, as mesos-dns makes them (`{d}` the domain, `{fw}` the
//! framework's name as a fragment, `{task}` the task's label, `{canon}`
//! its canonical label; see [`crate::names`]), for every TASK_RUNNING task
//! on a known agent:
//!
//! - A `{task}.{fw}.{d}`, `{canon}.{fw}.{d}`, `{task}.{fw}.slave.{d}` and
//!   `{canon}.{fw}.slave.{d}`: the agent's IP (meseta tasks share their
//!   agent's network; there is no container IP to prefer);
//! - SRV `_{task}._tcp.{fw}.{d}`, `_{task}._udp.{fw}.{d}` and the same
//!   under `.slave`: one per host port of the task, target
//!   `{canon}.{fw}.slave.{d}`, priority 0, weight 1.
//!
//! And for the cluster: A `leader.{d}` (the master the events come from),
//! `master.{d}` (every master), `master{N}.{d}`, SRV `_leader._tcp|_udp.{d}`
//! and `_master._tcp|_udp.{d}`; A `slave.{d}` (every agent) and SRV
//! `_slave._tcp.{d}`; A `{fw}.{d}` for a framework whose hostname is an
//! address.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::names::{canonical_label, framework_fragment, label, normalize};

/// A task as the records need it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    /// `TaskInfo.name`.
    pub name: String,
    pub framework_id: String,
    pub agent_id: String,
    /// Only running tasks get records.
    pub running: bool,
    /// The host ports of the task's `ports` resources, in order.
    pub ports: Vec<u16>,
}

/// An agent as the records need it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentView {
    pub hostname: String,
    /// The agent's addresses (its pid's host, resolved when it is a name).
    pub ips: Vec<IpAddr>,
    /// The agent's port.
    pub port: u16,
}

/// A framework as the records need it.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameworkView {
    pub name: String,
    /// The scheduler's address when it is known.
    pub ips: Vec<IpAddr>,
}

/// A master: its address and port.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterView {
    pub ip: IpAddr,
    pub port: u16,
}

/// What the records are made from. Public so that a tool (the bench) can
/// fill a store without a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// The leading master (the one the event stream comes from).
    pub leader: Option<MasterView>,
    /// Every master named by `--masters` (resolved), the leader included.
    pub masters: Vec<MasterView>,
    pub agents: HashMap<String, AgentView>,
    pub frameworks: HashMap<String, FrameworkView>,
    pub tasks: HashMap<String, TaskView>,
}

/// One SRV target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SrvTarget {
    /// A name in the store (lower case, trailing dot).
    pub target: String,
    pub port: u16,
}

/// Every record of the domain, by name (lower case, trailing dot).
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// The domain with its trailing dot (`mesos.`).
    pub domain: String,
    pub addresses: BTreeMap<String, Vec<IpAddr>>,
    pub services: BTreeMap<String, Vec<SrvTarget>>,
    /// The SOA serial: counts the rebuilds of the store.
    pub serial: u32,
}

impl Records {
    /// Builds every record of `view` under `domain`.
    pub fn build(view: &ClusterView, domain: &str) -> Records {
        let d = normalize(domain);
        let mut r = Records {
            domain: d.clone(),
            ..Records::default()
        };
        if let Some(leader) = &view.leader {
            let name = format!("leader.{d}");
            r.add_address(&name, leader.ip);
            r.add_address(&format!("master.{d}"), leader.ip);
            for proto in ["_tcp", "_udp"] {
                r.add_service(&format!("_leader.{proto}.{d}"), &name, leader.port);
            }
        }
        for (n, m) in view.masters.iter().enumerate() {
            let name = format!("master{n}.{d}");
            r.add_address(&format!("master.{d}"), m.ip);
            r.add_address(&name, m.ip);
            for proto in ["_tcp", "_udp"] {
                r.add_service(&format!("_master.{proto}.{d}"), &name, m.port);
            }
        }
        for a in view.agents.values() {
            for ip in &a.ips {
                r.add_address(&format!("slave.{d}"), *ip);
            }
            if !a.ips.is_empty() {
                r.add_service(&format!("_slave._tcp.{d}"), &format!("slave.{d}"), a.port);
            }
        }
        for f in view.frameworks.values() {
            let fw = framework_fragment(&f.name);
            if fw.is_empty() {
                continue;
            }
            for ip in &f.ips {
                r.add_address(&format!("{fw}.{d}"), *ip);
            }
        }
        for (task_id, t) in &view.tasks {
            if !t.running {
                continue;
            }
            let (Some(agent), Some(framework)) = (
                view.agents.get(&t.agent_id),
                view.frameworks.get(&t.framework_id),
            ) else {
                continue;
            };
            let (task, fw) = (label(&t.name), framework_fragment(&framework.name));
            if task.is_empty() || fw.is_empty() {
                continue;
            }
            let canon = canonical_label(&task, task_id, &t.agent_id);
            for ip in &agent.ips {
                for host in [&task, &canon] {
                    r.add_address(&format!("{host}.{fw}.{d}"), *ip);
                    r.add_address(&format!("{host}.{fw}.slave.{d}"), *ip);
                }
            }
            let target = format!("{canon}.{fw}.slave.{d}");
            for port in &t.ports {
                for proto in ["_tcp", "_udp"] {
                    r.add_service(&format!("_{task}.{proto}.{fw}.{d}"), &target, *port);
                    r.add_service(&format!("_{task}.{proto}.{fw}.slave.{d}"), &target, *port);
                }
            }
        }
        for v in r.addresses.values_mut() {
            v.sort();
            v.dedup();
        }
        for v in r.services.values_mut() {
            v.sort();
            v.dedup();
        }
        r
    }

    fn add_address(&mut self, name: &str, ip: IpAddr) {
        self.addresses.entry(name.to_string()).or_default().push(ip);
    }

    fn add_service(&mut self, name: &str, target: &str, port: u16) {
        self.services
            .entry(name.to_string())
            .or_default()
            .push(SrvTarget {
                target: target.to_string(),
                port,
            });
    }

    /// Whether `name` (normalized) is in this store's domain.
    pub fn in_domain(&self, name: &str) -> bool {
        name == self.domain
            || name
                .strip_suffix(self.domain.as_str())
                .is_some_and(|head| head.ends_with('.'))
    }

    /// The addresses of `name` (normalized).
    pub fn addresses_of(&self, name: &str) -> &[IpAddr] {
        self.addresses.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The SRV targets of `name` (normalized).
    pub fn services_of(&self, name: &str) -> &[SrvTarget] {
        self.services.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether any record has this name (normalized).
    pub fn has_name(&self, name: &str) -> bool {
        self.addresses.contains_key(name) || self.services.contains_key(name)
    }

    /// How many names carry A/AAAA records and SRV records.
    pub fn counts(&self) -> (usize, usize) {
        (self.addresses.len(), self.services.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn view() -> ClusterView {
        let mut v = ClusterView {
            leader: Some(MasterView {
                ip: ip("10.0.0.1"),
                port: 5050,
            }),
            masters: vec![
                MasterView {
                    ip: ip("10.0.0.1"),
                    port: 5050,
                },
                MasterView {
                    ip: ip("10.0.0.2"),
                    port: 5050,
                },
            ],
            ..ClusterView::default()
        };
        v.agents.insert(
            "agent-1-a1".into(),
            AgentView {
                hostname: "h1".into(),
                ips: vec![ip("10.0.1.1")],
                port: 5051,
            },
        );
        v.agents.insert(
            "agent-2-a2".into(),
            AgentView {
                hostname: "h2".into(),
                ips: vec![ip("10.0.1.2")],
                port: 5051,
            },
        );
        v.frameworks.insert(
            "fw".into(),
            FrameworkView {
                name: "marathon".into(),
                ips: vec![],
            },
        );
        let task = |name: &str, agent: &str, port: u16| TaskView {
            name: name.into(),
            framework_id: "fw".into(),
            agent_id: agent.into(),
            running: true,
            ports: vec![port],
        };
        v.tasks
            .insert("redis.1".into(), task("redis", "agent-1-a1", 31000));
        v.tasks
            .insert("web_prod.1".into(), task("web.prod", "agent-1-a1", 31001));
        v.tasks
            .insert("web_prod.2".into(), task("web.prod", "agent-2-a2", 31002));
        let mut staging = task("staging", "agent-1-a1", 31003);
        staging.running = false;
        v.tasks.insert("staging.1".into(), staging);
        v
    }

    #[test]
    fn apps_get_a_records_of_their_agents() {
        let r = Records::build(&view(), "mesos");
        assert_eq!(r.addresses_of("redis.marathon.mesos."), &[ip("10.0.1.1")]);
        assert_eq!(
            r.addresses_of("web-prod.marathon.mesos."),
            &[ip("10.0.1.1"), ip("10.0.1.2")]
        );
        assert_eq!(
            r.addresses_of("web-prod.marathon.slave.mesos."),
            &[ip("10.0.1.1"), ip("10.0.1.2")]
        );
        assert!(r.addresses_of("staging.marathon.mesos.").is_empty());
    }

    #[test]
    fn srv_records_point_at_canonical_names_that_resolve() {
        let r = Records::build(&view(), "mesos");
        let srv = r.services_of("_web-prod._tcp.marathon.mesos.");
        assert_eq!(srv.len(), 2);
        let ports: Vec<u16> = srv.iter().map(|s| s.port).collect();
        assert!(ports.contains(&31001) && ports.contains(&31002));
        for s in srv {
            assert!(s.target.ends_with(".marathon.slave.mesos."), "{}", s.target);
            assert!(s.target.starts_with("web-prod-"), "{}", s.target);
            assert_eq!(r.addresses_of(&s.target).len(), 1, "{} resolves", s.target);
        }
        assert_eq!(
            r.services_of("_web-prod._udp.marathon.slave.mesos.").len(),
            2
        );
    }

    #[test]
    fn masters_leader_and_agents_have_names() {
        let r = Records::build(&view(), "mesos");
        assert_eq!(r.addresses_of("leader.mesos."), &[ip("10.0.0.1")]);
        assert_eq!(
            r.addresses_of("master.mesos."),
            &[ip("10.0.0.1"), ip("10.0.0.2")]
        );
        assert_eq!(r.addresses_of("master1.mesos."), &[ip("10.0.0.2")]);
        assert_eq!(
            r.services_of("_leader._tcp.mesos."),
            &[SrvTarget {
                target: "leader.mesos.".into(),
                port: 5050
            }]
        );
        assert_eq!(r.addresses_of("slave.mesos.").len(), 2);
        assert!(r.in_domain("x.mesos.") && r.in_domain("mesos.") && !r.in_domain("xmesos."));
    }

    #[test]
    fn other_domains_are_honoured() {
        let r = Records::build(&view(), "Cluster.Internal");
        assert_eq!(
            r.addresses_of("redis.marathon.cluster.internal."),
            &[ip("10.0.1.1")]
        );
    }
}
