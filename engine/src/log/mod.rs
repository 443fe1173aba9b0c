//! A partition log: the segments of one partition, appends into the open chunk, the
//! flusher task that writes and syncs, reads of whole batches, and maintenance
//! (retention, delete-records, truncation).
//!
//! Where each part lives:
//! - `mod.rs` (here): the log's state, its handle, opening and closing it.
//! - `state.rs`: the write buffer (open chunk, sealed chunks), segment rolls, the tail
//!   cache.
//! - `append.rs`: leader appends (validation, producer sequences, timestamps, offset
//!   assignment) and follower appends (offsets kept).
//! - `durability.rs`: waits for written and synced offsets, and when the flusher syncs.
//! - `read.rs`: reads of whole batches, timestamp lookups, index loading.
//! - `maintenance.rs`: delete-records, retention, truncation and reset.
//!
//! Ownership: one shard owns a log; all state sits in one `RefCell` that is never
//! borrowed across an `.await`. One flusher task per log is the only writer of segment
//! files; maintenance that touches files takes `io_lock`, which the flusher holds for each
//! of its cycles, so file operations never interleave.
//!
//! Invariants (asserted where they change):
//! - Offsets: `log_start ≤ synced_end ≤ written_end ≤ next_offset`. Reads see only
//!   `[log_start, written_end)`: what a consumer reads survives a crash of the process.
//! - An append starts at the log end and advances it by exactly the offsets of its
//!   batches; offsets never go back except by `truncate_to` / `reset_to`.
//! - Leader epochs in the epoch cache strictly increase, and so do their start offsets.

mod append;
mod durability;
mod maintenance;
mod read;
mod state;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::rc::{Rc, Weak};

use glommio::sync::Semaphore;

use crate::checkpoint::Checkpoint;
use crate::chunk::{BatchSlice, OpenChunk, SealedChunk};
use crate::compact::CleanerState;
use crate::config::LogConfig;
use crate::epochs::EpochCache;
use crate::error::LogError;
use crate::producer::{ProducerEvent, ProducerState};
use crate::recovery;
use crate::segment::Segment;
use crate::shard::ShardResources;
use crate::txn::TxnIndex;
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

impl LogShared {
    /// Checks `log_start ≤ written_end ≤ log_end` and `synced_end ≤ written_end`, the
    /// order readers and acknowledgements rely on; called after the flusher moves the
    /// written or synced end (the other side of the appends that move the log end).
    pub(crate) fn assert_offsets_ordered(&self) {
        let st = self.state.borrow();
        check_offset_order(
            st.log_start,
            Offset(self.synced.get()),
            Offset(self.written.get()),
            st.next_offset,
        );
    }
}

/// The offset order of a log (see [`LogShared::assert_offsets_ordered`]).
pub(crate) fn check_offset_order(log_start: Offset, synced: Offset, written: Offset, end: Offset) {
    assert!(
        log_start <= written && synced <= written && written <= end,
        "log offsets out of order: start {log_start}, synced end {synced}, written end \
         {written}, log end {end}"
    );
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
    /// Producer batches and markers appended but not yet written, in offset order.
    pub(crate) producer_pending: VecDeque<ProducerEvent>,
    /// Ended transactions not yet stable, and the aborted ones, as of the log end.
    pub(crate) txns: TxnIndex,
    pub(crate) frozen: Option<&'static str>,
    pub(crate) failed: Option<String>,
    pub(crate) closing: bool,
    /// What compaction has cleaned (`cleaner.checkpoint`); changed only by the cleaner.
    pub(crate) cleaner: CleanerState,
    /// Passes that forgot aborted-index entries, and how many of those the producer
    /// snapshot on disk reflects (an abort marker goes only when they are equal).
    pub(crate) aborted_forgets: u64,
    pub(crate) aborted_forgets_persisted: u64,
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
    pub(crate) txns: TxnIndex,
    pub(crate) epochs: EpochCache,
    /// `epochs` holds more than the epoch file did (epochs of batches recovery scanned):
    /// the flusher writes them before the next checkpoint stops those batches being
    /// scanned again.
    pub(crate) epochs_dirty: bool,
    pub(crate) cleaner: CleanerState,
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

    /// This log's broker leads it from now in `epoch`: the epoch cache records that the
    /// epoch starts at the log end (Kafka's `maybeAssignEpochStartOffset`), so the
    /// leader answers OffsetForLeaderEpoch from its own epoch before it writes a batch.
    pub fn assign_leader_epoch(&self, epoch: LeaderEpoch) {
        let mut st = self.shared.state.borrow_mut();
        let end = st.next_offset;
        if st.epochs.assign(epoch, end) {
            st.epochs.assert_ordered();
            st.epochs_dirty = true;
            drop(st);
            self.shared.flusher_wake.notify();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_offsets_pass() {
        check_offset_order(Offset(0), Offset(5), Offset(5), Offset(9));
    }

    #[test]
    #[should_panic(expected = "log offsets out of order")]
    fn a_written_end_beyond_the_log_end_panics() {
        check_offset_order(Offset(0), Offset(5), Offset(10), Offset(9));
    }

    #[test]
    #[should_panic(expected = "log offsets out of order")]
    fn a_synced_end_beyond_the_written_end_panics() {
        check_offset_order(Offset(0), Offset(6), Offset(5), Offset(9));
    }
}
