//! DescribeTransactions v0: each transactional id's state at its coordinator — producer
//! id and epoch, timeout, start time, state and the partitions of its open transaction.
//! An id coordinated elsewhere is NOT_COORDINATOR, an unknown one
//! TRANSACTIONAL_ID_NOT_FOUND.

use std::rc::Rc;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::kafka::runs::group_runs;
use crate::security::authz::Authz;
use crate::security::AclOperation;
use crate::txn::state::TxnMeta;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DescribeTransactions,
    min: 0,
    max: 0,
};

pub fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: DescribeTransactionsRequest = decode_body(req)?;
    let states = body
        .transactional_ids
        .iter()
        .map(|id| {
            let out = TransactionState::default()
                .with_transactional_id(id.clone())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            // Kafka's check: DESCRIBE on the transactional id.
            if !authz.transactional_id(AclOperation::Describe, id) {
                return out.with_error_code(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED.into());
            }
            match describe(shard, id.as_str()) {
                Ok(m) => described(out, &m),
                Err(e) => out.with_error_code(e.into()),
            }
        })
        .collect();
    let resp = DescribeTransactionsResponse::default().with_transaction_states(states);
    encode_response(req.header.correlation_id, req.version, &resp)
}

fn describe(shard: &Shard, id: &str) -> Result<TxnMeta, ErrorCode> {
    let count = crate::txn::persist::partition_count(shard).ok_or(code::NOT_COORDINATOR)?;
    let partition = crate::txn::partition_of(id, count);
    shard
        .txns
        .describe(partition, id)?
        .ok_or(code::TRANSACTIONAL_ID_NOT_FOUND)
}

fn described(out: TransactionState, m: &TxnMeta) -> TransactionState {
    let topics: Vec<TopicData> = group_runs(m.partitions.iter().map(|(t, p)| (t.as_str(), *p)))
        .into_iter()
        .map(|(topic, partitions)| {
            TopicData::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions)
        })
        .collect();
    out.with_transaction_state(StrBytes::from_static_str(m.state.name()))
        .with_transaction_timeout_ms(m.timeout_ms)
        .with_transaction_start_time_ms(m.start_ms)
        .with_producer_id(ProducerId(m.producer_id))
        .with_producer_epoch(m.producer_epoch)
        .with_topics(topics)
}
