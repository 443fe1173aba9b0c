//! The follower's side of the log: `append_replica` (batches as the leader stored them) and
//! `reset_to` (restart empty at the leader's log start), across restarts and crashes.

mod common;

use common::*;
use sluice_engine::batch::{self, simple_batch, BatchBuilder, ProducerFields, Record};
use sluice_engine::{AppendError, CleanupPolicy, LeaderEpoch, LogConfig, Offset, ReadError};

/// A batch of `count` records as a leader stores it: base offset and epoch stamped.
fn stored(base: i64, epoch: i32, count: usize) -> Vec<u8> {
    let mut b = simple_batch(count, 120, 1_000 + base);
    batch::stamp(&mut b, Offset(base), LeaderEpoch(epoch));
    b
}

fn idempotent(pid: i64, seq: i32, count: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(0).producer(ProducerFields {
        producer_id: pid,
        producer_epoch: 0,
        base_sequence: seq,
    });
    for _ in 0..count {
        b.push(&Record {
            value: Some(&[3u8; 50]),
            ..Default::default()
        });
    }
    b.build()
}

/// Splits stored bytes into `(base offset, batch bytes)`.
fn batches(bytes: &[u8]) -> Vec<(i64, Vec<u8>)> {
    batch::BatchIter::new(bytes)
        .map(|(_, h, b)| (h.base_offset().0, b.to_vec()))
        .collect()
}

fn epochs_of(log: &sluice_engine::PartitionLog) -> Vec<Option<(LeaderEpoch, Offset)>> {
    (0..8)
        .map(|e| log.end_offset_for_epoch(LeaderEpoch(e)))
        .collect()
}

/// A leader's log copied batch by batch (several per call, across segment rolls) gives a
/// byte-identical follower log with the same epochs, which survives a crash and, once it
/// leads, deduplicates a producer's retry.
#[test]
fn replicated_batches_are_stored_as_the_leader_stored_them() {
    let root = test_dir();
    let (leader_dir, follower_dir) = (root.path().join("leader"), root.path().join("follower"));
    let (ld, fd) = (leader_dir.clone(), follower_dir.clone());
    let (leader_bytes, leader_epochs) = run(move || async move {
        let (_lm, leader) = open_log(&ld, small_config(), small_shard()).await;
        // Producer 77 sends every fifth batch, three records each, its sequence going on
        // across leader epochs.
        let mut seq = 0;
        for (epoch, n) in [(1, 20), (3, 30), (4, 25)] {
            for i in 0..n {
                let b = if i % 5 == 0 {
                    seq += 3;
                    idempotent(77, seq - 3, 3)
                } else {
                    simple_batch(1 + i % 4, 200, 5_000 + i as i64)
                };
                leader.append(&b, LeaderEpoch(epoch)).await.unwrap();
            }
        }
        let end = leader.log_end_offset();
        leader.wait_written(end).await.unwrap();
        let bytes = read_all(&leader, Offset(0), 1 << 20).await;
        let epochs = epochs_of(&leader);

        let (fm, follower) = open_log(&fd, small_config(), small_shard()).await;
        let all = batches(&bytes);
        for group in all.chunks(7) {
            let request: Vec<u8> = group.iter().flat_map(|(_, b)| b.clone()).collect();
            let info = follower.append_replica(&request).await.unwrap();
            assert_eq!(info.base_offset, Offset(group[0].0));
            assert!(!info.duplicate);
        }
        assert_eq!(follower.log_end_offset(), end);
        follower.wait_durable(end).await.unwrap();
        assert!(
            follower.segment_count() > 2,
            "the copy crossed segment rolls"
        );
        assert_eq!(read_all(&follower, Offset(0), 1 << 20).await, bytes);
        assert_eq!(epochs_of(&follower), epochs);
        // Crash: no close. Recovery scans what the checkpoint does not cover.
        std::mem::forget(fm);
        std::mem::forget(follower);
        (bytes, epochs)
    });
    let fd = follower_dir.clone();
    run(move || async move {
        let (_fm, follower) = open_log(&fd, small_config(), small_shard()).await;
        assert_eq!(read_all(&follower, Offset(0), 1 << 20).await, leader_bytes);
        assert_eq!(epochs_of(&follower), leader_epochs);
        assert_eq!(follower.latest_epoch(), Some(LeaderEpoch(4)));
        // Producer 77 sent 15 batches of sequences 0..3, 3..6, ...: a retry of its last
        // batch is answered with the original offsets once this replica leads.
        let last_seq = 14 * 3;
        let retry = follower
            .append(&idempotent(77, last_seq, 3), LeaderEpoch(5))
            .await
            .unwrap();
        assert!(
            retry.duplicate,
            "producer state followed the replicated batches"
        );
        let next = follower
            .append(&idempotent(77, last_seq + 3, 1), LeaderEpoch(5))
            .await
            .unwrap();
        assert!(!next.duplicate);
    });
}

/// Batches that do not continue the log, or are damaged, are refused whole and name
/// what was expected.
#[test]
fn replica_appends_refuse_gaps_overlaps_and_damage() {
    let root = test_dir();
    let dir = root.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            max_message_bytes: 4096,
            ..small_config()
        };
        let (_m, log) = open_log(&dir, config, small_shard()).await;
        log.append_replica(&stored(0, 2, 5)).await.unwrap();
        // Not at the log end (5): ahead, and behind.
        for base in [7, 3] {
            match log.append_replica(&stored(base, 2, 1)).await {
                Err(AppendError::UnexpectedOffset { expected, got }) => {
                    assert_eq!((expected, got), (Offset(5), Offset(base)));
                }
                other => panic!("base {base}: {other:?}"),
            }
        }
        // A gap between two batches of one request: nothing of it is appended.
        let mut request = stored(5, 2, 2);
        request.extend(stored(8, 2, 2));
        match log.append_replica(&request).await {
            Err(AppendError::UnexpectedOffset { expected, got }) => {
                assert_eq!((expected, got), (Offset(7), Offset(8)));
            }
            other => panic!("gap: {other:?}"),
        }
        assert_eq!(log.log_end_offset(), Offset(5));
        // A flipped byte under the CRC; a torn batch.
        let mut bad = stored(5, 2, 2);
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        assert!(matches!(
            log.append_replica(&bad).await,
            Err(AppendError::Corrupt(batch::BatchError::BadCrc { .. }))
        ));
        let torn = stored(5, 2, 2);
        assert!(matches!(
            log.append_replica(&torn[..torn.len() - 3]).await,
            Err(AppendError::Corrupt(batch::BatchError::Truncated { .. }))
        ));
        assert!(matches!(
            log.append_replica(&[]).await,
            Err(AppendError::Corrupt(batch::BatchError::Empty))
        ));
        assert_eq!(log.log_end_offset(), Offset(5));
        // Larger than max.message.bytes (4096) is the leader's business, not the follower's.
        let big = {
            let mut b = simple_batch(1, 10_000, 0);
            batch::stamp(&mut b, Offset(5), LeaderEpoch(2));
            b
        };
        assert!(matches!(
            log.append(&big, LeaderEpoch(2)).await,
            Err(AppendError::TooLarge { .. })
        ));
        let info = log.append_replica(&big).await.unwrap();
        assert_eq!((info.base_offset, info.last_offset), (Offset(5), Offset(5)));
    });
}

/// A compacted leader's log has offsets its compaction removed: a follower of a compacted
/// topic takes batches that skip ahead, never ones that go back.
#[test]
fn compacted_replicas_take_gaps_left_by_compaction() {
    let root = test_dir();
    let dir = root.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            cleanup_policy: CleanupPolicy::Compact,
            ..small_config()
        };
        let (m, log) = open_log(&dir, config.clone(), small_shard()).await;
        log.append_replica(&stored(0, 1, 3)).await.unwrap();
        let mut request = stored(10, 1, 2);
        request.extend(stored(20, 2, 1));
        let info = log.append_replica(&request).await.unwrap();
        assert_eq!(
            (info.base_offset, info.last_offset),
            (Offset(10), Offset(20))
        );
        assert!(matches!(
            log.append_replica(&stored(20, 2, 1)).await,
            Err(AppendError::UnexpectedOffset { .. })
        ));
        log.wait_written(Offset(21)).await.unwrap();
        m.close_all().await.unwrap();
        let (_m, log) = open_log(&dir, config, small_shard()).await;
        let all = read_all(&log, Offset(0), 1 << 20).await;
        assert_eq!(batch_ranges(&all), vec![(0, 2), (10, 11), (20, 20)]);
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(1)),
            Some((LeaderEpoch(1), Offset(20)))
        );
    });
}

/// A diverged suffix (a newer epoch the leader never had) is truncated and the leader's
/// batches follow; OffsetForLeaderEpoch answers from the replicated epochs throughout.
#[test]
fn epochs_of_replicated_batches_answer_offset_for_leader_epoch() {
    let root = test_dir();
    let dir = root.path().to_path_buf();
    let d2 = dir.clone();
    run(move || async move {
        let (m, log) = open_log(&d2, small_config(), small_shard()).await;
        let mut request = stored(0, 1, 6);
        request.extend(stored(6, 2, 4));
        log.append_replica(&request).await.unwrap();
        log.append_replica(&stored(10, 3, 4)).await.unwrap();
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(2)),
            Some((LeaderEpoch(2), Offset(10)))
        );
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(3)),
            Some((LeaderEpoch(3), Offset(14)))
        );
        // The leader says epoch 2 ended at 10: epoch 3 diverged.
        assert_eq!(log.truncate_to(Offset(10)).await.unwrap(), Offset(10));
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(2)));
        log.append_replica(&stored(10, 4, 3)).await.unwrap();
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(3)),
            Some((LeaderEpoch(2), Offset(10)))
        );
        log.wait_written(Offset(13)).await.unwrap();
        std::mem::forget(m);
        std::mem::forget(log);
    });
    run(move || async move {
        let (_m, log) = open_log(&dir, small_config(), small_shard()).await;
        assert_eq!(log.log_end_offset(), Offset(13));
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(1)),
            Some((LeaderEpoch(1), Offset(6)))
        );
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(3)),
            Some((LeaderEpoch(2), Offset(10)))
        );
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(4)),
            Some((LeaderEpoch(4), Offset(13)))
        );
        let all = read_all(&log, Offset(0), 1 << 20).await;
        let epochs: Vec<i32> = batch::BatchIter::new(&all)
            .map(|(_, h, _)| h.leader_epoch().0)
            .collect();
        assert_eq!(epochs, vec![1, 2, 4]);
    });
}

/// `reset_to` drops every segment and starts empty at the given offset: nothing below it
/// is readable, epochs and producers are gone, appends continue there, and the new log is
/// what a restart (clean or crashed) finds.
#[test]
fn reset_restarts_the_log_empty_at_the_leaders_start() {
    let root = test_dir();
    let dir = root.path().to_path_buf();
    let d2 = dir.clone();
    run(move || async move {
        let (m, log) = open_log(&d2, small_config(), small_shard()).await;
        for i in 0..60 {
            log.append(&simple_batch(2, 300, i), LeaderEpoch(1))
                .await
                .unwrap();
        }
        log.append(&idempotent(9, 0, 2), LeaderEpoch(1))
            .await
            .unwrap();
        assert!(log.segment_count() > 2);
        // Unwritten appends are written (then dropped) first.
        assert_eq!(log.reset_to(Offset(1_000)).await.unwrap(), Offset(1_000));
        assert_eq!(log.log_start_offset(), Offset(1_000));
        assert_eq!(log.log_end_offset(), Offset(1_000));
        assert_eq!(log.written_end_offset(), Offset(1_000));
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.latest_epoch(), None);
        assert_eq!(log.end_offset_for_epoch(LeaderEpoch(1)), None);
        assert!(matches!(
            log.read(Offset(0), read_limits(1 << 20)).await,
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        assert!(read_all(&log, Offset(1_000), 1 << 20).await.is_empty());
        let files: Vec<String> = std::fs::read_dir(d2.join("t-0"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".log"))
            .collect();
        assert!(files.is_empty(), "old segment files remain: {files:?}");
        log.append_replica(&stored(1_000, 3, 4)).await.unwrap();
        log.wait_durable(Offset(1_004)).await.unwrap();
        m.close_all().await.unwrap();
    });
    let d3 = dir.clone();
    run(move || async move {
        let (m, log) = open_log(&d3, small_config(), small_shard()).await;
        assert_eq!(log.log_start_offset(), Offset(1_000));
        assert_eq!(log.log_end_offset(), Offset(1_004));
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(3)),
            Some((LeaderEpoch(3), Offset(1_004)))
        );
        // The producer's state went with the reset: its sequence 2 is unknown now.
        assert!(matches!(
            log.append(&idempotent(9, 2, 1), LeaderEpoch(3)).await,
            Err(AppendError::UnknownProducerId(9))
        ));
        // A reset to a lower offset than the end works too; then a crash.
        log.reset_to(Offset(500)).await.unwrap();
        log.append_replica(&stored(500, 6, 2)).await.unwrap();
        log.wait_written(Offset(502)).await.unwrap();
        std::mem::forget(m);
        std::mem::forget(log);
    });
    run(move || async move {
        let (_m, log) = open_log(&dir, small_config(), small_shard()).await;
        assert_eq!(log.log_start_offset(), Offset(500));
        assert_eq!(log.log_end_offset(), Offset(502));
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(6)));
        let all = read_all(&log, Offset(500), 1 << 20).await;
        assert_eq!(batch_ranges(&all), vec![(500, 501)]);
    });
}

/// Follower appends wait for room in the same write buffers as produce appends: many logs
/// replicating at once stay within the shard's budget.
#[test]
fn replica_appends_are_bounded_by_the_write_budget() {
    let root = test_dir();
    let path = root.path().to_path_buf();
    run(move || async move { assert_write_budget_holds(&path, "r", AppendPath::Replica).await });
}
