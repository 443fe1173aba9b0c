//! The transaction coordinator's I/O on `__transaction_state`: writing a transactional
//! id's state through the partition's owner, loading a partition when this broker comes to
//! lead it, and the per-shard loop that follows leadership and finishes or times out
//! transactions.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::state::TxnMeta;
use super::{coordinator, records, TXN_TOPIC};
use crate::broker::coordinated::follow_leadership;
use crate::broker::shard::{InternalReadError, InternalRecord, Shard};
use crate::kafka::errors::{code, ErrorCode};
use crate::store::TopicPartition;

/// How often a shard looks at its coordinator partitions (leadership, loads, prepared
/// transactions whose markers are not being written).
const TICK_MS: u64 = 500;
/// How long to wait before loading a partition again after a failure.
const LOAD_RETRY_MS: u64 = 5_000;
/// How long a state write may wait for the in-sync replicas.
const WRITE_TIMEOUT_MS: u64 = 5_000;

pub fn txn_tp(partition: usize) -> TopicPartition {
    TopicPartition::new(TXN_TOPIC, partition as i32)
}

/// Partitions of `__transaction_state` in this broker's image (`None`: not created yet).
pub fn partition_count(shard: &Shard) -> Option<usize> {
    let image = shard.cluster.image();
    image
        .topic_by_name(TXN_TOPIC)
        .map(|t| t.partitions.len())
        .filter(|n| *n > 0)
}

/// Writes `meta` as `id`'s state and waits until the in-sync replicas have it.
pub async fn write(
    shard: &Rc<Shard>,
    partition: usize,
    id: &str,
    meta: &TxnMeta,
) -> Result<(), ErrorCode> {
    let recs = [(records::key(id), Some(records::value(meta)))];
    let written = shard
        .append_internal(txn_tp(partition), &recs, WRITE_TIMEOUT_MS)
        .await;
    written.map(drop).map_err(|error| {
        tracing::warn!(
            partition,
            error = error.0,
            transactional_id = id,
            "writing transaction state failed"
        );
        // Kafka's mapping for the transaction APIs: the client finds the coordinator
        // again, or retries.
        match error {
            code::NOT_LEADER_OR_FOLLOWER | code::KAFKA_STORAGE_ERROR => code::NOT_COORDINATOR,
            _ => code::COORDINATOR_NOT_AVAILABLE,
        }
    })
}

/// Reads a partition this shard owns from its start: the last state of every id.
async fn load(
    shard: &Rc<Shard>,
    partition: usize,
) -> Result<HashMap<String, TxnMeta>, InternalReadError> {
    let mut txns = HashMap::new();
    let mut unknown = 0u64;
    shard
        .read_internal(&txn_tp(partition), &mut |r| {
            let InternalRecord::Record { key, value, .. } = r else {
                return;
            };
            let Some(id) = key.and_then(records::decode_key) else {
                unknown += 1;
                return;
            };
            match value.map(records::decode_value) {
                // A tombstone: the id expired.
                None => {
                    txns.remove(&id);
                }
                Some(Some(meta)) => {
                    txns.insert(id, meta);
                }
                Some(None) => unknown += 1,
            }
        })
        .await?;
    if unknown > 0 {
        tracing::warn!(
            partition,
            records = unknown,
            "transaction state records this broker cannot read were skipped"
        );
    }
    Ok(txns)
}

/// The coordinator work of one shard, for the `__transaction_state` partitions it owns:
/// load them when this broker leads them, finish prepared transactions, abort timed-out
/// ones, until the shard stops.
pub async fn run(shard: Rc<Shard>) {
    let txns = shard.txns.clone();
    let mut pending: Vec<usize> = Vec::new();
    let mut next_load = Instant::now();
    let abort_every = Duration::from_millis(txns.config().abort_check_interval_ms.max(1));
    let mut next_abort_check = Instant::now() + abort_every;
    loop {
        let owned = owned_partitions(&shard);
        if follow_leadership(&shard, TXN_TOPIC, &*shard.txns, &owned, &mut pending) {
            next_load = Instant::now();
        }
        if !pending.is_empty() && Instant::now() >= next_load {
            pending = load_all(&shard, pending).await;
            next_load = Instant::now() + Duration::from_millis(LOAD_RETRY_MS);
        }
        let check_timeouts = Instant::now() >= next_abort_check;
        if check_timeouts {
            next_abort_check = Instant::now() + abort_every;
            crate::admin::metrics::publish_open_transactions(shard.id, txns.open_in(&owned));
        }
        let now = crate::groups::now_ms();
        for &p in &owned {
            for (id, meta) in txns.due(p, now) {
                if meta.state.is_preparing() {
                    coordinator::resume(&shard, p, &id);
                } else if check_timeouts {
                    coordinator::abort_timed_out(&shard, p, &id).await;
                }
            }
        }
        if shard.sleep_or_stop(Duration::from_millis(TICK_MS)).await {
            break;
        }
    }
}

/// The partitions of `__transaction_state` whose logs this shard owns.
fn owned_partitions(shard: &Rc<Shard>) -> Vec<usize> {
    let Some(count) = partition_count(shard) else {
        return Vec::new();
    };
    (0..count)
        .filter(|p| shard.owner_of(&txn_tp(*p)) == shard.id)
        .collect()
}

/// Loads the given partitions; returns those that failed (to be tried again).
async fn load_all(shard: &Rc<Shard>, partitions: Vec<usize>) -> Vec<usize> {
    let mut failed = Vec::new();
    for p in partitions {
        match load(shard, p).await {
            Ok(_) if !shard.txns.is_resident(p) => {}
            Ok(loaded) => {
                tracing::debug!(
                    partition = p,
                    ids = loaded.len(),
                    "transaction state loaded"
                );
                shard.txns.install(p, loaded);
            }
            Err(e) => {
                tracing::error!(partition = p, error = %e, "loading a transaction state partition failed; its ids answer COORDINATOR_LOAD_IN_PROGRESS until it loads");
                failed.push(p);
            }
        }
    }
    failed
}
