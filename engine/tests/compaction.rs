//! Log compaction (`cleanup.policy=compact`): the latest record of every key survives
//! with its offset, tombstones go after `delete.retention.ms`, the active segment is never
//! touched, the dirty ratio and lags gate passes, reopening and a crash at every step of
//! the segment swap give the old or the new segment, and random sequences of appends,
//! passes and reopens match a model. Time is passed in explicitly (`now_ms`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use sluice_engine::batch::{self, BatchBuilder, BatchIter, Record, RecordIter};
use sluice_engine::{
    AppendError, CleanupPolicy, LeaderEpoch, LogConfig, Offset, PartitionLog, ShardConfig,
};

/// One record as the test sees it: offset, key, value (None: tombstone).
type Rec = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

const T0: u64 = 1_700_000_000_000;
const DAY_MS: u64 = 86_400_000;

fn compact_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 16 * 1024,
        index_interval_bytes: 512,
        retention_ms: None,
        cleanup_policy: CleanupPolicy::Compact,
        min_cleanable_dirty_ratio_ppm: 0,
        ..LogConfig::default()
    }
}

fn shard_with_map(bytes: usize) -> ShardConfig {
    ShardConfig {
        compaction_map_bytes_max: bytes,
        ..small_shard()
    }
}

/// A batch of keyed records (value `None`: tombstone), timestamps `ts`.
fn keyed_batch(records: &[(&[u8], Option<&[u8]>)], ts: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(ts);
    for (k, v) in records {
        b.push(&Record {
            key: Some(k),
            value: *v,
            timestamp_ms: ts,
            ..Record::default()
        });
    }
    b.build()
}

/// Appends and waits until written; returns the records with their offsets.
async fn append(log: &PartitionLog, records: &[(&[u8], Option<&[u8]>)], ts: i64) -> Vec<Rec> {
    append_batch(log, &keyed_batch(records, ts), records).await
}

/// Appends `bytes`, a batch holding `records`, and waits until written; returns the
/// records with their offsets.
async fn append_batch(
    log: &PartitionLog,
    bytes: &[u8],
    records: &[(&[u8], Option<&[u8]>)],
) -> Vec<Rec> {
    let info = log.append(bytes, LeaderEpoch(0)).await.expect("append");
    log.wait_written(info.last_offset.plus(1))
        .await
        .expect("written");
    records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            (
                info.base_offset.0 + i as i64,
                Some(k.to_vec()),
                v.map(<[u8]>::to_vec),
            )
        })
        .collect()
}

/// Appends `versions` rounds of one record per key for `keys` keys (100-byte values that
/// name key and version). Returns every record appended.
async fn write_versions(log: &PartitionLog, keys: usize, versions: usize, ts: i64) -> Vec<Rec> {
    let mut all = Vec::new();
    for v in 0..versions {
        for chunk in (0..keys).collect::<Vec<_>>().chunks(10) {
            let owned: Vec<(Vec<u8>, Vec<u8>)> = chunk
                .iter()
                .map(|k| {
                    let mut value = format!("k{k}=v{v}:").into_bytes();
                    value.resize(100, b'.');
                    (format!("k{k}").into_bytes(), value)
                })
                .collect();
            let records: Vec<(&[u8], Option<&[u8]>)> = owned
                .iter()
                .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
                .collect();
            all.extend(append(log, &records, ts).await);
        }
    }
    all
}

/// Every record readable from the log start, checking CRCs and batch framing.
async fn visible(log: &PartitionLog) -> Vec<Rec> {
    let bytes = read_all(log, log.log_start_offset(), 8192).await;
    let mut out = Vec::new();
    let mut iter = BatchIter::new(&bytes);
    for (_, header, b) in iter.by_ref() {
        batch::verify_crc(&header, b).expect("every stored batch keeps a valid CRC");
        let section = decompressed(&header, b);
        for r in RecordIter::from_records(&section, header.record_count.get()) {
            let r = r.expect("records parse");
            out.push((
                header.base_offset().0 + r.offset_delta,
                r.key.map(<[u8]>::to_vec),
                r.value.map(<[u8]>::to_vec),
            ));
        }
    }
    assert_eq!(iter.position(), bytes.len(), "whole batches only");
    out
}

/// The records section of a stored batch, decompressed (the test's codecs: gzip, lz4).
fn decompressed(header: &batch::BatchHeader, b: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let section = &b[batch::HEADER_BYTES..];
    let mut out = Vec::new();
    match header.compression() {
        0 => out.extend_from_slice(section),
        1 => {
            flate2::read::GzDecoder::new(section)
                .read_to_end(&mut out)
                .expect("gzip");
        }
        3 => {
            lz4::Decoder::new(section)
                .expect("lz4")
                .read_to_end(&mut out)
                .expect("lz4");
        }
        other => panic!("codec {other} not used here"),
    }
    out
}

/// A batch whose records section is compressed with `codec` (1 gzip, 3 lz4).
fn compress(batch_bytes: Vec<u8>, codec: u8) -> Vec<u8> {
    use std::io::Write;
    let section = &batch_bytes[batch::HEADER_BYTES..];
    let compressed = match codec {
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(section).expect("gzip");
            e.finish().expect("gzip")
        }
        3 => {
            let mut e = lz4::EncoderBuilder::new().build(Vec::new()).expect("lz4");
            e.write_all(section).expect("lz4");
            let (out, r) = e.finish();
            r.expect("lz4");
            out
        }
        other => panic!("codec {other} not used here"),
    };
    let mut out = batch_bytes[..batch::HEADER_BYTES].to_vec();
    out.extend_from_slice(&compressed);
    let length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    out[22] |= codec; // attributes, low byte
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Appends a compressed batch and waits until written; returns its records.
async fn append_compressed(
    log: &PartitionLog,
    records: &[(&[u8], Option<&[u8]>)],
    codec: u8,
) -> Vec<Rec> {
    let bytes = compress(keyed_batch(records, T0 as i64), codec);
    append_batch(log, &bytes, records).await
}

/// What compaction must leave: below `clean_end` the latest record of each key
/// (tombstones too unless `drop_tombstones`), every record at or after it.
fn expected(all: &[Rec], clean_end: i64, drop_tombstones: bool) -> Vec<Rec> {
    let mut latest: BTreeMap<&Option<Vec<u8>>, i64> = BTreeMap::new();
    for (o, k, _) in all.iter().filter(|r| r.0 < clean_end) {
        latest.insert(k, *o);
    }
    all.iter()
        .filter(|(o, k, v)| {
            *o >= clean_end || (latest.get(k) == Some(o) && !(drop_tombstones && v.is_none()))
        })
        .cloned()
        .collect()
}

fn assert_strictly_increasing(recs: &[Rec]) {
    assert!(
        recs.windows(2).all(|w| w[0].0 < w[1].0),
        "offsets strictly increase"
    );
}

#[test]
fn latest_value_of_every_key_survives_with_its_offset() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (m, log) = open_log(&path, compact_config(), small_shard()).await;
        let all = write_versions(&log, 20, 30, T0 as i64).await;
        let before = log.size_bytes();
        let active = log.active_segment_base().0;
        assert!(log.segment_count() > 3, "several closed segments");
        let active_before: Vec<Rec> = visible(&log)
            .await
            .into_iter()
            .filter(|r| r.0 >= active)
            .collect();
        let outcome = log.compact(T0).await.expect("compact");
        assert!(outcome.ran && outcome.segments_rewritten > 0, "{outcome:?}");
        assert_eq!(outcome.cleaned_end.0, active);
        let got = visible(&log).await;
        assert_strictly_increasing(&got);
        assert_eq!(got, expected(&all, active, false));
        let active_after: Vec<Rec> = got.iter().filter(|r| r.0 >= active).cloned().collect();
        assert_eq!(active_after, active_before, "active segment untouched");
        assert!(
            log.size_bytes() < before / 2,
            "{} of {before}",
            log.size_bytes()
        );
        // The latest value of every key is readable from its own offset.
        for (o, k, v) in expected(&all, active, false)
            .iter()
            .filter(|r| r.0 < active)
        {
            let r = log.read(Offset(*o), read_limits(1)).await.expect("read");
            let bytes: Vec<u8> = r.slices.iter().flat_map(|s| s.to_vec()).collect();
            let (_, h, b) = BatchIter::new(&bytes).next().expect("a batch");
            let found = RecordIter::new(b, &h)
                .map(|r| r.expect("parse"))
                .find(|r| h.base_offset().0 + r.offset_delta == *o)
                .expect("the record at its offset");
            assert_eq!(found.key.map(<[u8]>::to_vec), *k);
            assert_eq!(found.value.map(<[u8]>::to_vec), *v);
        }
        // Appends go on at the log end.
        let next = log.log_end_offset().0;
        let more = append(&log, &[(b"k0", Some(b"after"))], T0 as i64).await;
        assert_eq!(more[0].0, next);
        m.close_all().await.expect("close");
    });
}

#[test]
fn tombstones_stay_until_delete_retention_passed_since_first_cleaning() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (m, log) = open_log(&path, compact_config(), small_shard()).await;
        let mut all = append(&log, &[(b"gone", Some(b"1")), (b"kept", Some(b"1"))], 0).await;
        all.extend(append(&log, &[(b"gone", None)], 0).await);
        // Roll past the tombstone's segment with other keys.
        all.extend(write_versions(&log, 20, 10, T0 as i64).await);
        let active = log.active_segment_base().0;
        let tombstone = all[2].0;
        assert!(tombstone < active);

        assert!(log.compact(T0).await.expect("compact").ran);
        let got = visible(&log).await;
        assert_eq!(got, expected(&all, active, false));
        assert!(
            got.iter().any(|r| r.0 == tombstone && r.2.is_none()),
            "tombstone kept"
        );
        assert!(
            !got.iter().any(|r| r.0 == all[0].0),
            "older value of the key gone"
        );

        // Not yet: nothing is dirty and the tombstone is younger than delete.retention.ms.
        let early = log.compact(T0 + DAY_MS - 1).await.expect("compact");
        assert!(!early.ran, "{early:?}");
        assert!(visible(&log).await.iter().any(|r| r.0 == tombstone));

        let late = log.compact(T0 + DAY_MS).await.expect("compact");
        assert!(late.ran, "{late:?}");
        let got = visible(&log).await;
        assert_strictly_increasing(&got);
        assert_eq!(got, expected(&all, active, true));
        assert!(
            !got.iter().any(|r| r.1.as_deref() == Some(b"gone")),
            "no trace of the key"
        );
        assert!(got.iter().any(|r| r.1.as_deref() == Some(b"kept")));
        m.close_all().await.expect("close");
    });
}

/// The stored batch holding `offset`.
async fn stored_batch(log: &PartitionLog, offset: i64) -> (batch::BatchHeader, Vec<u8>) {
    let bytes = read_all(log, Offset(offset), 1).await;
    let (_, h, b) = BatchIter::new(&bytes).next().expect("batch");
    (h, b.to_vec())
}

#[test]
fn compressed_batches_are_decompressed_filtered_and_kept_whole_when_all_live() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (m, log) = open_log(&path, compact_config(), small_shard()).await;
        let mut all = append(&log, &[(b"z1", Some(b"v0"))], T0 as i64).await;
        let mixed = append_compressed(&log, &[(b"z1", Some(b"v1")), (b"z2", Some(b"v1"))], 1).await;
        let whole = append_compressed(&log, &[(b"z3", Some(b"v1")), (b"z4", None)], 3).await;
        all.extend(mixed.clone());
        all.extend(whole.clone());
        all.extend(append_compressed(&log, &[(b"z2", Some(b"v2"))], 1).await);
        all.extend(write_versions(&log, 20, 10, T0 as i64).await);
        let active = log.active_segment_base().0;
        let (_, whole_before) = stored_batch(&log, whole[0].0).await;

        assert!(log.compact(T0).await.expect("compact").ran);
        let got = visible(&log).await;
        assert_strictly_increasing(&got);
        assert_eq!(got, expected(&all, active, false));
        // The gzip batch lost z2: its z1 stays at its offset in an uncompressed batch.
        let (h, _) = stored_batch(&log, mixed[0].0).await;
        assert_eq!((h.compression(), h.record_count.get()), (0, 1));
        assert_eq!(
            (h.base_offset().0, h.last_offset().0),
            (mixed[0].0, mixed[1].0)
        );
        // The lz4 batch kept every record: byte for byte, still compressed.
        let (h, whole_after) = stored_batch(&log, whole[0].0).await;
        assert_eq!(h.compression(), 3);
        assert_eq!(whole_after, whole_before);

        // Its tombstone expires like any other: the batch is then rewritten.
        assert!(log.compact(T0 + DAY_MS).await.expect("compact").ran);
        let got = visible(&log).await;
        assert_eq!(got, expected(&all, active, true));
        let (h, _) = stored_batch(&log, whole[0].0).await;
        assert_eq!((h.compression(), h.record_count.get()), (0, 1));

        // A keyless record inside a compressed batch is found and refused.
        let keyless = {
            let mut b = BatchBuilder::new(0);
            b.push(&Record {
                key: None,
                value: Some(b"no key"),
                ..Record::default()
            });
            compress(b.build(), 1)
        };
        let err = log.append(&keyless, LeaderEpoch(0)).await.unwrap_err();
        assert!(
            matches!(&err, AppendError::KeylessRecords { record_indexes, count: 1 } if record_indexes == &[0]),
            "{err:?}"
        );
        // And a batch whose compressed records do not decode is corrupt.
        let mut garbage = compress(keyed_batch(&[(b"k", Some(b"v"))], 0), 1);
        let at = garbage.len() - 8;
        garbage[at] ^= 0xff;
        let crc = crc32c::crc32c(&garbage[21..]);
        garbage[17..21].copy_from_slice(&crc.to_be_bytes());
        let err = log.append(&garbage, LeaderEpoch(0)).await.unwrap_err();
        assert!(matches!(err, AppendError::Corrupt(_)), "{err:?}");
        m.close_all().await.expect("close");
    });
}

#[test]
fn compacted_logs_refuse_keyless_records() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (m, log) = open_log(&path, compact_config(), small_shard()).await;
        let mut b = BatchBuilder::new(0);
        b.push(&Record {
            key: Some(b"k"),
            value: Some(b"v"),
            ..Record::default()
        });
        b.push(&Record {
            key: None,
            value: Some(b"no key"),
            ..Record::default()
        });
        let keyless = b.build();
        let err = log.append(&keyless, LeaderEpoch(0)).await.unwrap_err();
        assert!(
            matches!(&err, AppendError::KeylessRecords { record_indexes, count: 1 } if record_indexes == &[1]),
            "{err:?}"
        );
        assert_eq!(log.log_end_offset(), Offset(0), "nothing appended");
        // The same batch is fine once the topic deletes instead.
        log.set_config(LogConfig {
            cleanup_policy: CleanupPolicy::Delete,
            ..compact_config()
        })
        .expect("config");
        log.append(&keyless, LeaderEpoch(0))
            .await
            .expect("delete policy takes it");
        m.close_all().await.expect("close");
    });
}

/// Appends batches of ten records (keys cycling through 400) until the log has rolled
/// `rolls` more segments.
async fn write_until_rolls(log: &PartitionLog, rolls: usize, ts: i64) -> Vec<Rec> {
    let target = log.segment_count() + rolls;
    let mut all = Vec::new();
    let mut n = 0usize;
    while log.segment_count() < target {
        let owned: Vec<(Vec<u8>, Vec<u8>)> = (0..10)
            .map(|i| {
                let k = (n + i) % 400;
                (format!("k{k}").into_bytes(), vec![b'v'; 100])
            })
            .collect();
        n += 10;
        let records: Vec<(&[u8], Option<&[u8]>)> = owned
            .iter()
            .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
            .collect();
        all.extend(append(log, &records, ts).await);
    }
    all
}

#[test]
fn dirty_ratio_and_lags_gate_passes() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            min_cleanable_dirty_ratio_ppm: 500_000,
            ..compact_config()
        };
        let (m, log) = open_log(&path, config.clone(), small_shard()).await;
        // Three segments of distinct keys: all dirty, then all clean (nothing to drop).
        write_until_rolls(&log, 3, T0 as i64).await;
        assert!(
            log.compact(T0).await.expect("compact").ran,
            "all dirty at first"
        );
        // One more closed segment: a quarter of the cleanable bytes are dirty.
        write_until_rolls(&log, 1, T0 as i64).await;
        let small = log.compact(T0).await.expect("compact");
        assert!(!small.ran, "dirty ratio not reached: {small:?}");
        // Five more: well over half.
        write_until_rolls(&log, 5, T0 as i64).await;
        assert!(log.compact(T0).await.expect("compact").ran);

        // min.compaction.lag.ms holds back segments with recent records.
        log.set_config(LogConfig {
            min_compaction_lag_ms: 1_000,
            min_cleanable_dirty_ratio_ppm: 0,
            ..config.clone()
        })
        .expect("config");
        write_until_rolls(&log, 2, T0 as i64).await;
        let lagging = log.compact(T0 + 500).await.expect("compact");
        assert!(!lagging.ran, "{lagging:?}");
        assert!(log.compact(T0 + 1_000).await.expect("compact").ran);

        // max.compaction.lag.ms forces a pass the ratio (1.0: never) would not allow.
        log.set_config(LogConfig {
            min_cleanable_dirty_ratio_ppm: 1_000_000,
            max_compaction_lag_ms: 60_000,
            ..config.clone()
        })
        .expect("config");
        write_until_rolls(&log, 1, T0 as i64).await;
        assert!(!log.compact(T0 + 60_000).await.expect("compact").ran);
        assert!(log.compact(T0 + 60_001).await.expect("compact").ran);

        // A delete-only log is never compacted.
        log.set_config(LogConfig {
            cleanup_policy: CleanupPolicy::Delete,
            ..compact_config()
        })
        .expect("config");
        write_until_rolls(&log, 2, T0 as i64).await;
        assert!(!log.compact(T0).await.expect("compact").ran);
        m.close_all().await.expect("close");
    });
}

#[test]
fn compact_only_logs_are_not_deleted_by_retention() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            retention_ms: Some(1),
            retention_bytes: Some(1),
            ..compact_config()
        };
        let (m, log) = open_log(&path, config.clone(), small_shard()).await;
        write_versions(&log, 20, 10, 1).await;
        let segments = log.segment_count();
        let outcome = log.enforce_retention(T0).await.expect("retention");
        assert_eq!(outcome.segments_deleted, 0);
        assert_eq!(log.segment_count(), segments);
        log.set_config(LogConfig {
            cleanup_policy: CleanupPolicy::CompactDelete,
            ..config
        })
        .expect("config");
        assert!(
            log.enforce_retention(T0)
                .await
                .expect("retention")
                .segments_deleted
                > 0
        );
        m.close_all().await.expect("close");
    });
}

#[test]
fn a_full_map_cleans_the_prefix_it_covers_and_the_rest_next_time() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        // About 150 keys fit; 400 keys do not.
        let (m, log) = open_log(&path, compact_config(), shard_with_map(4096)).await;
        let all = write_versions(&log, 400, 5, T0 as i64).await;
        let active = log.active_segment_base().0;
        let first = log.compact(T0).await.expect("compact");
        assert!(first.ran && first.cleaned_end.0 < active, "{first:?}");
        let got = visible(&log).await;
        assert_strictly_increasing(&got);
        // Nothing newer than the covered prefix was dropped.
        let covered = first.cleaned_end.0;
        for r in all.iter().filter(|r| r.0 >= covered) {
            assert!(got.contains(r), "record at {} kept", r.0);
        }
        let mut passes = 1;
        while log.compact(T0).await.expect("compact").cleaned_end.0 < active {
            passes += 1;
            assert!(passes < 50, "every pass makes progress");
        }
        assert_eq!(visible(&log).await, expected(&all, active, false));
        m.close_all().await.expect("close");
    });
}

#[test]
fn reopen_after_compaction_keeps_contents_and_clean_state() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (m, log) = open_log(&path, compact_config(), small_shard()).await;
        write_versions(&log, 20, 30, T0 as i64).await;
        assert!(log.compact(T0).await.expect("compact").ran);
        let got = visible(&log).await;
        let end = log.log_end_offset();
        m.close_all().await.expect("close");

        let (m, log) = open_log(&path, compact_config(), small_shard()).await;
        assert_eq!(log.log_end_offset(), end);
        assert_eq!(visible(&log).await, got);
        let again = log.compact(T0).await.expect("compact");
        assert!(
            !again.ran,
            "the clean point survived the restart: {again:?}"
        );
        let next = append(&log, &[(b"k1", Some(b"new"))], T0 as i64).await;
        assert_eq!(next[0].0, end.0);
        m.close_all().await.expect("close");
    });
}

/// Files of a partition directory: name → bytes.
type Files = BTreeMap<String, Vec<u8>>;

/// Files of the partition directory, by name.
fn snapshot(dir: &Path) -> Files {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| {
            let e = e.expect("entry");
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("read"))
        })
        .collect()
}

fn restore(dir: &Path, files: &Files) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("dir");
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).expect("write");
    }
}

/// The files of partition `t-0` under `path` and its visible records, before and after
/// one compaction pass: first `rounds[0]` versions of 20 keys are written, then for each
/// further round a pass runs and that many more versions are written.
fn files_around_a_pass(
    path: &Path,
    rounds: &'static [usize],
) -> (Files, Files, Vec<Rec>, Vec<Rec>) {
    let path = path.to_path_buf();
    run(move || async move {
        let part = path.join("t-0");
        let (m, log) = open_log(&path, compact_config(), small_shard()).await;
        for (i, versions) in rounds.iter().enumerate() {
            if i > 0 {
                assert!(log.compact(T0).await.expect("compact").ran);
            }
            write_versions(&log, 20, *versions, T0 as i64).await;
        }
        let old_recs = visible(&log).await;
        m.close_all().await.expect("close");
        let before = snapshot(&part);
        let (m, log) = open_log(&path, compact_config(), small_shard()).await;
        assert!(log.compact(T0).await.expect("compact").ran);
        let new_recs = visible(&log).await;
        m.close_all().await.expect("close");
        (before, snapshot(&part), old_recs, new_recs)
    })
}

/// After a crash at `step` and a reopen: the log shows `want`, no `.cleaned` or `.swap`
/// file is left in `part`, and reads from every `stride`th record use the (rebuilt)
/// indexes to find its batch.
async fn assert_recovered(
    log: &PartitionLog,
    part: &Path,
    step: &str,
    want: &[Rec],
    stride: usize,
) {
    assert_eq!(visible(log).await, want, "crash after: {step}");
    let left: Vec<String> = std::fs::read_dir(part)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
        .collect();
    assert!(left.is_empty(), "{step}: leftovers {left:?}");
    for r in want.iter().step_by(stride) {
        let bytes = read_all(log, Offset(r.0), 4096).await;
        let (_, h, _) = BatchIter::new(&bytes).next().expect("batch");
        assert!(
            h.base_offset().0 <= r.0 && r.0 <= h.last_offset().0,
            "{step}"
        );
    }
}

#[test]
fn a_crash_at_every_step_of_the_swap_leaves_the_old_or_the_new_segment() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    let part = path.join("t-0");
    // Before and after one compaction, as files.
    let (before, after, old_recs, new_recs) = files_around_a_pass(&path, &[30]);
    let seg = "00000000000000000000";
    let (log, index, time) = (
        format!("{seg}.log"),
        format!("{seg}.index"),
        format!("{seg}.timeindex"),
    );
    assert_ne!(before[&log], after[&log], "the first segment was rewritten");
    let seg_end = {
        let next = before
            .keys()
            .filter_map(|n| n.strip_suffix(".log"))
            .filter_map(|n| n.parse::<i64>().ok())
            .filter(|b| *b > 0)
            .min()
            .expect("a second segment");
        next
    };
    // The content with only the first segment old or new.
    let old_everywhere = old_recs.clone();
    let new_first: Vec<Rec> = new_recs
        .iter()
        .filter(|r| r.0 < seg_end)
        .chain(old_recs.iter().filter(|r| r.0 >= seg_end))
        .cloned()
        .collect();
    let cleaned = |files: &mut Files| {
        for name in [&log, &index, &time] {
            files.insert(format!("{name}.cleaned"), after[name].clone());
        }
    };
    let mut states: Vec<(&str, Files, &Vec<Rec>)> = Vec::new();
    // 1. The rewrite is written beside the old segment.
    let mut s = before.clone();
    cleaned(&mut s);
    states.push(("cleaned files written", s.clone(), &old_everywhere));
    // 1b. A torn rewrite.
    let mut torn = s.clone();
    let half = after[&log].len() / 2;
    torn.insert(format!("{log}.cleaned"), after[&log][..half].to_vec());
    states.push(("cleaned log torn", torn, &old_everywhere));
    // 2. The old indexes are removed.
    s.remove(&index);
    s.remove(&time);
    states.push(("old indexes removed", s.clone(), &old_everywhere));
    // 3. The new log is renamed over the old one.
    s.insert(log.clone(), after[&log].clone());
    s.remove(&format!("{log}.cleaned"));
    states.push(("log renamed", s.clone(), &new_first));
    // 4. One index renamed, then both.
    s.insert(index.clone(), after[&index].clone());
    s.remove(&format!("{index}.cleaned"));
    states.push(("offset index renamed", s.clone(), &new_first));
    s.insert(time.clone(), after[&time].clone());
    s.remove(&format!("{time}.cleaned"));
    states.push(("swap done, cleaner checkpoint old", s, &new_first));

    for (step, files, want) in states {
        restore(&part, &files);
        let path = path.clone();
        let part = part.clone();
        let want = want.clone();
        let new_recs = new_recs.clone();
        run(move || async move {
            let (m, log) = open_log(&path, compact_config(), small_shard()).await;
            assert_recovered(&log, &part, step, &want, 37).await;
            // And compaction finishes the job.
            log.compact(T0).await.expect("compact");
            assert_eq!(visible(&log).await, new_recs, "{step}: compacted again");
            m.close_all().await.expect("close");
        });
    }
}

/// The safety property: for every key, the last record the log shows is the last one
/// appended, or nothing when that was a tombstone; every record shown was appended at
/// that offset; offsets increase.
fn check_against_model(model: &[Rec], got: &[Rec], seed: u64, step: usize) {
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "seed {seed} step {step}: offsets increase"
    );
    let by_offset: BTreeMap<i64, &Rec> = model.iter().map(|r| (r.0, r)).collect();
    for r in got {
        assert_eq!(
            by_offset.get(&r.0).copied(),
            Some(r),
            "seed {seed} step {step}: record at {} as appended",
            r.0
        );
    }
    let mut last_model: BTreeMap<&Option<Vec<u8>>, &Rec> = BTreeMap::new();
    for r in model {
        last_model.insert(&r.1, r);
    }
    let mut last_got: BTreeMap<&Option<Vec<u8>>, &Rec> = BTreeMap::new();
    for r in got {
        last_got.insert(&r.1, r);
    }
    for (key, want) in &last_model {
        match last_got.get(key) {
            Some(got) => assert_eq!(got, want, "seed {seed} step {step}: latest of {key:?}"),
            None => assert!(
                want.2.is_none(),
                "seed {seed} step {step}: key {key:?} lost its latest value"
            ),
        }
    }
}

async fn random_sequence(seed: u64, dir: std::path::PathBuf) {
    eprintln!("compaction fuzz seed {seed}");
    let mut rng = Rng(seed | 1);
    let shard = shard_with_map(if rng.below(2) == 0 { 4096 } else { 1 << 20 });
    let config = LogConfig {
        min_cleanable_dirty_ratio_ppm: (rng.below(3) * 400_000) as u32,
        delete_retention_ms: 1 + rng.below(5_000),
        ..compact_config()
    };
    let (mut manager, mut log) = open_log(&dir, config.clone(), shard.clone()).await;
    let mut model: Vec<Rec> = Vec::new();
    let mut now = T0;
    for step in 0..120 {
        match rng.below(100) {
            0..=64 => {
                let n = 1 + rng.below(12) as usize;
                let owned: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..n)
                    .map(|_| {
                        let key = format!("key{}", rng.below(60)).into_bytes();
                        let value = (rng.below(10) != 0).then(|| {
                            let mut v = format!("{step}:{}", rng.next_u64()).into_bytes();
                            v.resize(20 + rng.below(300) as usize, b'~');
                            v
                        });
                        (key, value)
                    })
                    .collect();
                let records: Vec<(&[u8], Option<&[u8]>)> = owned
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_deref()))
                    .collect();
                let appended = match rng.below(4) {
                    0 => append_compressed(&log, &records, 1).await,
                    1 => append_compressed(&log, &records, 3).await,
                    _ => append(&log, &records, now as i64).await,
                };
                model.extend(appended);
            }
            65..=89 => {
                now += rng.below(3_000);
                log.compact(now)
                    .await
                    .unwrap_or_else(|e| panic!("seed {seed} step {step}: compact: {e}"));
                check_against_model(&model, &visible(&log).await, seed, step);
            }
            _ => {
                manager.close_all().await.expect("close");
                let (m, l) = open_log(&dir, config.clone(), shard.clone()).await;
                manager = m;
                log = l;
                check_against_model(&model, &visible(&log).await, seed, step);
            }
        }
    }
    // Final passes with no ratio gate until the map has covered every closed segment:
    // then closed segments hold each key once.
    log.set_config(LogConfig {
        min_cleanable_dirty_ratio_ppm: 0,
        ..config
    })
    .expect("config");
    let active = log.active_segment_base().0;
    let mut passes = 0;
    while log.compact(now).await.expect("compact").cleaned_end.0 < active {
        passes += 1;
        assert!(passes < 100, "seed {seed}: passes make progress");
    }
    let got = visible(&log).await;
    check_against_model(&model, &got, seed, usize::MAX);
    let mut seen = std::collections::BTreeSet::new();
    for r in got.iter().filter(|r| r.0 < active) {
        assert!(
            seen.insert(&r.1),
            "seed {seed}: key {:?} twice in closed segments",
            r.1
        );
    }
    manager.close_all().await.expect("close");
}

#[test]
fn random_appends_passes_and_reopens_match_the_model() {
    let seeds: Vec<u64> = match std::env::var("SLUICE_COMPACTION_SEED") {
        Ok(s) => vec![s.parse().expect("seed is a u64")],
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            (0..4).map(|i| now.wrapping_add(i * 0x9e37_79b9)).collect()
        }
    };
    for seed in seeds {
        let dir = test_dir();
        let path = dir.path().to_path_buf();
        run(move || random_sequence(seed, path));
    }
}

#[test]
fn cleaned_segments_merge_so_a_compacted_log_keeps_few_segments() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (m, log) = open_log(&path, compact_config(), small_shard()).await;
        let mut all = Vec::new();
        let mut rolls = 0;
        for _ in 0..12 {
            let before = log.segment_count();
            all.extend(write_versions(&log, 20, 10, T0 as i64).await);
            rolls += log.segment_count() - before;
            log.compact(T0).await.expect("compact");
            assert!(log.segment_count() <= 5, "{} segments", log.segment_count());
        }
        assert!(rolls > 12, "the log rolled {rolls} times");
        let active = log.active_segment_base().0;
        let got = visible(&log).await;
        assert_strictly_increasing(&got);
        assert_eq!(got, expected(&all, active, false));
        m.close_all().await.expect("close");
        let (m, log) = open_log(&path, compact_config(), small_shard()).await;
        assert_eq!(visible(&log).await, got, "merged segments reopen");
        m.close_all().await.expect("close");
    });
}

#[test]
fn a_crash_during_a_merge_leaves_the_old_segments_or_the_merged_one() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    let part = path.join("t-0");
    // Before and after a pass that merges cleaned segments.
    let (before, after, old_recs, new_recs) = files_around_a_pass(&path, &[30, 10]);
    let bases = |files: &Files| -> Vec<i64> {
        files
            .keys()
            .filter_map(|n| n.strip_suffix(".log")?.parse().ok())
            .collect()
    };
    let (old_bases, new_bases) = (bases(&before), bases(&after));
    // The merged group: the old segments below the second new one.
    let group_end = new_bases[1];
    let group: Vec<i64> = old_bases
        .iter()
        .copied()
        .filter(|b| *b < group_end)
        .collect();
    assert!(
        group.len() > 1,
        "a merge happened: {old_bases:?} -> {new_bases:?}"
    );
    let name = |b: i64, ext: &str| format!("{b:020}.{ext}");
    let want: Vec<Rec> = new_recs
        .iter()
        .filter(|r| r.0 < group_end)
        .chain(old_recs.iter().filter(|r| r.0 >= group_end))
        .cloned()
        .collect();
    // 1. The merged rewrite is committed under its .swap name beside the old segments.
    let mut s = before.clone();
    s.insert(
        format!("{}.swap", name(0, "log")),
        after[&name(0, "log")].clone(),
    );
    for ext in ["index", "timeindex"] {
        s.insert(
            format!("{}.cleaned", name(0, ext)),
            after[&name(0, ext)].clone(),
        );
    }
    let mut states = vec![("merge committed", s.clone())];
    // 2. Old indexes and the merged-away segments removed.
    for b in &group {
        s.remove(&name(*b, "index"));
        s.remove(&name(*b, "timeindex"));
        if *b > 0 {
            s.remove(&name(*b, "log"));
        }
    }
    states.push(("merged-away segments removed", s.clone()));
    // 3. The merged segment renamed into place, indexes not yet.
    let merged = s
        .remove(&format!("{}.swap", name(0, "log")))
        .expect("swap file");
    s.insert(name(0, "log"), merged);
    states.push(("merged segment renamed", s));

    for (step, files) in states {
        restore(&part, &files);
        let path = path.clone();
        let part = part.clone();
        let want = want.clone();
        run(move || async move {
            let (m, log) = open_log(&path, compact_config(), small_shard()).await;
            assert_recovered(&log, &part, step, &want, 23).await;
            let next = log.log_end_offset();
            let more = append(&log, &[(b"k0", Some(b"after the crash"))], T0 as i64).await;
            assert_eq!(more[0].0, next.0, "{step}");
            m.close_all().await.expect("close");
        });
    }
}

#[test]
fn compaction_runs_alongside_appends_and_reads() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        use std::cell::{Cell, RefCell};
        use std::rc::Rc;
        let (m, log) = open_log(&path, compact_config(), small_shard()).await;
        let model: Rc<RefCell<Vec<Rec>>> = Rc::default();
        let done = Rc::new(Cell::new(false));
        let (passes, reads) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(0u64)));
        let appender = {
            let (log, model, done) = (log.clone(), model.clone(), done.clone());
            let (passes, reads) = (passes.clone(), reads.clone());
            glommio::spawn_local(async move {
                for i in 0..400usize {
                    if i % 50 == 49 {
                        // Let a compaction pass and some reads happen between appends (a
                        // condition, waited for with a generous bound).
                        let (p, r) = (passes.get(), reads.get());
                        for _ in 0..20_000 {
                            if passes.get() > p && reads.get() > r {
                                break;
                            }
                            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                        }
                        assert!(passes.get() > p && reads.get() > r, "no pass or read ran");
                    }
                    let owned: Vec<(Vec<u8>, Vec<u8>)> = (0..10)
                        .map(|j| {
                            let k = format!("k{}", (i * 7 + j) % 30).into_bytes();
                            let mut v = format!("{i}:{j}:").into_bytes();
                            v.resize(100, b'-');
                            (k, v)
                        })
                        .collect();
                    let records: Vec<(&[u8], Option<&[u8]>)> = owned
                        .iter()
                        .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
                        .collect();
                    let info = log
                        .append(&keyed_batch(&records, T0 as i64), LeaderEpoch(0))
                        .await
                        .expect("append");
                    model.borrow_mut().extend(
                        owned
                            .into_iter()
                            .enumerate()
                            .map(|(n, (k, v))| (info.base_offset.0 + n as i64, Some(k), Some(v))),
                    );
                    glommio::yield_if_needed().await;
                }
                done.set(true);
            })
        };
        let reader = {
            let (log, model, done, reads) =
                (log.clone(), model.clone(), done.clone(), reads.clone());
            glommio::spawn_local(async move {
                let mut rng = Rng(0x5eed);
                while !done.get() {
                    let (start, end) = (log.log_start_offset().0, log.written_end_offset().0);
                    if end > start {
                        let from = start + rng.below((end - start) as u64) as i64;
                        let r = log
                            .read(Offset(from), read_limits(4096))
                            .await
                            .expect("read during compaction");
                        let bytes: Vec<u8> = r.slices.iter().flat_map(|s| s.to_vec()).collect();
                        let model = model.borrow();
                        let mut iter = BatchIter::new(&bytes);
                        for (_, h, b) in iter.by_ref() {
                            batch::verify_crc(&h, b).expect("whole, valid batches");
                            for r in RecordIter::new(b, &h) {
                                let r = r.expect("records parse");
                                let o = h.base_offset().0 + r.offset_delta;
                                let want = &model[o as usize];
                                assert_eq!(want.0, o);
                                assert_eq!(r.key.map(<[u8]>::to_vec), want.1, "key at {o}");
                                assert_eq!(r.value.map(<[u8]>::to_vec), want.2, "value at {o}");
                            }
                        }
                        assert_eq!(iter.position(), bytes.len(), "no torn batch");
                        reads.set(reads.get() + 1);
                    }
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                }
            })
        };
        while !done.get() {
            if log.compact(T0).await.expect("compact").segments_rewritten > 0 {
                passes.set(passes.get() + 1);
            }
            glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
        }
        appender.await;
        reader.await;
        log.wait_written(log.log_end_offset())
            .await
            .expect("written");
        let active = log.active_segment_base().0;
        while log.compact(T0).await.expect("compact").cleaned_end.0 < active {}
        let model = model.borrow().clone();
        assert_eq!(visible(&log).await, expected(&model, active, false));
        m.close_all().await.expect("close");
    });
}

/// A transactional batch of keyed records from producer `pid` (epoch 0, sequence `seq`).
fn txn_keyed_batch(pid: i64, seq: i32, records: &[(&[u8], &[u8])], ts: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(ts)
        .producer(batch::ProducerFields {
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: seq,
        })
        .transactional();
    for (k, v) in records {
        b.push(&Record {
            key: Some(k),
            value: Some(v),
            timestamp_ms: ts,
            ..Record::default()
        });
    }
    b.build()
}

async fn end_txn(log: &PartitionLog, pid: i64, kind: sluice_engine::txn::MarkerKind) -> i64 {
    let marker = sluice_engine::txn::Marker {
        producer_id: pid,
        producer_epoch: 0,
        coordinator_epoch: 0,
        kind,
    };
    let info = log
        .append_marker(marker, LeaderEpoch(0))
        .await
        .expect("marker");
    log.wait_written(info.last_offset.plus(1))
        .await
        .expect("written");
    info.base_offset.0
}

/// The data records readable from the log start (markers left out): (offset, key, value).
async fn data_records(log: &PartitionLog) -> Vec<(i64, String, String)> {
    let bytes = read_all(log, log.log_start_offset(), 8192).await;
    let mut out = Vec::new();
    for (_, header, b) in BatchIter::new(&bytes) {
        if header.is_control() {
            continue;
        }
        for r in RecordIter::new(b, &header) {
            let r = r.expect("records parse");
            let text =
                |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).to_string();
            out.push((
                header.base_offset().0 + r.offset_delta,
                text(r.key),
                text(r.value),
            ));
        }
    }
    out
}

#[test]
fn aborted_records_are_dropped_committed_ones_compacted_and_open_ones_stop_the_pass() {
    use sluice_engine::txn::MarkerKind::{Abort, Commit};
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (m, log) = open_log(&path, compact_config(), small_shard()).await;
        let ts = T0 as i64;
        append(&log, &[(b"a", Some(b"plain-a"))], ts).await;
        // An aborted transaction rewrites `a` and adds `b`: neither may count.
        let aborted = txn_keyed_batch(10, 0, &[(b"a", b"aborted-a"), (b"b", b"aborted-b")], ts);
        log.append(&aborted, LeaderEpoch(0)).await.expect("append");
        end_txn(&log, 10, Abort).await;
        // A committed transaction writes `c`, superseded later by a plain record.
        let committed =
            txn_keyed_batch(11, 0, &[(b"c", b"committed-c"), (b"d", b"committed-d")], ts);
        log.append(&committed, LeaderEpoch(0))
            .await
            .expect("append");
        end_txn(&log, 11, Commit).await;
        append(&log, &[(b"c", Some(b"plain-c"))], ts).await;
        write_versions(&log, 20, 10, ts).await;
        let outcome = log.compact(T0).await.expect("compact");
        assert!(outcome.ran, "{outcome:?}");
        let got = data_records(&log).await;
        let value_of = |key: &str| -> Vec<String> {
            got.iter()
                .filter(|(_, k, _)| k == key)
                .map(|(_, _, v)| v.clone())
                .collect()
        };
        assert_eq!(
            value_of("a"),
            ["plain-a"],
            "an aborted value supersedes nothing"
        );
        assert!(value_of("b").is_empty(), "aborted records are dropped");
        assert_eq!(
            value_of("c"),
            ["plain-c"],
            "committed records compact like any"
        );
        assert_eq!(value_of("d"), ["committed-d"]);
        // A transaction still open holds the cleaner below its first offset.
        let open = txn_keyed_batch(12, 0, &[(b"e", b"undecided")], ts);
        let open_at = log.append(&open, LeaderEpoch(0)).await.expect("append");
        write_versions(&log, 20, 10, ts).await;
        let outcome = log.compact(T0).await.expect("compact");
        assert!(
            outcome.cleaned_end <= open_at.base_offset,
            "{outcome:?} past the open transaction at {}",
            open_at.base_offset
        );
        assert_eq!(
            data_records(&log)
                .await
                .iter()
                .filter(|r| r.1 == "e")
                .count(),
            1
        );
        m.close_all().await.expect("close");
    });
}

/// The markers in the log with their records (empty control batches left out):
/// (offset, producer, commit).
async fn markers(log: &PartitionLog) -> Vec<(i64, i64, bool)> {
    let bytes = read_all(log, log.log_start_offset(), 8192).await;
    BatchIter::new(&bytes)
        .filter(|(_, h, _)| h.is_control() && h.record_count.get() > 0)
        .map(|(_, h, b)| {
            let m = sluice_engine::txn::Marker::parse(&h, b).expect("marker parses");
            let commit = m.kind == sluice_engine::txn::MarkerKind::Commit;
            (h.base_offset().0, h.producer_id.get(), commit)
        })
        .collect()
}

#[test]
fn markers_go_once_their_data_is_gone_and_delete_retention_passed() {
    use sluice_engine::txn::MarkerKind::{Abort, Commit};
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    let config = LogConfig {
        delete_retention_ms: 1_000,
        ..compact_config()
    };
    run(move || async move {
        let (m, log) = open_log(&path, config.clone(), small_shard()).await;
        let ts = T0 as i64;
        let txn = |pid, seq, key: &'static [u8], value: &'static [u8]| {
            txn_keyed_batch(pid, seq, &[(key, value)], ts)
        };
        // Producer 10 aborts a write of `a`, then commits `z`; producer 11 commits `c`
        // (superseded by a plain record), then `e`.
        append(&log, &[(b"a", Some(b"plain-a"))], ts).await;
        log.append(&txn(10, 0, b"a", b"aborted-a"), LeaderEpoch(0))
            .await
            .expect("append");
        let abort_at = end_txn(&log, 10, Abort).await;
        log.append(&txn(11, 0, b"c", b"committed-c"), LeaderEpoch(0))
            .await
            .expect("append");
        let first_commit_at = end_txn(&log, 11, Commit).await;
        append(&log, &[(b"c", Some(b"plain-c"))], ts).await;
        log.append(&txn(10, 1, b"z", b"z"), LeaderEpoch(0))
            .await
            .expect("append");
        let last_of_10 = end_txn(&log, 10, Commit).await;
        log.append(&txn(11, 1, b"e", b"e"), LeaderEpoch(0))
            .await
            .expect("append");
        let last_of_11 = end_txn(&log, 11, Commit).await;
        write_versions(&log, 20, 10, ts).await;
        let all = vec![
            (abort_at, 10, false),
            (first_commit_at, 11, true),
            (last_of_10, 10, true),
            (last_of_11, 11, true),
        ];

        // Pass 1 drops the aborted `a` and the committed `c`: their markers stay, the
        // pass saw their data.
        assert!(log.compact(T0).await.expect("compact").ran);
        assert_eq!(markers(&log).await, all);
        // The next pass finds their transactions without data, but delete.retention.ms
        // has not passed since their segment was first cleaned: they stay.
        write_versions(&log, 20, 10, ts).await;
        assert!(log.compact(T0 + 999).await.expect("compact").ran);
        assert_eq!(markers(&log).await, all);
        // Once it has (a pass is due for them alone), the commit marker goes; the abort
        // marker waits until the aborted index no longer lists its transaction on disk
        // (no checkpoint has been written since the index forgot it).
        assert!(log.compact(T0 + 1_000).await.expect("compact").ran);
        let without_commit = vec![all[0], all[2], all[3]];
        assert_eq!(markers(&log).await, without_commit);
        write_versions(&log, 20, 10, ts).await;
        assert!(log.compact(T0 + 1_000).await.expect("compact").ran);
        assert_eq!(markers(&log).await, without_commit);
        assert!(
            log.aborted_transactions(Offset::ZERO, log.log_end_offset(), 10)
                .is_empty(),
            "the index forgot the aborted transaction without data"
        );
        // A restart writes the snapshot; the next pass removes the abort marker. The
        // last marker of each producer stays (its epoch fences zombies after a replay).
        m.close_all().await.expect("close");
        let (m, log) = open_log(&path, config.clone(), small_shard()).await;
        write_versions(&log, 20, 10, ts).await;
        assert!(log.compact(T0 + 2_000).await.expect("compact").ran);
        assert_eq!(markers(&log).await, vec![all[2], all[3]]);
        let values: Vec<(String, String)> = data_records(&log)
            .await
            .into_iter()
            .filter(|(_, k, _)| ["a", "c", "z", "e"].contains(&k.as_str()))
            .map(|(_, k, v)| (k, v))
            .collect();
        let expect = [("a", "plain-a"), ("c", "plain-c"), ("z", "z"), ("e", "e")];
        assert_eq!(values, expect.map(|(k, v)| (k.to_string(), v.to_string())));
        // A replay of the whole log (no snapshot) leaves no transaction open.
        m.close_all().await.expect("close");
        std::fs::remove_file(path.join("t-0").join("producer.snapshot")).expect("snapshot");
        let (m, log) = open_log(&path, config, small_shard()).await;
        let end = log.log_end_offset();
        assert_eq!(log.last_stable_offset(end), end);
        assert!(log.aborted_transactions(Offset::ZERO, end, 10).is_empty());
        assert_eq!(log.open_transaction(10), None);
        assert_eq!(log.open_transaction(11), None);
        m.close_all().await.expect("close");
    });
}
