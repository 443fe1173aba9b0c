//! Metadata: every live broker, each partition's leader, replicas and ISR from the
//! metadata image, and the active controller. Unknown topics are created through the
//! controller when auto-creation is allowed.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_control::rpc::Request as ControllerRequest;
use sluice_control::{MetadataImage, TopicImage};
use uuid::Uuid;

use super::ApiSpec;
use crate::broker::catalog::{is_internal_topic, validate_topic_name};
use crate::broker::cluster::{change_metadata, CONTROLLER_REQUEST_TIMEOUT};
use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::{Authz, OPERATIONS_NOT_ASKED};
use crate::security::session::Session;
use crate::security::{AclOperation, ResourceType, CLUSTER_RESOURCE_NAME};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::Metadata,
    min: 0,
    max: 12,
};

pub(crate) fn ids(list: &[sluice_control::BrokerId]) -> Vec<BrokerId> {
    list.iter().map(|b| BrokerId(b.0)).collect()
}

/// The replicas of `p` on brokers that are not live, and its leader if live.
pub(crate) fn offline_and_leader(
    image: &MetadataImage,
    p: &sluice_control::PartitionState,
) -> (Vec<BrokerId>, Option<sluice_control::BrokerId>) {
    let offline: Vec<_> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| !image.is_live(*r))
        .collect();
    (ids(&offline), p.leader.filter(|l| image.is_live(*l)))
}

/// One topic as the image has it. A partition without a leader says
/// LEADER_NOT_AVAILABLE; replicas on fenced brokers are listed as offline. So does a
/// partition whose leader is fenced: the image keeps a fenced leader that no other
/// in-sync replica could replace (it comes back to it), and the broker list leaves fenced
/// brokers out, so naming it would point clients at a broker the answer does not list.
pub fn topic_entry(image: &MetadataImage, t: &TopicImage) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .map(|(i, p)| {
            let (offline, leader) = offline_and_leader(image, p);
            let error = if leader.is_some() {
                code::NONE
            } else {
                code::LEADER_NOT_AVAILABLE
            };
            MetadataResponsePartition::default()
                .with_error_code(error.into())
                .with_partition_index(i.0)
                .with_leader_id(BrokerId(leader.map_or(-1, |l| l.0)))
                .with_leader_epoch(p.leader_epoch.0)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_offline_replicas(offline)
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(Uuid::from_u128(t.id.0))
        .with_is_internal(is_internal_topic(&t.name))
        .with_partitions(partitions)
}

fn error_entry(name: &str, error: ErrorCode) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.into())
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
}

/// Creates `name` through the controller with the broker defaults; the image this shard
/// holds has it once this returns `Ok`.
pub async fn auto_create(shard: &Shard, name: &str) -> Result<(), ErrorCode> {
    validate_topic_name(name).map_err(|_| code::INVALID_TOPIC_EXCEPTION)?;
    let cluster = &shard.config.cluster;
    let req = ControllerRequest::CreateTopic {
        name: name.to_string(),
        partitions: shard.config.topic_defaults.partitions,
        replication_factor: cluster.default_replication_factor,
        configs: Vec::new(),
        topic_id: None,
        validate_only: false,
        assignment: Vec::new(),
    };
    match change_metadata(&shard.cluster, &req, CONTROLLER_REQUEST_TIMEOUT).await {
        Ok(_) => {
            tracing::info!(topic = name, "auto-created topic");
            Ok(())
        }
        Err((code::TOPIC_ALREADY_EXISTS, _)) => Ok(()),
        Err((error, message)) => {
            tracing::warn!(topic = name, error = error.0, %message, "auto-creating topic failed");
            Err(error)
        }
    }
}

/// Looks a topic up, creating it with the broker defaults when allowed. As Kafka: a topic
/// the client may not DESCRIBE is TOPIC_AUTHORIZATION_FAILED whether it exists or not,
/// and auto-creation needs CREATE on the cluster or the topic.
async fn lookup_or_create(
    shard: &Shard,
    authz: &Authz<'_>,
    name: &str,
    allow_create: bool,
) -> MetadataResponseTopic {
    if !authz.topic(AclOperation::Describe, name) {
        return error_entry(name, code::TOPIC_AUTHORIZATION_FAILED);
    }
    let image = shard.cluster.image();
    if let Some(t) = image.topic_by_name(name) {
        return topic_entry(&image, t);
    }
    if !allow_create || !shard.config.topic_defaults.auto_create {
        return error_entry(name, code::UNKNOWN_TOPIC_OR_PARTITION);
    }
    if !authz.cluster(AclOperation::Create) && !authz.topic(AclOperation::Create, name) {
        return error_entry(name, code::TOPIC_AUTHORIZATION_FAILED);
    }
    match auto_create(shard, name).await {
        Ok(()) => {
            let image = shard.cluster.image();
            match image.topic_by_name(name) {
                Some(t) => topic_entry(&image, t),
                // Created by another broker's request and not here yet: the client retries.
                None => error_entry(name, code::LEADER_NOT_AVAILABLE),
            }
        }
        Err(e) => error_entry(name, e),
    }
}

/// Where a client of `session` reaches broker `b`: its endpoint registered under the name
/// of the listener the client connected to (Kafka answers each client on its own
/// listener; a broker without that listener is left out).
pub(crate) fn endpoint<'a>(
    shard: &Shard,
    session: &Session,
    b: &'a sluice_control::BrokerInfo,
) -> Option<&'a sluice_control::Listener> {
    let name = &shard.security.listener(session.listener).name;
    b.listeners.iter().find(|l| &l.name == name)
}

fn brokers(shard: &Shard, session: &Session, image: &MetadataImage) -> Vec<MetadataResponseBroker> {
    image
        .brokers()
        .filter(|b| !b.fenced)
        .filter_map(|b| {
            let l = endpoint(shard, session, b)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id.0))
                    .with_host(StrBytes::from_string(l.host.clone()))
                    .with_port(i32::from(l.port))
                    .with_rack(b.rack.clone().map(StrBytes::from_string)),
            )
        })
        .collect()
}

/// The controller id clients are given: the active controller when it is also a live
/// broker, else this broker (or another live one). Clients send admin requests there, and
/// every broker carries them out through the active controller; a controller-only node
/// has no Kafka listener clients could use (KRaft answers the same way).
pub fn controller_id(shard: &Shard) -> BrokerId {
    let image = shard.cluster.image();
    let live = |id: i32| image.is_live(sluice_control::BrokerId(id));
    let leader = shard
        .cluster
        .view
        .quorum()
        .leader
        .and_then(|l| i32::try_from(l.0).ok());
    let me = shard.config.node_id;
    let id = leader
        .filter(|l| live(*l))
        .or_else(|| live(me).then_some(me))
        .or_else(|| image.brokers().find(|b| !b.fenced).map(|b| b.id.0))
        .unwrap_or(-1);
    BrokerId(id)
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: MetadataRequest = decode_body(req)?;
    // v0 cannot say "no auto-create"; an empty v0 list means every topic.
    let allow_create = body.allow_auto_topic_creation || req.version < 4;
    let topics = match body.topics {
        Some(list) if !(req.version == 0 && list.is_empty()) => {
            let mut out = Vec::with_capacity(list.len());
            for t in &list {
                out.push(match &t.name {
                    Some(name) => lookup_or_create(shard, authz, name, allow_create).await,
                    None => {
                        let image = shard.cluster.image();
                        match image.topic(sluice_control::TopicId(t.topic_id.as_u128())) {
                            // Topic ids are not secret (Kafka answers them so).
                            Some(found) if !authz.topic(AclOperation::Describe, &found.name) => {
                                MetadataResponseTopic::default()
                                    .with_error_code(code::TOPIC_AUTHORIZATION_FAILED.into())
                                    .with_topic_id(t.topic_id)
                            }
                            Some(found) => topic_entry(&image, found),
                            None => MetadataResponseTopic::default()
                                .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION.into())
                                .with_topic_id(t.topic_id),
                        }
                    }
                });
            }
            out
        }
        // Every topic: those the client may not DESCRIBE are left out.
        _ => {
            let image = shard.cluster.image();
            image
                .topics()
                .filter(|t| authz.topic(AclOperation::Describe, &t.name))
                .map(|t| topic_entry(&image, t))
                .collect()
        }
    };
    let topics = topics
        .into_iter()
        .map(|t| {
            let ops = match &t.name {
                Some(name) if t.error_code == 0 => authz.operations(
                    body.include_topic_authorized_operations,
                    ResourceType::Topic,
                    name,
                ),
                _ => OPERATIONS_NOT_ASKED,
            };
            t.with_topic_authorized_operations(ops)
        })
        .collect::<Vec<_>>();
    let image = shard.cluster.image();
    let resp = MetadataResponse::default()
        .with_cluster_authorized_operations(authz.operations(
            body.include_cluster_authorized_operations,
            ResourceType::Cluster,
            CLUSTER_RESOURCE_NAME,
        ))
        .with_brokers(brokers(shard, session, &image))
        .with_cluster_id(Some(StrBytes::from_string(shard.config.cluster_id.clone())))
        .with_controller_id(controller_id(shard))
        .with_topics(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}
