//! ListTransactions v0–1: the transactional ids this broker coordinates, with their
//! producer and state, filtered by state names (unknown names are returned, as Kafka
//! does), by producer ids and (v1) by how long the transaction has been open.

use std::rc::Rc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ApiKey, ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;
use crate::txn::state::TxnState;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::ListTransactions,
    min: 0,
    max: 1,
};

const STATES: [TxnState; 8] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
    TxnState::Dead,
    TxnState::PrepareEpochFence,
];

pub fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: ListTransactionsRequest = decode_body(req)?;
    let unknown: Vec<StrBytes> = body
        .state_filters
        .iter()
        .filter(|f| !STATES.iter().any(|s| s.name() == f.as_str()))
        .cloned()
        .collect();
    let now = crate::groups::now_ms();
    let states = shard
        .txns
        .list()
        .into_iter()
        .filter(|(_, m)| {
            body.state_filters.is_empty()
                || body
                    .state_filters
                    .iter()
                    .any(|f| f.as_str() == m.state.name())
        })
        .filter(|(_, m)| {
            body.producer_id_filters.is_empty()
                || body
                    .producer_id_filters
                    .contains(&ProducerId(m.producer_id))
        })
        // Kafka's check: only the transactional ids the client may DESCRIBE.
        .filter(|(id, _)| authz.transactional_id(AclOperation::Describe, id))
        // v1: open for at least this long (only open transactions qualify).
        .filter(|(_, m)| {
            body.duration_filter < 0
                || req.version < 1
                || (m.state == TxnState::Ongoing
                    && now.saturating_sub(m.start_ms) >= body.duration_filter)
        })
        .map(|(id, m)| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(StrBytes::from_static_str(m.state.name()))
        })
        .collect();
    let resp = ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states);
    encode_response(req.header.correlation_id, req.version, &resp)
}
