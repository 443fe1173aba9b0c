//! DescribeQuorum (KIP-595, v0–2): the controller quorum as the active controller sees
//! it, for `kafka-metadata-quorum.sh describe --status / --replication`. Kafka's
//! metadata log is `__cluster_metadata` partition 0; Sluice's is the raft log, so the
//! answer maps it: leader epoch = raft term, high watermark = commit index, each member's
//! log end offset = the last raft index the leader knows it has. Voters are the raft
//! voters, observers its learners; fetch and caught-up times are those of the members'
//! last answers to the leader (-1 when not heard from since it took over). v2's nodes are
//! the controllers' quorum addresses, on a listener named `CONTROLLER`. The request is
//! forwarded to the active controller, as a Kafka broker forwards it.

use std::rc::Rc;

use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_control::rpc::{QuorumProgress, Reply, Request as ControllerRequest};
use sluice_control::ReplicaProgress;

use super::ApiSpec;
use crate::broker::cluster::{ask_controller, error_code, CONTROLLER_REQUEST_TIMEOUT};
use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::{Authz, AUTHORIZATION_FAILED};
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DescribeQuorum,
    min: 0,
    max: 2,
};

/// Kafka's name of the metadata log's topic (its only partition is 0).
pub const METADATA_TOPIC: &str = "__cluster_metadata";

fn replica(p: &ReplicaProgress) -> ReplicaState {
    ReplicaState::default()
        .with_replica_id(BrokerId(p.id.0 as i32))
        .with_log_end_offset(p.log_end as i64)
        .with_last_fetch_timestamp(p.last_fetch_ms.unwrap_or(-1))
        .with_last_caught_up_timestamp(p.last_caught_up_ms.unwrap_or(-1))
}

fn partition(q: &QuorumProgress) -> PartitionData {
    PartitionData::default()
        .with_leader_id(BrokerId(q.leader.0 as i32))
        .with_leader_epoch(q.term.0 as i32)
        .with_high_watermark(q.commit_index as i64)
        .with_current_voters(q.voters.iter().map(replica).collect())
        .with_observers(q.learners.iter().map(replica).collect())
}

/// Every asked partition with `error` (Kafka's partition-level error answer).
fn partitions_failed(
    body: &DescribeQuorumRequest,
    error: ErrorCode,
    message: &str,
) -> Vec<TopicData> {
    body.topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    PartitionData::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.into())
                        .with_error_message(Some(StrBytes::from_string(message.to_string())))
                })
                .collect();
            TopicData::default()
                .with_topic_name(t.topic_name.clone())
                .with_partitions(partitions)
        })
        .collect()
}

/// The controllers as v2's `nodes`: each quorum address on a `CONTROLLER` listener.
fn nodes(shard: &Shard) -> Vec<Node> {
    shard
        .cluster
        .view
        .controllers()
        .into_iter()
        .map(|(id, addr)| {
            Node::default()
                .with_node_id(BrokerId(id.0 as i32))
                .with_listeners(vec![Listener::default()
                    .with_name(StrBytes::from_static_str("CONTROLLER"))
                    .with_host(StrBytes::from_string(addr.ip().to_string()))
                    .with_port(addr.port())])
        })
        .collect()
}

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: DescribeQuorumRequest = decode_body(req)?;
    let mut resp = answer(shard, authz, &body).await;
    if req.version < 2 {
        // Error messages and nodes came with v2.
        resp.error_message = None;
        resp.nodes.clear();
        resp.topics
            .iter_mut()
            .flat_map(|t| t.partitions.iter_mut())
            .for_each(|p| p.error_message = None);
    }
    encode_response(req.header.correlation_id, req.version, &resp)
}

async fn answer(
    shard: &Shard,
    authz: &Authz<'_>,
    body: &DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    // Kafka's check: DESCRIBE on the cluster.
    if !authz.cluster(AclOperation::Describe) {
        return DescribeQuorumResponse::default()
            .with_error_code(code::CLUSTER_AUTHORIZATION_FAILED.into())
            .with_error_message(Some(StrBytes::from_static_str(AUTHORIZATION_FAILED)));
    }
    let asks_metadata_log = matches!(&body.topics[..], [t]
        if t.topic_name.0.as_str() == METADATA_TOPIC
            && matches!(&t.partitions[..], [p] if p.partition_index == 0));
    if !asks_metadata_log {
        let message = format!("only {METADATA_TOPIC} partition 0 has a quorum");
        let topics = partitions_failed(body, code::UNKNOWN_TOPIC_OR_PARTITION, &message);
        return DescribeQuorumResponse::default().with_topics(topics);
    }
    let ask = ControllerRequest::DescribeQuorum;
    let (error, message) =
        match ask_controller(&shard.cluster.view, &ask, CONTROLLER_REQUEST_TIMEOUT).await {
            Ok(Reply::Quorum(q)) => {
                let topic = TopicData::default()
                    .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
                    .with_partitions(vec![partition(&q)]);
                return DescribeQuorumResponse::default()
                    .with_topics(vec![topic])
                    .with_nodes(nodes(shard));
            }
            Ok(Reply::Error { kind, message }) => (error_code(kind), message),
            Ok(other) => (
                code::UNKNOWN_SERVER_ERROR,
                format!("unexpected controller answer {other:?}"),
            ),
            Err((error, message)) => (error, message),
        };
    tracing::info!(error = error.0, %message, "DescribeQuorum failed");
    DescribeQuorumResponse::default().with_topics(partitions_failed(body, error, &message))
}
