//! KIP-890 part 1: a transactional write that would open a transaction in a partition is
//! appended only once the transaction coordinator confirms that the partition is in the
//! producer's ongoing transaction. Without it, a Produce delayed past its transaction's
//! end (a retry, a slow network) opens a transaction that no coordinator knows: it hangs
//! the partition's last stable offset, or joins the producer's next transaction.
//!
//! On the partition's leader, as Kafka's verification guard does:
//! 1. The owning shard, under its append order, finds that the producer has no open
//!    transaction in the partition: it issues a guard for (partition, producer) and
//!    appends nothing.
//! 2. The Produce handler asks the coordinator: this broker's own state, or
//!    AddPartitionsToTxn v4 `verify_only` on the coordinator's broker. A transactions v2
//!    producer (KIP-890 part 2, Produce v12) never adds partitions itself: the leader
//!    asks the coordinator to add them instead (AddPartitionsToTxn v5).
//! 3. A second round carries the guards of the verified partitions. The shard appends
//!    only if the guard is still the one it issued: a marker written in between (the
//!    transaction ended) clears it, and the write is refused INVALID_TXN_STATE.
//!
//! Invariant: a transactional batch opens a transaction in a partition only with a guard
//! redeemed under the shard's append order, so no marker of that producer can fall
//! between the coordinator's answer and the append.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, ProducerId, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use sluice_control::BrokerId;

use super::persist::partition_count;
use super::{partition_of, TXN_TOPIC};
use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::runs::group_runs;
use crate::store::TopicPartition;

/// Guards one shard keeps at once; past it the oldest is dropped (its write, if it comes
/// back verified, is refused and retried by the client as a new transaction would be).
pub const GUARDS_MAX: usize = 10_000;

/// A shard's outstanding verification guards, by (partition, producer id).
#[derive(Debug, Default)]
pub struct Guards {
    last: u64,
    by_key: HashMap<(TopicPartition, i64), u64>,
    /// The same guards by number: the smallest is the oldest.
    by_age: BTreeMap<u64, (TopicPartition, i64)>,
}

impl Guards {
    /// A new guard for `producer_id`'s first transactional write to `tp` (replacing any
    /// earlier one).
    pub fn issue(&mut self, tp: &TopicPartition, producer_id: i64) -> u64 {
        self.last += 1;
        let guard = self.last;
        let key = (tp.clone(), producer_id);
        if let Some(old) = self.by_key.insert(key.clone(), guard) {
            self.by_age.remove(&old);
        }
        self.by_age.insert(guard, key);
        while self.by_age.len() > GUARDS_MAX {
            if let Some((_, oldest)) = self.by_age.pop_first() {
                self.by_key.remove(&oldest);
            }
        }
        guard
    }

    /// Whether `guard` is still the one issued for `(tp, producer_id)`; it is used up.
    pub fn redeem(&mut self, tp: &TopicPartition, producer_id: i64, guard: u64) -> bool {
        let key = (tp.clone(), producer_id);
        if self.by_key.get(&key) != Some(&guard) {
            return false;
        }
        self.by_key.remove(&key);
        self.by_age.remove(&guard);
        true
    }

    /// A marker of `producer_id` was written to `tp`: its transaction there is over, and
    /// so is any verification of a write to it.
    pub fn clear(&mut self, tp: &TopicPartition, producer_id: i64) {
        if let Some(guard) = self.by_key.remove(&(tp.clone(), producer_id)) {
            self.by_age.remove(&guard);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// What a Produce with a transactional id asks of a partition's owning shard.
#[derive(Debug, Clone, Default)]
pub struct TxnCheck {
    /// Guards issued in the first round for partitions the coordinator has verified.
    pub guards: HashMap<TopicPartition, u64>,
    /// The second round: a write without a valid guard is refused, not issued another.
    pub last_round: bool,
}

/// The producer (id, epoch) of the first batch of `records` when it is transactional data.
pub fn transactional_producer(records: &[u8]) -> Option<(i64, i16)> {
    let h = sluice_engine::batch::parse_header(records).ok()?;
    (h.is_transactional() && !h.is_control()).then(|| (h.producer_id.get(), h.producer_epoch.get()))
}

/// Whether the first batch of `records` is transactional, a marker included (Kafka's
/// `RequestUtils.hasTransactionalRecords` looks at the first batch of each partition).
pub fn is_transactional(records: &[u8]) -> bool {
    sluice_engine::batch::parse_header(records).is_ok_and(|h| h.is_transactional())
}

/// What a partition leader (or group coordinator) asks the transaction coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Whether the partitions are in the ongoing transaction (KIP-890 part 1).
    Verify,
    /// Add them to it, for a transactions v2 producer that never sends
    /// AddPartitionsToTxn itself (Produce v12, TxnOffsetCommit v5).
    Add,
}

/// The coordinator's verdict as a Produce client is answered, as Kafka translates it:
/// retriable coordinator errors become NOT_ENOUGH_REPLICAS (older clients retry it
/// without refreshing metadata); a partition outside the transaction is
/// INVALID_TXN_STATE before Produce v11 (TRANSACTION_ABORTABLE came with it).
pub fn produce_error(verdict: ErrorCode, version: i16) -> ErrorCode {
    match verdict {
        code::TRANSACTION_ABORTABLE if version < 11 => code::INVALID_TXN_STATE,
        code::CONCURRENT_TRANSACTIONS
        | code::COORDINATOR_LOAD_IN_PROGRESS
        | code::COORDINATOR_NOT_AVAILABLE
        | code::NOT_COORDINATOR => code::NOT_ENOUGH_REPLICAS,
        other => other,
    }
}

/// Asks the coordinator of `id` whether each partition is in the ongoing transaction of
/// `producer` (or to add it, `Ask::Add`): one verdict per partition (NONE: it is).
pub async fn verify(
    shard: &Rc<Shard>,
    id: &str,
    producer: (i64, i16),
    partitions: &[(String, i32)],
    ask: Ask,
) -> Vec<ErrorCode> {
    let all = |e: ErrorCode| vec![e; partitions.len()];
    let Some(count) = partition_count(shard) else {
        return all(code::COORDINATOR_NOT_AVAILABLE);
    };
    let p = partition_of(id, count);
    let leader = shard
        .cluster
        .image()
        .topic_by_name(TXN_TOPIC)
        .and_then(|t| t.partitions.get(&sluice_control::PartitionId(p as i32)))
        .and_then(|s| s.leader);
    let Some(leader) = leader else {
        return all(code::COORDINATOR_NOT_AVAILABLE);
    };
    if leader == BrokerId(shard.config.node_id) {
        let local = match ask {
            Ask::Verify => super::coordinator::verify_partitions(shard, id, producer, partitions),
            Ask::Add => {
                let asked = partitions.to_vec();
                super::coordinator::add_partitions(shard, id, producer, asked, true)
                    .await
                    .map(|()| vec![code::NONE; partitions.len()])
            }
        };
        return local.unwrap_or_else(all);
    }
    let Some(addr) = shard.security.peer_address(&shard.cluster.image(), leader) else {
        return all(code::COORDINATOR_NOT_AVAILABLE);
    };
    match verify_remote(&addr, &shard.security, id, producer, partitions, ask).await {
        Ok(verdicts) => verdicts,
        Err(e) => {
            tracing::info!(transactional_id = id, broker = leader.0, error = %e, "transaction verification could not reach the coordinator");
            all(code::COORDINATOR_NOT_AVAILABLE)
        }
    }
}

/// AddPartitionsToTxn to the coordinator's broker at `addr`: v4 `verify_only`, or v5
/// adding for a transactions v2 producer.
async fn verify_remote(
    addr: &(String, u16),
    security: &crate::security::Security,
    id: &str,
    (producer_id, epoch): (i64, i16),
    partitions: &[(String, i32)],
    ask: Ask,
) -> Result<Vec<ErrorCode>, sluice_replication::client::ClientError> {
    let client_id = "sluice-transaction-verification";
    let mut conn = super::connect_broker(addr, security, client_id).await?;
    let topics = group_runs(partitions.iter().map(|(t, p)| (t.as_str(), *p)))
        .into_iter()
        .map(|(topic, ps)| {
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(ps)
        })
        .collect();
    let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_string())))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_verify_only(ask == Ask::Verify)
            .with_topics(topics),
    ]);
    let version = if ask == Ask::Verify { 4 } else { 5 };
    let resp = conn.call(&req, version).await?;
    if resp.error_code != 0 {
        return Ok(vec![ErrorCode(resp.error_code); partitions.len()]);
    }
    let mut verdicts: HashMap<(String, i32), ErrorCode> = HashMap::new();
    for t in resp
        .results_by_transaction
        .iter()
        .filter(|r| r.transactional_id.0.as_str() == id)
    {
        for topic in &t.topic_results {
            for p in &topic.results_by_partition {
                verdicts.insert(
                    (topic.name.0.to_string(), p.partition_index),
                    ErrorCode(p.partition_error_code),
                );
            }
        }
    }
    Ok(partitions
        .iter()
        .map(|p| {
            verdicts
                .get(p)
                .copied()
                .unwrap_or(code::UNKNOWN_SERVER_ERROR)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn a_guard_is_redeemed_once_and_only_while_it_is_the_latest() {
        let mut g = Guards::default();
        let first = g.issue(&tp(0), 7);
        let second = g.issue(&tp(0), 7);
        assert!(!g.redeem(&tp(0), 7, first), "replaced by the second");
        assert!(g.redeem(&tp(0), 7, second));
        assert!(!g.redeem(&tp(0), 7, second), "used up");
        assert!(g.is_empty());
    }

    #[test]
    fn a_marker_clears_the_producers_guard_in_that_partition_only() {
        let mut g = Guards::default();
        let here = g.issue(&tp(0), 7);
        let there = g.issue(&tp(1), 7);
        let other = g.issue(&tp(0), 8);
        g.clear(&tp(0), 7);
        assert!(!g.redeem(&tp(0), 7, here));
        assert!(g.redeem(&tp(1), 7, there));
        assert!(g.redeem(&tp(0), 8, other));
    }

    #[test]
    fn guards_are_bounded_dropping_the_oldest() {
        let mut g = Guards::default();
        let oldest = g.issue(&tp(0), 0);
        for producer in 1..=GUARDS_MAX as i64 {
            g.issue(&tp(0), producer);
        }
        assert_eq!(g.len(), GUARDS_MAX);
        assert!(!g.redeem(&tp(0), 0, oldest));
    }

    #[test]
    fn coordinator_verdicts_become_errors_old_producers_know() {
        assert_eq!(
            produce_error(code::TRANSACTION_ABORTABLE, 9),
            code::INVALID_TXN_STATE
        );
        assert_eq!(
            produce_error(code::TRANSACTION_ABORTABLE, 12),
            code::TRANSACTION_ABORTABLE
        );
        assert_eq!(
            produce_error(code::CONCURRENT_TRANSACTIONS, 12),
            code::NOT_ENOUGH_REPLICAS
        );
        assert_eq!(
            produce_error(code::PRODUCER_FENCED, 9),
            code::PRODUCER_FENCED
        );
    }
}
