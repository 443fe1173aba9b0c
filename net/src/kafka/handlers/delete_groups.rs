//! DeleteGroups: removes empty groups and their committed offsets (tombstones in
//! `__consumer_offsets`). A group with members gets NON_EMPTY_GROUP.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{ApiKey, DeleteGroupsRequest, DeleteGroupsResponse};

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::groups::persist;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DeleteGroups,
    min: 0,
    max: 2,
};

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: DeleteGroupsRequest = decode_body(req)?;
    let mut results = Vec::with_capacity(body.groups_names.len());
    for name in &body.groups_names {
        // Kafka's check: DELETE on the group.
        let error = if authz.group(AclOperation::Delete, name) {
            delete(shard, &name.0).await
        } else {
            code::GROUP_AUTHORIZATION_FAILED
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(name.clone())
                .with_error_code(error.into()),
        );
    }
    let resp = DeleteGroupsResponse::default().with_results(results);
    encode_response(req.header.correlation_id, req.version, &resp)
}

async fn delete(shard: &Rc<Shard>, group: &str) -> ErrorCode {
    let groups = &shard.groups;
    let tombstones = match groups.prepare_delete(group) {
        Ok(t) => t,
        Err(e) => return e,
    };
    match persist::append(shard, groups.partition_of(group), &tombstones).await {
        Ok(_) => {
            groups.finish_delete(group);
            tracing::info!(group, "group deleted");
            code::NONE
        }
        Err(e) => e,
    }
}
