//! The broker: the shards and their mesh, start-up and stop, and this node's side of the
//! cluster.
//!
//! - `server/`: start-up (`startup`: listeners, control thread, one executor per shard),
//!   one shard's life (`shard_main`), accepting (`accept`), the shard's background tasks
//!   (`background`), and the `Server` / `StopHandle`;
//! - `shard/`: one shard's state, its calls over the mesh (`mesh`), connection balancing,
//!   task queues, routing, log look-up, and the executors by kind (produce, fetch,
//!   offsets, lifecycle);
//! - `cluster/`: the cluster view, the shard's image, the controller clients (async and
//!   blocking), the control thread, the broker agent, controlled shutdown, legacy import,
//!   `/cluster` JSON, and the version bell that wakes image waiters;
//! - `catalog`: the topic catalog (this broker's copy of the image's topics);
//! - `replicas`: the replicated partitions a shard owns (roles, high watermarks, ISR);
//! - `coordinated`: the coordinators' partitions following leadership (take on, reload
//!   on a new leader epoch, forget);
//! - `shutdown`: the bounded stop steps; `watchdog`: reactor stalls; `fatal`: panic exit;
//! - `config`: server settings as plain data (filled by `tools`).
//!
//! Invariants: a partition's log is touched only by its owning shard; no glommio waker
//! crosses threads (see `shard`; cross-thread wake-ups go through glommio's channels);
//! a panic on any broker thread ends the process; each shard's tasks run inside its
//! `shard` tracing span, each connection's inside its `conn` span.

pub(crate) mod catalog;
pub(crate) mod cluster;
pub(crate) mod config;
pub(crate) mod config_keys;
pub(crate) mod coordinated;
pub(crate) mod fatal;
pub(crate) mod replicas;
pub(crate) mod server;
pub(crate) mod shard;
pub(crate) mod shutdown;
pub(crate) mod watchdog;
