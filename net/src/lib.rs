//! `sluice-net`: the broker above the engine — the Kafka wire protocol, the shards that
//! own the partitions, this node's side of the cluster, and the admin endpoint.
//!
//! Map (one folder per job; each folder's `mod.rs` says more):
//! - [`kafka`]: frames, connections, one file per Kafka API (`kafka/handlers/`, one
//!   table), the Kafka error codes;
//! - `broker`: start-up and stop (`server`, `shutdown`), shards and their channel mesh
//!   (`shard`), the topic catalog, replicated partitions (`replicas`), the cluster view,
//!   controller clients and control thread (`cluster`), the stall watchdog, the panic
//!   exit, the settings;
//! - `groups`: the group coordinator (membership, offsets, their records and persistence);
//! - `txn`: the transaction coordinator (transactional ids' state in `__transaction_state`,
//!   markers);
//! - [`placement`]: which shard owns each partition (`table`), and live moves (`moves`);
//! - [`admin`]: the admin HTTP endpoint and the process-wide metrics it serves;
//! - [`security`]: listeners and their security protocols, TLS, each connection's
//!   principal;
//! - `store`: everything taken from `sluice-engine`, in one place.
//!
//! Public: only what `tools` and the fuzz targets use, re-exported below; every other
//! item is crate-internal (the folders are `pub(crate)`).
//!
//! Invariants:
//! - a partition's log is only touched by its owning shard, the one the placement table
//!   names; every shard routes by the same table, and a live move closes the log on one
//!   shard before the other opens it;
//! - responses on a connection leave in request order; at most `inflight_requests_max`
//!   requests per connection are in flight;
//! - every queue, buffer and connection count is bounded by a `*_max` setting;
//! - bad input closes the connection or gets an error answer, with a log line, never a panic;
//! - a panic on any broker thread ends the process (`broker::fatal`); a shard whose reactor
//!   stops running its task queues is reported by `/health` (`broker::watchdog`);
//! - no glommio task's waker is woken or dropped on another thread (`broker::shard`);
//! - Kafka error codes are chosen in `kafka::errors` only; library errors below stay typed.

pub mod admin;
pub(crate) mod broker;
pub(crate) mod groups;
pub mod kafka;
pub mod placement;
pub mod security;
pub(crate) mod store;
pub(crate) mod txn;

pub use broker::catalog::validate_topic_name;
pub use broker::cluster::ControlError;
pub use broker::config::{ClusterConfig, FlushSetting, Roles, ServerConfig, TopicDefaults};
pub use broker::fatal::{install_panic_exit, PanicScope, PANIC_EXIT_CODE};
pub use broker::server::{start, ExecutorError, Server, ServerError, ShardError, StopHandle};
pub use broker::shutdown::STOP_MAX;
pub use groups::{now_ms, GroupsConfig, MigrationPolicy};
pub use txn::TxnConfig;
