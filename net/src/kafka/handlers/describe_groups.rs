//! DescribeGroups: state, protocol and members of each group.

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{ApiKey, DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::{AclOperation, ResourceType};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DescribeGroups,
    min: 0,
    max: 5,
};

pub fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: DescribeGroupsRequest = decode_body(req)?;
    let groups = body
        .groups
        .iter()
        .map(|g| {
            let d = DescribedGroup::default().with_group_id(g.clone());
            // Kafka's check: DESCRIBE on the group.
            if !authz.group(AclOperation::Describe, g) {
                return d.with_error_code(code::GROUP_AUTHORIZATION_FAILED.into());
            }
            let d = d.with_authorized_operations(authz.operations(
                body.include_authorized_operations,
                ResourceType::Group,
                g,
            ));
            match shard.groups.describe(&g.0) {
                Err(e) => d.with_error_code(e.into()),
                Ok(None) => d.with_group_state(StrBytes::from_static_str("Dead")),
                Ok(Some(v)) => d
                    .with_group_state(StrBytes::from_static_str(v.state.name()))
                    .with_protocol_type(StrBytes::from_string(v.protocol_type))
                    .with_protocol_data(StrBytes::from_string(v.protocol_name))
                    .with_members(
                        v.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(StrBytes::from_string(m.member_id))
                                    .with_group_instance_id(
                                        m.group_instance_id.map(StrBytes::from_string),
                                    )
                                    .with_client_id(StrBytes::from_string(m.client_id))
                                    .with_client_host(StrBytes::from_string(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
            }
        })
        .collect();
    let resp = DescribeGroupsResponse::default().with_groups(groups);
    encode_response(req.header.correlation_id, req.version, &resp)
}
