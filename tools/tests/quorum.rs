//! Controller membership with real `sluice serve` processes on 127.0.0.1: three nodes
//! (broker and controller each) grow to four controllers with a controller-only node
//! that joins as a non-voter and is added with `sluice cluster add-controller`, then
//! shrink back to three by removing the active controller with `sluice cluster
//! remove-controller` (it hands leadership over). A controller that is not running is
//! added only as a learner (it never catches up; meanwhile another change is refused) and
//! is dropped again; a node that is
//! broker and controller joins the same way, its broker following the image meanwhile;
//! finally the controller-only node is removed and its address forgotten. Metadata stays intact on every broker
//! throughout; brokers learn the new controller's address; refusals name their reason; the
//! controller-only node has no Kafka listener and no partition logs. Waits are on observed
//! state with a hang guard only; the durations printed are figures, never checked.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{free_port, sluice_output, Broker, HANG_GUARD};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    common::wait_for(what, HANG_GUARD, &mut f)
}

fn status(node: &Broker) -> Option<serde_json::Value> {
    serde_json::from_str(&node.admin_get("/cluster").ok()?).ok()
}

fn voters(s: &serde_json::Value) -> Vec<u64> {
    s["controller"]["voters"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default()
}

/// Each partition of `topic` as the broker at `addr` reports it: replicas (sorted).
fn replicas(addr: &str, topic: &str) -> Option<BTreeMap<i32, BTreeSet<i32>>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .ok()?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    let t = md.topics().first()?;
    if t.error().is_some() || t.partitions().is_empty() {
        return None;
    }
    Some(
        t.partitions()
            .iter()
            .map(|p| (p.id(), p.replicas().iter().copied().collect()))
            .collect(),
    )
}

fn create_topic(addr: &str, name: &str, partitions: i32, rf: i32) {
    common::create_topic_at(addr, name, partitions, rf, &[]);
}

fn start(root: &Path, id: u64, roles: &str, quorum: &str) -> Broker {
    let dir = root.join(format!("node{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let id = id.to_string();
    let rack = format!("r{id}");
    Broker::start_with(
        &dir,
        &[
            "--node-id",
            &id,
            "--roles",
            roles,
            "--controller-quorum",
            quorum,
            "--rack",
            &rack,
            "--broker-heartbeat-interval-ms",
            "200",
        ],
    )
}

#[test]
fn controllers_grow_to_four_and_shrink_back_by_removing_the_leader() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("quorum-membership-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let entry = |i: usize| format!("{}@127.0.0.1:{}", i + 1, ports[i]);
    let q3 = (0..3).map(entry).collect::<Vec<_>>().join(",");
    let q4 = format!("{q3},{}", entry(3));
    let mut nodes: BTreeMap<u64, Broker> = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start(&root, id, "broker,controller", &q3));
    }
    wait("three active brokers and a controller leader", || {
        let s = status(&nodes[&1])?;
        let live = s["brokers"]
            .as_array()?
            .iter()
            .filter(|b| b["fenced"] == false)
            .count();
        (live == 3 && !s["controller"]["leader"].is_null()).then_some(())
    });
    create_topic(&nodes[&1].addr, "intact", 3, 3);
    let before = wait("the topic on every broker", || {
        let first = replicas(&nodes[&1].addr, "intact")?;
        nodes
            .values()
            .all(|n| replicas(&n.addr, "intact").as_ref() == Some(&first))
            .then_some(first)
    });
    let intact_everywhere = |nodes: &BTreeMap<u64, Broker>, brokers: &[u64]| {
        for id in brokers {
            let got = wait(&format!("metadata of node {id}"), || {
                replicas(&nodes[id].addr, "intact")
            });
            assert_eq!(got, before, "node {id}: partitions of 'intact' changed");
        }
    };

    // A controller-only node whose quorum lists it but which is no voter yet: it starts
    // as a joiner, with no Kafka listener (the first line names its quorum address).
    let four = start(&root, 4, "controller", &q4);
    assert_eq!(four.addr, format!("127.0.0.1:{}", ports[3]), "first line");
    let s4 = wait("node 4's admin endpoint", || status(&four));
    assert!(!voters(&s4).contains(&4), "a joiner is no voter: {s4}");
    assert!(four.admin_get("/health").unwrap().contains("ok"));
    assert!(four.admin_get("/metrics").is_ok());

    // Refusals name their reason and change nothing.
    let admin1 = nodes[&1].admin_addr.clone();
    let (ok, _, err) = sluice_output(&["cluster", "remove-controller", "9", "--admin", &admin1]);
    assert!(!ok && err.contains("not a voter"), "{err}");
    let (ok, _, err) = sluice_output(&[
        "cluster",
        "add-controller",
        "4@127.0.0.1:0",
        "--admin",
        &admin1,
    ]);
    assert!(!ok && err.contains("port"), "{err}");

    // Grow to four.
    let started = Instant::now();
    let target = entry(3);
    let (ok, out, err) = sluice_output(&["cluster", "add-controller", &target, "--admin", &admin1]);
    assert!(ok, "add-controller: {err}");
    assert!(out.contains("voters now 1 2 3 4"), "{out}");
    let offset_then = status(&nodes[&1]).map(|s| s["metadata_offset"].clone());
    wait("node 4 a voter with the metadata image", || {
        let s = status(&four)?;
        (voters(&s) == [1, 2, 3, 4] && s["topics"].as_u64()? >= 1).then_some(())
    });
    let metrics = four.admin_get("/metrics").expect("metrics of node 4");
    assert!(
        metrics.contains("sluice_controller_voters 4\n"),
        "node 4's metrics: {metrics}"
    );
    println!(
        "figure: controller 4 added and caught up in {:?} (metadata offset {offset_then:?})",
        started.elapsed()
    );
    for id in 1..=3 {
        wait(&format!("node {id} knowing controller 4's address"), || {
            let s = status(&nodes[&id])?;
            (s["controller"]["addresses"]["4"].as_str()? == format!("127.0.0.1:{}", ports[3]))
                .then_some(())
        });
    }
    let (ok, _, err) = sluice_output(&["cluster", "add-controller", &target, "--admin", &admin1]);
    assert!(!ok && err.contains("already a voter"), "{err}");
    // A controller that is not running is added as a learner only: it never catches up,
    // is never made a voter, and can be dropped again.
    // While that add waits for it, a second change is refused: one at a time.
    let ghost = format!("5@127.0.0.1:{}", free_port());
    let pending = std::thread::spawn({
        let admin1 = admin1.clone();
        move || sluice_output(&["cluster", "add-controller", &ghost, "--admin", &admin1])
    });
    // (Asked through another node's admin endpoint: each serves one request at a time.)
    wait("controller 5 a learner", || {
        let s = status(&nodes[&2])?;
        let learners = s["controller"]["learners"].as_array()?.clone();
        learners.iter().any(|v| v.as_u64() == Some(5)).then_some(())
    });
    let admin2 = nodes[&2].admin_addr.clone();
    let (ok, _, err) = sluice_output(&["cluster", "remove-controller", "2", "--admin", &admin2]);
    assert!(!ok && err.contains("in progress"), "{err}");
    let (ok, _, err) = pending.join().expect("add-controller thread");
    assert!(!ok && err.contains("did not catch up"), "{err}");
    assert_eq!(voters(&status(&nodes[&1]).expect("status")), [1, 2, 3, 4]);
    let (ok, out, err) = sluice_output(&["cluster", "remove-controller", "5", "--admin", &admin1]);
    assert!(ok, "remove-controller 5: {err}");
    assert!(out.contains("voters now 1 2 3 4"), "{out}");
    intact_everywhere(&nodes, &[1, 2, 3]);

    // Shrink back to three by removing the active controller.
    let leader = wait("a controller leader", || {
        status(&nodes[&1])?["controller"]["leader"].as_u64()
    });
    let asked = nodes
        .keys()
        .copied()
        .find(|id| *id != leader)
        .expect("another node");
    let started = Instant::now();
    let (ok, out, err) = sluice_output(&[
        "cluster",
        "remove-controller",
        &leader.to_string(),
        "--admin",
        &nodes[&asked].admin_addr,
    ]);
    assert!(ok, "remove-controller {leader}: {err}");
    let left: Vec<u64> = (1..=4).filter(|id| *id != leader).collect();
    let new_leader = wait("a new controller leader without the removed one", || {
        let s = status(&nodes[&asked])?;
        let l = s["controller"]["leader"].as_u64()?;
        (l != leader && voters(&s) == left).then_some(l)
    });
    println!(
        "figure: controller {leader} removed, {new_leader} leads after {:?} s ({})",
        started.elapsed().as_secs_f64(),
        out.trim()
    );
    for n in nodes.values().chain([&four]) {
        wait("every node seeing the three voters", || {
            (voters(&status(n)?) == left).then_some(())
        });
    }

    // Metadata intact, and the quorum of three still takes changes that reach every
    // broker — the removed one included (a broker that was a controller stays a learner).
    intact_everywhere(&nodes, &[1, 2, 3]);
    let survivor = left.iter().find(|id| **id <= 3).copied().expect("a broker");
    create_topic(&nodes[&survivor].addr, "after", 2, 3);
    for id in 1..=3 {
        wait(&format!("topic 'after' on node {id}"), || {
            replicas(&nodes[&id].addr, "after")
        });
    }
    // A broker-and-controller node that joins: before it is added its broker follows the
    // image from the quorum (its own controller gets no log yet); then it becomes a voter.
    let q5 = format!("{q4},5@127.0.0.1:{}", ports[4]);
    let five = start(&root, 5, "broker,controller", &q5);
    wait(
        "node 5's broker serving the topic before it is a voter",
        || {
            let s = status(&five)?;
            (!voters(&s).contains(&5)).then_some(())?;
            (replicas(&five.addr, "intact")? == before).then_some(())
        },
    );
    let (ok, out, err) = sluice_output(&[
        "cluster",
        "add-controller",
        &format!("5@127.0.0.1:{}", ports[4]),
        "--admin",
        &five.admin_addr,
    ]);
    assert!(ok, "add-controller 5: {err}");
    let mut with_five = left.clone();
    with_five.push(5);
    assert!(
        out.contains(&format!(
            "voters now {}",
            with_five
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        )),
        "{out}"
    );
    create_topic(&five.addr, "last", 1, 1);
    for n in nodes.values().chain([&five]) {
        wait("topic 'last' everywhere", || replicas(&n.addr, "last"));
    }

    // The controller-only node leaves the quorum entirely: its address is dropped from
    // every node's image, and the quorum it leaves still takes changes.
    let admin5 = five.admin_addr.clone();
    let (ok, out, err) = sluice_output(&["cluster", "remove-controller", "4", "--admin", &admin5]);
    assert!(ok, "remove-controller 4: {err}");
    let last: Vec<u64> = with_five.iter().copied().filter(|id| *id != 4).collect();
    wait("three voters without 4", || {
        (voters(&status(&five)?) == last).then_some(())
    });
    println!("figure: {}", out.trim());
    for id in 1..=3 {
        wait(
            &format!("node {id} forgetting controller 4's address"),
            || {
                let s = status(&nodes[&id])?;
                s["controller"]["addresses"]
                    .get("4")
                    .is_none()
                    .then_some(())
            },
        );
    }
    create_topic(&nodes[&3].addr, "final", 1, 1);
    for n in nodes.values().chain([&five]) {
        wait("topic 'final' everywhere", || replicas(&n.addr, "final"));
    }
    intact_everywhere(&nodes, &[1, 2, 3]);

    // The controller-only node holds the metadata log and nothing else.
    let entries: BTreeSet<String> = std::fs::read_dir(root.join("node4"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        entries,
        BTreeSet::from(["__cluster_metadata".to_string()]),
        "a controller-only node opened more than its metadata log"
    );
    drop((four, five));
    drop(nodes);
    let _ = std::fs::remove_dir_all(&root);
}

/// DescribeQuorum at `version` for `topic`/0 asked of `addr`: the answer.
fn describe_quorum(
    addr: &str,
    version: i16,
    topic: &str,
) -> kafka_protocol::messages::DescribeQuorumResponse {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    use kafka_protocol::messages::{ApiKey, DescribeQuorumRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partitions(vec![PartitionData::default()])]);
    let mut s = common::raw::connect(addr);
    common::raw::call(&mut s, ApiKey::DescribeQuorum, version, &req)
}

/// The quorum (leader, epoch, voters with their log end offsets) once `addr` answers
/// it with every voter heard from by the leader.
fn heard_quorum(addr: &str, voters: usize) -> (i32, i32, Vec<(i32, i64)>) {
    common::wait_for("every voter heard from", HANG_GUARD, &mut || {
        let r = describe_quorum(addr, 2, "__cluster_metadata");
        let p = r.topics.first()?.partitions.first()?;
        let heard = p
            .current_voters
            .iter()
            .all(|v| v.last_fetch_timestamp > 0 && v.log_end_offset > 0);
        if r.error_code != 0 || p.error_code != 0 || p.current_voters.len() != voters || !heard {
            return None;
        }
        assert_eq!(r.nodes.len(), voters, "{r:?}");
        assert!(p.high_watermark > 0, "{p:?}");
        let ends = p
            .current_voters
            .iter()
            .map(|v| (v.replica_id.0, v.log_end_offset))
            .collect();
        Some((p.leader_id.0, p.leader_epoch, ends))
    })
}

#[test]
fn describe_quorum_answers_the_active_controllers_view_from_any_broker() {
    use common::cluster::{Cluster, ClusterSpec};
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    let mut c = Cluster::launch("describe-quorum", ClusterSpec::default());
    c.wait_all_active(HANG_GUARD);
    // Any broker forwards it to the active controller: every one gives the same leader.
    let (leader, epoch, voters) = heard_quorum(&c.addr(1), 3);
    let ids: Vec<i32> = voters.iter().map(|v| v.0).collect();
    assert_eq!(ids, [1, 2, 3]);
    for node in [2, 3] {
        assert_eq!(heard_quorum(&c.addr(node), 3).0, leader);
    }
    // Only the metadata log has a quorum.
    let r = describe_quorum(&c.addr(1), 1, "orders");
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    // After the leader dies, another one answers with a higher epoch.
    c.kill(leader as usize);
    let alive = ids.iter().find(|i| **i != leader).copied().unwrap() as usize;
    let (new_leader, new_epoch) = common::wait_for("a new leader", HANG_GUARD, &mut || {
        let r = describe_quorum(&c.addr(alive), 1, "__cluster_metadata");
        let p = r.topics.first()?.partitions.first()?;
        (p.error_code == 0 && p.leader_id.0 != leader).then_some((p.leader_id.0, p.leader_epoch))
    });
    assert!(new_leader != leader && new_epoch > epoch);
}
