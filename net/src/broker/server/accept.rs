//! Accepting client connections: wait until this broker is serving, bound connections,
//! balance them between shards.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use glommio::net::TcpListener;

use crate::broker::cluster::BrokerState;
use crate::broker::shard::{Shard, ShardOp, ShardReply};

/// How often a shard still waiting to accept clients says so.
pub(super) const SERVING_WAIT_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Clients are answered from the metadata image, so a shard accepts only once that image
/// shows this broker registered (the registration it holds now, not one replayed from
/// before a restart) and unfenced, with its listener. Before that a Metadata answer would
/// list no broker at all on a fresh cluster (librdkafka: `Local: Partial response`), or
/// not this one, and call every topic unknown before the first image (a client told
/// "unknown topic" may not ask again for minutes). Kafka's brokers likewise open their
/// request processing only after their initial unfencing. The kernel queues connections
/// meanwhile; a broker that cannot reach its controllers keeps waiting and says so.
pub(super) async fn wait_serving(shard: &Shard) {
    let started = std::time::Instant::now();
    loop {
        // The control thread rings after each publication and each broker state change,
        // so a change after this read moves the count past it.
        let seen = shard.cluster.rings();
        if serving_ready(shard) || shard.stopping.is_set() {
            return;
        }
        let warn = glommio::timer::sleep(SERVING_WAIT_WARN_INTERVAL);
        let changed = async {
            futures_lite::future::or(shard.cluster.wait_ring_after(seen), shard.stopping.wait())
                .await;
            true
        };
        let rang = futures_lite::future::or(changed, async {
            warn.await;
            false
        })
        .await;
        if !rang {
            tracing::warn!(
                waited_s = started.elapsed().as_secs(),
                state = ?shard.cluster.view.broker_state(),
                "not registered and unfenced in the metadata image yet; not accepting clients"
            );
        }
    }
}

/// Whether this node's image shows this broker as the controller last answered it:
/// active, under the epoch of its current registration, with a listener.
pub(super) fn serving_ready(shard: &Shard) -> bool {
    let BrokerState::Active(epoch) = shard.cluster.view.broker_state() else {
        return false;
    };
    let image = shard.cluster.image();
    image
        .broker(sluice_control::BrokerId(shard.config.node_id))
        .is_some_and(|b| b.epoch == epoch && !b.fenced && !b.listeners.is_empty())
}

/// Accepts on one Kafka listener (`index` into `Security::listeners`) until the stop.
pub(super) async fn accept_loop(shard: &Rc<Shard>, listener: &TcpListener, index: usize) {
    wait_serving(shard).await;
    let limits = crate::broker::shard::ConnectionLimits {
        per_shard_max: shard.config.connections_max_per_shard,
        total_max: shard.config.connections_max,
        per_ip_max: shard.config.connections_max_per_ip,
    };
    let mut refused_log = RefusedLog::new();
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.stopping.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                // Out of descriptors and the like: back off instead of spinning.
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            // Reset before we got to it: nothing to serve.
            continue;
        };
        let target = shard.connections.target_for(shard.id);
        let slot = match shard.connections.reserve(target, peer.ip(), limits) {
            Ok(slot) => slot,
            Err(refusal) => {
                crate::admin::metrics::connection_refused(refusal as usize);
                refused_log.note(refusal, peer, limits);
                drop(stream);
                continue;
            }
        };
        if target == shard.id {
            crate::kafka::conn::spawn(shard.clone(), stream, slot, index);
        } else {
            hand_off(shard, stream, slot, index);
        }
    }
}

/// How often a shard logs the connections it refused (one line per interval, with the
/// count since the last), so a connection flood cannot flood the log.
pub(super) const REFUSED_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The refused-connection log line of one shard's accept loop, rate-limited.
pub(super) struct RefusedLog {
    next_at: std::time::Instant,
    suppressed: u64,
}

impl RefusedLog {
    fn new() -> Self {
        RefusedLog {
            next_at: std::time::Instant::now(),
            suppressed: 0,
        }
    }

    fn note(
        &mut self,
        refusal: crate::broker::shard::ConnectionRefusal,
        peer: SocketAddr,
        limits: crate::broker::shard::ConnectionLimits,
    ) {
        let now = std::time::Instant::now();
        if now < self.next_at {
            self.suppressed += 1;
            return;
        }
        self.next_at = now + REFUSED_LOG_INTERVAL;
        tracing::warn!(
            %peer,
            limit = refusal.as_str(),
            per_shard_max = limits.per_shard_max,
            total_max = limits.total_max,
            per_ip_max = limits.per_ip_max,
            refused_since_last_line = std::mem::take(&mut self.suppressed),
            "connection limit reached, closing new connection"
        );
    }
}

/// Sends an accepted connection to the shard its `slot` was taken on without holding up
/// this shard's accept loop; a failed hand-off closes it and frees the slot.
pub(super) fn hand_off(
    shard: &Rc<Shard>,
    stream: glommio::net::TcpStream,
    slot: crate::broker::shard::ConnectionSlot,
    listener: usize,
) {
    use std::os::fd::{AsRawFd, BorrowedFd};
    let target = slot.shard();
    // glommio's stream has no into_raw_fd: keep a duplicate of the descriptor and close
    // this executor's (the socket lives on through the duplicate).
    // SAFETY: `stream` owns this open descriptor and outlives the borrow.
    let borrowed = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let duplicate = borrowed.try_clone_to_owned();
    drop(stream);
    let socket = match duplicate {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(to = target, error = %e, "could not hand a connection over, closing it");
            return;
        }
    };
    let s = shard.clone();
    glommio::spawn_local(async move {
        // On failure the operation, and the slot in it, are dropped: the place is freed.
        match s
            .call(
                target,
                ShardOp::Adopt {
                    socket,
                    slot,
                    listener,
                },
            )
            .await
        {
            ShardReply::Done => {}
            other => {
                tracing::warn!(to = target, reply = ?other, "connection hand-off failed, closed");
            }
        }
    })
    .detach();
}
