//! Engine benchmarks: append (no fsync; group-commit fsync with 1, 8 and 64 appenders)
//! and read throughput of 1 KiB records in 16 KiB batches, each next to a raw
//! sequential `DmaFile` write of the same bytes (with fdatasync where the log syncs).

use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use glommio::io::{DmaFile, OpenOptions};
use glommio::Placement;
use sluice_benches::{open_bench_log, print_summary, record, sum_of_samples};
use sluice_engine::batch::{BatchBuilder, Record};
use sluice_engine::{
    FlushPolicy, LeaderEpoch, LogConfig, LogManager, Offset, PartitionLog, ReadLimits, ShardConfig,
};

const RECORD_BYTES: usize = 1024;
const RECORDS_PER_BATCH: usize = 16;
/// Bytes per sample for the throughput runs without fsync.
const STREAM_BYTES: u64 = 256 << 20;
/// Bytes per sample for runs that fsync.
const SYNC_BYTES: u64 = 16 << 20;
const CHUNK_BYTES: usize = 1 << 20;

fn batch() -> Vec<u8> {
    let value = vec![b'v'; RECORD_BYTES];
    let mut b = BatchBuilder::new(1_700_000_000_000);
    for i in 0..RECORDS_PER_BATCH {
        b.push(&Record {
            key: None,
            value: Some(&value),
            timestamp_ms: 1_700_000_000_000 + i as i64,
            ..Record::default()
        });
    }
    b.build()
}

/// Runs `f` on a fresh executor (pinned to CPU 0, as a broker shard would be).
fn on_executor<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    sluice_benches::on_executor(Placement::Fixed(0), f)
}

/// [`sluice_benches::sum_of_samples`] in this bench's target temporary directory.
fn samples(iters: u64, sample: impl FnMut(&Path) -> Duration) -> Duration {
    sum_of_samples(iters, env!("CARGO_TARGET_TMPDIR"), sample)
}

/// Raw baseline: the same bytes written sequentially in `write_bytes` direct writes,
/// one in flight, with fdatasync every `sync_every` writes (0: never).
async fn raw_write(
    path: std::path::PathBuf,
    total: u64,
    write_bytes: usize,
    sync_every: usize,
) -> Duration {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&path)
        .await
        .expect("open");
    file.pre_allocate(total + write_bytes as u64, true)
        .await
        .ok();
    let payload = batch();
    let start = Instant::now();
    let mut pos = 0u64;
    let mut n = 0usize;
    while pos < total {
        let mut buf = file.alloc_dma_buffer(write_bytes);
        for (i, chunk) in buf.as_bytes_mut().chunks_mut(payload.len()).enumerate() {
            let len = chunk.len();
            chunk.copy_from_slice(&payload[..len]);
            chunk[0] = i as u8;
        }
        file.write_at(buf, pos).await.expect("write");
        pos += write_bytes as u64;
        n += 1;
        if sync_every > 0 && n % sync_every == 0 {
            file.fdatasync().await.expect("sync");
        }
    }
    if sync_every > 0 {
        file.fdatasync().await.expect("sync");
    }
    let elapsed = start.elapsed();
    file.close().await.ok();
    elapsed
}

async fn open(path: &std::path::Path, flush: FlushPolicy) -> (LogManager, PartitionLog) {
    let config = LogConfig {
        flush,
        segment_bytes_max: 1 << 30,
        ..LogConfig::default()
    };
    let shard = ShardConfig {
        write_chunk_bytes: CHUNK_BYTES,
        write_buffer_bytes_max: 16 * CHUNK_BYTES,
        tail_cache_bytes_max: 64 << 20,
        ..ShardConfig::default()
    };
    open_bench_log(path, config, shard).await
}

/// Appends `total` bytes of batches with `appenders` concurrent appenders; with the
/// fsync policy each appender waits for its batch to be synced before the next.
async fn append_run(
    path: std::path::PathBuf,
    total: u64,
    appenders: usize,
    flush: FlushPolicy,
) -> Duration {
    let (m, log) = open(&path, flush).await;
    let payload = Rc::new(batch());
    let per_appender = total / appenders as u64 / payload.len() as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let log = log.clone();
        let payload = payload.clone();
        tasks.push(glommio::spawn_local(async move {
            for _ in 0..per_appender {
                let info = log.append(&payload, LeaderEpoch(0)).await.expect("append");
                if flush == FlushPolicy::Fsync {
                    log.wait_durable(info.last_offset.plus(1))
                        .await
                        .expect("durable");
                }
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    log.wait_written(log.log_end_offset())
        .await
        .expect("written");
    let elapsed = start.elapsed();
    m.close_all().await.ok();
    elapsed
}

/// Reads the whole log from offset 0 in 1 MiB fetches; `cached` leaves the tail cache
/// on, otherwise reads go to disk (the log is reopened, so the cache is empty).
async fn read_run(path: std::path::PathBuf, total: u64) -> (Duration, u64, Duration) {
    {
        let (m, log) = open(
            &path,
            FlushPolicy::Interval {
                interval_ms: 1000,
                bytes_max: 1 << 40,
            },
        )
        .await;
        let payload = batch();
        for _ in 0..total / payload.len() as u64 {
            log.append(&payload, LeaderEpoch(0)).await.expect("append");
        }
        m.close_all().await.expect("close");
    }
    let (m, log) = open(&path, FlushPolicy::Fsync).await;
    let end = log.log_end_offset();
    let start = Instant::now();
    let mut cursor = Offset(0);
    let mut bytes = 0u64;
    while cursor < end {
        let r = log
            .read(
                cursor,
                ReadLimits {
                    max_bytes: 1 << 20,
                    max_offset: end,
                    min_one_batch: true,
                },
            )
            .await
            .expect("read");
        bytes += r.bytes as u64;
        let last = r.slices.last().expect("data");
        let tail = sluice_engine::batch::BatchIter::new(last)
            .last()
            .expect("batch");
        cursor = tail.1.next_offset();
    }
    let elapsed = start.elapsed();
    m.close_all().await.ok();
    (
        elapsed,
        bytes,
        raw_read(&path.join("bench-0").join("00000000000000000000.log")).await,
    )
}

/// Raw baseline for reads: the segment file read sequentially in 1 MiB direct reads.
async fn raw_read(path: &std::path::Path) -> Duration {
    let file = DmaFile::open(path).await.expect("open segment");
    let size = file.file_size().await.expect("size");
    let start = Instant::now();
    let mut pos = 0;
    while pos < size {
        let r = file.read_at_aligned(pos, 1 << 20).await.expect("read");
        if r.is_empty() {
            break;
        }
        pos += r.len() as u64;
    }
    let elapsed = start.elapsed();
    file.close().await.ok();
    elapsed
}

fn bench_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes(STREAM_BYTES));
    g.bench_function("raw_dma_write_1MiB", |b| {
        b.iter_custom(|iters| {
            samples(iters, |dir| {
                let path = dir.join("raw");
                let t = on_executor(move || raw_write(path, STREAM_BYTES, CHUNK_BYTES, 0));
                record("raw_dma_write_1MiB", STREAM_BYTES, t);
                t
            })
        })
    });
    g.bench_function("log_append_no_fsync", |b| {
        b.iter_custom(|iters| {
            samples(iters, |dir| {
                let path = dir.to_path_buf();
                let flush = FlushPolicy::Interval {
                    interval_ms: 1000,
                    bytes_max: 1 << 40,
                };
                let t = on_executor(move || append_run(path, STREAM_BYTES, 1, flush));
                record("log_append_no_fsync", STREAM_BYTES, t);
                t
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("append_fsync");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes(SYNC_BYTES));
    for appenders in [1usize, 8, 64] {
        let raw_name = format!("raw_write_fdatasync_x{appenders}");
        g.bench_function(raw_name.as_str(), |b| {
            b.iter_custom(|iters| {
                samples(iters, |dir| {
                    let path = dir.join("raw");
                    let write = batch().len().next_multiple_of(4096) * appenders;
                    let t = on_executor(move || raw_write(path, SYNC_BYTES, write, 1));
                    record(&raw_name, SYNC_BYTES, t);
                    t
                })
            })
        });
        let name = format!("log_append_fsync_x{appenders}");
        g.bench_function(name.as_str(), |b| {
            b.iter_custom(|iters| {
                samples(iters, |dir| {
                    let path = dir.to_path_buf();
                    let t = on_executor(move || {
                        append_run(path, SYNC_BYTES, appenders, FlushPolicy::Fsync)
                    });
                    record(&name, SYNC_BYTES, t);
                    t
                })
            })
        });
    }
    g.finish();
}

fn bench_read(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes(STREAM_BYTES));
    g.bench_function("log_read_from_disk", |b| {
        b.iter_custom(|iters| {
            samples(iters, |dir| {
                let path = dir.to_path_buf();
                let (t, bytes, raw) = on_executor(move || read_run(path, STREAM_BYTES));
                record("log_read_from_disk", bytes, t);
                record("raw_dma_read_1MiB", bytes, raw);
                t
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench_append, bench_read);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_summary(&[
        ("log_append_no_fsync", "raw_dma_write_1MiB"),
        ("log_append_fsync_x1", "raw_write_fdatasync_x1"),
        ("log_append_fsync_x8", "raw_write_fdatasync_x8"),
        ("log_append_fsync_x64", "raw_write_fdatasync_x64"),
        ("log_read_from_disk", "raw_dma_read_1MiB"),
    ]);
}
