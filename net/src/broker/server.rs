//! Start-up and shutdown: listeners, the channel mesh, one executor per shard.
//!
//! The listening sockets are all bound here, on the calling thread, before any executor
//! starts (SO_REUSEPORT, one per shard, same port), so a bad address fails start-up with a
//! clear error and an ephemeral port (`:0`) is the same for every shard.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::net::TcpListener;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use sluice_control::NodeId;

use crate::broker::catalog::{Catalog, CatalogError, TopicChange};
use crate::broker::cluster::{BrokerState, ClusterView, ControlArgs, ShardImage};
use crate::broker::config::ServerConfig;
use crate::broker::shard::{
    ConnectionCounts, Shard, ShardCall, ShardOp, ShardReply, ShardShared, Traffic,
};
use crate::broker::shutdown::{self, StopSteps};
use crate::groups::{self, Groups};
use crate::placement::moves::{self, MoveQueue};
use crate::placement::{hash_owner, PlacementError, PlacementTable};
use crate::store::{LogManager, TopicPartition};

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
    #[error("{0}")]
    Runtime(String),
}

/// A running node: a broker's shards (and its control thread), or only the controller.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    /// False on a controller-only node: no Kafka listener, `local_addr` is its quorum port.
    serves_kafka: bool,
    stop: Arc<AtomicBool>,
    handles: Vec<ExecutorJoinHandle<Result<(), String>>>,
    /// This node's cluster view when it has the broker role (controlled shutdown).
    broker: Option<Arc<ClusterView>>,
    controlled_shutdown_timeout: Duration,
    /// Where each executor is in its stop (`shutdown`), watched from outside them.
    steps: Arc<StopSteps>,
}

type Ready = mpsc::Sender<Result<(), String>>;

fn runtime_hint(err: &str) -> String {
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

fn bind_listeners(addr: SocketAddr, count: usize) -> Result<(SocketAddr, Vec<RawFd>), ServerError> {
    let mut fds = Vec::with_capacity(count);
    let mut bound = addr;
    for i in 0..count {
        let err = |source| ServerError::Bind {
            addr: bound,
            source,
        };
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(bound),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .map_err(err)?;
        sock.set_reuse_port(true).map_err(err)?;
        sock.set_reuse_address(true).map_err(err)?;
        sock.bind(&bound.into()).map_err(err)?;
        sock.listen(1024).map_err(err)?;
        if i == 0 {
            bound = sock.local_addr().map_err(err)?.as_socket().unwrap_or(bound);
        }
        fds.push(sock.into_raw_fd());
    }
    Ok((bound, fds))
}

/// Starts every shard and returns once all of them are accepting. A node without the
/// broker role starts only its controller (`start_controller_only`).
pub fn start(mut config: ServerConfig) -> Result<Server, ServerError> {
    // A broker thread that panics ends the process (see `fatal`), in tests too.
    crate::broker::fatal::install_panic_exit(crate::broker::fatal::PanicScope::BrokerThreads);
    if !config.cluster.roles.broker {
        return start_controller_only(config);
    }
    let count = config.cores.len().max(1);
    let catalog = Arc::new(Catalog::open(
        &config.data_dir,
        config.topic_defaults.clone(),
    )?);
    // Each broker hands out producer ids from its own range (ids never collide).
    catalog.set_producer_id_floor(i64::from(config.node_id.max(0)) << 32);
    let offsets_partitions = catalog.ensure_topic(
        groups::OFFSETS_TOPIC,
        config.groups.offsets_partitions,
        groups::offsets_topic_configs(),
        &config.cluster_id,
    )?;
    let (controllers, quorum_fd) = bind_quorum(&config)?;
    // The offsets topic must be in the metadata log too (created there by the first
    // broker that asks; the others find it).
    let view = ClusterView::new(
        config.node_id,
        controllers,
        Some(catalog.clone()),
        &[groups::OFFSETS_TOPIC],
    );
    let (local_addr, fds) = bind_listeners(config.listen, count)?;
    if config.advertised_port == 0 {
        config.advertised_port = local_addr.port();
    }
    let config = Arc::new(config);
    crate::broker::watchdog::register(count, config.stall_warn_ms)
        .map_err(|e| ServerError::Runtime(format!("starting the stall watchdog: {e}")))?;
    let groups = Arc::new(Groups::new(config.groups.clone(), offsets_partitions));
    let placement = Arc::new(open_placement(&config, &catalog, count)?);
    let connections = Arc::new(ConnectionCounts::new(count));
    let move_queue = std::cell::Cell::new(Some(moves::register(placement.clone())));
    let stop = Arc::new(AtomicBool::new(false));
    let steps = StopSteps::new();
    let draining = Arc::new(AtomicUsize::new(count));
    let mesh: Option<Mesh> = (count > 1).then(|| {
        let depth = config.mesh_channel_depth_max.max(1);
        (
            MeshBuilder::full(count, depth),
            MeshBuilder::full(count, depth),
        )
    });
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(count + 1);
    // The control thread first: a quorum of one registers its broker and imports its
    // topics before the shards start (the group coordinator loads its partitions at
    // start, and only the leader of a partition may open it).
    let control = ControlArgs {
        view: view.clone(),
        config: config.clone(),
        listener: quorum_fd,
        stop: stop.clone(),
    };
    match LocalExecutorBuilder::new(Placement::Unbound)
        .name("control")
        .spawn(move || {
            crate::broker::fatal::mark_broker_thread();
            crate::broker::cluster::control_main(control)
        }) {
        Ok(h) => handles.push(h),
        Err(e) => return Err(ServerError::Runtime(runtime_hint(&e.to_string()))),
    }
    if let Err(e) = wait_single_node_ready(&config, &view, &stop) {
        stop.store(true, Ordering::SeqCst);
        let cause = handles.into_iter().find_map(|h| match h.join() {
            Ok(Err(e)) => Some(e),
            Err(e) => Some(runtime_hint(&e.to_string())),
            Ok(Ok(())) => None,
        });
        return Err(cause.map(ServerError::Runtime).unwrap_or(e));
    }
    let mut spawn_error = None;
    for (i, fd) in fds.into_iter().enumerate() {
        let cpu = config.cores.get(i).copied().unwrap_or(0);
        let pin = if config.pin_cores {
            Placement::Fixed(cpu)
        } else {
            Placement::Unbound
        };
        let args = ShardArgs {
            fd,
            count,
            config: config.clone(),
            catalog: catalog.clone(),
            groups: groups.clone(),
            placement: placement.clone(),
            connections: connections.clone(),
            // Shard 0 runs the mover (`i` is the shard id: mesh peers are numbered in
            // executor creation order, which is this loop's).
            moves: if i == 0 { move_queue.take() } else { None },
            mesh: mesh.clone(),
            view: view.clone(),
            stop: stop.clone(),
            draining: draining.clone(),
            ready: ready_tx.clone(),
            steps: steps.clone(),
        };
        let mut builder = LocalExecutorBuilder::new(pin).name(&format!("shard{i}"));
        if let Some(bytes) = config.io_memory_bytes {
            builder = builder.io_memory(bytes);
        }
        match builder.spawn(move || shard_main(args)) {
            Ok(h) => handles.push(h),
            Err(e) => {
                spawn_error = Some(runtime_hint(&e.to_string()));
                break;
            }
        }
    }
    drop(ready_tx);
    shutdown::watchdog(stop.clone(), steps.clone());
    let server = Server {
        local_addr,
        serves_kafka: true,
        stop,
        handles,
        broker: config.cluster.roles.broker.then(|| view.clone()),
        controlled_shutdown_timeout: Duration::from_millis(
            config.cluster.controlled_shutdown_timeout_ms,
        ),
        steps,
    };
    if let Some(e) = spawn_error {
        server.stop();
        let _ = server.join();
        return Err(ServerError::Runtime(e));
    }
    for _ in 0..count {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                server.stop();
                let _ = server.join();
                return Err(ServerError::Runtime(e));
            }
            Err(_) => {
                // A shard's executor died before it could say so: its join has the reason.
                server.stop();
                let e = server
                    .join()
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "a shard failed to start".into());
                return Err(ServerError::Runtime(e));
            }
        }
    }
    if single_node(&config, &view) {
        wait_coordinator_loaded(&groups);
    }
    Ok(server)
}

/// A controller-only node: the control thread with the quorum member, nothing else — no
/// shards, no Kafka listener, no topic catalog, no partition logs (its data dir holds
/// only `__cluster_metadata/`). The admin endpoint (started by the caller) still serves
/// /metrics, /health and /cluster.
fn start_controller_only(config: ServerConfig) -> Result<Server, ServerError> {
    let (controllers, quorum_fd) = bind_quorum(&config)?;
    let Some(fd) = quorum_fd else {
        return Err(ServerError::Runtime(
            "a node must have the broker role, the controller role or both".into(),
        ));
    };
    // SAFETY: `fd` was just bound by `bind_quorum`; only its address is read here.
    let quorum_addr = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let local_addr = socket2::SockRef::from(&quorum_addr)
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let view = ClusterView::new(config.node_id, controllers, None, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let control = ControlArgs {
        view,
        config: Arc::new(config),
        listener: Some(fd),
        stop: stop.clone(),
    };
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("control")
        .spawn(move || {
            crate::broker::fatal::mark_broker_thread();
            crate::broker::cluster::control_main(control)
        })
        .map_err(|e| ServerError::Runtime(runtime_hint(&e.to_string())))?;
    tracing::info!(quorum = %local_addr, "controller-only node: no Kafka listener, no shards");
    let steps = StopSteps::new();
    shutdown::watchdog(stop.clone(), steps.clone());
    Ok(Server {
        local_addr,
        serves_kafka: false,
        stop,
        handles: vec![handle],
        broker: None,
        controlled_shutdown_timeout: Duration::ZERO,
        steps,
    })
}

/// A node that is its whole cluster leads every offsets partition: start-up waits (a
/// bounded time) until the group coordinator has loaded them, so the first group request
/// finds its group instead of COORDINATOR_LOAD_IN_PROGRESS.
fn wait_coordinator_loaded(groups: &Groups) {
    let deadline = std::time::Instant::now() + SINGLE_NODE_READY_TIMEOUT;
    while groups.loaded_count() < groups.partition_count() {
        if std::time::Instant::now() >= deadline {
            tracing::warn!(
                loaded = groups.loaded_count(),
                partitions = groups.partition_count(),
                "serving before every offsets partition is loaded"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn single_node(config: &ServerConfig, view: &ClusterView) -> bool {
    let roles = config.cluster.roles;
    roles.controller && roles.broker && view.controller_count() == 1
}

/// How long a quorum of one may take to elect itself, register its broker and import a
/// pre-quorum data dir before start-up gives up.
const SINGLE_NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A node that is the whole quorum (the default) starts serving only once its broker is
/// active and its topics are in the metadata log, so the first request finds them. Nodes
/// of a larger quorum start at once: their peers may not be up yet.
fn wait_single_node_ready(
    config: &ServerConfig,
    view: &ClusterView,
    stop: &AtomicBool,
) -> Result<(), ServerError> {
    if !single_node(config, view) {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + SINGLE_NODE_READY_TIMEOUT;
    loop {
        let active = matches!(view.broker_state(), BrokerState::Active(_));
        if active && !view.importing() {
            return Ok(());
        }
        if stop.load(Ordering::SeqCst) {
            return Err(ServerError::Runtime(
                "the control thread stopped during start-up".into(),
            ));
        }
        if std::time::Instant::now() >= deadline {
            return Err(ServerError::Runtime(format!(
                "the controller did not register this broker within {SINGLE_NODE_READY_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Every controller's raft id and quorum address.
type Controllers = Vec<(NodeId, SocketAddr)>;

/// The controllers' addresses, and this node's bound quorum listener if it is one. With
/// no quorum configured the node is a quorum of one on `controller_listen` (default:
/// 127.0.0.1 with a free port, so single-node brokers never collide).
fn bind_quorum(config: &ServerConfig) -> Result<(Controllers, Option<RawFd>), ServerError> {
    let c = &config.cluster;
    let me = NodeId(config.node_id.max(0) as u64);
    let mut controllers: Vec<(NodeId, SocketAddr)> =
        c.quorum.iter().map(|(id, a)| (NodeId(*id), *a)).collect();
    if !c.roles.controller {
        return Ok((controllers, None));
    }
    let own = controllers
        .iter()
        .find(|(id, _)| *id == me)
        .map(|(_, a)| *a);
    let addr = c
        .controller_listen
        .or(own)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let (bound, mut fds) = bind_listeners(addr, 1)?;
    if controllers.is_empty() {
        controllers.push((me, bound));
    }
    Ok((controllers, fds.pop()))
}

/// The placement table for `count` shards on `config.cores` (the CPU labels even when
/// unpinned, so a core list change maps the same way).
fn open_placement(
    config: &ServerConfig,
    catalog: &Catalog,
    count: usize,
) -> Result<PlacementTable, PlacementError> {
    let mut cpus: Vec<usize> = config.cores.iter().copied().take(count).collect();
    if cpus.is_empty() {
        cpus.push(0);
    }
    PlacementTable::open(&config.data_dir, cpus, config.placement.clone(), |topic| {
        catalog.partition_count(topic)
    })
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
const STOP_REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Beyond the controlled shutdown's own timeout, how long `StopHandle::stop` waits for the
/// control thread to report it done (a hung control thread must not keep the broker up).
const CONTROLLED_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
                Ok(Err(e)) => Err(e),
                Err(e) => Err(runtime_hint(&e.to_string())),
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
            Some(e) => Err(ServerError::Runtime(e)),
            None => Ok(()),
        }
    }
}

/// The shard mesh: calls one way, their answers back (see `shard.rs`: no task waker
/// crosses threads).
type Mesh = (
    MeshBuilder<ShardCall, Full>,
    MeshBuilder<crate::broker::shard::ShardAnswer, Full>,
);

struct ShardArgs {
    fd: RawFd,
    count: usize,
    config: Arc<ServerConfig>,
    catalog: Arc<Catalog>,
    groups: Arc<Groups>,
    placement: Arc<PlacementTable>,
    connections: Arc<ConnectionCounts>,
    moves: Option<MoveQueue>,
    mesh: Option<Mesh>,
    view: Arc<ClusterView>,
    stop: Arc<AtomicBool>,
    draining: Arc<AtomicUsize>,
    ready: Ready,
    steps: Arc<StopSteps>,
}

/// Counts a shard out of `draining` however it ends; a shard that panics also stops the
/// others (its partitions are gone, so the process exits non-zero for a supervisor to
/// restart it, instead of serving part of the data or hanging at shutdown).
struct ShardExit {
    draining: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    counted: bool,
}

impl ShardExit {
    fn drained(&mut self) {
        if !self.counted {
            self.counted = true;
            self.draining.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for ShardExit {
    fn drop(&mut self) {
        crate::broker::watchdog::stopped();
        if std::thread::panicking() {
            tracing::error!("a shard panicked: stopping the broker");
            self.stop.store(true, Ordering::SeqCst);
        }
        self.drained();
    }
}

/// How often each shard publishes its partitions' figures for /metrics.
const METRICS_PUBLISH_INTERVAL_MS: u64 = 1000;

/// CPU shares of the retention and compaction task queue (the default queue, where
/// requests run, has 1000).
const MAINTENANCE_SHARES: usize = 100;

/// Period of the timer that keeps a starting shard's ring from sleeping unbounded.
const STARTUP_TICK_MS: u64 = 20;

/// How often a shard still waiting to accept clients says so.
const SERVING_WAIT_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Clients are answered from the metadata image, so a shard accepts only once that image
/// shows this broker registered (the registration it holds now, not one replayed from
/// before a restart) and unfenced, with its listener. Before that a Metadata answer would
/// list no broker at all on a fresh cluster (librdkafka: `Local: Partial response`), or
/// not this one, and call every topic unknown before the first image (a client told
/// "unknown topic" may not ask again for minutes). Kafka's brokers likewise open their
/// request processing only after their initial unfencing. The kernel queues connections
/// meanwhile; a broker that cannot reach its controllers keeps waiting and says so.
async fn wait_serving(shard: &Shard) {
    let started = std::time::Instant::now();
    let mut warn_at = started + SERVING_WAIT_WARN_INTERVAL;
    while !serving_ready(shard) && !shard.stopping.is_set() {
        if std::time::Instant::now() >= warn_at {
            warn_at += SERVING_WAIT_WARN_INTERVAL;
            tracing::warn!(
                shard = shard.id,
                waited_s = started.elapsed().as_secs(),
                state = ?shard.cluster.view.broker_state(),
                "not registered and unfenced in the metadata image yet; not accepting clients"
            );
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether this node's image shows this broker as the controller last answered it:
/// active, under the epoch of its current registration, with a listener.
fn serving_ready(shard: &Shard) -> bool {
    let BrokerState::Active(epoch) = shard.cluster.view.broker_state() else {
        return false;
    };
    let image = shard.cluster.image();
    image
        .broker(sluice_control::BrokerId(shard.config.node_id))
        .is_some_and(|b| b.epoch == epoch && !b.fenced && !b.listeners.is_empty())
}

/// Places the partitions of topics nobody used yet (created, grown), so the placement
/// report shows every partition within a publishing interval of its creation.
fn place_new_topics(shard: &Shard) {
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
fn publish_metrics(shard: &Shard, before: &mut HashMap<TopicPartition, Traffic>, interval_s: u64) {
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
                high_watermark: shard.high_watermark(&tp, &log),
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

async fn shard_main(mut args: ShardArgs) -> Result<(), String> {
    crate::broker::fatal::mark_broker_thread();
    let mut exit = ShardExit {
        draining: args.draining.clone(),
        stop: args.stop.clone(),
        counted: false,
    };
    // SAFETY: `fd` is a listening socket bound in `bind_listeners`, owned by nobody else;
    // ownership passes to this listener.
    let listener = unsafe { TcpListener::from_raw_fd(args.fd) };
    let ready = args.ready.clone();
    // glommio can miss a wake-up from another thread while its ring sleeps with no timer
    // armed (seen once in about a dozen test-cluster restarts: a shard parked in
    // io_uring_enter during start-up for minutes). A ticking timer bounds every sleep
    // until the shard's own periodic tasks run (the stop watcher below ticks from then on).
    let starting = Rc::new(std::cell::Cell::new(true));
    {
        let starting = starting.clone();
        glommio::spawn_local(async move {
            while starting.get() {
                glommio::timer::sleep(Duration::from_millis(STARTUP_TICK_MS)).await;
            }
        })
        .detach();
    }
    let opened = open_shard(&args).await;
    starting.set(false);
    let shard = match opened {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    let _ = ready.send(Ok(()));
    tracing::info!(shard = shard.id, "shard accepting");
    crate::broker::watchdog::attach(shard.id);
    {
        // The stall watchdog's heartbeat: it runs only when the reactor gets to its task
        // queues (see `watchdog`). It beats through the stop too (the executor drops it
        // when `shard_main` returns, and `ShardExit` marks the slot stopped): a shard
        // busy with its bounded stop steps is not stalled, and must not be reported so.
        let interval = crate::broker::watchdog::beat_interval(shard.config.stall_warn_ms);
        glommio::spawn_local(async move {
            loop {
                crate::broker::watchdog::beat();
                glommio::timer::sleep(interval).await;
            }
        })
        .detach();
    }
    let watcher = {
        let shard = shard.clone();
        let stop = args.stop.clone();
        glommio::spawn_local(async move {
            // The stop request comes from another thread; a short poll keeps this simple
            // and costs nothing measurable.
            while !stop.load(Ordering::SeqCst) {
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
            shard.stopping.set();
        })
    };
    watcher.detach();
    {
        // Per-partition figures for /metrics: the admin thread cannot read shard state, so
        // each shard publishes a copy.
        let s = shard.clone();
        glommio::spawn_local(async move {
            let mut before = HashMap::new();
            loop {
                publish_metrics(&s, &mut before, METRICS_PUBLISH_INTERVAL_MS / 1000);
                let stopped = s
                    .sleep_or_stop(Duration::from_millis(METRICS_PUBLISH_INTERVAL_MS))
                    .await;
                if stopped {
                    break;
                }
            }
        })
        .detach();
    }
    {
        // Retention: delete whole segments past retention.ms / retention.bytes; then
        // compaction of the logs whose cleanup.policy includes compact.
        let s = shard.clone();
        let interval = Duration::from_millis(shard.config.retention_check_interval_ms.max(1));
        let maintenance = async move {
            loop {
                let stopped = s.sleep_or_stop(interval).await;
                if stopped {
                    break;
                }
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let outcome = s.logs.enforce_retention(now_ms).await;
                if outcome.segments_deleted > 0 {
                    tracing::info!(
                        shard = s.id,
                        segments = outcome.segments_deleted,
                        bytes = outcome.bytes_deleted,
                        "retention"
                    );
                }
                let (segments, bytes) = s.logs.compact(now_ms).await;
                if segments > 0 {
                    tracing::info!(shard = s.id, segments, bytes, "compaction");
                }
            }
        };
        // Background work runs in its own low-share task queue: when the shard is busy,
        // produce and fetch get the CPU first (compaction yields between reads).
        let queue = glommio::executor().create_task_queue(
            glommio::Shares::Static(MAINTENANCE_SHARES),
            glommio::Latency::NotImportant,
            "maintenance",
        );
        match glommio::spawn_local_into(maintenance, queue) {
            Ok(task) => {
                task.detach();
            }
            Err(e) => {
                tracing::error!(shard = shard.id, error = %e, "retention and compaction task did not start")
            }
        }
    }
    if let Some(queue) = args.moves.take() {
        glommio::spawn_local(moves::run_mover(shard.clone(), queue)).detach();
    }
    // Replicated partitions follow the metadata image (roles, high watermarks, ISR).
    let replication = glommio::spawn_local(crate::broker::replicas::run(shard.clone()));
    // The coordinator partitions this shard owns: load them, then sweep them.
    let coordinator = glommio::spawn_local(groups::persist::run(shard.clone()));
    if shard.id == 0 {
        // Logs follow the metadata image: topics deleted or reconfigured through the
        // controller (by any broker) are applied on every shard.
        let s = shard.clone();
        glommio::spawn_local(async move {
            while !s.stopping.is_set() {
                glommio::timer::sleep(Duration::from_millis(LOG_WORK_INTERVAL_MS)).await;
                for change in s.cluster.view.take_log_work() {
                    apply_topic_change(&s, change).await;
                }
            }
        })
        .detach();
    }
    accept_loop(&shard, &listener).await;
    drop(listener);
    stop_shard(&shard, &args, &mut exit, coordinator, replication).await
}

/// The shard's bounded stop (`shutdown`): its connections finish their in-flight requests
/// (every wait ends when the shard stops), the other shards drain theirs, the coordinator
/// and the follower fetchers stop, the logs close. A step past its bound is left behind
/// (connections and tasks still running end with the executor: their clients see a
/// closed connection and retry elsewhere).
async fn stop_shard(
    shard: &Rc<Shard>,
    args: &ShardArgs,
    exit: &mut ShardExit,
    coordinator: glommio::Task<()>,
    replication: glommio::Task<()>,
) -> Result<(), String> {
    let who = format!("shard{}", shard.id);
    let steps = &args.steps;
    let started = std::time::Instant::now();
    let drained = async {
        while shard.connections.get(shard.id) > 0 {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    };
    let open = shard.connections.get(shard.id);
    if shutdown::step(
        steps,
        &who,
        "connections",
        shutdown::CONNECTIONS_DRAIN_MAX,
        drained,
    )
    .await
    .is_none()
    {
        tracing::warn!(
            shard = shard.id,
            open_at_stop = open,
            open_now = shard.connections.get(shard.id),
            "connections still open after the drain bound: they close with the shard"
        );
    }
    // Keep serving other shards' calls until every shard has drained its connections.
    exit.drained();
    let peers = async {
        while args.draining.load(Ordering::SeqCst) > 0 {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    };
    shutdown::step(steps, &who, "peers", shutdown::PEERS_DRAIN_MAX, peers).await;
    // Its last group-metadata writes land before the logs close, and the follower
    // fetchers stop appending.
    shutdown::step(
        steps,
        &who,
        "coordinator",
        shutdown::COORDINATOR_STOP_MAX,
        coordinator,
    )
    .await;
    shutdown::step(
        steps,
        &who,
        "replication",
        shutdown::REPLICATION_STOP_MAX,
        replication,
    )
    .await;
    let closed = shutdown::step(
        steps,
        &who,
        "logs",
        shutdown::LOGS_CLOSE_MAX,
        shard.logs.close_all(),
    )
    .await;
    steps.enter(&who, "ending");
    tracing::info!(
        shard = shard.id,
        took_ms = started.elapsed().as_millis() as u64,
        "shard stopped"
    );
    match closed {
        Some(Err(e)) => Err(format!("shard {}: closing logs: {e}", shard.id)),
        _ => Ok(()),
    }
}

/// How often shard 0 looks for topic changes from the metadata image.
const LOG_WORK_INTERVAL_MS: u64 = 10;

async fn apply_topic_change(shard: &Rc<Shard>, change: TopicChange) {
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

async fn open_shard(args: &ShardArgs) -> Result<Rc<Shard>, String> {
    let (senders, receivers) = match args.mesh.clone() {
        Some((calls, answers)) => {
            let joined = "joining the shard mesh failed";
            let (s, r) = calls.join().await.map_err(|_| joined.to_string())?;
            let (sa, ra) = answers.join().await.map_err(|_| joined.to_string())?;
            (Some((s, sa)), Some((r, ra)))
        }
        None => (None, None),
    };
    let id = senders.as_ref().map(|s| s.0.peer_id()).unwrap_or(0);
    let owns = {
        let (table, catalog) = (args.placement.clone(), args.catalog.clone());
        move |tp: &TopicPartition| {
            let placed = table.snapshot().1.owner(&tp.topic, tp.partition.0);
            let owner = placed.or_else(|| {
                let n = catalog.partition_count(&tp.topic)?;
                (tp.partition.0 < n).then(|| table.place(&tp.topic, n, tp.partition.0))
            });
            // A directory of a partition the catalog does not know: its hash shard, as
            // before placement existed.
            owner.unwrap_or_else(|| hash_owner(&tp.topic, tp.partition.0, table.shard_count()))
                == id
        }
    };
    let catalog = args.catalog.clone();
    let config_for = move |topic: &str| catalog.log_config_for(topic);
    let logs = LogManager::open(
        &args.config.data_dir,
        args.config.shard.clone(),
        owns,
        config_for,
    )
    .await;
    let logs = logs.map_err(|e| {
        format!(
            "shard {id}: opening logs in {}: {e}",
            args.config.data_dir.display()
        )
    })?;
    let shared = ShardShared {
        config: args.config.clone(),
        catalog: args.catalog.clone(),
        groups: args.groups.clone(),
        placement: args.placement.clone(),
        connections: args.connections.clone(),
    };
    let image = ShardImage::new(args.view.clone());
    let shard = Rc::new(Shard::new(id, args.count, shared, logs, senders, image));
    if let Some((mut calls, mut answers)) = receivers {
        for (from, rx) in calls.streams() {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                while let Some(call) = rx.recv().await {
                    let s = shard.clone();
                    let work = call.op.work();
                    shard
                        .spawn(work, async move { s.serve_call(from, call).await })
                        .detach();
                }
            })
            .detach();
        }
        // Answers only move into local one-shots, so this never waits on anything but
        // the channel: the answer mesh always drains.
        for (_, rx) in answers.streams() {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                while let Some(answer) = rx.recv().await {
                    shard.answer_arrived(answer);
                }
            })
            .detach();
        }
    }
    Ok(shard)
}

async fn accept_loop(shard: &Rc<Shard>, listener: &TcpListener) {
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
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
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
                refused_log.note(shard, refusal, peer, limits);
                drop(stream);
                continue;
            }
        };
        if target == shard.id {
            crate::kafka::conn::spawn(shard.clone(), stream, slot);
        } else {
            hand_off(shard, stream, slot);
        }
    }
}

/// How often a shard logs the connections it refused (one line per interval, with the
/// count since the last), so a connection flood cannot flood the log.
const REFUSED_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The refused-connection log line of one shard's accept loop, rate-limited.
struct RefusedLog {
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
        shard: &Shard,
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
            shard = shard.id,
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
fn hand_off(
    shard: &Rc<Shard>,
    stream: glommio::net::TcpStream,
    slot: crate::broker::shard::ConnectionSlot,
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
            tracing::warn!(shard = shard.id, to = target, error = %e, "could not hand a connection over, closing it");
            return;
        }
    };
    let s = shard.clone();
    glommio::spawn_local(async move {
        // On failure the operation, and the slot in it, are dropped: the place is freed.
        match s.call(target, ShardOp::Adopt { socket, slot }).await {
            ShardReply::Done => {}
            other => {
                tracing::warn!(shard = s.id, to = target, reply = ?other, "connection hand-off failed, closed");
            }
        }
    })
    .detach();
}
