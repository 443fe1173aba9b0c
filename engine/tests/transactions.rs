//! Transactions as the log keeps them: markers end a producer's transaction, the last
//! stable offset waits for open and undecided transactions, aborted transactions are
//! listed for `read_committed` fetches, and all of it survives a clean restart, a crash
//! (replayed from the segments), a truncation that cuts a marker away, and replication.
//! Retention and DeleteRecords stop at the first open transaction.

mod common;

use std::path::Path;

use common::*;
use sluice_engine::batch::{self, BatchBuilder, ProducerFields, Record};
use sluice_engine::txn::{AbortedTxn, Marker, MarkerKind};
use sluice_engine::{AppendError, LeaderEpoch, LogConfig, Offset, PartitionLog};

const EPOCH: LeaderEpoch = LeaderEpoch(1);

/// A transactional batch of `count` records from producer `pid` (epoch 0).
fn txn_batch(pid: i64, seq: i32, count: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_000)
        .producer(ProducerFields {
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: seq,
        })
        .transactional();
    for i in 0..count {
        b.push(&Record {
            key: Some(b"k"),
            value: Some(format!("{pid}:{seq}:{i}").as_bytes()),
            timestamp_ms: 1_000,
            ..Record::default()
        });
    }
    b.build()
}

fn marker(pid: i64, kind: MarkerKind) -> Marker {
    Marker {
        producer_id: pid,
        producer_epoch: 0,
        coordinator_epoch: 3,
        kind,
    }
}

fn aborted(pid: i64, first: i64, last: i64) -> AbortedTxn {
    AbortedTxn {
        producer_id: pid,
        first_offset: Offset(first),
        last_offset: Offset(last),
    }
}

/// What a `read_committed` reader of the whole log is told: the LSO with the high
/// watermark at the log end, and the aborted transactions below it.
fn committed_view(log: &PartitionLog) -> (Offset, Vec<AbortedTxn>) {
    let lso = log.last_stable_offset(log.log_end_offset());
    (lso, log.aborted_transactions(Offset::ZERO, lso, 100))
}

/// Producer 1 aborts [0, 3) with its marker at 5; producer 2 commits [3, 5) at 6;
/// producer 3 has [7, 8) open. Offset 9 on is a plain batch.
async fn write_history(log: &PartitionLog) {
    let append = |bytes: Vec<u8>| async move { log.append(&bytes, EPOCH).await.expect("append") };
    assert_eq!(append(txn_batch(1, 0, 3)).await.base_offset, Offset(0));
    assert_eq!(append(txn_batch(2, 0, 2)).await.base_offset, Offset(3));
    // Open transactions hold the LSO at the first one's start.
    assert_eq!(log.last_stable_offset(log.log_end_offset()), Offset(0));
    let abort = log.append_marker(marker(1, MarkerKind::Abort), EPOCH).await;
    assert_eq!(abort.expect("abort marker").base_offset, Offset(5));
    assert_eq!(log.last_stable_offset(Offset(6)), Offset(3));
    let commit = log
        .append_marker(marker(2, MarkerKind::Commit), EPOCH)
        .await;
    assert_eq!(commit.expect("commit marker").base_offset, Offset(6));
    // Decided, but the commit marker is not below a high watermark of 6 yet.
    assert_eq!(log.last_stable_offset(Offset(6)), Offset(3));
    assert_eq!(log.last_stable_offset(Offset(7)), Offset(7));
    assert_eq!(append(txn_batch(3, 0, 2)).await.base_offset, Offset(7));
    append(batch::simple_batch(2, 10, 2_000)).await;
    let end = log.log_end_offset();
    log.wait_durable(end).await.expect("durable");
}

fn expected_view() -> (Offset, Vec<AbortedTxn>) {
    (Offset(7), vec![aborted(1, 0, 5)])
}

#[test]
fn markers_end_transactions_and_the_view_survives_restart_and_crash() {
    let root = test_dir();
    let (dir, crashed) = (root.path().join("log"), root.path().join("crashed"));
    let (d, c) = (dir.clone(), crashed.clone());
    run(move || async move {
        let (manager, log) = open_log(&d, small_config(), small_shard()).await;
        write_history(&log).await;
        assert_eq!(committed_view(&log), expected_view());
        assert_eq!(
            log.aborted_transactions(Offset(6), Offset(100), 10),
            vec![],
            "no aborted transaction overlaps a fetch from after its marker"
        );
        // A crash: the files as they are now, before any clean close writes a
        // checkpoint covering them (recovery replays the segment).
        copy_dir(&d, &c);
        manager.close_all().await.expect("close");
    });
    for reopened in [dir, crashed] {
        run(move || async move {
            let (_m, log) = open_log(&reopened, small_config(), small_shard()).await;
            assert_eq!(
                committed_view(&log),
                expected_view(),
                "{}",
                reopened.display()
            );
            // Producer 3's transaction is still open: its marker ends it.
            log.append_marker(marker(3, MarkerKind::Abort), EPOCH)
                .await
                .expect("marker after restart");
            let (lso, list) = committed_view(&log);
            assert_eq!(lso, log.log_end_offset());
            assert_eq!(list, vec![aborted(1, 0, 5), aborted(3, 7, 11)]);
        });
    }
}

#[test]
fn clients_cannot_write_markers_and_stale_markers_change_nothing() {
    let root = test_dir();
    let dir = root.path().to_path_buf();
    run(move || async move {
        let (_m, log) = open_log(&dir, small_config(), small_shard()).await;
        let forged = marker(1, MarkerKind::Commit).to_batch(0);
        assert!(matches!(
            log.append(&forged, EPOCH).await,
            Err(AppendError::ControlBatch)
        ));
        log.append(&txn_batch(1, 0, 2), EPOCH)
            .await
            .expect("append");
        // A non-transactional write while the transaction is open.
        let mut plain = BatchBuilder::new(0).producer(ProducerFields {
            producer_id: 1,
            producer_epoch: 0,
            base_sequence: 2,
        });
        plain.push(&Record::default());
        assert!(matches!(
            log.append(&plain.build(), EPOCH).await,
            Err(AppendError::InvalidTxnState { producer_id: 1 })
        ));
        log.append_marker(marker(1, MarkerKind::Commit), EPOCH)
            .await
            .expect("commit");
        let end = log.log_end_offset();
        let older_coordinator = Marker {
            coordinator_epoch: 2,
            ..marker(1, MarkerKind::Abort)
        };
        assert!(matches!(
            log.append_marker(older_coordinator, EPOCH).await,
            Err(AppendError::CoordinatorFenced { current: 3, .. })
        ));
        let fenced = Marker {
            producer_epoch: -1,
            ..marker(1, MarkerKind::Abort)
        };
        assert!(matches!(
            log.append_marker(fenced, EPOCH).await,
            Err(AppendError::InvalidProducerEpoch { .. })
        ));
        assert_eq!(
            log.log_end_offset(),
            end,
            "a refused marker appends nothing"
        );
        assert_eq!(committed_view(&log), (end, vec![]));
    });
}

#[test]
fn a_truncation_that_cuts_a_marker_away_reopens_its_transaction() {
    let root = test_dir();
    let dir = root.path().to_path_buf();
    run(move || async move {
        let (manager, log) = open_log(&dir, small_config(), small_shard()).await;
        log.append(&txn_batch(1, 0, 3), EPOCH)
            .await
            .expect("append");
        log.append_marker(marker(1, MarkerKind::Abort), EPOCH)
            .await
            .expect("marker");
        // Replicated up to 3 only: the marker at 3 is not committed.
        assert_eq!(log.last_stable_offset(Offset(3)), Offset(0));
        log.wait_durable(Offset(4)).await.expect("durable");
        log.truncate_to(Offset(3)).await.expect("truncate");
        assert_eq!(log.last_stable_offset(Offset(3)), Offset(0), "open again");
        assert_eq!(
            log.aborted_transactions(Offset::ZERO, Offset(3), 10),
            vec![]
        );
        manager.close_all().await.expect("close");
        let (_m, log) = open_log(&dir, small_config(), small_shard()).await;
        assert_eq!(
            log.last_stable_offset(Offset(3)),
            Offset(0),
            "open after restart"
        );
        log.append_marker(marker(1, MarkerKind::Commit), EPOCH)
            .await
            .expect("the coordinator's marker again");
        assert_eq!(committed_view(&log), (Offset(4), vec![]));
    });
}

#[test]
fn a_follower_derives_the_same_view_from_the_leaders_batches() {
    let root = test_dir();
    let (ld, fd) = (root.path().join("leader"), root.path().join("follower"));
    run(move || async move {
        let (_lm, leader) = open_log(&ld, small_config(), small_shard()).await;
        write_history(&leader).await;
        let stored = read_all(&leader, Offset::ZERO, 4096).await;
        let (_fm, follower) = open_log(&fd, small_config(), small_shard()).await;
        follower
            .append_replica(&stored)
            .await
            .expect("replica append");
        assert_eq!(committed_view(&follower), expected_view());
        assert_eq!(committed_view(&leader), expected_view());
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[test]
fn retention_and_delete_records_stop_at_the_first_open_transaction() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            segment_bytes_max: 16 * 1024,
            retention_ms: Some(1),
            ..LogConfig::default()
        };
        let (m, log) = open_log(&path, config, small_shard()).await;
        let fill = |n: usize| {
            let log = &log;
            async move {
                for _ in 0..n {
                    let plain = batch::simple_batch(10, 200, 1_000);
                    log.append(&plain, EPOCH).await.expect("append");
                }
            }
        };
        fill(30).await;
        let open = log
            .append(&txn_batch(7, 0, 1), EPOCH)
            .await
            .expect("append");
        fill(30).await;
        let end = log.log_end_offset();
        log.wait_durable(end).await.expect("durable");
        assert!(log.segment_count() > 4, "several segments on each side");

        // Every closed segment is past retention; only those before the open
        // transaction's go.
        let out = log.enforce_retention(1_000_000).await.expect("retention");
        assert!(out.segments_deleted > 0, "{out:?}");
        let start = log.log_start_offset();
        assert!(
            start <= open.base_offset,
            "{start} past {}",
            open.base_offset
        );
        let again = log.enforce_retention(1_000_000).await.expect("retention");
        assert_eq!(
            again.segments_deleted, 0,
            "the open transaction holds the rest"
        );

        // DeleteRecords to the log end stops at the transaction's first offset.
        let start = log.delete_records_before(end).await.expect("delete");
        assert_eq!(start, open.base_offset);

        // Once it ends, both go on.
        log.append_marker(marker(7, MarkerKind::Commit), EPOCH)
            .await
            .expect("marker");
        let end = log.log_end_offset();
        log.wait_durable(end).await.expect("durable");
        let out = log.enforce_retention(1_000_000).await.expect("retention");
        assert!(out.segments_deleted > 0, "{out:?}");
        let start = log.delete_records_before(end).await.expect("delete");
        assert_eq!(start, end);
        m.close_all().await.expect("close");
    });
}
