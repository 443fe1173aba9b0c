//! Start-up and shutdown: listeners, the channel mesh, one executor per shard.
//!
//! The listening sockets are all bound here, on the calling thread, before any executor
//! starts (SO_REUSEPORT, one per shard, same port), so a bad address fails start-up with a
//! clear error and an ephemeral port (`:0`) is the same for every shard.
//!
//! One file per job: `startup` (binding, the control thread, the shard executors),
//! `shard_main` (one shard's executor: start, serve, the bounded stop), `accept` (the
//! accept loop and connection balancing), `background` (each background task of a shard
//! as a named function). Here: the running `Server` and its `StopHandle`.

mod accept;
mod background;
mod shard_main;
mod startup;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::ExecutorJoinHandle;

use crate::broker::catalog::CatalogError;
use crate::broker::cluster::ClusterView;
use crate::broker::shutdown::StopSteps;
use crate::placement::PlacementError;

pub use startup::start;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("topic catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    Placement(#[from] PlacementError),
    /// A shard or the control thread ended with an error.
    #[error("{0}")]
    Executor(#[from] ExecutorError),
    #[error("{0}")]
    Tls(#[from] crate::security::tls::TlsError),
    #[error("{0}")]
    Runtime(String),
}

/// Why one shard could not start or stop cleanly (its `Ready` answer or its executor's
/// result). `Clone` because the start-up failure goes both to `Ready` and to the join.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ShardError {
    #[error("joining the shard mesh failed")]
    MeshJoin,
    #[error("shard {shard}: opening logs in {}: {source}", dir.display())]
    OpenLogs {
        shard: usize,
        dir: std::path::PathBuf,
        source: Arc<sluice_engine::LogError>,
    },
    #[error("shard {shard}: no version channel")]
    NoVersionChannel { shard: usize },
    #[error("shard {shard}: closing logs: {source}")]
    CloseLogs {
        shard: usize,
        source: Arc<sluice_engine::LogError>,
    },
}

/// How one of the node's executors (the control thread or a shard) ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error(transparent)]
    Control(#[from] crate::broker::cluster::ControlError),
}

/// A running node: a broker's shards (and its control thread), or only the controller.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    /// False on a controller-only node: no Kafka listener, `local_addr` is its quorum port.
    serves_kafka: bool,
    /// The shards' listeners and TLS settings (a broker only).
    security: Option<Arc<crate::security::Security>>,
    stop: Arc<AtomicBool>,
    handles: Vec<ExecutorJoinHandle<Result<(), ExecutorError>>>,
    /// This node's cluster view when it has the broker role (controlled shutdown).
    broker: Option<Arc<ClusterView>>,
    controlled_shutdown_timeout: Duration,
    /// Where each executor is in its stop (`shutdown`), watched from outside them.
    steps: Arc<StopSteps>,
    /// `[cluster_tls]`: the node certificate of the cluster's own traffic.
    cluster_tls: Option<Arc<sluice_control::tls::ClusterTls>>,
}

pub(super) fn runtime_hint(err: &str) -> String {
    let lower = err.to_lowercase();
    if lower.contains("memlock") {
        format!(
            "{err}: the locked-memory limit is too low for io_uring. Raise it: `ulimit -l unlimited`, \
             `LimitMEMLOCK=infinity` in the systemd unit, or `--ulimit memlock=-1` for Docker"
        )
    } else if lower.contains("function not implemented")
        || lower.contains("operation not permitted")
        || lower.contains("uring")
    {
        format!(
            "{err}: io_uring is not available. It needs Linux 5.8 or newer with sysctl \
             kernel.io_uring_disabled=0; in a container, a seccomp profile that allows io_uring_setup"
        )
    } else {
        err.to_string()
    }
}

/// Stops a running server from any thread.
#[derive(Debug, Clone)]
pub struct StopHandle {
    stop: Arc<AtomicBool>,
    /// The cluster view of a node with the broker role: it hands its leaderships over
    /// before it stops.
    broker: Option<Arc<ClusterView>>,
    controlled_shutdown_timeout: Duration,
}

/// Longest the stop report after a controlled shutdown may take (`Server::join`).
pub(super) const STOP_REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Beyond the controlled shutdown's own timeout, how long `StopHandle::stop` waits for the
/// control thread to report it done (a hung control thread must not keep the broker up).
pub(super) const CONTROLLED_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl StopHandle {
    /// Controlled shutdown first (blocking, bounded by `controlled_shutdown_timeout_ms`
    /// plus a grace): the control thread asks the controller to move this broker's
    /// leaderships away and waits until its image shows it (`cluster::controlled_shutdown`);
    /// then every shard stops accepting, finishes in-flight requests and closes its logs.
    pub fn stop(&self) {
        if let Some(view) = self
            .broker
            .as_ref()
            .filter(|_| !self.controlled_shutdown_timeout.is_zero())
        {
            view.request_shutdown();
            let deadline = std::time::Instant::now()
                + self.controlled_shutdown_timeout
                + CONTROLLED_SHUTDOWN_GRACE;
            while !view.shutdown_done() && !self.stop.load(Ordering::SeqCst) {
                if std::time::Instant::now() >= deadline {
                    tracing::warn!("controlled shutdown did not finish in time; stopping anyway");
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Server {
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            stop: self.stop.clone(),
            broker: self.broker.clone(),
            controlled_shutdown_timeout: self.controlled_shutdown_timeout,
        }
    }

    /// The address the Kafka listeners are bound to (the real port when `:0` was asked
    /// for); on a controller-only node, its quorum listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Every Kafka listener as bound (advertised ports filled in); empty on a
    /// controller-only node.
    pub fn listeners(&self) -> Vec<crate::security::ListenerConfig> {
        self.security
            .as_ref()
            .map(|s| s.listeners.clone())
            .unwrap_or_default()
    }

    /// The TLS settings in force when a listener uses TLS: `Tls::reload` (on SIGHUP)
    /// reads the certificate, key and client CAs again for new connections.
    pub fn tls(&self) -> Option<Arc<crate::security::tls::Tls>> {
        self.security.as_ref().and_then(|s| s.tls.clone())
    }

    /// `[cluster_tls]` in force: `ClusterTls::reload` (on SIGHUP) reads the node
    /// certificate, key and cluster CA again for new connections between nodes.
    pub fn cluster_tls(&self) -> Option<Arc<sluice_control::tls::ClusterTls>> {
        self.cluster_tls.clone()
    }

    /// Whether this node serves Kafka clients (has the broker role).
    pub fn serves_kafka(&self) -> bool {
        self.serves_kafka
    }

    /// Asks every shard to stop accepting, finish in-flight requests and close its logs, at
    /// once (no controlled shutdown: `stop_handle().stop()` does one first).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits for every shard to finish; after a controlled shutdown, then reports the
    /// broker stopped to the controller (`cluster::report_stopped`).
    pub fn join(self) -> Result<(), ServerError> {
        let mut first = None;
        // The control thread first (index 0), then the shards in creation order; each
        // shard names its own stop steps once it reaches them.
        let names: Vec<String> = (0..self.handles.len())
            .map(|i| match i {
                0 => "control".to_string(),
                i => format!("shard{}", i - 1),
            })
            .collect();
        for name in &names {
            self.steps.enter(name, "running");
        }
        for (h, name) in self.handles.into_iter().zip(&names) {
            let r = match h.join() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(ServerError::Executor(e)),
                Err(e) => Err(ServerError::Runtime(runtime_hint(&e.to_string()))),
            };
            self.steps.leave(name);
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        }
        if let Some(view) = &self.broker {
            self.steps.enter("node", "stop report");
            crate::broker::cluster::report_stopped(
                view,
                self.controlled_shutdown_timeout.min(STOP_REPORT_TIMEOUT),
            );
            self.steps.leave("node");
        }
        self.steps.finished();
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
