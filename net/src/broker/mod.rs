//! The broker: the shards and their mesh, start-up and stop, and this node's side of the
//! cluster.
//!
//! - `server`: start-up (listeners, mesh, one executor per shard) and the stop handle;
//! - `shard`: one shard's state, its end of the mesh and the operations it executes;
//! - `catalog`: the topic catalog (this broker's copy of the image's topics);
//! - `cluster`: the cluster view, the controller clients, the control thread and agent;
//! - `replicas`: the replicated partitions a shard owns (roles, high watermarks, ISR);
//! - `shutdown`: the bounded stop steps; `watchdog`: reactor stalls; `fatal`: panic exit;
//! - `config`: server settings as plain data (filled by `tools`).
//!
//! Invariants: a partition's log is touched only by its owning shard; no glommio waker
//! crosses threads (see `shard`); a panic on any broker thread ends the process.

pub(crate) mod catalog;
pub(crate) mod cluster;
pub(crate) mod config;
pub(crate) mod fatal;
pub(crate) mod replicas;
pub(crate) mod server;
pub(crate) mod shard;
pub(crate) mod shutdown;
pub(crate) mod watchdog;
