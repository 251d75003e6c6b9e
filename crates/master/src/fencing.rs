//! Fencing of the leading master: it acts (offers, launches, kills) only
//! while a quorum of masters confirmed its leadership recently enough that
//! no other master can have been elected since.
//!
//! Raft alone does not give that: with check-quorum a cut-off leader steps
//! down one to two election timeouts after it lost its quorum, and the
//! majority may elect a new leader one election timeout after it last
//! heard from the old one, so for a while two masters could believe they
//! lead. The lease closes the gap. Every [`RENEW_EVERY`] the leader runs a
//! Raft read barrier (ReadIndex: a heartbeat round that a quorum must
//! answer). A barrier *started* at `t` that succeeds proves that a quorum
//! heard from this leader after `t`; with pre-vote and check-quorum those
//! masters refuse to vote for anyone for an election timeout after that
//! (raft-rs' "in lease" rule), so no other leader exists before
//! `t + election timeout`. The lease is held until `t + LEASE`, a little
//! short of the shortest election timeout, and is dropped on any
//! leadership change.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Master, ELECTION_TICKS, RAFT_TICK_MS};

/// How often the leader renews its lease.
pub(crate) const RENEW_EVERY: Duration = Duration::from_millis(100);

/// How long a confirmation holds. The shortest election timeout is
/// [`ELECTION_TICKS`] ticks of [`RAFT_TICK_MS`]; a follower's first tick
/// after a heartbeat may come at once, so it cannot vote for one tick less
/// than that (350 ms with 8 ticks of 50 ms); 50 ms more are kept back for
/// scheduling delays.
pub(crate) const LEASE: Duration =
    Duration::from_millis(RAFT_TICK_MS * (ELECTION_TICKS as u64 - 1) - 50);

/// When the leader's lease runs out (`None`: not held).
#[derive(Debug, Default)]
pub(crate) struct LeaderLease {
    until: Mutex<Option<Instant>>,
}

impl LeaderLease {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A read barrier started at `started` succeeded.
    pub(crate) fn confirm(&self, started: Instant) {
        let until = started + LEASE;
        let mut slot = self.slot();
        if slot.is_none_or(|u| u < until) {
            *slot = Some(until);
        }
    }

    /// Whether this master may act as the leader now.
    pub(crate) fn valid(&self) -> bool {
        self.slot().is_some_and(|u| Instant::now() < u)
    }

    /// How long ago the lease ran out (`None` while it holds or was never
    /// held).
    pub(crate) fn lapsed_for(&self) -> Option<Duration> {
        let until = (*self.slot())?;
        Instant::now().checked_duration_since(until)
    }

    /// Leadership changed: nothing is confirmed any more.
    pub(crate) fn drop_lease(&self) {
        *self.slot() = None;
    }
}

/// Renew the lease while this master leads, forever.
pub(crate) async fn lease_loop(master: std::sync::Arc<Master>) {
    let mut lapsed_logged = false;
    loop {
        if master.raft.is_leader() {
            let started = Instant::now();
            match tokio::time::timeout(LEASE, master.raft.read_barrier()).await {
                Ok(Ok(())) => {
                    master.lease.confirm(started);
                    if lapsed_logged {
                        tracing::info!(address = %master.address, "leadership confirmed by a quorum again; acting");
                        lapsed_logged = false;
                    }
                }
                Ok(Err(_)) | Err(_) => {
                    if !master.lease.valid() && !lapsed_logged {
                        // The lease ran out before this barrier gave up:
                        // say when this master really stopped acting.
                        let ago = master.lease.lapsed_for().unwrap_or_default();
                        tracing::warn!(address = %master.address, lapsed_ms_ago = ago.as_millis() as u64, "cannot confirm leadership with a quorum of masters; no offers, launches or kills until it is");
                        lapsed_logged = true;
                    }
                }
            }
        } else {
            master.lease.drop_lease();
            lapsed_logged = false;
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}
