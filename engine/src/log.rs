//! A partition log: the segments of one partition, appends into the open chunk, the
//! flusher task that writes and syncs, reads of whole batches, and maintenance
//! (retention, delete-records, truncation).
//!
//! Ownership: one shard owns a log; all state sits in one `RefCell` that is never
//! borrowed across an `.await`. One flusher task per log is the only writer of segment
//! files; maintenance that touches files takes `io_lock`, which the flusher holds for each
//! of its cycles, so file operations never interleave.
//!
//! Offsets: `log_start ≤ synced_end ≤ written_end ≤ next_offset`. Reads see only
//! `[log_start, written_end)`: what a consumer reads survives a crash of the process.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Duration;

use glommio::io::DmaFile;
use glommio::sync::Semaphore;

use crate::batch::{self, BatchHeader, BatchIter};
use crate::checkpoint::Checkpoint;
use crate::chunk::{BatchSlice, OpenChunk, SealedChunk, Window};
use crate::compact::CleanerState;
use crate::config::{FlushPolicy, LogConfig, ShardConfig, TimestampType};
use crate::epochs::EpochCache;
use crate::error::{AppendError, LogError, ReadError};
use crate::files::{self, align_down, align_up, now_ms};
use crate::producer::{ProducerBatch, ProducerState, Verdict};
use crate::recovery;
use crate::segment::{self, Segment};
use crate::shard::ShardResources;
use crate::types::{LeaderEpoch, Offset, TopicPartition};
use crate::watch::{OffsetWatch, Signal};

/// What an append assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// Largest batch max timestamp of the request.
    pub max_timestamp: i64,
    pub record_count: u32,
    pub batch_count: u32,
    /// Log start offset at the time of the append (Kafka reports it in produce answers).
    pub log_start_offset: Offset,
    /// The request retried batches already in the log: nothing was appended and the
    /// offsets are the original ones.
    pub duplicate: bool,
    /// The broker time written into the batches of a LogAppendTime topic.
    pub log_append_time_ms: Option<i64>,
}

/// Bounds of one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Byte budget for whole batches.
    pub max_bytes: usize,
    /// Exclusive upper bound on offsets returned (e.g. the high watermark).
    pub max_offset: Offset,
    /// Return the first batch even when it is larger than `max_bytes` (Kafka: KIP-74).
    pub min_one_batch: bool,
}

/// Whole batches from a read, in offset order.
#[derive(Debug, Default, Clone)]
pub struct ReadBatches {
    pub slices: Vec<BatchSlice>,
    pub bytes: usize,
}

/// What retention removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

/// A cheap handle to a partition log; every clone is the same log.
#[derive(Debug, Clone)]
pub struct PartitionLog {
    pub(crate) shared: Rc<LogShared>,
}

#[derive(Debug)]
pub(crate) struct LogShared {
    pub(crate) state: RefCell<LogState>,
    pub(crate) shard: Rc<ShardResources>,
    pub(crate) written: OffsetWatch,
    pub(crate) synced: OffsetWatch,
    pub(crate) flusher_wake: Signal,
    /// Raised to 1 when the flusher has exited.
    pub(crate) flusher_done: OffsetWatch,
    pub(crate) io_lock: Semaphore,
    /// Loads of index files in flight hold one permit each; a compaction swap takes all
    /// of them before it removes or renames index files.
    pub(crate) index_gate: Semaphore,
}

/// A written chunk as a log sees it: its own range, and the chunk if still cached.
#[derive(Debug)]
pub(crate) struct CachedRef {
    pub(crate) segment_base: Offset,
    pub(crate) own_start: u64,
    pub(crate) end: u64,
    pub(crate) chunk: Weak<SealedChunk>,
}

#[derive(Debug)]
pub(crate) struct LogState {
    pub(crate) dir: PathBuf,
    pub(crate) tp: TopicPartition,
    pub(crate) config: LogConfig,
    pub(crate) segments: BTreeMap<Offset, Segment>,
    pub(crate) log_start: Offset,
    pub(crate) next_offset: Offset,
    pub(crate) open: OpenChunk,
    pub(crate) pending: VecDeque<Rc<SealedChunk>>,
    pub(crate) pending_bytes: usize,
    /// Capacity of the next open chunk: doubles while chunks fill up, halves when one is
    /// flushed less than a quarter full, within [`chunk_min`, `chunk_max`].
    pub(crate) chunk_capacity: usize,
    pub(crate) chunk_min: usize,
    pub(crate) chunk_max: usize,
    pub(crate) recent: VecDeque<CachedRef>,
    /// The segment the flusher last wrote to.
    pub(crate) writing_segment: Option<Offset>,
    /// The last point known synced: (segment, position, next offset).
    pub(crate) synced_point: (Offset, u64, Offset),
    pub(crate) checkpoint: Checkpoint,
    pub(crate) unsynced_bytes: u64,
    pub(crate) last_sync_ms: u64,
    pub(crate) last_checkpoint_ms: u64,
    pub(crate) sync_requested: bool,
    /// Idempotent producers as of the log end (validates appends).
    pub(crate) producers: ProducerState,
    /// Idempotent producers as of the written offset (what snapshots record).
    pub(crate) producers_written: ProducerState,
    /// Closed segments whose indexes are in memory, least recently used first.
    pub(crate) loaded_indexes: VecDeque<Offset>,
    /// Leader epochs and where each began.
    pub(crate) epochs: EpochCache,
    /// `epochs` changed since the flusher last wrote its file.
    pub(crate) epochs_dirty: bool,
    /// Producer batches appended but not yet written, in offset order.
    pub(crate) producer_pending: VecDeque<ProducerBatch>,
    pub(crate) frozen: Option<&'static str>,
    pub(crate) failed: Option<String>,
    pub(crate) closing: bool,
    /// What compaction has cleaned (`cleaner.checkpoint`); changed only by the cleaner.
    pub(crate) cleaner: CleanerState,
    /// Segments whose files a compaction swap is renaming: their indexes are not loaded
    /// from disk meanwhile (reads scan them from their start).
    pub(crate) swapping: Vec<Offset>,
}

/// What recovery found on disk, to build a [`LogState`] from.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) segments: BTreeMap<Offset, Segment>,
    pub(crate) log_start: Offset,
    pub(crate) open: OpenChunk,
    pub(crate) checkpoint: Checkpoint,
    pub(crate) producers: ProducerState,
    pub(crate) epochs: EpochCache,
    pub(crate) cleaner: CleanerState,
}

impl LogState {
    /// Builds the state of a log recovered to `next_offset`, its last segment open for
    /// appends with the partial last block in `open`.
    pub(crate) fn new(
        dir: PathBuf,
        tp: TopicPartition,
        config: LogConfig,
        recovered: Recovered,
        shard: &ShardConfig,
    ) -> Self {
        let Recovered {
            segments,
            log_start,
            open,
            checkpoint,
            producers,
            epochs,
            cleaner,
        } = recovered;
        let next_offset = open.end_offset;
        let (active_base, active_size) = segments
            .last_key_value()
            .map(|(b, s)| (*b, s.size))
            .unwrap_or((next_offset, 0));
        let now = now_ms();
        LogState {
            dir,
            tp,
            config,
            segments,
            log_start,
            next_offset,
            open,
            pending: VecDeque::new(),
            pending_bytes: 0,
            chunk_capacity: shard.write_chunk_bytes.min(CHUNK_MIN_BYTES),
            chunk_min: shard.write_chunk_bytes.min(CHUNK_MIN_BYTES),
            chunk_max: shard.write_chunk_bytes,
            recent: VecDeque::new(),
            writing_segment: Some(active_base),
            synced_point: (active_base, active_size, next_offset),
            checkpoint,
            unsynced_bytes: 0,
            last_sync_ms: now,
            last_checkpoint_ms: now,
            sync_requested: false,
            producers_written: producers.clone(),
            producers,
            producer_pending: VecDeque::new(),
            loaded_indexes: VecDeque::new(),
            epochs,
            epochs_dirty: false,
            frozen: None,
            failed: None,
            closing: false,
            cleaner,
            swapping: Vec::new(),
        }
    }

    /// Records that a closed segment's indexes are in use; unloads the least recently
    /// used beyond [`LOADED_INDEXES_MAX`].
    pub(crate) fn touch_indexes(&mut self, base: Offset) {
        self.loaded_indexes.retain(|b| *b != base);
        self.loaded_indexes.push_back(base);
        while self.loaded_indexes.len() > LOADED_INDEXES_MAX {
            let Some(old) = self.loaded_indexes.pop_front() else {
                break;
            };
            if let Some(seg) = self.segments.get_mut(&old).filter(|s| s.finalized) {
                seg.unload_indexes();
            }
        }
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn buffered_bytes(&self) -> usize {
        self.pending_bytes + self.open.capacity()
    }

    /// Seals the open chunk (if it holds batches) into the pending queue; when it was
    /// mostly empty the log is idle, and the next buffer is smaller.
    /// Returns the bytes queued.
    pub(crate) fn seal_open(&mut self) -> usize {
        if !self.open.has_batches() {
            return 0;
        }
        // Shrink only when the log is really idle: a chunk sealed less than a quarter full.
        if self.open.len * 4 < self.open.capacity() {
            self.chunk_capacity = (self.chunk_capacity / 2).max(self.chunk_min);
        }
        let sealed = Rc::new(self.open.seal(self.chunk_capacity));
        self.queue(sealed)
    }

    /// Makes room in the open chunk for a batch of `batch_bytes` that does not fit:
    /// seals it (the log is busy, so the next buffer may be larger), or grows it when it
    /// holds no batch yet (fresh, rolled or just flushed: a batch larger than the whole
    /// chunk). Returns the bytes queued.
    fn seal_full(&mut self, batch_bytes: usize) -> usize {
        self.chunk_capacity = (self.chunk_capacity * 2).min(self.chunk_max);
        let capacity = self
            .chunk_capacity
            .max(batch_bytes + files::BLOCK_BYTES as usize);
        match self.open.seal_full(capacity) {
            Some(sealed) => self.queue(Rc::new(sealed)),
            None => 0,
        }
    }

    fn queue(&mut self, sealed: Rc<SealedChunk>) -> usize {
        let bytes = sealed.capacity();
        self.pending_bytes += bytes;
        self.pending.push_back(sealed);
        bytes
    }

    /// Starts a new segment at `next_offset` (the file is created by the flusher).
    fn roll(&mut self) -> usize {
        let queued = self.seal_open();
        let base = self.next_offset;
        self.segments.insert(base, Segment::new(base, now_ms()));
        self.open = OpenChunk::new(base, 0, &[], self.chunk_capacity, base);
        queued
    }

    fn needs_roll(&self, batch_bytes: u64, now: u64) -> bool {
        let active = self.active();
        active.size > 0
            && (active.size + batch_bytes > self.config.segment_bytes_max
                || now.saturating_sub(active.created_ms) >= self.config.segment_ms_max)
    }

    /// Checks the idempotent producers' sequences of a request. `Some` when the whole
    /// request is a retry of batches already in the log.
    fn check_producers(
        &self,
        headers: &[(usize, BatchHeader)],
    ) -> Result<Option<AppendInfo>, AppendError> {
        let mut next = self.next_offset;
        let mut scratch: Option<ProducerState> = None;
        let mut duplicates = Vec::new();
        for (_, header) in headers {
            let Some(batch) = ProducerBatch::from_header(header, next) else {
                next = next.plus(i64::from(header.last_offset_delta.get()) + 1);
                continue;
            };
            let state = scratch.as_ref().unwrap_or(&self.producers);
            match state.check(&batch)? {
                Verdict::Append => {
                    if headers.len() > 1 {
                        scratch
                            .get_or_insert_with(|| self.producers.clone())
                            .apply(batch);
                    }
                }
                Verdict::Duplicate(original) => duplicates.push(original),
            }
            next = next.plus(i64::from(header.last_offset_delta.get()) + 1);
        }
        match (duplicates.first(), duplicates.last()) {
            (Some(first), Some(last)) if duplicates.len() == headers.len() => {
                Ok(Some(AppendInfo {
                    base_offset: first.first_offset,
                    last_offset: last.last_offset,
                    max_timestamp: -1,
                    record_count: (last.last_offset.0 - first.first_offset.0 + 1) as u32,
                    batch_count: headers.len() as u32,
                    log_start_offset: self.log_start,
                    duplicate: true,
                    log_append_time_ms: None,
                }))
            }
            (Some(dup), _) => Err(AppendError::OutOfOrderSequence {
                producer_id: dup.producer_id,
                expected: dup.last_seq.wrapping_add(1),
                got: dup.first_seq,
            }),
            _ => Ok(None),
        }
    }

    /// Refuses CreateTime batches whose timestamps fall outside the topic's window.
    fn check_timestamps(
        &self,
        headers: &[(usize, BatchHeader)],
        now: i64,
    ) -> Result<(), AppendError> {
        if self.config.timestamp_type == TimestampType::LogAppendTime {
            return Ok(());
        }
        let earliest = self
            .config
            .timestamp_before_max_ms
            .map(|ms| now.saturating_sub(ms as i64));
        let latest = self
            .config
            .timestamp_after_max_ms
            .map(|ms| now.saturating_add(ms as i64));
        for (_, h) in headers {
            let (first, max) = (h.base_timestamp.get(), h.max_timestamp.get());
            let too_old = earliest.is_some_and(|e| first < e);
            let too_new = latest.is_some_and(|l| max > l);
            if too_old || too_new {
                return Err(AppendError::InvalidTimestamp {
                    timestamp_ms: if too_old { first } else { max },
                    now_ms: now,
                });
            }
        }
        Ok(())
    }

    /// Copies validated batches in, assigning offsets; refuses (appending nothing) only
    /// for producer sequence errors, and answers retries with their original offsets.
    fn append_batches(
        &mut self,
        records: &[u8],
        headers: &[(usize, BatchHeader)],
        epoch: LeaderEpoch,
    ) -> Result<(AppendInfo, usize), AppendError> {
        if let Some(duplicate) = self.check_producers(headers)? {
            return Ok((duplicate, 0));
        }
        let now = now_ms();
        self.check_timestamps(headers, now as i64)?;
        let append_time =
            (self.config.timestamp_type == TimestampType::LogAppendTime).then_some(now as i64);
        let mut queued = 0;
        let base_offset = self.next_offset;
        let mut info = AppendInfo {
            base_offset,
            last_offset: base_offset,
            max_timestamp: -1,
            record_count: 0,
            batch_count: headers.len() as u32,
            log_start_offset: self.log_start,
            duplicate: false,
            log_append_time_ms: append_time,
        };
        for (start, header) in headers {
            let total = header.total_bytes();
            if self.needs_roll(total as u64, now) {
                queued += self.roll();
            }
            if self.open.remaining() < total {
                queued += self.seal_full(total);
            }
            let base = self.next_offset;
            let next = base.plus(i64::from(header.last_offset_delta.get()) + 1);
            let position = self.open.end_pos();
            let stored = self.open.push(&records[*start..start + total], next);
            batch::stamp(stored, base, epoch);
            if let Some(t) = append_time {
                batch::set_log_append_time(stored, t);
            }
            let mut stamped = *header;
            stamped.base_offset.set(base.0);
            if let Some(t) = append_time {
                stamped.max_timestamp.set(t);
            }
            let interval = self.config.index_interval_bytes;
            self.active_mut().note_batch(position, &stamped, interval);
            self.epochs_dirty |= self.epochs.observe(epoch, base);
            if let Some(pb) = ProducerBatch::from_header(&stamped, base) {
                self.producers.apply(pb);
                self.producer_pending.push_back(pb);
            }
            self.next_offset = next;
            info.last_offset = next.plus(-1);
            info.max_timestamp = info.max_timestamp.max(stamped.max_timestamp.get());
            info.record_count += header.record_count.get() as u32;
        }
        Ok((info, queued))
    }

    /// Where each replicated batch must start: the log end for the first, the previous
    /// batch's end after it; a compacted log may skip ahead (offsets the leader's
    /// compaction removed), within the offset range one segment's index can address.
    fn check_replica_offsets(&self, headers: &[(usize, BatchHeader)]) -> Result<(), AppendError> {
        let gaps_allowed = self.config.cleanup_policy.compacts();
        let mut expected = self.next_offset;
        for (_, header) in headers {
            let got = header.base_offset();
            let skip = got.0.checked_sub(expected.0).unwrap_or(-1);
            let fits = skip == 0 || (gaps_allowed && (1..=REPLICA_GAP_MAX).contains(&skip));
            if !fits {
                return Err(AppendError::UnexpectedOffset { expected, got });
            }
            expected = header.next_offset();
        }
        Ok(())
    }

    /// Copies a leader's stored batches in unchanged (offsets and epochs kept); the
    /// segment, index, epoch cache and producer state see them as they would an append.
    fn append_replica_batches(
        &mut self,
        records: &[u8],
        headers: &[(usize, BatchHeader)],
    ) -> Result<(AppendInfo, usize), AppendError> {
        self.check_replica_offsets(headers)?;
        let now = now_ms();
        let mut queued = 0;
        let first = headers
            .first()
            .map_or(self.next_offset, |(_, h)| h.base_offset());
        let mut info = AppendInfo {
            base_offset: first,
            last_offset: first.plus(-1),
            max_timestamp: -1,
            record_count: 0,
            batch_count: headers.len() as u32,
            log_start_offset: self.log_start,
            duplicate: false,
            log_append_time_ms: None,
        };
        for (start, header) in headers {
            let total = header.total_bytes();
            // Offsets skipped by a compacted leader must stay addressable (u32) from the
            // segment's base.
            let active = self.active();
            let far = header.last_offset().0 - active.base.0 > REPLICA_GAP_MAX;
            if self.needs_roll(total as u64, now) || (far && active.size > 0) {
                queued += self.roll();
            }
            if self.open.remaining() < total {
                queued += self.seal_full(total);
            }
            let (base, next) = (header.base_offset(), header.next_offset());
            let position = self.open.end_pos();
            self.open.push(&records[*start..start + total], next);
            let interval = self.config.index_interval_bytes;
            self.active_mut().note_batch(position, header, interval);
            self.epochs_dirty |= self.epochs.observe(header.leader_epoch(), base);
            if let Some(pb) = ProducerBatch::from_header(header, base) {
                self.producers.apply(pb);
                self.producer_pending.push_back(pb);
            }
            self.next_offset = next;
            info.last_offset = header.last_offset();
            info.max_timestamp = info.max_timestamp.max(header.max_timestamp.get());
            info.record_count += header.record_count.get().max(0) as u32;
        }
        Ok((info, queued))
    }

    pub(crate) fn sync_due(&self, written_end: i64, synced_end: i64, now: u64) -> bool {
        if written_end <= synced_end {
            return false;
        }
        match self.config.flush {
            FlushPolicy::Fsync => true,
            FlushPolicy::Interval {
                interval_ms,
                bytes_max,
            } => {
                self.sync_requested
                    || self.closing
                    || self.unsynced_bytes >= bytes_max
                    || now.saturating_sub(self.last_sync_ms) >= interval_ms
            }
        }
    }

    /// How long the flusher may sleep before a timed sync or checkpoint is due.
    /// How long the flusher may sleep before a sync or a checkpoint falls due. Only
    /// pending work has a deadline: an idle log (everything synced and checkpointed)
    /// sleeps a whole checkpoint interval, or until an append wakes it, instead of
    /// waking every millisecond on a deadline that passed with nothing to do.
    pub(crate) fn next_timer(
        &self,
        checkpoint_interval_ms: u64,
        now: u64,
        written_end: i64,
        synced_end: i64,
    ) -> Duration {
        let unsynced = written_end > synced_end;
        let uncheckpointed = unsynced || self.synced_point.2 > self.checkpoint.next_offset;
        let mut ms = checkpoint_interval_ms.max(1);
        if uncheckpointed {
            ms = checkpoint_interval_ms
                .saturating_sub(now.saturating_sub(self.last_checkpoint_ms))
                .max(1);
        }
        if let (true, FlushPolicy::Interval { interval_ms, .. }) = (unsynced, self.config.flush) {
            ms = ms.min(
                interval_ms
                    .saturating_sub(now.saturating_sub(self.last_sync_ms))
                    .max(1),
            );
        }
        Duration::from_millis(ms)
    }

    /// The cached chunk whose own range holds `pos` of segment `base`.
    fn cached_chunk(&mut self, base: Offset, pos: u64) -> Option<Rc<SealedChunk>> {
        while self
            .recent
            .front()
            .is_some_and(|c| c.chunk.strong_count() == 0)
        {
            self.recent.pop_front();
        }
        let i = self
            .recent
            .partition_point(|c| (c.segment_base, c.end) <= (base, pos));
        let c = self.recent.get(i)?;
        (c.segment_base == base && c.own_start <= pos && pos < c.end)
            .then(|| c.chunk.upgrade())
            .flatten()
    }
}

/// What a read needs to know about a segment, taken out of the state before awaiting.
#[derive(Debug, Clone)]
struct SegmentView {
    base: Offset,
    file: Option<Rc<DmaFile>>,
    /// Readable bytes: written and below the read bound.
    readable_len: u64,
    end_offset: Offset,
    start_pos: u64,
}

enum Flow {
    Continue,
    Stop,
}

impl PartitionLog {
    /// Opens (recovering) or creates the log in `dir`.
    pub async fn open(
        dir: PathBuf,
        tp: TopicPartition,
        config: LogConfig,
        shard: Rc<ShardResources>,
    ) -> Result<PartitionLog, LogError> {
        config.validate().map_err(LogError::InvalidConfig)?;
        let dir = std::path::absolute(&dir).map_err(|e| LogError::io(dir.display(), e))?;
        let state = recovery::recover(dir, tp, config, &shard.config).await?;
        let end = state.next_offset.0;
        let log = PartitionLog {
            shared: Rc::new(LogShared {
                state: RefCell::new(state),
                shard,
                written: OffsetWatch::new(end),
                synced: OffsetWatch::new(end),
                flusher_wake: Signal::default(),
                flusher_done: OffsetWatch::new(0),
                io_lock: Semaphore::new(1),
                index_gate: Semaphore::new(INDEX_LOADS_MAX as u64),
            }),
        };
        let shared = log.shared.clone();
        glommio::spawn_local(async move { crate::flusher::flusher_loop(shared).await }).detach();
        Ok(log)
    }

    pub fn topic_partition(&self) -> TopicPartition {
        self.shared.state.borrow().tp.clone()
    }

    pub fn log_start_offset(&self) -> Offset {
        self.shared.state.borrow().log_start
    }

    /// The next offset to be assigned (Kafka's log end offset).
    pub fn log_end_offset(&self) -> Offset {
        self.shared.state.borrow().next_offset
    }

    /// Every offset below this is in the segment files.
    pub fn written_end_offset(&self) -> Offset {
        Offset(self.shared.written.get())
    }

    /// Every offset below this is covered by fdatasync.
    pub fn synced_end_offset(&self) -> Offset {
        Offset(self.shared.synced.get())
    }

    /// Kafka's OffsetForLeaderEpoch: the largest leader epoch ≤ `epoch` this log holds
    /// and the offset where it ended (the log end for the latest epoch); `None` when the
    /// log has no epoch that old.
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        let st = self.shared.state.borrow();
        st.epochs.end_offset_for(epoch, st.next_offset)
    }

    /// The leader epoch of the last batch appended, if any.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.shared.state.borrow().epochs.latest()
    }

    pub fn config(&self) -> LogConfig {
        self.shared.state.borrow().config.clone()
    }

    /// Applies new settings to the live log; they take effect from the next append.
    pub fn set_config(&self, config: LogConfig) -> Result<(), LogError> {
        config.validate().map_err(LogError::InvalidConfig)?;
        self.shared.state.borrow_mut().config = config;
        self.shared.flusher_wake.notify();
        Ok(())
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.shared
            .state
            .borrow()
            .segments
            .values()
            .map(|s| s.size)
            .sum()
    }

    /// Segments whose indexes are in memory (the active one and a bounded few closed
    /// ones; the rest load on demand).
    pub fn segments_with_loaded_indexes(&self) -> usize {
        let st = self.shared.state.borrow();
        st.segments.values().filter(|s| s.indexes_loaded).count()
    }

    /// Base offset of the active segment (the one appends go to; compaction never
    /// rewrites it).
    pub fn active_segment_base(&self) -> Offset {
        self.shared.state.borrow().active().base
    }

    pub fn segment_count(&self) -> usize {
        self.shared.state.borrow().segments.len()
    }

    /// Validates every batch in `records` (all or nothing), assigns offsets, writes the
    /// base offset and `leader_epoch` into each header and queues them for writing.
    /// Waits only when the log's write buffer is full; does not wait for the disk: use
    /// [`Self::wait_durable`] for that.
    pub async fn append(
        &self,
        records: &[u8],
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo, AppendError> {
        let (max, compacted) = {
            let st = self.shared.state.borrow();
            let c = &st.config;
            (c.max_message_bytes as usize, c.cleanup_policy.compacts())
        };
        let headers = validate_all(records, max)?;
        if compacted {
            check_keys(records, &headers)?;
        }
        self.wait_for_room().await?;
        let (info, queued) =
            self.shared
                .state
                .borrow_mut()
                .append_batches(records, &headers, leader_epoch)?;
        self.shared.shard.pending_changed(queued, 0);
        self.shared.flusher_wake.notify();
        Ok(info)
    }

    /// A follower's append: batches exactly as the leader stored them (base offsets and
    /// partition leader epochs kept, never stamped again), all or nothing. The first batch
    /// must start at the log end and each next one where the previous ended (a compacted
    /// log may skip offsets compaction removed on the leader, but never go back), else
    /// [`AppendError::UnexpectedOffset`]. Framing and CRC32C are checked; the size limit,
    /// timestamps, keys and producer sequences are not: the leader checked them when it
    /// took the batches, and a follower mirrors it. The epoch cache notes each batch's
    /// epoch at its base offset and idempotent producer state follows the batches, so
    /// this log can answer OffsetForLeaderEpoch and deduplicate if it becomes leader.
    /// Waits only when the write buffer is full, like [`Self::append`].
    pub async fn append_replica(&self, records: &[u8]) -> Result<AppendInfo, AppendError> {
        let headers = validate_replica(records)?;
        self.wait_for_room().await?;
        let (info, queued) = self
            .shared
            .state
            .borrow_mut()
            .append_replica_batches(records, &headers)?;
        self.shared.shard.pending_changed(queued, 0);
        self.shared.flusher_wake.notify();
        Ok(info)
    }

    /// Waits until this log's and the shard's write buffers have room; refuses when the
    /// log failed, is frozen (truncation, reset) or is closing.
    async fn wait_for_room(&self) -> Result<(), AppendError> {
        let buffer_max = self.shared.shard.config.write_buffer_bytes_max;
        loop {
            let wait = {
                let st = self.shared.state.borrow();
                if let Some(reason) = &st.failed {
                    return Err(AppendError::Io(reason.clone()));
                }
                if let Some(why) = st.frozen.or(st.closing.then_some("closing")) {
                    return Err(AppendError::Unavailable(why));
                }
                // This log's buffers first (its own flusher frees them), then the shard's.
                // Waiting on this log only helps while it has writes queued.
                (st.pending_bytes > 0 && st.buffered_bytes() >= buffer_max)
                    .then(|| self.shared.written.wait_for(self.shared.written.get() + 1))
                    .or_else(|| self.shared.shard.wait_for_room())
            };
            match wait {
                Some(w) => {
                    self.shared.flusher_wake.notify();
                    let _ = w.await;
                }
                None => return Ok(()),
            }
        }
    }

    /// Resolves once every offset below `end` is in the segment files.
    pub async fn wait_written(&self, end: Offset) -> Result<(), LogError> {
        if let Some(e) = self.ended_before(&self.shared.written, end) {
            return e;
        }
        self.shared.flusher_wake.notify();
        let result = self.shared.written.wait_for(end.0).await;
        self.wait_outcome(result)
    }

    /// A wait on a log whose flusher has stopped (closed, or failed) can never be
    /// satisfied beyond what is already there: its answer now, so no waiter that comes
    /// after the close hangs (the close itself fails the waiters it finds).
    fn ended_before(
        &self,
        watch: &crate::watch::OffsetWatch,
        end: Offset,
    ) -> Option<Result<(), LogError>> {
        if self.shared.flusher_done.get() < 1 {
            return None;
        }
        if watch.get() >= end.0 {
            return Some(Ok(()));
        }
        Some(self.wait_outcome(Err(crate::watch::WatchReset)))
    }

    /// Resolves once every offset below `end` is covered by fdatasync.
    pub async fn wait_synced(&self, end: Offset) -> Result<(), LogError> {
        if self.shared.synced.get() >= end.0 {
            return Ok(());
        }
        if let Some(e) = self.ended_before(&self.shared.synced, end) {
            return e;
        }
        self.shared.state.borrow_mut().sync_requested = true;
        self.shared.flusher_wake.notify();
        let result = self.shared.synced.wait_for(end.0).await;
        self.wait_outcome(result)
    }

    /// What an acknowledgement waits for: synced under [`FlushPolicy::Fsync`], written
    /// otherwise.
    pub async fn wait_durable(&self, end: Offset) -> Result<(), LogError> {
        if self.durable_is_synced() {
            self.wait_synced(end).await
        } else {
            self.wait_written(end).await
        }
    }

    /// The end of what counts as durable, by the same rule as [`Self::wait_durable`]:
    /// synced under [`FlushPolicy::Fsync`], written otherwise.
    pub fn durable_end_offset(&self) -> Offset {
        if self.durable_is_synced() {
            self.synced_end_offset()
        } else {
            self.written_end_offset()
        }
    }

    fn durable_is_synced(&self) -> bool {
        self.shared.state.borrow().config.flush == FlushPolicy::Fsync
    }

    fn wait_outcome(&self, result: Result<(), crate::watch::WatchReset>) -> Result<(), LogError> {
        match (result, &self.shared.state.borrow().failed) {
            (Ok(()), _) => Ok(()),
            (Err(_), Some(reason)) => Err(LogError::Offline(reason.clone())),
            (Err(_), None) => Err(LogError::Reset),
        }
    }

    /// Writes and syncs everything appended so far.
    pub async fn sync(&self) -> Result<(), LogError> {
        let end = self.log_end_offset();
        self.wait_synced(end).await
    }

    /// Reads whole batches from `from` on: the batch holding `from` first, then the ones
    /// after it, while they fit `limits`. Offsets at the log end give an empty answer;
    /// offsets outside `[log_start, log_end]` are out of range.
    pub async fn read(&self, from: Offset, limits: ReadLimits) -> Result<ReadBatches, ReadError> {
        let upper = {
            let st = self.shared.state.borrow();
            if from < st.log_start || from > st.next_offset {
                return Err(ReadError::OffsetOutOfRange {
                    requested: from,
                    log_start: st.log_start,
                    log_end: st.next_offset,
                });
            }
            limits.max_offset.min(self.written_end_offset())
        };
        let mut out = ReadBatches::default();
        if from >= upper {
            return Ok(out);
        }
        let mut run: Option<(Window, usize, usize)> = None;
        // Bytes taken so far: sizes the next direct read to what the budget can still use.
        let taken = Cell::new(0usize);
        let want = || {
            let left = limits.max_bytes.saturating_sub(taken.get());
            if taken.get() > 0 && left < batch::HEADER_BYTES {
                0
            } else {
                (left + batch::HEADER_BYTES) as u64
            }
        };
        self.visit(from, upper, want, |window, start, header| {
            let size = header.total_bytes();
            let fits = out.bytes + size <= limits.max_bytes
                || (limits.min_one_batch
                    && out.bytes == 0
                    && out.slices.is_empty()
                    && run.is_none());
            if !fits {
                return Flow::Stop;
            }
            out.bytes += size;
            taken.set(out.bytes);
            match &mut run {
                Some((w, s, len)) if same_window(w, window) && *s + *len == start => *len += size,
                _ => {
                    if let Some((w, s, len)) = run.take() {
                        out.slices.extend(w.slice(s, len));
                    }
                    run = Some((window.clone(), start, size));
                }
            }
            Flow::Continue
        })
        .await?;
        if let Some((w, s, len)) = run {
            out.slices.extend(w.slice(s, len));
        }
        Ok(out)
    }

    /// First offset whose record timestamp is ≥ `ts_ms`, with that timestamp; `None` when
    /// no record is that new. Within a compressed batch the answer is the batch's base
    /// offset and its max timestamp (records are not decompressed here).
    pub async fn offset_for_timestamp(
        &self,
        ts_ms: i64,
    ) -> Result<Option<(Offset, i64)>, LogError> {
        let upper = self.written_end_offset();
        let base = {
            let st = self.shared.state.borrow();
            let seg = st
                .segments
                .values()
                .find(|s| s.max_timestamp >= ts_ms && s.base < upper);
            let Some(seg) = seg else { return Ok(None) };
            seg.base
        };
        self.ensure_indexes(base).await?;
        let start = {
            let st = self.shared.state.borrow();
            let Some(seg) = st.segments.get(&base) else {
                return Ok(None);
            };
            let from = seg.base.plus(i64::from(seg.time_index.lookup(ts_ms)));
            from.max(st.log_start)
        };
        let mut found = None;
        self.visit(
            start,
            upper,
            || READ_WINDOW_BYTES,
            |window, at, header| {
                if header.max_timestamp.get() < ts_ms {
                    return Flow::Continue;
                }
                let batch = &window.bytes()[at..at + header.total_bytes()];
                found = Some(match batch::record_timestamps(batch) {
                    Some(records) => records
                        .into_iter()
                        .find(|(_, t)| *t >= ts_ms)
                        .unwrap_or((header.base_offset(), header.max_timestamp.get())),
                    None => (header.base_offset(), header.max_timestamp.get()),
                });
                Flow::Stop
            },
        )
        .await
        .map_err(read_to_log_error)?;
        Ok(found.map(|(o, t)| (o.max(start), t)))
    }

    /// The offset of the record with the largest timestamp, and that timestamp (Kafka's
    /// MAX_TIMESTAMP lookup); the earliest such record when several share it.
    pub async fn max_timestamp(&self) -> Result<Option<(Offset, i64)>, LogError> {
        let best = {
            let st = self.shared.state.borrow();
            let upper = self.written_end_offset();
            st.segments
                .values()
                .filter(|s| s.base < upper && s.max_timestamp >= 0)
                .max_by_key(|s| (s.max_timestamp, -s.base.0))
                .map(|s| (s.offset_of_max_timestamp, s.max_timestamp))
        };
        let Some((batch_offset, ts)) = best else {
            return Ok(None);
        };
        Ok(self
            .offset_for_timestamp(ts)
            .await?
            .or(Some((batch_offset, ts))))
    }

    /// Visits the batches from the one holding `from` up to `upper`, in order.
    /// `want` says how many more bytes the visitor can use (0: stop before reading
    /// more), so direct reads are no larger than needed.
    async fn visit(
        &self,
        from: Offset,
        upper: Offset,
        want: impl Fn() -> u64,
        mut f: impl FnMut(&Window, usize, &BatchHeader) -> Flow,
    ) -> Result<(), ReadError> {
        let mut cursor = from;
        let index_slack = u64::from(self.shared.state.borrow().config.index_interval_bytes);
        while cursor < upper {
            if let Some(base) = self.segment_base_for(cursor) {
                self.ensure_indexes(base).await?;
            }
            let Some(view) = self.segment_view(cursor) else {
                return Ok(());
            };
            let mut pos = view.start_pos;
            // The index points up to one interval before `cursor`: read that much more.
            let mut slack = index_slack;
            while pos < view.readable_len {
                let wanted = want();
                if wanted == 0 {
                    return Ok(());
                }
                let window = self.window(&view, pos, wanted + slack).await?;
                slack = 0;
                let base_pos = window.file_pos();
                let bytes = window.bytes();
                let rel = (pos - base_pos) as usize;
                let end = (view.readable_len - base_pos).min(bytes.len() as u64) as usize;
                if rel >= end {
                    return Err(ReadError::Io(format!(
                        "segment {} of {} is shorter than its recorded size",
                        view.base,
                        self.topic_partition()
                    )));
                }
                let mut iter = BatchIter::new(&bytes[rel..end]);
                for (at, header, _) in iter.by_ref() {
                    if header.base_offset() >= upper {
                        return Ok(());
                    }
                    if header.next_offset() <= cursor {
                        continue;
                    }
                    if let Flow::Stop = f(&window, rel + at, &header) {
                        return Ok(());
                    }
                    cursor = header.next_offset();
                }
                let advanced = iter.position() as u64;
                if advanced == 0 {
                    return Err(ReadError::Io(format!(
                        "unreadable batch at position {pos} of segment {} of {}: {:?}",
                        view.base,
                        self.topic_partition(),
                        iter.remainder_error()
                    )));
                }
                pos += advanced;
            }
            cursor = cursor.max(view.end_offset);
        }
        Ok(())
    }

    /// Loads the indexes of segment `base` if they are on disk only.
    async fn ensure_indexes(&self, base: Offset) -> Result<(), LogError> {
        {
            let mut st = self.shared.state.borrow_mut();
            match st.segments.get(&base) {
                Some(seg) if seg.indexes_loaded && seg.finalized => {
                    st.touch_indexes(base);
                    return Ok(());
                }
                Some(seg) if !seg.indexes_loaded => {}
                _ => return Ok(()),
            }
        }
        // Index files are read (and maybe rebuilt) by path: a compaction swap waits for
        // loads in flight before it removes or replaces them (glommio cannot open a file
        // that is unlinked under it).
        let _load = self
            .shared
            .index_gate
            .acquire_permit(1)
            .await
            .map_err(|e| LogError::Offline(e.to_string()))?;
        let (dir, interval, segment) = {
            let st = self.shared.state.borrow();
            match st.segments.get(&base) {
                // Its index files are being replaced: reads scan from the start instead.
                Some(_) if st.swapping.contains(&base) => return Ok(()),
                Some(seg) if !seg.indexes_loaded => {
                    // What loading needs, so no borrow is held across the reads.
                    let shape = Segment {
                        file: seg.file.clone(),
                        size: seg.size,
                        end_offset: seg.end_offset,
                        ..Segment::new(seg.base, seg.created_ms)
                    };
                    (st.dir.clone(), st.config.index_interval_bytes, shape)
                }
                _ => return Ok(()),
            }
        };
        let (index, time) = segment.load_indexes(&dir, interval).await?;
        let mut st = self.shared.state.borrow_mut();
        let same_file = |s: &Segment| match (&s.file, &segment.file) {
            (Some(a), Some(b)) => Rc::ptr_eq(a, b),
            _ => false,
        };
        if let Some(seg) = st
            .segments
            .get_mut(&base)
            .filter(|s| !s.indexes_loaded && same_file(s))
        {
            seg.index = index;
            seg.time_index = time;
            seg.indexes_loaded = true;
            st.touch_indexes(base);
        }
        Ok(())
    }

    /// The base of the segment holding `offset`.
    fn segment_base_for(&self, offset: Offset) -> Option<Offset> {
        let st = self.shared.state.borrow();
        st.segments.range(..=offset).next_back().map(|(b, _)| *b)
    }

    /// The segment holding `offset`, with where to start scanning for it.
    fn segment_view(&self, offset: Offset) -> Option<SegmentView> {
        let st = self.shared.state.borrow();
        let (_, seg) = st.segments.range(..=offset).next_back()?;
        if offset >= seg.end_offset {
            return None;
        }
        let (_, start_pos) = seg.index.lookup((offset.0 - seg.base.0) as u32);
        // The visit stops at `upper` by offset; bytes are bounded by what is written.
        let readable_len = seg.written_size.min(seg.size);
        Some(SegmentView {
            base: seg.base,
            file: seg.file.clone(),
            readable_len,
            end_offset: seg.end_offset,
            start_pos: u64::from(start_pos),
        })
    }

    /// Bytes of the segment from `pos`: the cached chunk holding it, or a direct read.
    async fn window(
        &self,
        view: &SegmentView,
        pos: u64,
        want_bytes: u64,
    ) -> Result<Window, ReadError> {
        if let Some(chunk) = self.shared.state.borrow_mut().cached_chunk(view.base, pos) {
            return Ok(Window::Cache(chunk));
        }
        let file = view
            .file
            .as_ref()
            .ok_or_else(|| ReadError::Io(format!("segment {} has no file yet", view.base)))?;
        let start = align_down(pos);
        let want =
            (view.readable_len - start).min(want_bytes.clamp(1, READ_WINDOW_BYTES) + (pos - start));
        let first = file
            .read_at_aligned(start, align_up(want) as usize)
            .await
            .map_err(|e| ReadError::Io(e.to_string()))?;
        // A batch larger than the window: read again, wide enough for the whole batch.
        let rel = (pos - start) as usize;
        if let Some(Ok(header)) = first.get(rel..).map(batch::parse_header) {
            let needed = rel as u64 + header.total_bytes() as u64;
            if needed > first.len() as u64 && start + needed <= view.readable_len {
                let read = file
                    .read_at_aligned(start, align_up(needed) as usize)
                    .await
                    .map_err(|e| ReadError::Io(e.to_string()))?;
                return Ok(Window::Disk {
                    read,
                    file_pos: start,
                });
            }
        }
        Ok(Window::Disk {
            read: first,
            file_pos: start,
        })
    }

    /// Makes `offset` the new log start: offsets below it are no longer readable and
    /// whole segments below it are deleted (Kafka's DeleteRecords). Returns the new start.
    pub async fn delete_records_before(&self, offset: Offset) -> Result<Offset, LogError> {
        let _permit = self.shared.io_lock.acquire_permit(1).await;
        let (dir, victims, checkpoint) = {
            let mut st = self.shared.state.borrow_mut();
            let high = self.written_end_offset();
            if offset < Offset::ZERO || offset > high {
                return Err(LogError::OffsetOutOfRange {
                    requested: offset,
                    low: st.log_start,
                    high,
                });
            }
            if offset <= st.log_start {
                return Ok(st.log_start);
            }
            st.log_start = offset;
            let victims = take_segments_while(&mut st, |seg, next_base| {
                next_base <= offset && seg.finalized
            });
            st.checkpoint.log_start = offset;
            (st.dir.clone(), victims, st.checkpoint)
        };
        remove_segments(&self.shared, &dir, victims).await?;
        checkpoint.write(&dir).await?;
        Ok(offset)
    }

    /// Deletes closed segments past `retention.ms` (by their newest timestamp) or beyond
    /// `retention.bytes` (oldest first). The active segment is never deleted. A log whose
    /// `cleanup.policy` lacks `delete` keeps everything (compaction bounds it).
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
            let victims = take_segments_while(&mut st, |seg, _| {
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

    async fn truncate_frozen(&self, end: Offset) -> Result<Offset, LogError> {
        let leo = self.log_end_offset();
        self.wait_written(leo).await?;
        let _permit = self.shared.io_lock.acquire_permit(1).await;
        // Where the batch holding `end` starts.
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
        let cut_at = cut.map_or(leo, |(_, base)| base);
        if let Some(base) = self.segment_base_for(cut_at) {
            self.ensure_indexes(base).await?;
        }
        let (dir, tp, config, new_end, cut_segment, victims, checkpoint) = {
            let mut st = self.shared.state.borrow_mut();
            let (cut_pos, new_end) = match cut {
                Some((pos, base)) => (pos, base),
                None => (st.active().size, st.next_offset),
            };
            let seg_base = *st
                .segments
                .range(..=new_end)
                .next_back()
                .map(|(b, _)| b)
                .unwrap_or(&new_end);
            let later: Vec<Offset> = st
                .segments
                .range(seg_base.plus(1)..)
                .map(|(b, _)| *b)
                .collect();
            let victims: Vec<Segment> =
                later.iter().filter_map(|b| st.segments.remove(b)).collect();
            let seg = st.segments.get_mut(&seg_base);
            let file = seg.as_ref().and_then(|s| s.file.clone());
            if let Some(seg) = seg {
                seg.index.truncate_to_position(cut_pos as u32);
                seg.time_index
                    .truncate_to_offset((new_end.0 - seg_base.0) as u32);
                seg.size = cut_pos;
            }
            let checkpoint = Checkpoint {
                log_start: st.log_start.min(new_end),
                segment_base: seg_base,
                position: cut_pos,
                next_offset: new_end,
            };
            let mut producers = st.producers_written.clone();
            producers.truncate_to(new_end);
            let snapshot = producers.encode(new_end);
            st.epochs.truncate_to(new_end);
            let epochs = st.epochs.clone();
            (
                st.dir.clone(),
                st.tp.clone(),
                st.config.clone(),
                new_end,
                file.map(|f| (f, seg_base, cut_pos)),
                victims,
                (checkpoint, snapshot, epochs),
            )
        };
        let (checkpoint, snapshot, epochs) = checkpoint;
        epochs.write(&dir).await?;
        remove_segments(&self.shared, &dir, victims).await?;
        if let Some((file, seg_base, cut_pos)) = cut_segment {
            let path = dir.join(segment::log_name(seg_base));
            files::truncate_synced(&file, &path, cut_pos).await?;
            let indexes = self
                .shared
                .state
                .borrow()
                .segments
                .get(&seg_base)
                .map(|seg| seg.index_bytes(cut_pos, new_end));
            if let Some(indexes) = indexes {
                segment::write_index_files(&dir, seg_base, indexes).await?;
            }
        }
        files::write_atomic(&dir, crate::producer::SNAPSHOT_FILE, &snapshot).await?;
        checkpoint.write(&dir).await?;
        let shard_config = self.shared.shard.config.clone();
        let fresh = recovery::recover(dir, tp, config, &shard_config).await?;
        let new_end_recovered = fresh.next_offset;
        debug_assert_eq!(new_end_recovered, new_end);
        *self.shared.state.borrow_mut() = fresh;
        self.shared.written.reset(new_end_recovered.0);
        self.shared.synced.reset(new_end_recovered.0);
        tracing::warn!(partition = %self.topic_partition(), new_end = %new_end_recovered, "log truncated");
        Ok(new_end_recovered)
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

    async fn reset_frozen(&self, offset: Offset) -> Result<Offset, LogError> {
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
            epochs: EpochCache::default(),
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
        let snapshot = ProducerState::default().encode(offset);
        files::write_atomic(&dir, crate::producer::SNAPSHOT_FILE, &snapshot).await?;
        CleanerState::default().write(&dir).await?;
        checkpoint.write(&dir).await?;
        tracing::warn!(partition = %self.topic_partition(), %offset, "log reset: every segment dropped, restarting empty");
        Ok(offset)
    }

    /// Writes and syncs everything, records a clean checkpoint, stops the flusher. Later
    /// appends are refused.
    pub async fn close(&self) -> Result<(), LogError> {
        let already_closing = std::mem::replace(&mut self.shared.state.borrow_mut().closing, true);
        if !already_closing {
            self.shared.flusher_wake.notify();
        }
        let _ = self.shared.flusher_done.wait_for(1).await;
        let failed = self.shared.state.borrow().failed.clone();
        match failed {
            Some(reason) => Err(LogError::Offline(reason)),
            None => Ok(()),
        }
    }

    /// Whether the log failed an I/O operation and went offline.
    pub fn failure(&self) -> Option<String> {
        self.shared.state.borrow().failed.clone()
    }
}

/// Smallest DMA buffer appends are copied into: what an idle log holds.
pub(crate) const CHUNK_MIN_BYTES: usize = 64 << 10;

/// Index loads from disk one log runs at once.
pub(crate) const INDEX_LOADS_MAX: usize = 64;

/// Closed segments of one log whose indexes stay in memory (the active one always does).
pub(crate) const LOADED_INDEXES_MAX: usize = 4;

/// The largest offset skip a replicated batch of a compacted log may make: offsets within
/// one segment are addressed relative to its base as `u32`.
const REPLICA_GAP_MAX: i64 = i32::MAX as i64;

/// Bytes read per direct read on the fetch path.
const READ_WINDOW_BYTES: u64 = 1 << 20;

fn same_window(a: &Window, b: &Window) -> bool {
    match (a, b) {
        (Window::Cache(x), Window::Cache(y)) => Rc::ptr_eq(x, y),
        (Window::Disk { read: x, .. }, Window::Disk { read: y, .. }) => {
            x.as_ptr() == y.as_ptr() && x.len() == y.len()
        }
        _ => false,
    }
}

fn read_to_log_error(e: ReadError) -> LogError {
    match e {
        ReadError::OffsetOutOfRange {
            requested,
            log_start,
            log_end,
        } => LogError::OffsetOutOfRange {
            requested,
            low: log_start,
            high: log_end,
        },
        ReadError::Io(reason) => LogError::Offline(reason),
    }
}

/// Validates every batch of a produce request's records; returns each batch's position
/// and header.
fn validate_all(
    records: &[u8],
    max_message_bytes: usize,
) -> Result<Vec<(usize, BatchHeader)>, AppendError> {
    if records.is_empty() {
        return Err(AppendError::Corrupt(batch::BatchError::Empty));
    }
    let mut out = Vec::with_capacity(1);
    let mut pos = 0;
    while pos < records.len() {
        let header = batch::validate(&records[pos..], max_message_bytes)?;
        out.push((pos, header));
        pos += header.total_bytes();
    }
    Ok(out)
}

/// Checks the batches a leader sent a follower: framing, CRC32C, and record counts that fit
/// the offset range (compaction on the leader may have emptied batches, keeping their
/// range, so fewer records than offsets is allowed). No size limit: the leader applied it.
fn validate_replica(records: &[u8]) -> Result<Vec<(usize, BatchHeader)>, AppendError> {
    if records.is_empty() {
        return Err(AppendError::Corrupt(batch::BatchError::Empty));
    }
    let mut out = Vec::with_capacity(4);
    let mut pos = 0;
    while pos < records.len() {
        let header = batch::check_framing(&records[pos..])?;
        let total = header.total_bytes();
        batch::verify_crc(&header, &records[pos..pos + total])?;
        let (count, delta) = (header.record_count.get(), header.last_offset_delta.get());
        if count < 0 || delta < 0 || i64::from(count) > i64::from(delta) + 1 {
            return Err(AppendError::InvalidRecord(
                batch::BatchError::BadRecordCount {
                    count,
                    last_offset_delta: delta,
                },
            ));
        }
        out.push((pos, header));
        pos += total;
    }
    Ok(out)
}

/// A compacted log refuses keyless records (as Kafka does); compressed batches are
/// decompressed (bounded) to check them.
fn check_keys(records: &[u8], headers: &[(usize, BatchHeader)]) -> Result<(), AppendError> {
    for (start, header) in headers {
        if header.is_control() {
            continue;
        }
        let bytes = &records[*start..start + header.total_bytes()];
        let section = crate::compact::record_section(header, bytes)
            .map_err(|e| AppendError::Corrupt(batch::BatchError::Decompress(e)))?;
        let iter = batch::RecordIter::from_records(&section, header.record_count.get());
        for (i, record) in iter.enumerate() {
            if record.map_err(AppendError::InvalidRecord)?.key.is_none() {
                return Err(AppendError::KeylessRecord {
                    record_index: i as u32,
                });
            }
        }
    }
    Ok(())
}

/// Removes leading segments (never the last) while `pred(segment, next_base)` holds.
fn take_segments_while(
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
async fn remove_segments(
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
