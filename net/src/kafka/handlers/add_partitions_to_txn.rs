//! AddPartitionsToTxn. v0–3 (a producer's own request): partitions join its transaction
//! at the transaction coordinator. Every partition must exist: if one does not, it is
//! answered UNKNOWN_TOPIC_OR_PARTITION, the others OPERATION_NOT_ATTEMPTED, and nothing is
//! added (as Kafka does). v4–5 (KIP-890, between brokers): several transactions at once;
//! `verify_only` asks whether partitions are in a transaction (`txn::verify`) without
//! adding them; v5 adds for a transactions v2 producer (a Produce v12 at the leader).

use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey};
use sluice_control::PartitionId;

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::AddPartitionsToTxn,
    min: 0,
    max: 5,
};

/// Transactions one batched (v4) request may carry.
const TRANSACTIONS_MAX: usize = 1_000;

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: AddPartitionsToTxnRequest = decode_body(req)?;
    if req.version >= 4 {
        return handle_batched(shard, authz, req, body).await;
    }
    let asked = partitions_of(&body.v3_and_below_topics);
    // Kafka's checks: WRITE on the transactional id (every partition refused without
    // it), WRITE on each topic (the others then not attempted, as for unknown ones).
    let txn_id = body.v3_and_below_transactional_id.as_str();
    let refused: Vec<Option<ErrorCode>> = {
        let image = shard.cluster.image();
        let txn_allowed = authz.transactional_id(AclOperation::Write, txn_id);
        asked
            .iter()
            .map(|(t, p)| {
                if !txn_allowed {
                    Some(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                } else if !authz.topic(AclOperation::Write, t) {
                    Some(code::TOPIC_AUTHORIZATION_FAILED)
                } else if image
                    .topic_by_name(t)
                    .is_none_or(|topic| !topic.partitions.contains_key(&PartitionId(*p)))
                {
                    Some(code::UNKNOWN_TOPIC_OR_PARTITION)
                } else {
                    None
                }
            })
            .collect()
    };
    let errors: Vec<ErrorCode> = if refused.iter().any(Option::is_some) {
        refused
            .iter()
            .map(|r| r.unwrap_or(code::OPERATION_NOT_ATTEMPTED))
            .collect()
    } else {
        let producer = (
            body.v3_and_below_producer_id.0,
            body.v3_and_below_producer_epoch,
        );
        add(shard, txn_id, producer, asked, false)
            .await
            .into_iter()
            // PRODUCER_FENCED came with v2; older clients know INVALID_PRODUCER_EPOCH.
            .map(|e| match e {
                code::PRODUCER_FENCED if req.version < 2 => code::INVALID_PRODUCER_EPOCH,
                e => e,
            })
            .collect()
    };
    let topics = topic_results(&body.v3_and_below_topics, errors);
    let resp = AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}

/// Adds `asked` to the transaction of `id` if every partition exists: one error per
/// partition (UNKNOWN_TOPIC_OR_PARTITION for missing ones and OPERATION_NOT_ATTEMPTED for
/// the others, as Kafka answers).
async fn add(
    shard: &Rc<Shard>,
    id: &str,
    producer: (i64, i16),
    asked: Vec<(String, i32)>,
    v2: bool,
) -> Vec<ErrorCode> {
    let unknown: Vec<bool> = {
        let image = shard.cluster.image();
        asked
            .iter()
            .map(|(t, p)| {
                image
                    .topic_by_name(t)
                    .is_none_or(|topic| !topic.partitions.contains_key(&PartitionId(*p)))
            })
            .collect()
    };
    if unknown.iter().any(|u| *u) {
        return unknown
            .iter()
            .map(|u| {
                if *u {
                    code::UNKNOWN_TOPIC_OR_PARTITION
                } else {
                    code::OPERATION_NOT_ATTEMPTED
                }
            })
            .collect();
    }
    let n = asked.len();
    let added = crate::txn::coordinator::add_partitions(shard, id, producer, asked, v2).await;
    vec![added.err().unwrap_or(code::NONE); n]
}

/// v4: each transaction's partitions verified (`verify_only`) or added.
async fn handle_batched(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
    body: AddPartitionsToTxnRequest,
) -> Result<ResponseFrame, FrameError> {
    let mut resp = AddPartitionsToTxnResponse::default();
    // Kafka's check: the batched form is for brokers, CLUSTER_ACTION on the cluster.
    if !authz.cluster(AclOperation::ClusterAction) {
        resp.error_code = code::CLUSTER_AUTHORIZATION_FAILED.into();
        return encode_response(req.header.correlation_id, req.version, &resp);
    }
    if body.transactions.len() > TRANSACTIONS_MAX {
        tracing::info!(
            transactions = body.transactions.len(),
            "AddPartitionsToTxn refused: too many transactions"
        );
        resp.error_code = code::INVALID_REQUEST.into();
        return encode_response(req.header.correlation_id, req.version, &resp);
    }
    for t in &body.transactions {
        let id = t.transactional_id.0.as_str();
        let producer = (t.producer_id.0, t.producer_epoch);
        let asked = partitions_of(&t.topics);
        let errors: Vec<ErrorCode> = if id.is_empty() {
            vec![code::INVALID_REQUEST; asked.len()]
        } else if t.verify_only {
            crate::txn::coordinator::verify_partitions(shard, id, producer, &asked)
                .unwrap_or_else(|e| vec![e; asked.len()])
        } else {
            add(shard, id, producer, asked, req.version >= 5).await
        };
        let topic_results = topic_results(&t.topics, errors);
        resp.results_by_transaction.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(topic_results),
        );
    }
    encode_response(req.header.correlation_id, req.version, &resp)
}

/// Every (topic, partition) the request's topics name, in order.
fn partitions_of(topics: &[AddPartitionsToTxnTopic]) -> Vec<(String, i32)> {
    topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect()
}

/// The answer for `topics`, one error per partition in the order of [`partitions_of`].
fn topic_results(
    topics: &[AddPartitionsToTxnTopic],
    errors: Vec<ErrorCode>,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut errors = errors.into_iter();
    topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .zip(errors.by_ref())
                .map(|(p, e)| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*p)
                        .with_partition_error_code(e.into())
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(partitions)
        })
        .collect()
}
