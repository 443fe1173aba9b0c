//! CreatePartitions: raises a topic's partition count; the new partitions' logs are created
//! by their shards on first use.

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{ApiKey, CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::create_topics::catalog_error_code;
use super::ApiSpec;
use crate::errors::code;
use crate::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::shard::Shard;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::CreatePartitions,
    min: 0,
    max: 3,
};

pub fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let body: CreatePartitionsRequest = decode_body(req)?;
    let results = body
        .topics
        .iter()
        .map(|t| {
            let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
                return r
                    .with_error_code(code::INVALID_REQUEST)
                    .with_error_message(Some(StrBytes::from_static_str(
                        "manual replica assignment is not supported",
                    )));
            }
            match shard
                .catalog
                .add_partitions(&t.name.0, t.count, body.validate_only)
            {
                Ok(_) => {
                    tracing::info!(topic = %t.name.0.as_str(), count = t.count, "partitions added");
                    r
                }
                Err(e) => r
                    .with_error_code(catalog_error_code(&e))
                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
            }
        })
        .collect();
    let resp = CreatePartitionsResponse::default().with_results(results);
    encode_response(req.header.correlation_id, req.version, &resp)
}
