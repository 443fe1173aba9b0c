//! SyncGroup: the leader hands out assignments; followers wait for them.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::groups::persist;
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::SyncGroup,
    min: 0,
    max: 5,
};

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: SyncGroupRequest = decode_body(req)?;
    // Kafka's check: READ on the group.
    if !authz.group(AclOperation::Read, &body.group_id) {
        let resp =
            SyncGroupResponse::default().with_error_code(code::GROUP_AUTHORIZATION_FAILED.into());
        return encode_response(req.header.correlation_id, req.version, &resp);
    }
    let assignments = body
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let outcome = match shard.groups.sync(
        &body.group_id.0,
        body.generation_id,
        (&body.member_id, body.group_instance_id.as_deref()),
        (body.protocol_type.as_deref(), body.protocol_name.as_deref()),
        assignments,
    ) {
        Ok(Ok(o)) => Ok(o),
        Ok(Err(rx)) => shard.group_answer(rx, code::REBALANCE_IN_PROGRESS).await,
        Err(e) => Err(e),
    };
    // Answered once the membership it hands out is durable (see `store_membership`).
    let outcome = match outcome {
        Ok(o) if o.error == code::NONE => persist::store_membership(shard, &body.group_id.0)
            .await
            .map(|()| o),
        other => other,
    };
    let resp = match outcome {
        Ok(o) => SyncGroupResponse::default()
            .with_error_code(o.error.into())
            .with_protocol_type(o.protocol_type.map(StrBytes::from_string))
            .with_protocol_name(o.protocol_name.map(StrBytes::from_string))
            .with_assignment(o.assignment),
        Err(error) => SyncGroupResponse::default().with_error_code(error.into()),
    };
    encode_response(req.header.correlation_id, req.version, &resp)
}
