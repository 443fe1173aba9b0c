//! ElectLeaders (v0–2): PREFERRED (v0's only kind) moves leadership to each partition's
//! preferred replica; UNCLEAN gives a leaderless partition a leader, from the ISR, then
//! the ELR, then any live replica — the last only because it was asked, logged at WARN
//! by the controller. Decided and committed by the active controller (the same rules as
//! automatic election), answered once this broker's image has the changes. A null
//! partition list means every partition, answering only those that needed an election.

use std::rc::Rc;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use sluice_control::rpc::{PartitionElection, Reply, Request as ControllerRequest};
use sluice_control::{ElectionOutcome, ElectionType};

use super::ApiSpec;
use crate::broker::cluster::{
    ask_controller, error_code, wait_applied, CONTROLLER_REQUEST_TIMEOUT,
};
use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::kafka::runs::group_runs;
use crate::security::authz::{Authz, AUTHORIZATION_FAILED};
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::ElectLeaders,
    min: 0,
    max: 2,
};

/// The most partitions one request may name (Kafka's `MAX_RECORDS_PER_USER_OP`).
pub const ELECT_PARTITIONS_MAX: usize = 10_000;

fn outcome_code(o: ElectionOutcome) -> (ErrorCode, Option<&'static str>) {
    match o {
        ElectionOutcome::Elected => (code::NONE, None),
        ElectionOutcome::NotNeeded => (
            code::ELECTION_NOT_NEEDED,
            Some("Leader election not needed for topic partition."),
        ),
        ElectionOutcome::PreferredNotAvailable => (
            code::PREFERRED_LEADER_NOT_AVAILABLE,
            Some("The preferred leader was not available."),
        ),
        ElectionOutcome::EligibleLeadersNotAvailable => (
            code::ELIGIBLE_LEADERS_NOT_AVAILABLE,
            Some("Eligible topic partition leaders are not available."),
        ),
        ElectionOutcome::UnknownPartition => (
            code::UNKNOWN_TOPIC_OR_PARTITION,
            Some("This server does not host this topic-partition."),
        ),
    }
}

/// The answer's topics in the order they come, each with its partitions.
fn group_by_topic(
    results: Vec<(String, i32, ErrorCode, Option<String>)>,
) -> Vec<ReplicaElectionResult> {
    let results = results
        .into_iter()
        .map(|(topic, partition, error, message)| {
            let result = PartitionResult::default()
                .with_partition_id(partition)
                .with_error_code(error.into())
                .with_error_message(message.map(StrBytes::from_string));
            (topic, result)
        });
    group_runs(results)
        .into_iter()
        .map(|(topic, partitions)| {
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from_string(topic)))
                .with_partition_result(partitions)
        })
        .collect()
}

fn answer(
    req: &Request,
    error: ErrorCode,
    results: Vec<(String, i32, ErrorCode, Option<String>)>,
) -> Result<ResponseFrame, FrameError> {
    let resp = ElectLeadersResponse::default()
        .with_error_code(error.into())
        .with_replica_election_results(group_by_topic(results));
    encode_response(req.header.correlation_id, req.version, &resp)
}

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: ElectLeadersRequest = decode_body(req)?;
    let asked: Option<Vec<(String, Vec<i32>)>> = body.topic_partitions.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
            .collect()
    });
    let each_asked = |error: ErrorCode, message: &str| {
        asked
            .iter()
            .flatten()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .map(|(t, p)| (t, p, error, Some(message.to_string())))
            .collect::<Vec<_>>()
    };
    // Kafka's check: ALTER on the cluster.
    if !authz.cluster(AclOperation::Alter) {
        return answer(
            req,
            code::CLUSTER_AUTHORIZATION_FAILED,
            each_asked(code::CLUSTER_AUTHORIZATION_FAILED, AUTHORIZATION_FAILED),
        );
    }
    let election = match (req.version, body.election_type) {
        (0, _) | (_, 0) => ElectionType::Preferred,
        (_, 1) => ElectionType::Unclean,
        (_, other) => {
            let message = format!("Unknown election type {other}");
            tracing::info!(
                election_type = other,
                "ElectLeaders refused: unknown election type"
            );
            return answer(
                req,
                code::INVALID_REQUEST,
                each_asked(code::INVALID_REQUEST, &message),
            );
        }
    };
    let count: usize = asked.iter().flatten().map(|(_, ps)| ps.len().max(1)).sum();
    if count > ELECT_PARTITIONS_MAX {
        let message = format!("{count} partitions named; at most {ELECT_PARTITIONS_MAX}");
        tracing::info!(count, "ElectLeaders refused: too many partitions");
        return answer(
            req,
            code::INVALID_REQUEST,
            each_asked(code::INVALID_REQUEST, &message),
        );
    }
    let ask = ControllerRequest::Elect {
        election,
        partitions: asked.clone(),
    };
    match elect(shard, &ask).await {
        Ok(results) => {
            let results = results
                .into_iter()
                .map(|r| {
                    let (error, message) = outcome_code(r.outcome);
                    (r.topic, r.partition, error, message.map(str::to_string))
                })
                .collect();
            answer(req, code::NONE, results)
        }
        Err((error, message)) => {
            tracing::info!(%message, "ElectLeaders failed");
            answer(req, error, each_asked(error, &message))
        }
    }
}

/// Asks the active controller and waits until this shard's image has the elections.
async fn elect(
    shard: &Shard,
    ask: &ControllerRequest,
) -> Result<Vec<PartitionElection>, (ErrorCode, String)> {
    match ask_controller(&shard.cluster.view, ask, CONTROLLER_REQUEST_TIMEOUT).await? {
        Reply::Elected { offset, results } => {
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
