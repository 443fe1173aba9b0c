//! DescribeConfigs: a topic's configs (every Kafka topic config Sluice honours), this
//! broker's configs (the dynamic-capable ones and the read-only static settings), or the
//! cluster's dynamic defaults (BROKER resource named ""), each with its source, and with
//! synonyms (v1+ `include_synonyms`), type and documentation (v3+
//! `include_documentation`) as Kafka answers them. See `broker::config_keys`.

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSpec;
use crate::broker::cluster::dynamic_broker_configs;
use crate::broker::config_keys::{self, ConfigType, Described, Layers};
use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::{Authz, AUTHORIZATION_FAILED};
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DescribeConfigs,
    min: 1,
    max: 4,
};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
pub const RESOURCE_BROKER_LOGGER: i8 = 8;

/// What the request asks to include besides names and values.
#[derive(Clone, Copy)]
struct Include {
    synonyms: bool,
    documentation: bool,
}

/// The authorizer's refusal of `op` (DESCRIBE_CONFIGS or ALTER_CONFIGS) on a config
/// resource, as Kafka checks it: a topic's on the topic, a broker's (or the cluster
/// default's, or a broker logger's) on the cluster, a group's on the group.
pub(crate) fn config_refusal(
    authz: &Authz<'_>,
    op: AclOperation,
    resource_type: i8,
    name: &str,
) -> Option<(ErrorCode, String)> {
    let (allowed, error) = match resource_type {
        RESOURCE_TOPIC => (authz.topic(op, name), code::TOPIC_AUTHORIZATION_FAILED),
        RESOURCE_BROKER | RESOURCE_BROKER_LOGGER => {
            (authz.cluster(op), code::CLUSTER_AUTHORIZATION_FAILED)
        }
        super::group_configs::RESOURCE_GROUP => {
            (authz.group(op, name), code::GROUP_AUTHORIZATION_FAILED)
        }
        _ => (true, code::NONE),
    };
    (!allowed).then(|| (error, AUTHORIZATION_FAILED.to_string()))
}

pub fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: DescribeConfigsRequest = decode_body(req)?;
    let include = Include {
        synonyms: body.include_synonyms,
        documentation: body.include_documentation,
    };
    let results = body
        .resources
        .iter()
        .map(|r| {
            let out = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let refusal = config_refusal(
                authz,
                AclOperation::DescribeConfigs,
                r.resource_type,
                &r.resource_name,
            );
            if let Some((error, message)) = refusal {
                return out
                    .with_error_code(error.into())
                    .with_error_message(Some(StrBytes::from_string(message)));
            }
            if r.resource_type == super::group_configs::RESOURCE_GROUP {
                return out.with_configs(super::group_configs::describe(
                    shard,
                    &r.resource_name,
                    r.configuration_keys.as_deref(),
                ));
            }
            match describe(shard, r) {
                Ok(described) => out.with_configs(
                    described
                        .into_iter()
                        .filter(|d| wanted(r, &d.name))
                        .map(|d| entry(d, include))
                        .collect(),
                ),
                Err((error, message)) => {
                    tracing::info!(resource = %r.resource_name.as_str(), %message, "describe configs refused");
                    out.with_error_code(error.into())
                        .with_error_message(Some(StrBytes::from_string(message)))
                }
            }
        })
        .collect();
    let resp = DescribeConfigsResponse::default().with_results(results);
    encode_response(req.header.correlation_id, req.version, &resp)
}

fn wanted(r: &DescribeConfigsResource, name: &str) -> bool {
    r.configuration_keys
        .as_ref()
        .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
}

fn describe(
    shard: &Shard,
    r: &DescribeConfigsResource,
) -> Result<Vec<Described>, (ErrorCode, String)> {
    let image = shard.cluster.image();
    let (broker, cluster) = dynamic_broker_configs(&image, shard.config.node_id);
    let layers = Layers {
        defaults: &shard.catalog.defaults,
        broker: &broker,
        cluster: &cluster,
    };
    let name = r.resource_name.as_str();
    match r.resource_type {
        RESOURCE_TOPIC => match shard.catalog.get(name) {
            None => Err((
                code::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic {name} does not exist"),
            )),
            Some(meta) => Ok(config_keys::describe_topic(&layers, &meta.configs)),
        },
        RESOURCE_BROKER if name.is_empty() => Ok(config_keys::describe_cluster_default(&cluster)),
        RESOURCE_BROKER if name == shard.config.node_id.to_string() => {
            let mut out = config_keys::describe_broker_dynamic(&layers);
            out.extend(static_settings(shard));
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        }
        RESOURCE_BROKER => Err((
            code::INVALID_REQUEST,
            format!(
                "Unexpected broker id, expected {} or empty string, but received {name}",
                shard.config.node_id
            ),
        )),
        other => Err((
            code::INVALID_REQUEST,
            format!("resource type {other}: only topic and broker resources are described"),
        )),
    }
}

/// The read-only settings of this broker, under Kafka's names: from the file (or the
/// command line) when they differ from the default.
fn static_settings(shard: &Shard) -> Vec<Described> {
    let c = &shard.config;
    let cl = &c.cluster;
    let d = crate::broker::config::ClusterConfig::default();
    let td = crate::broker::config::TopicDefaults::default();
    let roles = format!("{:?}", cl.roles).to_lowercase();
    let quorum: Vec<String> = cl
        .quorum
        .iter()
        .map(|(id, addr)| format!("{id}@{addr}"))
        .collect();
    let entries: Vec<(&str, String, bool, ConfigType, &'static str)> = vec![
        (
            "node.id",
            c.node_id.to_string(),
            true,
            ConfigType::Int,
            "This node's id, as broker and as controller.",
        ),
        (
            "broker.id",
            c.node_id.to_string(),
            true,
            ConfigType::Int,
            "The broker id: this node's id.",
        ),
        (
            "listeners",
            format!("PLAINTEXT://{}", c.listen),
            true,
            ConfigType::List,
            "The Kafka listener.",
        ),
        (
            "advertised.listeners",
            format!("PLAINTEXT://{}:{}", c.advertised_host, c.advertised_port),
            true,
            ConfigType::List,
            "The listener address clients are given in Metadata.",
        ),
        (
            "log.dirs",
            c.data_dir.display().to_string(),
            true,
            ConfigType::List,
            "The data directory.",
        ),
        (
            "process.roles",
            roles,
            true,
            ConfigType::List,
            "Whether this node is a broker, a controller or both.",
        ),
        (
            "controller.quorum.voters",
            quorum.join(","),
            !cl.quorum.is_empty(),
            ConfigType::List,
            "The controller quorum: id@host:port of each voter.",
        ),
        (
            "broker.rack",
            cl.rack.clone().unwrap_or_default(),
            cl.rack.is_some(),
            ConfigType::String,
            "The rack of this broker, for replica placement and follower fetching.",
        ),
        (
            "num.partitions",
            c.topic_defaults.partitions.to_string(),
            c.topic_defaults.partitions != td.partitions,
            ConfigType::Int,
            "The partitions of auto-created topics and of CreateTopics with -1.",
        ),
        (
            "auto.create.topics.enable",
            c.topic_defaults.auto_create.to_string(),
            c.topic_defaults.auto_create != td.auto_create,
            ConfigType::Boolean,
            "Whether Metadata for an unknown topic creates it.",
        ),
        (
            "default.replication.factor",
            cl.default_replication_factor.to_string(),
            cl.default_replication_factor != d.default_replication_factor,
            ConfigType::Int,
            "The replication factor of auto-created topics and of CreateTopics with -1.",
        ),
        (
            "broker.session.timeout.ms",
            cl.broker_session_timeout_ms.to_string(),
            cl.broker_session_timeout_ms != d.broker_session_timeout_ms,
            ConfigType::Long,
            "A broker silent this long is fenced.",
        ),
        (
            "broker.heartbeat.interval.ms",
            cl.broker_heartbeat_interval_ms.to_string(),
            cl.broker_heartbeat_interval_ms != d.broker_heartbeat_interval_ms,
            ConfigType::Long,
            "How often a broker heartbeats to the controller.",
        ),
        (
            "auto.leader.rebalance.enable",
            cl.auto_leader_rebalance.to_string(),
            cl.auto_leader_rebalance != d.auto_leader_rebalance,
            ConfigType::Boolean,
            "Whether the controller moves leadership back to preferred replicas on its own.",
        ),
        (
            "replica.lag.time.max.ms",
            cl.replica_lag_time_max_ms.to_string(),
            cl.replica_lag_time_max_ms != d.replica_lag_time_max_ms,
            ConfigType::Long,
            "A follower that has not caught up for this long leaves the ISR.",
        ),
        (
            "socket.request.max.bytes",
            c.request_bytes_max.to_string(),
            true,
            ConfigType::Int,
            "The largest request frame; longer ones close the connection.",
        ),
        (
            "max.connections",
            c.connections_max.to_string(),
            true,
            ConfigType::Int,
            "Open client connections in all.",
        ),
        (
            "max.connections.per.ip",
            c.connections_max_per_ip.to_string(),
            true,
            ConfigType::Int,
            "Open connections from one client address.",
        ),
        (
            "queued.max.request.bytes",
            c.queued_request_bytes_max.to_string(),
            true,
            ConfigType::Long,
            "Bytes of requests being read or not yet answered, per shard.",
        ),
        (
            "connections.max.idle.ms",
            c.connection_idle_ms_max.to_string(),
            true,
            ConfigType::Long,
            "A connection that sends nothing for this long is closed.",
        ),
    ];
    entries
        .into_iter()
        .map(|(name, value, from_file, kind, doc)| {
            config_keys::read_only(name, value, from_file, kind, doc)
        })
        .collect()
}

fn entry(d: Described, include: Include) -> DescribeConfigsResourceResult {
    let synonyms = if include.synonyms {
        d.synonyms
            .into_iter()
            .map(|s| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_string(s.name))
                    .with_value(Some(StrBytes::from_string(s.value)))
                    .with_source(s.source as i8)
            })
            .collect()
    } else {
        Vec::new()
    };
    let documentation = include
        .documentation
        .then(|| StrBytes::from_static_str(d.doc));
    DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(d.name))
        .with_value(Some(StrBytes::from_string(d.value)))
        .with_read_only(d.read_only)
        .with_config_source(d.source as i8)
        .with_is_sensitive(d.sensitive)
        .with_synonyms(synonyms)
        .with_config_type(d.kind as i8)
        .with_documentation(documentation)
}
