//! `meseta-bench launch`: time from `POST /v2/apps` to the app's
//! TASK_RUNNING, through the whole spine (scheduler → master → agent →
//! containerizer → status update → scheduler → event stream).
//!
//! Starts `meseta up` on free loopback ports (the release binary when it was
//! built, else the debug one, or `--binary`), subscribes to
//! `/v2/events?event_type=status_update_event`, then `--launches` times:
//! POSTs a one-instance `sleep 1000` app (cpus 0.01, mem 16) and measures
//! from just before the request is sent to the arrival of that app's
//! TASK_RUNNING event (the event reader timestamps each event as it reads
//! it); then deletes the app and waits for its task to end before the next
//! launch. The last line is `launch_ms_p50=<ms> launch_ms_p99=<ms>`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use meseta_tests::{Cluster, ClusterOptions, EventStream};
use serde_json::json;

/// How long one launch, or one task's end, may take before the bench gives
/// up (a broken build, not a slow one).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Flags of `meseta-bench launch`.
#[derive(Debug, Clone, clap::Args)]
pub struct LaunchArgs {
    /// Measured launches.
    #[arg(long, default_value_t = 20)]
    pub launches: usize,
    /// Unmeasured launches before the measured ones.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// The meseta binary (default: target/release/meseta if built, else
    /// target/debug/meseta).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// The agent's --isolation (default: the agent's choice; linux as root).
    #[arg(long)]
    pub isolation: Option<String>,
}

pub(crate) fn default_binary() -> PathBuf {
    let release = meseta_tests::binary::target_dir()
        .join("release")
        .join("meseta");
    if release.is_file() {
        release
    } else {
        meseta_tests::meseta_binary()
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One launch: POST, wait for TASK_RUNNING, DELETE, wait for the task's
/// end. Returns the POST → TASK_RUNNING time.
fn launch_once(cluster: &Cluster, events: &EventStream, app_id: &str) -> Result<Duration> {
    let app = json!({"id": app_id, "cmd": "sleep 1000", "instances": 1, "cpus": 0.01, "mem": 16});
    launch_app(cluster, events, &app)
}

/// [`launch_once`] of any one-instance app definition (with its `id`).
pub fn launch_app(
    cluster: &Cluster,
    events: &EventStream,
    app: &serde_json::Value,
) -> Result<Duration> {
    let app_id = app["id"].as_str().unwrap_or_default();
    let sent = Instant::now();
    let reply = cluster.marathon().post_json("/v2/apps", app)?;
    if reply.status != 201 {
        bail!("POST /v2/apps {app_id}: {reply}");
    }
    let running = events
        .next_matching(STEP_TIMEOUT, |e| {
            e.str("appId") == Some(app_id) && e.str("taskStatus") == Some("TASK_RUNNING")
        })
        .ok_or_else(|| anyhow!("no TASK_RUNNING event for {app_id} within {STEP_TIMEOUT:?}"))?;
    let latency = running.received.saturating_duration_since(sent);
    let task_id = running.str("taskId").unwrap_or_default().to_string();

    cluster.wait_deployments_done(app_id)?;
    let reply = cluster.delete_app(app_id, true)?;
    if reply.status != 200 {
        bail!("DELETE /v2/apps{app_id}: {reply}");
    }
    events
        .next_matching(STEP_TIMEOUT, |e| {
            e.str("taskId") == Some(task_id.as_str())
                && e.str("taskStatus").is_some_and(|s| s != "TASK_RUNNING")
        })
        .ok_or_else(|| {
            anyhow!("task {task_id} of {app_id} did not end within {STEP_TIMEOUT:?} of DELETE")
        })?;
    Ok(latency)
}

/// Runs the bench and prints its figures.
pub fn run(args: &LaunchArgs) -> Result<()> {
    if args.launches == 0 {
        bail!("--launches must be at least 1");
    }
    let binary = args.binary.clone().unwrap_or_else(default_binary);
    println!("starting meseta up ({})", binary.display());
    let cluster = Cluster::try_start(ClusterOptions {
        binary: Some(binary),
        isolation: args.isolation.clone(),
        ..ClusterOptions::default()
    })
    .context("starting meseta up")?;
    println!(
        "cluster up: marathon {} master {} isolation {}",
        cluster.marathon().base(),
        cluster.master().base(),
        cluster
            .isolation()
            .unwrap_or_else(|e| format!("unknown ({e})"))
    );
    let events = cluster.events("?event_type=status_update_event")?;

    let result = (|| -> Result<Vec<f64>> {
        for i in 0..args.warmup {
            let took = launch_once(&cluster, &events, &format!("/bench/warmup-{i}"))?;
            println!(
                "warmup {}/{}: {:.2} ms",
                i + 1,
                args.warmup,
                took.as_secs_f64() * 1000.0
            );
        }
        let mut samples = Vec::with_capacity(args.launches);
        for i in 0..args.launches {
            let took = launch_once(&cluster, &events, &format!("/bench/launch-{i}"))?;
            let ms = took.as_secs_f64() * 1000.0;
            println!("launch {}/{}: {ms:.2} ms", i + 1, args.launches);
            samples.push(ms);
        }
        Ok(samples)
    })();
    let mut samples = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("meseta's log tail:\n{}", cluster.log_tail(40));
            return Err(e);
        }
    };
    // Close the event stream first: it would otherwise keep meseta's HTTP
    // server from finishing its graceful shutdown.
    drop(events);
    drop(cluster);
    samples.sort_by(f64::total_cmp);
    println!(
        "launches={} min_ms={:.2} max_ms={:.2} mean_ms={:.2}",
        samples.len(),
        samples[0],
        samples[samples.len() - 1],
        samples.iter().sum::<f64>() / samples.len() as f64
    );
    println!(
        "launch_ms_p50={:.2} launch_ms_p99={:.2}",
        percentile(&samples, 50.0),
        percentile(&samples, 99.0)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 10.0);
        assert_eq!(percentile(&s, 99.0), 20.0);
        assert_eq!(percentile(&s, 100.0), 20.0);
        assert_eq!(percentile(&[3.0], 50.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
