//! Single-threaded wake-ups: [`OffsetWatch`] lets many tasks wait for an offset to be
//! reached (written, synced), [`Signal`] wakes the one flusher task of a log.
//!
//! A waiter that is dropped removes its registration, so long polls that time out leave
//! nothing behind: the number of registrations is bounded by the live futures.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
struct WatchInner {
    value: Cell<i64>,
    /// Bumped when the value goes backwards (truncation) or the log closes; waiters from an
    /// older generation resolve with `Err`.
    generation: Cell<u64>,
    next_id: Cell<u64>,
    waiters: RefCell<BTreeMap<u64, (i64, Waker)>>,
}

/// A monotonically advancing offset that tasks can wait on.
#[derive(Debug, Clone, Default)]
pub struct OffsetWatch {
    inner: Rc<WatchInner>,
}

impl OffsetWatch {
    pub fn new(value: i64) -> Self {
        let watch = OffsetWatch::default();
        watch.inner.value.set(value);
        watch
    }

    pub fn get(&self) -> i64 {
        self.inner.value.get()
    }

    /// Moves the value forward and wakes every waiter it satisfies.
    pub fn advance(&self, value: i64) {
        if value <= self.inner.value.get() {
            return;
        }
        self.inner.value.set(value);
        let ready: Vec<Waker> = {
            let mut waiters = self.inner.waiters.borrow_mut();
            let ids: Vec<u64> = waiters
                .iter()
                .filter(|(_, (target, _))| *target <= value)
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| waiters.remove(id).map(|(_, w)| w))
                .collect()
        };
        ready.into_iter().for_each(Waker::wake);
    }

    /// Sets the value (possibly backwards) and fails every current waiter.
    pub fn reset(&self, value: i64) {
        self.inner.value.set(value);
        self.inner.generation.set(self.inner.generation.get() + 1);
        let all: Vec<Waker> = std::mem::take(&mut *self.inner.waiters.borrow_mut())
            .into_values()
            .map(|(_, w)| w)
            .collect();
        all.into_iter().for_each(Waker::wake);
    }

    /// Resolves `Ok` once the value is ≥ `target`, `Err` if the watch is reset first.
    pub fn wait_for(&self, target: i64) -> WaitFor {
        WaitFor {
            inner: self.inner.clone(),
            target,
            generation: self.inner.generation.get(),
            id: None,
        }
    }
}

/// Future of [`OffsetWatch::wait_for`].
#[derive(Debug)]
pub struct WaitFor {
    inner: Rc<WatchInner>,
    target: i64,
    generation: u64,
    id: Option<u64>,
}

/// The watch was reset (truncation or close) while waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchReset;

impl Future for WaitFor {
    type Output = Result<(), WatchReset>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.inner.generation.get() != self.generation {
            return Poll::Ready(Err(WatchReset));
        }
        if self.inner.value.get() >= self.target {
            return Poll::Ready(Ok(()));
        }
        let id = match self.id {
            Some(id) => id,
            None => {
                let id = self.inner.next_id.get();
                self.inner.next_id.set(id + 1);
                self.id = Some(id);
                id
            }
        };
        self.inner
            .waiters
            .borrow_mut()
            .insert(id, (self.target, cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for WaitFor {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.inner.waiters.borrow_mut().remove(&id);
        }
    }
}

/// Wakes one waiting task; a notification sent while nobody waits is kept until the next
/// wait, so none is lost.
#[derive(Debug, Clone, Default)]
pub struct Signal {
    inner: Rc<(Cell<bool>, RefCell<Option<Waker>>)>,
}

impl Signal {
    pub fn notify(&self) {
        self.inner.0.set(true);
        if let Some(w) = self.inner.1.borrow_mut().take() {
            w.wake();
        }
    }

    /// Resolves at the first notification since the previous `wait` resolved.
    pub fn wait(&self) -> SignalWait {
        SignalWait {
            inner: self.inner.clone(),
        }
    }
}

/// Future of [`Signal::wait`].
#[derive(Debug)]
pub struct SignalWait {
    inner: Rc<(Cell<bool>, RefCell<Option<Waker>>)>,
}

impl Future for SignalWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.0.replace(false) {
            return Poll::Ready(());
        }
        *self.inner.1.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    #[test]
    fn waiters_wake_in_order_of_target_and_drop_cleanly() {
        let watch = OffsetWatch::new(0);
        let mut a = Box::pin(watch.wait_for(5));
        let mut b = Box::pin(watch.wait_for(10));
        assert!(future::block_on(future::poll_once(&mut a)).is_none());
        assert!(future::block_on(future::poll_once(&mut b)).is_none());
        watch.advance(7);
        assert_eq!(future::block_on(future::poll_once(&mut a)), Some(Ok(())));
        assert!(future::block_on(future::poll_once(&mut b)).is_none());
        drop(b);
        assert!(watch.inner.waiters.borrow().is_empty());
    }

    #[test]
    fn reset_fails_waiters() {
        let watch = OffsetWatch::new(3);
        let mut a = Box::pin(watch.wait_for(10));
        assert!(future::block_on(future::poll_once(&mut a)).is_none());
        watch.reset(1);
        assert_eq!(
            future::block_on(future::poll_once(&mut a)),
            Some(Err(WatchReset))
        );
        assert_eq!(watch.get(), 1);
    }

    #[test]
    fn signal_keeps_an_early_notification() {
        let s = Signal::default();
        s.notify();
        future::block_on(s.wait());
        let mut w = Box::pin(s.wait());
        assert!(future::block_on(future::poll_once(&mut w)).is_none());
    }
}
