//! The shard's task queues: produce and fetch work each in its own queue with CPU shares,
//! everything else in glommio's default queue.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use super::Shard;
use crate::broker::config::ServerConfig;

/// What a task does, for the task queue it runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Produce requests and the appends other shards ask for.
    Produce,
    /// Fetch requests, reads and long-poll waits other shards ask for.
    Fetch,
    /// Everything else (metadata, groups, admin APIs): glommio's default queue.
    Other,
}

/// This shard's task queues for produce and fetch work, each with its CPU shares
/// (`shard.produce_shares`, `shard.fetch_shares`), so neither starves the other when the
/// shard is saturated. Latency-sensitive: both are `Latency::Matters` (10 ms).
#[derive(Debug)]
pub(super) struct Queues {
    produce: glommio::TaskQueueHandle,
    fetch: glommio::TaskQueueHandle,
    /// (runs, runtime µs) of each so far: glommio's stats reset on every read, and the
    /// metrics built from them are counters.
    totals: Cell<[(u64, u64); 2]>,
}

impl Queues {
    /// Must run on the shard's executor.
    pub(super) fn new(config: &ServerConfig) -> Queues {
        let make = |shares: usize, name: &str| {
            let latency = glommio::Latency::Matters(Duration::from_millis(10));
            let shares = glommio::Shares::Static(shares.max(1));
            glommio::executor().create_task_queue(shares, latency, name)
        };
        Queues {
            produce: make(config.produce_shares, "produce"),
            fetch: make(config.fetch_shares, "fetch"),
            totals: Cell::new([(0, 0); 2]),
        }
    }
}

impl Shard {
    /// Tasks run and CPU time of the produce and fetch queues since the shard started,
    /// for /metrics (counters).
    pub fn queue_stats(&self) -> [crate::admin::metrics::QueueStat; 2] {
        let handles = [self.queues.produce, self.queues.fetch];
        let mut totals = self.queues.totals.get();
        for (total, q) in totals.iter_mut().zip(handles) {
            // glommio hands out what accrued since the previous read and resets it.
            if let Ok(s) = glommio::executor().task_queue_stats(q) {
                total.0 += s.queue_selected();
                total.1 += s.runtime().as_micros().min(u128::from(u64::MAX)) as u64;
            }
        }
        self.queues.totals.set(totals);
        let stat = |name, (selected, runtime_us): (u64, u64)| crate::admin::metrics::QueueStat {
            name,
            selected,
            runtime_us,
        };
        [stat("produce", totals[0]), stat("fetch", totals[1])]
    }

    /// Spawns `fut` in the task queue for `work` (the default queue if that one could not
    /// be made).
    pub fn spawn<T: 'static>(
        &self,
        work: Work,
        fut: impl Future<Output = T> + 'static,
    ) -> glommio::Task<T> {
        let queue = match work {
            Work::Produce => self.queues.produce,
            Work::Fetch => self.queues.fetch,
            Work::Other => return glommio::spawn_local(fut),
        };
        // Fails only for a queue that was removed, which this shard never does; the
        // future waits in `slot` so that even then it runs, in the default queue.
        let slot = Rc::new(RefCell::new(Some(fut)));
        let inner = slot.clone();
        let queued = async move {
            let fut = inner.borrow_mut().take();
            match fut {
                Some(f) => f.await,
                None => futures_lite::future::pending().await,
            }
        };
        match glommio::spawn_local_into(queued, queue) {
            Ok(task) => task,
            Err(e) => {
                tracing::error!(error = %e, "task queue unavailable, using the default");
                let fut = slot.borrow_mut().take();
                match fut {
                    Some(f) => glommio::spawn_local(f),
                    None => glommio::spawn_local(futures_lite::future::pending()),
                }
            }
        }
    }
}
