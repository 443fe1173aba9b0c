//! The classic consumer group coordinator for a single node, in memory, shared by all
//! shards (control plane, one mutex, never held across an `.await`).
//!
//! States as in Kafka: Empty → PreparingRebalance (collecting JoinGroups) →
//! CompletingRebalance (waiting for the leader's SyncGroup) → Stable. A rebalance
//! completes when every known member has rejoined, or at the rebalance deadline without
//! the ones that did not; members silent for their session timeout are removed. Waiting
//! JoinGroup / SyncGroup requests hold a one-shot channel that the completing call (or
//! the sweeper, [`Groups::expire`]) answers.
//!
//! Committed offsets live in memory only: they do not survive a restart yet (the internal
//! offsets topic comes with the control plane).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use crate::errors::code;

/// Groups kept at once; joining a new group past this is refused.
pub const GROUPS_MAX: usize = 10_000;
/// Members per group.
pub const MEMBERS_PER_GROUP_MAX: usize = 1_000;
/// Committed offsets kept at once (all groups).
pub const OFFSETS_MAX: usize = 1_000_000;
const SESSION_TIMEOUT_MS_MIN: i32 = 1_000;
const SESSION_TIMEOUT_MS_MAX: i32 = 1_800_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, Default)]
pub struct JoinOutcome {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member and its metadata for the chosen protocol; only for the leader.
    pub members: Vec<(String, Bytes)>,
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups and ListGroups show it.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberView>,
}

#[derive(Debug)]
struct Member {
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    rebalance_deadline: Option<Instant>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            rebalance_deadline: None,
        }
    }

    fn start_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        self.state = GroupState::PreparingRebalance;
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.rebalance_deadline = Some(now + timeout);
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncOutcome {
                    error: code::REBALANCE_IN_PROGRESS,
                    ..SyncOutcome::default()
                });
            }
        }
    }

    fn try_complete(&mut self, now: Instant, force: bool) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        if !all_joined && !force {
            return;
        }
        self.members.retain(|_, m| m.join_waiter.is_some());
        self.rebalance_deadline = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            self.generation += 1;
            return;
        }
        self.generation += 1;
        self.protocol = self.choose_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let protocol = self.protocol.clone().unwrap_or_default();
        let all: Vec<(String, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let meta = m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                (id.clone(), meta)
            })
            .collect();
        let leader = self.leader.clone().unwrap_or_default();
        for (id, m) in self.members.iter_mut() {
            m.last_seen = now;
            m.assignment = Bytes::new();
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinOutcome {
                    error: code::NONE,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        all.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }

    /// The first protocol of the leader-to-be that every member supports.
    fn choose_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .find(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .cloned()
    }

    fn remove_member(&mut self, id: &str, now: Instant) {
        if let Some(mut m) = self.members.remove(id) {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinOutcome {
                    error: code::UNKNOWN_MEMBER_ID,
                    ..JoinOutcome::default()
                });
            }
        }
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.rebalance_deadline = None;
            self.leader = None;
            self.protocol = None;
        } else {
            self.start_rebalance(now);
            self.try_complete(now, false);
        }
    }
}

/// Parameters of a JoinGroup.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
}

/// (group, topic, partition).
type OffsetKey = (String, String, i32);
/// (offset, metadata).
type Committed = (i64, Option<String>);

/// All groups and committed offsets of this broker.
#[derive(Debug, Default)]
pub struct Groups {
    groups: Mutex<HashMap<String, Group>>,
    offsets: Mutex<HashMap<OffsetKey, Committed>>,
    member_seq: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is completed before the lock is released, so a
    // poisoned lock still holds consistent state.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Groups {
    pub fn new() -> Groups {
        Groups::default()
    }

    /// Registers a JoinGroup; the receiver yields its answer when the rebalance completes.
    pub fn join(&self, req: JoinRequest) -> Result<oneshot::Receiver<JoinOutcome>, i16> {
        if req.group_id.is_empty() {
            return Err(code::INVALID_GROUP_ID);
        }
        if !(SESSION_TIMEOUT_MS_MIN..=SESSION_TIMEOUT_MS_MAX).contains(&req.session_timeout_ms) {
            return Err(code::INVALID_SESSION_TIMEOUT);
        }
        if req.protocols.is_empty() || req.protocol_type.is_empty() {
            return Err(code::INCONSISTENT_GROUP_PROTOCOL);
        }
        let now = Instant::now();
        let mut groups = lock(&self.groups);
        if !groups.contains_key(&req.group_id) && groups.len() >= GROUPS_MAX {
            return Err(code::COORDINATOR_NOT_AVAILABLE);
        }
        let group = groups
            .entry(req.group_id.clone())
            .or_insert_with(Group::new);
        if group.state != GroupState::Empty
            && group.protocol_type.as_deref() != Some(req.protocol_type.as_str())
        {
            return Err(code::INCONSISTENT_GROUP_PROTOCOL);
        }
        if !group.members.is_empty()
            && !group.members.values().any(|m| {
                m.protocols
                    .iter()
                    .any(|(p, _)| req.protocols.iter().any(|(q, _)| p == q))
            })
        {
            return Err(code::INCONSISTENT_GROUP_PROTOCOL);
        }
        let member_id = if req.member_id.is_empty() {
            if group.members.len() >= MEMBERS_PER_GROUP_MAX {
                return Err(code::COORDINATOR_NOT_AVAILABLE);
            }
            let n = self.member_seq.fetch_add(1, Ordering::Relaxed);
            format!(
                "{}-{n}",
                if req.client_id.is_empty() {
                    "member"
                } else {
                    &req.client_id
                }
            )
        } else if group.members.contains_key(&req.member_id) {
            req.member_id.clone()
        } else {
            return Err(code::UNKNOWN_MEMBER_ID);
        };
        group.protocol_type = Some(req.protocol_type.clone());
        let (tx, rx) = oneshot::channel();
        let member = group
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout: Duration::ZERO,
                rebalance_timeout: Duration::ZERO,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_seen: now,
                join_waiter: None,
                sync_waiter: None,
            });
        member.session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
        member.rebalance_timeout =
            Duration::from_millis(req.rebalance_timeout_ms.max(req.session_timeout_ms) as u64);
        member.protocols = req.protocols;
        member.last_seen = now;
        if let Some(old) = member.join_waiter.replace(tx) {
            let _ = old.send(JoinOutcome {
                error: code::UNKNOWN_MEMBER_ID,
                ..JoinOutcome::default()
            });
        }
        group.start_rebalance(now);
        group.try_complete(now, false);
        Ok(rx)
    }

    /// A SyncGroup: the leader's carries the assignments. Answers at once, or later
    /// through the receiver (a follower before the leader has synced).
    pub fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Result<SyncOutcome, oneshot::Receiver<SyncOutcome>>, i16> {
        let now = Instant::now();
        let mut groups = lock(&self.groups);
        let group = groups.get_mut(group_id).ok_or(code::UNKNOWN_MEMBER_ID)?;
        if !group.members.contains_key(member_id) {
            return Err(code::UNKNOWN_MEMBER_ID);
        }
        if generation != group.generation {
            return Err(code::ILLEGAL_GENERATION);
        }
        let outcome = |g: &Group, a: Bytes| SyncOutcome {
            error: code::NONE,
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol.clone(),
            assignment: a,
        };
        match group.state {
            GroupState::Empty | GroupState::PreparingRebalance => Err(code::REBALANCE_IN_PROGRESS),
            GroupState::Stable => {
                let m = group
                    .members
                    .get_mut(member_id)
                    .ok_or(code::UNKNOWN_MEMBER_ID)?;
                m.last_seen = now;
                let a = m.assignment.clone();
                Ok(Ok(outcome(group, a)))
            }
            GroupState::CompletingRebalance => {
                if group.leader.as_deref() == Some(member_id) {
                    for (id, a) in assignments {
                        if let Some(m) = group.members.get_mut(&id) {
                            m.assignment = a;
                        }
                    }
                    group.state = GroupState::Stable;
                    let ready: Vec<(oneshot::Sender<SyncOutcome>, Bytes)> = group
                        .members
                        .values_mut()
                        .filter_map(|m| m.sync_waiter.take().map(|w| (w, m.assignment.clone())))
                        .collect();
                    for (w, a) in ready {
                        let _ = w.send(outcome(group, a));
                    }
                    let m = group
                        .members
                        .get_mut(member_id)
                        .ok_or(code::UNKNOWN_MEMBER_ID)?;
                    m.last_seen = now;
                    let a = m.assignment.clone();
                    Ok(Ok(outcome(group, a)))
                } else {
                    let (tx, rx) = oneshot::channel();
                    let m = group
                        .members
                        .get_mut(member_id)
                        .ok_or(code::UNKNOWN_MEMBER_ID)?;
                    m.last_seen = now;
                    m.sync_waiter = Some(tx);
                    Ok(Err(rx))
                }
            }
        }
    }

    pub fn heartbeat(&self, group_id: &str, generation: i32, member_id: &str) -> i16 {
        let mut groups = lock(&self.groups);
        let Some(group) = groups.get_mut(group_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        let state = group.state;
        let current = group.generation;
        let Some(m) = group.members.get_mut(member_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        m.last_seen = Instant::now();
        if state == GroupState::PreparingRebalance {
            code::REBALANCE_IN_PROGRESS
        } else if generation != current {
            code::ILLEGAL_GENERATION
        } else {
            code::NONE
        }
    }

    /// Removes members; returns an error code per member.
    pub fn leave(&self, group_id: &str, member_ids: &[String]) -> Vec<i16> {
        let now = Instant::now();
        let mut groups = lock(&self.groups);
        let Some(group) = groups.get_mut(group_id) else {
            return member_ids.iter().map(|_| code::UNKNOWN_MEMBER_ID).collect();
        };
        member_ids
            .iter()
            .map(|id| {
                if group.members.contains_key(id) {
                    group.remove_member(id, now);
                    code::NONE
                } else {
                    code::UNKNOWN_MEMBER_ID
                }
            })
            .collect()
    }

    /// Removes members past their session timeout and completes overdue rebalances.
    pub fn expire(&self, now: Instant) {
        let mut groups = lock(&self.groups);
        for (id, group) in groups.iter_mut() {
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| {
                    m.join_waiter.is_none() && now.duration_since(m.last_seen) > m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            for m in expired {
                tracing::info!(group = %id, member = %m, "member session expired");
                group.remove_member(&m, now);
            }
            if group.rebalance_deadline.is_some_and(|d| now >= d) {
                group.try_complete(now, true);
            }
        }
    }

    /// Checks that a commit comes from a current member (generation -1: a commit from
    /// outside any group, allowed when the group has no members).
    pub fn check_commit(&self, group_id: &str, generation: i32, member_id: &str) -> i16 {
        let groups = lock(&self.groups);
        match groups.get(group_id) {
            None
            | Some(Group {
                state: GroupState::Empty,
                ..
            }) if generation < 0 => code::NONE,
            None => code::ILLEGAL_GENERATION,
            Some(g) => {
                if generation < 0 {
                    return code::REBALANCE_IN_PROGRESS;
                }
                if !g.members.contains_key(member_id) {
                    code::UNKNOWN_MEMBER_ID
                } else if g.generation != generation {
                    code::ILLEGAL_GENERATION
                } else if g.state == GroupState::PreparingRebalance {
                    code::REBALANCE_IN_PROGRESS
                } else {
                    code::NONE
                }
            }
        }
    }

    pub fn commit(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
        offset: i64,
        metadata: Option<String>,
    ) -> i16 {
        let mut offsets = lock(&self.offsets);
        let key = (group_id.to_string(), topic.to_string(), partition);
        if !offsets.contains_key(&key) && offsets.len() >= OFFSETS_MAX {
            return code::COORDINATOR_NOT_AVAILABLE;
        }
        offsets.insert(key, (offset, metadata));
        code::NONE
    }

    pub fn committed(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Option<(i64, Option<String>)> {
        lock(&self.offsets)
            .get(&(group_id.to_string(), topic.to_string(), partition))
            .cloned()
    }

    /// Every (topic, partition) the group has offsets for.
    pub fn committed_partitions(&self, group_id: &str) -> Vec<(String, i32)> {
        let mut v: Vec<(String, i32)> = lock(&self.offsets)
            .keys()
            .filter(|(g, _, _)| g == group_id)
            .map(|(_, t, p)| (t.clone(), *p))
            .collect();
        v.sort();
        v
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupView> {
        let groups = lock(&self.groups);
        let g = groups.get(group_id)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupView {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol.clone(),
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberView {
                    member_id: id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    pub fn list(&self) -> Vec<(String, GroupState, String)> {
        let groups = lock(&self.groups);
        let mut names: Vec<(String, GroupState, String)> = groups
            .iter()
            .map(|(n, g)| {
                (
                    n.clone(),
                    g.state,
                    g.protocol_type.clone().unwrap_or_default(),
                )
            })
            .collect();
        for (g, _, _) in lock(&self.offsets).keys() {
            if !groups.contains_key(g) && !names.iter().any(|(n, _, _)| n == g) {
                names.push((g.clone(), GroupState::Empty, String::new()));
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(groups: &Groups, member: &str) -> oneshot::Receiver<JoinOutcome> {
        groups
            .join(JoinRequest {
                group_id: "g".into(),
                member_id: member.into(),
                client_id: "c".into(),
                client_host: "h".into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 10_000,
                protocol_type: "consumer".into(),
                protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            })
            .unwrap()
    }

    #[test]
    fn one_member_joins_syncs_and_leaves() {
        let g = Groups::new();
        let mut rx = join(&g, "");
        let out = rx.try_recv().unwrap().unwrap();
        assert_eq!(out.error, 0);
        assert_eq!(out.leader, out.member_id);
        assert_eq!(out.members.len(), 1);
        let a = Bytes::from_static(b"assignment");
        let s = g
            .sync(
                "g",
                out.generation,
                &out.member_id,
                vec![(out.member_id.clone(), a.clone())],
            )
            .unwrap();
        assert_eq!(s.ok().unwrap().assignment, a);
        assert_eq!(g.heartbeat("g", out.generation, &out.member_id), 0);
        assert_eq!(g.check_commit("g", out.generation, &out.member_id), 0);
        assert_eq!(g.leave("g", std::slice::from_ref(&out.member_id)), vec![0]);
        assert_eq!(g.describe("g").unwrap().state, GroupState::Empty);
    }

    #[test]
    fn second_member_triggers_rebalance() {
        let g = Groups::new();
        let a = join(&g, "").try_recv().unwrap().unwrap();
        let _ = g.sync("g", a.generation, &a.member_id, vec![]).unwrap();
        let mut b_rx = join(&g, "");
        assert!(
            b_rx.try_recv().unwrap().is_none(),
            "waits for the first member to rejoin"
        );
        assert_eq!(
            g.heartbeat("g", a.generation, &a.member_id),
            code::REBALANCE_IN_PROGRESS
        );
        let a2 = join(&g, &a.member_id).try_recv().unwrap().unwrap();
        let b = b_rx.try_recv().unwrap().unwrap();
        assert_eq!(a2.generation, b.generation);
        assert_eq!(a2.generation, a.generation + 1);
        let follower = if a2.leader == a2.member_id { &b } else { &a2 };
        let leader = if a2.leader == a2.member_id { &a2 } else { &b };
        assert_eq!(leader.members.len(), 2);
        let pending = g
            .sync("g", follower.generation, &follower.member_id, vec![])
            .unwrap();
        let mut rx = pending.err().unwrap();
        let assign = vec![(follower.member_id.clone(), Bytes::from_static(b"f"))];
        g.sync("g", leader.generation, &leader.member_id, assign)
            .unwrap()
            .ok()
            .unwrap();
        assert_eq!(
            rx.try_recv().unwrap().unwrap().assignment,
            Bytes::from_static(b"f")
        );
    }
}
