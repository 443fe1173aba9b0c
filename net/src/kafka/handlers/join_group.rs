//! JoinGroup: waits until the rebalance completes (see `crate::groups`). v4+ new
//! dynamic members first get MEMBER_ID_REQUIRED; v5+ carry `group.instance.id`.

use std::rc::Rc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{ApiKey, JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::consumer_group_heartbeat::ImageTopics;
use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::groups::{persist, JoinReply, JoinRequest};
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::JoinGroup,
    min: 0,
    max: 9,
};

/// Kafka's `client_host` form: `/` and the address.
pub fn client_host(req: &Request) -> String {
    req.peer_ip.map(|ip| format!("/{ip}")).unwrap_or_default()
}

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: JoinGroupRequest = decode_body(req)?;
    // Kafka's check: READ on the group.
    if !authz.group(AclOperation::Read, &body.group_id) {
        let resp = JoinGroupResponse::default()
            .with_error_code(code::GROUP_AUTHORIZATION_FAILED.into())
            .with_generation_id(-1);
        return encode_response(req.header.correlation_id, req.version, &resp);
    }
    let join = JoinRequest {
        group_id: body.group_id.0.to_string(),
        member_id: body.member_id.to_string(),
        group_instance_id: body.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: req.header.client_id.as_deref().unwrap_or("").to_string(),
        client_host: client_host(req),
        session_timeout_ms: body.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if req.version == 0 {
            body.session_timeout_ms
        } else {
            body.rebalance_timeout_ms
        },
        protocol_type: body.protocol_type.to_string(),
        protocols: body
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: req.version >= 4,
    };
    let group_id = join.group_id.clone();
    let image = shard.cluster.image();
    let joined = shard.groups.join(join, &ImageTopics(&image));
    drop(image);
    let outcome = match joined {
        // A classic member of a consumer group: answered once its records are durable.
        Ok(JoinReply::Now(o)) if o.error == code::NONE => {
            persist_consumer(shard, &group_id).await.map(|()| o)
        }
        Ok(JoinReply::Now(o)) => Ok(o),
        // A stopping broker does not wait for the rebalance to finish.
        Ok(JoinReply::Later(rx)) => shard.group_answer(rx, code::UNKNOWN_MEMBER_ID).await,
        Err(e) => Err(e),
    };
    let resp = match outcome {
        Ok(o) => JoinGroupResponse::default()
            .with_error_code(o.error.into())
            .with_generation_id(o.generation)
            .with_protocol_type(o.protocol_type.map(StrBytes::from_string))
            .with_protocol_name(o.protocol_name.map(StrBytes::from_string))
            .with_leader(StrBytes::from_string(o.leader))
            .with_member_id(StrBytes::from_string(o.member_id))
            .with_members(
                o.members
                    .into_iter()
                    .map(|(id, instance, meta)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(StrBytes::from_string(id))
                            .with_group_instance_id(instance.map(StrBytes::from_string))
                            .with_metadata(meta)
                    })
                    .collect(),
            ),
        Err(error) => JoinGroupResponse::default()
            .with_error_code(error.into())
            .with_generation_id(-1)
            .with_member_id(body.member_id.clone()),
    };
    encode_response(req.header.correlation_id, req.version, &resp)
}

/// Makes what a classic member's JoinGroup changed in a consumer group durable.
async fn persist_consumer(
    shard: &Rc<Shard>,
    group_id: &str,
) -> Result<(), crate::kafka::errors::ErrorCode> {
    let recs = shard.groups.consumer_records(group_id)?;
    if recs.is_empty() {
        return Ok(());
    }
    persist::append(shard, shard.groups.partition_of(group_id), &recs)
        .await
        .map(|_| ())
}
