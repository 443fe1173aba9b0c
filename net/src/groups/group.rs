//! One consumer group's membership: the classic protocol's state machine.
//!
//! States as in Kafka: Empty → PreparingRebalance (collecting JoinGroups) →
//! CompletingRebalance (waiting for the leader's SyncGroup) → Stable. A rebalance
//! completes when every known member has rejoined, or at the rebalance deadline without
//! the ones that did not; members silent for their session timeout are removed. Waiting
//! JoinGroup / SyncGroup requests hold a one-shot channel that the completing call (or
//! the sweeper) answers.
//!
//! Static members (`group.instance.id`, KIP-345) keep their place across restarts: a
//! rejoin with the same instance id takes over the old member id's slot (the old id is
//! fenced with FENCED_INSTANCE_ID) and, when nothing else changed, gets the current
//! generation back without a rebalance. New dynamic members on JoinGroup v4+ first get
//! MEMBER_ID_REQUIRED with their id (KIP-394), so a client that dies between the two
//! calls leaves no member behind.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use super::records::{GroupValue, MemberValue};
use crate::kafka::errors::{code, ErrorCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// Position in `metrics::GROUP_STATES`.
    pub fn index(self) -> usize {
        self as usize
    }

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
    pub error: ErrorCode,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member (id, instance id, metadata for the chosen protocol); only for the
    /// leader.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// A JoinGroup answered now, or later through the receiver.
#[derive(Debug)]
pub enum JoinReply {
    Now(JoinOutcome),
    Later(oneshot::Receiver<JoinOutcome>),
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// Parameters of a JoinGroup.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub member_id: String,
    pub group_instance_id: Option<String>,
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
    instance_id: Option<String>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
}

/// A JoinGroup's (session, rebalance) timeouts; the rebalance timeout is at least the
/// session timeout (JoinGroup v0 has none of its own).
fn timeouts(req: &JoinRequest) -> (Duration, Duration) {
    let session_ms = req.session_timeout_ms.max(0) as u64;
    let rebalance_ms = req.rebalance_timeout_ms.max(req.session_timeout_ms).max(0) as u64;
    (
        Duration::from_millis(session_ms),
        Duration::from_millis(rebalance_ms),
    )
}

impl Member {
    fn new(req: &JoinRequest, now: Instant) -> Member {
        let (session_timeout, rebalance_timeout) = timeouts(req);
        Member {
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            instance_id: req.group_instance_id.clone(),
            session_timeout,
            rebalance_timeout,
            protocols: req.protocols.clone(),
            assignment: Bytes::new(),
            last_seen: now,
            join_waiter: None,
            sync_waiter: None,
        }
    }

    /// Answers whatever this member is waiting for with `error` (it is gone or fenced).
    fn fail_waiters(&mut self, error: ErrorCode) {
        if let Some(w) = self.join_waiter.take() {
            let _ = w.send(JoinOutcome {
                error,
                generation: -1,
                ..JoinOutcome::default()
            });
        }
        if let Some(w) = self.sync_waiter.take() {
            let _ = w.send(SyncOutcome {
                error,
                ..SyncOutcome::default()
            });
        }
    }

    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    }
}

/// One group. Owned by the coordinator partition its id hashes to.
#[derive(Debug)]
pub struct Group {
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id → the member id that holds it now.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until their deadline.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    /// Wall-clock ms of the last state change (offsets of an empty group expire from it).
    pub state_since_ms: i64,
    /// The membership changed in a way the offsets topic must record.
    pub dirty: bool,
}

impl Group {
    pub fn new(now_ms: i64) -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            state_since_ms: now_ms,
            dirty: false,
        }
    }

    /// Members that joined (not counting ids handed out with MEMBER_ID_REQUIRED).
    pub fn live_members(&self) -> usize {
        self.members.len()
    }

    pub fn member_count(&self) -> usize {
        self.members.len() + self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn set_state(&mut self, state: GroupState, now_ms: i64) {
        if self.state != state {
            self.state = state;
            self.state_since_ms = now_ms;
        }
    }

    /// This broker stops coordinating the group: whoever waits is told NOT_COORDINATOR.
    pub fn abandon(&mut self) {
        self.fail_all_waiters(code::NOT_COORDINATOR);
    }

    /// Whoever waits in a JoinGroup or SyncGroup is answered with `error`.
    pub fn fail_all_waiters(&mut self, error: ErrorCode) {
        for m in self.members.values_mut() {
            m.fail_waiters(error);
        }
    }

    /// A rebalance starts (a consumer group came back to classic): the members rejoin.
    pub fn prepare_rebalance(&mut self, now: Instant, now_ms: i64) {
        self.dirty = true;
        self.start_rebalance(now, now_ms);
    }

    /// Handles a JoinGroup (limits and protocol checks are the caller's).
    pub fn join(
        &mut self,
        req: &JoinRequest,
        fresh_id: String,
        members_max: usize,
        now: Instant,
        now_ms: i64,
    ) -> Result<JoinReply, ErrorCode> {
        if self.state != GroupState::Empty
            && self.protocol_type.as_deref() != Some(req.protocol_type.as_str())
        {
            return Err(code::INCONSISTENT_GROUP_PROTOCOL);
        }
        if !self.members.is_empty()
            && !self.members.values().any(|m| {
                m.protocols
                    .iter()
                    .any(|(p, _)| req.protocols.iter().any(|(q, _)| p == q))
            })
        {
            return Err(code::INCONSISTENT_GROUP_PROTOCOL);
        }
        if req.member_id.is_empty() {
            if let Some(instance) = &req.group_instance_id {
                if let Some(old) = self.static_members.get(instance).cloned() {
                    return Ok(self.replace_static_member(req, &old, fresh_id, now, now_ms));
                }
            } else if req.require_known_member_id {
                if self.member_count() >= members_max {
                    return Err(code::GROUP_MAX_SIZE_REACHED);
                }
                let deadline = now + Duration::from_millis(req.session_timeout_ms.max(0) as u64);
                self.pending.insert(fresh_id.clone(), deadline);
                return Ok(JoinReply::Now(JoinOutcome {
                    error: code::MEMBER_ID_REQUIRED,
                    generation: -1,
                    member_id: fresh_id,
                    ..JoinOutcome::default()
                }));
            }
            if self.member_count() >= members_max {
                return Err(code::GROUP_MAX_SIZE_REACHED);
            }
            return Ok(self.add_member(req, fresh_id, now, now_ms));
        }
        if let Some(instance) = &req.group_instance_id {
            match self.static_members.get(instance) {
                Some(id) if *id != req.member_id => return Err(code::FENCED_INSTANCE_ID),
                None if !self.pending.contains_key(&req.member_id) => {
                    return Err(code::UNKNOWN_MEMBER_ID)
                }
                _ => {}
            }
        }
        if self.pending.remove(&req.member_id).is_some() {
            return Ok(self.add_member(req, req.member_id.clone(), now, now_ms));
        }
        if !self.members.contains_key(&req.member_id) {
            return Err(code::UNKNOWN_MEMBER_ID);
        }
        Ok(self.rejoin(req, now, now_ms))
    }

    fn add_member(
        &mut self,
        req: &JoinRequest,
        id: String,
        now: Instant,
        now_ms: i64,
    ) -> JoinReply {
        let mut member = Member::new(req, now);
        let (tx, rx) = oneshot::channel();
        member.join_waiter = Some(tx);
        if let Some(instance) = &req.group_instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        self.members.insert(id, member);
        self.protocol_type = Some(req.protocol_type.clone());
        self.start_rebalance(now, now_ms);
        self.try_complete(now, now_ms, false);
        JoinReply::Later(rx)
    }

    /// A known member joins again: with unchanged metadata in a settled group it gets
    /// the current generation back; otherwise the group rebalances.
    fn rejoin(&mut self, req: &JoinRequest, now: Instant, now_ms: i64) -> JoinReply {
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        let settled = matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        );
        let Some(member) = self.members.get_mut(&req.member_id) else {
            return JoinReply::Now(JoinOutcome {
                error: code::UNKNOWN_MEMBER_ID,
                generation: -1,
                ..JoinOutcome::default()
            });
        };
        member.last_seen = now;
        let unchanged = member.protocols == req.protocols;
        if settled && unchanged && !(is_leader && self.state == GroupState::Stable) {
            return JoinReply::Now(self.current_join_outcome(&req.member_id));
        }
        member.protocols = req.protocols.clone();
        (member.session_timeout, member.rebalance_timeout) = timeouts(req);
        let (tx, rx) = oneshot::channel();
        if let Some(old) = member.join_waiter.replace(tx) {
            let _ = old.send(JoinOutcome {
                error: code::UNKNOWN_MEMBER_ID,
                generation: -1,
                ..JoinOutcome::default()
            });
        }
        self.start_rebalance(now, now_ms);
        self.try_complete(now, now_ms, false);
        JoinReply::Later(rx)
    }

    /// A static member came back under a new member id: the old id is fenced.
    fn replace_static_member(
        &mut self,
        req: &JoinRequest,
        old_id: &str,
        fresh_id: String,
        now: Instant,
        now_ms: i64,
    ) -> JoinReply {
        let Some(mut old) = self.members.remove(old_id) else {
            self.static_members
                .remove(req.group_instance_id.as_deref().unwrap_or(""));
            return self.add_member(req, fresh_id, now, now_ms);
        };
        old.fail_waiters(code::FENCED_INSTANCE_ID);
        let unchanged = old.protocols == req.protocols;
        let was_leader = self.leader.as_deref() == Some(old_id);
        let mut member = Member::new(req, now);
        member.assignment = old.assignment;
        if was_leader {
            self.leader = Some(fresh_id.clone());
        }
        if let Some(instance) = &req.group_instance_id {
            self.static_members
                .insert(instance.clone(), fresh_id.clone());
        }
        self.members.insert(fresh_id.clone(), member);
        self.dirty = true;
        tracing::info!(old = %old_id, new = %fresh_id, "static member rejoined");
        if self.state == GroupState::Stable && unchanged {
            let mut outcome = self.current_join_outcome(&fresh_id);
            // As Kafka does: a returning leader is told the old leader id, so it does
            // not compute an assignment that a stable group would never hand out.
            if was_leader {
                outcome.leader = old_id.to_string();
                outcome.members = Vec::new();
            }
            return JoinReply::Now(outcome);
        }
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(&fresh_id) {
            m.join_waiter = Some(tx);
        }
        self.start_rebalance(now, now_ms);
        self.try_complete(now, now_ms, false);
        JoinReply::Later(rx)
    }

    fn current_join_outcome(&self, member_id: &str) -> JoinOutcome {
        let leader = self.leader.clone().unwrap_or_default();
        JoinOutcome {
            error: code::NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            members: if leader == member_id {
                self.member_list()
            } else {
                Vec::new()
            },
            leader,
            member_id: member_id.to_string(),
        }
    }

    fn member_list(&self) -> Vec<(String, Option<String>, Bytes)> {
        let protocol = self.protocol.clone().unwrap_or_default();
        self.members
            .iter()
            .map(|(id, m)| (id.clone(), m.instance_id.clone(), m.metadata_for(&protocol)))
            .collect()
    }

    fn start_rebalance(&mut self, now: Instant, now_ms: i64) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        self.set_state(GroupState::PreparingRebalance, now_ms);
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

    fn try_complete(&mut self, now: Instant, now_ms: i64, force: bool) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        if !all_joined && !force {
            return;
        }
        let late: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in late {
            tracing::info!(member = %id, "member did not rejoin before the rebalance deadline");
            self.drop_member(&id, code::UNKNOWN_MEMBER_ID);
        }
        self.rebalance_deadline = None;
        self.generation += 1;
        self.dirty = true;
        if self.members.is_empty() {
            self.set_state(GroupState::Empty, now_ms);
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.choose_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.set_state(GroupState::CompletingRebalance, now_ms);
        crate::admin::metrics::group_rebalanced();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let outcome = self.current_join_outcome(&id);
            if let Some(m) = self.members.get_mut(&id) {
                m.last_seen = now;
                m.assignment = Bytes::new();
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(outcome);
                }
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

    fn drop_member(&mut self, id: &str, error: ErrorCode) {
        if let Some(mut m) = self.members.remove(id) {
            m.fail_waiters(error);
            if let Some(instance) = m.instance_id {
                if self.static_members.get(&instance).map(String::as_str) == Some(id) {
                    self.static_members.remove(&instance);
                }
            }
        }
    }

    fn remove_member(&mut self, id: &str, now: Instant, now_ms: i64) {
        self.drop_member(id, code::UNKNOWN_MEMBER_ID);
        self.dirty = true;
        if self.members.is_empty() {
            self.set_state(GroupState::Empty, now_ms);
            self.rebalance_deadline = None;
            self.leader = None;
            self.protocol = None;
            self.generation += 1;
        } else {
            self.start_rebalance(now, now_ms);
            self.try_complete(now, now_ms, false);
        }
    }

    /// The member's id is current for its instance id (when it gives one).
    fn check_instance(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), ErrorCode> {
        match instance_id.and_then(|i| self.static_members.get(i)) {
            Some(id) if id != member_id => Err(code::FENCED_INSTANCE_ID),
            _ => Ok(()),
        }
    }

    /// A SyncGroup: the leader's carries the assignments. Answers at once, or later
    /// through the receiver (a follower before the leader has synced).
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(String, Bytes)>,
        now: Instant,
        now_ms: i64,
    ) -> Result<Result<SyncOutcome, oneshot::Receiver<SyncOutcome>>, ErrorCode> {
        self.check_instance(member_id, instance_id)?;
        if !self.members.contains_key(member_id) {
            return Err(code::UNKNOWN_MEMBER_ID);
        }
        if generation != self.generation {
            return Err(code::ILLEGAL_GENERATION);
        }
        let (ptype, pname) = protocol;
        if ptype.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || pname.is_some_and(|n| Some(n) != self.protocol.as_deref())
        {
            return Err(code::INCONSISTENT_GROUP_PROTOCOL);
        }
        let outcome = |g: &Group, a: Bytes| SyncOutcome {
            error: code::NONE,
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol.clone(),
            assignment: a,
        };
        match self.state {
            GroupState::Empty | GroupState::PreparingRebalance => Err(code::REBALANCE_IN_PROGRESS),
            GroupState::Stable => {
                let a = self.seen(member_id, now)?.assignment.clone();
                Ok(Ok(outcome(self, a)))
            }
            GroupState::CompletingRebalance if self.leader.as_deref() == Some(member_id) => {
                for (id, a) in assignments {
                    if let Some(m) = self.members.get_mut(&id) {
                        m.assignment = a;
                    }
                }
                self.set_state(GroupState::Stable, now_ms);
                self.dirty = true;
                let ready: Vec<(oneshot::Sender<SyncOutcome>, Bytes)> = self
                    .members
                    .values_mut()
                    .filter_map(|m| m.sync_waiter.take().map(|w| (w, m.assignment.clone())))
                    .collect();
                for (w, a) in ready {
                    let _ = w.send(outcome(self, a));
                }
                let a = self.seen(member_id, now)?.assignment.clone();
                Ok(Ok(outcome(self, a)))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                self.seen(member_id, now)?.sync_waiter = Some(tx);
                Ok(Err(rx))
            }
        }
    }

    /// A member heard from now.
    fn seen(&mut self, member_id: &str, now: Instant) -> Result<&mut Member, ErrorCode> {
        let m = self
            .members
            .get_mut(member_id)
            .ok_or(code::UNKNOWN_MEMBER_ID)?;
        m.last_seen = now;
        Ok(m)
    }

    pub fn heartbeat(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> ErrorCode {
        if let Err(e) = self.check_instance(member_id, instance_id) {
            return e;
        }
        let state = self.state;
        let current = self.generation;
        let Some(m) = self.members.get_mut(member_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        m.last_seen = now;
        if generation != current {
            code::ILLEGAL_GENERATION
        } else if state == GroupState::PreparingRebalance {
            code::REBALANCE_IN_PROGRESS
        } else {
            code::NONE
        }
    }

    /// One member leaves (by member id, instance id or both).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
        now_ms: i64,
    ) -> ErrorCode {
        let id = match instance_id {
            Some(instance) => match self.static_members.get(instance) {
                None => return code::UNKNOWN_MEMBER_ID,
                Some(id) if !member_id.is_empty() && id != member_id => {
                    return code::FENCED_INSTANCE_ID
                }
                Some(id) => id.clone(),
            },
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            return code::NONE;
        }
        if !self.members.contains_key(&id) {
            return code::UNKNOWN_MEMBER_ID;
        }
        tracing::info!(member = %id, "member left");
        self.remove_member(&id, now, now_ms);
        code::NONE
    }

    /// Removes members past their session timeout, forgets unused pending ids, completes
    /// an overdue rebalance. Returns the expired member ids.
    pub fn expire(&mut self, now: Instant, now_ms: i64) -> Vec<String> {
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.join_waiter.is_none() && now.duration_since(m.last_seen) > m.session_timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for m in &expired {
            crate::admin::metrics::group_member_expired();
            self.remove_member(m, now, now_ms);
        }
        if self.rebalance_deadline.is_some_and(|d| now >= d) {
            self.try_complete(now, now_ms, true);
        }
        expired
    }

    /// Checks that an offset commit comes from a current member. Generation -1 with no
    /// member id is a commit from outside any group, allowed only while it is empty.
    /// Commits during PreparingRebalance are allowed (members commit what they consumed
    /// before rejoining); during CompletingRebalance they are not, as in Kafka.
    pub fn check_commit(
        &self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> ErrorCode {
        if generation < 0 && member_id.is_empty() && self.members.is_empty() {
            return code::NONE;
        }
        if let Err(e) = self.check_instance(member_id, instance_id) {
            return e;
        }
        if !self.members.contains_key(member_id) {
            return code::UNKNOWN_MEMBER_ID;
        }
        if generation != self.generation {
            code::ILLEGAL_GENERATION
        } else if self.state == GroupState::CompletingRebalance {
            code::REBALANCE_IN_PROGRESS
        } else {
            code::NONE
        }
    }

    /// Topics the members subscribe to (consumer protocol subscriptions), for
    /// OffsetDelete's GROUP_SUBSCRIBED_TO_TOPIC check; `None` when they cannot be read.
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.clone()?;
        let mut topics = Vec::new();
        for m in self.members.values() {
            topics.extend(subscription_topics(&m.metadata_for(&protocol))?);
        }
        Some(topics)
    }

    pub fn view(&self) -> GroupView {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupView {
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol.clone(),
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberView {
                    member_id: id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// The membership as the offsets topic stores it.
    pub fn snapshot(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_since_ms,
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberValue {
                    member_id: id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// A group as loaded from the offsets topic: Stable with its members (each gets a
    /// full session timeout from now to show up), or Empty.
    pub fn restore(v: GroupValue, now: Instant) -> Group {
        let mut g = Group::new(v.state_timestamp_ms);
        g.generation = v.generation;
        g.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type);
        g.protocol = v.protocol;
        g.leader = v.leader;
        let protocol = g.protocol.clone().unwrap_or_default();
        for m in v.members {
            if let Some(instance) = &m.group_instance_id {
                g.static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            g.members.insert(
                m.member_id,
                Member {
                    client_id: m.client_id,
                    client_host: m.client_host,
                    instance_id: m.group_instance_id,
                    session_timeout: Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                    protocols: vec![(protocol.clone(), m.subscription)],
                    assignment: m.assignment,
                    last_seen: now,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
        g.state = if g.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        g
    }
}

/// The topics of a consumer protocol subscription (any version: they all start with
/// `version i16, topics [string]`).
fn subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let count = i32::from_be_bytes(metadata.get(2..6)?.try_into().ok()?);
    let mut pos = 6;
    let mut topics = Vec::with_capacity((count.max(0) as usize).min(metadata.len() / 2));
    for _ in 0..count {
        let len = i16::from_be_bytes(metadata.get(pos..pos + 2)?.try_into().ok()?);
        let len = usize::try_from(len).ok()?;
        let name = metadata.get(pos + 2..pos + 2 + len)?;
        topics.push(String::from_utf8(name.to_vec()).ok()?);
        pos += 2 + len;
    }
    Some(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 100;

    fn req(member: &str, instance: Option<&str>, v4: bool) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member.into(),
            group_instance_id: instance.map(str::to_string),
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: v4,
        }
    }

    fn now_outcome(reply: JoinReply) -> JoinOutcome {
        match reply {
            JoinReply::Now(o) => o,
            JoinReply::Later(mut rx) => rx.try_recv().unwrap().expect("answered"),
        }
    }

    /// Joins with `req(member, instance, v4)`; `id` is the member id a new member gets.
    fn join_as(
        g: &mut Group,
        member: &str,
        instance: Option<&str>,
        v4: bool,
        id: &str,
    ) -> Result<JoinReply, ErrorCode> {
        g.join(
            &req(member, instance, v4),
            id.into(),
            MAX,
            Instant::now(),
            0,
        )
    }

    fn join(g: &mut Group, member: &str, id: &str) -> JoinReply {
        join_as(g, member, None, false, id).unwrap()
    }

    /// Syncs `member` (static as `instance`) at `generation`, handing out `assign` (a
    /// leader's): its assignment now, or the receiver that gets it once the leader syncs.
    fn sync(
        g: &mut Group,
        generation: i32,
        member: &str,
        instance: Option<&str>,
        assign: Vec<(String, Bytes)>,
    ) -> Result<SyncOutcome, oneshot::Receiver<SyncOutcome>> {
        let protocol = (None, None);
        g.sync(
            generation,
            member,
            instance,
            protocol,
            assign,
            Instant::now(),
            0,
        )
        .unwrap()
    }

    fn sync_leader(g: &mut Group, o: &JoinOutcome) {
        assert!(sync(g, o.generation, &o.member_id, None, vec![]).is_ok());
    }

    #[test]
    fn one_member_joins_syncs_and_leaves() {
        let mut g = Group::new(0);
        let out = now_outcome(join(&mut g, "", "a"));
        assert_eq!(out.error, code::NONE);
        assert_eq!(out.leader, out.member_id);
        assert_eq!(out.members.len(), 1);
        let a = Bytes::from_static(b"assignment");
        let s = g
            .sync(
                out.generation,
                &out.member_id,
                None,
                (Some("consumer"), Some("range")),
                vec![(out.member_id.clone(), a.clone())],
                Instant::now(),
                0,
            )
            .unwrap();
        assert_eq!(s.ok().unwrap().assignment, a);
        assert!(g.dirty, "a completed rebalance is recorded");
        assert_eq!(
            g.heartbeat(out.generation, &out.member_id, None, Instant::now()),
            code::NONE
        );
        assert_eq!(
            g.check_commit(out.generation, &out.member_id, None),
            code::NONE
        );
        assert_eq!(
            g.check_commit(out.generation - 1, &out.member_id, None),
            code::ILLEGAL_GENERATION
        );
        assert_eq!(g.leave(&out.member_id, None, Instant::now(), 0), code::NONE);
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(
            g.check_commit(-1, "", None),
            code::NONE,
            "simple commits once empty"
        );
    }

    #[test]
    fn second_member_triggers_rebalance() {
        let mut g = Group::new(0);
        let a = now_outcome(join(&mut g, "", "a"));
        sync_leader(&mut g, &a);
        let JoinReply::Later(mut b_rx) = join(&mut g, "", "b") else {
            panic!("b waits")
        };
        assert!(b_rx.try_recv().unwrap().is_none(), "waits for a to rejoin");
        assert_eq!(
            g.heartbeat(a.generation, &a.member_id, None, Instant::now()),
            code::REBALANCE_IN_PROGRESS
        );
        assert_eq!(
            g.check_commit(a.generation, &a.member_id, None),
            code::NONE,
            "commit before rejoin"
        );
        let a2 = now_outcome(join(&mut g, "a", "unused"));
        let b = b_rx.try_recv().unwrap().unwrap();
        assert_eq!(a2.generation, b.generation);
        assert_eq!(a2.generation, a.generation + 1);
        assert_eq!(a2.leader, "a", "the leader stays");
        assert_eq!(a2.members.len(), 2);
        let mut rx = sync(&mut g, b.generation, "b", None, vec![]).err().unwrap();
        assert_eq!(
            g.check_commit(b.generation, "b", None),
            code::REBALANCE_IN_PROGRESS
        );
        let assign = vec![("b".to_string(), Bytes::from_static(b"f"))];
        sync(&mut g, a2.generation, "a", None, assign).ok().unwrap();
        assert_eq!(
            rx.try_recv().unwrap().unwrap().assignment,
            Bytes::from_static(b"f")
        );
        assert_eq!(
            g.check_commit(a.generation, "a", None),
            code::ILLEGAL_GENERATION,
            "a stale generation's commit is refused"
        );
    }

    #[test]
    fn member_id_required_then_accepted_and_expired_when_unused() {
        let mut g = Group::new(0);
        let first = now_outcome(join_as(&mut g, "", None, true, "m1").unwrap());
        assert_eq!(first.error, code::MEMBER_ID_REQUIRED);
        assert_eq!(first.member_id, "m1");
        let ok = now_outcome(join_as(&mut g, "m1", None, true, "x").unwrap());
        assert_eq!((ok.error, ok.member_id.as_str()), (code::NONE, "m1"));
        // An id handed out but never used is forgotten after the session timeout.
        let _ = join_as(&mut g, "", None, true, "m2");
        g.expire(Instant::now() + Duration::from_secs(11), 0);
        let err = join_as(&mut g, "m2", None, true, "x").unwrap_err();
        assert_eq!(err, code::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn static_member_rejoins_without_rebalance_and_old_id_is_fenced() {
        let mut g = Group::new(0);
        let a = now_outcome(join_as(&mut g, "", Some("ia"), true, "a1").unwrap());
        sync_leader(&mut g, &a);
        let JoinReply::Later(mut b_rx) = join_as(&mut g, "", Some("ib"), true, "b1").unwrap()
        else {
            panic!("b waits")
        };
        let _ = now_outcome(join_as(&mut g, "a1", Some("ia"), true, "x").unwrap());
        let b = b_rx.try_recv().unwrap().unwrap();
        let assign = vec![("b1".to_string(), Bytes::from_static(b"p1"))];
        sync(&mut g, b.generation, "a1", Some("ia"), assign)
            .ok()
            .unwrap();
        let generation = g.generation;
        // b restarts: same instance id, no member id.
        let b2 = now_outcome(join_as(&mut g, "", Some("ib"), true, "b2").unwrap());
        assert_eq!(
            (b2.error, b2.generation),
            (code::NONE, generation),
            "no rebalance"
        );
        assert_eq!(b2.member_id, "b2");
        assert_eq!(g.state, GroupState::Stable);
        let s = sync(&mut g, generation, "b2", Some("ib"), vec![])
            .ok()
            .unwrap();
        assert_eq!(s.assignment, Bytes::from_static(b"p1"), "assignment kept");
        assert_eq!(
            g.heartbeat(generation, "b1", Some("ib"), Instant::now()),
            code::FENCED_INSTANCE_ID
        );
        assert_eq!(
            g.check_commit(generation, "b1", Some("ib")),
            code::FENCED_INSTANCE_ID
        );
        assert_eq!(
            g.leave("b1", Some("ib"), Instant::now(), 0),
            code::FENCED_INSTANCE_ID
        );
        assert_eq!(g.leave("", Some("ib"), Instant::now(), 0), code::NONE);
        assert_eq!(g.state, GroupState::PreparingRebalance);
    }

    #[test]
    fn silent_member_is_removed_after_its_session_timeout() {
        let mut g = Group::new(0);
        let a = now_outcome(join(&mut g, "", "a"));
        sync_leader(&mut g, &a);
        let later = Instant::now() + Duration::from_millis(9_000);
        assert!(g.expire(later, 0).is_empty());
        let expired = g.expire(Instant::now() + Duration::from_millis(10_500), 1);
        assert_eq!(expired, vec!["a".to_string()]);
        assert_eq!(g.state, GroupState::Empty);
        assert!(g.dirty);
    }

    #[test]
    fn snapshot_restores_members_and_generation() {
        let mut g = Group::new(0);
        let a = now_outcome(join_as(&mut g, "", Some("ia"), false, "a").unwrap());
        let assign = vec![("a".to_string(), Bytes::from_static(b"asg"))];
        sync(&mut g, a.generation, "a", None, assign).ok().unwrap();
        let r = Group::restore(g.snapshot(), Instant::now());
        assert_eq!((r.state, r.generation), (GroupState::Stable, g.generation));
        assert_eq!(r.view().members[0].assignment, Bytes::from_static(b"asg"));
        assert_eq!(r.view().members[0].group_instance_id.as_deref(), Some("ia"));
        assert_eq!(r.check_commit(g.generation, "a", Some("ia")), code::NONE);
    }

    #[test]
    fn subscription_topics_are_read() {
        let mut m = vec![0, 1, 0, 0, 0, 2];
        for t in ["t1", "topic2"] {
            m.extend_from_slice(&(t.len() as i16).to_be_bytes());
            m.extend_from_slice(t.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(subscription_topics(&m).unwrap(), vec!["t1", "topic2"]);
        assert!(subscription_topics(&m[..7]).is_none());
    }
}
