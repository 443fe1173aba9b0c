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

/// Kafka's `compression.type` of a topic: `producer` keeps each batch as the producer
/// compressed it; any other value is the codec batches are stored with, a batch sent with
/// another one being recompressed on append (as Kafka's `LogValidator` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionType {
    #[default]
    Producer,
    Uncompressed,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl CompressionType {
    /// Kafka's names.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        Ok(match value {
            "producer" => CompressionType::Producer,
            "uncompressed" => CompressionType::Uncompressed,
            "gzip" => CompressionType::Gzip,
            "snappy" => CompressionType::Snappy,
            "lz4" => CompressionType::Lz4,
            "zstd" => CompressionType::Zstd,
            _ => {
                return Err(ConfigError::CompressionType {
                    value: value.to_owned(),
                })
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CompressionType::Producer => "producer",
            CompressionType::Uncompressed => "uncompressed",
            CompressionType::Gzip => "gzip",
            CompressionType::Snappy => "snappy",
            CompressionType::Lz4 => "lz4",
            CompressionType::Zstd => "zstd",
        }
    }

    /// The batch attribute's codec id batches are stored with; `None` for `producer`.
    pub fn codec(self) -> Option<u8> {
        match self {
            CompressionType::Producer => None,
            CompressionType::Uncompressed => Some(0),
            CompressionType::Gzip => Some(1),
            CompressionType::Snappy => Some(2),
            CompressionType::Lz4 => Some(3),
            CompressionType::Zstd => Some(4),
        }
    }
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
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let mut delete = false;
        let mut compact = false;
        for part in value.split(',').map(str::trim) {
            match part {
                "delete" if !delete => delete = true,
                "compact" if !compact => compact = true,
                _ => {
                    return Err(ConfigError::CleanupPolicy {
                        value: value.to_owned(),
                    })
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
    /// `compression.type`.
    pub compression: CompressionType,
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
            compression: CompressionType::Producer,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX as u64,
            min_cleanable_dirty_ratio_ppm: RATIO_PPM_ONE / 2,
        }
    }
}

/// The smallest `segment.bytes`, Kafka's: the 14-byte overhead of a v0 record.
pub const SEGMENT_BYTES_MIN: u64 = 14;

impl LogConfig {
    /// Checks the relationships the log relies on; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Positions in the index are u32, and a segment may exceed segment.bytes by one batch.
        // The floor is Kafka's (`LegacyRecord.RECORD_OVERHEAD_V0`): a segment smaller than a
        // batch holds that one batch, and direct I/O pads its file's last block as it does
        // for any segment, so no size breaks the 4 KiB alignment.
        within(
            "segment.bytes",
            self.segment_bytes_max,
            (SEGMENT_BYTES_MIN, "14"),
            (2 << 30, "2147483648"),
        )?;
        positive("segment.ms", self.segment_ms_max)?;
        within(
            "max.message.bytes",
            u64::from(self.max_message_bytes),
            (64, "64"),
            (1 << 30, "1073741824"),
        )?;
        positive("index.interval.bytes", u64::from(self.index_interval_bytes))?;
        if let FlushPolicy::Interval {
            interval_ms,
            bytes_max,
        } = self.flush
        {
            positive("flush.ms and flush.bytes", interval_ms.min(bytes_max))?;
        }
        self.validate_compaction()
    }

    fn validate_compaction(&self) -> Result<(), ConfigError> {
        // Kafka's bounds: every lag and retention fits a Java long.
        let long_max = i64::MAX as u64;
        for (name, v) in [
            ("delete.retention.ms", self.delete_retention_ms),
            ("min.compaction.lag.ms", self.min_compaction_lag_ms),
            ("max.compaction.lag.ms", self.max_compaction_lag_ms),
        ] {
            if v > long_max {
                return Err(ConfigError::TooLarge {
                    name,
                    value: v,
                    max: long_max,
                });
            }
        }
        positive("max.compaction.lag.ms", self.max_compaction_lag_ms)?;
        if self.min_compaction_lag_ms > self.max_compaction_lag_ms {
            return Err(ConfigError::Exceeds {
                name: "min.compaction.lag.ms",
                value: self.min_compaction_lag_ms,
                limit_name: "max.compaction.lag.ms",
                limit: self.max_compaction_lag_ms,
            });
        }
        if self.min_cleanable_dirty_ratio_ppm > RATIO_PPM_ONE {
            return Err(ConfigError::DirtyRatio {
                ppm: self.min_cleanable_dirty_ratio_ppm,
            });
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
    pub fn validate(&self) -> Result<(), ConfigError> {
        within(
            "write_chunk_bytes",
            self.write_chunk_bytes as u64,
            (4096, "4096"),
            (256 << 20, "256 MiB"),
        )?;
        at_least(
            "shard_write_buffer_bytes_max",
            self.shard_write_buffer_bytes_max,
            ("", "write_buffer_bytes_max", self.write_buffer_bytes_max),
            1,
        )?;
        within(
            "write_depth_max",
            self.write_depth_max as u64,
            (1, "1"),
            (64, "64"),
        )?;
        within(
            "compaction_map_bytes_max",
            self.compaction_map_bytes_max as u64,
            (4096, "4096"),
            (1 << 30, "1 GiB"),
        )?;
        at_least(
            "write_buffer_bytes_max",
            self.write_buffer_bytes_max,
            ("twice ", "write_chunk_bytes", self.write_chunk_bytes),
            2,
        )
    }
}

/// Why a configuration is refused; each names the setting (Kafka's name where it has one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} {value} must be between {min} and {max}")]
    OutOfRange {
        name: &'static str,
        value: u64,
        min: &'static str,
        max: &'static str,
    },
    #[error("{name} must be positive")]
    NotPositive { name: &'static str },
    #[error("{name} {value} is larger than {max}")]
    TooLarge {
        name: &'static str,
        value: u64,
        max: u64,
    },
    #[error("{name} {value} must not exceed {limit_name} {limit}")]
    Exceeds {
        name: &'static str,
        value: u64,
        limit_name: &'static str,
        limit: u64,
    },
    #[error("{name} {value} must be at least {times}{other_name} {other}")]
    BelowOther {
        name: &'static str,
        value: usize,
        times: &'static str,
        other_name: &'static str,
        other: usize,
    },
    #[error("min.cleanable.dirty.ratio {} must be between 0 and 1", ratio(*.ppm))]
    DirtyRatio { ppm: u32 },
    #[error("cleanup.policy {value:?} is not delete, compact or compact,delete")]
    CleanupPolicy { value: String },
    #[error("compression.type {value:?} is not producer, uncompressed, gzip, snappy, lz4 or zstd")]
    CompressionType { value: String },
}

fn ratio(ppm: u32) -> f64 {
    f64::from(ppm) / f64::from(RATIO_PPM_ONE)
}

/// `value` within `[min, max]` (each bound with how the message writes it).
fn within(
    name: &'static str,
    value: u64,
    (min, min_text): (u64, &'static str),
    (max, max_text): (u64, &'static str),
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::OutOfRange {
            name,
            value,
            min: min_text,
            max: max_text,
        });
    }
    Ok(())
}

fn positive(name: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::NotPositive { name });
    }
    Ok(())
}

/// `value ≥ times × other`.
fn at_least(
    name: &'static str,
    value: usize,
    (times_text, other_name, other): (&'static str, &'static str, usize),
    times: usize,
) -> Result<(), ConfigError> {
    if value < times * other {
        return Err(ConfigError::BelowOther {
            name,
            value,
            times: times_text,
            other_name,
            other,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_bytes_goes_down_to_kafkas_floor() {
        let with = |segment_bytes_max| LogConfig {
            segment_bytes_max,
            ..LogConfig::default()
        };
        assert!(with(SEGMENT_BYTES_MIN).validate().is_ok());
        assert!(with(100).validate().is_ok());
        let refused = with(SEGMENT_BYTES_MIN - 1).validate().unwrap_err();
        assert!(refused.to_string().contains("segment.bytes"), "{refused}");
    }
}
