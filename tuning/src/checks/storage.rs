//! The data directory: its filesystem, a real O_DIRECT write and read, and its block
//! device's queue settings.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{left_as_is, CheckContext};
use crate::check::{Check, Severity};
use crate::sysroot::{bracketed, SysRoot};

/// The block size segment I/O is aligned to.
pub const BLOCK_BYTES: usize = 4096;

/// One block aligned as O_DIRECT wants it, without unsafe allocation.
#[repr(C, align(4096))]
struct Block([u8; BLOCK_BYTES]);

/// The data dir if it exists, else its nearest existing ancestor (`serve` creates the rest).
fn existing_dir(data_dir: &Path) -> PathBuf {
    let abs = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let mut dir = abs.as_path();
    while !dir.is_dir() {
        match dir.parent() {
            Some(p) => dir = p,
            None => break,
        }
    }
    dir.to_path_buf()
}

fn shown(data_dir: &Path, probed: &Path) -> String {
    if probed == std::path::absolute(data_dir).unwrap_or_default() {
        String::new()
    } else {
        format!(" (data dir absent; looked at {})", probed.display())
    }
}

/// Filesystem magic numbers (statfs f_type) and what they mean for segment files:
/// (name, fit to hold a log at all, recommended). tmpfs and ramfs keep data in memory
/// (gone at reboot; tmpfs before Linux 6.6 also refuses O_DIRECT).
fn fs_kind(magic: u64) -> (&'static str, bool, bool) {
    match magic {
        0xEF53 => ("ext4", true, true),
        0x5846_5342 => ("xfs", true, true),
        0x9123_683E => ("btrfs", true, false),
        0x2FC1_2FC1 => ("zfs", true, false),
        0x794C_7630 => ("overlayfs", true, false),
        0x6969 => ("nfs", true, false),
        0x0102_1994 => ("tmpfs", false, false),
        0x8584_58F6 => ("ramfs", false, false),
        _ => ("other", true, false),
    }
}

fn statfs_type(dir: &Path) -> std::io::Result<u64> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path holds a NUL byte"))?;
    // SAFETY: statfs is plain data; all zeroes is a valid value to be overwritten.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `buf` a statfs we own, both live for the call.
    if unsafe { libc::statfs(c.as_ptr(), &mut buf) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(buf.f_type as u64)
}

pub(super) fn filesystem(ctx: &CheckContext<'_>) -> Check {
    let name = "data_dir.filesystem";
    let rec = "ext4 or xfs on a local disk";
    let why = "segments are written with O_DIRECT and must outlive a reboot: not tmpfs or ramfs; \
               copy-on-write and network filesystems slow direct writes";
    let dir = existing_dir(ctx.data_dir);
    let magic = match statfs_type(&dir) {
        Ok(m) => m,
        Err(e) => {
            let cur = format!("statfs {}: {e}", dir.display());
            return Check::unknown(name, Severity::Required, cur, rec, why);
        }
    };
    let (kind, fit, good) = fs_kind(magic);
    let current = format!("{kind} (0x{magic:x}){}", shown(ctx.data_dir, &dir));
    let check = Check::judged(name, Severity::Required, fit, current, rec, why);
    if fit && !good {
        check.with_status(crate::check::Status::Warn)
    } else {
        check
    }
}

/// What the O_DIRECT probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectIoProbe {
    pub dir: PathBuf,
    pub outcome: Result<(), DirectIoError>,
}

/// Why the O_DIRECT probe failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectIoError {
    #[error("open with O_DIRECT refused (EINVAL): the filesystem has no direct I/O")]
    Unsupported,
    #[error("creating {path}: {reason}")]
    Create { path: String, reason: String },
    #[error("direct write of {bytes} bytes: {reason}")]
    Write { bytes: usize, reason: String },
    #[error("direct read of {bytes} bytes: {reason}")]
    Read { bytes: usize, reason: String },
    #[error("the block read back differs from the one written")]
    Mismatch,
}

/// Why the data dir's block device could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("stat {dir}: {reason}")]
    Stat { dir: String, reason: String },
    #[error("no block device ({major}:{minor}: a virtual or network filesystem)")]
    NoBlockDevice { major: u32, minor: u32 },
    #[error("device {major}:{minor}: {link}: {reason}")]
    Device {
        major: u32,
        minor: u32,
        link: String,
        reason: String,
    },
    #[error("root: {0}")]
    Root(String),
    #[error("{0} is outside the root")]
    OutsideRoot(String),
}

/// Writes one aligned 4 KiB block with O_DIRECT into a fresh file in `dir`, reads it back,
/// compares, and removes the file.
pub fn probe_direct_io(dir: &Path) -> DirectIoProbe {
    let path = dir.join(format!(".sluice-tune-probe-{}", std::process::id()));
    let outcome = write_read_block(&path);
    let _ = std::fs::remove_file(&path);
    DirectIoProbe {
        dir: dir.to_path_buf(),
        outcome,
    }
}

fn write_read_block(path: &Path) -> Result<(), DirectIoError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => DirectIoError::Unsupported,
            _ => DirectIoError::Create {
                path: path.display().to_string(),
                reason: e.to_string(),
            },
        })?;
    let mut out = Box::new(Block([0; BLOCK_BYTES]));
    for (i, b) in out.0.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    file.write_all_at(&out.0, 0)
        .map_err(|e| DirectIoError::Write {
            bytes: BLOCK_BYTES,
            reason: e.to_string(),
        })?;
    let mut back = Box::new(Block([0; BLOCK_BYTES]));
    file.read_exact_at(&mut back.0, 0)
        .map_err(|e| DirectIoError::Read {
            bytes: BLOCK_BYTES,
            reason: e.to_string(),
        })?;
    if back.0 != out.0 {
        return Err(DirectIoError::Mismatch);
    }
    Ok(())
}

pub(super) fn direct_io(ctx: &CheckContext<'_>) -> Check {
    let name = "data_dir.o_direct";
    let rec = "a 4 KiB aligned O_DIRECT write and read succeed";
    let why = "all segment I/O bypasses the page cache";
    let dir = existing_dir(ctx.data_dir);
    let probe = probe_direct_io(&dir);
    let at = shown(ctx.data_dir, &dir);
    match probe.outcome {
        Ok(()) => Check::judged(
            name,
            Severity::Required,
            true,
            if at.is_empty() {
                format!("works in {}", dir.display())
            } else {
                format!("works{at}")
            },
            rec,
            why,
        ),
        Err(e) => Check::judged(
            name,
            Severity::Required,
            false,
            format!("{e}{at}"),
            rec,
            why,
        ),
    }
}

/// The data dir's block device: its name and the kernel path of its `queue/` directory
/// (the whole disk's, for a partition).
pub fn data_device_queue(root: &SysRoot, data_dir: &Path) -> Result<(String, String), DeviceError> {
    let dir = existing_dir(data_dir);
    let dev = std::fs::metadata(&dir)
        .map_err(|e| DeviceError::Stat {
            dir: dir.display().to_string(),
            reason: e.to_string(),
        })?
        .dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    if major == 0 {
        return Err(DeviceError::NoBlockDevice { major, minor });
    }
    let link = root.path(&format!("/sys/dev/block/{major}:{minor}"));
    let mut device = link.canonicalize().map_err(|e| DeviceError::Device {
        major,
        minor,
        link: link.display().to_string(),
        reason: e.to_string(),
    })?;
    if device.join("partition").exists() {
        device.pop();
    }
    let name = device
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = root
        .path("/")
        .canonicalize()
        .map_err(|e| DeviceError::Root(e.to_string()))?;
    let rel = device
        .strip_prefix(&prefix)
        .map_err(|_| DeviceError::OutsideRoot(device.display().to_string()))?;
    Ok((name, format!("/{}/queue", rel.display())))
}

fn queue_check(
    ctx: &CheckContext<'_>,
    name: &'static str,
    file: &str,
    want: Option<String>,
    why: &str,
) -> Check {
    let rec = want.clone().unwrap_or_else(|| left_as_is(ctx));
    let (dev, queue) = match data_device_queue(ctx.root, ctx.data_dir) {
        Ok(q) => q,
        Err(e) => return Check::unknown(name, Severity::Recommended, e.to_string(), rec, why),
    };
    let text = match ctx.root.read(&format!("{queue}/{file}")) {
        Ok(t) => t,
        Err(e) => {
            return Check::unknown(name, Severity::Recommended, format!("{dev}: {e}"), rec, why)
        }
    };
    let current = bracketed(&text).unwrap_or(&text).to_string();
    let good = want.as_deref().is_none_or(|w| w == current);
    Check::judged(
        name,
        Severity::Recommended,
        good,
        format!("{current} ({dev})"),
        rec,
        why,
    )
}

pub(super) fn scheduler(ctx: &CheckContext<'_>) -> Check {
    queue_check(
        ctx,
        "data_device.scheduler",
        "scheduler",
        ctx.profile.io_scheduler.clone(),
        "NVMe queues need no kernel scheduler: it only adds CPU time and reordering",
    )
}

pub(super) fn nomerges(ctx: &CheckContext<'_>) -> Check {
    queue_check(
        ctx,
        "data_device.nomerges",
        "nomerges",
        ctx.profile.io_nomerges.map(|n| n.to_string()),
        "Sluice writes large aligned blocks already; trying to merge them costs CPU per I/O",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_kinds() {
        assert_eq!(fs_kind(0xEF53), ("ext4", true, true));
        assert_eq!(fs_kind(0x0102_1994), ("tmpfs", false, false));
        assert!(!fs_kind(0x9123_683E).2);
        assert_eq!(fs_kind(1).0, "other");
    }
}
