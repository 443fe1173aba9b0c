//! Maintenance: delete-records, retention, truncation of a diverged suffix and reset of
//! the whole log; each takes `io_lock` so it never interleaves with the flusher.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use glommio::io::DmaFile;
use std::rc::Rc;

use super::read::{read_to_log_error, Flow, READ_WINDOW_BYTES};
use super::{
    LogShared, LogState, PartitionLog, Recovered, RetentionOutcome, CHUNK_MIN_BYTES,
    INDEX_LOADS_MAX,
};
use crate::checkpoint::Checkpoint;
use crate::chunk::OpenChunk;
use crate::compact::CleanerState;
use crate::config::LogConfig;
use crate::epochs::EpochCache;
use crate::error::LogError;
use crate::files::{self, now_ms};
use crate::producer::ProducerState;
use crate::recovery;
use crate::segment::{self, Segment};
use crate::txn::TxnIndex;
use crate::types::{Offset, TopicPartition};

impl PartitionLog {
    /// Makes `offset` the new log start: offsets below it are no longer readable and
    /// whole segments below it are deleted (Kafka's DeleteRecords). Returns the new start:
    /// never past the first open transaction, whose records its marker must still find
    /// (a `read_committed` reader would otherwise miss which records it aborts).
    pub async fn delete_records_before(&self, offset: Offset) -> Result<Offset, LogError> {
        let _permit = self.shared.io_lock.acquire_permit(1).await;
        let (dir, victims, checkpoint, offset) = {
            let mut st = self.shared.state.borrow_mut();
            let high = self.written_end_offset();
            if offset < Offset::ZERO || offset > high {
                return Err(LogError::OffsetOutOfRange {
                    requested: offset,
                    low: st.log_start,
                    high,
                });
            }
            let offset = match st.producers.first_open() {
                Some(first) if offset > first => {
                    tracing::info!(asked = %offset, open_transaction_at = %first, "delete-records stops at the first open transaction");
                    first
                }
                _ => offset,
            };
            if offset <= st.log_start {
                return Ok(st.log_start);
            }
            st.log_start = offset;
            let victims = take_segments_while(&mut st, |seg, next_base| {
                next_base <= offset && seg.finalized
            });
            st.checkpoint.log_start = offset;
            (st.dir.clone(), victims, st.checkpoint, offset)
        };
        remove_segments(&self.shared, &dir, victims).await?;
        checkpoint.write(&dir).await?;
        Ok(offset)
    }

    /// Deletes closed segments past `retention.ms` (by their newest timestamp) or beyond
    /// `retention.bytes` (oldest first). The active segment is never deleted, nor the
    /// segment where the first open transaction begins or any after it (a transaction
    /// ends within its timeout). A log whose `cleanup.policy` lacks `delete` keeps
    /// everything (compaction bounds it).
    pub async fn enforce_retention(&self, now_ms: u64) -> Result<RetentionOutcome, LogError> {
        let _permit = self.shared.io_lock.acquire_permit(1).await;
        let (dir, victims, checkpoint) = {
            let mut st = self.shared.state.borrow_mut();
            if !st.config.cleanup_policy.deletes() {
                return Ok(RetentionOutcome::default());
            }
            let mut excess = match st.config.retention_bytes {
                Some(max) => {
                    (st.segments.values().map(|s| s.size).sum::<u64>()).saturating_sub(max)
                }
                None => 0,
            };
            let expired_before = st
                .config
                .retention_ms
                .map(|ms| now_ms.saturating_sub(ms) as i64);
            let first_open = st.producers.first_open();
            let victims = take_segments_while(&mut st, |seg, next_base| {
                if first_open.is_some_and(|first| next_base > first) {
                    return false;
                }
                let by_time =
                    expired_before.is_some_and(|t| seg.max_timestamp >= 0 && seg.max_timestamp < t);
                let by_size = excess >= seg.size && seg.size > 0;
                if (by_time || by_size) && seg.finalized {
                    excess = excess.saturating_sub(seg.size);
                    true
                } else {
                    false
                }
            });
            if victims.is_empty() {
                return Ok(RetentionOutcome::default());
            }
            let first = *st.segments.keys().next().expect("active segment remains");
            st.log_start = st.log_start.max(first);
            st.checkpoint.log_start = st.log_start;
            (st.dir.clone(), victims, st.checkpoint)
        };
        let outcome = RetentionOutcome {
            segments_deleted: victims.len(),
            bytes_deleted: victims.iter().map(|s| s.size).sum(),
        };
        remove_segments(&self.shared, &dir, victims).await?;
        checkpoint.write(&dir).await?;
        tracing::info!(
            segments = outcome.segments_deleted,
            bytes = outcome.bytes_deleted,
            "retention deleted segments"
        );
        Ok(outcome)
    }

    /// Removes every batch at or after `end` (the batch holding `end` goes too: the new
    /// log end is that batch's base offset). Used by replication to drop a diverged
    /// suffix. Appends are refused while it runs; waiters for removed offsets get
    /// [`LogError::Reset`]. Returns the new log end offset.
    pub async fn truncate_to(&self, end: Offset) -> Result<Offset, LogError> {
        {
            let mut st = self.shared.state.borrow_mut();
            if end >= st.next_offset {
                return Ok(st.next_offset);
            }
            if st.frozen.is_some() || st.closing {
                return Err(LogError::Reset);
            }
            st.frozen = Some("truncating");
        }
        let result = self.truncate_frozen(end).await;
        self.shared.state.borrow_mut().frozen = None;
        result
    }

    pub(super) async fn truncate_frozen(&self, end: Offset) -> Result<Offset, LogError> {
        let leo = self.log_end_offset();
        self.wait_written(leo).await?;
        let _permit = self.shared.io_lock.acquire_permit(1).await;
        let cut = self.find_cut(end, leo).await?;
        let cut_at = cut.map_or(leo, |(_, base)| base);
        if let Some(base) = self.segment_base_for(cut_at) {
            self.ensure_indexes(base).await?;
        }
        let mut tail = self.shared.state.borrow_mut().cut_tail(cut);
        let new_end = tail.new_end;
        self.write_cut(&mut tail).await?;
        let shard_config = self.shared.shard.config.clone();
        let fresh = recovery::recover(tail.dir, tail.tp, tail.config, &shard_config).await?;
        assert_eq!(
            fresh.next_offset, new_end,
            "recovery after truncation must end where the cut was made"
        );
        *self.shared.state.borrow_mut() = fresh;
        self.shared.written.reset(new_end.0);
        self.shared.synced.reset(new_end.0);
        tracing::warn!(partition = %self.topic_partition(), %new_end, "log truncated");
        Ok(new_end)
    }

    /// Where the batch holding `end` (or the first batch after the log start) begins:
    /// its position in its segment and its base offset; `None` when no batch is there.
    async fn find_cut(&self, end: Offset, leo: Offset) -> Result<Option<(u64, Offset)>, LogError> {
        let mut cut: Option<(u64, Offset)> = None;
        let target = end.max(self.log_start_offset());
        if target < leo {
            self.visit(
                target,
                leo,
                || READ_WINDOW_BYTES,
                |window, at, header| {
                    let seg_pos = window.file_pos() + at as u64;
                    cut = Some((seg_pos, header.base_offset()));
                    Flow::Stop
                },
            )
            .await
            .map_err(read_to_log_error)?;
        }
        Ok(cut)
    }

    /// Writes what a cut decided: the epoch file, the removal of later segments, the cut
    /// segment's file and indexes, the producer snapshot, and the checkpoint last.
    async fn write_cut(&self, tail: &mut CutTail) -> Result<(), LogError> {
        let dir = &tail.dir.clone();
        tail.epochs.write(dir).await?;
        let victims = std::mem::take(&mut tail.victims);
        remove_segments(&self.shared, dir, victims).await?;
        if let Some((file, seg_base, cut_pos)) = &tail.cut_segment {
            let path = dir.join(segment::log_name(*seg_base));
            files::truncate_synced(file, &path, *cut_pos).await?;
            let indexes = self
                .shared
                .state
                .borrow()
                .segments
                .get(seg_base)
                .map(|seg| seg.index_bytes(*cut_pos, tail.new_end));
            if let Some(indexes) = indexes {
                segment::write_index_files(dir, *seg_base, indexes).await?;
            }
        }
        files::write_atomic(dir, crate::producer::SNAPSHOT_FILE, &tail.snapshot).await?;
        tail.checkpoint.write(dir).await
    }

    /// Drops every segment and restarts the log empty at `offset` (Kafka's
    /// `truncateFullyAndStartAt`): for a follower whose log ends below the leader's log
    /// start, which can no longer continue it. Epochs, producer state and the clean point
    /// go with the segments. Appends are refused while it runs; waiters get
    /// [`LogError::Reset`]. Returns the new log end (`offset`).
    ///
    /// Crash safety: segment files are removed first (directory synced), then the epoch
    /// file, producer snapshot and clean point are emptied, and the recovery checkpoint
    /// naming the empty log at `offset` is written last, the commit point. A crash before
    /// it leaves a shorter log of the same batches (at worst empty at an older offset),
    /// which the follower resets again when the leader refuses its fetch offset.
    pub async fn reset_to(&self, offset: Offset) -> Result<Offset, LogError> {
        if offset < Offset::ZERO {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                low: Offset::ZERO,
                high: Offset(i64::MAX),
            });
        }
        {
            let mut st = self.shared.state.borrow_mut();
            if st.frozen.is_some() || st.closing {
                return Err(LogError::Reset);
            }
            st.frozen = Some("resetting");
        }
        let result = self.reset_frozen(offset).await;
        let mut st = self.shared.state.borrow_mut();
        st.frozen = None;
        if let Err(e) = &result {
            // The files are between the old log and the new one: take the log offline
            // (a restart recovers whichever the disk holds).
            st.failed.get_or_insert_with(|| e.to_string());
        }
        result
    }

    pub(super) async fn reset_frozen(&self, offset: Offset) -> Result<Offset, LogError> {
        let leo = self.log_end_offset();
        self.wait_written(leo).await?;
        let _permit = self.shared.io_lock.acquire_permit(1).await;
        let shard_config = self.shared.shard.config.clone();
        // As recovery sizes the open chunk of a log it opens.
        let chunk_bytes = shard_config.write_chunk_bytes.min(CHUNK_MIN_BYTES);
        let empty = Recovered {
            segments: BTreeMap::from([(offset, Segment::new(offset, now_ms()))]),
            log_start: offset,
            open: OpenChunk::new(offset, 0, &[], chunk_bytes, offset),
            checkpoint: Checkpoint {
                log_start: offset,
                segment_base: offset,
                position: 0,
                next_offset: offset,
            },
            producers: ProducerState::default(),
            txns: TxnIndex::default(),
            epochs: EpochCache::default(),
            // Written below, with the other emptied files.
            epochs_dirty: false,
            cleaner: CleanerState::default(),
        };
        let (dir, checkpoint, old) = {
            let mut st = self.shared.state.borrow_mut();
            let mut fresh = LogState::new(
                st.dir.clone(),
                st.tp.clone(),
                st.config.clone(),
                empty,
                &shard_config,
            );
            // A close or a failure that came while this waited stays in force.
            fresh.frozen = st.frozen;
            fresh.closing = st.closing;
            fresh.failed = st.failed.clone();
            let old = std::mem::replace(&mut *st, fresh);
            (st.dir.clone(), st.checkpoint, old)
        };
        // Everything was written before the swap (appends are refused while frozen), so
        // nothing of the old state is queued; give back whatever it still counted.
        debug_assert_eq!(old.pending_bytes, 0);
        self.shared.shard.pending_changed(0, old.pending_bytes);
        self.shared.written.reset(offset.0);
        self.shared.synced.reset(offset.0);
        let victims: Vec<Segment> = old.segments.into_values().collect();
        remove_segments(&self.shared, &dir, victims).await?;
        EpochCache::default().write(&dir).await?;
        let snapshot = ProducerState::default().encode(offset, std::iter::empty());
        files::write_atomic(&dir, crate::producer::SNAPSHOT_FILE, &snapshot).await?;
        CleanerState::default().write(&dir).await?;
        checkpoint.write(&dir).await?;
        tracing::warn!(partition = %self.topic_partition(), %offset, "log reset: every segment dropped, restarting empty");
        Ok(offset)
    }
}

/// What a truncation takes out of the state, to be written to disk.
#[derive(Debug)]
struct CutTail {
    dir: PathBuf,
    tp: TopicPartition,
    config: LogConfig,
    new_end: Offset,
    /// The segment cut inside: its file, base and new size.
    cut_segment: Option<(Rc<DmaFile>, Offset, u64)>,
    /// Segments wholly after the cut, already out of the state.
    victims: Vec<Segment>,
    checkpoint: Checkpoint,
    snapshot: Vec<u8>,
    epochs: EpochCache,
}

impl LogState {
    /// Cuts the state at `cut` (position and base offset of the first batch to drop; the
    /// log end when `None`): later segments leave the state, the cut segment's indexes
    /// shrink, the producer state and epoch cache forget what was after it.
    fn cut_tail(&mut self, cut: Option<(u64, Offset)>) -> CutTail {
        let (cut_pos, new_end) = match cut {
            Some((pos, base)) => (pos, base),
            None => (self.active().size, self.next_offset),
        };
        let seg_base = *self
            .segments
            .range(..=new_end)
            .next_back()
            .map(|(b, _)| b)
            .unwrap_or(&new_end);
        let later: Vec<Offset> = self
            .segments
            .range(seg_base.plus(1)..)
            .map(|(b, _)| *b)
            .collect();
        let victims: Vec<Segment> = later
            .iter()
            .filter_map(|b| self.segments.remove(b))
            .collect();
        let seg = self.segments.get_mut(&seg_base);
        let file = seg.as_ref().and_then(|s| s.file.clone());
        if let Some(seg) = seg {
            seg.index.truncate_to_position(cut_pos as u32);
            seg.time_index
                .truncate_to_offset((new_end.0 - seg_base.0) as u32);
            seg.size = cut_pos;
        }
        let checkpoint = Checkpoint {
            log_start: self.log_start.min(new_end),
            segment_base: seg_base,
            position: cut_pos,
            next_offset: new_end,
        };
        let mut producers = self.producers_written.clone();
        producers.truncate_to(new_end);
        for (producer_id, first) in self.txns.reopened_by_cut(new_end) {
            producers.reopen(producer_id, first);
        }
        self.epochs.truncate_to(new_end);
        CutTail {
            dir: self.dir.clone(),
            tp: self.tp.clone(),
            config: self.config.clone(),
            new_end,
            cut_segment: file.map(|f| (f, seg_base, cut_pos)),
            victims,
            checkpoint,
            snapshot: producers.encode(new_end, self.txns.aborted()),
            epochs: self.epochs.clone(),
        }
    }
}

/// Removes leading segments (never the last) while `pred(segment, next_base)` holds.
pub(super) fn take_segments_while(
    st: &mut LogState,
    mut pred: impl FnMut(&Segment, Offset) -> bool,
) -> Vec<Segment> {
    let mut victims = Vec::new();
    loop {
        let mut keys = st.segments.keys();
        let (Some(first), Some(next)) = (keys.next().copied(), keys.next().copied()) else {
            break;
        };
        let seg = &st.segments[&first];
        if !pred(seg, next) {
            break;
        }
        victims.extend(st.segments.remove(&first));
        st.recent.retain(|c| c.segment_base != first);
    }
    victims
}

/// Deletes the files of segments already taken out of the state; index loads in flight
/// (which open index files by path) finish first.
pub(super) async fn remove_segments(
    shared: &LogShared,
    dir: &Path,
    victims: Vec<Segment>,
) -> Result<(), LogError> {
    if victims.is_empty() {
        return Ok(());
    }
    let _all = shared
        .index_gate
        .acquire_permit(INDEX_LOADS_MAX as u64)
        .await
        .map_err(|e| LogError::Offline(e.to_string()))?;
    for seg in victims {
        Segment::remove_files(dir, seg.base)?;
        if let Some(file) = seg.file.and_then(|f| Rc::try_unwrap(f).ok()) {
            let _ = file.close().await;
        }
    }
    files::sync_dir(dir).await
}
