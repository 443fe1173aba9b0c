//! `sluice txn list | describe | abort`: transactions over the Kafka protocol, as Kafka's
//! `kafka-transactions.sh` does — ListTransactions on every broker, DescribeTransactions at
//! an id's coordinator, and the abort of a hanging transaction found with
//! DescribeProducers (an ABORT marker written by WriteTxnMarkers on the partition's
//! leader, with the producer's epoch and its last coordinator's epoch).

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, FindCoordinatorRequest,
    ListTransactionsRequest, MetadataRequest, MetadataResponse, ProducerId, TopicName,
    TransactionalId, WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::bench::wire::{error_name, AdminConn};

#[derive(Debug, Args)]
pub struct TxnArgs {
    /// A broker of the cluster.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: TxnCommand,
}

#[derive(Debug, Subcommand)]
pub enum TxnCommand {
    /// Every transactional id of the cluster, with its producer id and state.
    List,
    /// One transactional id at its coordinator: producer, epoch, timeout, state, partitions.
    Describe {
        #[arg(long)]
        transactional_id: String,
    },
    /// Abort the open transaction of a producer in one partition (a hanging transaction
    /// whose coordinator no longer finishes it; see DescribeProducers).
    Abort {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[arg(long)]
        producer_id: i64,
    },
}

/// One transaction as listed.
#[derive(Debug, serde::Serialize)]
struct Listed {
    transactional_id: String,
    producer_id: i64,
    state: String,
    coordinator: i32,
}

pub fn main(args: TxnArgs) -> Result<()> {
    match args.command {
        TxnCommand::List => list(&args.bootstrap, args.json),
        TxnCommand::Describe { transactional_id } => {
            describe(&args.bootstrap, &transactional_id, args.json)
        }
        TxnCommand::Abort {
            topic,
            partition,
            producer_id,
        } => abort(&args.bootstrap, &topic, partition, producer_id),
    }
}

/// The brokers of the cluster (id, `host:port`) and the metadata answer.
fn brokers(bootstrap: &str, topic: Option<&str>) -> Result<(Vec<(i32, String)>, MetadataResponse)> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let mut conn = AdminConn::connect(bootstrap)?;
    let topics = topic.map(|t| {
        vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(t.to_string()))))]
    });
    let md = conn.call(&MetadataRequest::default().with_topics(topics), 9)?;
    let list = md
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    Ok((list, md))
}

fn list(bootstrap: &str, json: bool) -> Result<()> {
    let (brokers, _) = brokers(bootstrap, None)?;
    let mut out = Vec::new();
    for (id, addr) in brokers {
        let mut conn = AdminConn::connect(&addr)?;
        let r = conn.call(
            &ListTransactionsRequest::default().with_duration_filter(-1),
            1,
        )?;
        if r.error_code != 0 {
            bail!("broker {id}: {}", error_name(r.error_code));
        }
        out.extend(r.transaction_states.iter().map(|t| Listed {
            transactional_id: t.transactional_id.to_string(),
            producer_id: t.producer_id.0,
            state: t.transaction_state.to_string(),
            coordinator: id,
        }));
    }
    out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:<40} {:>14} {:<16} COORDINATOR",
        "TRANSACTIONAL ID", "PRODUCER ID", "STATE"
    );
    for t in out {
        println!(
            "{:<40} {:>14} {:<16} {}",
            t.transactional_id, t.producer_id, t.state, t.coordinator
        );
    }
    Ok(())
}

fn describe(bootstrap: &str, id: &str, json: bool) -> Result<()> {
    let mut conn = AdminConn::connect(bootstrap)?;
    let find = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(id.to_string()))
        .with_key_type(1);
    let c = conn.call(&find, 3)?;
    if c.error_code != 0 {
        bail!(
            "finding the coordinator of {id}: {}",
            error_name(c.error_code)
        );
    }
    let mut coordinator = AdminConn::connect(&format!("{}:{}", c.host.as_str(), c.port))?;
    let req = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(StrBytes::from_string(id.to_string()))]);
    let r = coordinator.call(&req, 0)?;
    let t = r
        .transaction_states
        .first()
        .ok_or_else(|| anyhow!("no answer for {id}"))?;
    if t.error_code != 0 {
        bail!("{id}: {}", error_name(t.error_code));
    }
    let partitions: Vec<String> = t
        .topics
        .iter()
        .flat_map(|tp| {
            tp.partitions
                .iter()
                .map(move |p| format!("{}-{p}", tp.topic.as_str()))
        })
        .collect();
    if json {
        let v = serde_json::json!({
            "transactional_id": id,
            "coordinator": c.node_id.0,
            "producer_id": t.producer_id.0,
            "producer_epoch": t.producer_epoch,
            "state": t.transaction_state.as_str(),
            "timeout_ms": t.transaction_timeout_ms,
            "start_time_ms": t.transaction_start_time_ms,
            "partitions": partitions,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("transactional id  {id}");
    println!("coordinator       {}", c.node_id.0);
    println!(
        "producer          {} (epoch {})",
        t.producer_id.0, t.producer_epoch
    );
    println!("state             {}", t.transaction_state.as_str());
    println!("timeout           {} ms", t.transaction_timeout_ms);
    println!("started at        {} ms", t.transaction_start_time_ms);
    println!("partitions        {}", partitions.join(", "));
    Ok(())
}

fn abort(bootstrap: &str, topic: &str, partition: i32, producer_id: i64) -> Result<()> {
    let (brokers, md) = brokers(bootstrap, Some(topic))?;
    let leader = md
        .topics
        .first()
        .and_then(|t| t.partitions.iter().find(|p| p.partition_index == partition))
        .map(|p| p.leader_id.0)
        .filter(|l| *l >= 0)
        .ok_or_else(|| anyhow!("{topic}-{partition} has no leader now"))?;
    let addr = brokers
        .iter()
        .find(|(id, _)| *id == leader)
        .map(|(_, a)| a.clone())
        .ok_or_else(|| anyhow!("leader {leader} is not in the broker list"))?;
    let mut conn = AdminConn::connect(&addr)?;
    let name = TopicName(StrBytes::from_string(topic.to_string()));
    let req = DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
        .with_name(name.clone())
        .with_partition_indexes(vec![partition])]);
    let r = conn.call(&req, 0)?;
    let p = r
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| anyhow!("no answer for {topic}-{partition}"))?;
    if p.error_code != 0 {
        bail!("{topic}-{partition}: {}", error_name(p.error_code));
    }
    let producer = p
        .active_producers
        .iter()
        .find(|a| a.producer_id.0 == producer_id)
        .ok_or_else(|| anyhow!("producer {producer_id} is not known in {topic}-{partition}"))?;
    if producer.current_txn_start_offset < 0 {
        bail!("producer {producer_id} has no open transaction in {topic}-{partition}");
    }
    let epoch = i16::try_from(producer.producer_epoch)
        .map_err(|_| anyhow!("producer epoch {} out of range", producer.producer_epoch))?;
    let marker = WritableTxnMarker::default()
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_transaction_result(false)
        .with_coordinator_epoch(producer.coordinator_epoch.max(0))
        .with_topics(vec![WritableTxnMarkerTopic::default()
            .with_name(name)
            .with_partition_indexes(vec![partition])]);
    let r = conn.call(
        &WriteTxnMarkersRequest::default().with_markers(vec![marker]),
        1,
    )?;
    let error = r
        .markers
        .first()
        .and_then(|m| m.topics.first())
        .and_then(|t| t.partitions.first())
        .map(|p| p.error_code)
        .ok_or_else(|| anyhow!("no answer for the marker"))?;
    if error != 0 {
        bail!("writing the abort marker: {}", error_name(error));
    }
    println!(
        "aborted the transaction of producer {producer_id} in {topic}-{partition} (it began at offset {})",
        producer.current_txn_start_offset
    );
    Ok(())
}
