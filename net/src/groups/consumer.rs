//! One consumer group of the next-generation protocol (KIP-848, `group.protocol=consumer`):
//! the coordinator assigns, members reconcile one heartbeat at a time.
//!
//! Epochs as in Kafka's `GroupMetadataManager`: the *group epoch* moves whenever the
//! membership or a subscription (or the subscribed topics' metadata) changes; the *target
//! assignment epoch* is the group epoch the target assignment was computed for (at the
//! next heartbeat after a bump); each member's *member epoch* reaches the target epoch
//! once it holds its target partitions. Reconciliation follows Kafka's
//! `CurrentAssignmentBuilder`: a member first gives up the partitions it loses (state
//! `UnrevokedPartitions`, epoch unchanged) and only when its heartbeat no longer lists
//! them does it move on; a partition goes to its new owner only once no other member
//! holds it (`UnreleasedPartitions` until then). `owners` keeps the epoch each owned
//! partition is held at.
//!
//! Leaving: epoch −1 removes the member; −2 (a static member) keeps its place and
//! partitions until its session expires or its instance id rejoins, which takes them back
//! without a new assignment. A member silent for its session timeout is removed; one that
//! has not revoked within its rebalance timeout is fenced (removed).
//!
//! Bounded: members (`members_max`), subscribed topic names per member, regex size and
//! compiled size (`subscription.rs`).
//!
//! Beside it: `consumer/validate.rs` (the request's checks and bounds) and
//! `consumer/durable.rs` (what changed, the records it owes `__consumer_offsets`, and the
//! group restored from them).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use regex::bytes::Regex;
use sluice_control::TopicId;

use super::assignor::{self, Assignment, Subscriber};

use super::subscription::{self, TopicSource};
use crate::kafka::errors::{code, ErrorCode};

/// A member leaves (dynamic members).
pub const LEAVE_EPOCH: i32 = -1;
/// A static member leaves for now, keeping its place until its session expires.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// Coordinator settings this protocol uses.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// group.consumer.session.timeout.ms (or the group's consumer.session.timeout.ms)
    pub session_timeout_ms: i32,
    /// group.consumer.heartbeat.interval.ms
    pub heartbeat_interval_ms: i32,
    /// group.consumer.max.size
    pub members_max: usize,
}

/// Where a member is in reconciling toward its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    /// It must give up partitions first (its epoch waits).
    UnrevokedPartitions,
    /// Some of its target partitions are still held by others.
    UnreleasedPartitions,
}

/// The group states of ConsumerGroupDescribe and ListGroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl ConsumerState {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerState::Empty => "Empty",
            ConsumerState::Assigning => "Assigning",
            ConsumerState::Reconciling => "Reconciling",
            ConsumerState::Stable => "Stable",
        }
    }
}

/// A ConsumerGroupHeartbeat, decoded and bounded.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    pub topic_names: Option<Vec<String>>,
    pub regex: Option<String>,
    /// `regex` compiled (by `subscription::compile`, when the request was validated).
    pub compiled_regex: Option<Regex>,
    pub assignor: Option<String>,
    /// The partitions the member holds; `None` when it did not say.
    pub owned: Option<Vec<(TopicId, Vec<i32>)>>,
    pub client_id: String,
    pub client_host: String,
}

/// A heartbeat's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOk {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's assignment, when it changed or the request was a full one.
    pub assignment: Option<Assignment>,
}

/// A refused request: Kafka's code and a message for the client and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// One member.
#[derive(Debug, Clone)]
pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    pub rebalance_timeout_ms: i32,
    pub topic_names: Vec<String>,
    pub regex: Option<String>,
    compiled_regex: Option<Regex>,
    pub assignor: Option<String>,
    /// Partitions it holds (or is being given).
    pub assigned: Assignment,
    /// Partitions it must give up.
    pub revoking: Assignment,
    pub last_seen: Instant,
    /// When the member is removed unless it gave up its partitions by then (its
    /// rebalance timeout); for a classic member also the join and sync timeouts.
    revoke_deadline: Option<Instant>,
    /// Set for a member speaking the classic protocol (online migration, `classic.rs`).
    pub classic: Option<ClassicMeta>,
}

impl Member {
    fn new(member_id: String, now: Instant) -> Member {
        Member {
            member_id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            epoch: 0,
            previous_epoch: 0,
            state: MemberState::Stable,
            rebalance_timeout_ms: 300_000,
            topic_names: Vec::new(),
            regex: None,
            compiled_regex: None,
            assignor: None,
            assigned: Assignment::new(),
            revoking: Assignment::new(),
            last_seen: now,
            revoke_deadline: None,
            classic: None,
        }
    }

    fn reconciled_to(&self, epoch: i32) -> bool {
        self.state == MemberState::Stable && self.epoch == epoch
    }
}

/// A consumer group. Owned by the coordinator partition its id hashes to.
#[derive(Debug)]
pub struct ConsumerGroup {
    pub epoch: i32,
    pub assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    /// group.instance.id → member id.
    statics: HashMap<String, String>,
    /// Target assignment per member id.
    target: BTreeMap<String, Assignment>,
    /// Owned partitions and the epoch of the member that holds them.
    owners: HashMap<(TopicId, i32), i32>,
    /// The subscribed topics: id → (name, partition count).
    subscribed: BTreeMap<TopicId, (String, i32)>,
    /// The topic-metadata version `subscribed` was computed at.
    metadata_version: Option<u64>,
    /// The session timeout its last heartbeat was given (its GROUP config, or the
    /// broker's default); `None` until the first heartbeat after a load.
    session_timeout_ms: Option<i32>,
    /// Wall-clock ms since which the group is empty (offset expiry), or was created.
    pub state_since_ms: i64,
    /// What changed since the last heartbeat's write (`pending`) and since the last sweep
    /// (`unswept`): the records to write (see `records`).
    pending: Changes,
    unswept: Changes,
}

impl ConsumerGroup {
    pub fn new(now_ms: i64) -> ConsumerGroup {
        ConsumerGroup {
            epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            statics: HashMap::new(),
            target: BTreeMap::new(),
            owners: HashMap::new(),
            subscribed: BTreeMap::new(),
            metadata_version: None,
            session_timeout_ms: None,
            state_since_ms: now_ms,
            pending: Changes::default(),
            unswept: Changes::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    #[cfg(test)]
    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    pub fn target_of(&self, id: &str) -> Option<&Assignment> {
        self.target.get(id)
    }

    /// The subscribed topics by name (OffsetDelete refuses their offsets).
    pub fn subscribed_names(&self) -> Vec<String> {
        self.subscribed.values().map(|(n, _)| n.clone()).collect()
    }

    /// The assignor the members prefer: the most named, `uniform` when none is.
    pub fn assignor(&self) -> &str {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.assignor {
                *votes.entry(a.as_str()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map(|(name, _)| name)
            .unwrap_or(assignor::ASSIGNORS[0])
    }

    pub fn state(&self) -> ConsumerState {
        if self.members.is_empty() {
            ConsumerState::Empty
        } else if self.epoch > self.assignment_epoch {
            ConsumerState::Assigning
        } else if self
            .members
            .values()
            .any(|m| !m.reconciled_to(self.assignment_epoch))
        {
            ConsumerState::Reconciling
        } else {
            ConsumerState::Stable
        }
    }

    /// Handles one heartbeat (the request was validated by `validate`).
    pub fn heartbeat(
        &mut self,
        hb: &Heartbeat,
        topics: &dyn TopicSource,
        config: &ConsumerConfig,
        now: Instant,
        now_ms: i64,
    ) -> Result<HeartbeatOk, Refusal> {
        if hb.member_epoch == LEAVE_EPOCH || hb.member_epoch == STATIC_LEAVE_EPOCH {
            return self.leave(hb, now, now_ms);
        }
        self.session_timeout_ms = Some(config.session_timeout_ms);
        let (mut member, new) = self.member_for(hb, config, now)?;
        let before = member.clone();
        // It speaks the consumer protocol now, whatever it spoke before.
        member.classic = None;
        let bump = new | update_member(&mut member, hb);
        member.last_seen = now;
        let id = self.admit(member, &before, new, bump, topics, hb.owned.as_deref(), now);
        let member = &self.members[&id];
        let full = hb.member_epoch == 0
            || (hb.rebalance_timeout_ms != -1
                && (hb.topic_names.is_some() || hb.regex.is_some())
                && hb.owned.is_some());
        let assignment =
            (full || new || member.assigned != before.assigned).then(|| member.assigned.clone());
        Ok(HeartbeatOk {
            member_id: id,
            member_epoch: member.epoch,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            assignment,
        })
    }

    /// Puts a member changed by a request in place: a new group epoch and target when
    /// the membership or subscriptions changed (`bump`), then its reconciliation toward
    /// its target given what it says it holds (`owned`); its id.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        member: Member,
        before: &Member,
        new: bool,
        mut bump: bool,
        topics: &dyn TopicSource,
        owned: Option<&[(TopicId, Vec<i32>)]>,
        now: Instant,
    ) -> String {
        let id = member.member_id.clone();
        if new || meta_of(&member) != meta_of(before) {
            self.touch(Part::Member(&id));
        }
        if let Some(instance) = &member.instance_id {
            self.statics.insert(instance.clone(), id.clone());
        }
        self.members.insert(id.clone(), member);
        if self.refresh_metadata(topics, bump) {
            self.touch(Part::PartitionMetadata);
            bump = true;
        }
        if bump {
            self.epoch += 1;
            self.touch(Part::Metadata);
        }
        if self.epoch > self.assignment_epoch {
            self.compute_target();
        }
        self.reconcile(&id, owned, now);
        if new || current_of(&self.members[&id]) != current_of(before) {
            self.touch(Part::Current(&id));
        }
        id
    }

    /// The member a heartbeat speaks for, created or replaced as Kafka does; true when new.
    fn member_for(
        &mut self,
        hb: &Heartbeat,
        config: &ConsumerConfig,
        now: Instant,
    ) -> Result<(Member, bool), Refusal> {
        if let Some(instance) = &hb.instance_id {
            let existing = self.statics.get(instance).cloned();
            if hb.member_epoch == 0 {
                match existing.and_then(|id| self.members.get(&id).cloned()) {
                    Some(old) if old.member_id == hb.member_id => return Ok((old, false)),
                    // Kafka: a classic incarnation is replaced at once (a rolling upgrade).
                    Some(old) if old.epoch != STATIC_LEAVE_EPOCH && old.classic.is_none() => {
                        return Err(Refusal::new(
                            code::UNRELEASED_INSTANCE_ID,
                            format!(
                                "static member {} with instance id {instance} cannot be replaced because it is still in use",
                                old.member_id
                            ),
                        ));
                    }
                    Some(old) => return Ok((self.replace_static(old, &hb.member_id), false)),
                    None => {}
                }
            } else {
                let Some(old) = existing.and_then(|id| self.members.get(&id)) else {
                    return Err(Refusal::new(
                        code::UNKNOWN_MEMBER_ID,
                        format!("instance id {instance} is unknown"),
                    ));
                };
                if old.member_id != hb.member_id {
                    return Err(Refusal::new(
                        code::FENCED_INSTANCE_ID,
                        format!("instance id {instance} belongs to member {}", old.member_id),
                    ));
                }
            }
        }
        match self.members.get(&hb.member_id) {
            Some(m) if hb.member_epoch == 0 => Ok((m.clone(), false)),
            Some(m) => {
                check_epoch(m, hb.member_epoch, hb.owned.as_deref())?;
                Ok((m.clone(), false))
            }
            None if hb.member_epoch == 0 => {
                if self.members.len() >= config.members_max {
                    return Err(Refusal::new(
                        code::GROUP_MAX_SIZE_REACHED,
                        format!(
                            "the group has reached its maximum size of {}",
                            config.members_max
                        ),
                    ));
                }
                Ok((Member::new(hb.member_id.clone(), now), true))
            }
            None => Err(Refusal::new(
                code::UNKNOWN_MEMBER_ID,
                format!("member {} is not in the group", hb.member_id),
            )),
        }
    }

    /// A static member's new incarnation takes the old one's place, partitions and target.
    fn replace_static(&mut self, old: Member, new_id: &str) -> Member {
        self.members.remove(&old.member_id);
        if let Some(t) = self.target.remove(&old.member_id) {
            self.target.insert(new_id.to_string(), t);
        }
        self.touch(Part::Removed(&old.member_id));
        for part in [
            Part::Member(new_id),
            Part::Target(new_id),
            Part::Current(new_id),
        ] {
            self.touch(part);
        }
        Member {
            member_id: new_id.to_string(),
            epoch: 0,
            previous_epoch: 0,
            ..old
        }
    }

    fn leave(&mut self, hb: &Heartbeat, now: Instant, now_ms: i64) -> Result<HeartbeatOk, Refusal> {
        let id = match (&hb.instance_id, hb.member_epoch) {
            (Some(instance), STATIC_LEAVE_EPOCH) => match self.statics.get(instance) {
                Some(id) if *id != hb.member_id => {
                    return Err(Refusal::new(
                        code::FENCED_INSTANCE_ID,
                        format!("instance id {instance} belongs to member {id}"),
                    ))
                }
                Some(id) => id.clone(),
                None => String::new(),
            },
            _ => hb.member_id.clone(),
        };
        let Some(member) = self.members.get_mut(&id) else {
            return Err(Refusal::new(
                code::UNKNOWN_MEMBER_ID,
                format!("member {} is not in the group", hb.member_id),
            ));
        };
        if hb.member_epoch == STATIC_LEAVE_EPOCH {
            // Kept, partitions and all, until its session expires or it comes back.
            member.epoch = STATIC_LEAVE_EPOCH;
            member.last_seen = now;
            self.touch(Part::Current(&id));
        } else {
            self.remove(&id, now_ms);
        }
        Ok(HeartbeatOk {
            member_id: hb.member_id.clone(),
            member_epoch: hb.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    /// Removes a member, frees its partitions and bumps the group epoch.
    pub fn remove(&mut self, id: &str, now_ms: i64) {
        let Some(m) = self.members.remove(id) else {
            return;
        };
        self.drop_owners(&m);
        self.target.remove(id);
        if let Some(instance) = &m.instance_id {
            if self.statics.get(instance).is_some_and(|s| s == id) {
                self.statics.remove(instance);
            }
        }
        self.epoch += 1;
        self.touch(Part::Removed(id));
        self.touch(Part::Metadata);
        if self.members.is_empty() {
            self.state_since_ms = now_ms;
        }
    }

    fn drop_owners(&mut self, m: &Member) {
        for (t, ps) in m.assigned.iter().chain(m.revoking.iter()) {
            for p in ps {
                self.owners.remove(&(*t, *p));
            }
        }
    }

    fn add_owners(&mut self, id: &str) {
        let m = &self.members[id];
        let epoch = m.epoch;
        let held: Vec<(TopicId, i32)> = m
            .assigned
            .iter()
            .chain(m.revoking.iter())
            .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
            .collect();
        for tp in held {
            self.owners.insert(tp, epoch);
        }
    }

    /// Recomputes the subscribed topics when the metadata or a subscription changed;
    /// true when they differ from before (the group epoch moves).
    fn refresh_metadata(&mut self, topics: &dyn TopicSource, subscriptions_changed: bool) -> bool {
        let version = topics.version();
        if !subscriptions_changed && self.metadata_version == Some(version) {
            return false;
        }
        self.metadata_version = Some(version);
        let fresh = subscription::resolve(
            self.members
                .values()
                .map(|m| (m.topic_names.as_slice(), m.compiled_regex.as_ref())),
            topics,
        );
        if fresh == self.subscribed {
            return false;
        }
        self.subscribed = fresh;
        true
    }

    /// A new target assignment for the current group epoch.
    fn compute_target(&mut self) {
        let partitions: BTreeMap<TopicId, i32> =
            self.subscribed.iter().map(|(t, (_, n))| (*t, *n)).collect();
        let subscribers: Vec<Subscriber<'_>> = self
            .members
            .values()
            .map(|m| Subscriber {
                member_id: &m.member_id,
                topics: self
                    .subscribed
                    .iter()
                    .filter(|(_, (name, _))| {
                        subscription::matches(&m.topic_names, m.compiled_regex.as_ref(), name)
                    })
                    .map(|(t, _)| *t)
                    .collect(),
                previous: self.target.get(&m.member_id),
            })
            .collect();
        let target = assignor::assign(self.assignor(), &subscribers, &partitions);
        let changed: Vec<String> = target
            .iter()
            .filter(|(id, t)| self.target.get(*id) != Some(*t))
            .map(|(id, _)| id.clone())
            .collect();
        self.target = target;
        self.assignment_epoch = self.epoch;
        for id in &changed {
            self.touch(Part::Target(id));
        }
        self.touch(Part::TargetMetadata);
    }

    /// Moves a member toward its target (Kafka's `CurrentAssignmentBuilder`).
    fn reconcile(&mut self, id: &str, owned: Option<&[(TopicId, Vec<i32>)]>, now: Instant) {
        let Some(m) = self.members.get(id) else {
            return;
        };
        let target_epoch = self.assignment_epoch;
        let next = match m.state {
            MemberState::Stable if m.epoch == target_epoch => return,
            MemberState::Stable | MemberState::UnreleasedPartitions => {
                self.next_assignment(m, m.epoch, owned)
            }
            MemberState::UnrevokedPartitions => {
                if owns_any(owned, &m.revoking) {
                    return;
                }
                let mut m = m.clone();
                m.revoking.clear();
                self.next_assignment(&m, m.epoch + 1, owned)
            }
        };
        let old = self.members[id].clone();
        self.drop_owners(&old);
        let mut next = next;
        next.revoke_deadline = match (next.state, old.state) {
            (MemberState::UnrevokedPartitions, MemberState::UnrevokedPartitions) => {
                old.revoke_deadline
            }
            (MemberState::UnrevokedPartitions, _) => {
                Some(now + Duration::from_millis(next.rebalance_timeout_ms.max(0) as u64))
            }
            _ => None,
        };
        self.members.insert(id.to_string(), next);
        self.add_owners(id);
    }

    /// Kafka's `computeNextAssignment`: what the member keeps, gives up and gains.
    fn next_assignment(
        &self,
        m: &Member,
        epoch: i32,
        owned: Option<&[(TopicId, Vec<i32>)]>,
    ) -> Member {
        let empty = Assignment::new();
        let target = self.target.get(&m.member_id).unwrap_or(&empty);
        let topics: BTreeSet<TopicId> = target.keys().chain(m.assigned.keys()).copied().collect();
        let (mut assigned, mut revoking) = (Assignment::new(), Assignment::new());
        let mut unreleased = false;
        let none = BTreeSet::new();
        for t in topics {
            let want = target.get(&t).unwrap_or(&none);
            let have = m.assigned.get(&t).unwrap_or(&none);
            let mut keep: BTreeSet<i32> = have.intersection(want).copied().collect();
            let lose: BTreeSet<i32> = have.difference(want).copied().collect();
            for p in want.difference(have) {
                if self.owners.contains_key(&(t, *p)) {
                    unreleased = true;
                } else {
                    keep.insert(*p);
                }
            }
            if !keep.is_empty() {
                assigned.insert(t, keep);
            }
            if !lose.is_empty() {
                revoking.insert(t, lose);
            }
        }
        let mut next = m.clone();
        next.previous_epoch = m.epoch;
        if !revoking.is_empty() && owns_any(owned, &revoking) {
            next.state = MemberState::UnrevokedPartitions;
            next.epoch = epoch;
            next.assigned = assigned;
            next.revoking = revoking;
        } else {
            next.state = if unreleased {
                MemberState::UnreleasedPartitions
            } else {
                MemberState::Stable
            };
            next.epoch = self.assignment_epoch;
            next.assigned = assigned;
            next.revoking = Assignment::new();
        }
        if next.epoch == m.epoch {
            next.previous_epoch = m.previous_epoch;
        }
        next
    }

    /// Removes members whose session expired (the group's own session timeout, else
    /// `session_timeout`) and fences those that did not revoke within their rebalance
    /// timeout; their ids, for the log.
    pub fn expire(&mut self, session_timeout: Duration, now: Instant, now_ms: i64) -> Vec<String> {
        let session_timeout = self.session_timeout_ms.map_or(session_timeout, |ms| {
            Duration::from_millis(ms.max(0) as u64)
        });
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                // A classic member keeps the session timeout it joined with.
                let session_timeout = m.classic.as_ref().map_or(session_timeout, |c| {
                    Duration::from_millis(c.session_timeout_ms.max(0) as u64)
                });
                now.saturating_duration_since(m.last_seen) > session_timeout
                    || m.revoke_deadline.is_some_and(|d| now > d)
            })
            .map(|m| m.member_id.clone())
            .collect();
        for id in &gone {
            self.remove(id, now_ms);
        }
        gone
    }

    /// Whether a commit (OffsetCommit) from this member at this epoch is accepted
    /// (Kafka's `ConsumerGroup.validateOffsetCommit`).
    pub fn check_commit(&self, member_id: &str, member_epoch: i32, version: i16) -> ErrorCode {
        if member_epoch < 0 && self.members.is_empty() {
            return code::NONE;
        }
        let Some(m) = self.members.get(member_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        if m.classic.is_some() {
            // A classic member commits with its generation, in any version.
            return if m.epoch == member_epoch {
                code::NONE
            } else {
                code::ILLEGAL_GENERATION
            };
        }
        if version < 9 {
            return code::UNSUPPORTED_VERSION;
        }
        if m.epoch != member_epoch {
            return code::STALE_MEMBER_EPOCH;
        }
        code::NONE
    }

    /// Whether this member may read the group's offsets (`validateOffsetFetch`): anyone
    /// without a member id, else a member at its current epoch.
    pub fn check_fetch(&self, member_id: Option<&str>, member_epoch: i32) -> ErrorCode {
        let Some(id) = member_id else {
            return code::NONE;
        };
        if member_epoch < 0 && id.is_empty() {
            return code::NONE;
        }
        match self.members.get(id) {
            None => code::UNKNOWN_MEMBER_ID,
            Some(m) if m.epoch != member_epoch => code::STALE_MEMBER_EPOCH,
            Some(_) => code::NONE,
        }
    }
}

/// Kafka's `throwIfMemberEpochIsInvalid`: a later epoch than ours, or an earlier one that
/// is not the previous epoch with a subset of the assignment (a lost answer), is fenced.
fn check_epoch(
    m: &Member,
    received: i32,
    owned: Option<&[(TopicId, Vec<i32>)]>,
) -> Result<(), Refusal> {
    let fenced = || {
        Refusal::new(
            code::FENCED_MEMBER_EPOCH,
            format!(
                "member {} sent epoch {received}, the coordinator knows {}",
                m.member_id, m.epoch
            ),
        )
    };
    if received > m.epoch {
        return Err(fenced());
    }
    if received < m.epoch {
        let subset = owned.is_some_and(|o| {
            o.iter().all(|(t, ps)| {
                ps.iter()
                    .all(|p| m.assigned.get(t).is_some_and(|a| a.contains(p)))
            })
        });
        if received != m.previous_epoch || !subset {
            return Err(fenced());
        }
    }
    Ok(())
}

/// Applies a heartbeat's fields to the member; true when its subscription changed.
fn update_member(m: &mut Member, hb: &Heartbeat) -> bool {
    let mut changed = false;
    if hb.rebalance_timeout_ms != -1 {
        m.rebalance_timeout_ms = hb.rebalance_timeout_ms;
    }
    if let Some(names) = &hb.topic_names {
        let mut names = names.clone();
        names.sort();
        names.dedup();
        changed |= names != m.topic_names;
        m.topic_names = names;
    }
    if let Some(regex) = &hb.regex {
        let regex = (!regex.is_empty()).then(|| regex.clone());
        changed |= regex != m.regex;
        m.regex = regex;
        m.compiled_regex = hb.compiled_regex.clone().filter(|_| m.regex.is_some());
    }
    if let Some(a) = &hb.assignor {
        changed |= m.assignor.as_deref() != Some(a.as_str());
        m.assignor = Some(a.clone());
    }
    if hb.rack_id.is_some() {
        m.rack_id = hb.rack_id.clone();
    }
    if hb.instance_id.is_some() {
        m.instance_id = hb.instance_id.clone();
    }
    m.client_id = hb.client_id.clone();
    m.client_host = hb.client_host.clone();
    changed
}

/// Whether the member says it still holds any of `partitions` (it did not say: assume so).
fn owns_any(owned: Option<&[(TopicId, Vec<i32>)]>, partitions: &Assignment) -> bool {
    let Some(owned) = owned else {
        return true;
    };
    owned.iter().any(|(t, ps)| {
        partitions
            .get(t)
            .is_some_and(|r| ps.iter().any(|p| r.contains(p)))
    })
}

mod classic;
mod durable;
mod validate;

pub use classic::{ClassicMeta, PROTOCOL_TYPE};

pub use durable::StoredGroup;
use durable::{current_of, meta_of, Changes, Part};
pub use validate::validate;
#[cfg(test)]
use validate::ID_BYTES_MAX;

#[cfg(test)]
mod tests;
