//! DeleteRecords: moves each partition's log start forward (-1: to the high watermark).

use std::rc::Rc;

use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, DeleteRecordsResponse};

use super::fan_out::{answer_topics, ask_owners};
use super::{refuse_topic, ApiSpec};
use crate::broker::shard::{DeletedRecords, Shard, ShardOp};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;
use crate::store::Offset;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DeleteRecords,
    min: 0,
    max: 2,
};

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: DeleteRecordsRequest = decode_body(req)?;
    fn partitions(t: &DeleteRecordsTopic) -> (&str, &[DeleteRecordsPartition]) {
        (t.name.0.as_str(), &t.partitions[..])
    }
    let answers: Vec<Vec<DeletedRecords>> = ask_owners(
        shard,
        &body.topics,
        partitions,
        |p| (p.partition_index, Offset(p.offset)),
        |name| refuse_topic(authz, AclOperation::Delete, name),
        |parts| ShardOp::DeleteRecords { parts },
    )
    .await;
    let topics = answer_topics(
        &body.topics,
        answers,
        partitions,
        |_, p, a: DeletedRecords| {
            DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_error_code(a.error.into())
                .with_low_watermark(a.low_watermark.0)
        },
        |t, partitions| {
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        },
    );
    let resp = DeleteRecordsResponse::default().with_topics(topics);
    encode_response(req.header.correlation_id, req.version, &resp)
}
