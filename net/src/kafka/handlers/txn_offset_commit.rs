//! TxnOffsetCommit v0–5: a transactional producer commits a consumer group's offsets as
//! part of its transaction (consume-transform-produce). The group coordinator writes them
//! to `__consumer_offsets` as the producer's transactional records at once; they become
//! visible to OffsetFetch only when the transaction's COMMIT marker lands there, and are
//! dropped at ABORT (`groups::txn_offsets`). From v3 a group member's generation is
//! checked as for OffsetCommit. From v4 the group's offsets partition must be in the
//! transaction, verified with the transaction coordinator (KIP-890 part 1); v5
//! (transactions v2) adds it there instead of AddOffsetsToTxn.

use std::rc::Rc;

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::groups::now_ms;
use crate::groups::records::CommitValue;
use crate::groups::OFFSETS_TOPIC;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;
use crate::txn::verify::{verify, Ask};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::TxnOffsetCommit,
    min: 0,
    max: 5,
};

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: TxnOffsetCommitRequest = decode_body(req)?;
    let group = body.group_id.0.to_string();
    let groups = &shard.groups;
    let producer = (body.producer_id.0, body.producer_epoch);
    // Kafka's checks: WRITE on the transactional id, READ on the group, READ on each
    // topic.
    let membership = if !authz.transactional_id(AclOperation::Write, &body.transactional_id) {
        code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    } else if !authz.group(AclOperation::Read, &group) {
        code::GROUP_AUTHORIZATION_FAILED
    } else if producer.0 < 0 || producer.1 < 0 {
        code::INVALID_PRODUCER_ID_MAPPING
    } else if req.version >= 3 && body.generation_id >= 0 {
        // The member's generation (or, in a consumer-protocol group, its epoch).
        groups.check_commit(
            &group,
            body.generation_id,
            &body.member_id,
            body.group_instance_id.as_deref(),
            9,
        )
    } else {
        groups.coordinates(&group).err().unwrap_or(code::NONE)
    };
    let metadata_max = groups.config().offset_metadata_bytes_max;
    let now = now_ms();
    let mut errors: Vec<Vec<ErrorCode>> = Vec::with_capacity(body.topics.len());
    let mut items: Vec<(String, i32, CommitValue)> = Vec::new();
    for t in &body.topics {
        let count = shard.catalog.partition_count(&t.name.0);
        let topic_refused = super::refuse_topic(authz, AclOperation::Read, &t.name);
        let topic_errors = t
            .partitions
            .iter()
            .map(|p| {
                let metadata = p.committed_metadata.as_deref().unwrap_or("");
                if membership != code::NONE {
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
                }
            })
            .collect();
        errors.push(topic_errors);
    }
    if req.version >= 4 && !items.is_empty() {
        let in_txn = offsets_partition_in_txn(shard, &body, req.version).await;
        if in_txn != code::NONE {
            items.clear();
            errors
                .iter_mut()
                .flatten()
                .filter(|e| **e == code::NONE)
                .for_each(|e| *e = in_txn);
        }
    }
    let written = super::offset_commit::write(shard, &group, items, Some(producer)).await;
    if written != code::NONE {
        errors
            .iter_mut()
            .flatten()
            .filter(|e| **e == code::NONE)
            .for_each(|e| *e = written);
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
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(e.into())
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    let resp = TxnOffsetCommitResponse::default().with_topics(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}

/// KIP-890: the group's `__consumer_offsets` partition is verified to be in the producer's
/// transaction (v4), or added to it (v5, transactions v2), before offsets are written as
/// part of it. Errors as a TxnOffsetCommit client is answered.
async fn offsets_partition_in_txn(
    shard: &Rc<Shard>,
    body: &TxnOffsetCommitRequest,
    version: i16,
) -> ErrorCode {
    let partition = shard.groups.partition_of(&body.group_id.0) as i32;
    let ask = if version >= 5 { Ask::Add } else { Ask::Verify };
    let verdict = verify(
        shard,
        body.transactional_id.as_str(),
        (body.producer_id.0, body.producer_epoch),
        &[(OFFSETS_TOPIC.to_string(), partition)],
        ask,
    )
    .await
    .into_iter()
    .next()
    .unwrap_or(code::UNKNOWN_SERVER_ERROR);
    if verdict != code::NONE {
        tracing::info!(
            transactional_id = body.transactional_id.as_str(),
            group = body.group_id.0.as_str(),
            verdict = i16::from(verdict),
            "transactional offset commit refused: the offsets partition is not in the transaction"
        );
    }
    match verdict {
        code::TRANSACTION_ABORTABLE if version < 5 => code::INVALID_TXN_STATE,
        v => v,
    }
}
