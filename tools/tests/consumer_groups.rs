//! The next-generation consumer group protocol (KIP-848) against a real broker: rdkafka
//! consumers with `group.protocol=consumer` (librdkafka 2.12), and raw
//! ConsumerGroupHeartbeat calls where a test needs exact epochs or bad input.
//!
//! The broker tells members to heartbeat every 250 ms (`consumer_heartbeat_interval_ms`),
//! so a reconciliation takes a few heartbeats; every wait is on a condition, bounded by
//! `HANG_GUARD`, never on a duration.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::raw::{self, call};
use common::revocations::Revocations;
use common::{Broker, HANG_GUARD};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, DescribeGroupsRequest, DescribeGroupsResponse, GroupId,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, JoinGroupRequest,
    JoinGroupResponse, ListGroupsRequest, ListGroupsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset};

const GROUP_ID_NOT_FOUND: i16 = 69;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const INVALID_REQUEST: i16 = 42;
const FENCED_MEMBER_EPOCH: i16 = 110;
const UNKNOWN_MEMBER_ID: i16 = 25;
const UNSUPPORTED_ASSIGNOR: i16 = 112;
const INVALID_REGULAR_EXPRESSION: i16 = 128;
const INVALID_CONFIG: i16 = 40;

const BROKER_CONFIG: &str =
    "[groups]\nconsumer_heartbeat_interval_ms = 250\nconsumer_session_timeout_ms = 6000\n";

/// A broker (fixed port, so a restart comes back where clients knew it) with the
/// consumer-protocol settings above.
fn start(dir: &std::path::Path, listen: &str) -> Broker {
    let config = dir.join("sluice.toml");
    std::fs::write(&config, BROKER_CONFIG).unwrap();
    Broker::start_at(
        &dir.join("data"),
        listen,
        "0-1",
        &["--config", config.to_str().unwrap()],
    )
}

fn broker(prefix: &str) -> (tempfile::TempDir, Broker) {
    let dir = common::tempdir(prefix);
    let b = start(dir.path(), "127.0.0.1:0");
    (dir, b)
}

/// `per` messages to each of the topic's `partitions`.
fn produce(b: &Broker, topic: &str, partitions: i32, per: usize) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for i in 0..per {
        let v = i.to_string();
        for partition in 0..partitions {
            let r = BaseRecord::<str, str>::to(topic)
                .partition(partition)
                .key(&v)
                .payload(&v);
            p.send(r).map_err(|(e, _)| e).unwrap();
        }
    }
    p.flush(HANG_GUARD).unwrap();
}

type Member = BaseConsumer<Revocations>;

fn member(b: &Broker, group: &str, extra: &[(&str, &str)]) -> Member {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &b.addr)
        .set("group.id", group)
        .set("group.protocol", "consumer")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create_with_context(Revocations::default()).unwrap()
}

/// (topic, partition) pairs the member holds.
fn held(c: &Member) -> BTreeSet<(String, i32)> {
    c.assignment()
        .map(|a| {
            a.elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect()
        })
        .unwrap_or_default()
}

fn revoked(c: &Member) -> BTreeSet<(String, i32)> {
    c.context().0.lock().unwrap().iter().cloned().collect()
}

/// Polls every member until `done` holds for what they hold; panics after the guard.
fn poll_until(cs: &[&Member], what: &str, done: impl Fn(&[BTreeSet<(String, i32)>]) -> bool) {
    let started = Instant::now();
    loop {
        for c in cs {
            let _ = c.poll(Duration::ZERO);
        }
        let now: Vec<_> = cs.iter().map(|c| held(c)).collect();
        if done(&now) {
            return;
        }
        assert!(started.elapsed() < HANG_GUARD, "{what}: {now:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every partition of `topic` (`n` of them) held exactly once, `sizes` per member.
fn split_as(n: i32, sizes: &[usize]) -> impl Fn(&[BTreeSet<(String, i32)>]) -> bool + '_ {
    move |s| {
        let all: BTreeSet<i32> = s.iter().flatten().map(|(_, p)| *p).collect();
        let total: usize = s.iter().map(BTreeSet::len).sum();
        let mut got: Vec<usize> = s.iter().map(BTreeSet::len).collect();
        got.sort();
        let mut want = sizes.to_vec();
        want.sort();
        all.len() == n as usize && total == n as usize && got == want
    }
}

/// Leaves the group (unsubscribe sends the leave heartbeat: epoch -1, or -2 for a static
/// member) and waits until the client gave its partitions up, then leaks the handle
/// (librdkafka's close can block after the group was left; rust-rdkafka 509/611).
fn leave(c: Member) {
    c.unsubscribe();
    let started = Instant::now();
    while !held(&c).is_empty() {
        assert!(started.elapsed() < HANG_GUARD);
        let _ = c.poll(Duration::from_millis(10));
    }
    std::mem::forget(c);
}

fn describe(addr: &str, group: &str) -> ConsumerGroupDescribeResponse {
    let req = ConsumerGroupDescribeRequest::default()
        .with_group_ids(vec![GroupId(StrBytes::from_string(group.into()))]);
    call(
        &mut raw::connect(addr),
        ApiKey::ConsumerGroupDescribe,
        1,
        &req,
    )
}

/// (group epoch, assignment epoch, members) as ConsumerGroupDescribe tells them.
fn epochs(addr: &str, group: &str) -> (i32, i32, usize) {
    let d = describe(addr, group);
    let g = &d.groups[0];
    assert_eq!(g.error_code, 0, "{g:?}");
    (g.group_epoch, g.assignment_epoch, g.members.len())
}

#[test]
fn a_third_member_takes_only_the_partitions_that_move() {
    let (_dir, b) = broker("cg-split");
    common::create_topic_at(&b.addr, "split", 6, 1, &[]);
    let a = member(&b, "g-split", &[]);
    a.subscribe(&["split"]).unwrap();
    poll_until(&[&a], "a alone", split_as(6, &[6]));
    let joined = Instant::now();
    let c = member(&b, "g-split", &[]);
    c.subscribe(&["split"]).unwrap();
    poll_until(&[&a, &c], "two split", split_as(6, &[3, 3]));
    println!(
        "figure: 2 members reach their targets {:?} after the second joined",
        joined.elapsed()
    );
    let (a_before, c_before) = (held(&a), held(&c));
    assert!(revoked(&c).is_empty());
    let d = member(&b, "g-split", &[]);
    d.subscribe(&["split"]).unwrap();
    poll_until(&[&a, &c, &d], "three split", split_as(6, &[2, 2, 2]));
    for (m, before) in [(&a, &a_before), (&c, &c_before)] {
        let after = held(m);
        assert!(
            after.is_subset(before),
            "nothing moves between the old members"
        );
        let gave: BTreeSet<_> = before.difference(&after).cloned().collect();
        let since: BTreeSet<_> = revoked(m)
            .into_iter()
            .filter(|tp| before.contains(tp))
            .collect();
        assert_eq!(since, gave, "only the partitions that moved were revoked");
    }
    let (group_epoch, assignment_epoch, members) = epochs(&b.addr, "g-split");
    assert_eq!((group_epoch, assignment_epoch, members), (3, 3, 3));
    // `sluice group describe` shows the protocol, the epochs and each member's partitions.
    let out = common::sluice(&[
        "group",
        "describe",
        "g-split",
        "--bootstrap",
        &b.addr,
        "--json",
    ]);
    let desc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(desc["group_type"], "consumer");
    assert_eq!(desc["protocol"], "uniform");
    assert_eq!(
        (
            desc["group_epoch"].as_i64(),
            desc["assignment_epoch"].as_i64()
        ),
        (Some(3), Some(3))
    );
    let shown: BTreeSet<(String, i32)> = desc["members"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|m| assert_eq!(m["member_epoch"], 3, "{m}"))
        .flat_map(|m| m["assignment"].as_array().unwrap().clone())
        .flat_map(|a| {
            let t = a["topic"].as_str().unwrap().to_string();
            let ps: Vec<i64> = a["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p.as_i64())
                .collect();
            ps.into_iter().map(move |p| (t.clone(), p as i32))
        })
        .collect();
    assert_eq!(shown.len(), 6, "{desc}");
    let listed = common::sluice(&["group", "list", "--bootstrap", &b.addr, "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["group_type"], "consumer", "{listed}");
    assert_eq!(listed[0]["state"], "Stable", "{listed}");
    let text = common::sluice(&["group", "describe", "g-split", "--bootstrap", &b.addr]);
    assert!(
        text.contains("TYPE consumer  STATE Stable  ASSIGNOR uniform  GROUP-EPOCH 3"),
        "{text}"
    );
    leave(d);
    leave(c);
    leave(a);
}

/// Polls `c` until `done` holds for the first offset it read of each partition (and
/// the count of messages read); returns those first offsets.
fn read_until(
    c: &Member,
    what: &str,
    done: impl Fn(&BTreeMap<i32, i64>, usize) -> bool,
) -> BTreeMap<i32, i64> {
    let mut first = BTreeMap::new();
    let mut got = 0;
    let started = Instant::now();
    while !done(&first, got) {
        assert!(
            started.elapsed() < HANG_GUARD,
            "{what}: read {got}, first {first:?}"
        );
        if let Some(Ok(m)) = c.poll(Duration::from_millis(10)) {
            first.entry(m.partition()).or_insert(m.offset());
            got += 1;
        }
    }
    first
}

fn committed(c: &Member) -> BTreeMap<i32, i64> {
    c.committed(HANG_GUARD)
        .unwrap()
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_leaving_members_partitions_resume_from_its_commits() {
    let (_dir, b) = broker("cg-leave");
    common::create_topic_at(&b.addr, "leave", 4, 1, &[]);
    let a = member(&b, "g-leave", &[]);
    let c = member(&b, "g-leave", &[]);
    a.subscribe(&["leave"]).unwrap();
    c.subscribe(&["leave"]).unwrap();
    poll_until(&[&a, &c], "split", split_as(4, &[2, 2]));
    produce(&b, "leave", 4, 50);
    let c_parts: BTreeSet<i32> = held(&c).into_iter().map(|(_, p)| p).collect();
    read_until(&c, "c reads from both its partitions", |first, n| {
        n >= 30 && first.len() == c_parts.len()
    });
    // A commit carries c's member epoch (OffsetCommit v9); the broker checks it.
    c.commit_consumer_state(CommitMode::Sync).unwrap();
    let c_commits = committed(&c);
    assert_eq!(c_commits.keys().copied().collect::<BTreeSet<_>>(), c_parts);
    leave(c);
    // a takes c's partitions over and starts them where c committed (a partition c
    // read to its end has nothing left to start).
    let unfinished: BTreeSet<i32> = c_commits
        .iter()
        .filter(|(_, o)| **o < 50)
        .map(|(p, _)| *p)
        .collect();
    let first = read_until(&a, "a reads c's partitions", |first, _| {
        unfinished.iter().all(|p| first.contains_key(p))
    });
    for p in &unfinished {
        assert_eq!(
            first.get(p),
            c_commits.get(p),
            "partition {p} resumed at c's commit"
        );
    }
    assert_eq!(held(&a).len(), 4);
    leave(a);
}

#[test]
fn a_static_member_restarts_without_a_reassignment() {
    let (_dir, b) = broker("cg-static");
    common::create_topic_at(&b.addr, "static", 4, 1, &[]);
    let instance = [("group.instance.id", "inst-1")];
    let a = member(&b, "g-static", &instance);
    let c = member(&b, "g-static", &[]);
    a.subscribe(&["static"]).unwrap();
    c.subscribe(&["static"]).unwrap();
    poll_until(&[&a, &c], "split", split_as(4, &[2, 2]));
    let (a_parts, c_parts) = (held(&a), held(&c));
    let c_revoked = revoked(&c);
    let before = epochs(&b.addr, "g-static");
    // Unsubscribing sends the static leave (epoch -2): a's place and partitions stay.
    leave(a);
    let again = member(&b, "g-static", &instance);
    again.subscribe(&["static"]).unwrap();
    poll_until(&[&again, &c], "back in place", |s| {
        s[0] == a_parts && s[1] == c_parts
    });
    assert_eq!(epochs(&b.addr, "g-static"), before, "no new group epoch");
    assert_eq!(revoked(&c), c_revoked, "the other member gave nothing up");
    leave(again);
    leave(c);
}

#[test]
fn a_regex_subscription_picks_up_a_topic_created_later() {
    let (_dir, b) = broker("cg-regex");
    common::create_topic_at(&b.addr, "metrics-a", 2, 1, &[]);
    common::create_topic_at(&b.addr, "other", 2, 1, &[]);
    let a = member(&b, "g-regex", &[]);
    a.subscribe(&["^metrics-.*"]).unwrap();
    let only = |topics: &[&str], n: usize| {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        move |s: &[BTreeSet<(String, i32)>]| {
            s[0].len() == n && s[0].iter().all(|(t, _)| topics.contains(t))
        }
    };
    poll_until(&[&a], "metrics-a", only(&["metrics-a"], 2));
    common::create_topic_at(&b.addr, "metrics-b", 3, 1, &[]);
    poll_until(
        &[&a],
        "metrics-b joins",
        only(&["metrics-a", "metrics-b"], 5),
    );
    let d = describe(&b.addr, "g-regex");
    let m = &d.groups[0].members[0];
    assert_eq!(
        m.subscribed_topic_regex.as_deref(),
        Some("(^metrics-.*)"),
        "librdkafka's form of the pattern"
    );
    leave(a);
}

#[test]
fn members_continue_from_their_commits_after_a_coordinator_restart() {
    let dir = common::tempdir("cg-restart");
    let listen = format!("127.0.0.1:{}", common::free_port());
    let mut b = start(dir.path(), &listen);
    common::create_topic_at(&b.addr, "restart", 2, 1, &[]);
    let a = member(&b, "g-restart", &[]);
    a.subscribe(&["restart"]).unwrap();
    poll_until(&[&a], "alone", split_as(2, &[2]));
    // A member comes and goes first, so the epochs are ones a fresh join would not give.
    let c = member(&b, "g-restart", &[]);
    c.subscribe(&["restart"]).unwrap();
    poll_until(&[&a, &c], "split", split_as(2, &[1, 1]));
    leave(c);
    poll_until(&[&a], "alone again", split_as(2, &[2]));
    produce(&b, "restart", 2, 50);
    read_until(&a, "a reads 40 from both", |first, n| {
        n >= 40 && first.len() == 2
    });
    a.commit_consumer_state(CommitMode::Sync).unwrap();
    let commits = committed(&a);
    assert_eq!(commits.len(), 2);
    let who = |d: &ConsumerGroupDescribeResponse| {
        let g = &d.groups[0];
        let m = g
            .members
            .first()
            .map(|m| (m.member_id.to_string(), m.member_epoch));
        (g.group_epoch, m)
    };
    let before = who(&describe(&b.addr, "g-restart"));
    assert_eq!(before.0, 3, "{before:?}");
    // Killed, not stopped: what the heartbeats were answered with was durable already.
    b.kill();
    let b = start(dir.path(), &listen);
    // The coordinator finds the group, the member and its epoch in `__consumer_offsets`.
    let after = common::wait_for("the group loaded", HANG_GUARD, &mut || {
        let d = describe(&b.addr, "g-restart");
        (d.groups[0].error_code == 0).then(|| who(&d))
    });
    assert_eq!(
        after, before,
        "group epoch, member and member epoch restored"
    );
    // The member carries on, without rejoining, and reads every offset from its commits
    // to the end, none before them.
    let mut read: BTreeSet<(i32, i64)> = BTreeSet::new();
    let started = Instant::now();
    loop {
        if let Some(Ok(m)) = a.poll(Duration::from_millis(10)) {
            let (p, o) = (m.partition(), m.offset());
            assert!(
                o >= commits[&p],
                "partition {p} read {o}, before its commit"
            );
            read.insert((p, o));
        }
        let done = commits
            .iter()
            .all(|(p, c)| (*c..50).all(|o| read.contains(&(*p, o))));
        if done && who(&describe(&b.addr, "g-restart")) == before {
            break;
        }
        assert!(
            started.elapsed() < HANG_GUARD,
            "after the restart: read {read:?}"
        );
    }
    leave(a);
}

fn heartbeat(epoch: i32) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g-raw")))
        .with_member_id(StrBytes::from_static_str("raw-member-1"))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![TopicName(StrBytes::from_static_str("raw"))]))
        .with_topic_partitions(Some(vec![]))
}

fn send(addr: &str, req: &ConsumerGroupHeartbeatRequest) -> ConsumerGroupHeartbeatResponse {
    call(
        &mut raw::connect(addr),
        ApiKey::ConsumerGroupHeartbeat,
        1,
        req,
    )
}

#[test]
fn bad_heartbeats_get_kafka_error_codes_and_groups_do_not_collide() {
    let (_dir, b) = broker("cg-bad");
    common::create_topic_at(&b.addr, "raw", 2, 1, &[]);
    let ok = send(&b.addr, &heartbeat(0));
    assert_eq!((ok.error_code, ok.member_epoch), (0, 1), "{ok:?}");
    let cases = [
        (heartbeat(i32::MAX), FENCED_MEMBER_EPOCH),
        (heartbeat(-3), INVALID_REQUEST),
        (heartbeat(i32::MIN), INVALID_REQUEST),
        (
            heartbeat(7).with_member_id(StrBytes::from_static_str("nobody")),
            UNKNOWN_MEMBER_ID,
        ),
        (
            heartbeat(0).with_member_id(StrBytes::from_static_str("")),
            INVALID_REQUEST,
        ),
        (heartbeat(0).with_rebalance_timeout_ms(-1), INVALID_REQUEST),
        (
            heartbeat(0).with_server_assignor(Some(StrBytes::from_static_str("nope"))),
            UNSUPPORTED_ASSIGNOR,
        ),
        (
            heartbeat(0).with_subscribed_topic_regex(Some(StrBytes::from_static_str("(a"))),
            INVALID_REGULAR_EXPRESSION,
        ),
        (
            heartbeat(0)
                .with_subscribed_topic_regex(Some(StrBytes::from_static_str("(a{1000}){1000}"))),
            INVALID_REGULAR_EXPRESSION,
        ),
        (
            heartbeat(0).with_subscribed_topic_regex(Some(StrBytes::from_string("x".repeat(5000)))),
            INVALID_REGULAR_EXPRESSION,
        ),
        (
            heartbeat(0).with_group_id(GroupId(StrBytes::from_static_str(""))),
            INVALID_REQUEST,
        ),
    ];
    for (req, want) in cases {
        let r = send(&b.addr, &req);
        assert_eq!(r.error_code, want, "{req:?} → {r:?}");
        assert!(r.error_message.is_some());
    }
    // A classic member of another protocol type than the embedded consumer protocol
    // cannot join the (non-empty) consumer group...
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g-raw")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("connect"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(raw::subscription("raw"))]);
    let r: JoinGroupResponse = call(&mut raw::connect(&b.addr), ApiKey::JoinGroup, 5, &join);
    assert_eq!(r.error_code, INCONSISTENT_GROUP_PROTOCOL);
    // ...DescribeGroups (v5) answers it as Dead, as Kafka does, and ListGroups v5 tells
    // the two kinds apart.
    let req = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_static_str("g-raw"))]);
    let r: DescribeGroupsResponse =
        call(&mut raw::connect(&b.addr), ApiKey::DescribeGroups, 5, &req);
    assert_eq!(r.groups[0].group_state.as_str(), "Dead");
    let classic = join
        .clone()
        .with_group_id(GroupId(StrBytes::from_static_str("g-classic")));
    let mut s = raw::connect(&b.addr);
    let r: JoinGroupResponse = call(&mut s, ApiKey::JoinGroup, 3, &classic);
    assert_eq!(r.error_code, 0);
    let list = |types: &[&'static str]| -> Vec<(String, String)> {
        let req = ListGroupsRequest::default()
            .with_types_filter(types.iter().map(|t| StrBytes::from_static_str(t)).collect());
        let r: ListGroupsResponse = call(&mut raw::connect(&b.addr), ApiKey::ListGroups, 5, &req);
        r.groups
            .iter()
            .map(|g| (g.group_id.0.to_string(), g.group_type.to_string()))
            .collect()
    };
    assert_eq!(
        list(&["CONSUMER"]),
        vec![("g-raw".into(), "consumer".into())]
    );
    assert_eq!(
        list(&["classic"]),
        vec![("g-classic".into(), "classic".into())]
    );
    assert_eq!(list(&[]).len(), 2);
    // A consumer heartbeat for the live classic group of another protocol type is
    // GROUP_ID_NOT_FOUND (only the embedded consumer protocol converts).
    let r = send(
        &b.addr,
        &heartbeat(0).with_group_id(GroupId(StrBytes::from_static_str("g-classic"))),
    );
    assert_eq!(r.error_code, GROUP_ID_NOT_FOUND);
    let d = describe(&b.addr, "g-classic");
    assert_eq!(d.groups[0].error_code, GROUP_ID_NOT_FOUND);
    // Still serving, and the member left cleanly.
    let r = send(&b.addr, &heartbeat(-1));
    assert_eq!((r.error_code, r.member_epoch), (0, -1));
    // v0: the coordinator names a new member.
    let v0 = heartbeat(0).with_member_id(StrBytes::from_static_str(""));
    let r: ConsumerGroupHeartbeatResponse = call(
        &mut raw::connect(&b.addr),
        ApiKey::ConsumerGroupHeartbeat,
        0,
        &v0,
    );
    assert_eq!(r.error_code, 0, "{r:?}");
    assert!(
        r.member_id.as_deref().is_some_and(|id| !id.is_empty()),
        "{r:?}"
    );
}

#[test]
fn join_to_target_figures_for_ten_members() {
    let (_dir, b) = broker("cg-ten");
    common::create_topic_at(&b.addr, "ten", 20, 1, &[]);
    let mut members: Vec<Member> = Vec::new();
    for i in 0..9 {
        let m = member(&b, "g-ten", &[]);
        m.subscribe(&["ten"]).unwrap();
        members.push(m);
        let refs: Vec<&Member> = members.iter().collect();
        let sizes: Vec<usize> = (0..=i)
            .map(|k| 20 / (i + 1) + usize::from(k < 20 % (i + 1)))
            .collect();
        poll_until(&refs, "members joining", split_as(20, &sizes));
    }
    let joined = Instant::now();
    let m = member(&b, "g-ten", &[]);
    m.subscribe(&["ten"]).unwrap();
    members.push(m);
    let refs: Vec<&Member> = members.iter().collect();
    poll_until(&refs, "ten members", split_as(20, &[2; 10]));
    println!(
        "figure: 10 members reach their targets {:?} after the tenth joined",
        joined.elapsed()
    );
    for m in members {
        leave(m);
    }
}

/// IncrementalAlterConfigs SET of one key of GROUP resource `group`: the resource's error.
fn set_group_config(addr: &str, group: &str, key: &'static str, value: &str) -> i16 {
    alter_group_config(addr, group, key, 0, value)
}

/// IncrementalAlterConfigs operation `op` (0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT).
fn alter_group_config(addr: &str, group: &str, key: &'static str, op: i8, value: &str) -> i16 {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(32)
            .with_resource_name(StrBytes::from_string(group.into()))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_static_str(key))
                .with_config_operation(op)
                .with_value(Some(StrBytes::from_string(value.into())))]),
    ]);
    let r: IncrementalAlterConfigsResponse = call(
        &mut raw::connect(addr),
        ApiKey::IncrementalAlterConfigs,
        1,
        &req,
    );
    r.responses[0].error_code
}

#[test]
fn group_configs_set_the_heartbeat_interval_and_session_timeout() {
    let (_dir, b) = broker("cg-config");
    common::create_topic_at(&b.addr, "raw", 2, 1, &[]);
    let interval = "consumer.heartbeat.interval.ms";
    let session = "consumer.session.timeout.ms";
    assert_eq!(set_group_config(&b.addr, "g-raw", interval, "1234"), 0);
    assert_eq!(set_group_config(&b.addr, "g-raw", session, "7000"), 0);
    // Refused: not a number, not below the session timeout, not a group config.
    assert_eq!(
        set_group_config(&b.addr, "g-raw", interval, "soon"),
        INVALID_CONFIG
    );
    assert_eq!(
        set_group_config(&b.addr, "g-raw", interval, "7000"),
        INVALID_CONFIG
    );
    assert_eq!(
        set_group_config(&b.addr, "g-raw", "retention.ms", "1"),
        INVALID_CONFIG
    );
    assert_eq!(
        alter_group_config(&b.addr, "g-raw", interval, 2, "1"),
        INVALID_CONFIG,
        "APPEND: not a list"
    );
    let ok = send(&b.addr, &heartbeat(0));
    assert_eq!(
        (ok.error_code, ok.heartbeat_interval_ms),
        (0, 1234),
        "{ok:?}"
    );
    // Another group keeps the broker's default (250 ms here).
    let other = send(
        &b.addr,
        &heartbeat(0).with_group_id(GroupId(StrBytes::from_static_str("g-other"))),
    );
    assert_eq!(other.heartbeat_interval_ms, 250);
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(32)
            .with_resource_name(StrBytes::from_static_str("g-raw"))
            .with_configuration_keys(None)]);
    let r: DescribeConfigsResponse =
        call(&mut raw::connect(&b.addr), ApiKey::DescribeConfigs, 4, &req);
    let configs: BTreeMap<String, (String, i8)> = r.results[0]
        .configs
        .iter()
        .map(|c| {
            let v = c.value.as_deref().unwrap_or("").to_string();
            (c.name.to_string(), (v, c.config_source))
        })
        .collect();
    assert_eq!(r.results[0].error_code, 0, "{r:?}");
    assert_eq!(
        configs.get(interval),
        Some(&("1234".to_string(), 8)),
        "{r:?}"
    );
    assert_eq!(
        configs.get(session),
        Some(&("7000".to_string(), 8)),
        "{r:?}"
    );
}

#[test]
fn a_group_switches_protocols_once_empty_keeping_its_commits() {
    let (_dir, b) = broker("cg-switch");
    common::create_topic_at(&b.addr, "switch", 2, 1, &[]);
    // A classic member reads and commits, then leaves.
    let classic = member(&b, "g-switch", &[("group.protocol", "classic")]);
    classic.subscribe(&["switch"]).unwrap();
    poll_until(&[&classic], "classic member", split_as(2, &[2]));
    produce(&b, "switch", 2, 20);
    read_until(&classic, "classic reads", |first, n| {
        n >= 10 && first.len() == 2
    });
    classic.commit_consumer_state(CommitMode::Sync).unwrap();
    let commits = committed(&classic);
    leave(classic);
    // A consumer-protocol member takes the (now empty) group over and starts from them.
    let next = member(&b, "g-switch", &[]);
    next.subscribe(&["switch"]).unwrap();
    let unfinished: BTreeSet<i32> = commits
        .iter()
        .filter(|(_, o)| **o < 20)
        .map(|(p, _)| *p)
        .collect();
    let first = read_until(&next, "the consumer-protocol member reads", |first, _| {
        unfinished.iter().all(|p| first.contains_key(p))
    });
    for p in &unfinished {
        assert_eq!(
            first.get(p),
            commits.get(p),
            "partition {p} resumed at the classic commit"
        );
    }
    assert_eq!(epochs(&b.addr, "g-switch").2, 1, "a consumer group now");
    next.commit_consumer_state(CommitMode::Sync).unwrap();
    let commits = committed(&next);
    leave(next);
    // And back: a classic member once the consumer group is empty.
    let back = member(&b, "g-switch", &[("group.protocol", "classic")]);
    back.subscribe(&["switch"]).unwrap();
    poll_until(&[&back], "classic again", split_as(2, &[2]));
    assert_eq!(
        committed(&back),
        commits,
        "the commits are the group's, whatever its protocol"
    );
    leave(back);
}

/// A classic-protocol member (librdkafka's own heartbeat every 250 ms) assigning with
/// `strategy`.
fn classic_member(b: &Broker, group: &str, strategy: &str) -> Member {
    member(
        b,
        group,
        &[
            ("group.protocol", "classic"),
            ("heartbeat.interval.ms", "250"),
            ("session.timeout.ms", "6000"),
            ("partition.assignment.strategy", strategy),
        ],
    )
}

/// Asserts no partition is held by two of `cs` now.
fn assert_disjoint(cs: &[&Member], what: &str) {
    let mut all = BTreeSet::new();
    for c in cs {
        for tp in held(c) {
            assert!(all.insert(tp.clone()), "{what}: {tp:?} held twice");
        }
    }
}

/// Polls until the members hold the topic's `n` partitions split as `sizes`, checking at
/// every step that no partition has two holders.
fn settle(cs: &[&Member], what: &str, n: i32, sizes: &[usize]) {
    let done = split_as(n, sizes);
    let started = Instant::now();
    loop {
        for c in cs {
            let _ = c.poll(Duration::ZERO);
        }
        assert_disjoint(cs, what);
        let now: Vec<_> = cs.iter().map(|c| held(c)).collect();
        if done(&now) {
            return;
        }
        assert!(started.elapsed() < HANG_GUARD, "{what}: {now:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads with every member until `seen` holds `total` distinct records, counting each
/// (partition, offset) read, then commits what each member read.
fn drain(cs: &[&Member], seen: &mut BTreeMap<(i32, i64), usize>, total: usize, what: &str) {
    let started = Instant::now();
    while seen.len() < total {
        assert!(
            started.elapsed() < HANG_GUARD,
            "{what}: read {} of {total}",
            seen.len()
        );
        for c in cs {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(5)) {
                *seen.entry((m.partition(), m.offset())).or_default() += 1;
            }
        }
        assert_disjoint(cs, what);
    }
    for c in cs {
        match c.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            // A member that read nothing has nothing to commit.
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => {}
            Err(e) => panic!("{what}: commit: {e}"),
        }
    }
}

/// The group's type as ListGroups v5 tells it.
fn group_type(addr: &str, group: &str) -> String {
    let r: ListGroupsResponse = call(
        &mut raw::connect(addr),
        ApiKey::ListGroups,
        5,
        &ListGroupsRequest::default(),
    );
    r.groups
        .iter()
        .find(|g| g.group_id.0.as_str() == group)
        .map(|g| g.group_type.to_string())
        .unwrap_or_default()
}

#[test]
fn a_rolling_conversion_keeps_commits_and_single_owners_both_ways() {
    rolling_conversion("range,roundrobin");
}

#[test]
fn a_rolling_conversion_of_cooperative_members_keeps_commits_and_single_owners() {
    rolling_conversion("cooperative-sticky");
}

/// Classic members (assigning with `strategy`) are replaced one by one by
/// consumer-protocol members, then back; every step settles with single owners and
/// every record is read exactly once.
fn rolling_conversion(strategy: &str) {
    const N: i32 = 4;
    const PER: usize = 10;
    let (_dir, b) = broker("cg-roll");
    common::create_topic_at(&b.addr, "roll", N, 1, &[]);
    let group = "g-roll";
    let mut seen = BTreeMap::new();
    let mut batches = 0;
    let mut batch = |members: &[&Member], seen: &mut BTreeMap<(i32, i64), usize>, what: &str| {
        produce(&b, "roll", N, PER);
        batches += 1;
        drain(members, seen, batches * PER * N as usize, what);
    };
    // Two classic members read and commit.
    let a = classic_member(&b, group, strategy);
    let c = classic_member(&b, group, strategy);
    a.subscribe(&["roll"]).unwrap();
    c.subscribe(&["roll"]).unwrap();
    settle(&[&a, &c], "classic split", N, &[2, 2]);
    batch(&[&a, &c], &mut seen, "classic members read");
    assert_eq!(group_type(&b.addr, group), "classic");
    // The first is replaced by a consumer-protocol member: the group converts, the
    // remaining classic member is hosted, and they split the partitions.
    leave(a);
    settle(&[&c], "the classic member alone", N, &[4]);
    let d = member(&b, group, &[]);
    d.subscribe(&["roll"]).unwrap();
    settle(&[&c, &d], "classic and consumer members", N, &[2, 2]);
    assert_eq!(group_type(&b.addr, group), "consumer");
    // ConsumerGroupDescribe v1 tells the hosted classic member (type 0) from the
    // consumer-protocol one (1).
    let mut types: Vec<i8> = describe(&b.addr, group).groups[0]
        .members
        .iter()
        .map(|m| m.member_type)
        .collect();
    types.sort();
    assert_eq!(types, vec![0, 1]);
    batch(&[&c, &d], &mut seen, "mixed members read");
    // Then the second: a consumer group of consumer-protocol members.
    leave(c);
    settle(&[&d], "the consumer member alone", N, &[4]);
    let e = member(&b, group, &[]);
    e.subscribe(&["roll"]).unwrap();
    settle(&[&d, &e], "consumer members", N, &[2, 2]);
    batch(&[&d, &e], &mut seen, "consumer members read");
    // And back: classic members join the consumer group; when the last
    // consumer-protocol member leaves, the group is classic again.
    let f = classic_member(&b, group, strategy);
    let g = classic_member(&b, group, strategy);
    f.subscribe(&["roll"]).unwrap();
    g.subscribe(&["roll"]).unwrap();
    settle(&[&d, &e, &f, &g], "four mixed members", N, &[1, 1, 1, 1]);
    batch(&[&d, &e, &f, &g], &mut seen, "four mixed members read");
    leave(d);
    leave(e);
    settle(&[&f, &g], "classic members again", N, &[2, 2]);
    assert_eq!(group_type(&b.addr, group), "classic");
    batch(&[&f, &g], &mut seen, "classic members read again");
    // Every record was read exactly once: none skipped, none read again (everything
    // read was committed before each change).
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "read more than once: {twice:?}");
    for p in 0..N {
        let offsets: Vec<i64> = seen
            .keys()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .collect();
        let want: Vec<i64> = (0..(batches * PER) as i64).collect();
        assert_eq!(offsets, want, "partition {p}");
    }
    leave(f);
    leave(g);
}
