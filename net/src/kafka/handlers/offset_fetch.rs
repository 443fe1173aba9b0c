//! OffsetFetch: committed offsets (with metadata and leader epoch) of one group
//! (v1–v7) or several (v8+); all of a group's offsets when no topics are named. v9: a
//! member of a consumer-protocol group must be at its current epoch (STALE_MEMBER_EPOCH,
//! UNKNOWN_MEMBER_ID); a request without a member id reads as an admin.

use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{ApiKey, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::groups::records::CommitValue;
use crate::groups::Groups;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::OffsetFetch,
    min: 1,
    max: 9,
};

/// A group's answer: per topic, per partition, the committed value if any and the
/// partition's error (UNSTABLE_OFFSET_COMMIT while a transaction holds an undecided
/// offset there and the client asked for stable offsets).
type Fetched = Vec<(String, Vec<(i32, Option<CommitValue>, ErrorCode)>)>;

pub fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: OffsetFetchRequest = decode_body(req)?;
    // Kafka's checks: DESCRIBE on the group; DESCRIBE on each topic (a named topic is
    // answered TOPIC_AUTHORIZATION_FAILED, one of "every topic" is left out).
    let fetch = |group: &str, wanted: Option<Vec<(String, Vec<i32>)>>, stable: bool| {
        if !authz.group(AclOperation::Describe, group) {
            return Err(code::GROUP_AUTHORIZATION_FAILED);
        }
        let named = wanted.is_some();
        let fetched = fetch(&shard.groups, group, wanted, stable)?;
        Ok(authorized_topics(authz, fetched, named))
    };
    let resp = if req.version >= 8 {
        let groups = body
            .groups
            .iter()
            .map(|g| {
                let wanted = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                // v9: a consumer-protocol member reads at its current epoch.
                let member =
                    shard
                        .groups
                        .check_fetch(&g.group_id.0, g.member_id.as_deref(), g.member_epoch);
                if req.version >= 9 && member != crate::kafka::errors::code::NONE {
                    return out.with_error_code(member.into());
                }
                match fetch(&g.group_id.0, wanted, body.require_stable) {
                    Ok(f) => out.with_topics(topics(f)),
                    Err(e) => out.with_error_code(e.into()),
                }
            })
            .collect();
        OffsetFetchResponse::default().with_groups(groups)
    } else {
        let wanted = body.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                .collect()
        });
        match fetch(&body.group_id.0, wanted, body.require_stable) {
            Ok(f) => OffsetFetchResponse::default().with_topics(topics(f)),
            // v1 has no top-level error: each partition carries it.
            Err(e) if req.version < 2 => {
                let topics = body
                    .topics
                    .iter()
                    .flatten()
                    .map(|t| {
                        let partitions = t
                            .partition_indexes
                            .iter()
                            .map(|p| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(-1)
                                    .with_error_code(e.into())
                            })
                            .collect();
                        OffsetFetchResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponse::default().with_topics(topics)
            }
            Err(e) => OffsetFetchResponse::default().with_error_code(e.into()),
        }
    };
    encode_response(req.header.correlation_id, req.version, &resp)
}

/// `fetched` as the client may see it: topics it may not DESCRIBE refused when `named`,
/// left out otherwise.
fn authorized_topics(authz: &Authz<'_>, fetched: Fetched, named: bool) -> Fetched {
    fetched
        .into_iter()
        .filter_map(|(name, parts)| {
            if authz.topic(AclOperation::Describe, &name) {
                return Some((name, parts));
            }
            named.then(|| {
                let refused = parts
                    .into_iter()
                    .map(|(p, _, _)| (p, None, code::TOPIC_AUTHORIZATION_FAILED))
                    .collect();
                (name, refused)
            })
        })
        .collect()
}

fn fetch(
    groups: &Groups,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Fetched, ErrorCode> {
    // Kafka answers an undecided partition with -1 and UNSTABLE_OFFSET_COMMIT (the
    // client retries until the transaction's marker decides it).
    let entry = |name: &str, p: i32, v: Option<CommitValue>| {
        if require_stable && groups.has_pending_txn(group, name, p) {
            (p, None, code::UNSTABLE_OFFSET_COMMIT)
        } else {
            (p, v, code::NONE)
        }
    };
    match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(name, parts)| {
                let values = parts
                    .into_iter()
                    .map(|p| Ok(entry(&name, p, groups.committed(group, &name, p)?)))
                    .collect::<Result<Vec<_>, ErrorCode>>()?;
                Ok((name, values))
            })
            .collect(),
        None => {
            let mut all: Fetched = Vec::new();
            for (t, p, v) in groups.committed_all(group)? {
                let e = entry(&t, p, Some(v));
                match all.last_mut() {
                    Some((name, ps)) if *name == t => ps.push(e),
                    _ => all.push((t, vec![e])),
                }
            }
            Ok(all)
        }
    }
}

/// The topic and partition entries of the answer before v8 and from v8: the same fields
/// in two pairs of generated types.
trait AnswerTopic: Sized {
    type Partition;
    /// A partition's entry: its committed value, or -1s when nothing is committed.
    fn partition(index: i32, v: Option<CommitValue>, error: ErrorCode) -> Self::Partition;
    fn topic(name: String, partitions: Vec<Self::Partition>) -> Self;
}

macro_rules! answer_topic {
    ($($topic:ty => $partition:ty),*) => {$(
        impl AnswerTopic for $topic {
            type Partition = $partition;
            fn partition(index: i32, v: Option<CommitValue>, error: ErrorCode) -> $partition {
                let (offset, epoch, meta) = match v {
                    Some(v) => (v.offset, v.leader_epoch, StrBytes::from_string(v.metadata)),
                    None => (-1, -1, StrBytes::from_static_str("")),
                };
                <$partition>::default()
                    .with_error_code(error.into())
                    .with_partition_index(index)
                    .with_committed_offset(offset)
                    .with_committed_leader_epoch(epoch)
                    .with_metadata(Some(meta))
            }
            fn topic(name: String, partitions: Vec<$partition>) -> Self {
                <$topic>::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions)
            }
        }
    )*};
}

answer_topic!(
    OffsetFetchResponseTopic => OffsetFetchResponsePartition,
    OffsetFetchResponseTopics => OffsetFetchResponsePartitions
);

/// A group's answer in the entries of the request's version.
fn topics<T: AnswerTopic>(f: Fetched) -> Vec<T> {
    f.into_iter()
        .map(|(name, parts)| {
            let partitions = parts.into_iter().map(|(p, v, e)| T::partition(p, v, e));
            T::topic(name, partitions.collect())
        })
        .collect()
}
