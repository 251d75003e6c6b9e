//! Several hosts on one machine: every node in a network namespace of its
//! own, wired to a bridge that lives in a "switch" namespace of its own (a
//! bridge in the host's namespace does not pass traffic here: Docker's
//! `FORWARD DROP`), one veth pair per node created straight into the
//! node's namespace. Nothing touches the host's network or firewall.
//!
//! Nodes get `10.99.0.<n>/24` inside their namespaces; the host cannot
//! reach them, so the test talks to them from a namespace of its own
//! ([`Net::enter`] moves the test's thread into it). Processes
//! run inside with `ip netns exec` ([`Net::spawn`]). A node is cut off with
//! an nftables table in its namespace that drops everything on its link
//! ([`Net::cut`]), and healed by deleting the table ([`Net::heal`]).
//!
//! Namespaces are named `meseta-<pid>-<n>-<node>` so leftovers are
//! recognisable. Dropping the [`Net`] kills every process left in its
//! namespaces (`ip netns pids`), then deletes them; a test that panics
//! still cleans up (the drop runs during unwinding), and [`Net::new`]
//! removes leftovers of earlier runs whose process is gone.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// Prefix of every namespace this harness creates.
pub const PREFIX: &str = "meseta-";

static NETS: AtomicU32 = AtomicU32::new(0);

/// Whether network namespaces can be made here (root, `ip`, `nft`). With
/// `CI=true` a missing piece panics; elsewhere it prints why and returns
/// `false`, so the skip is never silent.
pub fn require_netns(what: &str) -> bool {
    let missing = if !nix::unistd::geteuid().is_root() {
        Some("not running as root".to_string())
    } else {
        ["ip", "nft"]
            .iter()
            .find(|tool| {
                !Command::new(tool)
                    .arg("-V")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .map(|tool| format!("`{tool}` is not installed (iproute2, nftables)"))
    };
    match missing {
        None => true,
        Some(reason) if crate::in_ci() => {
            panic!("{what} needs network namespaces in CI, but: {reason}")
        }
        Some(reason) => {
            println!("skipping {what}: {reason} (it runs for real in CI)");
            false
        }
    }
}

/// A node: its namespace and its address.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub ns: String,
    pub ip: String,
}

/// A switch and the nodes on it.
pub struct Net {
    switch: String,
    nodes: Vec<Node>,
    children: Vec<Child>,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn in_ns(ns: &str, program: &str, args: &[&str], stdin: Option<&str>) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program]).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {program} in {ns}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(text.as_bytes())
            .with_context(|| format!("feeding {program} in {ns}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {program} in {ns}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} in {ns} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Namespaces whose name starts with [`PREFIX`].
fn our_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect()
}

/// Pids of the processes in namespace `ns`.
pub fn pids_in(ns: &str) -> Vec<i32> {
    let out = Command::new("ip").args(["netns", "pids", ns]).output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn kill_all_in(ns: &str) {
    for _ in 0..3 {
        let pids = pids_in(ns);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            crate::procfs::signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn delete_namespace(ns: &str) {
    kill_all_in(ns);
    let _ = ip(&["netns", "del", ns]);
}

impl Net {
    /// A switch and one node per name, `names[i]` at `10.99.0.<i + 1>`.
    pub fn new(names: &[&str]) -> Result<Net> {
        // Leftovers of runs whose test process is gone.
        for ns in our_namespaces() {
            let owner = ns
                .trim_start_matches(PREFIX)
                .split('-')
                .next()
                .and_then(|p| p.parse::<i32>().ok());
            if owner.is_some_and(|pid| !crate::procfs::pid_running(pid)) {
                delete_namespace(&ns);
            }
        }
        let tag = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NETS.fetch_add(1, Ordering::SeqCst)
        );
        let mut net = Net {
            switch: format!("{tag}-sw"),
            nodes: Vec::new(),
            children: Vec::new(),
        };
        ip(&["netns", "add", &net.switch])?;
        ip(&["-n", &net.switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net.switch, "link", "set", "br0", "up"])?;
        ip(&["-n", &net.switch, "link", "set", "lo", "up"])?;
        for (i, name) in names.iter().enumerate() {
            let ns = format!("{tag}-{name}");
            let port = format!("p{i}");
            let addr = format!("10.99.0.{}", i + 1);
            ip(&["netns", "add", &ns])?;
            net.nodes.push(Node {
                name: name.to_string(),
                ns: ns.clone(),
                ip: addr.clone(),
            });
            ip(&[
                "link",
                "add",
                "eth0",
                "netns",
                &ns,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &net.switch,
            ])?;
            ip(&["-n", &net.switch, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &net.switch, "link", "set", &port, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in this net"))
    }

    /// The node whose address is `ip`.
    pub fn node_at(&self, ip: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.ip == ip)
    }

    /// Start `program args` inside node `name`, output to `log`. The child
    /// is killed on drop (with everything else in the namespace).
    pub fn spawn(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<u32> {
        let ns = self.node(name).ns.clone();
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("cloning the log handle")?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(program)
            .args(args)
            .env(
                "RUST_LOG",
                "info,h2=warn,hyper=warn,tower=warn,tonic=warn,sled=warn,raft=warn",
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {} in {ns}", program.display()))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Reap children that exited (so `kill -9`ed ones leave no zombie).
    pub fn reap(&mut self) {
        self.children
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
    }

    /// Cut node `name` off the network: its namespace drops every packet
    /// in and out of its link (TCP peers see silence, as in a real
    /// partition, not resets).
    pub fn cut(&self, name: &str) -> Result<()> {
        let ns = &self.node(name).ns;
        in_ns(
            ns,
            "nft",
            &["-f", "-"],
            Some(
                "table inet meseta_cut {\n\
                 chain input { type filter hook input priority 0; iifname \"eth0\" drop; }\n\
                 chain output { type filter hook output priority 0; oifname \"eth0\" drop; }\n\
                 }\n",
            ),
        )
    }

    /// Undo [`Net::cut`].
    pub fn heal(&self, name: &str) -> Result<()> {
        in_ns(
            &self.node(name).ns,
            "nft",
            &["delete", "table", "inet", "meseta_cut"],
            None,
        )
    }

    /// Move the calling thread into node `name`'s network namespace:
    /// sockets it opens from now on (and threads it starts) live there.
    /// Only this thread moves; a test's thread is its own, so a test calls
    /// this once to talk to the nodes.
    pub fn enter(&self, name: &str) -> Result<()> {
        let path = format!("/var/run/netns/{}", self.node(name).ns);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering {path}"))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for n in &self.nodes {
            delete_namespace(&n.ns);
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        delete_namespace(&self.switch);
    }
}
