//! A shard's background tasks, each a named function: the stall watchdog's heartbeat, the
//! stop watcher, the metrics publisher, retention and compaction, and (shard 0) the
//! topic changes the logs follow.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::broker::catalog::TopicChange;
use crate::broker::shard::{Shard, ShardOp, Traffic};
use crate::store::TopicPartition;

/// How often each shard publishes its partitions' figures for /metrics.
pub(super) const METRICS_PUBLISH_INTERVAL_MS: u64 = 1000;

/// CPU shares of the retention and compaction task queue (the default queue, where
/// requests run, has 1000).
pub(super) const MAINTENANCE_SHARES: usize = 100;

/// Period of the timer that keeps a starting shard's ring from sleeping unbounded.
pub(super) const STARTUP_TICK_MS: u64 = 20;

/// Places the partitions of topics nobody used yet (created, grown), so the placement
/// report shows every partition within a publishing interval of its creation.
pub(super) fn place_new_topics(shard: &Shard) {
    let snap = shard.placement.snapshot().1;
    for t in shard.catalog.list() {
        if snap.placed(&t.name) < t.partitions.max(0) as usize {
            shard.placement.place(&t.name, t.partitions, 0);
        }
    }
}

/// Copies this shard's partition, traffic and memory figures to where /metrics and the
/// placement report read them; rates are over `interval_s` since `before` (the counters
/// at the last publish, replaced).
pub(super) fn publish_metrics(
    shard: &Shard,
    before: &mut HashMap<TopicPartition, Traffic>,
    interval_s: u64,
) {
    let now = shard.traffic.borrow().clone();
    let per_s = |new: u64, old: u64| new.saturating_sub(old) / interval_s.max(1);
    let mut shard_bytes_in_per_s = 0;
    let partitions: Vec<_> = shard
        .logs
        .partitions()
        .into_iter()
        .filter_map(|tp| {
            let log = shard.logs.get(&tp)?;
            let t = now.get(&tp).copied().unwrap_or_default();
            let b = before.get(&tp).copied().unwrap_or_default();
            let traffic = crate::admin::metrics::TrafficStat {
                bytes_in_total: t.bytes_in,
                bytes_out_total: t.bytes_out,
                produce_requests_total: t.produce_requests,
                fetch_requests_total: t.fetch_requests,
                bytes_in_per_s: per_s(t.bytes_in, b.bytes_in),
                bytes_out_per_s: per_s(t.bytes_out, b.bytes_out),
                produce_requests_per_s: per_s(t.produce_requests, b.produce_requests),
                fetch_requests_per_s: per_s(t.fetch_requests, b.fetch_requests),
            };
            shard_bytes_in_per_s += traffic.bytes_in_per_s;
            Some(crate::admin::metrics::PartitionStat {
                log_start_offset: log.log_start_offset().0,
                log_end_offset: log.log_end_offset().0,
                high_watermark: shard.high_watermark(&tp, &log).0,
                last_stable_offset: log.last_stable_offset(shard.high_watermark(&tp, &log)).0,
                size_bytes: log.size_bytes(),
                segments: log.segment_count(),
                partition: tp.partition.0,
                topic: tp.topic,
                traffic,
            })
        })
        .collect();
    *before = now;
    shard.placement.publish_rate(shard.id, shard_bytes_in_per_s);
    if shard.id == 0 {
        place_new_topics(shard);
    }
    let resources = shard.logs.shard();
    let stat = crate::admin::metrics::ShardStat {
        partitions: partitions.len(),
        queues: shard.queue_stats(),
        tail_cache_bytes: resources.cache_bytes(),
        write_pending_bytes: resources.pending_bytes(),
        under_replicated: shard.replicas.under_replicated(),
        isr_shrinks: shard.replicas.counters().isr_shrinks,
        isr_expands: shard.replicas.counters().isr_expands,
        connections: shard.connections.get(shard.id),
    };
    crate::admin::metrics::publish_shard(shard.id, stat, partitions);
}

pub(super) async fn apply_topic_change(shard: &Rc<Shard>, change: TopicChange) {
    let op = || match &change {
        TopicChange::Deleted { name, partitions } => ShardOp::DeleteTopic {
            name: name.clone(),
            partitions: *partitions,
        },
        TopicChange::Configs { name } => ShardOp::ApplyConfig {
            topic: name.clone(),
        },
    };
    let calls = (0..shard.count).map(|s| (s, op())).collect();
    shard.call_all(calls).await;
    if let TopicChange::Deleted { name, .. } = &change {
        // A topic created again under the name is placed anew.
        shard.placement.forget_topic(name);
    }
    tracing::info!(change = ?change, "applied metadata change to the logs");
}

/// Ticks every `STARTUP_TICK_MS` while `starting` holds (see `start_shard`).
pub(super) async fn startup_tick(starting: Rc<std::cell::Cell<bool>>) {
    while starting.get() {
        glommio::timer::sleep(Duration::from_millis(STARTUP_TICK_MS)).await;
    }
}

/// The stall watchdog's heartbeat: it runs only when the reactor gets to its task queues
/// (see `watchdog`). It beats through the stop too (the executor drops it when
/// `shard_main` returns, and `ShardExit` marks the slot stopped): a shard busy with its
/// bounded stop steps is not stalled, and must not be reported so.
pub(super) async fn watchdog_heartbeat(interval: Duration) {
    loop {
        crate::broker::watchdog::beat();
        glommio::timer::sleep(interval).await;
    }
}

/// Sets the shard's `stopping` flag once the server's stop is asked for.
///
/// A poll, on purpose: `stop` is set from threads outside every executor (the caller of
/// `Server::stop`, a signal handler, a panicking shard's `ShardExit`, the control thread).
/// None of them holds a connected glommio shared-channel sender to this shard, and waking
/// this task any other way would hand its waker to another thread, which the mesh rule
/// forbids (see `broker::shard`). The 50 ms bound only delays the start of a stop.
pub(super) async fn stop_watcher(shard: Rc<Shard>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    shard.stopping.set();
}

/// Per-partition figures for /metrics: the admin thread cannot read shard state, so each
/// shard publishes a copy every `METRICS_PUBLISH_INTERVAL_MS`.
pub(super) async fn metrics_publisher(shard: Rc<Shard>) {
    let mut before = HashMap::new();
    loop {
        publish_metrics(&shard, &mut before, METRICS_PUBLISH_INTERVAL_MS / 1000);
        let stopped = shard
            .sleep_or_stop(Duration::from_millis(METRICS_PUBLISH_INTERVAL_MS))
            .await;
        if stopped {
            break;
        }
    }
}

/// Starts `maintenance` in its own low-share task queue: when the shard is busy, produce
/// and fetch get the CPU first (compaction yields between reads).
pub(super) fn spawn_maintenance(shard: &Rc<Shard>) {
    let queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(MAINTENANCE_SHARES),
        glommio::Latency::NotImportant,
        "maintenance",
    );
    match glommio::spawn_local_into(maintenance(shard.clone()), queue) {
        Ok(task) => {
            task.detach();
        }
        Err(e) => {
            tracing::error!(error = %e, "retention and compaction task did not start")
        }
    }
}

/// Retention: deletes whole segments past retention.ms / retention.bytes; then compacts
/// the logs whose cleanup.policy includes compact. Every
/// `retention_check_interval_ms` until the shard stops.
pub(super) async fn maintenance(shard: Rc<Shard>) {
    let interval = Duration::from_millis(shard.config.retention_check_interval_ms.max(1));
    loop {
        let stopped = shard.sleep_or_stop(interval).await;
        if stopped {
            break;
        }
        let now_ms = sluice_engine::now_ms();
        let outcome = shard.logs.enforce_retention(now_ms).await;
        if outcome.segments_deleted > 0 {
            tracing::info!(
                segments = outcome.segments_deleted,
                bytes = outcome.bytes_deleted,
                "retention"
            );
        }
        let (segments, bytes) = shard.logs.compact(now_ms).await;
        if segments > 0 {
            tracing::info!(segments, bytes, "compaction");
        }
    }
}

/// Shard 0: logs follow the metadata image — topics deleted or reconfigured through the
/// controller (by any broker) are applied on every shard.
///
/// Log work is queued on the control thread before the ring that follows it (a
/// publication, or the end of the legacy import): reading the ring count before taking
/// the queue means work queued after the take rings past that count.
pub(super) async fn follow_log_work(shard: Rc<Shard>) {
    while !shard.stopping.is_set() {
        let seen = shard.cluster.rings();
        for change in shard.cluster.view.take_log_work() {
            apply_topic_change(&shard, change).await;
        }
        futures_lite::future::or(shard.cluster.wait_ring_after(seen), shard.stopping.wait()).await;
    }
}
