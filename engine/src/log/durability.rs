//! Durability: waits for offsets to be written or synced, and when the flusher syncs
//! and checkpoints.

use std::time::Duration;

use super::{LogState, PartitionLog};
use crate::config::FlushPolicy;
use crate::error::LogError;
use crate::types::Offset;
use crate::watch::{OffsetWatch, WatchReset};

impl LogState {
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
}

impl PartitionLog {
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
    pub(super) fn ended_before(
        &self,
        watch: &OffsetWatch,
        end: Offset,
    ) -> Option<Result<(), LogError>> {
        if self.shared.flusher_done.get() < 1 {
            return None;
        }
        if watch.get() >= end.0 {
            return Some(Ok(()));
        }
        Some(self.wait_outcome(Err(WatchReset)))
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

    pub(super) fn durable_is_synced(&self) -> bool {
        self.shared.state.borrow().config.flush == FlushPolicy::Fsync
    }

    pub(super) fn wait_outcome(&self, result: Result<(), WatchReset>) -> Result<(), LogError> {
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
}
