//! The bounded stop of a node: after the controlled shutdown every shard goes through the
//! same steps — stop accepting, let its connections finish (in-flight requests answered,
//! waits released by the shard's `stopping` flag), wait for the other shards to drain,
//! stop the coordinator and the follower fetchers, close the logs — each bounded and
//! logged with how long it took. A step past its bound is logged (WARN, naming it) and
//! left behind: the shard goes on to the next one and the process still exits, since
//! recovery at the next start covers whatever a step did not finish.
//!
//! A watchdog thread bounds the whole stop from outside the executors, for what no step
//! bound can reach (an executor blocked in a system call, a control thread that does not
//! return): past `STOP_MAX` after the shards were told to stop it logs which executor was
//! in which step and ends the process with a non-zero status.
//!
//! Invariants: every bound here is a `*_MAX` constant; the sum of the shard step bounds is
//! below `STOP_MAX`, so the watchdog fires only when a step bound could not act.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections of a shard finishing their in-flight requests. Every wait a request can be
/// in (long-polling fetches, acks=all, group rebalances) ends when the shard stops, so this
/// takes as long as the slowest write to a client.
pub const CONNECTIONS_DRAIN_MAX: Duration = Duration::from_secs(5);
/// The other shards draining theirs (they forward requests to this one meanwhile).
pub const PEERS_DRAIN_MAX: Duration = Duration::from_secs(3);
/// The group coordinator's last group-metadata writes.
pub const COORDINATOR_STOP_MAX: Duration = Duration::from_secs(3);
/// The follower fetchers ending (calls in flight are abandoned; appends finish).
pub const REPLICATION_STOP_MAX: Duration = Duration::from_secs(3);
/// Closing the logs (flushing the in-memory tails).
pub const LOGS_CLOSE_MAX: Duration = Duration::from_secs(8);
/// The whole stop, from the shards being told to stop until every executor has ended and
/// the stop report is sent: above the sum of the step bounds (22 s) and the stop report
/// (5 s), so only a step that could not be bounded trips it.
pub const STOP_MAX: Duration = Duration::from_secs(30);

/// Where each executor of the node is in its stop, for the watchdog's report.
#[derive(Debug, Default)]
pub struct StopSteps {
    /// (executor name, step, since) per executor still stopping.
    current: Mutex<Vec<(String, &'static str, Instant)>>,
    /// Set once every executor has ended (the watchdog then stands down).
    done: AtomicBool,
}

impl StopSteps {
    pub fn new() -> Arc<StopSteps> {
        Arc::new(StopSteps::default())
    }

    /// `who` is now in `step`.
    pub fn enter(&self, who: &str, step: &'static str) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.retain(|(w, _, _)| w != who);
        current.push((who.to_string(), step, Instant::now()));
    }

    /// `who` has ended.
    pub fn leave(&self, who: &str) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.retain(|(w, _, _)| w != who);
    }

    /// Every executor has ended.
    pub fn finished(&self) {
        self.done.store(true, Ordering::SeqCst);
    }

    /// "shard1: connections for 5012 ms, control: running for ...".
    fn describe(&self) -> String {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.is_empty() {
            return "none (the stop report)".into();
        }
        current
            .iter()
            .map(|(who, step, since)| {
                format!("{who}: {step} for {} ms", since.elapsed().as_millis())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Runs one stop step of `who` bounded by `bound`, logging its duration; `None` when the
/// bound passed first (logged at WARN: the step is left behind).
pub async fn step<T>(
    steps: &StopSteps,
    who: &str,
    step: &'static str,
    bound: Duration,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    steps.enter(who, step);
    let started = Instant::now();
    let outcome = futures_lite::future::or(async { Some(work.await) }, async {
        glommio::timer::sleep(bound).await;
        None
    })
    .await;
    let took_ms = started.elapsed().as_millis() as u64;
    match &outcome {
        Some(_) => tracing::info!(executor = who, step, took_ms, "stop step done"),
        None => tracing::warn!(
            executor = who,
            step,
            bound_ms = bound.as_millis() as u64,
            "stop step did not finish within its bound; going on without it (recovery covers the rest)"
        ),
    }
    outcome
}

/// Starts the watchdog: once `stop` is set, the node has `STOP_MAX` to finish
/// (`StopSteps::finished`), or it is ended with status 1 after an ERROR line naming the
/// executors still stopping and their steps.
pub fn watchdog(stop: Arc<AtomicBool>, steps: Arc<StopSteps>) {
    let spawned = std::thread::Builder::new()
        .name("stop-watchdog".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if steps.done.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let deadline = Instant::now() + STOP_MAX;
            while Instant::now() < deadline {
                if steps.done.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            tracing::error!(
                bound_ms = STOP_MAX.as_millis() as u64,
                still = %steps.describe(),
                "the stop did not finish within its bound; exiting anyway (recovery covers the rest)"
            );
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no stop watchdog: a hung stop would not be cut short");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_past_its_bound_is_left_behind_and_one_within_it_returns_its_value() {
        let steps = StopSteps::new();
        let s = steps.clone();
        let (slow, quick) = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let slow = step(&s, "shard0", "hangs", Duration::from_millis(20), async {
                    futures_lite::future::pending::<()>().await
                })
                .await;
                let quick = step(&s, "shard0", "quick", Duration::from_secs(10), async { 7 }).await;
                (slow, quick)
            })
            .expect("executor")
            .join()
            .expect("join");
        assert_eq!(slow, None);
        assert_eq!(quick, Some(7));
        assert!(
            steps.describe().contains("shard0: quick"),
            "{}",
            steps.describe()
        );
        steps.leave("shard0");
        assert_eq!(steps.describe(), "none (the stop report)");
    }

    #[test]
    fn the_step_bounds_fit_in_the_whole_stop_bound() {
        let sum = CONNECTIONS_DRAIN_MAX
            + PEERS_DRAIN_MAX
            + COORDINATOR_STOP_MAX
            + REPLICATION_STOP_MAX
            + LOGS_CLOSE_MAX;
        assert!(sum + Duration::from_secs(5) < STOP_MAX);
    }
}
