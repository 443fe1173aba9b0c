//! Produce: split by owning shard, appended and made durable there, answered as one in
//! request order. acks=1/all are answered once the engine reports the batch durable
//! (written, or synced for `flush.policy=fsync` topics); acks=0 is never answered. A batch
//! refused for some of its records (keyless records on a compacted topic) lists them in
//! `record_errors` (KIP-467, v8+) with INVALID_RECORD. A transactional write that would
//! open its producer's transaction in a partition is first verified with the transaction
//! coordinator (KIP-890 part 1), or, from v12 (transactions v2), the partition is added
//! to the transaction by the leader (`txn::verify`). v10–11 answer with KIP-951's leader
//! hints left empty; v13 (topic ids) is not served.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use bytes::Bytes;

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
use crate::store::{PartitionId, TopicPartition};
use crate::txn::verify::{
    is_transactional, produce_error, transactional_producer, verify, Ask, TxnCheck,
};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::Produce,
    min: 3,
    max: 12,
};

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<Option<ResponseFrame>, FrameError> {
    let body: ProduceRequest = decode_body(req)?;
    let acks = body.acks;
    let mut items = Vec::new();
    // Kafka's checks: transactional records need a transactional id, with WRITE on it
    // (every partition refused otherwise: such a write would skip KIP-890's
    // verification); WRITE on each topic.
    let txn_refused = match body.transactional_id.as_deref() {
        Some(id) => !authz.transactional_id(AclOperation::Write, id),
        None => without_transactional_id(req, &body),
    };
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
    let mut results = vec![ProducePartResult::failed(code::UNKNOWN_SERVER_ERROR); items.len()];
    if !(-1..=1).contains(&acks) {
        results
            .iter_mut()
            .for_each(|r| r.error = code::INVALID_REQUIRED_ACKS);
    } else {
        shard.wait_not_moving(items.iter().map(|(tp, _)| tp)).await;
        let timeout_ms = body.timeout_ms.max(0) as u64;
        let mut allowed = Vec::with_capacity(items.len());
        let mut allowed_at = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            match refused[i] {
                Some(why) => results[i] = ProducePartResult::failed(why),
                None => {
                    allowed_at.push(i);
                    allowed.push(item);
                }
            }
        }
        let answers = match &body.transactional_id {
            None => append_all(shard, req, allowed, acks, timeout_ms, None).await,
            Some(id) => {
                // Kept for the partitions that are verified before they are appended.
                let kept = allowed.clone();
                let check = Some(TxnCheck::default());
                let mut answers = append_all(shard, req, allowed, acks, timeout_ms, check).await;
                let limits = (acks, timeout_ms);
                verify_and_append(shard, req, id.as_str(), &kept, &mut answers, limits).await;
                answers
            }
        };
        for (i, answer) in allowed_at.into_iter().zip(answers) {
            results[i] = answer;
        }
    }
    if acks == 0 {
        return Ok(None);
    }
    results
        .iter_mut()
        .filter(|r| r.verify_guard.is_some())
        .for_each(|r| *r = ProducePartResult::failed(code::UNKNOWN_SERVER_ERROR));
    let mut it = results.into_iter();
    let responses = shape
        .into_iter()
        .map(|(name, parts)| {
            let partition_responses = parts
                .into_iter()
                .map(|index| {
                    let r = it
                        .next()
                        .unwrap_or(ProducePartResult::failed(code::UNKNOWN_SERVER_ERROR));
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

/// Whether a Produce without a transactional id carries transactional records (refused,
/// as Kafka refuses them, with TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
fn without_transactional_id(req: &Request, body: &ProduceRequest) -> bool {
    let transactional = body
        .topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .any(|p| p.records.as_deref().is_some_and(is_transactional));
    if transactional {
        tracing::warn!(
            client_id = req.header.client_id.as_deref().unwrap_or(""),
            "produce of transactional records without a transactional id refused"
        );
    }
    transactional
}

/// Appends each partition's records through its owning shard (internal topics refused):
/// one answer per item, in order.
async fn append_all(
    shard: &Rc<Shard>,
    req: &Request,
    items: Vec<(TopicPartition, Bytes)>,
    acks: i16,
    timeout_ms: u64,
    txn: Option<TxnCheck>,
) -> Vec<ProducePartResult> {
    let mut results = vec![ProducePartResult::failed(code::UNKNOWN_SERVER_ERROR); items.len()];
    let groups = split_by_shard(shard, items);
    let mut calls = Vec::with_capacity(groups.len());
    let mut positions = Vec::with_capacity(groups.len());
    for (s, group) in groups {
        let mut idx = Vec::with_capacity(group.len());
        let mut parts = Vec::with_capacity(group.len());
        for (i, tp, data) in group {
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
                timeout_ms,
                parts,
                txn: txn.clone(),
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
    results
}

/// KIP-890 (`txn::verify`): the partitions whose transactional write waits for
/// verification are checked with the coordinator of `id`, and those in the transaction
/// appended in a second round with their guards; the others get the coordinator's
/// verdict as a Produce error.
async fn verify_and_append(
    shard: &Rc<Shard>,
    req: &Request,
    id: &str,
    items: &[(TopicPartition, Bytes)],
    results: &mut [ProducePartResult],
    (acks, timeout_ms): (i16, u64),
) {
    let pending: Vec<usize> = (0..results.len())
        .filter(|i| results[*i].verify_guard.is_some())
        .collect();
    if pending.is_empty() {
        return;
    }
    let producers: BTreeSet<(i64, i16)> = pending
        .iter()
        .filter_map(|i| transactional_producer(&items[*i].1))
        .collect();
    let verdicts = match (producers.len(), producers.first()) {
        (1, Some(producer)) => {
            let partitions: Vec<(String, i32)> = pending
                .iter()
                .map(|i| (items[*i].0.topic.clone(), items[*i].0.partition.0))
                .collect();
            let ask = if req.version >= 12 {
                Ask::Add
            } else {
                Ask::Verify
            };
            verify(shard, id, *producer, &partitions, ask).await
        }
        // Kafka: transactional records of one request come from one producer.
        _ => vec![code::INVALID_PRODUCER_ID_MAPPING; pending.len()],
    };
    let mut check = TxnCheck {
        guards: HashMap::new(),
        last_round: true,
    };
    let mut again = Vec::new();
    for (i, verdict) in pending.iter().zip(verdicts) {
        if verdict == code::NONE {
            check
                .guards
                .insert(items[*i].0.clone(), results[*i].verify_guard.unwrap_or(0));
            again.push(*i);
        } else {
            tracing::info!(
                transactional_id = id,
                partition = %items[*i].0,
                verdict = i16::from(verdict),
                "transactional write refused: the coordinator did not verify the partition"
            );
            results[*i] = ProducePartResult::failed(produce_error(verdict, req.version));
        }
    }
    if again.is_empty() {
        return;
    }
    let subset: Vec<(TopicPartition, Bytes)> = again.iter().map(|i| items[*i].clone()).collect();
    let answers = append_all(shard, req, subset, acks, timeout_ms, Some(check)).await;
    for (i, r) in again.into_iter().zip(answers) {
        results[i] = r;
    }
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
