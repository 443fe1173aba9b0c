//! AlterConfigs (replace a topic's or a broker's configs) and IncrementalAlterConfigs
//! (set, delete, append to and subtract from list configs, single keys) on topics, on a
//! broker (its dynamic configs) and on the cluster default (the BROKER resource named "").
//! Broker keys are the broker synonyms of the topic configs Sluice honours
//! (`log.retention.ms`, …); any other is refused by name. Validated here, recorded in the metadata log by the
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
use sluice_control::BrokerId;

use super::create_topics::catalog_error_code;
use super::describe_configs::{config_refusal, RESOURCE_BROKER, RESOURCE_TOPIC};
use super::ApiSpec;
use crate::broker::catalog::log_config;
use crate::broker::cluster::{change_metadata, dynamic_broker_configs, CONTROLLER_REQUEST_TIMEOUT};
use crate::broker::config_keys;
use crate::broker::shard::{Shard, ShardOp};
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;

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
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Topic configs whose value is a comma-separated list (Kafka's `ConfigDef.Type.LIST`),
/// with Kafka's default: the only ones APPEND and SUBTRACT apply to.
const LIST_CONFIGS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("log.cleanup.policy", "delete"),
];

/// One IncrementalAlterConfigs operation on one key.
enum KeyOp {
    Set(String),
    Delete,
    /// Add these list items (those not there yet) to the current list.
    Append(String),
    /// Remove these list items from the current list.
    Subtract(String),
}

/// What one alteration asks of a topic's configs.
enum Change {
    /// AlterConfigs: the topic's configs become exactly these.
    Replace(BTreeMap<String, String>),
    /// IncrementalAlterConfigs: one operation per key.
    Keys(Vec<(String, KeyOp)>),
}

/// The value a list operation leaves (Kafka's `ConfigAdminManager`): the topic's own
/// value, or Kafka's default when it has none, with the items appended (each once) or
/// subtracted. `Err` for a key that is not a list.
fn list_op(current: Option<&String>, key: &str, op: &KeyOp) -> Result<String, String> {
    let Some((_, default)) = LIST_CONFIGS.iter().find(|(k, _)| *k == key) else {
        let verb = if matches!(op, KeyOp::Append(_)) {
            "append"
        } else {
            "subtract"
        };
        return Err(format!(
            "Config value {verb} is not allowed for config key: {key}"
        ));
    };
    let items = |v: &str| -> Vec<String> {
        v.split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut list = items(current.map_or(*default, String::as_str));
    match op {
        KeyOp::Append(v) => {
            for item in items(v) {
                if !list.contains(&item) {
                    list.push(item);
                }
            }
        }
        KeyOp::Subtract(v) => {
            let gone = items(v);
            list.retain(|i| !gone.contains(i));
        }
        KeyOp::Set(_) | KeyOp::Delete => {}
    }
    Ok(list.join(","))
}

/// The key changes of an IncrementalAlterConfigs on `current` configs: set (`Some`) or
/// removed (`None`), list operations resolved against the value each key has.
fn resolve(
    current: &BTreeMap<String, String>,
    ops: Vec<(String, KeyOp)>,
) -> Result<Vec<(String, Option<String>)>, String> {
    let mut after = current.clone();
    let mut out = Vec::with_capacity(ops.len());
    for (key, op) in ops {
        let value = match &op {
            KeyOp::Set(v) => Some(v.clone()),
            KeyOp::Delete => None,
            KeyOp::Append(_) | KeyOp::Subtract(_) => Some(list_op(after.get(&key), &key, &op)?),
        };
        match &value {
            Some(v) => after.insert(key.clone(), v.clone()),
            None => after.remove(&key),
        };
        out.push((key, value));
    }
    Ok(out)
}

/// A change with its list operations resolved against the topic's configs.
enum Resolved {
    Replace(BTreeMap<String, String>),
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
    let current = known
        .as_ref()
        .map(|m| m.configs.clone())
        .unwrap_or_default();
    let change = match change {
        Change::Keys(ops) => match resolve(&current, ops) {
            Ok(keys) => Resolved::Keys(keys),
            Err(message) => return (code::INVALID_CONFIG, Some(message)),
        },
        Change::Replace(configs) => Resolved::Replace(configs),
    };
    let resulting = match &change {
        Resolved::Replace(configs) => configs.clone(),
        Resolved::Keys(keys) => {
            let mut configs = current;
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
        Resolved::Replace(configs) => (
            configs.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            true,
        ),
        Resolved::Keys(keys) => (keys, false),
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

/// Validates a change of dynamic broker configs (this or another registered broker's, or
/// the cluster default's when `name` is empty), has the controller record it; every
/// broker's logs follow when its image has it (`config_keys::inherited`).
async fn apply_broker(
    shard: &Rc<Shard>,
    name: &str,
    change: Change,
    validate_only: bool,
) -> (ErrorCode, Option<String>) {
    let broker = match name {
        "" => None,
        id => match id.parse::<i32>() {
            Ok(id) => Some(BrokerId(id)),
            Err(_) => {
                return (
                    code::INVALID_REQUEST,
                    Some(format!("broker resource name {id:?} is not a broker id")),
                )
            }
        },
    };
    let image = shard.cluster.image();
    let (own, cluster) = dynamic_broker_configs(&image, broker.map_or(-1, |b| b.0));
    let current = if broker.is_some() { own } else { cluster };
    let (configs, replace) = match change {
        Change::Replace(configs) => (
            configs.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            true,
        ),
        Change::Keys(ops) => match resolve(&current, ops) {
            Ok(keys) => (keys, false),
            Err(message) => return (code::INVALID_CONFIG, Some(message)),
        },
    };
    for (key, value) in &configs {
        if let Err(message) = check_broker_key(shard, broker.is_some(), key, value.as_deref()) {
            return (code::INVALID_CONFIG, Some(message));
        }
    }
    if validate_only {
        return (code::NONE, None);
    }
    let req = ControllerRequest::SetBrokerConfigs {
        broker,
        configs,
        replace,
    };
    if let Err((error, message)) =
        change_metadata(&shard.cluster, &req, CONTROLLER_REQUEST_TIMEOUT).await
    {
        return (error, Some(message));
    }
    tracing::info!(broker = name, "dynamic broker configs changed");
    (code::NONE, None)
}

/// A dynamic broker config key Sluice honours (refused by name otherwise), settable at
/// this level, with a value its topic config accepts.
fn check_broker_key(
    shard: &Shard,
    per_broker: bool,
    key: &str,
    value: Option<&str>,
) -> Result<(), String> {
    let Some(topic_key) = config_keys::by_broker_key(key) else {
        return Err(format!(
            "broker config {key} is not one Sluice honours dynamically"
        ));
    };
    if per_broker && config_keys::CLUSTER_ONLY_KEYS.contains(&key) {
        return Err(format!(
            "{key} is set for the whole cluster only (the BROKER resource named \"\")"
        ));
    }
    let Some(value) = value else {
        return Ok(());
    };
    let one = BTreeMap::from([(topic_key.name.to_string(), value.to_string())]);
    log_config(&shard.catalog.defaults, &one)
        .map(drop)
        .map_err(|e| format!("{key}: {e}"))
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
    authz: &Authz<'_>,
    resources: impl Iterator<Item = Resource<'a>>,
    validate_only: bool,
) -> Vec<R> {
    let mut out = Vec::with_capacity(resources.size_hint().0);
    for (resource_type, name, change) in resources {
        let refusal = config_refusal(authz, AclOperation::AlterConfigs, resource_type, name);
        let (error, message) = match (refusal, resource_type, change) {
            (Some((error, message)), _, _) => (error, Some(message)),
            (None, RESOURCE_TOPIC | RESOURCE_BROKER, Err(m)) => (code::INVALID_CONFIG, Some(m)),
            (None, RESOURCE_TOPIC, Ok(change)) => apply(shard, name, change, validate_only).await,
            (None, RESOURCE_BROKER, Ok(change)) => {
                apply_broker(shard, name, change, validate_only).await
            }
            (None, super::group_configs::RESOURCE_GROUP, change) => {
                alter_group(shard, name, change, validate_only).await
            }
            _ => (
                code::INVALID_REQUEST,
                Some("only topic, broker and group configs can be altered".to_string()),
            ),
        };
        if error != code::NONE {
            tracing::info!(resource = %name.as_str(), ?message, "config change refused");
        }
        let message = message.map(StrBytes::from_string);
        out.push(R::new(error.into(), message, resource_type, name.clone()));
    }
    out
}

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: AlterConfigsRequest = decode_body(req)?;
    let resources = body.resources.iter().map(|r| {
        let set = r.configs.iter().filter_map(|c| {
            let v = c.value.as_ref()?;
            Some((c.name.to_string(), v.to_string()))
        });
        let change = Ok(Change::Replace(set.collect()));
        (r.resource_type, &r.resource_name, change)
    });
    let responses = alter_each(shard, authz, resources, body.validate_only).await;
    let resp = AlterConfigsResponse::default().with_responses(responses);
    encode_response(req.header.correlation_id, req.version, &resp)
}

pub async fn handle_incremental(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: IncrementalAlterConfigsRequest = decode_body(req)?;
    let resources = body.resources.iter().map(|r| {
        let change = incremental_keys(&r.configs).map(Change::Keys);
        (r.resource_type, &r.resource_name, change)
    });
    let responses = alter_each(shard, authz, resources, body.validate_only).await;
    let resp = IncrementalAlterConfigsResponse::default().with_responses(responses);
    encode_response(req.header.correlation_id, req.version, &resp)
}

/// IncrementalAlterConfigs operations, one per key (Kafka refuses a key named twice).
/// APPEND and SUBTRACT apply to list configs only (`cleanup.policy`).
fn incremental_keys(
    ops: &[incremental_alter_configs_request::AlterableConfig],
) -> Result<Vec<(String, KeyOp)>, String> {
    let mut seen = std::collections::BTreeSet::new();
    ops.iter()
        .map(|c| {
            let key = c.name.to_string();
            if !seen.insert(key.clone()) {
                return Err(format!("Duplicate alterConfigs resource config {key}"));
            }
            let value = c.value.as_ref().map(|v| v.to_string());
            let op = match (c.config_operation, value) {
                (OP_SET, Some(v)) => KeyOp::Set(v),
                (OP_DELETE, _) => KeyOp::Delete,
                (OP_APPEND, Some(v)) => KeyOp::Append(v),
                (OP_SUBTRACT, Some(v)) => KeyOp::Subtract(v),
                (op, _) => {
                    return Err(format!("operation {op} on {key} is not supported"));
                }
            };
            Ok((key, op))
        })
        .collect()
}

/// A consumer group's configs (IncrementalAlterConfigs only): numbers, so SET and DELETE
/// apply, APPEND and SUBTRACT do not.
async fn alter_group(
    shard: &Rc<Shard>,
    name: &StrBytes,
    change: Result<Change, String>,
    validate_only: bool,
) -> (ErrorCode, Option<String>) {
    match change {
        Ok(Change::Keys(ops)) => {
            let keys: Result<Vec<(String, Option<String>)>, String> = ops
                .into_iter()
                .map(|(k, op)| match op {
                    KeyOp::Set(v) => Ok((k, Some(v))),
                    KeyOp::Delete => Ok((k, None)),
                    KeyOp::Append(_) | KeyOp::Subtract(_) => {
                        Err(format!("{k} is not a list config"))
                    }
                })
                .collect();
            match keys {
                Ok(keys) => super::group_configs::alter(shard, name, keys, validate_only).await,
                Err(m) => (code::INVALID_CONFIG, Some(m)),
            }
        }
        Ok(Change::Replace(_)) => (
            code::INVALID_REQUEST,
            Some("group configs are altered with IncrementalAlterConfigs".into()),
        ),
        Err(m) => (code::INVALID_CONFIG, Some(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn append_and_subtract_work_on_the_list_each_key_has() {
        let key = |k: &str| k.to_string();
        // No value of its own: Kafka's default list ("delete") is appended to.
        let got = resolve(
            &configs(&[]),
            vec![(
                key("cleanup.policy"),
                KeyOp::Append("compact,delete".into()),
            )],
        );
        assert_eq!(
            got.unwrap(),
            [(key("cleanup.policy"), Some("delete,compact".into()))]
        );
        let got = resolve(
            &configs(&[("cleanup.policy", "compact,delete")]),
            vec![(key("cleanup.policy"), KeyOp::Subtract("delete".into()))],
        );
        assert_eq!(
            got.unwrap(),
            [(key("cleanup.policy"), Some("compact".into()))]
        );
        let refused = resolve(
            &configs(&[]),
            vec![(key("retention.ms"), KeyOp::Append("5".into()))],
        );
        assert_eq!(
            refused.unwrap_err(),
            "Config value append is not allowed for config key: retention.ms"
        );
    }
}
