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

/// One resource of either request: its type, its name and the change it asks for
/// (`Err`: why it asks for none).
type Resource<'a> = (i8, &'a StrBytes, Result<Change, String>);

/// The per-resource answer of either API (the same fields in two generated types).
trait ResourceAnswer {
    fn new(error: i16, message: Option<StrBytes>, resource_type: i8, name: StrBytes) -> Self;
}

macro_rules! resource_answer {
    ($($answer:ty),*) => {$(
        impl ResourceAnswer for $answer {
            fn new(error: i16, message: Option<StrBytes>, resource_type: i8, name: StrBytes) -> Self {
                <$answer>::default()
                    .with_error_code(error)
                    .with_error_message(message)
                    .with_resource_type(resource_type)
                    .with_resource_name(name)
            }
        }
    )*};
}

resource_answer!(
    alter_configs_response::AlterConfigsResourceResponse,
    incremental_alter_configs_response::AlterConfigsResourceResponse
);

/// Alters each resource in request order and answers each. Only topics are altered; a
/// request that makes no change is INVALID_CONFIG.
async fn alter_each<'a, R: ResourceAnswer>(
    shard: &Rc<Shard>,
    resources: impl Iterator<Item = Resource<'a>>,
    validate_only: bool,
) -> Vec<R> {
    let mut out = Vec::with_capacity(resources.size_hint().0);
    for (resource_type, name, change) in resources {
        let (error, message) = if resource_type == super::group_configs::RESOURCE_GROUP {
            match change {
                Ok(Change::Keys(keys)) => {
                    super::group_configs::alter(shard, name, keys, validate_only).await
                }
                Ok(Change::Replace(_)) => (
                    code::INVALID_REQUEST,
                    Some("group configs are altered with IncrementalAlterConfigs".into()),
                ),
                Err(m) => (code::INVALID_CONFIG, Some(m)),
            }
        } else if resource_type != RESOURCE_TOPIC {
            (
                code::INVALID_REQUEST,
                Some("only topic configs can be altered".to_string()),
            )
        } else {
            match change {
                Err(m) => (code::INVALID_CONFIG, Some(m)),
                Ok(change) => apply(shard, name, change, validate_only).await,
            }
        };
        let message = message.map(StrBytes::from_string);
        out.push(R::new(error.into(), message, resource_type, name.clone()));
    }
    out
}

pub async fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let body: AlterConfigsRequest = decode_body(req)?;
    let resources = body.resources.iter().map(|r| {
        let set = r.configs.iter().filter_map(|c| {
            let v = c.value.as_ref()?;
            Some((c.name.to_string(), v.to_string()))
        });
        let change = Ok(Change::Replace(set.collect()));
        (r.resource_type, &r.resource_name, change)
    });
    let responses = alter_each(shard, resources, body.validate_only).await;
    let resp = AlterConfigsResponse::default().with_responses(responses);
    encode_response(req.header.correlation_id, req.version, &resp)
}

pub async fn handle_incremental(
    shard: &Rc<Shard>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: IncrementalAlterConfigsRequest = decode_body(req)?;
    let resources = body.resources.iter().map(|r| {
        let change = incremental_keys(&r.configs).map(Change::Keys);
        (r.resource_type, &r.resource_name, change)
    });
    let responses = alter_each(shard, resources, body.validate_only).await;
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
