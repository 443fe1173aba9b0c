//! Idempotent producer state of one partition, as Kafka keeps it: per producer id the
//! epoch and the last five batches (sequence range and offsets). A batch from a known
//! producer must continue its sequence; a retried batch is recognised and answered with
//! its original offsets instead of being appended twice.
//!
//! Two copies are kept by the log: `latest` validates appends as they arrive, `written`
//! follows the written offset and is what the snapshot (`producer.snapshot`, written
//! with each recovery checkpoint, at the same offset) records. Recovery loads the
//! snapshot and replays the batches it scans after the checkpoint.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use crate::batch::BatchHeader;
use crate::error::{AppendError, LogError};
use crate::files;
use crate::types::Offset;

/// Batches remembered per producer for duplicate detection (Kafka keeps five).
pub const BATCHES_PER_PRODUCER: usize = 5;
pub const SNAPSHOT_FILE: &str = "producer.snapshot";
const MAGIC: &[u8; 4] = b"SLPS";
const VERSION: u32 = 1;

/// One idempotent batch: its producer, sequence range and offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: Offset,
    pub last_offset: Offset,
}

impl ProducerBatch {
    /// The producer fields of a stored batch at `base`; `None` for non-idempotent batches.
    pub fn from_header(header: &BatchHeader, base: Offset) -> Option<Self> {
        let producer_id = header.producer_id.get();
        if producer_id < 0 || header.base_sequence.get() < 0 {
            return None;
        }
        let first_seq = header.base_sequence.get();
        let delta = header.last_offset_delta.get();
        Some(ProducerBatch {
            producer_id,
            epoch: header.producer_epoch.get(),
            first_seq,
            last_seq: add_seq(first_seq, delta),
            first_offset: base,
            last_offset: base.plus(i64::from(delta)),
        })
    }
}

/// Sequence numbers wrap from i32::MAX to 0, as in Kafka.
fn add_seq(seq: i32, delta: i32) -> i32 {
    ((i64::from(seq) + i64::from(delta)) % (i64::from(i32::MAX) + 1)) as i32
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    batches: VecDeque<ProducerBatch>,
}

/// What an idempotent batch is, against the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Next in sequence (or the first of a new producer or epoch): append it.
    Append,
    /// A retry of a batch already in the log, at these offsets.
    Duplicate(ProducerBatch),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerState {
    producers: BTreeMap<i64, Producer>,
}

impl ProducerState {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Checks `batch` against the state without changing it.
    pub fn check(&self, batch: &ProducerBatch) -> Result<Verdict, AppendError> {
        let Some(p) = self.producers.get(&batch.producer_id) else {
            return if batch.first_seq == 0 {
                Ok(Verdict::Append)
            } else {
                Err(AppendError::UnknownProducerId(batch.producer_id))
            };
        };
        if batch.epoch < p.epoch {
            return Err(AppendError::InvalidProducerEpoch {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                current: p.epoch,
            });
        }
        if batch.epoch > p.epoch {
            return if batch.first_seq == 0 {
                Ok(Verdict::Append)
            } else {
                Err(AppendError::OutOfOrderSequence {
                    producer_id: batch.producer_id,
                    expected: 0,
                    got: batch.first_seq,
                })
            };
        }
        if let Some(dup) = p
            .batches
            .iter()
            .find(|b| b.first_seq == batch.first_seq && b.last_seq == batch.last_seq)
        {
            return Ok(Verdict::Duplicate(*dup));
        }
        let expected = p.batches.back().map_or(0, |b| add_seq(b.last_seq, 1));
        if batch.first_seq != expected {
            return Err(AppendError::OutOfOrderSequence {
                producer_id: batch.producer_id,
                expected,
                got: batch.first_seq,
            });
        }
        Ok(Verdict::Append)
    }

    /// Records an appended batch (checked before, or replayed from the log).
    pub fn apply(&mut self, batch: ProducerBatch) {
        let p = self.producers.entry(batch.producer_id).or_default();
        if batch.epoch != p.epoch {
            p.epoch = batch.epoch;
            p.batches.clear();
        }
        p.batches.push_back(batch);
        while p.batches.len() > BATCHES_PER_PRODUCER {
            p.batches.pop_front();
        }
    }

    /// The last offset of the newest batch of `producer_id` (compaction keeps that batch,
    /// even emptied, so the producer's sequence survives a replay of the log).
    pub fn last_offset(&self, producer_id: i64) -> Option<Offset> {
        self.producers
            .get(&producer_id)
            .and_then(|p| p.batches.back())
            .map(|b| b.last_offset)
    }

    /// Forgets batches at or after `end` (after the log was truncated there).
    pub fn truncate_to(&mut self, end: Offset) {
        self.producers.retain(|_, p| {
            p.batches.retain(|b| b.last_offset < end);
            !p.batches.is_empty()
        });
    }

    /// Forgets producers whose every batch is below `log_start`.
    pub fn drop_before(&mut self, log_start: Offset) {
        self.producers
            .retain(|_, p| p.batches.back().is_some_and(|b| b.last_offset >= log_start));
    }

    pub fn encode(&self, offset: Offset) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.producers.len() * 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&offset.0.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (pid, p) in &self.producers {
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&p.epoch.to_be_bytes());
            out.push(p.batches.len() as u8);
            for b in &p.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.0.to_be_bytes());
                out.extend_from_slice(&b.last_offset.0.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// The state and the offset it holds for; `None` for anything damaged.
    pub fn decode(bytes: &[u8]) -> Option<(Offset, ProducerState)> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = Reader(body);
        if r.take(4)? != MAGIC || r.u32()? != VERSION {
            return None;
        }
        let offset = Offset(r.i64()?);
        let count = r.u32()?;
        let mut state = ProducerState::default();
        for _ in 0..count {
            let pid = r.i64()?;
            let epoch = r.i16()?;
            let n = r.take(1)?[0] as usize;
            if n > BATCHES_PER_PRODUCER {
                return None;
            }
            let mut p = Producer {
                epoch,
                batches: VecDeque::with_capacity(n),
            };
            for _ in 0..n {
                p.batches.push_back(ProducerBatch {
                    producer_id: pid,
                    epoch,
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: Offset(r.i64()?),
                    last_offset: Offset(r.i64()?),
                });
            }
            state.producers.insert(pid, p);
        }
        r.0.is_empty().then_some((offset, state))
    }

    pub async fn write_snapshot(&self, dir: &Path, offset: Offset) -> Result<(), LogError> {
        files::write_atomic(dir, SNAPSHOT_FILE, &self.encode(offset)).await
    }

    /// The snapshot in `dir` if it is intact and holds for exactly `offset`.
    pub async fn read_snapshot(
        dir: &Path,
        offset: Offset,
    ) -> Result<Option<ProducerState>, LogError> {
        let bytes = files::read_small(&dir.join(SNAPSHOT_FILE)).await?;
        Ok(bytes
            .and_then(|b| ProducerState::decode(&b))
            .filter(|(at, _)| *at == offset)
            .map(|(_, state)| state))
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb(pid: i64, epoch: i16, first_seq: i32, n: i32, first_offset: i64) -> ProducerBatch {
        ProducerBatch {
            producer_id: pid,
            epoch,
            first_seq,
            last_seq: add_seq(first_seq, n - 1),
            first_offset: Offset(first_offset),
            last_offset: Offset(first_offset + i64::from(n) - 1),
        }
    }

    #[test]
    fn sequences_duplicates_and_epochs() {
        let mut s = ProducerState::default();
        assert!(matches!(
            s.check(&pb(7, 0, 5, 1, 0)),
            Err(AppendError::UnknownProducerId(7))
        ));
        assert_eq!(s.check(&pb(7, 0, 0, 3, 0)).unwrap(), Verdict::Append);
        s.apply(pb(7, 0, 0, 3, 0));
        assert_eq!(s.check(&pb(7, 0, 3, 2, 3)).unwrap(), Verdict::Append);
        s.apply(pb(7, 0, 3, 2, 3));
        assert_eq!(
            s.check(&pb(7, 0, 0, 3, 99)).unwrap(),
            Verdict::Duplicate(pb(7, 0, 0, 3, 0))
        );
        assert!(matches!(
            s.check(&pb(7, 0, 6, 1, 5)),
            Err(AppendError::OutOfOrderSequence {
                expected: 5,
                got: 6,
                ..
            })
        ));
        assert!(matches!(
            s.check(&pb(7, -1, 5, 1, 5)),
            Err(AppendError::InvalidProducerEpoch { .. })
        ));
        assert!(matches!(
            s.check(&pb(7, 1, 5, 1, 5)),
            Err(AppendError::OutOfOrderSequence { .. })
        ));
        assert_eq!(s.check(&pb(7, 1, 0, 1, 5)).unwrap(), Verdict::Append);
        // Only the last five batches are remembered.
        for i in 0..7 {
            s.apply(pb(7, 0, 5 + i, 1, 5 + i64::from(i)));
        }
        assert_eq!(s.producers[&7].batches.len(), BATCHES_PER_PRODUCER);
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        let mut s = ProducerState::default();
        s.apply(pb(1, 0, i32::MAX - 1, 2, 0));
        assert_eq!(s.check(&pb(1, 0, 0, 1, 2)).unwrap(), Verdict::Append);
    }

    #[test]
    fn snapshot_round_trips_and_rejects_damage() {
        let mut s = ProducerState::default();
        s.apply(pb(1, 2, 0, 3, 10));
        s.apply(pb(9, 0, 0, 1, 13));
        let bytes = s.encode(Offset(14));
        assert_eq!(ProducerState::decode(&bytes), Some((Offset(14), s.clone())));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 4;
            assert_eq!(ProducerState::decode(&bad), None, "flip at {i}");
        }
        assert_eq!(ProducerState::decode(&bytes[..bytes.len() - 1]), None);
        let mut t = s.clone();
        t.truncate_to(Offset(13));
        assert_eq!(t.len(), 1);
        t.drop_before(Offset(13));
        assert!(t.is_empty());
    }
}
