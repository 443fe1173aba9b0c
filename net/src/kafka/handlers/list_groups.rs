//! ListGroups: every group this coordinator knows.

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{ApiKey, GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::ListGroups,
    min: 0,
    max: 4,
};

pub fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let body: ListGroupsRequest = decode_body(req)?;
    let groups = shard
        .groups
        .list()
        .into_iter()
        .filter(|(_, state, _)| {
            body.states_filter.is_empty()
                || body
                    .states_filter
                    .iter()
                    .any(|s| s.as_str() == state.name())
        })
        .map(|(name, state, protocol_type)| {
            let g = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(name)))
                .with_protocol_type(StrBytes::from_string(protocol_type));
            if req.version >= 4 {
                g.with_group_state(StrBytes::from_static_str(state.name()))
            } else {
                g
            }
        })
        .collect();
    let resp = ListGroupsResponse::default().with_groups(groups);
    encode_response(req.header.correlation_id, req.version, &resp)
}
