//! Idempotent producer state of one partition, as Kafka keeps it: per producer id the
//! epoch and the last five batches (sequence range and offsets). A batch from a known
//! producer must continue its sequence; a retried batch is recognised and answered with
//! its original offsets instead of being appended twice.
//!
//! A transactional producer also has at most one open transaction here: from its first
//! transactional batch after its last marker to its next marker (`txn.rs`). A producer
//! with an open transaction may only write transactionally; a marker must carry the
//! producer's epoch or a newer one, and its coordinator's epoch or a newer one.
//!
//! Two copies are kept by the log: `latest` validates appends as they arrive, `written`
//! follows the written offset and is what the snapshot (`producer.snapshot`, written
//! with each recovery checkpoint, at the same offset) records, with the log's aborted
//! transactions below that offset. Recovery loads the snapshot and replays the batches
//! it scans after the checkpoint.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use crate::batch::BatchHeader;
use crate::error::{AppendError, LogError};
use crate::files;
use crate::txn::{AbortedTxn, CompletedTxn, Marker, MarkerKind, ABORTED_TXNS_MAX};
use crate::types::Offset;

/// Batches remembered per producer for duplicate detection (Kafka keeps five).
pub const BATCHES_PER_PRODUCER: usize = 5;
pub const SNAPSHOT_FILE: &str = "producer.snapshot";
const MAGIC: &[u8; 4] = b"SLPS";
/// Version 2 adds each producer's open transaction and coordinator epoch, and the log's
/// aborted transactions; version 1 snapshots are still read.
const VERSION: u32 = 2;

/// One idempotent batch: its producer, sequence range and offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: Offset,
    pub last_offset: Offset,
    /// Part of a transaction (the batch's transactional attribute).
    pub transactional: bool,
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
            transactional: header.is_transactional(),
        })
    }
}

/// What a stored batch changes in the producer state: an idempotent or transactional
/// data batch, or a transaction marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerEvent {
    Batch(ProducerBatch),
    Marker { marker: Marker, offset: Offset },
}

impl ProducerEvent {
    /// The event of the whole stored batch `bytes` at `base`; `None` for batches without
    /// a producer, and for a control batch that is not a well-formed marker (only a
    /// coordinator writes control batches; one that does not parse changes nothing).
    pub fn from_stored(header: &BatchHeader, bytes: &[u8], base: Offset) -> Option<Self> {
        if header.is_control() {
            let marker = Marker::parse(header, bytes).ok()?;
            return Some(ProducerEvent::Marker {
                marker,
                offset: base,
            });
        }
        ProducerBatch::from_header(header, base).map(ProducerEvent::Batch)
    }

    pub fn last_offset(&self) -> Offset {
        match self {
            ProducerEvent::Batch(b) => b.last_offset,
            ProducerEvent::Marker { offset, .. } => *offset,
        }
    }
}

/// Sequence numbers wrap from i32::MAX to 0, as in Kafka.
fn add_seq(seq: i32, delta: i32) -> i32 {
    ((i64::from(seq) + i64::from(delta)) % (i64::from(i32::MAX) + 1)) as i32
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    batches: VecDeque<ProducerBatch>,
    /// Where its open transaction began (`None`: no open transaction).
    txn_first: Option<Offset>,
    /// The epoch of the coordinator that wrote its last marker (-1: none yet).
    coordinator_epoch: i32,
}

impl Default for Producer {
    fn default() -> Self {
        Producer {
            epoch: 0,
            batches: VecDeque::new(),
            txn_first: None,
            coordinator_epoch: -1,
        }
    }
}

/// One producer as DescribeProducers shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerView {
    pub producer_id: i64,
    pub epoch: i16,
    /// The last sequence written (-1: none remembered).
    pub last_sequence: i32,
    /// The epoch of the coordinator that wrote its last marker (-1: none).
    pub coordinator_epoch: i32,
    /// Where its open transaction began (`None`: none open).
    pub txn_start: Option<Offset>,
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
    /// Open transactions by first offset: (first offset, producer). Mirrors each
    /// producer's `txn_first`.
    open: BTreeSet<(Offset, i64)>,
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
        if p.txn_first.is_some() && !batch.transactional {
            return Err(AppendError::InvalidTxnState {
                producer_id: batch.producer_id,
            });
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

    /// Checks a marker against the state without changing it: the producer's epoch or a
    /// newer one (an older one is a fenced producer's), and its last coordinator's epoch
    /// or a newer one (an older one is a coordinator that lost its partition).
    pub fn check_marker(&self, marker: &Marker) -> Result<(), AppendError> {
        let Some(p) = self.producers.get(&marker.producer_id) else {
            return Ok(());
        };
        if marker.producer_epoch < p.epoch {
            return Err(AppendError::InvalidProducerEpoch {
                producer_id: marker.producer_id,
                epoch: marker.producer_epoch,
                current: p.epoch,
            });
        }
        if marker.coordinator_epoch < p.coordinator_epoch {
            return Err(AppendError::CoordinatorFenced {
                producer_id: marker.producer_id,
                coordinator_epoch: marker.coordinator_epoch,
                current: p.coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Records an appended batch (checked before, or replayed from the log).
    pub fn apply(&mut self, batch: ProducerBatch) {
        let p = self.producers.entry(batch.producer_id).or_default();
        if batch.epoch != p.epoch {
            p.epoch = batch.epoch;
            p.batches.clear();
        }
        if batch.transactional && p.txn_first.is_none() {
            p.txn_first = Some(batch.first_offset);
            self.open.insert((batch.first_offset, batch.producer_id));
        }
        p.batches.push_back(batch);
        while p.batches.len() > BATCHES_PER_PRODUCER {
            p.batches.pop_front();
        }
    }

    /// Records a marker at `offset`: the producer's open transaction (or, with none open
    /// here, an empty one at the marker) ends. Kafka's `appendEndTxnMarker`.
    pub fn apply_marker(&mut self, marker: Marker, offset: Offset) -> CompletedTxn {
        let p = self.producers.entry(marker.producer_id).or_default();
        if marker.producer_epoch != p.epoch {
            p.epoch = marker.producer_epoch;
            p.batches.clear();
        }
        p.coordinator_epoch = p.coordinator_epoch.max(marker.coordinator_epoch);
        let first = match p.txn_first.take() {
            Some(first) => {
                self.open.remove(&(first, marker.producer_id));
                first
            }
            None => offset,
        };
        CompletedTxn {
            producer_id: marker.producer_id,
            first_offset: first,
            last_offset: offset,
            aborted: marker.kind == MarkerKind::Abort,
        }
    }

    /// Records a stored batch's event; a marker returns the transaction it ended.
    pub fn apply_event(&mut self, event: ProducerEvent) -> Option<CompletedTxn> {
        match event {
            ProducerEvent::Batch(b) => {
                self.apply(b);
                None
            }
            ProducerEvent::Marker { marker, offset } => Some(self.apply_marker(marker, offset)),
        }
    }

    /// The producers known here, by id, at most `max` of them.
    pub fn views(&self, max: usize) -> Vec<ProducerView> {
        self.producers
            .iter()
            .take(max)
            .map(|(id, p)| ProducerView {
                producer_id: *id,
                epoch: p.epoch,
                last_sequence: p.batches.back().map_or(-1, |b| b.last_seq),
                coordinator_epoch: p.coordinator_epoch,
                txn_start: p.txn_first,
            })
            .collect()
    }

    /// Where `producer_id`'s open transaction here began, if it has one.
    pub fn open_txn(&self, producer_id: i64) -> Option<Offset> {
        self.producers.get(&producer_id).and_then(|p| p.txn_first)
    }

    /// The first offset of the earliest open transaction.
    pub fn first_open(&self) -> Option<Offset> {
        self.open.first().map(|(first, _)| *first)
    }

    /// Opens `producer_id`'s transaction at `first` again: its marker was truncated away
    /// (see `TxnIndex::truncate_to`).
    pub fn reopen(&mut self, producer_id: i64, first: Offset) {
        let p = self.producers.entry(producer_id).or_default();
        if let Some(was) = p.txn_first.replace(first) {
            self.open.remove(&(was, producer_id));
        }
        self.open.insert((first, producer_id));
    }

    /// The last offset of the newest batch of `producer_id` (compaction keeps that batch,
    /// even emptied, so the producer's sequence survives a replay of the log).
    pub fn last_offset(&self, producer_id: i64) -> Option<Offset> {
        self.producers
            .get(&producer_id)
            .and_then(|p| p.batches.back())
            .map(|b| b.last_offset)
    }

    /// Whether `producer_id` has state here (it has not expired).
    pub fn knows(&self, producer_id: i64) -> bool {
        self.producers.contains_key(&producer_id)
    }

    /// Forgets batches at or after `end` (after the log was truncated there), and
    /// transactions that began there. A producer with an open transaction is kept.
    pub fn truncate_to(&mut self, end: Offset) {
        self.producers.retain(|_, p| {
            p.batches.retain(|b| b.last_offset < end);
            if p.txn_first.is_some_and(|first| first >= end) {
                p.txn_first = None;
            }
            !p.batches.is_empty() || p.txn_first.is_some()
        });
        self.open.retain(|(first, _)| *first < end);
    }

    /// Forgets producers whose every batch is below `log_start`, unless a transaction of
    /// theirs is still open (its marker is still to come).
    pub fn drop_before(&mut self, log_start: Offset) {
        self.producers.retain(|_, p| {
            p.txn_first.is_some() || p.batches.back().is_some_and(|b| b.last_offset >= log_start)
        });
    }

    /// The snapshot at `offset`: this state and `aborted`, the log's aborted transactions
    /// whose marker is below `offset` (at most [`ABORTED_TXNS_MAX`]).
    pub fn encode<'a>(
        &self,
        offset: Offset,
        aborted: impl Iterator<Item = &'a AbortedTxn>,
    ) -> Vec<u8> {
        let aborted: Vec<&AbortedTxn> = aborted
            .filter(|t| t.last_offset < offset)
            .take(ABORTED_TXNS_MAX)
            .collect();
        let mut out = Vec::with_capacity(28 + self.producers.len() * 76 + aborted.len() * 24);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&offset.0.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (pid, p) in &self.producers {
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&p.epoch.to_be_bytes());
            out.extend_from_slice(&p.txn_first.map_or(-1, |o| o.0).to_be_bytes());
            out.extend_from_slice(&p.coordinator_epoch.to_be_bytes());
            out.push(p.batches.len() as u8);
            for b in &p.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.0.to_be_bytes());
                out.extend_from_slice(&b.last_offset.0.to_be_bytes());
                out.push(u8::from(b.transactional));
            }
        }
        out.extend_from_slice(&(aborted.len() as u32).to_be_bytes());
        for t in aborted {
            out.extend_from_slice(&t.producer_id.to_be_bytes());
            out.extend_from_slice(&t.first_offset.0.to_be_bytes());
            out.extend_from_slice(&t.last_offset.0.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// The state, the offset it holds for and the aborted transactions below it; `None`
    /// for anything damaged.
    pub fn decode(bytes: &[u8]) -> Option<(Offset, ProducerState, Vec<AbortedTxn>)> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = Reader(body);
        if r.take(4)? != MAGIC {
            return None;
        }
        let version = r.u32()?;
        if version != 1 && version != VERSION {
            return None;
        }
        let offset = Offset(r.i64()?);
        let count = r.u32()?;
        let mut state = ProducerState::default();
        for _ in 0..count {
            let pid = r.i64()?;
            let (pid, p) = decode_producer(&mut r, version, pid)?;
            if let Some(first) = p.txn_first {
                state.open.insert((first, pid));
            }
            state.producers.insert(pid, p);
        }
        let mut aborted = Vec::new();
        if version >= 2 {
            let n = r.u32()? as usize;
            if n > ABORTED_TXNS_MAX {
                return None;
            }
            for _ in 0..n {
                let t = AbortedTxn {
                    producer_id: r.i64()?,
                    first_offset: Offset(r.i64()?),
                    last_offset: Offset(r.i64()?),
                };
                let ordered = aborted
                    .last()
                    .is_none_or(|p: &AbortedTxn| p.last_offset < t.last_offset);
                if t.first_offset > t.last_offset || t.last_offset >= offset || !ordered {
                    return None;
                }
                aborted.push(t);
            }
        }
        r.0.is_empty().then_some((offset, state, aborted))
    }

    /// The snapshot in `dir` if it is intact and holds for exactly `offset`, with the
    /// aborted transactions it records.
    pub async fn read_snapshot(
        dir: &Path,
        offset: Offset,
    ) -> Result<Option<(ProducerState, Vec<AbortedTxn>)>, LogError> {
        let bytes = files::read_small(&dir.join(SNAPSHOT_FILE)).await?;
        Ok(bytes
            .and_then(|b| ProducerState::decode(&b))
            .filter(|(at, _, _)| *at == offset)
            .map(|(_, state, aborted)| (state, aborted)))
    }
}

/// One producer of a snapshot (version 1: no transaction fields).
fn decode_producer(r: &mut Reader<'_>, version: u32, pid: i64) -> Option<(i64, Producer)> {
    let epoch = r.i16()?;
    let (txn_first, coordinator_epoch) = if version >= 2 {
        let first = r.i64()?;
        ((first >= 0).then_some(Offset(first)), r.i32()?)
    } else {
        (None, -1)
    };
    let n = r.take(1)?[0] as usize;
    if n > BATCHES_PER_PRODUCER {
        return None;
    }
    let mut p = Producer {
        epoch,
        batches: VecDeque::with_capacity(n),
        txn_first,
        coordinator_epoch,
    };
    for _ in 0..n {
        let first_seq = r.i32()?;
        let last_seq = r.i32()?;
        let first_offset = Offset(r.i64()?);
        let last_offset = Offset(r.i64()?);
        let transactional = if version >= 2 {
            match r.take(1)?[0] {
                0 => false,
                1 => true,
                _ => return None,
            }
        } else {
            false
        };
        p.batches.push_back(ProducerBatch {
            producer_id: pid,
            epoch,
            first_seq,
            last_seq,
            first_offset,
            last_offset,
            transactional,
        });
    }
    Some((pid, p))
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
            transactional: false,
        }
    }

    fn txn(pid: i64, epoch: i16, first_seq: i32, n: i32, first_offset: i64) -> ProducerBatch {
        ProducerBatch {
            transactional: true,
            ..pb(pid, epoch, first_seq, n, first_offset)
        }
    }

    fn marker(pid: i64, epoch: i16, coordinator_epoch: i32, kind: MarkerKind) -> Marker {
        Marker {
            producer_id: pid,
            producer_epoch: epoch,
            coordinator_epoch,
            kind,
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
        let bytes = s.encode(Offset(14), std::iter::empty());
        assert_eq!(
            ProducerState::decode(&bytes),
            Some((Offset(14), s.clone(), vec![]))
        );
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

    #[test]
    fn a_transaction_runs_from_its_first_batch_to_its_marker() {
        let mut s = ProducerState::default();
        s.apply(txn(1, 0, 0, 2, 10));
        s.apply(txn(2, 0, 0, 1, 12));
        s.apply(txn(1, 0, 2, 1, 13));
        assert_eq!(s.first_open(), Some(Offset(10)));
        // An open transaction takes only transactional writes from its producer.
        assert!(matches!(
            s.check(&pb(1, 0, 3, 1, 14)),
            Err(AppendError::InvalidTxnState { producer_id: 1 })
        ));
        assert_eq!(s.check(&pb(3, 0, 0, 1, 14)).unwrap(), Verdict::Append);
        let done = s.apply_marker(marker(1, 0, 5, MarkerKind::Abort), Offset(14));
        assert_eq!(
            done,
            CompletedTxn {
                producer_id: 1,
                first_offset: Offset(10),
                last_offset: Offset(14),
                aborted: true
            }
        );
        assert_eq!(s.first_open(), Some(Offset(12)));
        assert_eq!(s.check(&pb(1, 0, 3, 1, 15)).unwrap(), Verdict::Append);
        // A marker with nothing open here is an empty transaction at the marker.
        let empty = s.apply_marker(marker(3, 0, 5, MarkerKind::Commit), Offset(15));
        assert_eq!((empty.first_offset, empty.aborted), (Offset(15), false));
        s.apply_marker(marker(2, 0, 5, MarkerKind::Commit), Offset(16));
        assert_eq!(s.first_open(), None);
    }

    #[test]
    fn markers_from_a_fenced_producer_or_an_older_coordinator_are_refused() {
        let mut s = ProducerState::default();
        s.apply(txn(1, 3, 0, 1, 0));
        assert!(matches!(
            s.check_marker(&marker(1, 2, 0, MarkerKind::Commit)),
            Err(AppendError::InvalidProducerEpoch { current: 3, .. })
        ));
        s.apply_marker(marker(1, 3, 7, MarkerKind::Commit), Offset(1));
        assert!(matches!(
            s.check_marker(&marker(1, 3, 6, MarkerKind::Abort)),
            Err(AppendError::CoordinatorFenced { current: 7, .. })
        ));
        assert!(s.check_marker(&marker(1, 4, 7, MarkerKind::Abort)).is_ok());
        // A newer producer epoch in a marker (the coordinator bumped it) resets sequences.
        s.apply_marker(marker(1, 4, 7, MarkerKind::Abort), Offset(2));
        assert_eq!(s.check(&txn(1, 4, 0, 1, 3)).unwrap(), Verdict::Append);
    }

    #[test]
    fn truncation_forgets_transactions_begun_after_the_cut_and_reopen_restores_one() {
        let mut s = ProducerState::default();
        s.apply(txn(1, 0, 0, 1, 5));
        s.apply(txn(2, 0, 0, 1, 9));
        let mut cut = s.clone();
        cut.truncate_to(Offset(9));
        assert_eq!(cut.first_open(), Some(Offset(5)));
        assert_eq!(cut.len(), 1);
        cut.truncate_to(Offset(5));
        assert!(cut.is_empty() && cut.first_open().is_none());
        cut.reopen(1, Offset(3));
        assert_eq!(cut.first_open(), Some(Offset(3)));
        // An open transaction keeps its producer past retention.
        s.drop_before(Offset(100));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_snapshot_keeps_open_transactions_and_aborted_ones_below_its_offset() {
        let mut s = ProducerState::default();
        s.apply(txn(1, 0, 0, 2, 10));
        s.apply_marker(marker(1, 0, 2, MarkerKind::Abort), Offset(12));
        s.apply(txn(2, 1, 0, 1, 13));
        let aborted = [
            AbortedTxn {
                producer_id: 1,
                first_offset: Offset(10),
                last_offset: Offset(12),
            },
            AbortedTxn {
                producer_id: 9,
                first_offset: Offset(14),
                last_offset: Offset(20),
            },
        ];
        let bytes = s.encode(Offset(15), aborted.iter());
        let (at, back, kept) = ProducerState::decode(&bytes).expect("decodes");
        assert_eq!((at, &back), (Offset(15), &s));
        assert_eq!(
            kept,
            aborted[..1].to_vec(),
            "a marker past the offset is not kept"
        );
        assert_eq!(back.first_open(), Some(Offset(13)));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 4;
            assert_eq!(ProducerState::decode(&bad), None, "flip at {i}");
        }
    }

    #[test]
    fn a_version_1_snapshot_still_loads() {
        let mut v1 = Vec::new();
        v1.extend_from_slice(MAGIC);
        v1.extend_from_slice(&1u32.to_be_bytes());
        v1.extend_from_slice(&14i64.to_be_bytes());
        v1.extend_from_slice(&1u32.to_be_bytes());
        v1.extend_from_slice(&7i64.to_be_bytes());
        v1.extend_from_slice(&2i16.to_be_bytes());
        v1.push(1);
        for v in [0i32, 2] {
            v1.extend_from_slice(&v.to_be_bytes());
        }
        for v in [10i64, 12] {
            v1.extend_from_slice(&v.to_be_bytes());
        }
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        let (at, s, aborted) = ProducerState::decode(&v1).expect("v1 decodes");
        assert_eq!((at, aborted), (Offset(14), vec![]));
        let mut want = ProducerState::default();
        want.apply(pb(7, 2, 0, 3, 10));
        assert_eq!(s, want);
    }
}
