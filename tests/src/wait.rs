//! Waiting for eventual conditions.
//!
//! A condition returns `Ok(value)` when it holds and `Err(why_not)` while it
//! does not; the last `why_not` is in the timeout error, so a failing test
//! says what it was still seeing. The deadline is generous on purpose: it
//! bounds a broken build, it does not check speed.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

/// Default deadline for something that should happen "soon" (a task
/// starting, a process dying after its grace period).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Default polling interval.
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `condition` every `poll` until it returns `Ok`, or fails after
/// `timeout` with `what` and the condition's last answer.
pub fn wait_until<T, E: std::fmt::Display>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut condition: impl FnMut() -> Result<T, E>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        match condition() {
            Ok(v) => return Ok(v),
            Err(why) => {
                if start.elapsed() >= timeout {
                    return Err(anyhow!(
                        "timed out after {:.1?} waiting for {what}; last seen: {why}",
                        start.elapsed()
                    ));
                }
            }
        }
        std::thread::sleep(poll);
    }
}

/// [`wait_until`] with [`DEADLINE`] and [`POLL`].
pub fn wait_for<T, E: std::fmt::Display>(
    what: &str,
    condition: impl FnMut() -> Result<T, E>,
) -> Result<T> {
    wait_until(what, DEADLINE, POLL, condition)
}
