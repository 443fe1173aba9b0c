//! Random operation sequences against the log (append, read, truncate, delete-records,
//! retention, close-and-reopen, segment rolls by size and age, idle periods that shrink
//! the write chunk), checked against a simple in-memory model. Batch sizes run from a few
//! bytes to `max.message.bytes`, and large batches come on a fresh log, right after a
//! roll, after an idle period and after a reopen. Each sequence prints its seed; rerun
//! one with `SLUICE_OPFUZZ_SEED=<seed>`, run more with `SLUICE_OPFUZZ_SEEDS=<n>`.

mod common;

use common::*;
use sluice_engine::batch::BatchIter;
use sluice_engine::{LeaderEpoch, LogConfig, Offset, PartitionLog};

/// The model: every batch still in the log, as the producer sent it.
#[derive(Default)]
struct Model {
    batches: Vec<(i64, i64, Vec<u8>)>, // base, last, producer bytes
    log_start: i64,
}

impl Model {
    fn next_offset(&self) -> i64 {
        self.batches.last().map_or(self.log_start, |b| b.1 + 1)
    }

    /// Index of the batch holding `offset`.
    fn holding(&self, offset: i64) -> Option<usize> {
        self.batches.iter().position(|b| b.1 >= offset)
    }
}

/// The log configuration of one sequence, drawn from its seed: tiny segments
/// (`segment.bytes` at Kafka's 14-byte floor, so every batch rolls one, or a few KiB,
/// below a direct-I/O block) or larger ones, `segment.ms` from 1 ms (every
/// append after a pause rolls) to a week, `max.message.bytes` from 16 KiB to Kafka's
/// default (so batches larger than a whole write chunk, and than the shrunk chunk of an
/// idle log, are common).
fn config(rng: &mut Rng) -> LogConfig {
    LogConfig {
        segment_bytes_max: [
            14,
            3000,
            16 << 10,
            16 << 10,
            16 << 10,
            64 << 10,
            64 << 10,
            1 << 20,
        ][rng.below(8) as usize],
        segment_ms_max: [1, 5, 7 * 24 * 3600 * 1000][rng.below(3) as usize],
        max_message_bytes: [16 * 1024, 64 * 1024, 256 * 1024, 1_048_588][rng.below(4) as usize],
        index_interval_bytes: 300,
        retention_bytes: None,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// A batch of 1..=3 records whose size is drawn from a few bytes up to
/// `max.message.bytes`: mostly small, now and then larger than a write chunk, and now
/// and then close to the largest the log accepts.
fn random_batch(rng: &mut Rng, max_message_bytes: usize) -> (usize, Vec<u8>) {
    let count = 1 + rng.below(3) as usize;
    let total = match rng.below(20) {
        0..=5 => rng.below(40) as usize,
        6..=12 => rng.below(1500) as usize,
        13..=16 => 4000 + rng.below(60_000) as usize,
        _ => max_message_bytes / 2 + rng.below(max_message_bytes as u64 / 2) as usize,
    };
    let tag = rng.next_u64();
    let ts = rng.below(1 << 20) as i64;
    let mut value_bytes = (total / count).min(max_message_bytes);
    loop {
        let b = tagged_batch(tag, count, value_bytes, ts);
        if b.len() <= max_message_bytes {
            return (count, b);
        }
        value_bytes -= (b.len() - max_message_bytes)
            .div_ceil(count)
            .min(value_bytes);
    }
}

/// Appends one producer request of `batches` and records it in the model.
async fn append(log: &PartitionLog, model: &mut Model, batches: Vec<(usize, Vec<u8>)>, at: &str) {
    let records: Vec<u8> = batches.iter().flat_map(|(_, b)| b.clone()).collect();
    let info = log
        .append(&records, LeaderEpoch(1))
        .await
        .unwrap_or_else(|e| panic!("{at}: append: {e}"));
    assert_eq!(info.base_offset.0, model.next_offset(), "{at}");
    for (count, b) in batches {
        let base = model.next_offset();
        model.batches.push((base, base + count as i64 - 1, b));
    }
}

/// A batch of at least half of `max.message.bytes` (always larger than a write chunk).
fn large_batch(rng: &mut Rng, max_message_bytes: usize) -> (usize, Vec<u8>) {
    let value = max_message_bytes / 2 + rng.below(max_message_bytes as u64 / 2) as usize;
    let mut b = tagged_batch(rng.next_u64(), 1, value, 7);
    if b.len() > max_message_bytes {
        b = tagged_batch(rng.next_u64(), 1, value - (b.len() - max_message_bytes), 7);
    }
    (1, b)
}

async fn check_read(log: &PartitionLog, model: &Model, from: i64, max_bytes: usize, seed: u64) {
    let r = log
        .read(Offset(from), read_limits(max_bytes))
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: read {from}: {e}"));
    let bytes: Vec<u8> = r.slices.iter().flat_map(|s| s.to_vec()).collect();
    assert_eq!(bytes.len(), r.bytes, "seed {seed}");
    let got: Vec<_> = BatchIter::new(&bytes).collect();
    let Some(first) = model.holding(from) else {
        assert!(
            got.is_empty(),
            "seed {seed}: read past the end returned data"
        );
        return;
    };
    assert!(
        !got.is_empty(),
        "seed {seed}: read at {from} returned nothing"
    );
    let mut total = 0;
    for (i, (_, header, stored)) in got.iter().enumerate() {
        let (base, last, sent) = &model.batches[first + i];
        assert_eq!(header.base_offset().0, *base, "seed {seed}: base offset");
        assert_eq!(header.last_offset().0, *last, "seed {seed}: last offset");
        assert_eq!(
            &stored[21..],
            &sent[21..],
            "seed {seed}: batch bytes changed"
        );
        total += stored.len();
    }
    assert!(
        total <= max_bytes || got.len() == 1,
        "seed {seed}: over budget"
    );
    // Maximal: the next batch would not have fit.
    if let Some((_, _, next)) = model.batches.get(first + got.len()) {
        assert!(
            total + next.len() > max_bytes,
            "seed {seed}: read stopped early"
        );
    }
}

async fn sequence(seed: u64, dir: std::path::PathBuf) {
    eprintln!("opfuzz seed {seed}");
    let mut rng = Rng(seed | 1);
    // Every DMA allocation of the sequence takes the system allocator's path, as on a
    // busy broker whose io_uring pool is used up (where a zero-length buffer panics).
    let _pool = exhaust_io_pool();
    let cfg = config(&mut rng);
    let max = cfg.max_message_bytes as usize;
    let mut model = Model::default();
    let (mut manager, mut log) = open_log(&dir, cfg.clone(), small_shard()).await;
    // A fresh log's first append is now and then larger than its whole chunk.
    if rng.below(2) == 0 {
        let b = large_batch(&mut rng, max);
        append(&log, &mut model, vec![b], &format!("seed {seed} first")).await;
    }
    // A segment below 16 KiB rolls at almost every append, and each roll creates and
    // syncs files: such sequences are shorter, so the test stays quick.
    let steps = if cfg.segment_bytes_max < 16 << 10 {
        40
    } else {
        160
    };
    for step in 0..steps {
        let at = format!("seed {seed} step {step}");
        match rng.below(100) {
            0..=39 => {
                let n = 1 + rng.below(3) as usize;
                let batches = (0..n).map(|_| random_batch(&mut rng, max)).collect();
                append(&log, &mut model, batches, &at).await;
            }
            40..=43 => {
                // An idle period: tiny appends each written on its own, so each flush
                // seals a nearly empty chunk and the log's chunk shrinks; then a large
                // batch meets the small chunk.
                for _ in 0..1 + rng.below(6) {
                    let b = tagged_batch(rng.next_u64(), 1, rng.below(20) as usize, 5);
                    append(&log, &mut model, vec![(1, b)], &at).await;
                    log.wait_written(Offset(model.next_offset())).await.unwrap();
                }
                let b = large_batch(&mut rng, max);
                append(&log, &mut model, vec![b], &at).await;
            }
            44..=47 => {
                // A roll by age, then a large batch as the new segment's first.
                let rolled = LogConfig {
                    segment_ms_max: 1,
                    ..cfg.clone()
                };
                log.set_config(rolled).unwrap();
                // Time passing, not synchronisation: the segment must be older than 1 ms.
                glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
                let active = log.active_segment_base();
                let base = model.next_offset();
                let b = large_batch(&mut rng, max);
                append(&log, &mut model, vec![b], &at).await;
                log.set_config(cfg.clone()).unwrap();
                // An active segment with data rolls: the large batch opens the new one.
                let now_active = log.active_segment_base();
                assert!(
                    now_active == active || now_active.0 == base,
                    "{at}: the new segment starts at {now_active:?}, not at the batch ({base})"
                );
            }
            48..=69 => {
                log.wait_written(Offset(model.next_offset())).await.unwrap();
                let span = (model.next_offset() - model.log_start + 1) as u64;
                let from = model.log_start + rng.below(span) as i64;
                let max_bytes = 1 + rng.below(6000) as usize;
                check_read(&log, &model, from, max_bytes, seed).await;
            }
            70..=77 => {
                let span = (model.next_offset() - model.log_start + 1) as u64;
                let target = model.log_start + rng.below(span) as i64;
                let end = log.truncate_to(Offset(target)).await.unwrap();
                let expected = match model.holding(target) {
                    Some(i) => {
                        let base = model.batches[i].0;
                        model.batches.truncate(i);
                        base
                    }
                    None => model.next_offset(),
                };
                assert_eq!(end.0, expected, "{at}: truncate to {target}");
                // A log start inside the removed batch moves back to the new end.
                model.log_start = model.log_start.min(end.0);
                assert_eq!(log.log_start_offset().0, model.log_start, "{at}");
            }
            78..=84 => {
                log.wait_written(Offset(model.next_offset())).await.unwrap();
                let span = (model.next_offset() - model.log_start + 1) as u64;
                let target = model.log_start + rng.below(span) as i64;
                let start = log.delete_records_before(Offset(target)).await.unwrap();
                assert_eq!(start.0, target.max(model.log_start), "{at}");
                model.log_start = start.0;
                let keep_from = model
                    .holding(model.log_start)
                    .unwrap_or(model.batches.len());
                model.batches.drain(..keep_from);
            }
            85..=90 => {
                log.wait_written(Offset(model.next_offset())).await.unwrap();
                let retained = LogConfig {
                    retention_bytes: Some(20 * 1024),
                    ..cfg.clone()
                };
                log.set_config(retained).unwrap();
                log.enforce_retention(0).await.unwrap();
                log.set_config(cfg.clone()).unwrap();
                let start = log.log_start_offset().0;
                assert!(start >= model.log_start, "{at}: log start went back");
                assert!(
                    start == model.next_offset()
                        || model.batches.iter().any(|b| b.0 <= start && start <= b.1),
                    "{at}: log start {start} is not in a batch"
                );
                model.log_start = start;
                let keep_from = model.holding(start).unwrap_or(model.batches.len());
                model.batches.drain(..keep_from);
            }
            _ => {
                manager.close_all().await.unwrap();
                let (m, l) = open_log(&dir, cfg.clone(), small_shard()).await;
                manager = m;
                log = l;
                assert_eq!(
                    log.log_end_offset().0,
                    model.next_offset(),
                    "{at}: reopen end"
                );
                assert_eq!(
                    log.log_start_offset().0,
                    model.log_start,
                    "{at}: reopen start"
                );
                // The reopened log's first append is now and then a large one.
                if rng.below(2) == 0 {
                    let b = large_batch(&mut rng, max);
                    append(&log, &mut model, vec![b], &at).await;
                }
            }
        }
    }
    log.wait_written(Offset(model.next_offset())).await.unwrap();
    let all = read_all(&log, Offset(model.log_start), 4096).await;
    let got: Vec<(i64, i64)> = BatchIter::new(&all)
        .map(|(_, h, _)| (h.base_offset().0, h.last_offset().0))
        .collect();
    let want: Vec<(i64, i64)> = model.batches.iter().map(|b| (b.0, b.1)).collect();
    assert_eq!(got, want, "seed {seed}: final contents");
    manager.close_all().await.unwrap();
}

/// Seeds to run: `SLUICE_OPFUZZ_SEED=<seed>` replays one; otherwise
/// `SLUICE_OPFUZZ_SEEDS=<n>` (default 6) seeds drawn from the clock.
fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("SLUICE_OPFUZZ_SEED") {
        return vec![s.parse().expect("SLUICE_OPFUZZ_SEED is a u64")];
    }
    let n: u64 = std::env::var("SLUICE_OPFUZZ_SEEDS")
        .map(|s| s.parse().expect("SLUICE_OPFUZZ_SEEDS is a count"))
        .unwrap_or(6);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    (0..n)
        .map(|i| now.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect()
}

#[test]
fn random_operation_sequences_match_the_model() {
    for seed in seeds() {
        let dir = test_dir();
        let path = dir.path().to_path_buf();
        run_with_io_memory(IO_MEMORY_MIN_BYTES, move || sequence(seed, path));
    }
}
