//! Why queued apps wait: per app, statistics of the offers processed during
//! the current launch attempt, in Marathon's `/v2/queue` shape
//! (`processedOffersSummary`, `lastUnusedOffers`).

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use meseta_proto::v1 as pb;
use serde_json::{json, Value};

use crate::launch::NoOfferMatchReason;
use crate::model::marathon_timestamp;

/// How many unused offers are kept per app (`lastUnusedOffers`).
pub const LAST_UNUSED_OFFERS: usize = 10;

/// An offer an app could not use.
#[derive(Debug, Clone)]
pub struct UnusedOffer {
    pub offer: Value,
    pub reasons: Vec<NoOfferMatchReason>,
    pub at: DateTime<Utc>,
}

/// Offers processed for one app since it started waiting.
#[derive(Debug, Clone)]
pub struct LaunchStats {
    pub since: DateTime<Utc>,
    pub processed: u64,
    pub unused: u64,
    pub last_unused_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Per reason, offers of this attempt that failed first at it.
    pub attempt: BTreeMap<NoOfferMatchReason, u64>,
    /// Per agent, the first reason its last offer failed at (None: used).
    pub last_per_agent: BTreeMap<String, Option<NoOfferMatchReason>>,
    pub last_unused: VecDeque<UnusedOffer>,
}

impl LaunchStats {
    pub fn new(since: DateTime<Utc>) -> LaunchStats {
        LaunchStats {
            since,
            processed: 0,
            unused: 0,
            last_unused_at: None,
            last_used_at: None,
            attempt: BTreeMap::new(),
            last_per_agent: BTreeMap::new(),
            last_unused: VecDeque::new(),
        }
    }

    /// The app took (part of) this offer.
    pub fn used(&mut self, agent: &str, now: DateTime<Utc>) {
        self.processed += 1;
        self.last_used_at = Some(now);
        self.last_per_agent.insert(agent.to_string(), None);
    }

    /// The app could not use this offer, for `reasons` (Marathon's order).
    pub fn unused(
        &mut self,
        offer: &pb::Offer,
        reasons: Vec<NoOfferMatchReason>,
        now: DateTime<Utc>,
    ) {
        self.processed += 1;
        self.unused += 1;
        self.last_unused_at = Some(now);
        let first = reasons.first().copied();
        if let Some(r) = first {
            *self.attempt.entry(r).or_default() += 1;
        }
        let agent = offer
            .agent_id
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        self.last_per_agent.insert(agent, first);
        self.last_unused.push_back(UnusedOffer {
            offer: offer_json(offer),
            reasons,
            at: now,
        });
        while self.last_unused.len() > LAST_UNUSED_OFFERS {
            self.last_unused.pop_front();
        }
    }

    /// `processedOffersSummary`.
    pub fn summary_json(&self) -> Value {
        let last: BTreeMap<NoOfferMatchReason, u64> =
            self.last_per_agent
                .values()
                .flatten()
                .fold(BTreeMap::new(), |mut m, r| {
                    *m.entry(*r).or_default() += 1;
                    m
                });
        let mut v = json!({
            "processedOffersCount": self.processed,
            "unusedOffersCount": self.unused,
            "rejectSummaryLastOffers": steps(&last, self.last_per_agent.len() as u64),
            "rejectSummaryLaunchAttempt": steps(&self.attempt, self.processed),
        });
        if let Some(t) = self.last_unused_at {
            v["lastUnusedOfferAt"] = json!(marathon_timestamp(t));
        }
        if let Some(t) = self.last_used_at {
            v["lastUsedOfferAt"] = json!(marathon_timestamp(t));
        }
        v
    }

    /// `lastUnusedOffers`, oldest first.
    pub fn last_unused_json(&self) -> Value {
        Value::Array(
            self.last_unused
                .iter()
                .map(|u| {
                    json!({
                        "offer": u.offer,
                        "reason": u.reasons.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                        "timestamp": marathon_timestamp(u.at),
                    })
                })
                .collect(),
        )
    }
}

/// Marathon's `DeclinedOfferStep` list: every reason in order, with the
/// offers that reached the step (`processed`) and were declined at it.
fn steps(first_reasons: &BTreeMap<NoOfferMatchReason, u64>, total: u64) -> Value {
    let mut left = total;
    Value::Array(
        NoOfferMatchReason::ALL
            .iter()
            .map(|r| {
                let declined = first_reasons.get(r).copied().unwrap_or(0);
                let step = json!({"reason": r.as_str(), "declined": declined, "processed": left});
                left = left.saturating_sub(declined);
                step
            })
            .collect(),
    )
}

/// An offer in Marathon's `offer.raml` shape.
pub fn offer_json(offer: &pb::Offer) -> Value {
    let resources: Vec<Value> = offer
        .resources
        .iter()
        .map(|r| {
            let mut v = json!({"name": r.name, "role": if r.role.is_empty() { "*" } else { r.role.as_str() }});
            if let Some(s) = &r.scalar {
                v["scalar"] = json!(s.value);
            }
            if let Some(rs) = &r.ranges {
                v["ranges"] = json!(rs.range.iter().map(|x| json!({"begin": x.begin, "end": x.end})).collect::<Vec<_>>());
            }
            if let Some(s) = &r.set {
                v["set"] = json!(s.item);
            }
            v
        })
        .collect();
    let attributes: Vec<Value> = offer
        .attributes
        .iter()
        .map(|a| {
            let mut v = json!({"name": a.name});
            if let Some(t) = &a.text {
                v["text"] = json!(t.value);
            }
            if let Some(s) = &a.scalar {
                v["scalar"] = json!(s.value);
            }
            v
        })
        .collect();
    json!({
        "id": offer.id.as_ref().map(|o| o.value.clone()).unwrap_or_default(),
        "hostname": offer.hostname,
        "agentId": offer.agent_id.as_ref().map(|a| a.value.clone()).unwrap_or_default(),
        "resources": resources,
        "attributes": attributes,
    })
}
