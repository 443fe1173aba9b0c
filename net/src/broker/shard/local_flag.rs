//! `LocalFlag`: a one-shot, many-waiter flag on one shard (the shard's `stopping`).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Poll, Waker};

/// A one-shot, many-waiter flag for this shard (stopping).
///
/// Each waiting future holds one registration, replaced on every poll and removed when
/// the future is dropped: loops that wait on it next to something else (a timer, a socket
/// read) again and again hold at most one waker each, never an accumulating pile (every
/// waker clone holds a reference on its task, and glommio caps those).
#[derive(Debug, Default)]
pub struct LocalFlag {
    set: Cell<bool>,
    next_id: Cell<u64>,
    wakers: RefCell<std::collections::BTreeMap<u64, Waker>>,
}

impl LocalFlag {
    pub fn is_set(&self) -> bool {
        self.set.get()
    }
    pub fn set(&self) {
        self.set.set(true);
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers.into_values() {
            w.wake();
        }
    }
    /// Resolves once the flag is set.
    pub fn wait(&self) -> FlagWait<'_> {
        FlagWait {
            flag: self,
            id: None,
        }
    }
}

/// The future of [`LocalFlag::wait`].
#[derive(Debug)]
pub struct FlagWait<'a> {
    flag: &'a LocalFlag,
    id: Option<u64>,
}

impl Future for FlagWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.flag.set.get() {
            return Poll::Ready(());
        }
        let id = match self.id {
            Some(id) => id,
            None => {
                let id = self.flag.next_id.get();
                self.flag.next_id.set(id + 1);
                self.id = Some(id);
                id
            }
        };
        self.flag.wakers.borrow_mut().insert(id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for FlagWait<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.flag.wakers.borrow_mut().remove(&id);
        }
    }
}

#[cfg(test)]
mod flag_tests {
    use super::*;

    #[test]
    fn a_dropped_wait_leaves_no_waker_behind() {
        let flag = LocalFlag::default();
        let waker = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = std::task::Context::from_waker(&waker);
        for _ in 0..1_000 {
            let mut w = Box::pin(flag.wait());
            assert!(w.as_mut().poll(&mut cx).is_pending());
            assert!(w.as_mut().poll(&mut cx).is_pending());
        }
        assert!(flag.wakers.borrow().is_empty());
        let mut w = Box::pin(flag.wait());
        assert!(w.as_mut().poll(&mut cx).is_pending());
        assert_eq!(flag.wakers.borrow().len(), 1);
        flag.set();
        assert!(w.as_mut().poll(&mut cx).is_ready());
    }
}
