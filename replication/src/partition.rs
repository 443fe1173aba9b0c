//! The pure part of following one partition: which request it needs next (its phase),
//! what a leader's answer means for it, and Kafka's truncation rules. No I/O here; the
//! fetcher task applies the decisions to the log.
//!
//! Invariants: a partition fetches only after it truncated against the current leader
//! epoch (every (re)assignment starts in [`Phase::Truncate`]); a paused partition resumes
//! no later than its `until_ms`; a truncation never goes above the follower's own end.

use sluice_engine::{LeaderEpoch, Offset};

/// Kafka error codes a follower interprets in a leader's answers.
pub mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
}

/// What a followed partition needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Ask the leader where the log's latest epoch ended (OffsetForLeaderEpoch), truncate.
    Truncate,
    /// Ask the leader for its log start and end (ListOffsets): the fetch offset was out
    /// of its range.
    OutOfRange,
    /// Fetch from the log end.
    Fetch,
    /// Wait until `until_ms` (after an error), then go on with `then`.
    Paused { until_ms: u64, then: Resume },
}

/// Where a paused partition goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    Truncate,
    Fetch,
}

impl Phase {
    /// The phase as of `now_ms`: a pause that has run out becomes what follows it.
    pub fn at(self, now_ms: u64) -> Phase {
        match self {
            Phase::Paused { until_ms, then } if now_ms >= until_ms => match then {
                Resume::Truncate => Phase::Truncate,
                Resume::Fetch => Phase::Fetch,
            },
            other => other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::Truncate => "truncating",
            Phase::OutOfRange => "out_of_range",
            Phase::Fetch => "fetching",
            Phase::Paused { .. } => "paused",
        }
    }
}

/// What a leader's per-partition answer (Fetch, OffsetForLeaderEpoch) asks of the follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// No error: append the records (if any).
    Data,
    /// Fetch v12+: the leader found the follower's log diverging; where the epoch ended.
    Diverging {
        epoch: LeaderEpoch,
        end_offset: Offset,
    },
    /// The fetch offset is outside the leader's log.
    OutOfRange,
    /// The leader does not lead at this epoch (FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH,
    /// NOT_LEADER_OR_FOLLOWER): wait, then truncate again against whoever leads.
    Fenced(i16),
    /// Any other error: wait, then retry the same request.
    Retry(i16),
}

/// Classifies one partition's answer; `diverging` is the Fetch answer's diverging epoch
/// (epoch -1 when absent).
pub fn classify(error_code: i16, diverging: (i32, i64)) -> Answer {
    match error_code {
        code::NONE if diverging.0 >= 0 && diverging.1 >= 0 => Answer::Diverging {
            epoch: LeaderEpoch(diverging.0),
            end_offset: Offset(diverging.1),
        },
        code::NONE => Answer::Data,
        code::OFFSET_OUT_OF_RANGE => Answer::OutOfRange,
        code::FENCED_LEADER_EPOCH | code::UNKNOWN_LEADER_EPOCH | code::NOT_LEADER_OR_FOLLOWER => {
            Answer::Fenced(error_code)
        }
        other => Answer::Retry(other),
    }
}

/// Where to truncate after a leader said where an epoch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncation {
    /// Truncate here; the log agrees with the leader below it: fetch next.
    Done(Offset),
    /// Truncate here, then ask again with the (now older) latest epoch: the follower does
    /// not have the epoch the leader answered with.
    Again(Offset),
}

/// The follower's side of a truncation decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnLog {
    /// The epoch the follower asked about (its latest).
    pub asked_epoch: LeaderEpoch,
    pub end: Offset,
    pub high_watermark: Offset,
}

/// Kafka's `getOffsetTruncationState`: the leader answered that its epoch
/// `leader_epoch` (≤ the one asked) ends at `leader_end`. `own_end_for(epoch)` is the
/// follower's own OffsetForLeaderEpoch answer (largest epoch ≤ `epoch`, where it ended).
/// An undefined answer (-1 end) truncates to the high watermark, which every ISR member
/// held; one without an epoch (-1 epoch, or a newer epoch than asked, which a correct
/// leader never sends) to the leader's end.
pub fn truncation_point(
    leader_epoch: LeaderEpoch,
    leader_end: Offset,
    own: OwnLog,
    own_end_for: impl FnOnce(LeaderEpoch) -> Option<(LeaderEpoch, Offset)>,
) -> Truncation {
    let own_end = own.end;
    if leader_end < Offset::ZERO {
        let top = own_end.max(Offset::ZERO);
        return Truncation::Done(own.high_watermark.clamp(Offset::ZERO, top));
    }
    if leader_epoch < LeaderEpoch(0) || leader_epoch > own.asked_epoch {
        return Truncation::Done(leader_end.min(own_end));
    }
    match own_end_for(leader_epoch) {
        Some((epoch, end)) if epoch != leader_epoch => Truncation::Again(end.min(own_end)),
        Some((_, end)) => Truncation::Done(end.min(leader_end).min(own_end)),
        None => Truncation::Done(leader_end.min(own_end)),
    }
}

/// What to do when the leader refused the fetch offset as out of its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfRangeAction {
    /// The follower's end is below the leader's log start: restart the log empty there.
    ResetTo(Offset),
    /// The follower's end is beyond the leader's end: cut back to it.
    TruncateTo(Offset),
    /// Inside the range after all (the leader's log moved meanwhile): fetch again.
    Fetch,
}

/// Kafka's `handleOutOfRangeError` for a follower whose log ends at `own_end`, against
/// the leader's `[leader_start, leader_end]`.
pub fn out_of_range_action(
    own_end: Offset,
    leader_start: Offset,
    leader_end: Offset,
) -> OutOfRangeAction {
    if own_end < leader_start {
        OutOfRangeAction::ResetTo(leader_start)
    } else if own_end > leader_end {
        OutOfRangeAction::TruncateTo(leader_end.max(Offset::ZERO))
    } else {
        OutOfRangeAction::Fetch
    }
}

/// Kafka's exception to "the first batch starts at the log end": an empty follower log
/// (start = end) whose first answered batch starts before its end but reaches it, which
/// happens when the leader's log start fell inside a batch (DeleteRecords). The log
/// restarts at that batch's base; `None` when the refusal stands.
pub fn restart_inside_first_batch(
    log_start: Offset,
    log_end: Offset,
    first_base: Offset,
    first_last: Offset,
) -> Option<Offset> {
    (log_start == log_end && first_base < log_end && first_last >= log_end).then_some(first_base)
}

/// The log start a follower takes from the leader's answer: the leader's when it moved
/// past the follower's own (retention, DeleteRecords) and lies within what the follower
/// has written.
pub fn log_start_to_follow(
    own_start: Offset,
    own_written_end: Offset,
    leader_start: Offset,
) -> Option<Offset> {
    (leader_start > own_start && leader_start <= own_written_end).then_some(leader_start)
}

/// How long to wait before reconnect attempt `attempt` (1 for the first retry):
/// `base_ms` doubling per attempt, at most `max_ms`.
pub fn reconnect_backoff_ms(base_ms: u64, max_ms: u64, attempt: u32) -> u64 {
    let factor = 1u64 << attempt.saturating_sub(1).min(20);
    base_ms.saturating_mul(factor).min(max_ms.max(base_ms))
}

/// Bytes of `records` made of whole record batches (a fetch answer may end with a partial
/// batch cut by the size limit, which is dropped and fetched again).
pub fn whole_batches_len(records: &[u8]) -> usize {
    let mut pos = 0;
    while let Some(rest) = records.get(pos..) {
        let Some(len) = rest.get(8..12) else { break };
        let batch_length = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        let Some(total) = usize::try_from(batch_length).ok().map(|n| n + 12) else {
            break;
        };
        if batch_length <= 0 || rest.len() < total {
            break;
        }
        pos += total;
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(n: i64) -> Offset {
        Offset(n)
    }

    fn e(n: i32) -> LeaderEpoch {
        LeaderEpoch(n)
    }

    #[test]
    fn pauses_run_out_into_what_follows() {
        let p = Phase::Paused {
            until_ms: 100,
            then: Resume::Truncate,
        };
        assert_eq!(p.at(99), p);
        assert_eq!(p.at(100), Phase::Truncate);
        let p = Phase::Paused {
            until_ms: 100,
            then: Resume::Fetch,
        };
        assert_eq!(p.at(500), Phase::Fetch);
        assert_eq!(Phase::Fetch.at(0), Phase::Fetch);
    }

    #[test]
    fn answers_are_classified_by_error_and_divergence() {
        assert_eq!(classify(0, (-1, -1)), Answer::Data);
        assert_eq!(
            classify(0, (3, 120)),
            Answer::Diverging {
                epoch: e(3),
                end_offset: o(120)
            }
        );
        assert_eq!(classify(1, (-1, -1)), Answer::OutOfRange);
        for c in [6, 74, 75] {
            assert_eq!(classify(c, (-1, -1)), Answer::Fenced(c));
        }
        assert_eq!(classify(3, (-1, -1)), Answer::Retry(3));
        assert_eq!(classify(56, (-1, -1)), Answer::Retry(56));
    }

    /// The follower's epochs: 1 from 0, 2 from 10, 4 from 20; log end 30.
    fn own(epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        let starts = [(1, 0), (2, 10), (4, 20)];
        let i = starts.iter().rposition(|(e, _)| *e <= epoch.0)?;
        let end = starts.get(i + 1).map_or(30, |(_, s)| *s);
        Some((e(starts[i].0), o(end)))
    }

    fn point(
        epoch: i32,
        end: i64,
        own_log: OwnLog,
        own_end_for: impl FnOnce(LeaderEpoch) -> Option<(LeaderEpoch, Offset)>,
    ) -> Truncation {
        truncation_point(e(epoch), o(end), own_log, own_end_for)
    }

    #[test]
    fn truncation_follows_kafkas_rules() {
        let at = |hw| OwnLog {
            asked_epoch: e(4),
            end: o(30),
            high_watermark: o(hw),
        };
        // Same latest epoch, leader longer: nothing to cut.
        assert_eq!(point(4, 50, at(0), own), Truncation::Done(o(30)));
        // Same epoch, leader ended it earlier: cut to the leader's end.
        assert_eq!(point(4, 25, at(0), own), Truncation::Done(o(25)));
        // The leader's epoch 2 ended at 12, ours at 20: cut to 12, done.
        assert_eq!(point(2, 12, at(0), own), Truncation::Done(o(12)));
        // The leader answers epoch 3, which we never had: cut to where our largest epoch
        // below it (2) ended, then ask again.
        assert_eq!(point(3, 15, at(0), own), Truncation::Again(o(20)));
        // We know no epoch that old: the leader's end.
        assert_eq!(point(0, 5, at(0), |_| None), Truncation::Done(o(5)));
        // Undefined answers.
        assert_eq!(point(-1, -1, at(7), own), Truncation::Done(o(7)));
        assert_eq!(point(-1, -1, at(70), own), Truncation::Done(o(30)));
        assert_eq!(point(-1, 9, at(0), own), Truncation::Done(o(9)));
        // An epoch newer than asked is not believed; never above the follower's end.
        assert_eq!(point(9, 100, at(0), own), Truncation::Done(o(30)));
        assert_eq!(point(9, 10, at(0), own), Truncation::Done(o(10)));
    }

    #[test]
    fn out_of_range_resets_below_the_start_and_truncates_beyond_the_end() {
        assert_eq!(
            out_of_range_action(o(5), o(100), o(200)),
            OutOfRangeAction::ResetTo(o(100))
        );
        assert_eq!(
            out_of_range_action(o(250), o(100), o(200)),
            OutOfRangeAction::TruncateTo(o(200))
        );
        assert_eq!(
            out_of_range_action(o(150), o(100), o(200)),
            OutOfRangeAction::Fetch
        );
    }

    #[test]
    fn an_empty_log_restarts_inside_the_leaders_first_batch() {
        // Leader start 1200 inside batch 1190..=1209; the follower reset to 1200.
        assert_eq!(
            restart_inside_first_batch(o(1200), o(1200), o(1190), o(1209)),
            Some(o(1190))
        );
        // Not empty, or the batch ends before the log end, or starts at it: refused.
        assert_eq!(
            restart_inside_first_batch(o(0), o(1200), o(1190), o(1209)),
            None
        );
        assert_eq!(
            restart_inside_first_batch(o(1200), o(1200), o(1190), o(1199)),
            None
        );
        assert_eq!(
            restart_inside_first_batch(o(1200), o(1200), o(1200), o(1209)),
            None
        );
    }

    #[test]
    fn the_log_start_follows_the_leaders_within_what_is_written() {
        assert_eq!(log_start_to_follow(o(0), o(500), o(300)), Some(o(300)));
        assert_eq!(log_start_to_follow(o(0), o(500), o(500)), Some(o(500)));
        assert_eq!(log_start_to_follow(o(0), o(500), o(501)), None);
        assert_eq!(log_start_to_follow(o(300), o(500), o(300)), None);
        assert_eq!(log_start_to_follow(o(300), o(500), o(100)), None);
    }

    #[test]
    fn reconnect_backoff_doubles_up_to_its_bound() {
        let got: Vec<u64> = (1..=8)
            .map(|a| reconnect_backoff_ms(100, 2_000, a))
            .collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(reconnect_backoff_ms(100, 2_000, u32::MAX), 2_000);
        assert_eq!(reconnect_backoff_ms(100, 50, 3), 100);
    }

    #[test]
    fn a_trailing_partial_batch_is_dropped() {
        let batch = |len: i32| {
            let mut b = vec![0u8; 12 + len as usize];
            b[8..12].copy_from_slice(&len.to_be_bytes());
            b
        };
        let mut records = batch(60);
        records.extend(batch(100));
        assert_eq!(whole_batches_len(&records), 184);
        let full = records.len();
        records.extend(&batch(80)[..50]);
        assert_eq!(whole_batches_len(&records), full);
        assert_eq!(whole_batches_len(&records[..10]), 0);
        assert_eq!(whole_batches_len(&[]), 0);
        let mut negative = batch(60);
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(whole_batches_len(&negative), 0);
    }

    /// A log as the epoch of each offset (epochs never decrease along it).
    type ModelLog = Vec<i32>;

    /// OffsetForLeaderEpoch against a model log, as the engine's epoch cache answers: the
    /// largest epoch ≤ `epoch` it holds and where that epoch ended; an epoch older than
    /// all it holds ended where its log begins.
    fn model_end_for(log: &ModelLog, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        if log.is_empty() {
            return None;
        }
        let Some(held) = log.iter().copied().filter(|e| *e <= epoch.0).max() else {
            return Some((epoch, o(0)));
        };
        let end = log.iter().position(|e| *e > held).unwrap_or(log.len());
        Some((e(held), o(end as i64)))
    }

    /// Two replicas taking turns leading: each new epoch's leader appends `runs[i].1`
    /// records to its own log, then the other replica holds a prefix (of `runs[i].2` per
    /// mille) of the leader's log, as correct replication leaves it. Returns the last
    /// leader's log and the other replica's (which may have diverged).
    fn history(runs: &[(bool, usize, u16)]) -> (ModelLog, ModelLog) {
        let mut logs: [ModelLog; 2] = [Vec::new(), Vec::new()];
        let mut leader = 0;
        for (epoch, (switch, appended, copied)) in runs.iter().enumerate() {
            if *switch {
                leader = 1 - leader;
            }
            logs[leader].extend(std::iter::repeat_n(epoch as i32 + 1, *appended));
            let copy = logs[leader].len() * usize::from(*copied) / 1000;
            logs[1 - leader] = logs[leader][..copy].to_vec();
        }
        // The last leader appends once more while the other was away; the other may have
        // led an epoch of its own before (its suffix is the divergence).
        let other = logs[1 - leader].clone();
        (logs[leader].clone(), other)
    }

    proptest::proptest! {
        /// Whatever the history, the follower ends with exactly the longest prefix it
        /// shares with the leader (same epoch at every offset), in a bounded number of
        /// OffsetForLeaderEpoch rounds.
        #[test]
        fn truncation_finds_the_exact_divergence_point(
            runs in proptest::collection::vec((proptest::bool::ANY, 0usize..6, 0u16..=1000), 1..12),
            diverged in proptest::collection::vec(0usize..4, 0..3),
        ) {
            let (leader, mut follower) = history(&runs);
            // A deposed leader's own epochs the new leader never saw, above all of its.
            let top = leader.iter().chain(&follower).copied().max().unwrap_or(0);
            for (i, n) in diverged.iter().enumerate() {
                follower.extend(std::iter::repeat_n(top + 10 + i as i32, *n));
            }
            let common = leader
                .iter()
                .zip(&follower)
                .take_while(|(a, b)| a == b)
                .count();
            let mut rounds = 0;
            while let Some(&asked) = follower.last() {
                rounds += 1;
                proptest::prop_assert!(rounds <= 64, "no convergence: {leader:?} {follower:?}");
                let (epoch, end) = model_end_for(&leader, e(asked)).unwrap_or((e(-1), o(-1)));
                let own = OwnLog { asked_epoch: e(asked), end: o(follower.len() as i64), high_watermark: o(0) };
                let snapshot = follower.clone();
                let t = truncation_point(epoch, end, own, |e| model_end_for(&snapshot, e));
                let (Truncation::Done(to) | Truncation::Again(to)) = t;
                proptest::prop_assert!(to.0 >= 0 && to.0 <= follower.len() as i64);
                follower.truncate(to.0 as usize);
                if let Truncation::Done(_) = t {
                    break;
                }
            }
            proptest::prop_assert_eq!(follower.len(), common, "leader {:?}", leader);
        }
    }
}
