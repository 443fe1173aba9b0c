//! `sluice-control`: cluster metadata.
//!
//! What this crate owns:
//!
//! - **The metadata log records** (`records`): broker registration, fencing/unfencing,
//!   topic creation with replica assignment, partition change (leader, leader epoch, ISR,
//!   eligible leader replicas), config change, topic deletion. Encoded as flatbuffers
//!   (`schema/metadata.fbs`; the generated Rust in `src/generated/` is checked in and
//!   regenerated with `schema/regen.sh`, so building never needs `flatc`).
//! - **ACLs** (`acl`): Kafka's ACL model, the image's indexed set of bindings, filters, and
//!   the authorizer's decision as pure functions (brokers ask it per request).
//! - **The metadata image** (`image`): an immutable, versioned snapshot built by applying
//!   records in log order. Brokers hand `Arc<MetadataImage>` to their shards.
//! - **Decisions** (`placement`, `election`): rack-aware replica placement with balanced
//!   leaders; leader election from the ISR, then eligible leader replicas (KIP-966), then
//!   — only when the topic enables it — unclean; broker liveness on an explicit clock.
//! - **The active controller's broker duties** (`active`): registration, heartbeats,
//!   fencing on session expiry, unfencing, automatic preferred-leader election, controlled
//!   shutdown (leadership moved off a stopping broker, which stays fenced until it
//!   registers again).
//! - **Partition reassignment** (`reassign`): Kafka's three stages (replicas added,
//!   caught up, old ones removed), cancellation, completion with the ISR change that
//!   allows it; the state in the metadata log (`adding_replicas`, `removing_replicas`).
//! - **ISR changes** (`isr`): a partition leader's AlterPartition checked against the image
//!   (current leader and epochs, ISR within the replicas, added members eligible) and the
//!   ELR kept per KIP-966.
//! - **The controller** (`controller`, `storage`, `transport`): a raft-rs `RawNode`
//!   driven from one loop, its log and hard state on disk (`storage`), messages through
//!   the `Transport` trait; membership changes (ConfChangeV2: voters, learners).
//! - **The network** (`tcp`, `sim`): a glommio TCP transport (framed, bounded queues,
//!   reconnecting) with the controller's `run_loop`; and an in-memory network and
//!   cluster harness for deterministic tests.
//! - **Cluster TLS** (`tls`): mutual TLS between nodes (`[cluster_tls]`): the quorum port,
//!   broker requests to the controller, and the stream type both ends share with
//!   `sluice-replication`'s client.
//!
//! Wiring a node (what `sluice serve` does with this crate): `Controller::open` with the
//! quorum as `Bootstrap::Voters`, a `TcpTransport` with every peer, `tcp::serve` on the
//! node's own quorum address, `tcp::run_loop` on the controller shard. Proposers borrow the
//! controller between awaits, `propose` and send `Event::Kick`; the leader runs
//! `BrokerControl::poll` on each tick; every node publishes `Controller::image()` to its
//! shards when the offset moves.
//!
//! Invariants:
//!
//! - An image never changes; `MetadataImage::apply` returns a new one or an error, never
//!   panics, and rejects unknown topics/brokers, replica sets that are not distinct
//!   registered brokers, ISR/ELR outside the replicas, a leader outside the ISR, and
//!   broker-epoch or leader-epoch regressions. All nodes apply the same committed records
//!   in the same order, so they reach the same images (a rejected record is skipped by all).
//! - Nothing from disk or network is trusted: record buffers go through the flatbuffers
//!   verifier; storage frames carry a CRC32C and a torn or corrupt tail is cut off.
//! - The raft hard state and entries are fsynced before the messages that depend on them
//!   (`Ready::persisted_messages`) are handed to the transport.
//! - No wall-clock reads in decisions: ticks and heartbeat times come from the caller
//!   (only `tcp::run_loop` turns real time into ticks).
//! - Raft messages are never waited on: transports are bounded and drop (raft
//!   retransmits), and report every snapshot's outcome and every failed send back.

pub mod acl;
pub mod active;
pub mod controller;
pub mod election;
pub mod image;
pub mod isr;
pub mod node;
pub mod placement;
pub mod reassign;
pub mod records;
pub mod rpc;
pub mod sim;
pub mod storage;
pub mod tcp;
pub mod tls;
pub mod transport;
pub mod types;

#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn,
    missing_debug_implementations,
    unused_imports,
    dead_code,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals
)]
#[rustfmt::skip]
#[path = "generated/metadata_generated.rs"]
mod generated;

pub use active::{BrokerControl, BrokerControlConfig, HeartbeatReply, Leaving};
pub use controller::Bootstrap;
pub use controller::{
    Controller, ControllerConfig, ControllerError, ControllerStats, ControllerStatus,
    ReplicaProgress,
};
pub use election::{
    controlled_shutdown_records, elect_leader, fence_broker, preferred_leader_records,
    preferred_leader_records_except, requested_election, unfence_broker, BrokerLiveness,
    ElectionKind, ElectionOutcome, ElectionType,
};
pub use image::{BrokerInfo, ImageError, MetadataImage, PartitionState, TopicImage};
pub use isr::{alter_partition, IsrChange, IsrRefusal};
pub use placement::{
    add_partitions_records, create_topic_record, place_replicas, PlacementBroker, PlacementError,
};
pub use reassign::{OngoingReassignment, ReassignRefusal, ReassignTarget};
pub use records::{
    ConfigResource, DecodeError, Listener, PartitionAssignment, PartitionChange, Record,
    ScramCredential, ScramMechanism, SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN,
    SCRAM_SALT_BYTES_MAX, SCRAM_USER_BYTES_MAX,
};
pub use storage::{DiskStorage, StorageError};
pub use transport::Transport;
pub use types::{
    BrokerEpoch, BrokerId, LeaderEpoch, MetadataOffset, Millis, NodeId, PartitionId, Term, TopicId,
};
