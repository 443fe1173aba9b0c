//! What Kafka's admin tooling expects, through rdkafka's AdminClient (and raw requests
//! where rdkafka has no call): manual replica assignment on CreateTopics and
//! CreatePartitions in a 3-node cluster.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, ClusterSpec};
use common::HANG_GUARD;
use futures_executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

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
