//! `ClusterView`: the cluster as this node sees it — the latest metadata image, the
//! quorum, this broker's registration state, the controllers' addresses, and the topic
//! work the logs must follow. One per process, shared by every thread; only the control
//! thread publishes into it.
//!
//! Invariants: an image is published only if its offset is not older than the current
//! one; the catalog is synced before the new version becomes visible.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use sluice_control::rpc::QuorumStatus;
use sluice_control::tls::ClusterTls;
use sluice_control::{BrokerEpoch, MetadataImage, NodeId};

use crate::broker::catalog::{Catalog, TopicChange, TopicMeta};

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
    pub(super) configured: Vec<(NodeId, SocketAddr)>,
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
    pub(super) catalog: Option<Arc<Catalog>>,
    log_work: Mutex<Vec<TopicChange>>,
    /// Topics of a data dir from before the quorum (and internal topics this broker
    /// created), still to be put into the metadata log.
    pub(super) import: Mutex<Vec<TopicMeta>>,
    pub(super) importing: AtomicBool,
    /// Whether this node's own controller receives the metadata log (a voter or learner,
    /// so its images are current): `MEMBER_UNKNOWN` until it first publishes.
    controller_member: AtomicU8,
    /// When this node started (the offsets topic's creation waits on it).
    pub(super) started: Instant,
    /// Controlled shutdown: `SHUTDOWN_*` (asked by `StopHandle::stop`, done by the broker
    /// agent on the control thread).
    pub(super) shutdown: AtomicU8,
    /// `[cluster_tls]`: every connection to a controller is mutual TLS.
    cluster_tls: Option<Arc<ClusterTls>>,
}

/// No controlled shutdown asked for.
const SHUTDOWN_NONE: u8 = 0;
/// Asked for: the broker agent hands leaderships over and stops heartbeating.
const SHUTDOWN_ASKED: u8 = 1;
/// Finished (or given up): the server may stop.
pub(super) const SHUTDOWN_DONE: u8 = 2;

const MEMBER_UNKNOWN: u8 = 0;
const MEMBER_YES: u8 = 1;
const MEMBER_NO: u8 = 2;

/// Queued log work beyond this is dropped with a warning (a restart re-syncs).
const LOG_WORK_MAX: usize = 100_000;

static CURRENT: Mutex<Option<Arc<ClusterView>>> = Mutex::new(None);

/// The view of the server running in this process (for the admin endpoint).
pub fn current() -> Option<Arc<ClusterView>> {
    CURRENT.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every guarded value is replaced whole, so a poisoned lock still holds a valid one.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClusterView {
    /// `required`: internal topics this broker created in its catalog, which must be in the
    /// metadata log as well. `cluster_tls`: how this node reaches the controllers.
    pub fn new(
        node_id: i32,
        controllers: Vec<(NodeId, SocketAddr)>,
        catalog: Option<Arc<Catalog>>,
        required: &[&str],
        cluster_tls: Option<Arc<ClusterTls>>,
    ) -> Arc<ClusterView> {
        let legacy: Vec<TopicMeta> = match &catalog {
            Some(catalog) => {
                let from_log = catalog.copies_metadata_log();
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
            cluster_tls,
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

    pub(super) fn set_broker_state(&self, s: BrokerState) {
        let mut b = lock(&self.broker);
        let changed = *b != s;
        if changed {
            tracing::info!(node = self.node_id, state = ?s, "broker state");
        }
        *b = s;
        drop(b);
        if changed {
            // Shards waiting to serve look at the state (on the control thread: the
            // agent is the only caller).
            super::bell::ring(self.version());
        }
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

    pub(super) fn shutdown_asked(&self) -> bool {
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
        super::bell::ring(offset);
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
    pub(super) fn own_controller_outside(&self) -> bool {
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

    pub(super) fn sync_catalog(&self, image: &MetadataImage) {
        let Some(catalog) = &self.catalog else {
            return;
        };
        let (broker, cluster) = dynamic_broker_configs(image, self.node_id);
        let inherited = crate::broker::config_keys::inherited(&broker, &cluster);
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
                inherited: inherited.clone(),
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

    /// `[cluster_tls]`, for every request to a controller (`rpc::call`).
    pub fn cluster_tls(&self) -> Option<&ClusterTls> {
        self.cluster_tls.as_deref()
    }

    /// `[cluster_tls]`, shared (the controller's own transport).
    pub fn cluster_tls_arc(&self) -> Option<Arc<ClusterTls>> {
        self.cluster_tls.clone()
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

/// The dynamic broker configs of broker `node_id` and the cluster's dynamic defaults, as
/// the image holds them (broker key names).
pub(crate) fn dynamic_broker_configs(
    image: &MetadataImage,
    node_id: i32,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    use sluice_control::ConfigResource;
    let of = |resource, name: &str| {
        image
            .configs_of(resource, name)
            .cloned()
            .unwrap_or_default()
    };
    (
        of(ConfigResource::Broker, &node_id.to_string()),
        of(ConfigResource::Cluster, ""),
    )
}
