//! A group's coordinator fails right after a rebalance (issue #26: a group with
//! `auto.offset.reset=latest` never delivered acknowledged messages across rolling
//! restarts). A member that has its assignment (SyncGroup answered) must find its
//! generation at the next coordinator: otherwise its commits — the periodic ones and the
//! last one before it hands its partitions over — are refused (ILLEGAL_GENERATION), the
//! next owner of its partitions starts from an older commit, and with no commit yet
//! from the log end, skipping what was acknowledged in between.
//!
//! The coordinator is killed (SIGKILL) the moment SyncGroup answers, before its periodic
//! metadata write (every 250 ms) could run; the checks wait on observed state only. The
//! same for a member of the consumer protocol (KIP-848): killed the moment its heartbeat
//! answers, the next coordinator knows its epoch and accepts its commits.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{wait_for, Cluster, ClusterSpec};
use common::raw::{self, call};
use futures_executor::block_on;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

const TOPIC: &str = "failover";
const GROUP: &str = "failover-readers";
const HANG_GUARD: Duration = Duration::from_secs(90);
const NONE: i16 = 0;
const MEMBER_ID_REQUIRED: i16 = 79;
const STALE_MEMBER_EPOCH: i16 = 113;

fn group_id() -> GroupId {
    GroupId(StrBytes::from_static_str(GROUP))
}

/// Joins as the only member (answering MEMBER_ID_REQUIRED).
fn join(s: &mut TcpStream) -> JoinGroupResponse {
    let mut member = String::new();
    loop {
        let req = JoinGroupRequest::default()
            .with_group_id(group_id())
            .with_member_id(StrBytes::from_string(member.clone()))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(30_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(raw::subscription(TOPIC))]);
        let r: JoinGroupResponse = call(s, ApiKey::JoinGroup, 7, &req);
        if r.error_code == MEMBER_ID_REQUIRED {
            member = r.member_id.to_string();
            continue;
        }
        assert_eq!(r.error_code, NONE, "join");
        return r;
    }
}

fn sync(s: &mut TcpStream, join: &JoinGroupResponse) -> SyncGroupResponse {
    let req = SyncGroupRequest::default()
        .with_group_id(group_id())
        .with_generation_id(join.generation_id)
        .with_member_id(join.member_id.clone())
        .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
        .with_protocol_name(Some(StrBytes::from_static_str("range")))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(join.member_id.clone())
            .with_assignment(Bytes::from_static(b"partition 0"))]);
    call(s, ApiKey::SyncGroup, 5, &req)
}

/// The node FindCoordinator at `addr` names, if it answers and names one.
fn coordinator(addr: &str) -> Option<usize> {
    let sock = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_static_str(GROUP))
        .with_key_type(0);
    let r: FindCoordinatorResponse = call(&mut s, ApiKey::FindCoordinator, 3, &req);
    (r.error_code == NONE).then_some(r.node_id.0 as usize)
}

/// OffsetFetch's group-level error at `addr` (NONE once it coordinates, loaded).
fn offset_fetch_error(addr: &str) -> i16 {
    let mut s = raw::connect(addr);
    let req = OffsetFetchRequest::default()
        .with_group_id(group_id())
        .with_topics(None);
    let r: OffsetFetchResponse = call(&mut s, ApiKey::OffsetFetch, 7, &req);
    r.error_code
}

/// OffsetCommit (of `version`) of partition 0 at `offset` by `member` at its generation
/// (classic) or member epoch (consumer protocol, v9).
fn commit_as(s: &mut TcpStream, member: &str, epoch: i32, offset: i64, version: i16) -> i16 {
    let req = OffsetCommitRequest::default()
        .with_group_id(group_id())
        .with_generation_id_or_member_epoch(epoch)
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(-1)])]);
    let r: OffsetCommitResponse = call(s, ApiKey::OffsetCommit, version, &req);
    r.topics[0].partitions[0].error_code
}

fn heartbeat(s: &mut TcpStream, join: &JoinGroupResponse) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(group_id())
        .with_generation_id(join.generation_id)
        .with_member_id(join.member_id.clone());
    let r: HeartbeatResponse = call(s, ApiKey::Heartbeat, 4, &req);
    r.error_code
}

fn create_topic(c: &Cluster) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .create()
        .expect("admin client");
    let new = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(3));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let r = block_on(admin.create_topics([&new], &opts)).expect("create_topics");
    assert!(r.iter().all(|x| x.is_ok()), "create {TOPIC}: {r:?}");
}

/// A three-node cluster with the topic, and the node coordinating the group, loaded.
fn cluster_with_coordinator(name: &str) -> (Cluster, usize) {
    let c = Cluster::start(name, ClusterSpec::default(), HANG_GUARD);
    create_topic(&c);
    let old = wait_for("the group's coordinator", HANG_GUARD, &mut || {
        coordinator(&c.addr(1))
    });
    wait_for("the coordinator loaded", HANG_GUARD, &mut || {
        (offset_fetch_error(&c.addr(old)) == NONE).then_some(())
    });
    (c, old)
}

/// Kills coordinator `old` (SIGKILL); the node that coordinates the group next, loaded.
fn fail_over(c: &mut Cluster, old: usize) -> usize {
    c.kill(old);
    wait_for("another node coordinating, loaded", HANG_GUARD, &mut || {
        let n = c
            .live()
            .into_iter()
            .find_map(|n| coordinator(&c.addr(n)))
            .filter(|n| *n != old)?;
        (offset_fetch_error(&c.addr(n)) == NONE).then_some(n)
    })
}

#[test]
fn a_member_keeps_its_generation_when_the_coordinator_fails_right_after_syncgroup() {
    let (mut c, old) = cluster_with_coordinator("group-failover");
    let mut s = raw::connect(&c.addr(old));
    let joined = join(&mut s);
    let synced = sync(&mut s, &joined);
    assert_eq!(synced.error_code, NONE, "sync");
    // The member has its assignment: the coordinator dies now.
    drop(s);
    let started = Instant::now();
    let new = fail_over(&mut c, old);
    eprintln!(
        "figure: node {new} coordinates {GROUP} {} ms after node {old} was killed",
        started.elapsed().as_millis()
    );
    let mut s = raw::connect(&c.addr(new));
    let committed = commit_as(&mut s, &joined.member_id, joined.generation_id, 42, 8);
    let beat = heartbeat(&mut s, &joined);
    assert_eq!(
        (committed, beat),
        (NONE, NONE),
        "the member's commit and heartbeat (generation {}) at the new coordinator: a \
         refused commit sends its partitions' next owner to an older offset (or the log end)",
        joined.generation_id
    );
}

/// A ConsumerGroupHeartbeat (KIP-848) of the one member `m1` subscribed to the topic,
/// holding `owned`.
fn consumer_heartbeat(
    s: &mut TcpStream,
    epoch: i32,
    owned: Vec<TopicPartitions>,
) -> ConsumerGroupHeartbeatResponse {
    let req = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(group_id())
        .with_member_id(StrBytes::from_static_str("m1"))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![TopicName(StrBytes::from_static_str(TOPIC))]))
        .with_topic_partitions(Some(owned));
    call(s, ApiKey::ConsumerGroupHeartbeat, 1, &req)
}

#[test]
fn a_consumer_protocol_member_keeps_its_epoch_when_the_coordinator_is_killed() {
    let (mut c, old) = cluster_with_coordinator("cg-failover");
    let mut s = raw::connect(&c.addr(old));
    let joined = consumer_heartbeat(&mut s, 0, vec![]);
    assert_eq!(
        (joined.error_code, joined.member_epoch),
        (NONE, 1),
        "{joined:?}"
    );
    let assignment = joined.assignment.expect("an assignment");
    let topic_id = assignment.topic_partitions[0].topic_id;
    assert_eq!(assignment.topic_partitions[0].partitions, vec![0]);
    assert_eq!(commit_as(&mut s, "m1", 1, 7, 9), NONE);
    assert_eq!(commit_as(&mut s, "m1", 0, 7, 9), STALE_MEMBER_EPOCH);
    // The heartbeat was answered: the coordinator dies now.
    drop(s);
    let new = fail_over(&mut c, old);
    let mut s = raw::connect(&c.addr(new));
    let owned = TopicPartitions::default()
        .with_topic_id(topic_id)
        .with_partitions(vec![0]);
    let beat = consumer_heartbeat(&mut s, 1, vec![owned]);
    assert_eq!(
        (beat.error_code, beat.member_epoch),
        (NONE, 1),
        "the member carries on at its epoch: {beat:?}"
    );
    assert_eq!(
        commit_as(&mut s, "m1", 1, 9, 9),
        NONE,
        "its commit is accepted"
    );
}
