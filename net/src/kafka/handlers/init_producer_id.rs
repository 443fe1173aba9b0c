//! InitProducerId: ids for idempotent producers, and for transactional ones through the
//! transaction coordinator (`txn`). Ids are unique across restarts (reserved in blocks in
//! the catalog); an idempotent producer that sends its id and epoch back gets the epoch
//! bumped (KIP-360).

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::{AclOperation, ResourceType};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::InitProducerId,
    min: 0,
    max: 4,
};

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: InitProducerIdRequest = decode_body(req)?;
    let mut resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(id) = &body.transactional_id {
        // v3+ say who the producer was (KIP-360); before, -1/-1.
        let was = if req.version >= 3 {
            (body.producer_id.0, body.producer_epoch)
        } else {
            (-1, -1)
        };
        // Kafka's check: WRITE on the transactional id.
        let init = if id.is_empty() {
            Err(code::INVALID_REQUEST)
        } else if !authz.transactional_id(AclOperation::Write, id) {
            Err(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        } else {
            crate::txn::coordinator::init_producer_id(
                shard,
                id.as_str(),
                body.transaction_timeout_ms,
                was,
            )
            .await
        };
        resp = match init {
            Ok((pid, epoch)) => resp
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch),
            // PRODUCER_FENCED came with v4; older clients know INVALID_PRODUCER_EPOCH.
            Err(code::PRODUCER_FENCED) if req.version < 4 => {
                resp.with_error_code(code::INVALID_PRODUCER_EPOCH.into())
            }
            Err(e) => resp.with_error_code(e.into()),
        };
    } else if !authz.cluster(AclOperation::IdempotentWrite)
        && !authz.any(AclOperation::Write, ResourceType::Topic)
    {
        // Kafka's check for an idempotent producer: IDEMPOTENT_WRITE on the cluster, or
        // WRITE on some topic.
        resp = resp.with_error_code(code::CLUSTER_AUTHORIZATION_FAILED.into());
    } else if body.producer_id.0 >= 0
        && body.producer_epoch >= 0
        && body.producer_epoch < i16::MAX - 1
    {
        resp = resp
            .with_producer_id(body.producer_id)
            .with_producer_epoch(body.producer_epoch + 1);
    } else {
        match shard.catalog.allocate_producer_id().await {
            Ok(id) => resp = resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
            Err(e) => {
                tracing::error!(error = %e, "allocating a producer id failed");
                resp = resp.with_error_code(code::KAFKA_STORAGE_ERROR.into());
            }
        }
    }
    encode_response(req.header.correlation_id, req.version, &resp)
}
