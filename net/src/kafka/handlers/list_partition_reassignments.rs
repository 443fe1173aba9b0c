//! ListPartitionReassignments (v0, KIP-455): the partitions being reassigned, with their
//! replicas and those being added and removed, as the active controller's image has them
//! (a null topic list: every one; otherwise those among the named partitions, unknown ones
//! left out, as Kafka does).
//!
//! Bounds: at most `LIST_PARTITIONS_MAX` named partitions, else INVALID_REQUEST.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId as WireBrokerId, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use sluice_control::rpc::{Reply, Request as ControllerRequest};
use sluice_control::{BrokerId, OngoingReassignment};

use super::alter_partition_reassignments::REASSIGN_PARTITIONS_MAX;
use super::ApiSpec;
use crate::broker::cluster::{ask_controller, error_code, CONTROLLER_REQUEST_TIMEOUT};
use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::ListPartitionReassignments,
    min: 0,
    max: 0,
};

/// The most partitions one request may name.
pub const LIST_PARTITIONS_MAX: usize = REASSIGN_PARTITIONS_MAX;

fn wire(ids: &[BrokerId]) -> Vec<WireBrokerId> {
    ids.iter().map(|b| WireBrokerId(b.0)).collect()
}

/// The answer's topics, by name, each with its partitions.
fn by_topic(ongoing: Vec<OngoingReassignment>) -> Vec<OngoingTopicReassignment> {
    let mut topics: BTreeMap<String, Vec<OngoingPartitionReassignment>> = BTreeMap::new();
    for o in ongoing {
        topics.entry(o.topic).or_default().push(
            OngoingPartitionReassignment::default()
                .with_partition_index(o.partition)
                .with_replicas(wire(&o.replicas))
                .with_adding_replicas(wire(&o.adding_replicas))
                .with_removing_replicas(wire(&o.removing_replicas)),
        );
    }
    topics
        .into_iter()
        .map(|(name, partitions)| {
            OngoingTopicReassignment::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions)
        })
        .collect()
}

fn answer(
    req: &Request,
    error: ErrorCode,
    message: Option<String>,
    ongoing: Vec<OngoingReassignment>,
) -> Result<ResponseFrame, FrameError> {
    let resp = ListPartitionReassignmentsResponse::default()
        .with_error_code(error.into())
        .with_error_message(message.map(StrBytes::from_string))
        .with_topics(by_topic(ongoing));
    encode_response(req.header.correlation_id, req.version, &resp)
}

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: ListPartitionReassignmentsRequest = decode_body(req)?;
    // Kafka's check: DESCRIBE on the cluster.
    if !authz.cluster(AclOperation::Describe) {
        let message = "Cluster authorization failed.".to_owned();
        return answer(
            req,
            code::CLUSTER_AUTHORIZATION_FAILED,
            Some(message),
            Vec::new(),
        );
    }
    let partitions: Option<Vec<(String, Vec<i32>)>> = body.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let named: usize = partitions
        .iter()
        .flatten()
        .map(|(_, ps)| ps.len().max(1))
        .sum();
    if named > LIST_PARTITIONS_MAX {
        let message = format!("{named} partitions named; at most {LIST_PARTITIONS_MAX}");
        tracing::info!(%message, "ListPartitionReassignments refused");
        return answer(req, code::INVALID_REQUEST, Some(message), Vec::new());
    }
    let ask = ControllerRequest::ListReassignments { partitions };
    match ask_controller(&shard.cluster.view, &ask, CONTROLLER_REQUEST_TIMEOUT).await {
        Ok(Reply::Reassignments { ongoing }) => answer(req, code::NONE, None, ongoing),
        Ok(Reply::Error { kind, message }) => {
            answer(req, error_code(kind), Some(message), Vec::new())
        }
        Ok(other) => answer(
            req,
            code::UNKNOWN_SERVER_ERROR,
            Some(format!("unexpected controller answer {other:?}")),
            Vec::new(),
        ),
        Err((error, message)) => {
            tracing::info!(%message, "ListPartitionReassignments failed");
            answer(req, error, Some(message), Vec::new())
        }
    }
}
