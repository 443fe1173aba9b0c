//! Reads: whole batches from an offset, timestamp lookups, and loading the indexes of
//! closed segments on demand.

use std::cell::Cell;
use std::rc::Rc;

use glommio::io::DmaFile;

use super::{PartitionLog, ReadBatches, ReadLimits};
use crate::batch::{self, BatchHeader, BatchIter};
use crate::chunk::Window;
use crate::error::{LogError, ReadError};
use crate::files::{align_down, align_up};
use crate::segment::Segment;
use crate::types::Offset;

/// What a read needs to know about a segment, taken out of the state before awaiting.
#[derive(Debug, Clone)]
pub(super) struct SegmentView {
    base: Offset,
    file: Option<Rc<DmaFile>>,
    /// Readable bytes: written and below the read bound.
    readable_len: u64,
    end_offset: Offset,
    start_pos: u64,
}

pub(super) enum Flow {
    Continue,
    Stop,
}

impl PartitionLog {
    /// Reads whole batches from `from` on: the batch holding `from` first, then the ones
    /// after it, while they fit `limits`. Offsets at the log end give an empty answer;
    /// offsets outside `[log_start, log_end]` are out of range.
    pub async fn read(&self, from: Offset, limits: ReadLimits) -> Result<ReadBatches, ReadError> {
        let upper = {
            let st = self.shared.state.borrow();
            if from < st.log_start || from > st.next_offset {
                return Err(ReadError::OffsetOutOfRange {
                    requested: from,
                    log_start: st.log_start,
                    log_end: st.next_offset,
                });
            }
            limits.max_offset.min(self.written_end_offset())
        };
        let mut out = ReadBatches::default();
        if from >= upper {
            return Ok(out);
        }
        let mut run: Option<(Window, usize, usize)> = None;
        // Bytes taken so far: sizes the next direct read to what the budget can still use.
        let taken = Cell::new(0usize);
        let want = || {
            let left = limits.max_bytes.saturating_sub(taken.get());
            if taken.get() > 0 && left < batch::HEADER_BYTES {
                0
            } else {
                (left + batch::HEADER_BYTES) as u64
            }
        };
        self.visit(from, upper, want, |window, start, header| {
            let size = header.total_bytes();
            let fits = out.bytes + size <= limits.max_bytes
                || (limits.min_one_batch
                    && out.bytes == 0
                    && out.slices.is_empty()
                    && run.is_none());
            if !fits {
                return Flow::Stop;
            }
            out.bytes += size;
            taken.set(out.bytes);
            match &mut run {
                Some((w, s, len)) if same_window(w, window) && *s + *len == start => *len += size,
                _ => {
                    if let Some((w, s, len)) = run.take() {
                        out.slices.extend(w.slice(s, len));
                    }
                    run = Some((window.clone(), start, size));
                }
            }
            Flow::Continue
        })
        .await?;
        if let Some((w, s, len)) = run {
            out.slices.extend(w.slice(s, len));
        }
        Ok(out)
    }

    /// First offset whose record timestamp is ≥ `ts_ms`, with that timestamp; `None` when
    /// no record is that new. Within a compressed batch the answer is the batch's base
    /// offset and its max timestamp (records are not decompressed here).
    pub async fn offset_for_timestamp(
        &self,
        ts_ms: i64,
    ) -> Result<Option<(Offset, i64)>, LogError> {
        let upper = self.written_end_offset();
        let base = {
            let st = self.shared.state.borrow();
            let seg = st
                .segments
                .values()
                .find(|s| s.max_timestamp >= ts_ms && s.base < upper);
            let Some(seg) = seg else { return Ok(None) };
            seg.base
        };
        self.ensure_indexes(base).await?;
        let start = {
            let st = self.shared.state.borrow();
            let Some(seg) = st.segments.get(&base) else {
                return Ok(None);
            };
            let from = seg.base.plus(i64::from(seg.time_index.lookup(ts_ms)));
            from.max(st.log_start)
        };
        let mut found = None;
        self.visit(
            start,
            upper,
            || READ_WINDOW_BYTES,
            |window, at, header| {
                if header.max_timestamp.get() < ts_ms {
                    return Flow::Continue;
                }
                let batch = &window.bytes()[at..at + header.total_bytes()];
                found = Some(match batch::record_timestamps(batch) {
                    Some(records) => records
                        .into_iter()
                        .find(|(_, t)| *t >= ts_ms)
                        .unwrap_or((header.base_offset(), header.max_timestamp.get())),
                    None => (header.base_offset(), header.max_timestamp.get()),
                });
                Flow::Stop
            },
        )
        .await
        .map_err(read_to_log_error)?;
        Ok(found.map(|(o, t)| (o.max(start), t)))
    }

    /// The offset of the record with the largest timestamp, and that timestamp (Kafka's
    /// MAX_TIMESTAMP lookup); the earliest such record when several share it.
    pub async fn max_timestamp(&self) -> Result<Option<(Offset, i64)>, LogError> {
        let best = {
            let st = self.shared.state.borrow();
            let upper = self.written_end_offset();
            st.segments
                .values()
                .filter(|s| s.base < upper && s.max_timestamp >= 0)
                .max_by_key(|s| (s.max_timestamp, -s.base.0))
                .map(|s| (s.offset_of_max_timestamp, s.max_timestamp))
        };
        let Some((batch_offset, ts)) = best else {
            return Ok(None);
        };
        Ok(self
            .offset_for_timestamp(ts)
            .await?
            .or(Some((batch_offset, ts))))
    }

    /// Visits the batches from the one holding `from` up to `upper`, in order.
    /// `want` says how many more bytes the visitor can use (0: stop before reading
    /// more), so direct reads are no larger than needed.
    pub(super) async fn visit(
        &self,
        from: Offset,
        upper: Offset,
        want: impl Fn() -> u64,
        mut f: impl FnMut(&Window, usize, &BatchHeader) -> Flow,
    ) -> Result<(), ReadError> {
        let mut cursor = from;
        let index_slack = u64::from(self.shared.state.borrow().config.index_interval_bytes);
        while cursor < upper {
            if let Some(base) = self.segment_base_for(cursor) {
                self.ensure_indexes(base).await?;
            }
            let Some(view) = self.segment_view(cursor) else {
                return Ok(());
            };
            let mut pos = view.start_pos;
            // The index points up to one interval before `cursor`: read that much more.
            let mut slack = index_slack;
            while pos < view.readable_len {
                let wanted = want();
                if wanted == 0 {
                    return Ok(());
                }
                let window = self.window(&view, pos, wanted + slack).await?;
                slack = 0;
                let base_pos = window.file_pos();
                let bytes = window.bytes();
                let rel = (pos - base_pos) as usize;
                let end = (view.readable_len - base_pos).min(bytes.len() as u64) as usize;
                if rel >= end {
                    return Err(ReadError::Io(format!(
                        "segment {} of {} is shorter than its recorded size",
                        view.base,
                        self.topic_partition()
                    )));
                }
                let mut iter = BatchIter::new(&bytes[rel..end]);
                for (at, header, _) in iter.by_ref() {
                    if header.base_offset() >= upper {
                        return Ok(());
                    }
                    if header.next_offset() <= cursor {
                        continue;
                    }
                    if let Flow::Stop = f(&window, rel + at, &header) {
                        return Ok(());
                    }
                    cursor = header.next_offset();
                }
                let advanced = iter.position() as u64;
                if advanced == 0 {
                    return Err(ReadError::Io(format!(
                        "unreadable batch at position {pos} of segment {} of {}: {:?}",
                        view.base,
                        self.topic_partition(),
                        iter.remainder_error()
                    )));
                }
                pos += advanced;
            }
            cursor = cursor.max(view.end_offset);
        }
        Ok(())
    }

    /// Loads the indexes of segment `base` if they are on disk only.
    pub(super) async fn ensure_indexes(&self, base: Offset) -> Result<(), LogError> {
        {
            let mut st = self.shared.state.borrow_mut();
            match st.segments.get(&base) {
                Some(seg) if seg.indexes_loaded && seg.finalized => {
                    st.touch_indexes(base);
                    return Ok(());
                }
                Some(seg) if !seg.indexes_loaded => {}
                _ => return Ok(()),
            }
        }
        // Index files are read (and maybe rebuilt) by path: a compaction swap waits for
        // loads in flight before it removes or replaces them (glommio cannot open a file
        // that is unlinked under it).
        let _load = self
            .shared
            .index_gate
            .acquire_permit(1)
            .await
            .map_err(|e| LogError::Offline(e.to_string()))?;
        let (dir, interval, segment) = {
            let st = self.shared.state.borrow();
            match st.segments.get(&base) {
                // Its index files are being replaced: reads scan from the start instead.
                Some(_) if st.swapping.contains(&base) => return Ok(()),
                Some(seg) if !seg.indexes_loaded => {
                    // What loading needs, so no borrow is held across the reads.
                    let shape = Segment {
                        file: seg.file.clone(),
                        size: seg.size,
                        end_offset: seg.end_offset,
                        ..Segment::new(seg.base, seg.created_ms)
                    };
                    (st.dir.clone(), st.config.index_interval_bytes, shape)
                }
                _ => return Ok(()),
            }
        };
        let (index, time) = segment.load_indexes(&dir, interval).await?;
        let mut st = self.shared.state.borrow_mut();
        let same_file = |s: &Segment| match (&s.file, &segment.file) {
            (Some(a), Some(b)) => Rc::ptr_eq(a, b),
            _ => false,
        };
        if let Some(seg) = st
            .segments
            .get_mut(&base)
            .filter(|s| !s.indexes_loaded && same_file(s))
        {
            seg.index = index;
            seg.time_index = time;
            seg.indexes_loaded = true;
            st.touch_indexes(base);
        }
        Ok(())
    }

    /// The base of the segment holding `offset`.
    pub(super) fn segment_base_for(&self, offset: Offset) -> Option<Offset> {
        let st = self.shared.state.borrow();
        st.segments.range(..=offset).next_back().map(|(b, _)| *b)
    }

    /// The segment holding `offset`, with where to start scanning for it.
    pub(super) fn segment_view(&self, offset: Offset) -> Option<SegmentView> {
        let st = self.shared.state.borrow();
        let (_, seg) = st.segments.range(..=offset).next_back()?;
        if offset >= seg.end_offset {
            return None;
        }
        let (_, start_pos) = seg.index.lookup((offset.0 - seg.base.0) as u32);
        // The visit stops at `upper` by offset; bytes are bounded by what is written.
        let readable_len = seg.written_size.min(seg.size);
        Some(SegmentView {
            base: seg.base,
            file: seg.file.clone(),
            readable_len,
            end_offset: seg.end_offset,
            start_pos: u64::from(start_pos),
        })
    }

    /// Bytes of the segment from `pos`: the cached chunk holding it, or a direct read.
    pub(super) async fn window(
        &self,
        view: &SegmentView,
        pos: u64,
        want_bytes: u64,
    ) -> Result<Window, ReadError> {
        if let Some(chunk) = self.shared.state.borrow_mut().cached_chunk(view.base, pos) {
            return Ok(Window::Cache(chunk));
        }
        let file = view
            .file
            .as_ref()
            .ok_or_else(|| ReadError::Io(format!("segment {} has no file yet", view.base)))?;
        let start = align_down(pos);
        let want =
            (view.readable_len - start).min(want_bytes.clamp(1, READ_WINDOW_BYTES) + (pos - start));
        let first = file
            .read_at_aligned(start, align_up(want) as usize)
            .await
            .map_err(|e| ReadError::Io(e.to_string()))?;
        // A batch larger than the window: read again, wide enough for the whole batch.
        let rel = (pos - start) as usize;
        if let Some(Ok(header)) = first.get(rel..).map(batch::parse_header) {
            let needed = rel as u64 + header.total_bytes() as u64;
            if needed > first.len() as u64 && start + needed <= view.readable_len {
                let read = file
                    .read_at_aligned(start, align_up(needed) as usize)
                    .await
                    .map_err(|e| ReadError::Io(e.to_string()))?;
                return Ok(Window::Disk {
                    read,
                    file_pos: start,
                });
            }
        }
        Ok(Window::Disk {
            read: first,
            file_pos: start,
        })
    }
}

/// Bytes read per direct read on the fetch path.
pub(super) const READ_WINDOW_BYTES: u64 = 1 << 20;

pub(super) fn same_window(a: &Window, b: &Window) -> bool {
    match (a, b) {
        (Window::Cache(x), Window::Cache(y)) => Rc::ptr_eq(x, y),
        (Window::Disk { read: x, .. }, Window::Disk { read: y, .. }) => {
            x.as_ptr() == y.as_ptr() && x.len() == y.len()
        }
        _ => false,
    }
}

pub(super) fn read_to_log_error(e: ReadError) -> LogError {
    match e {
        ReadError::OffsetOutOfRange {
            requested,
            log_start,
            log_end,
        } => LogError::OffsetOutOfRange {
            requested,
            low: log_start,
            high: log_end,
        },
        ReadError::Io(reason) => LogError::Offline(reason),
    }
}
