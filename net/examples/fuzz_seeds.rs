//! Writes the seed corpora of the fuzz targets (`fuzz/seeds/<target>/`): valid inputs
//! encoded by the same code the broker and its peers use. Run from the repository root:
//! `cargo run -p sluice-net --example fuzz_seeds -- fuzz/seeds`. The compressed seeds of
//! the `decompress` target are made by `fuzz/make_compressed_seeds.py`.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchResponse, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_control::records::Listener;
use sluice_control::rpc::{Reply, Request};
use sluice_control::{BrokerEpoch, BrokerId, MetadataImage, MetadataOffset, NodeId, Record};
use sluice_engine::batch::{self, BatchBuilder};
use sluice_net::kafka::frame::samples;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join(name), bytes)
}

fn batches() -> Vec<Vec<u8>> {
    let mut keyed = BatchBuilder::new(1_000);
    keyed.push(&batch::Record {
        key: Some(b"k"),
        value: Some(b"v"),
        headers: &[("h", b"x")],
        timestamp_ms: 1_001,
    });
    keyed.push(&batch::Record {
        key: Some(b"k2"),
        value: None,
        timestamp_ms: 1_002,
        ..batch::Record::default()
    });
    vec![batch::simple_batch(3, 5, 1_000), keyed.build()]
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds".into()),
    );
    for spec in sluice_net::kafka::handlers::APIS {
        for version in spec.min..=spec.max {
            if let Some(f) = samples::request_frame(spec.key, version, 1) {
                write(
                    &dir,
                    "request_frame",
                    &format!("{:?}-v{version}", spec.key),
                    &f,
                )?;
            }
        }
    }
    let all = batches();
    for (i, b) in all.iter().enumerate() {
        write(&dir, "record_batch", &format!("batch-{i}"), b)?;
        write(&dir, "segment_recovery", &format!("one-batch-{i}"), b)?;
    }
    // A segment of consecutive batches, as appended (base offsets stamped).
    let mut segment = Vec::new();
    let mut next = 0;
    for b in &all {
        let mut b = b.clone();
        batch::stamp(
            &mut b,
            sluice_engine::Offset(next),
            sluice_engine::LeaderEpoch(1),
        );
        next = batch::parse_header(&b).map_or(next, |h| h.next_offset().0);
        segment.extend_from_slice(&b);
    }
    write(&dir, "record_batch", "two-batches", &segment)?;
    write(&dir, "segment_recovery", "two-batches", &segment)?;
    for version in 4..=16i16 {
        let resp = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![PartitionData::default()
                .with_high_watermark(next)
                .with_records(Some(segment.clone().into()))])]);
        let mut f = BytesMut::new();
        f.extend_from_slice(&[version as u8]);
        let header_version = if version >= 12 { 1 } else { 0 };
        let ok = ResponseHeader::default()
            .with_correlation_id(7)
            .encode(&mut f, header_version)
            .and_then(|()| resp.encode(&mut f, version));
        if ok.is_ok() {
            write(&dir, "fetch_response", &format!("v{version}"), &f)?;
        }
    }
    let listener = Listener {
        name: "PLAINTEXT".into(),
        host: "127.0.0.1".into(),
        port: 9092,
    };
    let requests = [
        Request::Register {
            broker: BrokerId(1),
            rack: Some("r1".into()),
            listeners: vec![listener.clone()],
        },
        Request::Heartbeat {
            broker: BrokerId(1),
            epoch: BrokerEpoch(3),
        },
        Request::DeleteTopic { name: "t".into() },
        Request::CreateTopic {
            name: "t".into(),
            partitions: -1,
            replication_factor: -1,
            configs: vec![],
            topic_id: None,
            validate_only: false,
            assignment: vec![vec![BrokerId(1), BrokerId(2)]],
        },
        Request::Elect {
            election: sluice_control::ElectionType::Unclean,
            partitions: Some(vec![("t".into(), vec![0])]),
        },
        Request::SetBrokerConfigs {
            broker: Some(BrokerId(1)),
            configs: vec![("log.retention.ms".into(), Some("1000".into()))],
            replace: false,
        },
        Request::Reassign {
            allow_rf_change: true,
            targets: vec![
                sluice_control::ReassignTarget {
                    topic: "t".into(),
                    partition: 0,
                    replicas: Some(vec![BrokerId(2), BrokerId(3)]),
                },
                sluice_control::ReassignTarget {
                    topic: "t".into(),
                    partition: 1,
                    replicas: None,
                },
            ],
        },
        Request::ListReassignments {
            partitions: Some(vec![("t".into(), vec![0, 1])]),
        },
    ];
    for (i, r) in requests.iter().enumerate() {
        write(
            &dir,
            "controller_rpc",
            &format!("request-{i}"),
            &sluice_control::rpc::frame(&r.encode()),
        )?;
    }
    let replies = [
        Reply::NotLeader {
            leader: Some(NodeId(2)),
        },
        Reply::Registered {
            epoch: BrokerEpoch(4),
        },
        Reply::Done {
            offset: MetadataOffset(9),
        },
        Reply::Elected {
            offset: MetadataOffset(10),
            results: vec![sluice_control::rpc::PartitionElection {
                topic: "t".into(),
                partition: 0,
                outcome: sluice_control::ElectionOutcome::Elected,
            }],
        },
        Reply::Reassigned {
            offset: MetadataOffset(11),
            results: vec![sluice_control::rpc::PartitionReassigned {
                topic: "t".into(),
                partition: 0,
                refusal: Some(sluice_control::ReassignRefusal::NoReassignmentInProgress),
            }],
        },
        Reply::Reassignments {
            ongoing: vec![sluice_control::OngoingReassignment {
                topic: "t".into(),
                partition: 0,
                replicas: vec![BrokerId(2), BrokerId(3), BrokerId(1)],
                adding_replicas: vec![BrokerId(3)],
                removing_replicas: vec![BrokerId(1)],
            }],
        },
    ];
    for (i, r) in replies.iter().enumerate() {
        write(
            &dir,
            "controller_rpc",
            &format!("reply-{i}"),
            &sluice_control::rpc::frame(&r.encode()),
        )?;
    }
    let records = [
        Record::RegisterBroker {
            broker: BrokerId(1),
            epoch: BrokerEpoch(1),
            rack: Some("r1".into()),
            listeners: vec![listener],
        },
        Record::FenceBroker {
            broker: BrokerId(1),
            epoch: BrokerEpoch(1),
        },
    ];
    let mut image = MetadataImage::empty();
    for (i, r) in records.iter().enumerate() {
        write(&dir, "metadata_record", &format!("record-{i}"), &r.encode())?;
        if let Ok(next) = image.apply(MetadataOffset(i as u64 + 1), r) {
            image = next;
        }
    }
    write(
        &dir,
        "metadata_record",
        "snapshot",
        &image.encode_snapshot(),
    )?;
    Ok(())
}
