//! OffsetCommit: from a current member of the group, or (generation -1) from a client
//! outside any group while the group is empty. A consumer-protocol group checks the
//! member epoch (v9+: STALE_MEMBER_EPOCH, UNKNOWN_MEMBER_ID; older versions from its
//! members get UNSUPPORTED_VERSION, as in Kafka). Answered once the commit is durable in
//! `__consumer_offsets`; visible to OffsetFetch from then on.

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, OffsetCommitRequest, OffsetCommitResponse};

use super::{refuse_topic, ApiSpec};
use crate::broker::shard::Shard;
use crate::groups::records::{self, CommitValue};
use crate::groups::{now_ms, persist, OffsetsRecords};
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::OffsetCommit,
    min: 2,
    max: 9,
};

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: OffsetCommitRequest = decode_body(req)?;
    let group = body.group_id.0.to_string();
    let groups = &shard.groups;
    // Kafka's checks: READ on the group (every partition refused without it), READ on
    // each topic.
    let membership = if authz.group(AclOperation::Read, &group) {
        groups.check_commit(
            &group,
            body.generation_id_or_member_epoch,
            &body.member_id,
            body.group_instance_id.as_deref(),
            req.version,
        )
    } else {
        code::GROUP_AUTHORIZATION_FAILED
    };
    let metadata_max = groups.config().offset_metadata_bytes_max;
    let now = now_ms();
    // Errors per partition, in request order; NONE for the ones being written.
    let mut errors: Vec<Vec<ErrorCode>> = Vec::with_capacity(body.topics.len());
    let mut items: Vec<(String, i32, CommitValue)> = Vec::new();
    for t in &body.topics {
        let count = shard.catalog.partition_count(&t.name.0);
        let mut topic_errors = Vec::with_capacity(t.partitions.len());
        let topic_refused = refuse_topic(authz, AclOperation::Read, &t.name);
        for p in &t.partitions {
            let metadata = p.committed_metadata.as_deref().unwrap_or("");
            let error = if membership != code::NONE {
                membership
            } else if let Some(refused) = topic_refused {
                refused
            } else if !count.is_some_and(|n| (0..n).contains(&p.partition_index)) {
                code::UNKNOWN_TOPIC_OR_PARTITION
            } else if metadata.len() > metadata_max {
                code::OFFSET_METADATA_TOO_LARGE
            } else {
                items.push((
                    t.name.0.to_string(),
                    p.partition_index,
                    CommitValue {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: metadata.to_string(),
                        commit_timestamp_ms: now,
                    },
                ));
                code::NONE
            };
            topic_errors.push(error);
        }
        errors.push(topic_errors);
    }
    let written = write(shard, &group, items, None).await;
    if written != code::NONE {
        for e in errors.iter_mut().flatten() {
            if *e == code::NONE {
                *e = written;
            }
        }
    }
    let topics = body
        .topics
        .iter()
        .zip(errors)
        .map(|(t, errs)| {
            let partitions = t
                .partitions
                .iter()
                .zip(errs)
                .map(|(p, e)| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(e.into())
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    let resp = OffsetCommitResponse::default().with_topics(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}

/// Writes the commits to the group's offsets partition and, once durable, makes them
/// visible; the error code for all of them otherwise. As part of producer `(id, epoch)`'s
/// transaction when `transaction` is given (TxnOffsetCommit): then, once durable, they
/// wait for the transaction's marker instead.
pub(crate) async fn write(
    shard: &Rc<Shard>,
    group: &str,
    items: Vec<(String, i32, CommitValue)>,
    transaction: Option<(i64, i16)>,
) -> ErrorCode {
    if items.is_empty() {
        return code::NONE;
    }
    let groups = &shard.groups;
    if !groups.has_room_for(items.len()) {
        tracing::warn!(group, "committed offsets limit reached; commit refused");
        return code::COORDINATOR_NOT_AVAILABLE;
    }
    let recs: OffsetsRecords = items
        .iter()
        .map(|(t, p, v)| {
            (
                records::commit_key(group, t, *p),
                Some(records::commit_value(v)),
            )
        })
        .collect();
    let partition = groups.partition_of(group);
    match persist::append_as(shard, partition, &recs, transaction).await {
        Ok(base) => match transaction {
            Some((producer_id, _)) => {
                groups.apply_txn_commits(group, producer_id, items, base);
                code::NONE
            }
            None => {
                crate::admin::metrics::offsets_committed(items.len());
                groups.apply_commits(group, items, base);
                code::NONE
            }
        },
        Err(e) => e,
    }
}
