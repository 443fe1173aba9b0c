//! Crash tests: the segment file as a killed process leaves it, then cut at many byte
//! positions or with a byte flipped; reopening must keep exactly the longest valid
//! prefix of batches, with consistent indexes, and accept appends after.

mod common;

use std::path::Path;

use common::*;
use sluice_engine::{LeaderEpoch, Offset};

/// Batch layout of the crashed log: (start position, end position, next offset).
type Layout = Vec<(usize, usize, i64)>;

/// Writes batches of varied sizes, waits until they are in the file, and returns the
/// segment bytes as a crash would leave them (no clean close, no checkpoint).
fn crashed_segment() -> (Vec<u8>, Layout) {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    let bytes = run(move || async move {
        let (_m, log) = open_log(&path, small_config(), small_shard()).await;
        let mut offset = 0;
        for i in 0..24u64 {
            let count = 1 + (i as usize * 7) % 5;
            let b = tagged_batch(i, count, 20 + (i as usize * 37) % 400, i as i64 * 100);
            log.append(&b, LeaderEpoch(1)).await.unwrap();
            offset += count as i64;
        }
        log.wait_written(Offset(offset)).await.unwrap();
        let seg = path.join("t-0").join("00000000000000000000.log");
        std::fs::read(seg).unwrap()
        // The log is dropped without close: the process "dies" here.
    });
    let mut layout = Vec::new();
    let mut iter = sluice_engine::batch::BatchIter::new(&bytes);
    for (start, header, b) in iter.by_ref() {
        if header.total_bytes() == 0 || b.len() != header.total_bytes() {
            break;
        }
        layout.push((start, start + b.len(), header.next_offset().0));
    }
    assert_eq!(
        layout.len(),
        24,
        "all batches are in the file after wait_written"
    );
    let end = layout.last().unwrap().1;
    (bytes[..end].to_vec(), layout)
}

/// Opens a log whose only segment holds `bytes`; returns the batches it then reads
/// (as (base, last) ranges) and checks it takes an append.
fn reopen_with(bytes: &[u8]) -> Vec<(i64, i64)> {
    let dir = test_dir();
    let part = dir.path().join("t-0");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::write(part.join("00000000000000000000.log"), bytes).unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (m, log) = open_log(&path, small_config(), small_shard()).await;
        let end = log.log_end_offset();
        let ranges = batch_ranges(&read_all(&log, Offset(0), 700).await);
        assert_eq!(
            ranges.last().map_or(0, |r| r.1 + 1),
            end.0,
            "log end matches last batch"
        );
        // Every offset lookup starts at the right batch (index consistent with data).
        for (base, last) in &ranges {
            let r = batch_ranges(&read_all_one(&log, Offset(*last)).await);
            assert_eq!(r.first(), Some(&(*base, *last)));
        }
        let info = log
            .append(&tagged_batch(99, 2, 30, 0), LeaderEpoch(2))
            .await
            .unwrap();
        assert_eq!(info.base_offset, end);
        log.wait_written(end.plus(2)).await.unwrap();
        m.close_all().await.unwrap();
        assert_reopens_to(&path, end.plus(2));
        ranges
    })
}

async fn read_all_one(log: &sluice_engine::PartitionLog, from: Offset) -> Vec<u8> {
    let r = log
        .read(
            from,
            sluice_engine::ReadLimits {
                max_bytes: 1,
                max_offset: Offset(i64::MAX),
                min_one_batch: true,
            },
        )
        .await
        .unwrap();
    r.slices.iter().flat_map(|s| s.to_vec()).collect()
}

fn assert_reopens_to(path: &Path, end: Offset) {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        run(move || async move {
            let (_m, log) = open_log(&path, small_config(), small_shard()).await;
            assert_eq!(log.log_end_offset(), end);
        })
    })
    .join()
    .unwrap();
}

/// Expected (base, last) ranges of the first `n` batches.
fn prefix(layout: &Layout, n: usize) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut base = 0;
    for (_, _, next) in &layout[..n] {
        out.push((base, next - 1));
        base = *next;
    }
    out
}

#[test]
fn cut_at_any_position_keeps_the_whole_batches_before_it() {
    let (bytes, layout) = crashed_segment();
    // Every batch boundary, and positions inside headers and bodies.
    let mut cuts: Vec<usize> = layout
        .iter()
        .flat_map(|(s, e, _)| [*s, s + 1, s + 11, s + 60, (s + e) / 2, e - 1])
        .collect();
    cuts.push(bytes.len());
    cuts.sort();
    cuts.dedup();
    for cut in cuts.into_iter().step_by(2) {
        let whole = layout.iter().filter(|(_, e, _)| *e <= cut).count();
        let got = reopen_with(&bytes[..cut]);
        assert_eq!(got, prefix(&layout, whole), "cut at {cut}");
    }
}

#[test]
fn a_flipped_byte_cuts_the_log_at_its_batch() {
    let (bytes, layout) = crashed_segment();
    let mut positions = Vec::new();
    for (i, (s, e, _)) in layout.iter().enumerate().step_by(3) {
        // length, magic, crc, attributes, a record byte, the last byte
        positions.extend([
            (i, s + 9),
            (i, s + 16),
            (i, s + 18),
            (i, s + 22),
            (i, s + 70),
            (i, e - 1),
        ]);
        // base offset: breaks continuity
        positions.push((i, s + 7));
    }
    for (batch, pos) in positions {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x10;
        let got = reopen_with(&bad);
        assert_eq!(
            got,
            prefix(&layout, batch),
            "flip at {pos} in batch {batch}"
        );
    }
    // The leader epoch is outside the CRC and is not a structural field: the batch stays.
    let mut epoch_flip = bytes.clone();
    epoch_flip[layout[5].0 + 13] ^= 0x01;
    assert_eq!(reopen_with(&epoch_flip), prefix(&layout, 24));
}

#[test]
fn garbage_after_the_last_batch_is_dropped() {
    let (mut bytes, layout) = crashed_segment();
    bytes.extend_from_slice(&[0xab; 5000]);
    assert_eq!(reopen_with(&bytes), prefix(&layout, 24));
}

#[test]
fn damaged_index_and_checkpoint_files_are_rebuilt() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    let p2 = path.clone();
    let before = run(move || async move {
        let (m, log) = open_log(&p2, small_config(), small_shard()).await;
        for i in 0..150u64 {
            log.append(&tagged_batch(i, 2, 120, i as i64), LeaderEpoch(0))
                .await
                .unwrap();
        }
        log.wait_written(Offset(300)).await.unwrap();
        let all = read_all(&log, Offset(0), 5000).await;
        m.close_all().await.unwrap();
        all
    });
    let part = path.join("t-0");
    for entry in std::fs::read_dir(&part).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".index") {
            std::fs::write(&p, [1, 2, 3]).unwrap();
        } else if name.ends_with(".timeindex") {
            std::fs::remove_file(&p).unwrap();
        } else if name == "recovery.checkpoint" {
            std::fs::write(&p, [0u8; 44]).unwrap();
        }
    }
    run(move || async move {
        let (_m, log) = open_log(&path, small_config(), small_shard()).await;
        assert_eq!(log.log_end_offset(), Offset(300));
        assert_eq!(read_all(&log, Offset(0), 5000).await, before);
        assert_eq!(
            log.offset_for_timestamp(140).await.unwrap(),
            Some((Offset(279), 140)),
            "batch 139 holds timestamps 139 and 140"
        );
    });
}

/// Each segment file's size and where its last batch ends.
fn files_and_data_lens(part: &Path) -> Vec<(u64, usize)> {
    let mut names: Vec<_> = std::fs::read_dir(part)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap();
            let mut end = 0;
            for (start, header, b) in sluice_engine::batch::BatchIter::new(&bytes) {
                if header.total_bytes() == 0 || b.len() != header.total_bytes() {
                    break;
                }
                end = start + b.len();
            }
            (bytes.len() as u64, end)
        })
        .collect()
}

#[test]
fn a_preallocated_segment_is_extended_ahead_and_cut_back_to_its_data() {
    // Written segments are extended over their reserved space (so direct writes never
    // extend the file); a crash leaves those zeros, a clean close does not.
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    let part = path.join("t-0");
    let config = || sluice_engine::LogConfig {
        segment_bytes_max: 1 << 20,
        preallocate: true,
        ..small_config()
    };
    // Current timestamps: the reopened segment must not be old enough to roll.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let p2 = path.clone();
    let written = run(move || async move {
        let (_m, log) = open_log(&p2, config(), small_shard()).await;
        for i in 0..40u64 {
            log.append(&tagged_batch(i, 3, 100, now), LeaderEpoch(1))
                .await
                .unwrap();
        }
        log.wait_written(Offset(120)).await.unwrap();
        read_all(&log, Offset(0), 5000).await
        // Dropped without close: the process "dies" here.
    });
    let [(file_len, data_len)] = files_and_data_lens(&part)[..] else {
        panic!("one segment");
    };
    assert!(
        data_len > 0 && file_len >= 1 << 20,
        "file {file_len} extended past data {data_len}"
    );

    let p3 = path.clone();
    run(move || async move {
        let (m, log) = open_log(&p3, config(), small_shard()).await;
        assert_eq!(log.log_end_offset(), Offset(120));
        assert_eq!(read_all(&log, Offset(0), 5000).await, written);
        let info = log
            .append(&tagged_batch(99, 2, 100, now), LeaderEpoch(2))
            .await
            .unwrap();
        assert_eq!(info.base_offset, Offset(120));
        log.wait_written(Offset(122)).await.unwrap();
        m.close_all().await.unwrap();
    });
    let [(file_len, data_len)] = files_and_data_lens(&part)[..] else {
        panic!("still one segment");
    };
    assert!(data_len > 15_000, "the reopened segment took the append");
    assert_eq!(
        file_len, data_len as u64,
        "a clean close cuts the file to its data"
    );
    assert_reopens_to(&path, Offset(122));
}

/// A crash between the batches that begin an epoch and the epoch file's write leaves
/// epochs only a scan finds. Recovery writes what it found before its next checkpoint
/// stops those batches being scanned, so a clean close and a reopen after that still
/// answer where the epoch ended (the nemesis found a restarted broker answering
/// OffsetForLeaderEpoch without any epoch).
#[test]
fn epochs_found_by_recovery_outlive_the_next_checkpoint() {
    let root = test_dir();
    let dir = root.path().to_path_buf();
    let d = dir.clone();
    run(move || async move {
        let (m, log) = open_log(&d, small_config(), small_shard()).await;
        for i in 0..10 {
            let b = sluice_engine::batch::simple_batch(10, 120, 1_000 + i);
            log.append(&b, LeaderEpoch(3)).await.unwrap();
        }
        log.wait_written(Offset(100)).await.unwrap();
        std::mem::forget(m);
        std::mem::forget(log);
    });
    // The crash came before the flusher wrote the epoch file.
    let _ = std::fs::remove_file(dir.join("t-0").join("leader-epoch-checkpoint"));
    let expected = Some((LeaderEpoch(3), Offset(100)));
    for _ in 0..2 {
        let d = dir.clone();
        let found = run(move || async move {
            let (_m, log) = open_log(&d, small_config(), small_shard()).await;
            let found = log.end_offset_for_epoch(LeaderEpoch(3));
            log.close().await.unwrap();
            found
        });
        assert_eq!(found, expected);
    }
}
