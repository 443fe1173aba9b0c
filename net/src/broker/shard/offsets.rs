//! The offset executors: ListOffsets, OffsetForLeaderEpoch's epoch ends, DeleteRecords.

use super::Shard;
use crate::kafka::errors::code;
use crate::store::{LeaderEpoch, Offset, TopicPartition};

impl Shard {
    pub(super) async fn list_offsets(
        &self,
        parts: &[(TopicPartition, i64)],
    ) -> Vec<(i16, i64, i64)> {
        let mut out = Vec::with_capacity(parts.len());
        for (tp, ts) in parts {
            let log = match self.log_for(tp).await {
                Ok(log) => log,
                Err(e) => {
                    out.push((e, -1, -1));
                    continue;
                }
            };
            let r = match *ts {
                -2 => Ok(Some((log.log_start_offset(), -1))),
                -1 => Ok(Some((Offset(self.high_watermark(tp, &log)), -1))),
                -3 => log.max_timestamp().await,
                t if t >= 0 => log.offset_for_timestamp(t).await,
                _ => {
                    out.push((code::INVALID_REQUEST, -1, -1));
                    continue;
                }
            };
            out.push(match r {
                Ok(Some((o, t))) => (code::NONE, o.0, t),
                Ok(None) => (code::NONE, -1, -1),
                Err(e) => {
                    tracing::error!(shard = self.id, error = %e, "offset lookup failed");
                    (code::KAFKA_STORAGE_ERROR, -1, -1)
                }
            });
        }
        out
    }

    /// (error, end offset, epoch) per partition: where `epoch` ended, -1/-1 if unknown.
    pub(super) async fn epoch_ends(&self, parts: &[(TopicPartition, i32)]) -> Vec<(i16, i64, i64)> {
        let mut out = Vec::with_capacity(parts.len());
        for (tp, epoch) in parts {
            out.push(match self.log_for(tp).await {
                Err(e) => (e, -1, -1),
                Ok(log) => match log.end_offset_for_epoch(LeaderEpoch(*epoch)) {
                    Some((e, o)) => (code::NONE, o.0, e.0 as i64),
                    None => (code::NONE, -1, -1),
                },
            });
        }
        out
    }

    pub(super) async fn delete_records(
        &self,
        parts: &[(TopicPartition, i64)],
    ) -> Vec<(i16, i64, i64)> {
        let mut out = Vec::with_capacity(parts.len());
        for (tp, offset) in parts {
            let log = match self.log_for(tp).await {
                Ok(log) => log,
                Err(e) => {
                    out.push((e, -1, -1));
                    continue;
                }
            };
            let hw = self.high_watermark(tp, &log);
            let target = if *offset == -1 { hw } else { *offset };
            if target < 0 || target > hw {
                out.push((code::OFFSET_OUT_OF_RANGE, -1, -1));
                continue;
            }
            out.push(match log.delete_records_before(Offset(target)).await {
                Ok(low) => (code::NONE, low.0, -1),
                Err(e) => {
                    tracing::error!(shard = self.id, error = %e, "delete records failed");
                    (code::KAFKA_STORAGE_ERROR, -1, -1)
                }
            });
        }
        out
    }
}
