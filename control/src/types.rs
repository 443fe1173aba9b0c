//! Newtypes for the identifiers and counters the metadata log carries. Raw integers never
//! travel past the codec boundary (`records.rs`).

use std::fmt;

/// Broker ids, leader epochs and partition ids are the engine's: one set of newtypes for
/// the whole workspace (control depends on the engine).
pub use sluice_engine::types::{BrokerId, LeaderEpoch, PartitionId};

/// A controller's raft node id. Raft reserves 0 for "none", so controller ids start at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

/// The epoch a broker registered with; strictly larger on every re-registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BrokerEpoch(pub i64);

/// A topic's 128-bit id (Kafka's topic UUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicId(pub u128);

/// Position in the metadata log: the raft index of the last record an image contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MetadataOffset(pub u64);

/// A raft term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Term(pub u64);

/// Milliseconds on the clock the caller passes in (never read from the wall clock here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}
