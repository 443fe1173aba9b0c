//! AlterConfigs (replace a topic's configs) and IncrementalAlterConfigs (set, delete,
//! append, subtract single keys). Validated here, recorded in the metadata log by the
//! controller, then applied live on every shard that owns a partition of the topic.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, ApiKey, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use sluice_control::rpc::Request as ControllerRequest;

use super::create_topics::catalog_error_code;
use super::describe_configs::RESOURCE_TOPIC;
use super::ApiSpec;
use crate::catalog::log_config;
use crate::cluster::{change_metadata, CONTROLLER_REQUEST_TIMEOUT};
use crate::errors::code;
use crate::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::shard::{Shard, ShardOp};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::AlterConfigs,
    min: 0,
    max: 2,
};
pub const INCREMENTAL_SPEC: ApiSpec = ApiSpec {
    key: ApiKey::IncrementalAlterConfigs,
    min: 0,
    max: 1,
};

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// Validates `configs` (the topic's full new set), has the controller record the keys
/// that differ, then applies them on this broker's shards at once (other brokers apply
/// them when their image shows the change): (error, message).
async fn apply(
    shard: &Rc<Shard>,
    topic: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> (i16, Option<String>) {
    let Some(current) = shard.catalog.get(topic) else {
        return (
            code::UNKNOWN_TOPIC_OR_PARTITION,
            Some(format!("topic {topic} does not exist")),
        );
    };
    if let Err(e) = log_config(&shard.catalog.defaults, &configs) {
        return (catalog_error_code(&e), Some(e.to_string()));
    }
    let mut changes: Vec<(String, Option<String>)> = current
        .configs
        .keys()
        .filter(|k| !configs.contains_key(*k))
        .map(|k| (k.clone(), None))
        .collect();
    changes.extend(
        configs
            .iter()
            .filter(|(k, v)| current.configs.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), Some(v.clone()))),
    );
    if validate_only || changes.is_empty() {
        return (code::NONE, None);
    }
    let req = ControllerRequest::SetConfigs {
        topic: topic.to_string(),
        configs: changes,
    };
    if let Err((error, message)) =
        change_metadata(&shard.cluster, &req, CONTROLLER_REQUEST_TIMEOUT).await
    {
        return (error, Some(message));
    }
    let calls = (0..shard.count)
        .map(|s| {
            (
                s,
                ShardOp::ApplyConfig {
                    topic: topic.to_string(),
                },
            )
        })
        .collect();
    shard.call_all(calls).await;
    tracing::info!(topic, "topic configs changed");
    (code::NONE, None)
}

pub async fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let body: AlterConfigsRequest = decode_body(req)?;
    let mut responses = Vec::with_capacity(body.resources.len());
    for r in &body.resources {
        let (error, message) = if r.resource_type != RESOURCE_TOPIC {
            (
                code::INVALID_REQUEST,
                Some("only topic configs can be altered".to_string()),
            )
        } else {
            let configs = r
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect();
            apply(shard, &r.resource_name, configs, body.validate_only).await
        };
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(error)
                .with_error_message(message.map(StrBytes::from_string))
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone()),
        );
    }
    let resp = AlterConfigsResponse::default().with_responses(responses);
    encode_response(req.header.correlation_id, req.version, &resp)
}

pub async fn handle_incremental(
    shard: &Rc<Shard>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: IncrementalAlterConfigsRequest = decode_body(req)?;
    let mut responses = Vec::with_capacity(body.resources.len());
    for r in &body.resources {
        let (error, message) = if r.resource_type != RESOURCE_TOPIC {
            (
                code::INVALID_REQUEST,
                Some("only topic configs can be altered".to_string()),
            )
        } else {
            match shard.catalog.get(&r.resource_name) {
                None => (code::UNKNOWN_TOPIC_OR_PARTITION, None),
                Some(meta) => {
                    let mut configs = meta.configs.clone();
                    let mut bad = None;
                    for c in &r.configs {
                        match (c.config_operation, &c.value) {
                            (OP_SET, Some(v)) => {
                                configs.insert(c.name.to_string(), v.to_string());
                            }
                            (OP_DELETE, _) => {
                                configs.remove(c.name.as_str());
                            }
                            _ => {
                                bad = Some(format!(
                                    "operation {} on {} is not supported",
                                    c.config_operation, c.name
                                ))
                            }
                        }
                    }
                    match bad {
                        Some(m) => (code::INVALID_CONFIG, Some(m)),
                        None => apply(shard, &r.resource_name, configs, body.validate_only).await,
                    }
                }
            }
        };
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(error)
                .with_error_message(message.map(StrBytes::from_string))
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone()),
        );
    }
    let resp = IncrementalAlterConfigsResponse::default().with_responses(responses);
    encode_response(req.header.correlation_id, req.version, &resp)
}
