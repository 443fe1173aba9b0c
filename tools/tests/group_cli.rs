//! `sluice group` against a real `sluice serve`, with real rdkafka consumers in the group:
//! describe (members, assignments, committed offsets, lag), list, reset-offsets (refused
//! while members are active, dry run, every spec with --execute, checked by an independent
//! client and by a consumer resuming there), delete, and the error paths. Nothing here
//! decides from timings; waits are for conditions, bounded by a hang guard.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Broker;
use common::HANG_GUARD;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

/// 2021-01-01T00:00:00Z: record `i` of each partition has this timestamp plus `i` seconds.
const TS0_MS: i64 = 1_609_459_200_000;
const PER_PARTITION: i64 = 10;

struct Out {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `sluice group <args> --bootstrap <broker>`.
fn group(b: &Broker, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("group")
        .args(args)
        .args(["--bootstrap", &b.addr])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sluice group");
    Out {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `group(...)` that must succeed; returns stdout.
fn group_ok(b: &Broker, args: &[&str]) -> String {
    let o = group(b, args);
    assert!(
        o.ok,
        "sluice group {args:?} failed\nstdout:\n{}\nstderr:\n{}",
        o.stdout, o.stderr
    );
    o.stdout
}

fn json(b: &Broker, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = group_ok(b, &a);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// (topic, partition) → committed offset, as `describe --json` shows it.
fn described_offsets(b: &Broker, g: &str) -> BTreeMap<(String, i64), Value> {
    let d = json(b, &["describe", g]);
    d["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            (
                (
                    p["topic"].as_str().unwrap().to_string(),
                    p["partition"].as_i64().unwrap(),
                ),
                p["committed"].clone(),
            )
        })
        .collect()
}

fn create_topic(b: &Broker, name: &str, partitions: i32) {
    common::create_topic_at(&b.addr, name, partitions, 1, &[]);
}

/// `PER_PARTITION` records into each partition, one batch each, record `i` stamped
/// `TS0_MS + i s` (so lookups by time land on exact offsets).
fn produce(b: &Broker, topic: &str, partitions: i32) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .set("acks", "all")
        .create()
        .expect("producer");
    for i in 0..PER_PARTITION {
        for part in 0..partitions {
            let v = format!("{part}-{i}");
            p.send(
                BaseRecord::<(), str>::to(topic)
                    .partition(part)
                    .payload(&v)
                    .timestamp(TS0_MS + i * 1000),
            )
            .map_err(|(e, _)| e)
            .expect("send");
            p.flush(HANG_GUARD).expect("flush");
        }
    }
}

fn group_consumer(b: &Broker, group: &str, client_id: &str) -> BaseConsumer {
    consumer_config(b, group, client_id)
        .create()
        .expect("consumer")
}

fn consumer_config(b: &Broker, group: &str, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &b.addr)
        .set("group.id", group)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range")
        .set("fetch.wait.max.ms", "100");
    c
}

fn partitions_of(c: &BaseConsumer) -> Vec<i64> {
    let mut v: Vec<i64> = c
        .assignment()
        .expect("assignment")
        .elements()
        .iter()
        .map(|e| i64::from(e.partition()))
        .collect();
    v.sort_unstable();
    v
}

/// Leaves the group: unsubscribe and poll until the client saw its partitions revoked.
fn leave(c: BaseConsumer) {
    c.unsubscribe();
    let started = Instant::now();
    while c.assignment().map(|a| a.count()).unwrap_or(0) > 0 {
        assert!(started.elapsed() < HANG_GUARD, "revocation");
        let _ = c.poll(Duration::from_millis(50));
    }
    // librdkafka's close can block after the group was left (rust-rdkafka issues 509/611);
    // the broker has seen the LeaveGroup, so the handle is leaked instead (as clients.rs).
    std::mem::forget(c);
}

fn wait_for_state(b: &Broker, g: &str, state: &str) {
    let started = Instant::now();
    loop {
        let d = json(b, &["describe", g]);
        if d["state"] == state {
            return;
        }
        assert!(
            started.elapsed() < HANG_GUARD,
            "group {g} never {state}: {d}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The offsets rdkafka (an independent client) reads back for the group.
fn rdkafka_committed(b: &Broker, g: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .set("group.id", g)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, HANG_GUARD).expect("committed");
    (0..partitions)
        .map(
            |p| match got.find_partition(topic, p).expect("partition").offset() {
                Offset::Offset(o) => o,
                Offset::Invalid => -1,
                other => panic!("partition {p}: {other:?}"),
            },
        )
        .collect()
}

#[test]
fn describe_list_and_reset_offsets_with_a_live_group() {
    let dir = common::tempdir("group-cli");
    let b = Broker::start(&dir.path().join("data"));
    create_topic(&b, "orders", 3);
    produce(&b, "orders", 3);

    // Two consumers join and split the three partitions.
    let c1 = group_consumer(&b, "g-cli", "client-one");
    // The second is a static member (KIP-345). It does not leave on unsubscribe; its short
    // session lets the coordinator drop it soon after.
    let c2: BaseConsumer = consumer_config(&b, "g-cli", "client-two")
        .set("group.instance.id", "static-two")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    c1.subscribe(&["orders"]).unwrap();
    c2.subscribe(&["orders"]).unwrap();
    let started = Instant::now();
    while !(partitions_of(&c1).len() + partitions_of(&c2).len() == 3
        && !partitions_of(&c1).is_empty()
        && !partitions_of(&c2).is_empty())
    {
        assert!(started.elapsed() < HANG_GUARD, "the group never split");
        let _ = c1.poll(Duration::from_millis(20));
        let _ = c2.poll(Duration::from_millis(20));
    }
    // Each commits offset 2 + p for its partitions (p0: 2, p1: 3, p2: 4).
    for c in [&c1, &c2] {
        let mut tpl = TopicPartitionList::new();
        for p in partitions_of(c) {
            tpl.add_partition_offset("orders", p as i32, Offset::Offset(2 + p))
                .unwrap();
        }
        c.commit(&tpl, CommitMode::Sync).expect("commit");
    }
    wait_for_state(&b, "g-cli", "Stable");

    let d = json(&b, &["describe", "g-cli"]);
    assert_eq!(d["group"], "g-cli");
    assert_eq!(d["protocol_type"], "consumer");
    assert_eq!(d["protocol"], "range");
    let members = d["members"].as_array().expect("members");
    assert_eq!(members.len(), 2, "{d}");
    let mut owner: BTreeMap<i64, String> = BTreeMap::new();
    for m in members {
        let consumer = match m["client_id"].as_str() {
            Some("client-one") => &c1,
            Some("client-two") => &c2,
            other => panic!("client id {other:?}"),
        };
        assert_eq!(m["host"], "/127.0.0.1", "{m}");
        let instance = if m["client_id"] == "client-two" {
            Value::from("static-two")
        } else {
            Value::Null
        };
        assert_eq!(m["group_instance_id"], instance, "{m}");
        let assigned: Vec<i64> = m["assignment"][0]["partitions"]
            .as_array()
            .expect("assignment")
            .iter()
            .map(|p| p.as_i64().unwrap())
            .collect();
        assert_eq!(m["assignment"][0]["topic"], "orders");
        assert_eq!(assigned, partitions_of(consumer), "{d}");
        for p in assigned {
            owner.insert(p, m["member_id"].as_str().unwrap().to_string());
        }
    }
    let rows = d["partitions"].as_array().expect("partitions");
    assert_eq!(rows.len(), 3);
    for (p, row) in (0i64..).zip(rows) {
        assert_eq!(row["topic"], "orders");
        assert_eq!(row["partition"], p);
        assert_eq!(row["committed"], 2 + p);
        assert_eq!(row["log_end"], PER_PARTITION);
        assert_eq!(row["lag"], PER_PARTITION - 2 - p);
        assert_eq!(row["member_id"].as_str(), Some(owner[&p].as_str()));
    }
    assert_eq!(d["total_lag"], 21);
    let text = group_ok(&b, &["describe", "g-cli"]);
    assert!(
        text.contains("STATE Stable  PROTOCOL consumer/range  MEMBERS 2"),
        "{text}"
    );
    assert!(text.contains("TOTAL LAG 21"), "{text}");
    assert!(text.contains("orders:"), "{text}");
    assert!(text.contains("static-two"), "{text}");

    let listed = json(&b, &["list"]);
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "g-cli")
        .unwrap_or_else(|| panic!("g-cli not listed: {listed}"));
    assert_eq!(entry["state"], "Stable");
    assert_eq!(entry["protocol_type"], "consumer");
    assert!(group_ok(&b, &["list"]).contains("g-cli"));

    // Refused while members are active, with or without --execute; nothing changes.
    for extra in [&[][..], &["--execute"][..]] {
        let mut args = vec![
            "reset-offsets",
            "g-cli",
            "--topic",
            "orders",
            "--to-earliest",
        ];
        args.extend_from_slice(extra);
        let o = group(&b, &args);
        assert!(!o.ok, "reset of an active group succeeded: {}", o.stdout);
        assert!(o.stderr.contains("2 active member(s)"), "{}", o.stderr);
    }
    assert_eq!(rdkafka_committed(&b, "g-cli", "orders", 3), vec![2, 3, 4]);

    leave(c1);
    leave(c2);
    wait_for_state(&b, "g-cli", "Empty");

    // Dry run (the default): a plan, nothing committed.
    let plan = group_ok(
        &b,
        &[
            "reset-offsets",
            "g-cli",
            "--topic",
            "orders",
            "--to-earliest",
        ],
    );
    assert!(plan.contains("Dry run"), "{plan}");
    assert!(
        plan.contains("g-cli  orders  1          3               0"),
        "{plan}"
    );
    assert_eq!(rdkafka_committed(&b, "g-cli", "orders", 3), vec![2, 3, 4]);
    let dry = json(
        &b,
        &[
            "reset-offsets",
            "g-cli",
            "--topic",
            "orders:2",
            "--to-offset",
            "9",
            "--dry-run",
        ],
    );
    assert_eq!(dry["executed"], false);
    assert_eq!(dry["partitions"][0]["current"], 4);
    assert_eq!(dry["partitions"][0]["new"], 9);
    assert_eq!(rdkafka_committed(&b, "g-cli", "orders", 3), vec![2, 3, 4]);

    // Each spec with --execute, read back by rdkafka.
    let reset = |args: &[&str]| {
        let mut a = vec!["reset-offsets", "g-cli"];
        a.extend_from_slice(args);
        a.push("--execute");
        let out = group_ok(&b, &a);
        assert!(out.contains("Committed"), "{out}");
        rdkafka_committed(&b, "g-cli", "orders", 3)
    };
    assert_eq!(
        reset(&["--topic", "orders", "--to-offset", "5"]),
        vec![5, 5, 5]
    );
    assert_eq!(
        reset(&["--topic", "orders:0", "--shift-by", "-2"]),
        vec![3, 5, 5]
    );
    assert_eq!(
        reset(&["--all-topics", "--shift-by", "100"]),
        vec![10, 10, 10]
    );
    assert_eq!(
        reset(&["--topic", "orders:1", "--to-earliest"]),
        vec![10, 0, 10]
    );
    assert_eq!(
        reset(&[
            "--topic",
            "orders",
            "--to-datetime",
            "2021-01-01T01:00:07+01:00"
        ]),
        vec![7, 7, 7]
    );
    // Every record is older than a day: the first offset at or after now - 1 day is the end.
    assert_eq!(
        reset(&["--topic", "orders:0,2", "--by-duration", "P1D"]),
        vec![10, 7, 10]
    );
    assert_eq!(
        reset(&["--topic", "orders:0", "--to-offset", "1000"]),
        vec![10, 7, 10]
    );
    assert_eq!(reset(&["--all-topics", "--to-latest"]), vec![10, 10, 10]);
    assert_eq!(
        reset(&["--topic", "orders", "--to-offset", "8"]),
        vec![8, 8, 8]
    );
    let d = json(&b, &["describe", "g-cli"]);
    assert_eq!(d["state"], "Empty");
    assert_eq!(d["total_lag"], 6);

    // A consumer of the group resumes exactly there: offsets 8 and 9 of each partition.
    let c = group_consumer(&b, "g-cli", "resumer");
    c.subscribe(&["orders"]).unwrap();
    let mut seen: Vec<(i32, i64)> = Vec::new();
    let started = Instant::now();
    while seen.len() < 6 {
        assert!(started.elapsed() < HANG_GUARD, "resumed with {seen:?}");
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            seen.push((m.partition(), m.offset()));
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![(0, 8), (0, 9), (1, 8), (1, 9), (2, 8), (2, 9)]);
    leave(c);
}

#[test]
fn errors_name_the_problem_and_exit_non_zero() {
    let dir = common::tempdir("group-cli-err");
    let b = Broker::start(&dir.path().join("data"));
    create_topic(&b, "t", 2);

    let o = group(&b, &["describe", "nosuch"]);
    assert!(!o.ok);
    assert!(
        o.stderr.contains("group nosuch does not exist"),
        "{}",
        o.stderr
    );

    let bad_flags: &[(&[&str], &str)] = &[
        (&["reset-offsets", "g", "--topic", "t"], "--to-earliest"),
        (&["reset-offsets", "g", "--to-earliest"], "--topic"),
        (
            &[
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--to-earliest",
                "--to-latest",
            ],
            "--to-latest",
        ),
        (
            &[
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--all-topics",
                "--to-latest",
            ],
            "--all-topics",
        ),
        (
            &[
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--to-latest",
                "--dry-run",
                "--execute",
            ],
            "--execute",
        ),
        (
            &[
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--to-datetime",
                "yesterday",
            ],
            "--to-datetime",
        ),
        (
            &["reset-offsets", "g", "--topic", "t", "--by-duration", "10m"],
            "--by-duration",
        ),
        (
            &["reset-offsets", "g", "--topic", "t:x", "--to-latest"],
            "--topic",
        ),
        (
            &["reset-offsets", "g", "--topic", "t:5", "--to-latest"],
            "the topic has 2 partitions",
        ),
        (
            &["reset-offsets", "g", "--topic", "nosuch", "--to-latest"],
            "--topic nosuch: no such topic",
        ),
        (
            &["reset-offsets", "g", "--topic", "t", "--shift-by", "1"],
            "has no committed offset",
        ),
        (
            &["reset-offsets", "g", "--all-topics", "--to-latest"],
            "no committed offsets",
        ),
        (&["delete", "a", "b", "--topic", "t"], "exactly one GROUP"),
    ];
    for (args, needle) in bad_flags {
        let o = group(&b, args);
        assert!(!o.ok, "{args:?} succeeded: {}", o.stdout);
        assert_ne!(o.code, Some(0));
        assert!(
            o.stderr.contains(needle),
            "{args:?}: {needle:?} not in {}",
            o.stderr
        );
    }
    // Nothing was committed by any of them.
    assert_eq!(rdkafka_committed(&b, "g", "t", 2), vec![-1, -1]);

    let o = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["group", "list", "--bootstrap", "127.0.0.1:1"])
        .output()
        .expect("run");
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("--bootstrap 127.0.0.1:1"), "{stderr}");
}

#[test]
fn delete_removes_a_topics_offsets_then_the_group() {
    let dir = common::tempdir("group-cli-del");
    let b = Broker::start(&dir.path().join("data"));
    create_topic(&b, "a", 1);
    create_topic(&b, "b", 2);
    for t in ["a", "b"] {
        group_ok(
            &b,
            &[
                "reset-offsets",
                "g-del",
                "--topic",
                t,
                "--to-earliest",
                "--execute",
            ],
        );
    }
    let offsets = described_offsets(&b, "g-del");
    assert_eq!(offsets.len(), 3, "{offsets:?}");
    assert!(json(&b, &["list"]).to_string().contains("g-del"));

    // An active member blocks deleting the group.
    let c = group_consumer(&b, "g-del", "member");
    c.subscribe(&["b"]).unwrap();
    let started = Instant::now();
    while partitions_of(&c).is_empty() {
        assert!(started.elapsed() < HANG_GUARD, "never assigned");
        let _ = c.poll(Duration::from_millis(20));
    }
    let o = group(&b, &["delete", "g-del"]);
    assert!(!o.ok);
    assert!(o.stderr.contains("active members"), "{}", o.stderr);
    leave(c);
    wait_for_state(&b, "g-del", "Empty");

    let out = group_ok(&b, &["delete", "g-del", "--topic", "a"]);
    assert!(out.contains("Deleted the offsets of topic a"), "{out}");
    let offsets = described_offsets(&b, "g-del");
    assert_eq!(
        offsets.keys().cloned().collect::<Vec<_>>(),
        vec![("b".to_string(), 0), ("b".to_string(), 1)]
    );

    let out = group_ok(&b, &["delete", "g-del"]);
    assert!(out.contains("Deleted group g-del."), "{out}");
    let o = group(&b, &["describe", "g-del"]);
    assert!(!o.ok && o.stderr.contains("does not exist"), "{}", o.stderr);
    assert!(!json(&b, &["list"]).to_string().contains("g-del"));
    let o = group(&b, &["delete", "g-del"]);
    assert!(
        !o.ok && o.stderr.contains("GroupIdNotFound"),
        "{}",
        o.stderr
    );
}
