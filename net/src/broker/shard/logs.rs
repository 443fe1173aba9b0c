//! Log look-up on the owning shard: the partition's log (created on first use), the leader
//! and leader-epoch checks, the high watermark.

use super::{Reader, Shard};
use crate::kafka::errors::{code, ErrorCode};
use crate::store::{LeaderEpoch, Offset, PartitionLog, TopicPartition};

impl Shard {
    /// The log of a partition this shard owns, created on first use if the topic has it.
    pub async fn log_for(&self, tp: &TopicPartition) -> Result<PartitionLog, ErrorCode> {
        if let Some(log) = self.logs.get(tp) {
            self.check_leader(tp)?;
            return Ok(log);
        }
        match self.catalog.partition_count(&tp.topic) {
            Some(n) if tp.partition.0 >= 0 && tp.partition.0 < n => {}
            _ => return Err(code::UNKNOWN_TOPIC_OR_PARTITION),
        }
        if self
            .placement
            .snapshot()
            .1
            .is_moving(&tp.topic, tp.partition.0)
        {
            // Closed here for a move: wait for it to land, then the caller goes elsewhere.
            self.wait_not_moving(std::iter::once(tp)).await;
            return match self.logs.get(tp) {
                Some(log) => Ok(log),
                None => Err(code::NOT_LEADER_OR_FOLLOWER),
            };
        }
        if self.owner_of(tp) != self.id {
            return Err(code::NOT_LEADER_OR_FOLLOWER);
        }
        self.check_leader(tp)?;
        self.open_or_create_log(tp).await
    }

    /// The partition's log on this shard, created if it does not exist yet. Creations run
    /// one at a time (a request and the replication loop may both want a new partition),
    /// so a second caller finds the first one's log instead of a half-made directory.
    pub async fn open_or_create_log(&self, tp: &TopicPartition) -> Result<PartitionLog, ErrorCode> {
        let _turn = self.create_order.acquire_permit(1).await;
        if let Some(log) = self.logs.get(tp) {
            return Ok(log);
        }
        // The placement that put this log here is in the file first (see `placement`).
        if let Err(e) = self.placement.persisted().await {
            tracing::warn!(%tp, error = %e, "creating the log on a placement not in its file");
        }
        let config = self.catalog.log_config_for(&tp.topic);
        self.logs.create(tp.clone(), config).await.map_err(|e| match e {
            // Its directory is still being removed (the topic was deleted or replaced
            // under the same name a moment ago): retriable.
            crate::store::LogError::AlreadyExists(_) => {
                tracing::warn!(topic = %tp.topic, partition = tp.partition.0, "partition directory still in use; the client retries");
                code::NOT_LEADER_OR_FOLLOWER
            }
            e => {
                tracing::error!(topic = %tp.topic, partition = tp.partition.0, error = %e, "creating partition log failed");
                code::KAFKA_STORAGE_ERROR
            }
        })
    }

    /// NOT_LEADER_OR_FOLLOWER unless the image names this broker the partition's leader
    /// (clients then refresh their metadata).
    pub(super) fn check_leader(&self, tp: &TopicPartition) -> Result<(), ErrorCode> {
        if self.cluster.leads(&tp.topic, tp.partition.0) {
            Ok(())
        } else {
            Err(code::NOT_LEADER_OR_FOLLOWER)
        }
    }

    /// The high watermark of a partition this shard owns: its replica's, or for a
    /// partition with one replica, its written end.
    pub fn high_watermark(&self, tp: &TopicPartition, log: &PartitionLog) -> Offset {
        match self.replicas.get(tp) {
            Some(r) => Offset(r.hw.get()),
            None => log.written_end_offset(),
        }
    }

    /// FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH when the client's epoch (≥ 0) is older /
    /// newer than the image's.
    pub fn check_leader_epoch(
        &self,
        tp: &TopicPartition,
        epoch: LeaderEpoch,
    ) -> Result<(), ErrorCode> {
        if epoch.0 < 0 {
            return Ok(());
        }
        let current = self.cluster.leader_epoch(&tp.topic, tp.partition.0);
        match epoch.cmp(&current) {
            std::cmp::Ordering::Less => Err(code::FENCED_LEADER_EPOCH),
            std::cmp::Ordering::Greater => Err(code::UNKNOWN_LEADER_EPOCH),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    /// The log a fetch reads: the leader's; a follower's own copy for a consumer that may
    /// read from followers.
    pub(super) async fn log_for_read(
        &self,
        tp: &TopicPartition,
        reader: Reader,
    ) -> Result<PartitionLog, ErrorCode> {
        if let Reader::Consumer {
            from_follower: true,
            ..
        } = reader
        {
            if let Some(r) = self.replicas.get(tp).filter(|r| !r.is_leader()) {
                return Ok(r.log.clone());
            }
        }
        self.log_for(tp).await
    }
}
