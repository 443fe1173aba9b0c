//! Wake-ups for a new image version, instead of polling the version.
//!
//! Only the control thread publishes images (`ClusterView::publish`). Waiters on the control
//! thread wait on its own `OffsetWatch` of the version (`control_version`), advanced by
//! every publication. Each shard has one glommio shared channel from the control thread
//! (`ring` sends a unit into each, dropping it when one is already pending); the shard's
//! listener task (`listen`) advances the shard's own watch to the published version. No
//! task waker crosses threads: the shared channel signals the peer executor through its
//! notifier (see `broker::shard`).
//!
//! Invariant: a publication is followed by a ring of every connected channel, and each
//! channel rings once as soon as it is connected, so a waiter that checked the version
//! before its channel was connected still wakes. Other changes the shards wait for without
//! a new version (the broker state, log work queued by the legacy import) ring too, after
//! the change: the shard's count of rings (`rings`) moves past any value read before it.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::shared_channel::{self, ConnectedSender, SharedReceiver, SharedSender};
use sluice_engine::watch::OffsetWatch;

use super::ClusterView;

thread_local! {
    /// The connected senders of the shards' channels (on the control thread).
    static RINGERS: RefCell<Vec<ConnectedSender<()>>> = const { RefCell::new(Vec::new()) };
    /// This thread's watch of the published version (waited on by the control thread).
    static CONTROL_VERSION: OffsetWatch = OffsetWatch::new(0);
}

/// One channel per shard: the senders go to the control thread, the receivers to the shards.
pub(crate) fn channels(shards: usize) -> (Vec<SharedSender<()>>, Vec<SharedReceiver<()>>) {
    (0..shards).map(|_| shared_channel::new_bounded(1)).unzip()
}

/// On the control thread: connects each shard's channel (each completes once its shard
/// has connected its end), then rings it once.
pub(crate) fn connect_ringers(senders: Vec<SharedSender<()>>) {
    for sender in senders {
        glommio::spawn_local(async move {
            let connected = sender.connect().await;
            let _ = connected.try_send(());
            RINGERS.with(|r| r.borrow_mut().push(connected));
        })
        .detach();
    }
}

/// After a publication of `version` (on the control thread): advances the thread's watch
/// and rings every connected shard.
pub(super) fn ring(version: u64) {
    CONTROL_VERSION.with(|w| w.advance(version as i64));
    RINGERS.with(|r| {
        for sender in r.borrow().iter() {
            // Full: a ring is already pending, and the listener reads the latest version.
            let _ = sender.try_send(());
        }
    });
}

/// The control thread's watch of the published version.
pub(super) fn control_version() -> OffsetWatch {
    CONTROL_VERSION.with(|w| w.clone())
}

/// On a shard: connects its channel and, at each ring, advances `watch` to the published
/// version and counts the ring in `rings`, until the control thread is gone.
pub(super) async fn listen(
    receiver: SharedReceiver<()>,
    view: Arc<ClusterView>,
    watch: OffsetWatch,
    rings: OffsetWatch,
) {
    let receiver = receiver.connect().await;
    watch.advance(view.version() as i64);
    while receiver.recv().await.is_some() {
        watch.advance(view.version() as i64);
        rings.advance(rings.get() + 1);
    }
}

/// On the control thread, when it stops: disconnects every shard's channel (their listeners
/// end) while the executor still runs.
pub(crate) fn disconnect() {
    RINGERS.with(|r| r.borrow_mut().clear());
}

/// Waits until `view` publishes `offset`, woken through `watch` (this thread's watch of the
/// version), or `timeout` passes; whether the offset was reached.
pub(super) async fn wait_until(
    watch: &OffsetWatch,
    view: &ClusterView,
    offset: u64,
    timeout: Duration,
) -> bool {
    // The watch may lag a publication whose ring is still on its way.
    watch.advance(view.version() as i64);
    if view.version() >= offset {
        return true;
    }
    let reached = watch.wait_for(offset as i64);
    futures_lite::future::or(
        async {
            let _ = reached.await;
        },
        glommio::timer::sleep(timeout),
    )
    .await;
    view.version() >= offset
}
