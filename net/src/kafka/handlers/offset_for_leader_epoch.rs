//! OffsetForLeaderEpoch: where each asked leader epoch ended, from the engine's epoch cache
//! (clients use it to detect truncation after a leader change).

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::fan_out::{answer_topics, ask_owners};
use super::{refuse_topic, ApiSpec};
use crate::broker::shard::{EpochEnd, PartitionAnswer, Shard, ShardOp};
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;
use crate::store::{LeaderEpoch, TopicPartition};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::OffsetForLeaderEpoch,
    min: 2,
    max: 4,
};

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: OffsetForLeaderEpochRequest = decode_body(req)?;
    fn partitions(t: &OffsetForLeaderTopic) -> (&str, &[OffsetForLeaderPartition]) {
        (t.topic.0.as_str(), &t.partitions[..])
    }
    let answers: Vec<Vec<EpochEnd>> = ask_owners(
        shard,
        &body.topics,
        partitions,
        |p| (p.partition, LeaderEpoch(p.leader_epoch)),
        |name| {
            // A follower's (replica id ≥ 0) needs CLUSTER_ACTION, a client's DESCRIBE.
            if body.replica_id.0 >= 0 {
                (!authz.cluster(AclOperation::ClusterAction))
                    .then_some(code::CLUSTER_AUTHORIZATION_FAILED)
            } else {
                refuse_topic(authz, AclOperation::Describe, name)
            }
        },
        |parts| ShardOp::EpochEnds { parts },
    )
    .await;
    let topics = answer_topics(
        &body.topics,
        answers,
        partitions,
        |name, p, mut a: EpochEnd| {
            let tp = TopicPartition::new(name, p.partition);
            if let Err(e) = shard.check_leader_epoch(&tp, LeaderEpoch(p.current_leader_epoch)) {
                a = EpochEnd::failed(e);
            }
            EpochEndOffset::default()
                .with_partition(p.partition)
                .with_error_code(a.error.into())
                .with_leader_epoch(a.epoch.0)
                .with_end_offset(a.end_offset.0)
        },
        |t, partitions| {
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions)
        },
    );
    let resp = OffsetForLeaderEpochResponse::default().with_topics(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}
