//! The admin endpoint: /health answers, and /metrics carries per-API request counts and
//! per-partition log offsets and sizes that match what was produced.

mod common;

use std::time::Duration;

use futures_executor::block_on;

use common::{http_get, Broker};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Sum of a per-partition gauge over `topic`'s partitions.
fn partition_sum(metrics: &str, name: &str, topic: &str) -> i64 {
    let label = format!("topic=\"{topic}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum()
}

#[test]
fn metrics_report_requests_and_partition_offsets() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let broker = Broker::start(dir.path());
    assert!(http_get(&broker.admin_addr, "/health").starts_with("HTTP/1.1 200"));

    let topic = "metrics-topic";
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("admin");
    let created = block_on(admin.create_topics(
        [&NewTopic::new(topic, 4, TopicReplication::Fixed(1))],
        &AdminOptions::new(),
    ))
    .expect("create topics");
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("linger.ms", "1")
        .create()
        .expect("producer");
    for i in 0..400 {
        let value = format!("value-{i}");
        producer
            .send(
                BaseRecord::<(), _>::to(topic)
                    .partition(i % 4)
                    .payload(&value),
            )
            .expect("queue");
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");

    // Shards publish their figures every second: poll until they show the 400 records.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http_get(&broker.admin_addr, "/metrics");
        if partition_sum(&metrics, "sluice_partition_high_watermark", topic) == 400 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        partition_sum(&metrics, "sluice_partition_log_end_offset", topic),
        400,
        "{metrics}"
    );
    assert_eq!(
        partition_sum(&metrics, "sluice_partition_high_watermark", topic),
        400
    );
    assert_eq!(
        partition_sum(&metrics, "sluice_partition_log_start_offset", topic),
        0
    );
    assert!(partition_sum(&metrics, "sluice_partition_size_bytes", topic) > 400 * 7);
    let partitions = metrics
        .lines()
        .filter(|l| l.starts_with("sluice_partition_segments") && l.contains(topic))
        .count();
    assert_eq!(partitions, 4);
    assert!(
        metrics.contains("sluice_requests_total{api=\"Produce\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_shard_tail_cache_bytes{shard=\"0\"}"));
    assert!(metrics.contains("sluice_connections "));
}

/// One shard's `sluice_shard_connections` gauge.
fn shard_connections(metrics: &str, shard: usize) -> Option<usize> {
    let prefix = format!("sluice_shard_connections{{shard=\"{shard}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
}

#[test]
fn new_connections_go_to_the_shard_with_the_fewest() {
    use common::raw;
    use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

    // Where SO_REUSEPORT's hash puts a connection is chance; the broker moves each new one
    // to the shard serving the fewest, so ten connections opened one after another end up
    // five per shard whatever the hash did (by chance alone: 1 in 4). Each is answered
    // where it landed.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let broker = Broker::start_on_cores(dir.path(), "0-1", &[]);
    let conns: Vec<_> = (0..10)
        .map(|_| {
            let mut s = raw::connect(&broker.addr);
            let r: ApiVersionsResponse = raw::call(
                &mut s,
                ApiKey::ApiVersions,
                3,
                &ApiVersionsRequest::default(),
            );
            assert_eq!(r.error_code, 0);
            s
        })
        .collect();
    // Each shard publishes its gauge about once a second.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http_get(&broker.admin_addr, "/metrics");
        if shard_connections(&metrics, 0) == Some(5) && shard_connections(&metrics, 1) == Some(5) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(shard_connections(&metrics, 0), Some(5), "{metrics}");
    assert_eq!(shard_connections(&metrics, 1), Some(5), "{metrics}");
    drop(conns);
}
