//! AddOffsetsToTxn v0–3: the partition of `__consumer_offsets` holding a group's offsets
//! joins the producer's transaction, so the transaction's markers reach the offsets it
//! commits with TxnOffsetCommit.

use std::rc::Rc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, ApiKey};

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::groups::OFFSETS_TOPIC;
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::AddOffsetsToTxn,
    min: 0,
    max: 3,
};

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: AddOffsetsToTxnRequest = decode_body(req)?;
    // Kafka's checks: WRITE on the transactional id, READ on the group.
    let error = if !authz.transactional_id(AclOperation::Write, &body.transactional_id) {
        code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    } else if !authz.group(AclOperation::Read, &body.group_id) {
        code::GROUP_AUTHORIZATION_FAILED
    } else if body.group_id.0.is_empty() {
        code::INVALID_GROUP_ID
    } else {
        let partition = shard.groups.partition_of(&body.group_id.0) as i32;
        let added = crate::txn::coordinator::add_partitions(
            shard,
            body.transactional_id.as_str(),
            (body.producer_id.0, body.producer_epoch),
            vec![(OFFSETS_TOPIC.to_string(), partition)],
            false,
        )
        .await;
        match added {
            Ok(()) => code::NONE,
            // PRODUCER_FENCED came with v2; older clients know INVALID_PRODUCER_EPOCH.
            Err(code::PRODUCER_FENCED) if req.version < 2 => code::INVALID_PRODUCER_EPOCH,
            Err(e) => e,
        }
    };
    let resp = AddOffsetsToTxnResponse::default().with_error_code(error.into());
    encode_response(req.header.correlation_id, req.version, &resp)
}
