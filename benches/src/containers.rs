//! `meseta-bench containers`: what each kind of container costs to start,
//! side by side in one run on one `meseta up`:
//!
//! - `docker_run`: `docker run --rm IMAGE true`, the daemon's own CLI, from
//!   the command's start to its exit;
//! - `meseta_docker`: POST of a Docker app of the same image → TASK_RUNNING;
//! - `meseta_image`: a MESOS container with that image (rootfs cached after
//!   the first) → TASK_RUNNING;
//! - `meseta_native`: a plain native task → TASK_RUNNING.
//!
//! The last line is `docker_run_ms_p50=… meseta_docker_ms_p50=…
//! docker_ratio=… meseta_image_ms_p50=… meseta_native_ms_p50=…`.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use meseta_tests::{Cluster, ClusterOptions};
use serde_json::json;

use crate::launch::{default_binary, launch_app, percentile};

/// Flags of `meseta-bench containers`.
#[derive(Debug, Clone, clap::Args)]
pub struct ContainersArgs {
    /// Measured launches of each kind.
    #[arg(long, default_value_t = 10)]
    pub launches: usize,
    /// The image (built locally when it is the test image).
    #[arg(long, default_value = meseta_tests::docker::TEST_IMAGE)]
    pub image: String,
}

fn p50(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    percentile(&samples, 50.0)
}

pub fn run(args: &ContainersArgs) -> Result<()> {
    if args.launches == 0 {
        bail!("--launches must be at least 1");
    }
    meseta_tests::docker::docker_available().map_err(anyhow::Error::msg)?;
    if args.image == meseta_tests::docker::TEST_IMAGE {
        meseta_tests::docker::ensure_test_image()?;
    }
    let mut docker_run = Vec::new();
    for i in 0..=args.launches {
        let started = Instant::now();
        let status = Command::new("docker")
            .args(["run", "--rm", &args.image, "true"])
            .status()
            .context("running docker run")?;
        if !status.success() {
            bail!("docker run --rm {} true failed: {status}", args.image);
        }
        // The first run warms the daemon's caches, as the first launch of
        // each meseta kind below does.
        if i > 0 {
            docker_run.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    println!("docker run: p50 {:.1} ms", p50(docker_run.clone()));

    let cluster = Cluster::try_start(ClusterOptions {
        binary: Some(default_binary()),
        ..ClusterOptions::default()
    })?;
    let events = cluster.events("?event_type=status_update_event")?;
    let kinds = [
        (
            "meseta_docker",
            json!({"cmd": "sleep 1000", "container": {"type": "DOCKER", "docker": {"image": args.image}}}),
        ),
        (
            "meseta_image",
            json!({"cmd": "sleep 1000", "container": {"type": "MESOS", "docker": {"image": args.image}}}),
        ),
        ("meseta_native", json!({"cmd": "sleep 1000"})),
    ];
    let mut figures = Vec::new();
    for (kind, template) in kinds {
        let mut samples = Vec::new();
        for i in 0..=args.launches {
            let mut app = template.clone();
            app["id"] = json!(format!("/bench/{}-{i}", kind.replace('_', "-")));
            app["instances"] = json!(1);
            app["cpus"] = json!(0.01);
            app["mem"] = json!(32);
            let took = launch_app(&cluster, &events, &app)?;
            if i > 0 {
                samples.push(took.as_secs_f64() * 1000.0);
            }
        }
        let median = p50(samples);
        println!("{kind}: p50 {median:.1} ms");
        figures.push((kind, median));
    }
    drop(events);
    drop(cluster);
    let docker = p50(docker_run);
    let of = |k: &str| {
        figures
            .iter()
            .find(|(n, _)| *n == k)
            .map_or(f64::NAN, |(_, v)| *v)
    };
    println!(
        "docker_run_ms_p50={docker:.1} meseta_docker_ms_p50={:.1} docker_ratio={:.2} meseta_image_ms_p50={:.1} meseta_native_ms_p50={:.1}",
        of("meseta_docker"),
        of("meseta_docker") / docker,
        of("meseta_image"),
        of("meseta_native")
    );
    Ok(())
}
