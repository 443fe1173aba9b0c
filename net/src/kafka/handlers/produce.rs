//! Produce: split by owning shard, appended and made durable there, answered as one in
//! request order. acks=1/all are answered once the engine reports the batch durable
//! (written, or synced for `flush.policy=fsync` topics); acks=0 is never answered. A batch
//! refused for some of its records (keyless records on a compacted topic) lists them in
//! `record_errors` (KIP-467, v8+) with INVALID_RECORD.

use std::rc::Rc;

use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSpec;
use crate::broker::shard::{
    split_by_shard, ProducePartResult, RecordErrors, Shard, ShardOp, ShardReply,
};
use crate::groups::OFFSETS_TOPIC;
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;
use crate::store::{Offset, PartitionId, TopicPartition};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::Produce,
    min: 3,
    max: 9,
};

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<Option<ResponseFrame>, FrameError> {
    let body: ProduceRequest = decode_body(req)?;
    let acks = body.acks;
    let mut items = Vec::new();
    // Kafka's checks: WRITE on the transactional id (every partition refused without
    // it), WRITE on each topic.
    let txn_refused = body
        .transactional_id
        .as_deref()
        .is_some_and(|id| !authz.transactional_id(AclOperation::Write, id));
    let mut refused = Vec::new();
    let mut shape = Vec::with_capacity(body.topic_data.len());
    for t in &body.topic_data {
        let mut parts = Vec::with_capacity(t.partition_data.len());
        let why = if txn_refused {
            Some(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        } else if !authz.topic(AclOperation::Write, &t.name) {
            Some(code::TOPIC_AUTHORIZATION_FAILED)
        } else {
            None
        };
        for p in &t.partition_data {
            refused.push(why);
            parts.push(p.index);
            let tp = TopicPartition {
                topic: t.name.0.to_string(),
                partition: PartitionId(p.index),
            };
            items.push((tp, p.records.clone().unwrap_or_default()));
        }
        shape.push((t.name.clone(), parts));
    }
    let n = items.len();
    let mut results = vec![
        ProducePartResult {
            error: code::UNKNOWN_SERVER_ERROR,
            base_offset: Offset(-1),
            log_start: Offset(-1),
            record_errors: None,
        };
        n
    ];
    if !(-1..=1).contains(&acks) {
        results
            .iter_mut()
            .for_each(|r| r.error = code::INVALID_REQUIRED_ACKS);
    } else {
        shard.wait_not_moving(items.iter().map(|(tp, _)| tp)).await;
        let groups = split_by_shard(shard, items);
        let mut calls = Vec::with_capacity(groups.len());
        let mut positions = Vec::with_capacity(groups.len());
        for (s, group) in groups {
            let mut idx = Vec::with_capacity(group.len());
            let mut parts = Vec::with_capacity(group.len());
            for (i, tp, data) in group {
                if let Some(why) = refused[i] {
                    results[i].error = why;
                    continue;
                }
                if tp.topic == OFFSETS_TOPIC {
                    // Only the group coordinator writes there.
                    tracing::warn!(
                        client_id = req.header.client_id.as_deref().unwrap_or(""),
                        "produce to the internal offsets topic refused"
                    );
                    results[i].error = code::INVALID_TOPIC_EXCEPTION;
                    continue;
                }
                idx.push(i);
                parts.push((tp, data));
            }
            positions.push(idx);
            calls.push((
                s,
                ShardOp::Produce {
                    acks,
                    timeout_ms: body.timeout_ms.max(0) as u64,
                    parts,
                },
            ));
        }
        for (idx, reply) in positions.into_iter().zip(shard.call_all(calls).await) {
            match reply {
                ShardReply::Produce(rs) => {
                    for (i, r) in idx.into_iter().zip(rs) {
                        results[i] = r;
                    }
                }
                _ => {
                    for i in idx {
                        results[i].error = code::NOT_LEADER_OR_FOLLOWER;
                    }
                }
            }
        }
    }
    if acks == 0 {
        return Ok(None);
    }
    let mut it = results.into_iter();
    let responses = shape
        .into_iter()
        .map(|(name, parts)| {
            let partition_responses = parts
                .into_iter()
                .map(|index| {
                    let r = it.next().unwrap_or(ProducePartResult {
                        error: code::UNKNOWN_SERVER_ERROR,
                        base_offset: Offset(-1),
                        log_start: Offset(-1),
                        record_errors: None,
                    });
                    let answer = PartitionProduceResponse::default()
                        .with_index(index)
                        .with_error_code(r.error.into())
                        .with_base_offset(r.base_offset.0)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(r.log_start.0);
                    match r.record_errors {
                        Some(e) => with_record_errors(answer, *e),
                        None => answer,
                    }
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(partition_responses)
        })
        .collect();
    let resp = ProduceResponse::default().with_responses(responses);
    encode_response(req.header.correlation_id, req.version, &resp).map(Some)
}

/// KIP-467 (Produce v8+): the records of the batch that were invalid and why, and the
/// partition's message. Older versions carry neither; their clients see the error code.
fn with_record_errors(
    answer: PartitionProduceResponse,
    e: RecordErrors,
) -> PartitionProduceResponse {
    let records = e
        .records
        .into_iter()
        .map(|(batch_index, message)| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(batch_index)
                .with_batch_index_error_message(Some(StrBytes::from_string(message)))
        })
        .collect();
    answer
        .with_record_errors(records)
        .with_error_message(Some(StrBytes::from_string(e.message)))
}
