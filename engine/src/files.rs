//! Small direct-I/O file helpers: aligned whole-file reads and atomic small-file writes
//! (tmp + fdatasync + rename + directory sync), for indexes and checkpoints.

use std::path::{Path, PathBuf};

use glommio::io::{DmaFile, OpenOptions};

use crate::error::LogError;

/// Block size all direct I/O is aligned to (covers 512-byte and 4 KiB devices).
pub const BLOCK_BYTES: u64 = 4096;

pub fn align_down(v: u64) -> u64 {
    v & !(BLOCK_BYTES - 1)
}

pub fn align_up(v: u64) -> u64 {
    (v + BLOCK_BYTES - 1) & !(BLOCK_BYTES - 1)
}

/// A DMA buffer of `bytes` (> 0). glommio takes buffers from its io_uring pool and,
/// once that is used up (a busy shard), from the system allocator, which refuses a
/// zero-length one with a panic; a zero-length request is always a bug in the caller,
/// so it fails here every time, not only when the pool happens to be full.
pub fn dma_buffer(bytes: usize) -> glommio::io::DmaBuffer {
    assert!(bytes > 0, "zero-length DMA buffer requested");
    glommio::allocate_dma_buffer(bytes)
}

pub fn io_err(path: &Path, e: impl Into<std::io::Error>) -> LogError {
    LogError::io(path.display(), e)
}

fn glommio_err(path: &Path, e: glommio::GlommioError<()>) -> LogError {
    io_err(path, std::io::Error::from(e))
}

/// Opens (creating if asked) a file for direct I/O, read-write.
pub async fn open_rw(path: &Path, create: bool) -> Result<DmaFile, LogError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .dma_open(path)
        .await
        .map_err(|e| glommio_err(path, e))
}

/// Reads a whole (small) file; `Ok(None)` when it does not exist.
pub async fn read_small(path: &Path) -> Result<Option<Vec<u8>>, LogError> {
    let file = match DmaFile::open(path).await {
        Ok(f) => f,
        Err(e) => {
            let e = std::io::Error::from(e);
            if e.kind() == std::io::ErrorKind::NotFound {
                return Ok(None);
            }
            return Err(io_err(path, e));
        }
    };
    let size = file.file_size().await.map_err(|e| glommio_err(path, e))?;
    let bytes = if size == 0 {
        Vec::new()
    } else {
        let read = file
            .read_at_aligned(0, align_up(size) as usize)
            .await
            .map_err(|e| glommio_err(path, e))?;
        read[..read.len().min(size as usize)].to_vec()
    };
    let _ = file.close().await;
    Ok(Some(bytes))
}

/// Writes `bytes` to `dir/name` atomically: a crash leaves either the old or the new file.
pub async fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), LogError> {
    let tmp: PathBuf = dir.join(format!("{name}.tmp"));
    let target = dir.join(name);
    let file = create_synced(&tmp, bytes).await?;
    rename_file(&file, &target).await?;
    let _ = file.close().await;
    sync_dir(dir).await
}

/// Writes `bytes` to a new file at `path` (replacing any) and fdatasyncs it; no rename,
/// no directory sync (the caller orders those).
pub async fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let file = create_synced(path, bytes).await?;
    let _ = file.close().await;
    Ok(())
}

/// Creates (or empties) the file at `path`, writes `bytes` and fdatasyncs it; the file is
/// exactly `bytes` long. Returns it open.
async fn create_synced(path: &Path, bytes: &[u8]) -> Result<DmaFile, LogError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(path)
        .await
        .map_err(|e| glommio_err(path, e))?;
    if !bytes.is_empty() {
        let mut buf = dma_buffer(align_up(bytes.len() as u64) as usize);
        buf.as_bytes_mut().fill(0);
        buf.as_bytes_mut()[..bytes.len()].copy_from_slice(bytes);
        let written = file
            .write_at(buf, 0)
            .await
            .map_err(|e| glommio_err(path, e))?;
        if written < bytes.len() {
            return Err(io_err(path, std::io::Error::other("short write")));
        }
    }
    file.truncate(bytes.len() as u64)
        .await
        .map_err(|e| glommio_err(path, e))?;
    file.fdatasync().await.map_err(|e| glommio_err(path, e))?;
    Ok(file)
}

/// Renames an open file to `target` (the directory sync is the caller's).
pub async fn rename_file(file: &DmaFile, target: &Path) -> Result<(), LogError> {
    file.rename(target)
        .await
        .map_err(|e| glommio_err(target, e))
}

/// Makes directory entries (new, renamed, removed files) durable.
pub async fn sync_dir(dir: &Path) -> Result<(), LogError> {
    // glommio opens directories relative to no directory at all: give it an absolute path.
    let dir = &std::path::absolute(dir).map_err(|e| io_err(dir, e))?;
    let d = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| glommio_err(dir, e))?;
    d.sync().await.map_err(|e| glommio_err(dir, e))?;
    let _ = d.close().await;
    Ok(())
}

/// Cuts `file` to `len` bytes and makes the new size durable.
pub async fn truncate_synced(file: &DmaFile, path: &Path, len: u64) -> Result<(), LogError> {
    file.truncate(len).await.map_err(|e| glommio_err(path, e))?;
    file.fdatasync().await.map_err(|e| glommio_err(path, e))
}

/// Removes a file, treating "already gone" as success.
pub fn remove_if_exists(path: &Path) -> Result<(), LogError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, e)),
    }
}

pub fn glommio_io(path: &Path, e: glommio::GlommioError<()>) -> LogError {
    glommio_err(path, e)
}

/// Replaces the small file at `path` with `bytes` atomically and durably, with blocking
/// `std::fs` calls (for threads that are not shards: the control thread, start-up, the
/// admin thread): write `<path>.tmp`, fsync it, rename it over `path`, fsync the
/// directory. A crash leaves the old file or the new one, never a mix. Shards use the
/// DMA version above.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Checks that `dir` supports direct I/O, and settles glommio's per-device choice of the
/// polled ring on a file that holds data. (glommio probes polling with a read at offset
/// 0 of the first file it opens on a device; on an empty file that read succeeds
/// trivially and wrongly enables polling, after which every read fails with EOPNOTSUPP
/// on devices without polled queues.)
pub async fn check_direct_io(dir: &Path) -> Result<(), LogError> {
    // One name per probe: shards may open the same data dir at once.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".direct-io-probe-{}-{n}", std::process::id()));
    if let Err(e) = std::fs::write(&probe, vec![0x5a; BLOCK_BYTES as usize]) {
        let _ = std::fs::remove_file(&probe);
        if e.kind() == std::io::ErrorKind::StorageFull {
            // Existing logs can still be opened and read; appends will report the error.
            tracing::error!(dir = %dir.display(), "data dir is full: direct I/O not probed");
            return Ok(());
        }
        return Err(io_err(&probe, e));
    }
    let outcome = async {
        let file = DmaFile::open(&probe)
            .await
            .map_err(|e| glommio_err(&probe, e))?;
        let read = file
            .read_at_aligned(0, BLOCK_BYTES as usize)
            .await
            .map_err(|e| glommio_err(&probe, e))?;
        let _ = file.close().await;
        if read.len() != BLOCK_BYTES as usize || read.iter().any(|b| *b != 0x5a) {
            return Err(io_err(
                &probe,
                std::io::Error::other("direct read returned wrong bytes"),
            ));
        }
        Ok(())
    }
    .await;
    remove_if_exists(&probe)?;
    outcome.map_err(|e| match e {
        LogError::Io { path, source } => LogError::Io {
            path,
            source: std::io::Error::new(
                source.kind(),
                format!("direct I/O (O_DIRECT) does not work in this directory: {source}; put the data dir on a filesystem that supports it (ext4, xfs), not tmpfs or overlayfs"),
            ),
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_file_atomic(&path, b"a longer first version").unwrap();
        write_file_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }
}
