//! DeleteTopics: removed from the catalog first (so no new work finds them), then every
//! shard deletes the partition logs it owns.

use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::create_topics::catalog_error_code;
use super::ApiSpec;
use crate::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::shard::{Shard, ShardOp};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DeleteTopics,
    min: 1,
    max: 6,
};

pub async fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
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
            shard
                .catalog
                .list()
                .into_iter()
                .find(|m| Uuid::from_bytes(m.topic_id) == id)
                .map(|m| m.name)
        });
        let Some(name) = name else {
            responses.push(
                DeletableTopicResult::default()
                    .with_topic_id(id)
                    .with_error_code(crate::errors::code::UNKNOWN_TOPIC_OR_PARTITION),
            );
            continue;
        };
        let mut result = DeletableTopicResult::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
        match shard.catalog.delete(&name) {
            Ok(meta) => {
                let calls = (0..shard.count)
                    .map(|s| {
                        (
                            s,
                            ShardOp::DeleteTopic {
                                name: name.clone(),
                                partitions: meta.partitions,
                            },
                        )
                    })
                    .collect();
                shard.call_all(calls).await;
                tracing::info!(topic = %name, "deleted topic");
                result = result.with_topic_id(Uuid::from_bytes(meta.topic_id));
            }
            Err(e) => {
                result = result
                    .with_error_code(catalog_error_code(&e))
                    .with_error_message(Some(StrBytes::from_string(e.to_string())));
            }
        }
        responses.push(result);
    }
    let resp = DeleteTopicsResponse::default().with_responses(responses);
    encode_response(req.header.correlation_id, req.version, &resp)
}
