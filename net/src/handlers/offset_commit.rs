//! OffsetCommit: from a current member of the group, or (generation -1) from a client
//! outside any group while the group is empty.

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, OffsetCommitRequest, OffsetCommitResponse};

use super::ApiSpec;
use crate::errors::code;
use crate::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::shard::Shard;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::OffsetCommit,
    min: 2,
    max: 8,
};

pub fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let body: OffsetCommitRequest = decode_body(req)?;
    let group = body.group_id.0.to_string();
    let membership =
        shard
            .groups
            .check_commit(&group, body.generation_id_or_member_epoch, &body.member_id);
    let topics = body
        .topics
        .iter()
        .map(|t| {
            let count = shard.catalog.partition_count(&t.name.0);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let error = if membership != code::NONE {
                        membership
                    } else if !count.is_some_and(|n| (0..n).contains(&p.partition_index)) {
                        code::UNKNOWN_TOPIC_OR_PARTITION
                    } else {
                        let meta = p.committed_metadata.as_ref().map(|m| m.to_string());
                        shard.groups.commit(
                            &group,
                            &t.name.0,
                            p.partition_index,
                            p.committed_offset,
                            meta,
                        )
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    let resp = OffsetCommitResponse::default().with_topics(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}
