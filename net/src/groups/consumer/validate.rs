//! ConsumerGroupHeartbeat's request checks: Kafka's, and this broker's bounds on every
//! field from the wire.

use super::super::{assignor, subscription};
use super::{Heartbeat, Refusal, STATIC_LEAVE_EPOCH};
use crate::kafka::errors::code;

/// Longest member id, instance id or rack id accepted (bytes).
pub const ID_BYTES_MAX: usize = 255;
/// Owned partitions a heartbeat may list.
pub const OWNED_PARTITIONS_MAX: usize = 100_000;

/// Kafka's `throwIfConsumerGroupHeartbeatRequestIsInvalid`, plus this broker's bounds;
/// compiles the regex into `hb.compiled_regex`.
pub fn validate(hb: &mut Heartbeat) -> Result<(), Refusal> {
    let invalid = |m: &str| Err(Refusal::new(code::INVALID_REQUEST, m));
    if hb.member_id.is_empty() {
        return invalid("MemberId can't be empty.");
    }
    for (what, id) in [
        ("MemberId", Some(&hb.member_id)),
        ("InstanceId", hb.instance_id.as_ref()),
        ("RackId", hb.rack_id.as_ref()),
    ] {
        match id {
            Some(id) if id.is_empty() && what != "MemberId" => {
                return invalid(&format!("{what} can't be empty."))
            }
            Some(id) if id.len() > ID_BYTES_MAX => {
                return invalid(&format!("{what} is longer than {ID_BYTES_MAX} bytes."))
            }
            _ => {}
        }
    }
    if hb.member_epoch < STATIC_LEAVE_EPOCH {
        return invalid(&format!("MemberEpoch {} is invalid.", hb.member_epoch));
    }
    if hb.member_epoch == STATIC_LEAVE_EPOCH && hb.instance_id.is_none() {
        return invalid("InstanceId can't be null when leaving as a static member.");
    }
    if hb.rebalance_timeout_ms < -1 {
        return invalid("RebalanceTimeoutMs can't be negative.");
    }
    if hb.member_epoch == 0 {
        if hb.rebalance_timeout_ms == -1 {
            return invalid("RebalanceTimeoutMs must be provided in first request.");
        }
        if hb.topic_names.is_none() && hb.regex.is_none() {
            return invalid(
                "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
            );
        }
        if hb.owned.as_ref().is_some_and(|o| !o.is_empty()) {
            return invalid("TopicPartitions must be empty when (re-)joining.");
        }
    }
    if hb
        .topic_names
        .as_ref()
        .is_some_and(|n| n.len() > subscription::SUBSCRIBED_TOPICS_MAX)
    {
        return invalid(&format!(
            "more than {} subscribed topic names",
            subscription::SUBSCRIBED_TOPICS_MAX
        ));
    }
    let owned: usize = hb.owned.iter().flatten().map(|(_, ps)| ps.len()).sum();
    if owned > OWNED_PARTITIONS_MAX {
        return invalid(&format!(
            "more than {OWNED_PARTITIONS_MAX} owned partitions"
        ));
    }
    if let Some(a) = &hb.assignor {
        if !assignor::ASSIGNORS.contains(&a.as_str()) {
            return Err(Refusal::new(
                code::UNSUPPORTED_ASSIGNOR,
                format!(
                    "ServerAssignor {a} is not supported. Supported assignors: {}.",
                    assignor::ASSIGNORS.join(", ")
                ),
            ));
        }
    }
    hb.compiled_regex = match hb.regex.as_deref() {
        None | Some("") => None,
        Some(r) => Some(subscription::compile(r).map_err(|e| {
            Refusal::new(
                code::INVALID_REGULAR_EXPRESSION,
                format!("SubscribedTopicRegex is invalid: {e}"),
            )
        })?),
    };
    Ok(())
}
