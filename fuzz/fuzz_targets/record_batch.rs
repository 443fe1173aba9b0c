//! Record batches as a producer or a leader sends them: validation, batch iteration and
//! record iteration (uncompressed and, through the bounded codecs, compressed), the way
//! produce, the log and the offsets loader walk them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_engine::batch::{self, BatchIter, RecordIter};

/// The broker's default `max.message.bytes`.
const MAX_MESSAGE_BYTES: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let _ = batch::validate(data, MAX_MESSAGE_BYTES);
    let _ = batch::records(data);
    let _ = batch::record_timestamps(data);
    let mut iter = BatchIter::new(data);
    for (at, header, bytes) in iter.by_ref() {
        assert_eq!(bytes.len(), header.total_bytes());
        assert!(at + bytes.len() <= data.len());
        let _ = batch::verify_crc(&header, bytes);
        let _ = header.next_offset();
        if let Ok(section) = batch::records_section(&header, bytes) {
            for record in RecordIter::from_records(&section, header.record_count.get()) {
                if let Ok(r) = record {
                    assert!(r.bytes.len() <= section.len());
                }
            }
        }
        for record in RecordIter::new(bytes, &header) {
            let _ = record;
        }
    }
    assert!(iter.position() <= data.len());
    let _ = sluice_replication::partition::whole_batches_len(data);
});
