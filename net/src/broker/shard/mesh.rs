//! The shard mesh's messages: the operations one shard asks of another (`ShardOp`),
//! their answers (`ShardReply`), and the caller's table of calls waiting for an answer.
//!
//! Invariant: an answer is handed to its caller on the caller's own shard (`Waiting`),
//! so no task waker crosses threads.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use bytes::Bytes;
use futures_channel::oneshot;

use super::{ConnectionSlot, Work};
use crate::kafka::errors::ErrorCode;
use crate::store::{AbortedTxn, LeaderEpoch, Marker, Offset, TopicPartition};

/// One partition of a fetch, as asked of its shard.
#[derive(Debug, Clone)]
pub struct FetchPart {
    pub tp: TopicPartition,
    pub offset: Offset,
    pub partition_bytes_max: usize,
    /// The leader epoch the fetcher knows (-1: none; not checked).
    pub current_leader_epoch: LeaderEpoch,
}

/// Who reads in a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// A follower replicating (its broker id): reads up to the written end.
    Follower(i32),
    /// A consumer: reads below the high watermark; `from_follower` when it may be served
    /// by a follower replica (Fetch v11+, KIP-392), else only by the leader;
    /// `read_committed` (isolation level 1) reads below the last stable offset only and
    /// is told the aborted transactions in what it reads.
    Consumer {
        from_follower: bool,
        read_committed: bool,
    },
}

/// One partition of a fetch, as answered.
#[derive(Debug, Clone, Default)]
pub struct FetchPartResult {
    pub error: ErrorCode,
    pub high_watermark: Offset,
    /// The last stable offset (the high watermark when no transaction is undecided).
    pub last_stable: Offset,
    pub log_start: Offset,
    pub records: Option<Bytes>,
    /// For a `read_committed` reader: the aborted transactions overlapping the read.
    pub aborted: Vec<AbortedTxn>,
}

/// One partition of a produce, as answered.
#[derive(Debug, Clone)]
pub struct ProducePartResult {
    pub error: ErrorCode,
    pub base_offset: Offset,
    pub log_start: Offset,
    /// Set when a batch was refused for some of its records (KIP-467).
    pub record_errors: Option<Box<RecordErrors>>,
    /// Nothing was appended: the transactional write must first be verified with the
    /// transaction coordinator, then sent again with this guard (`txn::verify`).
    pub verify_guard: Option<u64>,
}

impl ProducePartResult {
    /// A partition answered `error` with nothing appended.
    pub fn failed(error: ErrorCode) -> ProducePartResult {
        ProducePartResult {
            error,
            base_offset: Offset(-1),
            log_start: Offset(-1),
            record_errors: None,
            verify_guard: None,
        }
    }
}

/// KIP-467: why a produce was refused, and which records of the batch were invalid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordErrors {
    /// The partition's `error_message`.
    pub message: String,
    /// Each invalid record: its index in the batch and why.
    pub records: Vec<(i32, String)>,
}

/// Work one shard asks of another.
#[derive(Debug)]
pub enum ShardOp {
    Produce {
        acks: i16,
        /// How long acks=all waits for the ISR (the request's `timeout_ms`).
        timeout_ms: u64,
        parts: Vec<(TopicPartition, Bytes)>,
        /// Set for a Produce with a transactional id (KIP-890 verification).
        txn: Option<crate::txn::verify::TxnCheck>,
    },
    FetchRead {
        parts: Vec<FetchPart>,
        bytes_max: usize,
        reader: Reader,
    },
    FetchWait {
        parts: Vec<(TopicPartition, Offset)>,
        wait_ms: u64,
        reader: Reader,
    },
    /// `read_committed`: "latest" is the last stable offset, not the high watermark.
    /// `client`: asked by a client, not a follower (KIP-207's check applies).
    ListOffsets {
        parts: Vec<(TopicPartition, i64)>,
        read_committed: bool,
        client: bool,
    },
    /// The producers a partition's log knows (DescribeProducers).
    DescribeProducers {
        tp: TopicPartition,
    },
    /// Write a transaction marker into each partition (WriteTxnMarkers).
    WriteMarkers {
        parts: Vec<(TopicPartition, Marker)>,
    },
    /// Delete the records before each offset (-1: the high watermark).
    DeleteRecords {
        parts: Vec<(TopicPartition, Offset)>,
    },
    /// End offset of each (partition, leader epoch).
    EpochEnds {
        parts: Vec<(TopicPartition, LeaderEpoch)>,
    },
    DeleteTopic {
        name: String,
        partitions: i32,
    },
    ApplyConfig {
        topic: String,
    },
    /// The first half of a live move: stop appends, drain, close the log (this shard
    /// owns it until the table flips).
    MoveOut {
        tp: TopicPartition,
    },
    /// The second half: open the log this shard now owns.
    MoveIn {
        tp: TopicPartition,
    },
    /// A live move ended (its partition is no longer marked moving): requests waiting for
    /// it look at the table again (see `Shard::wait_not_moving`).
    MoveEnded,
    /// Serve a client connection another shard accepted (see [`ConnectionCounts`]); its
    /// slot in the counts was already taken for this shard.
    Adopt {
        socket: std::os::fd::OwnedFd,
        slot: ConnectionSlot,
        /// The listener it was accepted on (index into `Security::listeners`).
        listener: usize,
    },
}

impl ShardOp {
    /// The task queue this operation runs in on the receiving shard.
    pub fn work(&self) -> Work {
        match self {
            ShardOp::Produce { .. } | ShardOp::WriteMarkers { .. } => Work::Produce,
            ShardOp::FetchRead { .. } | ShardOp::FetchWait { .. } => Work::Fetch,
            ShardOp::Adopt { .. } => Work::Other,
            _ => Work::Other,
        }
    }
}

/// The answer to a [`ShardOp`].
#[derive(Debug)]
pub enum ShardReply {
    Produce(Vec<ProducePartResult>),
    Fetch(Vec<FetchPartResult>),
    ListedOffsets(Vec<ListedOffset>),
    EpochEnds(Vec<EpochEnd>),
    DeletedRecords(Vec<DeletedRecords>),
    MarkersWritten(Vec<MarkerWritten>),
    /// A partition's producers, or the error code for it.
    Producers(Result<Vec<sluice_engine::producer::ProducerView>, ErrorCode>),
    Done,
    /// An operation that failed, with the reason (for the operator).
    Failed(String),
    /// The other shard could not be reached (it is stopping).
    Unreachable,
}

/// A request crossing the mesh; the answer goes back to the shard it came from, under
/// its `call_id`.
#[derive(Debug)]
pub struct ShardCall {
    pub op: ShardOp,
    pub call_id: u64,
}

/// The answer to a [`ShardCall`], crossing the answer mesh back to the caller.
#[derive(Debug)]
pub struct ShardAnswer {
    pub call_id: u64,
    pub reply: ShardReply,
}

/// The calls this shard waits on, by id; filled on this shard only.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    next_id: Cell<u64>,
    calls: RefCell<HashMap<u64, oneshot::Sender<ShardReply>>>,
}

impl Waiting {
    /// Registers a call about to be sent: its id, where its answer arrives, and the guard
    /// that removes it when the caller stops waiting.
    pub(super) fn register(&self) -> (u64, oneshot::Receiver<ShardReply>, WaitingGuard<'_>) {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let (tx, rx) = oneshot::channel();
        self.calls.borrow_mut().insert(id, tx);
        (id, rx, WaitingGuard { waiting: self, id })
    }

    /// Hands an answer to its caller if it still waits; `false` when it is gone.
    pub(super) fn deliver(&self, answer: ShardAnswer) -> bool {
        let waiter = self.calls.borrow_mut().remove(&answer.call_id);
        waiter.is_some_and(|tx| tx.send(answer.reply).is_ok())
    }
}

/// Removes a call from [`Waiting`] when its caller stops waiting (answered or dropped),
/// so a late answer finds nothing and is dropped.
pub(super) struct WaitingGuard<'a> {
    waiting: &'a Waiting,
    id: u64,
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.waiting.calls.borrow_mut().remove(&self.id);
    }
}

#[cfg(test)]
mod waiting_tests {
    use super::*;

    #[test]
    fn an_answer_reaches_a_waiting_caller_and_a_late_one_is_dropped() {
        let waiting = Waiting::default();
        let (tx, mut rx) = oneshot::channel();
        waiting.calls.borrow_mut().insert(1, tx);
        let answer = |call_id| ShardAnswer {
            call_id,
            reply: ShardReply::Done,
        };
        assert!(waiting.deliver(answer(1)));
        assert!(matches!(rx.try_recv(), Ok(Some(ShardReply::Done))));
        // A caller that stopped waiting (its future dropped) leaves no entry behind, and
        // its answer, arriving later, goes nowhere.
        let (tx, _rx) = oneshot::channel();
        waiting.calls.borrow_mut().insert(2, tx);
        drop(WaitingGuard {
            waiting: &waiting,
            id: 2,
        });
        assert!(waiting.calls.borrow().is_empty());
        assert!(!waiting.deliver(answer(2)));
    }
}

/// One partition of a ListOffsets, as answered: the offset found and its record's
/// timestamp (-1 each where there is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    pub error: ErrorCode,
    pub offset: Offset,
    pub timestamp: i64,
}

/// One partition of an OffsetForLeaderEpoch, as answered: the epoch asked for (or the
/// latest before it) and the offset where it ended (-1 each when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    pub error: ErrorCode,
    pub epoch: LeaderEpoch,
    pub end_offset: Offset,
}

/// One partition of a DeleteRecords, as answered: its log start offset after the deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletedRecords {
    pub error: ErrorCode,
    pub low_watermark: Offset,
}

/// One partition of a WriteTxnMarkers, as answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerWritten {
    pub error: ErrorCode,
}

impl PartitionAnswer for MarkerWritten {
    fn failed(error: ErrorCode) -> Self {
        MarkerWritten { error }
    }
    fn from_reply(reply: ShardReply) -> Option<Vec<Self>> {
        match reply {
            ShardReply::MarkersWritten(v) => Some(v),
            _ => None,
        }
    }
}

/// The answer kinds the per-partition fan-out (`answers_by_shard`) collects: one answer per
/// asked partition, from the reply variant of its kind.
pub trait PartitionAnswer: Sized + Copy {
    /// The answer for a partition that failed with `error`.
    fn failed(error: ErrorCode) -> Self;
    /// This kind's answers in `reply`; `None` when the reply is another kind (or a failure).
    fn from_reply(reply: ShardReply) -> Option<Vec<Self>>;
}

impl PartitionAnswer for ListedOffset {
    fn failed(error: ErrorCode) -> Self {
        ListedOffset {
            error,
            offset: Offset(-1),
            timestamp: -1,
        }
    }
    fn from_reply(reply: ShardReply) -> Option<Vec<Self>> {
        match reply {
            ShardReply::ListedOffsets(v) => Some(v),
            _ => None,
        }
    }
}

impl PartitionAnswer for EpochEnd {
    fn failed(error: ErrorCode) -> Self {
        EpochEnd {
            error,
            epoch: LeaderEpoch(-1),
            end_offset: Offset(-1),
        }
    }
    fn from_reply(reply: ShardReply) -> Option<Vec<Self>> {
        match reply {
            ShardReply::EpochEnds(v) => Some(v),
            _ => None,
        }
    }
}

impl PartitionAnswer for DeletedRecords {
    fn failed(error: ErrorCode) -> Self {
        DeletedRecords {
            error,
            low_watermark: Offset(-1),
        }
    }
    fn from_reply(reply: ShardReply) -> Option<Vec<Self>> {
        match reply {
            ShardReply::DeletedRecords(v) => Some(v),
            _ => None,
        }
    }
}
