//! A compacted topic through a real broker and real clients (librdkafka): many versions of
//! a few keys (uncompressed, lz4, snappy) shrink to about the latest of each once the
//! broker's maintenance loop has compacted the closed segments; a fresh consumer from the beginning sees the latest
//! value of every key and never an older value after a newer one; keyless records are
//! refused with INVALID_RECORD; DescribeConfigs shows the compaction settings.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{http_get, Broker, HANG_GUARD};
use futures_executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

const KEYS: usize = 5;
const VERSIONS: usize = 200;
const VALUE_BYTES: usize = 100;

/// A per-partition gauge of `topic` partition 0, if published yet.
fn value(key: usize, version: usize) -> String {
    let mut v = format!("key{key}:{version:05}:");
    v.extend(std::iter::repeat_n('.', VALUE_BYTES - v.len()));
    v
}

#[test]
fn compacted_topic_keeps_the_latest_value_of_every_key() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = dir.path().join("sluice.toml");
    // Run the maintenance loop (retention, then compaction) often.
    std::fs::write(&config, "retention_check_interval_ms = 200\n").unwrap();
    let data = dir.path().join("data");
    let broker = Broker::start_with(&data, &["--config", config.to_str().unwrap()]);
    let topic = "changelog";
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("admin");
    let new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "16384")
        .set("min.cleanable.dirty.ratio", "0.1")
        .set("delete.retention.ms", "3600000");
    let created = block_on(admin.create_topics([&new_topic], &AdminOptions::new())).unwrap();
    assert!(created[0].is_ok(), "{created:?}");
    let described =
        block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new()))
            .unwrap();
    let resource = described[0].as_ref().expect("described");
    let entry = |name: &str| {
        resource
            .get(name)
            .and_then(|e| e.value.clone())
            .unwrap_or_else(|| panic!("{name} described"))
    };
    assert_eq!(entry("cleanup.policy"), "compact");
    assert_eq!(entry("min.cleanable.dirty.ratio"), "0.1");
    assert_eq!(entry("delete.retention.ms"), "3600000");

    // Versions in three runs: uncompressed, lz4, snappy (each flushed before the next,
    // so versions stay in order).
    let runs = [(0, 80, "none"), (80, 150, "lz4"), (150, VERSIONS, "snappy")];
    for (from, to, codec) in runs {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &broker.addr)
            .set("linger.ms", "2")
            .set("batch.num.messages", "20")
            .set("compression.type", codec)
            .create()
            .expect("producer");
        for version in from..to {
            for key in 0..KEYS {
                let k = format!("key{key}");
                let v = value(key, version);
                producer
                    .send(BaseRecord::to(topic).partition(0).key(&k).payload(&v))
                    .expect("queue");
                producer.poll(Duration::ZERO);
            }
        }
        producer.flush(HANG_GUARD).expect("flush");
    }

    // A keyless record is refused.
    let keyless: BaseProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("message.timeout.ms", "20000")
        .create_with_context(Refusals::default())
        .expect("producer");
    keyless
        .send(
            BaseRecord::<(), _>::to(topic)
                .partition(0)
                .payload("no key"),
        )
        .expect("queue");
    keyless.flush(HANG_GUARD).expect("flush");
    assert_eq!(
        keyless.context().0.lock().unwrap().as_slice(),
        &[Some(RDKafkaErrorCode::InvalidRecord)]
    );

    // Everything appended is at least KEYS × VERSIONS × VALUE_BYTES; compacted, the
    // closed segments hold a few records and the active one at most 16 KiB.
    let written = (KEYS * VERSIONS * VALUE_BYTES) as i64;
    let started = Instant::now();
    loop {
        let metrics = http_get(&broker.admin_addr, "/metrics");
        let topic_label = format!("topic=\"{topic}\"");
        let size = common::metric(
            &metrics,
            "sluice_partition_size_bytes",
            &[&topic_label, "partition=\"0\""],
        )
        .map(|v| v as i64);
        if size.is_some_and(|s| s < written / 3) {
            break;
        }
        assert!(
            started.elapsed() < HANG_GUARD,
            "compaction did not shrink the log: {size:?} bytes of {written}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "compaction-test")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, HANG_GUARD)
        .expect("watermarks");
    assert_eq!(high, (KEYS * VERSIONS) as i64);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(low))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut latest: BTreeMap<String, usize> = BTreeMap::new();
    let (mut seen, mut last_offset) = (0usize, -1i64);
    let started = Instant::now();
    while last_offset < high - 1 {
        assert!(
            started.elapsed() < HANG_GUARD,
            "read up to {last_offset} of {high}"
        );
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.expect("consume");
        assert!(m.offset() > last_offset, "offsets increase");
        last_offset = m.offset();
        seen += 1;
        let key = String::from_utf8(m.key().expect("keyed").to_vec()).unwrap();
        let payload = std::str::from_utf8(m.payload().expect("value")).unwrap();
        let version: usize = payload.split(':').nth(1).unwrap().parse().unwrap();
        assert!(payload.starts_with(&format!("{key}:")), "{payload}");
        if let Some(previous) = latest.insert(key.clone(), version) {
            assert!(
                previous < version,
                "{key}: version {version} after {previous}"
            );
        }
    }
    assert!(seen < KEYS * VERSIONS / 2, "compacted: read {seen} records");
    for key in 0..KEYS {
        assert_eq!(
            latest.get(&format!("key{key}")),
            Some(&(VERSIONS - 1)),
            "key{key}"
        );
    }
}

/// Delivery reports of the keyless producer: `None` when delivered.
#[derive(Clone, Default)]
struct Refusals(std::sync::Arc<std::sync::Mutex<Vec<Option<RDKafkaErrorCode>>>>);

impl rdkafka::ClientContext for Refusals {}
impl rdkafka::producer::ProducerContext for Refusals {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        let outcome = match r {
            Ok(_) => None,
            Err((KafkaError::MessageProduction(code), _)) => Some(*code),
            Err(_) => Some(RDKafkaErrorCode::Fail),
        };
        self.0.lock().unwrap().push(outcome);
    }
}
