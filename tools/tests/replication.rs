//! Partition replication across real `sluice serve` processes (issue #8): three brokers on
//! 127.0.0.1 in racks r1..r3, topics with replication factor 3 and
//! `min.insync.replicas=2`, written by an rdkafka idempotent producer with acks=all while
//! brokers are killed, stopped, restarted or all crash at once. Each test records every
//! acknowledged (partition, offset, payload) from the delivery reports (payloads carry a
//! sequence number; partition = sequence mod partitions) and then reads every partition
//! from the beginning: every acknowledged message must be there at its offset, and each
//! partition's sequence numbers must only increase (in order, no duplicates).
//!
//! Waits are on observed state (Metadata from a named broker, delivery reports), bounded by
//! a hang guard only; the durations printed as `figure:` lines are for the report and are
//! never checked. The tests take turns (one cluster at a time), so they do not starve each
//! other's heartbeats on a small machine.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::acks::{parse_seq, payload, send_waiting, Ack, AckContext, Acks};
use common::cluster::{Cluster, ClusterSpec, Part};
use common::sluice;
use common::HANG_GUARD;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

/// Guard for a broker's SIGTERM exit (controlled shutdown waits, bounded, for the
/// controller to move its leaderships).
const STOP_GUARD: Duration = Duration::from_secs(90);
const SESSION_TIMEOUT_MS: u64 = 3_000;
/// `[cluster] replica_lag_time_max_ms`: short, so a stopped follower leaves the ISR soon.
const REPLICA_LAG_MS: u64 = 2_000;
/// Messages per second the background producer offers (all partitions together).
const RATE_PER_S: u64 = 2_000;
/// Payload bytes: a 12-digit sequence number, then filler.
const PAYLOAD_BYTES: usize = 64;
/// How long a message may wait for its acknowledgement, retries included (librdkafka's
/// `message.timeout.ms`): longer than any outage these tests cause.
const MESSAGE_TIMEOUT_MS: u64 = 120_000;

/// One cluster at a time (see the header).
static TURN: Mutex<()> = Mutex::new(());

fn take_turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn spec() -> ClusterSpec {
    ClusterSpec {
        session_timeout_ms: SESSION_TIMEOUT_MS,
        cluster_toml: format!("replica_lag_time_max_ms = {REPLICA_LAG_MS}"),
        ..ClusterSpec::default()
    }
}

fn start_cluster(name: &str) -> Cluster {
    Cluster::start(name, spec(), HANG_GUARD)
}

/// Creates `topic` (replication factor 3, `min.insync.replicas=2`, plus `configs`) and
/// waits until `asked` lists every partition with a leader and all three replicas in sync.
fn create_topic(
    c: &Cluster,
    asked: usize,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> BTreeMap<i32, Part> {
    let mut all = vec![("min.insync.replicas", "2")];
    all.extend_from_slice(configs);
    common::create_topic_at(&c.bootstrap(), topic, partitions, 3, &all);
    wait_in_sync(c, asked, topic, partitions as usize, 3)
}

/// Waits until broker `asked` reports every partition of `topic` led, with `isr` in sync.
fn wait_in_sync(
    c: &Cluster,
    asked: usize,
    topic: &str,
    partitions: usize,
    isr: usize,
) -> BTreeMap<i32, Part> {
    c.wait(
        &format!("{topic}: {partitions} partitions led with {isr} in sync (broker {asked})"),
        HANG_GUARD,
        || {
            let (_, parts) = c.metadata(asked, topic)?;
            let ok = parts.len() == partitions
                && parts.values().all(|p| p.leader >= 0 && p.isr.len() == isr);
            ok.then_some(parts)
        },
    )
}

/// The idempotent acks=all producer's settings.
fn idempotent_config(bootstrap: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string())
        .set("request.timeout.ms", "10000")
        .set("retry.backoff.ms", "50")
        .set("retry.backoff.max.ms", "500")
        .set("reconnect.backoff.max.ms", "500")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .set("linger.ms", "5");
    cfg
}

/// A background idempotent producer writing `RATE_PER_S` messages a second, round-robin
/// over the partitions, until stopped.
struct Load {
    acks: Arc<Acks>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(u64, rdkafka::error::KafkaResult<()>)>>,
}

impl Load {
    fn start(bootstrap: &str, topic: &str, partitions: i32) -> Load {
        let acks = Arc::new(Acks::default());
        let stop = Arc::new(AtomicBool::new(false));
        let producer: ThreadedProducer<AckContext> = idempotent_config(bootstrap)
            .create_with_context(AckContext(acks.clone()))
            .expect("producer");
        let topic = topic.to_string();
        let stopping = stop.clone();
        let sending = acks.clone();
        let thread = std::thread::spawn(move || {
            let acks = sending;
            let started = Instant::now();
            let mut seq = 0u64;
            while !stopping.load(Ordering::SeqCst) {
                let due = started.elapsed().as_millis() as u64 * RATE_PER_S / 1000;
                while seq < due && !stopping.load(Ordering::SeqCst) {
                    if let Err(e) = send_retrying(&producer, &topic, partitions, seq) {
                        // Nothing more can be sent (a fatal error); the test says why.
                        acks.note_error(format!("send seq {seq}: {e}"));
                        stopping.store(true, Ordering::SeqCst);
                        break;
                    }
                    seq += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            // Everything sent is acknowledged or failed before the producer goes.
            let flushed = producer.flush(Duration::from_millis(MESSAGE_TIMEOUT_MS + 10_000));
            (seq, flushed)
        });
        Load {
            acks,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until `n` more messages than `from` are acknowledged.
    fn wait_acked(&self, what: &str, from: usize, n: usize) {
        let deadline = Instant::now() + HANG_GUARD;
        while self.acks.count() < from + n {
            self.acks.assert_not_fatal();
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {} acknowledged, {} wanted; failed deliveries {:?}; latest client errors {:#?}",
                self.acks.count(),
                from + n,
                self.acks.errors.lock().unwrap(),
                self.acks.recent.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops sending, waits for every outstanding delivery report; the messages sent.
    fn finish(mut self) -> (u64, Arc<Acks>) {
        self.stop.store(true, Ordering::SeqCst);
        let (sent, flushed) = self
            .thread
            .take()
            .expect("running")
            .join()
            .expect("producer thread");
        self.acks.assert_not_fatal();
        assert!(flushed.is_ok(), "flush: {flushed:?}");
        (sent, self.acks.clone())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Sends message `seq` to its partition, waiting while librdkafka's queue is full.
fn send_retrying(
    producer: &ThreadedProducer<AckContext>,
    topic: &str,
    partitions: i32,
    seq: u64,
) -> Result<(), KafkaError> {
    let partition = (seq % partitions as u64) as i32;
    send_waiting(producer, topic, partition, &payload(seq, PAYLOAD_BYTES))
}

/// Every delivery succeeded (an outage shows as retries, not as failed messages).
fn assert_no_failures(acks: &Acks, sent: u64) {
    acks.assert_not_fatal();
    let failed = acks.failed.load(Ordering::SeqCst);
    let errors = acks.errors.lock().unwrap().clone();
    assert!(
        failed == 0 && errors.is_empty(),
        "{failed} of {sent} messages failed: {errors:#?}"
    );
    assert_eq!(acks.count() as u64, sent, "every sent message acknowledged");
}

/// Reads `topic` from the beginning through the cluster's leaders: (offset, sequence) per
/// partition, up to the larger of `ends[p]` and the high watermark when reading began.
fn read_all(
    bootstrap: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
) -> BTreeMap<i32, Vec<(i64, u64)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "replication-verify")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        // A lost prefix shows as missing acknowledged messages, not as a silent jump to
        // the end.
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let mut targets = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for (p, end) in ends {
        // The last refusal goes into the hang guard's message: a broker that keeps
        // answering ListOffsets with an error says which.
        let last_error = std::cell::RefCell::new(None);
        let what = || {
            format!(
                "{topic}-{p} watermarks (last error {:?})",
                last_error.borrow()
            )
        };
        let high = common::wait_for_named(what, HANG_GUARD, &mut || {
            consumer
                .fetch_watermarks(topic, *p, Duration::from_secs(5))
                .map_err(|e| *last_error.borrow_mut() = Some(e))
                .ok()
        })
        .1;
        targets.insert(*p, high.max(*end));
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut read: BTreeMap<i32, Vec<(i64, u64)>> = ends.keys().map(|p| (*p, Vec::new())).collect();
    let next =
        |read: &BTreeMap<i32, Vec<(i64, u64)>>, p: i32| read[&p].last().map_or(0, |(o, _)| o + 1);
    let deadline = Instant::now() + HANG_GUARD * 2;
    while targets.iter().any(|(p, t)| next(&read, *p) < *t) {
        if Instant::now() > deadline {
            let position = consumer.position().ok();
            let progress: Vec<String> = targets
                .iter()
                .map(|(p, t)| {
                    let watermarks = consumer.fetch_watermarks(topic, *p, Duration::from_secs(5));
                    let at = position.as_ref().and_then(|l| l.find_partition(topic, *p));
                    format!(
                        "{topic}-{p}: read to {} of {t} (position {:?}, watermarks now {watermarks:?})",
                        next(&read, *p),
                        at.map(|e| e.offset())
                    )
                })
                .collect();
            panic!("reading back timed out: {progress:?}");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let seq = m.payload().and_then(parse_seq).unwrap_or_else(|| {
                    panic!(
                        "{topic}-{} offset {}: not our payload",
                        m.partition(),
                        m.offset()
                    )
                });
                read.get_mut(&m.partition())
                    .expect("an assigned partition")
                    .push((m.offset(), seq));
            }
            Some(Err(e)) => eprintln!("read back: {e} (retried)"),
            None => {}
        }
    }
    read
}

/// The highest acknowledged offset + 1 of each partition.
fn acked_ends(acked: &[Ack], partitions: i32) -> BTreeMap<i32, i64> {
    let mut ends: BTreeMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    for a in acked {
        let e = ends.entry(a.partition).or_default();
        *e = (*e).max(a.offset + 1);
    }
    ends
}

/// The checks every test ends with: each partition's offsets and sequence numbers only
/// increase (in order, no duplicates), and every acknowledged message is at its offset.
fn check_read_back(topic: &str, acked: &[Ack], read: &BTreeMap<i32, Vec<(i64, u64)>>) {
    let mut at: BTreeMap<(i32, i64), u64> = BTreeMap::new();
    let mut seqs: BTreeMap<i32, std::collections::BTreeSet<u64>> = BTreeMap::new();
    for (p, msgs) in read {
        seqs.entry(*p)
            .or_default()
            .extend(msgs.iter().map(|(_, s)| *s));
        for w in msgs.windows(2) {
            assert!(
                w[0].0 < w[1].0 && w[0].1 < w[1].1,
                "{topic}-{p}: out of order or duplicated: (offset, seq) {:?} then {:?}",
                w[0],
                w[1]
            );
        }
        for (o, s) in msgs {
            at.insert((*p, *o), *s);
        }
    }
    let mut wrong = Vec::new();
    let mut offset_unknown = 0;
    for a in acked {
        if a.offset < 0 {
            // librdkafka's implicit acknowledgement: a request whose answer it never got
            // (its broker closed the connection while stopping) is acknowledged without an
            // offset once a later request of the same idempotent producer succeeds. It
            // must be in the partition, once (the order check above rules out a copy).
            offset_unknown += 1;
            if !seqs.get(&a.partition).is_some_and(|s| s.contains(&a.seq)) {
                wrong.push(format!(
                    "{topic}-{}: acked seq {} (offset unknown) not read",
                    a.partition, a.seq
                ));
            }
            continue;
        }
        let found = at.get(&(a.partition, a.offset));
        if found != Some(&a.seq) {
            wrong.push(format!(
                "{topic}-{} offset {}: acked seq {}, read {found:?}",
                a.partition, a.offset, a.seq
            ));
        }
    }
    let total: usize = read.values().map(Vec::len).sum();
    assert!(
        wrong.is_empty(),
        "{} of {} acknowledged messages not read back ({total} read), first: {:#?}",
        wrong.len(),
        acked.len(),
        &wrong[..wrong.len().min(10)]
    );
    eprintln!(
        "{topic}: {} acknowledged messages all read back in order ({total} read; {offset_unknown} acknowledged without an offset, found by sequence)",
        acked.len()
    );
}

/// Stops the load, checks no delivery failed, and reads everything back.
fn finish_and_verify(load: Load, c: &Cluster, topic: &str, partitions: i32) -> Vec<Ack> {
    let (sent, acks) = load.finish();
    assert_no_failures(&acks, sent);
    let acked = acks.snapshot();
    let read = read_all(&c.bootstrap(), topic, &acked_ends(&acked, partitions));
    check_read_back(topic, &acked, &read);
    acked
}

/// The longest pause between consecutive acknowledgements of `partition` (the figure of
/// an outage as clients see it), and when it began.
fn longest_ack_gap(acked: &[Ack], partition: i32) -> (Duration, Option<Instant>) {
    let mut times: Vec<Instant> = acked
        .iter()
        .filter(|a| a.partition == partition)
        .map(|a| a.at)
        .collect();
    times.sort();
    times
        .windows(2)
        .map(|w| (w[1] - w[0], Some(w[0])))
        .max_by_key(|(d, _)| *d)
        .unwrap_or((Duration::ZERO, None))
}

#[test]
fn kill_9_of_the_leader_under_load_loses_no_acknowledged_message() {
    let _turn = take_turn();
    const TOPIC: &str = "kill-leader";
    const PARTITIONS: i32 = 3;
    let mut c = start_cluster("kill-leader");
    let parts = create_topic(&c, 1, TOPIC, PARTITIONS, &[]);
    let load = Load::start(&c.bootstrap(), TOPIC, PARTITIONS);
    load.wait_acked("acks before the kill", 0, 2_000);

    let victim = parts[&0].leader as usize;
    let led: Vec<i32> = parts
        .iter()
        .filter(|(_, p)| p.leader == victim as i32)
        .map(|(i, _)| *i)
        .collect();
    let survivor = c.ids().into_iter().find(|i| *i != victim).unwrap();
    let killed_at = Instant::now();
    c.kill(victim);
    let after_kill = load.acks.count();
    let moved = c.wait("new leaders from the ISR", HANG_GUARD, || {
        let (_, now) = c.metadata(survivor, TOPIC)?;
        let done = led.iter().all(|i| {
            let p = &now[i];
            p.leader >= 0 && p.leader != victim as i32 && parts[i].isr.contains(&p.leader)
        });
        done.then_some(now)
    });
    eprintln!("{TOPIC}: broker {victim} killed; new leaders {moved:?}");
    // Production goes on, on the new leaders too.
    common::wait_for("acks on the new leaders", HANG_GUARD, &mut || {
        load.acks.assert_not_fatal();
        let acked = load.acks.snapshot();
        led.iter()
            .all(|p| {
                acked[after_kill..]
                    .iter()
                    .filter(|a| a.partition == *p && a.at > killed_at)
                    .count()
                    >= 200
            })
            .then_some(())
    });
    let acked = finish_and_verify(load, &c, TOPIC, PARTITIONS);
    for p in &led {
        let last_old = acked
            .iter()
            .filter(|a| a.partition == *p && a.at <= killed_at)
            .map(|a| a.at)
            .max();
        let first_new = acked
            .iter()
            .filter(|a| a.partition == *p && a.at > killed_at)
            .map(|a| a.at)
            .min();
        if let (Some(old), Some(new)) = (last_old, first_new) {
            eprintln!(
                "figure: failover {TOPIC}-{p}: last ack from the old leader (broker {victim}) to the first from the new one (broker {}): {} ms (session timeout {SESSION_TIMEOUT_MS} ms)",
                moved[p].leader,
                (new - old).as_millis()
            );
        }
    }
}

#[test]
fn a_stopped_follower_leaves_the_isr_and_rejoins_after_catching_up() {
    let _turn = take_turn();
    const TOPIC: &str = "stop-follower";
    // One partition, so the stopped broker only follows.
    const PARTITIONS: i32 = 1;
    let c = start_cluster("stop-follower");
    let parts = create_topic(&c, 1, TOPIC, PARTITIONS, &[]);
    let leader = parts[&0].leader as usize;
    // A follower that is not the active controller, if there is one (stopping the
    // controller would add a controller failover to the test).
    let controller = c.controller_leader(leader);
    let follower = parts[&0]
        .replicas
        .iter()
        .map(|r| *r as usize)
        .filter(|r| *r != leader)
        .min_by_key(|r| Some(*r) == controller)
        .unwrap();
    let load = Load::start(&c.bootstrap(), TOPIC, PARTITIONS);
    load.wait_acked("acks before the stop", 0, 1_000);

    let stopped_at = Instant::now();
    c.signal(follower, libc::SIGSTOP);
    let shrunk = c.wait("the ISR without the stopped follower", HANG_GUARD, || {
        let (_, now) = c.metadata(leader, TOPIC)?;
        let p = now[&0].clone();
        (!p.isr.contains(&(follower as i32)) && p.leader == leader as i32).then_some(p)
    });
    eprintln!(
        "figure: {TOPIC}: follower {follower} stopped; ISR {:?} after {} ms (replica lag limit {REPLICA_LAG_MS} ms, session timeout {SESSION_TIMEOUT_MS} ms)",
        shrunk.isr,
        stopped_at.elapsed().as_millis()
    );
    assert!(shrunk.isr.len() >= 2, "{shrunk:?}");
    // Writes go on with two in sync.
    load.wait_acked("acks with the follower stopped", load.acks.count(), 1_000);

    let resumed_at = Instant::now();
    c.signal(follower, libc::SIGCONT);
    let full = c.wait("the follower back in the ISR", HANG_GUARD, || {
        let (_, now) = c.metadata(leader, TOPIC)?;
        let p = now[&0].clone();
        (p.isr.len() == 3).then_some(p)
    });
    eprintln!(
        "figure: {TOPIC}: follower {follower} resumed; ISR {:?} again after {} ms",
        full.isr,
        resumed_at.elapsed().as_millis()
    );
    load.wait_acked("acks after the rejoin", load.acks.count(), 500);
    finish_and_verify(load, &c, TOPIC, PARTITIONS);
    // An operator sees the shrink in the leader's metrics (published every interval).
    c.wait(
        "the ISR shrink counted in the leader's metrics",
        HANG_GUARD,
        || {
            let metrics = c.node(leader).admin_get("/metrics").ok()?;
            (metric_sum(&metrics, "sluice_isr_shrinks_total") >= 1.0).then_some(())
        },
    );
}

/// The sum of every sample of `name` in a Prometheus text answer.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_rolling_restart_under_load_loses_no_acknowledged_message() {
    let _turn = take_turn();
    const TOPIC: &str = "rolling";
    const PARTITIONS: i32 = 3;
    let mut c = start_cluster("rolling");
    create_topic(&c, 1, TOPIC, PARTITIONS, &[]);
    let load = Load::start(&c.bootstrap(), TOPIC, PARTITIONS);
    load.wait_acked("acks before the restarts", 0, 1_000);
    for id in c.ids() {
        let other = c.ids().into_iter().find(|i| *i != id).unwrap();
        let t0 = Instant::now();
        let status = c.stop(id, STOP_GUARD);
        assert!(
            status.is_some_and(|s| s.success()),
            "broker {id} after SIGTERM: {status:?}"
        );
        let stopped_ms = t0.elapsed().as_millis();
        // Controlled shutdown took it out of every ISR, so a full ISR below means it
        // caught up again.
        c.wait("the stopped broker out of every ISR", HANG_GUARD, || {
            let (_, parts) = c.metadata(other, TOPIC)?;
            let gone = parts
                .values()
                .all(|p| p.leader != id as i32 && !p.isr.contains(&(id as i32)));
            gone.then_some(())
        });
        c.start_node(id);
        c.wait_all_active(HANG_GUARD);
        wait_in_sync(&c, other, TOPIC, PARTITIONS as usize, 3);
        eprintln!(
            "figure: {TOPIC}: broker {id} stopped (SIGTERM to exit) in {stopped_ms} ms, back with every ISR full after {} ms",
            t0.elapsed().as_millis()
        );
        load.wait_acked("acks after the restart", load.acks.count(), 500);
    }
    let acked = finish_and_verify(load, &c, TOPIC, PARTITIONS);
    for p in 0..PARTITIONS {
        eprintln!(
            "figure: {TOPIC}-{p}: longest pause between acknowledgements during the rolling restart {} ms",
            longest_ack_gap(&acked, p).0.as_millis()
        );
    }
}

#[test]
fn with_fsync_every_acknowledged_message_survives_all_brokers_killed_at_once() {
    let _turn = take_turn();
    const TOPIC: &str = "power-loss";
    const PARTITIONS: i32 = 3;
    let mut c = start_cluster("power-loss");
    create_topic(&c, 1, TOPIC, PARTITIONS, &[("flush.policy", "fsync")]);
    let load = Load::start(&c.bootstrap(), TOPIC, PARTITIONS);
    load.wait_acked("acks before the crash", 0, 2_000);
    // SIGKILL all three before reaping any, so none outlives the others by more than the
    // signals' delivery.
    for id in c.ids() {
        c.signal(id, libc::SIGKILL);
    }
    let crashed_at = Instant::now();
    for id in c.ids() {
        c.kill(id);
    }
    let before_crash = load.acks.count();
    eprintln!("{TOPIC}: all brokers killed with {before_crash} messages acknowledged");
    for id in c.ids() {
        c.start_node(id);
    }
    c.wait_all_active(HANG_GUARD);
    wait_in_sync(&c, 1, TOPIC, PARTITIONS as usize, 3);
    eprintln!(
        "figure: {TOPIC}: every partition led with 3 in sync {} ms after the crash",
        crashed_at.elapsed().as_millis()
    );
    load.wait_acked("acks after the restart", before_crash, 1_000);
    finish_and_verify(load, &c, TOPIC, PARTITIONS);
}

/// A plain producer (acks=1, not idempotent, no retries): what the leader alone accepted.
fn produce_acks_1(bootstrap: &str, topic: &str, seqs: std::ops::Range<u64>) -> Vec<Ack> {
    let config = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "1")
        .set("enable.idempotence", "false")
        .set("retries", "0")
        .set("linger.ms", "0")
        .clone();
    produce_to_partition_0(config, topic, seqs, HANG_GUARD)
}

/// Idempotent acks=all writes of `seqs` to partition 0; all must be acknowledged.
fn produce_acks_all(bootstrap: &str, topic: &str, seqs: std::ops::Range<u64>) -> Vec<Ack> {
    let flush = Duration::from_millis(MESSAGE_TIMEOUT_MS + 10_000);
    produce_to_partition_0(idempotent_config(bootstrap), topic, seqs, flush)
}

/// Sends `seqs` to partition 0 with a producer of `config`, waits up to `flush` for every
/// delivery report; all must succeed. The acknowledgements.
fn produce_to_partition_0(
    config: ClientConfig,
    topic: &str,
    seqs: std::ops::Range<u64>,
    flush: Duration,
) -> Vec<Ack> {
    let acks = Arc::new(Acks::default());
    let p: BaseProducer<AckContext> = config
        .create_with_context(AckContext(acks.clone()))
        .expect("producer");
    let n = seqs.end - seqs.start;
    for seq in seqs {
        p.send(
            BaseRecord::<(), [u8]>::to(topic)
                .partition(0)
                .payload(&payload(seq, PAYLOAD_BYTES)),
        )
        .map_err(|(e, _)| e)
        .expect("send");
        p.poll(Duration::ZERO);
    }
    p.flush(flush).expect("flush");
    assert_no_failures(&acks, n);
    acks.snapshot()
}

#[test]
fn a_diverged_old_leader_truncates_its_uncommitted_suffix_on_return() {
    let _turn = take_turn();
    const TOPIC: &str = "diverge";
    let mut c = start_cluster("diverge");
    let parts = create_topic(&c, 1, TOPIC, 1, &[]);
    let old = parts[&0].leader as usize;
    let followers: Vec<usize> = c.ids().into_iter().filter(|i| *i != old).collect();

    // Committed: on every replica.
    let committed = produce_acks_all(&c.bootstrap(), TOPIC, 0..500);

    // Uncommitted: the followers are stopped (briefly: less than the session timeout and
    // the replica lag limit), the leader alone takes acks=1 writes, then dies. Several
    // separate requests: a fetch a follower had parked on the leader may carry the first
    // of them to it, never the later ones.
    for f in &followers {
        c.signal(*f, libc::SIGSTOP);
    }
    let mut uncommitted = Vec::new();
    for round in 0..5u64 {
        let from = 1_000 + round * 20;
        uncommitted.extend(produce_acks_1(&c.addr(old), TOPIC, from..from + 20));
    }
    c.kill(old);
    for f in &followers {
        c.signal(*f, libc::SIGCONT);
    }
    let old_end = uncommitted.iter().map(|a| a.offset + 1).max().unwrap();
    let asked = followers[0];
    let new = c.wait("a new leader from the ISR", HANG_GUARD, || {
        let (_, now) = c.metadata(asked, TOPIC)?;
        let l = now[&0].leader;
        (l >= 0 && l != old as i32).then_some(l as usize)
    });
    eprintln!("{TOPIC}: old leader {old} (log end {old_end}) killed; new leader {new}");

    // Committed under the new leader: the same offsets the old leader's suffix holds.
    let later = produce_acks_all(&c.bootstrap(), TOPIC, 2_000..2_300);
    let mut acked = committed.clone();
    acked.extend(later.iter().copied());
    let ends = acked_ends(&acked, 1);
    let under_new = read_all(&c.bootstrap(), TOPIC, &ends);
    check_read_back(TOPIC, &acked, &under_new);
    let new_log: BTreeMap<i64, u64> = under_new[&0].iter().copied().collect();
    let diverged: Vec<&Ack> = uncommitted
        .iter()
        .filter(|a| new_log.get(&a.offset).is_some_and(|s| *s != a.seq))
        .collect();
    assert!(
        !diverged.is_empty(),
        "the old leader's acks=1 suffix {:?} does not conflict with the new leader's log: the test did not make the logs diverge",
        uncommitted.iter().map(|a| (a.offset, a.seq)).collect::<Vec<_>>()
    );

    // The old leader returns, truncates, catches up, and leads again.
    let returned_at = Instant::now();
    c.start_node(old);
    wait_in_sync(&c, new, TOPIC, 1, 3);
    eprintln!(
        "figure: {TOPIC}: old leader back in the ISR {} ms after its restart",
        returned_at.elapsed().as_millis()
    );
    let out = sluice(&["cluster", "elect-leaders", "--admin", &c.admin_addr(old)]);
    eprintln!("{out}");
    c.wait("the old leader leading again", HANG_GUARD, || {
        let (_, now) = c.metadata(old, TOPIC)?;
        (now[&0].leader == old as i32).then_some(())
    });
    let under_old = read_all(&c.addr(old), TOPIC, &ends);
    assert_eq!(
        under_old[&0], under_new[&0],
        "the returned leader's log differs from the one it missed"
    );
    for a in &diverged {
        assert!(
            !under_old[&0].iter().any(|(_, s)| *s == a.seq),
            "uncommitted seq {} (offset {}) survived",
            a.seq,
            a.offset
        );
    }
    eprintln!(
        "{TOPIC}: old leader truncated {} diverged messages and holds the new leader's log ({} messages)",
        diverged.len(),
        under_old[&0].len()
    );
}
