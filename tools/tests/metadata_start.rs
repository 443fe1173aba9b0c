//! A node of a cluster answers Metadata consistently from its first accepted connection:
//! librdkafka lists the topics of each node of a 3-node cluster right after the node
//! processes start (a fresh cluster, then the same cluster restarted with topics), and
//! every answer is complete — the answering broker and every partition leader in the
//! broker list, every topic with all its partitions — never `Local: Partial response`
//! (no brokers and no topics) nor a topic missing partitions.

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

/// All topics through librdkafka's metadata call, bootstrapped from `addr` alone.
fn list(addr: &str) -> Result<Metadata, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .map_err(|e| e.to_string())?;
    consumer
        .fetch_metadata(None, LIST_TIMEOUT)
        .map_err(|e| e.to_string())
}

/// Lists from every node at once (each on its own thread, as the nodes start).
fn list_all(c: &Cluster) -> Vec<(usize, String, Result<Metadata, String>)> {
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

/// What is wrong with one node's answer (empty: nothing). `expected` names topics and
/// their partition counts that must be there.
fn problems(node: usize, addr: &str, md: &Metadata, expected: &[(&str, usize)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut leaderless_partitions = Vec::new();
    let brokers: BTreeSet<i32> = md.brokers().iter().map(|b| b.id()).collect();
    for b in md.brokers() {
        if b.host().is_empty() || b.port() <= 0 {
            out.push(format!("broker {} listed without a listener", b.id()));
        }
    }
    let listeners: Vec<String> = md
        .brokers()
        .iter()
        .map(|b| format!("{}:{}", b.host(), b.port()))
        .collect();
    if !listeners.iter().any(|l| l == addr) {
        out.push(format!(
            "node {node} ({addr}) does not list itself: {listeners:?}"
        ));
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
    for (node, addr, answer) in list_all(c) {
        let md = answer.unwrap_or_else(|e| panic!("{when}: node {node} answered {e}"));
        let wrong = problems(node, &addr, &md, expected);
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
