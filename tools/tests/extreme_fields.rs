//! Every length and count field of every request this broker serves, set to extreme
//! values, sent to a real broker process: each answer is a response to that request or a
//! closed connection, the broker keeps serving, and its memory stays bounded.
//!
//! Fields are found without a schema: a valid request of each served (API key, version)
//! is encoded (`sluice_net::kafka::frame::samples`), then at every position after the API key and
//! version a 4-byte value (INT32 counts and lengths), a 2-byte value (INT16 string
//! lengths) and a 5-byte unsigned varint in place of one byte (compact counts and lengths)
//! are written. That covers every count and length field, and others besides; a mutation
//! may also leave a valid request (a timeout of `i32::MAX`), whose answer is then not an
//! error, so answers are only checked to be well-formed responses to that request. On top,
//! a seeded number of random positions gets random extreme values; the seed is printed and
//! `SLUICE_EXTREME_SEED=<seed>` replays it.

mod common;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::raw::{self, call, read_frame};
use common::Broker;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use sluice_net::kafka::frame::samples;
use sluice_net::kafka::handlers::APIS;

/// Resident memory the broker may reach at most while it is fed the mutated requests. A
/// two-shard debug broker stays near 60 MiB here; a single count believed off the wire
/// would take gigabytes.
const RSS_BYTES_MAX: u64 = 256 << 20;

/// Hang guard on one answer: a request that is neither answered nor refused this long is
/// a broker stuck on it (no mutated field makes a request wait: each sample fetches with
/// `max_wait_ms` 0 and produces with acks=1).
const ANSWER_GUARD: Duration = Duration::from_secs(20);

/// Random extra mutations per sample frame, on top of the exhaustive ones.
const RANDOM_MUTATIONS_PER_SAMPLE: usize = 20;

const INT32_EXTREMES: [i32; 3] = [-2, -1, i32::MAX];
const INT16_EXTREMES: [i16; 2] = [-2, i16::MAX];
/// Unsigned varints: u32::MAX (a compact count or length of 4 Gi - 1) and i32::MAX.
const UVARINT_EXTREMES: [&[u8]; 2] = [
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0xff, 0xff, 0xff, 0xff, 0x07],
];

/// First byte a mutation may touch: the API key and version stay, so that the frame is
/// still the request under test.
const FIRST_MUTABLE: usize = 4;

fn seed() -> u64 {
    std::env::var("SLUICE_EXTREME_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// Every mutation of `frame` (length prefix excluded), each once. `random` extra
/// mutations change two fields at once.
fn mutations(frame: &[u8], random: usize, rng: &mut fastrand::Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for at in FIRST_MUTABLE..frame.len() {
        for v in INT32_EXTREMES {
            if at + 4 <= frame.len() {
                let mut m = frame.to_vec();
                m[at..at + 4].copy_from_slice(&v.to_be_bytes());
                out.push(m);
            }
        }
        for v in INT16_EXTREMES {
            if at + 2 <= frame.len() {
                let mut m = frame.to_vec();
                m[at..at + 2].copy_from_slice(&v.to_be_bytes());
                out.push(m);
            }
        }
        for v in UVARINT_EXTREMES {
            let mut m = frame.to_vec();
            m.splice(at..at + 1, v.iter().copied());
            out.push(m);
        }
    }
    // Seeded extras: two fields at once, at random positions, with random extremes.
    for _ in 0..random {
        let mut m = frame.to_vec();
        for _ in 0..2 {
            if m.len() < FIRST_MUTABLE + 4 {
                break;
            }
            let at = rng.usize(FIRST_MUTABLE..m.len() - 3);
            let v = INT32_EXTREMES[rng.usize(..INT32_EXTREMES.len())];
            m[at..at + 4].copy_from_slice(&v.to_be_bytes());
        }
        out.push(m);
    }
    let mut seen = HashSet::new();
    out.retain(|m| m.as_slice() != frame && seen.insert(m.clone()));
    out
}

fn framed(frame: &[u8]) -> Vec<u8> {
    let mut out = (frame.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(frame);
    out
}

/// Resident memory (VmRSS) and its peak (VmHWM) of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn assert_serving(b: &Broker, context: &str) {
    let mut s = raw::connect(&b.addr);
    let r: ApiVersionsResponse = call(
        &mut s,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    );
    assert_eq!(r.error_code, 0, "{context}: ApiVersions refused");
}

/// What became of one mutated request.
enum Outcome {
    Answered,
    Closed,
}

/// Sends `frame` on `conn` and waits for its answer or the connection's end.
fn exchange(conn: &mut TcpStream, frame: &[u8], context: &dyn Fn() -> String) -> Outcome {
    if let Err(e) = conn.write_all(&framed(frame)) {
        // The broker closed while we wrote (it refused an earlier part of the stream).
        assert!(
            matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
            "{}: write failed: {e}",
            context()
        );
        return Outcome::Closed;
    }
    match read_frame(conn) {
        Some(answer) => {
            // The correlation id the broker saw is what the (maybe mutated) header says.
            let sent = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            let got = answer
                .get(..4)
                .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]));
            assert_eq!(got, Some(sent), "{}: answer to another request", context());
            Outcome::Answered
        }
        None => {
            let mut probe = [0u8; 1];
            match conn.read(&mut probe) {
                Ok(0) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!(
                        "{}: no answer and no close within {} s",
                        context(),
                        ANSWER_GUARD.as_secs()
                    )
                }
                other => panic!(
                    "{}: unexpected read after a partial answer: {other:?}",
                    context()
                ),
            }
            Outcome::Closed
        }
    }
}

fn connect(b: &Broker) -> TcpStream {
    let s = TcpStream::connect(&b.addr).expect("connect");
    s.set_read_timeout(Some(ANSWER_GUARD)).expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

#[test]
fn extreme_counts_and_lengths_get_an_error_or_a_close_never_a_crash() {
    let seed = seed();
    println!("extreme fields seed {seed} (replay: SLUICE_EXTREME_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Broker::start(dir.path());
    let pid = b.pid().expect("running");
    // The topic the filled samples name exists, so produce and fetch reach the log.
    {
        use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
        use kafka_protocol::protocol::StrBytes;
        let mut s = raw::connect(&b.addr);
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("t"))))]))
            .with_allow_auto_topic_creation(true);
        let r: MetadataResponse = call(&mut s, ApiKey::Metadata, 9, &req);
        assert_eq!(r.topics[0].error_code, 0);
    }
    let mut conn = connect(&b);
    let (mut sent, mut answered, mut closed) = (0u64, 0u64, 0u64);
    let mut specs: Vec<_> = APIS.iter().collect();
    rng.shuffle(&mut specs);
    for spec in specs {
        for version in spec.min..=spec.max {
            let frame = samples::request_frame(spec.key, version, 1)
                .unwrap_or_else(|| panic!("no sample for {:?} v{version}", spec.key));
            // Two fields at once could make a Fetch a valid long poll (max_wait_ms and
            // min_bytes both i32::MAX), which rightly waits: Fetch gets single ones only.
            let random = match spec.key {
                ApiKey::Fetch => 0,
                _ => RANDOM_MUTATIONS_PER_SAMPLE,
            };
            for m in mutations(&frame, random, &mut rng) {
                let context =
                    || format!("seed {seed}, {:?} v{version}, frame {:02x?}", spec.key, m);
                sent += 1;
                match exchange(&mut conn, &m, &context) {
                    Outcome::Answered => answered += 1,
                    Outcome::Closed => {
                        closed += 1;
                        conn = connect(&b);
                    }
                }
            }
            let (rss, _) = rss_bytes(pid);
            assert!(
                rss <= RSS_BYTES_MAX,
                "seed {seed}, after {:?} v{version}: broker RSS {rss} bytes over {RSS_BYTES_MAX}",
                spec.key
            );
        }
        assert_serving(&b, &format!("seed {seed}, after {:?}", spec.key));
    }
    let (rss, hwm) = rss_bytes(pid);
    println!(
        "{sent} mutated requests: {answered} answered, {closed} closed; broker RSS {} MiB, peak {} MiB (bound {} MiB)",
        rss >> 20,
        hwm >> 20,
        RSS_BYTES_MAX >> 20
    );
    assert!(
        hwm <= RSS_BYTES_MAX,
        "seed {seed}: broker peak RSS {hwm} bytes over {RSS_BYTES_MAX}"
    );
    assert!(sent > 10_000, "only {sent} mutations sent");
    assert!(closed > 0 && answered > 0);
    assert_serving(&b, &format!("seed {seed}, at the end"));
}
