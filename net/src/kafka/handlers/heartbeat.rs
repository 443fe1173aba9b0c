//! Heartbeat: keeps a member's session alive; tells it when to rejoin.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, HeartbeatRequest, HeartbeatResponse};

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::Heartbeat,
    min: 0,
    max: 4,
};

pub fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: HeartbeatRequest = decode_body(req)?;
    // Kafka's check: READ on the group.
    if !authz.group(AclOperation::Read, &body.group_id) {
        let resp =
            HeartbeatResponse::default().with_error_code(code::GROUP_AUTHORIZATION_FAILED.into());
        return encode_response(req.header.correlation_id, req.version, &resp);
    }
    let error = shard.groups.heartbeat(
        &body.group_id.0,
        body.generation_id,
        &body.member_id,
        body.group_instance_id.as_deref(),
    );
    let resp = HeartbeatResponse::default().with_error_code(error.into());
    encode_response(req.header.correlation_id, req.version, &resp)
}
