//! The recovery checkpoint of a partition (`recovery.checkpoint`): the log start offset
//! and the point up to which the log was synced and its indexes written. Recovery trusts
//! everything before that point and verifies everything after it.
//!
//! Format (big-endian, 44 bytes): magic `SLCP`, version u32, log_start i64,
//! segment_base i64, position u64, next_offset i64, CRC32C of the preceding 40 bytes.

use std::path::Path;

use crate::error::LogError;
use crate::files;
use crate::types::Offset;

pub const FILE_NAME: &str = "recovery.checkpoint";
const MAGIC: &[u8; 4] = b"SLCP";
const VERSION: u32 = 1;
const ENCODED_BYTES: usize = 44;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub log_start: Offset,
    /// The segment the recovery point lies in.
    pub segment_base: Offset,
    /// Bytes of that segment that are synced and indexed.
    pub position: u64,
    /// Offset of the first batch at `position`.
    pub next_offset: Offset,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_BYTES);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.log_start.0.to_be_bytes());
        out.extend_from_slice(&self.segment_base.0.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(&self.next_offset.0.to_be_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// `None` for anything but an intact checkpoint of this version.
    pub fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        if bytes.len() != ENCODED_BYTES || &bytes[..4] != MAGIC {
            return None;
        }
        let crc = u32::from_be_bytes(bytes[40..44].try_into().ok()?);
        if crc32c::crc32c(&bytes[..40]) != crc {
            return None;
        }
        let u64_at = |i: usize| bytes[i..i + 8].try_into().ok().map(u64::from_be_bytes);
        if u32::from_be_bytes(bytes[4..8].try_into().ok()?) != VERSION {
            return None;
        }
        let cp = Checkpoint {
            log_start: Offset(u64_at(8)? as i64),
            segment_base: Offset(u64_at(16)? as i64),
            position: u64_at(24)?,
            next_offset: Offset(u64_at(32)? as i64),
        };
        let sane = cp.log_start.0 >= 0
            && cp.segment_base.0 >= 0
            && cp.next_offset >= cp.segment_base
            && cp.position <= u32::MAX as u64;
        sane.then_some(cp)
    }

    pub async fn read(dir: &Path) -> Result<Option<Checkpoint>, LogError> {
        let bytes = files::read_small(&dir.join(FILE_NAME)).await?;
        Ok(bytes.and_then(|b| {
            let cp = Checkpoint::decode(&b);
            if cp.is_none() {
                tracing::warn!(dir = %dir.display(), "recovery checkpoint is damaged; recovering from the segments alone");
            }
            cp
        }))
    }

    pub async fn write(&self, dir: &Path) -> Result<(), LogError> {
        files::write_atomic(dir, FILE_NAME, &self.encode()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let cp = Checkpoint {
            log_start: Offset(5),
            segment_base: Offset(100),
            position: 4096,
            next_offset: Offset(160),
        };
        let bytes = cp.encode();
        assert_eq!(Checkpoint::decode(&bytes), Some(cp));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert_eq!(Checkpoint::decode(&bad), None, "flip at {i}");
        }
        assert_eq!(Checkpoint::decode(&bytes[..43]), None);
    }
}
