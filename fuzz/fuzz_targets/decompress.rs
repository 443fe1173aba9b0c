//! Batch decompression: the input is a records section, the first byte picks the codec
//! (gzip, snappy, lz4, zstd). A header with that codec and the section's length is put in
//! front, so the engine's own path (`records_section`) decompresses it, bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_engine::batch::{self, BatchBuilder};

fuzz_target!(|data: &[u8]| {
    let Some((&codec, section)) = data.split_first() else {
        return;
    };
    let codec = i16::from(codec % 4 + 1);
    let mut bytes = BatchBuilder::new(0).build();
    bytes.truncate(batch::HEADER_BYTES);
    bytes.extend_from_slice(section);
    let length = (bytes.len() - batch::LOG_OVERHEAD_BYTES) as i32;
    bytes[8..12].copy_from_slice(&length.to_be_bytes());
    // attributes: big-endian i16 at 21..23; the codec is its low 3 bits.
    bytes[21..23].copy_from_slice(&codec.to_be_bytes());
    let Ok(header) = batch::parse_header(&bytes) else {
        return;
    };
    if let Ok(out) = batch::records_section(&header, &bytes) {
        assert!(out.len() <= 64 << 20);
        for r in batch::RecordIter::from_records(&out, i32::MAX) {
            if r.is_err() {
                break;
            }
        }
    }
});
