//! `meseta-bench allocator`: the DRF allocator in-process, no network.
//!
//! Builds an [`Allocator`] with `--agents` agents and `--frameworks`
//! frameworks spread over `--roles` roles (a quarter of the agents already
//! run a task of some framework, so shares differ), then runs `--cycles`
//! full allocation cycles. A cycle offers every agent's available resources
//! (one `allocate` call, timed) and then gives every offer back without a
//! filter (timed apart), so each cycle does the same full amount of work.
//! The last line is `cycle_ms_p50=<ms> cycle_ms_p99=<ms>`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meseta_core::Resources;
use meseta_master::allocator::{Allocator, AllocatorConfig};

/// Flags of `meseta-bench allocator`.
#[derive(Debug, Clone, clap::Args)]
pub struct AllocatorArgs {
    /// Number of agents.
    #[arg(long, default_value_t = 10_000)]
    pub agents: usize,
    /// Number of frameworks.
    #[arg(long, default_value_t = 100)]
    pub frameworks: usize,
    /// Number of roles the frameworks are spread over.
    #[arg(long, default_value_t = 10)]
    pub roles: usize,
    /// Measured allocation cycles (after two warm-up cycles).
    #[arg(long, default_value_t = 50)]
    pub cycles: usize,
    /// Each agent's resources.
    #[arg(
        long,
        default_value = "cpus:16;mem:65536;disk:100000;ports:[31000-32000]"
    )]
    pub resources: String,
}

/// An allocator loaded as the flags say; used by the criterion bench too.
pub fn build(agents: usize, frameworks: usize, roles: usize, resources: &str) -> Result<Allocator> {
    if frameworks == 0 || roles == 0 {
        bail!("--frameworks and --roles must be at least 1");
    }
    let total = Resources::parse(resources).context("--resources")?;
    let task = Resources::parse("cpus:4;mem:8192").context("task resources")?;
    let mut alloc = Allocator::new(AllocatorConfig::default());
    for f in 0..frameworks {
        alloc.add_framework(
            &format!("framework-{f}"),
            &format!("role-{}", f % roles),
            false,
            &[],
        );
    }
    for a in 0..agents {
        let fid = format!("framework-{}", a % frameworks);
        let used: Vec<(&str, Resources)> = if a.is_multiple_of(4) {
            vec![(fid.as_str(), task.clone())]
        } else {
            Vec::new()
        };
        alloc.add_agent(&format!("agent-{a}"), total.clone(), &used);
    }
    Ok(alloc)
}

/// One cycle: allocate everything (timed), then give it all back.
/// Returns (allocate time, recover time, offers made).
pub fn cycle(alloc: &mut Allocator) -> (Duration, Duration, usize) {
    let now = Instant::now();
    let started = Instant::now();
    let offers = alloc.allocate(now);
    let allocate = started.elapsed();
    let n = offers.len();
    let started = Instant::now();
    for o in offers {
        let (Some(f), Some(a)) = (alloc.framework_id(o.framework), alloc.agent_id(o.agent)) else {
            continue;
        };
        let (f, a) = (f.to_string(), a.to_string());
        alloc.recover(&f, &a, &o.resources, None, now);
    }
    (allocate, started.elapsed(), n)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Run the bench and print its figures.
pub fn run(args: &AllocatorArgs) -> Result<()> {
    let started = Instant::now();
    let mut alloc = build(args.agents, args.frameworks, args.roles, &args.resources)?;
    println!(
        "built allocator: agents={} frameworks={} roles={} in {:.1} ms",
        args.agents,
        args.frameworks,
        args.roles,
        started.elapsed().as_secs_f64() * 1000.0
    );
    for _ in 0..2 {
        cycle(&mut alloc);
    }
    let mut times = Vec::with_capacity(args.cycles);
    let mut recovers = Vec::with_capacity(args.cycles);
    let mut offers = 0;
    for _ in 0..args.cycles.max(1) {
        let (a, r, n) = cycle(&mut alloc);
        times.push(a.as_secs_f64() * 1000.0);
        recovers.push(r.as_secs_f64() * 1000.0);
        offers = n;
    }
    alloc
        .check_sorters()
        .map_err(anyhow::Error::msg)
        .context("allocator bookkeeping after the run")?;
    times.sort_by(f64::total_cmp);
    recovers.sort_by(f64::total_cmp);
    println!("offers_per_cycle={offers}");
    println!(
        "recover_ms_p50={:.3} recover_ms_p99={:.3}",
        percentile(&recovers, 50.0),
        percentile(&recovers, 99.0)
    );
    println!(
        "cycle_ms_p50={:.3} cycle_ms_p99={:.3}",
        percentile(&times, 50.0),
        percentile(&times, 99.0)
    );
    Ok(())
}
