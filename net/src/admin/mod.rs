//! The admin side: the HTTP endpoint (`/metrics`, `/health`, `/cluster`, placement and
//! moves) on its own blocking threads, and the process-wide metrics it serves.
//!
//! Invariant: nothing here touches a shard's state directly; shards publish copies
//! (`metrics::publish_shard`) and the endpoint reads them.

pub(crate) mod http;
pub(crate) mod metrics;

pub use http::{start, AdminToken};
