//! Writing a decided transaction's markers into every partition it touched: on this
//! broker through the partitions' owning shards, on other brokers with WriteTxnMarkers
//! over their Kafka listener. Partitions whose leader is unknown or refuses for a
//! retriable reason are tried again until every marker is written or this broker no
//! longer coordinates the transaction (the next coordinator finishes it).

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;
use sluice_control::{BrokerId, PartitionId};

use super::state::{TxnMeta, TxnState};
use super::TXN_TOPIC;
use crate::broker::shard::{answers_by_shard, MarkerWritten, Shard, ShardOp};
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::runs::group_runs;
use crate::store::{Marker, MarkerKind, TopicPartition};

/// Pause between rounds while some markers are not written, growing to the maximum.
const RETRY_PAUSE_MS: u64 = 50;
const RETRY_PAUSE_MAX_MS: u64 = 1_000;

/// Writes the markers of `meta` (PrepareCommit or PrepareAbort), coordinated from
/// `partition` of `__transaction_state` under `coordinator_epoch`. `Err(NOT_COORDINATOR)`
/// once this broker no longer leads that partition, or the shard stops.
pub async fn write(
    shard: &Rc<Shard>,
    meta: &TxnMeta,
    partition: usize,
    coordinator_epoch: i32,
) -> Result<(), ErrorCode> {
    let marker = Marker {
        producer_id: meta.producer_id,
        producer_epoch: meta.producer_epoch,
        coordinator_epoch,
        kind: if meta.state == TxnState::PrepareCommit {
            MarkerKind::Commit
        } else {
            MarkerKind::Abort
        },
    };
    let mut left: BTreeSet<(String, i32)> = meta.partitions.clone();
    let mut pause = RETRY_PAUSE_MS;
    while !left.is_empty() {
        if shard.stopping.is_set() || !shard.cluster.leads(TXN_TOPIC, partition as i32) {
            return Err(code::NOT_COORDINATOR);
        }
        let done = round(shard, &left, marker).await?;
        left.retain(|p| !done.contains(p));
        if !left.is_empty() {
            if shard.sleep_or_stop(Duration::from_millis(pause)).await {
                return Err(code::NOT_COORDINATOR);
            }
            pause = (pause * 2).min(RETRY_PAUSE_MAX_MS);
        }
    }
    Ok(())
}

/// One attempt at every partition in `left`: those now done (written, or gone with their
/// topic). `Err` when a leader says this coordinator is stale.
async fn round(
    shard: &Rc<Shard>,
    left: &BTreeSet<(String, i32)>,
    marker: Marker,
) -> Result<BTreeSet<(String, i32)>, ErrorCode> {
    let image = shard.cluster.image();
    let me = BrokerId(shard.config.node_id);
    let mut done = BTreeSet::new();
    let mut local = Vec::new();
    let mut remote: BTreeMap<BrokerId, Vec<(String, i32)>> = BTreeMap::new();
    for (topic, p) in left {
        let Some(t) = image.topic_by_name(topic) else {
            // Deleted since: nothing left to mark (Kafka drops these markers too).
            done.insert((topic.clone(), *p));
            continue;
        };
        match t.partitions.get(&PartitionId(*p)).and_then(|s| s.leader) {
            Some(l) if l == me => local.push((TopicPartition::new(topic, *p), marker)),
            Some(l) => remote.entry(l).or_default().push((topic.clone(), *p)),
            None => {}
        }
    }
    let asked: Vec<(String, i32)> = local
        .iter()
        .map(|(tp, _)| (tp.topic.clone(), tp.partition.0))
        .collect();
    let answers: Vec<MarkerWritten> =
        answers_by_shard(shard, local, |parts| ShardOp::WriteMarkers { parts }).await;
    for (p, a) in asked.into_iter().zip(answers) {
        if settle(&p, a.error, marker)? {
            done.insert(p);
        }
    }
    for (broker, parts) in remote {
        let Some(addr) = shard.security.peer_address(&image, broker) else {
            continue;
        };
        match write_remote(&addr, &shard.security, &parts, marker).await {
            Ok(errors) => {
                for (p, error) in parts.into_iter().zip(errors) {
                    if settle(&p, error, marker)? {
                        done.insert(p);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(broker = broker.0, error = %e, "writing transaction markers to a broker failed; retrying");
            }
        }
    }
    Ok(done)
}

/// Whether a partition's answer ends its marker: written, or refused because a newer
/// producer epoch already wrote there (the transaction is stale there). A fenced
/// coordinator stops the whole round.
fn settle(p: &(String, i32), error: ErrorCode, marker: Marker) -> Result<bool, ErrorCode> {
    match error {
        code::NONE => Ok(true),
        code::INVALID_PRODUCER_EPOCH => {
            tracing::warn!(topic = %p.0, partition = p.1, producer_id = marker.producer_id, "transaction marker refused for an older producer epoch; skipping that partition");
            Ok(true)
        }
        code::TRANSACTION_COORDINATOR_FENCED => {
            tracing::warn!(topic = %p.0, partition = p.1, "a newer transaction coordinator wrote there; this one stops");
            Err(code::NOT_COORDINATOR)
        }
        _ => Ok(false),
    }
}

/// WriteTxnMarkers v1 to the broker at `addr` for `parts`: each partition's error code.
async fn write_remote(
    addr: &(String, u16),
    security: &crate::security::Security,
    parts: &[(String, i32)],
    marker: Marker,
) -> Result<Vec<ErrorCode>, sluice_replication::client::ClientError> {
    let client_id = "sluice-transaction-coordinator";
    let mut conn = super::connect_broker(addr, security, client_id).await?;
    let topics = group_runs(parts.iter().map(|(t, p)| (t.as_str(), *p)))
        .into_iter()
        .map(|(topic, partitions)| {
            WritableTxnMarkerTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_indexes(partitions)
        })
        .collect();
    let req = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(ProducerId(marker.producer_id))
        .with_producer_epoch(marker.producer_epoch)
        .with_transaction_result(marker.kind == MarkerKind::Commit)
        .with_coordinator_epoch(marker.coordinator_epoch)
        .with_topics(topics)]);
    let resp = conn.call(&req, 1).await?;
    let mut errors: BTreeMap<(String, i32), ErrorCode> = BTreeMap::new();
    for m in &resp.markers {
        for t in &m.topics {
            for p in &t.partitions {
                errors.insert(
                    (t.name.0.to_string(), p.partition_index),
                    ErrorCode(p.error_code),
                );
            }
        }
    }
    Ok(parts
        .iter()
        .map(|p| errors.get(p).copied().unwrap_or(code::UNKNOWN_SERVER_ERROR))
        .collect())
}
