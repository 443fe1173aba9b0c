//! The controller's raft storage: log entries, hard state and apply state in one
//! append-only file, the latest snapshot in another.
//!
//! Why std `fs` and not glommio DMA files: the metadata log is small and low-rate (a few
//! records per topic or broker change), its writer is the one controller loop, and its
//! durability rule is "fsync before the persisted messages are sent", which a buffered
//! write plus `fdatasync` gives directly. Std files keep this crate runtime-agnostic (the
//! deterministic tests drive it with no executor) and the controller runs on its own shard,
//! so a blocking fsync there never stalls a data shard.
//!
//! Files in the controller directory:
//!
//! - `raft.log`: frames `len u32 LE | crc32c u32 LE | kind u8 | payload`, the CRC over
//!   `kind | payload`. Kinds: 1 = entry (protobuf `Entry`), 2 = hard state, 3 = apply state
//!   (`applied u64 LE` + protobuf `ConfState`). Replaying it in order rebuilds the state:
//!   an entry at an index at or below the last one replaces that suffix (raft overwrote
//!   it), a later hard/apply state replaces the earlier one. Reading stops at the first
//!   torn or corrupt frame and the file is cut there.
//! - `snapshot`: one frame of kind 4 (protobuf `Snapshot`), replaced atomically (write to
//!   `snapshot.tmp`, fsync, rename, fsync the directory). Compaction then rewrites
//!   `raft.log` the same way with only the entries after the snapshot; a crash between the
//!   two leaves entries at or below the snapshot index in the log, which loading skips.

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage};

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_APPLY_STATE: u8 = 3;
const KIND_SNAPSHOT: u8 = 4;
const FRAME_HEADER_BYTES: usize = 9;
/// Bound on one frame (a snapshot of a large cluster is the biggest).
pub const FRAME_BYTES_MAX: usize = 256 << 20;

const LOG_FILE: &str = "raft.log";
const SNAPSHOT_FILE: &str = "snapshot";

/// Storage failures. Raft sees them as `raft::StorageError::Other`.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("log gap: entry {got} after last index {last}")]
    Gap { got: u64, last: u64 },
    #[error("protobuf: {0}")]
    Protobuf(#[from] protobuf::ProtobufError),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The index and configuration the state machine had applied, persisted so a restart
/// resumes from there without re-applying configuration changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyState {
    pub applied: u64,
    pub conf_state: ConfState,
}

/// Raft storage on disk, with every live entry also kept in memory (the metadata log is
/// compacted by snapshots, so it stays small).
#[derive(Debug)]
pub struct DiskStorage {
    dir: PathBuf,
    log: File,
    /// Bytes written to `log` since the last sync.
    unsynced: bool,
    hard_state: HardState,
    apply_state: ApplyState,
    snapshot: Snapshot,
    /// Entries after `snapshot`'s index, contiguous.
    entries: Vec<Entry>,
    /// Raft asked for a snapshot that the stored one cannot serve (its configuration does
    /// not contain the receiver, who would ignore it); the controller takes a fresh one.
    snapshot_wanted: Cell<bool>,
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + 1);
    body.push(kind);
    body.extend_from_slice(payload);
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Splits `buf` into valid frames; returns them and the length of the valid prefix.
fn frames(buf: &[u8]) -> (Vec<(u8, &[u8])>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(head) = buf.get(pos..pos + FRAME_HEADER_BYTES) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 || len > FRAME_BYTES_MAX {
            break;
        }
        let Some(body) = buf.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32c::crc32c(body) != crc {
            break;
        }
        out.push((body[0], &body[1..]));
        pos += 8 + len;
    }
    (out, pos)
}

/// Writes `bytes` to `dir/name` atomically and durably.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    let path = dir.join(name);
    sluice_engine::write_file_atomic(&path, bytes).map_err(io("write atomically", &path))
}

fn encode_apply_state(a: &ApplyState) -> Result<Vec<u8>, StorageError> {
    let mut out = a.applied.to_le_bytes().to_vec();
    out.extend_from_slice(&a.conf_state.write_to_bytes()?);
    Ok(out)
}

impl DiskStorage {
    /// Opens the storage in `dir`, creating an empty one if there is none.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        fs::create_dir_all(dir).map_err(io("create dir", dir))?;
        let snapshot = Self::load_snapshot(dir)?;
        let path = dir.join(LOG_FILE);
        let mut buf = Vec::new();
        if path.exists() {
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .map_err(io("read", &path))?;
        }
        let (frames, valid) = frames(&buf);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("open", &path))?;
        if valid < buf.len() {
            tracing::warn!(path = %path.display(), valid, len = buf.len(), "cutting torn raft log tail");
            log.set_len(valid as u64).map_err(io("truncate", &path))?;
            log.sync_all().map_err(io("fsync", &path))?;
        }
        let meta = snapshot.get_metadata();
        let mut s = Self {
            dir: dir.to_owned(),
            log,
            unsynced: false,
            hard_state: HardState {
                term: meta.term,
                commit: meta.index,
                ..Default::default()
            },
            apply_state: ApplyState {
                applied: meta.index,
                conf_state: meta.get_conf_state().clone(),
            },
            snapshot,
            entries: Vec::new(),
            snapshot_wanted: Cell::new(false),
        };
        for (kind, payload) in frames {
            s.replay(kind, payload)?;
        }
        // Applied entries were committed; a commit index lost with an unsynced hard state
        // frame is recovered from the apply state written after it.
        let applied = s.apply_state.applied.min(s.last_index_raw());
        s.hard_state.commit = s.hard_state.commit.max(applied);
        Ok(s)
    }

    fn load_snapshot(dir: &Path) -> Result<Snapshot, StorageError> {
        let path = dir.join(SNAPSHOT_FILE);
        if !path.exists() {
            return Ok(Snapshot::default());
        }
        let buf = fs::read(&path).map_err(io("read", &path))?;
        let corrupt = |reason: &str| StorageError::Corrupt {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        let (frames, valid) = frames(&buf);
        match frames.as_slice() {
            [(KIND_SNAPSHOT, payload)] if valid == buf.len() => {
                Ok(Snapshot::parse_from_bytes(payload)?)
            }
            _ => Err(corrupt("not one valid snapshot frame")),
        }
    }

    fn replay(&mut self, kind: u8, payload: &[u8]) -> Result<(), StorageError> {
        match kind {
            KIND_ENTRY => {
                let e = Entry::parse_from_bytes(payload)?;
                if e.index > self.snapshot_index() {
                    self.push_entries(std::slice::from_ref(&e))?;
                }
            }
            KIND_HARD_STATE => {
                let hs = HardState::parse_from_bytes(payload)?;
                // The snapshot may be newer than a hard state written before it.
                self.hard_state.term = hs.term.max(self.hard_state.term);
                self.hard_state.vote = hs.vote;
                self.hard_state.commit = hs.commit.max(self.snapshot_index());
            }
            KIND_APPLY_STATE => {
                let (applied, cs) =
                    payload
                        .split_at_checked(8)
                        .ok_or_else(|| StorageError::Corrupt {
                            path: self.dir.join(LOG_FILE),
                            reason: "short apply state".into(),
                        })?;
                let mut a = [0u8; 8];
                a.copy_from_slice(applied);
                let applied = u64::from_le_bytes(a);
                if applied > self.apply_state.applied {
                    self.apply_state = ApplyState {
                        applied,
                        conf_state: ConfState::parse_from_bytes(cs)?,
                    };
                }
            }
            other => {
                return Err(StorageError::Corrupt {
                    path: self.dir.join(LOG_FILE),
                    reason: format!("unknown frame kind {other}"),
                })
            }
        }
        Ok(())
    }

    /// Puts entries in memory: an entry at or below the last index replaces that suffix.
    fn push_entries(&mut self, ents: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = ents.first() else {
            return Ok(());
        };
        let last = self.last_index_raw();
        if first.index > last + 1 || first.index <= self.snapshot_index() {
            return Err(StorageError::Gap {
                got: first.index,
                last,
            });
        }
        let keep = (first.index - self.snapshot_index() - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
        Ok(())
    }

    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn last_index_raw(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |e| e.index)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let path = self.dir.join(LOG_FILE);
        self.log.write_all(bytes).map_err(io("write", &path))?;
        self.unsynced = true;
        Ok(())
    }

    /// Appends entries (raft's `Ready::entries`). Durable after `sync`.
    pub fn append(&mut self, ents: &[Entry]) -> Result<(), StorageError> {
        self.push_entries(ents)?;
        let mut buf = Vec::new();
        for e in ents {
            buf.extend_from_slice(&frame(KIND_ENTRY, &e.write_to_bytes()?));
        }
        self.write(&buf)
    }

    /// Records the hard state. Durable after `sync`.
    pub fn set_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError> {
        self.hard_state = hs.clone();
        self.write(&frame(KIND_HARD_STATE, &hs.write_to_bytes()?))
    }

    /// Records only a new commit index (from `LightReady`).
    pub fn set_commit(&mut self, commit: u64) -> Result<(), StorageError> {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.set_hard_state(&hs)
    }

    /// Records what the state machine applied (after a configuration change).
    pub fn set_apply_state(&mut self, a: ApplyState) -> Result<(), StorageError> {
        let bytes = frame(KIND_APPLY_STATE, &encode_apply_state(&a)?);
        self.apply_state = a;
        self.write(&bytes)
    }

    /// fdatasync of the log file, if anything was written since the last one.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        if self.unsynced {
            let path = self.dir.join(LOG_FILE);
            self.log.sync_data().map_err(io("fsync", &path))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Whether raft asked for a newer snapshot than the stored one (clears the flag).
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn apply_state(&self) -> &ApplyState {
        &self.apply_state
    }

    /// The stored snapshot (empty metadata when there is none).
    pub fn stored_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Entries in `(low, high]` held in memory, for replay at start-up.
    pub fn entries_between(&self, after: u64, upto: u64) -> Vec<Entry> {
        self.entries
            .iter()
            .filter(|e| e.index > after && e.index <= upto)
            .cloned()
            .collect()
    }

    /// Installs a snapshot (one received from the leader, or the bootstrap one): replaces
    /// the snapshot file, drops every entry, rewrites the log.
    pub fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), StorageError> {
        let meta = snap.get_metadata().clone();
        self.write_snapshot(&snap)?;
        self.snapshot = snap;
        self.entries.clear();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.apply_state = ApplyState {
            applied: meta.index,
            conf_state: meta.get_conf_state().clone(),
        };
        self.rewrite_log()
    }

    /// Takes a snapshot at `index` (applied, and present in the log) with `data`, and
    /// compacts the log up to it.
    pub fn compact(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<(), StorageError> {
        if index <= self.snapshot_index() {
            return Ok(());
        }
        let term = self.term_raw(index).ok_or(StorageError::Gap {
            got: index,
            last: self.last_index_raw(),
        })?;
        let mut snap = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        snap.set_metadata(SnapshotMetadata {
            conf_state: Some(conf_state).into(),
            index,
            term,
            ..Default::default()
        });
        self.write_snapshot(&snap)?;
        self.snapshot = snap;
        self.entries.retain(|e| e.index > index);
        self.rewrite_log()
    }

    /// Replaces the snapshot file (atomically) with `snap`.
    fn write_snapshot(&self, snap: &Snapshot) -> Result<(), StorageError> {
        let bytes = frame(KIND_SNAPSHOT, &snap.write_to_bytes()?);
        write_atomic(&self.dir, SNAPSHOT_FILE, &bytes)?;
        Ok(())
    }

    fn term_raw(&self, idx: u64) -> Option<u64> {
        if idx == self.snapshot_index() {
            return Some(self.snapshot.get_metadata().term);
        }
        let first = self.entries.first()?.index;
        self.entries
            .get(usize::try_from(idx.checked_sub(first)?).ok()?)
            .map(|e| e.term)
    }

    fn rewrite_log(&mut self) -> Result<(), StorageError> {
        let mut buf = frame(KIND_HARD_STATE, &self.hard_state.write_to_bytes()?);
        if self.apply_state.applied > self.snapshot_index() {
            buf.extend_from_slice(&frame(
                KIND_APPLY_STATE,
                &encode_apply_state(&self.apply_state)?,
            ));
        }
        for e in &self.entries {
            buf.extend_from_slice(&frame(KIND_ENTRY, &e.write_to_bytes()?));
        }
        write_atomic(&self.dir, LOG_FILE, &buf)?;
        let path = self.dir.join(LOG_FILE);
        self.log = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io("open", &path))?;
        self.unsynced = false;
        Ok(())
    }
}

impl Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.apply_state.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.snapshot_index() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > self.last_index_raw() + 1 || low > high {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        let base = self.snapshot_index() + 1;
        let mut ents = self.entries[(low - base) as usize..(high - base) as usize].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.snapshot_index() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        self.term_raw(idx)
            .ok_or(raft::Error::Store(raft::StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_raw())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let cs = self.snapshot.get_metadata().get_conf_state();
        let knows_to = [
            &cs.voters,
            &cs.learners,
            &cs.voters_outgoing,
            &cs.learners_next,
        ]
        .iter()
        .any(|set| set.contains(&to));
        if self.snapshot_index() < request_index || !knows_to {
            self.snapshot_wanted.set(true);
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}
