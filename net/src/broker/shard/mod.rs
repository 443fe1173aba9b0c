//! One shard: the partitions it owns, its end of the channel mesh, and the operations
//! other shards (or its own connections) ask of it.
//!
//! Here: the `Shard` state, calls over the mesh (`call`, `serve_call`, `call_all`) and
//! their dispatch (`execute`). Beside it, one file per job:
//! - `mesh`: the messages (`ShardOp`, `ShardReply`) and the table of waiting calls;
//! - `connections`: connection balancing between shards and the connection bounds;
//! - `local_flag`: the shard's one-shot `stopping` flag;
//! - `queues`: the produce and fetch task queues;
//! - `routing`: the owning shard of a partition, live-move waits, splitting by shard;
//! - `logs`: log look-up, leader and epoch checks, the high watermark;
//! - executors by kind: `produce`, `fetch`, `offsets`, `lifecycle` (moves, deletions).
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

mod connections;
mod fetch;
mod lifecycle;
mod local_flag;
mod logs;
mod mesh;
mod offsets;
mod produce;
mod queues;
mod routing;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::channel_mesh::Senders;

pub(crate) use connections::{
    ConnectionCounts, ConnectionLimits, ConnectionRefusal, ConnectionSlot,
};
pub(crate) use local_flag::LocalFlag;
pub(crate) use logs::{InternalReadError, InternalRecord};
use mesh::Waiting;
pub(crate) use mesh::{
    DeletedRecords, EpochEnd, FetchPart, FetchPartResult, ListedOffset, MarkerWritten,
    PartitionAnswer, ProducePartResult, Reader, RecordErrors, ShardAnswer, ShardCall, ShardOp,
    ShardReply,
};
use queues::Queues;
pub(crate) use queues::Work;
pub(crate) use routing::{answers_by_shard, split_by_shard};

use crate::broker::catalog::Catalog;
use crate::broker::config::ServerConfig;
use crate::groups::Groups;
use crate::kafka::errors::{code, ErrorCode};
use crate::placement::{PlacementTable, Snapshot};
use crate::store::{LogManager, TopicPartition};

/// Producers one partition's DescribeProducers answer lists at most (the producer state
/// is per log and grows with the producers that wrote to it).
pub const PRODUCERS_DESCRIBED_MAX: usize = 10_000;

/// Per-shard state. Lives as long as the shard's executor.
pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub config: Arc<ServerConfig>,
    pub catalog: Arc<Catalog>,
    pub groups: Arc<Groups>,
    /// The transaction coordinator's broker-wide state.
    pub txns: Arc<crate::txn::Txns>,
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
    /// Verification guards of transactional writes waiting for their coordinator's
    /// answer (`txn::verify`), redeemed and cleared under `append_order`.
    txn_guards: RefCell<crate::txn::verify::Guards>,
    /// Log creations run one at a time (see `open_or_create_log`).
    create_order: glommio::sync::Semaphore,
    /// Where partitions live; `placement_cache` is this shard's copy of its snapshot,
    /// refreshed when the table's version moves.
    pub placement: Arc<PlacementTable>,
    placement_cache: RefCell<(u64, Arc<Snapshot>)>,
    /// Live moves this shard has been told ended (`ShardOp::MoveEnded`): requests waiting
    /// for a moving partition wake on it instead of polling the table.
    moves_ended: sluice_engine::watch::OffsetWatch,
    /// Traffic of the partitions this shard owns (entries go with the partition).
    pub traffic: RefCell<HashMap<TopicPartition, Traffic>>,
    queues: Queues,
    /// Bytes of requests being read or not yet answered (`queued.max.request.bytes`).
    pub request_bytes: Rc<crate::kafka::request_bytes::RequestBytes>,
    /// The listeners (a connection names its own by index) and TLS settings.
    pub security: Arc<crate::security::Security>,
}

/// What every shard shares: settings, the topic catalog, the group coordinator's
/// broker-wide state, and the placement table.
#[derive(Debug, Clone)]
pub struct ShardShared {
    pub config: Arc<ServerConfig>,
    pub catalog: Arc<Catalog>,
    pub groups: Arc<Groups>,
    pub txns: Arc<crate::txn::Txns>,
    pub placement: Arc<PlacementTable>,
    pub connections: Arc<ConnectionCounts>,
    pub security: Arc<crate::security::Security>,
}

/// Counters of one partition on its owning shard, published with /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub produce_requests: u64,
    pub fetch_requests: u64,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("id", &self.id)
            .field("count", &self.count)
            .finish()
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
        dropped: ErrorCode,
    ) -> Result<T, ErrorCode> {
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
            txns,
            placement,
            connections,
            security,
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
            txns,
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
            txn_guards: RefCell::new(crate::txn::verify::Guards::default()),
            create_order: glommio::sync::Semaphore::new(1),
            placement_cache: RefCell::new(placement.snapshot()),
            moves_ended: sluice_engine::watch::OffsetWatch::new(0),
            placement,
            traffic: RefCell::new(HashMap::new()),
            queues: Queues::new(&config_for_queues),
            request_bytes,
            security,
        }
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
        let (call_id, rx, _guard) = self.waiting.register();
        if senders
            .send_to(shard, ShardCall { op, call_id })
            .await
            .is_err()
        {
            tracing::warn!(to = shard, "mesh send failed");
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
            tracing::warn!(to = from, "mesh answer send failed");
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

    /// Executes an operation on this shard (the owner of every partition it names).
    pub async fn execute(self: &Rc<Self>, op: ShardOp) -> ShardReply {
        match op {
            ShardOp::Produce {
                acks,
                timeout_ms,
                parts,
                txn,
            } => ShardReply::Produce(self.produce(acks, timeout_ms, parts, txn).await),
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
            ShardOp::ListOffsets {
                parts,
                read_committed,
                client,
            } => ShardReply::ListedOffsets(self.list_offsets(&parts, read_committed, client).await),
            ShardOp::DescribeProducers { tp } => ShardReply::Producers(
                self.log_for(&tp)
                    .await
                    .map(|log| log.producers(PRODUCERS_DESCRIBED_MAX)),
            ),
            ShardOp::WriteMarkers { parts } => {
                ShardReply::MarkersWritten(self.write_markers(&parts).await)
            }
            ShardOp::DeleteRecords { parts } => {
                ShardReply::DeletedRecords(self.delete_records(&parts).await)
            }
            ShardOp::EpochEnds { parts } => ShardReply::EpochEnds(self.epoch_ends(&parts).await),
            ShardOp::DeleteTopic { name, partitions } => {
                self.delete_topic(&name, partitions).await;
                ShardReply::Done
            }
            ShardOp::ApplyConfig { topic } => {
                self.apply_config(&topic);
                ShardReply::Done
            }
            ShardOp::MoveOut { tp } => self.move_out(&tp).await,
            ShardOp::MoveIn { tp } => self.move_in(&tp).await,
            ShardOp::MoveEnded => {
                self.moves_ended.advance(self.moves_ended.get() + 1);
                ShardReply::Done
            }
            ShardOp::Adopt {
                socket,
                slot,
                listener,
            } => {
                use std::os::fd::{FromRawFd, IntoRawFd};
                // SAFETY: the descriptor is an accepted TCP socket this message owned.
                let stream = unsafe { glommio::net::TcpStream::from_raw_fd(socket.into_raw_fd()) };
                crate::kafka::conn::spawn(self.clone(), stream, slot, listener);
                ShardReply::Done
            }
        }
    }
}
