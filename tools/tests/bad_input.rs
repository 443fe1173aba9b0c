//! Bad input over raw TCP: each case gets an error answer or a closed connection, and the
//! broker keeps serving other clients with nothing lost.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{Bytes, BytesMut};
use common::raw::{self, call, frame, read_frame};
use common::Broker;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

fn connect(b: &Broker) -> TcpStream {
    raw::connect(&b.addr)
}

/// The connection was closed by the broker (EOF or reset), not left hanging.
fn assert_closed(mut s: TcpStream) {
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

fn assert_serving(b: &Broker) {
    let mut s = connect(b);
    let r: ApiVersionsResponse = call(
        &mut s,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    );
    assert_eq!(r.error_code, 0);
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));
}

fn topic_with_partition(b: &Broker, name: &str) {
    let mut s = connect(b);
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(name.to_string())))),
        ]))
        .with_allow_auto_topic_creation(true);
    let r: MetadataResponse = call(&mut s, ApiKey::Metadata, 9, &req);
    assert_eq!(r.topics[0].error_code, 0);
}

fn batch(values: &[&[u8]]) -> BytesMut {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::copy_from_slice(v)),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf
}

fn produce(s: &mut TcpStream, topic: &str, records: Bytes) -> i16 {
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let r: ProduceResponse = call(s, ApiKey::Produce, 7, &req);
    r.responses[0].partition_responses[0].error_code
}

fn latest_offset(b: &Broker, topic: &str) -> i64 {
    let mut s = connect(b);
    let req = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![
            kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![
                    kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ]);
    let r: ListOffsetsResponse = call(&mut s, ApiKey::ListOffsets, 5, &req);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    r.topics[0].partitions[0].offset
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut seed: u64 = 0x5eed_1234;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            })
            .collect()
    };
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("negative length", (-5i32).to_be_bytes().to_vec()),
        (
            "oversized length",
            (200 * 1024 * 1024i32).to_be_bytes().to_vec(),
        ),
        ("length under a header", 3i32.to_be_bytes().to_vec()),
        ("unknown api key", {
            let mut v = 10i32.to_be_bytes().to_vec();
            v.extend_from_slice(&[0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0, 0]);
            v
        }),
        (
            "unsupported produce version",
            frame(ApiKey::Produce, 1, 1, &ApiVersionsRequest::default()),
        ),
        ("header that does not parse", {
            let mut v = 12i32.to_be_bytes().to_vec();
            v.extend_from_slice(&[0, 18, 0, 1, 0, 0, 0, 1, 0x7f, 0xff, 0, 0]);
            v
        }),
    ];
    for i in 0..20 {
        let body = random(16 + i * 7);
        let mut v = (body.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(&body);
        cases.push(("random bytes", v));
    }
    for (what, bytes) in cases {
        let mut s = connect(&b);
        s.write_all(&bytes).unwrap();
        if what == "random bytes" {
            // Random bytes may happen to be a valid request; either way, nothing hangs.
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        assert_closed(s);
        assert_serving(&b);
    }
    // A truncated request: the client gives up half way.
    let mut s = connect(&b);
    let full = frame(ApiKey::ApiVersions, 0, 1, &ApiVersionsRequest::default());
    s.write_all(&full[..full.len() / 2]).unwrap();
    drop(s);
    assert_serving(&b);
}

#[test]
fn unsupported_api_versions_version_is_answered_with_v0() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut s = connect(&b);
    // A future ApiVersions version with a body this broker cannot parse.
    let mut v = frame(ApiKey::ApiVersions, 3, 42, &ApiVersionsRequest::default());
    v[6..8].copy_from_slice(&99i16.to_be_bytes());
    s.write_all(&v).unwrap();
    let mut resp = read_frame(&mut s).expect("an answer");
    let header = ResponseHeader::decode(&mut resp, 0).unwrap();
    assert_eq!(header.correlation_id, 42);
    let body = ApiVersionsResponse::decode(&mut resp, 0).unwrap();
    assert_eq!(body.error_code, 35);
    assert!(body
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::ApiVersions as i16 && k.max_version == 3));
}

#[test]
fn corrupt_and_oversized_batches_append_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    topic_with_partition(&b, "crc");
    let mut s = connect(&b);
    let good = batch(&[b"one", b"two"]);
    assert_eq!(produce(&mut s, "crc", good.clone().freeze()), 0);
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    assert_eq!(produce(&mut s, "crc", bad.freeze()), 2, "CORRUPT_MESSAGE");
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 3);
    assert_ne!(produce(&mut s, "crc", truncated.freeze()), 0);
    let big = vec![b'x'; 2 * 1024 * 1024];
    assert_eq!(
        produce(&mut s, "crc", batch(&[&big]).freeze()),
        10,
        "MESSAGE_TOO_LARGE"
    );
    assert_eq!(
        produce(&mut s, "no-such-topic", good.clone().freeze()),
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(
        latest_offset(&b, "crc"),
        2,
        "only the good batch was appended"
    );
}

#[test]
fn idle_connections_do_not_block_others_and_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, "[network]\nconnection_idle_ms_max = 300\n").unwrap();
    let data = dir.path().join("data");
    let b = Broker::start_with(&data, &["--config", config.to_str().unwrap()]);
    let idle: Vec<TcpStream> = (0..300).map(|_| connect(&b)).collect();
    assert_serving(&b);
    // Every idle connection is closed by the broker (EOF), none is left open forever.
    for s in idle {
        assert_closed(s);
    }
    assert_serving(&b);
}

#[test]
fn client_that_leaves_mid_response_does_not_hurt_others() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    topic_with_partition(&b, "big");
    let mut s = connect(&b);
    // 512 KiB batches: larger than an idle partition's write chunk.
    let chunk = vec![b'y'; 512 * 1024];
    for _ in 0..8 {
        assert_eq!(produce(&mut s, "big", batch(&[&chunk]).freeze()), 0);
    }
    for _ in 0..5 {
        let mut c = connect(&b);
        let req = FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(64 * 1024 * 1024)
            .with_topics(vec![
                kafka_protocol::messages::fetch_request::FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("big")))
                    .with_partitions(vec![
                        kafka_protocol::messages::fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(64 * 1024 * 1024),
                    ]),
            ]);
        c.write_all(&frame(ApiKey::Fetch, 11, 1, &req)).unwrap();
        let mut first = [0u8; 8];
        c.read_exact(&mut first).unwrap();
        drop(c);
    }
    assert_serving(&b);
    assert_eq!(latest_offset(&b, "big"), 8);
}

// Plain-API checks over the same raw client (no rdkafka API for these).

#[test]
fn delete_records_moves_the_log_start_and_epochs_answer() {
    use kafka_protocol::messages::{
        delete_records_request, offset_for_leader_epoch_request, DeleteRecordsRequest,
        DeleteRecordsResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
    };
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    topic_with_partition(&b, "dr");
    let mut s = connect(&b);
    for _ in 0..5 {
        assert_eq!(produce(&mut s, "dr", batch(&[b"a", b"b"]).freeze()), 0);
    }
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("dr")))
            .with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(4),
            ])]);
    let r: DeleteRecordsResponse = call(&mut s, ApiKey::DeleteRecords, 2, &req);
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 4));
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("dr")))
                .with_partitions(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(-1)
                        .with_leader_epoch(0),
                ]),
        ]);
    let r: OffsetForLeaderEpochResponse = call(&mut s, ApiKey::OffsetForLeaderEpoch, 4, &req);
    let e = &r.topics[0].partitions[0];
    assert_eq!((e.error_code, e.leader_epoch, e.end_offset), (0, 0, 10));
}

#[test]
fn incremental_fetch_session_answers_only_what_changed() {
    use kafka_protocol::messages::{fetch_request, FetchResponse};
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    topic_with_partition(&b, "sess");
    let mut s = connect(&b);
    assert_eq!(produce(&mut s, "sess", batch(&[b"one"]).freeze()), 0);
    let fetch = |session_id: i32, epoch: i32, offset: Option<i64>| {
        let partitions = offset
            .map(|o| {
                vec![fetch_request::FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("sess")))
                    .with_partitions(vec![fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(o)
                        .with_partition_max_bytes(1 << 20)])]
            })
            .unwrap_or_default();
        FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(1 << 20)
            .with_session_id(session_id)
            .with_session_epoch(epoch)
            .with_topics(partitions)
    };
    let mut c = connect(&b);
    // Full fetch that opens a session.
    let r: FetchResponse = call(&mut c, ApiKey::Fetch, 11, &fetch(0, 0, Some(0)));
    assert_eq!(r.error_code, 0);
    assert_ne!(r.session_id, 0);
    let id = r.session_id;
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.high_watermark, 1);
    assert!(!p.records.as_ref().unwrap().is_empty());
    // Incremental, at the end: nothing changed, nothing listed.
    let r: FetchResponse = call(&mut c, ApiKey::Fetch, 11, &fetch(id, 1, Some(1)));
    assert_eq!((r.error_code, r.session_id), (0, id));
    assert!(r.responses.is_empty(), "{:?}", r.responses);
    // New data: the partition comes back without being named again.
    assert_eq!(produce(&mut s, "sess", batch(&[b"two"]).freeze()), 0);
    let r: FetchResponse = call(&mut c, ApiKey::Fetch, 11, &fetch(id, 2, None));
    assert_eq!(r.responses.len(), 1);
    assert_eq!(r.responses[0].partitions[0].high_watermark, 2);
    // A wrong epoch is refused; an unknown session too.
    let r: FetchResponse = call(&mut c, ApiKey::Fetch, 11, &fetch(id, 7, None));
    assert_eq!(r.error_code, 71, "INVALID_FETCH_SESSION_EPOCH");
    let r: FetchResponse = call(&mut c, ApiKey::Fetch, 11, &fetch(id + 1_000_000, 1, None));
    assert_eq!(r.error_code, 70, "FETCH_SESSION_ID_NOT_FOUND");
}
