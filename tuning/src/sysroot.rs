//! `SysRoot`: where `/proc` and `/sys` are read and written. The host's is `/`; tests hand
//! in a directory holding a fake tree, so every check and change runs against either
//! without knowing which.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Longest file read from the tree: `/proc/interrupts` on a large host is tens of KiB,
/// everything else a line.
pub const READ_BYTES_MAX: u64 = 1 << 20;

/// A path prefix for kernel interfaces (`/proc`, `/sys`, `/run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysRoot {
    prefix: PathBuf,
}

impl SysRoot {
    /// The running host.
    pub fn host() -> SysRoot {
        SysRoot::at("/")
    }

    /// A tree under `prefix` (`prefix/proc/sys/...`).
    pub fn at(prefix: impl Into<PathBuf>) -> SysRoot {
        SysRoot {
            prefix: prefix.into(),
        }
    }

    pub fn is_host(&self) -> bool {
        self.prefix == Path::new("/")
    }

    /// The real path of the absolute kernel path `abs` (e.g. `/proc/sys/vm/swappiness`).
    pub fn path(&self, abs: &str) -> PathBuf {
        self.prefix.join(abs.trim_start_matches('/'))
    }

    /// The file's contents with surrounding blanks removed (at most `READ_BYTES_MAX`).
    pub fn read(&self, abs: &str) -> io::Result<String> {
        read_bounded(&self.path(abs))
    }

    pub fn exists(&self, abs: &str) -> bool {
        self.path(abs).exists()
    }

    /// Names in a directory, sorted; an absent directory is an error.
    pub fn list(&self, abs: &str) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(abs))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Writes a kernel knob. Never creates a file: a knob that does not exist is an error,
    /// not a new file in a fake tree or a surprise under `/proc`.
    pub fn write(&self, abs: &str, value: &str) -> io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.path(abs))?;
        file.write_all(value.as_bytes())
    }
}

/// Reads a whole small file (at most `READ_BYTES_MAX`), trimmed.
pub fn read_bounded(path: &Path) -> io::Result<String> {
    read_bounded_limit(path, READ_BYTES_MAX)
}

/// Reads at most `bytes_max` of a file, trimmed.
pub fn read_bounded_limit(path: &Path, bytes_max: u64) -> io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(bytes_max)
        .read_to_string(&mut text)?;
    Ok(text.trim().to_string())
}

/// The entry in brackets of a sysfs choice file: `always [madvise] never` → `madvise`.
pub fn bracketed(text: &str) -> Option<&str> {
    text.split_whitespace()
        .find(|w| w.starts_with('[') && w.ends_with(']'))
        .map(|w| &w[1..w.len() - 1])
}

/// Every choice of a sysfs choice file, brackets removed.
pub fn choices(text: &str) -> Vec<&str> {
    text.split_whitespace()
        .map(|w| w.trim_start_matches('[').trim_end_matches(']'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_files() {
        assert_eq!(bracketed("always [madvise] never"), Some("madvise"));
        assert_eq!(bracketed("none [mq-deadline] kyber"), Some("mq-deadline"));
        assert_eq!(bracketed("none"), None);
        assert_eq!(choices("[none] kyber"), vec!["none", "kyber"]);
    }
}
