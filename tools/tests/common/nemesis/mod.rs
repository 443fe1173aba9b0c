//! Fault testing in the manner of Jepsen, on real `sluice serve` processes (issue #25):
//!
//! - [`proxy`]: a fault-injecting TCP proxy, one listener per node and plane, faults per
//!   directed link (black-hole, reject, delay, reset, one-way);
//! - [`net`]: a cluster wired through those proxies (advertised Kafka addresses and each
//!   node's view of the controller quorum point at them);
//! - [`faults`]: process and network faults aimed at leaders, followers, the active
//!   controller or several nodes, and a seeded schedule of them;
//! - [`workload`]: idempotent acks=all producers and a consumer group, every operation
//!   recorded in a [`history`];
//! - [`checker`]: the whole history checked for lost, duplicated, reordered, phantom and
//!   stale data, backwards readers and commits, and unavailability per fault kind.
//!
//! [`run`] puts them together; `tools/tests/nemesis.rs` runs it briefly,
//! `tools/tests/nemesis/run.sh MINUTES SEED` for long.

pub mod checker;
pub mod faults;
pub mod history;
pub mod net;
pub mod proxy;
pub mod workload;

use std::time::Duration;

use crate::common::cluster::ClusterSpec;
use crate::common::{create_topic_at, HANG_GUARD};
use checker::Report;
use faults::{Nemesis, ScheduleSpec};
use workload::{read_back, Workload, WorkloadSpec};

/// One run: a cluster, the workload, the schedule, the read-back, the check.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub name: String,
    pub schedule: ScheduleSpec,
    pub workload: WorkloadSpec,
}

/// Acknowledgements the workload must make before the first fault, after each heal and
/// after the last one (the cluster serves again).
const PROGRESS_ACKS: u64 = 20;

/// Runs `spec` and checks its history; the report (its caller decides what fails).
pub fn run(spec: &RunSpec) -> Report {
    let cluster = ClusterSpec {
        session_timeout_ms: 3_000,
        cluster_toml: "replica_lag_time_max_ms = 2000".into(),
        ..ClusterSpec::default()
    };
    let w = &spec.workload;
    let mut nemesis = Nemesis::start(&spec.name, cluster, spec.schedule.seed, &w.topic);
    create_topic_at(
        &nemesis.cluster.bootstrap(),
        &w.topic,
        w.partitions,
        3,
        &[("min.insync.replicas", "2")],
    );
    let partitions = w.partitions as usize;
    nemesis.wait_healthy(partitions, 3);
    let history = nemesis.history.clone();
    let workload = Workload::start(&nemesis.net.bootstrap(), w.clone(), history.clone());
    workload.wait_progress("writes before the first fault", PROGRESS_ACKS, HANG_GUARD);
    nemesis.net.wait_wired(HANG_GUARD);
    nemesis.run_schedule(&spec.schedule, partitions, |kind| {
        workload.wait_progress(&format!("writes after {kind}"), PROGRESS_ACKS, HANG_GUARD);
    });
    let w = workload.stop();
    read_back(&nemesis.net.bootstrap(), &w, &history);
    let events = history.events();
    assert_eq!(history.dropped(), 0, "the history overflowed");
    let report = checker::check(&events);
    if let Some((partition, id)) = report.suspects.first() {
        // The history around the first anomaly, for its report (bounded: one partition,
        // a few seconds).
        let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("nemesis-{}-around-{id}.txt", spec.schedule.seed));
        let _ = std::fs::write(&path, checker::around(&events, *partition, *id));
        eprintln!(
            "nemesis: the history around id {id} of p{partition}: {}",
            path.display()
        );
    }
    let client_log = events
        .iter()
        .filter(|e| matches!(e.op, history::Op::ClientLog { .. }))
        .count();
    eprintln!(
        "figure: nemesis seed {} ran {:?}, {} events ({client_log} producer idempotence log lines), {} bytes through the proxies",
        spec.schedule.seed,
        history.elapsed(),
        events.len(),
        nemesis
            .net
            .links
            .forwarded_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    report
}

/// The seed from `SLUICE_NEMESIS_SEED`, else one from the clock (printed by the caller).
pub fn seed_from_env() -> u64 {
    std::env::var("SLUICE_NEMESIS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// The schedule's length from `SLUICE_NEMESIS_SECONDS`, else `default`.
pub fn duration_from_env(default: Duration) -> Duration {
    std::env::var("SLUICE_NEMESIS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(default, Duration::from_secs)
}
