//! The transaction coordinator (Kafka's `TransactionCoordinator`), with each transactional
//! id's state kept in the internal, compacted topic `__transaction_state`.
//!
//! Ownership: a transactional id belongs to one partition of the topic (Kafka's function:
//! `abs(java_hash(id)) % partitions`), coordinated by that partition's leader. The
//! partition's state ([`Part`]) is owned by the shard that owns the partition's log: it
//! loads the state from the log when it becomes the leader, sweeps it (timeouts,
//! unfinished commits) and finishes transactions whose markers are due. Requests on any
//! shard read and change the state under the partition's mutex, never held across an
//! `.await`, and write through the owner.
//!
//! Invariants:
//! - State follows the log: a transition is written (durable on the in-sync replicas)
//!   before it takes effect or is answered. One transition per transactional id at a time
//!   (`busy`); a request meeting one answers CONCURRENT_TRANSACTIONS, which clients retry.
//! - A PrepareCommit or PrepareAbort state is always finished: its markers go to every
//!   partition of the transaction (`markers.rs`), then the Complete state is written. The
//!   sweep restarts whatever a failover or a stop interrupted.
//! - An open transaction past its timeout, or one whose producer starts again
//!   (InitProducerId), is aborted with the producer epoch bumped first, so the old
//!   producer's late writes and requests are fenced.
//! - Until its partition is loaded, a transactional id's requests get
//!   COORDINATOR_LOAD_IN_PROGRESS; on a broker that does not lead it, NOT_COORDINATOR.
//! - Bounded: transactional ids per broker (`TxnConfig::txns_max`), partitions per
//!   transaction (`TXN_PARTITIONS_MAX`).

pub mod coordinator;
pub mod markers;
pub mod persist;
pub mod records;
pub mod state;
pub mod verify;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use state::{TxnMeta, TxnState};

use crate::kafka::errors::{code, ErrorCode};

/// The internal topic holding transaction state.
pub const TXN_TOPIC: &str = "__transaction_state";

/// Partitions one transaction may hold (Kafka has no limit; a bound keeps one record and
/// one round of markers bounded).
pub const TXN_PARTITIONS_MAX: usize = 10_000;

/// Topic configs of `__transaction_state` when it is created: those of
/// `__consumer_offsets` (compacted, 100 MiB segments as Kafka's
/// transaction.state.log.segment.bytes, not preallocated: small records over many
/// partitions).
pub fn txn_topic_configs() -> BTreeMap<String, String> {
    crate::groups::offsets_topic_configs()
}

/// Coordinator settings (the `[transactions]` config section).
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// Partitions of `__transaction_state` when it is first created
    /// (transaction.state.log.num.partitions).
    pub partitions: i32,
    /// Replicas of each partition when it is first created
    /// (transaction.state.log.replication.factor), capped by the live brokers.
    pub replication_factor: i16,
    /// The longest transaction timeout a producer may ask for
    /// (transaction.max.timeout.ms).
    pub max_timeout_ms: i32,
    /// How often open transactions are checked against their timeout
    /// (transaction.abort.timed.out.transaction.cleanup.interval.ms).
    pub abort_check_interval_ms: u64,
    /// Transactional ids kept by this broker at once.
    pub txns_max: usize,
    /// The `transaction.version` feature level ApiVersions advertises: at 2, clients
    /// that know it use transactions v2 (KIP-890 part 2: EndTxn v5 bumps the epoch,
    /// leaders add partitions on Produce v12).
    pub transaction_version: i16,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            partitions: 50,
            replication_factor: 3,
            max_timeout_ms: 900_000,
            abort_check_interval_ms: 10_000,
            txns_max: 100_000,
            transaction_version: 2,
        }
    }
}

/// Whether this broker coordinates a partition's transactional ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Residency {
    #[default]
    Elsewhere,
    Loading,
    Loaded,
}

/// The state of one `__transaction_state` partition.
#[derive(Debug, Default)]
struct Part {
    residency: Residency,
    /// The partition's leader epoch when this broker took it on: the state is this
    /// broker's only while the epoch is the same (leadership that went away and came
    /// back between two looks of the loop must be loaded again, the other leader may
    /// have written meanwhile).
    epoch: i32,
    txns: HashMap<String, TxnMeta>,
    /// Transactional ids with a transition in flight.
    busy: HashSet<String>,
}

/// The broker's transaction coordinator state, shared by its shards.
#[derive(Debug)]
pub struct Txns {
    config: TxnConfig,
    parts: Mutex<HashMap<usize, Part>>,
    /// A request to create `__transaction_state` is in flight (one per broker).
    creating: std::sync::atomic::AtomicBool,
}

/// A transition in flight for one transactional id: the id stays busy until this is
/// dropped (finished or failed), so concurrent requests are told to retry.
#[derive(Debug)]
pub struct Busy {
    txns: Arc<Txns>,
    partition: usize,
    id: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(p) = self.txns.lock().get_mut(&self.partition) {
            p.busy.remove(&self.id);
        }
    }
}

impl Busy {
    /// Installs `meta`, written to the log, as the id's state (if the partition is still
    /// coordinated here).
    pub fn install(&self, meta: TxnMeta) {
        let mut parts = self.txns.lock();
        if let Some(p) = parts
            .get_mut(&self.partition)
            .filter(|p| p.residency == Residency::Loaded)
        {
            p.txns.insert(self.id.clone(), meta);
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn partition(&self) -> usize {
        self.partition
    }
}

/// A connection to another broker at `addr` (`Security::peer_address`: its inter-broker
/// listener) for one of the coordinator's requests (WriteTxnMarkers, AddPartitionsToTxn
/// verification); with `[cluster_tls]` over mutual TLS.
pub(crate) async fn connect_broker(
    (host, port): &(String, u16),
    security: &crate::security::Security,
    client_id: &str,
) -> Result<sluice_replication::client::KafkaConn, sluice_replication::client::ClientError> {
    let config = sluice_replication::client::ClientConfig {
        client_id: client_id.into(),
        connect_timeout_ms: 5_000,
        request_timeout_ms: 30_000,
        frame_bytes_max: 1 << 20,
        tls: security.cluster_tls().cloned(),
    };
    sluice_replication::client::KafkaConn::connect(host, *port, config).await
}

/// The partition of `__transaction_state` (of `count`) an id belongs to.
pub fn partition_of(transactional_id: &str, count: usize) -> usize {
    ((crate::groups::java_hash(transactional_id) & 0x7fff_ffff) as usize) % count.max(1)
}

impl Txns {
    pub fn new(config: TxnConfig) -> Txns {
        Txns {
            config,
            parts: Mutex::new(HashMap::new()),
            creating: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Claims the creation of `__transaction_state` (false: another request has it).
    pub fn claim_creation(&self) -> bool {
        !self
            .creating
            .swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    /// The creation claimed with [`Self::claim_creation`] is over (done or failed).
    pub fn creation_over(&self) {
        self.creating
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<usize, Part>> {
        // A panic while holding it ends the process (see `fatal`): never poisoned in use.
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a transition of `id` in `partition`: `decide` sees its state (`None`: the
    /// id is new) and returns what to do or the error to answer. The id is busy until the
    /// returned guard drops.
    pub fn begin<T>(
        self: &Arc<Self>,
        partition: usize,
        id: &str,
        decide: impl FnOnce(Option<&TxnMeta>) -> Result<T, ErrorCode>,
    ) -> Result<(Busy, T), ErrorCode> {
        let mut parts = self.lock();
        let total: usize = parts.values().map(|p| p.txns.len()).sum();
        let part = parts.get_mut(&partition).ok_or(code::NOT_COORDINATOR)?;
        match part.residency {
            Residency::Loaded => {}
            Residency::Loading => return Err(code::COORDINATOR_LOAD_IN_PROGRESS),
            Residency::Elsewhere => return Err(code::NOT_COORDINATOR),
        }
        if part.busy.contains(id) {
            return Err(code::CONCURRENT_TRANSACTIONS);
        }
        let current = part.txns.get(id);
        if current.is_none() && total >= self.config.txns_max {
            tracing::warn!(
                txns_max = self.config.txns_max,
                "transactional id refused: the coordinator holds its maximum"
            );
            return Err(code::COORDINATOR_NOT_AVAILABLE);
        }
        let decided = decide(current)?;
        part.busy.insert(id.to_string());
        drop(parts);
        let busy = Busy {
            txns: self.clone(),
            partition,
            id: id.to_string(),
        };
        Ok((busy, decided))
    }

    /// The state of `id`, if its partition is loaded here.
    #[cfg(test)]
    pub fn get(&self, partition: usize, id: &str) -> Option<TxnMeta> {
        self.lock()
            .get(&partition)
            .filter(|p| p.residency == Residency::Loaded)
            .and_then(|p| p.txns.get(id).cloned())
    }

    /// `id`'s state for DescribeTransactions: `Ok(None)` when the partition is coordinated
    /// here and does not know the id.
    pub fn describe(&self, partition: usize, id: &str) -> Result<Option<TxnMeta>, ErrorCode> {
        let parts = self.lock();
        let part = parts.get(&partition).ok_or(code::NOT_COORDINATOR)?;
        match part.residency {
            Residency::Loaded => Ok(part.txns.get(id).cloned()),
            Residency::Loading => Err(code::COORDINATOR_LOAD_IN_PROGRESS),
            Residency::Elsewhere => Err(code::NOT_COORDINATOR),
        }
    }

    /// Every transactional id this broker coordinates, with its state (ListTransactions),
    /// ordered by id.
    pub fn list(&self) -> Vec<(String, TxnMeta)> {
        let parts = self.lock();
        let mut out: Vec<(String, TxnMeta)> = parts
            .values()
            .filter(|p| p.residency == Residency::Loaded)
            .flat_map(|p| p.txns.iter().map(|(id, m)| (id.clone(), m.clone())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Transactions ongoing or being prepared in `partitions` (loaded ones).
    pub fn open_in(&self, partitions: &[usize]) -> u64 {
        let parts = self.lock();
        partitions
            .iter()
            .filter_map(|p| parts.get(p))
            .filter(|p| p.residency == Residency::Loaded)
            .flat_map(|p| p.txns.values())
            .filter(|m| m.state == TxnState::Ongoing || m.state.is_preparing())
            .count() as u64
    }

    pub fn is_resident(&self, partition: usize) -> bool {
        self.lock()
            .get(&partition)
            .is_some_and(|p| p.residency != Residency::Elsewhere)
    }

    /// This broker took the partition on at leader epoch `epoch`: its ids wait for the
    /// load.
    pub fn begin_load(&self, partition: usize, epoch: i32) {
        let mut parts = self.lock();
        let part = parts.entry(partition).or_default();
        if part.residency == Residency::Elsewhere {
            part.residency = Residency::Loading;
            part.epoch = epoch;
        }
    }

    /// Whether the partition's state here was taken on at another leader epoch than
    /// `epoch` (the current one): it may miss what another leader wrote since.
    pub fn is_stale(&self, partition: usize, epoch: i32) -> bool {
        self.lock()
            .get(&partition)
            .is_some_and(|p| p.residency != Residency::Elsewhere && p.epoch != epoch)
    }

    /// Installs what the loader read; the partition then serves requests.
    pub fn install(&self, partition: usize, txns: HashMap<String, TxnMeta>) {
        let mut parts = self.lock();
        let part = parts.entry(partition).or_default();
        if part.residency == Residency::Loading {
            part.txns = txns;
            part.residency = Residency::Loaded;
        }
    }

    /// Forgets a partition: another broker coordinates it now.
    pub fn unload(&self, partition: usize) {
        self.lock().remove(&partition);
    }

    /// Ids of `partition` the sweep must act on: open transactions past their timeout,
    /// and prepared ones whose markers are not being written (a takeover or a stop
    /// interrupted them). Busy ids are left alone.
    pub fn due(&self, partition: usize, now_ms: i64) -> Vec<(String, TxnMeta)> {
        let parts = self.lock();
        let Some(part) = parts.get(&partition) else {
            return Vec::new();
        };
        part.txns
            .iter()
            .filter(|(id, m)| {
                !part.busy.contains(*id) && (m.timed_out(now_ms) || m.state.is_preparing())
            })
            .map(|(id, m)| (id.clone(), m.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(txns: &Arc<Txns>, partition: usize) {
        txns.begin_load(partition, 0);
        txns.install(partition, HashMap::new());
    }

    #[test]
    fn state_loaded_under_an_older_leader_epoch_is_stale() {
        let txns = Arc::new(Txns::new(TxnConfig::default()));
        assert!(
            !txns.is_stale(1, 7),
            "nothing here is not stale: it is elsewhere"
        );
        txns.begin_load(1, 7);
        txns.install(1, HashMap::new());
        assert!(!txns.is_stale(1, 7));
        // Led away and back between two looks: another leader may have written.
        assert!(txns.is_stale(1, 9));
        txns.unload(1);
        txns.begin_load(1, 9);
        assert!(!txns.is_stale(1, 9));
    }

    #[test]
    fn an_id_maps_to_kafkas_partition() {
        // Java: "my-txn".hashCode() is -1061187895; masked, modulo 50: 3.
        assert_eq!(partition_of("my-txn", 50), 3);
    }

    #[test]
    fn one_transition_at_a_time_and_only_where_loaded() {
        let txns = Arc::new(Txns::new(TxnConfig::default()));
        assert_eq!(
            txns.begin(3, "a", |_| Ok(())).err(),
            Some(code::NOT_COORDINATOR)
        );
        txns.begin_load(3, 0);
        assert_eq!(
            txns.begin(3, "a", |_| Ok(())).err(),
            Some(code::COORDINATOR_LOAD_IN_PROGRESS)
        );
        txns.install(3, HashMap::new());
        let (busy, ()) = txns
            .begin(3, "a", |m| {
                assert!(m.is_none());
                Ok(())
            })
            .expect("begins");
        assert_eq!(
            txns.begin(3, "a", |_| Ok(())).err(),
            Some(code::CONCURRENT_TRANSACTIONS)
        );
        busy.install(TxnMeta::new(7, 1_000, 0));
        drop(busy);
        assert_eq!(txns.get(3, "a").map(|m| m.producer_id), Some(7));
        assert!(txns.begin(3, "a", |_| Ok(())).is_ok());
        txns.unload(3);
        assert_eq!(txns.get(3, "a"), None);
    }

    #[test]
    fn the_sweep_finds_timed_out_and_interrupted_transactions() {
        let txns = Arc::new(Txns::new(TxnConfig::default()));
        loaded(&txns, 0);
        let open = TxnMeta::new(1, 100, 0).with_partitions([("t".into(), 0)], 0);
        let prepared = open.prepared(true, 0);
        for (id, m) in [("open", open), ("prepared", prepared)] {
            let (busy, ()) = txns.begin(0, id, |_| Ok(())).expect("begins");
            busy.install(m);
        }
        let due = |now| {
            let mut ids: Vec<String> = txns.due(0, now).into_iter().map(|(id, _)| id).collect();
            ids.sort();
            ids
        };
        assert_eq!(due(50), vec!["prepared"]);
        assert_eq!(due(101), vec!["open", "prepared"]);
        let (_busy, ()) = txns.begin(0, "open", |_| Ok(())).expect("begins");
        assert_eq!(due(101), vec!["prepared"], "a busy id is left alone");
    }
}
