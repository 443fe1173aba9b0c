//! KIP-890 (#20). Part 1: a transactional Produce that arrives after its transaction ended
//! (delayed, or reordered behind the EndTxn) must not open a transaction no coordinator
//! knows: the partition leader verifies with the transaction coordinator first. Without
//! it, such a write hangs the partition's last stable offset (read_committed consumers
//! stop there) or joins the producer's next transaction. Part 2 (transactions v2): the
//! epoch is bumped as each transaction ends, so a delayed Produce or EndTxn of one
//! transaction is fenced instead of landing in the next — the anomaly Jepsen found in
//! Kafka's transactions v1. Raw protocol, so the test decides when each request arrives.

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
const PRODUCER_FENCED: i16 = 90;

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

fn init_producer(s: &mut TcpStream) -> (i64, i16) {
    common::txn::init_producer(s, TXN_ID)
}

fn add_partitions(s: &mut TcpStream, producer: (i64, i16), partitions: Vec<i32>) -> i16 {
    common::txn::add_partitions(s, TXN_ID, producer, TOPIC, partitions)
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

/// A transactional Produce v9 (with the transactional id) of one record to `partition`.
fn produce(s: &mut TcpStream, producer: (i64, i16), partition: i32, seq: i32, value: &str) -> i16 {
    produce_at(s, 9, producer, (partition, seq), value)
}

/// A transactional Produce at `version` of one record to `partition` at sequence `seq`.
fn produce_at(
    s: &mut TcpStream,
    version: i16,
    (id, epoch): (i64, i16),
    (partition, seq): (i32, i32),
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
    let r: ProduceResponse = call(s, ApiKey::Produce, version, &req);
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

/// EndTxn v5 (transactions v2), once: the producer to go on with, or the error.
fn end_txn_v2(s: &mut TcpStream, (id, epoch): (i64, i16), commit: bool) -> Result<(i64, i16), i16> {
    let req = EndTxnRequest::default()
        .with_transactional_id(txn_id())
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let r: EndTxnResponse = call(s, ApiKey::EndTxn, 5, &req);
    match r.error_code {
        0 => Ok((r.producer_id.0, r.producer_epoch)),
        e => Err(e),
    }
}

/// A Produce v12 retried while the previous transaction's markers are written (the
/// coordinator answers CONCURRENT_TRANSACTIONS, which a produce sees as
/// NOT_ENOUGH_REPLICAS): the final error.
fn produce_v12(s: &mut TcpStream, producer: (i64, i16), at: (i32, i32), value: &str) -> i16 {
    const NOT_ENOUGH_REPLICAS: i16 = 19;
    common::wait_for("Produce v12", HANG_GUARD, &mut || {
        let e = produce_at(s, 12, producer, at, value);
        (e != NOT_ENOUGH_REPLICAS).then_some(e)
    })
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

#[test]
fn transactions_v2_bump_the_epoch_so_late_requests_of_a_transaction_are_fenced() {
    let dir = common::tempdir("txn-v2");
    let b = broker(dir.path());
    common::create_topic_at(&b.addr, TOPIC, 3, 1, &[]);
    let mut s = connect(&b.addr);
    let first = init_producer(&mut s);

    // Transaction 1: no AddPartitionsToTxn; the leader adds partition 0 on Produce v12.
    assert_eq!(produce_v12(&mut s, first, (0, 0), "t1-a"), 0);
    let second = end_txn_v2(&mut s, first, true).expect("EndTxn v5");
    assert_eq!(second, (first.0, first.1 + 1), "the epoch is bumped");
    wait_settled(&mut s, 3);
    assert_eq!(ends(&mut s, 0), (2, 2), "the record and its commit marker");

    // Writes of transaction 1 arriving late are fenced by the bumped epoch, in a
    // partition it wrote to and in one it never did.
    assert_eq!(
        produce_at(&mut s, 12, first, (0, 1), "t1-late"),
        PRODUCER_FENCED
    );
    assert_eq!(
        produce_at(&mut s, 12, first, (1, 0), "t1-late"),
        PRODUCER_FENCED
    );
    assert_eq!(ends(&mut s, 1), (0, 0));

    // Transaction 2 writes partition 2. A delayed EndTxn of transaction 1 (commit, its
    // epoch) arrives meanwhile: it is fenced and transaction 2 stays open.
    assert_eq!(produce_v12(&mut s, second, (2, 0), "t2-a"), 0);
    assert_eq!(end_txn_v2(&mut s, first, true), Err(PRODUCER_FENCED));
    let (hw, lso) = ends(&mut s, 2);
    assert_eq!((hw, lso), (1, 0), "transaction 2 is still open");

    // Transaction 2 aborts; a retry of that EndTxn is answered again, with the same
    // producer, and does nothing more.
    let third = end_txn_v2(&mut s, second, false).expect("EndTxn v5 abort");
    assert_eq!(third, (first.0, first.1 + 2));
    wait_settled(&mut s, 3);
    let retried = common::wait_for("the retried EndTxn", HANG_GUARD, &mut || match end_txn_v2(
        &mut s, second, false,
    ) {
        Err(CONCURRENT_TRANSACTIONS) => None,
        other => Some(other),
    });
    assert_eq!(retried, Ok(third));
    assert_eq!(ends(&mut s, 2), (2, 2), "the record and one abort marker");
    assert_eq!(
        end_txn_v2(&mut s, second, true),
        Err(PRODUCER_FENCED),
        "a commit of the aborted transaction"
    );
}

/// TxnOffsetCommit of `group`'s offset 5 for partition 0 at `version` (no member:
/// generation -1): the partition's error.
fn txn_offset_commit(s: &mut TcpStream, version: i16, (id, epoch): (i64, i16), group: &str) -> i16 {
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, TxnOffsetCommitRequest, TxnOffsetCommitResponse};
    let req = TxnOffsetCommitRequest::default()
        .with_transactional_id(txn_id())
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch)
        .with_generation_id(-1)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(topic())
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(5)])]);
    let r: TxnOffsetCommitResponse = call(s, ApiKey::TxnOffsetCommit, version, &req);
    r.topics[0].partitions[0].error_code
}

/// `group`'s committed offset of partition 0 (OffsetFetch v8, require_stable).
fn committed(s: &mut TcpStream, group: &str) -> i64 {
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse};
    let req = OffsetFetchRequest::default()
        .with_require_stable(true)
        .with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(topic())
                .with_partition_indexes(vec![0])]))]);
    let r: OffsetFetchResponse = call(s, ApiKey::OffsetFetch, 8, &req);
    r.groups[0].topics[0].partitions[0].committed_offset
}

#[test]
fn transactional_offsets_need_their_partition_in_the_transaction() {
    let dir = common::tempdir("txn-offsets-verify");
    let b = broker(dir.path());
    common::create_topic_at(&b.addr, TOPIC, 1, 1, &[]);
    let mut s = connect(&b.addr);
    common::txn::wait_coordinator(&mut s, 0, "g-v1");
    let producer = init_producer(&mut s);

    // v4 (verification): without AddOffsetsToTxn the offsets are refused.
    assert_eq!(add_partitions(&mut s, producer, vec![0]), 0);
    assert_eq!(
        txn_offset_commit(&mut s, 4, producer, "g-v1"),
        INVALID_TXN_STATE
    );
    end_txn(&mut s, producer, false);
    wait_settled(&mut s, 1);

    // v5 (transactions v2): the group coordinator adds the offsets partition itself, and
    // the offsets count once the transaction commits.
    let committed_by =
        common::wait_for(
            "TxnOffsetCommit v5",
            HANG_GUARD,
            &mut || match txn_offset_commit(&mut s, 5, producer, "g-v2") {
                CONCURRENT_TRANSACTIONS => None,
                e => Some(e),
            },
        );
    assert_eq!(committed_by, 0);
    end_txn_v2(&mut s, producer, true).expect("EndTxn v5");
    common::wait_for("the committed offset", HANG_GUARD, &mut || {
        (committed(&mut s, "g-v2") == 5).then_some(())
    });
    assert_eq!(
        committed(&mut s, "g-v1"),
        -1,
        "nothing of the refused commit"
    );
}
