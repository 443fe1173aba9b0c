//! Log look-up on the owning shard: the partition's log (created on first use), the leader
//! and leader-epoch checks, the high watermark.

use super::{Reader, Shard};
use crate::kafka::errors::{code, ErrorCode};
use crate::store::{
    batch_records, BatchIter, LeaderEpoch, Marker, MarkerKind, Offset, PartitionLog, ReadLimits,
    TopicPartition,
};

/// Bytes read per step while a coordinator loads its partition.
const INTERNAL_READ_BYTES: usize = 1 << 20;

/// What a coordinator's loader is given, in log order, from its partition.
#[derive(Debug, Clone, Copy)]
pub enum InternalRecord<'a> {
    /// A record: key, value (`None`: a tombstone), offset, and the producer id of the
    /// transaction it belongs to (`None`: written outside any transaction).
    Record {
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
        offset: i64,
        transaction: Option<i64>,
    },
    /// A transaction marker: the producer's records before it are committed or aborted.
    Marker { producer_id: i64, commit: bool },
}

/// A loader's callback.
pub type OnInternalRecord<'a> = &'a mut dyn FnMut(InternalRecord<'_>);

/// Why a coordinator's partition could not be read (it is tried again).
#[derive(Debug, thiserror::Error)]
pub enum InternalReadError {
    #[error("opening the log: error code {0}")]
    Open(ErrorCode),
    #[error("waiting for the log's end to be written: {0}")]
    Written(#[source] sluice_engine::LogError),
    #[error("{0}")]
    Read(#[source] sluice_engine::ReadError),
}

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

    /// Reads a coordinator's internal partition, which this shard owns, from its start to
    /// its end: `on_record` for every record and transaction marker, in log order.
    /// Returns how many batches were skipped: only the coordinators write there,
    /// uncompressed, so anything else is not theirs to interpret (logged).
    pub async fn read_internal(
        &self,
        tp: &TopicPartition,
        on_record: OnInternalRecord<'_>,
    ) -> Result<u64, InternalReadError> {
        let log = self.log_for(tp).await.map_err(InternalReadError::Open)?;
        // Everything the log holds, the last records the follower fetcher appended before
        // the leadership came here included (they may still be in flight to the disk).
        let end = log.log_end_offset();
        log.wait_written(end)
            .await
            .map_err(InternalReadError::Written)?;
        let mut from = log.log_start_offset();
        let mut skipped = 0;
        while from < end {
            let limits = ReadLimits {
                max_bytes: INTERNAL_READ_BYTES,
                max_offset: end,
                min_one_batch: true,
            };
            let read = log
                .read(from, limits)
                .await
                .map_err(InternalReadError::Read)?;
            let before = from;
            for slice in &read.slices {
                for (_, header, bytes) in BatchIter::new(slice) {
                    from = header.next_offset();
                    if header.is_control() {
                        if let Ok(m) = Marker::parse(&header, bytes) {
                            on_record(InternalRecord::Marker {
                                producer_id: m.producer_id,
                                commit: m.kind == MarkerKind::Commit,
                            });
                        }
                        continue;
                    }
                    let transaction = header.is_transactional().then(|| header.producer_id.get());
                    let Some(recs) = batch_records(bytes) else {
                        tracing::warn!(partition = %tp, offset = header.base_offset().0, "skipping an unreadable batch in an internal topic");
                        skipped += 1;
                        continue;
                    };
                    for r in recs {
                        on_record(InternalRecord::Record {
                            key: r.key,
                            value: r.value,
                            offset: r.offset.0,
                            transaction,
                        });
                    }
                }
            }
            if from <= before {
                break;
            }
        }
        Ok(skipped)
    }
}
