//! LeaveGroup: one member (v0–v2) or several (v3+) leave; the rest rebalance.

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{ApiKey, LeaveGroupRequest, LeaveGroupResponse};

use super::ApiSpec;
use crate::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::shard::Shard;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::LeaveGroup,
    min: 0,
    max: 4,
};

pub fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let body: LeaveGroupRequest = decode_body(req)?;
    let resp = if req.version >= 3 {
        let ids: Vec<String> = body
            .members
            .iter()
            .map(|m| m.member_id.to_string())
            .collect();
        let errors = shard.groups.leave(&body.group_id.0, &ids);
        let members = body
            .members
            .iter()
            .zip(errors)
            .map(|(m, e)| {
                MemberResponse::default()
                    .with_member_id(m.member_id.clone())
                    .with_group_instance_id(m.group_instance_id.clone())
                    .with_error_code(e)
            })
            .collect();
        LeaveGroupResponse::default().with_members(members)
    } else {
        let errors = shard
            .groups
            .leave(&body.group_id.0, &[body.member_id.to_string()]);
        LeaveGroupResponse::default().with_error_code(errors.first().copied().unwrap_or(0))
    };
    encode_response(req.header.correlation_id, req.version, &resp)
}
