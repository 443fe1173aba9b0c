//! Topics of a data dir from before the quorum (and internal topics this broker created)
//! put into the metadata log once, with their ids, partition counts and configs; and the
//! replication factor the offsets topic is created with.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_control::rpc::{ErrorKind, Reply, Request};

use super::controller::{ask_controller, CONTROLLER_REQUEST_TIMEOUT};
use super::view::lock;
use super::ClusterView;
use crate::broker::config::ServerConfig;

/// Creates the topics a data dir held before the quorum existed (same ids, partition
/// counts and configs), once; then the catalog follows the image.
pub(super) async fn import_legacy_topics(view: &Arc<ClusterView>, config: &ServerConfig) {
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
            assignment: Vec::new(),
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
        // Wait until the imports are in this node's image (woken by each publication on
        // this, the control thread), then let the catalog follow it.
        let deadline = Instant::now() + CONTROLLER_REQUEST_TIMEOUT;
        let published = super::bell::control_version();
        loop {
            let version = view.version();
            let image = view.image();
            if view
                .catalog
                .iter()
                .flat_map(|c| c.list())
                .all(|t| image.topic_by_name(&t.name).is_some())
            {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            super::bell::wait_until(&published, view, version + 1, left).await;
        }
        view.importing.store(false, Ordering::Release);
        view.sync_catalog(&view.image());
        // Shard 0 applies the log work this queued (`follow_log_work`).
        super::bell::ring(view.version());
    }
}

/// How long a new cluster waits for brokers to register before it creates the offsets
/// topic with fewer replicas than it could have.
pub(super) const OFFSETS_TOPIC_BROKERS_WAIT: Duration = Duration::from_secs(30);

/// The replication factor to create `__consumer_offsets` with: the configured one, capped
/// by the unfenced brokers registered now. `None` (ask again later) while fewer brokers
/// than controllers (capped by the configured factor) have registered and the wait has
/// not run out: a new cluster's brokers start together, and the topic keeps its replicas
/// for good. A topic the image already has needs no decision (1: the controller answers
/// that it exists).
pub(super) fn offsets_replication_factor(view: &ClusterView, config: &ServerConfig) -> Option<i16> {
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
