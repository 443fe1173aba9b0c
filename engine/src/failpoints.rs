//! Storage failpoints for tests: with the `failpoints` feature, a test arms a fault at one
//! of the engine's file operations (`Site`) on its own thread (one glommio executor is one
//! thread, so tests running in parallel do not see each other's), and the next `times`
//! operations there fail with that errno instead of reaching the disk. Without the
//! feature `hit` is an empty inline function and nothing can be armed.
//!
//! What the engine must do about each (the tests in `engine/tests/failpoints.rs`): a
//! failed segment write (EIO, ENOSPC) or fdatasync takes the log offline — no further
//! append, no offset written or synced past what was before, every waiter answered with
//! `LogError::Offline` — and a reopen recovers what is on disk. After a failed fsync the
//! page cache may already have dropped the data (Linux marks the pages clean), so the log
//! never retries the sync and carries on.

/// Where a fault can be armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// A chunk's write into its segment file.
    SegmentWrite,
    /// The fdatasync of a segment file (the active one, or one being finalized).
    SegmentSync,
}

#[cfg(feature = "failpoints")]
mod armed {
    use super::Site;
    use std::cell::RefCell;

    thread_local! {
        static ARMED: RefCell<Vec<(Site, i32, u32)>> = const { RefCell::new(Vec::new()) };
    }

    /// The next `times` operations at `site` on this thread fail with `errno`
    /// (`libc::EIO`, `libc::ENOSPC`, ...).
    pub fn arm(site: Site, errno: i32, times: u32) {
        ARMED.with(|a| a.borrow_mut().push((site, errno, times)));
    }

    /// Disarms every failpoint of this thread.
    pub fn clear() {
        ARMED.with(|a| a.borrow_mut().clear());
    }

    pub(crate) fn hit(site: Site) -> std::io::Result<()> {
        ARMED.with(|a| {
            let mut a = a.borrow_mut();
            let Some(i) = a.iter().position(|(s, _, n)| *s == site && *n > 0) else {
                return Ok(());
            };
            a[i].2 -= 1;
            let errno = a[i].1;
            if a[i].2 == 0 {
                a.remove(i);
            }
            Err(std::io::Error::from_raw_os_error(errno))
        })
    }
}

#[cfg(feature = "failpoints")]
pub use armed::{arm, clear};

#[cfg(feature = "failpoints")]
pub(crate) use armed::hit;

/// Without the feature: never fails.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit(_: Site) -> std::io::Result<()> {
    Ok(())
}
