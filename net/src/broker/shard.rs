//! One shard: the partitions it owns, its end of the channel mesh, and the operations
//! other shards (or its own connections) ask of it.
//!
//! Invariant: a partition log is touched only by the shard `owner()` names. Work for the
//! local shard runs directly; work for another shard crosses the bounded call mesh and
//! its answer comes back over the answer mesh, to the caller's own waiting table. Nothing
//! is ever sent to self.
//!
//! Invariant: no task's `Waker` crosses threads. glommio's task wakers are not safe to
//! wake or drop on another executor (their reference count races with the owner's, and
//! a shard died of `Waker invariant broken` in `drop_task` when a cross-shard read's
//! waiter was dropped while the other shard answered through a `futures` one-shot).
//! glommio's mesh channels keep wakers on their own executor and signal the peer through
//! its notifier, so calls and answers both cross only through them; the one-shots that
//! complete a waiting call are filled on the caller's own shard.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;
use glommio::channels::channel_mesh::Senders;

use crate::broker::catalog::Catalog;
use crate::broker::config::ServerConfig;
use crate::groups::Groups;
use crate::kafka::errors::code;
use crate::placement::{hash_owner, PlacementTable, Snapshot};
use crate::store::{
    AppendError, BatchSlice, LeaderEpoch, LogManager, Offset, PartitionId, PartitionLog, ReadError,
    ReadLimits, TopicPartition,
};

/// One partition of a fetch, as asked of its shard.
#[derive(Debug, Clone)]
pub struct FetchPart {
    pub tp: TopicPartition,
    pub offset: i64,
    pub partition_bytes_max: usize,
    /// The leader epoch the fetcher knows (-1: none; not checked).
    pub current_leader_epoch: i32,
}

/// Who reads in a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// A follower replicating (its broker id): reads up to the written end.
    Follower(i32),
    /// A consumer: reads below the high watermark; `from_follower` when it may be served
    /// by a follower replica (Fetch v11+, KIP-392), else only by the leader.
    Consumer { from_follower: bool },
}

/// One partition of a fetch, as answered.
#[derive(Debug, Clone, Default)]
pub struct FetchPartResult {
    pub error: i16,
    pub high_watermark: i64,
    pub log_start: i64,
    pub records: Option<Bytes>,
}

/// One partition of a produce, as answered.
#[derive(Debug, Clone, Copy)]
pub struct ProducePartResult {
    pub error: i16,
    pub base_offset: i64,
    pub log_start: i64,
}

/// Work one shard asks of another.
#[derive(Debug)]
pub enum ShardOp {
    Produce {
        acks: i16,
        /// How long acks=all waits for the ISR (the request's `timeout_ms`).
        timeout_ms: u64,
        parts: Vec<(TopicPartition, Bytes)>,
    },
    FetchRead {
        parts: Vec<FetchPart>,
        bytes_max: usize,
        reader: Reader,
    },
    FetchWait {
        parts: Vec<(TopicPartition, i64)>,
        wait_ms: u64,
        reader: Reader,
    },
    ListOffsets {
        parts: Vec<(TopicPartition, i64)>,
    },
    DeleteRecords {
        parts: Vec<(TopicPartition, i64)>,
    },
    /// End offset of each (partition, leader epoch).
    EpochEnds {
        parts: Vec<(TopicPartition, i32)>,
    },
    DeleteTopic {
        name: String,
        partitions: i32,
    },
    ApplyConfig {
        topic: String,
    },
    /// The first half of a live move: stop appends, drain, close the log (this shard
    /// owns it until the table flips).
    MoveOut {
        tp: TopicPartition,
    },
    /// The second half: open the log this shard now owns.
    MoveIn {
        tp: TopicPartition,
    },
    /// Serve a client connection another shard accepted (see [`ConnectionCounts`]); its
    /// slot in the counts was already taken for this shard.
    Adopt {
        socket: std::os::fd::OwnedFd,
        slot: ConnectionSlot,
    },
}

impl ShardOp {
    /// The task queue this operation runs in on the receiving shard.
    pub fn work(&self) -> Work {
        match self {
            ShardOp::Produce { .. } => Work::Produce,
            ShardOp::FetchRead { .. } | ShardOp::FetchWait { .. } => Work::Fetch,
            ShardOp::Adopt { .. } => Work::Other,
            _ => Work::Other,
        }
    }
}

/// The answer to a [`ShardOp`].
#[derive(Debug)]
pub enum ShardReply {
    Produce(Vec<ProducePartResult>),
    Fetch(Vec<FetchPartResult>),
    /// (error, offset, timestamp) per partition.
    Offsets(Vec<(i16, i64, i64)>),
    Done,
    /// An operation that failed, with the reason (for the operator).
    Failed(String),
    /// The other shard could not be reached (it is stopping).
    Unreachable,
}

/// Open client connections per shard, so a new connection goes to the least loaded
/// shard instead of wherever SO_REUSEPORT's hash put it: a Kafka client sends all its
/// requests to a broker over one connection, and the shard that reads a connection does
/// its receive copies and parsing, so two producers hashed onto one shard left the other
/// mostly idle (perf, 1 KiB produce: one shard thread at 40% of the machine, the other 17%).
///
/// Slot `i` counts the connections shard `i` serves or is about to be handed. The shard
/// that routes a connection (the one that accepted it) takes a [`ConnectionSlot`] within
/// the [`ConnectionLimits`] (per shard, in all, per client address); dropping the slot
/// gives it back, wherever the connection ended (on the serving shard, or on the router
/// when the hand-off fails).
#[derive(Debug)]
pub struct ConnectionCounts {
    per_shard: Vec<std::sync::atomic::AtomicUsize>,
    /// Open connections per client address; an address leaves the map at zero. Touched
    /// once per accept and once per close, never on the request path.
    per_ip: std::sync::Mutex<HashMap<std::net::IpAddr, usize>>,
}

/// The connection bounds a new connection must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `network.connections_max_per_shard`.
    pub per_shard_max: usize,
    /// `network.connections_max` (Kafka's `max.connections`).
    pub total_max: usize,
    /// `network.connections_max_per_ip` (Kafka's `max.connections.per.ip`).
    pub per_ip_max: usize,
}

/// Which bound refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    Shard,
    Total,
    PerIp,
}

impl ConnectionRefusal {
    /// The metric label and log word.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionRefusal::Shard => "per_shard",
            ConnectionRefusal::Total => "total",
            ConnectionRefusal::PerIp => "per_ip",
        }
    }
}

/// One connection's place in the counts; dropping it frees the place.
#[derive(Debug)]
pub struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    shard: usize,
    ip: std::net::IpAddr,
}

impl ConnectionSlot {
    /// The shard the connection is counted on.
    pub fn shard(&self) -> usize {
        self.shard
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.counts.per_shard[self.shard].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let mut per_ip = self.counts.lock_per_ip();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

impl ConnectionCounts {
    pub fn new(shards: usize) -> Self {
        ConnectionCounts {
            per_shard: (0..shards.max(1)).map(|_| Default::default()).collect(),
            per_ip: Default::default(),
        }
    }

    fn lock_per_ip(&self) -> std::sync::MutexGuard<'_, HashMap<std::net::IpAddr, usize>> {
        self.per_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, shard: usize) -> usize {
        self.per_shard[shard].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Open connections on every shard.
    pub fn total(&self) -> usize {
        (0..self.per_shard.len()).map(|i| self.get(i)).sum()
    }

    /// Where a connection accepted by `shard` is served: the shard with the fewest
    /// connections if that is fewer than `shard` has, else `shard` itself.
    pub fn target_for(&self, shard: usize) -> usize {
        let (least, count) = (0..self.per_shard.len())
            .map(|i| (i, self.get(i)))
            .min_by_key(|&(i, c)| (c, i != shard))
            .unwrap_or((shard, 0));
        if count < self.get(shard) {
            least
        } else {
            shard
        }
    }

    /// Takes a place on `shard` for a connection from `ip`, unless that would pass one of
    /// `limits`. The per-address lock is held across the checks, so concurrent accepts on
    /// several shards cannot together pass the total or per-address bound.
    pub fn reserve(
        self: &Arc<Self>,
        shard: usize,
        ip: std::net::IpAddr,
        limits: ConnectionLimits,
    ) -> Result<ConnectionSlot, ConnectionRefusal> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut per_ip = self.lock_per_ip();
        let from_ip = per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= limits.per_ip_max {
            return Err(ConnectionRefusal::PerIp);
        }
        if self.total() >= limits.total_max {
            return Err(ConnectionRefusal::Total);
        }
        self.per_shard[shard]
            .fetch_update(Relaxed, Relaxed, |c| {
                (c < limits.per_shard_max).then_some(c + 1)
            })
            .map_err(|_| ConnectionRefusal::Shard)?;
        per_ip.insert(ip, from_ip + 1);
        Ok(ConnectionSlot {
            counts: self.clone(),
            shard,
            ip,
        })
    }
}

/// A request crossing the mesh; the answer goes back to the shard it came from, under
/// its `call_id`.
#[derive(Debug)]
pub struct ShardCall {
    pub op: ShardOp,
    pub call_id: u64,
}

/// The answer to a [`ShardCall`], crossing the answer mesh back to the caller.
#[derive(Debug)]
pub struct ShardAnswer {
    pub call_id: u64,
    pub reply: ShardReply,
}

/// The calls this shard waits on, by id; filled on this shard only.
#[derive(Debug, Default)]
struct Waiting {
    next_id: Cell<u64>,
    calls: RefCell<HashMap<u64, oneshot::Sender<ShardReply>>>,
}

impl Waiting {
    /// Hands an answer to its caller if it still waits; `false` when it is gone.
    fn deliver(&self, answer: ShardAnswer) -> bool {
        let waiter = self.calls.borrow_mut().remove(&answer.call_id);
        waiter.is_some_and(|tx| tx.send(answer.reply).is_ok())
    }
}

/// Removes a call from [`Waiting`] when its caller stops waiting (answered or dropped),
/// so a late answer finds nothing and is dropped.
struct WaitingGuard<'a> {
    waiting: &'a Waiting,
    id: u64,
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.waiting.calls.borrow_mut().remove(&self.id);
    }
}

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
mod waiting_tests {
    use super::*;

    #[test]
    fn an_answer_reaches_a_waiting_caller_and_a_late_one_is_dropped() {
        let waiting = Waiting::default();
        let (tx, mut rx) = oneshot::channel();
        waiting.calls.borrow_mut().insert(1, tx);
        let answer = |call_id| ShardAnswer {
            call_id,
            reply: ShardReply::Done,
        };
        assert!(waiting.deliver(answer(1)));
        assert!(matches!(rx.try_recv(), Ok(Some(ShardReply::Done))));
        // A caller that stopped waiting (its future dropped) leaves no entry behind, and
        // its answer, arriving later, goes nowhere.
        let (tx, _rx) = oneshot::channel();
        waiting.calls.borrow_mut().insert(2, tx);
        drop(WaitingGuard {
            waiting: &waiting,
            id: 2,
        });
        assert!(waiting.calls.borrow().is_empty());
        assert!(!waiting.deliver(answer(2)));
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

/// Per-shard state. Lives as long as the shard's executor.
pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub config: Arc<ServerConfig>,
    pub catalog: Arc<Catalog>,
    pub groups: Arc<Groups>,
    pub logs: LogManager,
    /// This shard's copy of the metadata image (leaders, replicas, ISR).
    pub cluster: crate::broker::cluster::ShardImage,
    senders: Option<Senders<ShardCall>>,
    /// The answer mesh: answers to other shards' calls go back through it.
    answers: Option<Senders<ShardAnswer>>,
    waiting: Waiting,
    pub stopping: LocalFlag,
    /// Every shard's open connections (this shard writes its own slot and takes others'
    /// for connections it routes to them).
    pub connections: Arc<ConnectionCounts>,
    pub fetch_sessions: RefCell<crate::kafka::handlers::fetch::Sessions>,
    /// The replicated partitions this shard owns (roles, high watermarks).
    pub replicas: crate::broker::replicas::Replicas,
    /// Appends run one produce request at a time, in arrival order (a FIFO semaphore), so
    /// pipelined produce requests for one partition are appended in request order even
    /// when one of them waits (log creation, a full write buffer). Waits for durability
    /// happen outside it and overlap.
    append_order: glommio::sync::Semaphore,
    /// Log creations run one at a time (see `open_or_create_log`).
    create_order: glommio::sync::Semaphore,
    /// Where partitions live; `placement_cache` is this shard's copy of its snapshot,
    /// refreshed when the table's version moves.
    pub placement: Arc<PlacementTable>,
    placement_cache: RefCell<(u64, Arc<Snapshot>)>,
    /// Traffic of the partitions this shard owns (entries go with the partition).
    pub traffic: RefCell<HashMap<TopicPartition, Traffic>>,
    queues: Queues,
    /// Bytes of requests being read or not yet answered (`queued.max.request.bytes`).
    pub request_bytes: Rc<crate::kafka::request_bytes::RequestBytes>,
}

/// What every shard shares: settings, the topic catalog, the group coordinator's
/// broker-wide state, and the placement table.
#[derive(Debug, Clone)]
pub struct ShardShared {
    pub config: Arc<ServerConfig>,
    pub catalog: Arc<Catalog>,
    pub groups: Arc<Groups>,
    pub placement: Arc<PlacementTable>,
    pub connections: Arc<ConnectionCounts>,
}

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
struct Queues {
    produce: glommio::TaskQueueHandle,
    fetch: glommio::TaskQueueHandle,
    /// (runs, runtime µs) of each so far: glommio's stats reset on every read, and the
    /// metrics built from them are counters.
    totals: Cell<[(u64, u64); 2]>,
}

impl Queues {
    /// Must run on the shard's executor.
    fn new(config: &ServerConfig) -> Queues {
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

/// Counters of one partition on its owning shard, published with /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub produce_requests: u64,
    pub fetch_requests: u64,
}

/// Longest a request waits for a moving partition to land before it is routed anyway
/// (and answered NOT_LEADER_OR_FOLLOWER, which clients retry).
const MOVE_WAIT_MS_MAX: u64 = 30_000;

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("id", &self.id)
            .field("count", &self.count)
            .finish()
    }
}

fn append_error_code(e: &AppendError) -> i16 {
    match e {
        AppendError::Corrupt(_) => code::CORRUPT_MESSAGE,
        AppendError::InvalidRecord(_) => code::INVALID_RECORD,
        // Kafka: "Compacted topic cannot accept message without key".
        AppendError::KeylessRecord { .. } => code::INVALID_RECORD,
        AppendError::TooLarge { .. } => code::MESSAGE_TOO_LARGE,
        AppendError::InvalidTimestamp { .. } => code::INVALID_TIMESTAMP,
        // Closing or frozen: a retriable "not here now".
        AppendError::Unavailable(_) => code::NOT_LEADER_OR_FOLLOWER,
        AppendError::OutOfOrderSequence { .. } => code::OUT_OF_ORDER_SEQUENCE_NUMBER,
        AppendError::InvalidProducerEpoch { .. } => code::INVALID_PRODUCER_EPOCH,
        AppendError::UnknownProducerId(_) => code::UNKNOWN_PRODUCER_ID,
        AppendError::Io(_) => code::KAFKA_STORAGE_ERROR,
        // Only follower appends (`append_replica`) refuse this way; a produce never does.
        AppendError::UnexpectedOffset { .. } => code::UNKNOWN_SERVER_ERROR,
    }
}

impl Shard {
    /// Sleeps for `d` unless the shard starts stopping first; `true` when it is stopping.
    /// The one way background loops (metrics, retention, the coordinator's sweep, the
    /// mover, replication) wait between rounds, so each ends as soon as the stop begins.
    pub async fn sleep_or_stop(&self, d: Duration) -> bool {
        futures_lite::future::or(
            async {
                glommio::timer::sleep(d).await;
                false
            },
            async {
                self.stopping.wait().await;
                true
            },
        )
        .await
    }

    /// Waits for a group answer (`answer`), unless the broker starts stopping first:
    /// then COORDINATOR_NOT_AVAILABLE, so clients move on instead of waiting out a
    /// rebalance. A dropped answer becomes `dropped`.
    pub async fn group_answer<T, E>(
        &self,
        answer: impl std::future::Future<Output = Result<T, E>>,
        dropped: i16,
    ) -> Result<T, i16> {
        futures_lite::future::or(async { answer.await.map_err(|_| dropped) }, async {
            self.stopping.wait().await;
            Err(code::COORDINATOR_NOT_AVAILABLE)
        })
        .await
    }

    // One caller (server::open_shard) builds shards from the parts it opened; a struct
    // of parameters would only restate this list.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        count: usize,
        shared: ShardShared,
        logs: LogManager,
        mesh: Option<(Senders<ShardCall>, Senders<ShardAnswer>)>,
        cluster: crate::broker::cluster::ShardImage,
    ) -> Shard {
        let (senders, answers) = match mesh {
            Some((s, a)) => (Some(s), Some(a)),
            None => (None, None),
        };
        let ShardShared {
            config,
            catalog,
            groups,
            placement,
            connections,
        } = shared;
        let sessions =
            crate::kafka::handlers::fetch::Sessions::new(config.fetch_sessions_max_per_shard, id);
        let config_for_queues = config.clone();
        let request_bytes =
            crate::kafka::request_bytes::RequestBytes::new(config.queued_request_bytes_max);
        Shard {
            id,
            count,
            config,
            catalog,
            groups,
            logs,
            cluster,
            senders,
            answers,
            waiting: Waiting::default(),
            stopping: LocalFlag::default(),
            connections,
            fetch_sessions: RefCell::new(sessions),
            replicas: crate::broker::replicas::Replicas::default(),
            append_order: glommio::sync::Semaphore::new(1),
            create_order: glommio::sync::Semaphore::new(1),
            placement_cache: RefCell::new(placement.snapshot()),
            placement,
            traffic: RefCell::new(HashMap::new()),
            queues: Queues::new(&config_for_queues),
            request_bytes,
        }
    }

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
                tracing::error!(shard = self.id, error = %e, "task queue unavailable, using the default");
                let fut = slot.borrow_mut().take();
                match fut {
                    Some(f) => glommio::spawn_local(f),
                    None => glommio::spawn_local(futures_lite::future::pending()),
                }
            }
        }
    }

    /// The shard owning a partition: its place in the table; a partition of a known topic
    /// not placed yet is placed now (its whole topic, by the policy). A partition the
    /// catalog does not have goes to its hash shard, which answers that it is unknown.
    pub fn owner_of(&self, tp: &TopicPartition) -> usize {
        if let Some(s) = self.placed(tp) {
            return s;
        }
        match self.catalog.partition_count(&tp.topic) {
            Some(n) if tp.partition.0 >= 0 && tp.partition.0 < n => {
                self.placement.place(&tp.topic, n, tp.partition.0)
            }
            _ => hash_owner(&tp.topic, tp.partition.0, self.count),
        }
    }

    /// The table's answer, from this shard's cached snapshot while its version holds.
    fn placed(&self, tp: &TopicPartition) -> Option<usize> {
        let version = self.placement.version();
        {
            let cache = self.placement_cache.borrow();
            if cache.0 == version {
                return cache.1.owner(&tp.topic, tp.partition.0);
            }
        }
        let fresh = self.placement.snapshot();
        let owner = fresh.1.owner(&tp.topic, tp.partition.0);
        *self.placement_cache.borrow_mut() = fresh;
        owner
    }

    /// Waits until none of `tps` is being moved (bounded by `MOVE_WAIT_MS_MAX`), so a
    /// request is routed to the partition's new shard instead of failing on the old one.
    pub async fn wait_not_moving<'a>(&self, tps: impl Iterator<Item = &'a TopicPartition> + Clone) {
        let moving = |s: &Self| {
            let snap = s.placement.snapshot().1;
            snap.any_moving()
                && tps
                    .clone()
                    .any(|tp| snap.is_moving(&tp.topic, tp.partition.0))
        };
        let quiet = {
            // The common case: nothing moves anywhere, decided from the cached snapshot.
            self.placed_version_current() && !self.placement_cache.borrow().1.any_moving()
        };
        if quiet {
            return;
        }
        let mut waited_ms = 0;
        while moving(self) && waited_ms < MOVE_WAIT_MS_MAX && !self.stopping.is_set() {
            glommio::timer::sleep(Duration::from_millis(1)).await;
            waited_ms += 1;
        }
    }

    fn placed_version_current(&self) -> bool {
        self.placement_cache.borrow().0 == self.placement.version()
    }

    fn count_traffic(&self, tp: &TopicPartition, f: impl FnOnce(&mut Traffic)) {
        let mut traffic = self.traffic.borrow_mut();
        match traffic.get_mut(tp) {
            Some(t) => f(t),
            None => {
                let mut t = Traffic::default();
                f(&mut t);
                traffic.insert(tp.clone(), t);
            }
        }
    }

    /// Runs `op` on `shard`: directly when it is this one, over the mesh otherwise.
    pub async fn call(self: &Rc<Self>, shard: usize, op: ShardOp) -> ShardReply {
        if shard == self.id {
            return self.execute(op).await;
        }
        let Some(senders) = &self.senders else {
            return ShardReply::Unreachable;
        };
        let call_id = self.waiting.next_id.get();
        self.waiting.next_id.set(call_id.wrapping_add(1));
        let (tx, rx) = oneshot::channel();
        self.waiting.calls.borrow_mut().insert(call_id, tx);
        let _guard = WaitingGuard {
            waiting: &self.waiting,
            id: call_id,
        };
        if senders
            .send_to(shard, ShardCall { op, call_id })
            .await
            .is_err()
        {
            tracing::warn!(shard = self.id, to = shard, "mesh send failed");
            return ShardReply::Unreachable;
        }
        rx.await.unwrap_or(ShardReply::Unreachable)
    }

    /// Runs a call that arrived from shard `from` and sends its answer back.
    pub async fn serve_call(self: &Rc<Self>, from: usize, call: ShardCall) {
        let reply = self.execute(call.op).await;
        let Some(answers) = &self.answers else {
            return;
        };
        let answer = ShardAnswer {
            call_id: call.call_id,
            reply,
        };
        if answers.send_to(from, answer).await.is_err() {
            tracing::warn!(shard = self.id, to = from, "mesh answer send failed");
        }
    }

    /// Hands an answer that came back over the mesh to its waiting caller, if it still
    /// waits (on this shard's thread: the caller's waker never leaves it).
    pub fn answer_arrived(&self, answer: ShardAnswer) {
        self.waiting.deliver(answer);
    }

    /// Runs one call per shard, all at once, and returns the replies in input order.
    pub async fn call_all(self: &Rc<Self>, mut calls: Vec<(usize, ShardOp)>) -> Vec<ShardReply> {
        if calls.len() == 1 {
            if let Some((s, op)) = calls.pop() {
                return vec![self.call(s, op).await];
            }
        }
        let tasks: Vec<_> = calls
            .into_iter()
            .map(|(s, op)| {
                let me = self.clone();
                glommio::spawn_local(async move { me.call(s, op).await })
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await);
        }
        out
    }

    /// The log of a partition this shard owns, created on first use if the topic has it.
    pub async fn log_for(&self, tp: &TopicPartition) -> Result<PartitionLog, i16> {
        if let Some(log) = self.logs.get(tp) {
            self.check_leader(tp)?;
            return Ok(log);
        }
        match self.catalog.partition_count(&tp.topic) {
            Some(n) if tp.partition.0 >= 0 && tp.partition.0 < n => {}
            _ => return Err(code::UNKNOWN_TOPIC_OR_PARTITION),
        }
        if self
            .placement
            .snapshot()
            .1
            .is_moving(&tp.topic, tp.partition.0)
        {
            // Closed here for a move: wait for it to land, then the caller goes elsewhere.
            self.wait_not_moving(std::iter::once(tp)).await;
            return match self.logs.get(tp) {
                Some(log) => Ok(log),
                None => Err(code::NOT_LEADER_OR_FOLLOWER),
            };
        }
        if self.owner_of(tp) != self.id {
            return Err(code::NOT_LEADER_OR_FOLLOWER);
        }
        self.check_leader(tp)?;
        self.open_or_create_log(tp).await
    }

    /// The partition's log on this shard, created if it does not exist yet. Creations run
    /// one at a time (a request and the replication loop may both want a new partition),
    /// so a second caller finds the first one's log instead of a half-made directory.
    pub async fn open_or_create_log(&self, tp: &TopicPartition) -> Result<PartitionLog, i16> {
        let _turn = self.create_order.acquire_permit(1).await;
        if let Some(log) = self.logs.get(tp) {
            return Ok(log);
        }
        let config = self.catalog.log_config_for(&tp.topic);
        self.logs.create(tp.clone(), config).await.map_err(|e| match e {
            // Its directory is still being removed (the topic was deleted or replaced
            // under the same name a moment ago): retriable.
            crate::store::LogError::AlreadyExists(_) => {
                tracing::warn!(shard = self.id, topic = %tp.topic, partition = tp.partition.0, "partition directory still in use; the client retries");
                code::NOT_LEADER_OR_FOLLOWER
            }
            e => {
                tracing::error!(shard = self.id, topic = %tp.topic, partition = tp.partition.0, error = %e, "creating partition log failed");
                code::KAFKA_STORAGE_ERROR
            }
        })
    }

    /// NOT_LEADER_OR_FOLLOWER unless the image names this broker the partition's leader
    /// (clients then refresh their metadata).
    fn check_leader(&self, tp: &TopicPartition) -> Result<(), i16> {
        if self.cluster.leads(&tp.topic, tp.partition.0) {
            Ok(())
        } else {
            Err(code::NOT_LEADER_OR_FOLLOWER)
        }
    }

    /// Executes an operation on this shard (the owner of every partition it names).
    pub async fn execute(self: &Rc<Self>, op: ShardOp) -> ShardReply {
        match op {
            ShardOp::Produce {
                acks,
                timeout_ms,
                parts,
            } => ShardReply::Produce(self.produce(acks, timeout_ms, parts).await),
            ShardOp::FetchRead {
                parts,
                bytes_max,
                reader,
            } => ShardReply::Fetch(self.fetch_read(&parts, bytes_max, reader).await),
            ShardOp::FetchWait {
                parts,
                wait_ms,
                reader,
            } => {
                self.fetch_wait(&parts, wait_ms, reader).await;
                ShardReply::Done
            }
            ShardOp::ListOffsets { parts } => ShardReply::Offsets(self.list_offsets(&parts).await),
            ShardOp::DeleteRecords { parts } => {
                ShardReply::Offsets(self.delete_records(&parts).await)
            }
            ShardOp::EpochEnds { parts } => ShardReply::Offsets(self.epoch_ends(&parts).await),
            ShardOp::DeleteTopic { name, partitions } => {
                self.delete_topic(&name, partitions).await;
                ShardReply::Done
            }
            ShardOp::ApplyConfig { topic } => {
                let config = self.catalog.log_config_for(&topic);
                for tp in self.logs.partitions() {
                    if tp.topic == topic {
                        if let Some(log) = self.logs.get(&tp) {
                            if let Err(e) = log.set_config(config.clone()) {
                                tracing::error!(shard = self.id, topic = %topic, error = %e, "applying topic config failed");
                            }
                        }
                    }
                }
                ShardReply::Done
            }
            ShardOp::MoveOut { tp } => self.move_out(&tp).await,
            ShardOp::MoveIn { tp } => self.move_in(&tp).await,
            ShardOp::Adopt { socket, slot } => {
                use std::os::fd::{FromRawFd, IntoRawFd};
                // SAFETY: the descriptor is an accepted TCP socket this message owned.
                let stream = unsafe { glommio::net::TcpStream::from_raw_fd(socket.into_raw_fd()) };
                crate::kafka::conn::spawn(self.clone(), stream, slot);
                ShardReply::Done
            }
        }
    }

    /// Stops appends to `tp` (the table marks it moving, so new ones wait), waits for the
    /// appends before it (the FIFO append turn), and closes the log: written, synced and
    /// checkpointed, idempotent producer state included.
    async fn move_out(&self, tp: &TopicPartition) -> ShardReply {
        let _turn = self.append_order.acquire_permit(1).await;
        let Some(log) = self.logs.get(tp) else {
            // Never opened here (no traffic yet): nothing to close.
            return ShardReply::Done;
        };
        match self.logs.release(tp).await {
            Ok(()) => {
                self.traffic.borrow_mut().remove(tp);
                tracing::info!(shard = self.id, partition = %tp, end = log.log_end_offset().0, "partition closed for a move");
                ShardReply::Done
            }
            Err(e) => {
                tracing::error!(shard = self.id, partition = %tp, error = %e, "closing a partition for a move failed");
                ShardReply::Failed(format!("closing {tp} on shard {}: {e}", self.id))
            }
        }
    }

    /// Opens a moved partition's log on this shard (recovery trusts its checkpoint).
    async fn move_in(&self, tp: &TopicPartition) -> ShardReply {
        if self.logs.get(tp).is_some() {
            return ShardReply::Done;
        }
        let config = self.catalog.log_config_for(&tp.topic);
        let result = if self.logs.data_dir().join(tp.dir_name()).exists() {
            self.logs.adopt(tp.clone(), config).await
        } else {
            // Never written: it is created on first use.
            return ShardReply::Done;
        };
        match result {
            Ok(log) => {
                tracing::info!(shard = self.id, partition = %tp, end = log.log_end_offset().0, "partition opened after a move");
                ShardReply::Done
            }
            Err(e) => {
                tracing::error!(shard = self.id, partition = %tp, error = %e, "opening a moved partition failed");
                ShardReply::Failed(format!("opening {tp} on shard {}: {e}", self.id))
            }
        }
    }

    async fn produce(
        &self,
        acks: i16,
        timeout_ms: u64,
        parts: Vec<(TopicPartition, Bytes)>,
    ) -> Vec<ProducePartResult> {
        // Phase 1: append everything (validation, offsets); phase 2: wait for durability,
        // so the waits of all partitions overlap.
        let mut appended = Vec::with_capacity(parts.len());
        {
            // The semaphore is never closed, so the permit is always granted.
            let _turn = self.append_order.acquire_permit(1).await;
            for (tp, records) in &parts {
                appended.push(self.append_one(tp, records, acks).await);
            }
        }
        let mut out = Vec::with_capacity(appended.len());
        for (a, (tp, _)) in appended.into_iter().zip(&parts) {
            let r = match a {
                Err(error) => Err(error),
                Ok((log, base_offset, end, epoch)) => self
                    .wait_acked(tp, &log, acks, (end, epoch), timeout_ms)
                    .await
                    .map(|()| (base_offset, log.log_start_offset().0)),
            };
            out.push(match r {
                Ok((base_offset, log_start)) => ProducePartResult {
                    error: code::NONE,
                    base_offset,
                    log_start,
                },
                Err(error) => ProducePartResult {
                    error,
                    base_offset: -1,
                    log_start: -1,
                },
            });
        }
        out
    }

    /// What the producer's `acks` waits for: nothing (0), this broker's durable copy (1),
    /// or the high watermark passing the batch (all), bounded by `timeout_ms`. `end` and
    /// `epoch`: where the batch ends and the leadership it was appended under; the
    /// answer is NOT_LEADER_OR_FOLLOWER once that leadership is over, whatever the high
    /// watermark says (after the switch to follower the high watermark is the new
    /// leader's, whose log may hold other records at these offsets: this broker's copy
    /// of the batch is an uncommitted suffix it truncates, and acknowledging it would
    /// lose it).
    async fn wait_acked(
        &self,
        tp: &TopicPartition,
        log: &PartitionLog,
        acks: i16,
        (end, epoch): (Offset, LeaderEpoch),
        timeout_ms: u64,
    ) -> Result<(), i16> {
        if acks == 0 {
            return Ok(());
        }
        if let Err(e) = log.wait_durable(end).await {
            tracing::error!(shard = self.id, partition = %tp, error = %e, "waiting for durability failed");
            return Err(code::KAFKA_STORAGE_ERROR);
        }
        let Some(replica) = self.replicas.get(tp) else {
            return Ok(());
        };
        let same_leadership =
            |r: &crate::broker::replicas::Replica| crate::broker::replicas::still_leading(r, epoch);
        if !same_leadership(&replica) {
            return Err(code::NOT_LEADER_OR_FOLLOWER);
        }
        // This broker's copy is durable: that may be what the high watermark waited for.
        replica.update_hw();
        if acks != -1 || replica.hw.get() >= end.0 {
            return Ok(());
        }
        let wait = replica.hw.wait_for(end.0);
        let timeout = glommio::timer::sleep(Duration::from_millis(timeout_ms.max(1)));
        let stopping = self.stopping.wait();
        match futures_lite::future::or(async { Some(wait.await) }, async {
            futures_lite::future::or(timeout, stopping).await;
            None
        })
        .await
        {
            // The high watermark passed the batch within the leadership it was written in.
            Some(Ok(())) if same_leadership(&replica) => Ok(()),
            // The leadership ended while waiting: the client retries on the new leader.
            Some(_) => Err(code::NOT_LEADER_OR_FOLLOWER),
            None if !replica.enough_in_sync() => Err(code::NOT_ENOUGH_REPLICAS_AFTER_APPEND),
            None => Err(code::REQUEST_TIMED_OUT),
        }
    }

    /// Appends one partition's records: the log, the base offset and the end offset to
    /// wait for.
    async fn append_one(
        &self,
        tp: &TopicPartition,
        records: &Bytes,
        acks: i16,
    ) -> Result<(PartitionLog, i64, Offset, LeaderEpoch), i16> {
        let log = self.log_for(tp).await?;
        // The epoch the batch is stamped with is the leadership this broker holds now,
        // checked with no await before the append: the image alone may already name a
        // newer epoch this broker does not lead in (a controlled shutdown moving it away,
        // or leading again before the replication loop switched the role). A batch stamped
        // with an epoch its writer never led in makes a later truncation keep it
        // (its epoch matches the real leader's), and the replicas diverge.
        let image_epoch = self.cluster.leader_epoch(&tp.topic, tp.partition.0);
        let role_epoch = self.replicas.get(tp).map(|r| r.leader_epoch());
        let epoch = LeaderEpoch(crate::broker::replicas::append_epoch(
            role_epoch,
            image_epoch,
        )?);
        if acks == -1 && self.replicas.get(tp).is_some_and(|r| !r.enough_in_sync()) {
            tracing::info!(shard = self.id, partition = %tp, "acks=all produce refused: too few in-sync replicas");
            return Err(code::NOT_ENOUGH_REPLICAS);
        }
        self.count_traffic(tp, |t| {
            t.bytes_in += records.len() as u64;
            t.produce_requests += 1;
        });
        // Idempotence (sequence checks, duplicates answered with their first offsets) is
        // the engine's: its producer state is per log and survives restarts.
        let result = log.append(records, epoch).await;
        match result {
            Ok(info) => Ok((
                log,
                info.base_offset.0,
                Offset(info.last_offset.0 + 1),
                epoch,
            )),
            Err(AppendError::Io(e)) => {
                tracing::error!(shard = self.id, topic = %tp.topic, partition = tp.partition.0, error = %e, "append failed");
                Err(code::KAFKA_STORAGE_ERROR)
            }
            Err(e) => {
                tracing::info!(shard = self.id, topic = %tp.topic, partition = tp.partition.0, error = %e, "produce rejected");
                Err(append_error_code(&e))
            }
        }
    }

    /// Reads for another shard: the batches are copied into owned bytes to cross threads.
    async fn fetch_read(
        &self,
        parts: &[FetchPart],
        bytes_max: usize,
        reader: Reader,
    ) -> Vec<FetchPartResult> {
        self.fetch_read_local(parts, bytes_max, reader)
            .await
            .into_iter()
            .map(|(mut r, slices, bytes)| {
                if bytes > 0 {
                    let mut buf = BytesMut::with_capacity(bytes);
                    for s in &slices {
                        buf.extend_from_slice(s);
                    }
                    r.records = Some(buf.freeze());
                }
                r
            })
            .collect()
    }

    /// The high watermark of a partition this shard owns: its replica's, or for a
    /// partition with one replica, its written end.
    pub fn high_watermark(&self, tp: &TopicPartition, log: &PartitionLog) -> i64 {
        match self.replicas.get(tp) {
            Some(r) => r.hw.get(),
            None => log.written_end_offset().0,
        }
    }

    /// FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH when the client's epoch (≥ 0) is older /
    /// newer than the image's.
    pub fn check_leader_epoch(&self, tp: &TopicPartition, epoch: i32) -> Result<(), i16> {
        if epoch < 0 {
            return Ok(());
        }
        let current = self.cluster.leader_epoch(&tp.topic, tp.partition.0);
        match epoch.cmp(&current) {
            std::cmp::Ordering::Less => Err(code::FENCED_LEADER_EPOCH),
            std::cmp::Ordering::Greater => Err(code::UNKNOWN_LEADER_EPOCH),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    /// The log a fetch reads: the leader's; a follower's own copy for a consumer that may
    /// read from followers.
    async fn log_for_read(&self, tp: &TopicPartition, reader: Reader) -> Result<PartitionLog, i16> {
        if let Reader::Consumer {
            from_follower: true,
        } = reader
        {
            if let Some(r) = self.replicas.get(tp).filter(|r| !r.is_leader()) {
                return Ok(r.log.clone());
            }
        }
        self.log_for(tp).await
    }

    /// Where a fetch of `p` may read up to, and the high watermark to answer with. A
    /// follower reads up to the written end and its fetch offset counts as its durable
    /// end; a consumer reads below the high watermark (a follower's own, on a follower).
    fn fetch_bounds(
        &self,
        p: &FetchPart,
        log: &PartitionLog,
        reader: Reader,
    ) -> Result<(i64, i64), i16> {
        self.check_leader_epoch(&p.tp, p.current_leader_epoch)?;
        match (self.replicas.get(&p.tp), reader) {
            (Some(r), Reader::Follower(id)) => {
                // Only a fetch within the log says how far the follower holds it: one
                // past the end has diverged (it is answered OFFSET_OUT_OF_RANGE and
                // truncates first).
                let within =
                    p.offset >= log.log_start_offset().0 && p.offset <= log.written_end_offset().0;
                if within {
                    r.on_follower_fetch(id, p.offset, crate::broker::replicas::now_ms())?;
                }
                Ok((log.written_end_offset().0, r.hw.get()))
            }
            (Some(r), Reader::Consumer { .. }) => Ok((r.hw.get(), r.hw.get())),
            (None, _) => {
                let hw = log.written_end_offset().0;
                Ok((hw, hw))
            }
        }
    }

    /// Reads partitions this shard owns: each answer with the engine's batch slices (not
    /// copied) and their byte count.
    pub async fn fetch_read_local(
        &self,
        parts: &[FetchPart],
        bytes_max: usize,
        reader: Reader,
    ) -> Vec<(FetchPartResult, Vec<BatchSlice>, usize)> {
        let mut left = bytes_max;
        let mut any_data = false;
        let mut out = Vec::with_capacity(parts.len());
        for p in parts {
            let bounds = match self.log_for_read(&p.tp, reader).await {
                Ok(log) => self.fetch_bounds(p, &log, reader).map(|b| (log, b)),
                Err(error) => Err(error),
            };
            let (log, (upper, hw)) = match bounds {
                Ok(b) => b,
                Err(error) => {
                    let r = FetchPartResult {
                        error,
                        high_watermark: -1,
                        log_start: -1,
                        records: None,
                    };
                    out.push((r, Vec::new(), 0));
                    continue;
                }
            };
            let log_start = log.log_start_offset().0;
            let mut r = FetchPartResult {
                error: code::NONE,
                high_watermark: hw,
                log_start,
                records: None,
            };
            let mut slices = Vec::new();
            let mut bytes = 0;
            // Past the high watermark but within the log is not out of range: a consumer
            // that read from an earlier leader may be ahead of this one's high watermark
            // until the followers report.
            if p.offset < log_start || p.offset > upper.max(log.written_end_offset().0) {
                r.error = code::OFFSET_OUT_OF_RANGE;
            } else if p.offset < upper && (left > 0 || !any_data) {
                let limits = ReadLimits {
                    max_bytes: p.partition_bytes_max.min(left),
                    max_offset: Offset(upper),
                    min_one_batch: !any_data,
                };
                match log.read(Offset(p.offset), limits).await {
                    Ok(batches) => {
                        self.count_traffic(&p.tp, |t| {
                            t.bytes_out += batches.bytes as u64;
                            t.fetch_requests += 1;
                        });
                        if batches.bytes > 0 {
                            any_data = true;
                            left = left.saturating_sub(batches.bytes);
                            bytes = batches.bytes;
                            slices = batches.slices;
                        }
                    }
                    Err(ReadError::OffsetOutOfRange { .. }) => r.error = code::OFFSET_OUT_OF_RANGE,
                    Err(e) => {
                        tracing::error!(shard = self.id, error = %e, "read failed");
                        r.error = code::KAFKA_STORAGE_ERROR;
                    }
                }
            }
            out.push((r, slices, bytes));
        }
        out
    }

    /// Returns once any named partition has data past its offset (written data for a
    /// follower, the high watermark for a consumer), the wait is over, or the shard is
    /// stopping.
    async fn fetch_wait(&self, parts: &[(TopicPartition, i64)], wait_ms: u64, reader: Reader) {
        let mut waits: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> =
            Vec::with_capacity(parts.len() + 2);
        for (tp, offset) in parts {
            let Ok(log) = self.log_for_read(tp, reader).await else {
                return;
            };
            let end = Offset(offset + 1);
            match self.replicas.get(tp) {
                Some(r) if matches!(reader, Reader::Consumer { .. }) => {
                    if r.hw.get() > *offset {
                        return;
                    }
                    let wait = r.hw.wait_for(end.0);
                    waits.push(Box::pin(async move {
                        let _ = wait.await;
                    }));
                }
                _ => {
                    if log.written_end_offset().0 > *offset {
                        return;
                    }
                    waits.push(Box::pin(async move {
                        let _ = log.wait_written(end).await;
                    }));
                }
            }
        }
        waits.push(Box::pin(glommio::timer::sleep(Duration::from_millis(
            wait_ms,
        ))));
        waits.push(Box::pin(self.stopping.wait()));
        futures_lite::future::poll_fn(|cx| {
            for w in waits.iter_mut() {
                if w.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        })
        .await
    }

    async fn list_offsets(&self, parts: &[(TopicPartition, i64)]) -> Vec<(i16, i64, i64)> {
        let mut out = Vec::with_capacity(parts.len());
        for (tp, ts) in parts {
            let log = match self.log_for(tp).await {
                Ok(log) => log,
                Err(e) => {
                    out.push((e, -1, -1));
                    continue;
                }
            };
            let r = match *ts {
                -2 => Ok(Some((log.log_start_offset(), -1))),
                -1 => Ok(Some((Offset(self.high_watermark(tp, &log)), -1))),
                -3 => log.max_timestamp().await,
                t if t >= 0 => log.offset_for_timestamp(t).await,
                _ => {
                    out.push((code::INVALID_REQUEST, -1, -1));
                    continue;
                }
            };
            out.push(match r {
                Ok(Some((o, t))) => (code::NONE, o.0, t),
                Ok(None) => (code::NONE, -1, -1),
                Err(e) => {
                    tracing::error!(shard = self.id, error = %e, "offset lookup failed");
                    (code::KAFKA_STORAGE_ERROR, -1, -1)
                }
            });
        }
        out
    }

    /// (error, end offset, epoch) per partition: where `epoch` ended, -1/-1 if unknown.
    async fn epoch_ends(&self, parts: &[(TopicPartition, i32)]) -> Vec<(i16, i64, i64)> {
        let mut out = Vec::with_capacity(parts.len());
        for (tp, epoch) in parts {
            out.push(match self.log_for(tp).await {
                Err(e) => (e, -1, -1),
                Ok(log) => match log.end_offset_for_epoch(LeaderEpoch(*epoch)) {
                    Some((e, o)) => (code::NONE, o.0, e.0 as i64),
                    None => (code::NONE, -1, -1),
                },
            });
        }
        out
    }

    async fn delete_records(&self, parts: &[(TopicPartition, i64)]) -> Vec<(i16, i64, i64)> {
        let mut out = Vec::with_capacity(parts.len());
        for (tp, offset) in parts {
            let log = match self.log_for(tp).await {
                Ok(log) => log,
                Err(e) => {
                    out.push((e, -1, -1));
                    continue;
                }
            };
            let hw = self.high_watermark(tp, &log);
            let target = if *offset == -1 { hw } else { *offset };
            if target < 0 || target > hw {
                out.push((code::OFFSET_OUT_OF_RANGE, -1, -1));
                continue;
            }
            out.push(match log.delete_records_before(Offset(target)).await {
                Ok(low) => (code::NONE, low.0, -1),
                Err(e) => {
                    tracing::error!(shard = self.id, error = %e, "delete records failed");
                    (code::KAFKA_STORAGE_ERROR, -1, -1)
                }
            });
        }
        out
    }

    async fn delete_topic(&self, name: &str, partitions: i32) {
        for p in 0..partitions {
            let tp = TopicPartition {
                topic: name.to_string(),
                partition: PartitionId(p),
            };
            if self.owner_of(&tp) == self.id && self.logs.get(&tp).is_some() {
                if let Err(e) = self.logs.delete(&tp).await {
                    tracing::error!(shard = self.id, topic = name, partition = p, error = %e, "deleting partition log failed");
                }
            }
        }
    }
}

/// Items of one shard: (position in the request, partition, payload).
pub type ShardItems<T> = Vec<(usize, TopicPartition, T)>;

/// Runs `op` on each owning shard's share of `items` (in parallel, each shard once) and
/// returns the `(error, offset, offset-or-epoch)` answers in `items` order; an item whose
/// shard gave no answer gets UNKNOWN_SERVER_ERROR.
pub async fn offsets_by_shard<T>(
    shard: &Rc<Shard>,
    items: Vec<(TopicPartition, T)>,
    op: impl Fn(Vec<(TopicPartition, T)>) -> ShardOp,
) -> Vec<(i16, i64, i64)> {
    let mut results = vec![(code::UNKNOWN_SERVER_ERROR, -1i64, -1i64); items.len()];
    let mut calls = Vec::new();
    let mut positions = Vec::new();
    shard.wait_not_moving(items.iter().map(|(tp, _)| tp)).await;
    for (s, group) in split_by_shard(shard, items) {
        positions.push(group.iter().map(|(i, _, _)| *i).collect::<Vec<_>>());
        calls.push((s, op(group.into_iter().map(|(_, tp, t)| (tp, t)).collect())));
    }
    for (idx, reply) in positions.into_iter().zip(shard.call_all(calls).await) {
        if let ShardReply::Offsets(rs) = reply {
            for (i, r) in idx.into_iter().zip(rs) {
                results[i] = r;
            }
        }
    }
    results
}

/// Groups partitions by owning shard (the placement table), keeping each item's position
/// in the request.
pub fn split_by_shard<T>(
    shard: &Shard,
    items: Vec<(TopicPartition, T)>,
) -> Vec<(usize, ShardItems<T>)> {
    let mut per: Vec<Vec<(usize, TopicPartition, T)>> =
        (0..shard.count).map(|_| Vec::new()).collect();
    for (i, (tp, t)) in items.into_iter().enumerate() {
        let s = shard.owner_of(&tp).min(shard.count - 1);
        per[s].push((i, tp, t));
    }
    per.into_iter()
        .enumerate()
        .filter(|(_, v)| !v.is_empty())
        .collect()
}
