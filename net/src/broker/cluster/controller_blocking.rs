//! The blocking controller client, for the admin endpoint's threads: controller
//! membership changes and preferred-leader elections, each bounded by
//! `CONTROLLER_REQUEST_TIMEOUT`.

use std::time::{Duration, Instant};

use sluice_control::rpc::{self, ErrorKind, Reply, Request};

use super::controller::{CONTROLLER_REQUEST_TIMEOUT, RETRY_PAUSE};
use super::status_json::not_preferred;
use super::ClusterView;

/// Sends `req` to the active controller from a blocking thread (the admin endpoint),
/// following `NotLeader` answers and trying the next controller when one does not answer,
/// until an answer or `CONTROLLER_REQUEST_TIMEOUT`.
pub(super) fn ask_controller_blocking(
    view: &ClusterView,
    req: &Request,
    timeout: Duration,
) -> Result<Reply, NoControllerAnswer> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NoControllerAnswer);
        }
        match rpc::call_blocking(view.controller_addr(), view.cluster_tls(), req, left) {
            Ok(Reply::NotLeader { leader: Some(l) }) if view.controller_count() > 1 => {
                view.point_at(l);
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(Reply::NotLeader { .. }) | Err(_) => {
                view.rotate();
                std::thread::sleep(RETRY_PAUSE);
            }
            Ok(reply) => return Ok(reply),
        }
    }
}

/// No controller answered a blocking request within its bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no active controller answered in time")]
pub struct NoControllerAnswer;

/// Why a preferred-leader election through the admin endpoint failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElectError {
    #[error(transparent)]
    NoAnswer(#[from] NoControllerAnswer),
    /// The controller refused, in its words.
    #[error("{0}")]
    Refused(String),
    /// The election is committed at `offset`, but this node's image is not there yet.
    #[error("metadata offset {0} not reached in time")]
    NotReached(u64),
}

/// Why a membership change through the admin endpoint failed.
#[derive(Debug)]
pub enum MembershipError {
    /// Can never apply as asked (duplicate, unknown, last voter, bad argument).
    Invalid(String),
    /// Another change is under way, or no controller answered in time: retry.
    Unavailable(String),
}

/// `/cluster/controllers/add` and `/remove` on the admin endpoint (a blocking thread):
/// asks the active controller for the change, answered once it is applied there; the
/// answer (JSON) names the voters this node then sees.
pub fn change_controllers_blocking(
    view: &ClusterView,
    req: &Request,
) -> Result<String, MembershipError> {
    match ask_controller_blocking(view, req, CONTROLLER_REQUEST_TIMEOUT)
        .map_err(|e| MembershipError::Unavailable(e.to_string()))?
    {
        Reply::Done { offset } => {
            let deadline = Instant::now() + CONTROLLER_REQUEST_TIMEOUT;
            let quorum = loop {
                // Heartbeats and the controller's own publication refresh the quorum.
                match rpc::call_blocking(
                    view.controller_addr(),
                    view.cluster_tls(),
                    &Request::Status,
                    RETRY_PAUSE * 20,
                ) {
                    Ok(Reply::Status(q)) => break Some(q),
                    _ if Instant::now() >= deadline => break None,
                    _ => {
                        view.rotate();
                        std::thread::sleep(RETRY_PAUSE);
                    }
                }
            };
            let voters: Vec<u64> = quorum
                .map(|q| q.voters.iter().map(|v| v.0).collect())
                .unwrap_or_default();
            Ok(serde_json::json!({
                "metadata_offset": offset.0,
                "voters": voters,
            })
            .to_string())
        }
        Reply::Error {
            kind: ErrorKind::InvalidMembership,
            message,
        } => Err(MembershipError::Invalid(message)),
        Reply::Error { message, .. } => Err(MembershipError::Unavailable(message)),
        other => Err(MembershipError::Unavailable(format!(
            "unexpected controller answer {other:?}"
        ))),
    }
}

/// `/cluster/elect-leaders` on the admin endpoint (a blocking thread): asks the active
/// controller to move leadership to preferred replicas, waits until this node's image has
/// the result, and says how many partitions were off their preferred leader before and
/// after (JSON).
pub fn elect_leaders_blocking(view: &ClusterView) -> Result<String, ElectError> {
    let before = not_preferred(&view.image());
    let deadline = Instant::now() + CONTROLLER_REQUEST_TIMEOUT;
    let offset = loop {
        if Instant::now() >= deadline {
            return Err(NoControllerAnswer.into());
        }
        match rpc::call_blocking(
            view.controller_addr(),
            view.cluster_tls(),
            &Request::ElectLeaders,
            CONTROLLER_REQUEST_TIMEOUT,
        ) {
            Ok(Reply::Done { offset }) => break offset.0,
            Ok(Reply::NotLeader { leader: Some(l) }) if view.controller_count() > 1 => {
                view.point_at(l)
            }
            Ok(Reply::Error { message, .. }) => return Err(ElectError::Refused(message)),
            Ok(_) | Err(_) => {
                view.rotate();
                std::thread::sleep(RETRY_PAUSE);
            }
        }
    };
    while view.version() < offset {
        if Instant::now() >= deadline {
            return Err(ElectError::NotReached(offset));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let after = not_preferred(&view.image());
    Ok(serde_json::json!({
        "metadata_offset": offset,
        "not_preferred_before": before,
        "not_preferred_after": after,
    })
    .to_string())
}
