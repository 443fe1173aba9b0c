//! `sluice group reset-offsets`: which partitions (`--topic T[:P,P..]`, `--all-topics`), where
//! to (one of six specs), and the plan `current → new` per partition, every new offset
//! clamped to the partition's `[log start, log end]`. Pure; `mod.rs` fetches and commits.

use anyhow::{anyhow, bail, Result};
use serde::Serialize;

use super::table::{self, opt};

/// Where the offsets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
    ShiftBy(i64),
    /// First offset with a timestamp at or after this (ms since the epoch); `--to-datetime`
    /// and `--by-duration` (now minus the duration) both end here.
    TimestampMs(i64),
}

/// One `--topic` argument: a topic, and its partitions or all of them (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicArg {
    pub topic: String,
    pub partitions: Option<Vec<i32>>,
}

/// `orders` or `orders:0,2,5`.
pub fn parse_topic_arg(s: &str) -> Result<TopicArg> {
    let (topic, parts) = match s.split_once(':') {
        Some((t, p)) => (t, Some(p)),
        None => (s, None),
    };
    if topic.is_empty() {
        bail!("--topic {s:?}: the topic name is empty");
    }
    let partitions = parts
        .map(|p| {
            p.split(',')
                .map(|x| {
                    x.trim()
                        .parse::<i32>()
                        .ok()
                        .filter(|&v| v >= 0)
                        .ok_or_else(|| {
                            anyhow!("--topic {s:?}: partition {x:?} is not a number ≥ 0")
                        })
                })
                .collect::<Result<Vec<i32>>>()
        })
        .transpose()?;
    Ok(TopicArg {
        topic: topic.to_string(),
        partitions,
    })
}

/// One partition's place in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanRow {
    pub topic: String,
    pub partition: i32,
    /// Committed offset now, `None` if none.
    pub current: Option<i64>,
    pub new: i64,
}

/// What one partition looks like when planning.
#[derive(Debug, Clone, Copy)]
pub struct PartitionFacts {
    pub current: Option<i64>,
    pub log_start: i64,
    pub log_end: i64,
    /// With `ResetTo::TimestampMs`: the offset ListOffsets gave for it (-1: none).
    pub at_timestamp: Option<i64>,
}

/// The new offset of one partition.
pub fn target(to: ResetTo, f: PartitionFacts, topic: &str, partition: i32) -> Result<i64> {
    let raw = match to {
        ResetTo::Earliest => f.log_start,
        ResetTo::Latest => f.log_end,
        ResetTo::Offset(n) => n,
        ResetTo::ShiftBy(n) => f
            .current
            .ok_or_else(|| {
                anyhow!(
                    "--shift-by: partition {topic}:{partition} has no committed offset to shift \
                     (use --to-earliest, --to-latest or --to-offset for it)"
                )
            })?
            .saturating_add(n),
        // No record at or after the time: the end, as Kafka's tool does.
        ResetTo::TimestampMs(_) => match f.at_timestamp {
            Some(o) if o >= 0 => o,
            _ => f.log_end,
        },
    };
    Ok(raw.clamp(f.log_start, f.log_end.max(f.log_start)))
}

/// The plan as a table, with a closing line saying whether it was committed.
pub fn render(group: &str, rows: &[PlanRow], executed: bool) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                group.to_string(),
                r.topic.clone(),
                r.partition.to_string(),
                opt(r.current),
                r.new.to_string(),
            ]
        })
        .collect();
    let mut out = table::render(
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "NEW-OFFSET",
        ],
        &cells,
    );
    out.push('\n');
    if executed {
        out.push_str(&format!("Committed {} offsets.\n", rows.len()));
    } else {
        out.push_str("Dry run: nothing committed (add --execute to commit this plan).\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(current: Option<i64>) -> PartitionFacts {
        PartitionFacts {
            current,
            log_start: 10,
            log_end: 100,
            at_timestamp: None,
        }
    }

    #[test]
    fn topic_args_parse() {
        assert_eq!(
            parse_topic_arg("t").unwrap(),
            TopicArg {
                topic: "t".into(),
                partitions: None
            }
        );
        assert_eq!(
            parse_topic_arg("t:0, 2").unwrap().partitions,
            Some(vec![0, 2])
        );
        for bad in [":1", "t:", "t:a", "t:-1", "t:1,,2"] {
            let e = parse_topic_arg(bad).unwrap_err().to_string();
            assert!(e.contains("--topic"), "{bad}: {e}");
        }
    }

    #[test]
    fn targets_are_clamped_to_the_log() {
        let t = |to, cur| target(to, facts(cur), "t", 0).unwrap();
        assert_eq!(t(ResetTo::Earliest, Some(50)), 10);
        assert_eq!(t(ResetTo::Latest, None), 100);
        assert_eq!(t(ResetTo::Offset(5), None), 10);
        assert_eq!(t(ResetTo::Offset(500), None), 100);
        assert_eq!(t(ResetTo::Offset(42), None), 42);
        assert_eq!(t(ResetTo::ShiftBy(-30), Some(50)), 20);
        assert_eq!(t(ResetTo::ShiftBy(-300), Some(50)), 10);
        assert_eq!(t(ResetTo::ShiftBy(80), Some(50)), 100);
        assert_eq!(t(ResetTo::ShiftBy(i64::MAX), Some(50)), 100);
        let e = target(ResetTo::ShiftBy(1), facts(None), "t", 3).unwrap_err();
        assert!(e.to_string().contains("t:3 has no committed offset"), "{e}");
        let at = |o| PartitionFacts {
            at_timestamp: Some(o),
            ..facts(None)
        };
        assert_eq!(target(ResetTo::TimestampMs(1), at(33), "t", 0).unwrap(), 33);
        assert_eq!(
            target(ResetTo::TimestampMs(1), at(-1), "t", 0).unwrap(),
            100
        );
    }

    #[test]
    fn plan_renders_current_and_new() {
        let rows = vec![
            PlanRow {
                topic: "t".into(),
                partition: 0,
                current: Some(7),
                new: 0,
            },
            PlanRow {
                topic: "t".into(),
                partition: 1,
                current: None,
                new: 3,
            },
        ];
        let text = render("g", &rows, false);
        assert_eq!(
            text,
            "GROUP  TOPIC  PARTITION  CURRENT-OFFSET  NEW-OFFSET\n\
             g      t      0          7               0\n\
             g      t      1          -               3\n\
             \n\
             Dry run: nothing committed (add --execute to commit this plan).\n"
        );
        assert!(render("g", &rows, true).ends_with("Committed 2 offsets.\n"));
    }
}
