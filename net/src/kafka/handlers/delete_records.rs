//! DeleteRecords: moves each partition's log start forward (-1: to the high watermark).

use std::rc::Rc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, DeleteRecordsResponse};

use super::ApiSpec;
use crate::broker::shard::{offsets_by_shard, Shard, ShardOp};
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::store::{PartitionId, TopicPartition};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DeleteRecords,
    min: 0,
    max: 2,
};

pub async fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let body: DeleteRecordsRequest = decode_body(req)?;
    let mut items = Vec::new();
    for t in &body.topics {
        for p in &t.partitions {
            let tp = TopicPartition {
                topic: t.name.0.to_string(),
                partition: PartitionId(p.partition_index),
            };
            items.push((tp, p.offset));
        }
    }
    let results = offsets_by_shard(shard, items, |parts| ShardOp::DeleteRecords { parts }).await;
    let mut it = results.into_iter();
    let topics = body
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let (error, low, _) = it.next().unwrap_or((code::UNKNOWN_SERVER_ERROR, -1, -1));
                    DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error)
                        .with_low_watermark(low)
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    let resp = DeleteRecordsResponse::default().with_topics(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}
