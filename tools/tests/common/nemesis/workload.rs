//! The workload, every operation recorded in a [`History`]: idempotent acks=all producers
//! (librdkafka) writing numbered messages round-robin over a topic's partitions at a fixed
//! rate, and the members of one consumer group polling and committing synchronously.
//! After the run: the final read-back of every partition and the group's committed
//! offsets.
//!
//! A producer whose client fails fatally is recorded (an anomaly) and replaced by a new
//! client with a new producer number, so ids stay unique and each client's ids increase.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::history::{Failure, History, Op, ID_PRODUCER_STRIDE};
use crate::common::acks::{parse_seq, payload, send_waiting};
use crate::common::{wait_for_named, HANG_GUARD};

/// Payload bytes: the 12-digit id, then filler.
const PAYLOAD_BYTES: usize = 48;

#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub topic: String,
    pub partitions: i32,
    pub producers: usize,
    /// Messages per second each producer offers.
    pub rate_per_s: u64,
    pub group: String,
    pub readers: usize,
    /// How often a reader commits what it polled.
    pub commit_interval: Duration,
    /// librdkafka's `message.timeout.ms`: longer than any fault of the schedule, so a
    /// message is acknowledged unless something is wrong.
    pub message_timeout_ms: u64,
}

/// The running workload.
pub struct Workload {
    spec: WorkloadSpec,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    /// Acknowledgements so far (for waiting on progress).
    acked: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Workload {
    pub fn start(bootstrap: &str, spec: WorkloadSpec, history: Arc<History>) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let instances = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for _ in 0..spec.producers {
            let w = ProducerLoop {
                bootstrap: bootstrap.to_string(),
                spec: spec.clone(),
                history: history.clone(),
                stop: stop.clone(),
                acked: acked.clone(),
                instances: instances.clone(),
            };
            threads.push(std::thread::spawn(move || w.run()));
        }
        for reader in 0..spec.readers {
            let (b, s, h, st) = (
                bootstrap.to_string(),
                spec.clone(),
                history.clone(),
                stop.clone(),
            );
            threads.push(std::thread::spawn(move || {
                read_loop(&b, &s, reader, &h, &st)
            }));
        }
        Workload {
            spec,
            history,
            stop,
            acked,
            threads,
        }
    }

    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits until `n` more messages than now are acknowledged (the cluster serves
    /// writes), at most `guard`; says what it waited for if it fires.
    pub fn wait_progress(&self, what: &str, n: u64, guard: Duration) {
        let from = self.acked();
        wait_for_named(
            || {
                format!(
                    "{what}: {n} acknowledgements after {from} (now {})",
                    self.acked()
                )
            },
            guard,
            &mut || (self.acked() >= from + n).then_some(()),
        );
    }

    /// Stops every producer (each flushes: every message ends acknowledged or failed) and
    /// reader (a last commit, then it leaves the group).
    pub fn stop(self) -> WorkloadSpec {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("workload thread");
        }
        let _ = &self.history;
        self.spec
    }
}

struct ProducerLoop {
    bootstrap: String,
    spec: WorkloadSpec,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    instances: Arc<AtomicU64>,
}

impl ProducerLoop {
    /// One client after another (a new one after a fatal error) until stopped.
    fn run(self) {
        while !self.stop.load(Ordering::SeqCst) {
            let instance = self.instances.fetch_add(1, Ordering::SeqCst);
            if let Some(error) = self.run_client(instance) {
                self.history.record(Op::ProducerFatal {
                    producer: instance,
                    error,
                });
            }
        }
    }

    /// Sends at the spec's rate with one client until stopped or it fails fatally (the
    /// error then), and flushes.
    fn run_client(&self, instance: u64) -> Option<String> {
        let ctx = HistoryContext {
            history: self.history.clone(),
            acked: self.acked.clone(),
            fatal: Mutex::new(None),
            logged: AtomicU64::new(0),
            instance,
        };
        let producer: ThreadedProducer<HistoryContext> =
            producer_config(&self.bootstrap, &self.spec)
                .create_with_context(ctx)
                .expect("producer");
        let started = Instant::now();
        let mut n = 0u64;
        let fatal = || producer.context().fatal.lock().unwrap().clone();
        'send: while !self.stop.load(Ordering::SeqCst) && fatal().is_none() {
            let due = started.elapsed().as_millis() as u64 * self.spec.rate_per_s / 1000;
            while n < due.min(ID_PRODUCER_STRIDE - 1) {
                let id = instance * ID_PRODUCER_STRIDE + n;
                let partition = (n % self.spec.partitions as u64) as i32;
                self.history.record(Op::Send { id, partition });
                let value = payload(id, PAYLOAD_BYTES);
                if let Err(e) = send_waiting(&producer, &self.spec.topic, partition, &value) {
                    let failure = Failure::Indeterminate(format!("send: {e}"));
                    self.history.record(Op::Fail {
                        id,
                        partition,
                        failure,
                    });
                    break 'send;
                }
                n += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let flush = Duration::from_millis(self.spec.message_timeout_ms + 10_000);
        let _ = producer.flush(flush);
        fatal()
    }
}

fn producer_config(bootstrap: &str, spec: &WorkloadSpec) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", spec.message_timeout_ms.to_string())
        .set("request.timeout.ms", "5000")
        .set("retry.backoff.ms", "50")
        .set("retry.backoff.max.ms", "500")
        .set("reconnect.backoff.max.ms", "500")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .set("linger.ms", "5")
        // Idempotence events (epoch bumps, drains) go into the history.
        .set("debug", "eos")
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    cfg
}

/// Records each delivery report.
struct HistoryContext {
    history: Arc<History>,
    acked: Arc<AtomicU64>,
    fatal: Mutex<Option<String>>,
    logged: AtomicU64,
    /// The producer number of this client (its ids' prefix).
    instance: u64,
}

/// Idempotence log lines kept per producer client.
const CLIENT_LOG_LINES_MAX: u64 = 2_000;

impl ClientContext for HistoryContext {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, fac: &str, line: &str) {
        // Only what changes the producer's identity or resends messages.
        let wanted = [
            "DRAIN",
            "IDEMPSTATE",
            "PID",
            "BUMP",
            "OUTOFORDER",
            "UNKPID",
            "ERRSEQ",
        ];
        // Epoch bumps are rare and the checker needs every one: never capped.
        let bump = line.contains("bumped epoch");
        if bump
            || (wanted.iter().any(|w| fac.contains(w))
                && self.logged.fetch_add(1, Ordering::Relaxed) < CLIENT_LOG_LINES_MAX)
        {
            self.history.record(Op::ClientLog {
                producer: self.instance,
                line: format!("{fac}: {line}"),
            });
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            let mut fatal = self.fatal.lock().unwrap();
            fatal.get_or_insert_with(|| format!("{error}: {reason}"));
        }
    }
}

impl ProducerContext for HistoryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let (m, error) = match result {
            Ok(m) => (m, None),
            Err((e, m)) => (m, Some(e)),
        };
        let Some(id) = m.payload().and_then(parse_seq) else {
            return;
        };
        let partition = m.partition();
        match error {
            None => {
                self.acked.fetch_add(1, Ordering::SeqCst);
                let offset = m.offset();
                self.history.record(Op::Ack {
                    id,
                    partition,
                    offset,
                });
            }
            Some(e) => {
                let failure = classify(e);
                self.history.record(Op::Fail {
                    id,
                    partition,
                    failure,
                });
            }
        }
    }
}

/// Whether a failed delivery may still have been written. Only refusals of the message
/// itself are definite; timeouts, lost connections and a fatal producer are not.
fn classify(e: &KafkaError) -> Failure {
    use RDKafkaErrorCode as C;
    let definite = matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidRecord
                | C::InvalidMessage
                | C::MessageBatchTooLarge
                | C::PurgeQueue
                | C::TopicAuthorizationFailed
        )
    );
    if definite {
        Failure::Definite(e.to_string())
    } else {
        Failure::Indeterminate(e.to_string())
    }
}

/// A group member's context: records its assignments.
struct ReaderContext {
    reader: usize,
    history: Arc<History>,
    /// Bumped at each rebalance, so the poll loop forgets its positions.
    rebalances: AtomicU64,
}

impl ClientContext for ReaderContext {}

impl ConsumerContext for ReaderContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalances.fetch_add(1, Ordering::SeqCst);
        let reader = self.reader;
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = tpl.elements().iter().map(|e| e.partition()).collect();
                self.history.record(Op::Assigned { reader, partitions });
            }
            Rebalance::Revoke(_) | Rebalance::Error(_) => {
                self.history.record(Op::Revoked { reader });
            }
        }
    }
}

/// One group member: polls, records, commits what it polled every `commit_interval`.
fn read_loop(
    bootstrap: &str,
    spec: &WorkloadSpec,
    reader: usize,
    history: &Arc<History>,
    stop: &AtomicBool,
) {
    let ctx = ReaderContext {
        reader,
        history: history.clone(),
        rebalances: AtomicU64::new(0),
    };
    let consumer: BaseConsumer<ReaderContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", &spec.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.wait.max.ms", "100")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create_with_context(ctx)
        .expect("consumer");
    consumer.subscribe(&[&spec.topic]).expect("subscribe");
    // Partition → the next offset to read, in the current assignment.
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut seen_rebalances = 0;
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let polled = consumer.poll(Duration::from_millis(100));
        let rebalances = consumer.context().rebalances.load(Ordering::SeqCst);
        if rebalances != seen_rebalances {
            seen_rebalances = rebalances;
            next.clear();
        }
        if let Some(Ok(m)) = polled {
            let (partition, offset) = (m.partition(), m.offset());
            match m.payload().and_then(parse_seq) {
                Some(id) => history.record(Op::Read {
                    reader,
                    partition,
                    offset,
                    id,
                }),
                None => history.record(Op::Foreign {
                    reader,
                    partition,
                    offset,
                }),
            }
            next.insert(partition, offset + 1);
        }
        if last_commit.elapsed() >= spec.commit_interval {
            commit(&consumer, &spec.topic, &next, reader, history);
            last_commit = Instant::now();
        }
    }
    commit(&consumer, &spec.topic, &next, reader, history);
    consumer.unsubscribe();
}

/// A synchronous commit of `next`, recorded per partition.
fn commit(
    consumer: &BaseConsumer<ReaderContext>,
    topic: &str,
    next: &BTreeMap<i32, i64>,
    reader: usize,
    history: &History,
) {
    if next.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in next {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .expect("offset");
    }
    // One answer for the whole commit: a partial failure is recorded as a failure of all
    // (which can only hide a backwards commit, never invent one).
    let ok = consumer.commit(&tpl, CommitMode::Sync).is_ok();
    for (p, o) in next {
        history.record(Op::Commit {
            reader,
            partition: *p,
            offset: *o,
            ok,
        });
    }
}

/// Reads every partition of the topic from the beginning to its high watermark (asked
/// once per partition when reading begins) through `bootstrap`, into `Final` events;
/// then the group's committed offsets into `FinalCommitted`.
pub fn read_back(bootstrap: &str, spec: &WorkloadSpec, history: &History) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", &spec.group)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .set("auto.offset.reset", "error")
        .create()
        .expect("consumer");
    let topic = spec.topic.as_str();
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..spec.partitions {
        let high = wait_for_named(
            || format!("{topic}-{p} watermarks for the read-back"),
            HANG_GUARD,
            &mut || {
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(5))
                    .ok()
            },
        )
        .1;
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    let committed = wait_for_named(
        || format!("{} committed offsets", spec.group),
        HANG_GUARD,
        &mut || {
            consumer
                .committed_offsets(tpl.clone(), Duration::from_secs(5))
                .ok()
        },
    );
    consumer.assign(&tpl).expect("assign");
    let mut next: BTreeMap<i32, i64> = (0..spec.partitions).map(|p| (p, 0)).collect();
    let done = |next: &BTreeMap<i32, i64>| ends.iter().all(|(p, e)| next[p] >= *e);
    let deadline = Instant::now() + HANG_GUARD * 2;
    while !done(&next) {
        assert!(
            Instant::now() < deadline,
            "read-back timed out: read to {next:?} of {ends:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let (partition, offset) = (m.partition(), m.offset());
                let id = m.payload().and_then(parse_seq);
                history.record(Op::Final {
                    partition,
                    offset,
                    id,
                });
                next.insert(partition, offset + 1);
            }
            Some(Err(e)) => eprintln!("read-back: {e} (retried)"),
            None => {}
        }
    }
    for e in committed.elements() {
        if let Offset::Offset(offset) = e.offset() {
            history.record(Op::FinalCommitted {
                partition: e.partition(),
                offset,
            });
        }
    }
}
