//! Consumer groups against a real broker: rdkafka consumers (eager and cooperative
//! rebalances, leaving, restarts) and raw protocol members where a test needs a member
//! that misbehaves (stops heartbeating) or exact generations and instance ids.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::{self, call};
use common::revocations::Revocations;
use common::{http_get, Broker, HANG_GUARD};
use futures_executor::block_on;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsRequest, DescribeGroupsResponse, GroupId, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// Kafka error codes the tests expect.
const ILLEGAL_GENERATION: i16 = 22;
const FENCED_INSTANCE_ID: i16 = 82;
const MEMBER_ID_REQUIRED: i16 = 79;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;

fn create_topic(b: &Broker, name: &str, partitions: i32) {
    common::create_topic_at(&b.addr, name, partitions, 1, &[]);
}

/// Produces `n` keyed messages spread over the topic's partitions.
fn produce(b: &Broker, topic: &str, n: usize) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for i in 0..n {
        let v = i.to_string();
        p.send(BaseRecord::<str, str>::to(topic).key(&v).payload(&v))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    p.flush(HANG_GUARD).unwrap();
}

/// A broker with one fresh topic.
fn broker_with_topic(topic: &str, partitions: i32) -> (tempfile::TempDir, Broker) {
    let dir = common::tempdir("groups");
    let b = Broker::start(dir.path());
    create_topic(&b, topic, partitions);
    (dir, b)
}

fn consumer(b: &Broker, group: &str, extra: &[(&str, &str)]) -> BaseConsumer<Revocations> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &b.addr)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create_with_context(Revocations::default()).unwrap()
}

/// A consumer that subscribed and holds every partition of the topic.
fn sole_member(
    b: &Broker,
    group: &str,
    topic: &str,
    partitions: usize,
    extra: &[(&str, &str)],
) -> BaseConsumer<Revocations> {
    let c = consumer(b, group, extra);
    c.subscribe(&[topic]).unwrap();
    poll_until(&[&c], "alone in the group", |s| s[0].len() == partitions);
    c
}

fn assigned(c: &BaseConsumer<Revocations>) -> BTreeSet<i32> {
    c.assignment()
        .map(|a| a.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls every consumer until `done` holds for their assignments.
fn poll_until(
    cs: &[&BaseConsumer<Revocations>],
    what: &str,
    done: impl Fn(&[BTreeSet<i32>]) -> bool,
) {
    let started = Instant::now();
    loop {
        for c in cs {
            let _ = c.poll(Duration::from_millis(20));
        }
        let now: Vec<BTreeSet<i32>> = cs.iter().map(|c| assigned(c)).collect();
        if done(&now) {
            return;
        }
        assert!(
            started.elapsed() < HANG_GUARD,
            "{what}: assignments {now:?}"
        );
    }
}

/// Leaves the group and lets the client see its partitions revoked, then leaks the
/// handle: librdkafka's close can block forever after the group was left (rust-rdkafka
/// issues 509/611); the broker has seen the LeaveGroup already.
fn leave(c: BaseConsumer<Revocations>) {
    c.unsubscribe();
    let started = Instant::now();
    while !assigned(&c).is_empty() {
        assert!(started.elapsed() < HANG_GUARD);
        let _ = c.poll(Duration::from_millis(20));
    }
    std::mem::forget(c);
}

#[test]
fn two_members_split_partitions_and_one_takes_over_when_the_other_leaves() {
    let (_dir, b) = broker_with_topic("split", 4);
    let a = sole_member(&b, "g-split", "split", 4, &[]);
    let c = consumer(&b, "g-split", &[]);
    c.subscribe(&["split"]).unwrap();
    poll_until(&[&a, &c], "split", |s| {
        s[0].len() == 2 && s[1].len() == 2 && s[0].is_disjoint(&s[1])
    });
    leave(c);
    poll_until(&[&a], "take over", |s| s[0].len() == 4);
    // /metrics counts the three rebalances and shows one stable group of one member
    // (the gauges are published about once a second).
    let started = Instant::now();
    loop {
        let m = http_get(&b.admin_addr, "/metrics");
        let value = |name: &str, labels: &[&str]| common::metric(&m, name, labels).unwrap_or(0.0);
        if value("sluice_groups", &["state=\"Stable\""]) == 1.0
            && value("sluice_group_members", &[]) == 1.0
        {
            assert!(value("sluice_group_rebalances_total", &[]) >= 3.0, "{m}");
            break;
        }
        assert!(started.elapsed() < HANG_GUARD, "{m}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cooperative_sticky_rebalance_keeps_unmoved_partitions() {
    let (_dir, b) = broker_with_topic("coop", 6);
    let strategy = [("partition.assignment.strategy", "cooperative-sticky")];
    let a = sole_member(&b, "g-coop", "coop", 6, &strategy);
    let before = assigned(&a);
    let c = consumer(&b, "g-coop", &strategy);
    c.subscribe(&["coop"]).unwrap();
    poll_until(&[&a, &c], "balanced", |s| {
        s[0].len() == 3 && s[1].len() == 3
    });
    let after = assigned(&a);
    let revoked: BTreeSet<i32> = a
        .context()
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(_, p)| *p)
        .collect();
    assert!(after.is_subset(&before));
    assert_eq!(
        revoked,
        before.difference(&after).copied().collect(),
        "only the partitions that moved were revoked"
    );
    leave(c);
    leave(a);
}

fn join_request(
    group: &str,
    member: &str,
    instance: Option<&str>,
    topic: &str,
) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_member_id(StrBytes::from_string(member.into()))
        .with_group_instance_id(instance.map(|i| StrBytes::from_string(i.into())))
        .with_session_timeout_ms(6000)
        .with_rebalance_timeout_ms(30_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(raw::subscription(topic))])
}

/// Joins (answering MEMBER_ID_REQUIRED) and returns the final JoinGroup answer.
fn raw_join(
    s: &mut std::net::TcpStream,
    group: &str,
    member: &str,
    instance: Option<&str>,
    topic: &str,
) -> JoinGroupResponse {
    let mut member = member.to_string();
    loop {
        let r: JoinGroupResponse = call(
            s,
            ApiKey::JoinGroup,
            7,
            &join_request(group, &member, instance, topic),
        );
        if r.error_code == MEMBER_ID_REQUIRED {
            member = r.member_id.to_string();
            continue;
        }
        assert_eq!(r.error_code, 0, "join {group}");
        return r;
    }
}

fn raw_sync(
    s: &mut std::net::TcpStream,
    group: &str,
    join: &JoinGroupResponse,
    instance: Option<&str>,
    assignments: Vec<(String, Bytes)>,
) -> SyncGroupResponse {
    let req = SyncGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_generation_id(join.generation_id)
        .with_member_id(join.member_id.clone())
        .with_group_instance_id(instance.map(|i| StrBytes::from_string(i.into())))
        .with_assignments(
            assignments
                .into_iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(StrBytes::from_string(m))
                        .with_assignment(a)
                })
                .collect(),
        );
    call(s, ApiKey::SyncGroup, 5, &req)
}

fn describe_members(addr: &str, group: &str) -> usize {
    let mut s = raw::connect(addr);
    let r: DescribeGroupsResponse = call(
        &mut s,
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_string(group.into()))]),
    );
    r.groups[0].members.len()
}

#[test]
fn a_member_that_stops_heartbeating_is_evicted_after_its_session_timeout() {
    let (_dir, b) = broker_with_topic("evict", 4);
    let a = sole_member(&b, "g-evict", "evict", 4, &[]);
    // A raw member joins and syncs (the rdkafka member leads and assigns), then goes
    // silent without leaving, as a killed process would.
    let addr = b.addr.clone();
    let silent = std::thread::spawn(move || {
        let mut s = raw::connect(&addr);
        let join = raw_join(&mut s, "g-evict", "", None, "evict");
        let sync = raw_sync(&mut s, "g-evict", &join, None, vec![]);
        assert_eq!(sync.error_code, 0);
        assert!(!sync.assignment.is_empty(), "the leader gave it partitions");
        s
    });
    poll_until(&[&a], "shared with the raw member", |s| s[0].len() == 2);
    let _socket_kept_open = silent.join().unwrap();
    assert_eq!(describe_members(&b.addr, "g-evict"), 2);
    poll_until(&[&a], "raw member evicted", |s| s[0].len() == 4);
    assert_eq!(describe_members(&b.addr, "g-evict"), 1);
    leave(a);
}

fn commit_request(
    group: &str,
    generation: i32,
    member: &str,
    topic: &str,
    offset: i64,
) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(StrBytes::from_string(member.into()))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(0)
                .with_committed_metadata(Some(StrBytes::from_static_str("m")))])])
}

fn commit_error(r: &OffsetCommitResponse) -> i16 {
    r.topics[0].partitions[0].error_code
}

fn fetch_committed(addr: &str, group: &str, topic: &str) -> i64 {
    let mut s = raw::connect(addr);
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_indexes(vec![0])]));
    let r: OffsetFetchResponse = call(&mut s, ApiKey::OffsetFetch, 7, &req);
    assert_eq!(r.error_code, 0);
    r.topics[0].partitions[0].committed_offset
}

/// Waits until the group's coordinator partition is loaded (a fresh broker answers
/// COORDINATOR_LOAD_IN_PROGRESS until then, which clients retry).
fn wait_loaded(addr: &str, group: &str) {
    let mut s = raw::connect(addr);
    let started = Instant::now();
    loop {
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.into())))
            .with_topics(None);
        let r: OffsetFetchResponse = call(&mut s, ApiKey::OffsetFetch, 7, &req);
        if r.error_code != COORDINATOR_LOAD_IN_PROGRESS {
            assert_eq!(r.error_code, 0);
            return;
        }
        assert!(started.elapsed() < HANG_GUARD, "{group} never loaded");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_stale_generations_commit_is_refused() {
    let (_dir, b) = broker_with_topic("stale", 1);
    wait_loaded(&b.addr, "g-stale");
    let mut s = raw::connect(&b.addr);
    let first = raw_join(&mut s, "g-stale", "", None, "stale");
    raw_sync(&mut s, "g-stale", &first, None, vec![]);
    let r: OffsetCommitResponse = call(
        &mut s,
        ApiKey::OffsetCommit,
        8,
        &commit_request("g-stale", first.generation_id, &first.member_id, "stale", 5),
    );
    assert_eq!(commit_error(&r), 0);
    // The leader rejoins: a new generation.
    let second = raw_join(&mut s, "g-stale", &first.member_id, None, "stale");
    assert_eq!(second.generation_id, first.generation_id + 1);
    raw_sync(&mut s, "g-stale", &second, None, vec![]);
    let r: OffsetCommitResponse = call(
        &mut s,
        ApiKey::OffsetCommit,
        8,
        &commit_request("g-stale", first.generation_id, &first.member_id, "stale", 9),
    );
    assert_eq!(commit_error(&r), ILLEGAL_GENERATION);
    assert_eq!(
        fetch_committed(&b.addr, "g-stale", "stale"),
        5,
        "the refused commit left nothing"
    );
    let r: OffsetCommitResponse = call(
        &mut s,
        ApiKey::OffsetCommit,
        8,
        &commit_request(
            "g-stale",
            second.generation_id,
            &second.member_id,
            "stale",
            9,
        ),
    );
    assert_eq!(commit_error(&r), 0);
    assert_eq!(fetch_committed(&b.addr, "g-stale", "stale"), 9);
}

#[test]
fn a_static_member_restarts_into_its_place_without_a_rebalance() {
    let dir = common::tempdir("groups");
    let mut b = Broker::start(dir.path());
    create_topic(&b, "static", 1);
    wait_loaded(&b.addr, "g-static");
    let mut s = raw::connect(&b.addr);
    let first = raw_join(&mut s, "g-static", "", Some("instance-1"), "static");
    let mine = Bytes::from_static(b"my-assignment");
    let sync = raw_sync(
        &mut s,
        "g-static",
        &first,
        Some("instance-1"),
        vec![(first.member_id.to_string(), mine.clone())],
    );
    assert_eq!(sync.assignment, mine);
    // The process restarts: same instance id, no member id.
    let mut s2 = raw::connect(&b.addr);
    let again: JoinGroupResponse = call(
        &mut s2,
        ApiKey::JoinGroup,
        7,
        &join_request("g-static", "", Some("instance-1"), "static"),
    );
    assert_eq!(again.error_code, 0);
    assert_ne!(again.member_id, first.member_id);
    let sync = raw_sync(&mut s2, "g-static", &again, Some("instance-1"), vec![]);
    assert_eq!(sync.assignment, mine, "its assignment is kept");
    // The old incarnation is fenced.
    let hb = HeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g-static")))
        .with_generation_id(first.generation_id)
        .with_member_id(first.member_id.clone())
        .with_group_instance_id(Some(StrBytes::from_static_str("instance-1")));
    let r: HeartbeatResponse = call(&mut s, ApiKey::Heartbeat, 4, &hb);
    assert_eq!(r.error_code, FENCED_INSTANCE_ID);
    // Membership is in the offsets topic: after a broker restart the member's heartbeat
    // with the same generation is still good.
    b.stop();
    let b = Broker::start(dir.path());
    wait_loaded(&b.addr, "g-static");
    let hb = HeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g-static")))
        .with_generation_id(again.generation_id)
        .with_member_id(again.member_id.clone())
        .with_group_instance_id(Some(StrBytes::from_static_str("instance-1")));
    let r: HeartbeatResponse = call(&mut raw::connect(&b.addr), ApiKey::Heartbeat, 4, &hb);
    assert_eq!(r.error_code, 0, "heartbeat after the restart");
}

#[test]
fn offsets_committed_before_a_restart_are_there_after_it() {
    let dir = common::tempdir("groups");
    let mut b = Broker::start(dir.path());
    create_topic(&b, "durable", 2);
    produce(&b, "durable", 100);
    let c = consumer(&b, "g-durable", &[]);
    c.subscribe(&["durable"]).unwrap();
    let mut read = 0;
    let started = Instant::now();
    while read < 60 {
        assert!(started.elapsed() < HANG_GUARD, "read {read}");
        if let Some(m) = c.poll(Duration::from_millis(50)) {
            m.unwrap();
            read += 1;
        }
    }
    c.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    let committed: Vec<(i32, i64)> = c
        .committed(HANG_GUARD)
        .unwrap()
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => (e.partition(), o),
            _ => (e.partition(), 0),
        })
        .collect();
    assert_eq!(committed.iter().map(|(_, o)| o).sum::<i64>(), 60);
    leave(c);
    b.stop();
    let b = Broker::start(dir.path());
    // The committed offsets are read back as they were...
    let c = consumer(&b, "g-durable", &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("durable", 0);
    tpl.add_partition("durable", 1);
    let after: Vec<(i32, i64)> = c
        .committed_offsets(tpl, HANG_GUARD)
        .unwrap()
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => (e.partition(), o),
            _ => (e.partition(), 0),
        })
        .collect();
    assert_eq!(after, committed);
    // ...and a group member resumes exactly there: the first message of each partition
    // is at its committed offset, and the rest (40) arrive once.
    c.subscribe(&["durable"]).unwrap();
    let mut first: Vec<(i32, i64)> = Vec::new();
    let mut rest = 0;
    let started = Instant::now();
    while rest < 40 {
        assert!(started.elapsed() < HANG_GUARD, "read {rest} more");
        if let Some(m) = c.poll(Duration::from_millis(50)) {
            let m = m.unwrap();
            if !first.iter().any(|(p, _)| *p == m.partition()) {
                first.push((m.partition(), m.offset()));
            }
            rest += 1;
        }
    }
    for (p, o) in &first {
        let expected = committed.iter().find(|(q, _)| q == p).map(|(_, o)| *o);
        assert_eq!(
            Some(*o),
            expected,
            "partition {p} resumed at its committed offset"
        );
    }
    assert!(
        c.poll(Duration::from_millis(500)).is_none(),
        "no message twice"
    );
    leave(c);
}

#[test]
fn deleting_groups_needs_them_empty_and_removes_their_offsets() {
    let (_dir, b) = broker_with_topic("del", 1);
    wait_loaded(&b.addr, "g-del");
    wait_loaded(&b.addr, "g-active");
    let mut s = raw::connect(&b.addr);
    // A commit from outside any group (generation -1), as admin tools do.
    let r: OffsetCommitResponse = call(
        &mut s,
        ApiKey::OffsetCommit,
        8,
        &commit_request("g-del", -1, "", "del", 3),
    );
    assert_eq!(commit_error(&r), 0);
    assert_eq!(fetch_committed(&b.addr, "g-del", "del"), 3);
    let active = raw_join(&mut s, "g-active", "", None, "del");
    raw_sync(&mut s, "g-active", &active, None, vec![]);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .create()
        .unwrap();
    let results =
        block_on(admin.delete_groups(&["g-del", "g-active", "g-unknown"], &AdminOptions::new()))
            .unwrap();
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let err = |i: usize| match &results[i] {
        Err((_, code)) => *code,
        Ok(g) => panic!("{g} was deleted"),
    };
    assert_eq!(err(1), rdkafka::types::RDKafkaErrorCode::NonEmptyGroup);
    assert_eq!(err(2), rdkafka::types::RDKafkaErrorCode::GroupIdNotFound);
    assert_eq!(fetch_committed(&b.addr, "g-del", "del"), -1);
}

/// Deletes `group` through rdkafka's AdminClient; the group's own result.
fn delete_group(
    addr: &str,
    group: &str,
) -> Result<String, (String, rdkafka::types::RDKafkaErrorCode)> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .unwrap();
    let mut results = block_on(admin.delete_groups(&[group], &AdminOptions::new())).unwrap();
    results.remove(0)
}

#[test]
fn a_group_whose_members_all_left_can_be_deleted() {
    let (_dir, b) = broker_with_topic("gone", 2);
    produce(&b, "gone", 10);
    let a = sole_member(&b, "g-gone", "gone", 2, &[]);
    let c = consumer(&b, "g-gone", &[]);
    c.subscribe(&["gone"]).unwrap();
    poll_until(&[&a, &c], "split", |s| s[0].len() == 1 && s[1].len() == 1);
    leave(a);
    leave(c);
    // Once /metrics shows the group without members, the coordinator has swept it at
    // least once since both left: it must still be there to delete (no offsets were
    // committed, so forgetting it on a sweep answered GROUP_ID_NOT_FOUND).
    let started = Instant::now();
    loop {
        let m = http_get(&b.admin_addr, "/metrics");
        if common::metric(&m, "sluice_group_members", &[]) == Some(0.0) {
            break;
        }
        assert!(started.elapsed() < HANG_GUARD, "{m}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(delete_group(&b.addr, "g-gone"), Ok("g-gone".to_string()));
}

#[test]
fn clients_cannot_write_the_offsets_topic() {
    let dir = common::tempdir("groups");
    let b = Broker::start(dir.path());
    let p: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    let record = rdkafka::producer::FutureRecord::<str, str>::to("__consumer_offsets")
        .key("k")
        .payload("v")
        .partition(0);
    let delivery = p.send_result(record).map_err(|(e, _)| e).unwrap();
    let (err, _) = block_on(delivery).unwrap().expect_err("refused");
    assert_eq!(
        err.rdkafka_error_code(),
        Some(rdkafka::types::RDKafkaErrorCode::InvalidTopic),
        "{err}"
    );
    // Nor delete it, nor change its partition count (groups map onto it).
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .create()
        .unwrap();
    let opts = AdminOptions::new();
    let deleted = block_on(admin.delete_topics(&["__consumer_offsets"], &opts)).unwrap();
    assert!(
        matches!(
            &deleted[0],
            Err((_, rdkafka::types::RDKafkaErrorCode::InvalidTopic))
        ),
        "{deleted:?}"
    );
    let grown = rdkafka::admin::NewPartitions::new("__consumer_offsets", 60);
    let grown = block_on(admin.create_partitions(&[grown], &opts)).unwrap();
    assert!(
        matches!(
            &grown[0],
            Err((_, rdkafka::types::RDKafkaErrorCode::InvalidPartitions))
        ),
        "{grown:?}"
    );
}
