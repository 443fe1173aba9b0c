//! Raw transactional requests a test sends as a client would: finding the coordinator,
//! InitProducerId with a transactional id, AddPartitionsToTxn (v3, the client form).

use std::net::TcpStream;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, FindCoordinatorRequest,
    FindCoordinatorResponse, InitProducerIdRequest, InitProducerIdResponse, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::raw::call;
use super::{wait_for, HANG_GUARD};

fn txn_id(id: &str) -> TransactionalId {
    TransactionalId(StrBytes::from_string(id.to_string()))
}

/// FindCoordinator (key type 0: a group, 1: a transactional id) until it answers
/// without error (the first ask creates the coordinator's internal topic).
pub fn wait_coordinator(s: &mut TcpStream, key_type: i8, key: &str) {
    wait_for("the coordinator", HANG_GUARD, &mut || {
        let req = FindCoordinatorRequest::default()
            .with_key_type(key_type)
            .with_coordinator_keys(vec![StrBytes::from_string(key.to_string())]);
        let r: FindCoordinatorResponse = call(s, ApiKey::FindCoordinator, 4, &req);
        (r.coordinators[0].error_code == 0).then_some(())
    });
}

/// FindCoordinator for `id` (which creates `__transaction_state`), then InitProducerId,
/// each retried while the coordinator loads: (producer id, epoch).
pub fn init_producer(s: &mut TcpStream, id: &str) -> (i64, i16) {
    wait_coordinator(s, 1, id);
    wait_for("InitProducerId", HANG_GUARD, &mut || {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(txn_id(id)))
            .with_transaction_timeout_ms(60_000);
        let r: InitProducerIdResponse = call(s, ApiKey::InitProducerId, 4, &req);
        (r.error_code == 0).then_some((r.producer_id.0, r.producer_epoch))
    })
}

/// AddPartitionsToTxn v3 of `partitions` of `topic` to `id`'s transaction: the error of
/// the first partition.
pub fn add_partitions(
    s: &mut TcpStream,
    id: &str,
    (producer_id, epoch): (i64, i16),
    topic: &str,
    partitions: Vec<i32>,
) -> i16 {
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(txn_id(id))
        .with_v3_and_below_producer_id(ProducerId(producer_id))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(partitions)]);
    let r: AddPartitionsToTxnResponse = call(s, ApiKey::AddPartitionsToTxn, 3, &req);
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}
