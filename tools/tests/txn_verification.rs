//! KIP-890 part 1 (#20): a transactional Produce that arrives after its transaction ended
//! (delayed, or reordered behind the EndTxn) must not open a transaction no coordinator
//! knows: the partition leader verifies with the transaction coordinator first. Without
//! it, such a write hangs the partition's last stable offset (read_committed consumers
//! stop there) or joins the producer's next transaction. Raw protocol, so the test
//! decides exactly when each request arrives.

mod common;

use std::net::TcpStream;

use bytes::Bytes;
use common::raw::{call, connect};
use common::{Broker, HANG_GUARD};
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, EndTxnRequest, EndTxnResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListOffsetsRequest, ListOffsetsResponse, ProduceRequest, ProduceResponse, ProducerId,
    TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use sluice_engine::batch::{BatchBuilder, ProducerFields, Record};

const TOPIC: &str = "late";
const TXN_ID: &str = "tx-late";
const INVALID_TXN_STATE: i16 = 48;
const TRANSACTION_ABORTABLE: i16 = 120;
const CONCURRENT_TRANSACTIONS: i16 = 51;

fn broker(dir: &std::path::Path) -> Broker {
    let config = dir.join("sluice.toml");
    std::fs::write(&config, "[transactions]\nstate_log_partitions = 2\n").unwrap();
    Broker::start_with(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

fn txn_id() -> TransactionalId {
    TransactionalId(StrBytes::from_static_str(TXN_ID))
}

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

/// FindCoordinator for the transactional id (which creates `__transaction_state`), then
/// InitProducerId, each retried while the coordinator loads: (producer id, epoch).
fn init_producer(s: &mut TcpStream) -> (i64, i16) {
    common::wait_for("the transaction coordinator", HANG_GUARD, &mut || {
        let req = FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_coordinator_keys(vec![StrBytes::from_static_str(TXN_ID)]);
        let r: FindCoordinatorResponse = call(s, ApiKey::FindCoordinator, 4, &req);
        (r.coordinators[0].error_code == 0).then_some(())
    });
    common::wait_for("InitProducerId", HANG_GUARD, &mut || {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(txn_id()))
            .with_transaction_timeout_ms(60_000);
        let r: InitProducerIdResponse = call(s, ApiKey::InitProducerId, 4, &req);
        (r.error_code == 0).then_some((r.producer_id.0, r.producer_epoch))
    })
}

fn add_partitions(s: &mut TcpStream, (id, epoch): (i64, i16), partitions: Vec<i32>) -> i16 {
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(txn_id())
        .with_v3_and_below_producer_id(ProducerId(id))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(topic())
            .with_partitions(partitions)]);
    let r: AddPartitionsToTxnResponse = call(s, ApiKey::AddPartitionsToTxn, 3, &req);
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

/// AddPartitionsToTxn v4 `verify_only`, as a partition leader asks: each partition's
/// verdict.
fn verify_only(s: &mut TcpStream, (id, epoch): (i64, i16), partitions: Vec<i32>) -> Vec<i16> {
    let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(txn_id())
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch)
            .with_verify_only(true)
            .with_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(topic())
                .with_partitions(partitions)]),
    ]);
    let r: AddPartitionsToTxnResponse = call(s, ApiKey::AddPartitionsToTxn, 4, &req);
    assert_eq!(r.error_code, 0);
    r.results_by_transaction[0].topic_results[0]
        .results_by_partition
        .iter()
        .map(|p| p.partition_error_code)
        .collect()
}

/// A transactional Produce (with the transactional id) of one record to `partition`.
fn produce(
    s: &mut TcpStream,
    (id, epoch): (i64, i16),
    partition: i32,
    seq: i32,
    value: &str,
) -> i16 {
    let mut b = BatchBuilder::new(1_000)
        .producer(ProducerFields {
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: seq,
        })
        .transactional();
    b.push(&Record {
        value: Some(value.as_bytes()),
        timestamp_ms: 1_000,
        ..Record::default()
    });
    let req = ProduceRequest::default()
        .with_transactional_id(Some(txn_id()))
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(b.build())))])]);
    let r: ProduceResponse = call(s, ApiKey::Produce, 9, &req);
    r.responses[0].partition_responses[0].error_code
}

/// EndTxn, retried while the previous transition finishes (CONCURRENT_TRANSACTIONS).
fn end_txn(s: &mut TcpStream, (id, epoch): (i64, i16), commit: bool) {
    common::wait_for("EndTxn", HANG_GUARD, &mut || {
        let req = EndTxnRequest::default()
            .with_transactional_id(txn_id())
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch)
            .with_committed(commit);
        let r: EndTxnResponse = call(s, ApiKey::EndTxn, 3, &req);
        match r.error_code {
            0 => Some(()),
            CONCURRENT_TRANSACTIONS => None,
            e => panic!("EndTxn answered {e}"),
        }
    });
}

/// ListOffsets latest of `partition`: (high watermark, last stable offset).
fn ends(s: &mut TcpStream, partition: i32) -> (i64, i64) {
    let at = |s: &mut TcpStream, isolation: i8| {
        let req = ListOffsetsRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_isolation_level(isolation)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic())
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(-1)])]);
        let r: ListOffsetsResponse = call(s, ApiKey::ListOffsets, 5, &req);
        r.topics[0].partitions[0].offset
    };
    (at(s, 0), at(s, 1))
}

/// Until every partition's transaction markers are written (each last stable offset is
/// its high watermark).
fn wait_settled(s: &mut TcpStream, partitions: i32) {
    common::wait_for("the transaction's markers", HANG_GUARD, &mut || {
        (0..partitions)
            .all(|p| {
                let (hw, lso) = ends(s, p);
                hw == lso
            })
            .then_some(())
    });
}

#[test]
fn delayed_and_reordered_transactional_writes_never_open_a_transaction() {
    let dir = common::tempdir("txn-verify");
    let b = broker(dir.path());
    common::create_topic_at(&b.addr, TOPIC, 3, 1, &[]);
    let mut s = connect(&b.addr);
    let producer = init_producer(&mut s);

    // Transaction 1 adds partition 0 only, writes there and aborts.
    assert_eq!(add_partitions(&mut s, producer, vec![0]), 0);
    assert_eq!(
        verify_only(&mut s, producer, vec![0, 1]),
        vec![0, TRANSACTION_ABORTABLE],
        "the coordinator knows which partitions the transaction holds"
    );
    assert_eq!(produce(&mut s, producer, 0, 0, "t1-a"), 0);
    end_txn(&mut s, producer, false);
    wait_settled(&mut s, 3);

    // Writes of transaction 1 that arrive after its abort: to a partition it never
    // added, and to the one it did. Neither may open a transaction.
    assert_eq!(
        produce(&mut s, producer, 1, 0, "t1-late"),
        INVALID_TXN_STATE
    );
    assert_eq!(
        produce(&mut s, producer, 0, 1, "t1-late"),
        INVALID_TXN_STATE
    );
    let (hw1, lso1) = ends(&mut s, 1);
    assert_eq!((hw1, lso1), (0, 0), "nothing was written to partition 1");

    // Transaction 2 holds partition 2 only: a write reordered behind its AddPartitionsToTxn
    // that targets partition 1 is refused, its own write goes through, and it commits.
    assert_eq!(add_partitions(&mut s, producer, vec![2]), 0);
    assert_eq!(
        produce(&mut s, producer, 1, 0, "t2-stray"),
        INVALID_TXN_STATE
    );
    assert_eq!(produce(&mut s, producer, 2, 0, "t2-a"), 0);
    end_txn(&mut s, producer, true);
    wait_settled(&mut s, 3);
    let (hw2, lso2) = ends(&mut s, 2);
    assert_eq!((hw2, lso2), (2, 2), "the record and its commit marker");
    assert_eq!(ends(&mut s, 1), (0, 0), "partition 1 never took a write");
}
