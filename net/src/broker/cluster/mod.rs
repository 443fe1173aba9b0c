//! The broker's side of the cluster: the metadata image this node serves from, its
//! registration with the active controller, and the control thread that runs them (and
//! the controller quorum member, when the node has the controller role).
//!
//! One file per job:
//! - `view`: `ClusterView` (one per process, shared by every thread) owns the latest
//!   image (`Arc<MetadataImage>`, swapped whole per version, never changed in place), the
//!   quorum as last seen, and this broker's registration state. Only the control thread
//!   publishes into it;
//! - `shard_image`: each shard keeps its own `Arc` of the image (`ShardImage`) and swaps
//!   it when the version moves: one atomic load per look-up, no lock on the data path;
//! - `controller`: the async controller client (shards, control thread);
//!   `controller_blocking`: the blocking one (admin endpoint threads);
//! - `control_thread`: the control thread and the image fetched from the quorum;
//! - `agent`: the broker's registration and heartbeats;
//! - `controlled_shutdown`: leaderships handed over before a stop, the stop report after;
//! - `legacy_import`: topics from before the quorum put into the metadata log;
//! - `status_json`: `/cluster` on the admin endpoint;
//! - `bell`: wake-ups for a new image version, across threads without a waker crossing.
//!
//! The topic catalog (`catalog.rs`) is a copy of the image's topics, synced when the
//! image is published; what the logs must follow (deleted topics, changed configs) is
//! queued for shard 0 (`take_log_work`), which tells every shard.
//!
//! Invariants: an image is published only if its offset is not older than the current
//! one; the catalog is synced before the new version becomes visible; every wait (for a
//! controller answer, for the image to reach an offset) has a deadline.

mod agent;
mod bell;
mod control_thread;
mod controlled_shutdown;
mod controller;
mod controller_blocking;
mod legacy_import;
mod shard_image;
mod status_json;
mod view;

pub(crate) use bell::channels as version_channels;
pub use control_thread::ControlError;
pub(crate) use control_thread::{control_main, ControlArgs};
pub(crate) use controlled_shutdown::report_stopped;
pub(crate) use controller::{
    alter_isr, ask_controller, change_metadata, error_code, wait_applied,
    CONTROLLER_REQUEST_TIMEOUT,
};
pub(crate) use controller_blocking::{
    change_controllers_blocking, elect_leaders_blocking, MembershipError,
};
pub(crate) use shard_image::ShardImage;
pub(crate) use status_json::status_json;
pub(crate) use view::{current, dynamic_broker_configs, BrokerState, ClusterView};
