//! DeleteTopics: removed from the metadata log by the controller first (so no new work
//! finds them), then every shard deletes the partition logs it owns.

use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use sluice_control::rpc::Request as ControllerRequest;

use super::ApiSpec;
use crate::broker::cluster::{change_metadata, CONTROLLER_REQUEST_TIMEOUT};
use crate::broker::shard::{Shard, ShardOp};
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::{Authz, AUTHORIZATION_FAILED};
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DeleteTopics,
    min: 1,
    max: 6,
};

/// Deletes one topic through the controller, then this broker's logs of it at once (other
/// brokers delete theirs when their image shows the deletion).
async fn delete(shard: &Rc<Shard>, name: String) -> DeletableTopicResult {
    let result = DeletableTopicResult::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
    if name == crate::groups::OFFSETS_TOPIC {
        tracing::warn!(topic = %name, "deleting the internal offsets topic refused");
        return result
            .with_error_code(code::INVALID_TOPIC_EXCEPTION.into())
            .with_error_message(Some(StrBytes::from_static_str(
                "__consumer_offsets is internal: deleting it would lose every committed offset",
            )));
    }
    let before = shard.cluster.image();
    let Some(topic) = before.topic_by_name(&name) else {
        return result.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION.into());
    };
    let req = ControllerRequest::DeleteTopic { name: name.clone() };
    match change_metadata(&shard.cluster, &req, CONTROLLER_REQUEST_TIMEOUT).await {
        Ok(_) => {
            let partitions = topic.partitions.len() as i32;
            let calls = (0..shard.count)
                .map(|s| {
                    (
                        s,
                        ShardOp::DeleteTopic {
                            name: name.clone(),
                            partitions,
                        },
                    )
                })
                .collect();
            shard.call_all(calls).await;
            tracing::info!(topic = %name, "deleted topic");
            result.with_topic_id(Uuid::from_u128(topic.id.0))
        }
        Err((error, message)) => result
            .with_error_code(error.into())
            .with_error_message(Some(StrBytes::from_string(message))),
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: DeleteTopicsRequest = decode_body(req)?;
    let mut names: Vec<(Option<String>, Uuid)> = body
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), Uuid::nil()))
        .collect();
    for t in &body.topics {
        names.push((t.name.as_ref().map(|n| n.0.to_string()), t.topic_id));
    }
    let mut responses = Vec::with_capacity(names.len());
    for (name, id) in names {
        let name = name.or_else(|| {
            let image = shard.cluster.image();
            image
                .topic(sluice_control::TopicId(id.as_u128()))
                .map(|t| t.name.clone())
        });
        let Some(name) = name else {
            responses.push(
                DeletableTopicResult::default()
                    .with_topic_id(id)
                    .with_error_code(crate::kafka::errors::code::UNKNOWN_TOPIC_OR_PARTITION.into()),
            );
            continue;
        };
        // Kafka's check: DELETE on the topic.
        if !authz.topic(AclOperation::Delete, &name) {
            responses.push(
                DeletableTopicResult::default()
                    .with_name(Some(TopicName(StrBytes::from_string(name))))
                    .with_topic_id(id)
                    .with_error_code(code::TOPIC_AUTHORIZATION_FAILED.into())
                    .with_error_message(Some(StrBytes::from_static_str(AUTHORIZATION_FAILED))),
            );
            continue;
        }
        responses.push(delete(shard, name).await);
    }
    let resp = DeleteTopicsResponse::default().with_responses(responses);
    encode_response(req.header.correlation_id, req.version, &resp)
}
