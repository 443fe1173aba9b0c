//! A Kafka request frame (length prefix excluded): header, then the body decoded as the
//! handler of its API key and version would, for every (key, version) the broker serves.
//! The input's first four bytes pick the API key and version, so one target covers them all.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sluice_net::kafka::frame::decode_frame(bytes::Bytes::copy_from_slice(data));
});
