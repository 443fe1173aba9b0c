//! Log compaction I/O: deciding a log is due, building the key map over its dirty
//! segments, rewriting closed segments into `<base>.log.cleaned` (+ `.index.cleaned`,
//! `.timeindex.cleaned`), and swapping them in.
//!
//! Invariants:
//! - Only finalized segments are cleaned, never the active one (nor one still being
//!   finalized), so the flusher's files and the recovery checkpoint (which points into the
//!   active segment) are never touched. Closed segments are immutable, so they are read
//!   and rewritten without the log's `io_lock`; only the swap takes it, briefly.
//! - A rewritten segment keeps its base offset, its last batch (emptied when none of its
//!   records stay) and so its end offset: segments stay contiguous in offsets, which is
//!   what recovery checks. Retained records keep their offsets (batches keep their base
//!   offset and last offset delta).
//! - Consecutive small cleaned segments are merged into one (up to `segment.bytes`), so a
//!   compacted log's segment count stays bounded.
//! - The swap of a pass's rewrites, under `io_lock`: the new segments (already durable
//!   under their `.cleaned` names) replace the old ones in memory first, with the cached
//!   chunks of those segments dropped (positions changed); then, each step followed by a
//!   directory fsync: merged rewrites are renamed to `<base>.log.swap` (a merge's commit
//!   point); old index files and merged-away segments are removed; each rewrite is renamed
//!   to `<base>.log` (a single segment's commit point); index files are renamed in.
//!   Recovery finishes a `.swap` (removes the segments it covers, renames it), deletes
//!   `*.cleaned` and rebuilds missing indexes, so a crash at any point leaves each segment
//!   (or merged group) old or new, whole. While a swap runs, its segments' indexes are
//!   never loaded from disk (reads scan them).
//! - Readers that took a view of the old segment keep reading the old file (its
//!   descriptor outlives the rename), so no reader sees a half-swapped segment.
//! - Memory: one key map per shard at a time (`compaction_map_bytes_max`); reads and
//!   writes are staged in buffers of about [`IO_BYTES`] (or one larger batch).

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, ReadResult};

use crate::batch::{self, BatchHeader, BatchIter};
use crate::compact::{
    self, BatchKind, CleanedSegment, CleanerState, Filtered, MarkerPass, OffsetMap, RetainRule,
    TxnView,
};
use crate::error::LogError;
use crate::files::{self, align_down, align_up};
use crate::log::{LogShared, PartitionLog};
use crate::producer::ProducerState;
use crate::segment::{self, Segment};
use crate::types::Offset;

/// Bytes per direct read and write of a segment rewrite.
const IO_BYTES: u64 = 1 << 20;

/// What one compaction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionOutcome {
    /// A pass ran (the log was due: dirty ratio, max lag or expired tombstones).
    pub ran: bool,
    /// Segments replaced by a smaller rewrite.
    pub segments_rewritten: usize,
    /// Bytes of the segments the pass looked at, before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Offsets below this now hold at most one record per key (opaque batches aside).
    pub cleaned_end: Offset,
}

/// A closed segment the pass may clean.
#[derive(Debug, Clone)]
struct Cleanable {
    base: Offset,
    end_offset: Offset,
    size: u64,
    created_ms: u64,
    file: Rc<DmaFile>,
}

/// Everything a pass needs, taken out of the log state in one borrow.
#[derive(Debug)]
struct Plan {
    dir: PathBuf,
    segments: Vec<Cleanable>,
    cleaner: CleanerState,
    /// Where the dirty section starts (the cleaner's end, at least the log start).
    dirty_from: Offset,
    clean_bytes: u64,
    dirty_bytes: u64,
    producers: ProducerState,
    /// The aborted transactions whose records may lie in `segments`.
    txns: TxnView,
    /// Every aborted-index entry compaction forgot is in the snapshot on disk (abort
    /// markers whose entry is gone may then go).
    forgets_persisted: bool,
    index_interval_bytes: u32,
    segment_bytes_max: u64,
    delete_retention_ms: u64,
    max_compaction_lag_ms: u64,
    ratio_ppm: u32,
}

impl PartitionLog {
    /// One compaction pass (Kafka's log cleaner) if the log's policy includes `compact`
    /// and it is due at `now_ms`: the dirty ratio reaches `min.cleanable.dirty.ratio`,
    /// `max.compaction.lag.ms` has passed for its first dirty record, or a cleaned
    /// segment holds tombstones past `delete.retention.ms`. Keeps the latest record of
    /// every key (and tombstones until they expire) in the closed segments older than
    /// `min.compaction.lag.ms`; keys in the active segment are not considered.
    pub async fn compact(&self, now_ms: u64) -> Result<CompactionOutcome, LogError> {
        let shared = &self.shared;
        let _slot = shared
            .shard
            .compaction_slot
            .acquire_permit(1)
            .await
            .map_err(|e| LogError::Offline(e.to_string()))?;
        let Some(plan) = plan(shared, now_ms) else {
            return Ok(CompactionOutcome::default());
        };
        let tombstones_due = tombstones_due(&plan, now_ms);
        let due = compact::dirty_enough(plan.clean_bytes, plan.dirty_bytes, plan.ratio_ppm)
            || tombstones_due
            || lag_forced(&plan, now_ms).await?;
        if !due {
            return Ok(CompactionOutcome {
                cleaned_end: plan.dirty_from,
                ..CompactionOutcome::default()
            });
        }
        let map_bytes = shared.shard.config.compaction_map_bytes_max;
        let (map, map_end) = build_map(&plan, map_bytes).await?;
        if map_end == plan.dirty_from && plan.dirty_bytes > 0 && !tombstones_due {
            tracing::error!(partition = %self.topic_partition(), map_bytes, "compaction map cannot hold one batch's keys; raise compaction_map_bytes_max");
            return Ok(CompactionOutcome::default());
        }
        run_pass(shared, &plan, &map, map_end, now_ms).await
    }
}

/// Rewrites the cleanable segments below `map_end`, swaps each in, records the new clean
/// point. Stops (leaving the cleaner state as it was) when the log changed underneath.
async fn run_pass(
    shared: &Rc<LogShared>,
    plan: &Plan,
    map: &OffsetMap,
    map_end: Offset,
    now_ms: u64,
) -> Result<CompactionOutcome, LogError> {
    let mut outcome = CompactionOutcome {
        ran: true,
        cleaned_end: map_end,
        ..CompactionOutcome::default()
    };
    let mut cleaner = plan.cleaner.clone();
    let mut rewritten = Vec::new();
    let covered: Vec<&Cleanable> = plan.segments.iter().filter(|s| s.base < map_end).collect();
    let mut markers = MarkerPass::new(&plan.producers, plan.forgets_persisted);
    for group in group_segments(plan, &covered, map_end, now_ms) {
        let first = cleaner.segments.get(&group[0].base).copied();
        let retained_since = |c: &CleanedSegment| {
            now_ms >= c.first_cleaned_ms.saturating_add(plan.delete_retention_ms)
        };
        let markers_expired = group
            .iter()
            .filter(|s| cleaner.segments.get(&s.base).is_some_and(retained_since))
            .map(|s| s.base)
            .collect();
        let rule = RetainRule {
            map,
            map_end,
            // Only segments without live tombstones are merged (see `group_segments`).
            tombstones_expired: group.len() > 1 || first.is_some_and(|c| retained_since(&c)),
            markers_expired,
            txns: &plan.txns,
        };
        markers.held = 0;
        let rewrite = rewrite_segments(plan, &group, &rule, &mut markers).await?;
        let size: u64 = group.iter().map(|s| s.size).sum();
        outcome.bytes_before += size;
        outcome.bytes_after += rewrite.new.as_ref().map_or(size, |n| n.segment.size);
        // Tombstones count delete.retention.ms from the first time their whole segment
        // was cleaned; a segment the map covers only in part is not cleaned yet. A merged
        // segment takes the latest of its members' times.
        if group.iter().all(|s| s.end_offset <= map_end) {
            let first_cleaned_ms = group
                .iter()
                .filter_map(|s| cleaner.segments.remove(&s.base))
                .map(|c| c.first_cleaned_ms)
                .max()
                .filter(|_| first.is_some())
                .unwrap_or(now_ms);
            let cleaned = CleanedSegment {
                first_cleaned_ms,
                tombstones: rewrite.tombstones > 0 || markers.held > 0,
            };
            cleaner.segments.insert(group[0].base, cleaned);
        }
        rewritten.extend(rewrite.new.map(|new| (group, new)));
        glommio::yield_if_needed().await;
    }
    forget_aborted(shared, &markers.forget);
    let wanted = rewritten.len();
    outcome.segments_rewritten = swap(shared, &plan.dir, rewritten).await?;
    if outcome.segments_rewritten < wanted {
        tracing::info!("log changed during compaction; clean point not advanced");
        outcome.cleaned_end = plan.dirty_from;
        return Ok(outcome);
    }
    finish_pass(shared, plan, cleaner, map_end).await?;
    tracing::info!(
        segments = outcome.segments_rewritten,
        bytes_before = outcome.bytes_before,
        bytes_after = outcome.bytes_after,
        cleaned_end = %map_end,
        "compaction pass"
    );
    Ok(outcome)
}

/// Forgets the index entries of aborted transactions the pass found without data (their
/// markers go in a later pass, once the snapshot on disk no longer lists them). Safe
/// whether or not the pass's swap happens: no batch of those transactions is left.
fn forget_aborted(shared: &LogShared, entries: &[crate::txn::AbortedTxn]) {
    if entries.is_empty() {
        return;
    }
    let mut st = shared.state.borrow_mut();
    let forgotten = entries.iter().filter(|t| st.txns.forget_aborted(t)).count();
    if forgotten > 0 {
        st.aborted_forgets += 1;
        tracing::debug!(
            forgotten,
            "aborted transactions without data left the index"
        );
    }
}

/// Splits the segments of a pass into groups rewritten as one segment each (Kafka's
/// grouping by size): consecutive segments whose bytes before cleaning sum to at most
/// `segment.bytes` and whose offsets fit one segment's relative index merge, provided
/// each was cleaned before, lies wholly below `map_end` and holds no tombstones that must
/// outlive this pass (so merged segments never mix tombstone deadlines). Freshly dirty
/// segments stand alone; once cleaned they merge in a later pass, which keeps the segment
/// count of a compacted log bounded.
fn group_segments<'a>(
    plan: &Plan,
    covered: &[&'a Cleanable],
    map_end: Offset,
    now_ms: u64,
) -> Vec<Vec<&'a Cleanable>> {
    let mergeable = |s: &Cleanable| {
        s.end_offset <= map_end
            && plan.cleaner.segments.get(&s.base).is_some_and(|c| {
                !c.tombstones
                    || now_ms >= c.first_cleaned_ms.saturating_add(plan.delete_retention_ms)
            })
    };
    let mut groups: Vec<Vec<&Cleanable>> = Vec::new();
    for seg in covered {
        let joins = groups.last().is_some_and(|g| {
            let bytes: u64 = g.iter().map(|s| s.size).sum::<u64>() + seg.size;
            let span = seg.end_offset.0 - g[0].base.0;
            mergeable(seg)
                && g.iter().all(|s| mergeable(s))
                && bytes <= plan.segment_bytes_max
                && span < i64::from(i32::MAX)
        });
        match (joins, groups.last_mut()) {
            (true, Some(g)) => g.push(seg),
            _ => groups.push(vec![seg]),
        }
    }
    groups
}

/// Records the new clean point (under `io_lock`, so a truncation cannot interleave).
async fn finish_pass(
    shared: &Rc<LogShared>,
    plan: &Plan,
    mut cleaner: CleanerState,
    map_end: Offset,
) -> Result<(), LogError> {
    let _permit = shared
        .io_lock
        .acquire_permit(1)
        .await
        .map_err(|e| LogError::Offline(e.to_string()))?;
    {
        let st = shared.state.borrow();
        let active = st.segments.keys().next_back().copied().unwrap_or(map_end);
        cleaner.cleaned_end = cleaner.cleaned_end.max(map_end).min(active);
        cleaner.segments.retain(|b, _| st.segments.contains_key(b));
    }
    cleaner.write(&plan.dir).await?;
    shared.state.borrow_mut().cleaner = cleaner;
    Ok(())
}

/// The pass's inputs, or `None` when the log does not compact or has nothing closed.
fn plan(shared: &LogShared, now_ms: u64) -> Option<Plan> {
    let st = shared.state.borrow();
    let config = &st.config;
    if !config.cleanup_policy.compacts() || st.closing || st.failed.is_some() {
        return None;
    }
    let recent_after = now_ms.saturating_sub(config.min_compaction_lag_ms) as i64;
    let last = *st.segments.keys().next_back()?;
    // Kafka's cleaner stops at the first unstable offset: records of an undecided
    // transaction are neither committed nor aborted yet.
    let first_open = st.producers.first_open();
    let mut segments = Vec::new();
    for seg in st.segments.values() {
        // A prefix of closed, finalized segments older than min.compaction.lag.ms.
        let too_recent = config.min_compaction_lag_ms > 0 && seg.max_timestamp > recent_after;
        let undecided = first_open.is_some_and(|first| seg.end_offset > first);
        if seg.base == last || !seg.finalized || too_recent || undecided {
            break;
        }
        // Cleanable segments stay a gap-free prefix, so merged groups cover exactly the
        // segments they replace.
        let Some(file) = seg.file.clone().filter(|_| seg.size > 0) else {
            break;
        };
        segments.push(Cleanable {
            base: seg.base,
            end_offset: seg.end_offset,
            size: seg.size,
            created_ms: seg.created_ms,
            file,
        });
    }
    if segments.is_empty() {
        return None;
    }
    let range_end = segments.last().map_or(st.log_start, |s| s.end_offset);
    let txns = TxnView::new(
        st.txns
            .aborted_between(st.log_start, range_end, crate::txn::ABORTED_TXNS_MAX),
        st.txns.complete_from(),
    );
    let dirty_from = st.cleaner.cleaned_end.max(st.log_start);
    let (clean, dirty): (Vec<&Cleanable>, Vec<&Cleanable>) =
        segments.iter().partition(|s| s.end_offset <= dirty_from);
    Some(Plan {
        dir: st.dir.clone(),
        clean_bytes: clean.iter().map(|s| s.size).sum(),
        dirty_bytes: dirty.iter().map(|s| s.size).sum(),
        segments,
        cleaner: st.cleaner.clone(),
        dirty_from,
        producers: st.producers.clone(),
        txns,
        forgets_persisted: st.aborted_forgets_persisted == st.aborted_forgets,
        index_interval_bytes: config.index_interval_bytes,
        segment_bytes_max: config.segment_bytes_max,
        delete_retention_ms: config.delete_retention_ms,
        max_compaction_lag_ms: config.max_compaction_lag_ms,
        ratio_ppm: config.min_cleanable_dirty_ratio_ppm,
    })
}

/// A cleanable segment kept tombstones whose `delete.retention.ms` has passed.
fn tombstones_due(plan: &Plan, now_ms: u64) -> bool {
    plan.segments.iter().any(|s| {
        plan.cleaner.segments.get(&s.base).is_some_and(|c| {
            c.tombstones && now_ms >= c.first_cleaned_ms.saturating_add(plan.delete_retention_ms)
        })
    })
}

/// `max.compaction.lag.ms` has passed since the first dirty record's timestamp.
async fn lag_forced(plan: &Plan, now_ms: u64) -> Result<bool, LogError> {
    if plan.max_compaction_lag_ms >= i64::MAX as u64 || plan.dirty_bytes == 0 {
        return Ok(false);
    }
    let Some(first_dirty) = plan
        .segments
        .iter()
        .find(|s| s.end_offset > plan.dirty_from)
    else {
        return Ok(false);
    };
    let path = plan.dir.join(segment::log_name(first_dirty.base));
    let read = first_dirty
        .file
        .read_at_aligned(0, files::BLOCK_BYTES as usize)
        .await
        .map_err(|e| files::glommio_io(&path, e))?;
    let first_ms = batch::parse_header(&read)
        .map(|h| h.base_timestamp.get())
        .ok()
        .filter(|ts| *ts >= 0)
        .map_or(first_dirty.created_ms, |ts| ts as u64);
    Ok(now_ms.saturating_sub(first_ms) > plan.max_compaction_lag_ms)
}

/// Maps the keys of the dirty section, segment by segment, until the map is full.
/// Returns the map and the offset it covers up to.
async fn build_map(plan: &Plan, map_bytes: usize) -> Result<(OffsetMap, Offset), LogError> {
    let mut map = OffsetMap::with_bytes(map_bytes);
    let mut map_end = plan.dirty_from;
    for seg in plan
        .segments
        .iter()
        .filter(|s| s.end_offset > plan.dirty_from)
    {
        let path = plan.dir.join(segment::log_name(seg.base));
        let mut reader = SegmentReader::new(&seg.file, &path, seg.size);
        while let Some(run) = reader.next().await? {
            for (_, header, bytes) in BatchIter::new(run.bytes()) {
                if header.next_offset() <= plan.dirty_from {
                    continue;
                }
                let keys = match compact::batch_kind(&header, &plan.txns) {
                    BatchKind::Data => header.record_count.get().max(0) as usize,
                    BatchKind::Aborted | BatchKind::Opaque => 0,
                };
                if !map.has_room(keys) {
                    return Ok((map, map_end));
                }
                if let Err(e) = compact::map_batch(&mut map, &header, bytes, &plan.txns) {
                    tracing::warn!(segment = %path.display(), offset = %header.base_offset(), error = %e, "batch with malformed records is kept whole");
                }
                map_end = header.next_offset();
            }
            glommio::yield_if_needed().await;
        }
        map_end = map_end.max(seg.end_offset);
    }
    Ok((map, map_end))
}

/// A rewritten segment, durable under its `.cleaned` names.
#[derive(Debug)]
struct NewSegment {
    segment: Segment,
    file: Rc<DmaFile>,
}

#[derive(Debug)]
struct Rewrite {
    /// `None`: nothing would change, nothing was written.
    new: Option<NewSegment>,
    /// Tombstones the segment holds after the rewrite.
    tombstones: u64,
}

fn cleaned_name(name: &str) -> String {
    format!("{name}.cleaned")
}

/// Filters every batch of a group of segments by `rule` into one `<base>.log.cleaned`
/// (the base of the first) and writes its indexes beside it. An emptied batch stays
/// (header only) when it is the group's last, which keeps the end offset, or its
/// producer's newest, which keeps the producer's sequence across a replay (Kafka's rule).
async fn rewrite_segments(
    plan: &Plan,
    group: &[&Cleanable],
    rule: &RetainRule<'_>,
    markers: &mut MarkerPass<'_>,
) -> Result<Rewrite, LogError> {
    let (first, end_offset) = match (group.first(), group.last()) {
        (Some(f), Some(l)) => (*f, l.end_offset),
        _ => {
            return Ok(Rewrite {
                new: None,
                tombstones: 0,
            })
        }
    };
    let out_path = plan.dir.join(cleaned_name(&segment::log_name(first.base)));
    files::remove_if_exists(&out_path)?;
    let mut writer = SegmentWriter::new(
        files::open_rw(&out_path, true).await?,
        &out_path,
        Segment::new(first.base, first.created_ms),
        plan.index_interval_bytes,
    );
    let (mut changed, mut tombstones) = (group.len() > 1, 0u64);
    for seg in group {
        markers.expired = rule.markers_expired.contains(&seg.base);
        let path = plan.dir.join(segment::log_name(seg.base));
        let mut reader = SegmentReader::new(&seg.file, &path, seg.size);
        while let Some(run) = reader.next().await? {
            for (_, header, bytes) in BatchIter::new(run.bytes()) {
                match compact::filter_batch(rule, markers, &header, bytes) {
                    Filtered::Whole { tombstones: t } => {
                        tombstones += u64::from(t);
                        writer.push(&header, bytes);
                    }
                    Filtered::Rebuilt {
                        bytes,
                        tombstones: t,
                    } => {
                        tombstones += u64::from(t);
                        changed = true;
                        writer.push_owned(bytes)?;
                    }
                    Filtered::Empty { header_only } => {
                        changed = true;
                        let last_of_group = header.next_offset() == end_offset;
                        let last_of_producer = header.producer_id.get() >= 0
                            && plan.producers.last_offset(header.producer_id.get())
                                == Some(header.last_offset());
                        if last_of_group || last_of_producer {
                            writer.push_owned(header_only)?;
                        }
                    }
                }
            }
            writer.write_full_blocks().await?;
            glommio::yield_if_needed().await;
        }
    }
    if !changed {
        writer.discard().await?;
        return Ok(Rewrite {
            new: None,
            tombstones,
        });
    }
    let new = writer.finish(end_offset).await?;
    let (index, time) = new
        .segment
        .index_bytes(new.segment.size, new.segment.end_offset);
    for (name, bytes) in [
        (segment::index_name(first.base), index),
        (segment::time_index_name(first.base), time),
    ] {
        // Synced, not renamed: the swap's directory fsyncs order the renames.
        files::write_synced(&plan.dir.join(cleaned_name(&name)), &bytes).await?;
    }
    Ok(Rewrite {
        new: Some(new),
        tombstones,
    })
}

fn remove_cleaned(dir: &Path, base: Offset) -> Result<(), LogError> {
    for name in [
        segment::log_name(base),
        segment::index_name(base),
        segment::time_index_name(base),
    ] {
        files::remove_if_exists(&dir.join(cleaned_name(&name)))?;
    }
    Ok(())
}

/// A merged segment's name between its commit and its final rename: recovery finishes
/// such a swap (removes the segments it covers, renames it to `<base>.log`).
pub(crate) fn swap_name(base: Offset) -> String {
    format!("{}.swap", segment::log_name(base))
}

/// Puts the rewritten segments in place of the old ones (see the module header for the
/// order), all under one `io_lock` hold so the directory is synced four times per pass.
/// A group any of whose segments is no longer the log's (retention, truncation, close)
/// is skipped and its rewrite deleted. Returns how many groups were swapped.
async fn swap(
    shared: &Rc<LogShared>,
    dir: &Path,
    rewritten: Vec<(Vec<&Cleanable>, NewSegment)>,
) -> Result<usize, LogError> {
    if rewritten.is_empty() {
        return Ok(0);
    }
    let _permit = shared
        .io_lock
        .acquire_permit(1)
        .await
        .map_err(|e| LogError::Offline(e.to_string()))?;
    let (current, stale): (Vec<_>, Vec<_>) = {
        let st = shared.state.borrow();
        let last = st.segments.keys().next_back().copied();
        let usable = !st.closing && st.failed.is_none();
        rewritten.into_iter().partition(|(group, _)| {
            usable
                && group.iter().all(|old| {
                    let same = st.segments.get(&old.base).is_some_and(|s| {
                        s.finalized && s.file.as_ref().is_some_and(|f| Rc::ptr_eq(f, &old.file))
                    });
                    same && last != Some(old.base)
                })
        })
    };
    for (group, new) in stale {
        drop(new.segment);
        if let Ok(file) = Rc::try_unwrap(new.file) {
            let _ = file.close().await;
        }
        remove_cleaned(dir, group[0].base)?;
    }
    let swaps: Vec<Swap> = current
        .iter()
        .map(|(group, new)| Swap {
            bases: group.iter().map(|s| s.base).collect(),
            file: new.file.clone(),
        })
        .collect();
    let mut replaced = Vec::new();
    {
        let mut st = shared.state.borrow_mut();
        st.swapping = swaps.iter().flat_map(|s| s.bases.iter().copied()).collect();
        for (group, new) in current {
            for old in &group {
                st.recent.retain(|c| c.segment_base != old.base);
                replaced.extend(st.segments.remove(&old.base));
            }
            st.segments.insert(group[0].base, new.segment);
            st.touch_indexes(group[0].base);
        }
    }
    // Index loads that started before `swapping` was set finish first.
    let gate = shared
        .index_gate
        .acquire_permit(crate::log::INDEX_LOADS_MAX as u64)
        .await;
    let renamed = match gate {
        Ok(_all) => rename_into_place(dir, &swaps).await,
        Err(e) => Err(LogError::Offline(e.to_string())),
    };
    shared.state.borrow_mut().swapping.clear();
    let count = swaps.len();
    drop(swaps);
    for file in replaced.into_iter().filter_map(|s| s.file) {
        if let Ok(file) = Rc::try_unwrap(file) {
            let _ = file.close().await;
        }
    }
    renamed.map(|()| count)
}

/// One rewrite to put in place: the bases of the segments it replaces (the first is its
/// own) and its file (open under the `.cleaned` name).
struct Swap {
    bases: Vec<Offset>,
    file: Rc<DmaFile>,
}

/// The file steps of a swap, each followed by a directory fsync so they reach the disk
/// in this order: merged rewrites renamed to `.swap` (their commit point); old indexes and
/// the merged-away segments removed; rewrites renamed to `<base>.log` (a single
/// segment's commit point); new indexes renamed in.
async fn rename_into_place(dir: &Path, swaps: &[Swap]) -> Result<(), LogError> {
    let index_names = |base: Offset| [segment::index_name(base), segment::time_index_name(base)];
    for s in swaps.iter().filter(|s| s.bases.len() > 1) {
        files::rename_file(&s.file, &dir.join(swap_name(s.bases[0]))).await?;
    }
    files::sync_dir(dir).await?;
    for s in swaps {
        for (i, base) in s.bases.iter().enumerate() {
            for name in index_names(*base) {
                files::remove_if_exists(&dir.join(name))?;
            }
            if i > 0 {
                files::remove_if_exists(&dir.join(segment::log_name(*base)))?;
            }
        }
    }
    files::sync_dir(dir).await?;
    for s in swaps {
        files::rename_file(&s.file, &dir.join(segment::log_name(s.bases[0]))).await?;
    }
    files::sync_dir(dir).await?;
    for s in swaps {
        for name in index_names(s.bases[0]) {
            let from = dir.join(cleaned_name(&name));
            std::fs::rename(&from, dir.join(&name)).map_err(|e| files::io_err(&from, e))?;
        }
    }
    files::sync_dir(dir).await
}

/// Finishes a merge a crash interrupted after its commit: every `<base>.log.swap` in
/// `dir` replaces the segments whose base offsets it covers and becomes `<base>.log`
/// (its indexes are rebuilt later). Called by recovery before it lists segments.
pub(crate) async fn finish_interrupted_swaps(dir: &Path) -> Result<(), LogError> {
    let mut swaps = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| files::io_err(dir, e))? {
        let name = entry
            .map_err(|e| files::io_err(dir, e))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some(base) = name.strip_suffix(".swap").and_then(segment::parse_log_name) {
            swaps.push(base);
        }
    }
    for base in swaps {
        let path = dir.join(swap_name(base));
        let file = files::open_rw(&path, false).await?;
        let len = file
            .file_size()
            .await
            .map_err(|e| files::glommio_io(&path, e))?;
        let mut merged = Segment::new(base, files::now_ms());
        // The file was synced before its rename: a clean scan finds where it ends.
        let scanned = segment::scan(
            &file,
            &path,
            &mut merged,
            len,
            u32::MAX,
            segment::Continuity::Increasing,
            &mut |_, _| {},
        )
        .await?;
        let _ = file.close().await;
        if let Some(reason) = scanned.stopped_by {
            tracing::warn!(file = %path.display(), %reason, "interrupted compaction swap is damaged; keeping its valid prefix");
        }
        for covered in std::fs::read_dir(dir)
            .map_err(|e| files::io_err(dir, e))?
            .filter_map(|e| segment::parse_log_name(&e.ok()?.file_name().to_string_lossy()))
            .filter(|b| *b >= base && *b < merged.end_offset)
        {
            Segment::remove_files(dir, covered)?;
        }
        files::sync_dir(dir).await?;
        let target = dir.join(segment::log_name(base));
        std::fs::rename(&path, &target).map_err(|e| files::io_err(&path, e))?;
        files::sync_dir(dir).await?;
        tracing::warn!(segment = %target.display(), "finished a compaction swap a crash interrupted");
    }
    Ok(())
}

/// Reads a closed segment as runs of whole batches, with the next window's read in
/// flight while the caller works on the current one.
struct SegmentReader<'a> {
    file: Rc<DmaFile>,
    path: &'a Path,
    pos: u64,
    size: u64,
    /// The read of the window after the last run: (position, length, its task).
    ahead: Option<(u64, usize, ReadAhead)>,
}

type ReadAhead = glommio::task::JoinHandle<Result<ReadResult, glommio::GlommioError<()>>>;

/// Whole batches from one read: `read[skip..skip + len]`.
struct Run {
    read: ReadResult,
    skip: usize,
    len: usize,
}

impl Run {
    fn bytes(&self) -> &[u8] {
        &self.read[self.skip..self.skip + self.len]
    }
}

impl<'a> SegmentReader<'a> {
    fn new(file: &Rc<DmaFile>, path: &'a Path, size: u64) -> Self {
        SegmentReader {
            file: file.clone(),
            path,
            pos: 0,
            size,
            ahead: None,
        }
    }

    /// Where the window holding `pos` starts and how long it is (`want` bytes past `pos`).
    fn window(&self, want: u64) -> (u64, usize) {
        let start = align_down(self.pos);
        let len = align_up((self.pos - start + want).min(self.size - start));
        (start, len as usize)
    }

    async fn read(&mut self, start: u64, len: usize) -> Result<ReadResult, LogError> {
        let ahead = self.ahead.take();
        let result = match ahead {
            Some((s, l, task)) if (s, l) == (start, len) => task.await.unwrap_or_else(|| {
                Err(glommio::GlommioError::IoError(std::io::Error::other(
                    "read-ahead task was cancelled",
                )))
            }),
            _ => self.file.read_at_aligned(start, len).await,
        };
        result.map_err(|e| files::glommio_io(self.path, e))
    }

    /// Starts reading the window after the current position.
    fn read_ahead(&mut self) {
        if self.pos >= self.size {
            return;
        }
        let (start, len) = self.window(IO_BYTES);
        let file = self.file.clone();
        let task =
            glommio::spawn_local(async move { file.read_at_aligned(start, len).await }).detach();
        self.ahead = Some((start, len, task));
    }

    /// The next run of whole batches; `None` at the segment's end. A closed segment was
    /// verified when it was written or recovered, so a batch that does not parse here is
    /// an error, never skipped.
    async fn next(&mut self) -> Result<Option<Run>, LogError> {
        if self.pos >= self.size {
            return Ok(None);
        }
        let skip = (self.pos - align_down(self.pos)) as usize;
        let mut want = IO_BYTES;
        loop {
            let (start, len) = self.window(want);
            let read = self.read(start, len).await?;
            let end = read.len().min((self.size - start) as usize);
            let bytes = read.get(skip..end).unwrap_or_default();
            let mut iter = BatchIter::new(bytes);
            let whole = iter.by_ref().count();
            let used = iter.position();
            if whole > 0 {
                self.pos += used as u64;
                self.read_ahead();
                return Ok(Some(Run {
                    read,
                    skip,
                    len: used,
                }));
            }
            match iter.remainder_error() {
                Some(batch::BatchError::Truncated { needed, .. })
                    if *needed as u64 > want && self.pos + *needed as u64 <= self.size =>
                {
                    want = *needed as u64;
                }
                other => {
                    return Err(files::io_err(
                        self.path,
                        std::io::Error::other(format!(
                            "unreadable batch at position {} during compaction: {other:?}",
                            self.pos
                        )),
                    ))
                }
            }
        }
    }
}

/// Writes a segment rewrite: batches are staged, whole blocks written with direct I/O,
/// the indexes built as they go (the same bookkeeping appends and recovery use).
struct SegmentWriter {
    file: DmaFile,
    path: PathBuf,
    segment: Segment,
    interval: u32,
    staged: Vec<u8>,
    /// File position of `staged[0]` (block aligned).
    staged_pos: u64,
}

impl SegmentWriter {
    fn new(file: DmaFile, path: &Path, segment: Segment, interval: u32) -> Self {
        SegmentWriter {
            file,
            path: path.to_path_buf(),
            segment,
            interval,
            staged: Vec::with_capacity(IO_BYTES as usize * 2),
            staged_pos: 0,
        }
    }

    fn push(&mut self, header: &BatchHeader, bytes: &[u8]) {
        let position = self.staged_pos + self.staged.len() as u64;
        self.segment.note_batch(position, header, self.interval);
        self.staged.extend_from_slice(bytes);
    }

    fn push_owned(&mut self, bytes: Vec<u8>) -> Result<(), LogError> {
        let header = batch::check_framing(&bytes).map_err(|e| {
            files::io_err(
                &self.path,
                std::io::Error::other(format!("rebuilt batch: {e}")),
            )
        })?;
        self.push(&header, &bytes);
        Ok(())
    }

    async fn write_at(&mut self, bytes: usize) -> Result<(), LogError> {
        let mut buf = files::dma_buffer(bytes);
        let have = self.staged.len().min(bytes);
        buf.as_bytes_mut()[..have].copy_from_slice(&self.staged[..have]);
        buf.as_bytes_mut()[have..].fill(0);
        let written = self
            .file
            .write_at(buf, self.staged_pos)
            .await
            .map_err(|e| files::glommio_io(&self.path, e))?;
        if written < bytes {
            return Err(files::io_err(
                &self.path,
                std::io::Error::other(format!("short write: {written} of {bytes} bytes")),
            ));
        }
        self.staged.drain(..have);
        self.staged_pos += bytes as u64;
        Ok(())
    }

    /// Writes the staged whole blocks once there are enough of them.
    async fn write_full_blocks(&mut self) -> Result<(), LogError> {
        if (self.staged.len() as u64) < IO_BYTES {
            return Ok(());
        }
        let blocks = align_down(self.staged.len() as u64) as usize;
        self.write_at(blocks).await
    }

    /// Writes the rest (the last block zero padded), cuts the file to its size, syncs.
    async fn finish(mut self, end_offset: Offset) -> Result<NewSegment, LogError> {
        if self.segment.end_offset != end_offset {
            return Err(files::io_err(
                &self.path,
                std::io::Error::other(format!(
                    "rewrite ends at offset {} instead of {end_offset}",
                    self.segment.end_offset
                )),
            ));
        }
        let size = self.staged_pos + self.staged.len() as u64;
        if !self.staged.is_empty() {
            let padded = align_up(self.staged.len() as u64) as usize;
            self.write_at(padded).await?;
        }
        files::truncate_synced(&self.file, &self.path, size).await?;
        let mut segment = self.segment;
        segment.seal_time_index();
        segment.written_size = size;
        segment.allocated_bytes = size;
        segment.finalized = true;
        let file = Rc::new(self.file);
        segment.file = Some(file.clone());
        Ok(NewSegment { segment, file })
    }

    async fn discard(self) -> Result<(), LogError> {
        let _ = self.file.close().await;
        files::remove_if_exists(&self.path)
    }
}
