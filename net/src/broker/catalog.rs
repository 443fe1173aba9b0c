//! The topic catalog: which topics exist, their partition counts, ids and configs — this
//! broker's copy of the metadata image's topics (`sync_from`; only `cluster.rs` writes
//! them), read by the storage side (log configs, partition counts) — and producer-id blocks.
//!
//! Control plane, shared by all shards behind one mutex (never held across an `.await`,
//! never taken per record). Persisted as JSON in `<data-dir>/sluice-topics.json`, written
//! to a temporary file, fsynced and renamed, so a crash leaves the old or the new catalog.
//!
//! What is written when: topic changes come from the control thread (`sync_from`) and at
//! start-up. The state to write is taken under the mutex and written after it is
//! released, before the caller goes on (a shard's lookup never waits behind a file write;
//! it may see a topic a moment before the file has it, which a restart re-syncs from the
//! metadata log). Producer ids are handed out only below
//! the end of a block already in the file (a restart starts past it, so no id is given
//! twice); the next block is reserved on a shard's blocking thread when half the current
//! one is used, so InitProducerId waits for a write only when a burst used the rest of a
//! block first. Each write carries a sequence number, and one older than the file's is
//! not written: the file never goes back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::broker::config::{FlushSetting, TopicDefaults};
use crate::store::{FlushPolicy, LogConfig};
use sluice_engine::{CleanupPolicy, CompressionType, TimestampType};

const CATALOG_FILE: &str = "sluice-topics.json";
/// Kafka's limit on topic name length.
const TOPIC_NAME_BYTES_MAX: usize = 249;
/// A bound on partitions per topic, so one request cannot ask for unbounded work.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// One topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub partitions: i32,
    pub topic_id: [u8; 16],
    /// Only the configs set on this topic; defaults are not stored.
    pub configs: BTreeMap<String, String>,
    /// The configs this broker's dynamic configs and the cluster's dynamic defaults set
    /// for topics without their own value (topic key names; `config_keys::inherited`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inherited: BTreeMap<String, String>,
}

impl TopicMeta {
    /// The configs its log follows: the inherited ones under its own.
    pub fn merged_configs(&self) -> BTreeMap<String, String> {
        let mut merged = self.inherited.clone();
        merged.extend(self.configs.iter().map(|(k, v)| (k.clone(), v.clone())));
        merged
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("topic {0} already exists")]
    Exists(String),
    #[error("topic {0} does not exist")]
    Unknown(String),
    #[error("invalid topic name {0:?}")]
    InvalidName(String),
    #[error("invalid partition count {0}")]
    InvalidPartitions(i32),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("catalog i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("catalog file is corrupt: {0}")]
    Corrupt(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CatalogData {
    topics: BTreeMap<String, TopicMeta>,
    /// Producer ids below this may have been handed out; a restart starts here.
    #[serde(default)]
    producer_ids_reserved_end: i64,
    #[serde(skip)]
    producer_id_next: i64,
    /// Ids below this are reserved in the file (`producer_ids_reserved_end` as written).
    #[serde(skip)]
    producer_ids_durable_end: i64,
    /// A reservation of the next block is on its way to the file.
    #[serde(skip)]
    producer_ids_reserving: bool,
    /// Sequence number of the last state serialized for the file.
    #[serde(skip)]
    write_seq: u64,
    /// Set once the topics are a copy of the metadata log's image (the controller owns
    /// them); a file without it predates the quorum and its topics are imported once.
    #[serde(default)]
    from_metadata_log: bool,
}

/// What a broker must do to its logs after the topics changed (`Catalog::sync_from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicChange {
    /// The topic is gone (or was recreated under a new id): delete its partition logs.
    Deleted { name: String, partitions: i32 },
    /// The topic's configs changed: apply them to its open logs.
    Configs { name: String },
}

/// Producer ids reserved (persisted) at a time, so most allocations do not write the file.
const PRODUCER_ID_BLOCK: i64 = 1000;
/// Reservations one InitProducerId makes at most before it gives up (each reserves a
/// block, so more than one happens only when other shards take a block's ids meanwhile).
const PRODUCER_ID_RESERVES_MAX: usize = 4;

/// The shared topic catalog.
#[derive(Debug)]
pub struct Catalog {
    path: PathBuf,
    data: Mutex<CatalogData>,
    /// Sequence number of the state in the file; held while writing (the write turn).
    written_seq: Mutex<u64>,
    pub defaults: TopicDefaults,
}

impl Catalog {
    /// Loads the catalog from `data_dir`, or starts an empty one.
    pub fn open(data_dir: &Path, defaults: TopicDefaults) -> Result<Catalog, CatalogError> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(CATALOG_FILE);
        let data = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| CatalogError::Corrupt(e.to_string()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CatalogData::default(),
            Err(e) => return Err(e.into()),
        };
        let mut data: CatalogData = data;
        data.producer_id_next = data.producer_ids_reserved_end;
        data.producer_ids_durable_end = data.producer_ids_reserved_end;
        Ok(Catalog {
            path,
            data: Mutex::new(data),
            written_seq: Mutex::new(0),
            defaults,
        })
    }

    /// Whether the topics are a copy of the metadata image (see `from_metadata_log`).
    pub fn copies_metadata_log(&self) -> bool {
        self.lock().from_metadata_log
    }

    /// Producer ids start at `floor` at least (each broker of a cluster hands out ids from
    /// its own range, so two brokers never give one id to two producers).
    pub fn set_producer_id_floor(&self, floor: i64) {
        let mut data = self.lock();
        data.producer_id_next = data.producer_id_next.max(floor);
    }

    /// Replaces the topics with `topics` (the metadata image's), persists them if anything
    /// changed, and says what the logs must follow.
    pub fn sync_from(&self, topics: Vec<TopicMeta>) -> Result<Vec<TopicChange>, CatalogError> {
        let mut data = self.lock();
        let next: BTreeMap<String, TopicMeta> =
            topics.into_iter().map(|t| (t.name.clone(), t)).collect();
        let mut changes = Vec::new();
        for (name, old) in &data.topics {
            match next.get(name) {
                Some(new) if new.topic_id == old.topic_id => {
                    if new.configs != old.configs || new.inherited != old.inherited {
                        changes.push(TopicChange::Configs { name: name.clone() });
                    }
                }
                _ => changes.push(TopicChange::Deleted {
                    name: name.clone(),
                    partitions: old.partitions,
                }),
            }
        }
        let same = data.from_metadata_log
            && data.topics.len() == next.len()
            && data.topics.iter().zip(&next).all(|((_, a), (_, b))| {
                a.name == b.name
                    && a.partitions == b.partitions
                    && a.topic_id == b.topic_id
                    && a.configs == b.configs
                    && a.inherited == b.inherited
            });
        if same {
            return Ok(changes);
        }
        data.topics = next;
        data.from_metadata_log = true;
        self.persist(data)?;
        Ok(changes)
    }

    /// A producer id never handed out before, by this or an earlier run, from the ids
    /// already reserved in the file; `None` when they are used up (reserve, then ask
    /// again). `Some((id, true))`: half the block is used and no reservation is on its
    /// way; the caller starts one ([`reserve_producer_ids`](Self::reserve_producer_ids)).
    pub fn take_producer_id(&self) -> Option<(i64, bool)> {
        let mut data = self.lock();
        if data.producer_id_next >= data.producer_ids_durable_end {
            return None;
        }
        let id = data.producer_id_next;
        data.producer_id_next += 1;
        let low = data.producer_ids_durable_end - data.producer_id_next <= PRODUCER_ID_BLOCK / 2;
        let refill = low && !data.producer_ids_reserving;
        if refill {
            data.producer_ids_reserving = true;
        }
        Some((id, refill))
    }

    /// Reserves the next block of producer ids in the file (blocking: a file write),
    /// unless more than half a block is reserved already.
    pub fn reserve_producer_ids(&self) -> Result<(), CatalogError> {
        let mut data = self.lock();
        if data.producer_ids_durable_end - data.producer_id_next > PRODUCER_ID_BLOCK / 2 {
            data.producer_ids_reserving = false;
            return Ok(());
        }
        let from = data.producer_ids_reserved_end.max(data.producer_id_next);
        data.producer_ids_reserved_end = from + PRODUCER_ID_BLOCK;
        let written = self.persist(data);
        self.lock().producer_ids_reserving = false;
        written
    }

    /// A producer id never handed out before: reserved ahead on the shard's blocking
    /// thread, so the request waits for the file only when the reserved ids ran out.
    pub async fn allocate_producer_id(self: &Arc<Catalog>) -> Result<i64, CatalogError> {
        for _ in 0..PRODUCER_ID_RESERVES_MAX {
            let Some((id, refill)) = self.take_producer_id() else {
                let catalog = self.clone();
                glommio::executor()
                    .spawn_blocking(move || catalog.reserve_producer_ids())
                    .await?;
                continue;
            };
            if refill {
                let catalog = self.clone();
                let reserve =
                    glommio::executor().spawn_blocking(move || catalog.reserve_producer_ids());
                glommio::spawn_local(async move {
                    if let Err(e) = reserve.await {
                        tracing::warn!(error = %e, "reserving producer ids ahead failed; retried when they run out");
                    }
                })
                .detach();
            }
            return Ok(id);
        }
        Err(CatalogError::Io(std::io::Error::other(
            "producer ids were used up faster than they could be reserved",
        )))
    }

    fn lock(&self) -> MutexGuard<'_, CatalogData> {
        // A panic while holding the lock cannot leave the map half-changed (every change
        // is one insert or remove), so a poisoned lock is still usable.
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, name: &str) -> Option<TopicMeta> {
        self.lock().topics.get(name).cloned()
    }

    pub fn partition_count(&self, name: &str) -> Option<i32> {
        self.lock().topics.get(name).map(|t| t.partitions)
    }

    pub fn list(&self) -> Vec<TopicMeta> {
        self.lock().topics.values().cloned().collect()
    }

    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMeta, CatalogError> {
        validate_topic_name(name)?;
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err(CatalogError::InvalidPartitions(partitions));
        }
        log_config(&self.defaults, &configs)?;
        let mut data = self.lock();
        if data.topics.contains_key(name) {
            return Err(CatalogError::Exists(name.to_string()));
        }
        let meta = TopicMeta {
            name: name.to_string(),
            partitions,
            topic_id: new_topic_id(name),
            configs,
            inherited: BTreeMap::new(),
        };
        if validate_only {
            return Ok(meta);
        }
        data.topics.insert(name.to_string(), meta.clone());
        self.persist(data)?;
        Ok(meta)
    }

    /// Creates an internal topic unless it exists; returns its partition count (an
    /// existing topic keeps its own). Its id comes from `cluster_id` and the name, so every
    /// broker of a cluster makes the same topic: the first to put it into the metadata log
    /// wins and the others find theirs identical (a different id would make them delete
    /// and re-create its partitions, racing the replicas being opened).
    pub fn ensure_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        cluster_id: &str,
    ) -> Result<i32, CatalogError> {
        if let Some(n) = self.partition_count(name) {
            return Ok(n);
        }
        let mut meta = self.create(name, partitions, configs, true)?;
        meta.topic_id = internal_topic_id(cluster_id, name);
        let mut data = self.lock();
        if let Some(t) = data.topics.get(name) {
            return Ok(t.partitions);
        }
        data.topics.insert(name.to_string(), meta.clone());
        self.persist(data)?;
        Ok(meta.partitions)
    }

    /// The log config of a topic: defaults overridden by the topic's configs.
    pub fn log_config_for(&self, topic: &str) -> LogConfig {
        let configs = self
            .lock()
            .topics
            .get(topic)
            .map(TopicMeta::merged_configs)
            .unwrap_or_default();
        // Stored configs were validated before they were stored.
        log_config(&self.defaults, &configs)
            .unwrap_or_else(|_| log_config(&self.defaults, &BTreeMap::new()).unwrap_or_default())
    }

    /// Writes the state `data` holds now: taken under the lock, which is released before
    /// the file write (lookups go on meanwhile); returns once it is in the file.
    fn persist(&self, mut data: MutexGuard<'_, CatalogData>) -> Result<(), CatalogError> {
        let state = self.take_state(&mut data);
        drop(data);
        self.write_state(state)
    }

    /// The state to write, taken under the data lock; the caller releases the lock, then
    /// [`write_state`](Self::write_state)s it.
    fn take_state(&self, data: &mut CatalogData) -> TakenState {
        let (seq, bytes) = self.serialize(data);
        TakenState {
            seq,
            bytes,
            producer_ids_reserved_end: data.producer_ids_reserved_end,
        }
    }

    /// Writes a taken state (without the data lock: lookups go on meanwhile) unless a
    /// newer one is in the file already, then counts its producer-id reservation durable.
    fn write_state(&self, state: TakenState) -> Result<(), CatalogError> {
        self.write(state.seq, &state.bytes?)?;
        let end = state.producer_ids_reserved_end;
        let mut data = self.lock();
        assert!(
            end <= data.producer_ids_reserved_end,
            "producer-id reservations only grow"
        );
        data.producer_ids_durable_end = data.producer_ids_durable_end.max(end);
        Ok(())
    }

    /// The file's bytes of `data`, numbered for [`write`](Self::write).
    fn serialize(&self, data: &mut CatalogData) -> (u64, Result<Vec<u8>, CatalogError>) {
        data.write_seq += 1;
        let bytes =
            serde_json::to_vec_pretty(data).map_err(|e| CatalogError::Corrupt(e.to_string()));
        (data.write_seq, bytes)
    }

    /// Writes state `seq` unless a newer one is in the file already (it holds this one's
    /// changes: each state is serialized from the one before, under the data lock).
    fn write(&self, seq: u64, bytes: &[u8]) -> Result<(), CatalogError> {
        let mut written = self.written_seq.lock().unwrap_or_else(|p| p.into_inner());
        if seq <= *written {
            return Ok(());
        }
        sluice_engine::write_file_atomic(&self.path, bytes)?;
        *written = seq;
        Ok(())
    }
}

/// A catalog state serialized under the data lock, to be written after it is released.
struct TakenState {
    seq: u64,
    bytes: Result<Vec<u8>, CatalogError>,
    producer_ids_reserved_end: i64,
}

/// The id of an internal topic: FNV-1a (128-bit) of the cluster id and the name.
fn internal_topic_id(cluster_id: &str, name: &str) -> [u8; 16] {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in cluster_id.bytes().chain([0]).chain(name.bytes()) {
        h ^= b as u128;
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013B);
    }
    let mut id = h.to_be_bytes();
    if id == [0; 16] {
        id[15] = 1;
    }
    id
}

fn new_topic_id(name: &str) -> [u8; 16] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in name.bytes().chain(nanos.to_le_bytes()) {
        h ^= b as u128;
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013B);
    }
    let mut id = h.to_be_bytes();
    if id == [0; 16] {
        id[15] = 1;
    }
    id
}

/// Kafka's `Topic.isInternal`: the coordinators' own topics (Metadata and
/// DescribeTopicPartitions flag them; regex subscriptions leave them out).
pub fn is_internal_topic(name: &str) -> bool {
    name == crate::groups::OFFSETS_TOPIC || name == crate::txn::TXN_TOPIC
}

pub fn validate_topic_name(name: &str) -> Result<(), CatalogError> {
    let ok = !name.is_empty()
        && name.len() <= TOPIC_NAME_BYTES_MAX
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CatalogError::InvalidName(name.to_string()))
    }
}

fn parse_u64(key: &str, v: &str) -> Result<u64, CatalogError> {
    v.parse::<u64>().map_err(|_| {
        CatalogError::InvalidConfig(format!("{key}: {v:?} is not a non-negative integer"))
    })
}

/// A fraction between 0 and 1, in parts per million.
fn parse_ratio_ppm(key: &str, v: &str) -> Result<u32, CatalogError> {
    match v.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok((r * 1e6).round() as u32),
        _ => Err(CatalogError::InvalidConfig(format!(
            "{key}: {v:?} is not a number between 0 and 1"
        ))),
    }
}

fn parse_limit(key: &str, v: &str) -> Result<Option<u64>, CatalogError> {
    if v.trim() == "-1" {
        return Ok(None);
    }
    parse_u64(key, v).map(Some)
}

/// Builds a log config from defaults and topic configs; an unknown key or bad value is an
/// error naming it.
pub fn log_config(
    defaults: &TopicDefaults,
    configs: &BTreeMap<String, String>,
) -> Result<LogConfig, CatalogError> {
    let mut c = LogConfig {
        segment_bytes_max: defaults.segment_bytes,
        segment_ms_max: defaults.segment_ms,
        max_message_bytes: defaults.max_message_bytes,
        retention_ms: defaults.retention_ms,
        retention_bytes: defaults.retention_bytes,
        flush: match defaults.flush {
            FlushSetting::Fsync => FlushPolicy::Fsync,
            FlushSetting::Interval {
                interval_ms,
                bytes_max,
            } => FlushPolicy::Interval {
                interval_ms,
                bytes_max,
            },
        },
        ..LogConfig::default()
    };
    let mut policy: Option<String> = None;
    let (mut flush_ms, mut flush_bytes) = match defaults.flush {
        FlushSetting::Fsync => (1000, 1 << 20),
        FlushSetting::Interval {
            interval_ms,
            bytes_max,
        } => (interval_ms, bytes_max),
    };
    for (k, v) in configs {
        match k.as_str() {
            "segment.bytes" => c.segment_bytes_max = parse_u64(k, v)?.max(1),
            "segment.ms" => c.segment_ms_max = parse_u64(k, v)?.max(1),
            "retention.ms" => c.retention_ms = parse_limit(k, v)?,
            "retention.bytes" => c.retention_bytes = parse_limit(k, v)?,
            "max.message.bytes" => {
                c.max_message_bytes = u32::try_from(parse_u64(k, v)?)
                    .map_err(|_| CatalogError::InvalidConfig(format!("{k}: {v} is too large")))?
            }
            "flush.policy" => match v.as_str() {
                "fsync" | "interval" => policy = Some(v.clone()),
                _ => {
                    return Err(CatalogError::InvalidConfig(format!(
                        "{k}: {v:?} is not fsync or interval"
                    )))
                }
            },
            "flush.ms" => flush_ms = parse_u64(k, v)?,
            "flush.bytes" => flush_bytes = parse_u64(k, v)?,
            "index.interval.bytes" => {
                c.index_interval_bytes = u32::try_from(parse_u64(k, v)?)
                    .map_err(|_| CatalogError::InvalidConfig(format!("{k}: {v} is too large")))?
            }
            "preallocate" => {
                c.preallocate = v.parse::<bool>().map_err(|_| {
                    CatalogError::InvalidConfig(format!("{k}: {v:?} is not true or false"))
                })?
            }
            "compression.type" => {
                c.compression = CompressionType::parse(v)
                    .map_err(|e| CatalogError::InvalidConfig(e.to_string()))?
            }
            "cleanup.policy" => {
                c.cleanup_policy = CleanupPolicy::parse(v)
                    .map_err(|e| CatalogError::InvalidConfig(e.to_string()))?
            }
            "delete.retention.ms" => c.delete_retention_ms = parse_u64(k, v)?,
            "min.compaction.lag.ms" => c.min_compaction_lag_ms = parse_u64(k, v)?,
            "max.compaction.lag.ms" => c.max_compaction_lag_ms = parse_u64(k, v)?,
            "min.cleanable.dirty.ratio" => c.min_cleanable_dirty_ratio_ppm = parse_ratio_ppm(k, v)?,
            "message.timestamp.type" => {
                c.timestamp_type = match v.as_str() {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => {
                        return Err(CatalogError::InvalidConfig(format!(
                            "{k}: {v:?} is not CreateTime or LogAppendTime"
                        )))
                    }
                }
            }
            "message.timestamp.before.max.ms" => c.timestamp_before_max_ms = parse_limit(k, v)?,
            "message.timestamp.after.max.ms" => c.timestamp_after_max_ms = parse_limit(k, v)?,
            // Replication settings, read by the controller and the leader from the image;
            // checked here so a bad value is refused when it is set.
            "min.insync.replicas" => {
                if !(1..=i16::MAX as u64).contains(&parse_u64(k, v)?) {
                    return Err(CatalogError::InvalidConfig(format!(
                        "{k}: {v} is not between 1 and {}",
                        i16::MAX
                    )));
                }
            }
            "unclean.leader.election.enable" => {
                v.parse::<bool>().map_err(|_| {
                    CatalogError::InvalidConfig(format!("{k}: {v:?} is not true or false"))
                })?;
            }
            _ => {
                return Err(CatalogError::InvalidConfig(format!(
                    "unknown topic config {k:?}"
                )))
            }
        }
    }
    let c = apply_flush(c, policy.as_deref(), flush_ms, flush_bytes);
    c.validate()
        .map_err(|e| CatalogError::InvalidConfig(e.to_string()))?;
    Ok(c)
}

fn apply_flush(
    mut c: LogConfig,
    policy: Option<&str>,
    flush_ms: u64,
    flush_bytes: u64,
) -> LogConfig {
    match policy {
        Some("fsync") => c.flush = FlushPolicy::Fsync,
        Some(_) => {
            c.flush = FlushPolicy::Interval {
                interval_ms: flush_ms,
                bytes_max: flush_bytes,
            }
        }
        None => {
            if let FlushPolicy::Interval { .. } = c.flush {
                c.flush = FlushPolicy::Interval {
                    interval_ms: flush_ms,
                    bytes_max: flush_bytes,
                };
            }
        }
    }
    c
}

/// The effective value of every topic config key, for DescribeConfigs: (value, is_default).
pub fn effective_configs(
    defaults: &TopicDefaults,
    configs: &BTreeMap<String, String>,
) -> Vec<(String, String, bool)> {
    let c = log_config(defaults, configs).unwrap_or_default();
    let opt = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-1".to_string());
    let (policy, ms, bytes) = match c.flush {
        FlushPolicy::Fsync => ("fsync", 0, 0),
        FlushPolicy::Interval {
            interval_ms,
            bytes_max,
        } => ("interval", interval_ms, bytes_max),
    };
    let values = [
        ("segment.bytes", c.segment_bytes_max.to_string()),
        ("segment.ms", c.segment_ms_max.to_string()),
        ("retention.ms", opt(c.retention_ms)),
        ("retention.bytes", opt(c.retention_bytes)),
        ("max.message.bytes", c.max_message_bytes.to_string()),
        ("flush.policy", policy.to_string()),
        ("flush.ms", ms.to_string()),
        ("flush.bytes", bytes.to_string()),
        ("index.interval.bytes", c.index_interval_bytes.to_string()),
        ("preallocate", c.preallocate.to_string()),
        ("compression.type", c.compression.as_str().to_string()),
        ("cleanup.policy", c.cleanup_policy.as_str().to_string()),
        ("delete.retention.ms", c.delete_retention_ms.to_string()),
        ("min.compaction.lag.ms", c.min_compaction_lag_ms.to_string()),
        ("max.compaction.lag.ms", c.max_compaction_lag_ms.to_string()),
        (
            "min.cleanable.dirty.ratio",
            (f64::from(c.min_cleanable_dirty_ratio_ppm) / 1e6).to_string(),
        ),
        (
            "message.timestamp.type",
            match c.timestamp_type {
                TimestampType::CreateTime => "CreateTime",
                TimestampType::LogAppendTime => "LogAppendTime",
            }
            .to_string(),
        ),
        (
            "message.timestamp.before.max.ms",
            opt(c.timestamp_before_max_ms),
        ),
        (
            "message.timestamp.after.max.ms",
            opt(c.timestamp_after_max_ms),
        ),
        ("min.insync.replicas", "1".to_string()),
        ("unclean.leader.election.enable", "false".to_string()),
    ];
    values
        .into_iter()
        .map(|(k, v)| {
            let set = configs.get(k);
            (k.to_string(), set.cloned().unwrap_or(v), set.is_none())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Catalog {
        Catalog::open(dir, TopicDefaults::default()).unwrap()
    }

    #[test]
    fn producer_ids_come_from_blocks_in_the_file_and_a_restart_starts_past_them() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        assert_eq!(c.take_producer_id(), None, "nothing reserved yet");
        c.reserve_producer_ids().unwrap();
        let mut refills = 0;
        let mut last = -1;
        for _ in 0..PRODUCER_ID_BLOCK {
            let (id, refill) = c.take_producer_id().unwrap();
            assert!(id > last);
            last = id;
            if refill {
                refills += 1;
                // As the shard's background reservation would.
                c.reserve_producer_ids().unwrap();
            }
        }
        assert_eq!(refills, 1, "one reservation ahead per half block");
        let reserved = c.lock().producer_ids_reserved_end;
        assert!(last < reserved);
        drop(c);
        let c = open(dir.path());
        c.reserve_producer_ids().unwrap();
        let (id, _) = c.take_producer_id().unwrap();
        assert!(id >= reserved, "{id} was handed out before the restart");
    }

    #[test]
    fn a_refill_is_asked_for_once_until_it_lands() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        c.reserve_producer_ids().unwrap();
        let refills: Vec<bool> = (0..PRODUCER_ID_BLOCK)
            .map(|_| c.take_producer_id().unwrap().1)
            .collect();
        assert_eq!(refills.iter().filter(|r| **r).count(), 1);
        assert_eq!(c.take_producer_id(), None, "the block is used up");
    }

    #[test]
    fn an_older_state_is_never_written_over_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let (old_seq, old_bytes) = c.serialize(&mut c.lock());
        c.create("t", 1, BTreeMap::new(), false).unwrap();
        c.write(old_seq, &old_bytes.unwrap()).unwrap();
        drop(c);
        assert!(open(dir.path()).get("t").is_some());
    }

    #[test]
    fn lookups_do_not_wait_behind_a_topic_change_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let c = Arc::new(open(dir.path()));
        // Another write holds the write turn: the change waits for it, not the lookups.
        let turn = c.written_seq.lock().unwrap();
        let meta = TopicMeta {
            name: "t".into(),
            partitions: 3,
            topic_id: [1; 16],
            configs: BTreeMap::new(),
            inherited: BTreeMap::new(),
        };
        let syncing = {
            let c = c.clone();
            std::thread::spawn(move || c.sync_from(vec![meta]))
        };
        // Were the file written under the data lock, this would never see the topic.
        loop {
            if let Ok(data) = c.data.try_lock() {
                if data.topics.contains_key("t") {
                    break;
                }
            }
            std::thread::yield_now();
        }
        assert_eq!(c.partition_count("t"), Some(3));
        drop(turn);
        assert_eq!(syncing.join().unwrap().unwrap(), vec![]);
        drop(c);
        assert_eq!(
            open(dir.path()).partition_count("t"),
            Some(3),
            "in the file"
        );
    }
}
