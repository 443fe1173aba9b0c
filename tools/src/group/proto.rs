//! The classic group protocol's request bodies and answers as plain data, shared by the
//! `sluice group` CLI (blocking) and the bench's group members (glommio): version-aware
//! builders (a field a version lacks must stay at its default, or encoding fails) and
//! parsers that turn answers into `(topic, partition, …)` lists and Kafka error codes.
//! Also the consumer protocol's embedded subscription and assignment (version-prefixed).

use anyhow::{anyhow, bail, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::find_coordinator_response::FindCoordinatorResponse;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, FindCoordinatorRequest, GroupId,
    JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Kafka error codes the group tools react to.
pub mod code {
    pub const NONE: i16 = 0;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
}

/// Whether an answer's error means "ask the coordinator again (maybe another one)".
pub fn coordinator_retriable(error: i16) -> bool {
    matches!(
        error,
        code::COORDINATOR_LOAD_IN_PROGRESS
            | code::COORDINATOR_NOT_AVAILABLE
            | code::NOT_COORDINATOR
    )
}

/// The consumer protocol's type and the one assignor the bench speaks.
pub const PROTOCOL_TYPE: &str = "consumer";
pub const RANGE_ASSIGNOR: &str = "range";
/// Versions of the embedded subscription and assignment this code writes.
const SUBSCRIPTION_VERSION: i16 = 1;
const ASSIGNMENT_VERSION: i16 = 1;

pub fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_string()))
}

pub fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// FindCoordinator for a group: one key up to v3, a batch of one from v4.
pub fn find_coordinator_request(version: i16, group: &str) -> FindCoordinatorRequest {
    let key = StrBytes::from_string(group.to_string());
    if version >= 4 {
        FindCoordinatorRequest::default().with_coordinator_keys(vec![key])
    } else {
        FindCoordinatorRequest::default().with_key(key)
    }
}

/// The coordinator's `host:port`, or the error code the broker gave.
pub fn coordinator_of(version: i16, resp: &FindCoordinatorResponse) -> Result<Result<String, i16>> {
    let (error, host, port) = if version >= 4 {
        let c = resp
            .coordinators
            .first()
            .ok_or_else(|| anyhow!("FindCoordinator answered no coordinator"))?;
        (c.error_code, c.host.as_str(), c.port)
    } else {
        (resp.error_code, resp.host.as_str(), resp.port)
    };
    if error != code::NONE {
        return Ok(Err(error));
    }
    Ok(Ok(format!("{host}:{port}")))
}

/// OffsetFetch of `topics` (each with its partitions), or of everything the group committed.
pub fn offset_fetch_request(
    group: &str,
    topics: Option<&[(String, Vec<i32>)]>,
) -> OffsetFetchRequest {
    let topics = topics.map(|ts| {
        ts.iter()
            .map(|(t, ps)| {
                OffsetFetchRequestTopic::default()
                    .with_name(topic_name(t))
                    .with_partition_indexes(ps.clone())
            })
            .collect()
    });
    OffsetFetchRequest::default()
        .with_group_id(group_id(group))
        .with_topics(topics)
}

/// A committed offset as OffsetFetch answers it; `None` where nothing is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub topic: String,
    pub partition: i32,
    pub offset: Option<i64>,
}

/// The committed offsets of an OffsetFetch answer; the group-level error code if any.
pub fn committed_of(resp: &OffsetFetchResponse) -> Result<Vec<Committed>, i16> {
    if resp.error_code != code::NONE {
        return Err(resp.error_code);
    }
    let mut out = Vec::new();
    for t in &resp.topics {
        for p in &t.partitions {
            if p.error_code != code::NONE {
                return Err(p.error_code);
            }
            out.push(Committed {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                offset: (p.committed_offset >= 0).then_some(p.committed_offset),
            });
        }
    }
    Ok(out)
}

/// OffsetCommit of `offsets` as (topic, partition, offset). `generation` -1 with an empty
/// member id commits from outside the group (allowed only while it has no members).
pub fn offset_commit_request(
    group: &str,
    generation: i32,
    member_id: &str,
    offsets: &[(String, i32, i64)],
) -> OffsetCommitRequest {
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for (t, p, o) in offsets {
        let part = OffsetCommitRequestPartition::default()
            .with_partition_index(*p)
            .with_committed_offset(*o)
            .with_committed_leader_epoch(-1)
            .with_committed_metadata(Some(StrBytes::from_static_str("")));
        match topics.last_mut() {
            Some(last) if last.name.0.as_str() == t => last.partitions.push(part),
            _ => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(topic_name(t))
                    .with_partitions(vec![part]),
            ),
        }
    }
    OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_topics(topics)
}

/// The first error of an OffsetCommit answer, as (topic, partition, code).
pub fn commit_error(resp: &OffsetCommitResponse) -> Option<(String, i32, i16)> {
    resp.topics.iter().find_map(|t| {
        t.partitions
            .iter()
            .find(|p| p.error_code != code::NONE)
            .map(|p| (t.name.0.to_string(), p.partition_index, p.error_code))
    })
}

/// A member's subscription (JoinGroup protocol metadata): version, then the body.
pub fn encode_subscription(topics: &[String]) -> Result<Bytes> {
    let sub = ConsumerProtocolSubscription::default().with_topics(
        topics
            .iter()
            .map(|t| StrBytes::from_string(t.clone()))
            .collect(),
    );
    versioned(SUBSCRIPTION_VERSION, &sub)
}

/// The topics a subscription names.
pub fn decode_subscription(bytes: &Bytes) -> Result<Vec<String>> {
    let sub: ConsumerProtocolSubscription = decode_versioned(bytes, "subscription")?;
    Ok(sub.topics.iter().map(|t| t.to_string()).collect())
}

/// A member's assignment (SyncGroup): version, then (topic, partitions) lists.
pub fn encode_assignment(assigned: &[(String, Vec<i32>)]) -> Result<Bytes> {
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        assigned
            .iter()
            .map(|(t, ps)| {
                AssignedTopic::default()
                    .with_topic(topic_name(t))
                    .with_partitions(ps.clone())
            })
            .collect(),
    );
    versioned(ASSIGNMENT_VERSION, &a)
}

/// The (topic, partitions) of an assignment; empty bytes are an empty assignment (a
/// member between rebalances, or a group that is not a consumer group).
pub fn decode_assignment(bytes: &Bytes) -> Result<Vec<(String, Vec<i32>)>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let a: ConsumerProtocolAssignment = decode_versioned(bytes, "assignment")?;
    Ok(a.assigned_partitions
        .into_iter()
        .map(|t| (t.topic.0.to_string(), t.partitions))
        .collect())
}

fn versioned<M: Encodable>(version: i16, m: &M) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    m.encode(&mut buf, version)?;
    Ok(buf.freeze())
}

/// Decodes a version-prefixed consumer protocol struct. Versions past the newest we know
/// are read as the newest: the format only ever appends fields (KIP-429).
fn decode_versioned<M: Decodable>(bytes: &Bytes, what: &str) -> Result<M> {
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        bail!(
            "consumer protocol {what} of {} bytes is too short",
            bytes.len()
        );
    }
    let version = buf.get_i16();
    if version < 0 {
        bail!("consumer protocol {what} has version {version}");
    }
    M::decode(&mut buf, version.min(3))
        .map_err(|e| anyhow!("decoding a consumer protocol {what} (v{version}): {e}"))
}

/// Range assignment of one topic's partitions over the members that subscribe to it, as
/// Kafka's RangeAssignor: members sorted by id, each gets `n / m` consecutive partitions and
/// the first `n % m` one more. Returns each member's partitions, in `members` order.
pub fn range_assign(members: &[String], partitions: i32) -> Vec<Vec<i32>> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&a, &b| members[a].cmp(&members[b]));
    let mut out = vec![Vec::new(); members.len()];
    if members.is_empty() || partitions <= 0 {
        return out;
    }
    let m = members.len() as i32;
    let (per, extra) = (partitions / m, partitions % m);
    let mut next = 0;
    for (rank, &i) in order.iter().enumerate() {
        let n = per + i32::from((rank as i32) < extra);
        out[i] = (next..next + n).collect();
        next += n;
    }
    out
}

/// A consumer's JoinGroup with the range assignor and its `subscription`.
pub fn join_request(
    group: &str,
    member_id: &str,
    subscription: Bytes,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group_id(group))
        .with_session_timeout_ms(session_timeout_ms)
        .with_rebalance_timeout_ms(rebalance_timeout_ms)
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_protocol_type(StrBytes::from_static_str(PROTOCOL_TYPE))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str(RANGE_ASSIGNOR))
            .with_metadata(subscription)])
}

/// A SyncGroup at `version` (v5+ carry the protocol type and name).
pub fn sync_request(
    version: i16,
    group: &str,
    generation: i32,
    member_id: &str,
    assignments: Vec<SyncGroupRequestAssignment>,
) -> SyncGroupRequest {
    let req = SyncGroupRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id(generation)
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_assignments(assignments);
    if version < 5 {
        return req;
    }
    req.with_protocol_type(Some(StrBytes::from_static_str(PROTOCOL_TYPE)))
        .with_protocol_name(Some(StrBytes::from_static_str(RANGE_ASSIGNOR)))
}

/// A LeaveGroup at `version` (v3+ list the members).
pub fn leave_request(version: i16, group: &str, member_id: &str) -> LeaveGroupRequest {
    let id = StrBytes::from_string(member_id.to_string());
    let req = LeaveGroupRequest::default().with_group_id(group_id(group));
    if version >= 3 {
        req.with_members(vec![MemberIdentity::default().with_member_id(id)])
    } else {
        req.with_member_id(id)
    }
}

/// The leader's SyncGroup assignments: `topic`'s `partitions` by range over the members
/// that subscribe to it (nothing for members of other topics).
pub fn range_assignments(
    members: &[JoinGroupResponseMember],
    topic: &str,
    partitions: i32,
) -> Result<Vec<SyncGroupRequestAssignment>> {
    let mut subscribers = Vec::new();
    for m in members {
        let topics = decode_subscription(&m.metadata)
            .map_err(|e| anyhow!("subscription of member {}: {e}", m.member_id.as_str()))?;
        if topics.iter().any(|t| t == topic) {
            subscribers.push(m.member_id.to_string());
        }
    }
    let ranges = range_assign(&subscribers, partitions);
    members
        .iter()
        .map(|m| {
            let mine = subscribers
                .iter()
                .position(|s| s.as_str() == m.member_id.as_str())
                .map(|i| vec![(topic.to_string(), ranges[i].clone())])
                .unwrap_or_default();
            Ok(SyncGroupRequestAssignment::default()
                .with_member_id(m.member_id.clone())
                .with_assignment(encode_assignment(&mine)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_matches_kafka() {
        let members: Vec<String> = ["c", "a", "b"].iter().map(|s| s.to_string()).collect();
        // Sorted a, b, c: 7 partitions → 3, 2, 2.
        assert_eq!(
            range_assign(&members, 7),
            vec![vec![5, 6], vec![0, 1, 2], vec![3, 4]]
        );
        assert_eq!(range_assign(&members, 2), vec![vec![], vec![0], vec![1]]);
        assert!(range_assign(&[], 3).is_empty());
    }

    #[test]
    fn subscription_and_assignment_round_trip() {
        let s = encode_subscription(&["t1".to_string(), "t2".to_string()]).unwrap();
        assert_eq!(decode_subscription(&s).unwrap(), vec!["t1", "t2"]);
        let a = vec![("t1".to_string(), vec![0, 2]), ("t2".to_string(), vec![1])];
        assert_eq!(
            decode_assignment(&encode_assignment(&a).unwrap()).unwrap(),
            a
        );
        assert!(decode_assignment(&Bytes::new()).unwrap().is_empty());
        assert!(decode_assignment(&Bytes::from_static(&[0])).is_err());
        assert!(decode_assignment(&Bytes::from_static(&[0, 0, 0, 0, 0, 9])).is_err());
    }

    #[test]
    fn commit_request_groups_partitions_by_topic() {
        let r = offset_commit_request(
            "g",
            -1,
            "",
            &[("a".into(), 0, 5), ("a".into(), 1, 6), ("b".into(), 0, 7)],
        );
        assert_eq!(r.topics.len(), 2);
        assert_eq!(r.topics[0].partitions.len(), 2);
        assert_eq!(r.generation_id_or_member_epoch, -1);
        for v in 2..=8 {
            let mut buf = BytesMut::new();
            r.encode(&mut buf, v).unwrap();
        }
    }
}
