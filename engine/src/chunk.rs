//! Appended bytes on their way to disk and in the tail cache.
//!
//! Appends are copied into the log's *open chunk*, a DMA buffer that starts at a
//! block-aligned file position. The flusher *seals* it: the sealed chunk becomes immutable
//! (`Rc`), is written with one direct write, and then serves reads from the tail cache.
//! The open chunk that follows begins with a copy of the partially filled last block, so
//! that block is rewritten in place by the next write and nothing is ever appended to a
//! partial block on disk.
//!
//! A chunk that fills up is instead sealed at its last block boundary
//! ([`OpenChunk::seal_full`]): the bytes after it move to the next chunk, so the two
//! writes do not overlap and may be in flight together. A batch that straddles that
//! boundary is then whole in neither chunk and is read from disk.
//!
//! Invariants: a chunk's *own range* `[file_pos + own_start, file_pos + own_end)` holds
//! whole batches appended into it, in order; own ranges of a segment's chunks are
//! disjoint and ascending; bytes past `len` up to the next block boundary are zero when
//! sealed; a chunk whose write ends in a partial block (`aligned_end == false`) must be
//! written before the next chunk of its log is submitted.

use std::ops::Deref;
use std::rc::Rc;

use glommio::io::{DmaBuffer, ReadResult};

use crate::files::{align_down, align_up, dma_buffer};
use crate::types::Offset;

/// The chunk appends are copied into; owned by one log, mutable.
#[derive(Debug)]
pub struct OpenChunk {
    buf: DmaBuffer,
    pub segment_base: Offset,
    /// File position of `buf[0]`, block aligned.
    pub file_pos: u64,
    /// Bytes of the copied partial block before this chunk's first batch.
    pub own_start: usize,
    /// Valid bytes in `buf`.
    pub len: usize,
    /// First offset appended into this chunk.
    pub first_offset: Offset,
    /// Offset after the last batch appended into this chunk.
    pub end_offset: Offset,
    /// (start, end) in `buf` and the offset after each batch appended here.
    batches: Vec<(usize, usize, Offset)>,
}

impl OpenChunk {
    /// A chunk at `file_pos` (aligned) that starts with `prefix`, the bytes of the
    /// partial block already in the file.
    pub fn new(
        segment_base: Offset,
        file_pos: u64,
        prefix: &[u8],
        capacity: usize,
        next_offset: Offset,
    ) -> Self {
        debug_assert_eq!(file_pos % crate::files::BLOCK_BYTES, 0);
        let capacity = align_up(capacity.max(prefix.len() + 1) as u64) as usize;
        let mut buf = dma_buffer(capacity);
        buf.as_bytes_mut()[..prefix.len()].copy_from_slice(prefix);
        OpenChunk {
            buf,
            segment_base,
            file_pos,
            own_start: prefix.len(),
            len: prefix.len(),
            first_offset: next_offset,
            end_offset: next_offset,
            batches: Vec::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.len
    }

    pub fn has_batches(&self) -> bool {
        self.len > self.own_start
    }

    /// Segment position after the last byte.
    pub fn end_pos(&self) -> u64 {
        self.file_pos + self.len as u64
    }

    /// Copies one batch in; returns it in place so the caller can stamp its header.
    pub fn push(&mut self, batch: &[u8], end_offset: Offset) -> &mut [u8] {
        let start = self.len;
        self.len += batch.len();
        self.end_offset = end_offset;
        self.batches.push((start, self.len, end_offset));
        let dst = &mut self.buf.as_bytes_mut()[start..self.len];
        dst.copy_from_slice(batch);
        dst
    }

    /// The partial last block: its aligned position and bytes.
    fn tail_block(&self) -> (u64, &[u8]) {
        let block_pos = align_down(self.end_pos());
        let from = (block_pos - self.file_pos) as usize;
        (block_pos, &self.buf.as_bytes()[from..self.len])
    }

    /// Moves the bytes into a buffer of at least `capacity` (block aligned), for a batch
    /// that does not fit a chunk holding none of its own yet: there is nothing to seal,
    /// so the chunk grows in place.
    fn grow(&mut self, capacity: usize) {
        let wanted = align_up(capacity.max(self.len + 1) as u64) as usize;
        if wanted <= self.buf.len() {
            return;
        }
        let mut next = dma_buffer(wanted);
        next.as_bytes_mut()[..self.len].copy_from_slice(&self.buf.as_bytes()[..self.len]);
        self.buf = next;
    }

    /// Turns the appended batches into an immutable chunk and leaves `self` ready for the
    /// next appends in a buffer of `capacity` (the current one when it has that size),
    /// starting with the partial last block. A chunk filled less than a quarter is copied
    /// into an exact-size buffer so small flushes do not pin whole chunks in the tail
    /// cache; a fuller one is handed over as is. Only a chunk with batches of its own is
    /// sealed (an empty one has nothing to write, and may hold no bytes at all).
    pub fn seal(&mut self, capacity: usize) -> SealedChunk {
        assert!(self.has_batches(), "sealing a chunk without batches");
        let sealed_len = align_up(self.len as u64) as usize;
        let (block_pos, tail) = self.tail_block();
        let tail_len = tail.len();
        let buf = if self.len * 4 <= self.buf.len() {
            let mut exact = dma_buffer(sealed_len);
            let bytes = exact.as_bytes_mut();
            bytes[..self.len].copy_from_slice(&self.buf.as_bytes()[..self.len]);
            bytes[self.len..].fill(0);
            let from = (block_pos - self.file_pos) as usize;
            let wanted = align_up(capacity.max(tail_len + 1) as u64) as usize;
            if wanted == self.buf.len() {
                self.buf.as_bytes_mut().copy_within(from..self.len, 0);
            } else {
                // Resize: an idle log shrinks to a small buffer, a large batch grows it.
                let mut next = dma_buffer(wanted);
                next.as_bytes_mut()[..tail_len]
                    .copy_from_slice(&self.buf.as_bytes()[from..self.len]);
                self.buf = next;
            }
            exact
        } else {
            let mut next = dma_buffer(align_up(capacity as u64) as usize);
            next.as_bytes_mut()[..tail_len].copy_from_slice(tail);
            let mut full = std::mem::replace(&mut self.buf, next);
            full.as_bytes_mut()[self.len..sealed_len].fill(0);
            full.trim_to_size(sealed_len);
            full
        };
        let sealed = SealedChunk {
            buf: Rc::new(buf),
            segment_base: self.segment_base,
            file_pos: self.file_pos,
            own_start: self.own_start,
            own_end: self.len,
            len: self.len,
            first_offset: self.first_offset,
            end_offset: self.end_offset,
            aligned_end: false,
        };
        self.file_pos = block_pos;
        self.own_start = tail_len;
        self.len = tail_len;
        self.first_offset = self.end_offset;
        self.batches.clear();
        sealed
    }

    /// Makes room for a batch that does not fit: seals the chunk at its last block
    /// boundary, so its write ends block aligned and cannot overlap the next chunk's, and
    /// leaves `self` with at least `capacity` bytes. Falls back to [`Self::seal`] when
    /// the chunk holds less than a block of its own. A chunk with no batches of its own
    /// (fresh, just rolled, or just sealed) is not sealed but grown: `None`.
    pub fn seal_full(&mut self, capacity: usize) -> Option<SealedChunk> {
        if !self.has_batches() {
            self.grow(capacity);
            return None;
        }
        let cut = align_down(self.len as u64) as usize;
        if cut <= self.own_start {
            return Some(self.seal(capacity));
        }
        // Whole batches before the cut stay; the rest (and a straddling batch) move on.
        let whole = self.batches.partition_point(|(_, end, _)| *end <= cut);
        let own_end = match whole {
            0 => self.own_start,
            n => self.batches[n - 1].1,
        };
        let end_offset = match whole {
            0 => self.first_offset,
            n => self.batches[n - 1].2,
        };
        let moved = self.len - cut;
        let mut next = dma_buffer(align_up(capacity.max(moved + 1) as u64) as usize);
        next.as_bytes_mut()[..moved].copy_from_slice(&self.buf.as_bytes()[cut..self.len]);
        let mut full = std::mem::replace(&mut self.buf, next);
        full.trim_to_size(cut);
        let sealed = SealedChunk {
            buf: Rc::new(full),
            segment_base: self.segment_base,
            file_pos: self.file_pos,
            own_start: self.own_start,
            own_end,
            len: cut,
            first_offset: self.first_offset,
            end_offset,
            aligned_end: true,
        };
        // The first batch that starts at or after the cut begins the next own range.
        let first_after = self.batches[whole..]
            .iter()
            .position(|(start, _, _)| *start >= cut);
        self.own_start = match first_after {
            Some(i) => self.batches[whole + i].0 - cut,
            None => moved,
        };
        self.batches.drain(..whole);
        self.batches.retain(|(start, _, _)| *start >= cut);
        for b in &mut self.batches {
            b.0 -= cut;
            b.1 -= cut;
        }
        self.file_pos += cut as u64;
        self.len = moved;
        self.first_offset = end_offset;
        Some(sealed)
    }
}

/// Appended bytes frozen for writing and for reads from memory.
#[derive(Debug)]
pub struct SealedChunk {
    pub buf: Rc<DmaBuffer>,
    pub segment_base: Offset,
    pub file_pos: u64,
    pub own_start: usize,
    /// End of the last whole batch in `buf` (`len`, unless sealed by `seal_full`).
    pub own_end: usize,
    /// Bytes written to the file from `buf`.
    pub len: usize,
    pub first_offset: Offset,
    /// Offset after the last whole batch: written once this chunk is.
    pub end_offset: Offset,
    /// The write ends on a block boundary, so the next chunk's write cannot overlap it.
    pub aligned_end: bool,
}

impl SealedChunk {
    /// Memory it holds (what the cache budget counts).
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    pub fn own_start_pos(&self) -> u64 {
        self.file_pos + self.own_start as u64
    }

    /// Segment position after the last byte written from this chunk.
    pub fn end_pos(&self) -> u64 {
        self.file_pos + self.len as u64
    }

    /// Segment position after the last whole batch.
    pub fn own_end_pos(&self) -> u64 {
        self.file_pos + self.own_end as u64
    }

    /// The bytes up to the end of the last whole batch.
    pub fn bytes(&self) -> &[u8] {
        &self.buf.as_bytes()[..self.own_end]
    }
}

/// Whole stored batches, verbatim, from the tail cache or a direct read; derefs to the
/// bytes, ready for a vectored socket write.
#[derive(Debug, Clone)]
pub struct BatchSlice {
    inner: SliceInner,
}

#[derive(Debug, Clone)]
enum SliceInner {
    Cache {
        chunk: Rc<SealedChunk>,
        start: usize,
        len: usize,
    },
    Disk(ReadResult),
}

impl Deref for BatchSlice {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.inner {
            SliceInner::Cache { chunk, start, len } => &chunk.buf.as_bytes()[*start..start + len],
            SliceInner::Disk(r) => r,
        }
    }
}

/// Bytes of a segment held in memory: a cached chunk or the result of a direct read.
#[derive(Debug, Clone)]
pub enum Window {
    Cache(Rc<SealedChunk>),
    Disk { read: ReadResult, file_pos: u64 },
}

impl Window {
    /// Segment position of `bytes()[0]`.
    pub fn file_pos(&self) -> u64 {
        match self {
            Window::Cache(c) => c.file_pos,
            Window::Disk { file_pos, .. } => *file_pos,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            Window::Cache(c) => c.bytes(),
            Window::Disk { read, .. } => read,
        }
    }

    /// A slice of `len` bytes at `start` (relative to `bytes()`), sharing the memory.
    pub fn slice(&self, start: usize, len: usize) -> Option<BatchSlice> {
        let inner = match self {
            Window::Cache(chunk) => {
                if start + len > chunk.own_end {
                    return None;
                }
                SliceInner::Cache {
                    chunk: chunk.clone(),
                    start,
                    len,
                }
            }
            Window::Disk { read, .. } => SliceInner::Disk(ReadResult::slice(read, start, len)?),
        };
        Some(BatchSlice { inner })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::BLOCK_BYTES;

    const BLOCK: usize = BLOCK_BYTES as usize;

    /// DMA buffers come from the executor's allocator.
    fn on_executor(f: impl FnOnce()) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .expect("executor")
            .run(async { f() });
    }

    /// Writes a sealed chunk into `file` as the flusher does: its whole blocks at its
    /// position, so a rewritten partial block replaces the old one.
    fn write(file: &mut Vec<u8>, chunk: &SealedChunk) {
        let pos = chunk.file_pos as usize;
        let bytes = &chunk.buf.as_bytes()[..align_up(chunk.len as u64) as usize];
        if file.len() < pos + bytes.len() {
            file.resize(pos + bytes.len(), 0);
        }
        file[pos..pos + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn a_batch_straddling_a_full_cut_is_done_with_the_next_chunk() {
        on_executor(|| {
            let mut open = OpenChunk::new(Offset(0), 0, &[], 2 * BLOCK, Offset(0));
            open.push(&vec![1; BLOCK / 2], Offset(1));
            open.push(&vec![2; BLOCK], Offset(2)); // straddles the first block boundary
            let first = open.seal_full(2 * BLOCK).expect("sealed");
            assert!(first.aligned_end);
            assert_eq!((first.len, first.own_end), (BLOCK, BLOCK / 2));
            assert_eq!(first.end_offset, Offset(1), "only the whole batch is done");
            open.push(&[3; 100], Offset(3));
            let second = open.seal(2 * BLOCK);
            assert_eq!(second.file_pos, BLOCK as u64);
            assert_eq!(second.first_offset, Offset(1));
            assert_eq!(second.end_offset, Offset(3));
            // Its own range is the batch after the straddling one's tail.
            assert_eq!(second.own_start, BLOCK / 2);
            assert_eq!(second.own_end, BLOCK / 2 + 100);
        });
    }

    #[test]
    fn a_chunk_without_batches_grows_instead_of_sealing() {
        on_executor(|| {
            // Fresh (nothing at all), and after a seal that left a partial block.
            for prefix in [&[][..], &[7u8; 100][..]] {
                let mut open = OpenChunk::new(Offset(0), 0, prefix, BLOCK, Offset(0));
                let batch = vec![1u8; 3 * BLOCK];
                assert!(open.remaining() < batch.len());
                assert!(
                    open.seal_full(batch.len() + BLOCK).is_none(),
                    "nothing sealed"
                );
                assert!(open.remaining() >= batch.len());
                assert_eq!(open.own_start, prefix.len());
                open.push(&batch, Offset(1));
                let sealed = open.seal(BLOCK);
                assert_eq!(&sealed.buf.as_bytes()[..prefix.len()], prefix);
                assert_eq!(sealed.bytes()[prefix.len()..], batch[..]);
                assert_eq!(
                    (sealed.first_offset, sealed.end_offset),
                    (Offset(0), Offset(1))
                );
            }
        });
    }

    #[test]
    #[should_panic(expected = "zero-length DMA buffer")]
    fn a_zero_length_dma_buffer_is_refused_every_time() {
        on_executor(|| {
            crate::files::dma_buffer(0);
        });
    }

    #[test]
    fn full_cuts_and_seals_lay_the_batches_out_contiguously() {
        on_executor(|| {
            let capacity = 4 * BLOCK;
            let mut open = OpenChunk::new(Offset(0), 0, &[], capacity, Offset(0));
            let (mut expected, mut file) = (Vec::new(), Vec::new());
            let mut done = Offset(0);
            for i in 0..60u8 {
                let batch = vec![i + 1; 700 + 97 * usize::from(i)];
                // As the log appends: a chunk without room is cut at its last block;
                // the flusher seals what is open now and then.
                let sealed = if open.remaining() < batch.len() {
                    open.seal_full(capacity.max(batch.len() + BLOCK))
                } else if i % 7 == 3 {
                    Some(open.seal(capacity))
                } else {
                    None
                };
                if let Some(chunk) = sealed {
                    assert_eq!(chunk.first_offset, done, "no offsets skipped");
                    assert!(chunk.end_offset >= done);
                    done = chunk.end_offset;
                    write(&mut file, &chunk);
                }
                expected.extend_from_slice(&batch);
                open.push(&batch, Offset(i64::from(i) + 1));
            }
            let last = open.seal(capacity);
            assert_eq!((last.first_offset, last.end_offset), (done, Offset(60)));
            write(&mut file, &last);
            assert_eq!(&file[..expected.len()], &expected[..]);
            assert!(file[expected.len()..].iter().all(|b| *b == 0));
        });
    }
}
