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
//!   waiting for room never holds up small ones. A release hands its room to the waiters
//!   it admits (smallest first) and wakes only those, so a drain of n waiting frames costs
//!   n wake-ups, not n²; a waiter handed room that ends before it runs passes it on.

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
    /// Frames waiting for room, by (bytes needed, arrival): a release hands room to the
    /// smallest first, for as many as fit, and wakes only those.
    waiters: RefCell<BTreeMap<(usize, u64), Rc<Wait>>>,
}

/// One waiting frame's place: its waker, and whether a release has already taken its
/// room for it (handed over, so that no other frame takes that room before it runs).
#[derive(Debug)]
struct Wait {
    waker: RefCell<Waker>,
    granted: Cell<bool>,
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
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Frames waiting for room now.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// What a frame of `len` bytes takes: its length, or the whole budget for a frame
    /// longer than it (which therefore waits until nothing else is queued).
    fn need(&self, len: usize) -> usize {
        len.min(self.max)
    }

    fn charge(&self, bytes: usize) {
        self.used.set(self.used.get() + bytes);
        crate::admin::metrics::request_bytes_queued(bytes as i64);
    }

    fn take(self: &Rc<Self>, bytes: usize) -> RequestPermit {
        self.charge(bytes);
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
            wait: None,
        }
    }

    fn release(&self, bytes: usize) {
        self.used.set(self.used.get() - bytes);
        crate::admin::metrics::request_bytes_queued(-(bytes as i64));
        // Hand the room to the waiters that fit, smallest first, taking it for them now:
        // each woken waiter is sure to proceed, so a release wakes only the frames it
        // admits (waking every waiter that might fit made a drain of n waiters cost n²
        // polls, most of them finding the room gone and waiting again).
        let mut woken = Vec::new();
        {
            let mut waiters = self.waiters.borrow_mut();
            while let Some(entry) = waiters.first_entry() {
                let need = entry.key().0;
                if self.used.get() + need > self.max {
                    // Waiters are ordered by need: no later one fits either.
                    break;
                }
                let wait = entry.remove();
                self.charge(need);
                wait.granted.set(true);
                woken.push(wait);
            }
        }
        for w in woken {
            w.waker.borrow().wake_by_ref();
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
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for RequestPermit {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// The future of [`RequestBytes::acquire`]; dropping it withdraws the wait (and gives back
/// room already handed to it, to the next waiters).
#[derive(Debug)]
pub struct Acquire {
    budget: Rc<RequestBytes>,
    need: usize,
    /// The place in the queue, once registered: `(id, wait)`.
    wait: Option<(u64, Rc<Wait>)>,
}

impl Future for Acquire {
    type Output = RequestPermit;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RequestPermit> {
        let need = self.need;
        let budget = self.budget.clone();
        match &self.wait {
            Some((_, wait)) if wait.granted.get() => {
                // A release already charged the room to the budget for this frame.
                self.wait = None;
                Poll::Ready(RequestPermit {
                    budget,
                    bytes: need,
                })
            }
            Some((_, wait)) => {
                let mut waker = wait.waker.borrow_mut();
                if !waker.will_wake(cx.waker()) {
                    *waker = cx.waker().clone();
                }
                Poll::Pending
            }
            None if budget.used.get() + need <= budget.max => Poll::Ready(budget.take(need)),
            None => {
                crate::admin::metrics::request_read_paused();
                let id = budget.next_id.get();
                budget.next_id.set(id + 1);
                let wait = Rc::new(Wait {
                    waker: RefCell::new(cx.waker().clone()),
                    granted: Cell::new(false),
                });
                budget.waiters.borrow_mut().insert((need, id), wait.clone());
                self.wait = Some((id, wait));
                Poll::Pending
            }
        }
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        if let Some((id, wait)) = self.wait.take() {
            if wait.granted.get() {
                // Woken with room taken for it but never ran (its connection ended):
                // the room goes on to the next waiters, or it would be lost to them.
                self.budget.release(self.need);
            } else {
                self.budget.waiters.borrow_mut().remove(&(self.need, id));
            }
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

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    /// Counts the wake-ups of the wakers made from it.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counted() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    fn woken(c: &Count) -> usize {
        c.0.load(Ordering::Relaxed)
    }

    #[test]
    fn a_release_wakes_only_the_waiters_it_admits_and_hands_them_the_room() {
        let b = RequestBytes::new(100);
        let held: Vec<_> = (0..10).map(|_| b.try_acquire(10).expect("room")).collect();
        let mut waits: Vec<_> = (0..50)
            .map(|_| (Box::pin(b.acquire(10)), counted()))
            .collect();
        for (w, (_, waker)) in &mut waits {
            let mut cx = Context::from_waker(waker);
            assert!(w.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(b.waiting(), 50);
        let mut held = held.into_iter();
        drop(held.next());
        // One frame's room came back: exactly one waiter (the first) is woken, and the
        // room is already charged for it, so a newcomer cannot take it first.
        let wakes: Vec<usize> = waits.iter().map(|(_, (c, _))| woken(c)).collect();
        assert_eq!(wakes.iter().sum::<usize>(), 1);
        assert_eq!(wakes[0], 1);
        assert_eq!((b.used(), b.waiting()), (100, 49));
        assert!(b.try_acquire(10).is_none());
        // The waiters are drained one release each, with one wake-up each in all.
        let mut admitted = Vec::new();
        for (i, (w, (_, waker))) in waits.iter_mut().enumerate() {
            let mut cx = Context::from_waker(waker);
            match w.as_mut().poll(&mut cx) {
                Poll::Ready(p) => admitted.push(p),
                Poll::Pending => panic!("waiter {i} was woken without room"),
            }
            // Its frame is answered (or its connection ends): the next one gets the room.
            drop(admitted.pop());
        }
        let total: usize = waits.iter().map(|(_, (c, _))| woken(c)).sum();
        assert_eq!(total, 50, "one wake-up per admitted waiter");
        assert_eq!(b.waiting(), 0);
        drop(held);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn room_handed_to_a_waiter_that_ends_before_it_runs_goes_to_the_next() {
        let b = RequestBytes::new(10);
        let full = b.try_acquire(10).expect("room");
        let (mut first, (_, w1)) = (Box::pin(b.acquire(10)), counted());
        let (mut second, (c2, w2)) = (Box::pin(b.acquire(10)), counted());
        assert!(first
            .as_mut()
            .poll(&mut Context::from_waker(&w1))
            .is_pending());
        assert!(second
            .as_mut()
            .poll(&mut Context::from_waker(&w2))
            .is_pending());
        drop(full);
        assert_eq!(
            (b.used(), woken(&c2)),
            (10, 0),
            "the room went to the first"
        );
        // Its connection closes before its reader runs again.
        drop(first);
        assert_eq!(woken(&c2), 1, "the room is passed on");
        match second.as_mut().poll(&mut Context::from_waker(&w2)) {
            Poll::Ready(p) => {
                assert_eq!((p.bytes(), b.used()), (10, 10));
                drop(p);
            }
            Poll::Pending => panic!("the second waiter did not get the room"),
        }
        drop(second);
        assert_eq!((b.used(), b.waiting()), (0, 0));
    }

    #[test]
    fn a_release_hands_room_to_the_smallest_waiters_that_fit() {
        let b = RequestBytes::new(100);
        let full = b.try_acquire(100).expect("room");
        let mut big = Box::pin(b.acquire(80));
        let mut small = Box::pin(b.acquire(30));
        let mut small2 = Box::pin(b.acquire(30));
        let (cb, wb) = counted();
        let (_, ws) = counted();
        assert!(big
            .as_mut()
            .poll(&mut Context::from_waker(&wb))
            .is_pending());
        assert!(small
            .as_mut()
            .poll(&mut Context::from_waker(&ws))
            .is_pending());
        assert!(small2
            .as_mut()
            .poll(&mut Context::from_waker(&ws))
            .is_pending());
        drop(full);
        // 30 + 30 fit in 100; 80 more would not: the big frame is not woken.
        assert_eq!((b.used(), b.waiting(), woken(&cb)), (60, 1, 0));
        let cx = &mut Context::from_waker(&ws);
        let (Poll::Ready(p1), Poll::Ready(p2)) =
            (small.as_mut().poll(cx), small2.as_mut().poll(cx))
        else {
            panic!("the small frames were handed room");
        };
        drop((p1, p2));
        assert_eq!((b.used(), woken(&cb)), (80, 1));
        drop(big);
        assert_eq!(b.used(), 0);
    }
}
