//! `sluice-benches`: criterion benchmarks of the hot paths, through public APIs only.
//! Every benchmark also measures a raw baseline in the same run (a plain sequential
//! `DmaFile` write of the same bytes, with and without fdatasync) and prints its figures
//! as MB/s and as a ratio to that baseline, since machines are noisy and only ratios
//! compare across runs.
//!
//! Run: `cargo bench -p sluice-benches` (set `SLUICE_BENCH_DIR` to measure another disk).

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

/// Bytes and time accumulated by one benchmark across its samples.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Tally {
    pub fn add(&mut self, bytes: u64, elapsed: Duration) {
        self.bytes += bytes;
        self.elapsed += elapsed;
    }

    pub fn mb_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs == 0.0 {
            return 0.0;
        }
        self.bytes as f64 / secs / 1e6
    }
}

thread_local! {
    static TALLIES: RefCell<Vec<(String, Tally)>> = const { RefCell::new(Vec::new()) };
}

/// Records a measurement under `name`.
pub fn record(name: &str, bytes: u64, elapsed: Duration) {
    TALLIES.with(|t| {
        let mut t = t.borrow_mut();
        match t.iter_mut().find(|(n, _)| n == name) {
            Some((_, tally)) => tally.add(bytes, elapsed),
            None => {
                let mut tally = Tally::default();
                tally.add(bytes, elapsed);
                t.push((name.to_string(), tally));
            }
        }
    });
}

/// The tally recorded under `name`.
pub fn tally(name: &str) -> Option<Tally> {
    TALLIES.with(|t| t.borrow().iter().find(|(n, _)| n == name).map(|(_, t)| *t))
}

/// Prints each benchmark's MB/s and its ratio to its baseline.
pub fn print_summary(rows: &[(&str, &str)]) {
    println!(
        "\n{:<34} {:>10} {:>24} {:>8}",
        "benchmark", "MB/s", "baseline", "ratio"
    );
    for (name, baseline) in rows {
        let (Some(t), Some(b)) = (tally(name), tally(baseline)) else {
            continue;
        };
        println!(
            "{:<34} {:>10.1} {:>24} {:>7.2}x",
            name,
            t.mb_per_s(),
            format!("{baseline} {:.1}", b.mb_per_s()),
            t.mb_per_s() / b.mb_per_s().max(f64::MIN_POSITIVE)
        );
    }
}

/// Where benchmark files go: `SLUICE_BENCH_DIR`, else the target dir (a real disk;
/// `/tmp` may be tmpfs, which has no direct I/O).
pub fn bench_dir(default: &str) -> PathBuf {
    std::env::var_os("SLUICE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}
