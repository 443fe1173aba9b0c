//! EndTxn v0–5: commit or abort the producer's transaction at its coordinator. Answered
//! once the decision is durable in `__transaction_state`; the markers follow. v5 is
//! transactions v2 (KIP-890): the epoch is bumped as the transaction ends, and the
//! answer carries the producer id and epoch to go on with.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, EndTxnRequest, EndTxnResponse, ProducerId};

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::EndTxn,
    min: 0,
    max: 5,
};

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: EndTxnRequest = decode_body(req)?;
    // Kafka's check: WRITE on the transactional id.
    let ended = if authz.transactional_id(AclOperation::Write, &body.transactional_id) {
        crate::txn::coordinator::end_txn(
            shard,
            body.transactional_id.as_str(),
            (body.producer_id.0, body.producer_epoch),
            body.committed,
            req.version >= 5,
        )
        .await
    } else {
        Err(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    };
    let (error, (producer_id, epoch)) = match ended {
        Ok(producer) => (code::NONE, producer),
        // PRODUCER_FENCED came with v2; older clients know INVALID_PRODUCER_EPOCH.
        Err(code::PRODUCER_FENCED) if req.version < 2 => (code::INVALID_PRODUCER_EPOCH, (-1, -1)),
        Err(e) => (e, (-1, -1)),
    };
    let resp = EndTxnResponse::default()
        .with_error_code(error.into())
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch);
    encode_response(req.header.correlation_id, req.version, &resp)
}
