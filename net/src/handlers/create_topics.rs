//! CreateTopics: validated against the catalog (name, partitions, configs); replication
//! factor must be 1 or -1 (default) on a single node.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::ApiSpec;
use crate::catalog::{effective_configs, CatalogError};
use crate::errors::code;
use crate::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::shard::Shard;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::CreateTopics,
    min: 2,
    max: 7,
};

pub fn catalog_error_code(e: &CatalogError) -> i16 {
    match e {
        CatalogError::Exists(_) => code::TOPIC_ALREADY_EXISTS,
        CatalogError::Unknown(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
        CatalogError::InvalidName(_) => code::INVALID_TOPIC_EXCEPTION,
        CatalogError::InvalidPartitions(_) => code::INVALID_PARTITIONS,
        CatalogError::InvalidConfig(_) => code::INVALID_CONFIG,
        CatalogError::Io(_) | CatalogError::Corrupt(_) => code::KAFKA_STORAGE_ERROR,
    }
}

pub async fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let body: CreateTopicsRequest = decode_body(req)?;
    let mut topics = Vec::with_capacity(body.topics.len());
    for t in &body.topics {
        let name = t.name.0.to_string();
        let mut result = CreatableTopicResult::default().with_name(t.name.clone());
        let partitions = if t.num_partitions == -1 {
            shard.config.topic_defaults.partitions
        } else {
            t.num_partitions
        };
        let configs: BTreeMap<String, String> = t
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        let outcome = if !matches!(t.replication_factor, -1 | 1) {
            Err((
                code::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {} on a single node",
                    t.replication_factor
                ),
            ))
        } else if !t.assignments.is_empty() {
            Err((
                code::INVALID_REQUEST,
                "manual replica assignment is not supported".to_string(),
            ))
        } else {
            shard
                .catalog
                .create(&name, partitions, configs, body.validate_only)
                .map_err(|e| (catalog_error_code(&e), e.to_string()))
        };
        match outcome {
            Ok(meta) => {
                tracing::info!(topic = %name, partitions, validate_only = body.validate_only, "created topic");
                let described = effective_configs(&shard.catalog.defaults, &meta.configs)
                    .into_iter()
                    .map(|(k, v, is_default)| {
                        CreatableTopicConfigs::default()
                            .with_name(StrBytes::from_string(k))
                            .with_value(Some(StrBytes::from_string(v)))
                            .with_config_source(if is_default { 5 } else { 1 })
                    })
                    .collect();
                result = result
                    .with_topic_id(Uuid::from_bytes(meta.topic_id))
                    .with_num_partitions(meta.partitions)
                    .with_replication_factor(1)
                    .with_configs(Some(described));
            }
            Err((error, message)) => {
                tracing::info!(topic = %name, error = %message, "create topic refused");
                result = result
                    .with_error_code(error)
                    .with_error_message(Some(StrBytes::from_string(message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1);
            }
        }
        topics.push(result);
    }
    let resp = CreateTopicsResponse::default().with_topics(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}
