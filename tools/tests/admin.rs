//! What Kafka's admin tooling and clients' own admin and produce tests expect, through
//! rdkafka (and raw requests where rdkafka has no call): manual replica assignment on
//! CreateTopics and CreatePartitions in a 3-node cluster; `compression.type` honoured by
//! recompression; `segment.bytes` down to Kafka's floor.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, ClusterSpec};
use common::{Broker, HANG_GUARD};
use futures_executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap()
}

fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))
}

/// Creates `name` with each partition's replicas as given; the topic's own result.
fn create_assigned(
    a: &AdminClient<DefaultClientContext>,
    name: &str,
    replicas: &[&[i32]],
) -> Result<(), RDKafkaErrorCode> {
    let t = NewTopic::new(
        name,
        replicas.len() as i32,
        TopicReplication::Variable(replicas),
    );
    let mut r = block_on(a.create_topics([&t], &options())).unwrap();
    r.remove(0).map(|_| ()).map_err(|(_, e)| e)
}

fn add_assigned(
    a: &AdminClient<DefaultClientContext>,
    name: &str,
    count: usize,
    replicas: &[&[i32]],
) -> Result<(), RDKafkaErrorCode> {
    let p = NewPartitions::new(name, count).assign(replicas);
    let mut r = block_on(a.create_partitions([&p], &options())).unwrap();
    r.remove(0).map(|_| ()).map_err(|(_, e)| e)
}

/// The replicas of each partition of `topic` as node 1's metadata shows them.
fn replicas_of(c: &Cluster, topic: &str, partitions: usize) -> Vec<Vec<i32>> {
    c.wait("topic in metadata", HANG_GUARD, || {
        let (_, parts) = c.metadata(1, topic)?;
        (parts.len() == partitions).then(|| parts.values().map(|p| p.replicas.clone()).collect())
    })
}

#[test]
fn replicas_assigned_by_hand_are_checked_and_kept() {
    let c = Cluster::start("admin-assign", ClusterSpec::default(), HANG_GUARD);
    let a = admin(&c.bootstrap());
    create_assigned(&a, "manual", &[&[2, 3], &[3, 1]]).unwrap();
    assert_eq!(replicas_of(&c, "manual", 2), [vec![2, 3], vec![3, 1]]);
    let (_, parts) = c.metadata(1, "manual").unwrap();
    assert_eq!(parts[&0].leader, 2, "the first replica leads");

    // Kafka's INVALID_REPLICA_ASSIGNMENT cases, nothing created.
    let refused = [
        (&[&[1, 9][..]][..], "an unknown broker"),
        (&[&[1, 1]], "a broker twice"),
        (&[&[1, 2], &[3]], "replica counts that differ"),
    ];
    for (i, (replicas, what)) in refused.iter().enumerate() {
        let name = format!("bad{i}");
        assert_eq!(
            create_assigned(&a, &name, replicas),
            Err(RDKafkaErrorCode::InvalidReplicaAssignment),
            "{what}"
        );
        assert!(c.metadata(1, &name).is_none(), "{what}: nothing created");
    }

    add_assigned(&a, "manual", 4, &[&[1, 2], &[2, 1]]).unwrap();
    assert_eq!(
        replicas_of(&c, "manual", 4),
        [vec![2, 3], vec![3, 1], vec![1, 2], vec![2, 1]]
    );
    assert_eq!(
        add_assigned(&a, "manual", 5, &[&[1]]),
        Err(RDKafkaErrorCode::InvalidReplicaAssignment),
        "one replica where the topic has two"
    );
    assert_eq!(
        add_assigned(&a, "manual", 6, &[&[1, 2]]),
        Err(RDKafkaErrorCode::InvalidReplicaAssignment),
        "one assignment for two new partitions"
    );
    assert_eq!(
        add_assigned(&a, "manual", 5, &[&[4, 1]]),
        Err(RDKafkaErrorCode::InvalidReplicaAssignment),
        "an unknown broker"
    );
    assert_eq!(replicas_of(&c, "manual", 4).len(), 4);
}

/// Creates a one-partition topic with `configs`; the topic's own result.
fn create_with(
    a: &AdminClient<DefaultClientContext>,
    name: &str,
    configs: &[(&str, &str)],
) -> Result<(), RDKafkaErrorCode> {
    let mut t = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let mut r = block_on(a.create_topics([&t], &options())).unwrap();
    r.remove(0).map(|_| ()).map_err(|(_, e)| e)
}

/// Produces `values` to partition 0 of `topic` compressed with `codec`, one batch each
/// when `one_per_batch` (a flush after every send).
fn produce(addr: &str, topic: &str, codec: &str, values: &[String], one_per_batch: bool) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("compression.codec", codec)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for v in values {
        p.send(
            BaseRecord::<str, str>::to(topic)
                .key("k")
                .payload(v)
                .partition(0),
        )
        .map_err(|(e, _)| e)
        .unwrap();
        if one_per_batch {
            p.flush(HANG_GUARD).unwrap();
        }
    }
    p.flush(HANG_GUARD).unwrap();
}

/// A consumer of partition 0 of `topic` from its start (outside any group).
fn reader(addr: &str, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "admin-test")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    c
}

/// Reads `n` values of partition 0 of `topic` from the start.
fn consume(addr: &str, topic: &str, n: usize) -> Vec<String> {
    let c = reader(addr, topic);
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    while out.len() < n {
        assert!(started.elapsed() < HANG_GUARD, "read {} of {n}", out.len());
        match c.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => out.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => panic!("{e}"),
        }
    }
    out
}

/// The segment files of partition 0 of `topic` under the broker's data dir.
fn segments(b: &Broker, topic: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![b.data_dir.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "log")
                && path
                    .parent()
                    .and_then(|p| p.file_name())
                    .is_some_and(|n| n == format!("{topic}-0").as_str())
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The codec bits of every batch stored in partition 0 of `topic`.
fn stored_codecs(b: &Broker, topic: &str) -> Vec<u8> {
    let mut codecs = Vec::new();
    for path in segments(b, topic) {
        let bytes = std::fs::read(path).unwrap();
        let mut pos = 0;
        while pos + 61 <= bytes.len() {
            let length = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap());
            if length <= 0 {
                break; // the zeros after the data
            }
            codecs.push(bytes[pos + 22] & 0x07);
            pos += 12 + length as usize;
        }
    }
    codecs
}

fn values(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("value-{i}-").repeat(30)).collect()
}

#[test]
fn a_topics_compression_type_is_the_codec_its_batches_are_stored_with() {
    let dir = common::tempdir("admin-codec");
    let b = Broker::start(dir.path());
    let a = admin(&b.addr);
    let cases = [
        ("gz", "gzip", "lz4", 1u8),
        ("zs", "zstd", "none", 4),
        ("sn", "snappy", "gzip", 2),
        ("l4", "lz4", "zstd", 3),
        ("plain", "uncompressed", "lz4", 0),
        ("prod", "producer", "lz4", 3),
    ];
    for (topic, compression, sent_with, stored) in cases {
        create_with(&a, topic, &[("compression.type", compression)]).unwrap();
        let sent = values(20);
        produce(&b.addr, topic, sent_with, &sent, false);
        assert_eq!(consume(&b.addr, topic, sent.len()), sent, "{topic}");
        let codecs = stored_codecs(&b, topic);
        assert!(!codecs.is_empty(), "{topic}");
        assert!(
            codecs.iter().all(|c| *c == stored),
            "{topic} ({compression}, sent as {sent_with}): stored {codecs:?}"
        );
    }
    assert_eq!(
        create_with(&a, "bad", &[("compression.type", "brotli")]),
        Err(RDKafkaErrorCode::InvalidConfig)
    );
}

#[test]
fn segment_bytes_goes_down_to_kafkas_floor_of_14() {
    let dir = common::tempdir("admin-tiny");
    let b = Broker::start(dir.path());
    let a = admin(&b.addr);
    assert_eq!(
        create_with(&a, "too-small", &[("segment.bytes", "13")]),
        Err(RDKafkaErrorCode::InvalidConfig)
    );
    create_with(&a, "tiny", &[("segment.bytes", "14")]).unwrap();
    let sent = values(8);
    produce(&b.addr, "tiny", "none", &sent, true);
    assert_eq!(consume(&b.addr, "tiny", sent.len()), sent);
    // Every batch is larger than a segment may be: each one rolled a segment of its own.
    assert_eq!(segments(&b, "tiny").len(), sent.len());
}

#[test]
fn keyless_records_on_a_compacted_topic_are_listed_in_record_errors() {
    use common::raw;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use sluice_engine::batch::{BatchBuilder, Record};

    let dir = common::tempdir("admin-kip467");
    let b = Broker::start(dir.path());
    create_with(&admin(&b.addr), "kc", &[("cleanup.policy", "compact")]).unwrap();
    let mut batch = BatchBuilder::new(1_000);
    for key in [Some(&b"k"[..]), None, Some(b"k2"), None] {
        batch.push(&Record {
            key,
            value: Some(b"v"),
            ..Record::default()
        });
    }
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("kc")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch.build().into()))])]);
    let mut s = raw::connect(&b.addr);
    let r: ProduceResponse = raw::call(&mut s, ApiKey::Produce, 9, &req);
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 87, "INVALID_RECORD");
    let listed: Vec<i32> = p.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(listed, [1, 3]);
    let why = p.record_errors[0].batch_index_error_message.as_deref();
    assert_eq!(
        why,
        Some("Compacted topic cannot accept message without key in topic partition kc-0.")
    );
    let message = p.error_message.as_deref().unwrap_or_default();
    assert!(
        message.starts_with("One or more records have been rejected due to 2 record errors"),
        "{message}"
    );
    // Nothing of the batch was appended.
    let ok: Vec<String> = Vec::new();
    assert_eq!(consume_available(&b.addr, "kc"), ok);
}

/// Whatever partition 0 of `topic` holds, read until a poll finds nothing more.
fn consume_available(addr: &str, topic: &str) -> Vec<String> {
    let c = reader(addr, topic);
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    loop {
        assert!(started.elapsed() < HANG_GUARD);
        match c.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("{e}"),
            None => {}
        }
    }
}

/// One ElectLeaders request (raw: rdkafka has no call for it) to `addr`: the top-level
/// error and each partition's (topic, partition, error).
fn elect(
    addr: &str,
    version: i16,
    election_type: i8,
    partitions: Option<&[(&str, &[i32])]>,
) -> (i16, Vec<(String, i32, i16)>) {
    use common::raw;
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, ElectLeadersResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let req = ElectLeadersRequest::default()
        .with_election_type(election_type)
        .with_timeout_ms(30_000)
        .with_topic_partitions(partitions.map(|ps| {
            ps.iter()
                .map(|(t, p)| {
                    TopicPartitions::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(p.to_vec())
                })
                .collect()
        }));
    let mut s = raw::connect(addr);
    let r: ElectLeadersResponse = raw::call(&mut s, ApiKey::ElectLeaders, version, &req);
    let results = r
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result
                .iter()
                .map(|p| (t.topic.0.to_string(), p.partition_id, p.error_code))
        })
        .collect();
    (r.error_code, results)
}

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
const ELECTION_NOT_NEEDED: i16 = 84;

/// Waits until node `from`'s metadata shows partition 0 of `topic` as `done` wants it.
fn wait_partition(
    c: &Cluster,
    from: usize,
    topic: &str,
    what: &str,
    done: impl Fn(&common::cluster::Part) -> bool,
) {
    c.wait(what, HANG_GUARD, || {
        let (_, parts) = c.metadata(from, topic)?;
        parts.get(&0).filter(|p| done(p)).map(|_| ())
    });
}

#[test]
fn elect_leaders_moves_leadership_to_the_preferred_replica_or_an_unclean_one_when_asked() {
    let spec = ClusterSpec {
        cluster_toml: "auto_leader_rebalance = false".into(),
        ..ClusterSpec::default()
    };
    let mut c = Cluster::start("admin-elect", spec, HANG_GUARD);
    let a = admin(&c.bootstrap());
    create_assigned(&a, "el", &[&[1, 2, 3]]).unwrap();
    create_assigned(&a, "un", &[&[3, 2]]).unwrap();
    wait_partition(&c, 2, "el", "el led by 1", |p| p.leader == 1);

    // Node 1 stops: leadership moves off it, and its return does not bring it back
    // (automatic rebalancing is off).
    c.stop(1, HANG_GUARD).expect("node 1 stopped");
    wait_partition(&c, 2, "el", "el led elsewhere", |p| {
        p.leader != 1 && p.leader >= 0
    });
    let el0: &[(&str, &[i32])] = &[("el", &[0])];
    assert_eq!(
        elect(&c.addr(2), 2, PREFERRED, Some(el0)),
        (0, vec![("el".into(), 0, PREFERRED_LEADER_NOT_AVAILABLE)]),
        "the preferred replica is down"
    );
    c.start_node(1);
    wait_partition(&c, 2, "el", "1 back in the ISR", |p| p.isr.contains(&1));
    assert_ne!(c.metadata(2, "el").unwrap().1[&0].leader, 1);
    let asked: &[(&str, &[i32])] = &[("el", &[0, 7])];
    assert_eq!(
        elect(&c.addr(2), 1, PREFERRED, Some(asked)),
        (
            0,
            vec![
                ("el".into(), 0, 0),
                ("el".into(), 7, UNKNOWN_TOPIC_OR_PARTITION)
            ]
        )
    );
    wait_partition(&c, 3, "el", "el led by 1 again", |p| p.leader == 1);
    assert_eq!(
        elect(&c.addr(3), 0, PREFERRED, Some(el0)).1,
        [("el".into(), 0, ELECTION_NOT_NEEDED)]
    );
    // Every partition: only those that needed an election are answered.
    let (error, all) = elect(&c.addr(3), 2, PREFERRED, None);
    assert_eq!(error, 0);
    assert!(all.iter().all(|(t, _, _)| t != "el"), "{all:?}");

    // "un" (replicas 3, 2): node 2 freezes and leaves the ISR; node 3, the last in-sync
    // replica, dies; node 2 comes back. No clean leader exists: only an UNCLEAN election
    // gives the partition one, and only when asked.
    c.signal(2, libc::SIGSTOP);
    wait_partition(&c, 1, "un", "2 out of un's ISR", |p| p.isr == [3]);
    c.kill(3);
    c.signal(2, libc::SIGCONT);
    wait_partition(&c, 1, "un", "un leaderless", |p| p.leader == -1);
    let un0: &[(&str, &[i32])] = &[("un", &[0])];
    assert_eq!(
        elect(&c.addr(1), 2, PREFERRED, Some(un0)).1,
        [("un".into(), 0, PREFERRED_LEADER_NOT_AVAILABLE)]
    );
    // Through the CLI (the same ElectLeaders request).
    let cli = |addr: &str| {
        common::sluice(&[
            "cluster",
            "elect-leaders",
            "--unclean",
            "--partition",
            "un/0",
            "--bootstrap",
            addr,
        ])
    };
    assert_eq!(cli(&c.addr(1)), "un/0: elected\n");
    wait_partition(&c, 1, "un", "un led by 2", |p| {
        p.leader == 2 && p.isr == [2]
    });
    assert_eq!(
        elect(&c.addr(1), 2, UNCLEAN, Some(un0)).1,
        [("un".into(), 0, ELECTION_NOT_NEEDED)],
        "it has a leader now"
    );
    assert!(cli(&c.addr(2)).contains("ElectionNotNeeded (84)"));
}

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;
const INVALID_CONFIG: i16 = 40;

/// One IncrementalAlterConfigs (raw: rdkafka has no call for it) of one resource: its
/// own error code and message.
fn incremental_alter(
    addr: &str,
    resource_type: i8,
    name: &str,
    ops: &[(&str, i8, Option<&str>)],
) -> (i16, Option<String>) {
    use common::raw;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{
        ApiKey, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    };
    use kafka_protocol::protocol::StrBytes;
    let configs = ops
        .iter()
        .map(|(k, op, v)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_config_operation(*op)
                .with_value(v.map(|v| StrBytes::from_string(v.to_string())))
        })
        .collect();
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configs(configs),
    ]);
    let mut s = raw::connect(addr);
    let r: IncrementalAlterConfigsResponse =
        raw::call(&mut s, ApiKey::IncrementalAlterConfigs, 1, &req);
    let one = &r.responses[0];
    (
        one.error_code,
        one.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// A topic's config `key` as rdkafka's DescribeConfigs reports it (checking the
/// resource's own result: the future is Ok whatever it holds).
fn topic_config(addr: &str, topic: &str, key: &str) -> Option<String> {
    use rdkafka::admin::ResourceSpecifier;
    let a = admin(addr);
    let r = block_on(a.describe_configs([&ResourceSpecifier::Topic(topic)], &options())).unwrap();
    let resource = r[0].as_ref().expect("the topic's own result");
    resource.get(key).and_then(|e| e.value.clone())
}

#[test]
fn incremental_alter_configs_appends_to_and_subtracts_from_list_configs() {
    let dir = common::tempdir("admin-lists");
    let b = Broker::start(dir.path());
    create_with(&admin(&b.addr), "lists", &[]).unwrap();
    let policy = "cleanup.policy";
    assert_eq!(
        incremental_alter(
            &b.addr,
            TOPIC,
            "lists",
            &[(policy, APPEND, Some("compact"))]
        ),
        (0, None)
    );
    assert_eq!(
        topic_config(&b.addr, "lists", policy).as_deref(),
        Some("delete,compact")
    );
    assert_eq!(
        incremental_alter(
            &b.addr,
            TOPIC,
            "lists",
            &[(policy, SUBTRACT, Some("delete"))]
        ),
        (0, None)
    );
    assert_eq!(
        topic_config(&b.addr, "lists", policy).as_deref(),
        Some("compact")
    );
    let (error, message) = incremental_alter(
        &b.addr,
        TOPIC,
        "lists",
        &[("retention.ms", APPEND, Some("5"))],
    );
    assert_eq!(error, INVALID_CONFIG, "{message:?}");
    assert_eq!(
        topic_config(&b.addr, "lists", policy).as_deref(),
        Some("compact")
    );
    assert_eq!(
        incremental_alter(&b.addr, TOPIC, "lists", &[(policy, DELETE, None)]),
        (0, None)
    );
    assert_eq!(
        topic_config(&b.addr, "lists", policy).as_deref(),
        Some("delete")
    );
    let _ = (SET, BROKER);
}

/// Kafka's config sources (DescribeConfigs).
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT: i8 = 3;
const SOURCE_DEFAULT: i8 = 5;
const TYPE_LONG: i8 = 5;

/// One config of a DescribeConfigs v4 answer (raw, with synonyms and documentation,
/// which rdkafka does not show): value, source, type, read-only, documented, and its
/// synonyms as (name, value, source).
#[derive(Debug, Clone, PartialEq)]
struct RawConfig {
    value: String,
    source: i8,
    kind: i8,
    read_only: bool,
    documented: bool,
    synonyms: Vec<(String, String, i8)>,
}

fn describe_raw(
    addr: &str,
    resource_type: i8,
    name: &str,
) -> Result<std::collections::BTreeMap<String, RawConfig>, i16> {
    use common::raw;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};
    use kafka_protocol::protocol::StrBytes;
    let req = DescribeConfigsRequest::default()
        .with_include_synonyms(true)
        .with_include_documentation(true)
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configuration_keys(None)]);
    let mut s = raw::connect(addr);
    let r: DescribeConfigsResponse = raw::call(&mut s, ApiKey::DescribeConfigs, 4, &req);
    let one = &r.results[0];
    if one.error_code != 0 {
        return Err(one.error_code);
    }
    Ok(one
        .configs
        .iter()
        .map(|c| {
            let synonyms = c
                .synonyms
                .iter()
                .map(|s| {
                    let v = s.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                    (s.name.to_string(), v, s.source)
                })
                .collect();
            let config = RawConfig {
                value: c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                source: c.config_source,
                kind: c.config_type,
                read_only: c.read_only,
                documented: c.documentation.as_ref().is_some_and(|d| !d.is_empty()),
                synonyms,
            };
            (c.name.to_string(), config)
        })
        .collect())
}

#[test]
fn dynamic_broker_configs_round_trip_with_sources_and_synonyms_and_apply_live() {
    use rdkafka::admin::{ConfigSource, ResourceSpecifier};
    let dir = common::tempdir("admin-broker-configs");
    let b = Broker::start(dir.path());
    let a = admin(&b.addr);
    create_with(&a, "dyn", &[]).unwrap();
    let week = "604800000";

    // Through rdkafka: this broker's configs, its own result checked.
    let described =
        block_on(a.describe_configs([&ResourceSpecifier::Broker(1)], &options())).unwrap();
    let broker = described[0].as_ref().expect("broker 1's own result");
    let retention = broker.get("log.retention.ms").expect("log.retention.ms");
    assert_eq!(
        (retention.value.as_deref(), &retention.source),
        (Some(week), &ConfigSource::Default)
    );
    assert!(!retention.is_read_only);
    let node = broker.get("node.id").expect("node.id");
    assert!(node.is_read_only);
    assert_eq!(node.value.as_deref(), Some("1"));

    // The cluster default, then this broker's own value: the topic follows the more
    // specific, and says where its value comes from.
    let key = "log.retention.ms";
    assert_eq!(
        incremental_alter(&b.addr, BROKER, "", &[(key, SET, Some("3000000"))]),
        (0, None)
    );
    let topic = describe_raw(&b.addr, TOPIC, "dyn").unwrap();
    let r = &topic["retention.ms"];
    assert_eq!(
        (r.value.as_str(), r.source, r.kind),
        ("3000000", SOURCE_DYNAMIC_DEFAULT, TYPE_LONG)
    );
    assert!(r.documented && !r.read_only);
    assert_eq!(
        r.synonyms,
        [
            (
                key.to_string(),
                "3000000".to_string(),
                SOURCE_DYNAMIC_DEFAULT
            ),
            (key.to_string(), week.to_string(), SOURCE_DEFAULT),
        ]
    );
    assert_eq!(
        incremental_alter(&b.addr, BROKER, "1", &[(key, SET, Some("2000000"))]),
        (0, None)
    );
    let described =
        block_on(a.describe_configs([&ResourceSpecifier::Broker(1)], &options())).unwrap();
    let broker = described[0].as_ref().expect("broker 1's own result");
    let retention = broker.get(key).unwrap();
    assert_eq!(
        (retention.value.as_deref(), &retention.source),
        (Some("2000000"), &ConfigSource::DynamicBroker)
    );
    let cluster = describe_raw(&b.addr, BROKER, "").unwrap();
    assert_eq!(
        cluster.keys().collect::<Vec<_>>(),
        [key],
        "only what the default sets"
    );
    assert_eq!(cluster[key].source, SOURCE_DYNAMIC_DEFAULT);
    let r = &describe_raw(&b.addr, TOPIC, "dyn").unwrap()["retention.ms"];
    assert_eq!(
        (r.value.as_str(), r.source),
        ("2000000", SOURCE_DYNAMIC_BROKER)
    );
    assert_eq!(r.synonyms.len(), 3, "{r:?}");

    // The topic's own value wins; deleting the broker's falls back to the default's.
    assert_eq!(
        incremental_alter(
            &b.addr,
            TOPIC,
            "dyn",
            &[("retention.ms", SET, Some("5000000"))]
        ),
        (0, None)
    );
    let r = &describe_raw(&b.addr, TOPIC, "dyn").unwrap()["retention.ms"];
    assert_eq!(
        (r.value.as_str(), r.source, r.synonyms.len()),
        ("5000000", SOURCE_TOPIC, 4)
    );
    assert_eq!(
        incremental_alter(&b.addr, TOPIC, "dyn", &[("retention.ms", DELETE, None)]),
        (0, None)
    );
    assert_eq!(
        incremental_alter(&b.addr, BROKER, "1", &[(key, DELETE, None)]),
        (0, None)
    );
    let r = &describe_raw(&b.addr, TOPIC, "dyn").unwrap()["retention.ms"];
    assert_eq!(
        (r.value.as_str(), r.source),
        ("3000000", SOURCE_DYNAMIC_DEFAULT)
    );

    // Keys Sluice does not honour are refused by name; the controller's keys only as
    // the cluster default; bad values as their topic config refuses them.
    let (error, message) = incremental_alter(
        &b.addr,
        BROKER,
        "1",
        &[("log.flush.scheduler.interval.ms", SET, Some("5"))],
    );
    assert_eq!(error, INVALID_CONFIG);
    assert!(message
        .unwrap_or_default()
        .contains("log.flush.scheduler.interval.ms"));
    assert_eq!(
        incremental_alter(
            &b.addr,
            BROKER,
            "1",
            &[("min.insync.replicas", SET, Some("1"))]
        )
        .0,
        INVALID_CONFIG
    );
    assert_eq!(
        incremental_alter(
            &b.addr,
            BROKER,
            "",
            &[("log.segment.bytes", SET, Some("13"))]
        )
        .0,
        INVALID_CONFIG
    );
    assert_eq!(
        describe_raw(&b.addr, BROKER, "7"),
        Err(42),
        "another broker's id: INVALID_REQUEST"
    );

    // Applied live: with the cluster default's segment.bytes at 14, every batch rolls
    // a segment of its own in the topic's open log.
    assert_eq!(
        incremental_alter(
            &b.addr,
            BROKER,
            "",
            &[("log.segment.bytes", SET, Some("14"))]
        ),
        (0, None)
    );
    let started = std::time::Instant::now();
    let mut sent = 0;
    while segments(&b, "dyn").len() < 3 {
        assert!(
            started.elapsed() < HANG_GUARD,
            "{sent} batches, segments {:?}",
            segments(&b, "dyn")
        );
        produce(&b.addr, "dyn", "none", &values(1), true);
        sent += 1;
    }
}

/// A topic of a DescribeTopicPartitions page: name, error, partition indexes.
type PageTopic = (String, i16, Vec<i32>);

/// One DescribeTopicPartitions page and the next cursor (topic, partition).
fn describe_page(
    s: &mut std::net::TcpStream,
    topics: &[&str],
    limit: i32,
    cursor: Option<(&str, i32)>,
) -> (Vec<PageTopic>, Option<(String, i32)>) {
    use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
    use kafka_protocol::messages::{
        ApiKey, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    let name = |t: &str| TopicName(StrBytes::from_string(t.to_string()));
    let req = DescribeTopicPartitionsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|t| TopicRequest::default().with_name(name(t)))
                .collect(),
        )
        .with_response_partition_limit(limit)
        .with_cursor(cursor.map(|(t, p)| {
            Cursor::default()
                .with_topic_name(name(t))
                .with_partition_index(p)
        }));
    let r: DescribeTopicPartitionsResponse =
        common::raw::call(s, ApiKey::DescribeTopicPartitions, 0, &req);
    let topics = r
        .topics
        .iter()
        .map(|t| {
            let internal = t.name.as_ref().is_some_and(|n| n.0.starts_with("__"));
            if t.error_code == 0 {
                assert!(!t.topic_id.is_nil() && t.is_internal == internal, "{t:?}");
            }
            for p in &t.partitions {
                assert_eq!(p.leader_id.0, 1, "{p:?}");
                assert_eq!((p.replica_nodes.len(), p.isr_nodes.len()), (1, 1), "{p:?}");
                assert_eq!(p.eligible_leader_replicas.as_deref(), Some(&[][..]));
            }
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            let parts = t.partitions.iter().map(|p| p.partition_index).collect();
            (name, t.error_code, parts)
        })
        .collect();
    let next = r
        .next_cursor
        .map(|c| (c.topic_name.0.to_string(), c.partition_index));
    (topics, next)
}

#[test]
fn describe_topic_partitions_pages_partitions_in_topic_order() {
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    const INVALID_REQUEST: i16 = 42;
    let dir = common::tempdir("describe-topic-partitions");
    let b = Broker::start(dir.path());
    for (topic, partitions) in [("dtp-a", 3), ("dtp-b", 2), ("dtp-c", 1)] {
        common::create_topic_at(&b.addr, topic, partitions, 1, &[]);
    }
    let mut s = common::raw::connect(&b.addr);
    let asked = ["dtp-c", "missing", "dtp-a", "dtp-b"];
    let entry = |t: &str, e: i16, p: &[i32]| (t.to_string(), e, p.to_vec());
    // By name, four partitions a page: the cursor says where the next page starts.
    let (topics, next) = describe_page(&mut s, &asked, 4, None);
    assert_eq!(
        topics,
        [entry("dtp-a", 0, &[0, 1, 2]), entry("dtp-b", 0, &[0])]
    );
    assert_eq!(next, Some(("dtp-b".to_string(), 1)));
    let (topics, next) = describe_page(&mut s, &asked, 4, Some(("dtp-b", 1)));
    assert_eq!(
        topics,
        [
            entry("dtp-b", 0, &[1]),
            entry("dtp-c", 0, &[0]),
            entry("missing", UNKNOWN_TOPIC_OR_PARTITION, &[]),
        ]
    );
    assert_eq!(next, None);
    // A page that ends with a topic points at the next topic's start.
    let (topics, next) = describe_page(&mut s, &asked, 3, None);
    assert_eq!(topics, [entry("dtp-a", 0, &[0, 1, 2])]);
    assert_eq!(next, Some(("dtp-b".to_string(), 0)));
    // As Kafka: a cursor outside the asked topics, or a negative partition, is refused.
    let (topics, _) = describe_page(&mut s, &["dtp-a"], 10, Some(("dtp-b", 0)));
    assert_eq!(topics, [entry("dtp-a", INVALID_REQUEST, &[])]);
    let (topics, _) = describe_page(&mut s, &["dtp-a"], 10, Some(("dtp-a", -1)));
    assert_eq!(topics, [entry("dtp-a", INVALID_REQUEST, &[])]);
    // No topic asked: every topic, the ours among them whole.
    let (topics, next) = describe_page(&mut s, &[], 100, None);
    let ours: Vec<_> = topics.iter().filter(|t| t.0.starts_with("dtp-")).collect();
    assert_eq!(ours.len(), 3, "{topics:?}");
    assert_eq!(next, None);
}
