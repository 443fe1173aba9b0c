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
