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

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::AddPartitionsToTxn,
    min: 0,
    max: 3,
};

pub async fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let body: AddPartitionsToTxnRequest = decode_body(req)?;
    let asked: Vec<(String, i32)> = body
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect();
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
    let errors: Vec<ErrorCode> = if unknown.iter().any(|u| *u) {
        unknown
            .iter()
            .map(|u| {
                if *u {
                    code::UNKNOWN_TOPIC_OR_PARTITION
                } else {
                    code::OPERATION_NOT_ATTEMPTED
                }
            })
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
