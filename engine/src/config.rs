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

/// What happens to old data (Kafka's `cleanup.policy`): `delete` removes whole segments by
/// `retention.ms` / `retention.bytes`; `compact` keeps the latest record of every key;
/// both may apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CleanupPolicy {
    #[default]
    Delete,
    Compact,
    /// `compact,delete` (or `delete,compact`).
    CompactDelete,
}

impl CleanupPolicy {
    /// Parses Kafka's comma-separated list (`delete`, `compact`, `compact,delete`,
    /// `delete,compact`); the error names the bad value.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut delete = false;
        let mut compact = false;
        for part in value.split(',').map(str::trim) {
            match part {
                "delete" if !delete => delete = true,
                "compact" if !compact => compact = true,
                _ => {
                    return Err(format!(
                        "cleanup.policy {value:?} is not delete, compact or compact,delete"
                    ))
                }
            }
        }
        Ok(match (compact, delete) {
            (true, true) => CleanupPolicy::CompactDelete,
            (true, false) => CleanupPolicy::Compact,
            _ => CleanupPolicy::Delete,
        })
    }

    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    /// Kafka's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }
}

/// `min.cleanable.dirty.ratio` in parts per million (0 ..= 1_000_000): a fraction kept as an
/// integer so configs stay `Eq`.
pub const RATIO_PPM_ONE: u32 = 1_000_000;

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
    /// `preallocate`: reserve a segment's blocks ahead of its writes, extending the file
    /// over them (cut back to the data when the segment or the log closes).
    pub preallocate: bool,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: refuse CreateTime batches older than this.
    pub timestamp_before_max_ms: Option<u64>,
    /// `message.timestamp.after.max.ms`: refuse CreateTime batches further in the future.
    pub timestamp_after_max_ms: Option<u64>,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long a tombstone survives after its segment was first
    /// cleaned.
    pub delete_retention_ms: u64,
    /// `min.compaction.lag.ms`: a segment whose newest record is younger is not cleaned.
    pub min_compaction_lag_ms: u64,
    /// `max.compaction.lag.ms`: a dirty segment whose first record is older is cleaned
    /// even below the dirty ratio.
    pub max_compaction_lag_ms: u64,
    /// `min.cleanable.dirty.ratio`, in parts per million: clean when the bytes not yet
    /// cleaned reach this share of the cleanable bytes.
    pub min_cleanable_dirty_ratio_ppm: u32,
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
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX as u64,
            min_cleanable_dirty_ratio_ppm: RATIO_PPM_ONE / 2,
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
        self.validate_compaction()
    }

    fn validate_compaction(&self) -> Result<(), String> {
        // Kafka's bounds: every lag and retention fits a Java long.
        let long_max = i64::MAX as u64;
        for (name, v) in [
            ("delete.retention.ms", self.delete_retention_ms),
            ("min.compaction.lag.ms", self.min_compaction_lag_ms),
            ("max.compaction.lag.ms", self.max_compaction_lag_ms),
        ] {
            if v > long_max {
                return Err(format!("{name} {v} is larger than {long_max}"));
            }
        }
        if self.max_compaction_lag_ms == 0 {
            return Err("max.compaction.lag.ms must be positive".into());
        }
        if self.min_compaction_lag_ms > self.max_compaction_lag_ms {
            return Err(format!(
                "min.compaction.lag.ms {} must not exceed max.compaction.lag.ms {}",
                self.min_compaction_lag_ms, self.max_compaction_lag_ms
            ));
        }
        if self.min_cleanable_dirty_ratio_ppm > RATIO_PPM_ONE {
            return Err(format!(
                "min.cleanable.dirty.ratio {} must be between 0 and 1",
                f64::from(self.min_cleanable_dirty_ratio_ppm) / f64::from(RATIO_PPM_ONE)
            ));
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
    /// Memory of the compaction key map (128-bit key hash + offset per entry, 24 bytes);
    /// one compaction runs at a time per shard. A full map cleans the prefix it covers.
    pub compaction_map_bytes_max: usize,
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
            compaction_map_bytes_max: 16 << 20,
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
        if self.compaction_map_bytes_max < 4096 || self.compaction_map_bytes_max > 1 << 30 {
            return Err(format!(
                "compaction_map_bytes_max {} must be between 4096 and 1 GiB",
                self.compaction_map_bytes_max
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
