//! The fetch executors: reads (local slices, or owned bytes for another shard) and the
//! long-poll wait for data.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;

use super::{FetchPart, FetchPartResult, Reader, Shard};
use crate::kafka::errors::{code, ErrorCode};
use crate::store::{
    BatchSlice, Offset, PartitionLog, ReadError, ReadLimits, TopicPartition, ABORTED_TXNS_MAX,
};

impl Shard {
    /// Reads for another shard: the batches are copied into owned bytes to cross threads.
    pub(super) async fn fetch_read(
        &self,
        parts: &[FetchPart],
        bytes_max: usize,
        reader: Reader,
    ) -> Vec<FetchPartResult> {
        self.fetch_read_local(parts, bytes_max, reader)
            .await
            .into_iter()
            .map(|(mut r, slices, bytes)| {
                if bytes > 0 {
                    let mut buf = BytesMut::with_capacity(bytes);
                    for s in &slices {
                        buf.extend_from_slice(s);
                    }
                    r.records = Some(buf.freeze());
                }
                r
            })
            .collect()
    }

    /// Where a fetch of `p` may read up to, and the high watermark to answer with. A
    /// follower reads up to the written end and its fetch offset counts as its durable
    /// end; a consumer reads below the high watermark (a follower's own, on a follower),
    /// a `read_committed` one below the last stable offset.
    pub(super) fn fetch_bounds(
        &self,
        p: &FetchPart,
        log: &PartitionLog,
        reader: Reader,
    ) -> Result<(Offset, Offset), ErrorCode> {
        let (upper, hw) = self.fetch_bounds_uncommitted(p, log, reader)?;
        match reader {
            Reader::Consumer {
                read_committed: true,
                ..
            } => Ok((log.last_stable_offset(hw), hw)),
            _ => Ok((upper, hw)),
        }
    }

    fn fetch_bounds_uncommitted(
        &self,
        p: &FetchPart,
        log: &PartitionLog,
        reader: Reader,
    ) -> Result<(Offset, Offset), ErrorCode> {
        self.check_leader_epoch(&p.tp, p.current_leader_epoch)?;
        match (self.replicas.get(&p.tp), reader) {
            (Some(r), Reader::Follower(id)) => {
                // Only a fetch within the log says how far the follower holds it: one
                // past the end has diverged (it is answered OFFSET_OUT_OF_RANGE and
                // truncates first).
                let within =
                    p.offset >= log.log_start_offset() && p.offset <= log.written_end_offset();
                if within {
                    r.on_follower_fetch(
                        sluice_engine::BrokerId(id),
                        p.offset.0,
                        crate::broker::replicas::now_ms(),
                    )?;
                }
                Ok((log.written_end_offset(), Offset(r.hw.get())))
            }
            (Some(r), Reader::Consumer { .. }) => Ok((Offset(r.hw.get()), Offset(r.hw.get()))),
            (None, _) => {
                let hw = log.written_end_offset();
                Ok((hw, hw))
            }
        }
    }

    /// Reads partitions this shard owns: each answer with the engine's batch slices (not
    /// copied) and their byte count.
    pub async fn fetch_read_local(
        &self,
        parts: &[FetchPart],
        bytes_max: usize,
        reader: Reader,
    ) -> Vec<(FetchPartResult, Vec<BatchSlice>, usize)> {
        let mut left = bytes_max;
        let mut any_data = false;
        let mut out = Vec::with_capacity(parts.len());
        for p in parts {
            let bounds = match self.log_for_read(&p.tp, reader).await {
                Ok(log) => self.fetch_bounds(p, &log, reader).map(|b| (log, b)),
                Err(error) => Err(error),
            };
            let (log, (upper, hw)) = match bounds {
                Ok(b) => b,
                Err(error) => {
                    let r = FetchPartResult {
                        error,
                        high_watermark: Offset(-1),
                        last_stable: Offset(-1),
                        log_start: Offset(-1),
                        records: None,
                        aborted: Vec::new(),
                    };
                    out.push((r, Vec::new(), 0));
                    continue;
                }
            };
            let log_start = log.log_start_offset();
            let read_committed = matches!(
                reader,
                Reader::Consumer {
                    read_committed: true,
                    ..
                }
            );
            let mut r = FetchPartResult {
                error: code::NONE,
                high_watermark: hw,
                last_stable: log.last_stable_offset(hw),
                log_start,
                records: None,
                aborted: Vec::new(),
            };
            let mut slices = Vec::new();
            let mut bytes = 0;
            // Past the high watermark but within the log is not out of range: a consumer
            // that read from an earlier leader may be ahead of this one's high watermark
            // until the followers report.
            if p.offset < log_start || p.offset > upper.max(log.written_end_offset()) {
                r.error = code::OFFSET_OUT_OF_RANGE;
            } else if p.offset < upper && (left > 0 || !any_data) {
                let limits = ReadLimits {
                    max_bytes: p.partition_bytes_max.min(left),
                    max_offset: upper,
                    min_one_batch: !any_data,
                };
                match log.read(p.offset, limits).await {
                    Ok(batches) => {
                        self.count_traffic(&p.tp, |t| {
                            t.bytes_out += batches.bytes as u64;
                            t.fetch_requests += 1;
                        });
                        if batches.bytes > 0 {
                            any_data = true;
                            left = left.saturating_sub(batches.bytes);
                            bytes = batches.bytes;
                            slices = batches.slices;
                            if read_committed {
                                // Every aborted transaction the index holds fits (a
                                // bounded list): a consumer told of fewer would deliver
                                // aborted records.
                                r.aborted =
                                    log.aborted_transactions(p.offset, upper, ABORTED_TXNS_MAX);
                            }
                        }
                    }
                    Err(ReadError::OffsetOutOfRange { .. }) => r.error = code::OFFSET_OUT_OF_RANGE,
                    Err(e) => {
                        tracing::error!(error = %e, "read failed");
                        r.error = code::KAFKA_STORAGE_ERROR;
                    }
                }
            }
            out.push((r, slices, bytes));
        }
        out
    }

    /// Returns once any named partition has data past its offset (written data for a
    /// follower, the high watermark for a consumer), the wait is over, or the shard is
    /// stopping.
    pub(super) async fn fetch_wait(
        &self,
        parts: &[(TopicPartition, Offset)],
        wait_ms: u64,
        reader: Reader,
    ) {
        let mut waits: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> =
            Vec::with_capacity(parts.len() + 2);
        for (tp, offset) in parts {
            let Ok(log) = self.log_for_read(tp, reader).await else {
                return;
            };
            let end = Offset(offset.0 + 1);
            match self.replicas.get(tp) {
                Some(r) if matches!(reader, Reader::Consumer { .. }) => {
                    if r.hw.get() > offset.0 {
                        return;
                    }
                    let wait = r.hw.wait_for(end.0);
                    waits.push(Box::pin(async move {
                        let _ = wait.await;
                    }));
                }
                _ => {
                    if log.written_end_offset() > *offset {
                        return;
                    }
                    waits.push(Box::pin(async move {
                        let _ = log.wait_written(end).await;
                    }));
                }
            }
        }
        waits.push(Box::pin(glommio::timer::sleep(Duration::from_millis(
            wait_ms,
        ))));
        waits.push(Box::pin(self.stopping.wait()));
        futures_lite::future::poll_fn(|cx| {
            for w in waits.iter_mut() {
                if w.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        })
        .await
    }
}
