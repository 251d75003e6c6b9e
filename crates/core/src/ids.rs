//! Ids: Mesos uses opaque strings; meseta generates them from UUIDs.

use uuid::Uuid;

/// A new random id with a readable prefix, e.g. `new_id("offer")` →
/// `offer-4f1c…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4())
}

/// The unreserved role.
pub const DEFAULT_ROLE: &str = "*";
