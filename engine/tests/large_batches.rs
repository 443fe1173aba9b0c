//! Batches larger than the open write chunk: on a fresh log, right after a roll (by
//! size and by age), after an idle log shrank its chunk, and through the follower's
//! append. Each runs with the io_uring buffer pool used up, as on a busy broker, where
//! glommio refuses a zero-length DMA buffer (the allocation that once panicked shards).

mod common;

use common::*;
use sluice_engine::{LeaderEpoch, LogConfig, Offset};

fn check_all(all: &[u8], expected: &[(i64, i64, Vec<u8>)]) {
    let got: Vec<_> = sluice_engine::batch::BatchIter::new(all).collect();
    assert_eq!(got.len(), expected.len(), "batch count");
    for ((_, header, stored), (base, last, sent)) in got.iter().zip(expected) {
        assert_eq!(
            (header.base_offset().0, header.last_offset().0),
            (*base, *last)
        );
        assert_eq!(&stored[21..], &sent[21..], "batch {base} bytes changed");
    }
}

/// Appends `sizes` (value bytes per record, 2 records per batch) one batch at a time;
/// returns what the model expects.
async fn append_all(
    log: &sluice_engine::PartitionLog,
    sizes: &[usize],
    from: i64,
) -> Vec<(i64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    for (i, size) in sizes.iter().enumerate() {
        let b = tagged_batch(i as u64, 2, *size, 1000 + i as i64);
        let info = log.append(&b, LeaderEpoch(1)).await.expect("append");
        assert_eq!(info.base_offset, Offset(next));
        out.push((next, next + 1, b));
        next += 2;
    }
    out
}

#[test]
fn a_batch_larger_than_the_chunk_on_a_fresh_log() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run_with_io_memory(IO_MEMORY_MIN_BYTES, move || async move {
        let _pool = exhaust_io_pool();
        // write_chunk_bytes is 8 KiB: the fresh log's open chunk is empty and too small.
        let (m, log) = open_log(&path, small_config(), small_shard()).await;
        let expected = append_all(&log, &[20_000, 100, 9_000], 0).await;
        log.wait_written(Offset(6)).await.unwrap();
        check_all(&read_all(&log, Offset(0), 1 << 20).await, &expected);
        m.close_all().await.unwrap();
        let (m, log) = open_log(&path, small_config(), small_shard()).await;
        check_all(&read_all(&log, Offset(0), 4096).await, &expected);
        m.close_all().await.unwrap();
    });
}

#[test]
fn a_large_batch_right_after_a_roll_by_size_or_age() {
    for by_age in [false, true] {
        let dir = test_dir();
        let path = dir.path().to_path_buf();
        run_with_io_memory(IO_MEMORY_MIN_BYTES, move || async move {
            let _pool = exhaust_io_pool();
            let config = LogConfig {
                segment_bytes_max: if by_age { 1 << 30 } else { 16 * 1024 },
                segment_ms_max: if by_age { 1 } else { 1 << 40 },
                ..small_config()
            };
            let (m, log) = open_log(&path, config.clone(), small_shard()).await;
            // Small, large, large, small, large: every large one rolls first and then
            // meets an empty chunk.
            let sizes = [300, 30_000, 12_000, 10, 50_000, 7, 9_000];
            let mut expected = Vec::new();
            for (i, size) in sizes.iter().enumerate() {
                if by_age {
                    // Time passing, not synchronisation: the segment must be older than
                    // segment.ms for the next append to roll it.
                    glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
                }
                expected.extend(append_all(&log, &[*size], 2 * i as i64).await);
            }
            log.wait_written(Offset(2 * sizes.len() as i64))
                .await
                .unwrap();
            assert!(log.segment_count() > 3, "the appends rolled");
            check_all(&read_all(&log, Offset(0), 3000).await, &expected);
            m.close_all().await.unwrap();
            let (m, log) = open_log(&path, config, small_shard()).await;
            check_all(&read_all(&log, Offset(0), 1 << 20).await, &expected);
            m.close_all().await.unwrap();
        });
    }
}

#[test]
fn a_large_batch_after_the_idle_chunk_shrank() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run_with_io_memory(IO_MEMORY_MIN_BYTES, move || async move {
        let _pool = exhaust_io_pool();
        let (m, log) = open_log(&path, small_config(), small_shard()).await;
        let mut expected = Vec::new();
        let mut next = 0;
        // Tiny appends each written on its own: the chunk is sealed nearly empty each time.
        for round in 0..6 {
            expected.extend(append_all(&log, &[5], next).await);
            next += 2;
            log.wait_written(Offset(next)).await.unwrap();
            if round % 2 == 1 {
                expected.extend(append_all(&log, &[40_000], next).await);
                next += 2;
                log.wait_written(Offset(next)).await.unwrap();
            }
        }
        check_all(&read_all(&log, Offset(0), 1 << 20).await, &expected);
        m.close_all().await.unwrap();
    });
}

#[test]
fn a_replicated_batch_larger_than_the_chunk_on_a_fresh_log() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run_with_io_memory(IO_MEMORY_MIN_BYTES, move || async move {
        let _pool = exhaust_io_pool();
        let (m, leader) = open_log(&path.join("leader"), small_config(), small_shard()).await;
        let expected = append_all(&leader, &[30_000, 20, 15_000], 0).await;
        leader.wait_written(Offset(6)).await.unwrap();
        let stored = read_all(&leader, Offset(0), 1 << 20).await;
        let (f, follower) = open_log(&path.join("follower"), small_config(), small_shard()).await;
        follower
            .append_replica(&stored)
            .await
            .expect("replica append");
        follower.wait_written(Offset(6)).await.unwrap();
        check_all(&read_all(&follower, Offset(0), 1 << 20).await, &expected);
        m.close_all().await.unwrap();
        f.close_all().await.unwrap();
    });
}
