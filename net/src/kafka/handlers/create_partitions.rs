//! CreatePartitions: the controller places the new partitions (as for a new topic) or
//! checks the replicas the request assigns them (registered brokers, none twice, the
//! topic's replication factor, one assignment per new partition: Kafka's
//! INVALID_REPLICA_ASSIGNMENT otherwise); their logs are created by their leaders' shards
//! on first use.

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{ApiKey, CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use sluice_control::rpc::Request as ControllerRequest;
use sluice_control::BrokerId;

use super::create_topics::check_replica_count;
use super::ApiSpec;
use crate::broker::catalog::PARTITIONS_PER_TOPIC_MAX;
use crate::broker::cluster::{change_metadata, CONTROLLER_REQUEST_TIMEOUT};
use crate::broker::shard::Shard;
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::{Authz, AUTHORIZATION_FAILED};
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::CreatePartitions,
    min: 0,
    max: 3,
};

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: CreatePartitionsRequest = decode_body(req)?;
    let mut results = Vec::with_capacity(body.topics.len());
    for t in &body.topics {
        let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        // Kafka's check: ALTER on the topic.
        if !authz.topic(AclOperation::Alter, &t.name) {
            results.push(
                r.with_error_code(code::TOPIC_AUTHORIZATION_FAILED.into())
                    .with_error_message(Some(StrBytes::from_static_str(AUTHORIZATION_FAILED))),
            );
            continue;
        }
        if t.name.0.as_str() == crate::groups::OFFSETS_TOPIC {
            // A group's partition is a function of the count: changing it would strand
            // every group's committed offsets.
            results.push(
                r.with_error_code(code::INVALID_PARTITIONS.into())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "__consumer_offsets keeps its partition count",
                    ))),
            );
            continue;
        }
        if t.assignments.as_ref().map_or(0, Vec::len) > PARTITIONS_PER_TOPIC_MAX as usize {
            results.push(
                r.with_error_code(code::INVALID_PARTITIONS.into())
                    .with_error_message(Some(StrBytes::from_string(format!(
                        "more than {PARTITIONS_PER_TOPIC_MAX} partitions assigned"
                    )))),
            );
            continue;
        }
        let too_long = t
            .assignments
            .iter()
            .flatten()
            .find_map(|a| check_replica_count(a.broker_ids.len()).err());
        if let Some((error, message)) = too_long {
            results.push(
                r.with_error_code(error.into())
                    .with_error_message(Some(StrBytes::from_string(message))),
            );
            continue;
        }
        let assignment: Vec<Vec<BrokerId>> = t
            .assignments
            .iter()
            .flatten()
            .map(|a| a.broker_ids.iter().map(|b| BrokerId(b.0)).collect())
            .collect();
        let ask = ControllerRequest::CreatePartitions {
            name: t.name.0.to_string(),
            count: t.count,
            validate_only: body.validate_only,
            assignment,
        };
        results.push(
            match change_metadata(&shard.cluster, &ask, CONTROLLER_REQUEST_TIMEOUT).await {
                Ok(_) => {
                    tracing::info!(topic = %t.name.0.as_str(), count = t.count, "partitions added");
                    r
                }
                Err((error, message)) => r
                    .with_error_code(error.into())
                    .with_error_message(Some(StrBytes::from_string(message))),
            },
        );
    }
    let resp = CreatePartitionsResponse::default().with_results(results);
    encode_response(req.header.correlation_id, req.version, &resp)
}
