//! `sluice-engine`: per-core partition logs on glommio with direct I/O.
//!
//! What it owns: the segment files of every partition a shard owns, their sparse offset
//! and time indexes, recovery checkpoints, the in-memory tail of recently written data,
//! retention and compaction.
//!
//! Invariants:
//! - One shard owns a log; logs are `!Send` and all their state is borrowed only between
//!   awaits, never across one.
//! - Batches are stored verbatim as the producer encoded them (record batch v2); only the
//!   base offset and partition leader epoch are written into the header, and the CRC does
//!   not cover them. The one exception is compaction: a batch that loses records is
//!   re-encoded (uncompressed) with the rest, keeping its offsets, with a new CRC32C.
//! - All segment I/O is direct (O_DIRECT through glommio DMA files): buffers, positions
//!   and lengths are 4 KiB aligned; the partial last block of a segment is kept in memory
//!   and rewritten whole, never appended to on disk.
//! - Offsets: `log_start ≤ synced_end ≤ written_end ≤ log_end`. Readers see only
//!   written data, so what a consumer reads survives a crash of the process; appends are
//!   acknowledged after [`PartitionLog::wait_durable`].
//! - Recovery never panics on file content: it keeps the longest valid prefix.
//! - Memory is bounded per shard (tail cache, one compaction key map) and per log (write
//!   buffer).
//! - Compaction rewrites only closed, finalized segments; a rewritten segment keeps its
//!   base offset and last batch (so its end offset), retained records keep their offsets,
//!   and a crash at any step of the swap leaves the old or the new segment whole.

pub mod batch;
mod checkpoint;
mod chunk;
mod cleaner;
mod codec;
mod compact;
pub mod config;
mod epochs;
pub mod error;
pub mod failpoints;
mod files;
mod flusher;
pub mod index;
mod log;
mod manager;
pub mod producer;
mod recovery;
mod segment;
mod shard;
pub mod txn;
pub mod types;
pub mod watch;

pub use chunk::BatchSlice;
pub use cleaner::CompactionOutcome;
pub use codec::DecompressError;
pub use config::{
    CleanupPolicy, CompressionType, ConfigError, FlushPolicy, LogConfig, ShardConfig, TimestampType,
};
pub use error::{AppendError, LogError, ReadError};
pub use files::check_direct_io;
/// Wall-clock milliseconds since the Unix epoch: the one clock every crate reads for
/// timestamps, expiry and lag (0 if the clock is before 1970).
pub use files::now_ms;
pub use files::write_file_atomic;
pub use log::{AppendInfo, PartitionLog, ReadBatches, ReadLimits, RetentionOutcome};
pub use manager::LogManager;
pub use shard::ShardResources;
pub use types::{BrokerId, LeaderEpoch, Offset, PartitionId, TopicPartition};
