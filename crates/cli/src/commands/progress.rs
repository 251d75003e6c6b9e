//! Waiting for a deployment: follows `/v2/deployments` and the app's
//! counts (`/v2/apps/{id}`) every half second and shows healthy/target and
//! the current step: an indicatif bar on a terminal, one plain line per
//! change otherwise (logs, CI). Progress goes to stderr so stdout stays
//! the command's answer.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::client::{Api, CliError};
use crate::commands::path_id;

const POLL: Duration = Duration::from_millis(500);

/// Where a deployment is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    /// `step/total action` of the deployment, or None once it is gone.
    step: Option<String>,
    /// Tasks counted as done (healthy when the app has health checks,
    /// else running) and the app's instances.
    done: u64,
    target: u64,
    checks: bool,
    failure: Option<String>,
}

impl Snapshot {
    fn line(&self, deployment: &str) -> String {
        let what = if self.checks { "healthy" } else { "running" };
        let mut line = format!(
            "deployment {deployment}: {}/{} {what}",
            self.done, self.target
        );
        if let Some(step) = &self.step {
            line.push_str(&format!(", step {step}"));
        }
        if let Some(f) = &self.failure {
            line.push_str(&format!(" (last task failure: {f})"));
        }
        line
    }
}

fn step_of(d: &Value) -> String {
    let actions: Vec<String> = d
        .get("currentActions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let action = a.get("action").and_then(Value::as_str)?;
            let app = a.get("app").and_then(Value::as_str).unwrap_or("");
            Some(format!("{action} {app}").trim().to_string())
        })
        .collect();
    format!(
        "{}/{} {}",
        d.get("currentStep").and_then(Value::as_u64).unwrap_or(0),
        d.get("totalSteps").and_then(Value::as_u64).unwrap_or(0),
        actions.join(", ")
    )
    .trim()
    .to_string()
}

async fn snapshot(api: &Api, deployment: &str, app: Option<&str>) -> Result<Snapshot, CliError> {
    let list = api.get("/v2/deployments").await?;
    let current = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d.get("id").and_then(Value::as_str) == Some(deployment));
    let mut s = Snapshot {
        step: current.map(step_of),
        done: 0,
        target: 0,
        checks: false,
        failure: None,
    };
    if let Some(app) = app {
        match api
            .get(&format!(
                "/v2/apps/{}?embed=app.lastTaskFailure",
                path_id(app)
            ))
            .await
        {
            Ok(v) => {
                let a = v.get("app").unwrap_or(&v);
                s.target = a.get("instances").and_then(Value::as_u64).unwrap_or(0);
                s.checks = a
                    .get("healthChecks")
                    .and_then(Value::as_array)
                    .is_some_and(|h| !h.is_empty());
                let key = if s.checks {
                    "tasksHealthy"
                } else {
                    "tasksRunning"
                };
                s.done = a.get(key).and_then(Value::as_u64).unwrap_or(0);
                s.failure = a.get("lastTaskFailure").and_then(|f| {
                    let state = f.get("state").and_then(Value::as_str)?;
                    let message = f.get("message").and_then(Value::as_str).unwrap_or("");
                    Some(format!("{state} {message}").trim().to_string())
                });
            }
            // The deployment removed the app.
            Err(CliError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(s)
}

/// What shows progress: a bar on a terminal, plain lines elsewhere.
enum Display {
    Bar(ProgressBar),
    Lines { last: String },
}

impl Display {
    fn new(deployment: &str) -> Display {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            let style =
                ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(format!("deployment {}", short_id(deployment)));
            bar.enable_steady_tick(Duration::from_millis(120));
            Display::Bar(bar)
        } else {
            Display::Lines {
                last: String::new(),
            }
        }
    }

    fn show(&mut self, deployment: &str, s: &Snapshot) {
        match self {
            Display::Bar(bar) => {
                bar.set_length(s.target);
                bar.set_position(s.done.min(s.target));
                let what = if s.checks { "healthy" } else { "running" };
                let mut msg = what.to_string();
                if let Some(step) = &s.step {
                    msg.push_str(&format!("  step {step}"));
                }
                if let Some(f) = &s.failure {
                    msg.push_str(&format!("  last failure: {f}"));
                }
                bar.set_message(msg);
            }
            Display::Lines { last } => {
                let line = s.line(deployment);
                if *last != line {
                    eprintln!("{line}");
                    *last = line;
                }
            }
        }
    }

    fn finish(&mut self, text: &str) {
        match self {
            Display::Bar(bar) => bar.finish_with_message(text.to_string()),
            Display::Lines { .. } => eprintln!("{text}"),
        }
    }
}

fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Waits until `deployment` is no longer listed, then checks that `app`
/// (when given) has its instances running (healthy, with health checks).
/// A deployment that ends short of that (cancelled, rolled back) or that
/// outlives `deadline` is a [`CliError::DeploymentFailed`].
pub async fn wait(
    api: &Api,
    deployment: &str,
    app: Option<&str>,
    deadline: Duration,
) -> Result<(), CliError> {
    let started = Instant::now();
    let mut display = Display::new(deployment);
    loop {
        let s = snapshot(api, deployment, app).await?;
        display.show(deployment, &s);
        if s.step.is_none() {
            if app.is_some() && s.done < s.target {
                let text = format!(
                    "deployment {deployment} ended with {}",
                    s.line(deployment)
                        .trim_start_matches(&format!("deployment {deployment}: "))
                );
                display.finish(&text);
                return Err(CliError::DeploymentFailed(text));
            }
            display.finish(&format!("deployment {deployment} done"));
            return Ok(());
        }
        if started.elapsed() >= deadline {
            let text = format!(
                "timed out after {} s waiting for {}",
                deadline.as_secs(),
                s.line(deployment)
            );
            display.finish(&text);
            return Err(CliError::DeploymentFailed(text));
        }
        tokio::time::sleep(POLL).await;
    }
}
