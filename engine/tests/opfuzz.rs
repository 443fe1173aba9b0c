//! Random operation sequences against the log (append, read, truncate, delete-records,
//! retention, close-and-reopen, segment rolls), checked against a simple in-memory model.
//! Each sequence prints its seed; rerun one with `SLUICE_OPFUZZ_SEED=<seed>`.

mod common;

use common::*;
use sluice_engine::batch::BatchIter;
use sluice_engine::{LeaderEpoch, LogConfig, Offset, PartitionLog, ReadLimits};

/// xorshift64*: small, deterministic, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

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

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 16 * 1024,
        index_interval_bytes: 300,
        retention_bytes: None,
        retention_ms: None,
        ..LogConfig::default()
    }
}

async fn check_read(log: &PartitionLog, model: &Model, from: i64, max_bytes: usize, seed: u64) {
    let r = log
        .read(
            Offset(from),
            ReadLimits {
                max_bytes,
                max_offset: Offset(i64::MAX),
                min_one_batch: true,
            },
        )
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
    let mut model = Model::default();
    let (mut manager, mut log) = open_log(&dir, config(), small_shard()).await;
    for step in 0..160 {
        match rng.below(100) {
            0..=44 => {
                let n = 1 + rng.below(3) as usize;
                let mut records = Vec::new();
                let mut sent = Vec::new();
                for _ in 0..n {
                    let count = 1 + rng.below(5) as usize;
                    // Now and then a batch larger than a whole write chunk.
                    let value_bytes = match rng.below(20) {
                        0 => 4000 + rng.below(9000),
                        _ => rng.below(700),
                    };
                    let b = tagged_batch(
                        rng.next(),
                        count,
                        value_bytes as usize,
                        rng.below(1 << 20) as i64,
                    );
                    records.extend_from_slice(&b);
                    sent.push((count, b));
                }
                let info = log.append(&records, LeaderEpoch(1)).await.unwrap();
                assert_eq!(
                    info.base_offset.0,
                    model.next_offset(),
                    "seed {seed} step {step}"
                );
                for (count, b) in sent {
                    let base = model.next_offset();
                    model.batches.push((base, base + count as i64 - 1, b));
                }
            }
            45..=69 => {
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
                assert_eq!(
                    end.0, expected,
                    "seed {seed} step {step}: truncate to {target}"
                );
                // A log start inside the removed batch moves back to the new end.
                model.log_start = model.log_start.min(end.0);
                assert_eq!(
                    log.log_start_offset().0,
                    model.log_start,
                    "seed {seed} step {step}"
                );
            }
            78..=84 => {
                log.wait_written(Offset(model.next_offset())).await.unwrap();
                let span = (model.next_offset() - model.log_start + 1) as u64;
                let target = model.log_start + rng.below(span) as i64;
                let start = log.delete_records_before(Offset(target)).await.unwrap();
                assert_eq!(start.0, target.max(model.log_start), "seed {seed}");
                model.log_start = start.0;
                let keep_from = model
                    .holding(model.log_start)
                    .unwrap_or(model.batches.len());
                model.batches.drain(..keep_from);
            }
            85..=91 => {
                log.wait_written(Offset(model.next_offset())).await.unwrap();
                let mut c = config();
                c.retention_bytes = Some(20 * 1024);
                log.set_config(c).unwrap();
                log.enforce_retention(0).await.unwrap();
                log.set_config(config()).unwrap();
                let start = log.log_start_offset().0;
                assert!(start >= model.log_start, "seed {seed}: log start went back");
                assert!(
                    start == model.next_offset()
                        || model.batches.iter().any(|b| b.0 <= start && start <= b.1),
                    "seed {seed}: log start {start} is not in a batch"
                );
                model.log_start = start;
                let keep_from = model.holding(start).unwrap_or(model.batches.len());
                model.batches.drain(..keep_from);
            }
            _ => {
                manager.close_all().await.unwrap();
                let (m, l) = open_log(&dir, config(), small_shard()).await;
                manager = m;
                log = l;
                assert_eq!(
                    log.log_end_offset().0,
                    model.next_offset(),
                    "seed {seed}: reopen end"
                );
                assert_eq!(
                    log.log_start_offset().0,
                    model.log_start,
                    "seed {seed}: reopen start"
                );
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

#[test]
fn random_operation_sequences_match_the_model() {
    let seeds: Vec<u64> = match std::env::var("SLUICE_OPFUZZ_SEED") {
        Ok(s) => vec![s.parse().expect("seed is a u64")],
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            (0..6u64)
                .map(|i| now.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
                .collect()
        }
    };
    for seed in seeds {
        let dir = test_dir();
        let path = dir.path().to_path_buf();
        run(move || sequence(seed, path));
    }
}
