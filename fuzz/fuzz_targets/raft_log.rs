//! The controller's on-disk metadata log (`raft.log`: raft entries, hard state, apply
//! state, snapshots as protobuf in CRC-checked frames), opened by the real storage. The
//! input is cut into frames here and each gets a valid CRC, so that the protobuf payloads
//! (not the checksum) are what the fuzzer explores; bytes left over go after the frames as
//! a torn tail.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use raft::Storage;
use sluice_control::DiskStorage;

thread_local! {
    static DIR: PathBuf = std::env::var_os("SLUICE_FUZZ_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("sluice-fuzz-raft-{}", std::process::id()));
}

/// `len u32 LE | crc32c u32 LE | kind u8 | payload`, as `control/src/storage.rs` writes.
fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend_from_slice(payload);
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Frames from `data`: each is a kind byte (1 entry, 2 hard state, 3 apply state,
/// 4 snapshot, others unknown), a u16 LE payload length, the payload.
fn log_bytes(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let [kind, l0, l1, rest @ ..] = data {
        let len = usize::from(u16::from_le_bytes([*l0, *l1])).min(rest.len());
        out.extend_from_slice(&frame(kind % 6, &rest[..len]));
        data = &rest[len..];
    }
    out.extend_from_slice(data);
    out
}

fuzz_target!(|data: &[u8]| {
    let dir = DIR.with(PathBuf::clone);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    std::fs::write(dir.join("raft.log"), log_bytes(data)).expect("log written");
    if let Ok(storage) = DiskStorage::open(&dir) {
        let _ = storage.initial_state();
        if let (Ok(first), Ok(last)) = (storage.first_index(), storage.last_index()) {
            if first <= last {
                let _ = storage.term(last);
                let _ =
                    storage.entries(first, last + 1, None, raft::GetEntriesContext::empty(false));
            }
        }
    }
});
