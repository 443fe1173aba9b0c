//! OffsetDelete: removes a group's committed offsets for some partitions, unless a live
//! member subscribes to the topic (GROUP_SUBSCRIBED_TO_TOPIC).

use std::rc::Rc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{ApiKey, OffsetDeleteRequest, OffsetDeleteResponse};

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::groups::persist;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::OffsetDelete,
    min: 0,
    max: 0,
};

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: OffsetDeleteRequest = decode_body(req)?;
    let group = body.group_id.0.to_string();
    let wanted: Vec<(String, Vec<i32>)> = body
        .topics
        .iter()
        .map(|t| {
            let parts = t.partitions.iter().map(|p| p.partition_index).collect();
            (t.name.0.to_string(), parts)
        })
        .collect();
    let groups = &shard.groups;
    // Kafka's checks: DELETE on the group, READ on each topic.
    if !authz.group(AclOperation::Delete, &group) {
        let resp = OffsetDeleteResponse::default()
            .with_error_code(code::GROUP_AUTHORIZATION_FAILED.into());
        return encode_response(req.header.correlation_id, req.version, &resp);
    }
    let (allowed, refused): (Vec<_>, Vec<_>) = wanted
        .into_iter()
        .partition(|(t, _)| authz.topic(AclOperation::Read, t));
    let (allowed_errors, tombstones) = match groups.prepare_offset_delete(&group, &allowed) {
        Ok(x) => x,
        Err(e) => {
            let resp = OffsetDeleteResponse::default().with_error_code(e.into());
            return encode_response(req.header.correlation_id, req.version, &resp);
        }
    };
    let deleted: Vec<(String, i32)> = allowed
        .iter()
        .zip(&allowed_errors)
        .flat_map(|((t, ps), es)| {
            ps.iter()
                .zip(es)
                .filter(|(_, e)| **e == code::NONE)
                .map(|(p, _)| (t.clone(), *p))
        })
        .collect();
    // Back in request order: a refused topic's partitions answer TOPIC_AUTHORIZATION_FAILED.
    let mut allowed_errors = allowed_errors.into_iter();
    let mut errors: Vec<Vec<ErrorCode>> = body
        .topics
        .iter()
        .map(|t| {
            if refused.iter().any(|(name, _)| *name == t.name.0.as_str()) {
                vec![code::TOPIC_AUTHORIZATION_FAILED; t.partitions.len()]
            } else {
                allowed_errors.next().unwrap_or_default()
            }
        })
        .collect();
    if !tombstones.is_empty() {
        match persist::append(shard, groups.partition_of(&group), &tombstones).await {
            Ok(_) => groups.finish_offset_delete(&group, &deleted),
            Err(e) => errors
                .iter_mut()
                .flatten()
                .filter(|x| **x == code::NONE)
                .for_each(|x| *x = e),
        }
    }
    let topics = body
        .topics
        .iter()
        .zip(errors)
        .map(|(t, es)| {
            let partitions = t
                .partitions
                .iter()
                .zip(es)
                .map(|(p, e)| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(e.into())
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    let resp = OffsetDeleteResponse::default().with_topics(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}
