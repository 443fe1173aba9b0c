//! The broker agent (on the control thread): registers this broker, heartbeats, registers
//! again when asked, imports legacy topics once active, and runs the controlled shutdown
//! when `StopHandle::stop` asks for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_control::rpc::{self, Reply, Request};
use sluice_control::{BrokerId, HeartbeatReply, Listener};

use super::controlled_shutdown::controlled_shutdown;
use super::controller::RETRY_PAUSE;
use super::legacy_import::import_legacy_topics;
use super::view::SHUTDOWN_DONE;
use super::{BrokerState, ClusterView};
use crate::broker::config::ServerConfig;

/// Heartbeat interval while fenced (waiting to be unfenced).
pub(super) const FENCED_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(20);

/// Registers this broker, then heartbeats every `broker_heartbeat_interval_ms`; registers
/// again when the controller asks; imports legacy topics once active.
pub(super) async fn broker_agent(
    view: Arc<ClusterView>,
    config: Arc<ServerConfig>,
    stop: Arc<AtomicBool>,
) {
    let interval = Duration::from_millis(config.cluster.broker_heartbeat_interval_ms.max(1));
    let timeout = interval.max(Duration::from_millis(500)) * 2;
    let me = BrokerId(config.node_id);
    let register = Request::Register {
        broker: me,
        rack: config.cluster.rack.clone(),
        // Every listener, PLAINTEXT first: followers fetch from a leader's first listener.
        listeners: config
            .all_listeners()
            .into_iter()
            .map(|l| Listener {
                name: l.name,
                host: l.advertised_host,
                port: l.advertised_port,
            })
            .collect(),
    };
    // Credentials written before the first start (`sluice user add --data-dir`).
    let mut bootstrap_pending = true;
    while !stop.load(Ordering::SeqCst) {
        if view.shutdown_asked() {
            // From here on no heartbeat and no registration: a broker shutting down must
            // not be unfenced (its leaderships moved away for good).
            let timeout = Duration::from_millis(config.cluster.controlled_shutdown_timeout_ms);
            controlled_shutdown(&view, me, timeout).await;
            view.shutdown.store(SHUTDOWN_DONE, Ordering::SeqCst);
            return;
        }
        let state = view.broker_state();
        let req = match state {
            BrokerState::Unregistered => register.clone(),
            BrokerState::Fenced(epoch) | BrokerState::Active(epoch) => {
                Request::Heartbeat { broker: me, epoch }
            }
        };
        match rpc::call(view.controller_addr(), view.cluster_tls(), &req, timeout).await {
            Ok(Reply::Registered { epoch }) => {
                view.set_broker_state(BrokerState::Fenced(epoch));
                continue;
            }
            Ok(Reply::Heartbeat { state: hb, quorum }) => {
                view.set_quorum(quorum);
                let epoch = match state {
                    BrokerState::Fenced(e) | BrokerState::Active(e) => e,
                    BrokerState::Unregistered => continue,
                };
                match hb {
                    HeartbeatReply::Active => view.set_broker_state(BrokerState::Active(epoch)),
                    HeartbeatReply::Fenced => view.set_broker_state(BrokerState::Fenced(epoch)),
                    HeartbeatReply::RegisterAgain => {
                        view.set_broker_state(BrokerState::Unregistered);
                        continue;
                    }
                    // A controller that just took over has not applied our registration
                    // yet: keep serving as we are and ask again soon.
                    HeartbeatReply::NotYetKnown => {
                        pause_unless_shutdown(&view, FENCED_HEARTBEAT_INTERVAL).await;
                        continue;
                    }
                }
                if hb == HeartbeatReply::Active && view.importing() {
                    import_legacy_topics(&view, &config).await;
                }
                if hb == HeartbeatReply::Active && bootstrap_pending {
                    bootstrap_pending = !store_bootstrap_credentials(&view, &config, timeout).await;
                }
            }
            Ok(Reply::NotLeader { leader }) => {
                match leader {
                    Some(l) if view.controller_count() > 1 => view.point_at(l),
                    _ => view.rotate(),
                }
                glommio::timer::sleep(RETRY_PAUSE).await;
                continue;
            }
            Ok(other) => {
                tracing::warn!(answer = ?other, "unexpected controller answer to a heartbeat")
            }
            Err(e) => {
                tracing::debug!(error = %e, "controller unreachable; trying the next one");
                view.rotate();
                glommio::timer::sleep(RETRY_PAUSE).await;
                continue;
            }
        }
        // A fenced broker asks again soon: it is unfenced on the controller's next tick.
        let pause = match view.broker_state() {
            BrokerState::Active(_) => interval,
            _ => interval.min(FENCED_HEARTBEAT_INTERVAL),
        };
        pause_unless_shutdown(&view, pause).await;
    }
}

/// Sleeps `pause`, waking early when a controlled shutdown is asked for.
pub(super) async fn pause_unless_shutdown(view: &ClusterView, pause: Duration) {
    let deadline = Instant::now() + pause;
    while !view.shutdown_asked() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        glommio::timer::sleep(left.min(SHUTDOWN_POLL)).await;
    }
}

/// How often a pausing broker agent looks for a controlled shutdown request.
pub(super) const SHUTDOWN_POLL: Duration = Duration::from_millis(5);

/// Asks the controller to store each credential of the data dir's bootstrap file that the
/// image lacks, then marks the file applied. `true` once there is nothing (more) to do;
/// `false` to try again at the next heartbeat.
async fn store_bootstrap_credentials(
    view: &ClusterView,
    config: &ServerConfig,
    timeout: Duration,
) -> bool {
    use crate::security::bootstrap;
    let credentials = match bootstrap::read(&config.data_dir) {
        Ok(c) if c.is_empty() => return true,
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "bootstrap credentials not stored");
            return true;
        }
    };
    let image = view.image();
    for (user, mechanism, credential) in credentials {
        if image.scram_credential(&user, mechanism).is_some() {
            continue;
        }
        let req = Request::SetScram {
            user: user.clone(),
            mechanism,
            credential: Some(credential),
        };
        match rpc::call(view.controller_addr(), view.cluster_tls(), &req, timeout).await {
            Ok(Reply::Done { .. }) => {
                tracing::info!(user = %user, mechanism = mechanism.name(), "bootstrap credential stored");
            }
            other => {
                tracing::debug!(reply = ?other.map(|r| format!("{r:?}")), "bootstrap credential not stored yet");
                return false;
            }
        }
    }
    if let Err(e) = bootstrap::mark_applied(&config.data_dir) {
        tracing::warn!(error = %e, "bootstrap credentials stored but the file not marked applied");
    }
    true
}
