//! Appended bytes on their way to disk and in the tail cache.
//!
//! Appends are copied into the log's *open chunk*, a DMA buffer that starts at a
//! block-aligned file position. The flusher *seals* it: the sealed chunk becomes immutable
//! (`Rc`), is written with one direct write, and then serves reads from the tail cache.
//! The open chunk that follows begins with a copy of the partially filled last block, so
//! that block is rewritten in place by the next write and nothing is ever appended to a
//! partial block on disk.
//!
//! Invariants: a chunk's *own range* `[file_pos + own_start, file_pos + len)` holds whole
//! batches appended into it; the own ranges of a segment's chunks tile the segment in
//! order; bytes past `len` up to the next block boundary are zero when sealed.

use std::ops::Deref;
use std::rc::Rc;

use glommio::io::{DmaBuffer, ReadResult};

use crate::files::{align_down, align_up};
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
        let mut buf = glommio::allocate_dma_buffer(capacity);
        buf.as_bytes_mut()[..prefix.len()].copy_from_slice(prefix);
        OpenChunk {
            buf,
            segment_base,
            file_pos,
            own_start: prefix.len(),
            len: prefix.len(),
            first_offset: next_offset,
            end_offset: next_offset,
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

    /// Turns the appended batches into an immutable chunk and leaves `self` ready for the
    /// next appends, starting with the partial last block. A chunk filled less than a
    /// quarter is copied into an exact-size buffer so small flushes do not pin whole
    /// chunks in the tail cache; a fuller one is handed over as is.
    pub fn seal(&mut self, capacity: usize) -> SealedChunk {
        let sealed_len = align_up(self.len as u64) as usize;
        let (block_pos, tail) = self.tail_block();
        let tail_len = tail.len();
        let buf = if self.len * 4 <= self.buf.len() {
            let mut exact = glommio::allocate_dma_buffer(sealed_len);
            let bytes = exact.as_bytes_mut();
            bytes[..self.len].copy_from_slice(&self.buf.as_bytes()[..self.len]);
            bytes[self.len..].fill(0);
            let from = (block_pos - self.file_pos) as usize;
            self.buf.as_bytes_mut().copy_within(from..self.len, 0);
            exact
        } else {
            let mut next = glommio::allocate_dma_buffer(align_up(capacity as u64) as usize);
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
            len: self.len,
            first_offset: self.first_offset,
            end_offset: self.end_offset,
        };
        self.file_pos = block_pos;
        self.own_start = tail_len;
        self.len = tail_len;
        self.first_offset = self.end_offset;
        sealed
    }
}

/// Appended bytes frozen for writing and for reads from memory.
#[derive(Debug)]
pub struct SealedChunk {
    pub buf: Rc<DmaBuffer>,
    pub segment_base: Offset,
    pub file_pos: u64,
    pub own_start: usize,
    pub len: usize,
    pub first_offset: Offset,
    pub end_offset: Offset,
}

impl SealedChunk {
    /// Memory it holds (what the cache budget counts).
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    pub fn own_start_pos(&self) -> u64 {
        self.file_pos + self.own_start as u64
    }

    pub fn end_pos(&self) -> u64 {
        self.file_pos + self.len as u64
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf.as_bytes()[..self.len]
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
                if start + len > chunk.len {
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
