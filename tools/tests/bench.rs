//! `sluice bench` against a real `sluice serve`: short produce, consume and e2e runs through
//! the binary, with their counts checked against the broker (end offsets) and against an
//! independent client (rdkafka). Nothing here decides from timings.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;

use common::Broker;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

/// The run's count check passed and counted `messages` acknowledged.
fn assert_all_counted(r: &Value, messages: u64) {
    assert_eq!(r["check"]["acknowledged"], messages, "{r}");
    assert_eq!(r["check"]["ok"], true, "{r}");
}

/// Runs `sluice bench <args> --json FILE` and returns the parsed report.
fn bench(broker: &Broker, dir: &Path, name: &str, args: &[&str]) -> Value {
    let json = dir.join(format!("{name}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("bench")
        .args(args)
        .args([
            "--bootstrap",
            &broker.addr,
            "--cores",
            "0-1",
            "--no-pin",
            "--quiet",
        ])
        .arg("--json")
        .arg(&json)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sluice bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sluice bench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    serde_json::from_slice(&std::fs::read(&json).expect("read the json report"))
        .expect("parse the json report")
}

fn total<'a>(report: &'a Value, role: &str) -> &'a Value {
    report["totals"]
        .as_array()
        .expect("totals")
        .iter()
        .find(|t| t["role"] == role)
        .unwrap_or_else(|| panic!("no {role} total in {report}"))
}

/// Reads every message of `topic` with rdkafka; returns (count, value lengths seen).
fn rdkafka_read(
    addr: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> Vec<(Option<Vec<u8>>, usize)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "bench-test-reader")
        .set("enable.auto.commit", "false")
        .set("api.version.request", "true")
        .create()
        .expect("rdkafka consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&tpl).expect("assign");
    let mut seen = Vec::new();
    // Bounded: at most this many empty polls in a row before giving up.
    let mut idle = 0;
    while seen.len() < expected && idle < 300 {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                idle = 0;
                seen.push((
                    m.key().map(<[u8]>::to_vec),
                    m.payload().map_or(0, <[u8]>::len),
                ));
            }
            Some(Err(e)) => panic!("rdkafka consumer error: {e}"),
            None => idle += 1,
        }
    }
    seen
}

#[test]
fn produce_counts_match_end_offsets_and_consume_reads_them_all() {
    let dir = common::tempdir("bench-pc");
    let broker = Broker::start(&dir.path().join("data"));
    let args = [
        "--topic",
        "bench-pc",
        "--partitions",
        "3",
        "--producers",
        "2",
        "--messages",
        "20000",
        "--message-size",
        "50-150",
        "--keys",
        "sequential",
        "--batch-bytes",
        "16384",
    ];
    let mut produce_args = vec!["produce"];
    produce_args.extend_from_slice(&args);
    let hdr = dir.path().join("p.hdr");
    let html = dir.path().join("p.html");
    produce_args.extend_from_slice(&[
        "--hdr",
        hdr.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    let r = bench(&broker, dir.path(), "produce", &produce_args);
    assert_eq!(r["check"]["acknowledged"], 20000, "{r}");
    assert_eq!(r["check"]["offset_growth"], 20000, "{r}");
    assert_eq!(r["check"]["ok"], true);
    assert_eq!(total(&r, "produce")["messages"], 20000);
    assert_eq!(total(&r, "produce")["errors"], 0);
    let actors: u64 = r["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["messages"].as_u64().unwrap())
        .sum();
    assert_eq!(actors, 20000);
    assert!(std::fs::read_to_string(&hdr)
        .unwrap()
        .contains("#[StartTime:"));
    assert!(std::fs::read_to_string(&html).unwrap().contains("<svg"));

    let mut consume_args = vec!["consume"];
    consume_args.extend_from_slice(&args);
    consume_args.extend_from_slice(&["--consumers", "2"]);
    let c = bench(&broker, dir.path(), "consume", &consume_args);
    assert_eq!(total(&c, "consume")["messages"], 20000, "{c}");

    // A quota smaller than the topic stops the consumers at exactly that count.
    let q = bench(
        &broker,
        dir.path(),
        "consume-quota",
        &[
            "consume",
            "--topic",
            "bench-pc",
            "--consumers",
            "2",
            "--messages",
            "5000",
        ],
    );
    assert_eq!(total(&q, "consume")["messages"], 5000, "{q}");

    // An independent client reads the same messages: keys are the 8-byte sequence numbers,
    // values 50..=150 bytes.
    let seen = rdkafka_read(&broker.addr, "bench-pc", 3, 20000);
    assert_eq!(seen.len(), 20000);
    let mut keys: Vec<u64> = seen
        .iter()
        .map(|(k, len)| {
            assert!((50..=150).contains(len), "value of {len} bytes");
            u64::from_be_bytes(k.as_deref().expect("key").try_into().expect("8-byte key"))
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    // Two producers each number their own messages 0..10000.
    assert_eq!(keys.len(), 10000);
}

#[test]
fn e2e_consumers_read_everything_acknowledged() {
    let dir = common::tempdir("bench-e2e");
    let broker = Broker::start(&dir.path().join("data"));
    let r = bench(
        &broker,
        dir.path(),
        "e2e",
        &[
            "e2e",
            "--topic",
            "bench-e2e",
            "--partitions",
            "2",
            "--producers",
            "1",
            "--consumers",
            "2",
            "--messages",
            "10000",
            "--batch-bytes",
            "16384",
        ],
    );
    assert_all_counted(&r, 10000);
    assert_eq!(r["consumed_all"], 10000, "{r}");
    assert_eq!(total(&r, "consume")["messages"], 10000);
}

#[test]
fn every_codec_is_readable_by_rdkafka_and_by_the_bench() {
    let dir = common::tempdir("bench-codecs");
    let broker = Broker::start(&dir.path().join("data"));
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("bench-{codec}");
        let r = bench(
            &broker,
            dir.path(),
            codec,
            &[
                "produce",
                "--topic",
                &topic,
                "--partitions",
                "1",
                "--messages",
                "3000",
                "--compression",
                codec,
                "--batch-bytes",
                "32768",
            ],
        );
        assert_eq!(r["check"]["ok"], true, "{codec}: {r}");
        assert_eq!(r["check"]["acknowledged"], 3000);
        let c = bench(
            &broker,
            dir.path(),
            &format!("{codec}-c"),
            &["consume", "--topic", &topic],
        );
        assert_eq!(total(&c, "consume")["messages"], 3000, "{codec}");
        assert_eq!(
            rdkafka_read(&broker.addr, &topic, 1, 3000).len(),
            3000,
            "{codec}"
        );
    }
}

#[test]
fn fixed_rate_acks_all_fsync_and_acks_zero_runs_count_right() {
    let dir = common::tempdir("bench-modes");
    let broker = Broker::start(&dir.path().join("data"));
    let r = bench(
        &broker,
        dir.path(),
        "rate",
        &[
            "produce",
            "--topic",
            "bench-rate",
            "--messages",
            "3000",
            "--rate",
            "50000",
            "--linger-ms",
            "1",
            "--keys",
            "random",
            "--batch-bytes",
            "16384",
        ],
    );
    assert_all_counted(&r, 3000);
    let r = bench(
        &broker,
        dir.path(),
        "fsync",
        &[
            "produce",
            "--topic",
            "bench-fsync",
            "--topic-config",
            "flush.policy=fsync",
            "--acks",
            "all",
            "--messages",
            "5000",
            "--producers",
            "2",
            "--batch-bytes",
            "16384",
        ],
    );
    assert_all_counted(&r, 5000);
    // acks=0: nothing is answered, so the count is what went onto the socket; the broker
    // still has to end up with all of it.
    let r = bench(
        &broker,
        dir.path(),
        "acks0",
        &[
            "produce",
            "--topic",
            "bench-acks0",
            "--acks",
            "0",
            "--messages",
            "4000",
            "--batch-bytes",
            "16384",
        ],
    );
    assert_eq!(r["check"]["acknowledged"], 4000, "{r}");
}

/// `sluice group describe GROUP --json` through the binary; the error when it fails.
fn try_describe_group(broker: &Broker, group: &str) -> Result<Value, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "group",
            "describe",
            group,
            "--json",
            "--bootstrap",
            &broker.addr,
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sluice group");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("describe json"))
}

fn describe_group(broker: &Broker, group: &str) -> Value {
    try_describe_group(broker, group).unwrap_or_else(|e| panic!("describe {group}: {e}"))
}

fn actor_messages(report: &Value, role_prefix: &str) -> Vec<u64> {
    report["actors"]
        .as_array()
        .expect("actors")
        .iter()
        .filter(|a| {
            a["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(role_prefix))
        })
        .map(|a| a["messages"].as_u64().expect("messages"))
        .collect()
}

#[test]
fn a_group_of_bench_consumers_reads_every_message_once_and_commits() {
    let dir = common::tempdir("bench-group");
    let broker = Broker::start(&dir.path().join("data"));
    let produce = |name: &str, n: &str| {
        let r = bench(
            &broker,
            dir.path(),
            name,
            &[
                "produce",
                "--topic",
                "bench-grp",
                "--partitions",
                "3",
                "--producers",
                "2",
                "--messages",
                n,
                "--batch-bytes",
                "16384",
            ],
        );
        assert_eq!(r["check"]["ok"], true, "{r}");
    };
    let consume = |name: &str| {
        bench(
            &broker,
            dir.path(),
            name,
            &[
                "consume",
                "--topic",
                "bench-grp",
                "--consumers",
                "2",
                "--group",
                "bench-g",
            ],
        )
    };
    produce("p1", "20000");
    let c = consume("c1");
    assert_eq!(total(&c, "consume")["messages"], 20000, "{c}");
    let per_actor = actor_messages(&c, "consumer-");
    assert_eq!(per_actor.len(), 2, "{c}");
    assert_eq!(per_actor.iter().sum::<u64>(), 20000);
    // Range over 3 partitions: both members had partitions to read.
    assert!(per_actor.iter().all(|&m| m > 0), "{per_actor:?}");

    // The final commits cover everything: the members left, nothing lags.
    let d = describe_group(&broker, "bench-g");
    assert_eq!(d["state"], "Empty", "{d}");
    assert_eq!(d["total_lag"], 0, "{d}");
    let parts = d["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 3, "{d}");
    let committed: i64 = parts.iter().map(|p| p["committed"].as_i64().unwrap()).sum();
    assert_eq!(committed, 20000);

    // The group resumes at its commits: nothing again, then exactly what came since.
    let again = consume("c2");
    assert_eq!(total(&again, "consume")["messages"], 0, "{again}");
    produce("p2", "5000");
    let more = consume("c3");
    assert_eq!(total(&more, "consume")["messages"], 5000, "{more}");
    assert_eq!(describe_group(&broker, "bench-g")["total_lag"], 0);

    // e2e with a (fresh) group: every acknowledged message is received exactly once.
    let e = bench(
        &broker,
        dir.path(),
        "e2e-group",
        &[
            "e2e",
            "--topic",
            "bench-grp-e2e",
            "--partitions",
            "2",
            "--producers",
            "1",
            "--consumers",
            "2",
            "--group",
            "bench-e2e-g",
            "--messages",
            "10000",
            "--batch-bytes",
            "16384",
        ],
    );
    assert_eq!(e["check"]["ok"], true, "{e}");
    assert_eq!(e["consumed_all"], 10000, "{e}");
    assert_eq!(total(&e, "consume")["messages"], 10000);
}

/// Polls `describe` until `ok` holds for it (bounded by a hang guard, not a timing).
fn wait_for_group(broker: &Broker, group: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        // Before its first member joins the group does not exist yet.
        let d = try_describe_group(broker, group);
        if let Some(d) = d.as_ref().ok().filter(|d| ok(d)) {
            return d.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "group {group} never {what}: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Members of a described group as (client id, partitions assigned).
fn members_of(d: &Value) -> Vec<(String, usize)> {
    let mut v: Vec<(String, usize)> = d["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            let parts = m["assignment"]
                .as_array()
                .expect("assignment")
                .iter()
                .map(|a| a["partitions"].as_array().expect("partitions").len())
                .sum();
            (
                m["client_id"].as_str().expect("client id").to_string(),
                parts,
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn bench_group_members_rejoin_when_another_member_comes_and_goes() {
    let dir = common::tempdir("bench-rebalance");
    let broker = Broker::start(&dir.path().join("data"));
    let produce = |name: &str| {
        let r = bench(
            &broker,
            dir.path(),
            name,
            &[
                "produce",
                "--topic",
                "bench-reb",
                "--partitions",
                "3",
                "--messages",
                "6000",
                "--batch-bytes",
                "16384",
            ],
        );
        assert_eq!(r["check"]["ok"], true, "{r}");
    };
    produce("p1");
    // Two bench members with a long duration; SIGINT ends the run below.
    let json = dir.path().join("reb.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "bench",
            "consume",
            "--topic",
            "bench-reb",
            "--consumers",
            "2",
            "--group",
            "reb",
            "--duration",
            "600",
            "--bootstrap",
            &broker.addr,
            "--cores",
            "0-1",
            "--no-pin",
            "--quiet",
        ])
        .arg("--json")
        .arg(&json)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start sluice bench");
    let settled = |members: usize| {
        move |d: &Value| {
            d["state"] == "Stable"
                && members_of(d).len() == members
                && members_of(d).iter().map(|m| m.1).sum::<usize>() == 3
                && d["partitions"].as_array().is_some_and(|ps| {
                    // Everything read and committed (no lag, and no partition uncommitted).
                    ps.len() == 3 && ps.iter().all(|p| p["lag"] == 0)
                })
        }
    };
    wait_for_group(
        &broker,
        "reb",
        "settled with the bench's 2 members",
        settled(2),
    );

    // A third member (rdkafka) joins: the bench members rejoin and give up a partition.
    let rdk: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "reb")
        .set("client.id", "rdk")
        .set("enable.auto.commit", "false")
        .set("partition.assignment.strategy", "range")
        .create()
        .expect("rdkafka consumer");
    rdk.subscribe(&["bench-reb"]).expect("subscribe");
    let started = std::time::Instant::now();
    while rdk.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "rdkafka never assigned"
        );
        let _ = rdk.poll(Duration::from_millis(50));
    }
    let d = describe_group(&broker, "reb");
    assert_eq!(
        members_of(&d),
        vec![
            ("rdk".to_string(), 1),
            ("sluice-bench".to_string(), 1),
            ("sluice-bench".to_string(), 1)
        ],
        "{d}"
    );
    // It leaves: the bench members rejoin again and take all three partitions back.
    rdk.unsubscribe();
    let started = std::time::Instant::now();
    while rdk.assignment().map(|a| a.count()).unwrap_or(0) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "rdkafka never revoked"
        );
        let _ = rdk.poll(Duration::from_millis(50));
    }
    // librdkafka's close can block after leaving (see clients.rs); leak the handle.
    std::mem::forget(rdk);
    wait_for_group(&broker, "reb", "back to the bench's 2 members", settled(2));

    // New messages are read by the bench members and committed.
    produce("p2");
    wait_for_group(&broker, "reb", "caught up with the new messages", |d| {
        settled(2)(d)
            && d["partitions"].as_array().is_some_and(|ps| {
                ps.iter()
                    .map(|p| p["committed"].as_i64().unwrap_or(0))
                    .sum::<i64>()
                    == 12000
            })
    });

    // SIGINT ends the run early but cleanly: report written, members committed and left.
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().expect("wait for sluice bench");
    assert!(status.success(), "sluice bench exited with {status}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("report")).expect("report json");
    // Every message once: the rdkafka member read nothing (it started at the bench
    // members' commits), and the bench members had committed all they read before each
    // rebalance.
    assert_eq!(total(&report, "consume")["messages"], 12000, "{report}");
    let d = describe_group(&broker, "reb");
    assert_eq!(d["state"], "Empty", "{d}");
    assert_eq!(d["total_lag"], 0, "{d}");
}
