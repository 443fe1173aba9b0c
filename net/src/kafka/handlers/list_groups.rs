//! ListGroups: every group this coordinator knows, filtered by state (v4+) and by type
//! (v5+: `classic` or `consumer`); both filters compare without case, as Kafka's do.

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{ApiKey, GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::ListGroups,
    min: 0,
    max: 5,
};

fn wanted(filter: &[StrBytes], value: &str) -> bool {
    filter.is_empty() || filter.iter().any(|s| s.eq_ignore_ascii_case(value))
}

pub fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: ListGroupsRequest = decode_body(req)?;
    let all = authz.cluster(AclOperation::Describe);
    let groups = shard
        .groups
        .list()
        .into_iter()
        .filter(|g| wanted(&body.states_filter, g.state))
        .filter(|g| wanted(&body.types_filter, g.kind.name()))
        // Kafka's check: DESCRIBE on the cluster lists every group, else those the
        // client may DESCRIBE.
        .filter(|g| all || authz.group(AclOperation::Describe, &g.id))
        .map(|g| {
            let out = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.id)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type));
            let out = if req.version >= 4 {
                out.with_group_state(StrBytes::from_static_str(g.state))
            } else {
                out
            };
            if req.version >= 5 {
                out.with_group_type(StrBytes::from_static_str(g.kind.name()))
            } else {
                out
            }
        })
        .collect();
    let resp = ListGroupsResponse::default().with_groups(groups);
    encode_response(req.header.correlation_id, req.version, &resp)
}
