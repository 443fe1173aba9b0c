//! `sluice group`: consumer group administration over the Kafka protocol, against any broker,
//! as Kafka's `kafka-consumer-groups.sh` does it: `list`, `describe` (members, assignments,
//! committed offsets, lag), `reset-offsets` (a plan, committed only with `--execute`),
//! `delete` (groups, or one topic's offsets).
//!
//! Invariants: every command is read-only unless it says `--execute` or is `delete`; offsets
//! are only changed in a group with no active members (the coordinator enforces it for
//! commits from outside the group, and `reset-offsets` checks first to say why); every call
//! is bounded (connect and read timeouts, a few coordinator attempts).
//!
//! Modules: `proto` (request bodies and answers, also used by the bench's group members),
//! `client` (the blocking calls), `describe` (description and list model and rendering),
//! `reset` (plan), `timefmt` (RFC 3339 and ISO 8601 durations), `table` (text tables).

pub(crate) mod client;
mod describe;
pub(crate) mod proto;
mod reset;
pub(crate) mod table;
mod timefmt;

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;

use crate::bench::wire::error_name;
use client::Client;
use proto::code;
use reset::{PartitionFacts, PlanRow, ResetTo, TopicArg};

#[derive(Debug, Args)]
pub struct GroupArgs {
    /// A broker of the cluster.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Every group with its state and protocol type.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// State, members and their assignments, committed offsets and lag per partition.
    Describe {
        group: String,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// Lag against each partition's last stable offset (for consumers with
        /// isolation.level=read_committed) instead of its high watermark.
        #[arg(long)]
        read_committed: bool,
    },
    /// Plan (and with --execute commit) new offsets for a group without active members.
    ResetOffsets(ResetArgs),
    /// Delete groups (their committed offsets), or with --topic only that topic's offsets.
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
        /// Delete only this topic's committed offsets of the (one) group.
        #[arg(long)]
        topic: Option<String>,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["topic", "all_topics"])))]
#[command(group(
    ArgGroup::new("spec")
        .required(true)
        .args(["to_earliest", "to_latest", "to_offset", "shift_by", "to_datetime", "by_duration"])
))]
pub struct ResetArgs {
    group: String,
    /// TOPIC or TOPIC:P,P,… (repeatable).
    #[arg(long, value_name = "TOPIC[:P,P..]")]
    topic: Vec<String>,
    /// Every topic the group has committed offsets for.
    #[arg(long)]
    all_topics: bool,
    /// The log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// The log end offset.
    #[arg(long)]
    to_latest: bool,
    /// This offset (clamped to the log).
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
    /// The committed offset plus N (may be negative).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    shift_by: Option<i64>,
    /// The first offset at or after this time, RFC 3339 (2024-05-01T12:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    to_datetime: Option<String>,
    /// The first offset at or after now minus this duration (PnDTnHnMnS, or seconds).
    #[arg(long, value_name = "DURATION")]
    by_duration: Option<String>,
    /// Only print the plan (the default).
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
    /// Commit the plan.
    #[arg(long)]
    execute: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Entry point of `sluice group`.
pub fn main(args: GroupArgs) -> Result<()> {
    match args.command {
        GroupCommand::List { json } => list(&args.bootstrap, json),
        GroupCommand::Describe {
            group,
            json,
            read_committed,
        } => describe(&args.bootstrap, &group, json, read_committed),
        GroupCommand::ResetOffsets(r) => reset_offsets(&args.bootstrap, &r),
        GroupCommand::Delete { groups, topic } => match topic {
            Some(t) => delete_offsets(&args.bootstrap, &groups, &t),
            None => delete_groups(&args.bootstrap, &groups),
        },
    }
}

fn list(bootstrap: &str, json: bool) -> Result<()> {
    let groups = Client::connect(bootstrap)?.list()?;
    if json {
        let v: Vec<_> = groups
            .iter()
            .map(|g| {
                json!({"group": g.group, "state": g.state, "protocol_type": g.protocol_type,
                    "group_type": g.group_type})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", describe::render_list(&groups));
    }
    Ok(())
}

fn describe(bootstrap: &str, group: &str, json: bool, read_committed: bool) -> Result<()> {
    let mut c = Client::connect(bootstrap)?;
    let state = c.describe(group)?;
    let committed = c.committed(group, None)?;
    if !state.exists() && committed.is_empty() {
        bail!("group {group} does not exist (no members, no committed offsets)");
    }
    let mut logs = HashMap::new();
    for t in describe::topics_of(&state, &committed) {
        let end = if read_committed {
            crate::bench::metadata::OffsetSpec::LatestStable
        } else {
            crate::bench::metadata::OffsetSpec::Latest
        };
        if let Some(l) = c.log_offsets_to(&t, end)? {
            logs.insert(t, l);
        }
    }
    let d = describe::build(group, &state, &committed, &logs);
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print!("{}", describe::render(&d));
    }
    Ok(())
}

impl ResetArgs {
    fn spec(&self) -> Result<ResetTo> {
        Ok(if self.to_earliest {
            ResetTo::Earliest
        } else if self.to_latest {
            ResetTo::Latest
        } else if let Some(n) = self.to_offset {
            if n < 0 {
                bail!("--to-offset {n}: an offset is never negative");
            }
            ResetTo::Offset(n)
        } else if let Some(n) = self.shift_by {
            ResetTo::ShiftBy(n)
        } else if let Some(s) = &self.to_datetime {
            ResetTo::TimestampMs(timefmt::parse_rfc3339_ms(s)?)
        } else if let Some(s) = &self.by_duration {
            let ago_ms = timefmt::parse_duration_ms(s)?;
            ResetTo::TimestampMs(now_ms().saturating_sub(ago_ms).max(0))
        } else {
            bail!("reset-offsets needs one of --to-earliest, --to-latest, --to-offset, --shift-by, --to-datetime, --by-duration");
        })
    }
}

fn now_ms() -> i64 {
    sluice_net::now_ms()
}

fn reset_offsets(bootstrap: &str, args: &ResetArgs) -> Result<()> {
    let to = args.spec()?;
    let topic_args = args
        .topic
        .iter()
        .map(|t| reset::parse_topic_arg(t))
        .collect::<Result<Vec<_>>>()?;
    let mut c = Client::connect(bootstrap)?;
    let state = c.describe(&args.group)?;
    if !matches!(state.state.as_str(), "Empty" | "Dead") {
        bail!(
            "group {} is {} with {} active member(s): offsets can only be reset while the \
             group is inactive; stop its consumers first",
            args.group,
            state.state,
            state.members.len()
        );
    }
    let selection = if args.all_topics {
        committed_selection(&mut c, &args.group)?
    } else {
        topic_args
    };
    let rows = plan(&mut c, &args.group, &selection, to)?;
    if args.execute {
        let offsets: Vec<(String, i32, i64)> = rows
            .iter()
            .map(|r| (r.topic.clone(), r.partition, r.new))
            .collect();
        c.commit(&args.group, &offsets)?;
    }
    if args.json {
        let v = json!({"group": args.group, "executed": args.execute, "partitions": rows});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", reset::render(&args.group, &rows, args.execute));
    }
    Ok(())
}

/// `--all-topics`: the partitions the group has committed offsets for, by topic.
fn committed_selection(c: &mut Client, group: &str) -> Result<Vec<TopicArg>> {
    let mut by_topic: Vec<TopicArg> = Vec::new();
    for x in c.committed(group, None)? {
        match by_topic.last_mut() {
            Some(t) if t.topic == x.topic => {
                t.partitions.get_or_insert_with(Vec::new).push(x.partition)
            }
            _ => by_topic.push(TopicArg {
                topic: x.topic,
                partitions: Some(vec![x.partition]),
            }),
        }
    }
    if by_topic.is_empty() {
        bail!("--all-topics: group {group} has no committed offsets; name topics with --topic");
    }
    Ok(by_topic)
}

/// The plan for every selected partition, in topic then partition order.
fn plan(c: &mut Client, group: &str, selection: &[TopicArg], to: ResetTo) -> Result<Vec<PlanRow>> {
    let mut rows = Vec::new();
    for sel in selection {
        let logs = c
            .log_offsets(&sel.topic)?
            .ok_or_else(|| anyhow!("--topic {}: no such topic", sel.topic))?;
        let count = logs.end.len() as i32;
        let partitions = sel
            .partitions
            .clone()
            .unwrap_or_else(|| (0..count).collect());
        if let Some(p) = partitions.iter().find(|&&p| p >= count) {
            bail!(
                "--topic {}:{p}: the topic has {count} partitions",
                sel.topic
            );
        }
        let at = match to {
            ResetTo::TimestampMs(ms) => Some(c.offsets_at(&sel.topic, ms)?),
            _ => None,
        };
        let committed = c.committed(group, Some(&[(sel.topic.clone(), partitions.clone())]))?;
        for p in partitions {
            let i = p as usize;
            let current = committed
                .iter()
                .find(|x| x.topic == sel.topic && x.partition == p)
                .and_then(|x| x.offset);
            let facts = PartitionFacts {
                current,
                log_start: logs.start[i],
                log_end: logs.end[i],
                at_timestamp: at.as_ref().map(|a| a[i]),
            };
            rows.push(PlanRow {
                topic: sel.topic.clone(),
                partition: p,
                current,
                new: reset::target(to, facts, &sel.topic, p)?,
            });
        }
    }
    rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    rows.dedup_by(|a, b| a.topic == b.topic && a.partition == b.partition);
    Ok(rows)
}

fn delete_groups(bootstrap: &str, groups: &[String]) -> Result<()> {
    let mut c = Client::connect(bootstrap)?;
    let mut failed = 0;
    for g in groups {
        match c.delete_group(g)? {
            Ok(()) => println!("Deleted group {g}."),
            Err(e) => {
                failed += 1;
                eprintln!(
                    "sluice: group {g} not deleted: {}{}",
                    error_name(e),
                    refusal_hint(e)
                );
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} group(s) not deleted", groups.len());
    }
    Ok(())
}

fn delete_offsets(bootstrap: &str, groups: &[String], topic: &str) -> Result<()> {
    let [group] = groups else {
        bail!(
            "delete --topic {topic}: name exactly one GROUP (got {})",
            groups.len()
        );
    };
    let mut c = Client::connect(bootstrap)?;
    // The topic's partitions if it still exists, else those the group committed for it.
    let partitions: Vec<i32> = match c.log_offsets(topic)? {
        Some(l) => (0..l.end.len() as i32).collect(),
        None => c
            .committed(group, None)?
            .into_iter()
            .filter(|x| x.topic == topic)
            .map(|x| x.partition)
            .collect(),
    };
    if partitions.is_empty() {
        bail!("group {group} has no offsets for topic {topic}");
    }
    match c.delete_offsets(group, topic, &partitions)? {
        Err(e) => bail!(
            "offsets of topic {topic} in group {group} not deleted: {}{}",
            error_name(e),
            refusal_hint(e)
        ),
        Ok(refused) if refused.is_empty() => {
            println!("Deleted the offsets of topic {topic} in group {group}.");
            Ok(())
        }
        Ok(refused) => {
            for (p, e) in &refused {
                eprintln!(
                    "sluice: {topic}:{p} not deleted: {}{}",
                    error_name(*e),
                    refusal_hint(*e)
                );
            }
            bail!(
                "{} partition(s) of topic {topic} not deleted",
                refused.len()
            )
        }
    }
}

/// Why a delete was refused, in an operator's words.
fn refusal_hint(e: i16) -> &'static str {
    match e {
        code::NON_EMPTY_GROUP => " (the group has active members; stop its consumers first)",
        code::GROUP_ID_NOT_FOUND => " (no such group)",
        86 => " (the group's active members consume this topic)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        group: GroupArgs,
    }

    fn parse(args: &[&str]) -> Result<GroupArgs, clap::Error> {
        Flags::try_parse_from(std::iter::once("group").chain(args.iter().copied())).map(|f| f.group)
    }

    fn reset(args: &[&str]) -> ResetArgs {
        match parse(args).expect("parses").command {
            GroupCommand::ResetOffsets(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reset_flags_need_one_scope_and_one_spec() {
        let r = reset(&[
            "reset-offsets",
            "g",
            "--topic",
            "t:1",
            "--topic",
            "u",
            "--shift-by",
            "-5",
        ]);
        assert_eq!(r.topic, vec!["t:1", "u"]);
        assert_eq!(r.spec().unwrap(), ResetTo::ShiftBy(-5));
        assert!(!r.execute);
        let r = reset(&[
            "reset-offsets",
            "g",
            "--all-topics",
            "--to-datetime",
            "1970-01-01T00:00:01Z",
        ]);
        assert_eq!(r.spec().unwrap(), ResetTo::TimestampMs(1000));
        let r = reset(&[
            "reset-offsets",
            "g",
            "--all-topics",
            "--by-duration",
            "PT1H",
            "--execute",
        ]);
        assert!(r.execute);
        match r.spec().unwrap() {
            ResetTo::TimestampMs(ms) => assert!(ms > 0 && ms <= now_ms() - 3_600_000),
            other => panic!("{other:?}"),
        }
        let e = reset(&["reset-offsets", "g", "--all-topics", "--to-offset", "7"]).spec();
        assert_eq!(e.unwrap(), ResetTo::Offset(7));
        for bad in [
            &["reset-offsets", "g", "--topic", "t"][..],
            &["reset-offsets", "g", "--to-latest"],
            &[
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--all-topics",
                "--to-latest",
            ],
            &[
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--to-latest",
                "--to-earliest",
            ],
            &[
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--to-latest",
                "--dry-run",
                "--execute",
            ],
            &["reset-offsets", "g", "--topic", "t", "--to-offset", "-1"],
            &["delete"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(parse(&["list"]).unwrap().bootstrap, "127.0.0.1:9092");
        assert_eq!(
            parse(&["list", "--bootstrap", "h:1"]).unwrap().bootstrap,
            "h:1"
        );
    }
}
