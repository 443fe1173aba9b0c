//! The reactor stall watchdog, and the test-only failpoints that exercise it and the
//! panic exit.
//!
//! Each shard runs a heartbeat task that stamps its slot every
//! [`beat_interval`]; a shard whose heartbeat has not run for `stall_warn_ms` has a
//! reactor that does not get to its task queues (a task that blocks the thread, or
//! loops without yielding). The watchdog thread then logs one WARN naming the shard, how
//! long it has been stuck and the last request it started (API key), and `/health`
//! answers 503 until the shard runs again (then one INFO says so).
//!
//! Failpoints: only when the environment variable `SLUICE_FAILPOINTS=1` is set at start,
//! the admin endpoint takes `POST /failpoint/panic?shard=N` (the shard's heartbeat task
//! panics) and `POST /failpoint/stall?shard=N&ms=M` (it blocks its thread for M ms with
//! a `std::thread::sleep`). Without the variable those routes do not exist.
//!
//! Invariant: one broker per process registers its shards here (as with the partition
//! mover); a shard that stops marks its slot stopped, so it never reads as stuck.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Environment variable that enables the failpoint routes of the admin endpoint.
pub const FAILPOINTS_ENV: &str = "SLUICE_FAILPOINTS";
/// A failpoint stall longer than this is refused (a test's, not a hang).
pub const FAILPOINT_STALL_MS_MAX: u64 = 60_000;
/// Heartbeats are at least this often, whatever `stall_warn_ms` says.
const BEAT_INTERVAL_MAX: Duration = Duration::from_millis(250);
/// Slot value of a shard that is not running (stopped, or not started).
const STOPPED: u64 = u64::MAX;

/// One shard's slot.
#[derive(Debug)]
struct Slot {
    /// Milliseconds since `Watch::epoch` of the last heartbeat; `STOPPED` when stopped.
    beat_ms: AtomicU64,
    /// API key of the last request the shard started (-1: none yet).
    last_api: AtomicI32,
    /// Stall reported (so each stall is logged once).
    reported: AtomicBool,
    /// Failpoints waiting for the shard's heartbeat task.
    panic: AtomicBool,
    stall_ms: AtomicU64,
    /// Stalls reported since start.
    stalls: AtomicU64,
}

#[derive(Debug)]
struct Watch {
    epoch: Instant,
    stall_warn_ms: u64,
    slots: Vec<Slot>,
    failpoints: bool,
    /// Some shard attached: from then on, all slots stopped means the broker stopped.
    attached: AtomicBool,
}

static WATCH: Mutex<Option<Arc<Watch>>> = Mutex::new(None);

thread_local! {
    /// A shard thread's own watch and slot (set by [`attach`]): the request path stamps
    /// it without taking the process-wide lock.
    static ATTACHED: std::cell::RefCell<Option<(Arc<Watch>, usize)>> =
        const { std::cell::RefCell::new(None) };
}

fn current() -> Option<Arc<Watch>> {
    WATCH.lock().ok().and_then(|w| w.clone())
}

/// Binds the calling shard thread to the registered broker's slot `shard`.
pub fn attach(shard: usize) {
    let watch = current().filter(|w| shard < w.slots.len());
    if let Some(w) = &watch {
        w.slots[shard].beat_ms.store(w.now_ms(), Ordering::Relaxed);
        w.attached.store(true, Ordering::SeqCst);
    }
    ATTACHED.with(|a| *a.borrow_mut() = watch.map(|w| (w, shard)));
}

fn with_slot(f: impl FnOnce(&Watch, &Slot, usize)) {
    ATTACHED.with(|a| {
        if let Some((watch, shard)) = a.borrow().as_ref() {
            f(watch, &watch.slots[*shard], *shard);
        }
    });
}

impl Watch {
    fn now_ms(&self) -> u64 {
        self.epoch
            .elapsed()
            .as_millis()
            .min(u128::from(u64::MAX - 1)) as u64
    }

    /// Shards stuck now: (shard, stuck for ms, last API key).
    fn stuck(&self) -> Vec<(usize, u64, i32)> {
        let now = self.now_ms();
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let beat = s.beat_ms.load(Ordering::Relaxed);
                let age = now.saturating_sub(beat);
                (beat != STOPPED && age >= self.stall_warn_ms).then(|| {
                    let api = s.last_api.load(Ordering::Relaxed);
                    (i, age, api)
                })
            })
            .collect()
    }
}

/// How often a shard's heartbeat runs for a given `stall_warn_ms`.
pub fn beat_interval(stall_warn_ms: u64) -> Duration {
    Duration::from_millis((stall_warn_ms / 4).max(1)).min(BEAT_INTERVAL_MAX)
}

/// Registers a broker of `shards` shards (replacing an earlier one) and starts the
/// watchdog thread, which ends when every shard has stopped.
pub fn register(shards: usize, stall_warn_ms: u64) -> std::io::Result<()> {
    let failpoints = std::env::var(FAILPOINTS_ENV).is_ok_and(|v| v == "1");
    if failpoints {
        tracing::warn!(
            "{FAILPOINTS_ENV}=1: the admin endpoint takes failpoint requests (tests only)"
        );
    }
    let watch = Arc::new(Watch {
        epoch: Instant::now(),
        stall_warn_ms: stall_warn_ms.max(1),
        slots: (0..shards)
            .map(|_| Slot {
                // Not running until the shard attaches (opening its logs may take long,
                // and its reactor runs meanwhile).
                beat_ms: AtomicU64::new(STOPPED),
                last_api: AtomicI32::new(-1),
                reported: AtomicBool::new(false),
                panic: AtomicBool::new(false),
                stall_ms: AtomicU64::new(0),
                stalls: AtomicU64::new(0),
            })
            .collect(),
        failpoints,
        attached: AtomicBool::new(false),
    });
    if let Ok(mut w) = WATCH.lock() {
        *w = Some(watch.clone());
    }
    std::thread::Builder::new()
        .name("stall-watchdog".into())
        .spawn(move || {
            crate::broker::fatal::mark_broker_thread();
            watch_loop(&watch)
        })?;
    Ok(())
}

fn watch_loop(watch: &Watch) {
    let period = beat_interval(watch.stall_warn_ms);
    loop {
        std::thread::sleep(period);
        let all_stopped = watch
            .slots
            .iter()
            .all(|s| s.beat_ms.load(Ordering::Relaxed) == STOPPED);
        if all_stopped && watch.attached.load(Ordering::SeqCst) {
            return;
        }
        let stuck = watch.stuck();
        for (shard, slot) in watch.slots.iter().enumerate() {
            let now_stuck = stuck.iter().find(|(s, _, _)| *s == shard);
            match now_stuck {
                Some((_, age, api)) if !slot.reported.swap(true, Ordering::Relaxed) => {
                    slot.stalls.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        shard,
                        stuck_ms = age,
                        last_request = %api_name(*api),
                        "shard reactor stalled: its task queues have not run (a task blocks the thread or does not yield); /health reports unhealthy"
                    );
                }
                None if slot.reported.swap(false, Ordering::Relaxed) => {
                    tracing::info!(shard, "shard reactor runs again");
                }
                _ => {}
            }
        }
    }
}

fn api_name(api: i32) -> String {
    if api < 0 {
        return "none yet".into();
    }
    match kafka_protocol::messages::ApiKey::try_from(api as i16) {
        Ok(k) => format!("{k:?}"),
        Err(_) => format!("api key {api}"),
    }
}

/// The calling shard's heartbeat: stamps its slot, and runs the failpoints asked of it.
pub fn beat() {
    let mut failpoint = (false, 0);
    with_slot(|watch, slot, _| {
        slot.beat_ms.store(watch.now_ms(), Ordering::Relaxed);
        if watch.failpoints {
            failpoint = (
                slot.panic.swap(false, Ordering::SeqCst),
                slot.stall_ms.swap(0, Ordering::SeqCst),
            );
        }
    });
    let shard = ATTACHED.with(|a| a.borrow().as_ref().map_or(0, |(_, s)| *s));
    match failpoint {
        (true, _) => panic!("failpoint: injected panic on shard {shard}"),
        (false, stall) if stall > 0 => {
            tracing::warn!(
                shard,
                stall_ms = stall,
                "failpoint: blocking the shard's thread"
            );
            std::thread::sleep(Duration::from_millis(stall));
            with_slot(|watch, slot, _| slot.beat_ms.store(watch.now_ms(), Ordering::Relaxed));
        }
        _ => {}
    }
}

/// Notes the API of a request the calling shard starts (what it was doing, if it
/// stalls).
pub fn note_request(api_key: i16) {
    with_slot(|_, slot, _| slot.last_api.store(i32::from(api_key), Ordering::Relaxed));
}

/// Marks the calling shard stopped (it is not stuck, it is gone on purpose).
pub fn stopped() {
    with_slot(|_, slot, _| slot.beat_ms.store(STOPPED, Ordering::Relaxed));
}

/// `/metrics` lines: stalls reported per shard, and how old each running shard's last
/// heartbeat is.
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write;
    let Some(watch) = current() else { return };
    let now = watch.now_ms();
    let _ = writeln!(out, "# TYPE sluice_shard_stalls_total counter");
    for (shard, slot) in watch.slots.iter().enumerate() {
        let n = slot.stalls.load(Ordering::Relaxed);
        let _ = writeln!(out, "sluice_shard_stalls_total{{shard=\"{shard}\"}} {n}");
    }
    let _ = writeln!(out, "# TYPE sluice_shard_heartbeat_age_seconds gauge");
    for (shard, slot) in watch.slots.iter().enumerate() {
        let beat = slot.beat_ms.load(Ordering::Relaxed);
        if beat != STOPPED {
            let age = now.saturating_sub(beat) as f64 / 1e3;
            let _ = writeln!(
                out,
                "sluice_shard_heartbeat_age_seconds{{shard=\"{shard}\"}} {age}"
            );
        }
    }
}

/// The shards whose reactor is stuck: shard, stalled for (ms), last request's API key.
/// Shown one line per shard, as `/health` answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.lines())]
pub struct Stalled(pub Vec<(usize, u64, i32)>);

impl Stalled {
    fn lines(&self) -> String {
        self.0
            .iter()
            .map(|(s, age, api)| {
                format!(
                    "shard {s} stalled for {age} ms (last request: {})\n",
                    api_name(*api)
                )
            })
            .collect()
    }
}

/// `/health`: `Ok` when every running shard's reactor runs, else what is stuck.
pub fn health() -> Result<(), Stalled> {
    let Some(watch) = current() else {
        return Ok(());
    };
    let stuck = watch.stuck();
    if stuck.is_empty() {
        return Ok(());
    }
    Err(Stalled(stuck))
}

/// Why a failpoint request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FailpointError {
    #[error("failpoints are off (set {FAILPOINTS_ENV}=1 at start)")]
    Off,
    #[error("no shard {0}")]
    NoShard(usize),
    #[error("stall of {0} ms is over the {FAILPOINT_STALL_MS_MAX} ms bound")]
    TooLong(u64),
}

/// Asks shard `shard`'s heartbeat task to panic.
pub fn inject_panic(shard: usize) -> Result<(), FailpointError> {
    let watch = current()
        .filter(|w| w.failpoints)
        .ok_or(FailpointError::Off)?;
    let slot = watch
        .slots
        .get(shard)
        .ok_or(FailpointError::NoShard(shard))?;
    tracing::warn!(shard, "failpoint: a panic is injected into the shard");
    slot.panic.store(true, Ordering::SeqCst);
    Ok(())
}

/// Asks shard `shard`'s heartbeat task to block its thread for `ms`.
pub fn inject_stall(shard: usize, ms: u64) -> Result<(), FailpointError> {
    let watch = current()
        .filter(|w| w.failpoints)
        .ok_or(FailpointError::Off)?;
    if ms > FAILPOINT_STALL_MS_MAX {
        return Err(FailpointError::TooLong(ms));
    }
    let slot = watch
        .slots
        .get(shard)
        .ok_or(FailpointError::NoShard(shard))?;
    slot.stall_ms.store(ms, Ordering::SeqCst);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_frequent_enough_and_bounded() {
        assert_eq!(beat_interval(2000), Duration::from_millis(250));
        assert_eq!(beat_interval(100), Duration::from_millis(25));
        assert_eq!(beat_interval(0), Duration::from_millis(1));
    }

    #[test]
    fn a_slot_counts_as_stuck_only_while_running_and_late() {
        let watch = Watch {
            epoch: Instant::now() - Duration::from_secs(10),
            stall_warn_ms: 1000,
            slots: (0..3)
                .map(|_| Slot {
                    beat_ms: AtomicU64::new(0),
                    last_api: AtomicI32::new(0),
                    reported: AtomicBool::new(false),
                    panic: AtomicBool::new(false),
                    stall_ms: AtomicU64::new(0),
                    stalls: AtomicU64::new(0),
                })
                .collect(),
            failpoints: false,
            attached: AtomicBool::new(true),
        };
        let now = watch.now_ms();
        watch.slots[1].beat_ms.store(now, Ordering::Relaxed);
        watch.slots[2].beat_ms.store(STOPPED, Ordering::Relaxed);
        let stuck = watch.stuck();
        assert_eq!(stuck.len(), 1);
        assert_eq!(stuck[0].0, 0);
        assert!(stuck[0].1 >= 10_000);
        assert_eq!(api_name(0), "Produce");
        assert_eq!(api_name(-1), "none yet");
    }
}
