//! Append, read, roll, reopen, timestamps, retention, truncation, durability levels.

mod common;

use common::*;
use sluice_engine::batch::simple_batch;
use sluice_engine::{
    AppendError, FlushPolicy, LeaderEpoch, LogConfig, LogError, Offset, ReadError, ReadLimits,
};

#[test]
fn append_assigns_offsets_and_reads_back_verbatim() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (_m, log) = open_log(&path, small_config(), small_shard()).await;
        let mut expected = Vec::new();
        for i in 0..20u64 {
            let b = tagged_batch(i, 3, 50, 1000 + i as i64 * 10);
            let info = log.append(&b, LeaderEpoch(4)).await.unwrap();
            assert_eq!(info.base_offset, Offset(i as i64 * 3));
            assert_eq!(info.last_offset, Offset(i as i64 * 3 + 2));
            assert_eq!(info.record_count, 3);
            expected.push(b);
        }
        log.wait_written(Offset(60)).await.unwrap();
        assert_eq!(log.log_end_offset(), Offset(60));
        assert_eq!(log.written_end_offset(), Offset(60));
        let all = read_all(&log, Offset(0), 1000).await;
        let ranges = batch_ranges(&all);
        assert_eq!(ranges.len(), 20);
        for (i, (base, last)) in ranges.iter().enumerate() {
            assert_eq!((*base, *last), (i as i64 * 3, i as i64 * 3 + 2));
        }
        // The stored bytes equal the producer's apart from base offset and epoch.
        let first = sluice_engine::batch::BatchIter::new(&all).next().unwrap().2;
        assert_eq!(&first[21..], &expected[0][21..]);
        assert_eq!(&first[12..16], &4i32.to_be_bytes());
        // A read from the middle of a batch starts with that batch.
        let r = log.read(Offset(31), read_limits(1)).await.unwrap();
        let ranges = batch_ranges(&r.slices.iter().flat_map(|s| s.to_vec()).collect::<Vec<_>>());
        assert_eq!(
            ranges,
            vec![(30, 32)],
            "min_one_batch gives exactly one batch"
        );
        // Without min_one_batch a budget below one batch gives nothing.
        let r = log
            .read(
                Offset(31),
                ReadLimits {
                    min_one_batch: false,
                    ..read_limits(1)
                },
            )
            .await
            .unwrap();
        assert!(r.slices.is_empty());
        // The high-watermark bound.
        let r = log
            .read(
                Offset(0),
                ReadLimits {
                    max_offset: Offset(6),
                    ..read_limits(1 << 20)
                },
            )
            .await
            .unwrap();
        let bytes: Vec<u8> = r.slices.iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(batch_ranges(&bytes), vec![(0, 2), (3, 5)]);
        // At the end: empty; past it: out of range.
        assert!(log
            .read(Offset(60), read_limits(100))
            .await
            .unwrap()
            .slices
            .is_empty());
        assert!(matches!(
            log.read(Offset(61), read_limits(100)).await,
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        log.close().await.unwrap();
    });
}

#[test]
fn bad_batches_are_refused_and_nothing_is_appended() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            max_message_bytes: 2000,
            ..small_config()
        };
        let (_m, log) = open_log(&path, config, small_shard()).await;
        let good = simple_batch(2, 10, 0);
        let mut corrupt = good.clone();
        let n = corrupt.len();
        corrupt[n - 1] ^= 0xff;
        let mut two = good.clone();
        two.extend_from_slice(&corrupt);
        assert!(matches!(
            log.append(&corrupt, LeaderEpoch(0)).await,
            Err(AppendError::Corrupt(_))
        ));
        assert!(
            matches!(
                log.append(&two, LeaderEpoch(0)).await,
                Err(AppendError::Corrupt(_))
            ),
            "all or nothing"
        );
        assert!(matches!(
            log.append(&[], LeaderEpoch(0)).await,
            Err(AppendError::Corrupt(_))
        ));
        assert!(matches!(
            log.append(&good[..40], LeaderEpoch(0)).await,
            Err(AppendError::Corrupt(_))
        ));
        let big = simple_batch(3, 1000, 0);
        assert!(matches!(
            log.append(&big, LeaderEpoch(0)).await,
            Err(AppendError::TooLarge { .. })
        ));
        assert_eq!(log.log_end_offset(), Offset(0));
        let info = log.append(&good, LeaderEpoch(0)).await.unwrap();
        assert_eq!(info.base_offset, Offset(0));
        let mut both = good.clone();
        both.extend_from_slice(&good);
        let info = log.append(&both, LeaderEpoch(0)).await.unwrap();
        assert_eq!(
            (info.base_offset, info.last_offset, info.batch_count),
            (Offset(2), Offset(5), 2)
        );
        log.close().await.unwrap();
    });
}

#[test]
fn segments_roll_by_size_and_survive_reopen() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (m, log) = open_log(&path, small_config(), small_shard()).await;
        for i in 0..600u64 {
            log.append(&tagged_batch(i, 2, 100, i as i64), LeaderEpoch(0))
                .await
                .unwrap();
        }
        log.wait_written(Offset(1200)).await.unwrap();
        assert!(
            log.segment_count() >= 8,
            "rolled into {} segments",
            log.segment_count()
        );
        let before = read_all(&log, Offset(0), 3000).await;
        assert_eq!(batch_ranges(&before).len(), 600);
        m.close_all().await.unwrap();
        let names: Vec<String> = std::fs::read_dir(path.join("t-0"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().any(|n| n == "00000000000000000000.log"),
            "{names:?}"
        );
        assert!(names.iter().any(|n| n.ends_with(".index")), "{names:?}");
        assert!(names.iter().any(|n| n.ends_with(".timeindex")), "{names:?}");

        let (m, log) = open_log(&path, small_config(), small_shard()).await;
        assert_eq!(log.log_end_offset(), Offset(1200));
        assert_eq!(
            log.segments_with_loaded_indexes(),
            1,
            "closed segments' indexes stay on disk"
        );
        let after = read_all(&log, Offset(0), 3000).await;
        assert_eq!(before, after);
        assert!(
            log.segments_with_loaded_indexes() <= 5,
            "at most four closed ones loaded"
        );
        // Appends go on where the log ended, in the same partial block.
        log.append(&tagged_batch(999, 1, 10, 5000), LeaderEpoch(1))
            .await
            .unwrap();
        log.wait_written(Offset(1201)).await.unwrap();
        let all = read_all(&log, Offset(1190), 1 << 20).await;
        assert_eq!(batch_ranges(&all).last(), Some(&(1200, 1200)));
        m.close_all().await.unwrap();
    });
}

#[test]
fn timestamp_lookups() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (_m, log) = open_log(&path, small_config(), small_shard()).await;
        // Batch i holds records at timestamps 1000 + 10 i, +1, +2.
        for i in 0..100u64 {
            log.append(
                &tagged_batch(i, 3, 60, 1000 + 10 * i as i64),
                LeaderEpoch(0),
            )
            .await
            .unwrap();
        }
        // One late batch with an old timestamp.
        log.append(&tagged_batch(100, 1, 60, 1500), LeaderEpoch(0))
            .await
            .unwrap();
        log.wait_written(Offset(301)).await.unwrap();
        assert_eq!(
            log.offset_for_timestamp(0).await.unwrap(),
            Some((Offset(0), 1000))
        );
        assert_eq!(
            log.offset_for_timestamp(1000).await.unwrap(),
            Some((Offset(0), 1000))
        );
        assert_eq!(
            log.offset_for_timestamp(1001).await.unwrap(),
            Some((Offset(1), 1001))
        );
        assert_eq!(
            log.offset_for_timestamp(1003).await.unwrap(),
            Some((Offset(3), 1010))
        );
        assert_eq!(
            log.offset_for_timestamp(1502).await.unwrap(),
            Some((Offset(152), 1502))
        );
        assert_eq!(
            log.offset_for_timestamp(1992).await.unwrap(),
            Some((Offset(299), 1992))
        );
        assert_eq!(log.offset_for_timestamp(1993).await.unwrap(), None);
        assert_eq!(
            log.max_timestamp().await.unwrap(),
            Some((Offset(299), 1992))
        );
    });
}

#[test]
fn retention_and_delete_records_move_log_start() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            retention_bytes: Some(40 * 1024),
            retention_ms: Some(1000),
            ..small_config()
        };
        let (_m, log) = open_log(&path, config, small_shard()).await;
        for i in 0..400u64 {
            log.append(&tagged_batch(i, 1, 300, 10_000 + i as i64), LeaderEpoch(0))
                .await
                .unwrap();
        }
        log.wait_written(Offset(400)).await.unwrap();
        // Rolled segments are finalized by the flusher as later ones are written.
        let size_before = log.size_bytes();
        assert!(size_before > 100 * 1024);
        let out = log.enforce_retention(0).await.unwrap();
        assert!(out.segments_deleted > 0);
        assert!(
            log.size_bytes() <= 40 * 1024 + 16 * 1024,
            "size {}",
            log.size_bytes()
        );
        let start = log.log_start_offset();
        assert!(start > Offset(0));
        assert!(matches!(
            log.read(Offset(0), read_limits(100)).await,
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        let rest = read_all(&log, start, 1 << 20).await;
        assert_eq!(batch_ranges(&rest).first().map(|r| r.0), Some(start.0));
        // Time: everything but the active segment is older than 1 s at t = 20 000.
        log.enforce_retention(20_000).await.unwrap();
        assert_eq!(log.segment_count(), 1);
        // delete_records: mid-segment, the start moves without deleting files.
        let end = log.log_end_offset();
        let new_start = log.delete_records_before(end.plus(-2)).await.unwrap();
        assert_eq!(new_start, end.plus(-2));
        let rest = read_all(&log, new_start, 1 << 20).await;
        assert_eq!(batch_ranges(&rest), vec![(398, 398), (399, 399)]);
        assert!(log.delete_records_before(end.plus(1)).await.is_err());
        log.close().await.unwrap();
        let (_m, log) = open_log(&path, small_config(), small_shard()).await;
        assert_eq!(
            log.log_start_offset(),
            new_start,
            "log start survives reopen"
        );
    });
}

#[test]
fn truncate_drops_a_suffix_and_appends_continue() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (m, log) = open_log(&path, small_config(), small_shard()).await;
        for i in 0..100u64 {
            log.append(&tagged_batch(i, 2, 150, i as i64), LeaderEpoch(0))
                .await
                .unwrap();
        }
        log.wait_written(Offset(200)).await.unwrap();
        // 101 is inside batch (100, 101): that batch goes too.
        let end = log.truncate_to(Offset(101)).await.unwrap();
        assert_eq!(end, Offset(100));
        assert_eq!(log.log_end_offset(), Offset(100));
        let all = read_all(&log, Offset(0), 1 << 20).await;
        assert_eq!(batch_ranges(&all).last(), Some(&(98, 99)));
        let info = log
            .append(&tagged_batch(7, 1, 10, 0), LeaderEpoch(2))
            .await
            .unwrap();
        assert_eq!(info.base_offset, Offset(100));
        log.wait_written(Offset(101)).await.unwrap();
        m.close_all().await.unwrap();
        let (_m, log) = open_log(&path, small_config(), small_shard()).await;
        let all = read_all(&log, Offset(0), 1 << 20).await;
        let ranges = batch_ranges(&all);
        assert_eq!(ranges.len(), 51);
        assert_eq!(ranges.last(), Some(&(100, 100)));
    });
}

#[test]
fn fsync_policy_acknowledges_after_sync() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            flush: FlushPolicy::Fsync,
            ..small_config()
        };
        let (_m, log) = open_log(&path, config, small_shard()).await;
        let mut acks = Vec::new();
        for i in 0..8u64 {
            let log = log.clone();
            acks.push(glommio::spawn_local(async move {
                let info = log
                    .append(&tagged_batch(i, 1, 100, 0), LeaderEpoch(0))
                    .await
                    .unwrap();
                log.wait_durable(info.last_offset.plus(1)).await.unwrap();
                log.synced_end_offset() > info.last_offset
            }));
        }
        for a in acks {
            assert!(a.await, "acknowledged before sync");
        }
        assert_eq!(log.synced_end_offset(), Offset(8));
    });
}

fn idempotent_batch(pid: i64, epoch: i16, seq: i32, count: usize) -> Vec<u8> {
    let mut b =
        sluice_engine::batch::BatchBuilder::new(0).producer(sluice_engine::batch::ProducerFields {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
        });
    for _ in 0..count {
        b.push(&sluice_engine::batch::Record {
            value: Some(&[7u8; 100]),
            ..Default::default()
        });
    }
    b.build()
}

#[test]
fn idempotent_producers_are_deduplicated_and_survive_restart() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    let p2 = path.clone();
    run(move || async move {
        let (m, log) = open_log(&p2, small_config(), small_shard()).await;
        let first = log
            .append(&idempotent_batch(42, 0, 0, 3), LeaderEpoch(0))
            .await
            .unwrap();
        assert_eq!((first.base_offset, first.duplicate), (Offset(0), false));
        log.append(&simple_batch(2, 10, 0), LeaderEpoch(0))
            .await
            .unwrap();
        // A retry of the first batch: not appended, answered with the original offsets.
        let retry = log
            .append(&idempotent_batch(42, 0, 0, 3), LeaderEpoch(0))
            .await
            .unwrap();
        assert_eq!(
            (retry.base_offset, retry.last_offset, retry.duplicate),
            (Offset(0), Offset(2), true)
        );
        assert_eq!(log.log_end_offset(), Offset(5));
        assert!(matches!(
            log.append(&idempotent_batch(42, 0, 4, 1), LeaderEpoch(0))
                .await,
            Err(AppendError::OutOfOrderSequence {
                expected: 3,
                got: 4,
                ..
            })
        ));
        assert!(matches!(
            log.append(&idempotent_batch(43, 0, 9, 1), LeaderEpoch(0))
                .await,
            Err(AppendError::UnknownProducerId(43))
        ));
        let next = log
            .append(&idempotent_batch(42, 0, 3, 2), LeaderEpoch(0))
            .await
            .unwrap();
        assert_eq!(next.base_offset, Offset(5));
        // Fill a few segments so the state also crosses rolls and snapshots.
        for seq in 0..60 {
            log.append(&idempotent_batch(7, 1, seq * 4, 4), LeaderEpoch(0))
                .await
                .unwrap();
        }
        log.wait_written(log.log_end_offset()).await.unwrap();
        assert!(log.segment_count() > 1);
        m.close_all().await.unwrap();
    });
    // Clean restart: the snapshot.
    let p3 = path.clone();
    run(move || async move {
        let (m, log) = open_log(&p3, small_config(), small_shard()).await;
        let retry = log
            .append(&idempotent_batch(42, 0, 3, 2), LeaderEpoch(0))
            .await
            .unwrap();
        assert_eq!((retry.base_offset, retry.duplicate), (Offset(5), true));
        let retry = log
            .append(&idempotent_batch(7, 1, 59 * 4, 4), LeaderEpoch(0))
            .await
            .unwrap();
        assert!(retry.duplicate);
        // New appends after the restart, then a crash (no close): the batches after the
        // checkpoint are replayed from the log.
        let end = log.log_end_offset();
        let info = log
            .append(&idempotent_batch(7, 1, 240, 4), LeaderEpoch(0))
            .await
            .unwrap();
        assert_eq!((info.base_offset, info.duplicate), (end, false));
        log.wait_written(log.log_end_offset()).await.unwrap();
        std::mem::forget(m);
        std::mem::forget(log);
    });
    run(move || async move {
        let (_m, log) = open_log(&path, small_config(), small_shard()).await;
        let retry = log
            .append(&idempotent_batch(7, 1, 240, 4), LeaderEpoch(0))
            .await
            .unwrap();
        assert!(
            retry.duplicate,
            "state of the batch appended before the crash"
        );
        assert!(matches!(
            log.append(&idempotent_batch(7, 0, 0, 1), LeaderEpoch(0))
                .await,
            Err(AppendError::InvalidProducerEpoch { .. })
        ));
    });
}

#[test]
fn segments_roll_by_age() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            segment_ms_max: 1,
            ..small_config()
        };
        let (_m, log) = open_log(&path, config, small_shard()).await;
        log.append(&simple_batch(1, 10, 0), LeaderEpoch(0))
            .await
            .unwrap();
        log.wait_written(Offset(1)).await.unwrap();
        // Wait until the segment is older than segment.ms (an event: the clock passing it).
        let created = std::time::Instant::now();
        while created.elapsed() < std::time::Duration::from_millis(2) {
            glommio::yield_if_needed().await;
        }
        log.append(&simple_batch(1, 10, 0), LeaderEpoch(0))
            .await
            .unwrap();
        log.wait_written(Offset(2)).await.unwrap();
        assert_eq!(log.segment_count(), 2);
    });
}

/// Many 1 MiB chunks in flight, closed while the flusher is busy: every append made
/// before close is on disk after it, and large reads from disk cross the block-aligned
/// chunk seals (batches straddling them) cleanly.
#[test]
fn close_while_flushing_keeps_every_append_and_big_reads_work() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let shard = sluice_engine::ShardConfig {
            write_chunk_bytes: 1 << 20,
            write_buffer_bytes_max: 16 << 20,
            tail_cache_bytes_max: 4 << 20,
            ..sluice_engine::ShardConfig::default()
        };
        let cfg = LogConfig {
            segment_bytes_max: 1 << 30,
            ..LogConfig::default()
        };
        let payload = tagged_batch(1, 16, 1024, 0);
        let batches = (48 << 20) / payload.len();
        {
            let (m, log) = open_log(&path, cfg.clone(), shard.clone()).await;
            for _ in 0..batches {
                log.append(&payload, LeaderEpoch(0)).await.unwrap();
            }
            assert!(
                log.written_end_offset() < log.log_end_offset(),
                "close must find work left"
            );
            m.close_all().await.unwrap();
            assert_eq!(log.written_end_offset(), log.log_end_offset());
        }
        let (_m, log) = open_log(&path, cfg, shard).await;
        let end = log.log_end_offset();
        assert_eq!(end, Offset(batches as i64 * 16));
        let mut cursor = Offset(0);
        let mut count = 0;
        while cursor < end {
            let r = log.read(cursor, read_limits(1 << 20)).await.unwrap();
            for s in &r.slices {
                for (_, h, b) in sluice_engine::batch::BatchIter::new(s) {
                    sluice_engine::batch::verify_crc(&h, b).unwrap();
                    assert_eq!(h.base_offset(), cursor);
                    cursor = h.next_offset();
                    count += 1;
                }
            }
        }
        assert_eq!(count, batches);
    });
}

#[test]
fn leader_epochs_answer_offset_for_leader_epoch_across_restart_and_truncation() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    let p2 = path.clone();
    run(move || async move {
        let (m, log) = open_log(&p2, small_config(), small_shard()).await;
        assert_eq!(log.end_offset_for_epoch(LeaderEpoch(0)), None);
        for (epoch, n) in [(1, 3), (2, 2), (5, 4)] {
            for _ in 0..n {
                log.append(&simple_batch(2, 10, 0), LeaderEpoch(epoch))
                    .await
                    .unwrap();
            }
        }
        // Offsets: epoch 1 → 0..6, epoch 2 → 6..10, epoch 5 → 10..18.
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(1)),
            Some((LeaderEpoch(1), Offset(6)))
        );
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(3)),
            Some((LeaderEpoch(2), Offset(10)))
        );
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(5)),
            Some((LeaderEpoch(5), Offset(18)))
        );
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(5)));
        log.wait_written(Offset(18)).await.unwrap();
        m.close_all().await.unwrap();
    });
    let p3 = path.clone();
    run(move || async move {
        let (m, log) = open_log(&p3, small_config(), small_shard()).await;
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(2)),
            Some((LeaderEpoch(2), Offset(10)))
        );
        log.truncate_to(Offset(10)).await.unwrap();
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(2)));
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(5)),
            Some((LeaderEpoch(2), Offset(10)))
        );
        log.append(&simple_batch(1, 10, 0), LeaderEpoch(7))
            .await
            .unwrap();
        log.wait_written(Offset(11)).await.unwrap();
        // Crash: no close. The new epoch is replayed from the log.
        std::mem::forget(m);
        std::mem::forget(log);
    });
    run(move || async move {
        let (_m, log) = open_log(&path, small_config(), small_shard()).await;
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(6)),
            Some((LeaderEpoch(2), Offset(10)))
        );
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(7)),
            Some((LeaderEpoch(7), Offset(11)))
        );
    });
}

/// Many logs appending at once stay within the shard's write-buffer budget: appends wait
/// for room instead of buffering without bound.
#[test]
fn shard_write_budget_bounds_buffered_bytes_across_logs() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move { assert_write_budget_holds(&path, "b", AppendPath::Produce).await });
}

#[test]
fn log_append_time_and_timestamp_windows() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            timestamp_type: sluice_engine::TimestampType::LogAppendTime,
            ..small_config()
        };
        let (m, log) = open_log(&path, config, small_shard()).await;
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let info = log
            .append(&simple_batch(2, 10, 5), LeaderEpoch(0))
            .await
            .unwrap();
        let t = info.log_append_time_ms.expect("append time");
        assert!(t >= before);
        log.wait_written(Offset(2)).await.unwrap();
        let stored = read_all(&log, Offset(0), 1000).await;
        let h = sluice_engine::batch::validate(&stored, 1 << 20).expect("CRC valid after rewrite");
        assert_eq!(h.max_timestamp.get(), t);
        assert_eq!(
            log.offset_for_timestamp(t).await.unwrap().map(|(o, _)| o),
            Some(Offset(0))
        );
        // CreateTime with a window: a batch from 1970 and one from the far future are refused.
        let window = LogConfig {
            timestamp_before_max_ms: Some(3_600_000),
            timestamp_after_max_ms: Some(3_600_000),
            ..small_config()
        };
        log.set_config(window).unwrap();
        assert!(matches!(
            log.append(&simple_batch(1, 10, 5), LeaderEpoch(0)).await,
            Err(AppendError::InvalidTimestamp { .. })
        ));
        assert!(matches!(
            log.append(
                &simple_batch(1, 10, before + 10 * 3_600_000),
                LeaderEpoch(0)
            )
            .await,
            Err(AppendError::InvalidTimestamp { .. })
        ));
        log.append(&simple_batch(1, 10, before), LeaderEpoch(0))
            .await
            .unwrap();
        m.close_all().await.unwrap();
    });
}

#[test]
fn segment_age_counts_from_its_first_batch_across_restarts() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    let config = LogConfig {
        segment_ms_max: 24 * 3600 * 1000,
        ..small_config()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (c1, p1) = (config.clone(), path.clone());
    run(move || async move {
        let (m, log) = open_log(&p1, c1, small_shard()).await;
        let two_days_ago = now - 2 * 24 * 3600 * 1000;
        log.append(&simple_batch(1, 10, two_days_ago), LeaderEpoch(0))
            .await
            .unwrap();
        m.close_all().await.unwrap();
    });
    run(move || async move {
        let (_m, log) = open_log(&path, config, small_shard()).await;
        log.append(&simple_batch(1, 10, now), LeaderEpoch(0))
            .await
            .unwrap();
        assert_eq!(
            log.segment_count(),
            2,
            "the restarted segment is two days old"
        );
    });
}

/// The default data dir is relative (`./sluice-data`): creating, syncing and
/// reopening partitions must work with a relative data dir too.
#[test]
fn relative_data_dirs_work() {
    let dir = test_dir();
    let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
    let target = dir.path().canonicalize().unwrap();
    let common = cwd
        .ancestors()
        .find(|a| target.starts_with(a))
        .unwrap()
        .to_path_buf();
    let ups = cwd.strip_prefix(&common).unwrap().components().count();
    let mut relative = std::path::PathBuf::new();
    for _ in 0..ups {
        relative.push("..");
    }
    relative.push(target.strip_prefix(&common).unwrap());
    relative.push("data");
    assert!(relative.is_relative());
    let r2 = relative.clone();
    run(move || async move {
        let (m, log) = open_log(&r2, small_config(), small_shard()).await;
        log.append(&simple_batch(1, 10, 0), LeaderEpoch(0))
            .await
            .unwrap();
        m.close_all().await.unwrap();
    });
    run(move || async move {
        let (_m, log) = open_log(&relative, small_config(), small_shard()).await;
        assert_eq!(log.log_end_offset(), Offset(1));
    });
}

/// A batch far larger than the open chunk, right after a small one (the chunk then holds
/// less than a block of its own): the chunk grows to take it.
#[test]
fn batches_larger_than_the_open_chunk_are_taken() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let shard = sluice_engine::ShardConfig {
            write_chunk_bytes: 1 << 20,
            ..sluice_engine::ShardConfig::default()
        };
        let config = LogConfig {
            max_message_bytes: 4 << 20,
            segment_bytes_max: 1 << 30,
            ..LogConfig::default()
        };
        let (m, log) = open_log(&path, config, shard).await;
        let mut end = 0;
        for (count, size) in [
            (1, 100),
            (4, 60_000),
            (1, 10),
            (3, 300_000),
            (1, 5),
            (2, 900_000),
        ] {
            let info = log
                .append(&tagged_batch(1, count, size, 0), LeaderEpoch(0))
                .await
                .unwrap();
            end = info.last_offset.0 + 1;
        }
        log.wait_written(Offset(end)).await.unwrap();
        let all = read_all(&log, Offset(0), 1 << 20).await;
        assert_eq!(batch_ranges(&all).len(), 6);
        m.close_all().await.unwrap();
    });
}

#[test]
fn waits_on_a_closed_log_end_instead_of_hanging() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (_m, log) = open_log(&path, small_config(), small_shard()).await;
        log.append(&tagged_batch(1, 2, 100, 0), LeaderEpoch(0))
            .await
            .unwrap();
        // A waiter for data that will never come, waiting when the log closes.
        let waiting = {
            let log = log.clone();
            glommio::spawn_local(async move { log.wait_written(Offset(10)).await })
        };
        glommio::yield_if_needed().await;
        log.close().await.unwrap();
        assert!(matches!(waiting.await, Err(LogError::Reset)));
        // Waits that start after the close: what is written is there, the rest never is.
        log.wait_written(Offset(2)).await.unwrap();
        assert!(matches!(
            log.wait_written(Offset(3)).await,
            Err(LogError::Reset)
        ));
        assert!(matches!(
            log.wait_synced(Offset(3)).await,
            Err(LogError::Reset)
        ));
    });
}
