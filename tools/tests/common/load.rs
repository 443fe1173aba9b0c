//! A background idempotent acks=all producer whose payloads carry sequence numbers
//! (`Load`), and reading a topic back to check that every acknowledged message is there at
//! its offset, in order and once (`read_all`, `check_read_back`): the checks of the tests
//! that lose brokers (replication) or move partitions (reassignment) under load.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::acks::{parse_seq, payload, Ack, AckContext, Acks};
use super::cluster::Cluster;
use super::HANG_GUARD;

/// Messages per second the background producer offers (all partitions together).
pub const RATE_PER_S: u64 = 2_000;
/// Payload bytes: a 12-digit sequence number, then filler.
pub const PAYLOAD_BYTES: usize = 64;
/// How long a message may wait for its acknowledgement, retries included (librdkafka's
/// `message.timeout.ms`): longer than any outage these tests cause.
pub const MESSAGE_TIMEOUT_MS: u64 = 120_000;

/// The idempotent acks=all producer's settings.
pub fn idempotent_config(bootstrap: &str) -> ClientConfig {
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
pub struct Load {
    pub acks: Arc<Acks>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(u64, rdkafka::error::KafkaResult<()>)>>,
}

impl Load {
    pub fn start(bootstrap: &str, topic: &str, partitions: i32) -> Load {
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
    pub fn wait_acked(&self, what: &str, from: usize, n: usize) {
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
    pub fn finish(mut self) -> (u64, Arc<Acks>) {
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

/// Sends message `seq` (round-robin over the partitions), waiting while librdkafka's
/// queue is full.
pub fn send_retrying(
    producer: &ThreadedProducer<AckContext>,
    topic: &str,
    partitions: i32,
    seq: u64,
) -> Result<(), KafkaError> {
    let partition = (seq % partitions as u64) as i32;
    super::acks::send_waiting(producer, topic, partition, &payload(seq, PAYLOAD_BYTES))
}

/// Every delivery succeeded (an outage shows as retries, not as failed messages).
pub fn assert_no_failures(acks: &Acks, sent: u64) {
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
pub fn read_all(
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
        let high = super::wait_for_named(what, HANG_GUARD, &mut || {
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
pub fn acked_ends(acked: &[Ack], partitions: i32) -> BTreeMap<i32, i64> {
    let mut ends: BTreeMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    for a in acked {
        let e = ends.entry(a.partition).or_default();
        *e = (*e).max(a.offset + 1);
    }
    ends
}

/// The checks every test ends with: each partition's offsets and sequence numbers only
/// increase (in order, no duplicates), and every acknowledged message is at its offset.
pub fn check_read_back(topic: &str, acked: &[Ack], read: &BTreeMap<i32, Vec<(i64, u64)>>) {
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
pub fn finish_and_verify(load: Load, c: &Cluster, topic: &str, partitions: i32) -> Vec<Ack> {
    let (sent, acks) = load.finish();
    assert_no_failures(&acks, sent);
    let acked = acks.snapshot();
    let read = read_all(&c.bootstrap(), topic, &acked_ends(&acked, partitions));
    check_read_back(topic, &acked, &read);
    acked
}
