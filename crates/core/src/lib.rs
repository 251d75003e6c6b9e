//! Shared vocabulary of meseta: ids, resources with their arithmetic, task
//! states and attributes. Pure types, no IO (like kube-core): every other
//! crate builds on these.

pub mod attributes;
pub mod error;
pub mod ids;
pub mod resources;
pub mod task;

pub use error::CoreError;
pub use resources::{Resource, ResourceValue, Resources};
pub use task::TaskStateExt;
