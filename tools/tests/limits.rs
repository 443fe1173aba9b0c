//! Resource bounds under abuse, on a real broker process (two shards): the request byte
//! budget (`queued.max.request.bytes`) against slow senders and stalled large requests,
//! idle connections (`connections.max.idle.ms`), and the connection bounds per client
//! address (`max.connections.per.ip`) and in all (`max.connections`). Waits are on
//! observed state (answers, closed sockets, metrics), bounded by hang guards only.
//!
//! The slow-sender test runs at a tenth of the default sizes (`socket.request.max.bytes`
//! 10 MiB, `queued.max.request.bytes` 25.6 MiB per shard) so that it stays light on a
//! shared machine; `SLUICE_ABUSE_FULL=1` runs it at the defaults (100 MiB requests, 256 MiB
//! per shard: 10 GiB offered by the stalled senders) for the figure in docs/benchmarks.md.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::raw::{self, call, frame};
use common::wait_for;
use common::Broker;
use futures_executor::block_on;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, MetadataRequest,
    MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

/// A guard against hangs only.
const GUARD: Duration = Duration::from_secs(60);

/// A broker with `toml` as its config file.
fn start(toml: &str) -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, toml).unwrap();
    let b = Broker::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    (dir, b)
}

/// A metric's value (the line `name_and_labels value`), 0 when absent.
fn metric(b: &Broker, name_and_labels: &str) -> f64 {
    let page = b.admin_get("/metrics").expect("/metrics");
    page.lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)?
                .strip_prefix(' ')?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// ApiVersions on `s`; `false` if the broker closed it instead of answering.
fn answers(s: &mut TcpStream) -> bool {
    if s.write_all(&frame(
        ApiKey::ApiVersions,
        3,
        7,
        &ApiVersionsRequest::default(),
    ))
    .is_err()
    {
        return false;
    }
    raw::read_frame(s).is_some()
}

/// Whether the broker closed `s` (EOF or reset) within the read guard.
fn closed_by_broker(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(GUARD)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn create_topic(b: &Broker, name: &str) {
    let mut s = raw::connect(&b.addr);
    let req = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(name.to_string())),
        ))]))
        .with_allow_auto_topic_creation(true);
    let r: MetadataResponse = call(&mut s, ApiKey::Metadata, 9, &req);
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
}

#[test]
fn idle_connections_are_closed_and_counted_but_not_while_a_request_is_in_flight() {
    let (_dir, b) = start("[network]\nconnection_idle_ms_max = 500\n");
    create_topic(&b, "quiet");
    // Silent from the start, and silent after one answer: both closed.
    let mut silent = raw::connect(&b.addr);
    let mut answered = raw::connect(&b.addr);
    assert!(answers(&mut answered));
    // A long poll that outlasts the idle timeout: the connection waits for its answer
    // and stays open (the request is in flight, the client is not idle).
    let mut polling = raw::connect(&b.addr);
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(2_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("quiet")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    polling
        .write_all(&frame(ApiKey::Fetch, 11, 1, &fetch))
        .unwrap();
    assert!(
        raw::read_frame(&mut polling).is_some(),
        "the long poll was answered, not cut off by the idle timeout"
    );
    assert!(answers(&mut polling), "and the connection is still open");
    assert!(
        closed_by_broker(&mut silent),
        "a silent connection is closed"
    );
    assert!(
        closed_by_broker(&mut answered),
        "an idle connection is closed"
    );
    assert!(metric(&b, "sluice_connections_idle_closed_total") >= 2.0);
}

/// Opens connections until one is refused; checks the first `max` are served and the
/// next is closed at once, and that closing one frees its place.
fn check_connection_bound(b: &Broker, max: usize, limit: &str) {
    let mut open: Vec<TcpStream> = (0..max)
        .map(|i| {
            let mut s = raw::connect(&b.addr);
            assert!(answers(&mut s), "connection {i} of {max} is served");
            s
        })
        .collect();
    let mut over = raw::connect(&b.addr);
    assert!(
        closed_by_broker(&mut over),
        "connection {} is closed",
        max + 1
    );
    assert!(
        metric(
            b,
            &format!("sluice_connections_refused_total{{limit=\"{limit}\"}}")
        ) >= 1.0
    );
    drop(open.pop());
    // The place comes free once the broker has seen the close.
    wait_for("a place to come free", GUARD, &mut || {
        let mut s = raw::connect(&b.addr);
        answers(&mut s).then_some(())
    });
}

#[test]
fn connections_past_the_per_address_and_total_bounds_are_closed_at_once() {
    let (_dir, per_ip) = start("[network]\nconnections_max_per_ip = 3\n");
    check_connection_bound(&per_ip, 3, "per_ip");
    let (_dir2, total) = start("[network]\nconnections_max = 2\n");
    check_connection_bound(&total, 2, "total");
}

#[test]
fn a_request_larger_than_the_whole_budget_is_still_served() {
    // A 1 MiB budget per shard and a 2.5 MiB message: its request goes alone, read into a
    // buffer that grows as it arrives, and comes back byte for byte.
    let (_dir, b) = start(
        "[network]\nqueued_request_bytes_max = 1048576\nsocket_request_max_bytes = 8388608\n\
         [topic_defaults]\nmax_message_bytes = 4194304\n",
    );
    let payload: Vec<u8> = (0..(5usize << 19)).map(|i| (i * 7 % 251) as u8).collect();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .set("message.max.bytes", "4000000")
        .create()
        .expect("producer");
    let r = block_on(producer.send(
        FutureRecord::<(), _>::to("large").payload(&payload),
        Duration::from_secs(30),
    ));
    assert!(r.is_ok(), "{r:?}");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .set("group.id", "large-readers")
        .set("fetch.max.bytes", "8000000")
        .set("max.partition.fetch.bytes", "8000000")
        .set("receive.message.max.bytes", "9000000")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("large", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let got = wait_for("the large message back", GUARD, &mut || match consumer
        .poll(Duration::from_millis(100))
    {
        Some(Ok(m)) => Some(m.payload().unwrap_or_default().to_vec()),
        _ => None,
    });
    assert!(
        got == payload,
        "{} bytes back, not the {} sent",
        got.len(),
        payload.len()
    );
}

/// Zeros the stalled senders send (their frames never complete, so never parse).
static ZEROS: [u8; 256 << 10] = [0; 256 << 10];

/// Connects and announces a frame of `len` bytes; retries while the listen backlog is full.
fn announce(addr: &str, len: usize) -> TcpStream {
    let mut s = wait_for("a connection", GUARD, &mut || TcpStream::connect(addr).ok());
    s.write_all(&(len as i32).to_be_bytes()).unwrap();
    s
}

#[test]
fn slow_senders_and_stalled_requests_leave_memory_bounded_and_clients_served() {
    const MIB: usize = 1 << 20;
    const STALLED: usize = 100;
    const TRICKLING: usize = 1_000;
    const SHARDS: usize = 2;
    /// What a frame buffer pool keeps per shard (`frame_pool::POOL_BYTES_MAX`).
    const POOL_BYTES: usize = 32 * MIB;
    /// The broker's own state for 1,100 connections (tasks, socket wrappers).
    const CONNECTION_STATE_BYTES: usize = 64 * MIB;
    let full = std::env::var_os("SLUICE_ABUSE_FULL").is_some();
    let (request_max, queued_max, toml) = if full {
        (100 * MIB, 256 * MIB, String::new())
    } else {
        let (r, q) = (10 * MIB, 256 * MIB / 10);
        let toml =
            format!("[network]\nsocket_request_max_bytes = {r}\nqueued_request_bytes_max = {q}\n");
        (r, q, toml)
    };
    let (_dir, b) = start(&toml);
    let pid = b.pid().expect("running");
    create_topic(&b, "calm");
    let start_hwm_kib = status_kib(pid, "VmHWM");

    // 100 connections send all of a `request_max` frame but its last byte, and stall.
    let stop = Arc::new(AtomicBool::new(false));
    let stalled_done = Arc::new(AtomicUsize::new(0));
    let stalled: Vec<_> = (0..STALLED)
        .map(|_| {
            let (addr, stop, done) = (b.addr.clone(), stop.clone(), stalled_done.clone());
            std::thread::spawn(move || {
                let mut s = announce(&addr, request_max);
                s.set_write_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let mut left = request_max - 1;
                while left > 0 && !stop.load(Ordering::Relaxed) {
                    match s.write(&ZEROS[..left.min(ZEROS.len())]) {
                        Ok(n) => left -= n,
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(e) => panic!("stalled sender: {e}"),
                    }
                }
                if left == 0 {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                drop(s);
            })
        })
        .collect();
    // The shards admit what their budgets hold (two frames each) and make the rest wait.
    let admitted = SHARDS * (queued_max / request_max);
    wait_for(
        "the admitted stalled senders to send all but their last byte",
        GUARD,
        &mut || (stalled_done.load(Ordering::Relaxed) >= admitted).then_some(()),
    );
    wait_for(
        "the other stalled senders to wait for the budget",
        GUARD,
        &mut || {
            (metric(&b, "sluice_request_reads_paused_total") >= (STALLED - admitted) as f64)
                .then_some(())
        },
    );

    // 1,000 connections announce `request_max` frames and trickle a byte at a time.
    let trickling: Vec<TcpStream> = (0..TRICKLING)
        .map(|_| announce(&b.addr, request_max))
        .collect();
    let trickler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut conns = trickling;
            for s in &conns {
                s.set_nonblocking(true).unwrap();
            }
            while !stop.load(Ordering::Relaxed) {
                for s in &mut conns {
                    let _ = s.write(&[0]);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    wait_for(
        "the trickling senders to reach the broker",
        GUARD,
        &mut || (metric(&b, "sluice_connections") >= (STALLED + TRICKLING) as f64).then_some(()),
    );

    // Meanwhile a well-behaved client produces and consumes.
    const MESSAGES: usize = 200;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    for i in 0..MESSAGES {
        let payload = format!("calm-{i}");
        let r = block_on(producer.send(
            FutureRecord::<(), _>::to("calm").payload(&payload),
            Duration::from_secs(30),
        ));
        assert!(r.is_ok(), "message {i}: {r:?}");
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .set("group.id", "calm-readers")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("calm", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut read = Vec::new();
    wait_for("the messages to be read back", GUARD, &mut || {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            read.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
        (read.len() >= MESSAGES).then_some(())
    });
    assert_eq!(read[0], "calm-0");
    assert_eq!(read[MESSAGES - 1], format!("calm-{}", MESSAGES - 1));

    let hwm_kib = status_kib(pid, "VmHWM");
    let rss_kib = status_kib(pid, "VmRSS");
    let queued = metric(&b, "sluice_request_bytes_queued");
    let paused = metric(&b, "sluice_request_reads_paused_total");
    let bound_kib = start_hwm_kib
        + ((SHARDS * (queued_max * 3 / 2 + POOL_BYTES) + CONNECTION_STATE_BYTES) / 1024) as u64;
    println!(
        "figure: {STALLED} stalled senders of {} MiB - 1 byte and {TRICKLING} trickling ones, \
         socket.request.max.bytes {} MiB, queued.max.request.bytes {:.1} MiB per shard, \
         {SHARDS} shards: broker VmHWM {} MiB (VmRSS {} MiB, {} MiB before), bound {} MiB; \
         {:.1} MiB of requests queued, {paused} reads paused, {MESSAGES} messages produced \
         and consumed meanwhile",
        request_max / MIB,
        request_max / MIB,
        queued_max as f64 / MIB as f64,
        hwm_kib / 1024,
        rss_kib / 1024,
        start_hwm_kib / 1024,
        bound_kib / 1024,
        queued / MIB as f64,
    );
    assert!(
        hwm_kib <= bound_kib,
        "peak RSS {hwm_kib} KiB over the bound {bound_kib} KiB"
    );
    assert!(
        queued >= (admitted * request_max) as f64,
        "the admitted frames hold their room: {queued}"
    );

    stop.store(true, Ordering::Relaxed);
    for t in stalled {
        t.join().expect("stalled sender");
    }
    trickler.join().expect("trickler");
    // The well-behaved clients go too: a live consumer always has a long-poll Fetch in
    // flight, whose bytes count until it is answered, so with it connected the budget is
    // empty only in the instants between two of its polls.
    drop((producer, consumer));
    // Their bytes come back once their connections are gone.
    let drain_started = std::time::Instant::now();
    wait_for("the request budget to empty", GUARD, &mut || {
        (metric(&b, "sluice_request_bytes_queued") == 0.0).then_some(())
    });
    println!(
        "figure: the request budget emptied {:.2} s after the clients closed",
        drain_started.elapsed().as_secs_f64()
    );
    let mut s = raw::connect(&b.addr);
    let r: ApiVersionsResponse = call(
        &mut s,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    );
    assert_eq!(r.error_code, 0);
}
