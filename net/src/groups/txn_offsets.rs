//! Offsets committed inside a transaction (TxnOffsetCommit): written to
//! `__consumer_offsets` as transactional records at once, but visible to OffsetFetch only
//! when the transaction's COMMIT marker lands in that partition, and dropped at its ABORT
//! marker, as Kafka's group coordinator does. The loader replays the same rule from the
//! log: records of a producer wait for its next marker.

use std::collections::HashMap;

use super::{GroupOffsets, Stored};

/// One pending offset: group, topic, partition, and what would be stored.
type Pending = (String, String, i32, Stored);

/// Transactional offsets not yet decided, by producer id. Bounded by what the offsets
/// topic holds undecided (each entry is a record in the log).
#[derive(Debug, Default)]
pub struct PendingTxnOffsets {
    by_producer: HashMap<i64, Vec<Pending>>,
}

impl PendingTxnOffsets {
    pub fn add(
        &mut self,
        producer_id: i64,
        group: String,
        topic: String,
        partition: i32,
        stored: Stored,
    ) {
        self.by_producer
            .entry(producer_id)
            .or_default()
            .push((group, topic, partition, stored));
    }

    /// The producer's transaction ended: on commit its offsets go into `offsets` (a
    /// commit written later in the log wins over an earlier one, whichever kind); either
    /// way they stop being pending. Returns how many offsets were added (new keys).
    pub fn complete(
        &mut self,
        producer_id: i64,
        commit: bool,
        offsets: &mut HashMap<String, GroupOffsets>,
    ) -> usize {
        let Some(pending) = self.by_producer.remove(&producer_id) else {
            return 0;
        };
        if !commit {
            return 0;
        }
        let mut added = 0;
        for (group, topic, partition, stored) in pending {
            let group_offsets = offsets.entry(group).or_default();
            match group_offsets.get_mut(&(topic.clone(), partition)) {
                Some(s) if s.log_offset > stored.log_offset => {}
                Some(s) => *s = stored,
                None => {
                    added += 1;
                    group_offsets.insert((topic, partition), stored);
                }
            }
        }
        added
    }

    /// Whether a transaction holds an undecided offset of this group's partition.
    pub fn holds(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.by_producer
            .values()
            .flatten()
            .any(|(g, t, p, _)| g == group && t == topic && *p == partition)
    }

    pub fn clear(&mut self) {
        self.by_producer.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::records::CommitValue;

    fn stored(offset: i64, log_offset: i64) -> Stored {
        Stored {
            value: CommitValue {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 0,
            },
            log_offset,
        }
    }

    #[test]
    fn offsets_appear_at_commit_and_vanish_at_abort() {
        let mut pending = PendingTxnOffsets::default();
        let mut offsets: HashMap<String, GroupOffsets> = HashMap::new();
        pending.add(7, "g".into(), "t".into(), 0, stored(10, 100));
        pending.add(8, "g".into(), "t".into(), 1, stored(20, 101));
        assert!(pending.holds("g", "t", 1) && !pending.holds("g", "t", 2));
        assert_eq!(pending.complete(8, false, &mut offsets), 0);
        assert!(offsets.is_empty() && !pending.holds("g", "t", 1));
        assert_eq!(
            pending.complete(8, true, &mut offsets),
            0,
            "already dropped"
        );
        assert_eq!(pending.complete(7, true, &mut offsets), 1);
        assert_eq!(offsets["g"][&("t".to_string(), 0)].value.offset, 10);
        // A plain commit written after the transactional one wins over it.
        pending.add(7, "g".into(), "t".into(), 0, stored(11, 102));
        offsets
            .get_mut("g")
            .unwrap()
            .insert(("t".into(), 0), stored(12, 103));
        assert_eq!(pending.complete(7, true, &mut offsets), 0);
        assert_eq!(offsets["g"][&("t".to_string(), 0)].value.offset, 12);
    }
}
