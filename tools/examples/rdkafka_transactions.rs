//! Transactional against plain produce throughput with librdkafka, in one run (#20's
//! figure): one producer sends MESSAGES fixed-size messages as an idempotent acks=all
//! producer, then as a transactional one committing every 100 and every 1000 messages;
//! the three alternate twice (A B C A B C) so drift shows.
//!
//! `cargo run --release -p sluice --example rdkafka_transactions -- BOOTSTRAP TOPIC
//!  MESSAGES MESSAGE_BYTES`

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const TIMEOUT: Duration = Duration::from_secs(60);

fn producer(bootstrap: &str, transactional_id: Option<&str>) -> BaseProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000");
    if let Some(id) = transactional_id {
        c.set("transactional.id", id);
    }
    let p: BaseProducer = c.create().expect("producer");
    if transactional_id.is_some() {
        p.init_transactions(TIMEOUT).expect("init_transactions");
    }
    p
}

fn send(p: &BaseProducer, topic: &str, payload: &[u8]) {
    loop {
        match p.send(BaseRecord::<(), [u8]>::to(topic).payload(payload)) {
            Ok(()) => return,
            Err((_, _)) => {
                p.poll(Duration::from_millis(1));
            }
        }
    }
}

/// Messages per second: plain (`per_txn` = None) or committing every `per_txn`.
fn run(
    bootstrap: &str,
    topic: &str,
    n: usize,
    payload: &[u8],
    per_txn: Option<usize>,
    round: usize,
) -> f64 {
    let id = per_txn.map(|k| format!("bench-txn-{k}-{round}"));
    let p = producer(bootstrap, id.as_deref());
    let started = Instant::now();
    match per_txn {
        None => {
            for _ in 0..n {
                send(&p, topic, payload);
                p.poll(Duration::ZERO);
            }
            p.flush(TIMEOUT).expect("flush");
        }
        Some(k) => {
            for chunk in 0..n.div_ceil(k) {
                p.begin_transaction().expect("begin");
                for _ in 0..k.min(n - chunk * k) {
                    send(&p, topic, payload);
                    p.poll(Duration::ZERO);
                }
                // Delivered first, in 1 ms polls: rdkafka 0.39's BaseProducer runs the
                // flush inside commit_transaction as polls of 100 ms that each last
                // their whole 100 ms, so with a message still in flight every commit
                // would cost at least 100 ms of waiting in the binding (the ~100 ms per
                // transaction measured before).
                while p.in_flight_count() > 0 {
                    p.poll(Duration::from_millis(1));
                }
                p.commit_transaction(TIMEOUT).expect("commit");
            }
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        eprintln!("usage: rdkafka_transactions BOOTSTRAP TOPIC MESSAGES MESSAGE_BYTES");
        std::process::exit(2);
    }
    let (bootstrap, topic) = (a[1].as_str(), a[2].as_str());
    let n: usize = a[3].parse().expect("MESSAGES");
    let payload = vec![b'x'; a[4].parse().expect("MESSAGE_BYTES")];
    let kinds: [(&str, Option<usize>); 3] = [
        ("plain", None),
        ("txn100", Some(100)),
        ("txn1000", Some(1000)),
    ];
    let mut rates = vec![Vec::new(); kinds.len()];
    for round in 0..2 {
        for (i, (_, per_txn)) in kinds.iter().enumerate() {
            rates[i].push(run(bootstrap, topic, n, &payload, *per_txn, round));
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let base = mean(&rates[0]);
    for ((name, _), r) in kinds.iter().zip(&rates) {
        println!(
            "{name}: {} msgs/s ({:.2}x plain)",
            r.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            mean(r) / base
        );
    }
}
