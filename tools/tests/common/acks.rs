//! Delivery reports of a producer whose payloads carry a sequence number: every
//! acknowledged message with its partition, offset and time; failures, a fatal error and
//! the latest client errors for a test's failure message.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};

/// One acknowledged message.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub partition: i32,
    pub offset: i64,
    pub seq: u64,
    pub at: Instant,
}

/// What the delivery reports said.
#[derive(Default)]
pub struct Acks {
    pub acked: Mutex<Vec<Ack>>,
    pub failed: AtomicU64,
    pub errors: Mutex<Vec<String>>,
    /// A fatal producer error (librdkafka gives up on the idempotent producer).
    pub fatal: Mutex<Option<String>>,
    /// The latest client errors (transient ones: a broker gone), for a timeout's message.
    pub recent: Mutex<VecDeque<String>>,
}

/// Client errors kept for a timeout's message.
const RECENT_ERRORS_MAX: usize = 10;

impl Acks {
    pub fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    pub fn snapshot(&self) -> Vec<Ack> {
        self.acked.lock().unwrap().clone()
    }

    /// Panics with the fatal error if the producer had one.
    pub fn assert_not_fatal(&self) {
        if let Some(f) = self.fatal.lock().unwrap().as_ref() {
            panic!("the idempotent producer failed fatally: {f}");
        }
    }

    pub fn note_error(&self, e: String) {
        let mut errors = self.errors.lock().unwrap();
        // Bounded: the first errors say what went wrong.
        if errors.len() < 20 {
            errors.push(e);
        }
    }
}

/// The producer context that fills an [`Acks`].
pub struct AckContext(pub Arc<Acks>);

impl ClientContext for AckContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // Fatal idempotence errors end the producer; transient ones (a broker gone) are
        // part of these tests.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            let mut fatal = self.0.fatal.lock().unwrap();
            fatal.get_or_insert_with(|| format!("{error}: {reason}"));
        }
        let mut recent = self.0.recent.lock().unwrap();
        if recent.len() == RECENT_ERRORS_MAX {
            recent.pop_front();
        }
        recent.push_back(format!("{error}: {reason}"));
    }
}

impl ProducerContext for AckContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                let seq = m.payload().and_then(parse_seq).expect("our payload");
                let ack = Ack {
                    partition: m.partition(),
                    offset: m.offset(),
                    seq,
                    at: Instant::now(),
                };
                self.0.acked.lock().unwrap().push(ack);
            }
            Err((e, m)) => {
                self.0.failed.fetch_add(1, Ordering::SeqCst);
                let seq = m.payload().and_then(parse_seq);
                self.0
                    .note_error(format!("seq {seq:?} partition {}: {e}", m.partition()));
            }
        }
    }
}

/// A message of `bytes` (at least 12) whose first 12 bytes are `seq` in decimal.
pub fn payload(seq: u64, bytes: usize) -> Vec<u8> {
    let mut p = format!("{seq:012}").into_bytes();
    p.resize(bytes, b'.');
    p
}

/// The sequence number of a [`payload`].
pub fn parse_seq(p: &[u8]) -> Option<u64> {
    std::str::from_utf8(p.get(..12)?).ok()?.parse().ok()
}

/// Sends `value` to `topic`-`partition`, waiting while librdkafka's queue is full.
pub fn send_waiting<C: ProducerContext>(
    producer: &rdkafka::producer::ThreadedProducer<C>,
    topic: &str,
    partition: i32,
    value: &[u8],
) -> Result<(), KafkaError>
where
    C::DeliveryOpaque: Default,
{
    loop {
        let record = rdkafka::producer::BaseRecord::<(), [u8], C::DeliveryOpaque>::with_opaque_to(
            topic,
            Default::default(),
        )
        .partition(partition)
        .payload(value);
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}
