//! Log and shard settings as plain data, with Kafka's names noted beside each field.

/// When the log calls fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Sync before acknowledging (group commit: every batch that arrives while one
    /// fdatasync runs shares the next one).
    Fsync,
    /// Sync when `interval_ms` has passed or `bytes_max` bytes were written since the last
    /// sync, whichever comes first (Kafka's `flush.ms` / `flush.messages`, in bytes).
    Interval { interval_ms: u64, bytes_max: u64 },
}

/// Which timestamp a topic keeps (Kafka's `message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// The producer's timestamps, as sent.
    #[default]
    CreateTime,
    /// The broker's clock at append: written into each batch's max timestamp.
    LogAppendTime,
}

/// Per-partition settings; every one can change while the log is open
/// ([`crate::PartitionLog::set_config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment before it would grow past this.
    pub segment_bytes_max: u64,
    /// `segment.ms`: roll the active segment once it is this old.
    pub segment_ms_max: u64,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: u32,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u32,
    /// `retention.ms`: delete closed segments whose newest record is older; `None` keeps all.
    pub retention_ms: Option<u64>,
    /// `retention.bytes`: delete the oldest closed segments while the log is larger.
    pub retention_bytes: Option<u64>,
    /// `flush.policy`.
    pub flush: FlushPolicy,
    /// `preallocate`: reserve a new segment's blocks up front.
    pub preallocate: bool,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: refuse CreateTime batches older than this.
    pub timestamp_before_max_ms: Option<u64>,
    /// `message.timestamp.after.max.ms`: refuse CreateTime batches further in the future.
    pub timestamp_after_max_ms: Option<u64>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 1 << 30,
            segment_ms_max: 7 * 24 * 3600 * 1000,
            max_message_bytes: 1_048_588,
            index_interval_bytes: 4096,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            flush: FlushPolicy::Interval {
                interval_ms: 1000,
                bytes_max: 64 << 20,
            },
            preallocate: true,
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max_ms: None,
            timestamp_after_max_ms: None,
        }
    }
}

impl LogConfig {
    /// Checks the relationships the log relies on; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        // Positions in the index are u32, and a segment may exceed segment.bytes by one batch.
        if self.segment_bytes_max < 1 << 14 || self.segment_bytes_max > 2 << 30 {
            return Err(format!(
                "segment.bytes {} must be between 16384 and 2147483648",
                self.segment_bytes_max
            ));
        }
        if self.segment_ms_max == 0 {
            return Err("segment.ms must be positive".into());
        }
        if self.max_message_bytes < 64 || self.max_message_bytes > 1 << 30 {
            return Err(format!(
                "max.message.bytes {} must be between 64 and 1073741824",
                self.max_message_bytes
            ));
        }
        if self.index_interval_bytes == 0 {
            return Err("index.interval.bytes must be positive".into());
        }
        if let FlushPolicy::Interval {
            interval_ms,
            bytes_max,
        } = self.flush
        {
            if interval_ms == 0 || bytes_max == 0 {
                return Err("flush.ms and flush.bytes must be positive".into());
            }
        }
        Ok(())
    }
}

/// Bounds for one shard (one core) and everything its logs hold in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardConfig {
    /// Written data kept in memory for reads of recent offsets, across all the shard's logs.
    pub tail_cache_bytes_max: usize,
    /// Appended bytes one log may hold before they are written; appends wait beyond it.
    pub write_buffer_bytes_max: usize,
    /// Appended, unwritten bytes all the shard's logs together may hold; appends wait
    /// beyond it.
    pub shard_write_buffer_bytes_max: usize,
    /// Largest DMA buffer appends are copied into (rounded up to 4 KiB). A busy log's
    /// buffers grow to it; an idle log's shrink back to 64 KiB.
    pub write_chunk_bytes: usize,
    /// How often a log records a recovery checkpoint (bounds the scan after a crash).
    pub checkpoint_interval_ms: u64,
    /// Direct writes one log keeps in flight at once.
    pub write_depth_max: usize,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            tail_cache_bytes_max: 64 << 20,
            write_buffer_bytes_max: 16 << 20,
            shard_write_buffer_bytes_max: 256 << 20,
            write_chunk_bytes: 1 << 20,
            checkpoint_interval_ms: 60_000,
            write_depth_max: 4,
        }
    }
}

impl ShardConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.write_chunk_bytes < 4096 || self.write_chunk_bytes > 256 << 20 {
            return Err(format!(
                "write_chunk_bytes {} must be between 4096 and 256 MiB",
                self.write_chunk_bytes
            ));
        }
        if self.shard_write_buffer_bytes_max < self.write_buffer_bytes_max {
            return Err(format!(
                "shard_write_buffer_bytes_max {} must be at least write_buffer_bytes_max {}",
                self.shard_write_buffer_bytes_max, self.write_buffer_bytes_max
            ));
        }
        if self.write_depth_max == 0 || self.write_depth_max > 64 {
            return Err(format!(
                "write_depth_max {} must be between 1 and 64",
                self.write_depth_max
            ));
        }
        if self.write_buffer_bytes_max < 2 * self.write_chunk_bytes {
            return Err(format!(
                "write_buffer_bytes_max {} must be at least twice write_chunk_bytes {}",
                self.write_buffer_bytes_max, self.write_chunk_bytes
            ));
        }
        Ok(())
    }
}
