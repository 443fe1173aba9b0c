//! Partition lifecycle operations: closing a log for a live move, opening it on the new
//! shard, deleting a deleted topic's logs and the logs of partitions a reassignment moved
//! off this broker, applying a changed topic config.

use sluice_control::{BrokerId, MetadataImage};

use super::{Shard, ShardReply};
use crate::store::{PartitionId, TopicPartition};

impl Shard {
    /// Stops appends to `tp` (the table marks it moving, so new ones wait), waits for the
    /// appends before it (the FIFO append turn), and closes the log: written, synced and
    /// checkpointed, idempotent producer state included.
    pub(super) async fn move_out(&self, tp: &TopicPartition) -> ShardReply {
        let _turn = self.append_order.acquire_permit(1).await;
        let Some(log) = self.logs.get(tp) else {
            // Never opened here (no traffic yet): nothing to close.
            return ShardReply::Done;
        };
        match self.logs.release(tp).await {
            Ok(()) => {
                self.traffic.borrow_mut().remove(tp);
                tracing::info!(partition = %tp, end = log.log_end_offset().0, "partition closed for a move");
                ShardReply::Done
            }
            Err(e) => {
                tracing::error!(partition = %tp, error = %e, "closing a partition for a move failed");
                ShardReply::Failed(format!("closing {tp} on shard {}: {e}", self.id))
            }
        }
    }

    /// Opens a moved partition's log on this shard (recovery trusts its checkpoint).
    pub(super) async fn move_in(&self, tp: &TopicPartition) -> ShardReply {
        if self.logs.get(tp).is_some() {
            return ShardReply::Done;
        }
        let config = self.catalog.log_config_for(&tp.topic);
        let result = if self.logs.data_dir().join(tp.dir_name()).exists() {
            self.logs.adopt(tp.clone(), config).await
        } else {
            // Never written: it is created on first use.
            return ShardReply::Done;
        };
        match result {
            Ok(log) => {
                tracing::info!(partition = %tp, end = log.log_end_offset().0, "partition opened after a move");
                ShardReply::Done
            }
            Err(e) => {
                tracing::error!(partition = %tp, error = %e, "opening a moved partition failed");
                ShardReply::Failed(format!("opening {tp} on shard {}: {e}", self.id))
            }
        }
    }

    pub(super) async fn delete_topic(&self, name: &str, partitions: i32) {
        for p in 0..partitions {
            let tp = TopicPartition {
                topic: name.to_string(),
                partition: PartitionId(p),
            };
            if self.owner_of(&tp) == self.id && self.logs.get(&tp).is_some() {
                if let Err(e) = self.logs.delete(&tp).await {
                    tracing::error!(topic = name, partition = p, error = %e, "deleting partition log failed");
                }
            }
        }
    }

    /// Deletes this shard's logs of partitions whose replicas in `image` no longer include
    /// this broker (a reassignment removed it: Kafka's StopReplica with deletion). Topics
    /// the image lacks are left to topic deletion. The caller has stopped following them
    /// (`fetchers` no longer has them); a follower operation still in flight on one
    /// finishes before its log is closed.
    pub(crate) async fn delete_removed_replicas(
        &self,
        image: &MetadataImage,
        fetchers: Option<&sluice_replication::Fetchers>,
    ) {
        let me = BrokerId(self.config.node_id);
        for tp in self.logs.partitions() {
            let removed = image
                .topic_by_name(&tp.topic)
                .and_then(|t| {
                    t.partitions
                        .get(&sluice_control::PartitionId(tp.partition.0))
                })
                .is_some_and(|p| !p.replicas.contains(&me));
            if !removed {
                continue;
            }
            if let Some(f) = fetchers {
                f.released(&tp).await;
            }
            // One log creation or deletion at a time (a request may be creating it).
            // Not the append turn: a produce holding it while it waits must not hold up
            // the replication loop that calls this.
            let _turn = self.create_order.acquire_permit(1).await;
            match self.logs.delete(&tp).await {
                Ok(()) => {
                    self.traffic.borrow_mut().remove(&tp);
                    tracing::info!(partition = %tp, "partition reassigned away from this broker: local copy deleted");
                }
                Err(e) => {
                    tracing::error!(partition = %tp, error = %e, "deleting a reassigned partition's log failed")
                }
            }
        }
    }

    /// Gives the logs of `topic` this shard holds the topic's current config.
    pub(super) fn apply_config(&self, topic: &str) {
        let config = self.catalog.log_config_for(topic);
        for tp in self.logs.partitions() {
            if tp.topic == topic {
                if let Some(log) = self.logs.get(&tp) {
                    if let Err(e) = log.set_config(config.clone()) {
                        tracing::error!(topic = %topic, error = %e, "applying topic config failed");
                    }
                }
            }
        }
    }
}
