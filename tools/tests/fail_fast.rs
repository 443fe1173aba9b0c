//! A broker is never half alive: a panic on a shard ends the process (non-zero exit, one
//! ERROR line naming the thread and the panic) and a restart on the same data dir serves
//! every acknowledged message; a shard whose reactor is blocked makes `/health` unhealthy
//! until it runs again; fetches that span shards and are dropped mid-flight leave every
//! shard alive. Panics and stalls are injected through the failpoints that
//! `SLUICE_FAILPOINTS=1` enables on the admin endpoint.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::HANG_GUARD;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Exit status of a broker after a panic (`sluice_net::PANIC_EXIT_CODE`).
const PANIC_EXIT_CODE: i32 = 70;

/// A `sluice serve` process whose stderr is kept (line by line) for the checks.
struct Proc {
    child: Child,
    addr: String,
    admin: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn launch(data_dir: &Path, config: Option<&Path>) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--cores",
            "0-1",
            "--no-pin",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("SLUICE_FAILPOINTS", "1")
        .env(
            "RUST_LOG",
            std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let mut child = cmd.spawn().expect("spawn sluice");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let pipe = child.stderr.take().expect("stderr");
            let lines = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    eprintln!("[sluice] {line}");
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(HANG_GUARD) {
            Ok(l) if !l.is_empty() => l,
            other => {
                let _ = child.kill();
                panic!("sluice did not start: {other:?}");
            }
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        Proc {
            child,
            addr: words[3].to_string(),
            admin: words[5].trim_end_matches(',').to_string(),
            stderr,
        }
    }

    /// Waits (bounded) for the process to exit; its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("the broker did not exit within {HANG_GUARD:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: plain kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + HANG_GUARD;
            while !matches!(self.child.try_wait(), Ok(Some(_))) {
                if Instant::now() >= deadline {
                    let _ = self.child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// One admin HTTP request; (status code, body).
fn admin_call(addr: &str, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    common::admin_call(addr, method, path, HANG_GUARD)
}

fn create_topic(addr: &str, name: &str, partitions: i32) {
    common::create_topic_at(addr, name, partitions, 1, &[]);
}

/// Messages by (partition, offset): their payloads.
type Stored = BTreeMap<(i32, i64), Vec<u8>>;

/// Acknowledged messages.
#[derive(Clone, Default)]
struct Acked(Arc<Mutex<Stored>>);

impl ClientContext for Acked {}
impl ProducerContext for Acked {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if let Ok(m) = r {
            let payload = m.payload().unwrap_or_default().to_vec();
            self.0
                .lock()
                .unwrap()
                .insert((m.partition(), m.offset()), payload);
        }
    }
}

/// Reads every partition from the start up to its end; (partition, offset) → payload.
fn read_everything(addr: &str, topic: &str, partitions: i32) -> Stored {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "fail-fast-check")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = BTreeMap::new();
    let mut at_end = std::collections::HashSet::new();
    let started = Instant::now();
    while at_end.len() < partitions as usize {
        assert!(started.elapsed() < HANG_GUARD, "reading back took too long");
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.insert(
                    (m.partition(), m.offset()),
                    m.payload().unwrap_or_default().to_vec(),
                );
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    out
}

/// Waits until a metadata request through a new client succeeds: the broker serves.
fn wait_serving(addr: &str) {
    let started = Instant::now();
    loop {
        let p: Result<BaseProducer, _> =
            ClientConfig::new().set("bootstrap.servers", addr).create();
        if let Ok(p) = p {
            if p.client()
                .fetch_metadata(None, Duration::from_millis(500))
                .is_ok()
            {
                return;
            }
        }
        assert!(
            started.elapsed() < HANG_GUARD,
            "the restarted broker never served"
        );
    }
}

#[test]
fn a_shard_panic_under_load_ends_the_process_and_a_restart_keeps_every_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Proc::launch(dir.path(), None);
    let topic = "crash-load";
    create_topic(&broker.addr, topic, 4);
    let acked = Acked::default();
    let producer: BaseProducer<Acked> = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "5000")
        .set("retries", "0")
        .create_with_context(acked.clone())
        .expect("producer");
    // Load: messages to every partition (both shards) until the broker is gone.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let payload = format!("message-{i}");
                let key = i.to_string();
                let record = BaseRecord::to(topic)
                    .key(&key)
                    .payload(&payload)
                    .partition((i % 4) as i32);
                if producer.send(record).is_ok() {
                    i += 1;
                }
                producer.poll(Duration::ZERO);
                if i % 100 == 0 {
                    producer.poll(Duration::from_millis(1));
                }
            }
            let _ = producer.flush(Duration::from_secs(10));
            i
        })
    };
    let started = Instant::now();
    while acked.0.lock().unwrap().len() < 2000 {
        assert!(started.elapsed() < HANG_GUARD, "the load never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (code, body) = admin_call(&broker.admin, "POST", "/failpoint/panic?shard=1").unwrap();
    let injected = Instant::now();
    assert_eq!(code, 200, "failpoint refused: {body}");
    let exit = broker.wait_exit();
    let exited = Instant::now();
    // Restart at once, as the service manager would; the load (still aimed at the dead
    // broker's port) stops meanwhile.
    let restarted = Proc::launch(dir.path(), None);
    let listening = Instant::now();
    wait_serving(&restarted.addr);
    let serving = Instant::now();
    stop.store(true, Ordering::SeqCst);
    let sent = load.join().unwrap();
    assert_eq!(
        exit,
        Some(PANIC_EXIT_CODE),
        "exit status after a shard panic"
    );
    let errors: Vec<String> = broker
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("ERROR"))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one ERROR line: {errors:#?}");
    assert!(
        errors[0].contains("thread=\"shard1")
            && errors[0].contains("failpoint: injected panic on shard 1"),
        "the ERROR line names the thread and the panic: {}",
        errors[0]
    );
    // Everything acknowledged is there after the restart on the same data dir.
    let acked = acked.0.lock().unwrap().clone();
    eprintln!(
        "injected panic -> exit {} ms, exit -> listening {} ms, listening -> serving {} ms: panic -> serving again {} ms ({} sent, {} acknowledged)",
        exited.duration_since(injected).as_millis(),
        listening.duration_since(exited).as_millis(),
        serving.duration_since(listening).as_millis(),
        serving.duration_since(injected).as_millis(),
        sent,
        acked.len()
    );
    let stored = read_everything(&restarted.addr, topic, 4);
    for (at, payload) in &acked {
        assert_eq!(
            stored.get(at),
            Some(payload),
            "acknowledged message at partition {} offset {} after the restart",
            at.0,
            at.1
        );
    }
}

#[test]
fn a_blocked_shard_makes_health_unhealthy_until_it_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, "[shard]\nstall_warn_ms = 500\n").unwrap();
    let data = dir.path().join("data");
    let broker = Proc::launch(&data, Some(&config));
    let (code, _) = admin_call(&broker.admin, "GET", "/health").unwrap();
    assert_eq!(code, 200, "healthy at start");
    let (code, body) =
        admin_call(&broker.admin, "POST", "/failpoint/stall?shard=0&ms=3000").unwrap();
    assert_eq!(code, 200, "{body}");
    // Unhealthy while the shard's thread is blocked...
    let started = Instant::now();
    let stuck_body = loop {
        let (code, body) = admin_call(&broker.admin, "GET", "/health").unwrap();
        if code == 503 {
            break body;
        }
        assert!(
            started.elapsed() < HANG_GUARD,
            "/health never reported the stall"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(stuck_body.contains("shard 0 stalled"), "{stuck_body}");
    // ...and healthy again once it runs.
    loop {
        let (code, _) = admin_call(&broker.admin, "GET", "/health").unwrap();
        if code == 200 {
            break;
        }
        assert!(started.elapsed() < HANG_GUARD, "/health never recovered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, metrics) = admin_call(&broker.admin, "GET", "/metrics").unwrap();
    let stalls: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_shard_stalls_total{shard=\"0\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no stall counter for shard 0 in /metrics:\n{metrics}"));
    assert!(stalls >= 1, "the stall is counted");
    let warned = broker.stderr_lines().iter().any(|l| {
        l.contains("WARN") && l.contains("shard reactor stalled") && l.contains("shard=0")
    });
    assert!(
        warned,
        "a WARN names the stalled shard: {:#?}",
        broker.stderr_lines()
    );
}

/// A Fetch for every partition of `topic` (both shards own some), long polling.
fn fetch_frame(topic: &str, partitions: i32, offset: i64, wait_ms: i32, min_bytes: i32) -> Vec<u8> {
    let req = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                (0..partitions)
                    .map(|p| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            )]);
    common::raw::frame(ApiKey::Fetch, 11, 1, &req)
}

#[test]
fn fetches_across_shards_dropped_mid_flight_leave_every_shard_alive() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Proc::launch(dir.path(), None);
    let topic = "dropped-fetch";
    create_topic(&broker.addr, topic, 4);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("producer");
    for i in 0..400 {
        let payload = vec![b'x'; 2000];
        let key = i.to_string();
        producer
            .send(
                BaseRecord::to(topic)
                    .key(&key)
                    .payload(&payload)
                    .partition(i % 4),
            )
            .expect("queue");
    }
    producer.flush(HANG_GUARD).expect("flush");
    // Connections that ask every shard (long polls past the end, reads of stored data)
    // and go away while the other shard is still answering. The remote answer then
    // arrives for a waiter that is gone.
    for round in 0..300 {
        let mut s = common::raw::connect(&broker.addr);
        let (offset, wait, min) = match round % 3 {
            0 => (1_000_000, 500, 1 << 20),
            1 => (0, 0, 1),
            _ => (100, 200, 1 << 30),
        };
        s.write_all(&fetch_frame(topic, 4, offset, wait, min))
            .unwrap();
        if round % 2 == 0 {
            // Half of them wait for the first bytes of an answer before leaving.
            let mut b = [0u8; 1];
            let _ = s.set_read_timeout(Some(Duration::from_millis(1)));
            let _ = s.read(&mut b);
        }
        drop(s);
        if let Ok(Some(status)) = broker.child.try_wait() {
            panic!(
                "the broker exited ({status}) after round {round}: {:#?}",
                broker.stderr_lines()
            );
        }
    }
    // Long polls over every shard answered by an append on one of them: the waits on the
    // other shard are dropped while that shard still holds them and answers later (at its
    // wait's end), the path of the cross-shard read whose waiter was dropped.
    let mut ends = [100i64; 4];
    for round in 0..120usize {
        let p = round % 4;
        let mut s = common::raw::connect(&broker.addr);
        let req = FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(300)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str(topic)))
                .with_partitions(
                    (0..4)
                        .map(|q| {
                            FetchPartition::default()
                                .with_partition(q as i32)
                                .with_fetch_offset(ends[q])
                                .with_partition_max_bytes(1 << 20)
                        })
                        .collect(),
                )]);
        s.write_all(&common::raw::frame(ApiKey::Fetch, 11, 1, &req))
            .unwrap();
        producer
            .send(
                BaseRecord::to(topic)
                    .key("k")
                    .payload("woken")
                    .partition(p as i32),
            )
            .expect("queue");
        producer.flush(HANG_GUARD).expect("flush");
        ends[p] += 1;
        assert!(
            common::raw::read_frame(&mut s).is_some(),
            "round {round}: no fetch answer"
        );
    }
    // Every shard still answers: new connections are spread over both.
    for _ in 0..8 {
        let mut s = common::raw::connect(&broker.addr);
        let _: kafka_protocol::messages::ApiVersionsResponse = common::raw::call(
            &mut s,
            ApiKey::ApiVersions,
            0,
            &ApiVersionsRequest::default(),
        );
    }
    let stored = read_everything(&broker.addr, topic, 4);
    assert_eq!(stored.len(), 400 + 120);
    assert!(
        broker.child.try_wait().unwrap().is_none(),
        "the broker still runs"
    );
    let errors: Vec<String> = broker
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("ERROR") || l.contains("panicked"))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let _ = broker.wait_exit_on_stop();
}

impl Proc {
    /// SIGTERM and the exit code (bounded wait).
    fn wait_exit_on_stop(&mut self) -> Option<i32> {
        // SAFETY: plain kill(2) on our own, not yet reaped, child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait_exit()
    }
}
