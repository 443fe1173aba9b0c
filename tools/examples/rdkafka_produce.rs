//! The `sluice bench produce` scenario driven by librdkafka instead (for comparison, like
//! `rdkafka_performance -P`): N producer threads, each with its own `BaseProducer`, send
//! fixed-size unkeyed messages to a topic as fast as the client allows and count delivery
//! reports.
//!
//! `cargo run --release -p sluice --example rdkafka_produce -- BOOTSTRAP TOPIC PRODUCERS
//!  MESSAGE_BYTES SECONDS ACKS [BATCH_BYTES]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

struct Counter {
    delivered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl ClientContext for Counter {}

impl ProducerContext for Counter {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 7 {
        eprintln!("usage: rdkafka_produce BOOTSTRAP TOPIC PRODUCERS MESSAGE_BYTES SECONDS ACKS [BATCH_BYTES]");
        std::process::exit(2);
    }
    let (bootstrap, topic) = (a[1].clone(), a[2].clone());
    let producers: usize = a[3].parse().expect("producers");
    let size: usize = a[4].parse().expect("message bytes");
    let secs: f64 = a[5].parse().expect("seconds");
    let acks = a[6].clone();
    let batch = a.get(7).cloned().unwrap_or_else(|| "262144".into());
    let delivered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let (bootstrap, topic, acks, batch) = (
                bootstrap.clone(),
                topic.clone(),
                acks.clone(),
                batch.clone(),
            );
            let ctx = Counter {
                delivered: delivered.clone(),
                failed: failed.clone(),
            };
            std::thread::spawn(move || {
                let p: BaseProducer<Counter> = ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .set("acks", &acks)
                    .set("linger.ms", "5")
                    .set("batch.size", &batch)
                    .set("queue.buffering.max.messages", "2000000")
                    .set("queue.buffering.max.kbytes", "2097151")
                    .set("max.in.flight", "8")
                    .set("enable.idempotence", "false")
                    .create_with_context(ctx)
                    .expect("producer");
                let payload = vec![7u8; size];
                let deadline = start + Duration::from_secs_f64(secs);
                while Instant::now() < deadline {
                    for _ in 0..1000 {
                        let rec: BaseRecord<'_, (), [u8]> =
                            BaseRecord::to(&topic).payload(&payload[..]);
                        if p.send(rec).is_err() {
                            p.poll(Duration::from_millis(1));
                        }
                    }
                    p.poll(Duration::ZERO);
                }
                let _ = p.flush(Duration::from_secs(30));
            })
        })
        .collect();
    for t in threads {
        t.join().expect("producer thread");
    }
    let el = start.elapsed().as_secs_f64();
    let n = delivered.load(Ordering::Relaxed);
    println!(
        "rdkafka: {n} delivered, {} failed in {el:.2} s: {:.0} msgs/s, {:.1} MB/s",
        failed.load(Ordering::Relaxed),
        n as f64 / el,
        n as f64 * size as f64 / el / 1e6
    );
}
