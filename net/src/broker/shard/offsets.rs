//! The offset executors: ListOffsets, OffsetForLeaderEpoch's epoch ends, DeleteRecords.
//! Each answers every asked partition, in order; a partition that fails carries its error.

use super::{DeletedRecords, EpochEnd, ListedOffset, PartitionAnswer, Shard};
use crate::kafka::errors::code;
use crate::store::{LeaderEpoch, Offset, TopicPartition};

/// KIP-207's answer of a new leader whose high watermark `hw` lags the start of its
/// leadership: the client retries.
fn offset_not_available(tp: &TopicPartition, hw: Offset) -> ListedOffset {
    tracing::debug!(partition = %tp, high_watermark = %hw, "ListOffsets before the new leader's high watermark reached its epoch start");
    ListedOffset::failed(code::OFFSET_NOT_AVAILABLE)
}

/// ListOffsets' special timestamps.
const EARLIEST: i64 = -2;
const LATEST: i64 = -1;
const MAX_TIMESTAMP: i64 = -3;

impl Shard {
    /// The offset each `(partition, timestamp)` asks for: the log start (-2), the high
    /// watermark (-1; the last stable offset for `read_committed`), the record with the
    /// largest timestamp (-3), or the first record at or after a timestamp (≥ 0).
    ///
    /// For a `client` (not a follower), as Kafka (KIP-207): a timestamp lookup only finds
    /// records below what it may read (the high watermark, or the last stable offset), and
    /// a new leader whose high watermark has not yet reached the start of its leadership
    /// answers "latest", and a lookup past its high watermark, with OFFSET_NOT_AVAILABLE.
    /// Its high watermark is then still the one it learnt as a follower, which may be
    /// below what the previous leader had acknowledged and answered: a client told that
    /// lower end would take acknowledged records for missing (the nemesis's read-back
    /// stopped short of them) or start below a position it had reached.
    pub(super) async fn list_offsets(
        &self,
        parts: &[(TopicPartition, i64)],
        read_committed: bool,
        client: bool,
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
            let hw = self.high_watermark(tp, &log);
            let readable = if read_committed {
                log.last_stable_offset(hw)
            } else {
                hw
            };
            // A replica whose role has not yet caught up with the image that made this
            // broker its leader has no leadership to answer from either.
            let lagging = client
                && self
                    .replicas
                    .get(tp)
                    .is_some_and(|r| r.epoch_start().is_none_or(|start| start > hw));
            let r = match *ts {
                EARLIEST => Ok(Some((log.log_start_offset(), -1))),
                LATEST if lagging => {
                    out.push(offset_not_available(tp, hw));
                    continue;
                }
                LATEST => Ok(Some((readable, -1))),
                MAX_TIMESTAMP => log.max_timestamp().await,
                t if t >= 0 => log.offset_for_timestamp(t).await,
                _ => {
                    out.push(ListedOffset::failed(code::INVALID_REQUEST));
                    continue;
                }
            };
            // Kafka's `fetchOffsetForTimestamp`: a found record a client may not read yet
            // is not answered.
            let r = match r {
                Ok(Some((offset, _)))
                    if client && (*ts == MAX_TIMESTAMP || *ts >= 0) && offset >= readable =>
                {
                    if lagging {
                        out.push(offset_not_available(tp, hw));
                        continue;
                    }
                    Ok(None)
                }
                r => r,
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
