//! The write buffer of a log: the open chunk appends copy into, sealed chunks queued
//! for the flusher, segment rolls, and the cache of recently written chunks.

use std::rc::Rc;

use super::{LogState, Recovered, CHUNK_MIN_BYTES, LOADED_INDEXES_MAX};
use crate::chunk::{OpenChunk, SealedChunk};
use crate::config::{LogConfig, ShardConfig};
use crate::files::{self, now_ms};
use crate::segment::Segment;
use crate::types::{Offset, TopicPartition};
use std::collections::VecDeque;
use std::path::PathBuf;

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
            txns,
            epochs,
            epochs_dirty,
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
            txns,
            loaded_indexes: VecDeque::new(),
            epochs,
            epochs_dirty,
            frozen: None,
            failed: None,
            closing: false,
            cleaner,
            aborted_forgets: 0,
            aborted_forgets_persisted: 0,
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

    pub(super) fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    pub(super) fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    pub(super) fn buffered_bytes(&self) -> usize {
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
    pub(super) fn seal_full(&mut self, batch_bytes: usize) -> usize {
        self.chunk_capacity = (self.chunk_capacity * 2).min(self.chunk_max);
        let capacity = self
            .chunk_capacity
            .max(batch_bytes + files::BLOCK_BYTES as usize);
        match self.open.seal_full(capacity) {
            Some(sealed) => self.queue(Rc::new(sealed)),
            None => 0,
        }
    }

    pub(super) fn queue(&mut self, sealed: Rc<SealedChunk>) -> usize {
        let bytes = sealed.capacity();
        self.pending_bytes += bytes;
        self.pending.push_back(sealed);
        bytes
    }

    /// Starts a new segment at `next_offset` (the file is created by the flusher).
    pub(super) fn roll(&mut self) -> usize {
        let queued = self.seal_open();
        let base = self.next_offset;
        self.segments.insert(base, Segment::new(base, now_ms()));
        self.open = OpenChunk::new(base, 0, &[], self.chunk_capacity, base);
        queued
    }

    pub(super) fn needs_roll(&self, batch_bytes: u64, now: u64) -> bool {
        let active = self.active();
        active.size > 0
            && (active.size + batch_bytes > self.config.segment_bytes_max
                || now.saturating_sub(active.created_ms) >= self.config.segment_ms_max)
    }

    /// The cached chunk whose own range holds `pos` of segment `base`.
    pub(super) fn cached_chunk(&mut self, base: Offset, pos: u64) -> Option<Rc<SealedChunk>> {
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
