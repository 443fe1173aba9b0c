//! Controlled shutdown: hand this broker's leaderships over before it stops, and report
//! it stopped afterwards. Every step is bounded; a controller that does not answer gets a
//! WARN and the broker stops anyway.

use std::time::{Duration, Instant};

use sluice_control::rpc::{Reply, Request};
use sluice_control::{BrokerId, MetadataImage, NodeId};

use super::controller::ask_controller;
use super::controller_blocking::ask_controller_blocking;
use super::{BrokerState, ClusterView};

/// Partitions named one by one in the controlled shutdown's log lines (the rest counted).
pub(super) const SHUTDOWN_LOG_PARTITIONS_MAX: usize = 20;

/// Controlled shutdown: asks the active controller to move this broker's leaderships to
/// other in-sync replicas and take it out of every ISR (`Request::ShutdownBroker`), waits
/// (all bounded by `timeout`) until this node's image has the change, and logs what moved
/// and what stayed (partitions with no other in-sync replica). A controller that cannot
/// be reached or refuses gets a WARN; the broker stops anyway.
pub async fn controlled_shutdown(view: &ClusterView, me: BrokerId, timeout: Duration) {
    let epoch = match view.broker_state() {
        BrokerState::Fenced(e) | BrokerState::Active(e) => e,
        BrokerState::Unregistered => {
            tracing::info!("controlled shutdown: not registered, nothing to hand over");
            return;
        }
    };
    let started = Instant::now();
    let before = view.image();
    let req = Request::ShutdownBroker { broker: me, epoch };
    let offset = match ask_controller(view, &req, timeout).await {
        Ok(Reply::Done { offset }) => offset.0,
        Ok(Reply::Error { kind, message }) => {
            tracing::warn!(?kind, %message, "controlled shutdown refused by the controller; stopping anyway");
            return;
        }
        Ok(other) => {
            tracing::warn!(answer = ?other, "unexpected controller answer to a controlled shutdown; stopping anyway");
            return;
        }
        Err((_, message)) => {
            tracing::warn!(%message, timeout_ms = timeout.as_millis() as u64, "controlled shutdown: no controller answered; stopping without handing leaderships over");
            return;
        }
    };
    let left = timeout.saturating_sub(started.elapsed());
    let watch = super::bell::control_version();
    if !super::bell::wait_until(&watch, view, offset, left).await {
        tracing::warn!(
            offset,
            "controlled shutdown: the image did not reach the change in time; stopping anyway"
        );
        return;
    }
    log_handover(&before, &view.image(), me, started.elapsed());
}

/// The end of a controlled shutdown, once the shards no longer serve: tells the active
/// controller this broker is gone (`Request::BrokerStopped`), so the partitions only it
/// held go offline at once, waiting for it, instead of after the session timeout. Blocking
/// (the control thread has stopped), bounded by `timeout`; a failure is logged, and the
/// session timeout fences the broker as after a crash.
pub fn report_stopped(view: &ClusterView, timeout: Duration) {
    if !view.shutdown_done() {
        return;
    }
    let epoch = match view.broker_state() {
        BrokerState::Fenced(e) | BrokerState::Active(e) => e,
        BrokerState::Unregistered => return,
    };
    let me = BrokerId(view.node_id);
    let own = NodeId(view.node_id as u64);
    if view.controllers().iter().all(|(id, _)| *id == own) {
        // Its own controller stopped with it: nobody is left to tell (a single node).
        return;
    }
    match ask_controller_blocking(view, &Request::BrokerStopped { broker: me, epoch }, timeout) {
        Ok(Reply::Done { .. }) => {
            tracing::info!("reported stopped: partitions no other in-sync replica holds are offline until this broker returns");
        }
        Ok(other) => {
            tracing::warn!(answer = ?other, "the controller did not take the stop report; the session timeout fences this broker")
        }
        Err(message) => {
            tracing::warn!(%message, "no controller took the stop report; the session timeout fences this broker")
        }
    }
}

/// Logs which partitions this broker led before the controlled shutdown and who leads
/// them now.
pub(super) fn log_handover(
    before: &MetadataImage,
    after: &MetadataImage,
    me: BrokerId,
    took: Duration,
) {
    let mut moved = Vec::new();
    let mut kept = Vec::new();
    for (t, idx, p) in before.partitions() {
        if p.leader != Some(me) {
            continue;
        }
        let now = after
            .topic(t.id)
            .and_then(|t| t.partitions.get(&idx))
            .and_then(|p| p.leader);
        let name = format!("{}-{}", t.name, idx.0);
        match now {
            Some(l) if l != me => moved.push(format!("{name}->{l}")),
            _ => kept.push(name),
        }
    }
    let (moved_count, kept_count) = (moved.len(), kept.len());
    moved.truncate(SHUTDOWN_LOG_PARTITIONS_MAX);
    kept.truncate(SHUTDOWN_LOG_PARTITIONS_MAX);
    tracing::info!(
        moved = moved_count,
        kept = kept_count,
        took_ms = took.as_millis() as u64,
        leaders = %moved.join(" "),
        no_other_in_sync_replica = %kept.join(" "),
        "controlled shutdown: leaderships handed over"
    );
}
