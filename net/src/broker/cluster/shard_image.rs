//! `ShardImage`: a shard's own `Arc` of the metadata image, swapped when the published
//! version moves (one atomic load per look-up, no lock on the data path).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::shared_channel::SharedReceiver;
use sluice_engine::watch::OffsetWatch;

use sluice_control::{BrokerId, MetadataImage};

use super::ClusterView;
use crate::store::LeaderEpoch;

/// A shard's own handle on the image: swapped when the published version moves.
#[derive(Debug)]
pub struct ShardImage {
    pub view: Arc<ClusterView>,
    cached: RefCell<(u64, Arc<MetadataImage>)>,
    /// The published version as this shard last heard it (see `bell`).
    version: OffsetWatch,
    /// How many rings this shard has heard (see `bell`): moves after every publication
    /// and every other change the control thread rings for.
    rings: OffsetWatch,
}

impl ShardImage {
    /// On the shard's executor: `bell` is the shard's end of its channel from the control
    /// thread, which rings it at every publication.
    pub fn new(view: Arc<ClusterView>, bell: SharedReceiver<()>) -> ShardImage {
        let image = view.image();
        let version = OffsetWatch::new(image.offset().0 as i64);
        let rings = OffsetWatch::new(0);
        let listen = super::bell::listen(bell, view.clone(), version.clone(), rings.clone());
        glommio::spawn_local(listen).detach();
        ShardImage {
            cached: RefCell::new((image.offset().0, image)),
            view,
            version,
            rings,
        }
    }

    /// The current image (this shard's copy of the `Arc`).
    pub fn image(&self) -> Arc<MetadataImage> {
        let version = self.view.version();
        let mut cached = self.cached.borrow_mut();
        if cached.0 != version {
            let image = self.view.image();
            *cached = (image.offset().0, image);
        }
        cached.1.clone()
    }

    /// Whether this broker leads `topic`-`partition` in the current image.
    pub fn leads(&self, topic: &str, partition: i32) -> bool {
        let me = BrokerId(self.view.node_id);
        self.with_partition(topic, partition, |p| p.leader == Some(me))
            .unwrap_or(false)
    }

    /// The partition's leader epoch in the current image (stamped into appended batches).
    pub fn leader_epoch(&self, topic: &str, partition: i32) -> LeaderEpoch {
        LeaderEpoch(
            self.with_partition(topic, partition, |p| p.leader_epoch.0)
                .unwrap_or(0),
        )
    }

    /// KIP-392: for a consumer in `client_rack` fetching a partition this broker leads
    /// from another rack, an in-sync, unfenced replica in the consumer's rack to read from.
    pub fn preferred_read_replica(
        &self,
        topic: &str,
        partition: i32,
        client_rack: &str,
    ) -> Option<i32> {
        let image = self.image();
        let me = BrokerId(self.view.node_id);
        let rack_of = |b: BrokerId| image.broker(b).and_then(|i| i.rack.clone());
        if client_rack.is_empty() || rack_of(me).as_deref() == Some(client_rack) {
            return None;
        }
        let p = image
            .topic_by_name(topic)?
            .partitions
            .get(&sluice_control::PartitionId(partition))?;
        if p.leader != Some(me) {
            return None;
        }
        p.isr
            .iter()
            .copied()
            .filter(|b| *b != me && image.is_live(*b))
            .find(|b| rack_of(*b).as_deref() == Some(client_rack))
            .map(|b| b.0)
    }

    fn with_partition<T>(
        &self,
        topic: &str,
        partition: i32,
        f: impl FnOnce(&sluice_control::PartitionState) -> T,
    ) -> Option<T> {
        let version = self.view.version();
        let mut cached = self.cached.borrow_mut();
        if cached.0 != version {
            let image = self.view.image();
            *cached = (image.offset().0, image);
        }
        cached
            .1
            .topic_by_name(topic)
            .and_then(|t| t.partitions.get(&sluice_control::PartitionId(partition)))
            .map(f)
    }

    /// The rings heard so far: read it before looking at what the control thread changes,
    /// then [`wait_ring_after`](Self::wait_ring_after) it to wake on the next change.
    pub fn rings(&self) -> i64 {
        self.rings.get()
    }

    /// Resolves once a ring after `seen` (a value of [`rings`](Self::rings)) is heard;
    /// never, once the control thread is gone.
    pub async fn wait_ring_after(&self, seen: i64) {
        let _ = self.rings.wait_for(seen + 1).await;
    }

    /// Waits (woken by the control thread's ring, bounded by `timeout`) until the image
    /// reaches `offset`.
    pub async fn wait_for(&self, offset: u64, timeout: Duration) -> bool {
        super::bell::wait_until(&self.version, &self.view, offset, timeout).await
    }
}
