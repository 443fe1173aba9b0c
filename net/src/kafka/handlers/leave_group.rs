//! LeaveGroup: one member (v0–v2) or several, by member or instance id (v3+); the rest
//! rebalance.

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{ApiKey, LeaveGroupRequest, LeaveGroupResponse};

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::LeaveGroup,
    min: 0,
    max: 5,
};

pub fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: LeaveGroupRequest = decode_body(req)?;
    // Kafka's check: READ on the group.
    if !authz.group(AclOperation::Read, &body.group_id) {
        let resp =
            LeaveGroupResponse::default().with_error_code(code::GROUP_AUTHORIZATION_FAILED.into());
        return encode_response(req.header.correlation_id, req.version, &resp);
    }
    let resp = if req.version >= 3 {
        let members: Vec<(String, Option<String>)> = body
            .members
            .iter()
            .map(|m| {
                let instance = m.group_instance_id.as_ref().map(|s| s.to_string());
                (m.member_id.to_string(), instance)
            })
            .collect();
        match shard.groups.leave(&body.group_id.0, &members) {
            Ok(errors) => {
                let members = body
                    .members
                    .iter()
                    .zip(errors)
                    .map(|(m, e)| {
                        MemberResponse::default()
                            .with_member_id(m.member_id.clone())
                            .with_group_instance_id(m.group_instance_id.clone())
                            .with_error_code(e.into())
                    })
                    .collect();
                LeaveGroupResponse::default().with_members(members)
            }
            Err(e) => LeaveGroupResponse::default().with_error_code(e.into()),
        }
    } else {
        let member = [(body.member_id.to_string(), None)];
        let error = match shard.groups.leave(&body.group_id.0, &member) {
            Ok(errors) => errors.first().copied().unwrap_or(code::NONE),
            Err(e) => e,
        };
        LeaveGroupResponse::default().with_error_code(error.into())
    };
    encode_response(req.header.correlation_id, req.version, &resp)
}
