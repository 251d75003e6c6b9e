//! `meseta-bench deploy`: time to deploy many instances through a real
//! `meseta up` (Marathon took 14–38 s for 500 instances and failed at
//! 1,000).
//!
//! Starts `meseta up` with an agent big enough (`--agent-resources`,
//! default `cpus:64;mem:200000;disk:10000`, posix isolation by default so
//! the figure is about scheduling, not cgroups), then:
//! 1. POSTs one app of `--instances` (default 1000) `sleep` tasks (cpus
//!    0.01, mem 16, no ports) and measures until its deployment is over
//!    and `tasksRunning` equals the instances; deletes it and waits for
//!    the tasks to end;
//! 2. POSTs `--apps` (default 100) apps of `--app-instances` (default 10)
//!    one after the other and measures from the first POST until no
//!    deployment is left and every task runs.
//!
//! The last line is `one_app_s=<s> many_apps_s=<s>`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meseta_tests::{Cluster, ClusterOptions};
use serde_json::{json, Value};

/// A deployment that has not finished after this long is a broken build.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(600);

/// Flags of `meseta-bench deploy`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeployArgs {
    /// Instances of the one big app.
    #[arg(long, default_value_t = 1000)]
    pub instances: u32,
    /// Apps of the second run.
    #[arg(long, default_value_t = 100)]
    pub apps: u32,
    /// Instances of each app of the second run.
    #[arg(long, default_value_t = 10)]
    pub app_instances: u32,
    /// The agent's --resources.
    #[arg(long, default_value = "cpus:64;mem:200000;disk:10000")]
    pub agent_resources: String,
    /// The agent's --isolation.
    #[arg(long, default_value = "posix")]
    pub isolation: String,
    /// The meseta binary (default: target/release/meseta if built).
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

fn sleeper(id: &str, instances: u32) -> Value {
    json!({"id": id, "cmd": "sleep 100000", "instances": instances, "cpus": 0.01, "mem": 16,
           "portDefinitions": []})
}

/// Waits until no deployment is listed and the apps run `running` tasks in all.
fn wait_deployed(cluster: &Cluster, running: u64) -> Result<()> {
    let start = Instant::now();
    loop {
        let deployments = cluster.marathon().get_json("/v2/deployments")?;
        let apps = cluster.marathon().get_json("/v2/apps")?;
        let now: u64 = apps["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["tasksRunning"].as_u64())
            .sum();
        if deployments.as_array().is_some_and(Vec::is_empty) && now == running {
            return Ok(());
        }
        if start.elapsed() > DEPLOY_TIMEOUT {
            bail!("not deployed after {DEPLOY_TIMEOUT:?}: {now} of {running} running");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_no_tasks(cluster: &Cluster) -> Result<()> {
    let start = Instant::now();
    loop {
        let tasks = cluster.marathon().get_json("/v2/tasks")?;
        if tasks["tasks"].as_array().is_some_and(Vec::is_empty) {
            return Ok(());
        }
        if start.elapsed() > DEPLOY_TIMEOUT {
            bail!("tasks left after {DEPLOY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the bench and prints its figures.
pub fn run(args: &DeployArgs) -> Result<()> {
    let binary = args
        .binary
        .clone()
        .unwrap_or_else(crate::launch::default_binary);
    println!("starting meseta up ({})", binary.display());
    let cluster = Cluster::try_start(ClusterOptions {
        binary: Some(binary),
        isolation: Some(args.isolation.clone()),
        resources: Some(args.agent_resources.clone()),
        ..ClusterOptions::default()
    })
    .context("starting meseta up")?;
    let result = (|| -> Result<(f64, f64)> {
        let start = Instant::now();
        let reply = cluster
            .marathon()
            .post_json("/v2/apps", &sleeper("/bench/big", args.instances))?;
        if reply.status != 201 {
            bail!("POST: {reply}");
        }
        wait_deployed(&cluster, u64::from(args.instances))?;
        let one = start.elapsed().as_secs_f64();
        println!("1 app of {} instances: {one:.2} s", args.instances);
        let reply = cluster.delete_app("/bench/big", true)?;
        if reply.status != 200 {
            bail!("DELETE: {reply}");
        }
        wait_no_tasks(&cluster)?;
        wait_deployed(&cluster, 0)?;

        let start = Instant::now();
        for i in 0..args.apps {
            let reply = cluster.marathon().post_json(
                "/v2/apps",
                &sleeper(&format!("/bench/app-{i}"), args.app_instances),
            )?;
            if reply.status != 201 {
                bail!("POST app {i}: {reply}");
            }
        }
        wait_deployed(&cluster, u64::from(args.apps * args.app_instances))?;
        let many = start.elapsed().as_secs_f64();
        println!(
            "{} apps of {} instances: {many:.2} s",
            args.apps, args.app_instances
        );
        Ok((one, many))
    })();
    match result {
        Ok((one, many)) => {
            drop(cluster);
            println!("one_app_s={one:.2} many_apps_s={many:.2}");
            Ok(())
        }
        Err(e) => {
            eprintln!("meseta's log tail:\n{}", cluster.log_tail(40));
            Err(e)
        }
    }
}
