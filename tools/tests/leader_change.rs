//! What a consumer group is told while a partition's leader and its group coordinator move
//! (issue #26: a group with `auto.offset.reset=latest` never delivered acknowledged
//! messages after rolling restarts). librdkafka skips ahead to the log end when, and only
//! when, a broker answers one of: a Fetch with OFFSET_OUT_OF_RANGE at a position the group
//! reached, an OffsetForLeaderEpoch without an end offset or epoch (or, with
//! `auto.offset.reset=error`, with an end below the position), an OffsetFetch with no
//! offset although one was committed. Each is asked of every live node, raw, as fast as it
//! answers, from the SIGTERM of the leader (which also coordinates the group) until the
//! new leader and coordinator serve: every answer in the move must be one a client can
//! wait out (a retriable error or an empty answer), never one that sends it to the end.
//!
//! The checks are on answers only; the loop ends on observed state, bounded by a hang
//! guard.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::cluster::{wait_for, Cluster, ClusterSpec};
use futures_executor::block_on;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupId, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetFetchRequest, OffsetFetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "moving";
const GROUP: &str = "moving-readers";
const HANG_GUARD: Duration = Duration::from_secs(90);
/// A node that does not answer within this is taken as gone for this round.
const ANSWER_GUARD: Duration = Duration::from_secs(5);

const NONE: i16 = 0;
const OFFSET_OUT_OF_RANGE: i16 = 1;

/// One request to `addr` and its decoded answer; `None` if the node does not answer (it
/// is stopping or stopped).
fn ask<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
    addr: &str,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Option<Resp> {
    let sock = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, ANSWER_GUARD).ok()?;
    s.set_read_timeout(Some(ANSWER_GUARD)).ok()?;
    s.write_all(&common::raw::frame(key, version, 7, req))
        .ok()?;
    let mut body = common::raw::read_frame(&mut s)?;
    ResponseHeader::decode(&mut body, Resp::header_version(version)).ok()?;
    Resp::decode(&mut body, version).ok()
}

/// (leader, leader epoch) of partition 0 in `addr`'s metadata.
fn leader_of(addr: &str) -> Option<(i32, i32)> {
    let req = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str(TOPIC))))]));
    let r: MetadataResponse = ask(addr, ApiKey::Metadata, 9, &req)?;
    let p = r.topics.first()?.partitions.first()?;
    (p.leader_id.0 >= 0).then_some((p.leader_id.0, p.leader_epoch))
}

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

/// A consumer's Fetch (v12, as librdkafka sends it: replica -1, a rack-less v11+ client)
/// at `offset`: (error, high watermark).
fn consumer_fetch(addr: &str, epoch: i32, offset: i64) -> Option<(i16, i64)> {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_isolation_level(1)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name())
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(epoch)
                .with_fetch_offset(offset)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(1 << 20)])]);
    let r: FetchResponse = ask(addr, ApiKey::Fetch, 12, &req)?;
    if r.error_code != NONE {
        return Some((r.error_code, -1));
    }
    let p = r.responses.first()?.partitions.first()?;
    Some((p.error_code, p.high_watermark))
}

/// A consumer's OffsetForLeaderEpoch (v4, replica -1): (error, epoch, end offset).
fn epoch_end(addr: &str, current: i32, asked: i32) -> Option<(i16, i32, i64)> {
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(topic_name())
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(current)
                .with_leader_epoch(asked)])]);
    let r: OffsetForLeaderEpochResponse = ask(addr, ApiKey::OffsetForLeaderEpoch, 4, &req)?;
    let p = r.topics.first()?.partitions.first()?;
    Some((p.error_code, p.leader_epoch, p.end_offset))
}

/// ListOffsets (v7) latest, as a read-committed consumer asks it: (error, offset).
fn latest(addr: &str, current: i32) -> Option<(i16, i64)> {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(1)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name())
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_current_leader_epoch(current)
                .with_timestamp(-1)])]);
    let r: ListOffsetsResponse = ask(addr, ApiKey::ListOffsets, 7, &req)?;
    let p = r.topics.first()?.partitions.first()?;
    Some((p.error_code, p.offset))
}

/// The node FindCoordinator at `addr` names for the group.
fn coordinator(addr: &str) -> Option<i32> {
    let req = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_static_str(GROUP))
        .with_key_type(0);
    let r: FindCoordinatorResponse = ask(addr, ApiKey::FindCoordinator, 3, &req)?;
    (r.error_code == NONE).then_some(r.node_id.0)
}

/// OffsetFetch (v8, as librdkafka 2.x sends it) of partition 0: the group's error, else
/// the partition's (error, committed offset).
fn committed(addr: &str) -> Option<Result<(i16, i64), i16>> {
    let req = OffsetFetchRequest::default()
        .with_require_stable(true)
        .with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(topic_name())
                .with_partition_indexes(vec![0])]))]);
    let r: OffsetFetchResponse = ask(addr, ApiKey::OffsetFetch, 8, &req)?;
    let g = r.groups.first()?;
    if g.error_code != NONE {
        return Some(Err(g.error_code));
    }
    let p = g.topics.first()?.partitions.first()?;
    Some(Ok((p.error_code, p.committed_offset)))
}

fn create_topic(c: &Cluster) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .create()
        .expect("admin client");
    let new = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(3)).set("min.insync.replicas", "2");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let r = block_on(admin.create_topics([&new], &opts)).expect("create_topics");
    assert!(r.iter().all(|x| x.is_ok()), "create {TOPIC}: {r:?}");
}

/// An idempotent acks=all producer writing to partition 0 until `stop`; the number of
/// messages acknowledged.
fn producer(bootstrap: String, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .set("retry.backoff.ms", "50")
            .set("topic.metadata.refresh.interval.ms", "500")
            .create()
            .expect("producer");
        let mut i: u64 = 0;
        while !stop.load(Ordering::SeqCst) {
            let v = i.to_string();
            match p.send(BaseRecord::<str, str>::to(TOPIC).partition(0).payload(&v)) {
                Ok(()) => i += 1,
                Err(_) => {
                    p.poll(Duration::from_millis(5));
                }
            }
            if i % 50 == 0 {
                p.poll(Duration::from_millis(1));
            }
        }
        p.flush(HANG_GUARD).expect("every message acknowledged");
        i
    })
}

/// Commits `offset` for partition 0 as the group's position (a client outside the group).
fn commit(c: &Cluster, offset: i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(offset))
        .unwrap();
    wait_for("the group's offset committed", HANG_GUARD, &mut || {
        consumer.commit(&tpl, CommitMode::Sync).ok()
    });
}

/// Where a consumer may be during a move: what it knows and has reached.
#[derive(Debug, Clone, Copy)]
struct Probe {
    /// The node being stopped.
    old: usize,
    /// The leader epoch before the move (of every batch below `reached_before`).
    epoch: i32,
    /// The highest high watermark any node answered for the leadership of `epoch`: a
    /// consumer may have read up to it.
    reached_before: i64,
    /// The highest high watermark any node answered so far (any leadership).
    reached: i64,
    /// The group's committed offset.
    committed: i64,
}

/// Every answer each live node gives in one round, each checked; true once a node other
/// than `old` leads and serves the partition and the group's coordinator (not `old`)
/// answers its committed offset.
fn round(c: &Cluster, probe: &mut Probe, seen: &mut Seen) -> bool {
    let mut served = false;
    let mut loaded = false;
    for n in c.live() {
        let addr = c.addr(n);
        let metadata = leader_of(&addr);
        // The epoch a client knows is what some node's metadata said: the old or the new.
        let current = metadata.map_or(probe.epoch, |(_, e)| e);
        let leads = metadata.is_some_and(|(l, _)| l == n as i32);
        for position in [probe.reached_before, probe.reached] {
            let Some((error, hw)) = consumer_fetch(&addr, current, position) else {
                continue;
            };
            seen.note("fetch", error);
            // A follower may refuse a position it has not reached (a consumer sent
            // there by the leader goes back to the leader, KIP-392); the leader may not.
            assert!(
                !(leads && error == OFFSET_OUT_OF_RANGE),
                "node {n} (stopping: {}) answered a consumer's Fetch at {position}, a \
                 position a consumer reached, with OFFSET_OUT_OF_RANGE (epoch {current}, \
                 {probe:?}): librdkafka resets to latest and skips",
                probe.old
            );
            if error == NONE && leads {
                if current == probe.epoch {
                    probe.reached_before = probe.reached_before.max(hw);
                }
                probe.reached = probe.reached.max(hw);
                served |= n != probe.old;
            }
        }
        if let Some((error, e, end)) = epoch_end(&addr, current, probe.epoch) {
            seen.note("epoch_end", error);
            if error == NONE {
                assert!(
                    e >= 0 && end >= probe.reached_before,
                    "node {n} answered OffsetForLeaderEpoch({}) with epoch {e}, end {end}; \
                     a consumer read to {} in that epoch ({probe:?}): librdkafka resets",
                    probe.epoch,
                    probe.reached_before
                );
            }
        }
        if let Some((error, _)) = latest(&addr, current) {
            seen.note("latest", error);
        }
        if let Some(answer) = committed(&addr) {
            match answer {
                Ok((error, offset)) => {
                    seen.note("offset_fetch", error);
                    assert!(
                        error != NONE || offset == probe.committed,
                        "node {n} answered OffsetFetch with offset {offset} (error {error}); \
                         {} is committed: a member would start elsewhere",
                        probe.committed
                    );
                    loaded |=
                        n != probe.old && error == NONE && coordinator(&addr) == Some(n as i32);
                }
                Err(error) => seen.note("offset_fetch", error),
            }
        }
    }
    served && loaded
}

/// Which (api, error) answers the moves gave, for the report.
#[derive(Default, Debug)]
struct Seen(BTreeMap<(&'static str, i16), u32>);

impl Seen {
    fn note(&mut self, api: &'static str, error: i16) {
        *self.0.entry((api, error)).or_default() += 1;
    }
}

#[test]
fn a_moving_leader_and_coordinator_never_send_a_group_to_the_log_end() {
    let mut c = Cluster::start("leader-change", ClusterSpec::default(), HANG_GUARD);
    create_topic(&c);
    commit(&c, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = producer(c.bootstrap(), stop.clone());
    let mut seen = Seen::default();
    // The partition's leader moves, then the group's coordinator (the same node or
    // another), each stopped by SIGTERM under load, checked until the move is over, and
    // started again.
    let (leader, _) = wait_for("the partition's leader", HANG_GUARD, &mut || {
        leader_of(&c.addr(1))
    });
    move_away(&mut c, leader as usize, &mut seen);
    let coordinated_by = wait_for("the group's coordinator", HANG_GUARD, &mut || {
        coordinator(&c.addr(1))
    });
    move_away(&mut c, coordinated_by as usize, &mut seen);
    stop.store(true, Ordering::SeqCst);
    let acknowledged = writer.join().expect("producer thread");
    eprintln!("figure: {acknowledged} acknowledged; answers during the moves {seen:?}");
}

/// SIGTERM to `node` while the producer writes; every node's answers checked until
/// another node leads and coordinates; `node` started again and back in the ISR.
fn move_away(c: &mut Cluster, node: usize, seen: &mut Seen) {
    let (leader, epoch) = wait_for("the partition's leader", HANG_GUARD, &mut || {
        leader_of(&c.addr(node))
    });
    let leader_addr = c.addr(leader as usize);
    // Data flowing and a position reached under the current leadership.
    let reached = wait_for("messages acknowledged", HANG_GUARD, &mut || {
        consumer_fetch(&leader_addr, epoch, 0)
            .and_then(|(e, hw)| (e == NONE && hw > 100).then_some(hw))
    });
    let committed = reached / 2;
    commit(c, committed);
    let mut probe = Probe {
        old: node,
        epoch,
        reached_before: reached,
        reached,
        committed,
    };
    eprintln!("moving away from node {node}: {probe:?}");
    c.signal(node, libc::SIGTERM);
    let started = Instant::now();
    while !round(c, &mut probe, seen) {
        assert!(
            started.elapsed() < HANG_GUARD,
            "the new leader and coordinator never served; {probe:?}, answers seen: {seen:?}"
        );
    }
    // Past the move, the consumer positions reached before it still answer.
    for _ in 0..3 {
        round(c, &mut probe, seen);
    }
    let status = c.stop(node, HANG_GUARD);
    assert!(
        status.is_some_and(|s| s.success()),
        "node {node} exit: {status:?}"
    );
    // The restart, the catch-up and the preferred leader's return are moves too: the
    // same answers are checked until the partition is led by its preferred replica with
    // every replica in sync.
    c.start_node(node);
    probe.old = 0;
    let started = Instant::now();
    loop {
        round(c, &mut probe, seen);
        let settled = c.metadata(node, TOPIC).is_some_and(|(_, parts)| {
            parts
                .values()
                .all(|p| p.isr.len() == 3 && p.replicas.first().is_some_and(|r| *r == p.leader))
        });
        if settled {
            break;
        }
        assert!(
            started.elapsed() < HANG_GUARD,
            "node {node} never back in the ISR with the preferred leader leading; {probe:?}"
        );
    }
    eprintln!("moved away from node {node}: {probe:?}");
}
