//! Storage faults at the engine's file layer (feature `failpoints`): EIO or ENOSPC on a
//! segment write and a failed fdatasync each take the log offline — no append accepted,
//! nothing written or synced past what was before, every waiter answered `Offline`, an
//! explicit sync refused rather than retried — and reopening the directory recovers what
//! is on disk and serves again. (After a failed fsync Linux may already have dropped the
//! dirty pages: a log that retried and carried on could acknowledge data that is gone.)
//!
//! `cargo test -p sluice-engine --features failpoints --test failpoints`

mod common;

use common::*;
use sluice_engine::failpoints::{self, Site};
use sluice_engine::{FlushPolicy, LeaderEpoch, LogConfig, LogError, Offset};

fn fsync_config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Fsync,
        ..small_config()
    }
}

/// Appends `n` batches of 2 records tagged from `tag` and waits until they are synced.
async fn append_synced(log: &sluice_engine::PartitionLog, tag: u64, n: u64) -> Offset {
    let mut end = Offset(0);
    for i in 0..n {
        let info = log
            .append(&tagged_batch(tag + i, 2, 40, 1_000), LeaderEpoch(1))
            .await
            .expect("append");
        end = Offset(info.last_offset.0 + 1);
    }
    log.wait_synced(end).await.expect("synced");
    end
}

/// The log after a fault at `site` (errno `errno`) under 3 synced batches: offline, with
/// its offsets where they were; then the same directory reopened. Returns the reopened
/// log's end.
fn fault_then_reopen(site: Site, errno: i32) -> (Offset, Offset) {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (manager, log) = open_log(&path, fsync_config(), small_shard()).await;
        let before = append_synced(&log, 0, 3).await;
        failpoints::arm(site, errno, 1);
        // The append itself is accepted into memory; its write or sync fails.
        let info = log
            .append(&tagged_batch(100, 2, 40, 1_000), LeaderEpoch(1))
            .await
            .expect("append before the fault is seen");
        let end = Offset(info.last_offset.0 + 1);
        let waited = log.wait_synced(end).await;
        assert!(
            matches!(waited, Err(LogError::Offline(_))),
            "a wait across the fault: {waited:?}"
        );
        assert!(log.failure().is_some(), "the log is offline");
        assert_eq!(
            log.synced_end_offset(),
            before,
            "nothing synced past the fault"
        );
        if site == Site::SegmentWrite {
            assert_eq!(
                log.written_end_offset(),
                before,
                "nothing written past the fault"
            );
        }
        // Offline for good: no append, no retried sync.
        let refused = log
            .append(&tagged_batch(200, 1, 40, 1_000), LeaderEpoch(1))
            .await;
        assert!(refused.is_err(), "an append after the fault: {refused:?}");
        let resynced = log.sync().await;
        assert!(resynced.is_err(), "a sync after the fault: {resynced:?}");
        assert_eq!(log.synced_end_offset(), before);
        failpoints::clear();
        let _ = manager.close_all().await;
        drop(log);
        drop(manager);
        // Reopened: what is on disk, at least every synced batch, and it serves again.
        let (_manager, log) = open_log(&path, fsync_config(), small_shard()).await;
        let recovered = log.log_end_offset();
        assert!(
            recovered >= before,
            "synced batches lost: {recovered:?} < {before:?}"
        );
        assert!(recovered <= end);
        let info = log
            .append(&tagged_batch(300, 1, 40, 1_000), LeaderEpoch(1))
            .await
            .expect("append after reopening");
        log.wait_synced(Offset(info.last_offset.0 + 1))
            .await
            .expect("synced after reopening");
        let ranges = batch_ranges(&read_all(&log, Offset(0), 1 << 20).await);
        assert_eq!(ranges.first(), Some(&(0, 1)));
        assert_eq!(ranges.last().map(|r| r.1 + 1), Some(info.last_offset.0 + 1));
        (before, recovered)
    })
}

#[test]
fn a_failed_fsync_takes_the_log_offline_and_is_never_retried() {
    let (before, recovered) = fault_then_reopen(Site::SegmentSync, libc::EIO);
    eprintln!("fsync EIO: synced {before:?}, recovered {recovered:?}");
}

#[test]
fn eio_on_a_segment_write_takes_the_log_offline() {
    let (before, recovered) = fault_then_reopen(Site::SegmentWrite, libc::EIO);
    // The failed write never reached the file.
    assert_eq!(recovered, before);
}

#[test]
fn enospc_on_a_segment_write_takes_the_log_offline() {
    let (before, recovered) = fault_then_reopen(Site::SegmentWrite, libc::ENOSPC);
    assert_eq!(recovered, before);
}
