//! The engine's error types. Kafka error codes are chosen in `net`, from these.

use crate::batch::BatchError;
use crate::types::Offset;

/// The most invalid records one refusal lists (a 1 MiB batch may hold 100 000 records;
/// the answer names the first ones and counts the rest).
pub const RECORD_ERRORS_MAX: usize = 1024;

/// Why an append was refused; nothing of the request was appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// CRC mismatch or a malformed batch (Kafka: CORRUPT_MESSAGE).
    #[error("corrupt batch: {0}")]
    Corrupt(BatchError),
    /// Well framed, but its records disagree with the header (Kafka: INVALID_RECORD).
    #[error("invalid record batch: {0}")]
    InvalidRecord(BatchError),
    /// Larger than `max.message.bytes` (Kafka: MESSAGE_TOO_LARGE).
    #[error("batch of {size} bytes is larger than max.message.bytes {max}")]
    TooLarge { size: usize, max: usize },
    /// A CreateTime timestamp outside the topic's allowed window (Kafka: INVALID_TIMESTAMP).
    #[error("batch timestamp {timestamp_ms} is outside the allowed window around {now_ms}")]
    InvalidTimestamp { timestamp_ms: i64, now_ms: i64 },
    /// The log cannot take writes now: it is being truncated or closed (retriable).
    #[error("log is not accepting appends: {0}")]
    Unavailable(&'static str),
    /// A sequence gap or reordering from an idempotent producer
    /// (Kafka: OUT_OF_ORDER_SEQUENCE_NUMBER).
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    /// An older epoch of a producer that has since been re-initialised
    /// (Kafka: INVALID_PRODUCER_EPOCH).
    #[error("producer {producer_id}: epoch {epoch} is older than the current {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// A producer this partition has no state for, continuing a sequence
    /// (Kafka: UNKNOWN_PRODUCER_ID).
    #[error("producer {0} is unknown to this partition")]
    UnknownProducerId(i64),
    /// A non-transactional write from a producer with an open transaction here
    /// (Kafka: INVALID_TXN_STATE).
    #[error("producer {producer_id} has an open transaction and wrote outside it")]
    InvalidTxnState { producer_id: i64 },
    /// A transaction marker from a coordinator older than the one that wrote the
    /// producer's last marker (Kafka: TRANSACTION_COORDINATOR_FENCED).
    #[error("producer {producer_id}: marker of coordinator epoch {coordinator_epoch}, older than {current}")]
    CoordinatorFenced {
        producer_id: i64,
        coordinator_epoch: i32,
        current: i32,
    },
    /// A control batch in a client's Produce: only a transaction coordinator writes
    /// markers (Kafka: INVALID_RECORD).
    #[error("control batches are written by the transaction coordinator, not produced")]
    ControlBatch,
    /// Records without a key sent to a compacted log (Kafka: INVALID_RECORD, each listed
    /// in the answer's `record_errors`): the index in its batch of each keyless record of
    /// the first batch holding one, at most [`RECORD_ERRORS_MAX`] of them, and how many
    /// that batch holds in all.
    #[error("{count} record(s) of a batch have no key, which a compacted topic requires (the first at index {})", record_indexes.first().copied().unwrap_or(0))]
    KeylessRecords {
        record_indexes: Vec<u32>,
        count: u32,
    },
    /// The log failed an I/O operation and is offline (Kafka: KAFKA_STORAGE_ERROR).
    #[error("storage error: {0}")]
    Io(String),
    /// A replicated batch does not continue the follower's log where it must: the first
    /// batch at the log end, each next one where the previous ended (Kafka's
    /// UnexpectedAppendOffsetException). The fetcher asked from a different offset than
    /// it appends at, or the leader answered out of order; nothing was appended.
    #[error("replicated batch starts at offset {got}, expected {expected}")]
    UnexpectedOffset { expected: Offset, got: Offset },
}

impl From<BatchError> for AppendError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::TooLarge { size, max } => AppendError::TooLarge { size, max },
            BatchError::BadRecordCount { .. } => AppendError::InvalidRecord(e),
            other => AppendError::Corrupt(other),
        }
    }
}

/// Why a read could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset {requested} is outside the log [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        requested: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    #[error("storage error: {0}")]
    Io(String),
}

/// Errors of opening, maintaining and waiting on logs.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("storage error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("log failed earlier and is offline: {0}")]
    Offline(String),
    #[error("partition {0} already exists")]
    AlreadyExists(String),
    #[error("partition {0} does not exist")]
    UnknownPartition(String),
    #[error("invalid config: {0}")]
    InvalidConfig(#[from] crate::config::ConfigError),
    #[error("invalid config: invalid partition name {0}")]
    InvalidPartitionName(String),
    #[error("offset {requested} is outside [{low}, {high}]")]
    OffsetOutOfRange {
        requested: Offset,
        low: Offset,
        high: Offset,
    },
    /// The log was truncated or closed while the caller waited; the awaited offsets may
    /// not exist any more.
    #[error("log was truncated or closed while waiting")]
    Reset,
}

impl LogError {
    pub(crate) fn io(path: impl std::fmt::Display, source: impl Into<std::io::Error>) -> Self {
        LogError::Io {
            path: path.to_string(),
            source: source.into(),
        }
    }
}

impl From<LogError> for ReadError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::OffsetOutOfRange {
                requested,
                low,
                high,
            } => ReadError::OffsetOutOfRange {
                requested,
                log_start: low,
                log_end: high,
            },
            other => ReadError::Io(other.to_string()),
        }
    }
}
