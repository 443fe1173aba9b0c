//! `sluice cluster placement` and `sluice partition move`: clients of the broker's admin
//! endpoint (`GET /placement`, `POST /partition/move`). Blocking, one HTTP/1.1 request
//! per call, every read and write bounded by a timeout and the answer by a size.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::group::table;

/// How long a move may take before the CLI gives up waiting (the broker goes on).
const MOVE_WAIT: Duration = Duration::from_secs(130);
const READ_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct AdminArg {
    /// The broker's admin endpoint.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9644")]
    pub admin: String,
}

#[derive(Debug, clap::Args)]
pub struct PlacementArgs {
    #[command(flatten)]
    pub admin: AdminArg,
    /// Print the broker's JSON answer as it is.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum PartitionCommand {
    /// Move a live partition to another core: no message lost or reordered, clients keep
    /// their connections.
    Move(MoveArgs),
}

#[derive(Debug, clap::Args)]
pub struct MoveArgs {
    /// The partition, as TOPIC/PARTITION.
    #[arg(value_name = "TOPIC/PARTITION")]
    pub partition: String,
    /// The CPU whose shard takes it (one of placement.cores).
    #[arg(long, value_name = "N")]
    pub core: usize,
    #[command(flatten)]
    pub admin: AdminArg,
}

/// `sluice cluster placement`.
pub fn show(args: PlacementArgs) -> Result<()> {
    let body = call(&args.admin.admin, "GET", "/placement", READ_WAIT)?;
    if args.json {
        print!("{body}");
        return Ok(());
    }
    let report: Value = serde_json::from_str(&body).context("the broker's answer is not JSON")?;
    print!("{}", render(&report));
    Ok(())
}

/// `sluice partition move TOPIC/P --core N`.
pub fn partition(command: PartitionCommand) -> Result<()> {
    match command {
        PartitionCommand::Move(args) => {
            let (topic, p) = parse_partition(&args.partition)?;
            let path = format!(
                "/partition/move?topic={topic}&partition={p}&core={}",
                args.core
            );
            let body = call(&args.admin.admin, "POST", &path, MOVE_WAIT)?;
            let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            println!("{}", answer["result"].as_str().unwrap_or(body.trim()));
            Ok(())
        }
    }
}

fn parse_partition(s: &str) -> Result<(&str, i32)> {
    let (topic, p) = s
        .rsplit_once('/')
        .ok_or_else(|| anyhow!("{s:?}: expected TOPIC/PARTITION"))?;
    let p: i32 = p
        .parse()
        .map_err(|_| anyhow!("{s:?}: {p:?} is not a partition number"))?;
    if topic.is_empty() || p < 0 {
        bail!("{s:?}: expected TOPIC/PARTITION with a partition ≥ 0");
    }
    Ok((topic, p))
}

fn call(admin: &str, method: &str, path: &str, wait: Duration) -> Result<String> {
    crate::admin_client::call(admin, method, path, wait)
}

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// The traffic columns both tables end with: (field of the report, heading).
const TRAFFIC: [(&str, &str); 6] = [
    ("bytes_in_total", "BYTES-IN"),
    ("bytes_out_total", "BYTES-OUT"),
    ("bytes_in_per_s", "IN/S"),
    ("bytes_out_per_s", "OUT/S"),
    ("produce_requests_per_s", "PRODUCE/S"),
    ("fetch_requests_per_s", "FETCH/S"),
];

/// A table of `entries` (an array of the report): the `first` headings and cells, then
/// the traffic columns.
fn traffic_table(entries: &Value, first: &[&str], cells: impl Fn(&Value) -> Vec<String>) -> String {
    let headings: Vec<&str> = first
        .iter()
        .copied()
        .chain(TRAFFIC.iter().map(|(_, h)| *h))
        .collect();
    let empty = Vec::new();
    let rows: Vec<Vec<String>> = entries
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|e| {
            let traffic = TRAFFIC.iter().map(|(key, _)| num(e, key).to_string());
            cells(e).into_iter().chain(traffic).collect()
        })
        .collect();
    table::render(&headings, &rows)
}

/// The report as two tables: per core, then per partition.
fn render(report: &Value) -> String {
    let mut out = format!("policy: {}\n\n", report["policy"].as_str().unwrap_or("?"));
    out += &traffic_table(&report["shards"], &["CORE", "SHARD", "PARTITIONS"], |s| {
        ["cpu", "shard", "partitions"]
            .iter()
            .map(|key| num(s, key).to_string())
            .collect()
    });
    out.push('\n');
    out += &traffic_table(&report["partitions"], &["PARTITION", "CORE"], |p| {
        let moving = if p["moving"].as_bool() == Some(true) {
            " (moving)"
        } else {
            ""
        };
        let topic = p["topic"].as_str().unwrap_or("?");
        vec![
            format!("{topic}/{}{moving}", num(p, "partition")),
            num(p, "cpu").to_string(),
        ]
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_argument() {
        assert_eq!(parse_partition("orders/3").unwrap(), ("orders", 3));
        assert_eq!(parse_partition("a/b/0").unwrap(), ("a/b", 0));
        assert!(parse_partition("orders").is_err());
        assert!(parse_partition("orders/x").is_err());
        assert!(parse_partition("/1").is_err());
        assert!(parse_partition("t/-1").is_err());
    }

    #[test]
    fn report_renders_per_core_and_per_partition() {
        let report = serde_json::json!({
            "policy": "balanced",
            "shards": [{"shard": 0, "cpu": 4, "partitions": 1, "bytes_in_total": 10,
                        "bytes_out_total": 0, "bytes_in_per_s": 5, "bytes_out_per_s": 0,
                        "produce_requests_per_s": 1, "fetch_requests_per_s": 0}],
            "partitions": [{"topic": "t", "partition": 0, "shard": 0, "cpu": 4, "moving": true,
                            "bytes_in_total": 10, "bytes_out_total": 0, "bytes_in_per_s": 5,
                            "bytes_out_per_s": 0, "produce_requests_per_s": 1,
                            "fetch_requests_per_s": 0}]
        });
        let text = render(&report);
        assert!(text.starts_with("policy: balanced\n"), "{text}");
        assert!(text.contains("\n4     0      1           10"), "{text}");
        assert!(text.contains("t/0 (moving)  4"), "{text}");
    }
}
