//! One shard's executor from start to stop: open the shard and join the mesh, start its
//! background tasks, accept until the stop, then the bounded stop steps.

use std::os::fd::{FromRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::channels::shared_channel::SharedReceiver;
use glommio::net::TcpListener;

use super::accept::accept_loop;
use super::background;
use super::{ExecutorError, ShardError};
use crate::broker::catalog::Catalog;
use crate::broker::cluster::{ClusterView, ShardImage};
use crate::broker::config::ServerConfig;
use crate::broker::shard::{ConnectionCounts, Shard, ShardCall, ShardShared};
use crate::broker::shutdown::{self, StopSteps};
use crate::groups::{self, Groups};
use crate::placement::moves::{self, MoveQueue};
use crate::placement::{hash_owner, PlacementTable};
use crate::store::{LogManager, TopicPartition};

pub(super) type Ready = mpsc::Sender<Result<(), ShardError>>;

/// The shard mesh: calls one way, their answers back (see `shard.rs`: no task waker
/// crosses threads).
pub(super) type Mesh = (
    MeshBuilder<ShardCall, Full>,
    MeshBuilder<crate::broker::shard::ShardAnswer, Full>,
);

pub(super) struct ShardArgs {
    pub(super) fd: RawFd,
    pub(super) count: usize,
    pub(super) config: Arc<ServerConfig>,
    pub(super) catalog: Arc<Catalog>,
    pub(super) groups: Arc<Groups>,
    pub(super) txns: Arc<crate::txn::Txns>,
    pub(super) placement: Arc<PlacementTable>,
    pub(super) connections: Arc<ConnectionCounts>,
    pub(super) moves: Option<MoveQueue>,
    pub(super) mesh: Option<Mesh>,
    pub(super) view: Arc<ClusterView>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) draining: Arc<AtomicUsize>,
    pub(super) ready: Ready,
    pub(super) steps: Arc<StopSteps>,
    /// This shard's end of its version channel from the control thread (taken at open).
    pub(super) bell: std::cell::Cell<Option<SharedReceiver<()>>>,
}

/// Counts a shard out of `draining` however it ends; a shard that panics also stops the
/// others (its partitions are gone, so the process exits non-zero for a supervisor to
/// restart it, instead of serving part of the data or hanging at shutdown).
pub(super) struct ShardExit {
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

/// The body of one shard's executor: start, serve until the stop, stop.
pub(super) async fn shard_main(mut args: ShardArgs) -> Result<(), ExecutorError> {
    crate::broker::fatal::mark_broker_thread();
    let mut exit = ShardExit {
        draining: args.draining.clone(),
        stop: args.stop.clone(),
        counted: false,
    };
    // SAFETY: `fd` is a listening socket bound in `bind_listeners`, owned by nobody else;
    // ownership passes to this listener.
    let listener = unsafe { TcpListener::from_raw_fd(args.fd) };
    let shard = start_shard(&args).await?;
    let (coordinator, replication) = spawn_background(&shard, &mut args);
    accept_loop(&shard, &listener).await;
    drop(listener);
    stop_shard(&shard, &args, &mut exit, coordinator, replication).await?;
    Ok(())
}

/// Opens the shard (logs, mesh) and says on `args.ready` whether it could.
pub(super) async fn start_shard(args: &ShardArgs) -> Result<Rc<Shard>, ShardError> {
    // glommio can miss a wake-up from another thread while its ring sleeps with no timer
    // armed (seen once in about a dozen test-cluster restarts: a shard parked in
    // io_uring_enter during start-up for minutes). A ticking timer bounds every sleep
    // until the shard's own periodic tasks run (the stop watcher ticks from then on).
    let starting = Rc::new(std::cell::Cell::new(true));
    glommio::spawn_local(background::startup_tick(starting.clone())).detach();
    let opened = open_shard(args).await;
    starting.set(false);
    let _ = args
        .ready
        .send(opened.as_ref().map(|_| ()).map_err(|e| e.clone()));
    let shard = opened?;
    tracing::info!("shard accepting");
    crate::broker::watchdog::attach(shard.id);
    Ok(shard)
}

/// Starts the shard's background tasks; returns the two the stop waits for (the group
/// coordinator's and replication's).
pub(super) fn spawn_background(
    shard: &Rc<Shard>,
    args: &mut ShardArgs,
) -> (glommio::Task<()>, glommio::Task<()>) {
    let interval = crate::broker::watchdog::beat_interval(shard.config.stall_warn_ms);
    glommio::spawn_local(background::watchdog_heartbeat(interval)).detach();
    glommio::spawn_local(background::stop_watcher(shard.clone(), args.stop.clone())).detach();
    glommio::spawn_local(background::metrics_publisher(shard.clone())).detach();
    background::spawn_maintenance(shard);
    if let Some(queue) = args.moves.take() {
        glommio::spawn_local(moves::run_mover(shard.clone(), queue)).detach();
    }
    // Replicated partitions follow the metadata image (roles, high watermarks, ISR).
    let replication = glommio::spawn_local(crate::broker::replicas::run(shard.clone()));
    // The coordinator partitions this shard owns: load them, then sweep them.
    let coordinator = glommio::spawn_local(groups::persist::run(shard.clone()));
    // The transaction coordinator's partitions: follow, load, finish and time out.
    glommio::spawn_local(crate::txn::persist::run(shard.clone())).detach();
    if shard.id == 0 {
        glommio::spawn_local(background::follow_log_work(shard.clone())).detach();
    }
    (coordinator, replication)
}

/// The shard's bounded stop (`shutdown`): its connections finish their in-flight requests
/// (every wait ends when the shard stops), the other shards drain theirs, the coordinator
/// and the follower fetchers stop, the logs close. A step past its bound is left behind
/// (connections and tasks still running end with the executor: their clients see a
/// closed connection and retry elsewhere).
pub(super) async fn stop_shard(
    shard: &Rc<Shard>,
    args: &ShardArgs,
    exit: &mut ShardExit,
    coordinator: glommio::Task<()>,
    replication: glommio::Task<()>,
) -> Result<(), ShardError> {
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
        took_ms = started.elapsed().as_millis() as u64,
        "shard stopped"
    );
    match closed {
        Some(Err(e)) => Err(ShardError::CloseLogs {
            shard: shard.id,
            source: Arc::new(e),
        }),
        _ => Ok(()),
    }
}

pub(super) async fn open_shard(args: &ShardArgs) -> Result<Rc<Shard>, ShardError> {
    let (senders, receivers) = match args.mesh.clone() {
        Some((calls, answers)) => {
            let (s, r) = calls.join().await.map_err(|_| ShardError::MeshJoin)?;
            let (sa, ra) = answers.join().await.map_err(|_| ShardError::MeshJoin)?;
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
    let logs = logs.map_err(|e| ShardError::OpenLogs {
        shard: id,
        dir: args.config.data_dir.clone(),
        source: Arc::new(e),
    })?;
    // Placements made while opening the logs are in the file before they serve (logged).
    let _ = args.placement.persisted().await;
    let shared = ShardShared {
        config: args.config.clone(),
        catalog: args.catalog.clone(),
        groups: args.groups.clone(),
        txns: args.txns.clone(),
        placement: args.placement.clone(),
        connections: args.connections.clone(),
    };
    let bell = args
        .bell
        .take()
        .ok_or(ShardError::NoVersionChannel { shard: id })?;
    let image = ShardImage::new(args.view.clone(), bell);
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
