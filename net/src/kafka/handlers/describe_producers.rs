//! DescribeProducers v0: the producers each partition's leader knows — id, epoch, last
//! sequence, the epoch of the coordinator that wrote its last marker, and where its open
//! transaction began (-1: none), which is how an operator finds a hanging transaction.

use std::rc::Rc;

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{
    ApiKey, DescribeProducersRequest, DescribeProducersResponse, ProducerId,
};

use super::ApiSpec;
use crate::broker::shard::{Shard, ShardOp, ShardReply};
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;
use crate::store::TopicPartition;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DescribeProducers,
    min: 0,
    max: 0,
};

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: DescribeProducersRequest = decode_body(req)?;
    let mut topics = Vec::with_capacity(body.topics.len());
    for t in &body.topics {
        let mut partitions = Vec::with_capacity(t.partition_indexes.len());
        // Kafka's check: READ on the topic.
        let refused = super::refuse_topic(authz, AclOperation::Read, &t.name);
        for p in &t.partition_indexes {
            partitions.push(match refused {
                Some(e) => PartitionResponse::default()
                    .with_partition_index(*p)
                    .with_error_code(e.into()),
                None => describe(shard, TopicPartition::new(t.name.0.as_str(), *p)).await,
            });
        }
        topics.push(
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    let resp = DescribeProducersResponse::default().with_topics(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}

/// One partition's producers, asked of the shard that owns its log.
async fn describe(shard: &Rc<Shard>, tp: TopicPartition) -> PartitionResponse {
    let out = PartitionResponse::default().with_partition_index(tp.partition.0);
    let known = shard
        .catalog
        .partition_count(&tp.topic)
        .is_some_and(|n| (0..n).contains(&tp.partition.0));
    if !known {
        return out.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION.into());
    }
    let owner = shard.owner_of(&tp);
    let producers = match shard.call(owner, ShardOp::DescribeProducers { tp }).await {
        ShardReply::Producers(Ok(v)) => v,
        ShardReply::Producers(Err(e)) => return out.with_error_code(e.into()),
        _ => return out.with_error_code(code::UNKNOWN_SERVER_ERROR.into()),
    };
    let active = producers
        .into_iter()
        .map(|v| {
            ProducerState::default()
                .with_producer_id(ProducerId(v.producer_id))
                .with_producer_epoch(i32::from(v.epoch))
                .with_last_sequence(v.last_sequence)
                .with_last_timestamp(-1)
                .with_coordinator_epoch(v.coordinator_epoch)
                .with_current_txn_start_offset(v.txn_start.map_or(-1, |o| o.0))
        })
        .collect();
    out.with_active_producers(active)
}
