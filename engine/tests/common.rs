//! Shared helpers for the engine's integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;

use glommio::{LocalExecutorBuilder, Placement};
use sluice_engine::batch::{self, BatchBuilder, Record};
use sluice_engine::{
    LogConfig, LogManager, Offset, PartitionLog, ReadLimits, ShardConfig, TopicPartition,
};

/// Runs `f` on a fresh unpinned glommio executor (tests run in parallel on few cores).
pub fn run<F, Fut>(f: F) -> Fut::Output
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(f)
        .expect("executor starts")
        .join()
        .expect("executor joins")
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 16 * 1024,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

pub fn small_shard() -> ShardConfig {
    ShardConfig {
        tail_cache_bytes_max: 64 * 1024,
        write_buffer_bytes_max: 64 * 1024,
        shard_write_buffer_bytes_max: 1 << 20,
        write_chunk_bytes: 8192,
        checkpoint_interval_ms: 60_000,
        write_depth_max: 3,
        compaction_map_bytes_max: 1 << 20,
    }
}

/// Opens a single log `t-0` under `data_dir` through a manager.
pub async fn open_log(
    data_dir: &Path,
    config: LogConfig,
    shard: ShardConfig,
) -> (LogManager, PartitionLog) {
    let tp = TopicPartition::new("t", 0);
    let cfg = config.clone();
    let manager = LogManager::open(data_dir, shard, |_| true, move |_| cfg.clone())
        .await
        .expect("manager opens");
    let log = match manager.get(&tp) {
        Some(log) => log,
        None => manager.create(tp, config).await.expect("create"),
    };
    (manager, log)
}

/// A batch of `count` records whose values encode `tag` and the record index.
pub fn tagged_batch(tag: u64, count: usize, value_bytes: usize, ts: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(ts);
    for i in 0..count {
        let mut value = format!("{tag}:{i}:").into_bytes();
        value.resize(value_bytes.max(value.len()), b'v');
        b.push(&Record {
            key: Some(b"k"),
            value: Some(&value),
            timestamp_ms: ts + i as i64,
            ..Record::default()
        });
    }
    b.build()
}

/// All bytes readable from `from`, read in steps of `step_bytes`.
pub async fn read_all(log: &PartitionLog, from: Offset, step_bytes: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cursor = from;
    loop {
        let r = log
            .read(
                cursor,
                ReadLimits {
                    max_bytes: step_bytes,
                    max_offset: Offset(i64::MAX),
                    min_one_batch: true,
                },
            )
            .await
            .expect("read");
        if r.slices.is_empty() {
            return out;
        }
        for s in &r.slices {
            out.extend_from_slice(s);
        }
        let last = batch::BatchIter::new(&out).last().expect("batches");
        cursor = last.1.next_offset();
    }
}

/// (base offset, last offset) of each batch in `bytes`, checking CRCs.
pub fn batch_ranges(bytes: &[u8]) -> Vec<(i64, i64)> {
    let mut iter = batch::BatchIter::new(bytes);
    let out: Vec<(i64, i64)> = iter
        .by_ref()
        .map(|(_, h, b)| {
            batch::verify_crc(&h, b).expect("stored batch keeps its CRC");
            (h.base_offset().0, h.last_offset().0)
        })
        .collect();
    assert_eq!(iter.position(), bytes.len(), "trailing bytes in read");
    out
}

/// A temporary directory on the build's disk: `/tmp` may be tmpfs, which has no O_DIRECT.
pub fn test_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir")
}

/// The smallest io_uring buffer pool glommio allows (64 KiB). A busy broker's pool is
/// often used up, so its DMA allocations come from the system allocator, where a
/// zero-length buffer is refused; tests run with a small pool to take that path too.
pub const IO_MEMORY_MIN_BYTES: usize = 64 << 10;

/// Like [`run`], on an executor whose io_uring buffer pool is `io_memory_bytes`.
pub fn run_with_io_memory<F, Fut>(io_memory_bytes: usize, f: F) -> Fut::Output
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(io_memory_bytes)
        .spawn(f)
        .expect("executor starts")
        .join()
        .expect("executor joins")
}

/// Holds every block of a [`IO_MEMORY_MIN_BYTES`] io_uring buffer pool (its allocator
/// keeps metadata inside, so one pool-sized buffer would not fit), so every later DMA
/// allocation takes the system allocator's path.
pub fn exhaust_io_pool() -> Vec<glommio::io::DmaBuffer> {
    (0..IO_MEMORY_MIN_BYTES / 4096)
        .map(|_| glommio::allocate_dma_buffer(4096))
        .collect()
}
