//! The log manager of one shard: opens the partitions this shard owns under the data
//! dir at start, creates and deletes partitions, runs retention and compaction, closes
//! everything.
//! Partition directories are `<topic>-<partition>`, as Kafka names them; a deleted
//! partition's directory is first renamed to `<name>.<nanos>-delete` so a crash midway
//! never resurrects it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::config::{LogConfig, ShardConfig};
use crate::error::LogError;
use crate::files;
use crate::log::{PartitionLog, RetentionOutcome};
use crate::shard::ShardResources;
use crate::types::TopicPartition;

const DELETE_SUFFIX: &str = "-delete";

#[derive(Debug)]
pub struct LogManager {
    data_dir: PathBuf,
    shard: Rc<ShardResources>,
    logs: RefCell<BTreeMap<TopicPartition, PartitionLog>>,
}

impl LogManager {
    /// Opens every partition under `data_dir` that `owns` accepts, with the settings
    /// `config_for(topic)` gives. Directories of unfinished deletions are removed.
    pub async fn open(
        data_dir: &Path,
        shard: ShardConfig,
        owns: impl Fn(&TopicPartition) -> bool,
        config_for: impl Fn(&str) -> LogConfig,
    ) -> Result<LogManager, LogError> {
        shard.validate().map_err(LogError::InvalidConfig)?;
        std::fs::create_dir_all(data_dir).map_err(|e| files::io_err(data_dir, e))?;
        let data_dir = &std::path::absolute(data_dir).map_err(|e| files::io_err(data_dir, e))?;
        files::check_direct_io(data_dir).await?;
        let manager = LogManager {
            data_dir: data_dir.to_path_buf(),
            shard: ShardResources::new(shard),
            logs: RefCell::new(BTreeMap::new()),
        };
        for (name, tp) in list_partition_dirs(data_dir)? {
            match tp {
                Some(tp) if owns(&tp) => {
                    let log = PartitionLog::open(
                        data_dir.join(&name),
                        tp.clone(),
                        config_for(&tp.topic),
                        manager.shard.clone(),
                    )
                    .await?;
                    manager.logs.borrow_mut().insert(tp, log);
                }
                Some(_) => {}
                None if name.ends_with(DELETE_SUFFIX) => {
                    let path = data_dir.join(&name);
                    std::fs::remove_dir_all(&path).map_err(|e| files::io_err(&path, e))?;
                }
                None => {}
            }
        }
        Ok(manager)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn shard(&self) -> &Rc<ShardResources> {
        &self.shard
    }

    pub fn get(&self, tp: &TopicPartition) -> Option<PartitionLog> {
        self.logs.borrow().get(tp).cloned()
    }

    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.logs.borrow().keys().cloned().collect()
    }

    /// Creates a new, empty partition log.
    pub async fn create(
        &self,
        tp: TopicPartition,
        config: LogConfig,
    ) -> Result<PartitionLog, LogError> {
        if !crate::types::is_valid_topic_name(&tp.topic) || tp.partition.0 < 0 {
            return Err(LogError::InvalidPartitionName(tp.to_string()));
        }
        if self.logs.borrow().contains_key(&tp) {
            return Err(LogError::AlreadyExists(tp.to_string()));
        }
        let dir = self.data_dir.join(tp.dir_name());
        if dir.exists() {
            // An empty directory is what a create that failed midway leaves behind;
            // anything else is a partition this shard does not own or has not opened.
            let empty = std::fs::read_dir(&dir)
                .map_err(|e| files::io_err(&dir, e))?
                .next()
                .is_none();
            if !empty {
                return Err(LogError::AlreadyExists(tp.to_string()));
            }
            tracing::warn!(partition = %tp, "reusing the empty directory of an earlier failed create");
        } else {
            std::fs::create_dir(&dir).map_err(|e| files::io_err(&dir, e))?;
        }
        let opened = async {
            files::sync_dir(&self.data_dir).await?;
            PartitionLog::open(dir.clone(), tp.clone(), config, self.shard.clone()).await
        }
        .await;
        let log = match opened {
            Ok(log) => log,
            Err(e) => {
                // Leave nothing behind that would make the next attempt fail differently.
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // A create racing with another create of the same partition: the first one wins.
        if self.logs.borrow().contains_key(&tp) {
            let _ = log.close().await;
            return Err(LogError::AlreadyExists(tp.to_string()));
        }
        self.logs.borrow_mut().insert(tp, log.clone());
        Ok(log)
    }

    /// Closes a partition (written, synced, checkpointed) and forgets it, keeping its
    /// files: another shard opens it next (a live move).
    pub async fn release(&self, tp: &TopicPartition) -> Result<(), LogError> {
        let log = self
            .logs
            .borrow_mut()
            .remove(tp)
            .ok_or_else(|| LogError::UnknownPartition(tp.to_string()))?;
        log.close().await
    }

    /// Opens an existing partition directory (recovering it) as one of this shard's logs:
    /// the other half of `release`.
    pub async fn adopt(
        &self,
        tp: TopicPartition,
        config: LogConfig,
    ) -> Result<PartitionLog, LogError> {
        if let Some(log) = self.get(&tp) {
            return Ok(log);
        }
        let dir = self.data_dir.join(tp.dir_name());
        let log = PartitionLog::open(dir, tp.clone(), config, self.shard.clone()).await?;
        if let Some(existing) = self.get(&tp) {
            // Opened twice at once: keep the first.
            let _ = log.close().await;
            return Ok(existing);
        }
        self.logs.borrow_mut().insert(tp, log.clone());
        Ok(log)
    }

    /// Closes the partition and removes its files.
    pub async fn delete(&self, tp: &TopicPartition) -> Result<(), LogError> {
        let log = self
            .logs
            .borrow_mut()
            .remove(tp)
            .ok_or_else(|| LogError::UnknownPartition(tp.to_string()))?;
        let _ = log.close().await;
        let dir = self.data_dir.join(tp.dir_name());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let doomed = self
            .data_dir
            .join(format!("{}.{nanos}{DELETE_SUFFIX}", tp.dir_name()));
        std::fs::rename(&dir, &doomed).map_err(|e| files::io_err(&dir, e))?;
        files::sync_dir(&self.data_dir).await?;
        std::fs::remove_dir_all(&doomed).map_err(|e| files::io_err(&doomed, e))
    }

    /// Runs retention on every log; a log that fails is logged and skipped.
    pub async fn enforce_retention(&self, now_ms: u64) -> RetentionOutcome {
        let logs: Vec<PartitionLog> = self.logs.borrow().values().cloned().collect();
        let mut total = RetentionOutcome::default();
        for log in logs {
            match log.enforce_retention(now_ms).await {
                Ok(o) => {
                    total.segments_deleted += o.segments_deleted;
                    total.bytes_deleted += o.bytes_deleted;
                }
                Err(e) => {
                    tracing::error!(partition = %log.topic_partition(), error = %e, "retention failed")
                }
            }
        }
        total
    }

    /// Runs a compaction pass on every log whose policy includes `compact` (each decides
    /// whether it is due); a log that fails is logged and skipped. Returns the segments
    /// rewritten and the bytes they shrank by.
    pub async fn compact(&self, now_ms: u64) -> (usize, u64) {
        let logs: Vec<PartitionLog> = self
            .logs
            .borrow()
            .values()
            .filter(|l| l.config().cleanup_policy.compacts())
            .cloned()
            .collect();
        let (mut segments, mut bytes) = (0, 0);
        for log in logs {
            match log.compact(now_ms).await {
                Ok(o) => {
                    segments += o.segments_rewritten;
                    bytes += o.bytes_before.saturating_sub(o.bytes_after);
                }
                Err(e) => {
                    tracing::error!(partition = %log.topic_partition(), error = %e, "compaction failed")
                }
            }
        }
        (segments, bytes)
    }

    /// Closes every log (writes, syncs, checkpoints); returns the first error.
    pub async fn close_all(&self) -> Result<(), LogError> {
        let logs: Vec<PartitionLog> = std::mem::take(&mut *self.logs.borrow_mut())
            .into_values()
            .collect();
        let mut first_error = None;
        for log in logs {
            if let Err(e) = log.close().await {
                tracing::error!(partition = %log.topic_partition(), error = %e, "close failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Subdirectories of the data dir: each with its parsed partition name, if it is one.
fn list_partition_dirs(data_dir: &Path) -> Result<Vec<(String, Option<TopicPartition>)>, LogError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(data_dir).map_err(|e| files::io_err(data_dir, e))? {
        let entry = entry.map_err(|e| files::io_err(data_dir, e))?;
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let tp = TopicPartition::from_dir_name(&name);
        out.push((name, tp));
    }
    out.sort();
    Ok(out)
}
