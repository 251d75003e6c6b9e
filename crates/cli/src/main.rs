//! `meseta`: one binary for every role. Parses flags, builds the role from
//! its library crate, maps errors to an exit code.

mod client;
mod commands;
mod config;
mod dns;
mod notify;
mod task_log;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use meseta_agent::{AgentConfig, BoundAgent};
use meseta_master::{BoundMaster, MasterConfig};
use meseta_scheduler::{BoundScheduler, SchedulerConfig};
use tokio::sync::watch;

#[derive(Parser)]
#[command(name = "meseta", version, about = "Mesos + Marathon in one binary")]
struct Cli {
    /// A config file for the role (TOML; keys are the flags' names, flags
    /// override it). Default: every /etc/meseta/*.toml; also MESETA_CONFIG.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log lines as text (colours only when stderr is a terminal) or as
    /// JSON objects, one a line, for log collectors.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// A local cluster in one process: master :5050, agent :5051, scheduler :8080.
    Up(UpArgs),
    /// A master (3 or 5 of them replicate the registry with Raft).
    Master(MasterArgs),
    /// An agent: runs tasks on this host.
    Agent(AgentArgs),
    /// The Marathon-compatible scheduler (/v2 API).
    Scheduler(SchedulerArgs),
    /// The client commands: app, group, deployment, task, framework, cluster.
    #[command(flatten)]
    Client(commands::ClientCommand),
    /// Print a shell completion script: `meseta completions bash|zsh|fish`.
    Completions { shell: clap_complete::Shell },
    /// Service discovery DNS: mesos-dns' names from the leading master.
    Dns(dns::DnsArgs),
}

#[derive(Args)]
struct UpArgs {
    /// Where the master's Raft log and the agent's sandboxes live.
    #[arg(long, default_value = ".meseta")]
    data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:5050")]
    master_listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:5051")]
    agent_listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:8080")]
    scheduler_listen: SocketAddr,
    /// The agent's resources, e.g. "cpus:2;mem:2048;ports:[31000-31100]".
    #[arg(long)]
    resources: Option<String>,
    /// linux (namespaces + cgroups), posix; default: linux when possible.
    #[arg(long)]
    isolation: Option<String>,
    #[command(flatten)]
    dns: dns::UpDnsArgs,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct MasterArgs {
    /// Operator commands against running masters (instead of running one).
    #[command(subcommand)]
    operator: Option<MasterOperator>,
    #[arg(long, default_value = "0.0.0.0:5050")]
    listen: SocketAddr,
    /// host:port others reach this master at (default: the listen address).
    #[arg(long)]
    advertise: Option<String>,
    /// Every master's host:port, this one included.
    #[arg(long, value_delimiter = ',')]
    masters: Vec<String>,
    #[arg(long, default_value = ".meseta/master")]
    data_dir: PathBuf,
    /// Seconds an agent known to the registry has to re-register with a
    /// newly elected leader before it is marked unreachable.
    #[arg(long, default_value_t = 120)]
    agent_reregister_timeout: u64,
    /// Seconds between the master's pings of each agent; an unanswered
    /// ping counts as a timeout (Mesos' --agent_ping_timeout).
    #[arg(long, default_value_t = 15.0)]
    agent_ping_timeout: f64,
    /// Missed pings in a row after which an agent is marked unreachable and
    /// its tasks reported TASK_UNREACHABLE (Mesos' --max_agent_ping_timeouts).
    #[arg(long, default_value_t = 5)]
    max_agent_ping_timeouts: u32,
    /// Seconds an unreachable agent has to come back before it is marked
    /// gone: its tasks are reported TASK_GONE and, if it returns, it is told
    /// to kill them.
    #[arg(long, default_value_t = 600.0)]
    agent_removal_timeout: f64,
    /// This master's Raft node id (default: its position in --masters, from 1).
    #[arg(long)]
    node_id: Option<u64>,
    /// Join a running cluster instead of founding one (with --node-id, a new
    /// id); the leader adds it with `meseta master membership add`.
    #[arg(long, requires = "node_id")]
    join: bool,
    /// Role weights for the DRF allocator, e.g. "a=2,b=1" (others weigh 1;
    /// weights set with PUT /weights override these).
    #[arg(long)]
    weights: Option<String>,
    /// Seconds after which an unused offer is rescinded (default: never, as
    /// in Mesos).
    #[arg(long)]
    offer_timeout: Option<f64>,
}

#[derive(Subcommand)]
enum MasterOperator {
    /// Raft membership of the masters: list, add or remove a master.
    #[command(subcommand)]
    Membership(MembershipCommand),
}

#[derive(Subcommand)]
enum MembershipCommand {
    /// Print the leader, voters and every master's address.
    List {
        /// Any master's host:port.
        #[arg(long, default_value = "127.0.0.1:5050", env = "MESETA_MASTER")]
        master: String,
    },
    /// Add a master (started with `--join --node-id ID`) as a voter.
    Add {
        /// The new master's Raft node id (never used before in this cluster).
        #[arg(long)]
        id: u64,
        /// The new master's host:port.
        #[arg(long)]
        address: String,
        /// Add it as a non-voting learner first.
        #[arg(long)]
        learner: bool,
        #[arg(long, default_value = "127.0.0.1:5050", env = "MESETA_MASTER")]
        master: String,
    },
    /// Remove a master (dead or retiring) from the voters.
    Remove {
        #[arg(long)]
        id: u64,
        #[arg(long, default_value = "127.0.0.1:5050", env = "MESETA_MASTER")]
        master: String,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct AgentArgs {
    /// Commands about the cluster's agents (instead of running one).
    #[command(subcommand)]
    operator: Option<commands::agent::AgentCommand>,
    #[arg(long, default_value = "0.0.0.0:5051")]
    listen: SocketAddr,
    #[arg(long)]
    advertise: Option<String>,
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:5050")]
    masters: Vec<String>,
    /// e.g. "cpus:2;mem:2048;disk:1000;ports:[31000-31100]"; each named
    /// resource replaces the detected one.
    #[arg(long)]
    resources: Option<String>,
    /// e.g. "rack:r1;zone:a".
    #[arg(long)]
    attributes: Option<String>,
    #[arg(long)]
    hostname: Option<String>,
    #[arg(long, default_value = ".meseta/agent")]
    work_dir: PathBuf,
    /// linux (namespaces + cgroups), posix; default: linux when possible.
    #[arg(long)]
    isolation: Option<String>,
    /// Hard CPU limits with CFS quota (default: cpu shares only).
    #[arg(long)]
    cgroups_enable_cfs: bool,
    /// Parent cgroup of the agents' containers on this host.
    #[arg(long, default_value = meseta_agent::containerizer::DEFAULT_CGROUPS_ROOT)]
    cgroups_root: String,
    /// At most this many processes per task (cgroup pids controller; 0: no
    /// limit).
    #[arg(long, default_value_t = meseta_agent::containerizer::DEFAULT_PIDS_MAX)]
    cgroups_max_pids: u64,
    /// Run every task as the agent's user instead of the task's user.
    #[arg(long)]
    no_switch_user: bool,
    /// At start, re-attach to the tasks of the previous run (reconnect) or
    /// kill them (cleanup).
    #[arg(long, default_value = "reconnect")]
    recover: meseta_agent::RecoverMode,
    /// Containerizers by Mesos' names, e.g. "mesos,docker" (default: mesos,
    /// and docker when the daemon answers).
    #[arg(long, value_delimiter = ',')]
    containerizers: Option<Vec<String>>,
    /// The Docker daemon's socket.
    #[arg(long, default_value = meseta_agent::DEFAULT_DOCKER_SOCKET)]
    docker_socket: String,
    /// Most the fetcher cache keeps, e.g. "2GB", "512MB" or bytes.
    #[arg(long, default_value = "2GB", value_parser = parse_bytes)]
    fetcher_cache_size: u64,
}

/// A size as Mesos flags write it: bytes, or a number with B, KB, MB, GB
/// or TB (powers of 1024).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_uppercase();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor: u64 = match unit {
        "" | "B" => 1,
        "KB" | "K" => 1 << 10,
        "MB" | "M" => 1 << 20,
        "GB" | "G" => 1 << 30,
        "TB" | "T" => 1 << 40,
        _ => return Err(format!("'{text}' is not a size (e.g. 2GB, 512MB)")),
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 2GB, 512MB)"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("'{text}' is not a size"));
    }
    Ok((n * factor as f64) as u64)
}

#[derive(Args)]
struct SchedulerArgs {
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// host:port other schedulers and clients reach this one at (default:
    /// the listen address).
    #[arg(long)]
    advertise: Option<String>,
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:5050")]
    masters: Vec<String>,
    #[arg(long, default_value = "marathon")]
    framework_name: String,
    #[arg(long, default_value = "*")]
    role: String,
    /// The user tasks run as when an app names none (default: the user
    /// running the scheduler).
    #[arg(long)]
    mesos_user: Option<String>,
    /// Versions kept per app and of the root group (Marathon's --max_versions).
    #[arg(long, default_value_t = meseta_scheduler::engine::DEFAULT_MAX_VERSIONS)]
    max_versions: usize,
}

fn main() {
    // The task init runs in a fresh single-threaded process: dispatch it
    // before anything else (no runtime, no logging setup).
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some(meseta_agent::containerizer::TASK_INIT_SUBCOMMAND) {
        std::process::exit(meseta_agent::containerizer::init::main(&raw[2..]));
    }
    // Before any thread exists: NOTIFY_SOCKET is read and removed here.
    notify::take_socket_from_env();
    // glibc gives every thread that allocates its own malloc arena (up to
    // 8 per core), each keeping freed memory: two are plenty for a role
    // whose work is IO, and keep an idle role's memory small
    // (docs/architecture.md, "Scale and performance").
    // SAFETY: mallopt only sets an allocator tunable; no thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let env = |name: &str| std::env::var(name).ok();
    let sources = config::Sources {
        env: &env,
        default_dir: std::path::Path::new(config::DEFAULT_DIR),
    };
    let resolved = match config::resolve(
        &<Cli as clap::CommandFactory>::command(),
        std::env::args_os().collect(),
        &sources,
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meseta: {e:#}");
            std::process::exit(2);
        }
    };
    let cli = match Cli::try_parse_from(&resolved.argv) {
        Ok(cli) => cli,
        Err(e) => {
            if !resolved.origins.is_empty() && e.use_stderr() {
                eprintln!(
                    "meseta: settings taken from config: {}",
                    resolved.origins.join(", ")
                );
            }
            e.exit()
        }
    };
    init_logging(cli.log_format);
    if !resolved.files.is_empty() || !resolved.origins.is_empty() {
        tracing::info!(
            files = ?resolved.files,
            settings = ?resolved.origins,
            "configuration read"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meseta: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("meseta: {e:#}");
        // Client commands say what happened in the exit code (README:
        // "Exit codes").
        let code = e
            .downcast_ref::<client::CliError>()
            .map_or(client::exit::REFUSED, client::CliError::exit_code);
        std::process::exit(code);
    }
}

/// Logs go to stderr: text with colours only when stderr is a terminal
/// (and NO_COLOR is unset), so files and journald get no escape codes; or
/// one JSON object a line (`--log-format json`).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,h2=warn,hyper=warn,tower=warn,tonic=warn,sled=warn,raft=warn",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init()
        }
    }
}

/// For `meseta agent`: SIGTERM or Ctrl-C stop the agent and leave its tasks
/// running for the next agent on its work dir; SIGUSR1 kills the tasks
/// first (Mesos' semantics).
async fn agent_stop_signal() -> meseta_agent::StopMode {
    use tokio::signal::unix::{signal, SignalKind};
    let (term, usr1) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::user_defined1()),
    );
    let (Ok(mut term), Ok(mut usr1)) = (term, usr1) else {
        tracing::warn!("cannot listen for SIGTERM/SIGUSR1; only Ctrl-C stops the agent");
        let _ = tokio::signal::ctrl_c().await;
        return meseta_agent::StopMode::KeepTasks;
    };
    let mode = tokio::select! {
        _ = tokio::signal::ctrl_c() => meseta_agent::StopMode::KeepTasks,
        _ = term.recv() => meseta_agent::StopMode::KeepTasks,
        _ = usr1.recv() => meseta_agent::StopMode::KillTasks,
    };
    tracing::info!(?mode, "shutting down");
    notify::stopping();
    mode
}

/// Resolves on Ctrl-C or SIGTERM.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    let _ = tx.send(true);
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        notify::stopping();
        let _ = tx.send(true);
    });
    rx
}

async fn wait(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Up(a) => up(a).await,
        Command::Master(MasterArgs {
            operator: Some(MasterOperator::Membership(m)),
            ..
        }) => membership(m).await,
        Command::Master(a) => {
            let mut config = MasterConfig::new(a.listen, a.data_dir);
            config.advertise = a.advertise;
            config.masters = a.masters;
            config.node_id = a.node_id;
            config.join = a.join;
            config.agent_reregister_timeout = Duration::from_secs(a.agent_reregister_timeout);
            for (flag, secs) in [
                ("--agent-ping-timeout", a.agent_ping_timeout),
                ("--agent-removal-timeout", a.agent_removal_timeout),
            ] {
                if !(secs.is_finite() && secs > 0.0) {
                    anyhow::bail!("{flag} must be a positive number of seconds, got {secs}");
                }
            }
            if a.max_agent_ping_timeouts == 0 {
                anyhow::bail!("--max-agent-ping-timeouts must be at least 1");
            }
            config.agent_ping_timeout = Duration::from_secs_f64(a.agent_ping_timeout);
            config.max_agent_ping_timeouts = a.max_agent_ping_timeouts;
            config.agent_removal_timeout = Duration::from_secs_f64(a.agent_removal_timeout);
            if let Some(w) = &a.weights {
                config.allocator.weights =
                    meseta_master::allocator::parse_weights(w).context("--weights")?;
            }
            if let Some(secs) = a.offer_timeout {
                if !(secs.is_finite() && secs > 0.0) {
                    anyhow::bail!(
                        "--offer-timeout must be a positive number of seconds, got {secs}"
                    );
                }
                config.allocator.offer_timeout = Some(Duration::from_secs_f64(secs));
            }
            let master = BoundMaster::bind(config)
                .await
                .context("starting the master")?;
            notify::ready(&format!("master serving on {}", master.address()));
            master
                .serve(wait(shutdown_signal()))
                .await
                .context("master")
        }
        Command::Agent(AgentArgs {
            operator: Some(cmd),
            ..
        }) => Ok(commands::agent::run(cmd).await?),
        Command::Agent(a) => {
            let mut config = AgentConfig::new(a.listen, a.masters, a.work_dir);
            config.advertise = a.advertise;
            config.resources = a.resources;
            config.attributes = a.attributes;
            config.hostname = a.hostname;
            config.isolation = a.isolation;
            config.cgroups_enable_cfs = a.cgroups_enable_cfs;
            config.cgroups_root = a.cgroups_root;
            config.cgroups_max_pids = Some(a.cgroups_max_pids).filter(|n| *n > 0);
            config.switch_user = !a.no_switch_user;
            config.recover = a.recover;
            config.containerizers = a.containerizers;
            config.docker_socket = a.docker_socket;
            config.fetcher_cache_size = a.fetcher_cache_size;
            let agent = BoundAgent::bind(config)
                .await
                .context("starting the agent")?;
            notify::ready(&format!("agent serving on {}", agent.address()));
            agent
                .serve_until(agent_stop_signal())
                .await
                .context("agent")
        }
        Command::Scheduler(a) => {
            let mut config = SchedulerConfig::new(a.listen, a.masters);
            config.advertise = a.advertise;
            config.framework_name = a.framework_name;
            config.role = a.role;
            if let Some(user) = a.mesos_user {
                config.mesos_user = user;
            }
            config.max_versions = a.max_versions;
            let scheduler = BoundScheduler::bind(config)
                .await
                .context("starting the scheduler")?;
            notify::ready(&format!("scheduler serving on {}", scheduler.address()));
            scheduler
                .serve(wait(shutdown_signal()))
                .await
                .context("scheduler")
        }
        Command::Client(command) => Ok(command.run().await?),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "meseta", &mut script);
            // A closed pipe (`| head`) is not an error worth a message.
            let mut out = std::io::stdout().lock();
            let _ = std::io::Write::write_all(&mut out, &script);
            Ok(())
        }
        Command::Dns(a) => dns::run(a, wait(shutdown_signal())).await,
    }
}

/// `meseta master membership …`: one call to `/master/membership`, sent to
/// the leader (found through the given master's `/master/state`).
async fn membership(cmd: MembershipCommand) -> Result<()> {
    let client = reqwest::Client::new();
    let (master, body) = match cmd {
        MembershipCommand::List { master } => (master, None),
        MembershipCommand::Add {
            id,
            address,
            learner,
            master,
        } => {
            let action = if learner { "add_learner" } else { "add" };
            (
                master,
                Some(serde_json::json!({"action": action, "id": id, "address": address})),
            )
        }
        MembershipCommand::Remove { id, master } => (
            master,
            Some(serde_json::json!({"action": "remove", "id": id})),
        ),
    };
    let state: serde_json::Value = client
        .get(format!("http://{master}/master/state"))
        .send()
        .await
        .with_context(|| format!("reaching master {master}"))?
        .json()
        .await
        .context("reading /master/state")?;
    // Mesos' form: `master@host:port`.
    let target = match state
        .get("leader")
        .and_then(|l| l.as_str())
        .map(|l| l.trim_start_matches("master@"))
        .filter(|l| !l.is_empty())
    {
        Some(l) => l.to_string(),
        None if body.is_none() => master.clone(),
        None => anyhow::bail!("master {master} knows no leader; retry when one is elected"),
    };
    let url = format!("http://{target}/master/membership");
    let resp = match body {
        Some(b) => client.post(&url).json(&b).send().await,
        None => client.get(&url).send().await,
    }
    .with_context(|| format!("calling {url}"))?;
    let status = resp.status();
    let out: serde_json::Value = resp
        .json()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        anyhow::bail!(
            "{url}: {status}: {}",
            out.get("message").and_then(|m| m.as_str()).unwrap_or("")
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&out).unwrap_or_else(|_| out.to_string())
    );
    Ok(())
}

async fn up(a: UpArgs) -> Result<()> {
    let stop = shutdown_signal();
    let master = BoundMaster::bind(MasterConfig::new(
        a.master_listen,
        a.data_dir.join("master"),
    ))
    .await
    .context("starting the master")?;
    let master_addr = master.address().to_string();
    let mut agent_config = AgentConfig::new(
        a.agent_listen,
        vec![master_addr.clone()],
        a.data_dir.join("agent"),
    );
    agent_config.resources = a.resources;
    agent_config.isolation = a.isolation;
    // One process for a local cluster: stopping it stops its tasks too.
    agent_config.stop = meseta_agent::StopMode::KillTasks;
    let agent = BoundAgent::bind(agent_config)
        .await
        .context("starting the agent")?;
    let scheduler = BoundScheduler::bind(SchedulerConfig::new(
        a.scheduler_listen,
        vec![master_addr.clone()],
    ))
    .await
    .context("starting the scheduler")?;
    let dns = dns::bind_for_up(&a.dns, &master_addr).await?;
    let dns_addr = dns.address();
    let agent_addr = agent.address().to_string();
    let scheduler_addr = scheduler.address().to_string();
    let m = tokio::spawn(master.serve(wait(stop.clone())));
    let ag = tokio::spawn(agent.serve(wait(stop.clone())));
    let s = tokio::spawn(scheduler.serve(wait(stop.clone())));
    let d = tokio::spawn(dns.serve(wait(stop.clone())));
    notify::ready(&format!(
        "up: master {master_addr}, agent {agent_addr}, marathon {scheduler_addr}"
    ));
    eprintln!("meseta is up: master http://{master_addr}  agent http://{agent_addr}  marathon http://{scheduler_addr}  dns {dns_addr}  (Ctrl-C stops it and its tasks)");
    let (s, ag) = (s.await, ag.await);
    let m = m.await;
    d.await.context("dns task")?.context("dns")?;
    s.context("scheduler task")?.context("scheduler")?;
    ag.context("agent task")?.context("agent")?;
    m.context("master task")?.context("master")?;
    Ok(())
}
