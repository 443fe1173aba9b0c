//! The history of a run: every client operation and every fault, each with the time it
//! was observed (since the history began). Appended from many threads; read whole by the
//! checker once the run is over.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A message's identity: producer `p`'s `n`-th message is `p * ID_PRODUCER_STRIDE + n`,
/// written as the payload's first 12 digits (`acks::payload`).
pub type MsgId = u64;

/// Ids of one producer lie in `[p * STRIDE, (p + 1) * STRIDE)`.
pub const ID_PRODUCER_STRIDE: u64 = 1_000_000_000;

/// Which producer sent message `id`.
pub fn producer_of(id: MsgId) -> u64 {
    id / ID_PRODUCER_STRIDE
}

/// How a delivery failed: whether the message may still have been written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The outcome is unknown (timed out, connection lost): reading it later is allowed.
    Indeterminate(String),
    /// The broker refused it: it must never be read.
    Definite(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A producer handed `id` to its client for `partition`.
    Send { id: MsgId, partition: i32 },
    /// Its delivery report: written at `offset` (-1: acknowledged without an offset, as
    /// librdkafka reports a request whose answer it lost but a later one covered).
    Ack {
        id: MsgId,
        partition: i32,
        offset: i64,
    },
    /// Its delivery report: failed.
    Fail {
        id: MsgId,
        partition: i32,
        failure: Failure,
    },
    /// A group member was assigned these partitions (a new assignment epoch of the reader).
    Assigned { reader: usize, partitions: Vec<i32> },
    /// A group member lost its partitions.
    Revoked { reader: usize },
    /// A group member polled `id` at `offset`.
    Read {
        reader: usize,
        partition: i32,
        offset: i64,
        id: MsgId,
    },
    /// A polled message that is not one of ours (a reader saw garbage).
    Foreign {
        reader: usize,
        partition: i32,
        offset: i64,
    },
    /// A synchronous commit of `offset` (the next to read) for `partition` returned.
    Commit {
        reader: usize,
        partition: i32,
        offset: i64,
        ok: bool,
    },
    /// The final read-back of every partition, after the last fault was healed.
    Final {
        partition: i32,
        offset: i64,
        id: Option<MsgId>,
    },
    /// The final committed offset of the group for `partition`.
    FinalCommitted { partition: i32, offset: i64 },
    /// A producer client's idempotence log line (librdkafka's `eos` debug: producer id and
    /// epoch changes, drains, epoch bumps), at most `CLIENT_LOG_LINES_MAX` per client.
    ClientLog { producer: u64, line: String },
    /// Producer `producer`'s client failed fatally (it is replaced by a new one).
    ProducerFatal { producer: u64, error: String },
    /// A fault began (`kind` as in the report; `what` its target).
    FaultStart { kind: &'static str, what: String },
    /// The fault that began last was healed.
    FaultEnd { kind: &'static str },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: Duration,
    pub op: Op,
}

/// Events past this many are not recorded (and the run says so): a bound on memory for
/// long runs (~100 bytes each).
pub const EVENTS_MAX: usize = 20_000_000;

pub struct History {
    started: Instant,
    events: Mutex<Vec<Event>>,
    dropped: std::sync::atomic::AtomicU64,
}

impl Default for History {
    fn default() -> Self {
        History {
            started: Instant::now(),
            events: Mutex::new(Vec::new()),
            dropped: Default::default(),
        }
    }
}

impl History {
    pub fn record(&self, op: Op) {
        let mut events = self.events.lock().unwrap();
        // Taken under the lock, so events are in time order.
        let at = self.started.elapsed();
        if events.len() < EVENTS_MAX {
            events.push(Event { at, op });
        } else {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Every event, in the order recorded.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Events not recorded for want of room (a complete history has none).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}
