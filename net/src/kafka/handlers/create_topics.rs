//! CreateTopics: checked here (name, partition count, configs, the shape of a manual
//! assignment), then placed and created by the active controller (replicas spread over
//! racks, then brokers, leaders balanced; or as assigned, once the controller has checked
//! the brokers); answered once this broker's image has the topic.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::ApiSpec;
use sluice_control::rpc::Request as ControllerRequest;
use sluice_control::BrokerId;

use crate::broker::catalog::{
    effective_configs, log_config, validate_topic_name, CatalogError, PARTITIONS_PER_TOPIC_MAX,
};
use crate::broker::cluster::{change_metadata, CONTROLLER_REQUEST_TIMEOUT};
use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::{Authz, AUTHORIZATION_FAILED};
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::CreateTopics,
    min: 2,
    max: 7,
};

pub fn catalog_error_code(e: &CatalogError) -> ErrorCode {
    match e {
        CatalogError::Exists(_) => code::TOPIC_ALREADY_EXISTS,
        CatalogError::Unknown(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
        CatalogError::InvalidName(_) => code::INVALID_TOPIC_EXCEPTION,
        CatalogError::InvalidPartitions(_) => code::INVALID_PARTITIONS,
        CatalogError::InvalidConfig(_) => code::INVALID_CONFIG,
        CatalogError::Io(_) | CatalogError::Corrupt(_) => code::KAFKA_STORAGE_ERROR,
    }
}

/// Checks what this broker can check itself (name, partition count, configs) before
/// the controller sees the request.
fn validate(
    shard: &Shard,
    name: &str,
    partitions: i32,
    configs: &BTreeMap<String, String>,
) -> Result<(), (ErrorCode, String)> {
    let check = validate_topic_name(name)
        .and_then(|_| {
            if (1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
                Ok(())
            } else {
                Err(CatalogError::InvalidPartitions(partitions))
            }
        })
        .and_then(|_| log_config(&shard.catalog.defaults, configs).map(|_| ()));
    check.map_err(|e| (catalog_error_code(&e), e.to_string()))
}

/// Validates one topic here, then has the controller place and create it.
async fn create(
    shard: &Shard,
    t: &CreatableTopic,
    validate_only: bool,
) -> Result<(), (ErrorCode, String)> {
    let name = t.name.0.to_string();
    let partitions = if t.num_partitions == -1 {
        shard.config.topic_defaults.partitions
    } else {
        t.num_partitions
    };
    let replication_factor = if t.replication_factor == -1 {
        shard.config.cluster.default_replication_factor
    } else {
        t.replication_factor
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
    let assignment = manual_assignment(t)?;
    let partitions = if assignment.is_empty() {
        partitions
    } else {
        assignment.len() as i32
    };
    validate(shard, &name, partitions, &configs)?;
    let req = ControllerRequest::CreateTopic {
        name,
        partitions,
        replication_factor,
        configs: configs.into_iter().collect(),
        topic_id: None,
        validate_only,
        assignment,
    };
    change_metadata(&shard.cluster, &req, CONTROLLER_REQUEST_TIMEOUT)
        .await
        .map(|_| ())
}

/// The replicas of each partition as the request assigns them, in partition order (empty
/// when it assigns none), with Kafka's checks of the request's shape: no partition count or
/// replication factor beside an assignment, partitions numbered 0, 1, … once each. The
/// controller checks the brokers.
fn manual_assignment(t: &CreatableTopic) -> Result<Vec<Vec<BrokerId>>, (ErrorCode, String)> {
    if t.assignments.is_empty() {
        return Ok(Vec::new());
    }
    if t.replication_factor != -1 {
        return Err((
            code::INVALID_REQUEST,
            "A manual partition assignment was specified, but replication factor was not set to -1.".to_string(),
        ));
    }
    if t.num_partitions != -1 {
        return Err((
            code::INVALID_REQUEST,
            "A manual partition assignment was specified, but numPartitions was not set to -1."
                .to_string(),
        ));
    }
    if t.assignments.len() > PARTITIONS_PER_TOPIC_MAX as usize {
        return Err((
            code::INVALID_PARTITIONS,
            format!(
                "{} partitions assigned; at most {PARTITIONS_PER_TOPIC_MAX}",
                t.assignments.len()
            ),
        ));
    }
    let mut by_index: BTreeMap<i32, Vec<BrokerId>> = BTreeMap::new();
    for a in &t.assignments {
        check_replica_count(a.broker_ids.len())?;
        let replicas = a.broker_ids.iter().map(|b| BrokerId(b.0)).collect();
        if by_index.insert(a.partition_index, replicas).is_some() {
            return Err((
                code::INVALID_REPLICA_ASSIGNMENT,
                format!(
                    "Found multiple manual partition assignments for partition {}",
                    a.partition_index
                ),
            ));
        }
    }
    if by_index.keys().copied().ne(0..by_index.len() as i32) {
        return Err((
            code::INVALID_REPLICA_ASSIGNMENT,
            "partitions should be a consecutive 0-based integer sequence".to_string(),
        ));
    }
    Ok(by_index.into_values().collect())
}

/// Replicas one partition may be assigned: more than any cluster has brokers (a longer
/// list repeats or invents one), refused before it travels to the controller.
pub const REPLICAS_PER_PARTITION_MAX: usize = 1024;

pub fn check_replica_count(n: usize) -> Result<(), (ErrorCode, String)> {
    if n > REPLICAS_PER_PARTITION_MAX {
        return Err((
            code::INVALID_REPLICA_ASSIGNMENT,
            format!("{n} replicas assigned to one partition; at most {REPLICAS_PER_PARTITION_MAX}"),
        ));
    }
    Ok(())
}

fn created(
    shard: &Shard,
    result: CreatableTopicResult,
    name: &str,
    t: &CreatableTopic,
) -> CreatableTopicResult {
    let image = shard.cluster.image();
    let Some(topic) = image.topic_by_name(name) else {
        // validate_only: nothing was created; answer with what was asked.
        return result
            .with_num_partitions(t.num_partitions)
            .with_replication_factor(t.replication_factor);
    };
    let configs = image
        .configs_of(sluice_control::ConfigResource::Topic, name)
        .cloned()
        .unwrap_or_default();
    let described = effective_configs(&shard.catalog.defaults, &configs)
        .into_iter()
        .map(|(k, v, is_default)| {
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_string(k))
                .with_value(Some(StrBytes::from_string(v)))
                .with_config_source(if is_default { 5 } else { 1 })
        })
        .collect();
    let rf = topic
        .partitions
        .values()
        .next()
        .map_or(0, |p| p.replicas.len());
    result
        .with_topic_id(Uuid::from_u128(topic.id.0))
        .with_num_partitions(topic.partitions.len() as i32)
        .with_replication_factor(rf as i16)
        .with_configs(Some(described))
}

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: CreateTopicsRequest = decode_body(req)?;
    let mut topics = Vec::with_capacity(body.topics.len());
    // Kafka's check: CREATE on the cluster, or else on each topic.
    let on_cluster = authz.cluster(AclOperation::Create);
    for t in &body.topics {
        let name = t.name.0.to_string();
        let result = CreatableTopicResult::default().with_name(t.name.clone());
        let outcome = if on_cluster || authz.topic(AclOperation::Create, &name) {
            create(shard, t, body.validate_only).await
        } else {
            Err((
                code::TOPIC_AUTHORIZATION_FAILED,
                AUTHORIZATION_FAILED.to_string(),
            ))
        };
        match outcome {
            Ok(()) => {
                tracing::info!(topic = %name, validate_only = body.validate_only, "created topic");
                topics.push(created(shard, result, &name, t));
            }
            Err((error, message)) => {
                tracing::info!(topic = %name, error = %message, "create topic refused");
                topics.push(
                    result
                        .with_error_code(error.into())
                        .with_error_message(Some(StrBytes::from_string(message)))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1),
                );
            }
        }
    }
    let resp = CreateTopicsResponse::default().with_topics(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}
