//! Log compaction's pure parts: key hashing, the fixed-size key → latest offset map (Kafka's
//! dedupe buffer), the rule that decides which records a cleaned segment keeps, batch
//! filtering, the decision whether a log is due, and the cleaner checkpoint format.
//! The I/O (reading segments, writing `.cleaned` files, the swap) is in `cleaner.rs`.
//!
//! Invariants:
//! - The map holds at most `len_max` keys (90% of its slots); its memory is fixed when it
//!   is built. Keys are reduced to 128-bit hashes: two keys sharing one would make the
//!   older key's latest record look superseded (probability about n²/2¹²⁹).
//! - A record is dropped only when its offset is below the map's end and a newer record
//!   of its key (below the map's end) exists, when it has no key, or when it is a
//!   tombstone whose segment was first cleaned `delete.retention.ms` ago or longer.
//! - Compressed batches are decompressed (bounded): their keys are mapped and their records
//!   filtered like any other; one that loses records is written back uncompressed.
//! - Transactions, as Kafka's cleaner treats them: a pass never reaches the first open
//!   transaction (`cleaner.rs` stops its segments there); records of a committed
//!   transaction are mapped and filtered like any other; records of an aborted one are
//!   never mapped and always dropped (an aborted value must not supersede a committed
//!   one). Transactional batches below the point from which the bounded
//!   aborted-transaction index is known complete, and batches whose records do not
//!   decode, are kept whole: those are opaque.
//! - Markers go as Kafka's cleaner removes them ([`MarkerPass`]): only once no batch of
//!   their transaction is left in the log (the pass saw none), `delete.retention.ms` after
//!   their segment was first cleaned (so a reader that saw the data still sees its
//!   marker), and never a producer's last entry (its epoch fences zombies after a replay).
//!   A replay of a log without a marker then finds no transaction to leave open. An
//!   abort marker goes only after a pass has forgotten its entry in the aborted index and
//!   that forgetting is in the producer snapshot on disk: a listed aborted transaction
//!   without its marker would make read_committed readers drop the producer's later,
//!   committed records. A removed marker that ended its segment stays as an empty
//!   control batch (the segment's end offset), which replays as nothing.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hasher;
use std::path::Path;

use crate::batch::{self, BatchError, BatchHeader, RecordIter, StoredRecord};
use crate::codec::DecompressError;
use crate::error::LogError;
use crate::files;
use crate::producer::ProducerState;
use crate::txn::{AbortedTxn, Marker, MarkerKind};
use crate::types::Offset;

/// A key's 128-bit hash: two SipHash-1-3 runs with different prefixes. Never all zero
/// (that marks an empty slot). Only ever held in memory, so it need not be stable across
/// builds.
pub(crate) fn key_hash(key: &[u8]) -> (u64, u64) {
    let half = |salt: u8| {
        let mut h = std::hash::DefaultHasher::new();
        h.write_u8(salt);
        h.write(key);
        h.finish()
    };
    match (half(0), half(1)) {
        (0, 0) => (0, 1),
        pair => pair,
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    hash: (u64, u64),
    offset: i64,
}

/// Bytes one map entry takes.
pub(crate) const MAP_SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// Key hash → latest offset, open addressing with linear probing, fixed size.
#[derive(Debug)]
pub(crate) struct OffsetMap {
    slots: Vec<Slot>,
    len: usize,
    len_max: usize,
}

impl OffsetMap {
    /// A map in `bytes_max` bytes (at least a few slots).
    pub(crate) fn with_bytes(bytes_max: usize) -> Self {
        let slots = (bytes_max / MAP_SLOT_BYTES).max(4);
        OffsetMap {
            slots: vec![Slot::default(); slots],
            len: 0,
            // Linear probing stays short below 90% load (Kafka's default load factor).
            len_max: slots * 9 / 10,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether `n` more keys surely fit.
    pub(crate) fn has_room(&self, n: usize) -> bool {
        self.len + n <= self.len_max
    }

    fn probe(&self, hash: (u64, u64)) -> usize {
        let n = self.slots.len();
        let mut i = (hash.0 % n as u64) as usize;
        // Terminates: the map is never full (len ≤ 90% of slots).
        loop {
            let s = &self.slots[i];
            if s.hash == hash || s.hash == (0, 0) {
                return i;
            }
            i = (i + 1) % n;
        }
    }

    /// Records `offset` for `hash`, keeping the larger offset. The caller checks
    /// [`Self::has_room`] first.
    pub(crate) fn put(&mut self, hash: (u64, u64), offset: i64) {
        let i = self.probe(hash);
        let s = &mut self.slots[i];
        if s.hash == (0, 0) {
            debug_assert!(self.len < self.len_max);
            s.hash = hash;
            s.offset = offset;
            self.len += 1;
        } else {
            s.offset = s.offset.max(offset);
        }
    }

    pub(crate) fn get(&self, hash: (u64, u64)) -> Option<i64> {
        let s = &self.slots[self.probe(hash)];
        (s.hash == hash).then_some(s.offset)
    }
}

/// The log's aborted transactions as a pass sees them.
#[derive(Debug, Default)]
pub(crate) struct TxnView {
    /// Each producer's aborted transactions, (first offset, marker offset), by first.
    aborted: HashMap<i64, Vec<(i64, i64)>>,
    /// The aborted-transaction index is bounded and forgets its oldest entries when
    /// full: below this offset a transactional batch cannot be told aborted or committed.
    known_from: Offset,
}

impl TxnView {
    pub(crate) fn new(aborted: impl IntoIterator<Item = AbortedTxn>, known_from: Offset) -> Self {
        let mut by_producer: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for t in aborted {
            by_producer
                .entry(t.producer_id)
                .or_default()
                .push((t.first_offset.0, t.last_offset.0));
        }
        by_producer.values_mut().for_each(|v| v.sort_unstable());
        TxnView {
            aborted: by_producer,
            known_from,
        }
    }

    /// The index entry of `producer_id`'s aborted transaction whose marker is at
    /// `marker`: (first offset, marker offset).
    fn aborted_entry(&self, producer_id: i64, marker: i64) -> Option<(i64, i64)> {
        self.aborted
            .get(&producer_id)?
            .iter()
            .find(|(_, m)| *m == marker)
            .copied()
    }

    fn is_aborted(&self, producer_id: i64, offset: i64) -> bool {
        let Some(ranges) = self.aborted.get(&producer_id) else {
            return false;
        };
        let after = ranges.partition_point(|(first, _)| *first <= offset);
        after > 0 && ranges[after - 1].1 >= offset
    }
}

/// What one pass decides about markers, batch by batch in offset order (see the module
/// header).
#[derive(Debug)]
pub(crate) struct MarkerPass<'a> {
    producers: &'a ProducerState,
    /// Every aborted-index entry an earlier pass forgot is in the snapshot on disk.
    forgets_persisted: bool,
    /// Producers whose current transaction has a batch in this pass's input.
    with_batches: HashSet<i64>,
    /// Aborted-index entries to forget after the pass: (producer, first, marker offset).
    pub(crate) forget: Vec<AbortedTxn>,
    /// Markers kept only because `delete.retention.ms` has not passed; the caller resets
    /// it per rewritten segment (such a segment is due again, as with tombstones).
    pub(crate) held: u64,
    /// The segment being read was first cleaned `delete.retention.ms` ago or longer (set
    /// by the caller per segment).
    pub(crate) expired: bool,
}

impl<'a> MarkerPass<'a> {
    pub(crate) fn new(producers: &'a ProducerState, forgets_persisted: bool) -> Self {
        MarkerPass {
            producers,
            forgets_persisted,
            with_batches: HashSet::new(),
            forget: Vec::new(),
            held: 0,
            expired: false,
        }
    }

    /// A transactional data batch: its transaction still has data in the log.
    fn note_batch(&mut self, header: &BatchHeader) {
        if header.is_transactional() && !header.is_control() {
            self.with_batches.insert(header.producer_id.get());
        }
    }

    /// Whether the producer wrote after `offset` (a newer data batch), or is gone from
    /// the producer state: the marker at `offset` is not what fences it.
    fn superseded(&self, producer_id: i64, offset: Offset) -> bool {
        match self.producers.last_offset(producer_id) {
            Some(last) => last > offset,
            None => !self.producers.knows(producer_id),
        }
    }

    /// A control batch: kept whole, or emptied (removed unless it ends its segment).
    fn filter(&mut self, rule: &RetainRule<'_>, header: &BatchHeader, bytes: &[u8]) -> Filtered {
        let whole = Filtered::Whole { tombstones: 0 };
        let producer_id = header.producer_id.get();
        let offset = header.base_offset();
        // An empty control batch (a marker removed before) or an unreadable one.
        let Ok(marker) = Marker::parse(header, bytes) else {
            return whole;
        };
        let had_batches = self.with_batches.remove(&producer_id);
        if had_batches || offset >= rule.map_end || !self.superseded(producer_id, offset) {
            return whole;
        }
        if !self.expired {
            self.held += 1;
        }
        if marker.kind == MarkerKind::Abort {
            if offset < rule.txns.known_from {
                return whole;
            }
            if let Some((first, _)) = rule.txns.aborted_entry(producer_id, offset.0) {
                self.forget.push(AbortedTxn {
                    producer_id,
                    first_offset: Offset(first),
                    last_offset: offset,
                });
                return whole;
            }
            if !self.forgets_persisted {
                return whole;
            }
        }
        if !self.expired {
            return whole;
        }
        Filtered::Empty {
            header_only: batch::rebuild(bytes, header, &[]),
        }
    }
}

/// What the cleaner may do with a batch's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchKind {
    /// Plain or committed records: mapped and filtered by key.
    Data,
    /// Records of an aborted transaction: never mapped, dropped.
    Aborted,
    /// Kept whole, keys not mapped: markers, and transactional batches the pass cannot
    /// place.
    Opaque,
}

pub(crate) fn batch_kind(header: &BatchHeader, txns: &TxnView) -> BatchKind {
    if header.is_control() {
        return BatchKind::Opaque;
    }
    if !header.is_transactional() {
        return BatchKind::Data;
    }
    let base = header.base_offset();
    if base < txns.known_from {
        BatchKind::Opaque
    } else if txns.is_aborted(header.producer_id.get(), base.0) {
        BatchKind::Aborted
    } else {
        BatchKind::Data
    }
}

/// The records section of a stored batch, decompressed if need be. `Err` names why it
/// cannot be read (the batch is then opaque).
pub(crate) fn record_section<'a>(
    header: &BatchHeader,
    bytes: &'a [u8],
) -> Result<Cow<'a, [u8]>, DecompressError> {
    let section = bytes
        .get(batch::HEADER_BYTES..header.total_bytes())
        .ok_or(DecompressError::Truncated("batch shorter than its length"))?;
    match header.compression() {
        0 => Ok(Cow::Borrowed(section)),
        codec => crate::codec::decompress(codec, section, crate::codec::DECOMPRESSED_BYTES_MAX)
            .map(Cow::Owned),
    }
}

/// Adds the keys of one stored batch to the map. `Err` when its records cannot be read
/// (the batch is then treated as opaque when segments are rewritten).
pub(crate) fn map_batch(
    map: &mut OffsetMap,
    header: &BatchHeader,
    bytes: &[u8],
    txns: &TxnView,
) -> Result<(), BatchError> {
    if batch_kind(header, txns) != BatchKind::Data {
        return Ok(());
    }
    let base = header.base_offset().0;
    let section = record_section(header, bytes).map_err(BatchError::Decompress)?;
    for record in RecordIter::from_records(&section, header.record_count.get()) {
        let record = record?;
        if let Some(key) = record.key {
            map.put(key_hash(key), base + record.offset_delta);
        }
    }
    Ok(())
}

/// What a segment rewrite needs to decide about each record.
#[derive(Debug)]
pub(crate) struct RetainRule<'a> {
    pub(crate) map: &'a OffsetMap,
    /// Records at or past this offset were not mapped: kept.
    pub(crate) map_end: Offset,
    /// The segment was first cleaned `delete.retention.ms` ago or longer: its tombstones go.
    pub(crate) tombstones_expired: bool,
    /// The segments (by base) first cleaned `delete.retention.ms` ago or longer: markers
    /// there of transactions without data go.
    pub(crate) markers_expired: Vec<Offset>,
    pub(crate) txns: &'a TxnView,
}

impl RetainRule<'_> {
    fn keeps(&self, record: &StoredRecord<'_>, offset: i64) -> bool {
        if offset >= self.map_end.0 {
            return true;
        }
        // Kafka's cleaner drops keyless records of a compacted log (appends refuse them).
        let Some(key) = record.key else { return false };
        if self
            .map
            .get(key_hash(key))
            .is_some_and(|latest| latest > offset)
        {
            return false;
        }
        !(record.is_tombstone() && self.tombstones_expired)
    }
}

/// One batch after filtering.
#[derive(Debug)]
pub(crate) enum Filtered {
    /// Every record stays: the stored bytes are kept as they are.
    Whole { tombstones: u32 },
    /// Some records stay: the batch re-encoded with them.
    Rebuilt { bytes: Vec<u8>, tombstones: u32 },
    /// No record stays. `header_only` is the batch with no records (kept when the offsets
    /// or producer state it carries must survive).
    Empty { header_only: Vec<u8> },
}

/// Filters one stored batch (markers by [`MarkerPass`]). Records that cannot be read
/// make the batch opaque (kept whole).
pub(crate) fn filter_batch(
    rule: &RetainRule<'_>,
    markers: &mut MarkerPass<'_>,
    header: &BatchHeader,
    bytes: &[u8],
) -> Filtered {
    if header.is_control() {
        return markers.filter(rule, header, bytes);
    }
    markers.note_batch(header);
    if header.base_offset() >= rule.map_end {
        return Filtered::Whole { tombstones: 0 };
    }
    match batch_kind(header, rule.txns) {
        BatchKind::Opaque => return Filtered::Whole { tombstones: 0 },
        BatchKind::Aborted => {
            return Filtered::Empty {
                header_only: batch::rebuild(bytes, header, &[]),
            }
        }
        BatchKind::Data => {}
    }
    let Ok(section) = record_section(header, bytes) else {
        return Filtered::Whole { tombstones: 0 };
    };
    let base = header.base_offset().0;
    let mut kept: Vec<StoredRecord<'_>> = Vec::new();
    let mut total = 0usize;
    for record in RecordIter::from_records(&section, header.record_count.get()) {
        let Ok(record) = record else {
            return Filtered::Whole { tombstones: 0 };
        };
        total += 1;
        if rule.keeps(&record, base + record.offset_delta) {
            kept.push(record);
        }
    }
    let tombstones = kept.iter().filter(|r| r.is_tombstone()).count() as u32;
    if kept.len() == total {
        Filtered::Whole { tombstones }
    } else if kept.is_empty() {
        Filtered::Empty {
            header_only: batch::rebuild(bytes, header, &[]),
        }
    } else {
        Filtered::Rebuilt {
            bytes: batch::rebuild(bytes, header, &kept),
            tombstones,
        }
    }
}

/// Whether a log's dirty bytes are enough to clean: `dirty / (clean + dirty)` reaches
/// `ratio_ppm` (parts per million). Empty dirty sections never are.
pub(crate) fn dirty_enough(clean_bytes: u64, dirty_bytes: u64, ratio_ppm: u32) -> bool {
    let total = u128::from(clean_bytes) + u128::from(dirty_bytes);
    dirty_bytes > 0
        && u128::from(dirty_bytes) * u128::from(crate::config::RATIO_PPM_ONE)
            >= u128::from(ratio_ppm) * total
}

/// When a cleaned segment was first cleaned, and whether it kept tombstones then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CleanedSegment {
    pub(crate) first_cleaned_ms: u64,
    pub(crate) tombstones: bool,
}

/// What the cleaner knows of a log (`cleaner.checkpoint`): offsets below `cleaned_end`
/// hold at most one record per key (opaque batches aside); per segment, when it was
/// first cleaned (tombstones count `delete.retention.ms` from then).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CleanerState {
    pub(crate) cleaned_end: Offset,
    pub(crate) segments: BTreeMap<Offset, CleanedSegment>,
}

pub(crate) const CLEANER_FILE: &str = "cleaner.checkpoint";
const CLEANER_MAGIC: &[u8; 4] = b"SLCL";
const CLEANER_VERSION: u32 = 1;
const CLEANER_ENTRY_BYTES: usize = 17;

impl CleanerState {
    /// Format (big-endian): magic `SLCL`, version u32, cleaned_end i64, count u32, then
    /// per segment base i64, first_cleaned_ms u64, tombstones u8; CRC32C of all before.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.segments.len() * CLEANER_ENTRY_BYTES);
        out.extend_from_slice(CLEANER_MAGIC);
        out.extend_from_slice(&CLEANER_VERSION.to_be_bytes());
        out.extend_from_slice(&self.cleaned_end.0.to_be_bytes());
        out.extend_from_slice(&(self.segments.len() as u32).to_be_bytes());
        for (base, c) in &self.segments {
            out.extend_from_slice(&base.0.to_be_bytes());
            out.extend_from_slice(&c.first_cleaned_ms.to_be_bytes());
            out.push(u8::from(c.tombstones));
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// `None` for anything but an intact file of this version.
    pub(crate) fn decode(bytes: &[u8]) -> Option<CleanerState> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let u32_at = |i: usize| Some(u32::from_be_bytes(body.get(i..i + 4)?.try_into().ok()?));
        let u64_at = |i: usize| Some(u64::from_be_bytes(body.get(i..i + 8)?.try_into().ok()?));
        if body.get(..4)? != CLEANER_MAGIC || u32_at(4)? != CLEANER_VERSION {
            return None;
        }
        let cleaned_end = Offset(i64::try_from(u64_at(8)?).ok()?);
        let count = u32_at(16)? as usize;
        if body.len() != 20 + count.checked_mul(CLEANER_ENTRY_BYTES)? {
            return None;
        }
        let mut segments = BTreeMap::new();
        for i in 0..count {
            let at = 20 + i * CLEANER_ENTRY_BYTES;
            let base = Offset(i64::try_from(u64_at(at)?).ok()?);
            let cleaned = CleanedSegment {
                first_cleaned_ms: u64_at(at + 8)?,
                tombstones: *body.get(at + 16)? != 0,
            };
            segments.insert(base, cleaned);
        }
        Some(CleanerState {
            cleaned_end,
            segments,
        })
    }

    /// The state in `dir`; a missing or damaged file means nothing is known to be clean
    /// (the next pass cleans everything again, which is safe).
    pub(crate) async fn read(dir: &Path) -> Result<CleanerState, LogError> {
        let bytes = files::read_small(&dir.join(CLEANER_FILE)).await?;
        Ok(match bytes {
            None => CleanerState::default(),
            Some(b) => CleanerState::decode(&b).unwrap_or_else(|| {
                tracing::warn!(dir = %dir.display(), "cleaner checkpoint is damaged; the log will be cleaned again");
                CleanerState::default()
            }),
        })
    }

    pub(crate) async fn write(&self, dir: &Path) -> Result<(), LogError> {
        files::write_atomic(dir, CLEANER_FILE, &self.encode()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{stamp, validate, BatchBuilder, Record};
    use crate::types::LeaderEpoch;

    fn keyed_batch(base: i64, records: &[(Option<&str>, Option<&str>)]) -> Vec<u8> {
        let mut b = BatchBuilder::new(0);
        for (k, v) in records {
            b.push(&Record {
                key: k.map(str::as_bytes),
                value: v.map(str::as_bytes),
                ..Record::default()
            });
        }
        let mut bytes = b.build();
        stamp(&mut bytes, Offset(base), LeaderEpoch(0));
        bytes
    }

    #[test]
    fn map_keeps_the_latest_offset_and_bounds_its_size() {
        let mut map = OffsetMap::with_bytes(100 * MAP_SLOT_BYTES);
        assert!(map.has_room(90) && !map.has_room(91));
        for i in 0..90i64 {
            map.put(key_hash(format!("k{}", i % 30).as_bytes()), i);
        }
        assert_eq!(map.len(), 30);
        assert_eq!(map.get(key_hash(b"k0")), Some(60));
        assert_eq!(map.get(key_hash(b"k29")), Some(89));
        assert_eq!(map.get(key_hash(b"absent")), None);
        map.put(key_hash(b"k0"), 5);
        assert_eq!(
            map.get(key_hash(b"k0")),
            Some(60),
            "an older offset never wins"
        );
    }

    #[test]
    fn filter_keeps_latest_values_and_tombstones_until_expired() {
        let mut map = OffsetMap::with_bytes(4096);
        let older = keyed_batch(
            0,
            &[
                (Some("a"), Some("1")),
                (Some("b"), Some("1")),
                (None, Some("x")),
            ],
        );
        let newer = keyed_batch(3, &[(Some("a"), Some("2")), (Some("b"), None)]);
        for b in [&older, &newer] {
            let h = validate(b, 1 << 20).expect("valid");
            map_batch(&mut map, &h, b, &TxnView::default()).expect("mapped");
        }
        let txns = TxnView::default();
        let mut rule = RetainRule {
            map: &map,
            map_end: Offset(5),
            tombstones_expired: false,
            markers_expired: Vec::new(),
            txns: &txns,
        };
        let producers = ProducerState::default();
        let mut markers = MarkerPass::new(&producers, true);
        let mut filter_batch = |rule: &RetainRule<'_>, h: &BatchHeader, b: &[u8]| {
            filter_batch(rule, &mut markers, h, b)
        };
        let h = validate(&older, 1 << 20).expect("valid");
        assert!(matches!(
            filter_batch(&rule, &h, &older),
            Filtered::Empty { .. }
        ));
        let h = validate(&newer, 1 << 20).expect("valid");
        assert!(matches!(
            filter_batch(&rule, &h, &newer),
            Filtered::Whole { tombstones: 1 }
        ));
        rule.tombstones_expired = true;
        let Filtered::Rebuilt { bytes, tombstones } = filter_batch(&rule, &h, &newer) else {
            panic!("the tombstone goes once expired");
        };
        assert_eq!(tombstones, 0);
        let rebuilt = validate(&bytes, 1 << 20);
        assert!(
            rebuilt.is_err(),
            "count 1 with delta 1 is not a producer batch"
        );
        let h2 = batch::check_framing(&bytes).expect("framed");
        assert_eq!((h2.record_count.get(), h2.last_offset()), (1, Offset(4)));
        // Records at or past the map's end are never touched.
        rule.map_end = Offset(0);
        let h = validate(&older, 1 << 20).expect("valid");
        assert!(matches!(
            filter_batch(&rule, &h, &older),
            Filtered::Whole { .. }
        ));
    }

    #[test]
    fn dirty_ratio_gates_cleaning() {
        assert!(!dirty_enough(100, 0, 0));
        assert!(dirty_enough(100, 100, 500_000));
        assert!(!dirty_enough(101, 100, 500_000));
        assert!(dirty_enough(0, 1, 1_000_000));
        assert!(dirty_enough(u64::MAX, u64::MAX, 500_000));
    }

    #[test]
    fn cleaner_state_round_trips_and_rejects_damage() {
        let mut s = CleanerState {
            cleaned_end: Offset(1234),
            ..CleanerState::default()
        };
        s.segments.insert(
            Offset(0),
            CleanedSegment {
                first_cleaned_ms: 99,
                tombstones: true,
            },
        );
        let bytes = s.encode();
        assert_eq!(CleanerState::decode(&bytes), Some(s));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 4;
            assert_eq!(CleanerState::decode(&bad), None, "flip at {i}");
        }
        assert_eq!(CleanerState::decode(&bytes[..10]), None);
        assert_eq!(CleanerState::decode(&[]), None);
    }
}
