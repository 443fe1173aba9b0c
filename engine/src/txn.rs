//! Transactions as one partition's log sees them: the COMMIT and ABORT markers a
//! transaction coordinator writes (Kafka's control batches), and what the log derives from
//! them — the last stable offset (LSO) and the aborted transactions a `read_committed`
//! consumer must skip.
//!
//! A transaction of producer P starts at the offset of P's first transactional batch after
//! its previous marker and ends at its next marker. Per producer, the start lives in the
//! producer state (`producer.rs`, snapshotted with it); this module keeps the rest:
//!
//! - `unstable`: transactions that ended but whose marker is not yet below the high
//!   watermark. A consumer may not pass their first offset before it is: the outcome is
//!   not decided for it until the marker is replicated (Kafka's `unreplicatedTxns`).
//! - `aborted`: every aborted transaction still in the log, ordered by marker offset; a
//!   fetch lists those that overlap what it returns.
//!
//! Invariants: an aborted transaction's `first_offset ≤ last_offset` (its marker);
//! `aborted` is ordered by `last_offset` and holds each marker once; the LSO is at most the
//! high watermark and at most the first offset of every open or unstable transaction.

use std::collections::BTreeMap;

use crate::batch::{self, BatchBuilder, BatchError, BatchHeader, ProducerFields, Record};
use crate::types::Offset;

/// Aborted transactions one log keeps in memory. Past it the oldest are forgotten (logged):
/// a `read_committed` consumer reading that far back would see their records. Kafka keeps
/// them on disk per segment; 64 Ki entries (2 MiB) per partition covers a log of that many
/// aborts, which no workload here approaches.
pub const ABORTED_TXNS_MAX: usize = 64 * 1024;

/// The control record key's `type`: what a marker ends a transaction with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerKind {
    Abort,
    Commit,
}

impl MarkerKind {
    fn code(self) -> i16 {
        match self {
            MarkerKind::Abort => 0,
            MarkerKind::Commit => 1,
        }
    }
}

/// A transaction marker as stored: a control batch of the producer, with one record whose
/// key is `[version: i16 = 0][type: i16]` and value `[version: i16 = 0][coordinator
/// epoch: i32]` (Kafka's `EndTransactionMarker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub coordinator_epoch: i32,
    pub kind: MarkerKind,
}

impl Marker {
    /// The control batch for this marker (base offset and leader epoch are stamped by the
    /// append, like any batch).
    pub fn to_batch(&self, timestamp_ms: i64) -> Vec<u8> {
        let mut key = [0u8; 4];
        key[2..].copy_from_slice(&self.kind.code().to_be_bytes());
        let mut value = [0u8; 6];
        value[2..].copy_from_slice(&self.coordinator_epoch.to_be_bytes());
        let mut b = BatchBuilder::new(timestamp_ms)
            .producer(ProducerFields {
                producer_id: self.producer_id,
                producer_epoch: self.producer_epoch,
                base_sequence: -1,
            })
            .transactional()
            .control();
        b.push(&Record {
            key: Some(&key),
            value: Some(&value),
            headers: &[],
            timestamp_ms,
        });
        b.build()
    }

    /// The marker a whole, framed control batch carries. A control batch that is not one
    /// (unknown key version or type, no record, no producer) is an error, never a panic.
    pub fn parse(header: &BatchHeader, batch: &[u8]) -> Result<Marker, BatchError> {
        let malformed = BatchError::MalformedRecord { index: 0 };
        if !header.is_control() || header.producer_id.get() < 0 || header.compression() != 0 {
            return Err(malformed);
        }
        let record = batch::RecordIter::new(batch, header)
            .next()
            .ok_or(malformed.clone())??;
        let key = record.key.ok_or(malformed.clone())?;
        let value = record.value.unwrap_or(&[]);
        let (version, kind) = match key {
            [v0, v1, t0, t1] => (
                i16::from_be_bytes([*v0, *v1]),
                i16::from_be_bytes([*t0, *t1]),
            ),
            _ => return Err(malformed),
        };
        let kind = match (version, kind) {
            (0, 0) => MarkerKind::Abort,
            (0, 1) => MarkerKind::Commit,
            _ => return Err(malformed),
        };
        // The value's coordinator epoch (absent in a marker Kafka never writes; -1 then).
        let coordinator_epoch = value
            .get(2..6)
            .and_then(|b| b.try_into().ok())
            .map_or(-1, i32::from_be_bytes);
        Ok(Marker {
            producer_id: header.producer_id.get(),
            producer_epoch: header.producer_epoch.get(),
            coordinator_epoch,
            kind,
        })
    }
}

/// A transaction a marker ended: from its first batch to its marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: Offset,
    /// The marker's offset.
    pub last_offset: Offset,
    pub aborted: bool,
}

/// An aborted transaction as a `read_committed` fetch lists it: the consumer drops the
/// producer's records from `first_offset` until it reads the marker at `last_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: Offset,
    pub last_offset: Offset,
}

/// The log's transactions past their markers (see the module header).
#[derive(Debug, Clone, Default)]
pub struct TxnIndex {
    /// Ended transactions whose marker may still be at or above the high watermark, by
    /// first offset: (producer, marker offset).
    unstable: BTreeMap<(Offset, i64), Offset>,
    /// Aborted transactions by marker offset.
    aborted: BTreeMap<Offset, AbortedTxn>,
}

impl TxnIndex {
    /// Notes a transaction a marker just ended.
    pub fn complete(&mut self, txn: CompletedTxn) {
        assert!(
            txn.first_offset <= txn.last_offset,
            "transaction of producer {} starts at {} after its marker at {}",
            txn.producer_id,
            txn.first_offset,
            txn.last_offset
        );
        self.unstable
            .insert((txn.first_offset, txn.producer_id), txn.last_offset);
        if txn.aborted {
            let entry = AbortedTxn {
                producer_id: txn.producer_id,
                first_offset: txn.first_offset,
                last_offset: txn.last_offset,
            };
            let earlier = self.aborted.insert(txn.last_offset, entry);
            assert!(
                earlier.is_none(),
                "two markers at offset {}",
                txn.last_offset
            );
            while self.aborted.len() > ABORTED_TXNS_MAX {
                if let Some((at, _)) = self.aborted.pop_first() {
                    tracing::warn!(marker = %at, "aborted-transaction index full; forgetting its oldest entry");
                }
            }
        }
    }

    /// The last stable offset under high watermark `hw`, given the first offset of the
    /// earliest transaction still open (no marker yet). Forgets ended transactions whose
    /// marker is below `hw`: they are stable for good.
    pub fn last_stable_offset(&mut self, hw: Offset, first_open: Option<Offset>) -> Offset {
        self.unstable.retain(|_, marker| *marker >= hw);
        let first_unstable = self.unstable.keys().next().map(|(first, _)| *first);
        let lso = [Some(hw), first_open, first_unstable]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(hw);
        assert!(
            lso <= hw,
            "last stable offset {lso} above the high watermark {hw}"
        );
        lso
    }

    /// Aborted transactions that overlap `[from, to)`: marker at or after `from`, first
    /// offset before `to`, in marker order, at most `max` of them.
    pub fn aborted_between(&self, from: Offset, to: Offset, max: usize) -> Vec<AbortedTxn> {
        self.aborted
            .range(from..)
            .map(|(_, t)| *t)
            .filter(|t| t.first_offset < to)
            .take(max)
            .collect()
    }

    /// The transactions a cut at `end` opens again: their marker is cut away, their
    /// start is not, as (producer, first offset). A cut never goes below the high
    /// watermark (replication truncates only what was not committed), and ended
    /// transactions are forgotten only once their marker is below it, so every such
    /// transaction is still here.
    pub fn reopened_by_cut(&self, end: Offset) -> Vec<(i64, Offset)> {
        self.unstable
            .iter()
            .filter(|((first, _), marker)| *first < end && **marker >= end)
            .map(|((first, pid), _)| (*pid, *first))
            .collect()
    }

    /// Forgets what lies at or after `end` (the log was truncated there): markers there
    /// are gone, so their transactions are open again (see `reopened_by_cut`).
    pub fn truncate_to(&mut self, end: Offset) {
        self.aborted.retain(|marker, _| *marker < end);
        self.unstable.retain(|_, marker| *marker < end);
    }

    /// Forgets an aborted transaction whose data compaction removed, so that its marker
    /// may go too (its entry must match). Whether it did. A full index forgets nothing
    /// this way: its size is how [`Self::complete_from`] knows older entries were dropped.
    pub fn forget_aborted(&mut self, txn: &AbortedTxn) -> bool {
        let matches = self.aborted.len() < ABORTED_TXNS_MAX
            && self.aborted.get(&txn.last_offset) == Some(txn);
        if matches {
            self.aborted.remove(&txn.last_offset);
        }
        matches
    }

    /// Forgets aborted transactions that ended before `log_start`: no fetch reaches them.
    pub fn drop_before(&mut self, log_start: Offset) {
        self.aborted.retain(|marker, _| *marker >= log_start);
    }

    /// The offset from which the aborted transactions here are all known: the index is
    /// bounded, and once full it may have forgotten transactions whose markers came
    /// before its oldest entry.
    pub fn complete_from(&self) -> Offset {
        match self.aborted.first_key_value() {
            Some((marker, _)) if self.aborted.len() >= ABORTED_TXNS_MAX => *marker,
            _ => Offset(0),
        }
    }

    /// Every aborted transaction, in marker order (for the snapshot).
    pub fn aborted(&self) -> impl Iterator<Item = &AbortedTxn> {
        self.aborted.values()
    }

    /// Rebuilds the aborted index from a snapshot's entries.
    pub fn with_aborted(entries: impl IntoIterator<Item = AbortedTxn>) -> Self {
        let mut index = TxnIndex::default();
        for t in entries {
            index.aborted.insert(t.last_offset, t);
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(kind: MarkerKind) -> Marker {
        Marker {
            producer_id: 42,
            producer_epoch: 3,
            coordinator_epoch: 7,
            kind,
        }
    }

    #[test]
    fn a_marker_round_trips_through_its_control_batch() {
        for kind in [MarkerKind::Abort, MarkerKind::Commit] {
            let bytes = marker(kind).to_batch(1_000);
            let header = batch::validate(&bytes, 1 << 20).expect("valid batch");
            assert!(header.is_control() && header.is_transactional());
            assert_eq!(header.base_sequence.get(), -1);
            assert_eq!(Marker::parse(&header, &bytes), Ok(marker(kind)));
        }
    }

    #[test]
    fn a_control_batch_that_is_no_marker_is_an_error() {
        let data = batch::simple_batch(1, 4, 0);
        let header = batch::parse_header(&data).expect("header");
        assert!(
            Marker::parse(&header, &data).is_err(),
            "not a control batch"
        );
        // A control batch whose key has an unknown type.
        let mut b = BatchBuilder::new(0)
            .producer(ProducerFields {
                producer_id: 1,
                producer_epoch: 0,
                base_sequence: -1,
            })
            .control();
        b.push(&Record {
            key: Some(&[0, 0, 0, 9]),
            ..Record::default()
        });
        let bytes = b.build();
        let header = batch::parse_header(&bytes).expect("header");
        assert!(
            Marker::parse(&header, &bytes).is_err(),
            "unknown marker type"
        );
        // Any truncation of a marker batch: an error, never a panic.
        let bytes = marker(MarkerKind::Commit).to_batch(0);
        let header = batch::parse_header(&bytes).expect("header");
        for cut in 0..bytes.len() {
            let _ = Marker::parse(&header, &bytes[..cut]);
        }
    }

    fn done(pid: i64, first: i64, last: i64, aborted: bool) -> CompletedTxn {
        CompletedTxn {
            producer_id: pid,
            first_offset: Offset(first),
            last_offset: Offset(last),
            aborted,
        }
    }

    #[test]
    fn the_lso_waits_for_open_transactions_and_unreplicated_markers() {
        let mut t = TxnIndex::default();
        assert_eq!(t.last_stable_offset(Offset(10), None), Offset(10));
        assert_eq!(t.last_stable_offset(Offset(10), Some(Offset(4))), Offset(4));
        t.complete(done(1, 2, 12, false));
        // Marker at 12 not below the high watermark 10 yet: unstable from 2.
        assert_eq!(t.last_stable_offset(Offset(10), None), Offset(2));
        assert_eq!(
            t.last_stable_offset(Offset(13), Some(Offset(11))),
            Offset(11)
        );
        assert_eq!(t.last_stable_offset(Offset(13), None), Offset(13));
    }

    #[test]
    fn aborted_transactions_overlapping_a_range_in_marker_order() {
        let mut t = TxnIndex::default();
        t.complete(done(1, 0, 5, true));
        t.complete(done(2, 3, 9, false));
        t.complete(done(3, 6, 12, true));
        t.complete(done(4, 20, 30, true));
        let ids = |v: Vec<AbortedTxn>| v.iter().map(|a| a.producer_id).collect::<Vec<_>>();
        assert_eq!(
            ids(t.aborted_between(Offset(0), Offset(100), 10)),
            vec![1, 3, 4]
        );
        assert_eq!(ids(t.aborted_between(Offset(6), Offset(20), 10)), vec![3]);
        assert_eq!(
            ids(t.aborted_between(Offset(6), Offset(21), 10)),
            vec![3, 4]
        );
        assert_eq!(ids(t.aborted_between(Offset(0), Offset(100), 1)), vec![1]);
        assert_eq!(t.reopened_by_cut(Offset(12)), vec![(3, Offset(6))]);
        assert_eq!(
            t.reopened_by_cut(Offset(5)),
            vec![(1, Offset(0)), (2, Offset(3))]
        );
        t.truncate_to(Offset(12));
        assert_eq!(ids(t.aborted_between(Offset(0), Offset(100), 10)), vec![1]);
        t.drop_before(Offset(6));
        assert!(t.aborted_between(Offset(0), Offset(100), 10).is_empty());
    }

    #[test]
    #[should_panic(expected = "after its marker")]
    fn a_transaction_ending_before_it_starts_panics() {
        TxnIndex::default().complete(done(1, 9, 5, true));
    }
}
