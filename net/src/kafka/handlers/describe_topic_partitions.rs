//! DescribeTopicPartitions (KIP-966): the partitions of the asked topics (every topic
//! when none is asked) from the metadata image, paged as Kafka pages them. Topics go in
//! name order from the cursor's topic (its partitions from the cursor's index); at most
//! `response_partition_limit` partitions (capped at [`PARTITIONS_MAX`]) are answered, and
//! `next_cursor` names where the next page starts. Unlike Metadata, a partition without
//! a live leader is answered without error (leader -1), and nothing is created. Sluice has
//! no eligible leader replicas (ELR): both ELR lists are empty.

use std::collections::BTreeSet;
use std::rc::Rc;

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_control::{MetadataImage, TopicImage};
use uuid::Uuid;

use super::metadata::{ids, offline_and_leader};
use super::ApiSpec;
use crate::broker::catalog::{is_internal_topic, validate_topic_name};
use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::{AclOperation, ResourceType};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DescribeTopicPartitions,
    min: 0,
    max: 0,
};

/// Most partitions one answer carries (Kafka's `max.request.partition.size.limit`
/// default).
pub const PARTITIONS_MAX: i32 = 2000;

fn name_of(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Partitions of `t` from index `start`, at most `max`: the entries and the index after
/// the last one when partitions remain.
fn partitions(
    image: &MetadataImage,
    t: &TopicImage,
    start: i32,
    max: i32,
) -> (Vec<DescribeTopicPartitionsResponsePartition>, Option<i32>) {
    let mut out = Vec::new();
    let mut rest = t.partitions.range(sluice_control::PartitionId(start)..);
    for (i, p) in rest.by_ref().take(max.max(0) as usize) {
        let (offline, leader) = offline_and_leader(image, p);
        let leader = leader.map_or(-1, |l| l.0);
        out.push(
            DescribeTopicPartitionsResponsePartition::default()
                .with_partition_index(i.0)
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(p.leader_epoch.0)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_eligible_leader_replicas(Some(Vec::new()))
                .with_last_known_elr(Some(Vec::new()))
                .with_offline_replicas(offline),
        );
    }
    (out, rest.next().map(|(i, _)| i.0))
}

fn topic_error(name: &str, error: ErrorCode) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic::default()
        .with_error_code(error.into())
        .with_name(Some(name_of(name)))
        .with_is_internal(is_internal_topic(name))
}

/// The answer to a request Kafka refuses whole (a cursor outside the asked topics, or a
/// negative cursor partition): each asked topic with INVALID_REQUEST.
fn invalid(body: &DescribeTopicPartitionsRequest, why: &str) -> DescribeTopicPartitionsResponse {
    tracing::info!(why, "DescribeTopicPartitions refused");
    let topics = body
        .topics
        .iter()
        .map(|t| topic_error(&t.name, code::INVALID_REQUEST))
        .collect();
    DescribeTopicPartitionsResponse::default().with_topics(topics)
}

pub fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: DescribeTopicPartitionsRequest = decode_body(req)?;
    let resp = answer(shard, authz, &body);
    encode_response(req.header.correlation_id, req.version, &resp)
}

fn answer(
    shard: &Shard,
    authz: &Authz<'_>,
    body: &DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let image = shard.cluster.image();
    let all = body.topics.is_empty();
    let (from_topic, from_partition) = match &body.cursor {
        Some(c) => (c.topic_name.0.as_str(), c.partition_index),
        None => ("", 0),
    };
    let names: BTreeSet<&str> = if all {
        image.topics().map(|t| t.name.as_str()).collect()
    } else {
        body.topics.iter().map(|t| t.name.0.as_str()).collect()
    };
    if body.cursor.is_some() && !all && !names.contains(from_topic) {
        return invalid(body, "the cursor's topic is not among the asked topics");
    }
    if from_partition < 0 {
        return invalid(body, "negative cursor partition");
    }
    let mut remaining = body.response_partition_limit.clamp(1, PARTITIONS_MAX);
    let mut topics = Vec::new();
    let mut refused = Vec::new();
    let mut next_cursor = None;
    for name in names.range(from_topic..) {
        // Topics the client may not DESCRIBE: left out of "every topic", refused by name
        // when asked (their existence is not disclosed).
        if !authz.topic(AclOperation::Describe, name) {
            if !all {
                refused.push(topic_error(name, code::TOPIC_AUTHORIZATION_FAILED));
            }
            continue;
        }
        if remaining == 0 {
            next_cursor = Some(Cursor::default().with_topic_name(name_of(name)));
            break;
        }
        let Some(t) = image.topic_by_name(name) else {
            let error = match validate_topic_name(name) {
                Ok(()) => code::UNKNOWN_TOPIC_OR_PARTITION,
                Err(_) => code::INVALID_TOPIC_EXCEPTION,
            };
            topics.push(topic_error(name, error));
            continue;
        };
        let start = if *name == from_topic {
            from_partition
        } else {
            0
        };
        let (parts, next) = partitions(&image, t, start, remaining);
        remaining -= parts.len() as i32;
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(name_of(name)))
                .with_topic_id(Uuid::from_u128(t.id.0))
                .with_is_internal(is_internal_topic(name))
                .with_partitions(parts)
                .with_topic_authorized_operations(authz.operations(
                    true,
                    ResourceType::Topic,
                    name,
                )),
        );
        if let Some(partition) = next {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(name_of(name))
                    .with_partition_index(partition),
            );
            break;
        }
    }
    topics.extend(refused);
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}
