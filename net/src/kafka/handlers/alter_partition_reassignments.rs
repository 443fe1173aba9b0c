//! AlterPartitionReassignments (v0–1, KIP-455): moves partitions' replicas between
//! brokers, or cancels a move (a null replica list). Decided by the active controller
//! (`sluice_control::reassign`: the target recorded with the replicas being added and
//! removed, completed once the added ones are in sync), answered once this broker's image
//! has the changes — the start of each move, not its end (ListPartitionReassignments
//! follows it). v1's `allow_replication_factor_change: false` refuses a target that
//! changes a partition's replica count (INVALID_REPLICATION_FACTOR).
//!
//! Bounds: at most `REASSIGN_PARTITIONS_MAX` partitions per request and
//! `REPLICAS_PER_PARTITION_MAX` replicas per target, refused whole with INVALID_REQUEST
//! before the controller sees it.

use std::rc::Rc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use sluice_control::rpc::{PartitionReassigned, Reply, Request as ControllerRequest};
use sluice_control::{BrokerId, ReassignRefusal, ReassignTarget};

use super::create_topics::REPLICAS_PER_PARTITION_MAX;
use super::ApiSpec;
use crate::broker::cluster::{
    ask_controller, error_code, wait_applied, CONTROLLER_REQUEST_TIMEOUT,
};
use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::kafka::runs::group_runs;
use crate::security::authz::Authz;
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::AlterPartitionReassignments,
    min: 0,
    max: 1,
};

/// The most partitions one request may name (Kafka's `MAX_RECORDS_PER_USER_OP`).
pub const REASSIGN_PARTITIONS_MAX: usize = 10_000;

/// Kafka's code for a controller's refusal of one partition.
pub fn refusal_code(r: &ReassignRefusal) -> ErrorCode {
    match r {
        ReassignRefusal::UnknownTopicOrPartition(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
        ReassignRefusal::NoReassignmentInProgress => code::NO_REASSIGNMENT_IN_PROGRESS,
        ReassignRefusal::InvalidReplicaAssignment(_) => code::INVALID_REPLICA_ASSIGNMENT,
        ReassignRefusal::InvalidReplicationFactor(_) => code::INVALID_REPLICATION_FACTOR,
    }
}

/// One partition's answer: (topic, partition, code, message).
type Answered = (String, i32, ErrorCode, Option<String>);

/// The answer's topics in the order they come, each with its partitions.
fn group_by_topic(results: Vec<Answered>) -> Vec<ReassignableTopicResponse> {
    let results = results
        .into_iter()
        .map(|(topic, partition, error, message)| {
            let result = ReassignablePartitionResponse::default()
                .with_partition_index(partition)
                .with_error_code(error.into())
                .with_error_message(message.map(StrBytes::from_string));
            (topic, result)
        });
    group_runs(results)
        .into_iter()
        .map(|(topic, partitions)| {
            ReassignableTopicResponse::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_partitions(partitions)
        })
        .collect()
}

fn answer(
    req: &Request,
    allow_rf_change: bool,
    error: ErrorCode,
    message: Option<String>,
    results: Vec<Answered>,
) -> Result<ResponseFrame, FrameError> {
    let resp = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change)
        .with_error_code(error.into())
        .with_error_message(message.map(StrBytes::from_string))
        .with_responses(group_by_topic(results));
    encode_response(req.header.correlation_id, req.version, &resp)
}

/// Why a request is refused whole before the controller sees it.
fn check_bounds(targets: &[ReassignTarget]) -> Result<(), String> {
    if targets.len() > REASSIGN_PARTITIONS_MAX {
        return Err(format!(
            "{} partitions named; at most {REASSIGN_PARTITIONS_MAX}",
            targets.len()
        ));
    }
    let longest = targets
        .iter()
        .filter_map(|t| t.replicas.as_ref().map(Vec::len))
        .max()
        .unwrap_or(0);
    if longest > REPLICAS_PER_PARTITION_MAX {
        return Err(format!(
            "{longest} replicas assigned to one partition; at most {REPLICAS_PER_PARTITION_MAX}"
        ));
    }
    Ok(())
}

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: AlterPartitionReassignmentsRequest = decode_body(req)?;
    // v0 has no such field: a change of replica count is allowed, as Kafka allows it.
    let allow_rf_change = req.version == 0 || body.allow_replication_factor_change;
    let targets: Vec<ReassignTarget> = body
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| ReassignTarget {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                replicas: p
                    .replicas
                    .as_ref()
                    .map(|r| r.iter().map(|b| BrokerId(b.0)).collect()),
            })
        })
        .collect();
    let each = |error: ErrorCode, message: &str| -> Vec<Answered> {
        targets
            .iter()
            .map(|t| {
                (
                    t.topic.clone(),
                    t.partition,
                    error,
                    Some(message.to_owned()),
                )
            })
            .collect()
    };
    // Kafka's check: ALTER on the cluster.
    if !authz.cluster(AclOperation::Alter) {
        let message = "Cluster authorization failed.";
        let results = each(code::CLUSTER_AUTHORIZATION_FAILED, message);
        return answer(
            req,
            allow_rf_change,
            code::CLUSTER_AUTHORIZATION_FAILED,
            Some(message.to_owned()),
            results,
        );
    }
    if let Err(message) = check_bounds(&targets) {
        tracing::info!(%message, "AlterPartitionReassignments refused");
        let results = each(code::INVALID_REQUEST, &message);
        return answer(
            req,
            allow_rf_change,
            code::INVALID_REQUEST,
            Some(message),
            results,
        );
    }
    let ask = ControllerRequest::Reassign {
        allow_rf_change,
        targets: targets.clone(),
    };
    match reassign(shard, &ask).await {
        Ok(results) => {
            let results = results
                .into_iter()
                .map(|r| {
                    let (error, message) = match &r.refusal {
                        None => (code::NONE, None),
                        Some(why) => (refusal_code(why), Some(why.to_string())),
                    };
                    (r.topic, r.partition, error, message)
                })
                .collect();
            answer(req, allow_rf_change, code::NONE, None, results)
        }
        Err((error, message)) => {
            tracing::info!(%message, "AlterPartitionReassignments failed");
            let results = each(error, &message);
            answer(req, allow_rf_change, error, Some(message), results)
        }
    }
}

/// Asks the active controller and waits until this shard's image has the changes.
async fn reassign(
    shard: &Shard,
    ask: &ControllerRequest,
) -> Result<Vec<PartitionReassigned>, (ErrorCode, String)> {
    match ask_controller(&shard.cluster.view, ask, CONTROLLER_REQUEST_TIMEOUT).await? {
        Reply::Reassigned { offset, results } => {
            wait_applied(&shard.cluster, offset.0, CONTROLLER_REQUEST_TIMEOUT).await?;
            Ok(results)
        }
        Reply::Error { kind, message } => Err((error_code(kind), message)),
        other => Err((
            code::UNKNOWN_SERVER_ERROR,
            format!("unexpected controller answer {other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(replicas: usize) -> ReassignTarget {
        ReassignTarget {
            topic: "t".into(),
            partition: 0,
            replicas: Some((0..replicas as i32).map(BrokerId).collect()),
        }
    }

    #[test]
    fn requests_past_the_bounds_are_refused_whole() {
        assert!(check_bounds(&[target(3)]).is_ok());
        assert!(check_bounds(&[target(REPLICAS_PER_PARTITION_MAX + 1)]).is_err());
        let many = vec![target(1); REASSIGN_PARTITIONS_MAX + 1];
        assert!(check_bounds(&many).is_err());
    }

    #[test]
    fn partitions_are_answered_grouped_by_topic_in_request_order() {
        let grouped = group_by_topic(vec![
            ("a".into(), 0, code::NONE, None),
            ("a".into(), 1, code::NO_REASSIGNMENT_IN_PROGRESS, None),
            ("b".into(), 0, code::NONE, None),
        ]);
        assert_eq!(grouped.len(), 2);
        assert_eq!(grouped[0].partitions.len(), 2);
        assert_eq!(grouped[0].partitions[1].error_code, 85);
    }
}
