//! FindCoordinator: a group's coordinator is the broker leading its partition of
//! `__consumer_offsets`, a transactional id's the one leading its partition of
//! `__transaction_state`, in the metadata image (none yet, or a fenced one:
//! COORDINATOR_NOT_AVAILABLE, which clients retry). The first transactional lookup has
//! `__transaction_state` created, as Kafka does.

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_control::PartitionId;

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::groups::OFFSETS_TOPIC;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::session::Session;
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::FindCoordinator,
    min: 0,
    max: 4,
};

/// Key types: a consumer group, a transactional id.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// The coordinating broker of a key: (node id, host, port).
fn coordinator(
    shard: &Rc<Shard>,
    session: &Session,
    key: &str,
    key_type: i8,
) -> Result<(i32, String, i32), ErrorCode> {
    let (topic, partition) = match key_type {
        KEY_TYPE_GROUP => (OFFSETS_TOPIC, shard.groups.partition_of(key) as i32),
        KEY_TYPE_TRANSACTION => {
            if key.is_empty() {
                return Err(code::INVALID_REQUEST);
            }
            let Some(count) = crate::txn::persist::partition_count(shard) else {
                crate::txn::coordinator::create_topic(shard);
                return Err(code::COORDINATOR_NOT_AVAILABLE);
            };
            (
                crate::txn::TXN_TOPIC,
                crate::txn::partition_of(key, count) as i32,
            )
        }
        _ => return Err(code::INVALID_REQUEST),
    };
    let image = shard.cluster.image();
    let leader = image
        .topic_by_name(topic)
        .and_then(|t| t.partitions.get(&PartitionId(partition)))
        .and_then(|p| p.leader)
        .ok_or(code::COORDINATOR_NOT_AVAILABLE)?;
    let broker = image
        .broker(leader)
        .filter(|b| !b.fenced)
        .ok_or(code::COORDINATOR_NOT_AVAILABLE)?;
    let listener =
        super::metadata::endpoint(shard, session, broker).ok_or(code::COORDINATOR_NOT_AVAILABLE)?;
    Ok((broker.id.0, listener.host.clone(), i32::from(listener.port)))
}

pub fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: FindCoordinatorRequest = decode_body(req)?;
    // Kafka's checks: DESCRIBE on the group or the transactional id.
    let coordinator = |key: &str| match body.key_type {
        KEY_TYPE_GROUP if !authz.group(AclOperation::Describe, key) => {
            Err(code::GROUP_AUTHORIZATION_FAILED)
        }
        KEY_TYPE_TRANSACTION if !authz.transactional_id(AclOperation::Describe, key) => {
            Err(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        }
        _ => coordinator(shard, session, key, body.key_type),
    };
    let resp = if req.version >= 4 {
        let coordinators = body
            .coordinator_keys
            .iter()
            .map(|k| {
                let c = Coordinator::default().with_key(k.clone());
                match coordinator(k) {
                    Ok((id, host, port)) => c
                        .with_node_id(BrokerId(id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port),
                    Err(e) => c
                        .with_error_code(e.into())
                        .with_node_id(BrokerId(-1))
                        .with_port(-1),
                }
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        match coordinator(&body.key) {
            Ok((id, host, port)) => FindCoordinatorResponse::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port),
            Err(e) => FindCoordinatorResponse::default()
                .with_error_code(e.into())
                .with_node_id(BrokerId(-1))
                .with_port(-1),
        }
    };
    encode_response(req.header.correlation_id, req.version, &resp)
}
