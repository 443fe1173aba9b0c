//! Follower fetchers: how this shard copies the partitions it follows from their leaders.
//!
//! Ownership: one [`Fetchers`] per shard (`Rc`, never `Send`) owns the set of followed
//! partitions (each with its phase and lag) and one fetcher task per leader broker, which
//! owns that broker's connection and batches every partition this shard follows from it
//! into each request. The shard's reconcile owns the set: [`Fetchers::assign`] replaces it
//! whole.
//!
//! Invariants:
//! - A partition fetches only after it truncated against its current leader and epoch:
//!   every new leader or leader epoch starts it in [`Phase::Truncate`] (OffsetForLeaderEpoch
//!   with Kafka's rules).
//! - The fetch offset the leader sees is durable here: after appending an answer's batches,
//!   the task waits for `wait_durable(new end)` (synced under `fsync`) before it asks again.
//! - The follower high watermark is `min(leader's high watermark, own end)`; it moves back
//!   only when the log is cut below it.
//! - Log operations of a partition (append, truncate, reset) run one at a time under the
//!   partition's lock, and only while the assignment that planned them is current: an
//!   answer from a leader the partition no longer follows is dropped.
//! - No `RefCell` borrow is held across an `.await`; every wait is bounded (timeouts,
//!   backoffs); after [`Fetchers::stop`] returns no task appends any more.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

use glommio::sync::Semaphore;
use glommio::task::JoinHandle;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::EpochEndOffset;
use kafka_protocol::messages::{
    BrokerId as WireBrokerId, FetchRequest, ListOffsetsRequest, OffsetForLeaderEpochRequest,
    TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use sluice_engine::watch::{OffsetWatch, Signal};
use sluice_engine::{AppendError, BrokerId, LeaderEpoch, Offset, PartitionLog, TopicPartition};

use crate::client::{ClientConfig, ClientError, KafkaConn};
use crate::partition::{
    classify, code, log_start_to_follow, out_of_range_action, reconnect_backoff_ms,
    restart_inside_first_batch, truncation_point, whole_batches_len, Answer, OutOfRangeAction,
    OwnLog, Phase, Resume, Truncation,
};

/// Fetch v12: `replica_id` in the body, `last_fetched_epoch` and diverging epochs
/// (KIP-320), topics by name.
pub const FETCH_VERSION: i16 = 12;
/// OffsetForLeaderEpoch v3: `replica_id` set, so the leader answers for a follower.
pub const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 3;
/// ListOffsets v5 (`current_leader_epoch`, non-flexible), for out-of-range fetch offsets.
pub const LIST_OFFSETS_VERSION: i16 = 5;
/// Longest idle wait of a task with nothing to do before it looks again.
const IDLE_WAIT_MS_MAX: u64 = 1_000;

/// Where a partition's leader listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderAddr {
    pub id: BrokerId,
    pub host: String,
    pub port: u16,
}

/// One partition this shard follows, as the shard's image names it.
#[derive(Debug, Clone)]
pub struct Followed {
    pub tp: TopicPartition,
    pub log: PartitionLog,
    pub leader: LeaderAddr,
    pub leader_epoch: LeaderEpoch,
    /// The follower's high watermark: the fetcher advances it (and moves it back after a
    /// truncation or reset).
    pub hw: OffsetWatch,
}

/// The follower fetchers' settings (Kafka's `replica.fetch.*` names in brackets).
#[derive(Debug, Clone)]
pub struct FetcherConfig {
    /// Bytes a fetch answer may carry in all (`replica.fetch.response.max.bytes`).
    pub response_bytes_max: usize,
    /// Bytes per partition per fetch (`replica.fetch.max.bytes`).
    pub partition_bytes_max: usize,
    /// How long the leader may hold a fetch that has too little (`replica.fetch.wait.max.ms`).
    pub wait_max_ms: u64,
    /// Bytes the leader waits for before answering (`replica.fetch.min.bytes`).
    pub min_bytes: usize,
    /// Pause of a partition after an error, and the first reconnect delay
    /// (`replica.fetch.backoff.ms`).
    pub backoff_ms: u64,
    /// Longest reconnect delay (doubling from `backoff_ms`).
    pub backoff_max_ms: u64,
    /// Longest wait for an answer (`replica.socket.timeout.ms`); above `wait_max_ms`.
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Largest answer frame read: above `response_bytes_max`, since the first batch of a
    /// partition comes whole even when it is larger (KIP-74).
    pub frame_bytes_max: usize,
    /// `[cluster_tls]`: fetch over mutual TLS, presenting the node certificate.
    pub tls: Option<std::sync::Arc<sluice_control::tls::ClusterTls>>,
}

impl Default for FetcherConfig {
    fn default() -> Self {
        FetcherConfig {
            response_bytes_max: 10 << 20,
            partition_bytes_max: 1 << 20,
            wait_max_ms: 500,
            min_bytes: 1,
            backoff_ms: 100,
            backoff_max_ms: 5_000,
            request_timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
            frame_bytes_max: 128 << 20,
            tls: None,
        }
    }
}

impl FetcherConfig {
    /// Checks the relations the fetchers rely on; the error names the setting.
    pub fn validate(&self) -> Result<(), FetcherConfigError> {
        let int = |name: &'static str, v: usize| {
            if v == 0 || v > i32::MAX as usize {
                Err(FetcherConfigError::NotAnInt32 { name, value: v })
            } else {
                Ok(())
            }
        };
        int("response_bytes_max", self.response_bytes_max)?;
        int("partition_bytes_max", self.partition_bytes_max)?;
        int("min_bytes", self.min_bytes)?;
        if self.wait_max_ms > i32::MAX as u64 {
            return Err(FetcherConfigError::WaitTooLong {
                wait_max_ms: self.wait_max_ms,
            });
        }
        if self.request_timeout_ms <= self.wait_max_ms {
            return Err(FetcherConfigError::TimeoutBelowWait {
                request_timeout_ms: self.request_timeout_ms,
                wait_max_ms: self.wait_max_ms,
            });
        }
        if self.backoff_ms == 0 || self.backoff_max_ms < self.backoff_ms {
            return Err(FetcherConfigError::Backoff {
                backoff_ms: self.backoff_ms,
                backoff_max_ms: self.backoff_max_ms,
            });
        }
        if self.connect_timeout_ms == 0 {
            return Err(FetcherConfigError::ZeroConnectTimeout);
        }
        if self.frame_bytes_max < self.response_bytes_max {
            return Err(FetcherConfigError::FrameBelowResponse {
                frame_bytes_max: self.frame_bytes_max,
                response_bytes_max: self.response_bytes_max,
            });
        }
        Ok(())
    }
}

/// Why a [`FetcherConfig`] is refused; each names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetcherConfigError {
    #[error("{name} must be in 1..={}, not {value}", i32::MAX)]
    NotAnInt32 { name: &'static str, value: usize },
    #[error("wait_max_ms {wait_max_ms} is too large")]
    WaitTooLong { wait_max_ms: u64 },
    #[error("request_timeout_ms ({request_timeout_ms}) must be above wait_max_ms ({wait_max_ms})")]
    TimeoutBelowWait {
        request_timeout_ms: u64,
        wait_max_ms: u64,
    },
    #[error("backoff_ms ({backoff_ms}) must be at least 1 and at most backoff_max_ms ({backoff_max_ms})")]
    Backoff {
        backoff_ms: u64,
        backoff_max_ms: u64,
    },
    #[error("connect_timeout_ms must be at least 1")]
    ZeroConnectTimeout,
    #[error("frame_bytes_max ({frame_bytes_max}) must be at least response_bytes_max ({response_bytes_max})")]
    FrameBelowResponse {
        frame_bytes_max: usize,
        response_bytes_max: usize,
    },
}

/// A followed partition's state, for status pages and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerStatus {
    pub tp: TopicPartition,
    pub leader: BrokerId,
    pub leader_epoch: LeaderEpoch,
    /// `truncating`, `out_of_range`, `fetching` or `paused`.
    pub phase: &'static str,
    /// Leader's high watermark minus own end, from the last answer.
    pub lag: i64,
}

/// The follower fetchers of one shard.
#[derive(Debug)]
pub struct Fetchers {
    me: BrokerId,
    config: FetcherConfig,
    inner: RefCell<Inner>,
    /// Raised to 1 by [`Fetchers::stop`]: waits and calls in flight end.
    stopping: OffsetWatch,
}

#[derive(Debug, Default)]
struct Inner {
    parts: BTreeMap<TopicPartition, Part>,
    sources: BTreeMap<BrokerId, Source>,
    /// Tasks of leaders no longer followed (or moved), until they end.
    retiring: Vec<Source>,
    /// One lock per partition log, kept while anyone holds it (so a task still working
    /// on a partition that was unassigned and assigned again shares the lock).
    locks: BTreeMap<TopicPartition, Rc<Semaphore>>,
    next_generation: u64,
    stopped: bool,
}

#[derive(Debug)]
struct Part {
    followed: Followed,
    phase: Phase,
    /// Changes with every new leader or leader epoch: work planned under an older one is
    /// dropped.
    generation: u64,
    lag: i64,
    /// The error code last logged for this partition (0: none), so a lasting error is
    /// logged once, not once per retry.
    last_error: i16,
}

#[derive(Debug)]
struct Source {
    addr: LeaderAddr,
    quit: Rc<Cell<bool>>,
    wake: Signal,
    done: Rc<Cell<bool>>,
    handle: Option<JoinHandle<()>>,
}

/// One partition's share of a planned request.
#[derive(Debug, Clone)]
struct Work {
    followed: Followed,
    generation: u64,
    lock: Rc<Semaphore>,
}

#[derive(Debug, Default)]
struct Plan {
    out_of_range: Vec<Work>,
    truncate: Vec<Work>,
    fetch: Vec<Work>,
    /// The earliest end of a pause, when some partition waits.
    wake_at_ms: Option<u64>,
}

/// A task's connection and how many attempts in a row failed.
#[derive(Debug, Default)]
struct Session {
    conn: Option<KafkaConn>,
    failures: u32,
    /// Fetches sent, for the rotation of partitions.
    rounds: usize,
}

/// What one partition's fetch answer left to do once its batches are durable.
#[derive(Debug, Clone, Copy)]
struct Fetched {
    end: Offset,
    leader_hw: Offset,
    leader_start: Offset,
}

type Key = (String, i32);

fn key_of(tp: &TopicPartition) -> Key {
    (tp.topic.clone(), tp.partition.0)
}

use sluice_engine::now_ms;

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// Advances the follower high watermark to `value`, within the log's bounds. It moves
/// back only when the log is cut below it ([`Fetchers::truncate_log`]): a new leader's
/// high watermark may trail the one the follower learned before, but everything below
/// that one was committed, and waiters on the watch are not failed for nothing.
fn advance_hw(f: &Followed, value: Offset) {
    let end = f.log.log_end_offset();
    let value = value.min(end).max(f.log.log_start_offset());
    let before = Offset(f.hw.get());
    f.hw.advance(value.0);
    check_hw_advance(before, Offset(f.hw.get()), end);
}

/// The high watermark rules around an advance: it never goes back, and it never passes
/// the log end (what a consumer may read must be in this log).
pub(crate) fn check_hw_advance(before: Offset, after: Offset, log_end: Offset) {
    assert!(
        after >= before,
        "high watermark went back from {before} to {after}"
    );
    assert!(
        after <= log_end,
        "high watermark {after} is beyond the log end {log_end}"
    );
}

impl Fetchers {
    /// Fetchers for broker `me` (its id goes out as `replica_id`). Tasks are spawned into
    /// the task queue that calls [`Fetchers::assign`].
    pub fn new(me: BrokerId, config: FetcherConfig) -> Rc<Fetchers> {
        Rc::new(Fetchers {
            me,
            config,
            inner: RefCell::new(Inner::default()),
            stopping: OffsetWatch::new(0),
        })
    }

    /// The complete set of partitions this shard follows now. Absent ones stop being
    /// fetched; a partition whose leader or leader epoch changed is truncated again before
    /// fetching. Starts a fetcher task per new leader broker and retires those of leaders
    /// no longer followed.
    pub fn assign(self: &Rc<Self>, parts: Vec<Followed>) {
        let mut inner = self.inner.borrow_mut();
        if inner.stopped {
            return;
        }
        let mut next = BTreeMap::new();
        for f in parts {
            let part = match inner.parts.remove(&f.tp) {
                Some(old)
                    if old.followed.leader == f.leader
                        && old.followed.leader_epoch == f.leader_epoch =>
                {
                    Part {
                        followed: f.clone(),
                        ..old
                    }
                }
                _ => {
                    inner.next_generation += 1;
                    Part {
                        followed: f.clone(),
                        phase: Phase::Truncate,
                        generation: inner.next_generation,
                        lag: 0,
                        last_error: 0,
                    }
                }
            };
            next.insert(f.tp, part);
        }
        inner.parts = next;
        let leaders: BTreeMap<BrokerId, LeaderAddr> = inner
            .parts
            .values()
            .map(|p| (p.followed.leader.id, p.followed.leader.clone()))
            .collect();
        let gone: Vec<BrokerId> = inner
            .sources
            .iter()
            .filter(|(id, s)| leaders.get(id) != Some(&s.addr))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(s) = inner.sources.remove(&id) {
                s.quit.set(true);
                s.wake.notify();
                inner.retiring.push(s);
            }
        }
        inner.retiring.retain(|s| !s.done.get());
        let Inner { parts, locks, .. } = &mut *inner;
        locks.retain(|tp, lock| parts.contains_key(tp) || Rc::strong_count(lock) > 1);
        let mut new_leaders = Vec::new();
        for (id, addr) in leaders {
            match inner.sources.get(&id) {
                Some(source) => source.wake.notify(),
                None => new_leaders.push((id, addr)),
            }
        }
        // glommio may run a spawned task at once, and the task borrows the state.
        drop(inner);
        for (id, addr) in new_leaders {
            let source = self.spawn_source(addr);
            self.inner.borrow_mut().sources.insert(id, source);
        }
    }

    fn spawn_source(self: &Rc<Self>, addr: LeaderAddr) -> Source {
        let (quit, done, wake) = (
            Rc::new(Cell::new(false)),
            Rc::new(Cell::new(false)),
            Signal::default(),
        );
        let task = run_source(
            Rc::downgrade(self),
            addr.clone(),
            quit.clone(),
            wake.clone(),
            done.clone(),
        );
        Source {
            addr,
            quit,
            wake,
            done,
            handle: Some(glommio::spawn_local(task).detach()),
        }
    }

    /// Waits until no log operation of `tp` is in flight. After an `assign` without `tp`
    /// nothing new starts on it, so once this returns its log may be closed or deleted
    /// (a reassignment moved the partition off this broker).
    pub async fn released(&self, tp: &TopicPartition) {
        let lock = self.inner.borrow().locks.get(tp).cloned();
        if let Some(lock) = lock {
            // The semaphore is never closed; the permit is dropped at once.
            let _ = lock.acquire_permit(1).await;
        }
    }

    /// At shutdown: every task ends (calls in flight are abandoned, log operations in
    /// flight finish); no append happens after this returns. Later `assign`s do nothing.
    pub async fn stop(&self) {
        let handles: Vec<JoinHandle<()>> = {
            let mut inner = self.inner.borrow_mut();
            inner.stopped = true;
            inner.parts.clear();
            let sources = std::mem::take(&mut inner.sources).into_values();
            let mut all: Vec<Source> = sources.collect();
            all.append(&mut inner.retiring);
            all.into_iter()
                .filter_map(|mut s| {
                    s.quit.set(true);
                    s.wake.notify();
                    s.handle.take()
                })
                .collect()
        };
        self.stopping.advance(1);
        for h in handles {
            let _ = h.await;
        }
    }

    /// Per followed partition: the leader's high watermark minus this log's end, from the
    /// last answer (0 before the first).
    pub fn lag(&self) -> Vec<(TopicPartition, i64)> {
        let inner = self.inner.borrow();
        inner
            .parts
            .iter()
            .map(|(tp, p)| (tp.clone(), p.lag))
            .collect()
    }

    /// Every followed partition's leader, phase and lag.
    pub fn status(&self) -> Vec<FollowerStatus> {
        let now = now_ms();
        let inner = self.inner.borrow();
        inner
            .parts
            .iter()
            .map(|(tp, p)| FollowerStatus {
                tp: tp.clone(),
                leader: p.followed.leader.id,
                leader_epoch: p.followed.leader_epoch,
                phase: p.phase.at(now).name(),
                lag: p.lag,
            })
            .collect()
    }

    fn stopped(&self) -> bool {
        self.stopping.get() > 0
    }

    /// What the task of `leader` should ask for now (partitions led from that very
    /// address: a task retired for an old address plans nothing new).
    fn plan(&self, leader: &LeaderAddr, now: u64) -> Plan {
        let mut plan = Plan::default();
        let mut inner = self.inner.borrow_mut();
        let Inner { parts, locks, .. } = &mut *inner;
        for (tp, part) in parts.iter_mut() {
            if part.followed.leader != *leader {
                continue;
            }
            part.phase = part.phase.at(now);
            let mut work = || Work {
                followed: part.followed.clone(),
                generation: part.generation,
                lock: locks
                    .entry(tp.clone())
                    .or_insert_with(|| Rc::new(Semaphore::new(1)))
                    .clone(),
            };
            match part.phase {
                Phase::OutOfRange => plan.out_of_range.push(work()),
                Phase::Truncate => plan.truncate.push(work()),
                Phase::Fetch => plan.fetch.push(work()),
                Phase::Paused { until_ms, .. } => {
                    plan.wake_at_ms = Some(plan.wake_at_ms.map_or(until_ms, |t| t.min(until_ms)));
                }
            }
        }
        plan
    }

    /// Runs `f` on the partition's state if the work is still current.
    fn with_part<T>(&self, w: &Work, f: impl FnOnce(&mut Part) -> T) -> Option<T> {
        let mut inner = self.inner.borrow_mut();
        inner
            .parts
            .get_mut(&w.followed.tp)
            .filter(|p| p.generation == w.generation)
            .map(f)
    }

    fn is_current(&self, w: &Work) -> bool {
        self.with_part(w, |_| ()).is_some()
    }

    fn set_phase(&self, w: &Work, phase: Phase) {
        self.with_part(w, |p| p.phase = phase);
    }

    /// Pauses the partition for `backoff_ms`, then `then`.
    fn pause(&self, w: &Work, then: Resume) {
        let until_ms = now_ms() + self.config.backoff_ms;
        self.set_phase(w, Phase::Paused { until_ms, then });
    }

    /// Pauses after the leader answered `error`; logged once while it lasts.
    fn pause_on_error(&self, w: &Work, error: i16, then: Resume) {
        let first = self
            .with_part(w, |p| std::mem::replace(&mut p.last_error, error) != error)
            .unwrap_or(false);
        if first {
            let f = &w.followed;
            let expected = matches!(
                error,
                code::FENCED_LEADER_EPOCH
                    | code::UNKNOWN_LEADER_EPOCH
                    | code::NOT_LEADER_OR_FOLLOWER
                    | code::UNKNOWN_TOPIC_OR_PARTITION
            );
            if expected {
                tracing::info!(partition = %f.tp, leader = %f.leader.id, leader_epoch = %f.leader_epoch, error_code = error, "leader refused the follower; waiting for a newer leader epoch");
            } else {
                tracing::warn!(partition = %f.tp, leader = %f.leader.id, error_code = error, "leader answered the follower with an error; retrying after backoff");
            }
        }
        self.pause(w, then);
    }

    fn clear_error(&self, w: &Work) {
        self.with_part(w, |p| p.last_error = code::NONE);
    }

    /// A call to the leader, abandoned when the fetchers stop.
    async fn call<R: Request>(
        &self,
        conn: &mut KafkaConn,
        body: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let stop = self.stopping.wait_for(1);
        futures_lite::future::or(conn.call(body, version), async {
            let _ = stop.await;
            Err(ClientError::Cancelled)
        })
        .await
    }

    /// Sleeps `ms`, or less if the fetchers stop.
    async fn sleep(&self, ms: u64) {
        let stop = self.stopping.wait_for(1);
        futures_lite::future::or(glommio::timer::sleep(Duration::from_millis(ms)), async {
            let _ = stop.await;
        })
        .await;
    }

    fn client_config(&self) -> ClientConfig {
        ClientConfig {
            client_id: format!("sluice-replica-{}", self.me),
            connect_timeout_ms: self.config.connect_timeout_ms,
            request_timeout_ms: self.config.request_timeout_ms,
            frame_bytes_max: self.config.frame_bytes_max,
            tls: self.config.tls.clone(),
        }
    }

    /// One step of the task of `leader`: resolve out-of-range offsets, else truncate,
    /// else fetch; or wait when nothing is due.
    async fn step(&self, leader: &LeaderAddr, session: &mut Session, wake: &Signal) {
        let now = now_ms();
        let plan = self.plan(leader, now);
        if plan.out_of_range.is_empty() && plan.truncate.is_empty() && plan.fetch.is_empty() {
            let ms = plan
                .wake_at_ms
                .map_or(IDLE_WAIT_MS_MAX, |t| t.saturating_sub(now))
                .clamp(1, IDLE_WAIT_MS_MAX);
            futures_lite::future::or(wake.wait(), self.sleep(ms)).await;
            return;
        }
        if session.conn.is_none() {
            let connected = futures_lite::future::or(
                KafkaConn::connect(&leader.host, leader.port, self.client_config()),
                async {
                    let _ = self.stopping.wait_for(1).await;
                    Err(ClientError::Cancelled)
                },
            )
            .await;
            match connected {
                Ok(conn) => session.conn = Some(conn),
                Err(e) => return self.connection_failed(leader, session, e).await,
            }
        }
        let Some(conn) = session.conn.as_mut() else {
            return;
        };
        let result = if !plan.out_of_range.is_empty() {
            self.resolve_out_of_range(conn, plan.out_of_range).await
        } else if !plan.truncate.is_empty() {
            self.truncate(conn, plan.truncate).await
        } else {
            session.rounds = session.rounds.wrapping_add(1);
            self.fetch(conn, plan.fetch, session.rounds).await
        };
        match result {
            Ok(()) if session.failures > 0 => {
                tracing::info!(leader = %leader.id, host = %leader.host, port = leader.port, failed_attempts = session.failures, "follower fetcher reached its leader again");
                session.failures = 0;
            }
            Ok(()) => {}
            Err(e) => self.connection_failed(leader, session, e).await,
        }
    }

    /// Drops the connection and waits before the next attempt (doubling, bounded);
    /// warns once per outage.
    async fn connection_failed(&self, leader: &LeaderAddr, session: &mut Session, e: ClientError) {
        session.conn = None;
        if self.stopped() {
            return;
        }
        session.failures = session.failures.saturating_add(1);
        if session.failures == 1 {
            tracing::warn!(leader = %leader.id, host = %leader.host, port = leader.port, error = %e, "follower fetcher cannot reach its leader; retrying with backoff");
        } else {
            tracing::debug!(leader = %leader.id, attempt = session.failures, error = %e, "follower fetcher still cannot reach its leader");
        }
        let ms = reconnect_backoff_ms(
            self.config.backoff_ms,
            self.config.backoff_max_ms,
            session.failures,
        );
        self.sleep(ms).await;
    }

    /// OffsetForLeaderEpoch for the partitions that must truncate, then the truncations.
    async fn truncate(&self, conn: &mut KafkaConn, works: Vec<Work>) -> Result<(), ClientError> {
        let mut asked = Vec::new();
        for w in works {
            match w.followed.log.latest_epoch() {
                Some(epoch) => asked.push((w, epoch)),
                None => self.truncate_without_epochs(&w).await,
            }
        }
        if asked.is_empty() {
            return Ok(());
        }
        let mut topics: BTreeMap<String, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
        for (w, epoch) in &asked {
            let f = &w.followed;
            topics.entry(f.tp.topic.clone()).or_default().push(
                OffsetForLeaderPartition::default()
                    .with_partition(f.tp.partition.0)
                    .with_current_leader_epoch(f.leader_epoch.0)
                    .with_leader_epoch(epoch.0),
            );
        }
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(WireBrokerId(self.me.0))
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetForLeaderTopic::default()
                            .with_topic(topic_name(&t))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let response = self
            .call(conn, &request, OFFSET_FOR_LEADER_EPOCH_VERSION)
            .await?;
        let mut answers: BTreeMap<Key, EpochEndOffset> = BTreeMap::new();
        for t in response.topics {
            for p in t.partitions {
                answers.insert((t.topic.0.to_string(), p.partition), p);
            }
        }
        for (w, epoch) in asked {
            match answers.remove(&key_of(&w.followed.tp)) {
                Some(a) => self.apply_epoch_answer(&w, epoch, &a).await,
                None => self.pause(&w, Resume::Truncate),
            }
        }
        Ok(())
    }

    /// A log without epochs (nothing appended under any leader epoch) cannot ask where it
    /// diverged: it keeps what every ISR member held (Kafka truncates to the high
    /// watermark), which for an empty log is nothing to cut.
    async fn truncate_without_epochs(&self, w: &Work) {
        let Ok(_permit) = w.lock.acquire_permit(1).await else {
            return;
        };
        if !self.is_current(w) {
            return;
        }
        let hw = Offset(w.followed.hw.get());
        match self.truncate_log(w, hw).await {
            Ok(()) => self.set_phase(w, Phase::Fetch),
            Err(()) => self.pause(w, Resume::Truncate),
        }
    }

    async fn apply_epoch_answer(&self, w: &Work, asked_epoch: LeaderEpoch, a: &EpochEndOffset) {
        let Ok(_permit) = w.lock.acquire_permit(1).await else {
            return;
        };
        if !self.is_current(w) {
            return;
        }
        match classify(a.error_code, (-1, -1)) {
            Answer::Data => {
                let (epoch, end) = (LeaderEpoch(a.leader_epoch), Offset(a.end_offset));
                let target = self.truncation_target(w, asked_epoch, epoch, end);
                let (offset, next) = match target {
                    Truncation::Done(o) => (o, Phase::Fetch),
                    Truncation::Again(o) => (o, Phase::Truncate),
                };
                match self.truncate_log(w, offset).await {
                    Ok(()) => {
                        self.clear_error(w);
                        self.set_phase(w, next);
                    }
                    Err(()) => self.pause(w, Resume::Truncate),
                }
            }
            Answer::Fenced(e) | Answer::Retry(e) => self.pause_on_error(w, e, Resume::Truncate),
            Answer::OutOfRange | Answer::Diverging { .. } => {
                self.pause_on_error(w, a.error_code, Resume::Truncate)
            }
        }
    }

    /// Where to truncate given the leader's answer for `asked_epoch` (Kafka's rules).
    fn truncation_target(
        &self,
        w: &Work,
        asked_epoch: LeaderEpoch,
        epoch: LeaderEpoch,
        end: Offset,
    ) -> Truncation {
        let log = &w.followed.log;
        let own = OwnLog {
            asked_epoch,
            end: log.log_end_offset(),
            high_watermark: Offset(w.followed.hw.get()),
        };
        truncation_point(epoch, end, own, |e| log.end_offset_for_epoch(e))
    }

    /// Cuts the log at `offset` (nothing when it ends there already) and the high
    /// watermark with it. Called under the partition's lock.
    async fn truncate_log(&self, w: &Work, offset: Offset) -> Result<(), ()> {
        let f = &w.followed;
        let end = f.log.log_end_offset();
        if offset >= end {
            return Ok(());
        }
        match f.log.truncate_to(offset.max(Offset::ZERO)).await {
            Ok(new_end) => {
                tracing::info!(partition = %f.tp, leader = %f.leader.id, leader_epoch = %f.leader_epoch, from = %end, to = %new_end, "follower truncated its log to where it agrees with the leader");
                if f.hw.get() > new_end.0 {
                    f.hw.reset(new_end.0);
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(partition = %f.tp, error = %e, "follower truncation failed; retrying after backoff");
                Err(())
            }
        }
    }

    /// One Fetch for every partition that fetches; appends the answers, then waits until
    /// they are durable, then advances the high watermarks.
    /// The partitions are rotated by `round`: a leader gives a batch above the per-partition
    /// limit only to the first partition with data (KIP-74), so no partition may stay
    /// behind the others for good.
    async fn fetch(
        &self,
        conn: &mut KafkaConn,
        mut works: Vec<Work>,
        round: usize,
    ) -> Result<(), ClientError> {
        let partition_bytes = self.config.partition_bytes_max as i32;
        if !works.is_empty() {
            let by = round % works.len();
            works.rotate_left(by);
        }
        // Topics in the order their first partition comes (a map by name would undo the
        // rotation).
        let mut topics: Vec<(String, Vec<FetchPartition>)> = Vec::new();
        let mut sent = Vec::with_capacity(works.len());
        for w in works {
            let log = &w.followed.log;
            let offset = log.log_end_offset();
            let last_epoch = log.latest_epoch().unwrap_or(LeaderEpoch(-1));
            let topic = &w.followed.tp.topic;
            let at = match topics.iter().position(|(t, _)| t == topic) {
                Some(i) => i,
                None => {
                    topics.push((topic.clone(), Vec::new()));
                    topics.len() - 1
                }
            };
            topics[at].1.push(
                FetchPartition::default()
                    .with_partition(w.followed.tp.partition.0)
                    .with_current_leader_epoch(w.followed.leader_epoch.0)
                    .with_fetch_offset(offset.0)
                    .with_last_fetched_epoch(last_epoch.0)
                    .with_log_start_offset(log.log_start_offset().0)
                    .with_partition_max_bytes(partition_bytes),
            );
            sent.push((w, offset, last_epoch));
        }
        let request = FetchRequest::default()
            .with_replica_id(WireBrokerId(self.me.0))
            .with_max_wait_ms(self.config.wait_max_ms as i32)
            .with_min_bytes(self.config.min_bytes as i32)
            .with_max_bytes(self.config.response_bytes_max as i32)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        FetchTopic::default()
                            .with_topic(topic_name(&t))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let response = self.call(conn, &request, FETCH_VERSION).await?;
        if response.error_code != code::NONE {
            for (w, _, _) in &sent {
                self.pause_on_error(w, response.error_code, Resume::Fetch);
            }
            return Ok(());
        }
        let mut answers: BTreeMap<Key, PartitionData> = BTreeMap::new();
        for t in response.responses {
            let topic = t.topic.0.to_string();
            for p in t.partitions {
                answers.insert((topic.clone(), p.partition_index), p);
            }
        }
        let mut appended = Vec::with_capacity(sent.len());
        for (w, offset, last_epoch) in sent {
            let Some(answer) = answers.remove(&key_of(&w.followed.tp)) else {
                continue;
            };
            if let Some(done) = self
                .apply_fetch_answer(&w, offset, last_epoch, answer)
                .await
            {
                appended.push((w, done));
            }
        }
        // The next fetch offset must be durable here before the leader sees it.
        for (w, done) in appended {
            let Fetched {
                end,
                leader_hw,
                leader_start,
            } = done;
            match w.followed.log.wait_durable(end).await {
                Ok(()) if self.is_current(&w) => {
                    self.follow_log_start(&w, leader_start).await;
                    advance_hw(&w.followed, leader_hw.min(end));
                    self.with_part(&w, |p| p.lag = (leader_hw.0 - end.0).max(0));
                }
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(partition = %w.followed.tp, error = %e, "follower log did not become durable; retrying after backoff");
                    self.pause(&w, Resume::Truncate);
                }
            }
        }
        Ok(())
    }

    /// Applies one partition's fetch answer under its lock; `Some` when the partition
    /// fetched (records appended, or none new).
    async fn apply_fetch_answer(
        &self,
        w: &Work,
        sent_offset: Offset,
        last_epoch: LeaderEpoch,
        answer: PartitionData,
    ) -> Option<Fetched> {
        let _permit = w.lock.acquire_permit(1).await.ok()?;
        if !self.is_current(w) {
            return None;
        }
        let log = &w.followed.log;
        let diverging = (
            answer.diverging_epoch.epoch,
            answer.diverging_epoch.end_offset,
        );
        match classify(answer.error_code, diverging) {
            Answer::Data => {
                // Another operation moved the log since the request: ask again.
                if log.log_end_offset() != sent_offset {
                    return None;
                }
                let records = answer.records.unwrap_or_default();
                let whole = whole_batches_len(&records);
                let end = match whole {
                    0 => sent_offset,
                    n => self.append(w, &records[..n]).await?,
                };
                self.clear_error(w);
                Some(Fetched {
                    end,
                    leader_hw: Offset(answer.high_watermark),
                    leader_start: Offset(answer.log_start_offset),
                })
            }
            Answer::Diverging { epoch, end_offset } => {
                let (offset, next) = match self.truncation_target(w, last_epoch, epoch, end_offset)
                {
                    Truncation::Done(o) => (o, Phase::Fetch),
                    Truncation::Again(o) => (o, Phase::Truncate),
                };
                match self.truncate_log(w, offset).await {
                    Ok(()) => self.set_phase(w, next),
                    Err(()) => self.pause(w, Resume::Truncate),
                }
                None
            }
            Answer::OutOfRange => {
                self.set_phase(w, Phase::OutOfRange);
                None
            }
            Answer::Fenced(e) => {
                self.pause_on_error(w, e, Resume::Truncate);
                None
            }
            Answer::Retry(e) => {
                self.pause_on_error(w, e, Resume::Fetch);
                None
            }
        }
    }

    /// `append_replica` of whole batches; the new log end, or `None` after pausing (or
    /// sending the partition back to truncation) on a refusal.
    async fn append(&self, w: &Work, batches: &[u8]) -> Option<Offset> {
        let f = &w.followed;
        let mut result = f.log.append_replica(batches).await;
        if let Err(AppendError::UnexpectedOffset { .. }) = &result {
            if let Some(base) = self.restart_point(f, batches) {
                tracing::info!(partition = %f.tp, %base, "leader's log starts inside its first batch; the empty follower log restarts at the batch's base");
                result = match f.log.reset_to(base).await {
                    Ok(_) => {
                        if f.hw.get() > base.0 {
                            f.hw.reset(base.0);
                        }
                        f.log.append_replica(batches).await
                    }
                    Err(e) => Err(AppendError::Io(e.to_string())),
                };
            }
        }
        match result {
            Ok(info) => Some(info.last_offset.plus(1)),
            Err(AppendError::UnexpectedOffset { expected, got }) => {
                tracing::warn!(partition = %f.tp, leader = %f.leader.id, %expected, %got, "leader's batches do not continue the follower log; truncating again");
                self.set_phase(w, Phase::Truncate);
                None
            }
            Err(AppendError::Unavailable(why)) => {
                tracing::debug!(partition = %f.tp, why, "follower log busy; retrying after backoff");
                self.pause(w, Resume::Fetch);
                None
            }
            Err(e) => {
                tracing::warn!(partition = %f.tp, leader = %f.leader.id, error = %e, "follower append refused; retrying after backoff");
                self.pause(w, Resume::Truncate);
                None
            }
        }
    }

    /// Where an empty log must restart to take `batches` (see
    /// [`restart_inside_first_batch`]).
    fn restart_point(&self, f: &Followed, batches: &[u8]) -> Option<Offset> {
        let first = sluice_engine::batch::parse_header(batches).ok()?;
        restart_inside_first_batch(
            f.log.log_start_offset(),
            f.log.log_end_offset(),
            first.base_offset(),
            first.last_offset(),
        )
    }

    /// Moves the follower's log start up to the leader's (its retention or DeleteRecords
    /// removed what is below), once that much is written here.
    async fn follow_log_start(&self, w: &Work, leader_start: Offset) {
        let Ok(_permit) = w.lock.acquire_permit(1).await else {
            return;
        };
        let log = &w.followed.log;
        let own = (log.log_start_offset(), log.written_end_offset());
        let Some(start) = log_start_to_follow(own.0, own.1, leader_start) else {
            return;
        };
        if !self.is_current(w) {
            return;
        }
        if let Err(e) = log.delete_records_before(start).await {
            tracing::warn!(partition = %w.followed.tp, %start, error = %e, "follower could not move its log start to the leader's");
        }
    }

    /// The leader refused the fetch offsets as out of range: ask it for its log start and
    /// end (ListOffsets earliest, latest) and reset or truncate to fit.
    async fn resolve_out_of_range(
        &self,
        conn: &mut KafkaConn,
        works: Vec<Work>,
    ) -> Result<(), ClientError> {
        let starts = self.list_offsets(conn, &works, -2).await?;
        let ends = self.list_offsets(conn, &works, -1).await?;
        for w in works {
            let key = key_of(&w.followed.tp);
            match (starts.get(&key).copied(), ends.get(&key).copied()) {
                (Some(Ok(start)), Some(Ok(end))) => {
                    self.fit_leader_range(&w, Offset(start), Offset(end)).await
                }
                (Some(Err(e)), _) | (_, Some(Err(e))) => {
                    self.pause_on_error(&w, e, Resume::Truncate)
                }
                _ => self.pause(&w, Resume::Truncate),
            }
        }
        Ok(())
    }

    async fn fit_leader_range(&self, w: &Work, start: Offset, end: Offset) {
        let Ok(_permit) = w.lock.acquire_permit(1).await else {
            return;
        };
        if !self.is_current(w) {
            return;
        }
        let f = &w.followed;
        let own_end = f.log.log_end_offset();
        let outcome = match out_of_range_action(own_end, start, end) {
            OutOfRangeAction::ResetTo(offset) => match f.log.reset_to(offset).await {
                Ok(_) => {
                    tracing::warn!(partition = %f.tp, leader = %f.leader.id, %own_end, leader_start = %start, "follower log ended below the leader's log start; restarted it empty there");
                    advance_hw(f, offset);
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(partition = %f.tp, error = %e, "follower log reset failed");
                    Err(())
                }
            },
            OutOfRangeAction::TruncateTo(offset) => self.truncate_log(w, offset).await,
            OutOfRangeAction::Fetch => Ok(()),
        };
        match outcome {
            Ok(()) => self.set_phase(w, Phase::Fetch),
            Err(()) => self.pause(w, Resume::Truncate),
        }
    }

    /// ListOffsets at `timestamp` (-2 earliest, -1 latest) as this replica; per partition
    /// the offset or the error code.
    async fn list_offsets(
        &self,
        conn: &mut KafkaConn,
        works: &[Work],
        timestamp: i64,
    ) -> Result<BTreeMap<Key, Result<i64, i16>>, ClientError> {
        let mut topics: BTreeMap<String, Vec<ListOffsetsPartition>> = BTreeMap::new();
        for w in works {
            let f = &w.followed;
            topics.entry(f.tp.topic.clone()).or_default().push(
                ListOffsetsPartition::default()
                    .with_partition_index(f.tp.partition.0)
                    .with_current_leader_epoch(f.leader_epoch.0)
                    .with_timestamp(timestamp),
            );
        }
        let request = ListOffsetsRequest::default()
            .with_replica_id(WireBrokerId(self.me.0))
            .with_isolation_level(0)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        ListOffsetsTopic::default()
                            .with_name(topic_name(&t))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let response = self.call(conn, &request, LIST_OFFSETS_VERSION).await?;
        let mut out = BTreeMap::new();
        for t in response.topics {
            for p in t.partitions {
                let value = match p.error_code {
                    code::NONE if p.offset >= 0 => Ok(p.offset),
                    code::NONE => Err(code::OFFSET_OUT_OF_RANGE),
                    e => Err(e),
                };
                out.insert((t.name.0.to_string(), p.partition_index), value);
            }
        }
        Ok(out)
    }
}

/// The task of one leader broker: steps until retired, stopped or the fetchers are gone.
async fn run_source(
    fetchers: Weak<Fetchers>,
    leader: LeaderAddr,
    quit: Rc<Cell<bool>>,
    wake: Signal,
    done: Rc<Cell<bool>>,
) {
    let mut session = Session::default();
    while !quit.get() {
        let Some(f) = fetchers.upgrade() else { break };
        if f.stopped() {
            break;
        }
        f.step(&leader, &mut session, &wake).await;
    }
    done.set(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_high_watermark_may_stay_or_advance_within_the_log() {
        check_hw_advance(Offset(5), Offset(5), Offset(9));
        check_hw_advance(Offset(5), Offset(9), Offset(9));
    }

    #[test]
    #[should_panic(expected = "high watermark went back")]
    fn a_high_watermark_going_back_panics() {
        check_hw_advance(Offset(5), Offset(4), Offset(9));
    }

    #[test]
    #[should_panic(expected = "beyond the log end")]
    fn a_high_watermark_beyond_the_log_end_panics() {
        check_hw_advance(Offset(5), Offset(10), Offset(9));
    }

    #[test]
    fn config_relations_are_checked() {
        assert_eq!(FetcherConfig::default().validate(), Ok(()));
        let bad = [
            FetcherConfig {
                request_timeout_ms: 500,
                ..FetcherConfig::default()
            },
            FetcherConfig {
                partition_bytes_max: 0,
                ..FetcherConfig::default()
            },
            FetcherConfig {
                response_bytes_max: usize::MAX,
                ..FetcherConfig::default()
            },
            FetcherConfig {
                backoff_ms: 0,
                ..FetcherConfig::default()
            },
            FetcherConfig {
                frame_bytes_max: 1 << 20,
                ..FetcherConfig::default()
            },
        ];
        for (i, c) in bad.iter().enumerate() {
            let e = c.validate().expect_err("refused").to_string();
            assert!(!e.is_empty(), "{i}");
        }
        let e = bad[0].validate().unwrap_err().to_string();
        assert!(e.contains("request_timeout_ms"), "{e}");
    }
}
