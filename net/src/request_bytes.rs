//! A shard's budget of request bytes (Kafka's `queued.max.request.bytes`): the bytes of
//! the frames its connections are reading plus those of requests not answered yet.
//!
//! A connection reads a frame's length, then takes the frame's whole length from the
//! budget before it reads the body; a shard at its bound stops reading the next frame of
//! each connection (back-pressure: the kernel's socket buffers, then the clients, hold
//! the rest) until answered requests give bytes back. Taking the whole length first, not
//! the bytes as they arrive, is what keeps the bound from deadlocking: a frame admitted
//! can always complete (its client sends it), whereas frames charged as they arrive
//! could each hold part of the budget and all wait for more. The frame's buffer still
//! grows only as bytes arrive (`frame_pool.rs`), so an admitted client that stalls costs
//! what it sent.
//!
//! Invariants:
//! - `used ≤ max`, except by one frame longer than the whole budget (admitted only when
//!   nothing else is queued, as Kafka lets one request through) and by frames of at most
//!   [`ALWAYS_ADMITTED_BYTES_MAX`] on connections with nothing else in flight (so a
//!   budget that clients stalling mid-request hold until they idle out still lets every
//!   connection's small requests through: Metadata, heartbeats, commits, small produces).
//!   The second excess is bounded by `connections_max_per_shard ×
//!   ALWAYS_ADMITTED_BYTES_MAX`.
//! - Bytes go back exactly once, when the [`RequestPermit`] drops.
//! - Any waiting frame that fits is admitted (not strictly first come): a large frame
//!   waiting for room never holds up small ones.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Frames up to this are read at once on a connection with no request in flight, even
/// when the budget is full (see the module docs).
pub const ALWAYS_ADMITTED_BYTES_MAX: usize = 16 << 10;

/// One shard's request byte budget.
#[derive(Debug)]
pub struct RequestBytes {
    max: usize,
    used: Cell<usize>,
    next_id: Cell<u64>,
    /// Frames waiting for room, by (bytes needed, arrival), so a release wakes exactly
    /// those that may now fit.
    waiters: RefCell<BTreeMap<(usize, u64), Waker>>,
}

impl RequestBytes {
    pub fn new(max: usize) -> Rc<Self> {
        Rc::new(RequestBytes {
            max: max.max(1),
            used: Cell::new(0),
            next_id: Cell::new(0),
            waiters: RefCell::new(BTreeMap::new()),
        })
    }

    /// Bytes taken now.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Frames waiting for room now.
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// What a frame of `len` bytes takes: its length, or the whole budget for a frame
    /// longer than it (which therefore waits until nothing else is queued).
    fn need(&self, len: usize) -> usize {
        len.min(self.max)
    }

    fn take(self: &Rc<Self>, bytes: usize) -> RequestPermit {
        self.used.set(self.used.get() + bytes);
        crate::metrics::request_bytes_queued(bytes as i64);
        RequestPermit {
            budget: self.clone(),
            bytes,
        }
    }

    /// Takes room for a frame of `len` bytes if there is room now.
    pub fn try_acquire(self: &Rc<Self>, len: usize) -> Option<RequestPermit> {
        let need = self.need(len);
        (self.used.get() + need <= self.max).then(|| self.take(need))
    }

    /// Takes room for a frame of `len` bytes regardless of the bound (the small-frame
    /// allowance; see the module docs). It still counts, so larger frames wait for it.
    pub fn admit(self: &Rc<Self>, len: usize) -> RequestPermit {
        self.take(len)
    }

    /// Waits for room for a frame of `len` bytes.
    pub fn acquire(self: &Rc<Self>, len: usize) -> Acquire {
        Acquire {
            budget: self.clone(),
            need: self.need(len),
            id: None,
        }
    }

    fn release(&self, bytes: usize) {
        self.used.set(self.used.get() - bytes);
        crate::metrics::request_bytes_queued(-(bytes as i64));
        let free = self.max.saturating_sub(self.used.get());
        // Wake every waiter that may fit now; each checks again when polled (the first
        // to run may take the room) and registers again if it does not fit.
        let woken: Vec<Waker> = {
            let mut waiters = self.waiters.borrow_mut();
            let fit: Vec<(usize, u64)> = waiters
                .range(..=(free, u64::MAX))
                .map(|(k, _)| *k)
                .collect();
            fit.iter().filter_map(|k| waiters.remove(k)).collect()
        };
        for w in woken {
            w.wake();
        }
    }
}

/// Room taken for one frame; given back when dropped (once its request is answered).
#[derive(Debug)]
pub struct RequestPermit {
    budget: Rc<RequestBytes>,
    bytes: usize,
}

impl RequestPermit {
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for RequestPermit {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// The future of [`RequestBytes::acquire`]; dropping it withdraws the wait.
#[derive(Debug)]
pub struct Acquire {
    budget: Rc<RequestBytes>,
    need: usize,
    id: Option<u64>,
}

impl Future for Acquire {
    type Output = RequestPermit;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RequestPermit> {
        let need = self.need;
        let budget = self.budget.clone();
        if let Some(id) = self.id {
            budget.waiters.borrow_mut().remove(&(need, id));
        }
        if budget.used.get() + need <= budget.max {
            self.id = None;
            return Poll::Ready(budget.take(need));
        }
        let id = match self.id {
            Some(id) => id,
            None => {
                crate::metrics::request_read_paused();
                let id = budget.next_id.get();
                budget.next_id.set(id + 1);
                self.id = Some(id);
                id
            }
        };
        budget
            .waiters
            .borrow_mut()
            .insert((need, id), cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.budget.waiters.borrow_mut().remove(&(self.need, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn a_full_budget_makes_frames_wait_until_bytes_come_back() {
        let b = RequestBytes::new(100);
        let a = b.try_acquire(60).expect("room");
        assert!(b.try_acquire(50).is_none());
        let mut waiting = Box::pin(b.acquire(50));
        assert!(block_on(poll_once(waiting.as_mut())).is_none());
        assert_eq!(b.waiting(), 1);
        // A smaller frame that fits is not held up by the larger one waiting.
        let small = block_on(b.acquire(40));
        assert_eq!(b.used(), 100);
        drop(a);
        let p = block_on(poll_once(waiting.as_mut())).expect("room after a release");
        assert_eq!((p.bytes(), b.used(), b.waiting()), (50, 90, 0));
        drop((p, small));
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_frame_longer_than_the_budget_goes_alone() {
        let b = RequestBytes::new(100);
        let other = b.try_acquire(1).expect("room");
        let mut huge = Box::pin(b.acquire(1_000));
        assert!(block_on(poll_once(huge.as_mut())).is_none());
        drop(other);
        let p = block_on(poll_once(huge.as_mut())).expect("alone now");
        assert_eq!(b.used(), 100);
        assert!(b.try_acquire(1).is_none());
        drop(p);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn small_frames_are_admitted_past_the_bound_and_counted() {
        let b = RequestBytes::new(100);
        let full = b.try_acquire(100).expect("room");
        let small = b.admit(ALWAYS_ADMITTED_BYTES_MAX);
        assert_eq!(b.used(), 100 + ALWAYS_ADMITTED_BYTES_MAX);
        drop(full);
        assert!(b.try_acquire(100).is_none(), "the small frame still counts");
        drop(small);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_dropped_wait_leaves_no_registration() {
        let b = RequestBytes::new(10);
        let full = b.try_acquire(10).expect("room");
        let mut w = Box::pin(b.acquire(5));
        assert!(block_on(poll_once(w.as_mut())).is_none());
        drop(w);
        assert_eq!(b.waiting(), 0);
        drop(full);
        assert_eq!(b.used(), 0);
    }
}
