//! The async controller client, for shards and the control thread: ask the active
//! controller (following `NotLeader`, rotating past controllers that do not answer),
//! ask for a metadata change and wait until this shard's image has it.
//!
//! Invariant: every wait (for an answer, for the image to reach an offset) has a deadline.

use std::time::{Duration, Instant};

use sluice_control::rpc::{self, ErrorKind, Reply, Request};
use sluice_control::BrokerId;

use super::{BrokerState, ClusterView, ShardImage};
use crate::kafka::errors::{code, ErrorCode};

/// Requests that wait on the controller give up after this long.
pub const CONTROLLER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before asking again after a controller was unreachable or had no leader.
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The Kafka error code for a controller refusal.
pub fn error_code(kind: ErrorKind) -> ErrorCode {
    match kind {
        ErrorKind::TopicExists => code::TOPIC_ALREADY_EXISTS,
        ErrorKind::UnknownTopic => code::UNKNOWN_TOPIC_OR_PARTITION,
        ErrorKind::InvalidTopic => code::INVALID_TOPIC_EXCEPTION,
        ErrorKind::InvalidPartitions => code::INVALID_PARTITIONS,
        ErrorKind::InvalidReplicationFactor => code::INVALID_REPLICATION_FACTOR,
        ErrorKind::InvalidRequest => code::INVALID_REQUEST,
        ErrorKind::InvalidReplicaAssignment => code::INVALID_REPLICA_ASSIGNMENT,
        ErrorKind::Timeout => code::REQUEST_TIMED_OUT,
        ErrorKind::Internal => code::UNKNOWN_SERVER_ERROR,
        ErrorKind::InvalidMembership => code::INVALID_REQUEST,
        ErrorKind::MembershipBusy => code::REQUEST_TIMED_OUT,
        ErrorKind::FencedLeaderEpoch => code::FENCED_LEADER_EPOCH,
        ErrorKind::IneligibleReplica => code::INELIGIBLE_REPLICA,
        ErrorKind::StaleBrokerEpoch => code::STALE_BROKER_EPOCH,
    }
}

/// Sends `req` to the active controller (following `NotLeader` answers, trying the next
/// controller when one does not answer) until it answers or `timeout` passes.
pub async fn ask_controller(
    view: &ClusterView,
    req: &Request,
    timeout: Duration,
) -> Result<Reply, (ErrorCode, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err((
                code::REQUEST_TIMED_OUT,
                "no active controller answered in time".into(),
            ));
        }
        match rpc::call(view.controller_addr(), view.cluster_tls(), req, left).await {
            Ok(Reply::NotLeader { leader: Some(l) }) if view.controller_count() > 1 => {
                view.point_at(l);
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            Ok(Reply::NotLeader { .. }) => {
                view.rotate();
                glommio::timer::sleep(RETRY_PAUSE).await;
            }
            Ok(reply) => return Ok(reply),
            Err(e) => {
                tracing::debug!(error = %e, "controller request failed; trying the next one");
                view.rotate();
                glommio::timer::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Asks the controller for a metadata change and waits until this shard's image has it.
/// `Ok(offset)` or `(error code, message)`.
pub async fn change_metadata(
    image: &ShardImage,
    req: &Request,
    timeout: Duration,
) -> Result<u64, (ErrorCode, String)> {
    match ask_controller(&image.view, req, timeout).await? {
        Reply::Done { offset } => wait_applied(image, offset.0, timeout)
            .await
            .map(|()| offset.0),
        Reply::Error { kind, message } => Err((error_code(kind), message)),
        other => Err((
            code::UNKNOWN_SERVER_ERROR,
            format!("unexpected controller answer {other:?}"),
        )),
    }
}

/// Waits until this shard's image has metadata offset `offset` (what the controller
/// answered a change with).
pub async fn wait_applied(
    image: &ShardImage,
    offset: u64,
    timeout: Duration,
) -> Result<(), (ErrorCode, String)> {
    if image.wait_for(offset, timeout).await {
        Ok(())
    } else {
        Err((
            code::REQUEST_TIMED_OUT,
            format!("metadata offset {offset} not reached in time"),
        ))
    }
}

/// Asks the controller to set the ISR of a partition this broker leads at
/// `leader_epoch`, and waits until this shard's image shows the change.
pub async fn alter_isr(
    image: &ShardImage,
    tp: &crate::store::TopicPartition,
    leader_epoch: sluice_control::LeaderEpoch,
    isr: &[BrokerId],
) -> Result<(), (ErrorCode, String)> {
    let broker_epoch = match image.view.broker_state() {
        BrokerState::Active(e) | BrokerState::Fenced(e) => e,
        BrokerState::Unregistered => {
            return Err((code::NOT_LEADER_OR_FOLLOWER, "not registered".into()));
        }
    };
    let req = Request::AlterPartition {
        broker: BrokerId(image.view.node_id),
        broker_epoch,
        topic: tp.topic.clone(),
        partition: tp.partition.0,
        leader_epoch,
        isr: isr.to_vec(),
    };
    change_metadata(image, &req, CONTROLLER_REQUEST_TIMEOUT)
        .await
        .map(|_| ())
}
