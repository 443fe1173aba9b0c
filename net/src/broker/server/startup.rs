//! Start-up: the listeners bound on the calling thread, the control thread, one executor
//! per shard; a quorum of one waits until its broker is active and its topics imported.

use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};

use sluice_control::tls::ClusterTls;
use sluice_control::NodeId;

use super::shard_main::{shard_main, Mesh, ShardArgs};
use super::{runtime_hint, ExecutorError, Server, ServerError, ShardError};
use crate::broker::catalog::Catalog;
use crate::broker::cluster::{BrokerState, ClusterView, ControlArgs};
use crate::broker::config::ServerConfig;
use crate::broker::shard::ConnectionCounts;
use crate::broker::shutdown::{self, StopSteps};
use crate::groups::{self, Groups};
use crate::placement::moves;
use crate::placement::{PlacementError, PlacementTable};
use crate::security::tls::Tls;
use crate::security::{ClusterSecurity, Security, SecurityProtocol};

pub(super) fn bind_listeners(
    addr: SocketAddr,
    count: usize,
) -> Result<(SocketAddr, Vec<RawFd>), ServerError> {
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

/// Binds every Kafka listener (`count` sockets each) and fills in advertised ports left
/// at 0 with the bound ones. Returns the PLAINTEXT listener's address and, per shard, its
/// socket of each listener (in `ServerConfig::all_listeners` order).
fn bind_kafka_listeners(
    config: &mut ServerConfig,
    count: usize,
) -> Result<(SocketAddr, Vec<Vec<RawFd>>), ServerError> {
    let (local_addr, primary) = bind_listeners(config.listen, count)?;
    if config.advertised_port == 0 {
        config.advertised_port = local_addr.port();
    }
    let mut per_shard: Vec<Vec<RawFd>> = primary.into_iter().map(|fd| vec![fd]).collect();
    for l in &mut config.listeners {
        let (bound, fds) = bind_listeners(l.listen, count)?;
        if l.advertised_port == 0 {
            l.advertised_port = bound.port();
        }
        tracing::info!(listener = %l.name, protocol = l.security_protocol.name(), addr = %bound, "listening");
        for (shard, fd) in per_shard.iter_mut().zip(fds) {
            shard.push(fd);
        }
    }
    Ok((local_addr, per_shard))
}

/// `[cluster_tls]`'s files, read once at start (`ClusterTls::reload` reads them again).
fn load_cluster_tls(config: &ServerConfig) -> Result<Option<Arc<ClusterTls>>, ServerError> {
    let Some(c) = &config.cluster_tls else {
        return Ok(None);
    };
    let tls = ClusterTls::load(c.files.clone()).map_err(|e| ServerError::Runtime(e.to_string()))?;
    tracing::info!(cert_file = %c.files.cert_file.display(), ca_file = %c.files.ca_file.display(),
        listener = c.listener.as_deref().unwrap_or("-"), "cluster TLS: the cluster's own traffic is mutual TLS");
    Ok(Some(Arc::new(tls)))
}

/// `[cluster_tls]` on a broker: its inter-broker listener, which must be SSL.
fn cluster_security(
    config: &ServerConfig,
    listeners: &[crate::security::ListenerConfig],
    tls: Option<Arc<ClusterTls>>,
) -> Result<Option<ClusterSecurity>, ServerError> {
    let Some(tls) = tls else {
        return Ok(None);
    };
    let name = config
        .cluster_tls
        .as_ref()
        .and_then(|c| c.listener.as_deref())
        .ok_or_else(|| {
            ServerError::Runtime(
                "cluster_tls.listener: a broker needs its inter-broker listener".into(),
            )
        })?;
    let index = listeners
        .iter()
        .position(|l| l.name == name && l.security_protocol == SecurityProtocol::Ssl)
        .ok_or_else(|| {
            ServerError::Runtime(format!(
                "cluster_tls.listener: {name:?} is not a listener with security_protocol SSL"
            ))
        })?;
    Ok(Some(ClusterSecurity {
        tls,
        listener: index,
    }))
}

/// The shards' security settings: the listeners as bound, TLS loaded if a listener needs
/// it (the inter-broker listener of `[cluster_tls]` is served with the node certificate).
fn security(
    config: &ServerConfig,
    cluster_tls: Option<Arc<ClusterTls>>,
) -> Result<Security, ServerError> {
    let listeners = config.all_listeners();
    let cluster = cluster_security(config, &listeners, cluster_tls)?;
    let inter_broker = cluster.as_ref().map(|c| c.listener);
    let needs_tls = listeners
        .iter()
        .enumerate()
        .any(|(i, l)| l.security_protocol.tls() && Some(i) != inter_broker);
    let tls = match (&config.tls, needs_tls) {
        (Some(settings), true) => Some(Arc::new(Tls::load(settings.clone())?)),
        (None, true) => {
            return Err(ServerError::Runtime(
                "a listener's security_protocol is SSL or SASL_SSL but [tls] is not set".into(),
            ))
        }
        (_, false) => None,
    };
    if let Some(l) = listeners.iter().find(|l| l.security_protocol.sasl()) {
        if config.auth.sasl_mechanisms.is_empty() {
            return Err(ServerError::Runtime(format!(
                "listener {}: security_protocol {} but auth.sasl_mechanisms is empty",
                l.name,
                l.security_protocol.name()
            )));
        }
    }
    Ok(Security {
        listeners,
        tls,
        auth: config.auth.clone(),
        cluster,
    })
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
    let (catalog, offsets_partitions) = open_catalog(&config)?;
    let (controllers, quorum_fd) = bind_quorum(&config)?;
    let cluster_tls = load_cluster_tls(&config)?;
    // The offsets topic must be in the metadata log too (created there by the first
    // broker that asks; the others find it).
    let view = ClusterView::new(
        config.node_id,
        controllers,
        Some(catalog.clone()),
        &[groups::OFFSETS_TOPIC],
        cluster_tls.clone(),
    );
    let (local_addr, fds) = bind_kafka_listeners(&mut config, count)?;
    let security = Arc::new(security(&config, cluster_tls.clone())?);
    let config = Arc::new(config);
    crate::broker::watchdog::register(count, config.stall_warn_ms)
        .map_err(|e| ServerError::Runtime(format!("starting the stall watchdog: {e}")))?;
    let groups = Arc::new(Groups::new(config.groups.clone(), offsets_partitions));
    let txns = Arc::new(crate::txn::Txns::new(config.transactions.clone()));
    let placement = Arc::new(open_placement(&config, &catalog, count)?);
    let connections = Arc::new(ConnectionCounts::new(count));
    let move_queue = std::cell::Cell::new(Some(moves::register(placement.clone())));
    let (ringers, bells) = crate::broker::cluster::version_channels(count);
    let mut bells = bells.into_iter();
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
        ringers,
    };
    handles.push(spawn_control(control)?);
    if let Err(e) = wait_single_node_ready(&config, &view, &stop) {
        stop.store(true, Ordering::SeqCst);
        let cause = handles.into_iter().find_map(|h| match h.join() {
            Ok(Err(e)) => Some(ServerError::Executor(e)),
            Err(e) => Some(ServerError::Runtime(runtime_hint(&e.to_string()))),
            Ok(Ok(())) => None,
        });
        return Err(cause.unwrap_or(e));
    }
    let mut spawn_error = None;
    for (i, fds) in fds.into_iter().enumerate() {
        let args = ShardArgs {
            fds,
            security: security.clone(),
            count,
            config: config.clone(),
            catalog: catalog.clone(),
            groups: groups.clone(),
            txns: txns.clone(),
            placement: placement.clone(),
            connections: connections.clone(),
            // Shard 0 runs the mover (`i` is the shard id: mesh peers are numbered in
            // executor creation order, which is this loop's).
            moves: if i == 0 { move_queue.take() } else { None },
            bell: std::cell::Cell::new(bells.next()),
            mesh: mesh.clone(),
            view: view.clone(),
            stop: stop.clone(),
            draining: draining.clone(),
            ready: ready_tx.clone(),
            steps: steps.clone(),
        };
        match spawn_shard(&config, i, args) {
            Ok(h) => handles.push(h),
            Err(e) => {
                spawn_error = Some(e);
                break;
            }
        }
    }
    drop(ready_tx);
    shutdown::watchdog(stop.clone(), steps.clone());
    let server = Server {
        local_addr,
        serves_kafka: true,
        security: Some(security),
        cluster_tls,
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
        return Err(e);
    }
    let server = wait_shards_ready(server, &ready_rx, count)?;
    if single_node(&config, &view) {
        wait_coordinator_loaded(&groups);
    }
    Ok(server)
}

/// Opens the topic catalog and makes sure it has the offsets topic; its partition count.
fn open_catalog(config: &ServerConfig) -> Result<(Arc<Catalog>, i32), ServerError> {
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
    Ok((catalog, offsets_partitions))
}

/// Starts the control thread's executor.
fn spawn_control(
    control: ControlArgs,
) -> Result<glommio::ExecutorJoinHandle<Result<(), ExecutorError>>, ServerError> {
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("control")
        .spawn(move || {
            crate::broker::fatal::mark_broker_thread();
            async move {
                crate::broker::cluster::control_main(control)
                    .await
                    .map_err(ExecutorError::from)
            }
        })
        .map_err(|e| ServerError::Runtime(runtime_hint(&e.to_string())))
}

/// Starts shard `i`'s executor (pinned to its core when `pin_cores`).
fn spawn_shard(
    config: &ServerConfig,
    i: usize,
    args: ShardArgs,
) -> Result<glommio::ExecutorJoinHandle<Result<(), ExecutorError>>, ServerError> {
    let pin = if config.pin_cores {
        Placement::Fixed(config.cores.get(i).copied().unwrap_or(0))
    } else {
        Placement::Unbound
    };
    let mut builder = LocalExecutorBuilder::new(pin).name(&format!("shard{i}"));
    if let Some(bytes) = config.io_memory_bytes {
        builder = builder.io_memory(bytes);
    }
    // Every log line of the shard's tasks carries its id: the span stays entered on the
    // executor's thread for as long as the shard runs (its only tasks are this shard's).
    let shard_task = move || async move {
        let _span = tracing::info_span!("shard", shard = i).entered();
        shard_main(args).await
    };
    builder
        .spawn(shard_task)
        .map_err(|e| ServerError::Runtime(runtime_hint(&e.to_string())))
}

/// Waits until each of the `count` shards says it started; on a failure, stops the
/// server and returns why.
fn wait_shards_ready(
    server: Server,
    ready: &mpsc::Receiver<Result<(), ShardError>>,
    count: usize,
) -> Result<Server, ServerError> {
    for _ in 0..count {
        let failure = match ready.recv() {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => Some(ServerError::Executor(e.into())),
            // A shard's executor died before it could say so: its join has the reason.
            Err(_) => None,
        };
        server.stop();
        let joined = server.join();
        let e = failure.unwrap_or_else(|| {
            joined
                .err()
                .unwrap_or_else(|| ServerError::Runtime("a shard failed to start".into()))
        });
        return Err(e);
    }
    Ok(server)
}

/// A controller-only node: the control thread with the quorum member, nothing else — no
/// shards, no Kafka listener, no topic catalog, no partition logs (its data dir holds
/// only `__cluster_metadata/`). The admin endpoint (started by the caller) still serves
/// /metrics, /health and /cluster.
pub(super) fn start_controller_only(config: ServerConfig) -> Result<Server, ServerError> {
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
    let cluster_tls = load_cluster_tls(&config)?;
    let view = ClusterView::new(config.node_id, controllers, None, &[], cluster_tls.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let control = ControlArgs {
        view,
        config: Arc::new(config),
        listener: Some(fd),
        stop: stop.clone(),
        ringers: Vec::new(),
    };
    let handle = spawn_control(control)?;
    tracing::info!(quorum = %local_addr, "controller-only node: no Kafka listener, no shards");
    let steps = StopSteps::new();
    shutdown::watchdog(stop.clone(), steps.clone());
    Ok(Server {
        local_addr,
        serves_kafka: false,
        security: None,
        cluster_tls,
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
pub(super) fn wait_coordinator_loaded(groups: &Groups) {
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

pub(super) fn single_node(config: &ServerConfig, view: &ClusterView) -> bool {
    let roles = config.cluster.roles;
    roles.controller && roles.broker && view.controller_count() == 1
}

/// How long a quorum of one may take to elect itself, register its broker and import a
/// pre-quorum data dir before start-up gives up.
pub(super) const SINGLE_NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A node that is the whole quorum (the default) starts serving only once its broker is
/// active and its topics are in the metadata log, so the first request finds them. Nodes
/// of a larger quorum start at once: their peers may not be up yet.
pub(super) fn wait_single_node_ready(
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
pub(super) type Controllers = Vec<(NodeId, SocketAddr)>;

/// The controllers' addresses, and this node's bound quorum listener if it is one. With
/// no quorum configured the node is a quorum of one on `controller_listen` (default:
/// 127.0.0.1 with a free port, so single-node brokers never collide).
pub(super) fn bind_quorum(
    config: &ServerConfig,
) -> Result<(Controllers, Option<RawFd>), ServerError> {
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
pub(super) fn open_placement(
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
