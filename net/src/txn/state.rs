//! One transactional id's state as the coordinator keeps it (Kafka's
//! `TransactionMetadata`), and its transitions as pure functions: each returns the next
//! state, which is written to `__transaction_state` before it takes effect.
//!
//! ```text
//! Empty ──AddPartitions──► Ongoing ──EndTxn──► PrepareCommit ──markers──► CompleteCommit
//!   ▲                         │    └──EndTxn/timeout──► PrepareAbort ──markers──► CompleteAbort
//!   └──InitProducerId (epoch + 1)◄───────────────────────────────────────────────┘
//! ```

use std::collections::BTreeSet;

use crate::kafka::errors::{code, ErrorCode};

/// Kafka's transaction states, with their codes in the transaction log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn code(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_code(c: i8) -> Option<TxnState> {
        Some(match c {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's names (DescribeTransactions, ListTransactions, the CLI).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Markers are on their way: the next step is the Complete state.
    pub fn is_preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// One transactional id's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the coordinator's last bump (-1: none), so a producer retrying
    /// with it is recognised (KIP-360). Not stored: a coordinator that loads the state
    /// knows only the current epoch.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions of the open transaction (topic, partition).
    pub partitions: BTreeSet<(String, i32)>,
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// The client's transaction protocol: 2 for KIP-890 transactions v2 (the epoch is
    /// bumped when each transaction ends; partitions are added by their leaders), else 0.
    pub client_version: i16,
    /// The producer id before the last rotation (-1: none), so a retried EndTxn of the
    /// transaction that rotated it is recognised.
    pub previous_producer_id: i64,
    /// The producer id the transaction being ended hands over to, when its epoch is used
    /// up (-1: none).
    pub next_producer_id: i64,
}

/// The largest producer epoch handed out; past it a new producer id is taken.
pub const PRODUCER_EPOCH_MAX: i16 = i16::MAX - 1;

impl TxnMeta {
    /// A new transactional id's state: a fresh producer id at epoch 0.
    pub fn new(producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnMeta {
        TxnMeta {
            producer_id,
            producer_epoch: 0,
            last_producer_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
            client_version: 0,
            previous_producer_id: -1,
            next_producer_id: -1,
        }
    }

    /// Whether a request from producer `(id, epoch)` may act on this transaction:
    /// another producer id is INVALID_PRODUCER_ID_MAPPING; another epoch is a fenced
    /// producer (PRODUCER_FENCED; callers give old request versions
    /// INVALID_PRODUCER_EPOCH).
    pub fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), ErrorCode> {
        if producer_id != self.producer_id {
            return Err(code::INVALID_PRODUCER_ID_MAPPING);
        }
        if epoch != self.producer_epoch {
            return Err(code::PRODUCER_FENCED);
        }
        Ok(())
    }

    /// The state for InitProducerId of a transaction that is not open: the next epoch
    /// (`None` once epochs are used up: the caller takes a new producer id), Empty.
    pub fn bumped(&self, timeout_ms: i32, now_ms: i64) -> Option<TxnMeta> {
        (self.producer_epoch < PRODUCER_EPOCH_MAX).then(|| TxnMeta {
            producer_epoch: self.producer_epoch + 1,
            last_producer_epoch: self.producer_epoch,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
            ..self.clone()
        })
    }

    /// The state with `partitions` added to the (possibly new) open transaction.
    pub fn with_partitions(
        &self,
        partitions: impl IntoIterator<Item = (String, i32)>,
        now_ms: i64,
    ) -> TxnMeta {
        let mut next = self.clone();
        if next.state != TxnState::Ongoing {
            next.partitions.clear();
            next.start_ms = now_ms;
        }
        next.partitions.extend(partitions);
        next.state = TxnState::Ongoing;
        next.last_update_ms = now_ms;
        next
    }

    /// Transactions v2 (KIP-890): the transaction decided with the producer epoch bumped,
    /// so its markers and this state fence every request and write of the transaction
    /// that arrives late. When the epoch is used up, `next_producer_id` is where the
    /// producer goes on (from the Complete state). Also ends an Empty or Complete state
    /// (an abort of a transaction the producer could not tell was open).
    pub fn prepared_bumped(&self, commit: bool, now_ms: i64, next_producer_id: i64) -> TxnMeta {
        TxnMeta {
            producer_epoch: self.producer_epoch.saturating_add(1),
            last_producer_epoch: self.producer_epoch,
            client_version: 2,
            next_producer_id,
            ..self.prepared(commit, now_ms)
        }
    }

    /// Whether a transactions v2 EndTxn from `(producer_id, epoch)` is a retry of the one
    /// that ended this transaction (its epoch, or its producer id, moved on since).
    pub fn ended_by(&self, producer_id: i64, epoch: i16) -> bool {
        let bumped = producer_id == self.producer_id
            && i32::from(epoch) + 1 == i32::from(self.producer_epoch);
        let rotated = producer_id == self.previous_producer_id && self.producer_epoch == 0;
        self.client_version >= 2 && (bumped || rotated)
    }

    /// The open transaction decided: PrepareCommit or PrepareAbort, same partitions.
    pub fn prepared(&self, commit: bool, now_ms: i64) -> TxnMeta {
        TxnMeta {
            state: if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            },
            last_update_ms: now_ms,
            ..self.clone()
        }
    }

    /// The open transaction aborted by the coordinator (timeout, or a new incarnation of
    /// the producer): the epoch is bumped first, so the old producer's late writes and
    /// requests are fenced by the markers and by this state.
    pub fn fenced_abort(&self, now_ms: i64) -> TxnMeta {
        TxnMeta {
            producer_epoch: (self.producer_epoch + 1).min(PRODUCER_EPOCH_MAX),
            last_producer_epoch: self.producer_epoch,
            ..self.prepared(false, now_ms)
        }
    }

    /// The markers are written: CompleteCommit or CompleteAbort, no partitions; a used-up
    /// epoch hands over to the next producer id at epoch 0.
    pub fn completed(&self, now_ms: i64) -> TxnMeta {
        assert!(
            self.state.is_preparing(),
            "completing a transaction in state {}",
            self.state.name()
        );
        let done = TxnMeta {
            state: if self.state == TxnState::PrepareCommit {
                TxnState::CompleteCommit
            } else {
                TxnState::CompleteAbort
            },
            partitions: BTreeSet::new(),
            last_update_ms: now_ms,
            ..self.clone()
        };
        if self.next_producer_id < 0 {
            return done;
        }
        TxnMeta {
            producer_id: self.next_producer_id,
            producer_epoch: 0,
            last_producer_epoch: -1,
            previous_producer_id: self.producer_id,
            next_producer_id: -1,
            ..done
        }
    }

    /// The producer a transactions v2 EndTxn answer hands back: the epoch after the
    /// bump, or the next producer id at epoch 0.
    pub fn handed_over(&self) -> (i64, i16) {
        if self.next_producer_id >= 0 {
            (self.next_producer_id, 0)
        } else {
            (self.producer_id, self.producer_epoch)
        }
    }

    /// An open transaction past its timeout.
    pub fn timed_out(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing
            && now_ms.saturating_sub(self.start_ms) > i64::from(self.timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_runs_its_course() {
        let m = TxnMeta::new(9, 1_000, 0);
        assert_eq!((m.producer_epoch, m.state), (0, TxnState::Empty));
        let m = m.with_partitions([("t".to_string(), 0)], 10);
        assert_eq!((m.state, m.start_ms), (TxnState::Ongoing, 10));
        let m = m.with_partitions([("t".to_string(), 1)], 20);
        assert_eq!((m.partitions.len(), m.start_ms), (2, 10));
        let p = m.prepared(true, 30);
        assert_eq!(p.state, TxnState::PrepareCommit);
        let c = p.completed(40);
        assert_eq!((c.state, c.partitions.len()), (TxnState::CompleteCommit, 0));
        let next = c.with_partitions([("t".to_string(), 2)], 50);
        assert_eq!((next.partitions.len(), next.start_ms), (1, 50));
        let bumped = c.bumped(2_000, 60).expect("epoch left");
        assert_eq!(
            (
                bumped.producer_epoch,
                bumped.last_producer_epoch,
                bumped.timeout_ms
            ),
            (1, 0, 2_000)
        );
    }

    #[test]
    fn a_v2_transaction_ends_with_the_epoch_bumped_and_knows_its_retry() {
        let open = TxnMeta::new(9, 1_000, 0).with_partitions([("t".to_string(), 0)], 10);
        let p = open.prepared_bumped(true, 20, -1);
        assert_eq!(
            (p.state, p.producer_epoch, p.client_version),
            (TxnState::PrepareCommit, 1, 2)
        );
        assert_eq!(p.handed_over(), (9, 1));
        let done = p.completed(30);
        assert_eq!((done.producer_id, done.producer_epoch), (9, 1));
        assert!(done.ended_by(9, 0), "the EndTxn that ended it, retried");
        assert!(!done.ended_by(9, 1), "the producer's current epoch");
        assert!(!open.ended_by(9, 0), "transactions v1 never bump");
    }

    #[test]
    fn a_used_up_epoch_hands_over_to_the_next_producer_id() {
        let mut open = TxnMeta::new(9, 1_000, 0).with_partitions([("t".to_string(), 0)], 10);
        open.producer_epoch = PRODUCER_EPOCH_MAX;
        let p = open.prepared_bumped(false, 20, 77);
        // The markers fence the last epoch; the producer goes on as 77 at epoch 0.
        assert_eq!((p.producer_id, p.producer_epoch), (9, i16::MAX));
        assert_eq!(p.handed_over(), (77, 0));
        let done = p.completed(30);
        assert_eq!(
            (
                done.producer_id,
                done.producer_epoch,
                done.previous_producer_id
            ),
            (77, 0, 9)
        );
        assert_eq!(done.next_producer_id, -1);
        assert!(done.ended_by(9, PRODUCER_EPOCH_MAX));
        assert_eq!(done.handed_over(), (77, 0));
    }

    #[test]
    fn producers_are_checked_and_fenced() {
        let m = TxnMeta::new(9, 1_000, 0);
        assert_eq!(m.check_producer(9, 0), Ok(()));
        assert_eq!(
            m.check_producer(8, 0),
            Err(code::INVALID_PRODUCER_ID_MAPPING)
        );
        assert_eq!(m.check_producer(9, 1), Err(code::PRODUCER_FENCED));
        let open = m.with_partitions([("t".to_string(), 0)], 0);
        assert!(!open.timed_out(1_000) && open.timed_out(1_001));
        let fenced = open.fenced_abort(1_001);
        assert_eq!(
            (fenced.producer_epoch, fenced.state),
            (1, TxnState::PrepareAbort)
        );
        assert_eq!(fenced.check_producer(9, 0), Err(code::PRODUCER_FENCED));
        let mut last = m.clone();
        last.producer_epoch = PRODUCER_EPOCH_MAX;
        assert_eq!(last.bumped(1_000, 0), None, "a new producer id is needed");
    }

    #[test]
    fn state_codes_round_trip() {
        for c in 0..8 {
            assert_eq!(TxnState::from_code(c).map(TxnState::code), Some(c));
        }
        assert_eq!(TxnState::from_code(8), None);
    }

    #[test]
    #[should_panic(expected = "completing a transaction in state Ongoing")]
    fn completing_an_open_transaction_panics() {
        TxnMeta::new(1, 1, 0).with_partitions([], 0).completed(1);
    }
}
