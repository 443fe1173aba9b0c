//! Partition placement against real broker processes: the `hash` and `balanced` policies,
//! pins, the placement file across restarts and core list changes, `sluice cluster
//! placement`, and live moves (`sluice partition move`) under an idempotent rdkafka
//! producer and a consumer, checked for loss and order afterwards.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::HANG_GUARD;
use common::{sluice_output, Broker};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde_json::Value;
use sluice_net::placement::hash_owner;

/// A temporary directory under the target dir, removed when dropped.
fn test_dir(name: &str) -> tempfile::TempDir {
    common::tempdir(&format!("placement-{name}-"))
}

fn create_topic(b: &Broker, name: &str, partitions: i32) {
    common::create_topic_at(&b.addr, name, partitions, 1, &[]);
}

fn placement_json(b: &Broker) -> Value {
    let (ok, out, err) =
        sluice_output(&["cluster", "placement", "--admin", &b.admin_addr, "--json"]);
    assert!(ok, "cluster placement failed: {err}");
    serde_json::from_str(&out).expect("placement JSON")
}

/// (topic, partition) → CPU, for the topics named, once all their partitions are placed
/// (topics are placed at first use or within a second of creation).
fn cpus_of(b: &Broker, topics: &[(&str, i32)]) -> BTreeMap<(String, i64), u64> {
    let started = Instant::now();
    loop {
        let report = placement_json(b);
        let map: BTreeMap<(String, i64), u64> = report["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| topics.iter().any(|(t, _)| p["topic"] == *t))
            .map(|p| {
                (
                    (
                        p["topic"].as_str().unwrap().to_string(),
                        p["partition"].as_i64().unwrap(),
                    ),
                    p["cpu"].as_u64().unwrap(),
                )
            })
            .collect();
        if map.len() == topics.iter().map(|(_, n)| *n as usize).sum::<usize>() {
            return map;
        }
        assert!(
            started.elapsed() < HANG_GUARD,
            "partitions never placed: {report}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `sluice partition move TP --core CORE`: (exit success, stdout, stderr).
fn try_move(b: &Broker, tp: &str, core: usize) -> (bool, String, String) {
    let core = core.to_string();
    sluice_output(&[
        "partition",
        "move",
        tp,
        "--core",
        &core,
        "--admin",
        &b.admin_addr,
    ])
}

fn move_partition(b: &Broker, tp: &str, core: usize) -> String {
    let (ok, out, err) = try_move(b, tp, core);
    assert!(ok, "move {tp} to {core} failed: {err}");
    out
}

#[test]
fn hash_placement_is_the_stable_function_and_survives_restarts_and_core_changes() {
    let tmp = test_dir("restart");
    let dir = tmp.path();
    let mut b = Broker::start_on_cores(dir, "0-2", &[]);
    create_topic(&b, "spread", 12);
    let first = cpus_of(&b, &[("spread", 12)]);
    for ((_, p), cpu) in &first {
        // Shards run on CPUs 0, 1, 2: the shard index is the CPU here.
        assert_eq!(
            *cpu as usize,
            hash_owner("spread", *p as i32, 3),
            "partition {p}"
        );
    }
    // A move is remembered like any placement.
    let to = (first[&("spread".to_string(), 0)] as usize + 1) % 3;
    let said = move_partition(&b, "spread/0", to);
    assert!(said.contains("moved spread/0"), "{said}");
    let placed = cpus_of(&b, &[("spread", 12)]);
    assert_eq!(placed[&("spread".to_string(), 0)], to as u64);
    assert!(b.stop().success());

    // Same cores: the same map.
    let mut b = Broker::start_on_cores(dir, "0-2", &[]);
    assert_eq!(cpus_of(&b, &[("spread", 12)]), placed);
    assert!(b.stop().success());
    // A superset, in another order: every partition stays on its CPU.
    let mut b = Broker::start_on_cores(dir, "3,2,1,0", &[]);
    assert_eq!(cpus_of(&b, &[("spread", 12)]), placed);
    assert!(b.stop().success());
    // The same count on other CPUs: by position (the file now lists 3,2,1,0).
    let mut b = Broker::start_on_cores(dir, "7,6,5,4", &[]);
    let shifted: BTreeMap<_, _> = placed.iter().map(|(k, cpu)| (k.clone(), cpu + 4)).collect();
    assert_eq!(cpus_of(&b, &[("spread", 12)]), shifted);
    assert!(b.stop().success());

    // Fewer cores, some gone: start-up stops and says what to do.
    let (ok, _, err) = sluice_output(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--cores",
        "4-5",
        "--no-pin",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(!ok, "start-up with CPUs gone must fail");
    assert!(err.contains("placement.cores"), "{err}");
    assert!(
        err.contains("on CPU 6") || err.contains("on CPU 7"),
        "{err}"
    );
    assert!(err.contains("sluice partition move"), "{err}");
}

#[test]
fn balanced_policy_and_pins() {
    let tmp = test_dir("balanced");
    let dir = tmp.path();
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        "[placement]\npartition_policy = \"balanced\"\n\
         [[placement.pins]]\ntopic = \"pinned\"\npartitions = \"0-2\"\ncore = 1\n",
    )
    .unwrap();
    let data = dir.join("data");
    let b = Broker::start_on_cores(&data, "0-3", &["--config", config.to_str().unwrap()]);
    create_topic(&b, "even", 8);
    create_topic(&b, "pinned", 4);
    let map = cpus_of(&b, &[("even", 8), ("pinned", 4)]);
    for p in 0..3 {
        assert_eq!(map[&("pinned".to_string(), p)], 1, "pinned/{p}");
    }
    let report = placement_json(&b);
    assert_eq!(report["policy"], "balanced");
    // The unpinned partitions (the coordinator's included) spread evenly: no core holds
    // more than one above another.
    let mut per_core = BTreeMap::new();
    for p in report["partitions"].as_array().unwrap() {
        if p["topic"] != "pinned" {
            *per_core.entry(p["cpu"].as_u64().unwrap()).or_insert(0u64) += 1;
        }
    }
    assert_eq!(per_core.len(), 4, "{per_core:?}");
    let (lo, hi) = (
        per_core.values().min().unwrap(),
        per_core.values().max().unwrap(),
    );
    assert!(hi - lo <= 1, "uneven: {per_core:?}");
    // A pinned partition does not move live.
    let (ok, _, err) = try_move(&b, "pinned/0", 2);
    assert!(!ok && err.contains("pinned"), "{err}");
    // Bad moves are refused with the reason.
    let (ok, _, err) = try_move(&b, "even/0", 9);
    assert!(!ok && err.contains("CPU 9 runs no shard"), "{err}");
    let (ok, _, err) = try_move(&b, "even/8", 0);
    assert!(!ok && err.contains("404"), "{err}");
    // A pin to a CPU that runs no shard stops start-up, naming the key.
    drop(b);
    let (ok, _, err) = sluice_output(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--cores",
        "0",
        "--no-pin",
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(!ok, "a pin to a missing CPU must stop start-up");
    assert!(
        err.contains("placement.pins[0].core: CPU 1 runs no shard"),
        "{err}"
    );
}

/// Delivery reports: how many succeeded, and the first failure.
#[derive(Clone, Default)]
struct Deliveries {
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Option<String>>>,
}

impl ClientContext for Deliveries {}
impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::SeqCst);
            }
            Err((e, _)) => {
                self.failed.lock().unwrap().get_or_insert(e.to_string());
            }
        }
    }
}

/// Reads partition `p` of `topic` from the start until `count` messages arrived (or
/// `stop` is set); returns the values as numbers.
fn read_all(addr: &str, topic: &str, p: i32, count: usize, stop: &AtomicBool) -> Vec<u64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "placement-tests-unused")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "200")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::with_capacity(count);
    let started = Instant::now();
    while out.len() < count && !stop.load(Ordering::SeqCst) {
        assert!(
            started.elapsed() < HANG_GUARD,
            "read {} of {count}",
            out.len()
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let v = std::str::from_utf8(m.payload().unwrap_or_default())
                    .unwrap()
                    .parse()
                    .unwrap();
                out.push(v);
            }
            // Retriable errors during a move are the client's to handle; a consumer
            // never sees one it must act on.
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    out
}

#[test]
fn a_live_move_under_an_idempotent_producer_loses_and_reorders_nothing() {
    const MESSAGES: usize = 30_000;
    const MOVES: usize = 6;
    let tmp = test_dir("live-move");
    let dir = tmp.path();
    let b = Broker::start_on_cores(dir, "0-1", &[]);
    create_topic(&b, "live", 2);
    let start_cpu = cpus_of(&b, &[("live", 2)])[&("live".to_string(), 0)] as usize;

    let deliveries = Deliveries::default();
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("batch.num.messages", "200")
        .set("message.timeout.ms", "60000")
        .create_with_context(deliveries.clone())
        .expect("producer");
    // A consumer reading while the partition moves (its fetches and long polls cross the
    // moves), and one reading everything afterwards.
    let stop = Arc::new(AtomicBool::new(false));
    let live_reader = {
        let (addr, stop) = (b.addr.clone(), stop.clone());
        std::thread::spawn(move || read_all(&addr, "live", 0, MESSAGES, &stop))
    };
    let producing = {
        let deliveries = deliveries.clone();
        std::thread::spawn(move || {
            for i in 0..MESSAGES {
                let value = i.to_string();
                let mut record = BaseRecord::to("live").partition(0).payload(&value).key("k");
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((_, r)) => {
                            record = r;
                            producer.poll(Duration::from_millis(10));
                        }
                    }
                }
                producer.poll(Duration::ZERO);
            }
            producer.flush(HANG_GUARD).expect("flush");
            deliveries
        })
    };
    // Move back and forth while messages flow: each move once more were acknowledged.
    let mut cpu = start_cpu;
    let started = Instant::now();
    for m in 0..MOVES {
        let target = MESSAGES * (m + 1) / (MOVES + 2);
        while deliveries.ok.load(Ordering::SeqCst) < target {
            assert!(
                started.elapsed() < HANG_GUARD,
                "producer stalled before move {m}"
            );
            assert!(deliveries.failed.lock().unwrap().is_none());
            std::thread::sleep(Duration::from_millis(5));
        }
        cpu = 1 - cpu;
        let said = move_partition(&b, "live/0", cpu);
        assert!(said.contains("moved live/0"), "{said}");
    }
    let deliveries = producing.join().expect("producer thread");
    assert_eq!(*deliveries.failed.lock().unwrap(), None);
    assert_eq!(deliveries.ok.load(Ordering::SeqCst), MESSAGES);
    let expected: Vec<u64> = (0..MESSAGES as u64).collect();
    let live = live_reader.join().expect("live reader");
    assert!(
        live == expected,
        "the live reader saw loss, duplicates or disorder"
    );
    let after = read_all(&b.addr, "live", 0, MESSAGES, &AtomicBool::new(false));
    assert!(
        after == expected,
        "the log holds loss, duplicates or disorder"
    );
    stop.store(true, Ordering::SeqCst);
    // The report shows the partition where the last move put it, with its traffic.
    let report = placement_json(&b);
    let p0 = report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["topic"] == "live" && p["partition"] == 0)
        .cloned()
        .unwrap();
    assert_eq!(p0["cpu"].as_u64(), Some(cpu as u64));
    let (ok, text, _) = sluice_output(&["cluster", "placement", "--admin", &b.admin_addr]);
    assert!(ok && text.contains("live/0"), "{text}");
    // Each shard publishes its partitions' counters every second.
    let started = Instant::now();
    let series = "sluice_partition_bytes_in_total{topic=\"live\",partition=\"0\"";
    while !sluice_metrics(&b).contains(series) {
        assert!(started.elapsed() < HANG_GUARD, "no {series} in /metrics");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Produce and fetch ran in their own task queues (each shard publishes its counters
    // every second, on its own schedule: wait for them).
    let runs = |metrics: &str, queue: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("sluice_shard_task_queue_runs_total")
                    && l.contains(&format!("queue=\"{queue}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let started = Instant::now();
    loop {
        let metrics = sluice_metrics(&b);
        if ["produce", "fetch"].iter().all(|q| runs(&metrics, q) > 0) {
            break;
        }
        assert!(
            started.elapsed() < HANG_GUARD,
            "the produce or fetch queue never ran: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // They are counters: with the traffic over, later publications never show less.
    let seen = runs(&sluice_metrics(&b), "produce");
    std::thread::sleep(Duration::from_millis(2500));
    let later = sluice_metrics(&b);
    assert!(
        runs(&later, "produce") >= seen,
        "the produce queue's runs went back from {seen}: {later}"
    );
}

#[test]
fn a_long_poll_on_a_moving_partition_wakes_and_goes_to_the_new_core() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let tmp = test_dir("long-poll");
    let dir = tmp.path();
    let config = dir.join("sluice.toml");
    std::fs::write(&config, "[network]\nfetch_wait_ms_max = 600000\n").unwrap();
    let b = Broker::start_on_cores(
        &dir.join("data"),
        "0-1",
        &["--config", config.to_str().unwrap()],
    );
    create_topic(&b, "lp", 1);
    let mut cpu = cpus_of(&b, &[("lp", 1)])[&("lp".to_string(), 0)] as usize;
    // A fetch of an empty partition that waits up to ten minutes for a message.
    let addr = b.addr.clone();
    let fetch = std::thread::spawn(move || {
        let mut s = common::raw::connect(&addr);
        s.set_read_timeout(Some(HANG_GUARD)).unwrap();
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(600_000)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("lp")))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]);
        let r: FetchResponse = common::raw::call(&mut s, ApiKey::Fetch, 11, &req);
        let p = &r.responses[0].partitions[0];
        (p.error_code, p.records.as_ref().map_or(0, |r| r.len()))
    });
    // The partition moves while the fetch waits on its old core; the message produced
    // after the move lands on the new core, and the fetch must see it there.
    cpu = 1 - cpu;
    move_partition(&b, "lp/0", cpu);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .create()
        .expect("producer");
    producer
        .send(
            BaseRecord::<str, str>::to("lp")
                .partition(0)
                .payload("after the move"),
        )
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(HANG_GUARD).expect("flush");
    let (error, bytes) = fetch.join().expect("the long poll answered");
    assert_eq!(error, 0);
    assert!(bytes > 0, "the long poll answered without the message");
}

fn sluice_metrics(b: &Broker) -> String {
    b.admin_get("/metrics").expect("/metrics")
}
