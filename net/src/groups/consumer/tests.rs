use super::*;
use crate::groups::JoinRequest;
use crate::kafka::errors::ErrorCode;

struct Topics {
    version: u64,
    list: Vec<(String, TopicId, i32)>,
}

impl TopicSource for Topics {
    fn version(&self) -> u64 {
        self.version
    }
    fn topic(&self, name: &str) -> Option<(TopicId, i32)> {
        self.list.iter().find(|t| t.0 == name).map(|t| (t.1, t.2))
    }
    fn each(&self, f: &mut dyn FnMut(&str, TopicId, i32)) {
        for t in &self.list {
            f(&t.0, t.1, t.2);
        }
    }
}

const T: TopicId = TopicId(7);

fn topics() -> Topics {
    Topics {
        version: 1,
        list: vec![("t".into(), T, 6)],
    }
}

fn config() -> ConsumerConfig {
    ConsumerConfig {
        session_timeout_ms: 45_000,
        heartbeat_interval_ms: 500,
        members_max: 3,
    }
}

fn join(id: &str) -> Heartbeat {
    Heartbeat {
        member_id: id.into(),
        member_epoch: 0,
        rebalance_timeout_ms: 60_000,
        topic_names: Some(vec!["t".into()]),
        owned: Some(vec![]),
        ..Heartbeat::default()
    }
}

/// A heartbeat at `epoch` reporting `owned` partitions of topic T.
fn beat(id: &str, epoch: i32, owned: &[i32]) -> Heartbeat {
    Heartbeat {
        member_id: id.into(),
        member_epoch: epoch,
        rebalance_timeout_ms: -1,
        owned: Some(vec![(T, owned.to_vec())]),
        ..Heartbeat::default()
    }
}

fn parts(ok: &HeartbeatOk) -> Vec<i32> {
    ok.assignment
        .as_ref()
        .and_then(|a| a.get(&T))
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default()
}

struct Harness {
    g: ConsumerGroup,
    topics: Topics,
    now: Instant,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            g: ConsumerGroup::new(0),
            topics: topics(),
            now: Instant::now(),
        }
    }
    fn hb(&mut self, mut hb: Heartbeat) -> Result<HeartbeatOk, Refusal> {
        validate(&mut hb)?;
        self.g.heartbeat(&hb, &self.topics, &config(), self.now, 0)
    }
    fn ok(&mut self, hb: Heartbeat) -> HeartbeatOk {
        self.hb(hb).expect("heartbeat accepted")
    }
    fn held(&self, id: &str) -> Vec<i32> {
        self.g
            .member(id)
            .unwrap()
            .assigned
            .get(&T)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[test]
fn a_third_member_gets_partitions_only_after_their_owners_release_them() {
    let mut h = Harness::new();
    let a = h.ok(join("a"));
    assert_eq!((a.member_epoch, parts(&a).len()), (1, 6));
    let b = h.ok(join("b"));
    assert_eq!(b.member_epoch, 2);
    assert!(parts(&b).is_empty(), "a still holds everything");
    // a learns it must give three up; it stays at epoch 1 until it confirms.
    let a = h.ok(beat("a", 1, &[0, 1, 2, 3, 4, 5]));
    assert_eq!(a.member_epoch, 1);
    let kept = parts(&a);
    assert_eq!(kept.len(), 3);
    assert_eq!(h.g.state(), ConsumerState::Reconciling);
    // Until a confirms, b gets nothing.
    assert!(parts(&h.ok(beat("b", 2, &[]))).is_empty());
    let a = h.ok(beat("a", 1, &kept));
    assert_eq!(a.member_epoch, 2);
    let b = h.ok(beat("b", 2, &[]));
    assert_eq!(parts(&b).len(), 3);
    let b_parts = parts(&b);
    h.ok(beat("b", 2, &b_parts));
    assert_eq!(h.g.state(), ConsumerState::Stable);

    // c joins: a and b each give up only what c takes.
    let c = h.ok(join("c"));
    assert_eq!(c.member_epoch, 3);
    let a = h.ok(beat("a", 2, &kept));
    let b = h.ok(beat("b", 2, &b_parts));
    let a_left = parts(&a);
    let b_left = parts(&b);
    assert_eq!((a_left.len(), b_left.len()), (2, 2));
    assert!(
        a_left.iter().all(|p| kept.contains(p)),
        "no partition moves between a and b"
    );
    assert!(b_left.iter().all(|p| b_parts.contains(p)));
    h.ok(beat("a", 2, &a_left));
    h.ok(beat("b", 2, &b_left));
    let c = h.ok(beat("c", 3, &[]));
    assert_eq!(parts(&c).len(), 2);
    let c_parts = parts(&c);
    h.ok(beat("c", 3, &c_parts));
    assert_eq!(h.g.state(), ConsumerState::Stable);
    let mut all: Vec<i32> = ["a", "b", "c"].iter().flat_map(|m| h.held(m)).collect();
    all.sort();
    assert_eq!(all, vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn epochs_are_checked_as_kafka_does() {
    let mut h = Harness::new();
    h.ok(join("a"));
    let e = h.hb(beat("a", 5, &[])).unwrap_err();
    assert_eq!(e.code, code::FENCED_MEMBER_EPOCH);
    let e = h.hb(beat("a", i32::MAX, &[])).unwrap_err();
    assert_eq!(e.code, code::FENCED_MEMBER_EPOCH);
    let e = h.hb(beat("zz", 1, &[])).unwrap_err();
    assert_eq!(e.code, code::UNKNOWN_MEMBER_ID);
    for bad in [-3, i32::MIN] {
        assert_eq!(
            h.hb(beat("a", bad, &[])).unwrap_err().code,
            code::INVALID_REQUEST
        );
    }
    // b joins: a's epoch moves to 2 once it gave up its share; a heartbeat with the
    // previous epoch and a subset of the assignment is still accepted (a lost answer).
    h.ok(join("b"));
    let a = h.ok(beat("a", 1, &[0, 1, 2, 3, 4, 5]));
    let kept = parts(&a);
    assert_eq!(h.ok(beat("a", 1, &kept)).member_epoch, 2);
    assert_eq!(h.ok(beat("a", 1, &kept)).member_epoch, 2);
    let e = h.hb(beat("a", 1, &[0, 1, 2, 3, 4, 5])).unwrap_err();
    assert_eq!(e.code, code::FENCED_MEMBER_EPOCH, "not a subset");
    h.ok(join("c"));
    let e = h.hb(join("d")).unwrap_err();
    assert_eq!(e.code, code::GROUP_MAX_SIZE_REACHED);
}

#[test]
fn bad_requests_get_kafkas_codes() {
    let mut h = Harness::new();
    let mut no_timeout = join("a");
    no_timeout.rebalance_timeout_ms = -1;
    let mut no_sub = join("a");
    no_sub.topic_names = None;
    let mut owned = join("a");
    owned.owned = Some(vec![(T, vec![1])]);
    let mut static_no_instance = beat("a", STATIC_LEAVE_EPOCH, &[]);
    static_no_instance.instance_id = None;
    let mut long_id = join(&"x".repeat(ID_BYTES_MAX + 1));
    long_id.member_id = "x".repeat(ID_BYTES_MAX + 1);
    for hb in [
        join(""),
        no_timeout,
        no_sub,
        owned,
        static_no_instance,
        long_id,
    ] {
        assert_eq!(h.hb(hb).unwrap_err().code, code::INVALID_REQUEST);
    }
    let mut assignor = join("a");
    assignor.assignor = Some("sticky-cooperative".into());
    assert_eq!(h.hb(assignor).unwrap_err().code, code::UNSUPPORTED_ASSIGNOR);
    let mut regex = join("a");
    regex.regex = Some("(unclosed".into());
    assert_eq!(
        h.hb(regex).unwrap_err().code,
        code::INVALID_REGULAR_EXPRESSION
    );
    assert!(h.g.is_empty(), "nothing refused joined");
}

#[test]
fn leaving_frees_partitions_and_a_static_member_comes_back_to_its_own() {
    let mut h = Harness::new();
    let mut s = join("s1");
    s.instance_id = Some("inst".into());
    h.ok(s);
    h.ok(join("d"));
    let s = h.ok(beat("s1", 1, &[0, 1, 2, 3, 4, 5]));
    let mine = parts(&s);
    h.ok(beat("s1", 1, &mine));
    let d = h.ok(beat("d", 2, &[]));
    h.ok(beat("d", 2, &parts(&d)));
    assert_eq!(h.g.state(), ConsumerState::Stable);
    let epoch = h.g.epoch;

    // The static member leaves for a restart: it keeps its place and partitions.
    let mut leave = beat("s1", STATIC_LEAVE_EPOCH, &[]);
    leave.instance_id = Some("inst".into());
    assert_eq!(h.ok(leave).member_epoch, STATIC_LEAVE_EPOCH);
    assert_eq!(h.g.epoch, epoch, "no rebalance");
    // A new incarnation with the same instance id gets the same partitions back.
    let mut back = join("s2");
    back.instance_id = Some("inst".into());
    let back = h.ok(back);
    assert_eq!(parts(&back), mine);
    assert_eq!(back.member_epoch, epoch);
    assert_eq!(h.g.epoch, epoch, "still no rebalance");
    assert!(h.g.member("s1").is_none());
    // While s2 is active, another incarnation is refused.
    let mut third = join("s3");
    third.instance_id = Some("inst".into());
    assert_eq!(h.hb(third).unwrap_err().code, code::UNRELEASED_INSTANCE_ID);

    // The dynamic member leaves: its partitions go to the static one.
    let d_parts = h.held("d");
    assert_eq!(h.ok(beat("d", LEAVE_EPOCH, &[])).member_epoch, LEAVE_EPOCH);
    assert!(h.g.member("d").is_none());
    let s = h.ok(beat("s2", epoch, &mine));
    assert_eq!(parts(&s).len(), 6, "{d_parts:?} taken over");
}

#[test]
fn silent_and_slow_members_are_removed() {
    let mut h = Harness::new();
    h.ok(join("a"));
    h.ok(join("b"));
    let session = Duration::from_millis(45_000);
    assert!(h.g.expire(session, h.now, 0).is_empty());
    // a is told to revoke and never does: fenced after its rebalance timeout (60 s),
    // though its session is kept alive.
    h.ok(beat("a", 1, &[0, 1, 2, 3, 4, 5]));
    let later = h.now + Duration::from_millis(40_000);
    h.now = later;
    h.ok(beat("a", 1, &[0, 1, 2, 3, 4, 5]));
    h.ok(beat("b", 2, &[]));
    h.now = later + Duration::from_millis(30_000);
    let gone = h.g.expire(session, h.now, 0);
    assert_eq!(gone, vec!["a".to_string()]);
    // b's session was renewed 30 s ago: still there; after 46 s of silence it goes too.
    h.now += Duration::from_millis(16_000);
    assert_eq!(h.g.expire(session, h.now, 0), vec!["b".to_string()]);
    assert_eq!(h.g.state(), ConsumerState::Empty);
}

#[test]
fn a_topic_created_later_enters_a_regex_subscription() {
    let mut h = Harness::new();
    let mut r = join("a");
    r.topic_names = Some(vec![]);
    r.regex = Some("^t.*".into());
    assert_eq!(parts(&h.ok(r)).len(), 6);
    h.topics.version = 2;
    h.topics.list.push(("t2".into(), TopicId(8), 2));
    h.topics.list.push(("other".into(), TopicId(9), 2));
    let a = h.ok(beat("a", 1, &[0, 1, 2, 3, 4, 5]));
    assert_eq!(a.member_epoch, 2);
    let got = a.assignment.unwrap();
    assert_eq!(got[&TopicId(8)].len(), 2);
    assert!(!got.contains_key(&TopicId(9)));
    // Deleted: it leaves the assignment.
    h.topics.version = 3;
    h.topics.list.retain(|t| t.0 != "t2");
    let a = h.ok(beat("a", 2, &[0, 1, 2, 3, 4, 5]));
    assert_eq!(a.member_epoch, 3);
    assert!(!a.assignment.unwrap().contains_key(&TopicId(8)));
}

#[test]
fn commits_and_fetches_follow_member_epochs() {
    let mut h = Harness::new();
    assert_eq!(
        h.g.check_commit("", -1, 9),
        code::NONE,
        "empty group: admin commits"
    );
    h.ok(join("a"));
    assert_eq!(h.g.check_commit("a", 1, 9), code::NONE);
    assert_eq!(h.g.check_commit("a", 0, 9), code::STALE_MEMBER_EPOCH);
    assert_eq!(h.g.check_commit("a", 1, 8), code::UNSUPPORTED_VERSION);
    assert_eq!(h.g.check_commit("x", 1, 9), code::UNKNOWN_MEMBER_ID);
    assert_eq!(h.g.check_commit("", -1, 9), code::UNKNOWN_MEMBER_ID);
    assert_eq!(h.g.check_fetch(None, -1), code::NONE);
    assert_eq!(h.g.check_fetch(Some("a"), 1), code::NONE);
    assert_eq!(h.g.check_fetch(Some("a"), 2), code::STALE_MEMBER_EPOCH);
    assert_eq!(h.g.check_fetch(Some("x"), 1), code::UNKNOWN_MEMBER_ID);
}

/// Feeds records through the offsets-topic codec into a stored group, as the loader does.
fn replay(stored: &mut StoredGroup, recs: &super::super::OffsetsRecords) {
    for (k, v) in recs {
        match super::super::records::decode(k, v.as_deref()) {
            Some(super::super::records::OffsetsRecord::Consumer { group, record }) => {
                assert_eq!(group, "g");
                stored.apply(record);
            }
            other => panic!("not a consumer-group record: {other:?}"),
        }
    }
}

#[test]
fn records_restore_epochs_assignments_and_targets() {
    let mut h = Harness::new();
    let mut stored = StoredGroup::default();
    let mut s = join("s");
    s.instance_id = Some("inst".into());
    h.ok(s);
    replay(&mut stored, &h.g.records("g", false));
    h.ok(join("d"));
    replay(&mut stored, &h.g.records("g", false));
    let s = h.ok(beat("s", 1, &[0, 1, 2, 3, 4, 5]));
    replay(&mut stored, &h.g.records("g", false));
    // The sweep's records are the same changes again.
    let swept = h.g.records("g", true);
    assert!(!swept.is_empty());
    assert!(h.g.records("g", true).is_empty() && h.g.records("g", false).is_empty());
    // Restored mid-reconciliation: s still revoking, d waiting for the partitions.
    let r = ConsumerGroup::restore(stored.clone(), h.now, 0);
    assert_eq!(
        (r.epoch, r.assignment_epoch),
        (h.g.epoch, h.g.assignment_epoch)
    );
    for id in ["s", "d"] {
        let (a, b) = (r.member(id).unwrap(), h.g.member(id).unwrap());
        assert_eq!(
            (a.epoch, a.state, &a.assigned, &a.revoking),
            (b.epoch, b.state, &b.assigned, &b.revoking)
        );
        assert_eq!(r.target_of(id), h.g.target_of(id));
        assert_eq!(a.instance_id, b.instance_id);
    }
    // The restored coordinator carries on where the old one was.
    h.g = r;
    let kept = parts(&s);
    assert_eq!(h.ok(beat("s", 1, &kept)).member_epoch, 2);
    let d = h.ok(beat("d", 2, &[]));
    assert_eq!(parts(&d).len(), 3);
    // A removed member's records are tombstoned.
    h.ok(beat("d", LEAVE_EPOCH, &[]));
    replay(&mut stored, &h.g.records("g", false));
    assert!(!stored.members.contains_key("d") && !stored.current.contains_key("d"));
    assert!(!stored.targets.contains_key("d"));
    assert_eq!(stored.epoch, h.g.epoch);
}

/// One simulated client: what it believes its epoch and partitions are, as librdkafka
/// keeps them (it gives partitions up as soon as an assignment leaves them out).
#[derive(Debug, Clone)]
struct Client {
    id: String,
    instance: Option<String>,
    epoch: i32,
    owned: Assignment,
    regex: bool,
}

/// A few steps of a xorshift generator: enough for choosing operations.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn client_beat(c: &Client) -> Heartbeat {
    let mut hb = Heartbeat {
        member_id: c.id.clone(),
        member_epoch: c.epoch,
        instance_id: c.instance.clone(),
        rebalance_timeout_ms: -1,
        owned: Some(
            c.owned
                .iter()
                .map(|(t, ps)| (*t, ps.iter().copied().collect()))
                .collect(),
        ),
        ..Heartbeat::default()
    };
    if c.epoch == 0 {
        hb.rebalance_timeout_ms = 60_000;
        hb.owned = Some(vec![]);
        if c.regex {
            hb.topic_names = Some(vec![]);
            hb.regex = Some("t.*".into());
        } else {
            hb.topic_names = Some(vec!["t".into(), "t2".into()]);
        }
    }
    hb
}

/// Sends the client's heartbeat and updates it from the answer as a client would.
fn step(h: &mut Harness, c: &mut Client) {
    match h.hb(client_beat(c)) {
        Ok(ok) => {
            c.epoch = ok.member_epoch;
            if let Some(a) = ok.assignment {
                c.owned = a;
            }
        }
        Err(r) if [code::FENCED_MEMBER_EPOCH, code::UNKNOWN_MEMBER_ID].contains(&r.code) => {
            c.epoch = 0;
            c.owned.clear();
        }
        Err(r) => panic!("{c:?}: {r:?}"),
    }
}

/// KIP-848's safety rule: no partition is held (assigned or still being revoked) by two
/// members at once, and the clients never hold one another's partitions.
fn assert_single_owners(h: &Harness, clients: &[Client], seed: u64) {
    let mut seen: BTreeMap<(TopicId, i32), String> = BTreeMap::new();
    for m in h.g.members() {
        for (t, ps) in m.assigned.iter().chain(m.revoking.iter()) {
            for p in ps {
                if let Some(other) = seen.insert((*t, *p), m.member_id.clone()) {
                    panic!("seed {seed}: {t:?}-{p} held by {other} and {}", m.member_id);
                }
            }
        }
    }
    let mut held: BTreeMap<(TopicId, i32), &str> = BTreeMap::new();
    for c in clients {
        for (t, ps) in &c.owned {
            for p in ps {
                if let Some(other) = held.insert((*t, *p), &c.id) {
                    panic!(
                        "seed {seed}: clients {other} and {} both consume {t:?}-{p}",
                        c.id
                    );
                }
            }
        }
    }
}

#[test]
fn random_membership_topic_changes_and_restarts_never_share_a_partition_and_converge() {
    let seeds: Vec<u64> = match std::env::var("SLUICE_CG_SEED") {
        Ok(s) => vec![s.parse().expect("SLUICE_CG_SEED is a number")],
        Err(_) => (1..=40)
            .map(|i| 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i))
            .collect(),
    };
    for seed in seeds {
        println!("seed {seed} (replay with SLUICE_CG_SEED={seed})");
        let mut rng = Rng(seed | 1);
        let mut h = Harness::new();
        let mut clients: Vec<Client> = Vec::new();
        let mut next = 0;
        // What the offsets topic holds, replayed as the loader would.
        let mut stored = StoredGroup::default();
        for _ in 0..300 {
            match rng.below(11) {
                4 => {
                    // The coordinator restarts from its records.
                    h.g = ConsumerGroup::restore(stored.clone(), h.now, 0);
                }
                0 | 1 if clients.len() < 3 => {
                    next += 1;
                    let instance = (rng.below(2) == 0).then(|| format!("inst-{next}"));
                    let regex = rng.below(3) == 0;
                    let c = Client {
                        id: format!("m{next}"),
                        instance,
                        epoch: 0,
                        owned: Assignment::new(),
                        regex,
                    };
                    clients.push(c);
                }
                2 if !clients.is_empty() => {
                    // A member leaves (a static one for good, with -1 too).
                    let mut c = clients.remove(rng.below(clients.len()));
                    c.epoch = LEAVE_EPOCH;
                    let _ = h.hb(client_beat(&c));
                }
                3 => {
                    // The topics change: a second topic comes and goes, partitions grow.
                    h.topics.version += 1;
                    if h.topics.list.iter().any(|t| t.0 == "t2") {
                        h.topics.list.retain(|t| t.0 != "t2");
                    } else {
                        h.topics
                            .list
                            .push(("t2".into(), TopicId(8), 1 + rng.below(4) as i32));
                    }
                    if rng.below(3) == 0 {
                        h.topics.list[0].2 += 1;
                    }
                }
                _ if !clients.is_empty() => {
                    let i = rng.below(clients.len());
                    let mut c = clients[i].clone();
                    step(&mut h, &mut c);
                    clients[i] = c;
                }
                _ => {}
            }
            replay(&mut stored, &h.g.records("g", false));
            // A client that left gave its partitions up; the others are checked.
            assert_single_owners(&h, &clients, seed);
        }
        // Honest heartbeats from everyone converge to the target, every partition of the
        // subscribed topics held exactly once.
        for _ in 0..20 {
            for i in 0..clients.len() {
                let mut c = clients[i].clone();
                step(&mut h, &mut c);
                clients[i] = c;
                assert_single_owners(&h, &clients, seed);
            }
        }
        if clients.is_empty() {
            continue;
        }
        assert_eq!(h.g.state(), ConsumerState::Stable, "seed {seed}");
        let total: usize = h.topics.list.iter().map(|t| t.2 as usize).sum();
        let held: usize = clients
            .iter()
            .map(|c| c.owned.values().map(BTreeSet::len).sum::<usize>())
            .sum();
        assert_eq!(
            held, total,
            "seed {seed}: every partition consumed once: {clients:?}"
        );
    }
}

#[test]
fn a_groups_own_session_timeout_wins_over_the_brokers() {
    let mut h = Harness::new();
    let mut hb = join("a");
    validate(&mut hb).unwrap();
    let config = ConsumerConfig {
        session_timeout_ms: 1_000,
        ..config()
    };
    h.g.heartbeat(&hb, &h.topics, &config, h.now, 0).unwrap();
    let broker_default = Duration::from_millis(45_000);
    assert!(h
        .g
        .expire(broker_default, h.now + Duration::from_millis(900), 0)
        .is_empty());
    let gone =
        h.g.expire(broker_default, h.now + Duration::from_millis(1_100), 0);
    assert_eq!(gone, vec!["a".to_string()]);
}

/// The embedded consumer protocol subscription (v1) of a classic member to topic `t`,
/// listing `owned` partitions.
fn classic_subscription(owned: &[i32]) -> bytes::Bytes {
    use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition;
    use kafka_protocol::messages::{ConsumerProtocolSubscription, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let sub = ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_static_str("t")])
        .with_owned_partitions(vec![TopicPartition::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(owned.to_vec())]);
    let mut b = bytes::BytesMut::new();
    bytes::BufMut::put_i16(&mut b, 1);
    sub.encode(&mut b, 1).unwrap();
    b.freeze()
}

fn classic_join_of(id: &str, owned: &[i32]) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: id.into(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 20_000,
        protocol_type: PROTOCOL_TYPE.into(),
        protocols: vec![
            ("range".into(), classic_subscription(owned)),
            ("roundrobin".into(), classic_subscription(owned)),
        ],
        require_known_member_id: false,
    }
}

/// A classic group of members `a` (partitions 0–2) and `b` (3–5) at generation 3.
fn classic_group() -> super::super::records::GroupValue {
    use super::super::records::{GroupValue, MemberValue};
    let member = |id: &str, ps: Vec<i32>| MemberValue {
        member_id: id.into(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        rebalance_timeout_ms: 20_000,
        session_timeout_ms: 10_000,
        subscription: classic_subscription(&[]),
        assignment: classic::encode_assignment(0, &[("t".into(), ps)]),
    };
    GroupValue {
        protocol_type: PROTOCOL_TYPE.into(),
        generation: 3,
        protocol: Some("range".into()),
        leader: Some("a".into()),
        state_timestamp_ms: 0,
        members: vec![member("a", vec![0, 1, 2]), member("b", vec![3, 4, 5])],
    }
}

fn synced(h: &mut Harness, id: &str, generation: i32) -> Result<Vec<i32>, ErrorCode> {
    let (_, bytes) =
        h.g.classic_sync(id, None, generation, (None, None), h.now)?;
    let a = classic::decode_assignment(&bytes).expect("an assignment");
    Ok(a.into_iter().flat_map(|(_, ps)| ps).collect())
}

#[test]
fn a_classic_group_converts_hosts_its_classic_members_and_goes_back() {
    let mut h = Harness::new();
    h.g = ConsumerGroup::from_classic(&classic_group(), &h.topics, h.now).expect("converts");
    assert_eq!((h.g.epoch, h.g.assignment_epoch), (3, 3));
    assert_eq!((h.held("a"), h.held("b")), (vec![0, 1, 2], vec![3, 4, 5]));
    // A consumer-protocol member joins: the group epoch moves, and it waits for the
    // partitions the classic members still hold.
    let c = h.ok(join("c"));
    assert_eq!((c.member_epoch, parts(&c)), (4, vec![]));
    let now = h.now;
    for (id, generation, want) in [
        ("a", 3, code::REBALANCE_IN_PROGRESS),
        ("a", 2, code::ILLEGAL_GENERATION),
        ("x", 3, code::UNKNOWN_MEMBER_ID),
        // A consumer-protocol member is no classic one.
        ("c", 4, code::UNKNOWN_MEMBER_ID),
    ] {
        let got = h.g.classic_heartbeat(id, None, generation, now);
        assert_eq!(got, want, "{id} at {generation}");
    }
    assert_eq!(synced(&mut h, "a", 3), Err(code::REBALANCE_IN_PROGRESS));
    // Each classic member rejoins having given everything up (an eager protocol) and
    // is answered with its share at the new epoch.
    for id in ["a", "b"] {
        let j =
            h.g.classic_join(
                &classic_join_of(id, &[]),
                "unused".into(),
                &h.topics,
                &config(),
                now,
            )
            .unwrap();
        assert_eq!((j.generation, j.protocol_name.as_str()), (4, "range"));
        let got = synced(&mut h, id, 4).unwrap();
        assert_eq!(got, h.held(id));
        assert_eq!(got.len(), 2, "{id}");
        assert_eq!(h.g.classic_heartbeat(id, None, 4, now), code::NONE);
    }
    let c = h.ok(beat("c", 4, &[]));
    assert_eq!(parts(&c).len(), 2);
    let mut all: Vec<i32> = ["a", "b", "c"].iter().flat_map(|id| h.held(id)).collect();
    all.sort();
    assert_eq!(all, vec![0, 1, 2, 3, 4, 5], "each partition once");
    // Classic commits carry the generation, in any version.
    assert_eq!(h.g.check_commit("a", 4, 8), code::NONE);
    assert_eq!(h.g.check_commit("a", 3, 8), code::ILLEGAL_GENERATION);
    // The last consumer-protocol member leaves: only classic members are left, and the
    // classic group they make keeps their assignments at the group epoch.
    assert!(!h.g.all_classic());
    h.ok(beat("c", LEAVE_EPOCH, &[]));
    assert!(h.g.all_classic());
    let v = h.g.to_classic(0).expect("back to classic");
    assert_eq!(
        (v.generation, v.protocol.as_deref()),
        (h.g.epoch, Some("range"))
    );
    for m in &v.members {
        let a = classic::decode_assignment(&m.assignment).unwrap();
        let ps: Vec<i32> = a.into_iter().flat_map(|(_, ps)| ps).collect();
        assert_eq!(ps, h.held(&m.member_id));
        assert_eq!(m.session_timeout_ms, 10_000);
    }
}

#[test]
fn classic_joins_get_kafkas_codes_and_a_silent_rejoin_is_removed() {
    let mut h = Harness::new();
    h.g = ConsumerGroup::from_classic(&classic_group(), &h.topics, h.now).expect("converts");
    let now = h.now;
    let mut j = classic_join_of("", &[]);
    j.require_known_member_id = true;
    let r =
        h.g.classic_join(&j, "fresh".into(), &h.topics, &config(), now);
    assert_eq!(r, Err((code::MEMBER_ID_REQUIRED, "fresh".to_string())));
    j.protocol_type = "connect".into();
    let r =
        h.g.classic_join(&j, "fresh".into(), &h.topics, &config(), now);
    assert_eq!(r.map_err(|e| e.0), Err(code::INCONSISTENT_GROUP_PROTOCOL));
    let mut j = classic_join_of("d", &[]);
    j.protocols = (0..=classic::CLASSIC_PROTOCOLS_MAX)
        .map(|i| (format!("p{i}"), classic_subscription(&[])))
        .collect();
    let r = h.g.classic_join(&j, "d".into(), &h.topics, &config(), now);
    assert_eq!(r.map_err(|e| e.0), Err(code::INCONSISTENT_GROUP_PROTOCOL));
    let mut j = classic_join_of("d", &[]);
    j.protocols[0].1 = bytes::Bytes::from_static(&[0, 0, 0xff]);
    let r = h.g.classic_join(&j, "d".into(), &h.topics, &config(), now);
    assert_eq!(r.map_err(|e| e.0), Err(code::INCONSISTENT_GROUP_PROTOCOL));
    // A third classic member joins (members_max is 3); a fourth finds the group full.
    h.g.classic_join(
        &classic_join_of("d", &[]),
        "d".into(),
        &h.topics,
        &config(),
        now,
    )
    .unwrap();
    let r = h.g.classic_join(
        &classic_join_of("e", &[]),
        "e".into(),
        &h.topics,
        &config(),
        now,
    );
    assert_eq!(r.map_err(|e| e.0), Err(code::GROUP_MAX_SIZE_REACHED));
    // `a` is told to rejoin and never does: its heartbeats do not keep it past its
    // rebalance timeout (Kafka's join timeout).
    assert_eq!(
        h.g.classic_heartbeat("a", None, 3, now),
        code::REBALANCE_IN_PROGRESS
    );
    let later = now + Duration::from_millis(20_001);
    assert_eq!(
        h.g.classic_heartbeat("a", None, 3, later),
        code::REBALANCE_IN_PROGRESS
    );
    assert_eq!(
        h.g.classic_heartbeat("b", None, 3, later),
        code::REBALANCE_IN_PROGRESS
    );
    // `d` was silent past its own session timeout (10 s, not the group's 45 s).
    let gone = h.g.expire(Duration::from_secs(45), later, 0);
    assert_eq!(gone, vec!["a".to_string(), "d".to_string()]);
    // A member that joins and never syncs is removed after its rebalance timeout (a
    // member that syncs is not: see the test above, where `a` and `b` outlive it).
    let r = h.g.classic_join(
        &classic_join_of("e", &[]),
        "e".into(),
        &h.topics,
        &config(),
        later,
    );
    assert!(r.is_ok(), "{r:?}");
    let much_later = later + Duration::from_millis(20_001);
    assert_eq!(
        h.g.classic_heartbeat("b", None, 3, much_later),
        code::REBALANCE_IN_PROGRESS
    );
    let gone = h.g.expire(Duration::from_secs(45), much_later, 0);
    // `b`, told to rejoin at `later`, never did either.
    assert_eq!(gone, vec!["b".to_string(), "e".to_string()]);
    // A classic member leaves by LeaveGroup, once.
    let f = classic_join_of("f", &[]);
    h.g.classic_join(&f, "f".into(), &h.topics, &config(), much_later)
        .unwrap();
    assert_eq!(h.g.classic_leave("f", None, 0), code::NONE);
    assert_eq!(h.g.classic_leave("f", None, 0), code::UNKNOWN_MEMBER_ID);
}

#[test]
fn hosted_classic_members_come_back_classic_after_a_restart() {
    let mut h = Harness::new();
    h.g = ConsumerGroup::from_classic(&classic_group(), &h.topics, h.now).expect("converts");
    h.ok(join("c"));
    let now = h.now;
    h.g.classic_join(
        &classic_join_of("a", &[]),
        "a".into(),
        &h.topics,
        &config(),
        now,
    )
    .unwrap();
    let mut stored = StoredGroup::default();
    replay(&mut stored, &h.g.records("g", true));
    let back = ConsumerGroup::restore(stored, now, 0);
    let (a, b) = (back.member("a").unwrap(), back.member("b").unwrap());
    assert_eq!(a.classic, h.g.member("a").unwrap().classic);
    assert_eq!(a.classic.as_ref().map(|c| c.protocols.len()), Some(2));
    assert_eq!(
        b.classic.as_ref().map(|c| c.session_timeout_ms),
        Some(10_000)
    );
    assert!(back.member("c").unwrap().classic.is_none());
    // They carry on as classic members: `a` at its epoch, `b` told to rejoin.
    let mut h2 = Harness::new();
    h2.g = back;
    assert_eq!(h2.g.classic_heartbeat("a", None, 4, now), code::NONE);
    assert_eq!(
        h2.g.classic_heartbeat("b", None, 3, now),
        code::REBALANCE_IN_PROGRESS
    );
}

#[test]
fn a_static_classic_member_restarting_on_the_consumer_protocol_takes_its_place() {
    use super::super::records::GroupValue;
    let mut v: GroupValue = classic_group();
    v.members[0].group_instance_id = Some("inst-a".into());
    let mut h = Harness::new();
    h.g = ConsumerGroup::from_classic(&v, &h.topics, h.now).expect("converts");
    let mut hb = join("a2");
    hb.instance_id = Some("inst-a".into());
    let ok = h.ok(hb);
    assert_eq!(ok.member_id, "a2");
    assert!(
        h.g.member("a").is_none(),
        "the classic incarnation is replaced"
    );
    let m = h.g.member("a2").unwrap();
    assert!(m.classic.is_none());
    assert_eq!(
        h.held("a2"),
        vec![0, 1, 2],
        "it keeps the old incarnation's partitions"
    );
}
