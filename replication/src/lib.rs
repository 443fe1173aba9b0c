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
//! - A follower stores the leader's batches byte for byte, truncates against the current
//!   leader epoch before it fetches, and asks for the next offset only once what it has is
//!   durable (so the leader's count of it never includes bytes a follower crash could lose).
//! - Every network wait is bounded by a timeout and every answer by a size limit.

pub mod client;
pub mod follower;
pub mod leader;
pub mod partition;

pub use follower::{
    FetcherConfig, FetcherConfigError, Fetchers, Followed, FollowerStatus, LeaderAddr,
};
pub use leader::{FetchRefused, FollowerProgress, IsrChange, LeaderState};
