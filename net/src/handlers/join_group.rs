//! JoinGroup: waits until the rebalance completes (see `crate::groups`).

use std::rc::Rc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{ApiKey, JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSpec;
use crate::errors::code;
use crate::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::groups::JoinRequest;
use crate::shard::Shard;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::JoinGroup,
    min: 0,
    max: 6,
};

pub async fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let body: JoinGroupRequest = decode_body(req)?;
    let join = JoinRequest {
        group_id: body.group_id.0.to_string(),
        member_id: body.member_id.to_string(),
        client_id: req.header.client_id.as_deref().unwrap_or("").to_string(),
        client_host: String::new(),
        session_timeout_ms: body.session_timeout_ms,
        rebalance_timeout_ms: body.rebalance_timeout_ms,
        protocol_type: body.protocol_type.to_string(),
        protocols: body
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
    };
    let outcome = match shard.groups.join(join) {
        // A stopping broker does not wait for the rebalance to finish.
        Ok(rx) => shard.group_answer(rx, code::UNKNOWN_MEMBER_ID).await,
        Err(e) => Err(e),
    };
    let resp = match outcome {
        Ok(o) => JoinGroupResponse::default()
            .with_error_code(o.error)
            .with_generation_id(o.generation)
            .with_protocol_name(o.protocol_name.map(StrBytes::from_string))
            .with_leader(StrBytes::from_string(o.leader))
            .with_member_id(StrBytes::from_string(o.member_id))
            .with_members(
                o.members
                    .into_iter()
                    .map(|(id, meta)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(StrBytes::from_string(id))
                            .with_metadata(meta)
                    })
                    .collect(),
            ),
        Err(error) => JoinGroupResponse::default()
            .with_error_code(error)
            .with_generation_id(-1)
            .with_member_id(body.member_id.clone()),
    };
    encode_response(req.header.correlation_id, req.version, &resp)
}
