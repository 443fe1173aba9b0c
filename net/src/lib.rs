//! `sluice-net`: the Kafka wire protocol server.
//!
//! Owns: one glommio executor (shard) per configured core, each accepting on the shared
//! listener (SO_REUSEPORT); framing; one handler per Kafka API (`handlers/`); routing of
//! partition work to the owning shard over a bounded channel mesh.
//!
//! Invariants:
//! - a partition's log is only touched by its owning shard, the one the placement table
//!   names ([`placement`]; [`Shard::owner_of`](shard::Shard::owner_of)); every shard
//!   routes by the same table, and a live move closes the log on one shard before the
//!   other opens it;
//! - responses on a connection leave in request order; at most `inflight_requests_max`
//!   requests per connection are in flight;
//! - every queue, buffer and connection count is bounded by a `*_max` setting;
//! - bad input closes the connection or gets an error answer, with a log line, never a panic;
//! - a panic on any broker thread ends the process ([`fatal`]); a shard whose reactor
//!   stops running its task queues is reported by `/health` ([`watchdog`]);
//! - no glommio task's waker is woken or dropped on another thread (see [`shard`]).

pub mod admin;
pub mod catalog;
pub mod cluster;
pub mod config;
mod conn;
pub mod errors;
pub mod fatal;
pub mod frame;
mod frame_pool;
pub mod groups;
pub mod handlers;
pub mod metrics;
pub mod moves;
pub mod placement;
pub mod replicas;
mod request_bytes;
mod server;
pub mod shard;
pub mod shutdown;
pub mod store;
pub mod watchdog;

pub use config::{ClusterConfig, FlushSetting, Roles, ServerConfig, TopicDefaults};
pub use groups::GroupsConfig;
pub use server::{start, Server, ServerError, StopHandle};
