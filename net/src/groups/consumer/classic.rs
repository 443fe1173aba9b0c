//! Classic-protocol members inside a consumer group: KIP-848's online migration, as Kafka
//! 4.x's `GroupMetadataManager` does it (`classicGroupJoinToConsumerGroup`,
//! `classicGroupSyncToConsumerGroup`, `classicGroupHeartbeatToConsumerGroup`,
//! `classicGroupLeaveToConsumerGroup`, `ConsumerGroup.fromClassicGroup`,
//! `ClassicGroup.fromConsumerGroup`).
//!
//! A classic member is a consumer-group member with [`ClassicMeta`]: its subscription
//! comes from the embedded consumer protocol of its JoinGroup, its generation is its
//! member epoch, and it reconciles only when it (re)joins — its JoinGroup is answered at
//! once with the assignment the coordinator computed, its SyncGroup hands that out, and its
//! Heartbeat answers REBALANCE_IN_PROGRESS when its assignment must change. Partitions it
//! must give up stay its own until its next JoinGroup no longer lists them (eager
//! protocols list none), so no partition has two owners.
//!
//! Bounded: protocols per JoinGroup (`CLASSIC_PROTOCOLS_MAX`), subscribed topics
//! (`subscription::SUBSCRIBED_TOPICS_MAX`), owned partitions
//! (`validate::OWNED_PARTITIONS_MAX`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_control::TopicId;

use super::super::records::{GroupValue, MemberValue};
use super::super::subscription::{self, TopicSource};
use super::super::JoinRequest;
use super::validate::{ID_BYTES_MAX, OWNED_PARTITIONS_MAX};
use super::{ConsumerConfig, ConsumerGroup, Member, MemberState};
use crate::kafka::errors::{code, ErrorCode};

/// The protocol type of groups that may convert (Kafka's `ConsumerProtocol.PROTOCOL_TYPE`).
pub const PROTOCOL_TYPE: &str = "consumer";
/// Protocols (assignment strategies) one classic member may offer.
pub const CLASSIC_PROTOCOLS_MAX: usize = 16;
/// Newest embedded consumer protocol version we decode (later ones only append fields).
const CONSUMER_PROTOCOL_VERSION_MAX: i16 = 3;

pub use super::super::consumer_records::ClassicMeta;

impl ClassicMeta {
    /// The protocol the member is answered with: its first.
    pub fn protocol_name(&self) -> &str {
        self.protocols.first().map_or("", |(n, _)| n.as_str())
    }

    /// The embedded consumer protocol version of its first protocol, which its
    /// assignment is written in (Kafka's `prepareAssignment`).
    fn version(&self) -> i16 {
        self.protocols
            .first()
            .and_then(|(_, m)| m.get(..2))
            .map_or(0, |v| i16::from_be_bytes([v[0], v[1]]))
            .clamp(0, CONSUMER_PROTOCOL_VERSION_MAX)
    }
}

/// The JoinGroup answer: the member's id, its epoch as the generation, the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicJoined {
    pub member_id: String,
    pub generation: i32,
    pub protocol_name: String,
}

/// An embedded consumer protocol subscription, decoded.
#[derive(Debug, Clone, Default)]
pub struct Subscription {
    pub topics: Vec<String>,
    pub owned: Vec<(String, Vec<i32>)>,
    pub rack: Option<String>,
}

fn decode_versioned<M: Decodable>(bytes: &Bytes) -> Option<M> {
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return None;
    }
    let version = buf.get_i16();
    if version < 0 {
        return None;
    }
    M::decode(&mut buf, version.min(CONSUMER_PROTOCOL_VERSION_MAX)).ok()
}

/// A subscription (JoinGroup protocol metadata); `None` when malformed.
pub fn decode_subscription(bytes: &Bytes) -> Option<Subscription> {
    let s: ConsumerProtocolSubscription = decode_versioned(bytes)?;
    Some(Subscription {
        topics: s.topics.iter().map(|t| t.to_string()).collect(),
        owned: s
            .owned_partitions
            .into_iter()
            .map(|tp| (tp.topic.0.to_string(), tp.partitions))
            .collect(),
        rack: s.rack_id.map(|r| r.to_string()),
    })
}

/// An assignment (SyncGroup); empty bytes are an empty assignment.
pub fn decode_assignment(bytes: &Bytes) -> Option<Vec<(String, Vec<i32>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let a: ConsumerProtocolAssignment = decode_versioned(bytes)?;
    Some(
        a.assigned_partitions
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
    )
}

/// An assignment in embedded consumer protocol `version`.
pub fn encode_assignment(version: i16, assigned: &[(String, Vec<i32>)]) -> Bytes {
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        assigned
            .iter()
            .map(|(t, ps)| {
                AssignedTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(t.clone())))
                    .with_partitions(ps.clone())
            })
            .collect(),
    );
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    // Encoding a struct we built ourselves fails only on a bug; an empty assignment is
    // what a member then gets, and it rejoins at its next heartbeat.
    if a.encode(&mut buf, version).is_err() {
        tracing::error!("encoding a consumer protocol assignment failed");
        return Bytes::new();
    }
    buf.freeze()
}

/// Checks a classic JoinGroup's protocols: Kafka's `throwIfClassicProtocolIsNotSupported`
/// (the consumer protocol type, a protocol every classic member offers) and our bounds.
fn check_protocols(g: &ConsumerGroup, join: &JoinRequest) -> Result<Subscription, ErrorCode> {
    if join.protocol_type != PROTOCOL_TYPE
        || join.protocols.is_empty()
        || join.protocols.len() > CLASSIC_PROTOCOLS_MAX
    {
        return Err(code::INCONSISTENT_GROUP_PROTOCOL);
    }
    let names: BTreeSet<&str> = join.protocols.iter().map(|(n, _)| n.as_str()).collect();
    let shared = g
        .members
        .values()
        .filter(|m| m.member_id != join.member_id)
        .filter_map(|m| m.classic.as_ref())
        .all(|c| c.protocols.iter().any(|(n, _)| names.contains(n.as_str())));
    if !shared {
        return Err(code::INCONSISTENT_GROUP_PROTOCOL);
    }
    let sub = decode_subscription(&join.protocols[0].1).ok_or(code::INCONSISTENT_GROUP_PROTOCOL)?;
    let owned: usize = sub.owned.iter().map(|(_, ps)| ps.len()).sum();
    if sub.topics.len() > subscription::SUBSCRIBED_TOPICS_MAX
        || owned > OWNED_PARTITIONS_MAX
        || sub.rack.as_ref().is_some_and(|r| r.len() > ID_BYTES_MAX)
    {
        return Err(code::INVALID_REQUEST);
    }
    Ok(sub)
}

/// Partitions by topic name, as topic ids (topics the metadata does not know are left out).
fn by_id(named: &[(String, Vec<i32>)], topics: &dyn TopicSource) -> Vec<(TopicId, Vec<i32>)> {
    named
        .iter()
        .filter_map(|(t, ps)| topics.topic(t).map(|(id, _)| (id, ps.clone())))
        .collect()
}

impl ConsumerGroup {
    /// Whether every member speaks the classic protocol (the group may go back to
    /// classic), and there is one.
    pub fn all_classic(&self) -> bool {
        !self.members.is_empty() && self.members.values().all(|m| m.classic.is_some())
    }

    /// A classic group becomes a consumer group (Kafka's `ConsumerGroup.fromClassicGroup`):
    /// each member keeps its assignment at the group's generation as its epoch, and the
    /// target assignment is what they hold. `None` when a member's embedded protocol
    /// cannot be read.
    pub fn from_classic(
        v: &GroupValue,
        topics: &dyn TopicSource,
        now: Instant,
    ) -> Option<ConsumerGroup> {
        let mut g = ConsumerGroup::new(v.state_timestamp_ms);
        g.epoch = v.generation;
        g.assignment_epoch = v.generation;
        let protocol = v.protocol.clone().unwrap_or_default();
        for mv in &v.members {
            let sub = decode_subscription(&mv.subscription)?;
            let held = decode_assignment(&mv.assignment)?;
            let mut m = Member::new(mv.member_id.clone(), now);
            m.instance_id = mv.group_instance_id.clone();
            m.rack_id = sub.rack;
            m.client_id = mv.client_id.clone();
            m.client_host = mv.client_host.clone();
            m.epoch = v.generation;
            m.previous_epoch = v.generation;
            m.rebalance_timeout_ms = mv.rebalance_timeout_ms;
            m.topic_names = sub.topics;
            m.topic_names.sort();
            m.topic_names.dedup();
            for (t, ps) in by_id(&held, topics) {
                m.assigned.entry(t).or_default().extend(ps);
            }
            m.classic = Some(ClassicMeta {
                session_timeout_ms: mv.session_timeout_ms,
                protocols: vec![(protocol.clone(), mv.subscription.clone())],
            });
            if let Some(instance) = &m.instance_id {
                g.statics.insert(instance.clone(), m.member_id.clone());
            }
            g.target.insert(m.member_id.clone(), m.assigned.clone());
            g.members.insert(m.member_id.clone(), m);
        }
        g.refresh_metadata(topics, true);
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for id in &ids {
            g.add_owners(id);
        }
        g.touch_all();
        Some(g)
    }

    /// The classic group this one becomes when only classic members are left (Kafka's
    /// `ClassicGroup.fromConsumerGroup`): the group epoch as the generation, the
    /// protocol every member offers, each member's current assignment.
    pub fn to_classic(&self, now_ms: i64) -> Option<GroupValue> {
        if !self.all_classic() {
            return None;
        }
        let first = self.members.values().next()?.classic.as_ref()?;
        let protocol = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .find(|n| {
                self.members.values().all(|m| {
                    m.classic
                        .as_ref()
                        .is_some_and(|c| c.protocols.iter().any(|(p, _)| p == *n))
                })
            })?
            .clone();
        let members = self
            .members
            .values()
            .filter_map(|m| {
                let c = m.classic.as_ref()?;
                let metadata = c.protocols.iter().find(|(n, _)| *n == protocol)?.1.clone();
                Some(MemberValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: c.session_timeout_ms,
                    subscription: metadata,
                    assignment: encode_assignment(c.version(), &self.named(&m.assigned)),
                })
            })
            .collect::<Vec<_>>();
        Some(GroupValue {
            protocol_type: PROTOCOL_TYPE.to_string(),
            generation: self.epoch,
            protocol: Some(protocol),
            leader: members.first().map(|m| m.member_id.clone()),
            state_timestamp_ms: now_ms,
            members,
        })
    }

    /// An assignment by topic name (topics no longer subscribed are left out).
    fn named(&self, a: &super::Assignment) -> Vec<(String, Vec<i32>)> {
        a.iter()
            .filter_map(|(t, ps)| {
                let (name, _) = self.subscribed.get(t)?;
                Some((name.clone(), ps.iter().copied().collect()))
            })
            .collect()
    }

    /// A classic member's JoinGroup (Kafka's `classicGroupJoinToConsumerGroup`); `fresh`
    /// is the id a new member gets. `Err(MEMBER_ID_REQUIRED)` comes with that id.
    pub fn classic_join(
        &mut self,
        join: &JoinRequest,
        fresh: String,
        topics: &dyn TopicSource,
        config: &ConsumerConfig,
        now: Instant,
    ) -> Result<ClassicJoined, (ErrorCode, String)> {
        let unknown = join.member_id.is_empty();
        let member_id = if unknown {
            fresh
        } else {
            join.member_id.clone()
        };
        let known = self.members.contains_key(&member_id)
            || join
                .group_instance_id
                .as_ref()
                .is_some_and(|i| self.statics.contains_key(i));
        if !known && self.members.len() >= config.members_max {
            return Err((code::GROUP_MAX_SIZE_REACHED, member_id));
        }
        let sub = check_protocols(self, join).map_err(|e| (e, member_id.clone()))?;
        if unknown && join.require_known_member_id && join.group_instance_id.is_none() {
            return Err((code::MEMBER_ID_REQUIRED, member_id));
        }
        let (mut member, new) = match join
            .group_instance_id
            .as_ref()
            .and_then(|i| self.statics.get(i))
        {
            Some(old_id) if *old_id == member_id => (self.members[old_id].clone(), false),
            // Kafka: a classic static member always takes its instance id's place.
            Some(old_id) => {
                let old = self.members[old_id].clone();
                (self.replace_static(old, &member_id), false)
            }
            None => match self.members.get(&member_id) {
                Some(m) if m.classic.is_none() => return Err((code::UNKNOWN_MEMBER_ID, member_id)),
                Some(m) => (m.clone(), false),
                None => (Member::new(member_id.clone(), now), true),
            },
        };
        let before = member.clone();
        let mut topics_wanted = sub.topics.clone();
        topics_wanted.sort();
        topics_wanted.dedup();
        let bump = new || topics_wanted != member.topic_names;
        member.topic_names = topics_wanted;
        member.regex = None;
        member.compiled_regex = None;
        member.assignor = None;
        if sub.rack.is_some() {
            member.rack_id = sub.rack.clone();
        }
        if join.group_instance_id.is_some() {
            member.instance_id = join.group_instance_id.clone();
        }
        if join.rebalance_timeout_ms > 0 {
            member.rebalance_timeout_ms = join.rebalance_timeout_ms;
        }
        member.client_id = join.client_id.clone();
        member.client_host = join.client_host.clone();
        member.classic = Some(ClassicMeta {
            session_timeout_ms: join.session_timeout_ms,
            protocols: join.protocols.clone(),
        });
        member.last_seen = now;
        let owned = by_id(&sub.owned, topics);
        let id = self.admit(member, &before, new, bump, topics, Some(&owned), now);
        if let Some(m) = self.members.get_mut(&id) {
            if m.state != MemberState::UnrevokedPartitions {
                // It rejoined, ending a join timeout; Kafka's sync timeout runs until its
                // SyncGroup (a revocation's deadline runs on otherwise).
                let timeout = Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64);
                m.revoke_deadline = Some(now + timeout);
            }
        }
        let m = &self.members[&id];
        Ok(ClassicJoined {
            member_id: id.clone(),
            generation: m.epoch,
            protocol_name: m
                .classic
                .as_ref()
                .map_or("", |c| c.protocol_name())
                .to_string(),
        })
    }

    /// The classic member a request names (Kafka's `validateConsumerGroupMember` and
    /// `throwIfMemberDoesNotUseClassicProtocol`).
    fn classic_member(
        &self,
        member_id: &str,
        instance: Option<&str>,
    ) -> Result<&Member, ErrorCode> {
        let m = match instance {
            None => self.members.get(member_id).ok_or(code::UNKNOWN_MEMBER_ID)?,
            Some(i) => {
                let id = self.statics.get(i).ok_or(code::UNKNOWN_MEMBER_ID)?;
                if id != member_id {
                    return Err(code::FENCED_INSTANCE_ID);
                }
                self.members.get(id).ok_or(code::UNKNOWN_MEMBER_ID)?
            }
        };
        if m.classic.is_none() {
            return Err(code::UNKNOWN_MEMBER_ID);
        }
        Ok(m)
    }

    /// A classic member's SyncGroup: (protocol name, its assignment in the embedded
    /// consumer protocol).
    pub fn classic_sync(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        protocol: (Option<&str>, Option<&str>),
        now: Instant,
    ) -> Result<(String, Bytes), ErrorCode> {
        let epoch = self.epoch;
        let m = self.classic_member(member_id, instance)?;
        let c = m.classic.as_ref().ok_or(code::UNKNOWN_MEMBER_ID)?;
        if generation != m.epoch {
            return Err(code::ILLEGAL_GENERATION);
        }
        if protocol.0.is_some_and(|t| t != PROTOCOL_TYPE)
            || protocol.1.is_some_and(|n| n != c.protocol_name())
        {
            return Err(code::INCONSISTENT_GROUP_PROTOCOL);
        }
        if epoch > m.epoch && m.state != MemberState::UnrevokedPartitions {
            return Err(code::REBALANCE_IN_PROGRESS);
        }
        let out = (
            c.protocol_name().to_string(),
            encode_assignment(c.version(), &self.named(&m.assigned)),
        );
        let id = m.member_id.clone();
        if let Some(m) = self.members.get_mut(&id) {
            m.last_seen = now;
            if m.state != MemberState::UnrevokedPartitions {
                m.revoke_deadline = None;
            }
        }
        Ok(out)
    }

    /// A classic member's Heartbeat: REBALANCE_IN_PROGRESS when it must rejoin (a newer
    /// group epoch, partitions to give up, or partitions it waits for now free).
    pub fn classic_heartbeat(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> ErrorCode {
        let m = match self.classic_member(member_id, instance) {
            Ok(m) => m,
            Err(e) => return e,
        };
        if generation != m.epoch {
            return code::ILLEGAL_GENERATION;
        }
        let rejoin = m.epoch < self.epoch
            || m.state == MemberState::UnrevokedPartitions
            || (m.state == MemberState::UnreleasedPartitions && !self.waits_on_unreleased(m));
        let id = m.member_id.clone();
        if let Some(m) = self.members.get_mut(&id) {
            m.last_seen = now;
            if rejoin {
                // Kafka's join timeout: a member told to rejoin that does not within its
                // rebalance timeout is removed (`expire`), heartbeats or not.
                let timeout = Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64);
                m.revoke_deadline.get_or_insert(now + timeout);
            }
        }
        if rejoin {
            code::REBALANCE_IN_PROGRESS
        } else {
            code::NONE
        }
    }

    /// Whether a target partition of `m` is still held by another member.
    fn waits_on_unreleased(&self, m: &Member) -> bool {
        self.target.get(&m.member_id).is_some_and(|t| {
            t.iter().any(|(tid, ps)| {
                ps.iter().any(|p| {
                    !m.assigned.get(tid).is_some_and(|a| a.contains(p))
                        && self.owners.contains_key(&(*tid, *p))
                })
            })
        })
    }

    /// A classic member's LeaveGroup (by member id, or by instance id with an empty
    /// member id as an administrator may).
    pub fn classic_leave(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        now_ms: i64,
    ) -> ErrorCode {
        let id = match instance {
            Some(i) if member_id.is_empty() => match self.statics.get(i) {
                Some(id) => id.clone(),
                None => return code::UNKNOWN_MEMBER_ID,
            },
            _ => member_id.to_string(),
        };
        match self.classic_member(&id, instance) {
            Ok(_) => {
                self.remove(&id, now_ms);
                code::NONE
            }
            Err(e) => e,
        }
    }
}
