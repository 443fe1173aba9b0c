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
//! Bounds: a thread keeps at most [`POOL_BYTES_MAX`] of free buffers (the smallest are
//! freed first); buffers in use are bounded by the connections' in-flight limits.

use std::cell::RefCell;

use bytes::Bytes;

/// Frames below this are read into a plain allocation (malloc serves them from its
/// arenas without page faults).
pub const POOLED_MIN_BYTES: usize = 64 << 10;

/// Free buffer bytes one thread keeps.
pub const POOL_BYTES_MAX: usize = 32 << 20;

/// New buffers are sized in steps of this, so frames of similar size share buffers.
const SIZE_STEP_BYTES: usize = 64 << 10;

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
        let at = self.free.partition_point(|b| b.len() < buf.len());
        self.bytes += buf.len();
        self.free.insert(at, buf);
        while self.bytes > POOL_BYTES_MAX {
            let dropped = self.free.remove(0);
            self.bytes -= dropped.len();
        }
    }
}

/// A frame's receive buffer: the first `len` bytes of a pooled (or plain) allocation.
pub struct FrameBuf {
    buf: Vec<u8>,
    len: usize,
}

impl FrameBuf {
    /// A buffer for a frame of `len` bytes; its contents are unspecified until read into.
    pub fn new(len: usize) -> Self {
        if len < POOLED_MIN_BYTES {
            return FrameBuf {
                buf: vec![0; len],
                len,
            };
        }
        let reused = POOL.try_with(|p| p.borrow_mut().take(len)).ok().flatten();
        let buf =
            reused.unwrap_or_else(|| vec![0; len.div_ceil(SIZE_STEP_BYTES) * SIZE_STEP_BYTES]);
        FrameBuf { buf, len }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }

    /// The frame as shared bytes; the buffer returns to a pool when the last clone drops.
    pub fn into_bytes(self) -> Bytes {
        if self.len < POOLED_MIN_BYTES {
            let mut this = std::mem::ManuallyDrop::new(self);
            return Bytes::from(std::mem::take(&mut this.buf));
        }
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for FrameBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for FrameBuf {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.len() >= POOLED_MIN_BYTES {
            // After the thread's pool is gone (thread exit) the buffer is simply freed.
            let _ = POOL.try_with(|p| p.borrow_mut().give(buf));
        }
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
    fn small_frames_are_not_pooled_and_the_pool_is_bounded() {
        let small = FrameBuf::new(100).into_bytes();
        assert_eq!(small.len(), 100);
        drop(small);
        assert_eq!(free_bytes(), 0);
        let frames: Vec<_> = (0..40).map(|_| FrameBuf::new(1 << 20)).collect();
        drop(frames);
        assert_eq!(free_bytes(), POOL_BYTES_MAX);
        // The largest buffers are kept.
        drop(FrameBuf::new(4 << 20));
        assert_eq!(free_bytes(), POOL_BYTES_MAX);
        POOL.with(|p| assert_eq!(p.borrow().free.last().unwrap().len(), 4 << 20));
    }
}
