//! The blocking calls behind `sluice topic`, on the bench's `AdminConn`: topic creation,
//! listing and deletion, partitions added, configs described and changed, records
//! produced to and fetched from each partition's leader. Every call is bounded by the
//! connection's timeouts; every per-resource error of an answer is checked.

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, FetchRequest, IncrementalAlterConfigsRequest, MetadataRequest,
    MetadataResponse, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::bench::metadata::{self, OffsetSpec};
use crate::bench::wire::{error_name, AdminConn};

/// The client id on the topic tool's requests.
const CLIENT_ID: &str = "sluice-topic";
const RESOURCE_TOPIC: i8 = 2;
/// Most bytes one fetch asks for per partition.
const FETCH_PARTITION_BYTES_MAX: i32 = 1 << 20;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The one answer a request about one topic gets.
fn only<'a, T>(answers: &'a [T], topic: &str) -> Result<&'a T> {
    answers
        .first()
        .ok_or_else(|| anyhow!("no answer for topic {topic}"))
}

/// A Kafka error code as a `Result`, with what was being done.
fn check(code: i16, message: Option<&StrBytes>, what: &str) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    match message {
        Some(m) if !m.is_empty() => bail!("{what}: {} {}", error_name(code), m.as_str()),
        _ => bail!("{what}: {}", error_name(code)),
    }
}

/// One partition as Metadata shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
}

/// A topic as Metadata shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TopicInfo {
    pub name: String,
    pub internal: bool,
    pub partitions: Vec<PartitionInfo>,
}

/// One config as DescribeConfigs shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConfigInfo {
    pub name: String,
    pub value: Option<String>,
    pub source: &'static str,
    pub read_only: bool,
}

/// One record read back.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

fn source_name(source: i8) -> &'static str {
    match source {
        1 => "topic",
        2 => "dynamic-broker",
        3 => "dynamic-cluster-default",
        4 => "static",
        5 => "default",
        _ => "unknown",
    }
}

pub struct Client {
    conn: AdminConn,
}

impl Client {
    pub fn connect(bootstrap: &str) -> Result<Client> {
        let conn = AdminConn::connect_as(bootstrap, CLIENT_ID)
            .with_context(|| format!("--bootstrap {bootstrap}"))?;
        Ok(Client { conn })
    }

    pub fn create(
        &mut self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<()> {
        let configs = configs
            .iter()
            .map(|(k, v)| {
                CreatableTopicConfig::default()
                    .with_name(text(k))
                    .with_value(Some(text(v)))
            })
            .collect();
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
                .with_configs(configs)]);
        let resp = self.conn.send(&req).context("CreateTopics")?;
        let t = only(&resp.topics, topic)?;
        check(
            t.error_code,
            t.error_message.as_ref(),
            &format!("creating {topic}"),
        )
    }

    fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse> {
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        self.conn.send(&req).context("Metadata")
    }

    /// Every topic (`None`) or the named ones, sorted by name; an unknown named topic is an
    /// error.
    pub fn topics(&mut self, only: Option<&[String]>) -> Result<Vec<TopicInfo>> {
        let resp = self.metadata(only)?;
        let mut out = Vec::with_capacity(resp.topics.len());
        for t in resp.topics {
            let topic = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            check(t.error_code, None, &format!("topic {topic}"))?;
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    offline: p.offline_replicas.iter().map(|b| b.0).collect(),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            out.push(TopicInfo {
                name: topic,
                internal: t.is_internal,
                partitions,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Log start and end offsets of every partition of `topic`.
    pub fn offsets(&mut self, topic: &str) -> Result<(Vec<i64>, Vec<i64>)> {
        let routing = metadata::lookup(&mut self.conn, topic)?;
        Ok((
            metadata::offsets(&routing, OffsetSpec::Earliest)?,
            metadata::offsets(&routing, OffsetSpec::Latest)?,
        ))
    }

    pub fn configs(&mut self, topic: &str) -> Result<Vec<ConfigInfo>> {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(text(topic))
                .with_configuration_keys(None),
        ]);
        let resp = self.conn.send(&req).context("DescribeConfigs")?;
        let r = only(&resp.results, topic)?;
        check(
            r.error_code,
            r.error_message.as_ref(),
            &format!("configs of {topic}"),
        )?;
        Ok(r.configs
            .iter()
            .map(|c| ConfigInfo {
                name: c.name.to_string(),
                value: c.value.as_ref().map(|v| v.to_string()),
                source: source_name(c.config_source),
                read_only: c.read_only,
            })
            .collect())
    }

    /// IncrementalAlterConfigs on `topic`: (key, operation, value) with Kafka's operation
    /// numbers (0 set, 1 delete, 2 append, 3 subtract).
    pub fn alter_configs(
        &mut self,
        topic: &str,
        ops: &[(String, i8, Option<String>)],
    ) -> Result<()> {
        let configs = ops
            .iter()
            .map(|(k, op, v)| {
                AlterableConfig::default()
                    .with_name(text(k))
                    .with_config_operation(*op)
                    .with_value(v.as_deref().map(text))
            })
            .collect();
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(text(topic))
                .with_configs(configs),
        ]);
        let resp = self.conn.send(&req).context("IncrementalAlterConfigs")?;
        let r = only(&resp.responses, topic)?;
        check(
            r.error_code,
            r.error_message.as_ref(),
            &format!("altering {topic}"),
        )
    }

    pub fn add_partitions(&mut self, topic: &str, count: i32) -> Result<()> {
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name(topic))
                .with_count(count)
                .with_assignments(None)]);
        let resp = self.conn.send(&req).context("CreatePartitions")?;
        let r = only(&resp.results, topic)?;
        check(
            r.error_code,
            r.error_message.as_ref(),
            &format!("adding partitions to {topic}"),
        )
    }

    pub fn delete(&mut self, topic: &str) -> Result<()> {
        // v6 names topics in `topics` (by name or id), older versions in `topic_names`.
        let req = DeleteTopicsRequest::default().with_timeout_ms(30_000);
        let req = if self.conn.version(ApiKey::DeleteTopics)? >= 6 {
            req.with_topics(vec![
                DeleteTopicState::default().with_name(Some(name(topic)))
            ])
        } else {
            req.with_topic_names(vec![name(topic)])
        };
        let resp = self.conn.send(&req).context("DeleteTopics")?;
        let r = only(&resp.responses, topic)?;
        check(
            r.error_code,
            r.error_message.as_ref(),
            &format!("deleting {topic}"),
        )
    }

    /// Appends `batch` (one record batch) to `partition` of `topic` on its leader with
    /// acks=all; its base offset.
    pub fn produce(&mut self, topic: &str, partition: i32, batch: Bytes) -> Result<i64> {
        let routing = metadata::lookup(&mut self.conn, topic)?;
        let index = usize::try_from(partition)
            .ok()
            .filter(|&p| p < routing.partitions())
            .ok_or_else(|| anyhow!("topic {topic} has no partition {partition}"))?;
        let mut leader = AdminConn::connect_as(routing.leader_addr(index)?, CLIENT_ID)?;
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch))])]);
        let resp = leader.send(&req).context("Produce")?;
        let p = resp
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .ok_or_else(|| anyhow!("no answer for {topic}-{partition}"))?;
        check(
            p.error_code,
            p.error_message.as_ref(),
            &format!("producing to {topic}-{partition}"),
        )?;
        Ok(p.base_offset)
    }

    /// Partitions of `topic`.
    pub fn partition_count(&mut self, topic: &str) -> Result<usize> {
        Ok(metadata::lookup(&mut self.conn, topic)?.partitions())
    }

    /// The first offset at or after `ms` of each partition (the end where none is).
    pub fn offsets_at(&mut self, topic: &str, ms: i64) -> Result<Vec<i64>> {
        let routing = metadata::lookup(&mut self.conn, topic)?;
        let at = metadata::offsets(&routing, OffsetSpec::AtMs(ms))?;
        let end = metadata::offsets(&routing, OffsetSpec::Latest)?;
        Ok(at
            .into_iter()
            .zip(end)
            .map(|(a, e)| if a < 0 { e } else { a })
            .collect())
    }

    /// Records of `partition` of `topic` from `offset`, as one Fetch returns them (at
    /// most [`FETCH_PARTITION_BYTES_MAX`] bytes; compressed batches decompressed,
    /// bounded); the high watermark.
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(Vec<Fetched>, i64)> {
        let routing = metadata::lookup(&mut self.conn, topic)?;
        let index = usize::try_from(partition)
            .ok()
            .filter(|&p| p < routing.partitions())
            .ok_or_else(|| anyhow!("topic {topic} has no partition {partition}"))?;
        let mut leader = AdminConn::connect_as(routing.leader_addr(index)?, CLIENT_ID)?;
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(200)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_PARTITION_BYTES_MAX)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(FETCH_PARTITION_BYTES_MAX)])]);
        let resp = leader.send(&req).context("Fetch")?;
        check(resp.error_code, None, "Fetch")?;
        let p = resp
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| anyhow!("no answer for {topic}-{partition}"))?;
        check(p.error_code, None, &format!("fetching {topic}-{partition}"))?;
        let records = p.records.clone().unwrap_or_default();
        Ok((decode(partition, offset, &records)?, p.high_watermark))
    }
}

/// The records at or after `from` in the whole batches of `bytes` (a partial batch at
/// the end of the answer is left for the next fetch; control records are skipped).
fn decode(partition: i32, from: i64, bytes: &Bytes) -> Result<Vec<Fetched>> {
    use kafka_protocol::records::RecordBatchDecoder;
    let mut buf = bytes.clone();
    let mut out = Vec::new();
    while !buf.is_empty() {
        let Ok(set) = RecordBatchDecoder::decode(&mut buf) else {
            break;
        };
        for r in set.records {
            if r.control || r.offset < from {
                continue;
            }
            out.push(Fetched {
                partition,
                offset: r.offset,
                timestamp_ms: r.timestamp,
                key: r.key.map(|b| b.to_vec()),
                value: r.value.map(|b| b.to_vec()),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.as_ref().map(|v| v.to_vec())))
                    .collect(),
            });
        }
    }
    Ok(out)
}
