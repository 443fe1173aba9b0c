//! The consumer group coordinator state (single node, in memory), shared by all shards.
//! Filled in by `handlers::groups`.

use std::sync::Mutex;

/// All groups of this broker.
#[derive(Debug, Default)]
pub struct Groups {
    pub(crate) inner: Mutex<()>,
}

impl Groups {
    pub fn new() -> Groups {
        Groups::default()
    }
}
