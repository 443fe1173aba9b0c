//! AddPartitionsToTxn v0–3 (a producer's own request): partitions join its transaction
//! at the transaction coordinator. Every partition must exist: if one does not, it is
//! answered UNKNOWN_TOPIC_OR_PARTITION, the others OPERATION_NOT_ATTEMPTED, and nothing is
//! added (as Kafka does). The batched broker form (v4+, KIP-890) is not served.

use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
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
    max: 3,
};

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: AddPartitionsToTxnRequest = decode_body(req)?;
    let asked: Vec<(String, i32)> = body
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect();
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
        let added = crate::txn::coordinator::add_partitions(
            shard,
            body.v3_and_below_transactional_id.as_str(),
            (
                body.v3_and_below_producer_id.0,
                body.v3_and_below_producer_epoch,
            ),
            asked.clone(),
        )
        .await;
        let error = match added {
            Ok(()) => code::NONE,
            // PRODUCER_FENCED came with v2; older clients know INVALID_PRODUCER_EPOCH.
            Err(code::PRODUCER_FENCED) if req.version < 2 => code::INVALID_PRODUCER_EPOCH,
            Err(e) => e,
        };
        vec![error; asked.len()]
    };
    let mut errors = errors.into_iter();
    let topics = body
        .v3_and_below_topics
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
        .collect();
    let resp = AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}
