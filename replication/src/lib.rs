//! Partition replication between brokers (issue #8; design in DESIGN.md "Replication").
//!
//! Ownership: every replicated partition is replicated by the shard that owns its log on
//! each of its replicas. On the leader, that shard owns the partition's [`LeaderState`]
//! (followers' progress, the high watermark's inputs, ISR proposals); on a follower, it owns
//! the partition's place in its fetcher. Nothing here is `Send`; nothing crosses shards.
//!
//! Invariants:
//! - The high watermark counts only bytes that are durable on every ISR member (written, or
//!   synced under the `fsync` flush policy) and moves only while at least
//!   `min(min.insync.replicas, replicas)` members are in sync.
//! - ISR changes are decided here and made by the controller; the state follows the image.

pub mod leader;

pub use leader::{Broker, FetchRefused, FollowerProgress, IsrChange, LeaderState};
