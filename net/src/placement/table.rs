//! Partition placement: which shard owns each partition.
//!
//! Owns: the broker's one placement table (shared by every shard), its file
//! `<data-dir>/sluice-placement.json` and the thread that writes it, the policy that
//! places partitions not placed yet (`hash` or `balanced`), the pins from `[placement]`,
//! and which partitions are moving.
//!
//! Invariants:
//! - A placed partition stays on its shard until a live move or a restart with different
//!   pins; every shard routes by the same table, so a log has exactly one owner.
//! - Routing reads memory only: a change is visible to the shards at once and handed to
//!   the placement writer, a thread of its own that writes the file (tmp, fsync, rename,
//!   directory fsync) off the request path. Its queue is one slot: a newer table replaces
//!   one not written yet, so a burst of placements costs one write, and the file only
//!   ever moves forward (each write is of a newer version than the file holds).
//! - What is durable when: a change is in the file once [`PlacementTable::persisted`]
//!   returns for it. A shard awaits that before it creates a partition's log (so the
//!   first produce to a newly placed partition is acknowledged only after the placement
//!   that put its log on this shard is in the file) and after opening the logs at
//!   start-up; the mover awaits it after the flip and before the target opens the log (a
//!   move that cannot be written is undone). Placements nothing opened a log for yet
//!   (topics placed for the report) may be lost to a crash: they are placed again the
//!   same way or, by `balanced`, by the load of that moment. The last change is written
//!   when the table is dropped (the broker's shards have stopped).
//! - A failed write is logged and the change kept in memory: logs live in the one data
//!   dir, so a placement lost to a crash costs a different spread after the restart,
//!   never data.
//! - The file records each placement by shard index and CPU. At start-up a changed core
//!   list is mapped when compatible (the old CPUs all still there: by CPU; the same count:
//!   by index); otherwise start-up stops with a message saying what to do.
//! - Reads are hot (every produce and fetch split): a shard compares one atomic version
//!   with the snapshot it cached and looks up in it; the mutex is taken to place, move or
//!   refresh the cache, never held across an `.await` or a file write.
//! - Topics are placed whole (all partitions the catalog has, at first use), so a topic of
//!   a thousand partitions costs one file write.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The placement file's name in the data dir.
pub const FILE_NAME: &str = "sluice-placement.json";
const FILE_VERSION: u32 = 1;
/// Largest placement file read at start-up.
const FILE_BYTES_MAX: u64 = 256 << 20;
/// Longest [`PlacementTable::persisted`] waits for the write of its change (a disk that
/// stopped answering); past it the caller goes on as after a failed write.
const PERSIST_WAIT_MAX: Duration = Duration::from_secs(60);

/// How partitions not placed yet choose their shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartitionPolicy {
    /// A stable function of topic and partition (FNV-1a modulo the shard count).
    #[default]
    Hash,
    /// The shard with the least load: partitions owned and bytes/s appended, each
    /// relative to the shards' mean.
    Balanced,
}

impl PartitionPolicy {
    pub fn parse(s: &str) -> Option<PartitionPolicy> {
        match s {
            "hash" => Some(PartitionPolicy::Hash),
            "balanced" => Some(PartitionPolicy::Balanced),
            _ => None,
        }
    }
}

/// An explicit placement: a topic's partitions `first..=last` on a CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub topic: String,
    pub first: i32,
    pub last: i32,
    pub cpu: usize,
}

impl Pin {
    fn covers(&self, topic: &str, partition: i32) -> bool {
        self.topic == topic && (self.first..=self.last).contains(&partition)
    }
}

/// `[placement]` beyond the core list: the policy and the pins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementSettings {
    pub policy: PartitionPolicy,
    pub pins: Vec<Pin>,
}

/// Why the placement table could not be opened or changed.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("{0}")]
    Config(String),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    IncompatibleCores(String),
}

/// Why a change is not known to be in the placement file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    #[error("writing the placement file failed: {0}")]
    Write(WriteFailure),
    #[error("the placement file was not written within {0:?}")]
    TimedOut(Duration),
    #[error("the placement writer has stopped")]
    Stopped,
}

/// The I/O error of a failed placement file write, shared by every waiter on that
/// version; equal when kind and message are (so `PersistError` stays comparable).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct WriteFailure(Arc<std::io::Error>);

impl WriteFailure {
    fn new(e: std::io::Error) -> WriteFailure {
        WriteFailure(Arc::new(e))
    }
}

impl PartialEq for WriteFailure {
    fn eq(&self, other: &WriteFailure) -> bool {
        self.0.kind() == other.0.kind() && self.0.to_string() == other.0.to_string()
    }
}

impl Eq for WriteFailure {}

/// The shard of a partition by the `hash` policy: FNV-1a, stable across processes and
/// releases (unlike std's SipHash keys).
pub fn hash_owner(topic: &str, partition: i32, shard_count: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.bytes().chain(partition.to_be_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % shard_count.max(1) as u64) as usize
}

/// One immutable version of the table.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Topic → shard of each partition (index = partition).
    topics: HashMap<String, Vec<usize>>,
    /// Partitions being moved: routing waits until they land.
    moving: HashSet<(String, i32)>,
}

impl Snapshot {
    pub fn owner(&self, topic: &str, partition: i32) -> Option<usize> {
        let shards = self.topics.get(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| shards.get(p).copied())
    }

    pub fn is_moving(&self, topic: &str, partition: i32) -> bool {
        !self.moving.is_empty() && self.moving.contains(&(topic.to_string(), partition))
    }

    /// Partitions of `topic` placed so far.
    pub fn placed(&self, topic: &str) -> usize {
        self.topics.get(topic).map_or(0, Vec::len)
    }

    pub fn any_moving(&self) -> bool {
        !self.moving.is_empty()
    }

    /// Every placed partition: (topic, partition, shard), sorted.
    pub fn entries(&self) -> Vec<(String, i32, usize)> {
        let mut out: Vec<_> = self
            .topics
            .iter()
            .flat_map(|(t, shards)| {
                shards
                    .iter()
                    .enumerate()
                    .map(move |(p, s)| (t.clone(), p as i32, *s))
            })
            .collect();
        out.sort();
        out
    }

    fn partitions_per_shard(&self, shard_count: usize) -> Vec<usize> {
        let mut counts = vec![0; shard_count];
        for s in self.topics.values().flatten() {
            if let Some(c) = counts.get_mut(*s) {
                *c += 1;
            }
        }
        counts
    }
}

/// The file's form: every placement by shard index and CPU.
#[derive(Debug, Serialize, Deserialize)]
struct PlacementFile {
    version: u32,
    /// CPU of each shard index when the file was written.
    cpus: Vec<usize>,
    partitions: Vec<FileEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileEntry {
    topic: String,
    partition: i32,
    shard: usize,
    cpu: usize,
}

/// The broker's placement table.
#[derive(Debug)]
pub struct PlacementTable {
    /// CPU of each shard (index = shard id).
    cpus: Vec<usize>,
    policy: PartitionPolicy,
    pins: Vec<Pin>,
    version: AtomicU64,
    current: Mutex<Arc<Snapshot>>,
    /// Bytes/s appended on each shard, as its metrics publisher last measured.
    bytes_in_per_s: Vec<AtomicU64>,
    /// Writes the file off the request path.
    writer: Writer,
}

impl PlacementTable {
    /// Opens the table of `data_dir` for shards on `cpus`: reads the file (if any), maps
    /// it onto the current core list, applies the pins, drops topics `exists` no longer
    /// knows, and writes the result back.
    pub fn open(
        data_dir: &Path,
        cpus: Vec<usize>,
        settings: PlacementSettings,
        exists: impl Fn(&str) -> Option<i32>,
    ) -> Result<PlacementTable, PlacementError> {
        check_pins(&settings.pins, &cpus)?;
        let path = data_dir.join(FILE_NAME);
        let mut topics: HashMap<String, Vec<usize>> = HashMap::new();
        if let Some(file) = read_file(&path)? {
            let map = remap_shards(&file.cpus, &cpus, &file.partitions, &path)?;
            for e in file.partitions {
                let Some(count) = exists(&e.topic) else {
                    continue;
                };
                if e.partition < 0 || e.partition >= count {
                    continue;
                }
                let Some(&shard) = map.get(e.shard).filter(|s| **s < cpus.len()) else {
                    continue;
                };
                let shards = topics.entry(e.topic).or_default();
                let p = e.partition as usize;
                if shards.len() <= p {
                    shards.resize(p + 1, usize::MAX);
                }
                shards[p] = shard;
            }
            // A file with holes (edited by hand) is cut at the first hole; the rest is
            // placed again by the policy at first use.
            for shards in topics.values_mut() {
                if let Some(hole) = shards.iter().position(|s| *s == usize::MAX) {
                    shards.truncate(hole);
                }
            }
        }
        let mut snap = Snapshot {
            topics,
            moving: HashSet::new(),
        };
        apply_pins(&mut snap, &settings.pins, &cpus);
        // Start-up writes the opened table itself: the shards open their logs by it next.
        let first = write_file(&path, &cpus, &snap).map_err(WriteFailure::new);
        if let Err(e) = &first {
            tracing::error!(path = %path.display(), error = %e, "writing the placement file failed; placement kept in memory");
        }
        let writer = {
            let (path, cpus) = (path.clone(), cpus.clone());
            Writer::start(INITIAL_VERSION, first, move |snap| {
                write_file(&path, &cpus, snap)
            })
        };
        let writer = writer.map_err(|e| PlacementError::File {
            path,
            reason: format!("starting the placement writer: {e}"),
        })?;
        Ok(PlacementTable {
            bytes_in_per_s: cpus.iter().map(|_| AtomicU64::new(0)).collect(),
            cpus,
            policy: settings.policy,
            pins: settings.pins,
            version: AtomicU64::new(INITIAL_VERSION),
            current: Mutex::new(Arc::new(snap)),
            writer,
        })
    }

    pub fn shard_count(&self) -> usize {
        self.cpus.len().max(1)
    }

    /// CPU of each shard (index = shard id).
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    pub fn policy(&self) -> PartitionPolicy {
        self.policy
    }

    /// The shard running on `cpu`.
    pub fn shard_of_cpu(&self, cpu: usize) -> Option<usize> {
        self.cpus.iter().position(|c| *c == cpu)
    }

    /// The pin covering a partition, if any.
    pub fn pin_of(&self, topic: &str, partition: i32) -> Option<&Pin> {
        self.pins.iter().find(|p| p.covers(topic, partition))
    }

    /// The current version; changes with every change of the table.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The current snapshot and its version.
    pub fn snapshot(&self) -> (u64, Arc<Snapshot>) {
        let guard = self.lock();
        (self.version(), guard.clone())
    }

    /// Waits until every change made so far is in the file (the flush barrier): on the
    /// shard's blocking thread, so the shard's reactor keeps running meanwhile. Must run
    /// on a glommio executor.
    pub async fn persisted(&self) -> Result<(), PersistError> {
        let target = self.writer.submitted();
        if self.writer.durable() >= target {
            return Ok(());
        }
        let shared = self.writer.shared.clone();
        glommio::executor()
            .spawn_blocking(move || shared.wait_durable(target, PERSIST_WAIT_MAX))
            .await
    }

    /// [`persisted`](Self::persisted) for a thread that may block.
    #[cfg(test)]
    pub fn persisted_blocking(&self) -> Result<(), PersistError> {
        let target = self.writer.submitted();
        self.writer.shared.wait_durable(target, PERSIST_WAIT_MAX)
    }

    /// Places every partition of `topic` below `count` that is not placed yet; returns the
    /// shard of `partition`.
    pub fn place(&self, topic: &str, count: i32, partition: i32) -> usize {
        let mut guard = self.lock();
        if let Some(s) = guard.owner(topic, partition) {
            return s;
        }
        let mut snap = (**guard).clone();
        self.place_into(&mut snap, topic, count);
        let owner = snap
            .owner(topic, partition)
            .unwrap_or_else(|| hash_owner(topic, partition, self.shard_count()));
        self.swap(&mut guard, snap, Persist::Yes);
        owner
    }

    /// Marks a partition as moving (routing waits) or not.
    pub fn set_moving(&self, topic: &str, partition: i32, moving: bool) {
        let mut guard = self.lock();
        let mut snap = (**guard).clone();
        let key = (topic.to_string(), partition);
        if moving {
            snap.moving.insert(key);
        } else {
            snap.moving.remove(&key);
        }
        // Routing only: the file does not record moves in flight.
        self.swap(&mut guard, snap, Persist::No);
    }

    /// Puts a placed partition on `shard` (the flip of a move); the mover awaits
    /// [`persisted`](Self::persisted) before the target opens the log.
    pub fn assign(&self, topic: &str, partition: i32, shard: usize) {
        let mut guard = self.lock();
        let mut snap = (**guard).clone();
        if let Some(slot) = snap
            .topics
            .get_mut(topic)
            .and_then(|v| v.get_mut(partition as usize))
        {
            *slot = shard;
        }
        self.swap(&mut guard, snap, Persist::Yes);
    }

    /// Forgets a deleted topic (a topic created again under the name is placed anew).
    pub fn forget_topic(&self, topic: &str) {
        let mut guard = self.lock();
        if !guard.topics.contains_key(topic) {
            return;
        }
        let mut snap = (**guard).clone();
        snap.topics.remove(topic);
        self.swap(&mut guard, snap, Persist::Yes);
    }

    /// Records the bytes/s shard `shard` appended over its last interval (read by the
    /// `balanced` policy).
    pub fn publish_rate(&self, shard: usize, bytes_in_per_s: u64) {
        if let Some(r) = self.bytes_in_per_s.get(shard) {
            r.store(bytes_in_per_s, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Arc<Snapshot>> {
        // A panic while holding the lock leaves a whole snapshot behind (changes are
        // built on a copy and swapped in), so a poisoned lock is still consistent.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `snap` the table; a change of placements goes to the writer, under the lock,
    /// so the writer gets versions in the order the shards saw them.
    fn swap(&self, guard: &mut MutexGuard<'_, Arc<Snapshot>>, snap: Snapshot, persist: Persist) {
        let snap = Arc::new(snap);
        **guard = snap.clone();
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        if persist == Persist::Yes {
            self.writer.submit(version, snap);
        }
    }

    fn place_into(&self, snap: &mut Snapshot, topic: &str, count: i32) {
        let placed = snap.topics.get(topic).map_or(0, Vec::len);
        let mut loads = match self.policy {
            PartitionPolicy::Hash => Vec::new(),
            PartitionPolicy::Balanced => snap.partitions_per_shard(self.shard_count()),
        };
        let rates: Vec<u64> = self
            .bytes_in_per_s
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .collect();
        let mut new = Vec::new();
        for p in placed as i32..count.max(0) {
            let shard = match (self.pin_of(topic, p), self.policy) {
                (Some(pin), _) => self.shard_of_cpu(pin.cpu).unwrap_or(0),
                (None, PartitionPolicy::Hash) => hash_owner(topic, p, self.shard_count()),
                (None, PartitionPolicy::Balanced) => least_loaded(&loads, &rates),
            };
            if let Some(l) = loads.get_mut(shard) {
                *l += 1;
            }
            new.push(shard);
        }
        if !new.is_empty() {
            snap.topics
                .entry(topic.to_string())
                .or_default()
                .extend(new);
        }
    }
}

impl Drop for PlacementTable {
    /// The last change goes to the file before the table is gone.
    fn drop(&mut self) {
        self.writer.stop();
    }
}

/// Whether a change of the table goes to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persist {
    Yes,
    No,
}

/// The version of the table as opened (written by `open` itself).
const INITIAL_VERSION: u64 = 1;

/// Pins win over what the file says (the config is the operator's latest word).
fn apply_pins(snap: &mut Snapshot, pins: &[Pin], cpus: &[usize]) {
    for (topic, shards) in snap.topics.iter_mut() {
        for (p, shard) in shards.iter_mut().enumerate() {
            let pin = pins.iter().find(|pin| pin.covers(topic, p as i32));
            if let Some(s) = pin.and_then(|pin| cpus.iter().position(|c| *c == pin.cpu)) {
                *shard = s;
            }
        }
    }
}

/// Writes one version of the table (tmp, fsync, rename, directory fsync).
fn write_file(path: &Path, cpus: &[usize], snap: &Snapshot) -> std::io::Result<()> {
    let file = PlacementFile {
        version: FILE_VERSION,
        cpus: cpus.to_vec(),
        partitions: snap
            .entries()
            .into_iter()
            .map(|(topic, partition, shard)| FileEntry {
                topic,
                partition,
                shard,
                cpu: cpus.get(shard).copied().unwrap_or(shard),
            })
            .collect(),
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    sluice_engine::write_file_atomic(path, &bytes)
}

/// The placement writer: a thread of its own fed by a one-slot queue (a newer version
/// replaces one not written yet), so writes coalesce and the queue is bounded by
/// construction. Waiters block on its condition variable, never a shard's reactor.
///
/// Invariants: versions are submitted in increasing order; the file only moves forward
/// (each write is of a newer version than the file holds); a waiter for version `v`
/// returns `Ok` only once a version `>= v` is in the file.
struct Writer {
    shared: Arc<WriterShared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("Writer")
            .field("submitted", &st.submitted)
            .field("durable", &st.durable)
            .finish()
    }
}

struct WriterShared {
    state: Mutex<WriterState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct WriterState {
    /// The newest version not written yet.
    pending: Option<(u64, Arc<Snapshot>)>,
    /// The newest version handed to the writer.
    submitted: u64,
    /// The version the file holds.
    durable: u64,
    /// The newest version whose write failed, and why.
    failed: Option<(u64, WriteFailure)>,
    /// Set by [`Writer::stop`]: write what is pending, then end.
    stopping: bool,
    /// The thread has ended.
    stopped: bool,
}

impl Writer {
    /// Starts the thread; `first` is the outcome of writing version `initial` (done by
    /// the caller), `write` writes one version.
    fn start(
        initial: u64,
        first: Result<(), WriteFailure>,
        write: impl FnMut(&Snapshot) -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<Writer> {
        let mut state = WriterState {
            submitted: initial,
            ..WriterState::default()
        };
        match first {
            Ok(()) => state.durable = initial,
            Err(e) => state.failed = Some((initial, e)),
        }
        let shared = Arc::new(WriterShared {
            state: Mutex::new(state),
            changed: Condvar::new(),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("placement-writer".into())
                .spawn(move || {
                    crate::broker::fatal::mark_broker_thread();
                    shared.run(write);
                })?
        };
        Ok(Writer {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Hands `snap`, version `version`, to the thread; never waits for a write.
    fn submit(&self, version: u64, snap: Arc<Snapshot>) {
        let mut st = self.shared.lock();
        assert!(
            version > st.submitted,
            "placement versions are submitted in order"
        );
        st.submitted = version;
        st.pending = Some((version, snap));
        drop(st);
        self.shared.changed.notify_all();
    }

    fn submitted(&self) -> u64 {
        self.shared.lock().submitted
    }

    fn durable(&self) -> u64 {
        self.shared.lock().durable
    }

    /// Writes what is pending, then ends the thread and waits for it.
    fn stop(&self) {
        self.shared.lock().stopping = true;
        self.shared.changed.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            if t.join().is_err() {
                tracing::error!("the placement writer panicked");
            }
        }
    }
}

impl WriterShared {
    fn lock(&self) -> MutexGuard<'_, WriterState> {
        // Every change of the state is a few assignments; a poisoned lock is consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The thread: the newest pending version, written; until stopped with none pending.
    fn run(&self, mut write: impl FnMut(&Snapshot) -> std::io::Result<()>) {
        loop {
            let (version, snap) = {
                let mut st = self.lock();
                loop {
                    if let Some(p) = st.pending.take() {
                        break p;
                    }
                    if st.stopping {
                        st.stopped = true;
                        drop(st);
                        self.changed.notify_all();
                        return;
                    }
                    st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            };
            let result = write(&snap);
            let mut st = self.lock();
            assert!(
                version > st.durable,
                "the placement file never goes back to an older table"
            );
            match result {
                Ok(()) => st.durable = version,
                Err(e) => {
                    tracing::error!(error = %e, version, "writing the placement file failed; placement kept in memory");
                    st.failed = Some((version, WriteFailure::new(e)));
                }
            }
            drop(st);
            self.changed.notify_all();
        }
    }

    /// Blocks until version `version` (or a newer one) is in the file, its write failed,
    /// or `wait_max` passed.
    fn wait_durable(&self, version: u64, wait_max: Duration) -> Result<(), PersistError> {
        let deadline = Instant::now() + wait_max;
        let mut st = self.lock();
        loop {
            if st.durable >= version {
                return Ok(());
            }
            if let Some((failed, e)) = &st.failed {
                if *failed >= version {
                    return Err(PersistError::Write(e.clone()));
                }
            }
            if st.stopped {
                return Err(PersistError::Stopped);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PersistError::TimedOut(wait_max));
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The shard with the least load: partitions and bytes/s, each relative to the mean over
/// the shards (so neither dominates by its unit); ties go to the lowest index.
fn least_loaded(partitions: &[usize], bytes_in_per_s: &[u64]) -> usize {
    let n = partitions.len().max(1) as f64;
    let mean_partitions = (partitions.iter().sum::<usize>() as f64 / n).max(1.0);
    let mean_rate = (bytes_in_per_s.iter().sum::<u64>() as f64 / n).max(1.0);
    let score = |i: usize| {
        partitions[i] as f64 / mean_partitions
            + bytes_in_per_s.get(i).copied().unwrap_or(0) as f64 / mean_rate
    };
    (0..partitions.len())
        .min_by(|a, b| score(*a).total_cmp(&score(*b)))
        .unwrap_or(0)
}

/// Pins must name CPUs that run a shard and valid partition ranges.
fn check_pins(pins: &[Pin], cpus: &[usize]) -> Result<(), PlacementError> {
    for (i, pin) in pins.iter().enumerate() {
        if pin.first < 0 || pin.last < pin.first {
            return Err(PlacementError::Config(format!(
                "placement.pins[{i}].partitions: {}-{} is not a range of partitions",
                pin.first, pin.last
            )));
        }
        if !cpus.contains(&pin.cpu) {
            return Err(PlacementError::Config(format!(
                "placement.pins[{i}].core: CPU {} runs no shard (placement.cores: {}); add it to placement.cores or pin `{}` to one of those",
                pin.cpu,
                cpu_list(cpus),
                pin.topic
            )));
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<Option<PlacementFile>, PlacementError> {
    let err = |reason: String| PlacementError::File {
        path: path.to_path_buf(),
        reason,
    };
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e.to_string())),
    };
    if len > FILE_BYTES_MAX {
        return Err(err(format!(
            "{len} bytes, more than the {FILE_BYTES_MAX} a placement file may have"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let file: PlacementFile = serde_json::from_slice(&bytes).map_err(|e| {
        err(format!(
            "not a placement file ({e}); remove it to place every partition anew"
        ))
    })?;
    if file.version != FILE_VERSION {
        return Err(err(format!(
            "version {} (this broker reads version {FILE_VERSION})",
            file.version
        )));
    }
    Ok(Some(file))
}

/// Old shard index → new shard index. Compatible: every CPU of the old list still runs a
/// shard (mapped by CPU), or the count is the same (mapped by index). Otherwise an error
/// that names the missing CPUs and what to do.
fn remap_shards(
    old: &[usize],
    new: &[usize],
    entries: &[FileEntry],
    path: &Path,
) -> Result<Vec<usize>, PlacementError> {
    let by_cpu: Option<Vec<usize>> = old
        .iter()
        .map(|cpu| new.iter().position(|c| c == cpu))
        .collect();
    if let Some(map) = by_cpu {
        return Ok(map);
    }
    if old.len() == new.len() {
        return Ok((0..new.len()).collect());
    }
    let mut stranded: BTreeMap<usize, usize> = BTreeMap::new();
    for e in entries {
        if !new.contains(&e.cpu) {
            *stranded.entry(e.cpu).or_default() += 1;
        }
    }
    if stranded.is_empty() {
        // The CPUs gone owned nothing: the others keep theirs.
        return Ok(old
            .iter()
            .map(|cpu| new.iter().position(|c| c == cpu).unwrap_or(usize::MAX))
            .collect());
    }
    let what: Vec<String> = stranded
        .iter()
        .map(|(cpu, n)| format!("{n} on CPU {cpu}"))
        .collect();
    Err(PlacementError::IncompatibleCores(format!(
        "placement: {} places partitions on CPUs that run no shard now ({}; placement.cores is {}, was {}). \
         Start with those CPUs in placement.cores (or with {} cores, mapped by position), \
         or move the partitions off them first (`sluice partition move TOPIC/P --core N` on the old core list), \
         or remove {} to place every partition anew by placement.partition_policy (no data is lost: logs stay in the data dir)",
        path.display(),
        what.join(", "),
        cpu_list(new),
        cpu_list(old),
        old.len(),
        path.display(),
    )))
}

fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(dir: &Path, cpus: Vec<usize>, settings: PlacementSettings) -> PlacementTable {
        PlacementTable::open(dir, cpus, settings, |t| (t != "gone").then_some(8)).unwrap()
    }

    fn balanced() -> PlacementSettings {
        PlacementSettings {
            policy: PartitionPolicy::Balanced,
            pins: Vec::new(),
        }
    }

    #[test]
    fn hash_policy_is_the_stable_function() {
        let dir = tempfile::tempdir().unwrap();
        let t = table(dir.path(), vec![0, 1, 2], PlacementSettings::default());
        for p in 0..8 {
            assert_eq!(t.place("a", 8, p), hash_owner("a", p, 3));
        }
    }

    #[test]
    fn balanced_spreads_by_count_and_rate() {
        let dir = tempfile::tempdir().unwrap();
        let t = table(dir.path(), vec![0, 1, 2, 3], balanced());
        t.place("a", 8, 0);
        let counts = t.snapshot().1.partitions_per_shard(4);
        assert_eq!(counts, vec![2, 2, 2, 2]);
        // A busy shard gets fewer new partitions.
        t.publish_rate(0, 1_000_000);
        t.place("b", 3, 0);
        let snap = t.snapshot().1;
        assert!((0..3).all(|p| snap.owner("b", p) != Some(0)));
        assert_eq!(least_loaded(&[3, 1, 1], &[0, 0, 0]), 1);
    }

    #[test]
    fn placement_survives_reopen_and_compatible_core_changes() {
        let dir = tempfile::tempdir().unwrap();
        let t = table(dir.path(), vec![4, 5, 6], balanced());
        t.place("a", 8, 0);
        t.assign("a", 3, 2);
        let before: Vec<_> = t.snapshot().1.entries();
        drop(t);
        // Same list: same shards.
        let t = table(dir.path(), vec![4, 5, 6], PlacementSettings::default());
        assert_eq!(t.snapshot().1.entries(), before);
        drop(t);
        // Superset, reordered: each partition stays on its CPU.
        let t = table(dir.path(), vec![6, 7, 5, 4], PlacementSettings::default());
        for (topic, p, old_shard) in &before {
            let cpu = [4, 5, 6][*old_shard];
            let now = t.snapshot().1.owner(topic, *p).unwrap();
            assert_eq!(t.cpus()[now], cpu);
        }
        let on_superset = t.snapshot().1.entries();
        drop(t);
        // Same count, other CPUs: each shard index keeps its partitions.
        let t = table(
            dir.path(),
            vec![10, 11, 12, 13],
            PlacementSettings::default(),
        );
        assert_eq!(t.snapshot().1.entries(), on_superset);
    }

    #[test]
    fn a_missing_cpu_stops_start_up_saying_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let t = table(dir.path(), vec![0, 1, 2], PlacementSettings::default());
        t.place("a", 8, 0);
        drop(t);
        let err =
            PlacementTable::open(dir.path(), vec![0, 1], PlacementSettings::default(), |_| {
                Some(8)
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("on CPU 2"), "{err}");
        assert!(err.contains("placement.cores"), "{err}");
        assert!(err.contains("remove"), "{err}");
    }

    #[test]
    fn pins_place_and_override_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let t = table(dir.path(), vec![0, 1], PlacementSettings::default());
        t.place("a", 8, 0);
        drop(t);
        let pins = vec![Pin {
            topic: "a".into(),
            first: 0,
            last: 7,
            cpu: 1,
        }];
        let settings = PlacementSettings {
            policy: PartitionPolicy::Hash,
            pins: pins.clone(),
        };
        let t = table(dir.path(), vec![0, 1], settings.clone());
        assert!((0..8).all(|p| t.snapshot().1.owner("a", p) == Some(1)));
        let err = PlacementTable::open(dir.path(), vec![0, 2], settings, |_| Some(8))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("placement.pins[0].core: CPU 1 runs no shard"),
            "{err}"
        );
    }

    #[test]
    fn deleted_topics_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let t = table(dir.path(), vec![0, 1], PlacementSettings::default());
        t.place("gone", 8, 0);
        t.place("kept", 8, 0);
        drop(t);
        let t = table(dir.path(), vec![0, 1], PlacementSettings::default());
        assert!(t.snapshot().1.owner("gone", 0).is_none());
        assert!(t.snapshot().1.owner("kept", 7).is_some());
        drop(t);
        std::fs::write(dir.path().join(FILE_NAME), b"{ nope").unwrap();
        let err =
            PlacementTable::open(dir.path(), vec![0, 1], PlacementSettings::default(), |_| {
                Some(1)
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a placement file"), "{err}");
    }

    #[test]
    fn the_barrier_finds_placements_in_the_file_and_moving_marks_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let t = table(dir.path(), vec![0, 1], PlacementSettings::default());
        t.place("a", 8, 0);
        t.persisted_blocking().unwrap();
        let file = read_file(&dir.path().join(FILE_NAME)).unwrap().unwrap();
        assert_eq!(file.partitions.len(), 8);
        let submitted = t.writer.submitted();
        t.set_moving("a", 1, true);
        assert_eq!(t.writer.submitted(), submitted);
        assert!(t.version() > submitted);
        t.persisted_blocking().unwrap();
        // On a shard: the async barrier, on the executor's blocking thread.
        t.assign("a", 1, 1 - t.snapshot().1.owner("a", 1).unwrap());
        let t = Arc::new(t);
        let on_shard = t.clone();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move { on_shard.persisted().await })
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        let file = read_file(&dir.path().join(FILE_NAME)).unwrap().unwrap();
        let a1 = file.partitions.iter().find(|e| e.partition == 1).unwrap();
        assert_eq!(Some(a1.shard), t.snapshot().1.owner("a", 1));
    }

    /// A snapshot with `n` topics: the writer tests tell versions apart by it.
    fn snap(n: usize) -> Arc<Snapshot> {
        let topics = (0..n).map(|i| (format!("t{i}"), vec![0])).collect();
        Arc::new(Snapshot {
            topics,
            moving: HashSet::new(),
        })
    }

    /// A writer whose writes announce the version they write (its topic count) on
    /// `started`, then wait for their outcome on `go`; `done` counts finished writes.
    struct Gated {
        writer: Writer,
        started: mpsc::Receiver<usize>,
        go: mpsc::Sender<std::io::Result<()>>,
        done: Arc<AtomicU64>,
    }

    use std::sync::mpsc;

    fn gated() -> Gated {
        let (started_tx, started) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<std::io::Result<()>>();
        let done = Arc::new(AtomicU64::new(0));
        let finished = done.clone();
        let writer = Writer::start(1, Ok(()), move |s: &Snapshot| {
            started_tx.send(s.topics.len()).unwrap();
            let r = go_rx.recv().unwrap();
            finished.fetch_add(1, Ordering::SeqCst);
            r
        })
        .unwrap();
        Gated {
            writer,
            started,
            go,
            done,
        }
    }

    #[test]
    fn the_writer_coalesces_what_arrives_during_a_write() {
        let g = gated();
        g.writer.submit(2, snap(2));
        assert_eq!(g.started.recv().unwrap(), 2);
        for v in 3..=10 {
            g.writer.submit(v, snap(v as usize));
        }
        g.go.send(Ok(())).unwrap();
        // Versions 3 to 9 were replaced by 10 while 2 was being written.
        assert_eq!(g.started.recv().unwrap(), 10);
        g.go.send(Ok(())).unwrap();
        g.writer.shared.wait_durable(10, PERSIST_WAIT_MAX).unwrap();
        g.writer.stop();
        assert_eq!(g.done.load(Ordering::SeqCst), 2);
        assert!(g.started.try_recv().is_err());
    }

    #[test]
    fn the_file_never_goes_back_to_an_older_table() {
        let (tx, written) = mpsc::channel();
        let writer = Writer::start(1, Ok(()), move |s: &Snapshot| {
            tx.send(s.topics.len()).unwrap();
            Ok(())
        })
        .unwrap();
        for v in 2..=200 {
            writer.submit(v, snap(v as usize));
        }
        writer.stop();
        let order: Vec<usize> = written.try_iter().collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert_eq!(order.last(), Some(&200));
        assert_eq!(writer.durable(), 200);
    }

    #[test]
    fn the_barrier_waits_for_its_version_and_reports_a_failed_write() {
        let g = gated();
        g.writer.submit(2, snap(2));
        assert_eq!(g.started.recv().unwrap(), 2);
        let waiter = {
            let (shared, done) = (g.writer.shared.clone(), g.done.clone());
            std::thread::spawn(move || {
                let r = shared.wait_durable(2, PERSIST_WAIT_MAX);
                (r, done.load(Ordering::SeqCst))
            })
        };
        g.go.send(Ok(())).unwrap();
        // It returned after the write of version 2 finished, not before.
        assert_eq!(waiter.join().unwrap(), (Ok(()), 1));
        // Version 1 is older than the file: no wait.
        assert_eq!(g.writer.shared.wait_durable(1, Duration::ZERO), Ok(()));
        g.writer.submit(3, snap(3));
        assert_eq!(g.started.recv().unwrap(), 3);
        assert_eq!(
            g.writer.shared.wait_durable(3, Duration::ZERO),
            Err(PersistError::TimedOut(Duration::ZERO))
        );
        g.go.send(Err(std::io::Error::other("disk full"))).unwrap();
        let failed = g.writer.shared.wait_durable(3, PERSIST_WAIT_MAX);
        assert!(
            matches!(&failed, Err(PersistError::Write(e)) if e.to_string().contains("disk full")),
            "{failed:?}"
        );
        // The next change is written again, whole.
        g.writer.submit(4, snap(4));
        assert_eq!(g.started.recv().unwrap(), 4);
        g.go.send(Ok(())).unwrap();
        assert_eq!(g.writer.shared.wait_durable(4, PERSIST_WAIT_MAX), Ok(()));
        g.writer.stop();
        assert_eq!(
            g.writer.shared.wait_durable(5, PERSIST_WAIT_MAX),
            Err(PersistError::Stopped)
        );
    }
}
