//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), or the first offset whose
//! timestamp is at or after a given one.

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};

use super::fan_out::{answer_topics, ask_owners};
use super::{refuse_topic, ApiSpec};
use crate::broker::shard::{ListedOffset, PartitionAnswer, Shard, ShardOp};
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;
use crate::store::{LeaderEpoch, TopicPartition};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::ListOffsets,
    min: 1,
    max: 7,
};

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: ListOffsetsRequest = decode_body(req)?;
    fn partitions(t: &ListOffsetsTopic) -> (&str, &[ListOffsetsPartition]) {
        (t.name.0.as_str(), &t.partitions[..])
    }
    let answers: Vec<Vec<ListedOffset>> = ask_owners(
        shard,
        &body.topics,
        partitions,
        |p| (p.partition_index, p.timestamp),
        |name| {
            // A follower's (replica id ≥ 0, for an out-of-range offset) needs
            // CLUSTER_ACTION, as its Fetch does; a client's DESCRIBE on the topic.
            if body.replica_id.0 >= 0 {
                (!authz.cluster(AclOperation::ClusterAction))
                    .then_some(code::CLUSTER_AUTHORIZATION_FAILED)
            } else {
                refuse_topic(authz, AclOperation::Describe, name)
            }
        },
        |parts| ShardOp::ListOffsets {
            parts,
            read_committed: body.isolation_level == 1,
            client: body.replica_id.0 < 0,
        },
    )
    .await;
    let topics = answer_topics(
        &body.topics,
        answers,
        partitions,
        |name, p, mut a: ListedOffset| {
            let tp = TopicPartition::new(name, p.partition_index);
            if let Err(e) = shard.check_leader_epoch(&tp, LeaderEpoch(p.current_leader_epoch)) {
                a = ListedOffset::failed(e);
            }
            ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_error_code(a.error.into())
                .with_offset(a.offset.0)
                .with_timestamp(a.timestamp)
                .with_leader_epoch(if req.version >= 4 {
                    shard.cluster.leader_epoch(name, p.partition_index).0
                } else {
                    -1
                })
        },
        |t, partitions| {
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        },
    );
    let resp = ListOffsetsResponse::default().with_topics(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}
