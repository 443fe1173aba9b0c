//! Where partitions live: the placement table (`table`: which shard owns each partition,
//! persisted in `sluice-placement.json`) and live moves between shards (`moves`).
//!
//! Invariant: every shard routes by the same table, and a live move closes the log on one
//! shard before the other opens it.

pub(crate) mod moves;
pub(crate) mod table;

#[allow(unused_imports)]
pub(crate) use table::*;
pub use table::{hash_owner, PartitionPolicy, Pin, PlacementSettings};
