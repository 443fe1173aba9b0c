//! Live statistics. Each actor counts into atomics and records latencies into its own
//! interval histogram (a mutex taken once per batch, never per message; only the collector
//! contends, once a second). The collector on the main thread drains the interval histograms
//! every tick into per-actor totals, the timeline and the histogram log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram holds (values above are clamped): one hour in nanoseconds.
pub const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

/// A latency histogram in nanoseconds, three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static histogram bounds are valid")
}

/// Nanoseconds since the bench clock started (one clock for every thread of the process, so
/// a timestamp written by a producer means the same to a consumer).
pub fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Wall clock in milliseconds since the Unix epoch (record timestamps).
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Which side of the run an actor is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Produce,
    Consume,
}

/// Counters one actor shares with the collector.
#[derive(Debug)]
pub struct ActorStats {
    pub name: String,
    pub role: Role,
    messages: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    interval: Mutex<Histogram<u64>>,
    pub done: AtomicBool,
}

impl ActorStats {
    pub fn new(name: String, role: Role) -> Self {
        ActorStats {
            name,
            role,
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            interval: Mutex::new(new_histogram()),
            done: AtomicBool::new(false),
        }
    }

    pub fn add(&self, messages: u64, bytes: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn error(&self, n: u64) {
        self.errors.fetch_add(n, Ordering::Relaxed);
    }

    /// Records into the current interval histogram.
    pub fn record(&self, f: impl FnOnce(&mut Histogram<u64>)) {
        let mut h = self.interval.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut h);
    }

    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Takes the interval histogram, leaving an empty one.
    fn take_interval(&self, into: &mut Histogram<u64>) {
        let mut h = self.interval.lock().unwrap_or_else(|e| e.into_inner());
        // Both histograms share bounds, so the add cannot fail.
        let _ = into.add(&*h);
        h.reset();
    }
}

/// Records the latency of each of `count` messages whose send times run evenly from
/// `first_ns` to `last_ns` (message `i` at `first + floor(span * i / (count - 1))`), all
/// acknowledged at `ack_ns`. The histogram ends up exactly as if every message were recorded
/// on its own, but each call costs one update per histogram bucket the latencies touch
/// (bounded by both `count` and the span's buckets), not one per message: latency falls as
/// `i` grows, so the messages of one bucket are a run of indexes found by arithmetic.
pub fn record_linear(h: &mut Histogram<u64>, first_ns: u64, last_ns: u64, count: u64, ack_ns: u64) {
    if count == 0 {
        return;
    }
    let latency = |t: u64| ack_ns.saturating_sub(t).clamp(1, LATENCY_NS_MAX);
    let span = last_ns.saturating_sub(first_ns);
    if count == 1 || span == 0 {
        let _ = h.record_n(latency(first_ns), count);
        return;
    }
    let steps = u128::from(count - 1);
    let send_ns = |i: u64| first_ns + (u128::from(span) * u128::from(i) / steps) as u64;
    let mut i = 0u64;
    while i < count {
        let v = latency(send_ns(i));
        // Messages sent up to `ack - low` share v's bucket; the rest are in lower ones.
        let low = h.lowest_equivalent(v);
        let end = if v <= 1 || low == 0 {
            count
        } else {
            // First index sent after `ack - low`: send_ns(j) > x ⇔ span*j/steps ≥ x-first+1
            // ⇔ j ≥ ceil((x-first+1) * steps / span).
            let x = ack_ns.saturating_sub(low);
            if x < first_ns {
                i + 1
            } else {
                let need = u128::from(x - first_ns + 1) * steps;
                let j = need.div_ceil(u128::from(span));
                (j.min(u128::from(count)) as u64).max(i + 1)
            }
        };
        let _ = h.record_n(v, end - i);
        i = end;
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            p99_99: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// One second of one role.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub role: Role,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    /// p99 of this second.
    pub p99_us: f64,
    /// p99 of the run so far.
    pub p99_so_far_us: f64,
    pub errors: u64,
}

/// Totals of one actor over the measured window (after warm-up).
#[derive(Debug)]
pub struct ActorTotals {
    pub messages: u64,
    pub bytes: u64,
    pub errors: u64,
    pub histogram: Histogram<u64>,
}

/// Drains actor statistics once per tick.
#[derive(Debug)]
pub struct Collector {
    pub actors: Vec<std::sync::Arc<ActorStats>>,
    pub totals: Vec<ActorTotals>,
    last: Vec<(u64, u64, u64)>,
    pub timeline: Vec<Sample>,
    started_ns: u64,
    last_tick_ns: u64,
    warmup_end_ns: u64,
    /// When the measured window opened (the end of warm-up, once reached).
    pub measured_from_ns: Option<u64>,
    /// Interval histograms per role, for the histogram log: (start_ns, role, histogram).
    pub intervals: Vec<(u64, u64, Role, Histogram<u64>)>,
    /// Everything recorded so far, per role (for the progress line).
    so_far: Vec<(Role, Histogram<u64>)>,
}

impl Collector {
    pub fn new(actors: Vec<std::sync::Arc<ActorStats>>, started_ns: u64, warmup_ns: u64) -> Self {
        let totals = actors
            .iter()
            .map(|_| ActorTotals {
                messages: 0,
                bytes: 0,
                errors: 0,
                histogram: new_histogram(),
            })
            .collect();
        let last = vec![(0, 0, 0); actors.len()];
        let measured_from_ns = (warmup_ns == 0).then_some(started_ns);
        Collector {
            actors,
            totals,
            last,
            timeline: Vec::new(),
            started_ns,
            last_tick_ns: started_ns,
            warmup_end_ns: started_ns + warmup_ns,
            measured_from_ns,
            intervals: Vec::new(),
            so_far: Vec::new(),
        }
    }

    /// Drains every actor; returns the samples of this interval (one per role present).
    pub fn tick(&mut self, now: u64) -> Vec<Sample> {
        // An interval counts when it started after warm-up.
        let measuring = self.measured_from_ns.is_some();
        let secs = ((now - self.last_tick_ns) as f64 / 1e9).max(1e-9);
        let mut per_role: Vec<(Role, u64, u64, u64, Histogram<u64>)> = Vec::new();
        for (i, a) in self.actors.iter().enumerate() {
            let mut h = new_histogram();
            a.take_interval(&mut h);
            let (m, b, e) = (a.messages(), a.bytes(), a.errors());
            let (lm, lb, le) = self.last[i];
            self.last[i] = (m, b, e);
            let (dm, db, de) = (m - lm, b - lb, e - le);
            if measuring {
                let t = &mut self.totals[i];
                t.messages += dm;
                t.bytes += db;
                t.errors += de;
                let _ = t.histogram.add(&h);
            }
            match per_role.iter_mut().find(|r| r.0 == a.role) {
                Some(r) => {
                    r.1 += dm;
                    r.2 += db;
                    r.3 += de;
                    let _ = r.4.add(&h);
                }
                None => per_role.push((a.role, dm, db, de, h)),
            }
        }
        if !measuring && now >= self.warmup_end_ns {
            self.measured_from_ns = Some(now);
        }
        let t_s = (now - self.started_ns) as f64 / 1e9;
        let mut samples = Vec::with_capacity(per_role.len());
        for (role, m, b, e, h) in &per_role {
            let i = match self.so_far.iter().position(|(r, _)| r == role) {
                Some(i) => i,
                None => {
                    self.so_far.push((*role, new_histogram()));
                    self.so_far.len() - 1
                }
            };
            let _ = self.so_far[i].1.add(h);
            samples.push(Sample {
                t_s,
                role: *role,
                msgs_per_s: *m as f64 / secs,
                mb_per_s: *b as f64 / secs / 1e6,
                p99_us: Percentiles::of(h).p99,
                p99_so_far_us: Percentiles::of(&self.so_far[i].1).p99,
                errors: *e,
            });
        }
        for (role, _, _, _, h) in per_role {
            self.intervals.push((
                self.last_tick_ns - self.started_ns,
                now - self.started_ns,
                role,
                h,
            ));
        }
        self.last_tick_ns = now;
        self.timeline.extend(samples.iter().cloned());
        samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = new_histogram();
        for us in 1..=10_000u64 {
            h.record(us * 1000).unwrap();
        }
        let p = Percentiles::of(&h);
        let close = |a: f64, b: f64| (a - b).abs() / b < 0.002;
        assert!(close(p.p50, 5000.0), "{p:?}");
        assert!(close(p.p90, 9000.0), "{p:?}");
        assert!(close(p.p99, 9900.0), "{p:?}");
        assert!(close(p.p99_9, 9990.0), "{p:?}");
        assert!(close(p.max, 10_000.0), "{p:?}");
        assert!(close(p.mean, 5000.5), "{p:?}");
    }

    #[test]
    fn empty_histogram_gives_zeroes() {
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }

    /// Records one message at a time: what `record_linear` must equal.
    fn record_each(first_ns: u64, last_ns: u64, count: u64, ack_ns: u64) -> Histogram<u64> {
        let mut h = new_histogram();
        for i in 0..count {
            let t = if count > 1 {
                first_ns + ((last_ns - first_ns) as u128 * i as u128 / (count - 1) as u128) as u64
            } else {
                first_ns
            };
            h.record(ack_ns.saturating_sub(t).clamp(1, LATENCY_NS_MAX))
                .unwrap();
        }
        h
    }

    fn buckets(h: &Histogram<u64>) -> Vec<(u64, u64)> {
        h.iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    #[test]
    fn linear_recording_equals_one_record_per_message() {
        let cases: &[(u64, u64, u64, u64)] = &[
            (1_000, 2_000, 1_000, 10_000),        // a dense batch, µs latencies
            (0, 5_000_000, 600, 6_000_000),       // a 5 ms rate-mode batch
            (7, 7, 1, 107),                       // one message
            (50, 50, 300, 1_000_000),             // all sent at once
            (0, 999_999, 7, 1_000_000),           // sparse: fewer messages than buckets
            (1_000, 9_000_000, 4_321, 5_000_000), // some sent after the ack: clamped to 1 ns
            (0, 3_000_000_000, 100_000, 10_000_000_000), // seconds, many messages
        ];
        for &(first, last, count, ack) in cases {
            let mut h = new_histogram();
            record_linear(&mut h, first, last, count, ack);
            let want = record_each(first, last, count, ack);
            assert_eq!(h.len(), count, "{first} {last} {count} {ack}");
            assert_eq!(buckets(&h), buckets(&want), "{first} {last} {count} {ack}");
        }
    }

    #[test]
    fn collector_splits_warmup_from_measurement() {
        let a = std::sync::Arc::new(ActorStats::new("p0".into(), Role::Produce));
        let mut c = Collector::new(vec![a.clone()], 0, 1_000_000_000);
        a.add(10, 1000);
        a.record(|h| h.record(5_000).unwrap());
        c.tick(500_000_000); // still warming up
        assert_eq!(c.totals[0].messages, 0);
        a.add(5, 500);
        c.tick(1_500_000_000); // the interval that ends warm-up is not counted either
        assert_eq!(c.totals[0].messages, 0);
        assert_eq!(c.measured_from_ns, Some(1_500_000_000));
        a.add(7, 700);
        a.record(|h| h.record(9_000).unwrap());
        let s = c.tick(2_500_000_000);
        assert_eq!(c.totals[0].messages, 7);
        assert_eq!(c.totals[0].bytes, 700);
        assert_eq!(c.totals[0].histogram.len(), 1);
        assert_eq!(s.len(), 1);
        assert!((s[0].msgs_per_s - 7.0).abs() < 1e-9);
    }
}
