//! Consumer-group members for `sluice bench --group`: each consumer actor joins the group
//! with the classic protocol (JoinGroup, SyncGroup with the leader's range assignment,
//! Heartbeat, OffsetCommit, LeaveGroup) over its own coordinator connection, reads its
//! assignment with the ordinary fetch loops, and rejoins on REBALANCE_IN_PROGRESS,
//! ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID.
//!
//! Invariants:
//! - A partition is read by at most one member of this run at a time: a member stops its
//!   fetch loops (and tries to commit their positions) before it rejoins, and the group
//!   cannot complete a rebalance before every member rejoined.
//! - Positions (the next offset to read, per partition) live in [`GroupProgress`]; only the
//!   fetch loop of the member that owns a partition writes its slot.
//! - The group forms before anyone reads: the leader assigns nothing while fewer than
//!   `members_expected` members joined (at most [`GROUP_FORM_MS_MAX`]), so a run does not
//!   start with a rebalance that would re-read uncommitted progress.
//! - No member leaves before every member of the run made its final commit (bounded by
//!   [`FINAL_BARRIER_MS_MAX`]): a departure starts a rebalance, and some coordinators refuse
//!   commits while one is in progress (Kafka and sluice take them from the current
//!   generation).
//! - Everything here is control plane, once per heartbeat or commit interval; the fetch
//!   loops (the data path) are the pinned mode's, unchanged.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures_lite::AsyncWriteExt;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{HeartbeatRequest, OffsetCommitResponse, OffsetFetchResponse};
use kafka_protocol::protocol::{Request, StrBytes};

use super::consumer::{spawn_fetch_loops, ConsumerConfig, GenerationLink, Until};
use super::stats::ActorStats;
use super::wire::{decode_response, encode_request, error_name, read_frame_within};
use super::Control;
use crate::group::proto::{self, code};

/// Session timeout asked for; a member silent this long is removed by the coordinator.
const SESSION_TIMEOUT_MS: i32 = 10_000;
/// How long the coordinator waits for members to rejoin in a rebalance.
const REBALANCE_TIMEOUT_MS: i32 = 30_000;
/// Heartbeat interval (well under a third of the session timeout, as Kafka advises).
const HEARTBEAT_INTERVAL_MS: u64 = 500;
/// Heartbeat interval of a member with nothing assigned (the group is still forming): it
/// has nothing else to do, and the sooner it sees the rebalance the sooner reading starts.
const IDLE_HEARTBEAT_INTERVAL_MS: u64 = 100;
/// How often a member commits its positions while reading (and once at the end).
const COMMIT_INTERVAL_MS: u64 = 1_000;
/// How long the leader waits for all of the run's members before assigning to those there.
pub const GROUP_FORM_MS_MAX: u64 = 30_000;
/// How long a finished member waits for the others' final commits before leaving.
pub const FINAL_BARRIER_MS_MAX: u64 = 10_000;
/// How often the member loop looks at its fetch loops and the clock.
const TICK_MS: u64 = 20;
/// Slack on top of the longest time the coordinator may hold an answer.
const ANSWER_SLACK_MS: u64 = 10_000;
/// JoinGroup rounds (MEMBER_ID_REQUIRED, UNKNOWN_MEMBER_ID, rebalances) before giving up.
const JOIN_ATTEMPTS_MAX: u32 = 20;
/// Pause before asking a loading coordinator again.
const JOIN_RETRY_MS: u64 = 200;

/// Group mode of the consumers of one run.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group_id: String,
    /// The group coordinator's `host:port` (found before the run).
    pub coordinator: String,
    /// Consumer actors of this run, all members of the group.
    pub members_expected: usize,
    pub versions: GroupVersions,
    pub progress: Arc<GroupProgress>,
}

/// The versions the coordinator and we agreed on, per group API.
#[derive(Debug, Clone, Copy)]
pub struct GroupVersions {
    pub join: i16,
    pub sync: i16,
    pub heartbeat: i16,
    pub leave: i16,
    pub commit: i16,
    pub fetch_offsets: i16,
}

/// What the members of one run share.
#[derive(Debug)]
pub struct GroupProgress {
    /// Next offset to read per partition id; -1 until a member owned it.
    positions: Vec<AtomicI64>,
    /// Members that made their final commit.
    final_commits: AtomicUsize,
}

impl GroupProgress {
    pub fn new(partitions: usize) -> GroupProgress {
        GroupProgress {
            positions: (0..partitions).map(|_| AtomicI64::new(-1)).collect(),
            final_commits: AtomicUsize::new(0),
        }
    }

    pub fn set_position(&self, partition: i32, offset: i64) {
        if let Some(p) = self.positions.get(partition as usize) {
            p.store(offset, Ordering::Relaxed);
        }
    }

    pub fn position(&self, partition: i32) -> i64 {
        self.positions
            .get(partition as usize)
            .map_or(-1, |p| p.load(Ordering::Relaxed))
    }

    /// Whether every partition was read up to `targets` (by whichever member owned it).
    fn reached(&self, targets: &[i64]) -> bool {
        (0..targets.len()).all(|p| self.position(p as i32) >= targets[p])
    }
}

/// How a generation ended.
enum GenerationEnd {
    Rebalance,
    Done,
}

/// Runs one consumer actor as a group member until the run is done.
pub async fn run(
    cfg: ConsumerConfig,
    g: GroupConfig,
    stats: Arc<ActorStats>,
    control: Arc<Control>,
) -> Result<()> {
    let mut m = Member::connect(&cfg, &g).await?;
    loop {
        let assigned = m.join(&cfg, &g).await?;
        let parts = m.start_offsets(&cfg, &g, &assigned).await?;
        match m.run_generation(&cfg, &g, &parts, &stats, &control).await? {
            GenerationEnd::Rebalance => continue,
            GenerationEnd::Done => return m.leave(&g).await,
        }
    }
}

/// One request/answer connection to the coordinator.
struct Coordinator {
    stream: super::tls::Stream,
    correlation: i32,
    out: Vec<u8>,
}

impl Coordinator {
    async fn call<R: Request>(
        &mut self,
        version: i16,
        req: &R,
        wait_ms: u64,
    ) -> Result<R::Response> {
        self.correlation = self.correlation.wrapping_add(1);
        self.out.clear();
        encode_request(&mut self.out, version, self.correlation, req)?;
        self.stream
            .write_all(&self.out)
            .await
            .context("writing to the group coordinator")?;
        self.stream
            .flush()
            .await
            .context("writing to the group coordinator")?;
        let wait = Duration::from_millis(wait_ms + ANSWER_SLACK_MS);
        let frame = read_frame_within(&mut self.stream, wait)
            .await
            .ok_or_else(|| {
                anyhow!(
                    "the group coordinator did not answer within {} ms",
                    wait.as_millis()
                )
            })??;
        let (corr, resp) = decode_response::<R::Response>(frame, version)?;
        if corr != self.correlation {
            bail!("coordinator answer {corr}, expected {}", self.correlation);
        }
        Ok(resp)
    }
}

struct Member {
    conn: Coordinator,
    member_id: String,
    generation: i32,
    subscription: Bytes,
    /// The run's one topic (the progress table is indexed by its partitions).
    topic: String,
    /// Partitions of the current generation.
    owned: Vec<i32>,
    /// When this member started (the group-forming wait counts from here).
    started: Instant,
    /// This generation's leader held the partitions back for members still to come.
    waiting_for_members: bool,
}

impl Member {
    async fn connect(cfg: &ConsumerConfig, g: &GroupConfig) -> Result<Member> {
        let stream = super::tls::connect(&g.coordinator)
            .await
            .with_context(|| format!("connecting to the group coordinator {}", g.coordinator))?;
        Ok(Member {
            conn: Coordinator {
                stream,
                correlation: 0,
                out: Vec::new(),
            },
            member_id: String::new(),
            generation: -1,
            subscription: proto::encode_subscription(std::slice::from_ref(&cfg.routing.topic))?,
            topic: cfg.routing.topic.clone(),
            owned: Vec::new(),
            started: Instant::now(),
            waiting_for_members: false,
        })
    }

    /// JoinGroup then SyncGroup until a generation is synced. Returns our partitions of the
    /// topic (and notes whether the leader held them back waiting for more members).
    async fn join(&mut self, cfg: &ConsumerConfig, g: &GroupConfig) -> Result<Vec<i32>> {
        let mut last = code::NONE;
        for _ in 0..JOIN_ATTEMPTS_MAX {
            let req = proto::join_request(
                &g.group_id,
                &self.member_id,
                self.subscription.clone(),
                SESSION_TIMEOUT_MS,
                REBALANCE_TIMEOUT_MS,
            );
            let resp = self
                .conn
                .call(g.versions.join, &req, REBALANCE_TIMEOUT_MS as u64)
                .await
                .context("JoinGroup")?;
            match resp.error_code {
                code::NONE => {}
                // KIP-394: the coordinator names our id; join again with it.
                code::MEMBER_ID_REQUIRED => {
                    self.member_id = resp.member_id.to_string();
                    last = resp.error_code;
                    continue;
                }
                code::UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    last = resp.error_code;
                    continue;
                }
                code::REBALANCE_IN_PROGRESS => {
                    last = resp.error_code;
                    continue;
                }
                // A coordinator still loading its groups (sluice reads them back from
                // __consumer_offsets at start): ask again shortly.
                e if proto::coordinator_retriable(e) => {
                    last = e;
                    glommio::timer::sleep(Duration::from_millis(JOIN_RETRY_MS)).await;
                    continue;
                }
                e => bail!("JoinGroup to group {}: {}", g.group_id, error_name(e)),
            }
            self.member_id = resp.member_id.to_string();
            self.generation = resp.generation_id;
            let leader = resp.leader.as_str() == self.member_id;
            let (assignments, waiting) = if leader {
                let full = resp.members.len() >= g.members_expected
                    || self.started.elapsed() >= Duration::from_millis(GROUP_FORM_MS_MAX);
                (assign(&resp.members, cfg, full)?, !full)
            } else {
                (Vec::new(), false)
            };
            match self.sync(g, assignments).await? {
                Ok(bytes) => {
                    let mine = proto::decode_assignment(&bytes)?
                        .into_iter()
                        .filter(|(t, _)| *t == cfg.routing.topic)
                        .flat_map(|(_, ps)| ps)
                        .filter(|&p| p >= 0 && (p as usize) < cfg.routing.partitions())
                        .collect();
                    tracing::debug!(member = %self.member_id, generation = self.generation, ?mine, "assigned");
                    self.waiting_for_members = waiting;
                    return Ok(mine);
                }
                Err(e) => last = e,
            }
        }
        bail!(
            "group {}: no generation after {JOIN_ATTEMPTS_MAX} JoinGroup rounds (last error {})",
            g.group_id,
            error_name(last)
        )
    }

    /// SyncGroup: our assignment, or a code that means "join again".
    async fn sync(
        &mut self,
        g: &GroupConfig,
        assignments: Vec<SyncGroupRequestAssignment>,
    ) -> Result<Result<Bytes, i16>> {
        let req = proto::sync_request(
            g.versions.sync,
            &g.group_id,
            self.generation,
            &self.member_id,
            assignments,
        );
        let resp = self
            .conn
            .call(g.versions.sync, &req, REBALANCE_TIMEOUT_MS as u64)
            .await
            .context("SyncGroup")?;
        match resp.error_code {
            code::NONE => Ok(Ok(resp.assignment)),
            code::UNKNOWN_MEMBER_ID => {
                self.member_id.clear();
                Ok(Err(resp.error_code))
            }
            code::REBALANCE_IN_PROGRESS | code::ILLEGAL_GENERATION => Ok(Err(resp.error_code)),
            e => bail!("SyncGroup in group {}: {}", g.group_id, error_name(e)),
        }
    }

    /// Start offset per assigned partition: the committed one, else the run's start
    /// (earliest for consume, the end at the start for e2e).
    async fn start_offsets(
        &mut self,
        cfg: &ConsumerConfig,
        g: &GroupConfig,
        assigned: &[i32],
    ) -> Result<Vec<(i32, i64)>> {
        self.owned = assigned.to_vec();
        if assigned.is_empty() {
            return Ok(Vec::new());
        }
        let topics = [(cfg.routing.topic.clone(), assigned.to_vec())];
        let resp: OffsetFetchResponse = self
            .conn
            .call(
                g.versions.fetch_offsets,
                &proto::offset_fetch_request(&g.group_id, Some(&topics)),
                0,
            )
            .await
            .context("OffsetFetch")?;
        let committed = proto::committed_of(&resp)
            .map_err(|e| anyhow!("OffsetFetch in group {}: {}", g.group_id, error_name(e)))?;
        let parts: Vec<(i32, i64)> = assigned
            .iter()
            .map(|&p| {
                let c = committed
                    .iter()
                    .find(|c| c.partition == p && c.topic == cfg.routing.topic)
                    .and_then(|c| c.offset);
                (p, c.unwrap_or(cfg.start[p as usize]))
            })
            .collect();
        for &(p, o) in &parts {
            g.progress.set_position(p, o);
        }
        Ok(parts)
    }

    /// Reads `parts` until the run is done or the group rebalances; heartbeats and commits
    /// on their intervals meanwhile.
    async fn run_generation(
        &mut self,
        cfg: &ConsumerConfig,
        g: &GroupConfig,
        parts: &[(i32, i64)],
        stats: &Arc<ActorStats>,
        control: &Arc<Control>,
    ) -> Result<GenerationEnd> {
        let link = GenerationLink {
            revoked: Rc::new(Cell::new(false)),
            failed: Rc::new(Cell::new(false)),
            progress: g.progress.clone(),
        };
        let tasks = spawn_fetch_loops(cfg, parts, Some(link.clone()), stats, control)?;
        let mut tasks = Some(tasks);
        let heartbeat_every = Duration::from_millis(if parts.is_empty() {
            IDLE_HEARTBEAT_INTERVAL_MS
        } else {
            HEARTBEAT_INTERVAL_MS
        });
        let mut next_heartbeat = Instant::now() + heartbeat_every;
        let mut next_commit = Instant::now() + Duration::from_millis(COMMIT_INTERVAL_MS);
        loop {
            glommio::timer::sleep(Duration::from_millis(TICK_MS)).await;
            if link.failed.get() {
                link.revoked.set(true);
                join_all(tasks.take()).await?;
                bail!("a fetch loop of member {} failed", self.member_id);
            }
            if run_done(cfg, g, control) {
                link.revoked.set(true);
                join_all(tasks.take()).await?;
                self.final_commit(g).await;
                return Ok(GenerationEnd::Done);
            }
            let now = Instant::now();
            // The leader held partitions back for members that never came: rejoin so it
            // assigns them to those that are here.
            let mut rejoin = self.waiting_for_members
                && self.started.elapsed() >= Duration::from_millis(GROUP_FORM_MS_MAX);
            if now >= next_heartbeat {
                next_heartbeat = now + heartbeat_every;
                rejoin |= self.heartbeat(g).await?;
            }
            if !rejoin && now >= next_commit {
                next_commit = now + Duration::from_millis(COMMIT_INTERVAL_MS);
                rejoin |= self.commit(g).await?.is_err();
            }
            if rejoin {
                link.revoked.set(true);
                join_all(tasks.take()).await?;
                // What was read since the last commit is kept if the coordinator takes it.
                if let Err(e) = self.commit(g).await? {
                    tracing::debug!(member = %self.member_id, error = e, "commit before rejoining refused; those offsets will be read again");
                }
                return Ok(GenerationEnd::Rebalance);
            }
        }
    }

    /// A heartbeat; `true` when the member must rejoin.
    async fn heartbeat(&mut self, g: &GroupConfig) -> Result<bool> {
        let req = HeartbeatRequest::default()
            .with_group_id(proto::group_id(&g.group_id))
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()));
        let resp = self
            .conn
            .call(g.versions.heartbeat, &req, 0)
            .await
            .context("Heartbeat")?;
        self.rejoin_on(resp.error_code, g, "Heartbeat")
    }

    /// Maps a group answer to "carry on" (false), "rejoin" (true) or a failure.
    fn rejoin_on(&mut self, error: i16, g: &GroupConfig, what: &str) -> Result<bool> {
        match error {
            code::NONE => Ok(false),
            code::REBALANCE_IN_PROGRESS | code::ILLEGAL_GENERATION => Ok(true),
            code::UNKNOWN_MEMBER_ID => {
                self.member_id.clear();
                Ok(true)
            }
            e => bail!("{what} in group {}: {}", g.group_id, error_name(e)),
        }
    }

    /// Commits the owned partitions' positions with this generation; `Err(code)` when the
    /// coordinator refused it for a group reason (then the member must rejoin).
    async fn commit(&mut self, g: &GroupConfig) -> Result<Result<(), i16>> {
        let offsets: Vec<(String, i32, i64)> = self
            .owned
            .iter()
            .map(|&p| (p, g.progress.position(p)))
            .filter(|&(_, o)| o >= 0)
            .map(|(p, o)| (self.topic.clone(), p, o))
            .collect();
        if offsets.is_empty() || self.member_id.is_empty() {
            return Ok(Ok(()));
        }
        let req =
            proto::offset_commit_request(&g.group_id, self.generation, &self.member_id, &offsets);
        let resp: OffsetCommitResponse = self
            .conn
            .call(g.versions.commit, &req, 0)
            .await
            .context("OffsetCommit")?;
        match proto::commit_error(&resp) {
            None => Ok(Ok(())),
            Some((_, _, e)) => {
                if self.rejoin_on(e, g, "OffsetCommit")? {
                    Ok(Err(e))
                } else {
                    Ok(Ok(()))
                }
            }
        }
    }

    /// The final commit, then wait (heartbeating) until every member of the run made its
    /// own, so no departure's rebalance gets in the way of another's final commit.
    async fn final_commit(&mut self, g: &GroupConfig) {
        match self.commit(g).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(member = %self.member_id, error = %error_name(e), "final commit refused")
            }
            Err(e) => tracing::warn!(member = %self.member_id, error = %e, "final commit failed"),
        }
        g.progress.final_commits.fetch_add(1, Ordering::AcqRel);
        let deadline = Instant::now() + Duration::from_millis(FINAL_BARRIER_MS_MAX);
        let mut next_heartbeat = Instant::now() + Duration::from_millis(HEARTBEAT_INTERVAL_MS);
        while g.progress.final_commits.load(Ordering::Acquire) < g.members_expected
            && Instant::now() < deadline
        {
            glommio::timer::sleep(Duration::from_millis(TICK_MS)).await;
            if Instant::now() >= next_heartbeat {
                next_heartbeat = Instant::now() + Duration::from_millis(HEARTBEAT_INTERVAL_MS);
                // A rebalance now changes nothing: this member is done reading.
                if let Err(e) = self.heartbeat(g).await {
                    tracing::debug!(error = %e, "heartbeat while finishing");
                }
            }
        }
    }

    async fn leave(&mut self, g: &GroupConfig) -> Result<()> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        let req = proto::leave_request(g.versions.leave, &g.group_id, &self.member_id);
        let resp = self
            .conn
            .call(g.versions.leave, &req, 0)
            .await
            .context("LeaveGroup")?;
        let member_error = resp.members.first().map_or(code::NONE, |m| m.error_code);
        for e in [resp.error_code, member_error] {
            if e != code::NONE && e != code::UNKNOWN_MEMBER_ID {
                bail!("LeaveGroup from group {}: {}", g.group_id, error_name(e));
            }
        }
        Ok(())
    }
}

/// Whether the run is over for the consumers (the group-wide form of the fetch loop's test).
fn run_done(cfg: &ConsumerConfig, g: &GroupConfig, control: &Control) -> bool {
    if control.stopping_consumers() || cfg.messages_max.is_some_and(|m| control.consumed() >= m) {
        return true;
    }
    match &cfg.until {
        Until::Offsets(targets) => g.progress.reached(targets),
        Until::ProducersDone => control.producers_done() && control.consumed() >= control.acked(),
        Until::Stop => false,
    }
}

async fn join_all(tasks: Option<Vec<glommio::Task<Result<()>>>>) -> Result<()> {
    let mut result = Ok(());
    for t in tasks.into_iter().flatten() {
        if let Err(e) = t.await {
            result = Err(e);
        }
    }
    result
}

/// The leader's SyncGroup assignments: the topic's partitions by range over the members
/// that subscribe to it (nothing for anyone while the group is not `full` yet, nothing for
/// members of other topics).
fn assign(
    members: &[JoinGroupResponseMember],
    cfg: &ConsumerConfig,
    full: bool,
) -> Result<Vec<SyncGroupRequestAssignment>> {
    let partitions = if full {
        cfg.routing.partitions() as i32
    } else {
        0
    };
    proto::range_assignments(members, &cfg.routing.topic, partitions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::metadata::Routing;

    fn cfg(partitions: usize) -> ConsumerConfig {
        ConsumerConfig {
            routing: Arc::new(Routing {
                topic: "t".into(),
                brokers: Default::default(),
                leaders: vec![0; partitions],
            }),
            partitions: Vec::new(),
            start: vec![0; partitions],
            until: Until::Stop,
            stamped: false,
            fetch_version: 12,
            max_wait_ms: 100,
            fetch_bytes_max: 1,
            partition_fetch_bytes_max: 1,
            messages_max: None,
            group: None,
        }
    }

    fn member(id: &str, topics: &[&str]) -> JoinGroupResponseMember {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        JoinGroupResponseMember::default()
            .with_member_id(StrBytes::from_string(id.to_string()))
            .with_metadata(proto::encode_subscription(&topics).unwrap())
    }

    /// (member id, its (topic, partitions) list).
    type Decoded = Vec<(String, Vec<(String, Vec<i32>)>)>;

    fn decoded(a: &[SyncGroupRequestAssignment]) -> Decoded {
        a.iter()
            .map(|x| {
                (
                    x.member_id.to_string(),
                    proto::decode_assignment(&x.assignment).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn leader_assigns_ranges_to_subscribers_once_the_group_is_full() {
        let members = [
            member("b", &["t"]),
            member("a", &["t"]),
            member("x", &["other"]),
        ];
        let full = decoded(&assign(&members, &cfg(5), true).unwrap());
        assert_eq!(
            full,
            vec![
                ("b".into(), vec![("t".into(), vec![3, 4])]),
                ("a".into(), vec![("t".into(), vec![0, 1, 2])]),
                ("x".into(), vec![]),
            ]
        );
        let waiting = decoded(&assign(&members, &cfg(5), false).unwrap());
        assert!(waiting
            .iter()
            .all(|(_, a)| a.iter().all(|(_, ps)| ps.is_empty())));
        let bad = [JoinGroupResponseMember::default().with_metadata(Bytes::from_static(&[0]))];
        assert!(assign(&bad, &cfg(1), true).is_err());
    }

    #[test]
    fn progress_is_reached_only_when_every_partition_was_read_to_its_target() {
        let p = GroupProgress::new(2);
        assert!(!p.reached(&[0, 0]), "unowned partitions are not done");
        p.set_position(0, 5);
        p.set_position(1, 2);
        assert!(!p.reached(&[5, 3]));
        p.set_position(1, 3);
        assert!(p.reached(&[5, 3]));
        p.set_position(7, 1); // out of range: ignored
        assert_eq!(p.position(7), -1);
    }
}
