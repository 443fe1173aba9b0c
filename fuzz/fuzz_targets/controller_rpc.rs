//! The controller RPC codec: frames as read off a socket, and request and reply bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_control::rpc::{self, Reply, Request};

fuzz_target!(|data: &[u8]| {
    let _ = Request::decode(data);
    let _ = Reply::decode(data);
    let mut rest = data;
    while let Ok(Some((body, used))) = rpc::unframe(rest) {
        assert!(used > 0 && used <= rest.len());
        if let Ok(req) = Request::decode(body) {
            // What decodes encodes back to something that decodes the same.
            let again = Request::decode(&req.encode()).expect("re-encoded request decodes");
            assert_eq!(format!("{again:?}"), format!("{req:?}"));
        }
        let _ = Reply::decode(body);
        rest = &rest[used..];
    }
});
