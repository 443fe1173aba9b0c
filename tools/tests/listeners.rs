//! Several Kafka listeners on one broker (`[[listeners]]`): every client is answered with
//! the addresses of the listener it connected to — in Metadata, DescribeCluster and
//! FindCoordinator — and a client on either listener produces and consumes.

mod common;

use std::time::Duration;

use common::raw;
use kafka_protocol::messages::{
    ApiKey, DescribeClusterRequest, DescribeClusterResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, MetadataRequest, MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Message;

fn brokers_seen(addr: &str) -> Vec<(String, i32)> {
    let mut s = raw::connect(addr);
    let m: MetadataResponse = raw::call(&mut s, ApiKey::Metadata, 9, &MetadataRequest::default());
    let mut meta: Vec<(String, i32)> = m
        .brokers
        .iter()
        .map(|b| (b.host.to_string(), b.port))
        .collect();
    let d: DescribeClusterResponse = raw::call(
        &mut s,
        ApiKey::DescribeCluster,
        0,
        &DescribeClusterRequest::default(),
    );
    let described: Vec<(String, i32)> = d
        .brokers
        .iter()
        .map(|b| (b.host.to_string(), b.port))
        .collect();
    assert_eq!(
        meta, described,
        "Metadata and DescribeCluster agree on {addr}"
    );
    let c: FindCoordinatorResponse = raw::call(
        &mut s,
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("listeners-group")),
    );
    assert_eq!(c.error_code, 0, "FindCoordinator on {addr}");
    meta.push((c.host.to_string(), c.port));
    meta
}

#[test]
fn each_client_is_answered_with_its_own_listener() {
    let dir = common::tempdir("listeners");
    let port = common::free_port();
    let config = dir.path().join("sluice.toml");
    // Advertised under another name than it listens on, so the answer shows which
    // listener's registration it came from.
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\nname = \"EXTERNAL\"\nlisten = \"127.0.0.1:{port}\"\n\
             advertised = \"localhost:{port}\"\nsecurity_protocol = \"PLAINTEXT\"\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let broker = common::Broker::start_with(&data, &["--config", config.to_str().unwrap()]);
    let plain_port: i32 = broker.addr.rsplit(':').next().unwrap().parse().unwrap();
    let external = format!("127.0.0.1:{port}");

    let on_plain = brokers_seen(&broker.addr);
    assert_eq!(
        on_plain,
        vec![("127.0.0.1".to_string(), plain_port); 2],
        "the PLAINTEXT listener answers with its own address"
    );
    let on_external = brokers_seen(&external);
    assert_eq!(
        on_external,
        vec![("localhost".to_string(), port as i32); 2],
        "the EXTERNAL listener answers with the address advertised for it"
    );

    // A real client on the second listener: produce, then consume in a group.
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &external)
        .set("broker.address.family", "v4")
        .create()
        .expect("producer");
    for i in 0..5 {
        let v = format!("m{i}");
        producer
            .send(BaseRecord::<(), String>::to("on-external").payload(&v))
            .map_err(|(e, _)| e)
            .expect("enqueue");
    }
    producer.flush(common::HANG_GUARD).expect("flush");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &external)
        .set("broker.address.family", "v4")
        .set("group.id", "listeners-group")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["on-external"]).unwrap();
    let mut got = Vec::new();
    common::wait_for(
        "five records on the EXTERNAL listener",
        common::HANG_GUARD,
        &mut || {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
            }
            (got.len() == 5).then_some(())
        },
    );
    assert_eq!(got, ["m0", "m1", "m2", "m3", "m4"]);
}

#[test]
fn a_bad_listener_stops_start_up_naming_the_field() {
    let dir = common::tempdir("listeners-bad");
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        "[[listeners]]\nname = \"X\"\nlisten = \"127.0.0.1:1\"\nsecurity_protocol = \"KERBEROS\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-pin",
            "--cores",
            "0",
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("run sluice");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listeners[0].security_protocol"), "{err}");
}
