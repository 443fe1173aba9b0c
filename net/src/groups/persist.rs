//! The coordinator's I/O on `__consumer_offsets`: appending its records through the
//! partition's owner, loading a partition at start, and the per-shard sweep loop.
//!
//! Every write here is an append to that partition's log (the engine's asynchronous
//! I/O, awaited), never a blocking `std::fs` call: a commit waits for its records to be
//! durable without stopping the shard.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::records;
use super::{Loaded, OffsetsRecords, OFFSETS_TOPIC};
use crate::broker::coordinated::follow_leadership;
use crate::broker::shard::Shard;
use crate::broker::shard::{InternalReadError, InternalRecord};
use crate::kafka::errors::{code, ErrorCode};
use crate::store::TopicPartition;

/// How often a shard sweeps its coordinator partitions (sessions, rebalance deadlines,
/// group metadata writes).
pub const SWEEP_INTERVAL_MS: u64 = 250;
/// Group gauges are published every this many sweeps (about once a second).
const SWEEPS_PER_PUBLISH: u64 = 4;
/// How long to wait before loading a partition again after a failure.
const LOAD_RETRY_MS: u64 = 5_000;

pub fn offsets_tp(partition: usize) -> TopicPartition {
    TopicPartition::new(OFFSETS_TOPIC, partition as i32)
}

/// Appends records to an offsets partition through its owner and waits until they are
/// durable; the base offset they got, or the error code for the client.
pub async fn append(
    shard: &Rc<Shard>,
    partition: usize,
    recs: &OffsetsRecords,
) -> Result<i64, ErrorCode> {
    append_as(shard, partition, recs, None).await
}

/// [`append`], as producer `(id, epoch)`'s transactional records when given
/// (TxnOffsetCommit).
pub async fn append_as(
    shard: &Rc<Shard>,
    partition: usize,
    recs: &OffsetsRecords,
    transaction: Option<(i64, i16)>,
) -> Result<i64, ErrorCode> {
    // Kafka's `offsets.commit.timeout.ms`.
    let written = shard
        .append_internal_as(offsets_tp(partition), recs, transaction, 5_000)
        .await;
    written.map_err(|error| {
        tracing::warn!(
            partition,
            error = error.0,
            "writing to the offsets topic failed"
        );
        // Kafka's mapping of storage errors for the group APIs.
        match error {
            code::MESSAGE_TOO_LARGE => code::INVALID_COMMIT_OFFSET_SIZE,
            code::NOT_LEADER_OR_FOLLOWER | code::KAFKA_STORAGE_ERROR => code::NOT_COORDINATOR,
            _ => code::COORDINATOR_NOT_AVAILABLE,
        }
    })
}

/// Makes a group's membership durable before SyncGroup answers, as Kafka stores the
/// group then: a coordinator that takes the partition over after the answer restores the
/// generation and assignments the members hold, so their heartbeats and commits (the last
/// one before a member hands its partitions over included) are accepted. Without it, a
/// coordinator lost within a sweep interval of a rebalance forgot the generation: commits
/// were refused (ILLEGAL_GENERATION) and a partition's next owner started from an older
/// commit, or with none yet from `auto.offset.reset` (the log end: a skip).
pub async fn store_membership(shard: &Rc<Shard>, group_id: &str) -> Result<(), ErrorCode> {
    let Some(recs) = shard.groups.membership_record(group_id)? else {
        return Ok(());
    };
    append(shard, shard.groups.partition_of(group_id), &recs)
        .await
        .map(|_| ())
}

/// Reads an offsets partition this shard owns from its start.
async fn load(shard: &Rc<Shard>, partition: usize) -> Result<Loaded, InternalReadError> {
    let mut loaded = Loaded::default();
    let skipped = shard
        .read_internal(&offsets_tp(partition), &mut |r| match r {
            InternalRecord::Record {
                key,
                value,
                offset,
                transaction,
            } => {
                let decoded = key.and_then(|k| records::decode(k, value));
                match transaction {
                    Some(producer_id) => loaded.apply_transactional(producer_id, decoded, offset),
                    None => loaded.apply(decoded, offset),
                }
            }
            InternalRecord::Marker {
                producer_id,
                commit,
            } => loaded.apply_marker(producer_id, commit),
        })
        .await?;
    loaded.skipped += skipped;
    Ok(loaded)
}

fn describe_loaded(l: &Loaded) -> String {
    format!("{} records, {} skipped", l.records, l.skipped)
}

/// The coordinator work of one shard, for the offsets partitions it owns: load them,
/// then sweep until the shard stops.
pub async fn run(shard: Rc<Shard>) {
    let groups = shard.groups.clone();
    let owned: Vec<usize> = (0..groups.partition_count())
        .filter(|p| shard.owner_of(&offsets_tp(*p)) == shard.id)
        .collect();
    // Partitions being loaded here (led by this broker, not yet installed).
    let mut pending: Vec<usize> = Vec::new();
    let mut next_load = Instant::now();
    let expiry_every = Duration::from_millis(groups.config().offsets_retention_check_interval_ms);
    let mut next_expiry = Instant::now() + expiry_every;
    let mut sweeps: u64 = 0;
    loop {
        if follow_leadership(&shard, OFFSETS_TOPIC, &*shard.groups, &owned, &mut pending) {
            next_load = Instant::now();
        }
        if !pending.is_empty() && Instant::now() >= next_load {
            pending = load_all(&shard, pending).await;
            next_load = Instant::now() + Duration::from_millis(LOAD_RETRY_MS);
        }
        if shard.stopping.is_set() {
            break;
        }
        let expire = Instant::now() >= next_expiry;
        if expire {
            next_expiry = Instant::now() + expiry_every;
        }
        sweeps += 1;
        if sweeps % SWEEPS_PER_PUBLISH == 0 {
            crate::admin::metrics::publish_groups(shard.id, groups.stats(&owned));
        }
        for &p in &owned {
            let (recs, written) = groups.sweep(p, expire);
            if recs.is_empty() {
                continue;
            }
            if append(&shard, p, &recs).await.is_err() {
                // Tombstones of expired offsets are not retried: the next expiry pass
                // finds whatever a restart brought back.
                groups.mark_dirty(p, &written);
            }
        }
        let stopped = shard
            .sleep_or_stop(Duration::from_millis(SWEEP_INTERVAL_MS))
            .await;
        if stopped {
            break;
        }
    }
    // Membership changed since the last sweep is written before the shard stops, so a
    // restart finds every completed rebalance.
    for &p in &owned {
        let (recs, _) = groups.sweep(p, false);
        if !recs.is_empty() && append(&shard, p, &recs).await.is_err() {
            tracing::warn!(
                partition = p,
                "group metadata not written at shutdown; members rejoin after the restart"
            );
        }
    }
}

/// Loads the given partitions; returns those that failed (to be tried again).
async fn load_all(shard: &Rc<Shard>, partitions: Vec<usize>) -> Vec<usize> {
    let mut failed = Vec::new();
    for p in partitions {
        let started = Instant::now();
        match load(shard, p).await {
            // Leadership may have moved while the log was read.
            Ok(_) if !shard.groups.is_resident(p) => {}
            Ok(loaded) => {
                tracing::debug!(
                    partition = p,
                    took_ms = started.elapsed().as_millis() as u64,
                    "{}",
                    describe_loaded(&loaded)
                );
                shard.groups.install(p, loaded);
            }
            Err(e) => {
                tracing::error!(partition = p, error = %e, "loading an offsets partition failed; its groups answer COORDINATOR_LOAD_IN_PROGRESS until it loads");
                failed.push(p);
            }
        }
    }
    failed
}
