//! Compaction throughput: one pass over the closed segments of a log holding many versions
//! of N keys (100-byte values, 20 records a batch, 4 MiB segments), in MB of closed
//! segments per second, next to a raw baseline measured in the same run: the same
//! segment files read sequentially in 1 MiB direct reads and written back out in 1 MiB
//! direct writes (fdatasync per file), which is the least a rewrite must do. A pass reads
//! its dirty segments twice (key map, then rewrite), so about 0.5x is the ceiling.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use glommio::io::{DmaFile, OpenOptions};
use glommio::Placement;
use sluice_benches::{open_bench_log, print_summary, record, sum_of_samples};
use sluice_engine::batch::{BatchBuilder, Record};
use sluice_engine::{CleanupPolicy, LeaderEpoch, LogConfig, LogManager, PartitionLog, ShardConfig};

const LOG_BYTES: u64 = 32 << 20;
const SEGMENT_BYTES: u64 = 4 << 20;
const VALUE_BYTES: usize = 100;
const RECORDS_PER_BATCH: usize = 20;
const T0: u64 = 1_700_000_000_000;

/// Unbound: the development machine is shared; the figures are ratios to a baseline
/// measured on the same executor.
fn on_executor<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    sluice_benches::on_executor(Placement::Unbound, f)
}

/// [`sluice_benches::sum_of_samples`] in this bench's target temporary directory.
fn samples(iters: u64, sample: impl FnMut(&Path) -> Duration) -> Duration {
    sum_of_samples(iters, env!("CARGO_TARGET_TMPDIR"), sample)
}

async fn open(path: &Path) -> (LogManager, PartitionLog) {
    let config = LogConfig {
        segment_bytes_max: SEGMENT_BYTES,
        retention_ms: None,
        cleanup_policy: CleanupPolicy::Compact,
        min_cleanable_dirty_ratio_ppm: 0,
        ..LogConfig::default()
    };
    // The default 16 MiB key map: room for about 600k keys.
    open_bench_log(path, config, ShardConfig::default()).await
}

/// Fills a log with records cycling through `keys` keys.
async fn fill(path: &Path, keys: usize) {
    let (m, log) = open(path).await;
    let value = vec![b'v'; VALUE_BYTES];
    let mut n = 0usize;
    while log.size_bytes() < LOG_BYTES {
        let mut b = BatchBuilder::new(T0 as i64);
        let names: Vec<String> = (0..RECORDS_PER_BATCH)
            .map(|i| format!("key-{:08}", (n + i) % keys))
            .collect();
        for name in &names {
            b.push(&Record {
                key: Some(name.as_bytes()),
                value: Some(&value),
                timestamp_ms: T0 as i64,
                ..Record::default()
            });
        }
        n += RECORDS_PER_BATCH;
        log.append(&b.build(), LeaderEpoch(0))
            .await
            .expect("append");
    }
    m.close_all().await.expect("close");
}

/// The closed segment files of the log (all but the last).
fn closed_segments(path: &Path) -> Vec<PathBuf> {
    let part = path.join("bench-0");
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&part)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop();
    logs
}

/// One compaction pass: (elapsed, bytes of closed segments before, after).
async fn compact_run(path: PathBuf) -> (Duration, u64, u64) {
    let (m, log) = open(&path).await;
    let start = Instant::now();
    let outcome = log.compact(T0).await.expect("compact");
    let elapsed = start.elapsed();
    assert!(outcome.ran && outcome.segments_rewritten > 0, "{outcome:?}");
    m.close_all().await.ok();
    (elapsed, outcome.bytes_before, outcome.bytes_after)
}

/// Raw baseline: each closed segment read in 1 MiB direct reads and written to a new file
/// in 1 MiB direct writes, fdatasync per file.
async fn raw_copy(files: Vec<PathBuf>) -> (Duration, u64) {
    let start = Instant::now();
    let mut bytes = 0;
    for src in files {
        let input = DmaFile::open(&src).await.expect("open");
        let size = input.file_size().await.expect("size");
        let out_path = src.with_extension("copy");
        let output = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(&out_path)
            .await
            .expect("create");
        let mut pos = 0;
        while pos < size {
            let read = input.read_at_aligned(pos, 1 << 20).await.expect("read");
            if read.is_empty() {
                break;
            }
            let mut buf = output.alloc_dma_buffer(read.len().next_multiple_of(4096));
            buf.as_bytes_mut()[..read.len()].copy_from_slice(&read);
            output.write_at(buf, pos).await.expect("write");
            pos += read.len() as u64;
        }
        output.fdatasync().await.expect("sync");
        bytes += size;
        input.close().await.ok();
        output.close().await.ok();
    }
    (start.elapsed(), bytes)
}

fn bench_compaction(c: &mut Criterion) {
    let mut g = c.benchmark_group("compaction");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes(LOG_BYTES));
    for keys in [1_000usize, 100_000] {
        let name = format!("compact_{keys}_keys");
        let raw_name = format!("raw_read_write_{keys}_keys");
        g.bench_function(name.as_str(), |b| {
            b.iter_custom(|iters| {
                samples(iters, |dir| {
                    let path = dir.to_path_buf();
                    let p = path.clone();
                    on_executor(move || async move { fill(&p, keys).await });
                    let files = closed_segments(&path);
                    let (raw, raw_bytes) = on_executor(move || raw_copy(files));
                    record(&raw_name, raw_bytes, raw);
                    let (t, before, after) = on_executor(move || compact_run(path));
                    record(&name, before, t);
                    println!("  {name}: {before} closed bytes -> {after}");
                    t
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_compaction);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_summary(&[
        ("compact_1000_keys", "raw_read_write_1000_keys"),
        ("compact_100000_keys", "raw_read_write_100000_keys"),
    ]);
}
