//! The coordinator's operations, one per request kind and one per sweep duty. Each runs
//! as one transition of one transactional id (see `Txns::begin`): decide from the state,
//! write the next state, install it; deciding a transaction then finishes it in the
//! background (markers, then the Complete state), as Kafka answers EndTxn once its
//! decision is durable.

use std::rc::Rc;

use super::persist::{self, partition_count};
use super::state::{TxnMeta, TxnState};
use super::{partition_of, Busy, TXN_PARTITIONS_MAX, TXN_TOPIC};
use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};

fn now_ms() -> i64 {
    crate::groups::now_ms()
}

/// The partition coordinating `id`, if the topic exists and this broker leads it.
fn coordinating_partition(shard: &Shard, id: &str) -> Result<usize, ErrorCode> {
    let count = partition_count(shard).ok_or(code::COORDINATOR_NOT_AVAILABLE)?;
    let p = partition_of(id, count);
    if !shard.cluster.leads(TXN_TOPIC, p as i32) {
        return Err(code::NOT_COORDINATOR);
    }
    // Led again under a new epoch since the state was loaded: the loop loads it again.
    if shard
        .txns
        .is_stale(p, shard.cluster.leader_epoch(TXN_TOPIC, p as i32).0)
    {
        return Err(code::COORDINATOR_LOAD_IN_PROGRESS);
    }
    Ok(p)
}

/// What InitProducerId does once it has looked at the state.
enum Init {
    /// A new transactional id: a new producer id.
    New,
    /// The next epoch of the same producer (a new id when epochs are used up).
    Bump(TxnMeta),
    /// An open transaction of the previous incarnation: abort it first (fenced).
    AbortFirst(TxnMeta),
}

/// InitProducerId with a transactional id: the producer id and epoch to use. A producer
/// that says who it was (`producer_id`/`epoch` ≥ 0, KIP-360) must be the current one or
/// the one just before it.
pub async fn init_producer_id(
    shard: &Rc<Shard>,
    id: &str,
    timeout_ms: i32,
    (producer_id, epoch): (i64, i16),
) -> Result<(i64, i16), ErrorCode> {
    if timeout_ms <= 0 || timeout_ms > shard.txns.config().max_timeout_ms {
        return Err(code::INVALID_TRANSACTION_TIMEOUT);
    }
    let p = coordinating_partition(shard, id)?;
    let (busy, step) = shard.txns.begin(p, id, |m| {
        let Some(m) = m else {
            return Ok(Init::New);
        };
        if producer_id >= 0 {
            let known_epoch = epoch == m.producer_epoch || epoch == m.last_producer_epoch;
            if producer_id != m.producer_id || !known_epoch {
                return Err(code::PRODUCER_FENCED);
            }
        }
        match m.state {
            TxnState::Ongoing => Ok(Init::AbortFirst(m.clone())),
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                Err(code::CONCURRENT_TRANSACTIONS)
            }
            _ => Ok(Init::Bump(m.clone())),
        }
    })?;
    let next = match step {
        Init::New => TxnMeta::new(new_producer_id(shard).await?, timeout_ms, now_ms()),
        Init::Bump(m) => match m.bumped(timeout_ms, now_ms()) {
            Some(next) => next,
            None => TxnMeta::new(new_producer_id(shard).await?, timeout_ms, now_ms()),
        },
        Init::AbortFirst(m) => {
            // Kafka's answer while the previous incarnation's transaction is aborted: the
            // producer retries and then gets the next epoch.
            let fenced = m.fenced_abort(now_ms());
            tracing::info!(
                transactional_id = id,
                producer_id = m.producer_id,
                "a new producer incarnation aborts the open transaction of the previous one"
            );
            decide(shard, busy, fenced).await?;
            return Err(code::CONCURRENT_TRANSACTIONS);
        }
    };
    persist::write(shard, p, id, &next).await?;
    busy.install(next.clone());
    Ok((next.producer_id, next.producer_epoch))
}

async fn new_producer_id(shard: &Shard) -> Result<i64, ErrorCode> {
    shard.catalog.allocate_producer_id().await.map_err(|e| {
        tracing::error!(error = %e, "allocating a producer id failed");
        code::COORDINATOR_NOT_AVAILABLE
    })
}

/// AddPartitionsToTxn: the partitions join the producer's transaction (opening one if
/// none is open). The caller checked that every partition exists.
/// `v2`: added by a partition leader for a transactions v2 producer (KIP-890), which
/// marks the transaction as v2.
pub async fn add_partitions(
    shard: &Rc<Shard>,
    id: &str,
    (producer_id, epoch): (i64, i16),
    partitions: Vec<(String, i32)>,
    v2: bool,
) -> Result<(), ErrorCode> {
    let p = coordinating_partition(shard, id)?;
    let decide = |m: Option<&TxnMeta>| {
        let m = m.ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
        m.check_producer(producer_id, epoch)?;
        if m.state.is_preparing() || m.state == TxnState::PrepareEpochFence {
            return Err(code::CONCURRENT_TRANSACTIONS);
        }
        let known =
            m.state == TxnState::Ongoing && partitions.iter().all(|tp| m.partitions.contains(tp));
        if known {
            return Ok(None);
        }
        let mut next = m.with_partitions(partitions.iter().cloned(), now_ms());
        if v2 {
            next.client_version = 2;
        }
        if next.partitions.len() > TXN_PARTITIONS_MAX {
            tracing::info!(
                transactional_id = id,
                partitions = next.partitions.len(),
                "transaction refused: too many partitions"
            );
            return Err(code::INVALID_REQUEST);
        }
        Ok(Some(next))
    };
    let (busy, next) = begin_after_finishing(shard, p, id, decide).await?;
    if let Some(next) = next {
        persist::write(shard, p, id, &next).await?;
        busy.install(next);
    }
    Ok(())
}

/// How long a request that meets its producer's previous transaction still being
/// finished (markers, then the Complete state: about a millisecond here) waits for it
/// before answering CONCURRENT_TRANSACTIONS. Clients retry that answer only after their
/// backoff (librdkafka's retry.backoff.ms, 100 ms), which would otherwise cost every
/// transaction that long.
const FINISHING_WAIT_MS: u64 = 500;
const FINISHING_POLL_MS: u64 = 1;

/// [`Txns::begin`](super::Txns::begin), tried again while the id's previous transaction
/// is being finished (`decide` answers CONCURRENT_TRANSACTIONS), for at most
/// [`FINISHING_WAIT_MS`].
async fn begin_after_finishing<T>(
    shard: &Rc<Shard>,
    p: usize,
    id: &str,
    decide: impl Fn(Option<&TxnMeta>) -> Result<T, ErrorCode>,
) -> Result<(Busy, T), ErrorCode> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(FINISHING_WAIT_MS);
    loop {
        match shard.txns.begin(p, id, &decide) {
            Err(code::CONCURRENT_TRANSACTIONS) if std::time::Instant::now() < deadline => {
                let pause = std::time::Duration::from_millis(FINISHING_POLL_MS);
                if shard.sleep_or_stop(pause).await {
                    return Err(code::CONCURRENT_TRANSACTIONS);
                }
            }
            answer => return answer,
        }
    }
}

/// AddPartitionsToTxn `verify_only` (KIP-890): whether each partition is in the ongoing
/// transaction of `(producer_id, epoch)`, as Kafka's `handleVerifyPartitionsInTransaction`
/// answers: NONE, or TRANSACTION_ABORTABLE for a partition outside it. Reads the state
/// without starting a transition: the partition leader's guard covers the race with the
/// transaction's end.
pub fn verify_partitions(
    shard: &Shard,
    id: &str,
    (producer_id, epoch): (i64, i16),
    partitions: &[(String, i32)],
) -> Result<Vec<ErrorCode>, ErrorCode> {
    let p = coordinating_partition(shard, id)?;
    let m = shard
        .txns
        .describe(p, id)?
        .ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
    m.check_producer(producer_id, epoch)?;
    if m.state.is_preparing() || m.state == TxnState::PrepareEpochFence {
        return Err(code::CONCURRENT_TRANSACTIONS);
    }
    Ok(partitions
        .iter()
        .map(|tp| {
            if m.state == TxnState::Ongoing && m.partitions.contains(tp) {
                code::NONE
            } else {
                code::TRANSACTION_ABORTABLE
            }
        })
        .collect())
}

/// EndTxn: commit or abort the producer's open transaction. Answered once the decision
/// is durable; the markers follow. A retry of a finished decision is answered again.
/// With transactions v2 (`bump`, EndTxn v5+, KIP-890) the producer epoch is bumped as
/// the transaction ends: the answer is the producer id and epoch to go on with.
pub async fn end_txn(
    shard: &Rc<Shard>,
    id: &str,
    (producer_id, epoch): (i64, i16),
    commit: bool,
    bump: bool,
) -> Result<(i64, i16), ErrorCode> {
    let p = coordinating_partition(shard, id)?;
    if bump {
        return end_txn_bumped(shard, p, id, (producer_id, epoch), commit).await;
    }
    let (busy, prepared) = shard.txns.begin(p, id, |m| {
        let m = m.ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
        m.check_producer(producer_id, epoch)?;
        match (m.state, commit) {
            (TxnState::Ongoing, _) => Ok(Some(m.prepared(commit, now_ms()))),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(None),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(code::CONCURRENT_TRANSACTIONS)
            }
            _ => Err(code::INVALID_TXN_STATE),
        }
    })?;
    if let Some(prepared) = prepared {
        decide(shard, busy, prepared).await?;
    }
    Ok((producer_id, epoch))
}

/// What a transactions v2 EndTxn does once it has looked at the state.
enum EndV2 {
    /// Decide with the epoch bumped (`true`: a used-up epoch, take a new producer id).
    Decide(TxnMeta, bool),
    /// A retry of the EndTxn that ended the transaction: answered again.
    Answered((i64, i16)),
}

/// EndTxn v5+ (KIP-890 part 2). The epoch moves on with every transaction, so a delayed
/// or duplicated EndTxn of an earlier transaction is either recognised as the retry it
/// is (the transaction it ended is the last one) or fenced; it never ends a later one.
async fn end_txn_bumped(
    shard: &Rc<Shard>,
    p: usize,
    id: &str,
    (producer_id, epoch): (i64, i16),
    commit: bool,
) -> Result<(i64, i16), ErrorCode> {
    let (busy, step) = shard.txns.begin(p, id, |m| {
        let m = m.ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
        let outcome_matches = matches!(
            (m.state, commit),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false)
        );
        let deciding_same = matches!(
            (m.state, commit),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false)
        );
        if m.ended_by(producer_id, epoch) {
            if outcome_matches {
                return Ok(EndV2::Answered(m.handed_over()));
            }
            if deciding_same {
                return Err(code::CONCURRENT_TRANSACTIONS);
            }
            // An EndTxn of a transaction that is over, meeting the next one.
            return Err(code::PRODUCER_FENCED);
        }
        m.check_producer(producer_id, epoch)?;
        let rotate = m.producer_epoch >= super::state::PRODUCER_EPOCH_MAX;
        match (m.state, commit) {
            (TxnState::Ongoing, _) => Ok(EndV2::Decide(m.clone(), rotate)),
            // The producer cannot tell whether a failed write opened the transaction;
            // an abort of one that was never opened ends it all the same.
            (TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort, false) => {
                Ok(EndV2::Decide(m.clone(), rotate))
            }
            (TxnState::PrepareCommit | TxnState::PrepareAbort, _) => {
                Err(code::CONCURRENT_TRANSACTIONS)
            }
            _ => Err(code::INVALID_TXN_STATE),
        }
    })?;
    let (m, rotate) = match step {
        EndV2::Answered(producer) => return Ok(producer),
        EndV2::Decide(m, rotate) => (m, rotate),
    };
    let next_producer_id = if rotate {
        new_producer_id(shard).await?
    } else {
        -1
    };
    let prepared = m.prepared_bumped(commit, now_ms(), next_producer_id);
    let handed = prepared.handed_over();
    decide(shard, busy, prepared).await?;
    Ok(handed)
}

/// Writes a decided (prepared) state, then finishes the transaction in the background.
async fn decide(shard: &Rc<Shard>, busy: Busy, prepared: TxnMeta) -> Result<(), ErrorCode> {
    persist::write(shard, busy.partition(), busy.id(), &prepared).await?;
    busy.install(prepared.clone());
    glommio::spawn_local(finish(shard.clone(), busy, prepared)).detach();
    Ok(())
}

/// Writes the markers of a prepared transaction, then its Complete state. Stops (the
/// state stays prepared, for the next coordinator or the next sweep) when this broker no
/// longer coordinates it.
async fn finish(shard: Rc<Shard>, busy: Busy, prepared: TxnMeta) {
    let p = busy.partition();
    let coordinator_epoch = shard.cluster.leader_epoch(TXN_TOPIC, p as i32).0;
    if super::markers::write(&shard, &prepared, p, coordinator_epoch)
        .await
        .is_err()
    {
        tracing::info!(transactional_id = busy.id(), "transaction markers not all written here; the coordinator that takes over finishes them");
        return;
    }
    let done = prepared.completed(now_ms());
    match persist::write(&shard, p, busy.id(), &done).await {
        Ok(()) => {
            tracing::debug!(
                transactional_id = busy.id(),
                state = done.state.name(),
                "transaction complete"
            );
            crate::admin::metrics::transaction_completed(done.state == TxnState::CompleteCommit);
            busy.install(done);
        }
        Err(e) => {
            tracing::warn!(
                transactional_id = busy.id(),
                error = e.0,
                "completing a transaction failed; the sweep tries again"
            );
        }
    }
}

/// Finishes a prepared transaction nobody is finishing (after a takeover or a stop).
pub fn resume(shard: &Rc<Shard>, partition: usize, id: &str) {
    let begun = shard.txns.begin(partition, id, |m| match m {
        Some(m) if m.state.is_preparing() => Ok(m.clone()),
        _ => Err(code::NONE),
    });
    if let Ok((busy, prepared)) = begun {
        tracing::info!(
            transactional_id = id,
            state = prepared.state.name(),
            "finishing a prepared transaction"
        );
        glommio::spawn_local(finish(shard.clone(), busy, prepared)).detach();
    }
}

/// Aborts an open transaction past its timeout, the producer epoch bumped first so the
/// producer is fenced (Kafka's timed-out transaction abort).
pub async fn abort_timed_out(shard: &Rc<Shard>, partition: usize, id: &str) {
    let begun = shard.txns.begin(partition, id, |m| match m {
        Some(m) if m.timed_out(now_ms()) => Ok(m.fenced_abort(now_ms())),
        _ => Err(code::NONE),
    });
    if let Ok((busy, fenced)) = begun {
        tracing::info!(
            transactional_id = id,
            producer_id = fenced.producer_id,
            timeout_ms = fenced.timeout_ms,
            "aborting a transaction past its timeout"
        );
        crate::admin::metrics::transaction_timed_out();
        if let Err(e) = decide(shard, busy, fenced).await {
            tracing::warn!(
                transactional_id = id,
                error = e.0,
                "aborting a timed-out transaction failed; the next check tries again"
            );
        }
    }
}

/// Has the active controller create `__transaction_state` (once per broker at a time),
/// as Kafka does on the first transactional FindCoordinator. Replicas: the configured
/// factor capped by the unfenced brokers, after waiting (by answering "not yet") while
/// fewer brokers than controllers have registered, since a topic keeps its replicas.
pub fn create_topic(shard: &Rc<Shard>) {
    let image = shard.cluster.image();
    if image.topic_by_name(TXN_TOPIC).is_some() {
        return;
    }
    let config = shard.txns.config().clone();
    let wanted = config.replication_factor.max(1) as usize;
    let live = image.brokers().filter(|b| !b.fenced).count().max(1);
    let expected = wanted.min(shard.cluster.view.controllers().len().max(1));
    if live < expected || !shard.txns.claim_creation() {
        return;
    }
    let rf = wanted.min(live) as i16;
    let shard = shard.clone();
    glommio::spawn_local(async move {
        tracing::info!(partitions = config.partitions, replication_factor = rf, "creating the transaction state topic");
        let req = sluice_control::rpc::Request::CreateTopic {
            name: TXN_TOPIC.to_string(),
            partitions: config.partitions,
            replication_factor: rf,
            configs: super::txn_topic_configs().into_iter().collect(),
            assignment: Vec::new(),
            topic_id: None,
            validate_only: false,
        };
        let timeout = crate::broker::cluster::CONTROLLER_REQUEST_TIMEOUT;
        match crate::broker::cluster::change_metadata(&shard.cluster, &req, timeout).await {
            Ok(_) => {}
            Err((code::TOPIC_ALREADY_EXISTS, _)) => {}
            Err((error, message)) => {
                tracing::warn!(error = error.0, %message, "creating the transaction state topic failed; the next FindCoordinator tries again");
            }
        }
        shard.txns.creation_over();
    })
    .detach();
}
