//! `sluice cluster elect-leaders --partition T/P [--unclean]`: Kafka's ElectLeaders for
//! named partitions through any broker's Kafka listener, one line per partition.

use anyhow::{anyhow, Context, Result};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{ElectLeadersRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::bench::wire::{error_name, AdminConn};

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

/// `TOPIC/PARTITION` as its parts.
fn parse(s: &str) -> Result<(String, i32)> {
    let (topic, p) = s
        .rsplit_once('/')
        .ok_or_else(|| anyhow!("{s:?} is not TOPIC/PARTITION"))?;
    let p = p
        .parse()
        .with_context(|| format!("{s:?}: {p:?} is not a partition number"))?;
    Ok((topic.to_string(), p))
}

/// Asks for the elections; a line per partition: `TOPIC/P: elected` or the error.
pub fn run(bootstrap: &str, partitions: &[String], unclean: bool) -> Result<String> {
    let mut by_topic: Vec<(String, Vec<i32>)> = Vec::new();
    for s in partitions {
        let (topic, p) = parse(s)?;
        match by_topic.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, ps)) => ps.push(p),
            None => by_topic.push((topic, vec![p])),
        }
    }
    let req = ElectLeadersRequest::default()
        .with_election_type(if unclean { UNCLEAN } else { PREFERRED })
        .with_timeout_ms(30_000)
        .with_topic_partitions(Some(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    TopicPartitions::default()
                        .with_topic(TopicName(StrBytes::from_string(t)))
                        .with_partitions(ps)
                })
                .collect(),
        ));
    let mut conn = AdminConn::connect_as(bootstrap, "sluice-cluster")
        .with_context(|| format!("--bootstrap {bootstrap}"))?;
    let resp = conn.send(&req).context("ElectLeaders")?;
    if resp.error_code != 0 {
        return Err(anyhow!("ElectLeaders: {}", error_name(resp.error_code)));
    }
    let mut out = String::new();
    for t in &resp.replica_election_results {
        for p in &t.partition_result {
            let what = match p.error_code {
                0 => "elected".to_string(),
                e => error_name(e),
            };
            out.push_str(&format!(
                "{}/{}: {what}\n",
                t.topic.as_str(),
                p.partition_id
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_named_topic_slash_number() {
        assert_eq!(parse("a/b/3").unwrap(), ("a/b".to_string(), 3));
        assert!(parse("orders").is_err());
        assert!(parse("orders/x").is_err());
    }
}
