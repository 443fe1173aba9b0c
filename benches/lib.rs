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

/// A fresh temporary directory under [`bench_dir`] (given the bench's
/// `CARGO_TARGET_TMPDIR`); removed when dropped.
pub fn temp_dir(default: &str) -> tempfile::TempDir {
    tempfile::tempdir_in(bench_dir(default)).expect("bench dir")
}

/// Runs `sample` `iters` times, each with a fresh [`temp_dir`] (removed after it), and
/// returns the sum of the durations it measured: criterion's `iter_custom` for
/// benchmarks whose every sample needs its own files.
pub fn sum_of_samples(
    iters: u64,
    default: &str,
    mut sample: impl FnMut(&std::path::Path) -> Duration,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let dir = temp_dir(default);
        total += sample(dir.path());
    }
    total
}

/// Runs `f` on a fresh glommio executor at `placement` with 64 MiB of io_uring buffers.
pub fn on_executor<F, Fut, T>(placement: glommio::Placement, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::new(placement)
        .io_memory(64 << 20)
        .spawn(f)
        .expect("executor")
        .join()
        .expect("join")
}

/// Opens the data dir at `path` and the one partition `bench-0` in it (created with
/// `config` if it is not there yet).
pub async fn open_bench_log(
    path: &std::path::Path,
    config: sluice_engine::LogConfig,
    shard: sluice_engine::ShardConfig,
) -> (sluice_engine::LogManager, sluice_engine::PartitionLog) {
    let cfg = config.clone();
    let m = sluice_engine::LogManager::open(path, shard, |_| true, move |_| cfg.clone())
        .await
        .expect("manager");
    let tp = sluice_engine::TopicPartition::new("bench", 0);
    let log = match m.get(&tp) {
        Some(log) => log,
        None => m.create(tp, config).await.expect("create"),
    };
    (m, log)
}
