//! Sparse offset and time indexes: fixed-size big-endian entries read and written through
//! zerocopy, kept in memory per segment and written beside it (`.index`, `.timeindex`).
//!
//! Invariants of a valid index: relative offsets strictly increase, file positions strictly
//! increase (offset index), timestamps strictly increase (time index), and every entry
//! points inside the segment's valid bytes. [`OffsetIndex::validate`] checks them after a
//! read from disk; a failing index is rebuilt from the segment.

use zerocopy::byteorder::big_endian::{I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Offset index entry: (offset - segment base, byte position of the batch in the segment).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct OffsetEntry {
    pub relative_offset: U32,
    pub position: U32,
}

/// Time index entry: (largest timestamp so far, offset - segment base where it was seen).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct TimeEntry {
    pub timestamp: I64,
    pub relative_offset: U32,
}

/// The sparse offset index of one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    pub fn push(&mut self, relative_offset: u32, position: u32) {
        debug_assert!(self.entries.last().is_none_or(|e| e.relative_offset.get()
            < relative_offset
            && e.position.get() < position));
        self.entries.push(OffsetEntry {
            relative_offset: U32::new(relative_offset),
            position: U32::new(position),
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last entry at or before `relative_offset`: where a scan for it starts.
    /// `(0, 0)` when the offset precedes every entry.
    pub fn lookup(&self, relative_offset: u32) -> (u32, u32) {
        let i = self
            .entries
            .partition_point(|e| e.relative_offset.get() <= relative_offset);
        match i {
            0 => (0, 0),
            _ => {
                let e = self.entries[i - 1];
                (e.relative_offset.get(), e.position.get())
            }
        }
    }

    /// Drops entries at or past `position` (after the segment was cut there).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self
            .entries
            .partition_point(|e| e.position.get() < position);
        self.entries.truncate(keep);
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.entries.as_bytes()
    }

    /// Parses and validates an index file's bytes against the segment's valid length.
    pub fn from_bytes(bytes: &[u8], segment_len: u64) -> Option<Self> {
        let entries = <[OffsetEntry]>::ref_from_bytes(bytes).ok()?.to_vec();
        let index = OffsetIndex { entries };
        index.validate(segment_len).then_some(index)
    }

    pub fn validate(&self, segment_len: u64) -> bool {
        let ordered = self.entries.windows(2).all(|w| {
            w[0].relative_offset.get() < w[1].relative_offset.get()
                && w[0].position.get() < w[1].position.get()
        });
        let inside = self
            .entries
            .last()
            .is_none_or(|e| u64::from(e.position.get()) < segment_len);
        ordered && inside
    }
}

/// The sparse time index of one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// Records that `timestamp` (larger than every earlier one) was seen at `relative_offset`.
    pub fn push(&mut self, timestamp: i64, relative_offset: u32) {
        if self.entries.last().is_some_and(|e| {
            e.timestamp.get() >= timestamp || e.relative_offset.get() > relative_offset
        }) {
            return;
        }
        self.entries.push(TimeEntry {
            timestamp: I64::new(timestamp),
            relative_offset: U32::new(relative_offset),
        });
    }

    pub fn last(&self) -> Option<(i64, u32)> {
        self.entries
            .last()
            .map(|e| (e.timestamp.get(), e.relative_offset.get()))
    }

    /// The relative offset to scan from for the first record with timestamp ≥ `ts`:
    /// the entry before the first one whose timestamp reaches `ts` (0 when none).
    pub fn lookup(&self, ts: i64) -> u32 {
        let i = self.entries.partition_point(|e| e.timestamp.get() < ts);
        match i {
            0 => 0,
            _ => self.entries[i - 1].relative_offset.get(),
        }
    }

    /// Drops entries for offsets at or past `relative_offset`.
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = self
            .entries
            .partition_point(|e| e.relative_offset.get() < relative_offset);
        self.entries.truncate(keep);
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.entries.as_bytes()
    }

    /// Parses and validates a time index file's bytes; `offset_span` bounds relative offsets.
    pub fn from_bytes(bytes: &[u8], offset_span: u64) -> Option<Self> {
        let entries = <[TimeEntry]>::ref_from_bytes(bytes).ok()?.to_vec();
        let ordered = entries.windows(2).all(|w| {
            w[0].timestamp.get() < w[1].timestamp.get()
                && w[0].relative_offset.get() <= w[1].relative_offset.get()
        });
        let inside = entries
            .last()
            .is_none_or(|e| u64::from(e.relative_offset.get()) < offset_span.max(1));
        (ordered && inside).then_some(TimeIndex { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn offset_lookup_finds_floor_entry() {
        let mut idx = OffsetIndex::default();
        idx.push(10, 4096);
        idx.push(20, 8192);
        assert_eq!(idx.lookup(5), (0, 0));
        assert_eq!(idx.lookup(10), (10, 4096));
        assert_eq!(idx.lookup(19), (10, 4096));
        assert_eq!(idx.lookup(1000), (20, 8192));
        idx.truncate_to_position(8192);
        assert_eq!(idx.lookup(1000), (10, 4096));
    }

    #[test]
    fn index_bytes_round_trip_and_reject_damage() {
        let mut idx = OffsetIndex::default();
        idx.push(1, 100);
        idx.push(2, 200);
        let bytes = idx.as_bytes().to_vec();
        assert_eq!(bytes.len(), 16);
        assert_eq!(OffsetIndex::from_bytes(&bytes, 300), Some(idx.clone()));
        assert_eq!(
            OffsetIndex::from_bytes(&bytes, 150),
            None,
            "points past the end"
        );
        assert_eq!(
            OffsetIndex::from_bytes(&bytes[..15], 300),
            None,
            "partial entry"
        );
        let mut swapped = bytes.clone();
        swapped.swap(7, 15);
        assert_eq!(OffsetIndex::from_bytes(&swapped, 300), None, "out of order");
    }

    #[test]
    fn time_lookup_starts_before_first_reaching_entry() {
        let mut t = TimeIndex::default();
        t.push(100, 0);
        t.push(200, 10);
        t.push(150, 12); // not larger: ignored
        t.push(300, 20);
        assert_eq!(t.lookup(50), 0);
        assert_eq!(t.lookup(100), 0);
        assert_eq!(t.lookup(101), 0);
        assert_eq!(t.lookup(250), 10);
        assert_eq!(t.lookup(301), 20);
        assert_eq!(t.last(), Some((300, 20)));
        let back = TimeIndex::from_bytes(t.as_bytes(), 21).expect("valid");
        assert_eq!(back, t);
        t.truncate_to_offset(10);
        assert_eq!(t.last(), Some((100, 0)));
    }

    proptest! {
        #[test]
        fn lookup_is_floor(mut offsets in proptest::collection::btree_set(0u32..100_000, 0..50), q in 0u32..100_001) {
            let mut idx = OffsetIndex::default();
            let offsets: Vec<u32> = std::mem::take(&mut offsets).into_iter().collect();
            for (i, o) in offsets.iter().enumerate() {
                idx.push(*o, (i as u32 + 1) * 10);
            }
            let (rel, pos) = idx.lookup(q);
            match offsets.iter().rposition(|o| *o <= q) {
                None => prop_assert_eq!((rel, pos), (0, 0)),
                Some(i) => prop_assert_eq!((rel, pos), (offsets[i], (i as u32 + 1) * 10)),
            }
        }

        #[test]
        fn from_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100), len in 0u64..1000) {
            let _ = OffsetIndex::from_bytes(&bytes, len);
            let _ = TimeIndex::from_bytes(&bytes, len);
        }
    }
}
