//! The replication client's answer decoding: a Fetch response frame (length prefix
//! excluded) at a version the first byte picks, then the whole-batch cut the follower makes
//! of each partition's records.
#![no_main]

use kafka_protocol::messages::FetchResponse;
use libfuzzer_sys::fuzz_target;
use sluice_replication::client::decode_response;
use sluice_replication::partition::whole_batches_len;

fuzz_target!(|data: &[u8]| {
    let Some((&v, frame)) = data.split_first() else {
        return;
    };
    let version = i16::from(v % 17);
    let correlation = frame
        .get(..4)
        .map_or(0, |c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    let frame = bytes::Bytes::copy_from_slice(frame);
    if let Ok(resp) = decode_response::<FetchResponse>(frame, version, correlation) {
        for topic in &resp.responses {
            for p in &topic.partitions {
                if let Some(records) = &p.records {
                    assert!(whole_batches_len(records) <= records.len());
                }
            }
        }
    }
});
