//! Appends: a leader's (validated, offsets and epoch stamped, producer sequences
//! checked) and a follower's (batches kept as the leader stored them).

use super::{AppendInfo, LogState, PartitionLog};
use crate::batch::{self, BatchHeader};
use crate::config::TimestampType;
use crate::error::AppendError;
use crate::files::now_ms;
use crate::producer::{ProducerBatch, ProducerEvent, ProducerState, Verdict};
use crate::txn::Marker;
use crate::types::{LeaderEpoch, Offset};

impl LogState {
    /// Checks the idempotent producers' sequences of a request. `Some` when the whole
    /// request is a retry of batches already in the log.
    pub(super) fn check_producers(
        &self,
        headers: &[(usize, BatchHeader)],
    ) -> Result<Option<AppendInfo>, AppendError> {
        let mut next = self.next_offset;
        let mut scratch: Option<ProducerState> = None;
        let mut duplicates = Vec::new();
        for (_, header) in headers {
            let Some(batch) = ProducerBatch::from_header(header, next) else {
                next = next.plus(i64::from(header.last_offset_delta.get()) + 1);
                continue;
            };
            let state = scratch.as_ref().unwrap_or(&self.producers);
            match state.check(&batch)? {
                Verdict::Append => {
                    if headers.len() > 1 {
                        scratch
                            .get_or_insert_with(|| self.producers.clone())
                            .apply(batch);
                    }
                }
                Verdict::Duplicate(original) => duplicates.push(original),
            }
            next = next.plus(i64::from(header.last_offset_delta.get()) + 1);
        }
        match (duplicates.first(), duplicates.last()) {
            (Some(first), Some(last)) if duplicates.len() == headers.len() => {
                Ok(Some(AppendInfo {
                    base_offset: first.first_offset,
                    last_offset: last.last_offset,
                    max_timestamp: -1,
                    record_count: (last.last_offset.0 - first.first_offset.0 + 1) as u32,
                    batch_count: headers.len() as u32,
                    log_start_offset: self.log_start,
                    duplicate: true,
                    log_append_time_ms: None,
                }))
            }
            (Some(dup), _) => Err(AppendError::OutOfOrderSequence {
                producer_id: dup.producer_id,
                expected: dup.last_seq.wrapping_add(1),
                got: dup.first_seq,
            }),
            _ => Ok(None),
        }
    }

    /// Refuses CreateTime batches whose timestamps fall outside the topic's window.
    pub(super) fn check_timestamps(
        &self,
        headers: &[(usize, BatchHeader)],
        now: i64,
    ) -> Result<(), AppendError> {
        if self.config.timestamp_type == TimestampType::LogAppendTime {
            return Ok(());
        }
        let earliest = self
            .config
            .timestamp_before_max_ms
            .map(|ms| now.saturating_sub(ms as i64));
        let latest = self
            .config
            .timestamp_after_max_ms
            .map(|ms| now.saturating_add(ms as i64));
        for (_, h) in headers {
            let (first, max) = (h.base_timestamp.get(), h.max_timestamp.get());
            let too_old = earliest.is_some_and(|e| first < e);
            let too_new = latest.is_some_and(|l| max > l);
            if too_old || too_new {
                return Err(AppendError::InvalidTimestamp {
                    timestamp_ms: if too_old { first } else { max },
                    now_ms: now,
                });
            }
        }
        Ok(())
    }

    /// Copies validated batches in, assigning offsets; refuses (appending nothing) only
    /// for producer sequence errors, and answers retries with their original offsets.
    pub(super) fn append_batches(
        &mut self,
        records: &[u8],
        headers: &[(usize, BatchHeader)],
        epoch: LeaderEpoch,
    ) -> Result<(AppendInfo, usize), AppendError> {
        if let Some(duplicate) = self.check_producers(headers)? {
            return Ok((duplicate, 0));
        }
        let now = now_ms();
        self.check_timestamps(headers, now as i64)?;
        let append_time =
            (self.config.timestamp_type == TimestampType::LogAppendTime).then_some(now as i64);
        let mut queued = 0;
        let base_offset = self.next_offset;
        // No assertion that `epoch` is at least the log's latest: the epoch field of a
        // stored batch is outside its CRC, so a flipped bit on disk can leave a latest epoch
        // no leader ever had (engine/tests/crash.rs); the cache ignores older epochs.
        let mut info = self.new_info(base_offset, base_offset, headers.len(), append_time);
        for (start, header) in headers {
            let total = header.total_bytes();
            queued += self.make_room(total, now, false);
            let base = self.next_offset;
            let next = base.plus(i64::from(header.last_offset_delta.get()) + 1);
            let next = log_end_after(self.next_offset, base, next, false);
            let position = self.open.end_pos();
            let stored = self.open.push(&records[*start..start + total], next);
            batch::stamp(stored, base, epoch);
            if let Some(t) = append_time {
                batch::set_log_append_time(stored, t);
            }
            let mut stamped = *header;
            stamped.base_offset.set(base.0);
            if let Some(t) = append_time {
                stamped.max_timestamp.set(t);
            }
            let event = ProducerEvent::from_stored(&stamped, stored, base);
            self.note_stored(position, &stamped, epoch, next, event);
            info.last_offset = next.plus(-1);
            info.max_timestamp = info.max_timestamp.max(stamped.max_timestamp.get());
            info.record_count += header.record_count.get() as u32;
        }
        let assigned: i64 = headers
            .iter()
            .map(|(_, h)| i64::from(h.last_offset_delta.get()) + 1)
            .sum();
        assert_eq!(
            self.next_offset,
            base_offset.plus(assigned),
            "an append of {assigned} offsets from {base_offset} must end the log there"
        );
        Ok((info, queued))
    }

    /// Where each replicated batch must start: the log end for the first, the previous
    /// batch's end after it; a compacted log may skip ahead (offsets the leader's
    /// compaction removed), within the offset range one segment's index can address.
    pub(super) fn check_replica_offsets(
        &self,
        headers: &[(usize, BatchHeader)],
    ) -> Result<(), AppendError> {
        let gaps_allowed = self.config.cleanup_policy.compacts();
        let mut expected = self.next_offset;
        for (_, header) in headers {
            let got = header.base_offset();
            let skip = got.0.checked_sub(expected.0).unwrap_or(-1);
            let fits = skip == 0 || (gaps_allowed && (1..=REPLICA_GAP_MAX).contains(&skip));
            if !fits {
                return Err(AppendError::UnexpectedOffset { expected, got });
            }
            expected = header.next_offset();
        }
        Ok(())
    }

    /// Copies a leader's stored batches in unchanged (offsets and epochs kept); the
    /// segment, index, epoch cache and producer state see them as they would an append.
    pub(super) fn append_replica_batches(
        &mut self,
        records: &[u8],
        headers: &[(usize, BatchHeader)],
    ) -> Result<(AppendInfo, usize), AppendError> {
        self.check_replica_offsets(headers)?;
        let gaps_allowed = self.config.cleanup_policy.compacts();
        let now = now_ms();
        let mut queued = 0;
        let first = headers
            .first()
            .map_or(self.next_offset, |(_, h)| h.base_offset());
        let mut info = self.new_info(first, first.plus(-1), headers.len(), None);
        for (start, header) in headers {
            let total = header.total_bytes();
            // Offsets skipped by a compacted leader must stay addressable (u32) from the
            // segment's base.
            let active = self.active();
            let far = header.last_offset().0 - active.base.0 > REPLICA_GAP_MAX;
            queued += self.make_room(total, now, far && active.size > 0);
            let (base, next) = (header.base_offset(), header.next_offset());
            let next = log_end_after(self.next_offset, base, next, gaps_allowed);
            let position = self.open.end_pos();
            let bytes = &records[*start..start + total];
            self.open.push(bytes, next);
            let event = ProducerEvent::from_stored(header, bytes, base);
            self.note_stored(position, header, header.leader_epoch(), next, event);
            info.last_offset = header.last_offset();
            info.max_timestamp = info.max_timestamp.max(header.max_timestamp.get());
            info.record_count += header.record_count.get().max(0) as u32;
        }
        assert_eq!(
            Some(self.next_offset),
            headers.last().map(|(_, h)| h.next_offset()),
            "a follower's append must end the log where its last batch ends"
        );
        Ok((info, queued))
    }

    /// What an append reports before its batches are counted in.
    fn new_info(
        &self,
        base_offset: Offset,
        last_offset: Offset,
        batches: usize,
        log_append_time_ms: Option<i64>,
    ) -> AppendInfo {
        AppendInfo {
            base_offset,
            last_offset,
            max_timestamp: -1,
            record_count: 0,
            batch_count: batches as u32,
            log_start_offset: self.log_start,
            duplicate: false,
            log_append_time_ms,
        }
    }

    /// Rolls the segment when due (or when `force_roll`), then makes room in the open
    /// chunk for a batch of `total` bytes. Returns the bytes queued for the flusher.
    fn make_room(&mut self, total: usize, now: u64, force_roll: bool) -> usize {
        let mut queued = 0;
        if force_roll || self.needs_roll(total as u64, now) {
            queued += self.roll();
        }
        if self.open.remaining() < total {
            queued += self.seal_full(total);
        }
        queued
    }

    /// The active segment's index, the epoch cache and the producer state (with the
    /// batch's producer `event`) take a batch just stored at `position` (its header as
    /// stored); the log end moves to `next`. A marker ends its producer's transaction.
    fn note_stored(
        &mut self,
        position: u64,
        stored: &BatchHeader,
        epoch: LeaderEpoch,
        next: Offset,
        event: Option<ProducerEvent>,
    ) {
        let base = stored.base_offset();
        let interval = self.config.index_interval_bytes;
        self.active_mut().note_batch(position, stored, interval);
        if self.epochs.observe(epoch, base) {
            self.epochs.assert_ordered();
            self.epochs_dirty = true;
        }
        if let Some(event) = event {
            if let Some(done) = self.producers.apply_event(event) {
                self.txns.complete(done);
            }
            self.producer_pending.push_back(event);
        }
        self.next_offset = next;
    }
}

impl PartitionLog {
    /// Validates every batch in `records` (all or nothing), assigns offsets, writes the
    /// base offset and `leader_epoch` into each header and queues them for writing.
    /// Waits only when the log's write buffer is full; does not wait for the disk: use
    /// [`Self::wait_durable`] for that.
    pub async fn append(
        &self,
        records: &[u8],
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo, AppendError> {
        let (max, compacted, codec) = {
            let st = self.shared.state.borrow();
            let c = &st.config;
            (
                c.max_message_bytes as usize,
                c.cleanup_policy.compacts(),
                c.compression.codec(),
            )
        };
        let headers = validate_all(records, max)?;
        if headers.iter().any(|(_, h)| h.is_control()) {
            return Err(AppendError::ControlBatch);
        }
        if compacted {
            check_keys(records, &headers)?;
        }
        let recompressed = codec.and_then(|codec| recompress_all(records, &headers, codec));
        let recompressed = recompressed.transpose()?;
        let (records, headers) = match &recompressed {
            // Kafka applies max.message.bytes to the batch as stored.
            Some(stored) => (&stored[..], validate_all(stored, max)?),
            None => (records, headers),
        };
        self.wait_for_room().await?;
        let (info, queued) =
            self.shared
                .state
                .borrow_mut()
                .append_batches(records, &headers, leader_epoch)?;
        self.shared.shard.pending_changed(queued, 0);
        self.shared.flusher_wake.notify();
        Ok(info)
    }

    /// Appends a transaction marker (the coordinator's WriteTxnMarkers, on the leader):
    /// the producer's open transaction here ends, committed or aborted. Refused, appending
    /// nothing, for a producer epoch or coordinator epoch older than the producer's last
    /// (a fenced producer or a coordinator that lost its partition).
    pub async fn append_marker(
        &self,
        marker: Marker,
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo, AppendError> {
        let bytes = marker.to_batch(now_ms() as i64);
        let headers = validate_all(&bytes, usize::MAX)?;
        self.wait_for_room().await?;
        let (info, queued) = {
            let mut st = self.shared.state.borrow_mut();
            st.producers.check_marker(&marker)?;
            st.append_batches(&bytes, &headers, leader_epoch)?
        };
        self.shared.shard.pending_changed(queued, 0);
        self.shared.flusher_wake.notify();
        Ok(info)
    }

    /// The last stable offset under high watermark `hw`: a `read_committed` consumer reads
    /// below it only (no open transaction and no undecided one starts below it).
    pub fn last_stable_offset(&self, hw: Offset) -> Offset {
        let mut st = self.shared.state.borrow_mut();
        let first_open = st.producers.first_open();
        st.txns.last_stable_offset(hw, first_open)
    }

    /// Where `producer_id`'s open transaction in this log began, if it has one (a
    /// transactional write that would open one is verified first, KIP-890).
    pub fn open_transaction(&self, producer_id: i64) -> Option<Offset> {
        self.shared.state.borrow().producers.open_txn(producer_id)
    }

    /// The producers this log knows (DescribeProducers), at most `max`.
    pub fn producers(&self, max: usize) -> Vec<crate::producer::ProducerView> {
        self.shared.state.borrow().producers.views(max)
    }

    /// The aborted transactions a `read_committed` fetch of `[from, to)` must list (at
    /// most `max`), in marker order.
    pub fn aborted_transactions(
        &self,
        from: Offset,
        to: Offset,
        max: usize,
    ) -> Vec<crate::txn::AbortedTxn> {
        self.shared
            .state
            .borrow()
            .txns
            .aborted_between(from, to, max)
    }

    /// A follower's append: batches exactly as the leader stored them (base offsets and
    /// partition leader epochs kept, never stamped again), all or nothing. The first batch
    /// must start at the log end and each next one where the previous ended (a compacted
    /// log may skip offsets compaction removed on the leader, but never go back), else
    /// [`AppendError::UnexpectedOffset`]. Framing and CRC32C are checked; the size limit,
    /// timestamps, keys and producer sequences are not: the leader checked them when it
    /// took the batches, and a follower mirrors it. The epoch cache notes each batch's
    /// epoch at its base offset and idempotent producer state follows the batches, so
    /// this log can answer OffsetForLeaderEpoch and deduplicate if it becomes leader.
    /// Waits only when the write buffer is full, like [`Self::append`].
    pub async fn append_replica(&self, records: &[u8]) -> Result<AppendInfo, AppendError> {
        let headers = validate_replica(records)?;
        self.wait_for_room().await?;
        let (info, queued) = self
            .shared
            .state
            .borrow_mut()
            .append_replica_batches(records, &headers)?;
        self.shared.shard.pending_changed(queued, 0);
        self.shared.flusher_wake.notify();
        Ok(info)
    }

    /// Waits until this log's and the shard's write buffers have room; refuses when the
    /// log failed, is frozen (truncation, reset) or is closing.
    pub(super) async fn wait_for_room(&self) -> Result<(), AppendError> {
        let buffer_max = self.shared.shard.config.write_buffer_bytes_max;
        loop {
            let wait = {
                let st = self.shared.state.borrow();
                if let Some(reason) = &st.failed {
                    return Err(AppendError::Io(reason.clone()));
                }
                if let Some(why) = st.frozen.or(st.closing.then_some("closing")) {
                    return Err(AppendError::Unavailable(why));
                }
                // This log's buffers first (its own flusher frees them), then the shard's.
                // Waiting on this log only helps while it has writes queued.
                (st.pending_bytes > 0 && st.buffered_bytes() >= buffer_max)
                    .then(|| self.shared.written.wait_for(self.shared.written.get() + 1))
                    .or_else(|| self.shared.shard.wait_for_room())
            };
            match wait {
                Some(w) => {
                    self.shared.flusher_wake.notify();
                    let _ = w.await;
                }
                None => return Ok(()),
            }
        }
    }
}

/// The largest offset skip a replicated batch of a compacted log may make: offsets within
/// one segment are addressed relative to its base as `u32`.
pub(super) const REPLICA_GAP_MAX: i64 = i32::MAX as i64;

/// Validates every batch of a produce request's records; returns each batch's position
/// and header.
pub(super) fn validate_all(
    records: &[u8],
    max_message_bytes: usize,
) -> Result<Vec<(usize, BatchHeader)>, AppendError> {
    if records.is_empty() {
        return Err(AppendError::Corrupt(batch::BatchError::Empty));
    }
    let mut out = Vec::with_capacity(1);
    let mut pos = 0;
    while pos < records.len() {
        let header = batch::validate(&records[pos..], max_message_bytes)?;
        out.push((pos, header));
        pos += header.total_bytes();
    }
    Ok(out)
}

/// Checks the batches a leader sent a follower: framing, CRC32C, and record counts that fit
/// the offset range (compaction on the leader may have emptied batches, keeping their
/// range, so fewer records than offsets is allowed). No size limit: the leader applied it.
pub(super) fn validate_replica(records: &[u8]) -> Result<Vec<(usize, BatchHeader)>, AppendError> {
    if records.is_empty() {
        return Err(AppendError::Corrupt(batch::BatchError::Empty));
    }
    let mut out = Vec::with_capacity(4);
    let mut pos = 0;
    while pos < records.len() {
        let header = batch::check_framing(&records[pos..])?;
        let total = header.total_bytes();
        batch::verify_crc(&header, &records[pos..pos + total])?;
        let (count, delta) = (header.record_count.get(), header.last_offset_delta.get());
        if count < 0 || delta < 0 || i64::from(count) > i64::from(delta) + 1 {
            return Err(AppendError::InvalidRecord(
                batch::BatchError::BadRecordCount {
                    count,
                    last_offset_delta: delta,
                },
            ));
        }
        out.push((pos, header));
        pos += total;
    }
    Ok(out)
}

/// The request's batches stored with `codec` (a topic's `compression.type`), or `None`
/// when every batch already is (control batches stay as they are).
fn recompress_all(
    records: &[u8],
    headers: &[(usize, BatchHeader)],
    codec: u8,
) -> Option<Result<Vec<u8>, AppendError>> {
    let differs = |h: &BatchHeader| !h.is_control() && h.compression() != codec;
    if !headers.iter().any(|(_, h)| differs(h)) {
        return None;
    }
    let mut out = Vec::with_capacity(records.len());
    for (start, header) in headers {
        let bytes = &records[*start..start + header.total_bytes()];
        if !differs(header) {
            out.extend_from_slice(bytes);
            continue;
        }
        match batch::recompress(bytes, header, codec) {
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => return Some(Err(AppendError::Corrupt(e))),
        }
    }
    Some(Ok(out))
}

/// A compacted log refuses keyless records (as Kafka does); compressed batches are
/// decompressed (bounded) to check them.
pub(super) fn check_keys(
    records: &[u8],
    headers: &[(usize, BatchHeader)],
) -> Result<(), AppendError> {
    for (start, header) in headers {
        if header.is_control() {
            continue;
        }
        let bytes = &records[*start..start + header.total_bytes()];
        let section = crate::compact::record_section(header, bytes)
            .map_err(|e| AppendError::Corrupt(batch::BatchError::Decompress(e)))?;
        let iter = batch::RecordIter::from_records(&section, header.record_count.get());
        let mut record_indexes = Vec::new();
        let mut count = 0u32;
        for (i, record) in iter.enumerate() {
            if record.map_err(AppendError::InvalidRecord)?.key.is_none() {
                count += 1;
                if record_indexes.len() < crate::error::RECORD_ERRORS_MAX {
                    record_indexes.push(i as u32);
                }
            }
        }
        // As Kafka's LogValidator: every invalid record of the batch is named, and the
        // first batch holding one refuses the request.
        if count > 0 {
            return Err(AppendError::KeylessRecords {
                record_indexes,
                count,
            });
        }
    }
    Ok(())
}

/// The log end after a batch `[base, next)` lands at log end `end`, with the paired
/// checks an append relies on: the batch continues the log (a follower's compacted log
/// may skip offsets the leader's compaction removed, never go back) and is not empty, so
/// offsets only ever go forward and no two batches share one.
pub(super) fn log_end_after(end: Offset, base: Offset, next: Offset, skip_allowed: bool) -> Offset {
    assert!(
        base == end || (skip_allowed && base > end),
        "batch base offset {base} does not continue the log end {end}"
    );
    assert!(next > base, "batch [{base}, {next}) holds no offset");
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_advances_the_log_end_to_its_end() {
        assert_eq!(
            log_end_after(Offset(10), Offset(10), Offset(15), false),
            Offset(15)
        );
        assert_eq!(
            log_end_after(Offset(10), Offset(12), Offset(15), true),
            Offset(15)
        );
    }

    #[test]
    #[should_panic(expected = "does not continue the log end")]
    fn an_append_that_leaves_a_hole_panics() {
        log_end_after(Offset(10), Offset(11), Offset(15), false);
    }

    #[test]
    #[should_panic(expected = "does not continue the log end")]
    fn an_append_that_goes_back_panics_even_with_gaps_allowed() {
        log_end_after(Offset(10), Offset(9), Offset(15), true);
    }

    #[test]
    #[should_panic(expected = "holds no offset")]
    fn an_empty_batch_panics() {
        log_end_after(Offset(10), Offset(10), Offset(10), false);
    }
}
