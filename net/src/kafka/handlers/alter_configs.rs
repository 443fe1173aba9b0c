//! AlterConfigs (replace a topic's configs) and IncrementalAlterConfigs (set, delete,
//! append, subtract single keys). Validated here, recorded in the metadata log by the
//! controller, then applied live on every shard that owns a partition of the topic.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_request, incremental_alter_configs_response,
    AlterConfigsRequest, AlterConfigsResponse, ApiKey, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use sluice_control::rpc::Request as ControllerRequest;

use super::create_topics::catalog_error_code;
use super::describe_configs::RESOURCE_TOPIC;
use super::ApiSpec;
use crate::broker::catalog::log_config;
use crate::broker::cluster::{change_metadata, CONTROLLER_REQUEST_TIMEOUT};
use crate::broker::shard::{Shard, ShardOp};
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};

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

/// What one alteration asks of a topic's configs.
enum Change {
    /// AlterConfigs: the topic's configs become exactly these.
    Replace(BTreeMap<String, String>),
    /// IncrementalAlterConfigs: set (`Some`) or remove (`None`) single keys.
    Keys(Vec<(String, Option<String>)>),
}

/// Validates the change, has the controller record it, then applies it on this broker's
/// shards at once (other brokers apply it when their image shows it): (error, message).
///
/// Whether the topic exists and which keys a replace removes are the controller's to
/// decide, from its own image: this broker's may lag behind it (a topic created or
/// altered through another broker a moment ago).
async fn apply(
    shard: &Rc<Shard>,
    topic: &str,
    change: Change,
    validate_only: bool,
) -> (ErrorCode, Option<String>) {
    let known = shard.catalog.get(topic);
    let resulting = match &change {
        Change::Replace(configs) => configs.clone(),
        Change::Keys(keys) => {
            let mut configs = known
                .as_ref()
                .map(|m| m.configs.clone())
                .unwrap_or_default();
            for (k, v) in keys {
                match v {
                    Some(v) => configs.insert(k.clone(), v.clone()),
                    None => configs.remove(k),
                };
            }
            configs
        }
    };
    if let Err(e) = log_config(&shard.catalog.defaults, &resulting) {
        return (catalog_error_code(&e), Some(e.to_string()));
    }
    if validate_only {
        return match known {
            Some(_) => (code::NONE, None),
            None => (
                code::UNKNOWN_TOPIC_OR_PARTITION,
                Some(format!("topic {topic} does not exist")),
            ),
        };
    }
    let (configs, replace) = match change {
        Change::Replace(configs) => (
            configs.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            true,
        ),
        Change::Keys(keys) => (keys, false),
    };
    let req = ControllerRequest::SetConfigs {
        topic: topic.to_string(),
        configs,
        replace,
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
            apply(
                shard,
                &r.resource_name,
                Change::Replace(configs),
                body.validate_only,
            )
            .await
        };
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(error.into())
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
            match incremental_keys(&r.configs) {
                Err(m) => (code::INVALID_CONFIG, Some(m)),
                Ok(keys) => {
                    apply(
                        shard,
                        &r.resource_name,
                        Change::Keys(keys),
                        body.validate_only,
                    )
                    .await
                }
            }
        };
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(error.into())
                .with_error_message(message.map(StrBytes::from_string))
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone()),
        );
    }
    let resp = IncrementalAlterConfigsResponse::default().with_responses(responses);
    encode_response(req.header.correlation_id, req.version, &resp)
}

/// IncrementalAlterConfigs operations as key changes: SET and DELETE (APPEND and SUBTRACT
/// apply to list configs, which no topic config here is).
fn incremental_keys(
    ops: &[incremental_alter_configs_request::AlterableConfig],
) -> Result<Vec<(String, Option<String>)>, String> {
    ops.iter()
        .map(|c| match (c.config_operation, &c.value) {
            (OP_SET, Some(v)) => Ok((c.name.to_string(), Some(v.to_string()))),
            (OP_DELETE, _) => Ok((c.name.to_string(), None)),
            _ => Err(format!(
                "operation {} on {} is not supported",
                c.config_operation, c.name
            )),
        })
        .collect()
}
