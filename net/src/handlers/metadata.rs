//! Metadata: brokers (this one), topics and partitions, with auto topic creation.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::ApiSpec;
use crate::catalog::{CatalogError, TopicMeta};
use crate::errors::code;
use crate::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::shard::Shard;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::Metadata,
    min: 0,
    max: 12,
};

fn topic_entry(meta: &TopicMeta, node: i32) -> MetadataResponseTopic {
    let partitions = (0..meta.partitions)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(BrokerId(node))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(node)])
                .with_isr_nodes(vec![BrokerId(node)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(meta.name.clone()))))
        .with_topic_id(Uuid::from_bytes(meta.topic_id))
        .with_partitions(partitions)
}

fn error_entry(name: &str, error: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error)
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
}

/// Looks a topic up, creating it with the broker defaults when allowed.
pub fn lookup_or_create(shard: &Shard, name: &str, allow_create: bool) -> Result<TopicMeta, i16> {
    if let Some(meta) = shard.catalog.get(name) {
        return Ok(meta);
    }
    if !allow_create || !shard.config.topic_defaults.auto_create {
        return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
    }
    let partitions = shard.config.topic_defaults.partitions;
    match shard
        .catalog
        .create(name, partitions, BTreeMap::new(), false)
    {
        Ok(meta) => {
            tracing::info!(topic = name, partitions, "auto-created topic");
            Ok(meta)
        }
        Err(CatalogError::Exists(_)) => shard
            .catalog
            .get(name)
            .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION),
        Err(CatalogError::InvalidName(_)) => Err(code::INVALID_TOPIC_EXCEPTION),
        Err(e) => {
            tracing::error!(topic = name, error = %e, "auto-creating topic failed");
            Err(code::UNKNOWN_SERVER_ERROR)
        }
    }
}

pub async fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let body: MetadataRequest = decode_body(req)?;
    let node = shard.config.node_id;
    // v0 cannot say "no auto-create"; an empty v0 list means every topic.
    let allow_create = body.allow_auto_topic_creation || req.version < 4;
    let topics = match body.topics {
        Some(list) if !(req.version == 0 && list.is_empty()) => list
            .iter()
            .map(|t| match &t.name {
                Some(name) => match lookup_or_create(shard, name, allow_create) {
                    Ok(meta) => topic_entry(&meta, node),
                    Err(e) => error_entry(name, e),
                },
                None => {
                    let found = shard
                        .catalog
                        .list()
                        .into_iter()
                        .find(|m| Uuid::from_bytes(m.topic_id) == t.topic_id);
                    match found {
                        Some(meta) => topic_entry(&meta, node),
                        None => MetadataResponseTopic::default()
                            .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_topic_id(t.topic_id),
                    }
                }
            })
            .collect(),
        _ => shard
            .catalog
            .list()
            .iter()
            .map(|m| topic_entry(m, node))
            .collect(),
    };
    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(node))
        .with_host(StrBytes::from_string(shard.config.advertised_host.clone()))
        .with_port(shard.config.advertised_port as i32);
    let resp = MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(StrBytes::from_string(shard.config.cluster_id.clone())))
        .with_controller_id(BrokerId(node))
        .with_topics(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}
