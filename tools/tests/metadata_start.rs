//! A node of a cluster answers Metadata consistently from its first accepted connection:
//! right after the node processes start (a fresh cluster, then the same cluster restarted
//! with topics), the first Metadata request on a raw connection to each node lists that
//! node itself, and librdkafka bootstrapped from each node lists the topics completely —
//! every partition leader in the broker list, every topic with all its partitions — never
//! `Local: Partial response` (no brokers and no topics) nor a topic missing partitions.
//!
//! The self-listing is checked on the raw connection only: librdkafka sends an
//! application's Metadata request to any broker it is connected to, and once the
//! bootstrap node's first answer names the others it may ask one whose image has not yet
//! applied the bootstrap node's unfencing (the last node to register is unfenced last).
//! That answer is consistent (the node leads nothing in it) and briefly stale, as in
//! Kafka, whose brokers apply metadata at their own pace.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cluster::{Cluster, ClusterSpec};
use common::HANG_GUARD;
use futures_executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaRespErr;

/// How long librdkafka may take for one listing (it is asked as the node starts).
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// The brokers (id, `host:port`) the first Metadata answer on a new raw connection to
/// `addr` lists: that node's own view, whenever it starts accepting.
fn first_raw_answer(addr: &str) -> Result<Vec<(i32, String)>, String> {
    use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
    // The process may not have bound its port yet: connect until it has.
    let started = std::time::Instant::now();
    let mut s = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if started.elapsed() > LIST_TIMEOUT => return Err(e.to_string()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    s.set_read_timeout(Some(LIST_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let req = MetadataRequest::default().with_topics(None);
    let r: MetadataResponse = common::raw::call(&mut s, ApiKey::Metadata, 9, &req);
    Ok(r.brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect())
}

/// The brokers of a raw first answer, and librdkafka's listing.
type Answers = (Result<Vec<(i32, String)>, String>, Result<Metadata, String>);

/// The raw first answer of `addr`, then all topics through librdkafka's metadata call,
/// bootstrapped from `addr` alone.
fn list(addr: &str) -> Answers {
    (first_raw_answer(addr), list_rdkafka(addr))
}

fn list_rdkafka(addr: &str) -> Result<Metadata, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .map_err(|e| e.to_string())?;
    consumer
        .fetch_metadata(None, LIST_TIMEOUT)
        .map_err(|e| e.to_string())
}

type Listing = (usize, String, Answers);

/// Lists from every node at once (each on its own thread, as the nodes start).
fn list_all(c: &Cluster) -> Vec<Listing> {
    let addrs: Vec<(usize, String)> = c.ids().into_iter().map(|i| (i, c.addr(i))).collect();
    let threads: Vec<_> = addrs
        .into_iter()
        .map(|(i, a)| std::thread::spawn(move || (i, a.clone(), list(&a))))
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("listing thread"))
        .collect()
}

/// What is wrong with librdkafka's answer bootstrapped from one node (empty: nothing).
/// `expected` names topics and their partition counts that must be there.
fn problems(node: usize, md: &Metadata, expected: &[(&str, usize)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut leaderless_partitions = Vec::new();
    let brokers: BTreeSet<i32> = md.brokers().iter().map(|b| b.id()).collect();
    for b in md.brokers() {
        if b.host().is_empty() || b.port() <= 0 {
            out.push(format!("broker {} listed without a listener", b.id()));
        }
    }
    for t in md.topics() {
        if let Some(e) = t.error() {
            out.push(format!("topic {}: error {e:?}", t.name()));
        }
        for p in t.partitions() {
            let at = format!("{}/{}", t.name(), p.id());
            // A partition whose replicas are all still down has no leader: Kafka's
            // LEADER_NOT_AVAILABLE with leader -1 is a consistent answer; a leader the
            // broker list lacks, or any other error, is not.
            let leaderless = p.leader() == -1
                && p.error() == Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE);
            if leaderless {
                leaderless_partitions.push(at.clone());
            } else if let Some(e) = p.error() {
                out.push(format!("{at}: error {e:?}"));
            }
            if !leaderless && !brokers.contains(&p.leader()) {
                out.push(format!(
                    "{at}: leader {} not in the broker list {brokers:?}",
                    p.leader()
                ));
            }
            if p.replicas().is_empty() || !p.isr().iter().all(|r| p.replicas().contains(r)) {
                out.push(format!(
                    "{at}: replicas {:?}, isr {:?}",
                    p.replicas(),
                    p.isr()
                ));
            }
        }
        let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        ids.sort_unstable();
        if ids != (0..ids.len() as i32).collect::<Vec<_>>() {
            out.push(format!("topic {}: partitions {ids:?}", t.name()));
        }
    }
    if !leaderless_partitions.is_empty() {
        println!("figure: node {node} answered {} partitions without a leader yet: {leaderless_partitions:?}", leaderless_partitions.len());
    }
    for (name, count) in expected {
        match md.topics().iter().find(|t| t.name() == *name) {
            None => out.push(format!("topic {name} missing")),
            Some(t) if t.partitions().len() != *count => out.push(format!(
                "topic {name}: {} partitions, not {count}",
                t.partitions().len()
            )),
            Some(_) => {}
        }
    }
    out
}

fn assert_complete(c: &Cluster, expected: &[(&str, usize)], when: &str) {
    for (node, addr, (raw, answer)) in list_all(c) {
        let brokers = raw.unwrap_or_else(|e| panic!("{when}: node {node} raw: {e}"));
        assert!(
            brokers
                .iter()
                .any(|(id, at)| *id == node as i32 && *at == addr),
            "{when}: node {node} ({addr}) does not list itself first: {brokers:?}"
        );
        let md = answer.unwrap_or_else(|e| panic!("{when}: node {node} answered {e}"));
        let wrong = problems(node, &md, expected);
        assert!(
            wrong.is_empty(),
            "{when}: node {node}'s first Metadata answer: {wrong:#?}"
        );
    }
}

#[test]
fn every_node_answers_metadata_completely_from_its_first_connection() {
    // The last node stopped has no quorum left to hand its leaderships to; it need not
    // wait the default 30 s for one.
    let spec = ClusterSpec {
        cluster_toml: "controlled_shutdown_timeout_ms = 1000".into(),
        ..ClusterSpec::default()
    };
    let mut c = Cluster::launch("metadata-start", spec);
    assert_complete(&c, &[], "fresh cluster");

    c.wait_all_active(HANG_GUARD);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .create()
        .expect("admin");
    let topics = [
        NewTopic::new("listed-rf3", 6, TopicReplication::Fixed(3)),
        NewTopic::new("listed-rf1", 4, TopicReplication::Fixed(1)),
    ];
    let made = block_on(admin.create_topics(&topics, &AdminOptions::new())).expect("create");
    assert!(made.iter().all(|r| r.is_ok()), "{made:?}");
    drop(admin);
    let expected = [("listed-rf3", 6), ("listed-rf1", 4)];
    c.wait("every node to know the topics", HANG_GUARD, || {
        c.ids()
            .into_iter()
            .all(|i| c.metadata(i, "listed-rf1").is_some() && c.metadata(i, "listed-rf3").is_some())
            .then_some(())
    });

    for id in c.ids() {
        let status = c.stop(id, HANG_GUARD);
        assert!(status.is_some_and(|s| s.success()), "node {id}: {status:?}");
    }
    for id in c.ids() {
        c.start_node(id);
    }
    assert_complete(&c, &expected, "restarted cluster");
}
