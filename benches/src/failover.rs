//! `meseta-bench failover`: master leader failover, measured as a client
//! sees it: from the SIGKILL of the leading `meseta master` to the first
//! KV write the new leader acknowledges (the client keeps writing, through
//! the sdk's `KvClient` and its leader discovery), over `--runs` kills.
//!
//! Starts `--masters` masters (default 3; release binary when built, or
//! `MESETA_BIN`). Each run: waits until every master agrees on a leader,
//! lets writes flow for a second, kills the leader, times the first
//! acknowledged write, restarts the killed master from its data dir and
//! waits until it follows the new leader. The last line is
//! `runs=… failover_ms_p50=… failover_ms_min=… failover_ms_max=…`.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use meseta_tests::masters::Masters;

use crate::hollow::prefer_release_binary;
use crate::launch::percentile;

/// Flags of `meseta-bench failover`.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverArgs {
    /// Leader kills measured.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Masters in the cluster.
    #[arg(long, default_value_t = 3)]
    pub masters: usize,
}

/// Runs the bench and prints its figures.
pub fn run(args: &FailoverArgs) -> Result<()> {
    ensure!(args.masters >= 3, "--masters must be at least 3");
    prefer_release_binary();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut masters = Masters::start(args.masters)?;
    let client = meseta_sdk::KvClient::new(masters.addrs.clone());
    let mut took = Vec::with_capacity(args.runs);
    for run in 1..=args.runs {
        let leader = masters.wait_leader(None)?;
        // Warm: the client talks to this leader already.
        let warm = Instant::now();
        let mut n = 0u64;
        while warm.elapsed() < Duration::from_secs(1) {
            n += 1;
            runtime
                .block_on(client.put(&format!("/bench/warm/{}", n % 100), b"x".to_vec(), 0))
                .map_err(|e| anyhow::anyhow!("write before run {run}: {e}"))?;
        }
        let start = Instant::now();
        masters.kill_master(leader);
        let elapsed = runtime.block_on(async {
            let mut n = 0u64;
            loop {
                n += 1;
                if client
                    .put(&format!("/bench/failover/{n}"), b"x".to_vec(), 0)
                    .await
                    .is_ok()
                {
                    return start.elapsed();
                }
            }
        });
        let ms = elapsed.as_secs_f64() * 1000.0;
        println!(
            "run {run}/{}: killed master {leader}, first write acknowledged after {ms:.0} ms",
            args.runs
        );
        took.push(ms);
        masters.start_master(leader)?;
        // Every master, the restarted one included, names the same leader.
        masters.wait_leader(None)?;
    }
    took.sort_by(f64::total_cmp);
    println!(
        "runs={} failover_ms_p50={:.0} failover_ms_min={:.0} failover_ms_max={:.0}",
        took.len(),
        percentile(&took, 50.0),
        took.first().copied().unwrap_or(f64::NAN),
        took.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
