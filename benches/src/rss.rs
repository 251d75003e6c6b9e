//! `meseta-bench rss`: resident memory of each role once it has started
//! and settled, with nothing to do: one `meseta master`, one `meseta
//! agent` (posix isolation) registered with it, and one `meseta scheduler`
//! elected (the release binary when built, or `MESETA_BIN`).
//!
//! After everything is up it waits `--settle` seconds, then reads `VmRSS`
//! of each process `--samples` times, one second apart, and prints the
//! largest: `master_rss_mb=… agent_rss_mb=… scheduler_rss_mb=…`.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use meseta_tests::masters::Masters;
use meseta_tests::wait::wait_until;

use crate::hollow::{prefer_release_binary, rss_mb};

/// Flags of `meseta-bench rss`.
#[derive(Debug, Clone, clap::Args)]
pub struct RssArgs {
    /// Seconds to wait after start before reading.
    #[arg(long, default_value_t = 5)]
    pub settle: u64,
    /// Readings (one a second); the largest is reported.
    #[arg(long, default_value_t = 5)]
    pub samples: usize,
}

/// Runs the bench and prints its figures.
pub fn run(args: &RssArgs) -> Result<()> {
    prefer_release_binary();
    println!(
        "starting a master, an agent and a scheduler ({})",
        meseta_tests::meseta_binary().display()
    );
    let mut m = Masters::start(1)?;
    m.start_agent("cpus:2;mem:2048;disk:1000;ports:[31000-31100]")?;
    let scheduler = m.start_scheduler()?;
    m.wait_scheduler_elected(&scheduler, Duration::from_secs(60))?;
    let leader = m.leader()?;
    wait_until(
        "the agent registered",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            let state = m.state(leader)?;
            match state["slaves"].as_array().map(Vec::len) {
                Some(n) if n > 0 => Ok(()),
                _ => Err(anyhow!("no agent yet")),
            }
        },
    )?;
    std::thread::sleep(Duration::from_secs(args.settle));
    let pids = m.pids();
    let pid_of = |prefix: &str| {
        pids.iter()
            .find(|(name, _)| name.starts_with(prefix))
            .map(|(_, pid)| *pid)
            .with_context(|| format!("no {prefix} process"))
    };
    let roles = [
        ("master", pid_of("master")?),
        ("agent", pid_of("agent")?),
        ("scheduler", pid_of("scheduler")?),
    ];
    let mut peak = [0.0f64; 3];
    for s in 0..args.samples.max(1) {
        if s > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        for (i, (_, pid)) in roles.iter().enumerate() {
            peak[i] = peak[i].max(rss_mb(*pid)?);
        }
    }
    let line = roles
        .iter()
        .zip(peak)
        .map(|((role, _), mb)| format!("{role}_rss_mb={mb:.1}"))
        .collect::<Vec<_>>()
        .join(" ");
    println!("{line}");
    Ok(())
}
