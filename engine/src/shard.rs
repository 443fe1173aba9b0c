//! What one shard's logs share: the tail cache budget.
//!
//! The cache owns written chunks (`Rc`) in the order they were written; logs keep only
//! `Weak` references, so evicting the oldest chunk here is all it takes to stay within
//! `tail_cache_bytes_max`. A reader holding a slice keeps that chunk alive until it is
//! done, which bounds the excess by the bytes of in-flight fetches.
//!
//! It also counts the appended bytes waiting to be written across the shard's logs, so
//! appends wait (on `freed`) once `shard_write_buffer_bytes_max` is reached.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use crate::chunk::SealedChunk;
use crate::config::ShardConfig;
use crate::watch::OffsetWatch;

#[derive(Debug)]
pub struct ShardResources {
    pub config: ShardConfig,
    cache: RefCell<VecDeque<Rc<SealedChunk>>>,
    cache_bytes: Cell<usize>,
    pending_bytes: Cell<usize>,
    /// Bytes of pending buffers released so far: advances on every write.
    freed: OffsetWatch,
    /// One compaction at a time per shard, so one key map (`compaction_map_bytes_max`)
    /// bounds the memory compaction takes.
    pub(crate) compaction_slot: glommio::sync::Semaphore,
}

impl ShardResources {
    pub fn new(config: ShardConfig) -> Rc<Self> {
        Rc::new(ShardResources {
            config,
            cache: RefCell::new(VecDeque::new()),
            cache_bytes: Cell::new(0),
            pending_bytes: Cell::new(0),
            freed: OffsetWatch::new(0),
            compaction_slot: glommio::sync::Semaphore::new(1),
        })
    }

    /// Takes a written chunk into the cache, evicting the oldest beyond the budget.
    pub fn cache_insert(&self, chunk: Rc<SealedChunk>) {
        let mut cache = self.cache.borrow_mut();
        let mut bytes = self.cache_bytes.get() + chunk.capacity();
        cache.push_back(chunk);
        while bytes > self.config.tail_cache_bytes_max {
            match cache.pop_front() {
                Some(old) => bytes -= old.capacity(),
                None => break,
            }
        }
        self.cache_bytes.set(bytes);
    }

    /// Accounts for sealed chunks queued for writing (`added`) or written (`released`).
    pub(crate) fn pending_changed(&self, added: usize, released: usize) {
        self.pending_bytes
            .set((self.pending_bytes.get() + added).saturating_sub(released));
        if released > 0 {
            self.freed.advance(self.freed.get() + released as i64);
        }
    }

    /// Appended bytes waiting to be written across the shard.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes.get()
    }

    /// `Some` future to wait on when the shard's write buffers are full.
    pub(crate) fn wait_for_room(&self) -> Option<crate::watch::WaitFor> {
        (self.pending_bytes.get() >= self.config.shard_write_buffer_bytes_max)
            .then(|| self.freed.wait_for(self.freed.get() + 1))
    }

    /// Bytes the cache holds now.
    pub fn cache_bytes(&self) -> usize {
        self.cache_bytes.get()
    }
}
