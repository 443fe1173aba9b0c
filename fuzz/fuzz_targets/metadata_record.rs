//! Metadata log records (flatbuffers, verified before reading) and metadata snapshots.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_control::{MetadataImage, MetadataOffset, Record};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::decode(data) {
        let again = Record::decode(&record.encode()).expect("re-encoded record decodes");
        assert_eq!(again, record);
        let _ = MetadataImage::empty().apply(MetadataOffset(1), &record);
    }
    let _ = MetadataImage::decode_snapshot(data);
});
