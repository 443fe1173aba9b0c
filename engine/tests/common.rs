//! Shared helpers for the engine's integration tests.
#![allow(dead_code)]

use std::cell::Cell;
use std::future::Future;
use std::path::Path;
use std::rc::Rc;

use glommio::{LocalExecutorBuilder, Placement};
use sluice_engine::batch::{self, BatchBuilder, Record};
use sluice_engine::{
    LeaderEpoch, LogConfig, LogManager, Offset, PartitionLog, ReadLimits, ShardConfig,
    TopicPartition,
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

/// Read limits of `max_bytes`, no offset limit, at least one whole batch.
pub fn read_limits(max_bytes: usize) -> ReadLimits {
    ReadLimits {
        max_bytes,
        max_offset: Offset(i64::MAX),
        min_one_batch: true,
    }
}

/// All bytes readable from `from`, read in steps of `step_bytes`.
pub async fn read_all(log: &PartitionLog, from: Offset, step_bytes: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cursor = from;
    loop {
        let r = log
            .read(cursor, read_limits(step_bytes))
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

/// xorshift64*: small and deterministic, for seeded random tests.
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// How [`assert_write_budget_holds`] appends: as a leader (`append`) or as a follower
/// storing a leader's batches (`append_replica`).
#[derive(Debug, Clone, Copy)]
pub enum AppendPath {
    Produce,
    Replica,
}

/// Eight logs of `topic` append 200 batches of 16 records each at once through `path`; the
/// bytes waiting to be written never pass the shard's write budget (512 KiB here) plus one
/// chunk sealed by each log's last append, and are all written at the end.
pub async fn assert_write_budget_holds(data_dir: &Path, topic: &str, path: AppendPath) {
    const LOGS: i32 = 8;
    const BATCHES: i64 = 200;
    const RECORDS: usize = 16;
    let shard = ShardConfig {
        write_chunk_bytes: 64 << 10,
        write_buffer_bytes_max: 256 << 10,
        shard_write_buffer_bytes_max: 512 << 10,
        ..ShardConfig::default()
    };
    let cfg = LogConfig {
        segment_bytes_max: 1 << 30,
        ..LogConfig::default()
    };
    let c2 = cfg.clone();
    let m = Rc::new(
        LogManager::open(data_dir, shard, |_| true, move |_| c2.clone())
            .await
            .unwrap(),
    );
    let peak = Rc::new(Cell::new(0usize));
    let mut tasks = Vec::new();
    for p in 0..LOGS {
        let log = m
            .create(TopicPartition::new(topic, p), cfg.clone())
            .await
            .unwrap();
        let (m, peak) = (m.clone(), peak.clone());
        tasks.push(glommio::spawn_local(async move {
            for i in 0..BATCHES {
                let mut b = tagged_batch(p as u64, RECORDS, 1000, 0);
                match path {
                    AppendPath::Produce => {
                        log.append(&b, LeaderEpoch(0)).await.unwrap();
                    }
                    AppendPath::Replica => {
                        batch::stamp(&mut b, Offset(i * RECORDS as i64), LeaderEpoch(1));
                        log.append_replica(&b).await.unwrap();
                    }
                }
                peak.set(peak.get().max(m.shard().pending_bytes()));
            }
            log.wait_written(log.log_end_offset()).await.unwrap();
            assert_eq!(log.log_end_offset(), Offset(BATCHES * RECORDS as i64));
        }));
    }
    for t in tasks {
        t.await;
    }
    // The budget, plus at most one chunk sealed by each log's last append.
    assert!(
        peak.get() <= (512 << 10) + 8 * (64 << 10) + 8 * 20_000,
        "peak {}",
        peak.get()
    );
    assert!(peak.get() > 0);
    assert_eq!(m.shard().pending_bytes(), 0);
    m.close_all().await.unwrap();
}
