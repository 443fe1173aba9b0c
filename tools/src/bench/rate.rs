//! Fixed-rate schedule. Message `i` of an actor is *intended* to be sent at
//! `start + i * interval`; latency is measured from that intended time, not from when the
//! message was actually sent, so a stalled broker cannot hide its stall by slowing the sender
//! down (coordinated omission).

/// Fixed-point scale of the interval.
const SCALE: u128 = 1 << 32;

/// A fixed-rate schedule in nanoseconds on the bench clock.
#[derive(Debug, Clone, Copy)]
pub struct RateSchedule {
    start_ns: u64,
    /// Nanoseconds between messages, scaled by 2^32 so rates that do not divide 1e9 keep
    /// their precision over long runs.
    interval_ns_scaled: u128,
}

impl RateSchedule {
    /// `rate_per_s` must be positive.
    pub fn new(start_ns: u64, rate_per_s: f64) -> Self {
        assert!(rate_per_s > 0.0, "rate must be positive");
        let interval = 1e9 * SCALE as f64 / rate_per_s;
        RateSchedule {
            start_ns,
            interval_ns_scaled: interval.max(SCALE as f64) as u128,
        }
    }

    /// When message `i` is due (rounded up, so `due_by(intended_ns(i))` includes `i`).
    pub fn intended_ns(&self, i: u64) -> u64 {
        self.start_ns + (i as u128 * self.interval_ns_scaled).div_ceil(SCALE) as u64
    }

    /// How many messages are due by `now_ns` (all with index below the result).
    pub fn due_by(&self, now_ns: u64) -> u64 {
        if now_ns < self.start_ns {
            return 0;
        }
        let elapsed = (now_ns - self.start_ns) as u128;
        ((elapsed * SCALE) / self.interval_ns_scaled) as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_counts_follow_the_rate() {
        let s = RateSchedule::new(1_000, 1000.0); // one per ms
        assert_eq!(s.due_by(0), 0);
        assert_eq!(s.due_by(1_000), 1);
        assert_eq!(s.due_by(1_000 + 999_999), 1);
        assert_eq!(s.due_by(1_000 + 1_000_000), 2);
        assert_eq!(s.due_by(1_000 + 1_000_000_000), 1001);
    }

    #[test]
    fn intended_times_and_due_agree() {
        for rate in [1.0, 3.0, 7_777.0, 1_000_000.0, 3_333_333.3] {
            let s = RateSchedule::new(5, rate);
            for i in [0u64, 1, 2, 10, 999, 123_456] {
                let t = s.intended_ns(i);
                assert_eq!(s.due_by(t), i + 1, "rate {rate} i {i}");
                if t > 5 {
                    assert!(s.due_by(t - 1) <= i, "rate {rate} i {i}");
                }
            }
        }
    }

    #[test]
    fn no_drift_over_a_long_run() {
        let rate = 3_000_000.0 / 7.0; // not a divisor of 1e9
        let s = RateSchedule::new(0, rate);
        let one_hour = 3_600_000_000_000u64;
        let expected = (rate * 3600.0) as u64;
        let got = s.due_by(one_hour);
        assert!(got.abs_diff(expected) <= 2, "{got} vs {expected}");
    }
}
