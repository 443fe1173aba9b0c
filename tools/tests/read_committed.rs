//! Reading transactions as Kafka serves them (#20, the partition side): transactional
//! batches produced, then a coordinator's COMMIT and ABORT markers written with
//! WriteTxnMarkers. A librdkafka consumer with `isolation.level=read_committed` gets the
//! committed and plain records only, and nothing past an open transaction; one with
//! `read_uncommitted` gets every record. The last stable offset is what ListOffsets answers
//! a read_committed client, and all of it holds after a restart. Markers from a client's
//! Produce, a fenced producer epoch or an older coordinator are refused.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::{call, connect};
use common::{Broker, HANG_GUARD};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, ListOffsetsRequest, ListOffsetsResponse, ProduceRequest, ProduceResponse, ProducerId,
    TopicName, TransactionalId, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice_engine::batch::{BatchBuilder, ProducerFields, Record};
use sluice_engine::txn::{Marker, MarkerKind};

const TOPIC: &str = "txn";
const INVALID_REQUEST: i16 = 42;
const INVALID_RECORD: i16 = 87;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const TRANSACTION_COORDINATOR_FENCED: i16 = 52;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

/// A transactional producer for `id` with the topic's partition 0 in its transaction,
/// as the coordinator knows it: (producer id, epoch). Its writes pass KIP-890's
/// verification; the test then writes the markers itself, in the coordinator's place.
fn producer(s: &mut TcpStream, id: &str) -> (i64, i16) {
    let p = common::txn::init_producer(s, id);
    assert_eq!(common::txn::add_partitions(s, id, p, TOPIC, vec![0]), 0);
    p
}

/// A batch of `values`; transactional for `producer` (id, epoch, first sequence).
fn batch(producer: Option<(i64, i16, i32)>, values: &[&str]) -> Bytes {
    let mut b = BatchBuilder::new(1_000);
    if let Some((id, epoch, seq)) = producer {
        b = b
            .producer(ProducerFields {
                producer_id: id,
                producer_epoch: epoch,
                base_sequence: seq,
            })
            .transactional();
    }
    for v in values {
        b.push(&Record {
            value: Some(v.as_bytes()),
            timestamp_ms: 1_000,
            ..Record::default()
        });
    }
    Bytes::from(b.build())
}

/// A Produce of `records` to partition 0, with `transactional_id` if given: its error.
fn produce_as(s: &mut TcpStream, transactional_id: Option<&str>, records: Bytes) -> i16 {
    let req = ProduceRequest::default()
        .with_transactional_id(
            transactional_id.map(|id| TransactionalId(StrBytes::from_string(id.to_string()))),
        )
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let r: ProduceResponse = call(s, ApiKey::Produce, 9, &req);
    r.responses[0].partition_responses[0].error_code
}

fn produce(s: &mut TcpStream, records: Bytes) -> i16 {
    produce_as(s, None, records)
}

/// A transactional Produce, retried while the coordinator that verifies it is not
/// ready (NOT_ENOUGH_REPLICAS, as Kafka answers its retriable errors).
fn produce_txn(s: &mut TcpStream, id: &str, records: Bytes) -> i16 {
    common::wait_for("a verified produce", HANG_GUARD, &mut || match produce_as(
        s,
        Some(id),
        records.clone(),
    ) {
        NOT_ENOUGH_REPLICAS => None,
        e => Some(e),
    })
}

/// Writes one marker into `partitions` of the topic; the error of each.
fn write_marker(
    s: &mut TcpStream,
    (id, epoch): (i64, i16),
    coordinator_epoch: i32,
    commit: bool,
    partitions: Vec<i32>,
) -> Vec<i16> {
    let req = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch)
        .with_transaction_result(commit)
        .with_coordinator_epoch(coordinator_epoch)
        .with_topics(vec![WritableTxnMarkerTopic::default()
            .with_name(topic_name())
            .with_partition_indexes(partitions)])]);
    let r: WriteTxnMarkersResponse = call(s, ApiKey::WriteTxnMarkers, 1, &req);
    r.markers[0].topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect()
}

/// The latest offset ListOffsets answers (isolation level 0 or 1).
fn latest(s: &mut TcpStream, isolation_level: i8) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_isolation_level(isolation_level)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name())
            .with_partitions(vec![
                ListOffsetsPartition::default().with_timestamp(-1)
            ])]);
    let r: ListOffsetsResponse = call(s, ApiKey::ListOffsets, 5, &req);
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "ListOffsets");
    p.offset
}

/// Every value a consumer with `isolation` reads from the start until (and with) `last`.
fn read_until(b: &Broker, isolation: &str, last: &str) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .set("group.id", "read-committed-unused")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    while out.last().map(String::as_str) != Some(last) {
        assert!(
            started.elapsed() < HANG_GUARD,
            "{isolation}: read {out:?}, waiting for {last}"
        );
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            out.push(String::from_utf8_lossy(m.payload().unwrap_or(b"")).into_owned());
        }
    }
    out
}

#[test]
fn read_committed_consumers_skip_aborted_transactions_and_stop_at_open_ones() {
    let dir = common::tempdir("read-committed");
    // Two transaction-state partitions, not fifty: the debug broker creates them quicker.
    let conf_dir = common::tempdir("read-committed-conf");
    let conf = conf_dir.path().join("sluice.toml");
    std::fs::write(&conf, "[transactions]\nstate_log_partitions = 2\n").unwrap();
    let args = ["--config", conf.to_str().unwrap()];
    let mut b = Broker::start_with(dir.path(), &args);
    common::create_topic_at(&b.addr, TOPIC, 1, 1, &[]);
    let mut s = connect(&b.addr);
    let (p1, p2) = (producer(&mut s, "rc-1"), producer(&mut s, "rc-2"));

    // Transactional records need the transactional id (Kafka's rule): refused without,
    // and nothing is written.
    assert_eq!(
        produce(&mut s, batch(Some((p1.0, p1.1, 0)), &["x"])),
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    );
    assert_eq!(latest(&mut s, 0), 0, "nothing written");

    // Offsets 0-1: p1's transaction (to be aborted); 2: p2's (to be committed); 3 plain.
    assert_eq!(
        produce_txn(&mut s, "rc-1", batch(Some((p1.0, p1.1, 0)), &["a1", "a2"])),
        0
    );
    assert_eq!(
        produce_txn(&mut s, "rc-2", batch(Some((p2.0, p2.1, 0)), &["c1"])),
        0
    );
    assert_eq!(produce(&mut s, batch(None, &["p1"])), 0);
    assert_eq!(latest(&mut s, 0), 4, "high watermark");
    assert_eq!(latest(&mut s, 1), 0, "open transactions hold the LSO");

    // A client may not write markers itself.
    let forged = Marker {
        producer_id: p1.0,
        producer_epoch: p1.1,
        coordinator_epoch: 0,
        kind: MarkerKind::Commit,
    };
    assert_eq!(
        produce_as(&mut s, Some("rc-1"), Bytes::from(forged.to_batch(0))),
        INVALID_RECORD
    );
    assert_eq!(
        produce(&mut s, Bytes::from(forged.to_batch(0))),
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    );

    // The coordinator's markers: abort p1 (offset 4), commit p2 (offset 5).
    assert_eq!(write_marker(&mut s, p1, 3, false, vec![0]), vec![0]);
    assert_eq!(latest(&mut s, 1), 2, "p2 still open");
    assert_eq!(
        write_marker(&mut s, p2, 3, true, vec![0, 7]),
        vec![0, UNKNOWN_TOPIC_OR_PARTITION]
    );
    assert_eq!(latest(&mut s, 1), 6);
    // Stale markers change nothing.
    assert_eq!(
        write_marker(&mut s, p2, 2, false, vec![0]),
        vec![TRANSACTION_COORDINATOR_FENCED]
    );
    assert_eq!(
        write_marker(&mut s, (-1, 0), 3, false, vec![0]),
        vec![INVALID_REQUEST]
    );
    // A coordinator that bumped p2's epoch (an empty transaction's marker, offset 6)
    // fences the older epoch's markers.
    assert_eq!(
        write_marker(&mut s, (p2.0, p2.1 + 1), 3, false, vec![0]),
        vec![0]
    );
    assert_eq!(
        write_marker(&mut s, p2, 3, false, vec![0]),
        vec![INVALID_PRODUCER_EPOCH]
    );
    assert_eq!(produce(&mut s, batch(None, &["end"])), 0);
    assert_eq!(latest(&mut s, 1), 8);

    let committed = ["c1", "p1", "end"];
    let everything = ["a1", "a2", "c1", "p1", "end"];
    assert_eq!(read_until(&b, "read_committed", "end"), committed);
    assert_eq!(read_until(&b, "read_uncommitted", "end"), everything);

    // An open transaction after a restart still holds read_committed readers back.
    drop(s);
    let addr = b.addr.clone();
    b.stop();
    let b = Broker::start_at(dir.path(), &addr, "0-1", &args);
    let mut s = connect(&b.addr);
    assert_eq!(read_until(&b, "read_committed", "end"), committed);
    assert_eq!(
        produce_txn(&mut s, "rc-1", batch(Some((p1.0, p1.1, 2)), &["late"])),
        0
    );
    assert_eq!(produce(&mut s, batch(None, &["after"])), 0);
    assert_eq!(latest(&mut s, 1), 8, "p1's new transaction is open");
    assert_eq!(read_until(&b, "read_uncommitted", "after").len(), 7);
    assert_eq!(write_marker(&mut s, p1, 3, true, vec![0]), vec![0]);
    let mut all = committed.to_vec();
    all.extend(["late", "after"]);
    assert_eq!(read_until(&b, "read_committed", "after"), all);
}
