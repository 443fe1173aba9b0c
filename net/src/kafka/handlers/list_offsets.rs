//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), or the first offset whose
//! timestamp is at or after a given one.

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};

use super::ApiSpec;
use crate::broker::shard::{offsets_by_shard, Shard, ShardOp};
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::store::{PartitionId, TopicPartition};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::ListOffsets,
    min: 1,
    max: 7,
};

pub async fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let body: ListOffsetsRequest = decode_body(req)?;
    let mut items = Vec::new();
    for t in &body.topics {
        for p in &t.partitions {
            let tp = TopicPartition {
                topic: t.name.0.to_string(),
                partition: PartitionId(p.partition_index),
            };
            items.push((tp, p.timestamp));
        }
    }
    let results = offsets_by_shard(shard, items, |parts| ShardOp::ListOffsets { parts }).await;
    let mut it = results.into_iter();
    let topics = body
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let (mut error, mut offset, mut timestamp) =
                        it.next().unwrap_or((code::UNKNOWN_SERVER_ERROR, -1, -1));
                    let tp = TopicPartition::new(t.name.0.as_str(), p.partition_index);
                    if let Err(e) = shard.check_leader_epoch(&tp, p.current_leader_epoch) {
                        (error, offset, timestamp) = (e, -1, -1);
                    }
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error)
                        .with_offset(offset)
                        .with_timestamp(timestamp)
                        .with_leader_epoch(if req.version >= 4 {
                            shard.cluster.leader_epoch(&t.name.0, p.partition_index)
                        } else {
                            -1
                        })
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    let resp = ListOffsetsResponse::default().with_topics(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}
