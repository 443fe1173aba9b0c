//! The leader epoch cache of a partition, as Kafka's `leader-epoch-checkpoint`: for each
//! leader epoch, the first offset written in it. It answers OffsetForLeaderEpoch (where
//! did epoch N end?) so a follower or an old leader can find where its log diverged.
//!
//! Invariant: epochs and start offsets both strictly increase. The file is rewritten
//! (atomically) by the flusher when an epoch is added or the log is truncated; recovery
//! loads it, forgets entries past the recovered end and replays scanned batches, and has
//! the flusher write the file again when that changed it (before the next checkpoint stops
//! those batches being scanned).

use std::path::Path;

use crate::error::LogError;
use crate::files;
use crate::types::{LeaderEpoch, Offset};

pub const FILE_NAME: &str = "leader-epoch-checkpoint";
const MAGIC: &[u8; 4] = b"SLEP";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<(LeaderEpoch, Offset)>,
}

impl EpochCache {
    pub fn latest(&self) -> Option<LeaderEpoch> {
        self.entries.last().map(|e| e.0)
    }

    /// Notes a batch of `epoch` at `offset`; returns whether that began a new epoch.
    /// Epochs older than the latest (never written by a correct leader) are ignored. An
    /// epoch that began at or after `offset` without a batch (a leadership assigned at the
    /// log end that wrote nothing) gives way, as in Kafka's `assign`.
    pub fn observe(&mut self, epoch: LeaderEpoch, offset: Offset) -> bool {
        if epoch.0 < 0 || self.latest().is_some_and(|l| epoch <= l) {
            return false;
        }
        self.entries.retain(|(_, start)| *start < offset);
        self.entries.push((epoch, offset));
        true
    }

    /// Kafka's `endOffsetFor`: the largest epoch ≤ `requested` and the offset where it
    /// ended (the next epoch's start, or `log_end` for the latest). An epoch older than
    /// every known one ended where the first known one began, answered with the requested
    /// epoch (as Kafka does: a follower whose log holds only newer epochs then truncates
    /// to that start). `None` when no epoch is known, or for a negative (undefined) one.
    pub fn end_offset_for(
        &self,
        requested: LeaderEpoch,
        log_end: Offset,
    ) -> Option<(LeaderEpoch, Offset)> {
        if requested.0 < 0 {
            return None;
        }
        let i = self.entries.partition_point(|(e, _)| *e <= requested);
        if i == 0 {
            return self.entries.first().map(|(_, start)| (requested, *start));
        }
        let epoch = self.entries[i - 1].0;
        let end = self.entries.get(i).map_or(log_end, |(_, start)| *start);
        Some((epoch, end))
    }

    /// Checks the invariant: epochs and their start offsets both strictly increase. Called
    /// whenever an epoch is added (rare: once per leadership), so its cost is per epoch.
    pub fn assert_ordered(&self) {
        for w in self.entries.windows(2) {
            let ((e0, s0), (e1, s1)) = (w[0], w[1]);
            assert!(
                e0 < e1 && s0 < s1,
                "leader epochs out of order: epoch {e0} from {s0}, then epoch {e1} from {s1}"
            );
        }
    }

    /// Kafka's `assign` as a leadership begins: `epoch` starts at `log_end` even before a
    /// batch of it is written, so the leader's cache is never without its own epoch. An
    /// epoch in which nothing was written (it starts at `log_end` too) gives way to it.
    /// Returns whether the cache changed; an epoch not newer than the latest changes
    /// nothing.
    pub fn assign(&mut self, epoch: LeaderEpoch, log_end: Offset) -> bool {
        if epoch.0 < 0 || self.latest().is_some_and(|l| epoch <= l) {
            return false;
        }
        self.entries.retain(|(_, start)| *start < log_end);
        self.entries.push((epoch, log_end));
        true
    }

    /// Forgets epochs that start at or after `end` (the log was truncated there).
    pub fn truncate_to(&mut self, end: Offset) {
        self.entries.retain(|(_, start)| *start < end);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.entries.len() * 12);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for (epoch, start) in &self.entries {
            out.extend_from_slice(&epoch.0.to_be_bytes());
            out.extend_from_slice(&start.0.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<EpochCache> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?)
            || body.get(..4)? != MAGIC
        {
            return None;
        }
        let count = u32::from_be_bytes(body.get(4..8)?.try_into().ok()?) as usize;
        let rest = body.get(8..)?;
        if rest.len() != count.checked_mul(12)? {
            return None;
        }
        let mut cache = EpochCache::default();
        for e in rest.chunks_exact(12) {
            let epoch = LeaderEpoch(i32::from_be_bytes(e[..4].try_into().ok()?));
            let start = Offset(i64::from_be_bytes(e[4..].try_into().ok()?));
            // Strictly increasing starts as written (observe would let a later entry
            // replace an earlier one).
            let ordered = cache.entries.last().is_none_or(|(_, last)| *last < start);
            if !ordered || !cache.observe(epoch, start) {
                return None;
            }
        }
        Some(cache)
    }

    pub async fn read(dir: &Path) -> Result<EpochCache, LogError> {
        let bytes = files::read_small(&dir.join(FILE_NAME)).await?;
        Ok(bytes
            .and_then(|b| EpochCache::decode(&b))
            .unwrap_or_default())
    }

    pub async fn write(&self, dir: &Path) -> Result<(), LogError> {
        files::write_atomic(dir, FILE_NAME, &self.encode()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "leader epochs out of order")]
    fn an_epoch_starting_before_the_previous_one_panics() {
        let c = EpochCache {
            entries: vec![(LeaderEpoch(1), Offset(10)), (LeaderEpoch(2), Offset(10))],
        };
        c.assert_ordered();
    }

    #[test]
    fn a_leadership_assigns_its_epoch_at_the_log_end() {
        let mut c = EpochCache::default();
        assert!(c.assign(LeaderEpoch(2), Offset(0)));
        assert_eq!(
            c.end_offset_for(LeaderEpoch(1), Offset(0)),
            Some((LeaderEpoch(1), Offset(0)))
        );
        assert!(!c.assign(LeaderEpoch(2), Offset(5)), "not newer");
        // Epoch 2 wrote nothing: epoch 3, starting at the same offset, replaces it.
        assert!(c.assign(LeaderEpoch(3), Offset(0)));
        assert_eq!(c.entries, vec![(LeaderEpoch(3), Offset(0))]);
        assert!(
            !c.observe(LeaderEpoch(3), Offset(0)),
            "its first batch adds nothing"
        );
        // A follower's first batch of a newer leader at the same offset replaces it too.
        assert!(c.observe(LeaderEpoch(4), Offset(0)));
        assert_eq!(c.entries, vec![(LeaderEpoch(4), Offset(0))]);
        assert!(c.assign(LeaderEpoch(5), Offset(40)));
        c.assert_ordered();
        assert_eq!(
            c.end_offset_for(LeaderEpoch(4), Offset(60)),
            Some((LeaderEpoch(4), Offset(40)))
        );
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let mut c = EpochCache::default();
        assert_eq!(c.end_offset_for(LeaderEpoch(0), Offset(0)), None);
        assert!(c.observe(LeaderEpoch(1), Offset(0)));
        assert!(!c.observe(LeaderEpoch(1), Offset(5)));
        assert!(c.observe(LeaderEpoch(3), Offset(10)));
        assert!(!c.observe(LeaderEpoch(2), Offset(12)));
        assert_eq!(
            c.end_offset_for(LeaderEpoch(0), Offset(20)),
            Some((LeaderEpoch(0), Offset(0)))
        );
        assert_eq!(c.end_offset_for(LeaderEpoch(-1), Offset(20)), None);
        assert_eq!(
            c.end_offset_for(LeaderEpoch(1), Offset(20)),
            Some((LeaderEpoch(1), Offset(10)))
        );
        assert_eq!(
            c.end_offset_for(LeaderEpoch(2), Offset(20)),
            Some((LeaderEpoch(1), Offset(10)))
        );
        assert_eq!(
            c.end_offset_for(LeaderEpoch(3), Offset(20)),
            Some((LeaderEpoch(3), Offset(20)))
        );
        assert_eq!(
            c.end_offset_for(LeaderEpoch(9), Offset(20)),
            Some((LeaderEpoch(3), Offset(20)))
        );
        let bytes = c.encode();
        assert_eq!(EpochCache::decode(&bytes), Some(c.clone()));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert_eq!(EpochCache::decode(&bad), None, "flip at {i}");
        }
        c.truncate_to(Offset(10));
        assert_eq!(c.latest(), Some(LeaderEpoch(1)));
    }
}
