//! `sluice topic` against a real broker: create, list, describe (partitions, offsets,
//! configs with sources), alter-config, add-partitions, produce from stdin, consume in
//! each format and as a group member, delete; `--json` where scripts read it.

mod common;

use common::{sluice, sluice_output, sluice_with_stdin, Broker};
use serde_json::Value;

fn topic(b: &Broker, args: &[&str]) -> String {
    let mut all = vec!["topic", "--bootstrap", b.addr.as_str()];
    all.extend_from_slice(args);
    sluice(&all)
}

fn json(b: &Broker, args: &[&str]) -> Value {
    serde_json::from_str(&topic(b, args)).expect("JSON")
}

#[test]
fn a_topic_is_created_inspected_written_read_altered_and_deleted() {
    let dir = common::tempdir("topic-cli");
    let b = Broker::start(dir.path());
    let out = topic(
        &b,
        &["create", "orders", "-p", "2", "-c", "retention.ms=60000"],
    );
    assert_eq!(out, "Created topic orders.\n");
    let (ok, _, err) = sluice_output(&["topic", "--bootstrap", &b.addr, "create", "orders"]);
    assert!(!ok && err.contains("TopicAlreadyExists"), "{err}");

    let listed = json(&b, &["list", "--json"]);
    let orders = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .expect("listed");
    assert_eq!(
        (orders["partitions"].as_u64(), orders["replicas"].as_u64()),
        (Some(2), Some(1))
    );

    let input = "a:one\nb:two\nc:three\nno separator\n";
    let args = [
        "topic",
        "--bootstrap",
        &b.addr,
        "produce",
        "orders",
        "--key-separator",
        ":",
        "--header",
        "h=v",
    ];
    let (ok, out, err) = sluice_with_stdin(&args, input);
    assert!(ok, "{err}");
    assert_eq!(out, "Produced 4 records to orders.\n");

    let d = json(&b, &["describe", "orders", "--json"]);
    let ends: u64 = d["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["high_watermark"].as_u64().unwrap())
        .sum();
    assert_eq!(ends, 4, "{d}");
    let config = |d: &Value, key: &str| {
        d["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == key)
            .map(|c| {
                (
                    c["value"].as_str().unwrap().to_string(),
                    c["source"].as_str().unwrap().to_string(),
                )
            })
    };
    assert_eq!(
        config(&d, "retention.ms"),
        Some(("60000".into(), "topic".into()))
    );
    assert_eq!(
        config(&d, "segment.bytes").map(|c| c.1),
        Some("default".into())
    );
    let text = topic(&b, &["describe", "orders"]);
    assert!(
        text.contains("HIGH-WATERMARK") && text.contains("retention.ms"),
        "{text}"
    );

    // Every record back, in each format; the keyless line went to partition 0.
    let mut read: Vec<String> = topic(&b, &["consume", "orders"])
        .lines()
        .map(str::to_string)
        .collect();
    read.sort();
    assert_eq!(read, ["a\tone", "b\ttwo", "c\tthree", "no separator"]);
    let first = topic(
        &b,
        &["consume", "orders", "--partition", "0", "--format", "json"],
    );
    let keyless: Vec<Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["key"].is_null())
        .collect();
    assert_eq!(keyless.len(), 1, "{first}");
    assert_eq!(keyless[0]["value"], "no separator");
    assert_eq!(keyless[0]["headers"]["h"], "v");
    let hex = topic(&b, &["consume", "orders", "--format", "hex", "-n", "1"]);
    assert_eq!(hex.lines().count(), 1, "{hex}");
    assert!(topic(&b, &["consume", "orders", "--offset", "end"]).is_empty());

    // As a group member: everything once, then nothing (the group committed its place).
    let mut as_member: Vec<String> = topic(&b, &["consume", "orders", "--group", "g1"])
        .lines()
        .map(str::to_string)
        .collect();
    as_member.sort();
    assert_eq!(as_member, read);
    assert_eq!(topic(&b, &["consume", "orders", "--group", "g1"]), "");
    let group = sluice(&["group", "--bootstrap", &b.addr, "describe", "g1", "--json"]);
    let group: Value = serde_json::from_str(&group).unwrap();
    assert_eq!(group["state"], "Empty", "{group}");

    assert_eq!(
        topic(
            &b,
            &[
                "alter-config",
                "orders",
                "--append",
                "cleanup.policy=compact",
                "--delete",
                "retention.ms"
            ]
        ),
        "Altered the configs of topic orders.\n"
    );
    let d = json(&b, &["describe", "orders", "--json"]);
    assert_eq!(
        config(&d, "cleanup.policy"),
        Some(("delete,compact".into(), "topic".into()))
    );
    assert_eq!(
        config(&d, "retention.ms").map(|c| c.1),
        Some("default".into())
    );
    let (ok, _, err) = sluice_output(&[
        "topic",
        "--bootstrap",
        &b.addr,
        "alter-config",
        "orders",
        "--set",
        "no.such.key=1",
    ]);
    assert!(!ok && err.contains("no.such.key"), "{err}");

    topic(&b, &["add-partitions", "orders", "--count", "3"]);
    assert_eq!(
        json(&b, &["describe", "orders", "--json"])["partitions"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(topic(&b, &["delete", "orders"]), "Deleted topic orders.\n");
    let (ok, _, err) = sluice_output(&["topic", "--bootstrap", &b.addr, "describe", "orders"]);
    assert!(!ok, "{err}");
}
