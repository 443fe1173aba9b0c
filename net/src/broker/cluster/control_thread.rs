//! The control thread: the controller quorum member (controller role), the broker agent
//! (broker role), and for a broker whose own controller gets no log, the image fetched
//! from the quorum.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_control::rpc::{self, Reply, Request};
use sluice_control::{MetadataImage, NodeId};

use super::agent::broker_agent;
use super::controller::{CONTROLLER_REQUEST_TIMEOUT, RETRY_PAUSE};
use super::ClusterView;
use crate::broker::config::ServerConfig;

/// How long a broker that is not a controller waits in one image fetch.
pub(super) const IMAGE_FETCH_WAIT_MS: u32 = 5_000;

/// How often a broker whose own controller follows the log checks that it still does.
pub(super) const MEMBER_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Everything the control thread needs.
pub(crate) struct ControlArgs {
    pub view: Arc<ClusterView>,
    pub config: Arc<ServerConfig>,
    /// The quorum listener (bound by `server::start`), when this node is a controller.
    pub listener: Option<std::os::fd::RawFd>,
    pub stop: Arc<AtomicBool>,
    /// The control thread's ends of the shards' version channels (`bell`).
    pub ringers: Vec<glommio::channels::shared_channel::SharedSender<()>>,
}

/// Why the control thread ended with an error (it stops the broker).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("controller stopped: {0}")]
    ControllerStopped(#[from] sluice_control::ControllerError),
}

/// The control thread: the controller quorum member (controller role), the broker's
/// registration and heartbeats (broker role), and for a broker that is not a controller,
/// the image fetched from the quorum.
pub(crate) async fn control_main(mut args: ControlArgs) -> Result<(), ControlError> {
    super::bell::connect_ringers(std::mem::take(&mut args.ringers));
    let stop = args.stop.clone();
    // A poll, as the shards' stop watcher: `stop` is set from threads outside every
    // executor, which cannot wake a glommio task without handing its waker across threads.
    let stopped = move || {
        let stop = stop.clone();
        async move {
            while !stop.load(Ordering::SeqCst) {
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let cluster = &args.config.cluster;
    let mut tasks = Vec::new();
    if cluster.roles.broker {
        tasks.push(
            glommio::spawn_local(broker_agent(
                args.view.clone(),
                args.config.clone(),
                args.stop.clone(),
            ))
            .detach(),
        );
    }
    let result = match args.listener {
        Some(fd) => {
            use std::os::fd::FromRawFd;
            // SAFETY: `fd` is the quorum listener bound by `server::start`, owned by nobody
            // else; ownership passes to this listener.
            let listener = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
            let node = node_config(&args);
            let view = args.view.clone();
            let publish: sluice_control::node::Publish = Box::new(move |ctl| {
                view.set_controller_member(ctl.is_member());
                view.publish(ctl.image());
                view.set_quorum(sluice_control::node::quorum_status(ctl));
            });
            if cluster.roles.broker {
                // A controller waiting to be added (or removed) gets no log: meanwhile its
                // broker follows the image from the quorum, as a broker-only node does.
                let follow = follow_image(args.view.clone(), args.stop.clone(), true);
                tasks.push(glommio::spawn_local(follow).detach());
            }
            sluice_control::node::run(node, listener, publish, stopped())
                .await
                .map_err(ControlError::ControllerStopped)
        }
        None => {
            tasks.push(
                glommio::spawn_local(follow_image(args.view.clone(), args.stop.clone(), false))
                    .detach(),
            );
            stopped().await;
            Ok(())
        }
    };
    for t in tasks {
        t.cancel();
    }
    super::bell::disconnect();
    if let Err(e) = &result {
        tracing::error!(error = %e, "control thread failed: stopping the broker");
        args.stop.store(true, Ordering::SeqCst);
    }
    result
}

pub(super) fn node_config(args: &ControlArgs) -> sluice_control::node::NodeConfig {
    let c = &args.config.cluster;
    sluice_control::node::NodeConfig {
        id: NodeId(args.config.node_id as u64),
        dir: args.config.data_dir.join(METADATA_DIR),
        quorum: args.view.configured.clone(),
        tick_ms: c.controller_tick_ms.max(1),
        broker: sluice_control::BrokerControlConfig {
            session_timeout_ms: c.broker_session_timeout_ms,
            auto_leader_rebalance: c.auto_leader_rebalance,
        },
        tcp: sluice_control::tcp::TcpConfig {
            tls: args.view.cluster_tls_arc(),
            ..sluice_control::tcp::TcpConfig::default()
        },
        commit_timeout_ms: CONTROLLER_REQUEST_TIMEOUT.as_millis() as u64,
    }
}

/// The controller's files, inside the data dir (not a partition directory name).
pub const METADATA_DIR: &str = "__cluster_metadata";

/// A broker that is not a controller follows the image by long-polling the quorum; with
/// `unless_member`, only while this node's own controller is not in the configuration.
pub(super) async fn follow_image(
    view: Arc<ClusterView>,
    stop: Arc<AtomicBool>,
    unless_member: bool,
) {
    let timeout = Duration::from_millis(u64::from(IMAGE_FETCH_WAIT_MS) + 5_000);
    while !stop.load(Ordering::SeqCst) {
        if unless_member && !view.own_controller_outside() {
            glommio::timer::sleep(MEMBER_CHECK_INTERVAL).await;
            continue;
        }
        let req = Request::FetchImage {
            have: sluice_control::MetadataOffset(view.version()),
            wait_ms: IMAGE_FETCH_WAIT_MS,
        };
        match rpc::call(view.controller_addr(), view.cluster_tls(), &req, timeout).await {
            Ok(Reply::Image { snapshot }) if snapshot.is_empty() => {}
            Ok(Reply::Image { snapshot }) => match MetadataImage::decode_snapshot(&snapshot) {
                Ok(image) => view.publish(Arc::new(image)),
                Err(e) => {
                    tracing::warn!(error = %e, "bad image from the controller");
                    view.rotate();
                    glommio::timer::sleep(RETRY_PAUSE).await;
                }
            },
            other => {
                tracing::debug!(answer = ?other.map(|_| ()), "image fetch failed; trying the next controller");
                view.rotate();
                glommio::timer::sleep(RETRY_PAUSE).await;
            }
        }
    }
}
