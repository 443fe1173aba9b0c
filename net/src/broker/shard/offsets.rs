//! The offset executors: ListOffsets, OffsetForLeaderEpoch's epoch ends, DeleteRecords.
//! Each answers every asked partition, in order; a partition that fails carries its error.

use super::{DeletedRecords, EpochEnd, ListedOffset, PartitionAnswer, Shard};
use crate::kafka::errors::code;
use crate::store::{LeaderEpoch, Offset, TopicPartition};

/// ListOffsets' special timestamps.
const EARLIEST: i64 = -2;
const LATEST: i64 = -1;
const MAX_TIMESTAMP: i64 = -3;

impl Shard {
    /// The offset each `(partition, timestamp)` asks for: the log start (-2), the high
    /// watermark (-1; the last stable offset for `read_committed`), the record with the
    /// largest timestamp (-3), or the first record at or after a timestamp (≥ 0).
    pub(super) async fn list_offsets(
        &self,
        parts: &[(TopicPartition, i64)],
        read_committed: bool,
    ) -> Vec<ListedOffset> {
        let mut out = Vec::with_capacity(parts.len());
        for (tp, ts) in parts {
            let log = match self.log_for(tp).await {
                Ok(log) => log,
                Err(e) => {
                    out.push(ListedOffset::failed(e));
                    continue;
                }
            };
            let r = match *ts {
                EARLIEST => Ok(Some((log.log_start_offset(), -1))),
                LATEST if read_committed => {
                    let hw = self.high_watermark(tp, &log);
                    Ok(Some((log.last_stable_offset(hw), -1)))
                }
                LATEST => Ok(Some((self.high_watermark(tp, &log), -1))),
                MAX_TIMESTAMP => log.max_timestamp().await,
                t if t >= 0 => log.offset_for_timestamp(t).await,
                _ => {
                    out.push(ListedOffset::failed(code::INVALID_REQUEST));
                    continue;
                }
            };
            out.push(match r {
                Ok(Some((offset, timestamp))) => ListedOffset {
                    error: code::NONE,
                    offset,
                    timestamp,
                },
                Ok(None) => ListedOffset::failed(code::NONE),
                Err(e) => {
                    tracing::error!(error = %e, "offset lookup failed");
                    ListedOffset::failed(code::KAFKA_STORAGE_ERROR)
                }
            });
        }
        out
    }

    /// Where each `(partition, epoch)` ended: the epoch (or the latest before it) and its end
    /// offset, -1/-1 if unknown.
    pub(super) async fn epoch_ends(
        &self,
        parts: &[(TopicPartition, LeaderEpoch)],
    ) -> Vec<EpochEnd> {
        let mut out = Vec::with_capacity(parts.len());
        for (tp, epoch) in parts {
            out.push(match self.log_for(tp).await {
                Err(e) => EpochEnd::failed(e),
                Ok(log) => match log.end_offset_for_epoch(*epoch) {
                    Some((epoch, end_offset)) => EpochEnd {
                        error: code::NONE,
                        epoch,
                        end_offset,
                    },
                    None => EpochEnd::failed(code::NONE),
                },
            });
        }
        out
    }

    /// Deletes the records before each `(partition, offset)` (-1: the high watermark); the
    /// answer is the new log start offset.
    pub(super) async fn delete_records(
        &self,
        parts: &[(TopicPartition, Offset)],
    ) -> Vec<DeletedRecords> {
        let mut out = Vec::with_capacity(parts.len());
        for (tp, offset) in parts {
            let log = match self.log_for(tp).await {
                Ok(log) => log,
                Err(e) => {
                    out.push(DeletedRecords::failed(e));
                    continue;
                }
            };
            let hw = self.high_watermark(tp, &log).0;
            let target = if offset.0 == -1 { hw } else { offset.0 };
            if target < 0 || target > hw {
                out.push(DeletedRecords::failed(code::OFFSET_OUT_OF_RANGE));
                continue;
            }
            out.push(match log.delete_records_before(Offset(target)).await {
                Ok(low_watermark) => DeletedRecords {
                    error: code::NONE,
                    low_watermark,
                },
                Err(e) => {
                    tracing::error!(error = %e, "delete records failed");
                    DeletedRecords::failed(code::KAFKA_STORAGE_ERROR)
                }
            });
        }
        out
    }
}
