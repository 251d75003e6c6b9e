//! `meseta-bench`: benchmarks and load tools, one subcommand each. Every
//! subcommand prints progress while it runs and its figures as `key=value`
//! pairs on its last line.
//!
//! - `launch`: POST /v2/apps → TASK_RUNNING through a real `meseta up`.
//! - `allocator`: the DRF allocator in-process.
//! - `deploy`: one app of 1,000 instances and 100 apps of 10 through `meseta up`.
//! - `kv`: the masters' replicated KV store (and etcd for comparison).
//! - `containers`: docker run vs meseta Docker, image and native tasks.
//! - `recover`: an agent restart re-attaching to its running tasks.
//! - `api`: offers → ACCEPT → TASK_RUNNING over gRPC and over Mesos' v1
//!   HTTP API (JSON and protobuf), side by side.
//! - `dns`: DNS answers/s and p99 against 1,000 apps, and how soon a
//!   record follows a moved task.
//! - `failover`: master leader SIGKILL → first acknowledged write, p50
//!   over many kills.
//! - `rss`: resident memory of each role, idle after start.
//! - `hollow`: thousands of hollow agents in this process against real
//!   masters and a Marathon scheduler; placements/s and time to RUNNING.

mod allocator;
mod api;
mod containers;
mod deploy;
mod dns;
mod failover;
mod hollow;
mod kv;
mod launch;
mod recover;
mod rss;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "meseta-bench", about = "Benchmarks and load tools for meseta")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time from POST /v2/apps to the task's TASK_RUNNING event.
    Launch(launch::LaunchArgs),
    /// Full DRF allocation cycles over many agents and frameworks.
    Allocator(allocator::AllocatorArgs),
    /// Time to deploy one app of many instances, and many apps.
    Deploy(deploy::DeployArgs),
    /// Replicated KV writes/s, p99 and leader failover (meseta or `--etcd`).
    Kv(kv::KvArgs),
    /// Start cost of Docker, image and native tasks, and of `docker run`.
    Containers(containers::ContainersArgs),
    /// Time for a restarted agent to re-attach to its tasks.
    Recover(recover::RecoverArgs),
    /// Offers → ACCEPT → TASK_RUNNING over gRPC vs the v1 HTTP API.
    Api(api::ApiArgs),
    /// DNS queries/s and p99 against 1,000 apps; record-follow latency.
    Dns(dns::DnsArgs),
    /// Hollow agents (real agents over a fake containerizer) in one
    /// process: placements/s and time to all RUNNING of one big app.
    Hollow(hollow::HollowArgs),
    /// Resident memory of master, agent and scheduler, idle after start.
    Rss(rss::RssArgs),
    /// Leader kill → first acknowledged KV write, over many runs.
    Failover(failover::FailoverArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Launch(args) => launch::run(args),
        Command::Allocator(args) => allocator::run(args),
        Command::Kv(args) => kv::run(args),
        Command::Containers(args) => containers::run(args),
        Command::Recover(args) => recover::run(args),
        Command::Api(args) => api::run(args),
        Command::Deploy(args) => deploy::run(args),
        Command::Dns(args) => dns::run(args),
        Command::Hollow(args) => hollow::run(args),
        Command::Rss(args) => rss::run(args),
        Command::Failover(args) => failover::run(args),
    };
    if let Err(e) = result {
        eprintln!("meseta-bench: {e:#}");
        std::process::exit(1);
    }
}
