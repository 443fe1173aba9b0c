//! OffsetForLeaderEpoch: where each asked leader epoch ended, from the engine's epoch cache
//! (clients use it to detect truncation after a leader change).

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::ApiSpec;
use crate::broker::shard::{offsets_by_shard, Shard, ShardOp};
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::store::{PartitionId, TopicPartition};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::OffsetForLeaderEpoch,
    min: 2,
    max: 4,
};

pub async fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let body: OffsetForLeaderEpochRequest = decode_body(req)?;
    let mut items = Vec::new();
    for t in &body.topics {
        for p in &t.partitions {
            let tp = TopicPartition {
                topic: t.topic.0.to_string(),
                partition: PartitionId(p.partition),
            };
            items.push((tp, p.leader_epoch));
        }
    }
    let results = offsets_by_shard(shard, items, |parts| ShardOp::EpochEnds { parts }).await;
    let mut it = results.into_iter();
    let topics = body
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let (mut error, mut end, mut epoch) =
                        it.next().unwrap_or((code::UNKNOWN_SERVER_ERROR, -1, -1));
                    let tp = TopicPartition::new(t.topic.0.as_str(), p.partition);
                    if let Err(e) = shard.check_leader_epoch(&tp, p.current_leader_epoch) {
                        (error, end, epoch) = (e, -1, -1);
                    }
                    EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_error_code(error)
                        .with_leader_epoch(epoch as i32)
                        .with_end_offset(end)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    let resp = OffsetForLeaderEpochResponse::default().with_topics(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}
