//! Heartbeat: keeps a member's session alive; tells it when to rejoin.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, HeartbeatRequest, HeartbeatResponse};

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::Heartbeat,
    min: 0,
    max: 4,
};

pub fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let body: HeartbeatRequest = decode_body(req)?;
    let error = shard.groups.heartbeat(
        &body.group_id.0,
        body.generation_id,
        &body.member_id,
        body.group_instance_id.as_deref(),
    );
    let resp = HeartbeatResponse::default().with_error_code(error.into());
    encode_response(req.header.correlation_id, req.version, &resp)
}
