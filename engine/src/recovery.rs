//! Opening a partition directory: trust what the checkpoint and valid index files vouch
//! for, scan everything after it (framing, CRC32C, offset continuity), cut the log at the
//! first torn or corrupt batch, rebuild missing or damaged indexes. Never panics on any
//! file content: damage becomes a shorter log and a WARN line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::checkpoint::Checkpoint;
use crate::chunk::OpenChunk;
use crate::compact::CleanerState;
use crate::config::{LogConfig, ShardConfig};
use crate::epochs::EpochCache;
use crate::error::LogError;
use crate::files::{self, align_down, now_ms, BLOCK_BYTES};
use crate::log::{LogState, Recovered};
use crate::producer::{ProducerEvent, ProducerState};
use crate::segment::{self, Segment};
use crate::txn::TxnIndex;
use crate::types::{Offset, TopicPartition};

pub(crate) async fn recover(
    dir: PathBuf,
    tp: TopicPartition,
    config: LogConfig,
    shard: &ShardConfig,
) -> Result<LogState, LogError> {
    std::fs::create_dir_all(&dir).map_err(|e| files::io_err(&dir, e))?;
    let checkpoint = Checkpoint::read(&dir).await?;
    crate::cleaner::finish_interrupted_swaps(&dir).await?;
    let bases = list_segments(&dir)?;
    // Producer state and aborted transactions: the snapshot taken with the checkpoint,
    // then every batch scanned after it. Without a usable snapshot only the scanned
    // batches are known.
    let snapshot = match &checkpoint {
        Some(cp) => ProducerState::read_snapshot(&dir, cp.next_offset).await?,
        None => None,
    };
    let replay_from = match (&snapshot, &checkpoint) {
        (Some(_), Some(cp)) => cp.next_offset,
        _ => Offset::ZERO,
    };
    let (mut producers, aborted) = snapshot.unwrap_or_default();
    let mut txns = TxnIndex::with_aborted(aborted);
    let mut epochs = EpochCache::read(&dir).await?;
    // What the file holds: epochs of scanned batches beyond it must be written before a
    // checkpoint covers those batches, or the next recovery (which does not scan them)
    // loses them.
    let on_disk = epochs.clone();
    let mut on_batch = |header: &crate::batch::BatchHeader, bytes: &[u8]| {
        epochs.observe(header.leader_epoch(), header.base_offset());
        if header.base_offset() >= replay_from {
            let event = ProducerEvent::from_stored(header, bytes, header.base_offset());
            if let Some(done) = event.and_then(|e| producers.apply_event(e)) {
                txns.complete(done);
            }
        }
    };
    let mut segments = BTreeMap::new();
    for (i, base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        let seg = open_segment(
            &dir,
            &tp,
            *base,
            next_base,
            checkpoint.as_ref(),
            &config,
            &mut on_batch,
        )
        .await?;
        let complete = next_base.is_none_or(|next| seg.end_offset == next);
        segments.insert(*base, seg);
        if !complete {
            tracing::warn!(partition = %tp, segment = %base, "segment ends before the next one starts; dropping the segments after it");
            for later in &bases[i + 1..] {
                Segment::remove_files(&dir, *later)?;
            }
            break;
        }
    }
    if segments.is_empty() {
        let base = checkpoint
            .map(|c| c.next_offset.max(c.log_start))
            .unwrap_or(Offset::ZERO);
        segments.insert(base, Segment::new(base, now_ms()));
    }
    let last_base = *segments.keys().next_back().unwrap_or(&Offset::ZERO);
    for (base, seg) in segments.iter_mut() {
        seg.finalized = *base != last_base;
        if seg.finalized {
            // Loaded again on demand (rebuilt then if damaged); a bounded number stay in
            // memory.
            seg.unload_indexes();
        }
    }
    let open = open_chunk(
        &dir,
        &segments[&last_base],
        shard.write_chunk_bytes.min(crate::log::CHUNK_MIN_BYTES),
    )
    .await?;
    let first_base = *segments.keys().next().unwrap_or(&Offset::ZERO);
    let next_offset = open.end_offset;
    let log_start = checkpoint
        .map(|c| c.log_start)
        .unwrap_or(first_base)
        .max(first_base)
        .min(next_offset);
    let checkpoint = checkpoint.unwrap_or(Checkpoint {
        log_start,
        segment_base: first_base,
        position: 0,
        next_offset: first_base,
    });
    producers.drop_before(log_start);
    txns.drop_before(log_start);
    epochs.truncate_to(next_offset);
    let mut cleaner = CleanerState::read(&dir).await?;
    // Only closed segments are ever clean; forget segments that are gone.
    cleaner.cleaned_end = cleaner.cleaned_end.min(last_base);
    cleaner
        .segments
        .retain(|b, _| *b != last_base && segments.contains_key(b));
    let epochs_dirty = epochs != on_disk;
    let recovered = Recovered {
        segments,
        log_start,
        open,
        checkpoint,
        producers,
        txns,
        epochs,
        epochs_dirty,
        cleaner,
    };
    Ok(LogState::new(dir, tp, config, recovered, shard))
}

/// Segment base offsets found in `dir`, ascending; leftovers of interrupted writes
/// (`*.tmp`, a compaction's `*.cleaned`) and indexes without a segment are removed.
fn list_segments(dir: &Path) -> Result<Vec<Offset>, LogError> {
    let mut bases = Vec::new();
    let mut others = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| files::io_err(dir, e))? {
        let entry = entry.map_err(|e| files::io_err(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(base) = segment::parse_log_name(&name) {
            bases.push(base);
        } else {
            others.push(name);
        }
    }
    bases.sort();
    for name in others {
        let stem = name
            .strip_suffix(".index")
            .or_else(|| name.strip_suffix(".timeindex"));
        let orphan_index = stem.is_some_and(|s| !bases.iter().any(|b| format!("{:020}", b.0) == s));
        if name.ends_with(".tmp") || name.ends_with(".cleaned") || orphan_index {
            files::remove_if_exists(&dir.join(&name))?;
        }
    }
    Ok(bases)
}

/// Opens one segment file and establishes its longest valid prefix.
async fn open_segment(
    dir: &Path,
    tp: &TopicPartition,
    base: Offset,
    next_base: Option<Offset>,
    checkpoint: Option<&Checkpoint>,
    config: &LogConfig,
    on_batch: &mut dyn FnMut(&crate::batch::BatchHeader, &[u8]),
) -> Result<Segment, LogError> {
    let path = dir.join(segment::log_name(base));
    let file = files::open_rw(&path, false).await?;
    let file_len = file
        .file_size()
        .await
        .map_err(|e| files::glommio_io(&path, e))?;
    let mut seg = Segment::new(base, now_ms());
    // How much is vouched for without a scan.
    let trusted = match (next_base, checkpoint) {
        (Some(next), _) => Some((file_len, next)),
        (None, Some(cp)) if cp.segment_base == base && cp.position <= file_len => {
            Some((cp.position, cp.next_offset))
        }
        _ => None,
    };
    if let Some((len, end)) = trusted {
        if let Some((index, time)) = Segment::read_indexes(dir, base, len.max(1), end).await? {
            seg.size = len;
            seg.end_offset = end;
            seg.bytes_since_index = len - index.lookup(u32::MAX).1 as u64;
            if let Some((ts, rel)) = time.last() {
                seg.max_timestamp = ts;
                seg.offset_of_max_timestamp = base.plus(i64::from(rel));
            }
            seg.index = index;
            seg.time_index = time;
        }
    }
    let closed_and_trusted = next_base.is_some() && seg.size == file_len && seg.end_offset > base;
    if !closed_and_trusted {
        let outcome = segment::scan(
            &file,
            &path,
            &mut seg,
            file_len,
            config.index_interval_bytes,
            // Closed segments may have been compacted (gaps between batches); in a compacted
            // log even the last one may be (after a truncation into it).
            match next_base.is_some() || config.cleanup_policy.compacts() {
                true => segment::Continuity::Increasing,
                false => segment::Continuity::Contiguous,
            },
            on_batch,
        )
        .await?;
        if let Some(reason) = &outcome.stopped_by {
            tracing::warn!(
                partition = %tp,
                segment = %base,
                valid_bytes = seg.size,
                dropped_bytes = file_len - seg.size,
                %reason,
                "segment cut at the first invalid batch"
            );
        }
        if seg.size < file_len {
            files::truncate_synced(&file, &path, seg.size).await?;
        }
    }
    seg.written_size = seg.size;
    if next_base.is_none() && seg.size > 0 {
        seg.created_ms = first_batch_time(&file, &path)
            .await?
            .unwrap_or(seg.created_ms);
    }
    seg.file = Some(Rc::new(file));
    Ok(seg)
}

/// The segment's age for `segment.ms` counts from its first batch's timestamp (as in
/// Kafka), so restarts do not keep an active segment from ever rolling.
async fn first_batch_time(
    file: &glommio::io::DmaFile,
    path: &Path,
) -> Result<Option<u64>, LogError> {
    let read = file
        .read_at_aligned(0, BLOCK_BYTES as usize)
        .await
        .map_err(|e| files::glommio_io(path, e))?;
    Ok(crate::batch::parse_header(&read)
        .ok()
        .map(|h| h.base_timestamp.get().clamp(0, now_ms() as i64) as u64))
}

/// The open chunk for the last segment, starting with its partial last block.
async fn open_chunk(dir: &Path, last: &Segment, chunk_bytes: usize) -> Result<OpenChunk, LogError> {
    let block_pos = align_down(last.size);
    let partial = (last.size - block_pos) as usize;
    let mut prefix = Vec::new();
    if partial > 0 {
        if let Some(file) = &last.file {
            let path = last.path(dir);
            let read = file
                .read_at_aligned(block_pos, BLOCK_BYTES as usize)
                .await
                .map_err(|e| files::glommio_io(&path, e))?;
            if read.len() < partial {
                return Err(files::io_err(
                    &path,
                    std::io::Error::other("short read of the last block"),
                ));
            }
            prefix.extend_from_slice(&read[..partial]);
        }
    }
    Ok(OpenChunk::new(
        last.base,
        block_pos,
        &prefix,
        chunk_bytes,
        last.end_offset,
    ))
}
