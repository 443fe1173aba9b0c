//! One segment of a partition log: `<base-offset>.log` (20 digits) with its sparse
//! `.index` and `.timeindex`, the in-memory indexes, and the scan that recovery uses to
//! find the longest valid prefix of a segment file.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;

use crate::batch::{self, BatchHeader, BatchIter};
use crate::error::LogError;
use crate::files::{self, align_down, align_up};
use crate::index::{OffsetIndex, TimeIndex};
use crate::types::Offset;

/// Bytes read per step when scanning a segment.
const SCAN_WINDOW_BYTES: u64 = 1 << 20;

pub fn log_name(base: Offset) -> String {
    format!("{:020}.log", base.0)
}

pub fn index_name(base: Offset) -> String {
    format!("{:020}.index", base.0)
}

pub fn time_index_name(base: Offset) -> String {
    format!("{:020}.timeindex", base.0)
}

/// Writes a segment's two index files (each atomically).
pub async fn write_index_files(
    dir: &Path,
    base: Offset,
    (index, time): (Vec<u8>, Vec<u8>),
) -> Result<(), LogError> {
    files::write_atomic(dir, &index_name(base), &index).await?;
    files::write_atomic(dir, &time_index_name(base), &time).await
}

/// Parses `<20 digits>.log`.
pub fn parse_log_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok().map(Offset)
}

/// A segment's metadata; its file is owned here and shared with in-flight I/O.
#[derive(Debug)]
pub struct Segment {
    pub base: Offset,
    /// `None` until the flusher creates the file for the first write.
    pub file: Option<Rc<DmaFile>>,
    /// Bytes appended (written or not).
    pub size: u64,
    /// End of the last whole batch known to be in the file.
    pub written_size: u64,
    /// Offset after the last batch appended.
    pub end_offset: Offset,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    pub bytes_since_index: u64,
    /// Largest batch max timestamp seen, and the batch where it was seen (-1: none).
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: Offset,
    pub created_ms: u64,
    /// Bytes reserved in the file ahead of writes.
    pub allocated_bytes: u64,
    /// Synced, truncated to size, indexes written: no more writes go to it.
    pub finalized: bool,
    /// `index` and `time_index` are in memory. Closed segments keep them on disk and
    /// load them on demand (the log bounds how many stay loaded).
    pub indexes_loaded: bool,
}

impl Segment {
    pub fn new(base: Offset, created_ms: u64) -> Self {
        Segment {
            base,
            file: None,
            size: 0,
            written_size: 0,
            end_offset: base,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: base,
            created_ms,
            allocated_bytes: 0,
            finalized: false,
            indexes_loaded: true,
        }
    }

    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(log_name(self.base))
    }

    fn relative(&self, offset: Offset) -> u32 {
        (offset.0 - self.base.0) as u32
    }

    /// Updates sizes and indexes for a batch at `position`. Pure bookkeeping, shared by
    /// append and by recovery so both build the same indexes.
    pub fn note_batch(&mut self, position: u64, header: &BatchHeader, index_interval_bytes: u32) {
        let rel = self.relative(header.base_offset());
        if self.bytes_since_index >= u64::from(index_interval_bytes) {
            self.index.push(rel, position as u32);
            self.time_index.push(self.max_timestamp, rel);
            self.bytes_since_index = 0;
        }
        let max_ts = header.max_timestamp.get();
        if max_ts > self.max_timestamp {
            self.max_timestamp = max_ts;
            self.offset_of_max_timestamp = header.base_offset();
        }
        let total = header.total_bytes() as u64;
        self.bytes_since_index += total;
        self.size = position + total;
        self.end_offset = header.next_offset();
    }

    /// Adds the segment's largest timestamp as the last time index entry, so a reload
    /// knows the segment's max timestamp.
    pub fn seal_time_index(&mut self) {
        if self.max_timestamp >= 0 {
            let rel = self.relative(self.offset_of_max_timestamp);
            self.time_index.push(self.max_timestamp, rel);
        }
    }

    /// Copies of both indexes, cut at `position` / `end_offset`, for writing out.
    pub fn index_bytes(&self, position: u64, end_offset: Offset) -> (Vec<u8>, Vec<u8>) {
        let mut index = self.index.clone();
        index.truncate_to_position(position.min(u64::from(u32::MAX)) as u32);
        let mut time = self.time_index.clone();
        time.truncate_to_offset(self.relative(end_offset));
        (index.as_bytes().to_vec(), time.as_bytes().to_vec())
    }

    /// Loads index files that are consistent with `valid_len` bytes of the segment;
    /// `None` when either is missing or damaged.
    pub async fn read_indexes(
        dir: &Path,
        base: Offset,
        valid_len: u64,
        end_offset: Offset,
    ) -> Result<Option<(OffsetIndex, TimeIndex)>, LogError> {
        let index = files::read_small(&dir.join(index_name(base))).await?;
        let time = files::read_small(&dir.join(time_index_name(base))).await?;
        let (Some(index), Some(time)) = (index, time) else {
            return Ok(None);
        };
        let span = (end_offset.0 - base.0).max(0) as u64;
        Ok(OffsetIndex::from_bytes(&index, valid_len)
            .zip(TimeIndex::from_bytes(&time, span.max(1))))
    }

    /// Drops the in-memory indexes of a closed segment (its files keep them).
    pub fn unload_indexes(&mut self) {
        debug_assert!(self.finalized);
        self.index = OffsetIndex::default();
        self.time_index = TimeIndex::default();
        self.indexes_loaded = false;
    }

    /// The indexes of a closed segment: from its files, or rebuilt from its batches (and
    /// written back) when the files are missing or damaged.
    pub async fn load_indexes(
        &self,
        dir: &Path,
        index_interval_bytes: u32,
    ) -> Result<(OffsetIndex, TimeIndex), LogError> {
        if let Some(found) =
            Segment::read_indexes(dir, self.base, self.size.max(1), self.end_offset).await?
        {
            return Ok(found);
        }
        let path = self.path(dir);
        let Some(file) = &self.file else {
            return Ok((OffsetIndex::default(), TimeIndex::default()));
        };
        tracing::warn!(segment = %path.display(), "index files missing or damaged; rebuilding");
        let mut rebuilt = Segment::new(self.base, self.created_ms);
        scan(
            file,
            &path,
            &mut rebuilt,
            self.size,
            index_interval_bytes,
            Continuity::Increasing,
            &mut |_, _| {},
        )
        .await?;
        rebuilt.seal_time_index();
        write_index_files(
            dir,
            self.base,
            rebuilt.index_bytes(rebuilt.size, rebuilt.end_offset),
        )
        .await?;
        Ok((rebuilt.index, rebuilt.time_index))
    }

    pub fn remove_files(dir: &Path, base: Offset) -> Result<(), LogError> {
        files::remove_if_exists(&dir.join(log_name(base)))?;
        files::remove_if_exists(&dir.join(index_name(base)))?;
        files::remove_if_exists(&dir.join(time_index_name(base)))
    }
}

/// Where a scan stopped and why.
#[derive(Debug)]
pub struct ScanOutcome {
    pub batches: u64,
    /// `None` when the scan reached the end of the file cleanly (zeros or EOF).
    pub stopped_by: Option<String>,
}

/// How a scan checks the offsets of consecutive batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// Each batch starts where the previous one ended (a segment as appended).
    Contiguous,
    /// Offsets only increase: a closed segment that compaction may have rewritten.
    Increasing,
}

/// Scans `segment` from `segment.size` (the end of what is trusted) to the end of the
/// file, checking framing, CRC and offset continuity of each batch, and notes every valid
/// batch into the segment. Stops at the first batch that fails; never panics on content.
pub async fn scan(
    file: &DmaFile,
    path: &Path,
    segment: &mut Segment,
    file_len: u64,
    index_interval_bytes: u32,
    continuity: Continuity,
    on_batch: &mut dyn FnMut(&BatchHeader, &[u8]),
) -> Result<ScanOutcome, LogError> {
    let mut outcome = ScanOutcome {
        batches: 0,
        stopped_by: None,
    };
    let mut want = SCAN_WINDOW_BYTES;
    while segment.size < file_len {
        let pos = segment.size;
        let start = align_down(pos);
        let len = align_up((pos - start + want).min(file_len - start));
        let read = file
            .read_at_aligned(start, len as usize)
            .await
            .map_err(|e| files::glommio_io(path, e))?;
        let skip = (pos - start) as usize;
        if read.len() <= skip {
            break;
        }
        let bytes = &read[skip..];
        let mut iter = BatchIter::new(bytes);
        let mut stop = None;
        for (at, header, batch_bytes) in iter.by_ref() {
            let in_order = match continuity {
                Continuity::Contiguous => header.base_offset() == segment.end_offset,
                Continuity::Increasing => header.base_offset() >= segment.end_offset,
            };
            if !in_order {
                stop = Some(format!(
                    "batch at position {} has base offset {} where {} was expected",
                    pos + at as u64,
                    header.base_offset(),
                    segment.end_offset
                ));
                break;
            }
            if let Err(e) = batch::verify_crc(&header, batch_bytes) {
                stop = Some(format!("batch at position {}: {e}", pos + at as u64));
                break;
            }
            segment.note_batch(pos + at as u64, &header, index_interval_bytes);
            on_batch(&header, batch_bytes);
            outcome.batches += 1;
        }
        if stop.is_some() {
            outcome.stopped_by = stop;
            break;
        }
        let consumed = segment.size - pos;
        match iter.remainder_error() {
            None => {}
            Some(batch::BatchError::Truncated { needed, .. })
                if consumed == 0
                    && (*needed as u64) > want
                    && pos + (*needed as u64) <= file_len =>
            {
                // A batch larger than the window: read again, wide enough for it.
                want = *needed as u64;
                continue;
            }
            Some(batch::BatchError::Truncated { .. }) if consumed > 0 => {}
            Some(e) => {
                if !is_zero_fill(&bytes[consumed as usize..]) {
                    outcome.stopped_by = Some(format!("batch at position {}: {e}", segment.size));
                }
                break;
            }
        }
        if consumed == 0 && read.len() < len as usize {
            break;
        }
        want = SCAN_WINDOW_BYTES;
    }
    Ok(outcome)
}

/// Preallocated or padded space reads as zeros: the clean end of a segment.
fn is_zero_fill(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .take(crate::batch::HEADER_BYTES)
        .all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_names_are_twenty_digits() {
        assert_eq!(log_name(Offset(42)), "00000000000000000042.log");
        assert_eq!(parse_log_name("00000000000000000042.log"), Some(Offset(42)));
        assert_eq!(parse_log_name("42.log"), None);
        assert_eq!(parse_log_name("0000000000000000004x.log"), None);
        assert_eq!(parse_log_name("00000000000000000042.index"), None);
    }
}
