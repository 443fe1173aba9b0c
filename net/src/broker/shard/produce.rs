//! The produce executor: appends in arrival order, then the waits for `acks` overlapped.

use std::time::Duration;

use bytes::Bytes;

use super::mesh::RecordErrors;
use super::{MarkerWritten, ProducePartResult, Shard, ShardOp, ShardReply};
use crate::kafka::errors::{code, ErrorCode};
use crate::store::{
    AppendError, BatchBuilder, LeaderEpoch, Marker, Offset, PartitionLog, Record, TopicPartition,
};
use crate::txn::verify::{transactional_producer, TxnCheck};

/// How long a marker write waits for the in-sync replicas (WriteTxnMarkers carries no
/// timeout; Kafka's coordinator uses its request timeout, 30 s by default).
const MARKER_ACK_TIMEOUT_MS: u64 = 30_000;

pub(super) fn append_error_code(e: &AppendError) -> ErrorCode {
    match e {
        AppendError::Corrupt(_) => code::CORRUPT_MESSAGE,
        AppendError::InvalidRecord(_) => code::INVALID_RECORD,
        // Kafka: "Compacted topic cannot accept message without key".
        AppendError::KeylessRecords { .. } => code::INVALID_RECORD,
        AppendError::TooLarge { .. } => code::MESSAGE_TOO_LARGE,
        AppendError::InvalidTimestamp { .. } => code::INVALID_TIMESTAMP,
        // Closing or frozen: a retriable "not here now".
        AppendError::Unavailable(_) => code::NOT_LEADER_OR_FOLLOWER,
        AppendError::OutOfOrderSequence { .. } => code::OUT_OF_ORDER_SEQUENCE_NUMBER,
        AppendError::InvalidProducerEpoch { .. } => code::INVALID_PRODUCER_EPOCH,
        AppendError::UnknownProducerId(_) => code::UNKNOWN_PRODUCER_ID,
        AppendError::InvalidTxnState { .. } => code::INVALID_TXN_STATE,
        AppendError::CoordinatorFenced { .. } => code::TRANSACTION_COORDINATOR_FENCED,
        AppendError::ControlBatch => code::INVALID_RECORD,
        AppendError::Io(_) => code::KAFKA_STORAGE_ERROR,
        // Only follower appends (`append_replica`) refuse this way; a produce never does.
        AppendError::UnexpectedOffset { .. } => code::UNKNOWN_SERVER_ERROR,
    }
}

/// Why one partition's produce was refused.
pub(super) struct Refused {
    code: ErrorCode,
    record_errors: Option<Box<RecordErrors>>,
    /// Not refused yet: to be verified with the transaction coordinator first.
    verify_guard: Option<u64>,
}

impl From<ErrorCode> for Refused {
    fn from(code: ErrorCode) -> Refused {
        Refused {
            code,
            record_errors: None,
            verify_guard: None,
        }
    }
}

/// KIP-467's answer to a batch refused for some of its records, with Kafka's messages
/// (`LogValidator`): each record's reason, and the partition's message naming the count
/// and the first three.
fn record_errors(tp: &TopicPartition, e: &AppendError) -> Option<RecordErrors> {
    let AppendError::KeylessRecords {
        record_indexes,
        count,
    } = e
    else {
        return None;
    };
    let why = format!("Compacted topic cannot accept message without key in topic partition {tp}.");
    let records: Vec<(i32, String)> = record_indexes
        .iter()
        .map(|i| (*i as i32, why.clone()))
        .collect();
    let first: Vec<String> = records
        .iter()
        .take(3)
        .map(|(i, m)| format!("RecordError(batchIndex={i}, message='{m}')"))
        .collect();
    Some(RecordErrors {
        message: format!(
            "One or more records have been rejected due to {count} record errors in total, and only showing the first three errors at most: [{}]",
            first.join(", ")
        ),
        records,
    })
}

impl Shard {
    /// Appends a coordinator's records (key, value; a `None` value is a tombstone) to a
    /// partition of an internal topic through its owning shard, acks=all within
    /// `timeout_ms`: the base offset they got, or the produce error code.
    pub async fn append_internal(
        self: &std::rc::Rc<Self>,
        tp: TopicPartition,
        records: &[(Bytes, Option<Bytes>)],
        timeout_ms: u64,
    ) -> Result<i64, ErrorCode> {
        self.append_internal_as(tp, records, None, timeout_ms).await
    }

    /// [`Self::append_internal`] as part of producer `(id, epoch)`'s transaction when
    /// `transaction` is given (TxnOffsetCommit: Kafka writes those records with the
    /// producer's id and epoch, no sequence, as a transactional batch).
    pub async fn append_internal_as(
        self: &std::rc::Rc<Self>,
        tp: TopicPartition,
        records: &[(Bytes, Option<Bytes>)],
        transaction: Option<(i64, i16)>,
        timeout_ms: u64,
    ) -> Result<i64, ErrorCode> {
        let ts = crate::groups::now_ms();
        let mut builder = BatchBuilder::new(ts);
        if let Some((producer_id, producer_epoch)) = transaction {
            builder = builder
                .producer(sluice_engine::batch::ProducerFields {
                    producer_id,
                    producer_epoch,
                    base_sequence: -1,
                })
                .transactional();
        }
        for (key, value) in records {
            builder.push(&Record {
                key: Some(key),
                value: value.as_deref(),
                headers: &[],
                timestamp_ms: ts,
            });
        }
        let batch = Bytes::from(builder.build());
        let owner = self.owner_of(&tp);
        let op = ShardOp::Produce {
            acks: -1,
            timeout_ms,
            parts: vec![(tp, batch)],
            txn: None,
        };
        let result = match self.call(owner, op).await {
            ShardReply::Produce(r) => r.into_iter().next(),
            _ => None,
        };
        match result {
            Some(r) if r.error == code::NONE => Ok(r.base_offset.0),
            Some(r) => Err(r.error),
            None => Err(code::COORDINATOR_NOT_AVAILABLE),
        }
    }

    pub(super) async fn produce(
        &self,
        acks: i16,
        timeout_ms: u64,
        parts: Vec<(TopicPartition, Bytes)>,
        txn: Option<TxnCheck>,
    ) -> Vec<ProducePartResult> {
        // Phase 1: append everything (validation, offsets); phase 2: wait for durability,
        // so the waits of all partitions overlap.
        let mut appended = Vec::with_capacity(parts.len());
        {
            // The semaphore is never closed, so the permit is always granted.
            let _turn = self.append_order.acquire_permit(1).await;
            for (tp, records) in &parts {
                appended.push(self.append_one(tp, records, acks, txn.as_ref()).await);
            }
        }
        let mut out = Vec::with_capacity(appended.len());
        for (a, (tp, _)) in appended.into_iter().zip(&parts) {
            let r = match a {
                Err(refused) => Err(refused),
                Ok((log, base_offset, end, epoch)) => self
                    .wait_acked(tp, &log, acks, (end, epoch), timeout_ms)
                    .await
                    .map(|()| (base_offset, log.log_start_offset()))
                    .map_err(Refused::from),
            };
            out.push(match r {
                Ok((base_offset, log_start)) => ProducePartResult {
                    error: code::NONE,
                    base_offset,
                    log_start,
                    record_errors: None,
                    verify_guard: None,
                },
                Err(refused) => ProducePartResult {
                    record_errors: refused.record_errors,
                    verify_guard: refused.verify_guard,
                    ..ProducePartResult::failed(refused.code)
                },
            });
        }
        out
    }

    /// Writes each transaction marker (WriteTxnMarkers) as the leader, acknowledged once
    /// the in-sync replicas have it, as Kafka writes markers (acks=all). Appends in arrival
    /// order with produce, then the waits overlap.
    pub(super) async fn write_markers(
        &self,
        parts: &[(TopicPartition, Marker)],
    ) -> Vec<MarkerWritten> {
        let mut appended = Vec::with_capacity(parts.len());
        {
            let _turn = self.append_order.acquire_permit(1).await;
            for (tp, marker) in parts {
                appended.push(self.append_marker(tp, *marker).await);
            }
        }
        let mut out = Vec::with_capacity(parts.len());
        for (a, (tp, marker)) in appended.into_iter().zip(parts) {
            let error = match a {
                Err(error) => error,
                Ok((log, end, epoch)) => self
                    .wait_acked(tp, &log, -1, (end, epoch), MARKER_ACK_TIMEOUT_MS)
                    .await
                    .err()
                    .unwrap_or(code::NONE),
            };
            if error == code::NONE && tp.topic == crate::groups::OFFSETS_TOPIC {
                // Offsets the transaction committed (TxnOffsetCommit) become visible, or
                // are dropped, once its marker is durable in their partition.
                let commit = marker.kind == crate::store::MarkerKind::Commit;
                self.groups
                    .complete_txn(tp.partition.0 as usize, marker.producer_id, commit);
            }
            out.push(MarkerWritten { error });
        }
        out
    }

    /// Appends one marker under the leadership held now (see `append_one`).
    async fn append_marker(
        &self,
        tp: &TopicPartition,
        marker: Marker,
    ) -> Result<(PartitionLog, Offset, LeaderEpoch), ErrorCode> {
        let log = self.log_for(tp).await?;
        let image_epoch = self.cluster.leader_epoch(&tp.topic, tp.partition.0);
        let role_epoch = self.replicas.get(tp).map(|r| r.leader_epoch());
        let epoch = crate::broker::replicas::append_epoch(role_epoch, image_epoch)?;
        match log.append_marker(marker, epoch).await {
            Ok(info) => {
                self.txn_guards.borrow_mut().clear(tp, marker.producer_id);
                tracing::debug!(partition = %tp, producer_id = marker.producer_id, kind = ?marker.kind, offset = %info.base_offset, "transaction marker written");
                Ok((log, Offset(info.last_offset.0 + 1), epoch))
            }
            Err(e) => {
                tracing::info!(partition = %tp, producer_id = marker.producer_id, error = %e, "transaction marker refused");
                Err(append_error_code(&e))
            }
        }
    }

    /// What the producer's `acks` waits for: nothing (0), this broker's durable copy (1),
    /// or the high watermark passing the batch (all), bounded by `timeout_ms`. `end` and
    /// `epoch`: where the batch ends and the leadership it was appended under; the
    /// answer is NOT_LEADER_OR_FOLLOWER once that leadership is over, whatever the high
    /// watermark says (after the switch to follower the high watermark is the new
    /// leader's, whose log may hold other records at these offsets: this broker's copy
    /// of the batch is an uncommitted suffix it truncates, and acknowledging it would
    /// lose it).
    pub(super) async fn wait_acked(
        &self,
        tp: &TopicPartition,
        log: &PartitionLog,
        acks: i16,
        (end, epoch): (Offset, LeaderEpoch),
        timeout_ms: u64,
    ) -> Result<(), ErrorCode> {
        if acks == 0 {
            return Ok(());
        }
        if let Err(e) = log.wait_durable(end).await {
            tracing::error!(partition = %tp, error = %e, "waiting for durability failed");
            return Err(code::KAFKA_STORAGE_ERROR);
        }
        let Some(replica) = self.replicas.get(tp) else {
            return Ok(());
        };
        let same_leadership =
            |r: &crate::broker::replicas::Replica| crate::broker::replicas::still_leading(r, epoch);
        if !same_leadership(&replica) {
            return Err(code::NOT_LEADER_OR_FOLLOWER);
        }
        // This broker's copy is durable: that may be what the high watermark waited for.
        replica.update_hw();
        if acks != -1 || replica.hw.get() >= end.0 {
            return Ok(());
        }
        let wait = replica.hw.wait_for(end.0);
        let timeout = glommio::timer::sleep(Duration::from_millis(timeout_ms.max(1)));
        let stopping = self.stopping.wait();
        match futures_lite::future::or(async { Some(wait.await) }, async {
            futures_lite::future::or(timeout, stopping).await;
            None
        })
        .await
        {
            // The high watermark passed the batch within the leadership it was written in.
            Some(Ok(())) if same_leadership(&replica) => Ok(()),
            // The leadership ended while waiting: the client retries on the new leader.
            Some(_) => Err(code::NOT_LEADER_OR_FOLLOWER),
            None if !replica.enough_in_sync() => Err(code::NOT_ENOUGH_REPLICAS_AFTER_APPEND),
            None => Err(code::REQUEST_TIMED_OUT),
        }
    }

    /// Appends one partition's records: the log, the base offset and the end offset to
    /// wait for.
    pub(super) async fn append_one(
        &self,
        tp: &TopicPartition,
        records: &Bytes,
        acks: i16,
        txn: Option<&TxnCheck>,
    ) -> Result<(PartitionLog, Offset, Offset, LeaderEpoch), Refused> {
        let log = self.log_for(tp).await?;
        // The epoch the batch is stamped with is the leadership this broker holds now,
        // checked with no await before the append: the image alone may already name a
        // newer epoch this broker does not lead in (a controlled shutdown moving it away,
        // or leading again before the replication loop switched the role). A batch stamped
        // with an epoch its writer never led in makes a later truncation keep it
        // (its epoch matches the real leader's), and the replicas diverge.
        let image_epoch = self.cluster.leader_epoch(&tp.topic, tp.partition.0);
        let role_epoch = self.replicas.get(tp).map(|r| r.leader_epoch());
        let epoch = crate::broker::replicas::append_epoch(role_epoch, image_epoch)?;
        if acks == -1 && self.replicas.get(tp).is_some_and(|r| !r.enough_in_sync()) {
            tracing::info!(partition = %tp, "acks=all produce refused: too few in-sync replicas");
            return Err(code::NOT_ENOUGH_REPLICAS.into());
        }
        self.count_traffic(tp, |t| {
            t.bytes_in += records.len() as u64;
            t.produce_requests += 1;
        });
        if let Some(check) = txn {
            self.gate_transactional_write(tp, &log, records, check)?;
        }
        // Idempotence (sequence checks, duplicates answered with their first offsets) is
        // the engine's: its producer state is per log and survives restarts.
        let result = log.append(records, epoch).await;
        match result {
            Ok(info) => Ok((log, info.base_offset, Offset(info.last_offset.0 + 1), epoch)),
            Err(AppendError::Io(e)) => {
                tracing::error!(topic = %tp.topic, partition = tp.partition.0, error = %e, "append failed");
                Err(code::KAFKA_STORAGE_ERROR.into())
            }
            Err(e) => {
                tracing::info!(topic = %tp.topic, partition = tp.partition.0, error = %e, "produce rejected");
                Err(Refused {
                    code: append_error_code(&e),
                    record_errors: record_errors(tp, &e).map(Box::new),
                    verify_guard: None,
                })
            }
        }
    }
    /// KIP-890 (`txn::verify`): a transactional batch that would open its producer's
    /// transaction in `tp` passes only with the guard issued for it, still unused and not
    /// cleared by a marker since; without one it gets a guard to verify with the
    /// coordinator (first round) or is refused INVALID_TXN_STATE (second round). Runs
    /// under the append order, so no marker falls between the check and the append.
    fn gate_transactional_write(
        &self,
        tp: &TopicPartition,
        log: &PartitionLog,
        records: &Bytes,
        check: &TxnCheck,
    ) -> Result<(), Refused> {
        let Some((producer_id, _)) = transactional_producer(records) else {
            return Ok(());
        };
        if log.open_transaction(producer_id).is_some() {
            return Ok(());
        }
        let mut guards = self.txn_guards.borrow_mut();
        if let Some(guard) = check.guards.get(tp) {
            if guards.redeem(tp, producer_id, *guard) {
                return Ok(());
            }
        }
        if check.last_round {
            tracing::info!(partition = %tp, producer_id, "transactional write refused: its transaction ended while it was verified");
            return Err(code::INVALID_TXN_STATE.into());
        }
        Err(Refused {
            code: code::NONE,
            record_errors: None,
            verify_guard: Some(guards.issue(tp, producer_id)),
        })
    }
}
