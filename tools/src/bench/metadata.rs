//! Control plane of the bench (and of `sluice group`): topic lookup and creation, leader
//! routing from Metadata, broker lists, and partition offsets (ListOffsets: earliest, latest,
//! by timestamp). Blocking calls, run before and after the data-plane executors.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, ListOffsetsRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::wire::AdminConn;

/// Kafka error codes the control plane reacts to.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const LEADER_NOT_AVAILABLE: i16 = 5;
const TOPIC_ALREADY_EXISTS: i16 = 36;
/// How long a new topic may take to get leaders for all its partitions.
const TOPIC_READY_MS_MAX: u64 = 30_000;

/// Where each partition of the topic is led.
#[derive(Debug, Clone)]
pub struct Routing {
    pub topic: String,
    /// Broker id to `host:port`.
    pub brokers: BTreeMap<i32, String>,
    /// Leader broker id per partition, indexed by partition id.
    pub leaders: Vec<i32>,
}

impl Routing {
    pub fn partitions(&self) -> usize {
        self.leaders.len()
    }

    pub fn leader_addr(&self, partition: usize) -> Result<&str> {
        let id = self.leaders[partition];
        self.brokers.get(&id).map(String::as_str).ok_or_else(|| {
            anyhow!("leader {id} of partition {partition} is not in the broker list")
        })
    }
}

/// How to create the topic when it is missing.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn metadata(conn: &mut AdminConn, topic: &str) -> Result<MetadataResponse> {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
        ]))
        .with_allow_auto_topic_creation(false);
    conn.send(&req)
}

/// The routing of `topic`, or `None` while it does not exist or a leader is missing.
fn routing_of(resp: &MetadataResponse, topic: &str) -> Result<Option<Routing>> {
    let Some(t) = resp
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
    else {
        return Ok(None);
    };
    match t.error_code {
        0 => {}
        UNKNOWN_TOPIC_OR_PARTITION | LEADER_NOT_AVAILABLE => return Ok(None),
        e => bail!("metadata for topic {topic}: error {e}"),
    }
    let mut leaders = vec![-1; t.partitions.len()];
    for p in &t.partitions {
        let i = usize::try_from(p.partition_index)
            .ok()
            .filter(|&i| i < leaders.len());
        let i = i.ok_or_else(|| anyhow!("partition index {} out of range", p.partition_index))?;
        if p.error_code != 0 || p.leader_id.0 < 0 {
            return Ok(None);
        }
        leaders[i] = p.leader_id.0;
    }
    if leaders.is_empty() || leaders.contains(&-1) {
        return Ok(None);
    }
    let brokers = resp
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    Ok(Some(Routing {
        topic: topic.to_string(),
        brokers,
        leaders,
    }))
}

/// The routing of an existing topic; an error names it when it is missing or leaderless.
pub fn lookup(conn: &mut AdminConn, topic: &str) -> Result<Routing> {
    routing_of(&metadata(conn, topic)?, topic)?
        .ok_or_else(|| anyhow!("topic {topic} does not exist (or a partition has no leader)"))
}

/// Every broker of the cluster as (node id, `host:port`).
pub fn brokers(conn: &mut AdminConn) -> Result<Vec<(i32, String)>> {
    let resp: MetadataResponse =
        conn.send(&MetadataRequest::default().with_topics(Some(vec![])))?;
    Ok(resp
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect())
}

/// Looks the topic up and creates it if missing; waits until every partition has a leader.
pub fn ensure_topic(bootstrap: &str, spec: &TopicSpec, create: bool) -> Result<Routing> {
    let mut conn = AdminConn::connect(bootstrap)?;
    if let Some(r) = routing_of(&metadata(&mut conn, &spec.name)?, &spec.name)? {
        return Ok(r);
    }
    if !create {
        bail!("topic {} does not exist", spec.name);
    }
    let configs = spec
        .configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_value(Some(StrBytes::from_string(v.clone())))
        })
        .collect();
    let topic = CreatableTopic::default()
        .with_name(topic_name(&spec.name))
        .with_num_partitions(spec.partitions)
        .with_replication_factor(spec.replication_factor)
        .with_configs(configs);
    let resp = conn.send(
        &CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(30_000),
    )?;
    for t in &resp.topics {
        if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
            let msg = t
                .error_message
                .as_ref()
                .map(|m| m.as_str().to_string())
                .unwrap_or_default();
            bail!("creating topic {}: error {} {msg}", spec.name, t.error_code);
        }
    }
    let deadline = Instant::now() + Duration::from_millis(TOPIC_READY_MS_MAX);
    loop {
        if let Some(r) = routing_of(&metadata(&mut conn, &spec.name)?, &spec.name)? {
            return Ok(r);
        }
        if Instant::now() > deadline {
            bail!(
                "topic {} has no leaders after {TOPIC_READY_MS_MAX} ms",
                spec.name
            );
        }
        // Control plane only: a metadata poll, never on the data path.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Which offsets ListOffsets asks for.
#[derive(Debug, Clone, Copy)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The last stable offset: the end a `read_committed` consumer reads to.
    LatestStable,
    /// The first offset whose timestamp is at or after this (ms since the epoch); -1 for a
    /// partition with no such record.
    AtMs(i64),
}

/// Offsets of every partition (indexed by partition id), asked of each leader.
pub fn offsets(routing: &Routing, which: OffsetSpec) -> Result<Vec<i64>> {
    let timestamp = match which {
        OffsetSpec::Earliest => -2,
        OffsetSpec::Latest | OffsetSpec::LatestStable => -1,
        OffsetSpec::AtMs(ms) if ms >= 0 => ms,
        OffsetSpec::AtMs(ms) => bail!("timestamp {ms} ms is before 1970"),
    };
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (p, &l) in routing.leaders.iter().enumerate() {
        by_leader.entry(l).or_default().push(p as i32);
    }
    let mut out = vec![-1i64; routing.partitions()];
    let mut answered = vec![false; routing.partitions()];
    for (leader, parts) in by_leader {
        let addr = routing
            .brokers
            .get(&leader)
            .ok_or_else(|| anyhow!("unknown broker {leader}"))?;
        let mut conn = AdminConn::connect(addr)?;
        let partitions = parts
            .iter()
            .map(|&p| {
                ListOffsetsPartition::default()
                    .with_partition_index(p)
                    .with_timestamp(timestamp)
            })
            .collect();
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(i8::from(matches!(which, OffsetSpec::LatestStable)))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(&routing.topic))
                .with_partitions(partitions)]);
        let resp = conn.send(&req).context("ListOffsets")?;
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    bail!(
                        "ListOffsets partition {}: error {}",
                        p.partition_index,
                        p.error_code
                    );
                }
                let i = usize::try_from(p.partition_index)
                    .ok()
                    .filter(|&i| i < out.len());
                let i = i.ok_or_else(|| {
                    anyhow!(
                        "ListOffsets answered unknown partition {}",
                        p.partition_index
                    )
                })?;
                out[i] = p.offset;
                answered[i] = true;
            }
        }
    }
    let by_time = matches!(which, OffsetSpec::AtMs(_));
    if let Some(p) = (0..out.len()).find(|&p| !answered[p] || (out[p] < 0 && !by_time)) {
        bail!("ListOffsets gave no offset for partition {p}");
    }
    Ok(out)
}
