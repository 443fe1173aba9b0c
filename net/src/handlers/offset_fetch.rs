//! OffsetFetch: committed offsets of one group (v1–v7), -1 where none.

use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{ApiKey, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::ApiSpec;
use crate::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::shard::Shard;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::OffsetFetch,
    min: 1,
    max: 7,
};

pub fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let body: OffsetFetchRequest = decode_body(req)?;
    let group = body.group_id.0.to_string();
    let wanted: Vec<(String, Vec<i32>)> = match &body.topics {
        Some(topics) => topics
            .iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect(),
        None => {
            let mut all: Vec<(String, Vec<i32>)> = Vec::new();
            for (t, p) in shard.groups.committed_partitions(&group) {
                match all.last_mut() {
                    Some((name, ps)) if *name == t => ps.push(p),
                    _ => all.push((t, vec![p])),
                }
            }
            all
        }
    };
    let topics = wanted
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|p| {
                    let (offset, meta) = shard
                        .groups
                        .committed(&group, &name, p)
                        .unwrap_or((-1, None));
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_metadata(Some(StrBytes::from_string(meta.unwrap_or_default())))
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions)
        })
        .collect();
    let resp = OffsetFetchResponse::default().with_topics(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}
