//! What one shard's logs share: the tail cache budget.
//!
//! The cache owns written chunks (`Rc`) in the order they were written; logs keep only
//! `Weak` references, so evicting the oldest chunk here is all it takes to stay within
//! `tail_cache_bytes_max`. A reader holding a slice keeps that chunk alive until it is
//! done, which bounds the excess by the bytes of in-flight fetches.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use crate::chunk::SealedChunk;
use crate::config::ShardConfig;

#[derive(Debug)]
pub struct ShardResources {
    pub config: ShardConfig,
    cache: RefCell<VecDeque<Rc<SealedChunk>>>,
    cache_bytes: Cell<usize>,
}

impl ShardResources {
    pub fn new(config: ShardConfig) -> Rc<Self> {
        Rc::new(ShardResources {
            config,
            cache: RefCell::new(VecDeque::new()),
            cache_bytes: Cell::new(0),
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

    /// Bytes the cache holds now.
    pub fn cache_bytes(&self) -> usize {
        self.cache_bytes.get()
    }
}
