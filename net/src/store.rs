//! The storage seam: everything `net` needs from a partition log, in one place.
//!
//! This is a stand-in with the exact shape of `sluice_engine`'s API (same names, same
//! signatures) kept in memory, so the protocol server can be built and tested while the
//! engine is being written. Swapping it for the engine is a change of `use` lines in this
//! module only. It validates batches the way the engine does (length, magic 2, CRC32C) so
//! that the error paths of the handlers are exercised for real.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ops::Deref;
use std::path::Path;
use std::rc::Rc;
use std::task::Waker;

use bytes::Bytes;

/// An offset in a partition log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub i64);
/// A partition leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderEpoch(pub i32);
/// A partition index within a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId(pub i32);

/// A topic name and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: PartitionId,
}

/// When appended data is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    Fsync,
    Interval { interval_ms: u64, bytes_max: u64 },
}

/// Per-partition log settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub segment_bytes_max: u64,
    pub segment_ms_max: u64,
    pub max_message_bytes: u32,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub flush: FlushPolicy,
    pub index_interval_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 1 << 30,
            segment_ms_max: 7 * 24 * 3600 * 1000,
            max_message_bytes: 1_048_588,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            flush: FlushPolicy::Interval { interval_ms: 1000, bytes_max: 1 << 20 },
            index_interval_bytes: 4096,
        }
    }
}

/// Per-shard storage settings.
#[derive(Debug, Clone, Default)]
pub struct ShardConfig {
    pub tail_cache_bytes_max: usize,
    pub write_buffer_bytes_max: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("partition exists: {0:?}")]
    Exists(TopicPartition),
    #[error("no such partition: {0:?}")]
    NotFound(TopicPartition),
    #[error("i/o: {0}")]
    Io(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("corrupt batch: {0}")]
    Corrupt(String),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("batch of {size} bytes over the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("i/o: {0}")]
    Io(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset out of range [{log_start:?}, {log_end:?})")]
    OffsetOutOfRange { log_start: Offset, log_end: Offset },
    #[error("i/o: {0}")]
    Io(String),
}

/// What an append assigned.
#[derive(Debug, Clone, Copy)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub max_timestamp: i64,
    pub record_count: u32,
}

/// Bounds of one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub max_bytes: usize,
    pub max_offset: Offset,
    pub min_one_batch: bool,
}

/// Whole stored batches, verbatim.
#[derive(Debug, Clone)]
pub struct BatchSlice(Bytes);

impl Deref for BatchSlice {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// The result of a read.
#[derive(Debug, Default)]
pub struct ReadBatches {
    pub slices: Vec<BatchSlice>,
    pub bytes: usize,
}

const BATCH_HEADER_BYTES: usize = 61;

#[derive(Debug)]
struct Stored {
    base: i64,
    last: i64,
    max_ts: i64,
    bytes: Bytes,
}

#[derive(Debug, Default)]
struct LogState {
    batches: Vec<Stored>,
    start: i64,
    end: i64,
    wakers: Vec<Waker>,
}

/// A cheap handle to one partition log.
#[derive(Debug, Clone)]
pub struct PartitionLog {
    state: Rc<RefCell<LogState>>,
    config: Rc<RefCell<LogConfig>>,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

struct Checked {
    at: usize,
    len: usize,
    last_delta: i64,
    max_ts: i64,
    count: u32,
}

fn check_batches(records: &[u8], max_message_bytes: u32) -> Result<Vec<Checked>, AppendError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < records.len() {
        let rest = &records[at..];
        if rest.len() < BATCH_HEADER_BYTES {
            return Err(AppendError::Corrupt("truncated batch header".into()));
        }
        let batch_len = be_i32(rest, 8);
        if batch_len < (BATCH_HEADER_BYTES - 12) as i32 {
            return Err(AppendError::Corrupt(format!("batch length {batch_len}")));
        }
        let len = batch_len as usize + 12;
        if len > rest.len() {
            return Err(AppendError::Corrupt("batch runs past the request".into()));
        }
        if rest[16] != 2 {
            return Err(AppendError::Corrupt(format!("magic {}", rest[16])));
        }
        if len > max_message_bytes as usize {
            return Err(AppendError::TooLarge { size: len, max: max_message_bytes as usize });
        }
        let crc = be_i32(rest, 17) as u32;
        if crc32c::crc32c(&rest[21..len]) != crc {
            return Err(AppendError::Corrupt("crc mismatch".into()));
        }
        let count = be_i32(rest, 57);
        if count < 0 {
            return Err(AppendError::InvalidRecord(format!("record count {count}")));
        }
        out.push(Checked {
            at,
            len,
            last_delta: be_i32(rest, 23) as i64,
            max_ts: be_i64(rest, 35),
            count: count as u32,
        });
        at += len;
    }
    if out.is_empty() {
        return Err(AppendError::InvalidRecord("no batches".into()));
    }
    Ok(out)
}

impl PartitionLog {
    fn new(config: LogConfig) -> Self {
        PartitionLog {
            state: Rc::new(RefCell::new(LogState::default())),
            config: Rc::new(RefCell::new(config)),
        }
    }

    pub async fn append(
        &self,
        records: &[u8],
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo, AppendError> {
        let max = self.config.borrow().max_message_bytes;
        let checked = check_batches(records, max)?;
        let mut st = self.state.borrow_mut();
        let base_offset = st.end;
        let mut max_timestamp = -1;
        let mut record_count = 0;
        for c in checked {
            let mut b = records[c.at..c.at + c.len].to_vec();
            let base = st.end;
            b[0..8].copy_from_slice(&base.to_be_bytes());
            b[12..16].copy_from_slice(&leader_epoch.0.to_be_bytes());
            let last = base + c.last_delta;
            st.batches.push(Stored { base, last, max_ts: c.max_ts, bytes: Bytes::from(b) });
            st.end = last + 1;
            max_timestamp = max_timestamp.max(c.max_ts);
            record_count += c.count;
        }
        let last_offset = Offset(st.end - 1);
        for w in st.wakers.drain(..) {
            w.wake();
        }
        Ok(AppendInfo { base_offset: Offset(base_offset), last_offset, max_timestamp, record_count })
    }

    /// Waits until every offset below `end` is written (including ones not yet appended).
    pub async fn wait_written(&self, end: Offset) -> Result<(), LogError> {
        futures_lite::future::poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            if st.end >= end.0 {
                std::task::Poll::Ready(Ok(()))
            } else {
                st.wakers.push(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }

    pub async fn wait_synced(&self, end: Offset) -> Result<(), LogError> {
        self.wait_written(end).await
    }

    pub async fn wait_durable(&self, end: Offset) -> Result<(), LogError> {
        self.wait_written(end).await
    }

    pub async fn read(&self, from: Offset, limits: ReadLimits) -> Result<ReadBatches, ReadError> {
        let st = self.state.borrow();
        if from.0 < st.start || from.0 > st.end {
            return Err(ReadError::OffsetOutOfRange {
                log_start: Offset(st.start),
                log_end: Offset(st.end),
            });
        }
        let mut out = ReadBatches::default();
        let first = st.batches.partition_point(|b| b.last < from.0);
        for b in &st.batches[first..] {
            if b.base >= limits.max_offset.0 {
                break;
            }
            let fits = out.bytes + b.bytes.len() <= limits.max_bytes;
            if !fits && !(limits.min_one_batch && out.slices.is_empty()) {
                break;
            }
            out.bytes += b.bytes.len();
            out.slices.push(BatchSlice(b.bytes.clone()));
        }
        Ok(out)
    }

    pub fn log_start_offset(&self) -> Offset {
        Offset(self.state.borrow().start)
    }
    pub fn log_end_offset(&self) -> Offset {
        Offset(self.state.borrow().end)
    }
    pub fn written_end_offset(&self) -> Offset {
        self.log_end_offset()
    }

    pub async fn offset_for_timestamp(&self, ts_ms: i64) -> Result<Option<(Offset, i64)>, LogError> {
        let st = self.state.borrow();
        Ok(st.batches.iter().find(|b| b.max_ts >= ts_ms).map(|b| (Offset(b.base), b.max_ts)))
    }

    pub async fn max_timestamp(&self) -> Result<Option<(Offset, i64)>, LogError> {
        let st = self.state.borrow();
        let mut best: Option<(Offset, i64)> = None;
        for b in &st.batches {
            if best.is_none_or(|(_, t)| b.max_ts > t) {
                best = Some((Offset(b.last), b.max_ts));
            }
        }
        Ok(best)
    }

    pub async fn delete_records_before(&self, offset: Offset) -> Result<Offset, LogError> {
        let mut st = self.state.borrow_mut();
        let target = offset.0.min(st.end);
        st.batches.retain(|b| b.last >= target);
        st.start = st.start.max(target);
        Ok(Offset(st.start))
    }

    pub fn set_config(&self, config: LogConfig) {
        *self.config.borrow_mut() = config;
    }
    pub fn config(&self) -> LogConfig {
        self.config.borrow().clone()
    }
}

/// All partition logs of one shard.
pub struct LogManager {
    logs: RefCell<HashMap<TopicPartition, PartitionLog>>,
    closed: Cell<bool>,
}

impl std::fmt::Debug for LogManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogManager").field("partitions", &self.logs.borrow().len()).finish()
    }
}

impl LogManager {
    pub async fn open(
        _data_dir: &Path,
        _shard: ShardConfig,
        _owns: impl Fn(&TopicPartition) -> bool,
        _config_for: impl Fn(&str) -> LogConfig,
    ) -> Result<LogManager, LogError> {
        Ok(LogManager { logs: RefCell::new(HashMap::new()), closed: Cell::new(false) })
    }

    pub fn get(&self, tp: &TopicPartition) -> Option<PartitionLog> {
        self.logs.borrow().get(tp).cloned()
    }

    pub async fn create(&self, tp: TopicPartition, config: LogConfig) -> Result<PartitionLog, LogError> {
        let mut logs = self.logs.borrow_mut();
        if logs.contains_key(&tp) {
            return Err(LogError::Exists(tp));
        }
        let log = PartitionLog::new(config);
        logs.insert(tp, log.clone());
        Ok(log)
    }

    pub async fn delete(&self, tp: &TopicPartition) -> Result<(), LogError> {
        match self.logs.borrow_mut().remove(tp) {
            Some(_) => Ok(()),
            None => Err(LogError::NotFound(tp.clone())),
        }
    }

    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.logs.borrow().keys().cloned().collect()
    }

    pub async fn close_all(&self) -> Result<(), LogError> {
        self.closed.set(true);
        Ok(())
    }
}
