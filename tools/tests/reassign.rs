//! Partition reassignment (#23) across real `sluice serve` processes: Kafka's
//! AlterPartitionReassignments and ListPartitionReassignments as raw requests (rdkafka's
//! admin client has no call for them) and through `sluice cluster reassign` /
//! `reassignments`, while an idempotent acks=all producer writes (its payloads carry
//! sequence numbers; every acknowledged message must be read back at its offset, in order,
//! once). A replica being added is held back by stopping its broker (SIGSTOP), so the
//! reassignment is observed in progress, cancelled, and carried across a controller
//! failover; every wait is on observed state, bounded by the hang guard only.

mod common;

use std::sync::{Mutex, MutexGuard};

use common::cluster::{Cluster, ClusterSpec, Part};
use common::load::{acked_ends, check_read_back, finish_and_verify, read_all, Load};
use common::{sluice, sluice_output, HANG_GUARD};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;

/// One cluster at a time: two clusters on a small machine starve each other's heartbeats.
static TURN: Mutex<()> = Mutex::new(());

fn take_turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One partition's target: topic, partition, replicas (`None` cancels).
type Target<'a> = (&'a str, i32, Option<&'a [i32]>);

/// One AlterPartitionReassignments to `addr`: the top-level error and each partition's
/// (topic, partition, error).
fn alter(
    addr: &str,
    version: i16,
    allow_rf_change: bool,
    targets: &[Target<'_>],
) -> (i16, Vec<(String, i32, i16)>) {
    let topics = targets
        .iter()
        .map(|(t, p, replicas)| {
            ReassignableTopic::default()
                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                .with_partitions(vec![ReassignablePartition::default()
                    .with_partition_index(*p)
                    .with_replicas(
                        replicas.map(|r| r.iter().map(|b| BrokerId(*b)).collect()),
                    )])
        })
        .collect();
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_allow_replication_factor_change(allow_rf_change)
        .with_topics(topics);
    let mut s = common::raw::connect(addr);
    let r: AlterPartitionReassignmentsResponse =
        common::raw::call(&mut s, ApiKey::AlterPartitionReassignments, version, &req);
    let results = r
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index, p.error_code))
        })
        .collect();
    (r.error_code, results)
}

/// A partition being reassigned: (topic, partition, replicas, adding, removing).
type Ongoing = (String, i32, Vec<i32>, Vec<i32>, Vec<i32>);

/// One ListPartitionReassignments to `addr` (every partition, or `topic`'s partition 0).
fn list(addr: &str, topic: Option<&str>) -> Vec<Ongoing> {
    let topics = topic.map(|t| {
        vec![ListPartitionReassignmentsTopics::default()
            .with_name(TopicName(StrBytes::from_string(t.to_string())))
            .with_partition_indexes(vec![0])]
    });
    let req = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(topics);
    let mut s = common::raw::connect(addr);
    let r: ListPartitionReassignmentsResponse =
        common::raw::call(&mut s, ApiKey::ListPartitionReassignments, 0, &req);
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<i32>>();
    r.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    ids(&p.replicas),
                    ids(&p.adding_replicas),
                    ids(&p.removing_replicas),
                )
            })
        })
        .collect()
}

/// Waits until node `from`'s metadata shows partition 0 of `topic` as `done` wants it.
fn wait_partition(
    c: &Cluster,
    from: usize,
    topic: &str,
    what: &str,
    done: impl Fn(&Part) -> bool,
) -> Part {
    c.wait(what, HANG_GUARD, || {
        let (_, parts) = c.metadata(from, topic)?;
        parts.get(&0).filter(|p| done(p)).cloned()
    })
}

fn sorted(v: &[i32]) -> Vec<i32> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v
}

/// Whether node `id` holds a directory for `topic`'s partition 0.
fn holds(c: &Cluster, id: usize, topic: &str) -> bool {
    c.root.join(format!("node{id}/data/{topic}-0")).exists()
}

#[test]
fn a_partition_moves_to_new_brokers_under_load_and_the_removed_one_deletes_its_copy() {
    let _turn = take_turn();
    let spec = ClusterSpec {
        // Leadership moves only because the reassignment moves it.
        cluster_toml: "auto_leader_rebalance = false".into(),
        ..ClusterSpec::default()
    };
    let mut c = Cluster::start("reassign-move", spec, HANG_GUARD);
    common::create_assigned_at(&c.bootstrap(), "moving", &[&[1, 2]]);
    wait_partition(&c, 3, "moving", "moving led by 1, in sync", |p| {
        p.leader == 1 && sorted(&p.isr) == [1, 2]
    });
    let load = Load::start(&c.bootstrap(), "moving", 1);
    load.wait_acked("messages before the move", 0, 300);

    assert_eq!(
        alter(&c.addr(3), 1, true, &[("moving", 0, Some(&[2, 3]))]),
        (0, vec![("moving".into(), 0, 0)])
    );
    // Broker 3 catches up, then the replica set switches and leadership leaves broker 1
    // (being removed) for the first target replica in sync.
    let done = wait_partition(&c, 3, "moving", "moving on [2, 3], led by 2", |p| {
        p.replicas == [2, 3] && p.leader == 2 && sorted(&p.isr) == [2, 3]
    });
    eprintln!("figure: moved to {done:?}");
    let after = load.acks.count();
    load.wait_acked("messages after the move", after, 300);
    assert!(list(&c.addr(1), None).is_empty(), "nothing in progress");
    assert_eq!(
        sluice(&["cluster", "reassignments", "--bootstrap", &c.addr(2)]),
        "no partition reassignment in progress\n"
    );
    c.wait("broker 1 deletes its copy", HANG_GUARD, || {
        (!holds(&c, 1, "moving")).then_some(())
    });
    assert!(holds(&c, 3, "moving"), "broker 3 holds the partition");
    let acked = finish_and_verify(load, &c, "moving", 1);

    // Everything acknowledged is on broker 3 too: it leads once broker 2 stops.
    c.stop(2, HANG_GUARD).expect("node 2 stopped");
    wait_partition(&c, 3, "moving", "moving led by 3", |p| p.leader == 3);
    let read = read_all(&c.addr(3), "moving", &acked_ends(&acked, 1));
    check_read_back("moving", &acked, &read);
}

#[test]
fn a_reassignment_waits_for_its_new_replica_survives_a_controller_failover_and_can_be_cancelled() {
    let _turn = take_turn();
    let spec = ClusterSpec {
        nodes: 4,
        // Controllers 1..3; broker 4 (the replica being added) is not one, so stopping it
        // leaves a quorum that survives losing another node.
        controllers: 3,
        cluster_toml: "auto_leader_rebalance = false".into(),
        ..ClusterSpec::default()
    };
    let mut c = Cluster::start("reassign-held", spec, HANG_GUARD);
    common::create_assigned_at(&c.bootstrap(), "held", &[&[1, 2]]);
    wait_partition(&c, 3, "held", "held led by 1, in sync", |p| {
        p.leader == 1 && sorted(&p.isr) == [1, 2]
    });
    let load = Load::start(&c.bootstrap(), "held", 1);
    load.wait_acked("messages before the move", 0, 200);
    c.signal(4, libc::SIGSTOP);

    // Invalid requests: each partition answered with Kafka's code, nothing changed.
    let invalid: [(Target<'_>, i16); 5] = [
        (("held", 0, Some(&[2, 9])), INVALID_REPLICA_ASSIGNMENT),
        (("held", 0, Some(&[2, 2])), INVALID_REPLICA_ASSIGNMENT),
        (("held", 0, Some(&[])), INVALID_REPLICA_ASSIGNMENT),
        (("nope", 0, Some(&[1])), UNKNOWN_TOPIC_OR_PARTITION),
        (("held", 4, Some(&[1])), UNKNOWN_TOPIC_OR_PARTITION),
    ];
    for (target, code) in invalid {
        let (error, results) = alter(&c.addr(1), 0, true, &[target]);
        assert_eq!((error, results[0].2), (0, code), "{target:?}");
    }
    let rf = alter(&c.addr(2), 1, false, &[("held", 0, Some(&[1, 2, 3]))]);
    assert_eq!(
        rf.1[0].2, INVALID_REPLICATION_FACTOR,
        "v1 forbidding an RF change"
    );
    assert_eq!(
        alter(&c.addr(1), 0, true, &[("held", 0, None)]).1[0].2,
        NO_REASSIGNMENT_IN_PROGRESS
    );
    assert!(
        list(&c.addr(1), None).is_empty(),
        "the refusals changed nothing"
    );

    // Through the CLI: broker 4 cannot catch up while stopped, so the move waits.
    let bootstrap = c.addr(1);
    let reassign = |more: &[&str]| {
        let mut args = vec![
            "cluster",
            "reassign",
            "--topic",
            "held",
            "--partition",
            "0",
            "--bootstrap",
            &bootstrap,
        ];
        args.extend_from_slice(more);
        sluice_output(&args)
    };
    let (ok, out, err) = reassign(&["--replicas", "2,4"]);
    assert!(ok, "{err}");
    assert_eq!(out, "held/0: reassigning to [2, 4]\n");
    let ongoing = ("held".to_string(), 0, vec![2, 4, 1], vec![4], vec![1]);
    assert_eq!(
        list(&c.addr(2), Some("held")),
        std::slice::from_ref(&ongoing)
    );
    let table = sluice(&["cluster", "reassignments", "--bootstrap", &c.addr(3)]);
    assert!(table.contains("held") && table.contains("2,4,1"), "{table}");
    let json = sluice(&[
        "cluster",
        "reassignments",
        "--topic",
        "held",
        "--json",
        "--bootstrap",
        &c.addr(3),
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v[0]["adding"], serde_json::json!([4]), "{json}");
    assert_eq!(v[0]["removing"], serde_json::json!([1]), "{json}");
    wait_partition(&c, 1, "held", "replicas 2, 4, 1 in metadata", |p| {
        p.replicas == [2, 4, 1] && p.leader == 1
    });

    // Cancelled: back to the original replicas.
    let (ok, out, err) = reassign(&["--cancel"]);
    assert!(ok, "{err}");
    assert_eq!(out, "held/0: reassignment cancelled\n");
    assert!(list(&c.addr(2), None).is_empty());
    // Kafka's revert: the replicas less those being added, in the list's order.
    wait_partition(&c, 2, "held", "held back on [2, 1]", |p| {
        p.replicas == [2, 1]
    });
    let (ok, _, err) = reassign(&["--cancel"]);
    assert!(!ok && err.contains("NoReassignmentInProgress"), "{err}");

    // Again, then the active controller is killed mid-reassignment: its successor reads
    // the move from the metadata log and completes it once broker 4 catches up.
    assert_eq!(
        alter(&c.addr(2), 1, true, &[("held", 0, Some(&[2, 4]))]).1[0].2,
        0
    );
    let old = c.wait("a controller leader", HANG_GUARD, || c.controller_leader(1));
    c.kill(old);
    let other = [1, 2, 3]
        .into_iter()
        .find(|n| *n != old)
        .expect("another node");
    let new = c.wait("another controller leader", HANG_GUARD, || {
        c.controller_leader(other).filter(|l| *l != old)
    });
    eprintln!("figure: controller {old} killed, {new} leads");
    assert_eq!(list(&c.addr(other), None), [ongoing]);
    c.start_node(old);
    c.signal(4, libc::SIGCONT);
    // Led by 2, or by 4 when the killed controller was node 2: the move may complete while
    // the killed node is still counted in sync, and leadership then goes to 4 (no
    // automatic rebalance here). Either way broker 1 leads nothing any more.
    let done = wait_partition(
        &c,
        other,
        "held",
        "held on [2, 4], led by one of them",
        |p| p.replicas == [2, 4] && (p.leader == 2 || (old == 2 && p.leader == 4)),
    );
    eprintln!("figure: moved to {done:?}");
    assert!(list(&c.addr(other), None).is_empty());
    let after = load.acks.count();
    load.wait_acked("messages after the move", after, 200);
    c.wait("broker 1 deletes its copy", HANG_GUARD, || {
        (!holds(&c, 1, "held")).then_some(())
    });
    finish_and_verify(load, &c, "held", 1);
}
