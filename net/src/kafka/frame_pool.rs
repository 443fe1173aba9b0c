//! Receive buffers for large request frames, reused per thread.
//!
//! A Produce request is commonly about a megabyte (`sluice bench`'s `--request-bytes`,
//! librdkafka's `message.max.bytes`) and lives only until its batches are copied into the
//! logs. Reading each into a fresh allocation zeroed it first, only for the socket read to
//! overwrite it (`memset` from `alloc_zeroed`: 3.6% of the broker's CPU in perf, 1 KiB
//! produce), so frames of at least [`POOLED_MIN_BYTES`] are read into a buffer from the
//! reading thread's pool instead, zeroed once when the buffer is made. The buffer goes
//! back to the pool of whichever thread drops the frame's last reference (a frame may be
//! handed to another shard).
//!
//! A frame's buffer grows as its bytes arrive: frames up to [`EAGER_BYTES_MAX`] get their
//! whole buffer at once (the common case, no copy), longer ones start there and double
//! as they fill, so a connection that announces 100 MiB and sends ten bytes holds
//! `EAGER_BYTES_MAX`, not 100 MiB (and only once the shard's request budget let it read
//! the frame at all, see `request_bytes.rs`).
//!
//! Bounds: a thread keeps at most [`POOL_BYTES_MAX`] of free buffers (the smallest are
//! freed first; a buffer larger than the whole bound is freed at once instead of
//! emptying the pool); buffers in use are bounded by the shard's request budget
//! (`queued.max.request.bytes`).

use std::cell::RefCell;

use bytes::Bytes;

/// Frames below this are read into a plain allocation (malloc serves them from its
/// arenas without page faults).
pub const POOLED_MIN_BYTES: usize = 64 << 10;

/// Free buffer bytes one thread keeps.
pub const POOL_BYTES_MAX: usize = 32 << 20;

/// New buffers are sized in steps of this, so frames of similar size share buffers.
const SIZE_STEP_BYTES: usize = 64 << 10;

/// Frames up to this get their whole buffer before their bytes arrive: a Produce request
/// of librdkafka's default `message.max.bytes` (1,000,000) or `sluice bench`'s 1 MiB,
/// headers included, reads without a regrowth copy. Longer frames grow from here.
pub const EAGER_BYTES_MAX: usize = 2 << 20;

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// One thread's free buffers, ascending by capacity.
#[derive(Default)]
struct Pool {
    free: Vec<Vec<u8>>,
    bytes: usize,
}

impl Pool {
    /// The smallest free buffer of at least `len` bytes.
    fn take(&mut self, len: usize) -> Option<Vec<u8>> {
        let at = self.free.iter().position(|b| b.len() >= len)?;
        let buf = self.free.remove(at);
        self.bytes -= buf.len();
        Some(buf)
    }

    /// Keeps `buf`, then frees the smallest buffers while over the bound.
    fn give(&mut self, buf: Vec<u8>) {
        if buf.len() > POOL_BYTES_MAX {
            // It could never stay, and making room for it would free every other buffer.
            return;
        }
        let at = self.free.partition_point(|b| b.len() < buf.len());
        self.bytes += buf.len();
        self.free.insert(at, buf);
        while self.bytes > POOL_BYTES_MAX {
            let dropped = self.free.remove(0);
            self.bytes -= dropped.len();
        }
    }
}

/// A frame's receive buffer: the first `len` bytes of a pooled (or plain) allocation,
/// of which the first `filled` have been read.
pub struct FrameBuf {
    buf: Vec<u8>,
    len: usize,
    filled: usize,
}

impl FrameBuf {
    /// A buffer for a frame of `len` bytes, allocated up to [`EAGER_BYTES_MAX`] for now;
    /// its contents are unspecified until read into.
    pub fn new(len: usize) -> Self {
        FrameBuf {
            buf: allocate(len.min(EAGER_BYTES_MAX)),
            len,
            filled: 0,
        }
    }

    /// Bytes read into the frame so far.
    #[cfg(test)]
    pub fn filled(&self) -> usize {
        self.filled
    }

    pub fn is_complete(&self) -> bool {
        self.filled == self.len
    }

    /// Where the next bytes go: the rest of the buffer, doubled first (up to the frame's
    /// length) when it is full. Empty once the frame is complete.
    pub fn unfilled(&mut self) -> &mut [u8] {
        let end = self.buf.len().min(self.len);
        if self.filled == end && end < self.len {
            let grown = (self.buf.len() * 2).clamp(POOLED_MIN_BYTES, self.len);
            let mut next = allocate(grown);
            next[..self.filled].copy_from_slice(&self.buf[..self.filled]);
            // The old buffer goes back to the pool (or is freed).
            let old = std::mem::replace(&mut self.buf, next);
            recycle(old);
        }
        let end = self.buf.len().min(self.len);
        &mut self.buf[self.filled..end]
    }

    /// Marks `n` more bytes (written into [`FrameBuf::unfilled`]) as read.
    pub fn advance(&mut self, n: usize) {
        self.filled = (self.filled + n).min(self.len);
    }

    /// The whole frame, grown to its length, as if read in one go.
    #[cfg(test)]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        while self.buf.len() < self.len {
            self.filled = self.buf.len();
            let _ = self.unfilled();
        }
        self.filled = self.len;
        &mut self.buf[..self.len]
    }

    /// The frame as shared bytes; the buffer returns to a pool when the last clone drops.
    /// Only the bytes read so far are meaningful (callers convert complete frames).
    pub fn into_bytes(self) -> Bytes {
        debug_assert!(
            self.buf.len() >= self.len,
            "frame buffer not grown to its length"
        );
        if self.len < POOLED_MIN_BYTES {
            let mut this = std::mem::ManuallyDrop::new(self);
            let mut buf = std::mem::take(&mut this.buf);
            buf.truncate(this.len);
            return Bytes::from(buf);
        }
        Bytes::from_owner(self)
    }
}

/// A buffer of at least `len` bytes: a plain allocation for small ones, else the
/// smallest pooled one that fits, else a new one rounded up to [`SIZE_STEP_BYTES`].
fn allocate(len: usize) -> Vec<u8> {
    if len < POOLED_MIN_BYTES {
        return vec![0; len];
    }
    let reused = POOL.try_with(|p| p.borrow_mut().take(len)).ok().flatten();
    reused.unwrap_or_else(|| vec![0; len.div_ceil(SIZE_STEP_BYTES) * SIZE_STEP_BYTES])
}

/// Gives a buffer no frame uses any more back to this thread's pool.
fn recycle(buf: Vec<u8>) {
    if buf.len() >= POOLED_MIN_BYTES {
        // After the thread's pool is gone (thread exit) the buffer is simply freed.
        let _ = POOL.try_with(|p| p.borrow_mut().give(buf));
    }
}

impl AsRef<[u8]> for FrameBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for FrameBuf {
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_bytes() -> usize {
        POOL.with(|p| p.borrow().bytes)
    }

    #[test]
    fn a_dropped_frame_buffer_is_reused_for_the_next_frame() {
        let mut f = FrameBuf::new(1 << 20);
        f.as_mut_slice().fill(7);
        let ptr = f.as_mut_slice().as_ptr();
        let bytes = f.into_bytes();
        assert_eq!(bytes.len(), 1 << 20);
        let part = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(free_bytes(), 0, "a slice still holds the buffer");
        drop(part);
        assert_eq!(free_bytes(), 1 << 20);
        // A smaller frame takes the same buffer; only its own length is visible.
        let mut g = FrameBuf::new(700 << 10);
        assert_eq!(g.as_mut_slice().as_ptr(), ptr);
        assert_eq!(g.into_bytes().len(), 700 << 10);
    }

    #[test]
    fn a_long_frame_holds_what_arrived_not_what_it_announced() {
        let len = 100 << 20;
        let mut f = FrameBuf::new(len);
        assert!(f.buf.len() <= EAGER_BYTES_MAX, "allocated {}", f.buf.len());
        let first = f.unfilled();
        first[..10].copy_from_slice(b"0123456789");
        f.advance(10);
        assert_eq!(f.filled(), 10);
        assert!(f.buf.len() <= EAGER_BYTES_MAX);
        // Fill it chunk by chunk: the buffer doubles only when full, and keeps the bytes.
        let mut grown = vec![f.buf.len()];
        while !f.is_complete() {
            let n = f.unfilled().len().min(3 << 20);
            assert!(n > 0);
            let at = f.filled();
            for (i, b) in f.unfilled()[..n].iter_mut().enumerate() {
                *b = ((at + i) % 251) as u8;
            }
            f.advance(n);
            if grown.last() != Some(&f.buf.len()) {
                grown.push(f.buf.len());
            }
            assert!(
                f.buf.len()
                    <= (2 * f.filled())
                        .max(EAGER_BYTES_MAX)
                        .min(len)
                        .next_multiple_of(SIZE_STEP_BYTES)
            );
        }
        assert!(grown.len() > 3, "{grown:?}");
        let bytes = f.into_bytes();
        assert_eq!(bytes.len(), len);
        assert_eq!(&bytes[..10], b"0123456789");
        assert!(bytes[10..]
            .iter()
            .enumerate()
            .all(|(i, b)| *b == ((i + 10) % 251) as u8));
    }

    #[test]
    fn a_buffer_larger_than_the_pool_does_not_empty_it() {
        let mut pool = Pool::default();
        pool.give(vec![0; 1 << 20]);
        pool.give(vec![0; POOL_BYTES_MAX + 1]);
        assert_eq!(pool.bytes, 1 << 20);
        assert_eq!(pool.free.len(), 1);
    }

    #[test]
    fn small_frames_are_not_pooled_and_the_pool_is_bounded() {
        let small = FrameBuf::new(100).into_bytes();
        assert_eq!(small.len(), 100);
        drop(small);
        assert_eq!(free_bytes(), 0);
        let frames: Vec<_> = (0..40).map(|_| FrameBuf::new(1 << 20)).collect();
        drop(frames);
        assert_eq!(free_bytes(), POOL_BYTES_MAX);
        // The largest buffers are kept.
        let mut big = FrameBuf::new(4 << 20);
        big.as_mut_slice();
        drop(big);
        assert_eq!(free_bytes(), POOL_BYTES_MAX);
        POOL.with(|p| assert_eq!(p.borrow().free.last().unwrap().len(), 4 << 20));
    }
}
