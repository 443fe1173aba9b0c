//! `sluice topic`: topics over the Kafka protocol, against any broker, in the spirit of
//! `rpk topic`: `create`, `list`, `describe` (partitions with leader, replicas, ISR,
//! offline replicas and offsets; configs with their sources), `alter-config` (set, delete,
//! append, subtract), `add-partitions`, `delete`, `produce` (lines from stdin) and
//! `consume` (from an offset, a timestamp or the end; text, JSON or hex), `--json` for
//! scripts. Every call is bounded by the connection's timeouts; `consume` reads outside
//! any group, or with `--group` as a member of one (`member.rs`).

mod client;
mod member;

use std::io::{BufRead, Write};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use crate::group::table;
use client::{Client, Fetched};

#[derive(Debug, Args)]
pub struct TopicArgs {
    /// A broker of the cluster.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
    #[command(subcommand)]
    pub command: TopicCommand,
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        topic: String,
        /// Partitions (-1: the broker's default).
        #[arg(short, long, default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        /// Replicas of each partition (-1: the broker's default).
        #[arg(short, long, default_value_t = -1, allow_negative_numbers = true)]
        replicas: i16,
        /// A topic config, KEY=VALUE (repeatable).
        #[arg(short = 'c', long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every topic with its partition count and replication factor.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Partitions (leader, replicas, ISR, offsets) and configs with their sources.
    Describe {
        topic: String,
        #[arg(long)]
        json: bool,
    },
    /// Change topic configs (IncrementalAlterConfigs).
    AlterConfig {
        topic: String,
        /// KEY=VALUE to set (repeatable).
        #[arg(long, value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// KEY to remove, back to its default (repeatable).
        #[arg(long, value_name = "KEY")]
        delete: Vec<String>,
        /// KEY=ITEMS to add to a list config (repeatable).
        #[arg(long, value_name = "KEY=ITEMS")]
        append: Vec<String>,
        /// KEY=ITEMS to remove from a list config (repeatable).
        #[arg(long, value_name = "KEY=ITEMS")]
        subtract: Vec<String>,
    },
    /// Raise the partition count.
    AddPartitions {
        topic: String,
        /// The partition count afterwards.
        #[arg(long)]
        count: i32,
    },
    /// Delete a topic and its data.
    Delete { topic: String },
    /// Produce one record per line of stdin.
    Produce {
        topic: String,
        /// Split each line at the first SEP into key and value.
        #[arg(long, value_name = "SEP")]
        key_separator: Option<String>,
        /// A header KEY=VALUE on every record (repeatable).
        #[arg(long = "header", value_name = "KEY=VALUE")]
        headers: Vec<String>,
        /// Send every record to this partition (default: by key hash, keyless to 0).
        #[arg(long)]
        partition: Option<i32>,
        #[arg(long)]
        json: bool,
    },
    /// Print records of every partition (or one).
    Consume {
        topic: String,
        /// Where to start: `start`, `end`, or an offset.
        #[arg(long, default_value = "start", value_name = "start|end|N")]
        offset: String,
        /// Start at the first record at or after this time (ms since 1970).
        #[arg(long, value_name = "MS", conflicts_with = "offset")]
        timestamp: Option<i64>,
        /// Only this partition.
        #[arg(long)]
        partition: Option<i32>,
        /// Stop after this many records (default: at the end of each partition).
        #[arg(short = 'n', long)]
        num: Option<usize>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Read as a member of this consumer group: its assigned partitions, from its
        /// committed offsets (else from --offset / --timestamp), committing what was read.
        #[arg(long, conflicts_with = "partition")]
        group: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `key<TAB>value` (or the value alone), one record a line.
    Text,
    /// One JSON object a line: partition, offset, timestamp, key, value.
    Json,
    /// Like json, key and value in hex.
    Hex,
}

fn key_value(s: &str) -> Result<(String, String)> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| anyhow!("{s:?} is not KEY=VALUE"))
}

pub fn main(args: TopicArgs) -> Result<()> {
    let mut c = Client::connect(&args.bootstrap)?;
    let out = run(
        &mut c,
        &args.bootstrap,
        args.command,
        &mut std::io::stdin().lock(),
    )?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Runs one command; what it prints.
fn run(
    c: &mut Client,
    bootstrap: &str,
    command: TopicCommand,
    stdin: &mut dyn BufRead,
) -> Result<String> {
    match command {
        TopicCommand::Create {
            topic,
            partitions,
            replicas,
            configs,
            json,
        } => {
            let configs = configs
                .iter()
                .map(|s| key_value(s))
                .collect::<Result<Vec<_>>>()?;
            c.create(&topic, partitions, replicas, &configs)?;
            Ok(if json {
                format!("{}\n", json!({ "topic": topic, "created": true }))
            } else {
                format!("Created topic {topic}.\n")
            })
        }
        TopicCommand::List { json } => list(c, json),
        TopicCommand::Describe { topic, json } => describe(c, &topic, json),
        TopicCommand::AlterConfig {
            topic,
            set,
            delete,
            append,
            subtract,
        } => {
            let mut ops = Vec::new();
            for (items, op) in [(&set, 0i8), (&append, 2), (&subtract, 3)] {
                for s in items {
                    let (k, v) = key_value(s)?;
                    ops.push((k, op, Some(v)));
                }
            }
            ops.extend(delete.into_iter().map(|k| (k, 1i8, None)));
            if ops.is_empty() {
                bail!("nothing to change: give --set, --delete, --append or --subtract");
            }
            c.alter_configs(&topic, &ops)?;
            Ok(format!("Altered the configs of topic {topic}.\n"))
        }
        TopicCommand::AddPartitions { topic, count } => {
            c.add_partitions(&topic, count)?;
            Ok(format!("Topic {topic} has {count} partitions.\n"))
        }
        TopicCommand::Delete { topic } => {
            c.delete(&topic)?;
            Ok(format!("Deleted topic {topic}.\n"))
        }
        TopicCommand::Produce {
            topic,
            key_separator,
            headers,
            partition,
            json,
        } => {
            let headers = headers
                .iter()
                .map(|s| key_value(s))
                .collect::<Result<Vec<_>>>()?;
            let spec = ProduceSpec {
                key_separator: key_separator.as_deref(),
                headers: &headers,
                partition,
            };
            let n = produce(c, &topic, &spec, stdin)?;
            Ok(if json {
                format!("{}\n", json!({ "topic": topic, "records": n }))
            } else {
                format!("Produced {n} records to {topic}.\n")
            })
        }
        TopicCommand::Consume {
            topic,
            offset,
            timestamp,
            partition,
            num,
            format,
            group,
        } => {
            let start = match timestamp {
                Some(ms) => Start::At(ms),
                None => match offset.as_str() {
                    "start" => Start::Beginning,
                    "end" => Start::End,
                    n => Start::Offset(n.parse().with_context(|| format!("--offset {n}"))?),
                },
            };
            let read = Read { num, format };
            match group {
                Some(group) => consume_in_group(c, bootstrap, &group, &topic, start, read),
                None => consume(c, &topic, start, partition, read).map(|(out, _)| out),
            }
        }
    }
}

fn list(c: &mut Client, json: bool) -> Result<String> {
    let topics = c.topics(None)?;
    let rf = |t: &client::TopicInfo| t.partitions.first().map_or(0, |p| p.replicas.len());
    if json {
        let v: Vec<_> = topics
            .iter()
            .map(|t| json!({ "name": t.name, "partitions": t.partitions.len(), "replicas": rf(t), "internal": t.internal }))
            .collect();
        return Ok(format!("{}\n", serde_json::Value::Array(v)));
    }
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.partitions.len().to_string(),
                rf(t).to_string(),
            ]
        })
        .collect();
    Ok(table::render(&["NAME", "PARTITIONS", "REPLICAS"], &rows))
}

fn ids(v: &[i32]) -> String {
    let s: Vec<String> = v.iter().map(i32::to_string).collect();
    format!("[{}]", s.join(","))
}

fn describe(c: &mut Client, topic: &str, json: bool) -> Result<String> {
    let info = c
        .topics(Some(&[topic.to_string()]))?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("topic {topic} does not exist"))?;
    let (starts, ends) = c.offsets(topic)?;
    let configs = c.configs(topic)?;
    let at = |v: &[i64], p: i32| usize::try_from(p).ok().and_then(|i| v.get(i)).copied();
    if json {
        let partitions: Vec<_> = info
            .partitions
            .iter()
            .map(|p| {
                json!({
                    "partition": p.partition, "leader": p.leader, "leader_epoch": p.leader_epoch,
                    "replicas": p.replicas, "isr": p.isr, "offline_replicas": p.offline,
                    "log_start_offset": at(&starts, p.partition), "high_watermark": at(&ends, p.partition),
                })
            })
            .collect();
        let v = json!({ "name": info.name, "internal": info.internal, "partitions": partitions, "configs": configs });
        return Ok(format!("{v}\n"));
    }
    let mut out = format!(
        "NAME        {}\nPARTITIONS  {}\n\n",
        info.name,
        info.partitions.len()
    );
    let rows: Vec<Vec<String>> = info
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                p.leader.to_string(),
                p.leader_epoch.to_string(),
                ids(&p.replicas),
                ids(&p.isr),
                ids(&p.offline),
                table::opt(at(&starts, p.partition)),
                table::opt(at(&ends, p.partition)),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &[
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "OFFLINE",
            "LOG-START",
            "HIGH-WATERMARK",
        ],
        &rows,
    ));
    out.push('\n');
    let rows: Vec<Vec<String>> = configs
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.value.clone().unwrap_or_default(),
                c.source.to_string(),
            ]
        })
        .collect();
    out.push_str(&table::render(&["KEY", "VALUE", "SOURCE"], &rows));
    Ok(out)
}

struct ProduceSpec<'a> {
    key_separator: Option<&'a str>,
    headers: &'a [(String, String)],
    partition: Option<i32>,
}

/// Records a request carries at most (each line is one record).
const PRODUCE_BATCH_RECORDS_MAX: usize = 500;

/// Produces each line of `input` as a record: grouped into batches by partition, at most
/// [`PRODUCE_BATCH_RECORDS_MAX`] records a batch. Returns how many were acknowledged.
fn produce(
    c: &mut Client,
    topic: &str,
    spec: &ProduceSpec<'_>,
    input: &mut dyn BufRead,
) -> Result<usize> {
    let partitions = c.partition_count(topic)?;
    let mut pending: std::collections::BTreeMap<i32, Vec<(Option<String>, String)>> =
        std::collections::BTreeMap::new();
    let mut sent = 0;
    let mut line = String::new();
    loop {
        line.clear();
        let done = input.read_line(&mut line)? == 0;
        if !done {
            let text = line.trim_end_matches(['\n', '\r']);
            let (key, value) = match spec.key_separator.and_then(|sep| text.split_once(sep)) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => (None, text.to_string()),
            };
            let partition = spec
                .partition
                .unwrap_or_else(|| partition_of(key.as_deref(), partitions));
            pending.entry(partition).or_default().push((key, value));
        }
        let full: Vec<i32> = pending
            .iter()
            .filter(|(_, rs)| done || rs.len() >= PRODUCE_BATCH_RECORDS_MAX)
            .map(|(p, _)| *p)
            .collect();
        for p in full {
            let records = pending.remove(&p).unwrap_or_default();
            c.produce(topic, p, batch(&records, spec.headers)?)?;
            sent += records.len();
        }
        if done {
            return Ok(sent);
        }
    }
}

/// The partition of a record: by a hash of its key, keyless ones to partition 0.
fn partition_of(key: Option<&str>, partitions: usize) -> i32 {
    match key {
        None => 0,
        Some(k) => (crc32c::crc32c(k.as_bytes()) as usize % partitions.max(1)) as i32,
    }
}

/// One uncompressed record batch of `records`, each with `headers`.
fn batch(
    records: &[(Option<String>, String)],
    headers: &[(String, String)],
) -> Result<bytes::Bytes> {
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| {
            let mut r = Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: now,
                key: key.clone().map(bytes::Bytes::from),
                value: Some(bytes::Bytes::from(value.clone())),
                headers: Default::default(),
            };
            for (k, v) in headers {
                r.headers.insert(
                    StrBytes::from_string(k.clone()),
                    Some(bytes::Bytes::from(v.clone())),
                );
            }
            r
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).context("encoding the batch")?;
    Ok(buf.freeze())
}

#[derive(Debug, Clone, Copy)]
enum Start {
    Beginning,
    End,
    Offset(i64),
    At(i64),
}

/// How many records to print and how.
#[derive(Debug, Clone, Copy)]
struct Read {
    num: Option<usize>,
    format: Format,
}

/// Where each partition (or the one `only`) starts.
fn start_offsets(
    c: &mut Client,
    topic: &str,
    start: Start,
    only: Option<i32>,
) -> Result<Vec<(i32, i64, i64)>> {
    let (starts, ends) = c.offsets(topic)?;
    let at = match start {
        Start::At(ms) => Some(c.offsets_at(topic, ms)?),
        _ => None,
    };
    let partitions: Vec<i32> = match only {
        Some(p) if usize::try_from(p).is_ok_and(|i| i < ends.len()) => vec![p],
        Some(p) => bail!("topic {topic} has no partition {p}"),
        None => (0..ends.len() as i32).collect(),
    };
    Ok(partitions
        .into_iter()
        .map(|p| {
            let i = p as usize;
            let from = match start {
                Start::Beginning => starts[i],
                Start::End => ends[i],
                Start::Offset(o) => o.max(starts[i]),
                Start::At(_) => at.as_ref().map_or(ends[i], |a| a[i]),
            };
            (p, from, ends[i])
        })
        .collect())
}

/// Reads each partition from where `start` says to the high watermark it had when first
/// asked (or until `num` records), in partition order; what it prints and the next offset
/// of each partition read.
fn consume(
    c: &mut Client,
    topic: &str,
    start: Start,
    only: Option<i32>,
    read: Read,
) -> Result<(String, Vec<(i32, i64)>)> {
    let ranges = start_offsets(c, topic, start, only)?;
    read_ranges(c, topic, &ranges, read)
}

/// Reads `[from, end)` of each (partition, from, end).
fn read_ranges(
    c: &mut Client,
    topic: &str,
    ranges: &[(i32, i64, i64)],
    read: Read,
) -> Result<(String, Vec<(i32, i64)>)> {
    let mut out = String::new();
    let mut positions = Vec::with_capacity(ranges.len());
    let mut printed = 0;
    for &(p, from, end) in ranges {
        let mut next = from;
        'partition: while next < end && read.num.is_none_or(|n| printed < n) {
            let (records, _) = c.fetch(topic, p, next)?;
            let Some(last) = records.last().map(|r| r.offset) else {
                break;
            };
            for r in records {
                if read.num.is_some_and(|n| printed >= n) || r.offset >= end {
                    break 'partition;
                }
                out.push_str(&render(&r, read.format));
                printed += 1;
                next = r.offset + 1;
            }
            next = next.max(last + 1).min(end);
        }
        positions.push((p, next));
    }
    Ok((out, positions))
}

/// `consume --group`: joins, reads the assigned partitions from the group's committed
/// offsets (`start` where none is), commits the positions reached and leaves.
fn consume_in_group(
    c: &mut Client,
    bootstrap: &str,
    group: &str,
    topic: &str,
    start: Start,
    read: Read,
) -> Result<String> {
    let partitions = c.partition_count(topic)?;
    let mut member = member::Member::join(bootstrap, group, topic, partitions as i32)?;
    let committed = member.committed(topic)?;
    let fallback = start_offsets(c, topic, start, None)?;
    let ranges: Vec<(i32, i64, i64)> = committed
        .iter()
        .filter_map(|(p, at)| {
            let &(_, from, end) = fallback.iter().find(|(q, _, _)| q == p)?;
            Some((*p, at.unwrap_or(from), end))
        })
        .collect();
    let (out, positions) = read_ranges(c, topic, &ranges, read)?;
    let offsets: Vec<(String, i32, i64)> = positions
        .into_iter()
        .map(|(p, next)| (topic.to_string(), p, next))
        .collect();
    member.commit_and_leave(&offsets)?;
    Ok(out)
}

fn render(r: &Fetched, format: Format) -> String {
    let text = |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    let hex = |b: &Option<Vec<u8>>| {
        b.as_ref()
            .map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>())
    };
    match format {
        Format::Text => match text(&r.key) {
            Some(k) => format!("{k}\t{}\n", text(&r.value).unwrap_or_default()),
            None => format!("{}\n", text(&r.value).unwrap_or_default()),
        },
        Format::Json | Format::Hex => {
            let (key, value) = if format == Format::Json {
                (text(&r.key), text(&r.value))
            } else {
                (hex(&r.key), hex(&r.value))
            };
            let headers: serde_json::Map<String, serde_json::Value> = r
                .headers
                .iter()
                .map(|(k, v)| {
                    let v = if format == Format::Json {
                        text(v)
                    } else {
                        hex(v)
                    };
                    (k.clone(), json!(v))
                })
                .collect();
            let v = json!({
                "partition": r.partition, "offset": r.offset, "timestamp": r.timestamp_ms,
                "key": key, "value": value, "headers": headers,
            });
            format!("{v}\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_render_in_each_format() {
        let r = Fetched {
            partition: 1,
            offset: 7,
            timestamp_ms: 5,
            key: Some(b"k".to_vec()),
            value: Some(b"v\x01".to_vec()),
            headers: vec![("h".into(), Some(b"x".to_vec()))],
        };
        assert_eq!(render(&r, Format::Text), "k\tv\u{1}\n");
        assert_eq!(
            render(&r, Format::Hex),
            "{\"headers\":{\"h\":\"78\"},\"key\":\"6b\",\"offset\":7,\"partition\":1,\"timestamp\":5,\"value\":\"7601\"}\n"
        );
        let keyless = Fetched { key: None, ..r };
        assert_eq!(render(&keyless, Format::Text), "v\u{1}\n");
    }

    #[test]
    fn keys_choose_partitions_and_keyless_records_go_to_the_first() {
        assert_eq!(partition_of(None, 4), 0);
        assert_eq!(partition_of(Some("a"), 4), partition_of(Some("a"), 4));
        assert!((0..4).contains(&partition_of(Some("b"), 4)));
    }
}
