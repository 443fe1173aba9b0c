//! The broker's side of the cluster: the metadata image this node serves from, its
//! registration with the active controller, and the control thread that runs them (and
//! the controller quorum member, when the node has the controller role).
//!
//! Ownership:
//! - `ClusterView` (one per process, shared by every thread) owns the latest image
//!   (`Arc<MetadataImage>`, swapped whole per version, never changed in place), the
//!   quorum as last seen, and this broker's registration state. Only the control thread
//!   publishes into it.
//! - Each shard keeps its own `Arc` of the image (`ShardImage`) and swaps it when the
//!   version moves: one atomic load per look-up, no lock on the data path.
//! - The topic catalog (`catalog.rs`) is a copy of the image's topics, synced when the
//!   image is published; what the logs must follow (deleted topics, changed configs) is
//!   queued for shard 0 (`take_log_work`), which tells every shard.
//!
//! Invariants: an image is published only if its offset is not older than the current
//! one; the catalog is synced before the new version becomes visible; every wait (for a
//! controller answer, for the image to reach an offset) has a deadline.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sluice_control::rpc::{self, ErrorKind, QuorumStatus, Reply, Request};
use sluice_control::{BrokerEpoch, BrokerId, HeartbeatReply, Listener, MetadataImage, NodeId};

use crate::broker::catalog::{Catalog, TopicChange, TopicMeta};
use crate::broker::config::ServerConfig;
use crate::kafka::errors::code;

/// Where this broker stands with the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerState {
    Unregistered,
    Fenced(BrokerEpoch),
    Active(BrokerEpoch),
}

/// The cluster as this node sees it (see the module docs).
#[derive(Debug)]
pub struct ClusterView {
    pub node_id: i32,
    /// The controllers configured at start (`controller_quorum`).
    configured: Vec<(NodeId, SocketAddr)>,
    /// Every controller and its quorum address: the configured ones, overridden and
    /// extended by those the image names (added by membership changes); replaced whole
    /// when an image moves it.
    controllers: Mutex<Vec<(NodeId, SocketAddr)>>,
    image: RwLock<Arc<MetadataImage>>,
    version: AtomicU64,
    quorum: Mutex<QuorumStatus>,
    broker: Mutex<BrokerState>,
    /// Index into `controllers` of the one to ask next.
    target: AtomicU64,
    /// `None` on a controller-only node: it opens no logs, so nothing follows the image.
    catalog: Option<Arc<Catalog>>,
    log_work: Mutex<Vec<TopicChange>>,
    /// Topics of a data dir from before the quorum (and internal topics this broker
    /// created), still to be put into the metadata log.
    import: Mutex<Vec<TopicMeta>>,
    importing: AtomicBool,
    /// Whether this node's own controller receives the metadata log (a voter or learner,
    /// so its images are current): `MEMBER_UNKNOWN` until it first publishes.
    controller_member: AtomicU8,
    /// When this node started (the offsets topic's creation waits on it).
    started: Instant,
    /// Controlled shutdown: `SHUTDOWN_*` (asked by `StopHandle::stop`, done by the broker
    /// agent on the control thread).
    shutdown: AtomicU8,
}

/// No controlled shutdown asked for.
const SHUTDOWN_NONE: u8 = 0;
/// Asked for: the broker agent hands leaderships over and stops heartbeating.
const SHUTDOWN_ASKED: u8 = 1;
/// Finished (or given up): the server may stop.
const SHUTDOWN_DONE: u8 = 2;

/// Requests that wait on the controller give up after this long.
pub const CONTROLLER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before asking again after a controller was unreachable or had no leader.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long a broker that is not a controller waits in one image fetch.
const IMAGE_FETCH_WAIT_MS: u32 = 5_000;
const MEMBER_UNKNOWN: u8 = 0;
const MEMBER_YES: u8 = 1;
const MEMBER_NO: u8 = 2;
/// How often a broker whose own controller follows the log checks that it still does.
const MEMBER_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Heartbeat interval while fenced (waiting to be unfenced).
const FENCED_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(20);
/// Queued log work beyond this is dropped with a warning (a restart re-syncs).
const LOG_WORK_MAX: usize = 100_000;

static CURRENT: Mutex<Option<Arc<ClusterView>>> = Mutex::new(None);

/// The view of the server running in this process (for the admin endpoint).
pub fn current() -> Option<Arc<ClusterView>> {
    CURRENT.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every guarded value is replaced whole, so a poisoned lock still holds a valid one.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClusterView {
    /// `required`: internal topics this broker created in its catalog, which must be in the
    /// metadata log as well.
    pub fn new(
        node_id: i32,
        controllers: Vec<(NodeId, SocketAddr)>,
        catalog: Option<Arc<Catalog>>,
        required: &[&str],
    ) -> Arc<ClusterView> {
        let legacy: Vec<TopicMeta> = match &catalog {
            Some(catalog) => {
                let from_log = catalog.from_metadata_log();
                catalog
                    .list()
                    .into_iter()
                    .filter(|t| !from_log || required.contains(&t.name.as_str()))
                    .collect()
            }
            None => Vec::new(),
        };
        let view = Arc::new(ClusterView {
            node_id,
            configured: controllers.clone(),
            controllers: Mutex::new(controllers),
            image: RwLock::new(Arc::new(MetadataImage::empty())),
            version: AtomicU64::new(0),
            quorum: Mutex::new(QuorumStatus::default()),
            broker: Mutex::new(BrokerState::Unregistered),
            target: AtomicU64::new(0),
            catalog,
            log_work: Mutex::new(Vec::new()),
            importing: AtomicBool::new(!legacy.is_empty()),
            controller_member: AtomicU8::new(MEMBER_UNKNOWN),
            shutdown: AtomicU8::new(SHUTDOWN_NONE),
            import: Mutex::new(legacy),
            started: Instant::now(),
        });
        *lock(&CURRENT) = Some(view.clone());
        view
    }

    /// The latest image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The offset of the latest image.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn quorum(&self) -> QuorumStatus {
        lock(&self.quorum).clone()
    }

    pub fn set_quorum(&self, q: QuorumStatus) {
        if let Some(leader) = q.leader {
            self.point_at(leader);
        }
        *lock(&self.quorum) = q;
    }

    pub fn broker_state(&self) -> BrokerState {
        *lock(&self.broker)
    }

    fn set_broker_state(&self, s: BrokerState) {
        let mut b = lock(&self.broker);
        if *b != s {
            tracing::info!(node = self.node_id, state = ?s, "broker state");
        }
        *b = s;
    }

    /// Asks the broker agent for a controlled shutdown (see `controlled_shutdown`).
    pub fn request_shutdown(&self) {
        let _ = self.shutdown.compare_exchange(
            SHUTDOWN_NONE,
            SHUTDOWN_ASKED,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    fn shutdown_asked(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst) != SHUTDOWN_NONE
    }

    /// Whether the controlled shutdown is over (the server may stop).
    pub fn shutdown_done(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst) == SHUTDOWN_DONE
    }

    /// Whether legacy topics are still being imported into the metadata log.
    pub fn importing(&self) -> bool {
        self.importing.load(Ordering::Acquire)
    }

    /// Publishes `image` (if not older than the current one): syncs the catalog first, so
    /// a shard that sees the new version finds the topics in the catalog too.
    pub fn publish(&self, image: Arc<MetadataImage>) {
        if image.offset().0 < self.version() {
            return;
        }
        if !self.importing() {
            self.sync_catalog(&image);
        }
        self.learn_controllers(&image);
        let offset = image.offset().0;
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = image;
        self.version.store(offset, Ordering::Release);
    }

    /// Says whether this node's own controller receives the metadata log.
    pub fn set_controller_member(&self, member: bool) {
        let state = if member { MEMBER_YES } else { MEMBER_NO };
        if self.controller_member.swap(state, Ordering::AcqRel) != state {
            tracing::info!(
                member,
                "whether this node's controller receives the metadata log"
            );
        }
    }

    /// The broker must fetch images from the quorum: its own controller published and is
    /// not in the configuration (not added yet, or removed). Before the first publication
    /// it is not known, and a restarted node must not take an image from a peer that may
    /// lag behind what it had.
    fn own_controller_outside(&self) -> bool {
        self.controller_member.load(Ordering::Acquire) == MEMBER_NO
    }

    /// Every controller this node can reach (configured, then from the image).
    pub fn controllers(&self) -> Vec<(NodeId, SocketAddr)> {
        lock(&self.controllers).clone()
    }

    /// The address book follows the image's controller records: a controller added by a
    /// membership change becomes reachable, one re-pointed moves.
    fn learn_controllers(&self, image: &MetadataImage) {
        let mut book: BTreeMap<NodeId, SocketAddr> = self.configured.iter().copied().collect();
        for (id, host, port) in image.controllers() {
            if let Some(addr) = sluice_control::node::resolve(host, port) {
                book.insert(id, addr);
            }
        }
        let book: Vec<(NodeId, SocketAddr)> = book.into_iter().collect();
        let mut current = lock(&self.controllers);
        if *current != book {
            tracing::info!(controllers = ?book, "controller addresses");
            *current = book;
        }
    }

    fn sync_catalog(&self, image: &MetadataImage) {
        let Some(catalog) = &self.catalog else {
            return;
        };
        let topics = image
            .topics()
            .map(|t| TopicMeta {
                name: t.name.clone(),
                partitions: t.partitions.len() as i32,
                topic_id: t.id.0.to_be_bytes(),
                configs: image
                    .configs_of(sluice_control::ConfigResource::Topic, &t.name)
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect();
        match catalog.sync_from(topics) {
            Ok(changes) if !changes.is_empty() => {
                let mut work = lock(&self.log_work);
                if work.len() + changes.len() > LOG_WORK_MAX {
                    tracing::warn!("log work queue full; changes apply after a restart");
                } else {
                    work.extend(changes);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "syncing the topic catalog from metadata failed"),
        }
    }

    /// What the logs must follow since the last call (shard 0 drains it).
    pub fn take_log_work(&self) -> Vec<TopicChange> {
        std::mem::take(&mut *lock(&self.log_work))
    }

    /// The controller to ask next.
    pub fn controller_addr(&self) -> SocketAddr {
        let controllers = lock(&self.controllers);
        let n = controllers.len().max(1) as u64;
        let i = (self.target.load(Ordering::Relaxed) % n) as usize;
        controllers
            .get(i)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// How many controllers this node knows.
    pub fn controller_count(&self) -> usize {
        lock(&self.controllers).len()
    }

    /// Asks `leader` next (if it is a known controller).
    pub fn point_at(&self, leader: NodeId) {
        let controllers = lock(&self.controllers);
        if let Some(i) = controllers.iter().position(|(id, _)| *id == leader) {
            self.target.store(i as u64, Ordering::Relaxed);
        }
    }

    /// Asks the next controller in the list (the current one did not answer).
    pub fn rotate(&self) {
        self.target.fetch_add(1, Ordering::Relaxed);
    }
}

/// A shard's own handle on the image: swapped when the published version moves.
#[derive(Debug)]
pub struct ShardImage {
    pub view: Arc<ClusterView>,
    cached: RefCell<(u64, Arc<MetadataImage>)>,
}

impl ShardImage {
    pub fn new(view: Arc<ClusterView>) -> ShardImage {
        let image = view.image();
        ShardImage {
            cached: RefCell::new((image.offset().0, image)),
            view,
        }
    }

    /// The current image (this shard's copy of the `Arc`).
    pub fn image(&self) -> Arc<MetadataImage> {
        let version = self.view.version();
        let mut cached = self.cached.borrow_mut();
        if cached.0 != version {
            let image = self.view.image();
            *cached = (image.offset().0, image);
        }
        cached.1.clone()
    }

    /// Whether this broker leads `topic`-`partition` in the current image.
    pub fn leads(&self, topic: &str, partition: i32) -> bool {
        let me = BrokerId(self.view.node_id);
        self.with_partition(topic, partition, |p| p.leader == Some(me))
            .unwrap_or(false)
    }

    /// The partition's leader epoch in the current image (stamped into appended batches).
    pub fn leader_epoch(&self, topic: &str, partition: i32) -> i32 {
        self.with_partition(topic, partition, |p| p.leader_epoch.0)
            .unwrap_or(0)
    }

    /// KIP-392: for a consumer in `client_rack` fetching a partition this broker leads
    /// from another rack, an in-sync, unfenced replica in the consumer's rack to read from.
    pub fn preferred_read_replica(
        &self,
        topic: &str,
        partition: i32,
        client_rack: &str,
    ) -> Option<i32> {
        let image = self.image();
        let me = BrokerId(self.view.node_id);
        let rack_of = |b: BrokerId| image.broker(b).and_then(|i| i.rack.clone());
        if client_rack.is_empty() || rack_of(me).as_deref() == Some(client_rack) {
            return None;
        }
        let p = image
            .topic_by_name(topic)?
            .partitions
            .get(&sluice_control::PartitionIndex(partition))?;
        if p.leader != Some(me) {
            return None;
        }
        p.isr
            .iter()
            .copied()
            .filter(|b| *b != me && image.is_live(*b))
            .find(|b| rack_of(*b).as_deref() == Some(client_rack))
            .map(|b| b.0)
    }

    fn with_partition<T>(
        &self,
        topic: &str,
        partition: i32,
        f: impl FnOnce(&sluice_control::PartitionState) -> T,
    ) -> Option<T> {
        let version = self.view.version();
        let mut cached = self.cached.borrow_mut();
        if cached.0 != version {
            let image = self.view.image();
            *cached = (image.offset().0, image);
        }
        cached
            .1
            .topic_by_name(topic)
            .and_then(|t| t.partitions.get(&sluice_control::PartitionIndex(partition)))
            .map(f)
    }

    /// Waits (polling, bounded by `timeout`) until the image reaches `offset`.
    pub async fn wait_for(&self, offset: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.view.version() < offset {
            if Instant::now() >= deadline {
                return false;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        true
    }
}

/// The Kafka error code for a controller refusal.
pub fn error_code(kind: ErrorKind) -> i16 {
    match kind {
        ErrorKind::TopicExists => code::TOPIC_ALREADY_EXISTS,
        ErrorKind::UnknownTopic => code::UNKNOWN_TOPIC_OR_PARTITION,
        ErrorKind::InvalidTopic => code::INVALID_TOPIC_EXCEPTION,
        ErrorKind::InvalidPartitions => code::INVALID_PARTITIONS,
        ErrorKind::InvalidReplicationFactor => code::INVALID_REPLICATION_FACTOR,
        ErrorKind::InvalidRequest => code::INVALID_REQUEST,
        ErrorKind::Timeout => code::REQUEST_TIMED_OUT,
        ErrorKind::Internal => code::UNKNOWN_SERVER_ERROR,
        ErrorKind::InvalidMembership => code::INVALID_REQUEST,
        ErrorKind::MembershipBusy => code::REQUEST_TIMED_OUT,
        ErrorKind::FencedLeaderEpoch => code::FENCED_LEADER_EPOCH,
        ErrorKind::IneligibleReplica => code::INELIGIBLE_REPLICA,
        ErrorKind::StaleBrokerEpoch => code::STALE_BROKER_EPOCH,
    }
}

/// Sends `req` to the active controller (following `NotLeader` answers, trying the next
/// controller when one does not answer) until it answers or `timeout` passes.
pub async fn ask_controller(
    view: &ClusterView,
    req: &Request,
    timeout: Duration,
) -> Result<Reply, (i16, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err((
                code::REQUEST_TIMED_OUT,
                "no active controller answered in time".into(),
            ));
        }
        match rpc::call(view.controller_addr(), req, left).await {
            Ok(Reply::NotLeader { leader: Some(l) }) if view.controller_count() > 1 => {
                view.point_at(l);
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            Ok(Reply::NotLeader { .. }) => {
                view.rotate();
                glommio::timer::sleep(RETRY_PAUSE).await;
            }
            Ok(reply) => return Ok(reply),
            Err(e) => {
                tracing::debug!(error = %e, "controller request failed; trying the next one");
                view.rotate();
                glommio::timer::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Asks the controller for a metadata change and waits until this shard's image has it.
/// `Ok(offset)` or `(error code, message)`.
pub async fn change_metadata(
    image: &ShardImage,
    req: &Request,
    timeout: Duration,
) -> Result<u64, (i16, String)> {
    match ask_controller(&image.view, req, timeout).await? {
        Reply::Done { offset } => {
            if image.wait_for(offset.0, timeout).await {
                Ok(offset.0)
            } else {
                Err((
                    code::REQUEST_TIMED_OUT,
                    format!("metadata offset {} not reached in time", offset.0),
                ))
            }
        }
        Reply::Error { kind, message } => Err((error_code(kind), message)),
        other => Err((
            code::UNKNOWN_SERVER_ERROR,
            format!("unexpected controller answer {other:?}"),
        )),
    }
}

/// Everything the control thread needs.
pub(crate) struct ControlArgs {
    pub view: Arc<ClusterView>,
    pub config: Arc<ServerConfig>,
    /// The quorum listener (bound by `server::start`), when this node is a controller.
    pub listener: Option<std::os::fd::RawFd>,
    pub stop: Arc<AtomicBool>,
}

/// The control thread: the controller quorum member (controller role), the broker's
/// registration and heartbeats (broker role), and for a broker that is not a controller,
/// the image fetched from the quorum.
pub(crate) async fn control_main(args: ControlArgs) -> Result<(), String> {
    let stop = args.stop.clone();
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
                .map_err(|e| format!("controller stopped: {e}"))
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
    if let Err(e) = &result {
        tracing::error!(error = %e, "control thread failed: stopping the broker");
        args.stop.store(true, Ordering::SeqCst);
    }
    result
}

fn node_config(args: &ControlArgs) -> sluice_control::node::NodeConfig {
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
        tcp: sluice_control::tcp::TcpConfig::default(),
        commit_timeout_ms: CONTROLLER_REQUEST_TIMEOUT.as_millis() as u64,
    }
}

/// The controller's files, inside the data dir (not a partition directory name).
pub const METADATA_DIR: &str = "__cluster_metadata";

/// Registers this broker, then heartbeats every `broker_heartbeat_interval_ms`; registers
/// again when the controller asks; imports legacy topics once active.
async fn broker_agent(view: Arc<ClusterView>, config: Arc<ServerConfig>, stop: Arc<AtomicBool>) {
    let interval = Duration::from_millis(config.cluster.broker_heartbeat_interval_ms.max(1));
    let timeout = interval.max(Duration::from_millis(500)) * 2;
    let me = BrokerId(config.node_id);
    let register = Request::Register {
        broker: me,
        rack: config.cluster.rack.clone(),
        listeners: vec![Listener {
            name: "PLAINTEXT".into(),
            host: config.advertised_host.clone(),
            port: config.advertised_port,
        }],
    };
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
        match rpc::call(view.controller_addr(), &req, timeout).await {
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
                }
                if hb == HeartbeatReply::Active && view.importing() {
                    import_legacy_topics(&view, &config).await;
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
async fn pause_unless_shutdown(view: &ClusterView, pause: Duration) {
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
const SHUTDOWN_POLL: Duration = Duration::from_millis(5);
/// Partitions named one by one in the controlled shutdown's log lines (the rest counted).
const SHUTDOWN_LOG_PARTITIONS_MAX: usize = 20;

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
    while view.version() < offset {
        if started.elapsed() >= timeout {
            tracing::warn!(
                offset,
                "controlled shutdown: the image did not reach the change in time; stopping anyway"
            );
            return;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
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
fn log_handover(before: &MetadataImage, after: &MetadataImage, me: BrokerId, took: Duration) {
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

/// Creates the topics a data dir held before the quorum existed (same ids, partition
/// counts and configs), once; then the catalog follows the image.
async fn import_legacy_topics(view: &Arc<ClusterView>, config: &ServerConfig) {
    let topics = lock(&view.import).clone();
    let mut left = Vec::new();
    for t in topics {
        let replication_factor = if t.name == crate::groups::OFFSETS_TOPIC {
            match offsets_replication_factor(view, config) {
                Some(rf) => rf,
                None => {
                    left.push(t);
                    continue;
                }
            }
        } else {
            1
        };
        let req = Request::CreateTopic {
            name: t.name.clone(),
            partitions: t.partitions,
            replication_factor,
            configs: t
                .configs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            topic_id: Some(sluice_control::TopicId(u128::from_be_bytes(t.topic_id))),
            validate_only: false,
        };
        match ask_controller(view, &req, CONTROLLER_REQUEST_TIMEOUT).await {
            Ok(Reply::Done { .. }) => {
                tracing::info!(topic = %t.name, partitions = t.partitions, "imported topic into the metadata log")
            }
            Ok(Reply::Error {
                kind: ErrorKind::TopicExists,
                ..
            }) => {}
            // The offsets topic asked for more replicas than the controller counts live
            // brokers (a broker was fenced between this node's look and the
            // controller's): decide again on the next heartbeat.
            Ok(Reply::Error {
                kind: ErrorKind::InvalidReplicationFactor,
                message,
            }) if t.name == crate::groups::OFFSETS_TOPIC => {
                tracing::info!(%message, "offsets topic not created yet; retrying");
                left.push(t);
            }
            // Refused for good (a name or count the controller will never accept): the
            // topic stays out of the metadata log, its logs unused; say so once.
            Ok(Reply::Error {
                kind:
                    kind @ (ErrorKind::InvalidTopic
                    | ErrorKind::InvalidPartitions
                    | ErrorKind::InvalidReplicationFactor
                    | ErrorKind::InvalidRequest),
                message,
            }) => {
                tracing::error!(topic = %t.name, ?kind, %message, "topic from before the quorum cannot be imported");
            }
            other => {
                tracing::warn!(topic = %t.name, answer = ?other, "importing topic failed; retrying");
                left.push(t);
            }
        }
    }
    let done = left.is_empty();
    *lock(&view.import) = left;
    if done {
        // Wait until the imports are in this node's image, then let the catalog follow it.
        let deadline = Instant::now() + CONTROLLER_REQUEST_TIMEOUT;
        while Instant::now() < deadline {
            let image = view.image();
            if view
                .catalog
                .iter()
                .flat_map(|c| c.list())
                .all(|t| image.topic_by_name(&t.name).is_some())
            {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
        view.importing.store(false, Ordering::Release);
        view.sync_catalog(&view.image());
    }
}

/// How long a new cluster waits for brokers to register before it creates the offsets
/// topic with fewer replicas than it could have.
const OFFSETS_TOPIC_BROKERS_WAIT: Duration = Duration::from_secs(30);

/// The replication factor to create `__consumer_offsets` with: the configured one, capped
/// by the unfenced brokers registered now. `None` (ask again later) while fewer brokers
/// than controllers (capped by the configured factor) have registered and the wait has
/// not run out: a new cluster's brokers start together, and the topic keeps its replicas
/// for good. A topic the image already has needs no decision (1: the controller answers
/// that it exists).
fn offsets_replication_factor(view: &ClusterView, config: &ServerConfig) -> Option<i16> {
    let image = view.image();
    if image.topic_by_name(crate::groups::OFFSETS_TOPIC).is_some() {
        return Some(1);
    }
    let wanted = config.groups.offsets_replication_factor.max(1) as usize;
    // Unfenced brokers: the controller places replicas on those only.
    let live = image.brokers().filter(|b| !b.fenced).count().max(1);
    let expected = wanted.min(view.controllers().len().max(1));
    if live < expected && view.started.elapsed() < OFFSETS_TOPIC_BROKERS_WAIT {
        return None;
    }
    let rf = wanted.min(live) as i16;
    tracing::info!(
        replication_factor = rf,
        brokers = live,
        "creating the offsets topic"
    );
    Some(rf)
}

/// A broker that is not a controller follows the image by long-polling the quorum; with
/// `unless_member`, only while this node's own controller is not in the configuration.
async fn follow_image(view: Arc<ClusterView>, stop: Arc<AtomicBool>, unless_member: bool) {
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
        match rpc::call(view.controller_addr(), &req, timeout).await {
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

/// `/cluster` on the admin endpoint: brokers, quorum, partition health, as JSON.
pub fn status_json(view: &ClusterView) -> String {
    let image = view.image();
    let q = view.quorum();
    let brokers: Vec<serde_json::Value> = image
        .brokers()
        .map(|b| {
            let listener = b.listeners.first();
            serde_json::json!({
                "id": b.id.0,
                "epoch": b.epoch.0,
                "rack": b.rack,
                "fenced": b.fenced,
                "host": listener.map(|l| l.host.clone()),
                "port": listener.map(|l| l.port),
            })
        })
        .collect();
    let names = |it: &mut dyn Iterator<
        Item = (&sluice_control::TopicImage, sluice_control::PartitionIndex),
    >| {
        it.map(|(t, p)| format!("{}-{}", t.name, p.0))
            .collect::<Vec<_>>()
    };
    let under = names(&mut image.under_replicated());
    let offline = names(&mut image.offline());
    let under_detail = details(&mut image.under_replicated(), |_, p| {
        serde_json::json!({
            "leader": p.leader.map(|l| l.0),
            "isr": ids(&p.isr),
            "missing": ids(&missing_replicas(p)),
        })
    });
    let offline_detail = details(&mut image.offline(), |t, p| {
        serde_json::json!({
            "leader": p.leader.map(|l| l.0),
            "isr": ids(&p.isr),
            "elr": ids(&p.elr),
            "waits_for": ids(&waits_for(p)),
            "unclean_election": image.unclean_election_enabled(&t.name),
        })
    });
    let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
    for (_, _, p) in image.partitions() {
        if let Some(l) = p.leader {
            *leaders.entry(l.0).or_default() += 1;
        }
    }
    let state = match view.broker_state() {
        BrokerState::Unregistered => "unregistered",
        BrokerState::Fenced(_) => "fenced",
        BrokerState::Active(_) => "active",
    };
    serde_json::json!({
        "node_id": view.node_id,
        "broker_state": state,
        "controller": {
            "leader": q.leader.map(|l| l.0),
            "term": q.term.0,
            "commit_index": q.commit_index,
            "applied_index": q.applied_index,
            "voters": q.voters.iter().map(|v| v.0).collect::<Vec<_>>(),
            "learners": q.learners.iter().map(|v| v.0).collect::<Vec<_>>(),
            "seen_by": q.node,
            "addresses": view
                .controllers()
                .iter()
                .map(|(id, a)| (id.0.to_string(), a.to_string()))
                .collect::<BTreeMap<_, _>>(),
        },
        "metadata_offset": image.offset().0,
        "brokers": brokers,
        "topics": image.topics().count(),
        "partitions": image.partitions().count(),
        "leaders_per_broker": leaders,
        "under_replicated": under,
        "offline": offline,
        "under_replicated_partitions": under_detail,
        "offline_partitions": offline_detail,
    })
    .to_string()
}

/// One JSON object per listed partition: `"partition": "topic-N"` plus what `fields` gives.
fn details(
    partitions: &mut dyn Iterator<
        Item = (&sluice_control::TopicImage, sluice_control::PartitionIndex),
    >,
    fields: impl Fn(&sluice_control::TopicImage, &sluice_control::PartitionState) -> serde_json::Value,
) -> Vec<serde_json::Value> {
    partitions
        .filter_map(|(t, idx)| {
            let mut v = fields(t, t.partitions.get(&idx)?);
            v["partition"] = serde_json::json!(format!("{}-{}", t.name, idx.0));
            Some(v)
        })
        .collect()
}

fn ids(brokers: &[BrokerId]) -> Vec<i32> {
    brokers.iter().map(|b| b.0).collect()
}

/// Replicas of an under-replicated partition that are not in its ISR.
fn missing_replicas(p: &sluice_control::PartitionState) -> Vec<BrokerId> {
    p.replicas
        .iter()
        .copied()
        .filter(|r| !p.isr.contains(r))
        .collect()
}

/// The brokers an offline partition waits for: its ISR and ELR members (in replica order),
/// the replicas that hold every committed record; any of them coming back (registered and
/// unfenced) is elected. An unclean election could pick another replica, but only where
/// the topic allows it.
fn waits_for(p: &sluice_control::PartitionState) -> Vec<BrokerId> {
    p.replicas
        .iter()
        .copied()
        .filter(|r| p.isr.contains(r) || p.elr.contains(r))
        .collect()
}

/// Partitions led by someone other than their preferred (first) replica.
fn not_preferred(image: &MetadataImage) -> usize {
    image
        .partitions()
        .filter(|(_, _, p)| p.leader.is_some() && p.leader != p.replicas.first().copied())
        .count()
}

/// Sends `req` to the active controller from a blocking thread (the admin endpoint),
/// following `NotLeader` answers and trying the next controller when one does not answer,
/// until an answer or `CONTROLLER_REQUEST_TIMEOUT`.
fn ask_controller_blocking(
    view: &ClusterView,
    req: &Request,
    timeout: Duration,
) -> Result<Reply, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no active controller answered in time".into());
        }
        match rpc::call_blocking(view.controller_addr(), req, left) {
            Ok(Reply::NotLeader { leader: Some(l) }) if view.controller_count() > 1 => {
                view.point_at(l);
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(Reply::NotLeader { .. }) | Err(_) => {
                view.rotate();
                std::thread::sleep(RETRY_PAUSE);
            }
            Ok(reply) => return Ok(reply),
        }
    }
}

/// Why a membership change through the admin endpoint failed.
#[derive(Debug)]
pub enum MembershipError {
    /// Can never apply as asked (duplicate, unknown, last voter, bad argument).
    Invalid(String),
    /// Another change is under way, or no controller answered in time: retry.
    Unavailable(String),
}

/// `/cluster/controllers/add` and `/remove` on the admin endpoint (a blocking thread):
/// asks the active controller for the change, answered once it is applied there; the
/// answer (JSON) names the voters this node then sees.
pub fn change_controllers_blocking(
    view: &ClusterView,
    req: &Request,
) -> Result<String, MembershipError> {
    match ask_controller_blocking(view, req, CONTROLLER_REQUEST_TIMEOUT)
        .map_err(MembershipError::Unavailable)?
    {
        Reply::Done { offset } => {
            let deadline = Instant::now() + CONTROLLER_REQUEST_TIMEOUT;
            let quorum = loop {
                // Heartbeats and the controller's own publication refresh the quorum.
                match rpc::call_blocking(view.controller_addr(), &Request::Status, RETRY_PAUSE * 20)
                {
                    Ok(Reply::Status(q)) => break Some(q),
                    _ if Instant::now() >= deadline => break None,
                    _ => {
                        view.rotate();
                        std::thread::sleep(RETRY_PAUSE);
                    }
                }
            };
            let voters: Vec<u64> = quorum
                .map(|q| q.voters.iter().map(|v| v.0).collect())
                .unwrap_or_default();
            Ok(serde_json::json!({
                "metadata_offset": offset.0,
                "voters": voters,
            })
            .to_string())
        }
        Reply::Error {
            kind: ErrorKind::InvalidMembership,
            message,
        } => Err(MembershipError::Invalid(message)),
        Reply::Error { message, .. } => Err(MembershipError::Unavailable(message)),
        other => Err(MembershipError::Unavailable(format!(
            "unexpected controller answer {other:?}"
        ))),
    }
}

/// `/cluster/elect-leaders` on the admin endpoint (a blocking thread): asks the active
/// controller to move leadership to preferred replicas, waits until this node's image has
/// the result, and says how many partitions were off their preferred leader before and
/// after (JSON).
pub fn elect_leaders_blocking(view: &ClusterView) -> Result<String, String> {
    let before = not_preferred(&view.image());
    let deadline = Instant::now() + CONTROLLER_REQUEST_TIMEOUT;
    let offset = loop {
        if Instant::now() >= deadline {
            return Err("no active controller answered in time".into());
        }
        match rpc::call_blocking(
            view.controller_addr(),
            &Request::ElectLeaders,
            CONTROLLER_REQUEST_TIMEOUT,
        ) {
            Ok(Reply::Done { offset }) => break offset.0,
            Ok(Reply::NotLeader { leader: Some(l) }) if view.controller_count() > 1 => {
                view.point_at(l)
            }
            Ok(Reply::Error { message, .. }) => return Err(message),
            Ok(_) | Err(_) => {
                view.rotate();
                std::thread::sleep(RETRY_PAUSE);
            }
        }
    };
    while view.version() < offset {
        if Instant::now() >= deadline {
            return Err(format!("metadata offset {offset} not reached in time"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let after = not_preferred(&view.image());
    Ok(serde_json::json!({
        "metadata_offset": offset,
        "not_preferred_before": before,
        "not_preferred_after": after,
    })
    .to_string())
}

/// Asks the controller to set the ISR of a partition this broker leads at
/// `leader_epoch`, and waits until this shard's image shows the change.
pub async fn alter_isr(
    image: &ShardImage,
    tp: &crate::store::TopicPartition,
    leader_epoch: i32,
    isr: &[i32],
) -> Result<(), (i16, String)> {
    let broker_epoch = match image.view.broker_state() {
        BrokerState::Active(e) | BrokerState::Fenced(e) => e,
        BrokerState::Unregistered => {
            return Err((code::NOT_LEADER_OR_FOLLOWER, "not registered".into()));
        }
    };
    let req = Request::AlterPartition {
        broker: BrokerId(image.view.node_id),
        broker_epoch,
        topic: tp.topic.clone(),
        partition: tp.partition.0,
        leader_epoch: sluice_control::LeaderEpoch(leader_epoch),
        isr: isr.iter().map(|b| BrokerId(*b)).collect(),
    };
    change_metadata(image, &req, CONTROLLER_REQUEST_TIMEOUT)
        .await
        .map(|_| ())
}
