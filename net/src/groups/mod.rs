//! The classic consumer group coordinator, with committed offsets and group membership
//! kept in the internal, compacted topic `__consumer_offsets`.
//!
//! Ownership: a group belongs to one partition of the offsets topic (Kafka's function:
//! `abs(java_hash(group_id)) % partitions`), and that partition's coordinator state
//! ([`Part`]: the groups and their committed offsets) is owned by the shard that owns
//! the partition's log. That shard loads it from the log at start, runs its session and
//! expiry sweeps, and writes its group-metadata records. Requests arriving on other
//! shards read and change the state under the partition's mutex (never held across an
//! `.await`) and append their records through the owner.
//!
//! Invariants:
//! - A commit is answered only after its records are durable in the offsets topic, and
//!   becomes visible (OffsetFetch) only then: state follows the log, never leads it.
//!   Each stored offset remembers the log offset it came from, so completions that
//!   finish out of order never let an older commit overwrite a newer one.
//! - Until its partition is loaded, a group's requests get COORDINATOR_LOAD_IN_PROGRESS
//!   (clients retry); nothing answers from a half-loaded partition.
//! - Group metadata (members, generation, assignments) is durable before SyncGroup
//!   answers (a coordinator taking over restores the generation the members hold, so
//!   their commits are accepted), and is recorded by the sweep when membership changes
//!   otherwise (a group empties), within one sweep interval; after a restart the
//!   members find their generation and assignment again (static members keep them).
//! - Offsets of a group without members expire `offsets_retention_ms` after the later of
//!   their commit and the group emptying (KIP-211); expiry and deletion write
//!   tombstones, and an empty group with no offsets left is forgotten.
//! - Bounded: groups, members per group and stored offsets (`GroupsConfig`).

pub mod assignor;
pub mod consumer;
pub mod consumer_records;
mod group;
pub mod persist;
pub mod records;
pub mod subscription;
mod txn_offsets;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use futures_channel::oneshot;

use consumer::{ConsumerConfig, ConsumerGroup, Heartbeat, HeartbeatOk, Refusal};
use group::Group;
pub use group::{GroupState, GroupView, JoinOutcome, JoinReply, JoinRequest, SyncOutcome};
use records::{CommitValue, GroupValue, OffsetsRecord};
use subscription::TopicSource;

use crate::kafka::errors::{code, ErrorCode};

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Topic configs of `__consumer_offsets` when this broker creates it.
pub fn offsets_topic_configs() -> BTreeMap<String, String> {
    [
        // Keeps the latest record of every key; expiry and deletion write tombstones.
        ("cleanup.policy", "compact"),
        // Kafka's offsets.topic.segment.bytes: small segments compact sooner.
        ("segment.bytes", "104857600"),
        // Commits are small and spread over many partitions: reserving 64 MiB steps
        // for each would take gigabytes of disk for little data.
        ("preallocate", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Coordinator settings (the `[groups]` config section).
#[derive(Debug, Clone)]
pub struct GroupsConfig {
    /// Partitions of `__consumer_offsets` when it is first created (Kafka:
    /// offsets.topic.num.partitions). An existing topic keeps its count.
    pub offsets_partitions: i32,
    /// Replicas of each `__consumer_offsets` partition when it is first created
    /// (offsets.topic.replication.factor), capped by the brokers registered then.
    pub offsets_replication_factor: i16,
    /// Offsets of a group with no members expire this long after the later of their
    /// commit and the group emptying (Kafka: offsets.retention.minutes).
    pub offsets_retention_ms: i64,
    /// How often expired offsets are looked for.
    pub offsets_retention_check_interval_ms: u64,
    /// Bounds on a member's session timeout (group.min/max.session.timeout.ms).
    pub session_timeout_ms_min: i32,
    pub session_timeout_ms_max: i32,
    /// Members per group (group.max.size).
    pub members_per_group_max: usize,
    /// Groups kept at once.
    pub groups_max: usize,
    /// Committed offsets kept at once (all groups).
    pub offsets_max: usize,
    /// Bytes of commit metadata per partition (offset.metadata.max.bytes).
    pub offset_metadata_bytes_max: usize,
    /// Session timeout of consumer-protocol members (group.consumer.session.timeout.ms).
    pub consumer_session_timeout_ms: i32,
    /// Heartbeat interval told to consumer-protocol members
    /// (group.consumer.heartbeat.interval.ms).
    pub consumer_heartbeat_interval_ms: i32,
    /// Which online conversions between the protocols are allowed
    /// (group.consumer.migration.policy).
    pub consumer_migration_policy: MigrationPolicy,
}

/// Kafka's `group.consumer.migration.policy`: whether a non-empty classic group becomes a
/// consumer group when a consumer-protocol member joins (upgrade), and whether a consumer
/// group whose last consumer-protocol member left goes back to classic (downgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MigrationPolicy {
    #[default]
    Bidirectional,
    Upgrade,
    Downgrade,
    Disabled,
}

impl MigrationPolicy {
    pub const NAMES: [&'static str; 4] = ["bidirectional", "upgrade", "downgrade", "disabled"];

    /// Kafka's names, case-insensitive as Kafka reads them.
    pub fn parse(s: &str) -> Option<MigrationPolicy> {
        match s.to_ascii_lowercase().as_str() {
            "bidirectional" => Some(MigrationPolicy::Bidirectional),
            "upgrade" => Some(MigrationPolicy::Upgrade),
            "downgrade" => Some(MigrationPolicy::Downgrade),
            "disabled" => Some(MigrationPolicy::Disabled),
            _ => None,
        }
    }

    pub fn upgrade(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Bidirectional | MigrationPolicy::Upgrade
        )
    }

    pub fn downgrade(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Bidirectional | MigrationPolicy::Downgrade
        )
    }
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            offsets_partitions: 50,
            offsets_replication_factor: 3,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            members_per_group_max: 1_000,
            groups_max: 100_000,
            offsets_max: 1_000_000,
            offset_metadata_bytes_max: 4096,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            consumer_migration_policy: MigrationPolicy::Bidirectional,
        }
    }
}

/// A committed offset and the offsets-topic position it was read from or written to.
#[derive(Debug, Clone)]
struct Stored {
    value: CommitValue,
    log_offset: i64,
}

/// (topic, partition) → committed offset, per group.
type GroupOffsets = BTreeMap<(String, i32), Stored>;

/// Whether this broker coordinates a partition's groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Residency {
    /// Another broker leads the offsets partition (or none does yet): NOT_COORDINATOR,
    /// and clients look the coordinator up again.
    #[default]
    Elsewhere,
    /// This broker leads it and is reading it: COORDINATOR_LOAD_IN_PROGRESS.
    Loading,
    Loaded,
}

/// The coordinator state of one offsets-topic partition.
#[derive(Debug, Default)]
struct Part {
    residency: Residency,
    /// The partition's leader epoch when this broker took it on: leadership that went
    /// away and came back between two looks of the loop is loaded again (the other
    /// leader may have written commits meanwhile).
    epoch: i32,
    groups: HashMap<String, Group>,
    /// Groups of the consumer protocol (KIP-848); an id is in `groups` or here, never both.
    consumer: HashMap<String, ConsumerGroup>,
    offsets: HashMap<String, GroupOffsets>,
    /// Keys to tombstone at the next sweep (a classic group converted to a consumer group).
    tombstones: Vec<Bytes>,
    /// Offsets committed in transactions not decided yet.
    pending_txn: txn_offsets::PendingTxnOffsets,
}

/// What a loader read from one offsets partition, applied in log order.
#[derive(Debug, Default)]
pub struct Loaded {
    groups: HashMap<String, GroupValue>,
    consumer: HashMap<String, consumer::StoredGroup>,
    offsets: HashMap<String, GroupOffsets>,
    pending_txn: txn_offsets::PendingTxnOffsets,
    pub records: u64,
    pub skipped: u64,
}

impl Loaded {
    /// A record of a transaction (`producer_id`): an offset commit waits for the
    /// producer's marker; anything else applies as written.
    pub fn apply_transactional(
        &mut self,
        producer_id: i64,
        record: Option<OffsetsRecord>,
        log_offset: i64,
    ) {
        match record {
            Some(OffsetsRecord::Commit {
                group,
                topic,
                partition,
                value: Some(value),
            }) => {
                self.records += 1;
                let stored = Stored { value, log_offset };
                self.pending_txn
                    .add(producer_id, group, topic, partition, stored);
            }
            other => self.apply(other, log_offset),
        }
    }

    /// A transaction marker: the producer's pending offsets are committed or dropped.
    pub fn apply_marker(&mut self, producer_id: i64, commit: bool) {
        self.pending_txn
            .complete(producer_id, commit, &mut self.offsets);
    }

    pub fn apply(&mut self, record: Option<OffsetsRecord>, log_offset: i64) {
        self.records += 1;
        match record {
            None => self.skipped += 1,
            Some(OffsetsRecord::Commit {
                group,
                topic,
                partition,
                value: Some(value),
            }) => {
                let stored = Stored { value, log_offset };
                self.offsets
                    .entry(group)
                    .or_default()
                    .insert((topic, partition), stored);
            }
            Some(OffsetsRecord::Commit {
                group,
                topic,
                partition,
                value: None,
            }) => {
                if let Some(o) = self.offsets.get_mut(&group) {
                    o.remove(&(topic, partition));
                    if o.is_empty() {
                        self.offsets.remove(&group);
                    }
                }
            }
            Some(OffsetsRecord::Group {
                group,
                value: Some(v),
            }) => {
                self.groups.insert(group, v);
            }
            Some(OffsetsRecord::Group { group, value: None }) => {
                self.groups.remove(&group);
            }
            Some(OffsetsRecord::Consumer {
                group,
                record: consumer_records::ConsumerRecord::Metadata(None),
            }) => {
                self.consumer.remove(&group);
            }
            Some(OffsetsRecord::Consumer { group, record }) => {
                self.consumer.entry(group).or_default().apply(record);
            }
        }
    }
}

/// Records to append to one offsets partition: (key, value or tombstone).
pub type OffsetsRecords = Vec<(Bytes, Option<Bytes>)>;

/// The protocol a group speaks (ListGroups v5's group type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    Classic,
    Consumer,
}

impl GroupKind {
    pub fn name(self) -> &'static str {
        match self {
            GroupKind::Classic => "classic",
            GroupKind::Consumer => "consumer",
        }
    }
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub kind: GroupKind,
}

/// A consumer group as ConsumerGroupDescribe shows it: each member with its target.
#[derive(Debug, Clone)]
pub struct ConsumerView {
    pub state: consumer::ConsumerState,
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<(consumer::Member, assignor::Assignment)>,
}

/// Where a consumer group's state is counted among the classic states of /metrics:
/// assigning as preparing, reconciling as completing a rebalance.
fn consumer_state_index(s: consumer::ConsumerState) -> usize {
    use consumer::ConsumerState as C;
    match s {
        C::Empty => GroupState::Empty,
        C::Assigning => GroupState::PreparingRebalance,
        C::Reconciling => GroupState::CompletingRebalance,
        C::Stable => GroupState::Stable,
    }
    .index()
}

/// All coordinator partitions of this broker.
#[derive(Debug)]
pub struct Groups {
    config: GroupsConfig,
    parts: Vec<Mutex<Part>>,
    member_seq: AtomicU64,
    groups_count: AtomicUsize,
    offsets_count: AtomicUsize,
}

/// The group-metadata record of group `id` as it is now (`__consumer_offsets` key and
/// value, Kafka's format).
fn membership_entry(id: &str, g: &Group) -> (Bytes, Option<Bytes>) {
    (
        records::group_key(id),
        Some(records::group_value(&g.snapshot())),
    )
}

/// A classic member's JoinGroup to a non-empty consumer group, answered at once.
fn classic_join(
    g: &mut ConsumerGroup,
    req: &JoinRequest,
    fresh: String,
    topics: &dyn TopicSource,
    config: &ConsumerConfig,
) -> Result<JoinReply, ErrorCode> {
    let outcome = match g.classic_join(req, fresh, topics, config, Instant::now()) {
        Ok(j) => JoinOutcome {
            error: code::NONE,
            generation: j.generation,
            protocol_type: Some(consumer::PROTOCOL_TYPE.to_string()),
            protocol_name: Some(j.protocol_name),
            leader: String::new(),
            member_id: j.member_id,
            members: Vec::new(),
        },
        Err((code::MEMBER_ID_REQUIRED, member_id)) => JoinOutcome {
            error: code::MEMBER_ID_REQUIRED,
            generation: -1,
            member_id,
            ..JoinOutcome::default()
        },
        Err((e, member_id)) => {
            tracing::info!(group = %req.group_id, member = %member_id, error = %e, "classic JoinGroup to a consumer group refused");
            return Err(e);
        }
    };
    Ok(JoinReply::Now(outcome))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is completed before the lock is released, so a
    // poisoned lock still holds consistent state.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wall-clock milliseconds (commit timestamps, state timestamps, expiry).
/// Kafka's timestamps are `i64`; milliseconds since 1970 fit in one for 292 million years.
pub fn now_ms() -> i64 {
    sluice_engine::now_ms() as i64
}

/// Java's `String.hashCode`, so a group (or a transactional id) maps to the same partition
/// of its internal topic as in Kafka.
pub(crate) fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

impl Groups {
    /// `partitions` is the offsets topic's partition count (existing or new).
    pub fn new(config: GroupsConfig, partitions: i32) -> Groups {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Groups {
            config,
            parts: (0..partitions.max(1)).map(|_| Mutex::default()).collect(),
            member_seq: AtomicU64::new(seed),
            groups_count: AtomicUsize::new(0),
            offsets_count: AtomicUsize::new(0),
        }
    }

    pub fn config(&self) -> &GroupsConfig {
        &self.config
    }

    pub fn partition_count(&self) -> usize {
        self.parts.len()
    }

    /// Offsets partitions whose state is loaded (start-up waits for them on a single node).
    pub fn loaded_count(&self) -> usize {
        self.parts
            .iter()
            .filter(|p| lock(p).residency == Residency::Loaded)
            .count()
    }

    /// The offsets partition a group belongs to.
    pub fn partition_of(&self, group_id: &str) -> usize {
        ((java_hash(group_id) & 0x7fff_ffff) as usize) % self.parts.len()
    }

    /// The group's partition state, once loaded.
    fn part(&self, group_id: &str) -> Result<MutexGuard<'_, Part>, ErrorCode> {
        let part = lock(&self.parts[self.partition_of(group_id)]);
        match part.residency {
            Residency::Loaded => Ok(part),
            Residency::Loading => Err(code::COORDINATOR_LOAD_IN_PROGRESS),
            Residency::Elsewhere => Err(code::NOT_COORDINATOR),
        }
    }

    /// Whether a partition's state is loaded or being loaded here.
    pub fn is_resident(&self, partition: usize) -> bool {
        lock(&self.parts[partition]).residency != Residency::Elsewhere
    }

    /// This broker took the partition on at leader epoch `epoch`: its groups wait for
    /// the load.
    pub fn begin_load(&self, partition: usize, epoch: i32) {
        let mut part = lock(&self.parts[partition]);
        if part.residency == Residency::Elsewhere {
            part.residency = Residency::Loading;
            part.epoch = epoch;
        }
    }

    /// Whether the partition's state here was taken on at another leader epoch than
    /// `epoch` (the current one).
    pub fn is_stale(&self, partition: usize, epoch: i32) -> bool {
        let part = lock(&self.parts[partition]);
        part.residency != Residency::Elsewhere && part.epoch != epoch
    }

    pub fn fresh_member_id(&self, client_id: &str) -> String {
        let n = self.member_seq.fetch_add(1, Ordering::Relaxed);
        let prefix = if client_id.is_empty() {
            "member"
        } else {
            client_id
        };
        format!("{prefix}-{n:016x}")
    }

    /// Installs what the loader read; the partition then serves requests.
    pub fn install(&self, partition: usize, loaded: Loaded) {
        let now = Instant::now();
        let mut part = lock(&self.parts[partition]);
        let groups: HashMap<String, Group> = loaded
            .groups
            .into_iter()
            .map(|(id, v)| (id, Group::restore(v, now)))
            .collect();
        let ms = now_ms();
        let consumer: HashMap<String, ConsumerGroup> = loaded
            .consumer
            .into_iter()
            .filter(|(id, _)| !groups.contains_key(id))
            .map(|(id, stored)| (id, ConsumerGroup::restore(stored, now, ms)))
            .collect();
        self.groups_count
            .fetch_add(groups.len() + consumer.len(), Ordering::Relaxed);
        let offsets: usize = loaded.offsets.values().map(BTreeMap::len).sum();
        self.offsets_count.fetch_add(offsets, Ordering::Relaxed);
        part.groups = groups;
        part.consumer = consumer;
        part.offsets = loaded.offsets;
        part.pending_txn = loaded.pending_txn;
        part.residency = Residency::Loaded;
    }

    /// Forgets a partition's state: another broker leads it now. Waiting members are
    /// told NOT_COORDINATOR, so they find the new coordinator.
    pub fn unload(&self, partition: usize) {
        let mut part = lock(&self.parts[partition]);
        part.residency = Residency::Elsewhere;
        for g in part.groups.values_mut() {
            g.abandon();
        }
        let offsets: usize = part.offsets.values().map(BTreeMap::len).sum();
        self.groups_count
            .fetch_sub(part.groups.len() + part.consumer.len(), Ordering::Relaxed);
        self.offsets_count.fetch_sub(offsets, Ordering::Relaxed);
        part.groups.clear();
        part.consumer.clear();
        part.offsets.clear();
        part.pending_txn.clear();
    }

    /// A group's membership record as it is now (generation, members, assignments), to
    /// be made durable before SyncGroup answers; `None` if the group is not here. The
    /// group stays dirty: appends from different shards may land in either order, and the
    /// sweep's later write keeps the newest membership last in the log.
    pub fn membership_record(&self, group_id: &str) -> Result<Option<OffsetsRecords>, ErrorCode> {
        let part = self.part(group_id)?;
        Ok(part
            .groups
            .get(group_id)
            .map(|g| vec![membership_entry(group_id, g)]))
    }

    /// The protocol's settings for a group whose (session timeout, heartbeat interval)
    /// are `timing` (its GROUP configs, or the broker's defaults).
    fn consumer_config(&self, timing: (i32, i32)) -> ConsumerConfig {
        ConsumerConfig {
            session_timeout_ms: timing.0,
            heartbeat_interval_ms: timing.1,
            members_max: self.config.members_per_group_max,
        }
    }

    /// A ConsumerGroupHeartbeat (validated by [`consumer::validate`]) of a group whose
    /// (session timeout, heartbeat interval) are `timing`: the answer, and the records to
    /// make durable before it is sent.
    pub fn consumer_heartbeat(
        &self,
        group_id: &str,
        hb: &Heartbeat,
        topics: &dyn TopicSource,
        timing: (i32, i32),
    ) -> (Result<HeartbeatOk, Refusal>, OffsetsRecords) {
        let mut part = match self.part(group_id) {
            Ok(p) => p,
            Err(c) => {
                return (
                    Err(Refusal::new(c, "the coordinator is not ready")),
                    Vec::new(),
                )
            }
        };
        let mut recs = OffsetsRecords::new();
        let config = self.consumer_config(timing);
        let out = self.consumer_heartbeat_in(&mut part, group_id, hb, topics, &config, &mut recs);
        if let Some(g) = part.consumer.get_mut(group_id) {
            recs.extend(g.records(group_id, false));
        }
        (out, recs)
    }

    fn consumer_heartbeat_in(
        &self,
        part: &mut Part,
        group_id: &str,
        hb: &Heartbeat,
        topics: &dyn TopicSource,
        config: &ConsumerConfig,
        recs: &mut OffsetsRecords,
    ) -> Result<HeartbeatOk, Refusal> {
        let mut replaced = None;
        if let Some(g) = part.groups.get(group_id) {
            if !g.is_empty() {
                replaced = Some(self.upgrade(part, group_id, hb.member_epoch, topics, recs)?);
            } else {
                // An empty classic group becomes a consumer group (its offsets stay).
                part.groups.remove(group_id);
                recs.push((records::group_key(group_id), None));
                self.groups_count.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if !part.consumer.contains_key(group_id) {
            if hb.member_epoch != 0 {
                // Kafka 4.1+: UNKNOWN_MEMBER_ID, so the member rejoins (with epoch 0).
                return Err(Refusal::new(
                    code::UNKNOWN_MEMBER_ID,
                    format!("consumer group {group_id} not found"),
                ));
            }
            if self.groups_count.load(Ordering::Relaxed) >= self.config.groups_max {
                tracing::warn!(group = %group_id, "group limit reached; join refused");
                return Err(Refusal::new(
                    code::COORDINATOR_NOT_AVAILABLE,
                    "group limit reached",
                ));
            }
            self.groups_count.fetch_add(1, Ordering::Relaxed);
            part.consumer
                .insert(group_id.to_string(), ConsumerGroup::new(now_ms()));
        }
        let g = part
            .consumer
            .get_mut(group_id)
            .ok_or_else(|| Refusal::new(code::COORDINATOR_NOT_AVAILABLE, "group vanished"))?;
        let out = g.heartbeat(hb, topics, config, Instant::now(), now_ms());
        if g.is_empty() && g.epoch == 0 {
            // Created by a join that was refused.
            part.consumer.remove(group_id);
            self.groups_count.fetch_sub(1, Ordering::Relaxed);
        } else if out.is_ok() && hb.member_epoch == consumer::LEAVE_EPOCH {
            self.maybe_downgrade(part, group_id, recs);
        }
        if let Some(mut old) = replaced {
            if out.is_err() {
                // As Kafka, which applies none of a refused heartbeat's records: the
                // group stays classic.
                part.consumer.remove(group_id);
                recs.clear();
                part.groups.insert(group_id.to_string(), old);
                return out;
            }
            // Members waiting in a rebalance rejoin the consumer group.
            old.fail_all_waiters(code::REBALANCE_IN_PROGRESS);
            tracing::info!(group = %group_id, members = old.live_members(), "classic group upgraded to a consumer group");
        }
        out
    }

    /// A consumer-protocol member joins (epoch 0) a non-empty classic group: with the
    /// migration policy's leave, a group of the embedded consumer protocol within the size
    /// bound becomes a consumer group hosting its classic members (Kafka's
    /// `validateOnlineUpgrade` and `convertToConsumerGroup`); else GROUP_ID_NOT_FOUND.
    /// Returns the classic group it replaced, for the caller to put back should the
    /// heartbeat be refused.
    fn upgrade(
        &self,
        part: &mut Part,
        group_id: &str,
        member_epoch: i32,
        topics: &dyn TopicSource,
        recs: &mut OffsetsRecords,
    ) -> Result<Group, Refusal> {
        let refuse = |why: &str| {
            tracing::info!(group = %group_id, "classic group not upgraded to a consumer group: {why}");
            Err(Refusal::new(
                code::GROUP_ID_NOT_FOUND,
                format!("Group {group_id} is not a consumer group."),
            ))
        };
        let Some(g) = part.groups.get(group_id) else {
            return refuse("the group is gone");
        };
        if member_epoch != 0 {
            return refuse("only a joining member (epoch 0) converts a group");
        }
        if !self.config.consumer_migration_policy.upgrade() {
            return refuse("the online upgrade is disabled");
        }
        if g.protocol_type.as_deref() != Some(consumer::PROTOCOL_TYPE) {
            return refuse("the group does not use the consumer embedded protocol");
        }
        if g.live_members() >= self.config.members_per_group_max {
            return refuse("the group is at its maximum size");
        }
        let now = Instant::now();
        let Some(converted) = ConsumerGroup::from_classic(&g.snapshot(), topics, now) else {
            return refuse("a member's embedded consumer protocol is malformed");
        };
        let old = part
            .groups
            .remove(group_id)
            .ok_or_else(|| Refusal::new(code::GROUP_ID_NOT_FOUND, "the group is gone"))?;
        recs.push((records::group_key(group_id), None));
        part.consumer.insert(group_id.to_string(), converted);
        Ok(old)
    }

    /// A consumer group left with classic members only goes back to classic, with the
    /// migration policy's leave (Kafka's `validateOnlineDowngradeWithFencedMember` and
    /// `convertToClassicGroup`): the members keep their assignments and the group
    /// rebalances. The consumer group's records are tombstoned in `recs`.
    fn maybe_downgrade(&self, part: &mut Part, group_id: &str, recs: &mut OffsetsRecords) {
        if !self.config.consumer_migration_policy.downgrade() {
            return;
        }
        let Some(g) = part.consumer.get_mut(group_id) else {
            return;
        };
        if !g.all_classic() || g.members().count() > self.config.members_per_group_max {
            return;
        }
        let (now, ms) = (Instant::now(), now_ms());
        let Some(value) = g.to_classic(ms) else {
            tracing::info!(group = %group_id, "consumer group not downgraded: its members share no protocol");
            return;
        };
        recs.extend(g.records(group_id, false));
        recs.extend(g.tombstones(group_id));
        part.consumer.remove(group_id);
        let mut classic = Group::restore(value, now);
        classic.prepare_rebalance(now, ms);
        recs.push(membership_entry(group_id, &classic));
        tracing::info!(group = %group_id, members = classic.live_members(), "consumer group downgraded to a classic group");
        part.groups.insert(group_id.to_string(), classic);
    }

    /// The records a consumer group owes for changes made outside a heartbeat (a classic
    /// member's JoinGroup), to be made durable before the answer.
    pub fn consumer_records(&self, group_id: &str) -> Result<OffsetsRecords, ErrorCode> {
        let mut part = self.part(group_id)?;
        Ok(part
            .consumer
            .get_mut(group_id)
            .map(|g| g.records(group_id, false))
            .unwrap_or_default())
    }

    /// A consumer group as ConsumerGroupDescribe shows it: `Ok(None)` when no consumer
    /// group has this id (a classic one may).
    pub fn consumer_describe(&self, group_id: &str) -> Result<Option<ConsumerView>, ErrorCode> {
        let part = self.part(group_id)?;
        Ok(part.consumer.get(group_id).map(|g| ConsumerView {
            state: g.state(),
            epoch: g.epoch,
            assignment_epoch: g.assignment_epoch,
            assignor: g.assignor().to_string(),
            members: g
                .members()
                .map(|m| {
                    (
                        m.clone(),
                        g.target_of(&m.member_id).cloned().unwrap_or_default(),
                    )
                })
                .collect(),
        }))
    }

    /// Whether a classic group has this id (ConsumerGroupDescribe answers
    /// GROUP_ID_NOT_FOUND for it).
    pub fn is_classic(&self, group_id: &str) -> Result<bool, ErrorCode> {
        Ok(self.part(group_id)?.groups.contains_key(group_id))
    }

    /// OffsetFetch v9+: whether this member may read a consumer group's offsets.
    pub fn check_fetch(&self, group_id: &str, member_id: Option<&str>, epoch: i32) -> ErrorCode {
        match self.part(group_id) {
            Err(e) => e,
            Ok(part) => part
                .consumer
                .get(group_id)
                .map_or(code::NONE, |g| g.check_fetch(member_id, epoch)),
        }
    }

    /// Registers a JoinGroup; `topics` resolves the subscription of a classic member
    /// joining a consumer group.
    pub fn join(&self, req: JoinRequest, topics: &dyn TopicSource) -> Result<JoinReply, ErrorCode> {
        if req.group_id.is_empty() {
            return Err(code::INVALID_GROUP_ID);
        }
        let c = &self.config;
        if !(c.session_timeout_ms_min..=c.session_timeout_ms_max).contains(&req.session_timeout_ms)
        {
            return Err(code::INVALID_SESSION_TIMEOUT);
        }
        if req.protocols.is_empty() || req.protocol_type.is_empty() {
            return Err(code::INCONSISTENT_GROUP_PROTOCOL);
        }
        let fresh = self.fresh_member_id(&req.client_id);
        let mut part = self.part(&req.group_id)?;
        if let Some(g) = part.consumer.get_mut(&req.group_id) {
            // As Kafka: a non-empty consumer group hosts classic members (online
            // migration); an empty one becomes a classic group.
            if !g.is_empty() {
                let config = self.consumer_config((
                    self.config.consumer_session_timeout_ms,
                    self.config.consumer_heartbeat_interval_ms,
                ));
                let reply = classic_join(g, &req, fresh, topics, &config);
                if reply.is_ok() && g.all_classic() {
                    // A classic static member replaced the last consumer-protocol one
                    // (Kafka's `validateOnlineDowngradeWithReplacedMemberId`); the sweep
                    // writes the records.
                    let mut recs = OffsetsRecords::new();
                    self.maybe_downgrade(&mut part, &req.group_id, &mut recs);
                    part.tombstones.extend(
                        recs.into_iter()
                            .filter(|(_, v)| v.is_none())
                            .map(|(k, _)| k),
                    );
                }
                return reply;
            }
            part.consumer.remove(&req.group_id);
            let tombstones = ConsumerGroup::deletion_records(&req.group_id);
            part.tombstones
                .extend(tombstones.into_iter().map(|(k, _)| k));
            self.groups_count.fetch_sub(1, Ordering::Relaxed);
        }
        if !part.groups.contains_key(&req.group_id) {
            if self.groups_count.load(Ordering::Relaxed) >= c.groups_max {
                tracing::warn!(group = %req.group_id, "group limit reached; join refused");
                return Err(code::COORDINATOR_NOT_AVAILABLE);
            }
            self.groups_count.fetch_add(1, Ordering::Relaxed);
            part.groups
                .insert(req.group_id.clone(), Group::new(now_ms()));
        }
        let group = part
            .groups
            .get_mut(&req.group_id)
            .ok_or(code::COORDINATOR_NOT_AVAILABLE)?;
        group.join(
            &req,
            fresh,
            c.members_per_group_max,
            Instant::now(),
            now_ms(),
        )
    }

    /// A SyncGroup; see [`Group::sync`].
    pub fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member: (&str, Option<&str>),
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Result<SyncOutcome, oneshot::Receiver<SyncOutcome>>, ErrorCode> {
        let mut part = self.part(group_id)?;
        let (member_id, instance) = member;
        if let Some(g) = part.consumer.get_mut(group_id) {
            let (name, assignment) =
                g.classic_sync(member_id, instance, generation, protocol, Instant::now())?;
            return Ok(Ok(SyncOutcome {
                error: code::NONE,
                protocol_type: Some(consumer::PROTOCOL_TYPE.to_string()),
                protocol_name: Some(name),
                assignment,
            }));
        }
        let group = part
            .groups
            .get_mut(group_id)
            .ok_or(code::UNKNOWN_MEMBER_ID)?;
        group.sync(
            generation,
            member_id,
            instance,
            protocol,
            assignments,
            Instant::now(),
            now_ms(),
        )
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance: Option<&str>,
    ) -> ErrorCode {
        let mut part = match self.part(group_id) {
            Ok(p) => p,
            Err(e) => return e,
        };
        if let Some(g) = part.consumer.get_mut(group_id) {
            return g.classic_heartbeat(member_id, instance, generation, Instant::now());
        }
        match part.groups.get_mut(group_id) {
            Some(g) => g.heartbeat(generation, member_id, instance, Instant::now()),
            None => code::UNKNOWN_MEMBER_ID,
        }
    }

    /// Members leave, each by (member id, instance id); an error code per member.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        let mut part = self.part(group_id)?;
        if let Some(g) = part.consumer.get_mut(group_id) {
            let ms = now_ms();
            return Ok(members
                .iter()
                .map(|(id, instance)| g.classic_leave(id, instance.as_deref(), ms))
                .collect());
        }
        let Some(group) = part.groups.get_mut(group_id) else {
            return Ok(members.iter().map(|_| code::UNKNOWN_MEMBER_ID).collect());
        };
        let (now, ms) = (Instant::now(), now_ms());
        Ok(members
            .iter()
            .map(|(id, instance)| group.leave(id, instance.as_deref(), now, ms))
            .collect())
    }

    /// Whether an offset commit (of request `version`) may go ahead (see
    /// [`Group::check_commit`] and [`ConsumerGroup::check_commit`]).
    pub fn check_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance: Option<&str>,
        version: i16,
    ) -> ErrorCode {
        if group_id.is_empty() {
            return code::INVALID_GROUP_ID;
        }
        let part = match self.part(group_id) {
            Ok(p) => p,
            Err(e) => return e,
        };
        if let Some(g) = part.consumer.get(group_id) {
            return g.check_commit(member_id, generation, version);
        }
        match part.groups.get(group_id) {
            Some(g) => g.check_commit(generation, member_id, instance),
            None if generation < 0 => code::NONE,
            None => code::ILLEGAL_GENERATION,
        }
    }

    /// Whether this broker coordinates the group now (NOT_COORDINATOR,
    /// COORDINATOR_LOAD_IN_PROGRESS otherwise).
    pub fn coordinates(&self, group_id: &str) -> Result<(), ErrorCode> {
        if group_id.is_empty() {
            return Err(code::INVALID_GROUP_ID);
        }
        self.part(group_id).map(drop)
    }

    /// Room for `new_keys` more stored offsets?
    pub fn has_room_for(&self, new_keys: usize) -> bool {
        self.offsets_count.load(Ordering::Relaxed) + new_keys <= self.config.offsets_max
    }

    /// Makes commits visible once durable: `items[i]` was written at `base + i`.
    pub fn apply_commits(&self, group_id: &str, items: Vec<(String, i32, CommitValue)>, base: i64) {
        let mut part = lock(&self.parts[self.partition_of(group_id)]);
        if part.residency != Residency::Loaded {
            // Leadership moved while the records were written: the new coordinator
            // reads them from the log; nothing here may serve them.
            return;
        }
        let offsets = part.offsets.entry(group_id.to_string()).or_default();
        let mut added = 0;
        for (i, (topic, partition, value)) in items.into_iter().enumerate() {
            let log_offset = base + i as i64;
            match offsets.get_mut(&(topic.clone(), partition)) {
                Some(s) if s.log_offset > log_offset => {}
                Some(s) => *s = Stored { value, log_offset },
                None => {
                    added += 1;
                    offsets.insert((topic, partition), Stored { value, log_offset });
                }
            }
        }
        self.offsets_count.fetch_add(added, Ordering::Relaxed);
    }

    /// Offsets a transaction committed (TxnOffsetCommit), durable in the log from `base`
    /// on: they wait for the transaction's marker in this partition.
    pub fn apply_txn_commits(
        &self,
        group_id: &str,
        producer_id: i64,
        items: Vec<(String, i32, CommitValue)>,
        base: i64,
    ) {
        let mut part = lock(&self.parts[self.partition_of(group_id)]);
        if part.residency != Residency::Loaded {
            return;
        }
        for (i, (topic, partition, value)) in items.into_iter().enumerate() {
            let stored = Stored {
                value,
                log_offset: base + i as i64,
            };
            part.pending_txn
                .add(producer_id, group_id.to_string(), topic, partition, stored);
        }
    }

    /// A transaction marker written to offsets `partition`: the producer's pending
    /// offsets there become visible (commit) or are dropped (abort).
    pub fn complete_txn(&self, partition: usize, producer_id: i64, commit: bool) {
        let mut part = lock(&self.parts[partition]);
        if part.residency != Residency::Loaded {
            return;
        }
        let part = &mut *part;
        let added = part
            .pending_txn
            .complete(producer_id, commit, &mut part.offsets);
        self.offsets_count.fetch_add(added, Ordering::Relaxed);
    }

    /// Whether an undecided transaction holds an offset of the group's partition (an
    /// OffsetFetch asking for stable offsets is told UNSTABLE_OFFSET_COMMIT).
    pub fn has_pending_txn(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.part(group_id)
            .is_ok_and(|p| p.pending_txn.holds(group_id, topic, partition))
    }

    /// Stored offsets of a group for a topic partition.
    pub fn committed(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<CommitValue>, ErrorCode> {
        let part = self.part(group_id)?;
        Ok(part
            .offsets
            .get(group_id)
            .and_then(|o| o.get(&(topic.to_string(), partition)))
            .map(|s| s.value.clone()))
    }

    /// Every stored offset of a group, by topic and partition.
    pub fn committed_all(
        &self,
        group_id: &str,
    ) -> Result<Vec<(String, i32, CommitValue)>, ErrorCode> {
        let part = self.part(group_id)?;
        Ok(part
            .offsets
            .get(group_id)
            .map(|o| {
                o.iter()
                    .map(|((t, p), s)| (t.clone(), *p, s.value.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// A group's state and members; a group known only by its offsets is Empty.
    /// A consumer-protocol group is not described here: Kafka's DescribeGroups (v0–v5)
    /// answers it as Dead.
    pub fn describe(&self, group_id: &str) -> Result<Option<GroupView>, ErrorCode> {
        let part = self.part(group_id)?;
        if part.consumer.contains_key(group_id) {
            return Ok(None);
        }
        Ok(match part.groups.get(group_id) {
            Some(g) => Some(g.view()),
            None if part.offsets.contains_key(group_id) => Some(GroupView {
                state: GroupState::Empty,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            }),
            None => None,
        })
    }

    /// Every group of every loaded partition.
    pub fn list(&self) -> Vec<Listed> {
        let mut out = Vec::new();
        for part in &self.parts {
            let part = lock(part);
            for (id, g) in &part.groups {
                out.push(Listed {
                    id: id.clone(),
                    state: g.state.name(),
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    kind: GroupKind::Classic,
                });
            }
            for (id, g) in &part.consumer {
                out.push(Listed {
                    id: id.clone(),
                    state: g.state().name(),
                    protocol_type: "consumer".to_string(),
                    kind: GroupKind::Consumer,
                });
            }
            for id in part.offsets.keys() {
                if !part.groups.contains_key(id) && !part.consumer.contains_key(id) {
                    out.push(Listed {
                        id: id.clone(),
                        state: GroupState::Empty.name(),
                        protocol_type: String::new(),
                        kind: GroupKind::Classic,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// DeleteGroups, first half: the tombstones to write, if the group may be deleted.
    pub fn prepare_delete(&self, group_id: &str) -> Result<OffsetsRecords, ErrorCode> {
        let part = self.part(group_id)?;
        let group = part.groups.get(group_id);
        let consumer = part.consumer.get(group_id);
        let offsets = part.offsets.get(group_id);
        if group.is_none() && consumer.is_none() && offsets.is_none() {
            return Err(code::GROUP_ID_NOT_FOUND);
        }
        if group.is_some_and(|g| !g.is_empty()) || consumer.is_some_and(|g| !g.is_empty()) {
            return Err(code::NON_EMPTY_GROUP);
        }
        let mut out: OffsetsRecords = match consumer {
            Some(_) => ConsumerGroup::deletion_records(group_id),
            None => vec![(records::group_key(group_id), None)],
        };
        for (t, p) in offsets.into_iter().flat_map(BTreeMap::keys) {
            out.push((records::commit_key(group_id, t, *p), None));
        }
        Ok(out)
    }

    /// DeleteGroups, second half (the tombstones are durable).
    pub fn finish_delete(&self, group_id: &str) {
        let mut part = lock(&self.parts[self.partition_of(group_id)]);
        if part.groups.get(group_id).is_some_and(Group::is_empty) {
            part.groups.remove(group_id);
            self.groups_count.fetch_sub(1, Ordering::Relaxed);
        }
        if part
            .consumer
            .get(group_id)
            .is_some_and(ConsumerGroup::is_empty)
        {
            part.consumer.remove(group_id);
            self.groups_count.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(o) = part.offsets.remove(group_id) {
            self.offsets_count.fetch_sub(o.len(), Ordering::Relaxed);
        }
    }

    /// OffsetDelete, first half: an error per (topic, partition) and the tombstones for
    /// those that may be deleted (not subscribed to by a live member).
    #[allow(clippy::type_complexity)]
    pub fn prepare_offset_delete(
        &self,
        group_id: &str,
        wanted: &[(String, Vec<i32>)],
    ) -> Result<(Vec<Vec<ErrorCode>>, OffsetsRecords), ErrorCode> {
        let part = self.part(group_id)?;
        let group = part.groups.get(group_id);
        let consumer = part.consumer.get(group_id);
        if group.is_none() && consumer.is_none() && !part.offsets.contains_key(group_id) {
            return Err(code::GROUP_ID_NOT_FOUND);
        }
        let subscribed = match (group, consumer) {
            (_, Some(c)) if !c.is_empty() => c.subscribed_names(),
            (g, _) => match g {
                Some(g) if !g.is_empty() => match g.subscribed_topics() {
                    Some(t) => t,
                    None => return Err(code::NON_EMPTY_GROUP),
                },
                _ => Vec::new(),
            },
        };
        let mut errors = Vec::with_capacity(wanted.len());
        let mut tombstones = Vec::new();
        for (topic, partitions) in wanted {
            let busy = subscribed.iter().any(|t| t == topic);
            errors.push(
                partitions
                    .iter()
                    .map(|p| {
                        if busy {
                            code::GROUP_SUBSCRIBED_TO_TOPIC
                        } else {
                            tombstones.push((records::commit_key(group_id, topic, *p), None));
                            code::NONE
                        }
                    })
                    .collect(),
            );
        }
        Ok((errors, tombstones))
    }

    /// OffsetDelete, second half.
    pub fn finish_offset_delete(&self, group_id: &str, deleted: &[(String, i32)]) {
        let mut part = lock(&self.parts[self.partition_of(group_id)]);
        let mut removed = 0;
        if let Some(o) = part.offsets.get_mut(group_id) {
            for key in deleted {
                removed += usize::from(o.remove(key).is_some());
            }
            if o.is_empty() {
                part.offsets.remove(group_id);
            }
        }
        self.offsets_count.fetch_sub(removed, Ordering::Relaxed);
    }

    /// One sweep of a partition (by its owning shard): expires silent members and
    /// overdue rebalances, and returns the group-metadata records to write for groups
    /// whose membership changed, and — when `expire_offsets` — tombstones for expired
    /// offsets (removed from memory now) and for empty groups with nothing left, which it
    /// forgets.
    /// Also returns the ids of the groups whose metadata it wrote, for [`mark_dirty`]
    /// should the write fail.
    ///
    /// [`mark_dirty`]: Groups::mark_dirty
    pub fn sweep(&self, partition: usize, expire_offsets: bool) -> (OffsetsRecords, Vec<String>) {
        let (now, ms) = (Instant::now(), now_ms());
        let retention = self.config.offsets_retention_ms;
        let mut part = lock(&self.parts[partition]);
        if part.residency != Residency::Loaded {
            return (Vec::new(), Vec::new());
        }
        let mut out: OffsetsRecords = part.tombstones.drain(..).map(|k| (k, None)).collect();
        let session =
            std::time::Duration::from_millis(self.config.consumer_session_timeout_ms.max(0) as u64);
        let mut fenced = Vec::new();
        for (id, g) in part.consumer.iter_mut() {
            let gone = g.expire(session, now, ms);
            for m in &gone {
                tracing::info!(group = %id, member = %m, "consumer group member removed: session or rebalance timeout");
            }
            if !gone.is_empty() && g.all_classic() {
                fenced.push(id.clone());
            }
        }
        for id in fenced {
            self.maybe_downgrade(&mut part, &id, &mut out);
        }
        let Part {
            groups,
            consumer,
            offsets,
            ..
        } = &mut *part;
        for (id, g) in groups.iter_mut() {
            for m in g.expire(now, ms) {
                tracing::info!(group = %id, member = %m, "member session expired");
            }
        }
        if expire_offsets {
            let mut removed = 0;
            for (id, o) in offsets.iter_mut() {
                let empty_since = match (groups.get(id), consumer.get(id)) {
                    (Some(g), _) if !g.is_empty() => continue,
                    (_, Some(g)) if !g.is_empty() => continue,
                    (Some(g), _) => g.state_since_ms,
                    (_, Some(g)) => g.state_since_ms,
                    (None, None) => i64::MIN,
                };
                o.retain(|(t, p), s| {
                    let keep = s
                        .value
                        .commit_timestamp_ms
                        .max(empty_since)
                        .saturating_add(retention)
                        > ms;
                    if !keep {
                        out.push((records::commit_key(id, t, *p), None));
                        removed += 1;
                    }
                    keep
                });
            }
            if removed > 0 {
                tracing::info!(
                    partition,
                    offsets = removed,
                    "expired committed offsets of empty groups"
                );
            }
            offsets.retain(|_, o| !o.is_empty());
            self.offsets_count.fetch_sub(removed, Ordering::Relaxed);
        }
        let mut forgotten = 0;
        let mut written = Vec::new();
        groups.retain(|id, g| {
            // As Kafka's offsets cleanup: an empty group without offsets is forgotten only
            // by the expiry pass (every offsets.retention.check.interval.ms), so a group
            // whose last member just left still exists for DescribeGroups and
            // DeleteGroups (forgetting it on the next sweep answered GROUP_ID_NOT_FOUND).
            let gone = expire_offsets && g.is_empty() && !offsets.contains_key(id);
            if gone {
                out.push((records::group_key(id), None));
                forgotten += 1;
            } else if g.dirty {
                g.dirty = false;
                written.push(id.clone());
                out.push(membership_entry(id, g));
            }
            !gone
        });
        consumer.retain(|id, g| {
            let gone = g.is_empty() && !offsets.contains_key(id);
            // Rewritten here too: appends of heartbeats from different shards may land
            // in either order, and this later write keeps the newest state last.
            if g.is_unswept() {
                out.extend(g.records(id, true));
            }
            if gone {
                out.extend(ConsumerGroup::deletion_records(id));
            }
            forgotten += usize::from(gone);
            !gone
        });
        self.groups_count.fetch_sub(forgotten, Ordering::Relaxed);
        (out, written)
    }

    /// Groups by state, members and stored offsets of some partitions (for /metrics).
    pub fn stats(&self, partitions: &[usize]) -> crate::admin::metrics::GroupStat {
        let mut stat = crate::admin::metrics::GroupStat::default();
        for &p in partitions {
            let part = lock(&self.parts[p]);
            for g in part.groups.values() {
                stat.by_state[g.state.index()] += 1;
                stat.members += g.live_members() as u64;
            }
            for g in part.consumer.values() {
                stat.by_state[consumer_state_index(g.state())] += 1;
                stat.members += g.members().count() as u64;
            }
            let simple = part
                .offsets
                .keys()
                .filter(|id| !part.groups.contains_key(*id) && !part.consumer.contains_key(*id));
            stat.by_state[GroupState::Empty.index()] += simple.count() as u64;
            stat.committed_offsets += part.offsets.values().map(|o| o.len() as u64).sum::<u64>();
        }
        stat
    }

    /// A failed write of `sweep`'s group records: mark the groups to be written again.
    pub fn mark_dirty(&self, partition: usize, group_ids: &[String]) {
        let mut part = lock(&self.parts[partition]);
        for id in group_ids {
            if let Some(g) = part.groups.get_mut(id) {
                g.dirty = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_kafkas_function() {
        // Java: "a".hashCode() == 97, "hello".hashCode() == 99162322,
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE (Utils.abs masks it to 0).
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("hello"), 99_162_322);
        let g = Groups::new(GroupsConfig::default(), 50);
        assert_eq!(g.partition_of("hello"), 99_162_322 % 50);
        assert_eq!(g.partition_of(""), 0);
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
        assert_eq!(g.partition_of("polygenelubricants"), 0);
    }

    #[test]
    fn requests_follow_the_partitions_residency() {
        let g = Groups::new(GroupsConfig::default(), 4);
        let p = g.partition_of("g");
        assert_eq!(g.check_commit("g", -1, "", None, 8), code::NOT_COORDINATOR);
        g.begin_load(p, 0);
        assert_eq!(
            g.check_commit("g", -1, "", None, 8),
            code::COORDINATOR_LOAD_IN_PROGRESS
        );
        g.install(p, Loaded::default());
        assert_eq!(g.check_commit("g", -1, "", None, 8), code::NONE);
        g.apply_commits("g", vec![("t".into(), 0, commit(1, 0))], 0);
        g.unload(p);
        assert_eq!(g.check_commit("g", -1, "", None, 8), code::NOT_COORDINATOR);
        assert_eq!(g.stats(&[p]).committed_offsets, 0, "state forgotten");
    }

    struct OneTopic;

    impl TopicSource for OneTopic {
        fn version(&self) -> u64 {
            1
        }
        fn topic(&self, name: &str) -> Option<(sluice_control::TopicId, i32)> {
            (name == "t").then_some((sluice_control::TopicId(7), 4))
        }
        fn each(&self, f: &mut dyn FnMut(&str, sluice_control::TopicId, i32)) {
            f("t", sluice_control::TopicId(7), 4);
        }
    }

    /// A consumer protocol subscription (v0) to topic `t`.
    fn subscription_to_t() -> Bytes {
        Bytes::from_static(&[0, 0, 0, 0, 0, 1, 0, 1, b't', 0xff, 0xff, 0xff, 0xff])
    }

    /// A classic member's JoinGroup (v3: no member id required) to group `g`.
    fn classic_join_to_g() -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: String::new(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: String::new(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), subscription_to_t())],
            require_known_member_id: false,
        }
    }

    #[test]
    fn a_consumer_member_upgrades_a_classic_group_and_its_leave_downgrades_it() {
        let g = Groups::new(GroupsConfig::default(), 1);
        g.install(0, Loaded::default());
        g.join(classic_join_to_g(), &OneTopic).unwrap();
        let timing = (45_000, 5_000);
        let hb = |epoch: i32| Heartbeat {
            member_id: "n".into(),
            member_epoch: epoch,
            rebalance_timeout_ms: if epoch == 0 { 60_000 } else { -1 },
            topic_names: (epoch == 0).then(|| vec!["t".into()]),
            owned: (epoch == 0).then(Vec::new),
            ..Heartbeat::default()
        };
        // Only a joining member converts.
        let (r, recs) = g.consumer_heartbeat("g", &hb(3), &OneTopic, timing);
        assert_eq!(r.unwrap_err().code, code::GROUP_ID_NOT_FOUND);
        assert!(recs.is_empty());
        assert!(g.is_classic("g").unwrap());
        // A joining one does: the classic group's record is tombstoned and the consumer
        // group written.
        let (r, recs) = g.consumer_heartbeat("g", &hb(0), &OneTopic, timing);
        let epoch = r.unwrap().member_epoch;
        assert!(!g.is_classic("g").unwrap());
        assert!(recs.contains(&(records::group_key("g"), None)));
        assert_eq!(g.consumer_describe("g").unwrap().unwrap().members.len(), 2);
        // The consumer member leaves: a classic group again, written as one.
        let (r, recs) = g.consumer_heartbeat("g", &hb(consumer::LEAVE_EPOCH), &OneTopic, timing);
        assert!(r.is_ok() && epoch > 0);
        assert!(g.is_classic("g").unwrap());
        assert!(g.consumer_describe("g").unwrap().is_none());
        assert_eq!(
            recs.last().map(|(k, _)| k.clone()),
            Some(records::group_key("g"))
        );
        assert!(recs.last().is_some_and(|(_, v)| v.is_some()));
    }

    #[test]
    fn the_migration_policy_gates_each_direction() {
        for (policy, upgrades) in [
            (MigrationPolicy::Disabled, false),
            (MigrationPolicy::Downgrade, false),
            (MigrationPolicy::Upgrade, true),
        ] {
            let config = GroupsConfig {
                consumer_migration_policy: policy,
                ..GroupsConfig::default()
            };
            let g = Groups::new(config, 1);
            g.install(0, Loaded::default());
            g.join(classic_join_to_g(), &OneTopic).unwrap();
            let hb = Heartbeat {
                member_id: "n".into(),
                member_epoch: 0,
                rebalance_timeout_ms: 60_000,
                topic_names: Some(vec!["t".into()]),
                owned: Some(Vec::new()),
                ..Heartbeat::default()
            };
            let (r, _) = g.consumer_heartbeat("g", &hb, &OneTopic, (45_000, 5_000));
            assert_eq!(r.is_ok(), upgrades, "{policy:?}");
            assert_eq!(g.is_classic("g").unwrap(), !upgrades, "{policy:?}");
            if upgrades {
                let leave = Heartbeat {
                    member_epoch: consumer::LEAVE_EPOCH,
                    ..hb
                };
                g.consumer_heartbeat("g", &leave, &OneTopic, (45_000, 5_000))
                    .0
                    .unwrap();
                assert!(!g.is_classic("g").unwrap(), "{policy:?} does not downgrade");
            }
        }
    }

    fn commit(offset: i64, ts: i64) -> CommitValue {
        CommitValue {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: ts,
        }
    }

    #[test]
    fn later_log_offsets_win_and_deletes_write_tombstones() {
        let g = Groups::new(GroupsConfig::default(), 1);
        g.install(0, Loaded::default());
        g.apply_commits("g", vec![("t".into(), 0, commit(10, 1))], 5);
        g.apply_commits("g", vec![("t".into(), 0, commit(7, 1))], 3);
        assert_eq!(g.committed("g", "t", 0).unwrap().unwrap().offset, 10);
        let tombs = g.prepare_delete("g").unwrap();
        assert_eq!(tombs.len(), 2);
        assert!(tombs.iter().all(|(_, v)| v.is_none()));
        g.finish_delete("g");
        assert!(g.committed("g", "t", 0).unwrap().is_none());
        assert_eq!(g.prepare_delete("g").unwrap_err(), code::GROUP_ID_NOT_FOUND);
    }

    #[test]
    fn offsets_of_empty_groups_expire_after_retention() {
        let config = GroupsConfig {
            offsets_retention_ms: 1_000,
            ..GroupsConfig::default()
        };
        let g = Groups::new(config, 1);
        g.install(0, Loaded::default());
        let old = now_ms() - 5_000;
        g.apply_commits("old", vec![("t".into(), 0, commit(1, old))], 0);
        g.apply_commits("new", vec![("t".into(), 0, commit(1, now_ms()))], 1);
        let (out, _) = g.sweep(0, true);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(g.committed("old", "t", 0).unwrap().is_none());
        assert!(g.committed("new", "t", 0).unwrap().is_some());
    }

    #[test]
    fn loader_applies_records_in_order() {
        let mut l = Loaded::default();
        let key = records::commit_key("g", "t", 1);
        let v = |o| records::commit_value(&commit(o, 0));
        l.apply(records::decode(&key, Some(&v(5))), 0);
        l.apply(records::decode(&key, Some(&v(9))), 1);
        l.apply(
            records::decode(&records::commit_key("g", "t", 2), Some(&v(3))),
            2,
        );
        l.apply(records::decode(&records::commit_key("g", "t", 2), None), 3);
        l.apply(None, 4);
        let g = Groups::new(GroupsConfig::default(), 1);
        g.install(0, l);
        assert_eq!(g.committed("g", "t", 1).unwrap().unwrap().offset, 9);
        assert!(g.committed("g", "t", 2).unwrap().is_none());
        assert_eq!(g.committed_all("g").unwrap().len(), 1);
    }
}
