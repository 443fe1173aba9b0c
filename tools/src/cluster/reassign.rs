//! `sluice cluster reassign --topic T --partition P --replicas 1,2,3` (or `--cancel`) and
//! `sluice cluster reassignments`: Kafka's AlterPartitionReassignments and
//! ListPartitionReassignments through any broker's Kafka listener, as
//! `kafka-reassign-partitions.sh --execute` / `--cancel` / `--list` do.

use anyhow::{anyhow, bail, Context, Result};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::bench::wire::{error_name, AdminConn};

/// What `reassign` asks for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassign {
    pub topic: String,
    pub partition: i32,
    /// The new replicas, the first the preferred leader; `None` cancels.
    pub replicas: Option<Vec<i32>>,
}

/// `1,2,3` as broker ids (distinctness is the controller's to check, with Kafka's error).
pub fn parse_replicas(s: &str) -> Result<Vec<i32>> {
    s.split(',')
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            b.trim()
                .parse()
                .with_context(|| format!("--replicas {s:?}: {b:?} is not a broker id"))
        })
        .collect()
}

fn conn(bootstrap: &str) -> Result<AdminConn> {
    AdminConn::connect_as(bootstrap, "sluice-cluster")
        .with_context(|| format!("--bootstrap {bootstrap}"))
}

/// Starts (or cancels) the reassignment; one line: `TOPIC/P: reassigning to [..]`,
/// `cancelled`, or the error (then an error return, so the command exits non-zero).
pub fn run(bootstrap: &str, r: &Reassign) -> Result<String> {
    let partition = ReassignablePartition::default()
        .with_partition_index(r.partition)
        .with_replicas(
            r.replicas
                .as_ref()
                .map(|v| v.iter().map(|b| BrokerId(*b)).collect()),
        );
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(TopicName(StrBytes::from_string(r.topic.clone())))
            .with_partitions(vec![partition])]);
    let resp = conn(bootstrap)?
        .send(&req)
        .context("AlterPartitionReassignments")?;
    if resp.error_code != 0 {
        bail!(
            "AlterPartitionReassignments: {}{}",
            error_name(resp.error_code),
            message(resp.error_message.as_deref())
        );
    }
    let p = resp
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .next()
        .ok_or_else(|| anyhow!("AlterPartitionReassignments: no answer for the partition"))?;
    let what = format!("{}/{}", r.topic, r.partition);
    if p.error_code != 0 {
        bail!(
            "{what}: {}{}",
            error_name(p.error_code),
            message(p.error_message.as_deref())
        );
    }
    Ok(match &r.replicas {
        Some(v) => format!("{what}: reassigning to {v:?}\n"),
        None => format!("{what}: reassignment cancelled\n"),
    })
}

fn message(m: Option<&str>) -> String {
    m.map(|m| format!(": {m}")).unwrap_or_default()
}

/// One partition being reassigned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ongoing {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// The partitions being reassigned (of `topic` only, when named: `partitions` of it, or
/// all of them when none are named).
pub fn list(bootstrap: &str, topic: Option<&str>, partitions: &[i32]) -> Result<Vec<Ongoing>> {
    let mut conn = conn(bootstrap)?;
    let topics = match topic {
        None => None,
        Some(t) => {
            let asked = if partitions.is_empty() {
                // Every partition of the topic: the broker's metadata says how many.
                let n = crate::bench::metadata::lookup(&mut conn, t)?.partitions();
                (0..n as i32).collect()
            } else {
                partitions.to_vec()
            };
            Some(vec![ListPartitionReassignmentsTopics::default()
                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                .with_partition_indexes(asked)])
        }
    };
    let req = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(topics);
    let resp = conn.send(&req).context("ListPartitionReassignments")?;
    if resp.error_code != 0 {
        bail!(
            "ListPartitionReassignments: {}{}",
            error_name(resp.error_code),
            message(resp.error_message.as_deref())
        );
    }
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<i32>>();
    Ok(resp
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| Ongoing {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                replicas: ids(&p.replicas),
                adding: ids(&p.adding_replicas),
                removing: ids(&p.removing_replicas),
            })
        })
        .collect())
}

/// A table of the partitions being reassigned, or a line saying there are none.
pub fn render(ongoing: &[Ongoing]) -> String {
    if ongoing.is_empty() {
        return "no partition reassignment in progress\n".to_string();
    }
    let ids = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let mut out = format!(
        "{:<30} {:>9}  {:<16} {:<12} {:<12}\n",
        "TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"
    );
    for o in ongoing {
        out.push_str(&format!(
            "{:<30} {:>9}  {:<16} {:<12} {:<12}\n",
            o.topic,
            o.partition,
            ids(&o.replicas),
            ids(&o.adding),
            ids(&o.removing)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_a_comma_separated_list_of_ids() {
        assert_eq!(parse_replicas("2,3").unwrap(), vec![2, 3]);
        assert_eq!(parse_replicas(" 1, 2 ").unwrap(), vec![1, 2]);
        assert_eq!(parse_replicas("").unwrap(), Vec::<i32>::new());
        assert!(parse_replicas("1,x").is_err());
    }

    #[test]
    fn ongoing_reassignments_are_listed_one_line_each() {
        let text = render(&[Ongoing {
            topic: "orders".into(),
            partition: 3,
            replicas: vec![2, 3, 1],
            adding: vec![3],
            removing: vec![1],
        }]);
        assert!(text.lines().nth(1).unwrap().contains("orders"));
        assert!(text.contains("2,3,1"));
        assert_eq!(render(&[]), "no partition reassignment in progress\n");
    }
}
