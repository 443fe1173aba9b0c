//! The controller: one raft-rs `RawNode` over `DiskStorage`, the metadata image it applies
//! committed records into, and snapshots of that image for log compaction.
//!
//! One loop owns a `Controller` and calls, in any interleaving: `step` for each incoming
//! message, `tick` on each clock tick, `propose*` for new records, and `on_ready` after
//! any of them. `on_ready` follows raft-rs's order: send messages, apply the snapshot,
//! apply committed entries, append entries and hard state, fsync when `must_sync`, send
//! the persisted messages, `advance`, handle the `LightReady`, `advance_apply`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message,
    MessageType, Snapshot, SnapshotMetadata,
};
use raft::{RawNode, StateRole};

use crate::image::{MetadataImage, SnapshotError};
use crate::records::Record;
use crate::storage::{ApplyState, DiskStorage, StorageError};
use crate::transport::Transport;
use crate::types::{MetadataOffset, NodeId, Term};

/// Controller settings (raft timing in ticks; the caller decides how long a tick is).
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub id: NodeId,
    /// Ticks without a leader heartbeat before an election (raft's `election_tick`).
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// Randomized election timeout range `[min, max)`; `None` = raft's default
    /// (`[election_tick, 2 * election_tick)`). Tests pin it per node to stay deterministic.
    pub election_timeout_range: Option<(usize, usize)>,
    /// Take a snapshot and compact the log once this many entries were applied since the
    /// last snapshot.
    pub snapshot_entries_max: u64,
    pub max_size_per_msg: u64,
    pub max_inflight_msgs: usize,
}

impl ControllerConfig {
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            election_tick: 10,
            heartbeat_tick: 2,
            election_timeout_range: None,
            snapshot_entries_max: 1024,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
        }
    }
}

/// How a node's storage starts when its directory is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// A founding member: the initial quorum is these voters (the same list on each).
    Voters(Vec<NodeId>),
    /// A node to be added later by a membership change; it learns everything from the
    /// leader (a snapshot, then entries).
    Join,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("protobuf: {0}")]
    Protobuf(#[from] protobuf::ProtobufError),
    #[error("the leader cannot remove itself; demote it to a learner first")]
    RemoveSelf,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControllerStats {
    pub records_applied: u64,
    /// Committed records every node skipped because they did not apply to the image.
    pub records_rejected: u64,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
}

/// A controller's raft state, for `sluice cluster status` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerStatus {
    pub id: NodeId,
    pub is_leader: bool,
    pub leader: Option<NodeId>,
    pub term: Term,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub voters: Vec<NodeId>,
    pub stats: ControllerStats,
}

/// Forwards raft-rs's slog output to `tracing`.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, r: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match r.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}", r.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", r.msg()),
            slog::Level::Info => tracing::debug!(target: "raft", "{}", r.msg()),
            _ => tracing::trace!(target: "raft", "{}", r.msg()),
        }
        Ok(())
    }
}

/// One controller quorum member.
pub struct Controller {
    id: NodeId,
    node: RawNode<DiskStorage>,
    image: Arc<MetadataImage>,
    config: ControllerConfig,
    /// Set when a configuration change was applied; written after the entries of the
    /// same `Ready` so the file never says "applied" before the entry is in it.
    pending_apply_state: Option<ApplyState>,
    stats: ControllerStats,
    /// Per peer, while this node leads: when it last answered an append or heartbeat, and
    /// when it last had every entry (unix ms; DescribeQuorum's fetch and caught-up times).
    /// One entry per member, dropped when leadership is lost.
    peers_heard: HashMap<u64, PeerHeard>,
}

#[derive(Debug, Clone, Copy, Default)]
struct PeerHeard {
    answered_ms: Option<i64>,
    caught_up_ms: Option<i64>,
}

/// One member's replication progress as the leader sees it (Kafka's DescribeQuorum
/// `ReplicaState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaProgress {
    pub id: NodeId,
    /// Its last log index the leader knows it has (the leader's own last index for the
    /// leader).
    pub log_end: u64,
    /// Unix ms of its last answer to the leader, and of the last time it had every entry;
    /// `None` when not heard from since this leader took over.
    pub last_fetch_ms: Option<i64>,
    pub last_caught_up_ms: Option<i64>,
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("id", &self.id)
            .field("role", &self.node.raft.state)
            .field("term", &self.node.raft.term)
            .field("image_offset", &self.image.offset())
            .finish_non_exhaustive()
    }
}

fn initial_snapshot(voters: &[NodeId]) -> Snapshot {
    let mut snap = Snapshot {
        data: MetadataImage::empty()
            .advance_to(MetadataOffset(1))
            .encode_snapshot()
            .into(),
        ..Default::default()
    };
    let cs = ConfState::from((voters.iter().map(|v| v.0).collect::<Vec<_>>(), vec![]));
    snap.set_metadata(SnapshotMetadata {
        conf_state: Some(cs).into(),
        index: 1,
        term: 1,
        ..Default::default()
    });
    snap
}

fn decode_conf_change(e: &Entry) -> Result<ConfChangeV2, ControllerError> {
    Ok(match e.get_entry_type() {
        EntryType::EntryConfChange => {
            let v1 = raft::eraftpb::ConfChange::parse_from_bytes(&e.data)?;
            single_change(v1.get_change_type(), NodeId(v1.node_id))
        }
        _ => ConfChangeV2::parse_from_bytes(&e.data)?,
    })
}

impl Controller {
    /// Opens (or creates) the controller whose files are in `dir`.
    pub fn open(
        dir: &Path,
        config: ControllerConfig,
        bootstrap: &Bootstrap,
    ) -> Result<Self, ControllerError> {
        let mut store = DiskStorage::open(dir)?;
        let fresh = store.stored_snapshot().get_metadata().index == 0
            && raft::Storage::last_index(&store)? == 0;
        if let (true, Bootstrap::Voters(voters)) = (fresh, bootstrap) {
            store.install_snapshot(initial_snapshot(voters))?;
        }
        let image = Self::recover_image(&store)?;
        let applied = store.apply_state().applied.max(image.offset().0);
        let mut raft_config = raft::Config {
            id: config.id.0,
            election_tick: config.election_tick,
            heartbeat_tick: config.heartbeat_tick,
            applied,
            max_size_per_msg: config.max_size_per_msg,
            max_inflight_msgs: config.max_inflight_msgs,
            // An isolated leader steps down after an election timeout without a quorum.
            check_quorum: true,
            // A node that was cut off does not disrupt the quorum when it comes back.
            pre_vote: true,
            ..Default::default()
        };
        if let Some((min, max)) = config.election_timeout_range {
            raft_config.min_election_tick = min;
            raft_config.max_election_tick = max;
        }
        let logger = slog::Logger::root(TracingDrain, slog::o!("raft_id" => config.id.0));
        let node = RawNode::new(&raft_config, store, &logger)?;
        Ok(Self {
            id: config.id,
            node,
            image: Arc::new(image),
            config,
            pending_apply_state: None,
            stats: ControllerStats::default(),
            peers_heard: HashMap::new(),
        })
    }

    /// The image as of the snapshot plus the normal entries up to the persisted applied
    /// index (configuration changes up to there are already in the persisted conf state).
    fn recover_image(store: &DiskStorage) -> Result<MetadataImage, ControllerError> {
        let snap = store.stored_snapshot();
        let mut image = if snap.get_metadata().index == 0 {
            MetadataImage::empty()
        } else {
            MetadataImage::decode_snapshot(&snap.data)?
        };
        let applied = store.apply_state().applied;
        for e in store.entries_between(image.offset().0, applied) {
            image = apply_entry_to_image(&image, &e).0;
        }
        Ok(image)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The latest applied metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.image)
    }

    /// Whether this node is the active controller: the raft leader and still a voter (a
    /// leader whose own removal was applied only hands leadership over).
    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader && self.is_voter()
    }

    /// Whether this node is in the configuration (a voter or a learner), so it receives
    /// the metadata log.
    pub fn is_member(&self) -> bool {
        self.is_voter() || self.node.raft.prs().conf().learners().contains(&self.id.0)
    }

    /// Whether this node is one of the current voters.
    pub fn is_voter(&self) -> bool {
        self.node.raft.prs().conf().voters().contains(self.id.0)
    }

    /// The leader this node knows of (never itself once it was removed from the voters).
    pub fn leader(&self) -> Option<NodeId> {
        let l = self.node.raft.leader_id;
        if l == self.id.0 && !self.is_voter() {
            return None;
        }
        (l != raft::INVALID_ID).then_some(NodeId(l))
    }

    /// How far the leader knows `node`'s log matches its own (`None`: not a member, or
    /// this node is not the leader).
    pub fn matched(&self, node: NodeId) -> Option<u64> {
        if self.node.raft.state != StateRole::Leader {
            return None;
        }
        self.node.raft.prs().get(node.0).map(|p| p.matched)
    }

    /// Whether a membership change was proposed and not yet applied (or a joint
    /// configuration is not left yet): raft takes one change at a time.
    pub fn membership_change_pending(&self) -> bool {
        let raft = &self.node.raft;
        raft.has_pending_conf() || !raft.prs().conf().to_conf_state().voters_outgoing.is_empty()
    }

    pub fn term(&self) -> Term {
        Term(self.node.raft.term)
    }

    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    /// The last index in this node's log.
    pub fn last_index(&self) -> u64 {
        self.node.raft.raft_log.last_index()
    }

    pub fn applied_index(&self) -> u64 {
        self.node.raft.raft_log.applied
    }

    /// The current voters.
    pub fn voters(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .node
            .raft
            .prs()
            .conf()
            .voters()
            .ids()
            .iter()
            .map(NodeId)
            .collect();
        v.sort_unstable();
        v
    }

    /// Everything `sluice cluster status` shows about this controller.
    pub fn status(&self) -> ControllerStatus {
        ControllerStatus {
            id: self.id,
            is_leader: self.is_leader(),
            leader: self.leader(),
            term: self.term(),
            commit_index: self.commit_index(),
            applied_index: self.applied_index(),
            snapshot_index: self.snapshot_index(),
            voters: self.voters(),
            stats: self.stats,
        }
    }

    pub fn stats(&self) -> ControllerStats {
        self.stats
    }

    /// Index of the stored snapshot (the log starts after it).
    pub fn snapshot_index(&self) -> u64 {
        self.node.store().stored_snapshot().get_metadata().index
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// Feeds one incoming raft message.
    pub fn step(&mut self, msg: Message) -> Result<(), ControllerError> {
        let answer = matches!(
            msg.get_msg_type(),
            MessageType::MsgAppendResponse | MessageType::MsgHeartbeatResponse
        )
        .then_some(msg.from);
        self.node.step(msg)?;
        match answer {
            Some(from) if self.is_leader() => self.heard_from(from),
            _ if !self.is_leader() => self.peers_heard.clear(),
            _ => {}
        }
        Ok(())
    }

    /// Notes an answer from `peer` to this leader.
    fn heard_from(&mut self, peer: u64) {
        let now = unix_ms();
        let caught_up = self
            .node
            .raft
            .prs()
            .get(peer)
            .is_some_and(|p| p.matched >= self.last_index());
        let heard = self.peers_heard.entry(peer).or_default();
        heard.answered_ms = Some(now);
        if caught_up {
            heard.caught_up_ms = Some(now);
        }
    }

    /// Every member's progress as this leader sees it: (voters, learners), by id. `None`
    /// when this node does not lead.
    pub fn quorum_progress(&self) -> Option<(Vec<ReplicaProgress>, Vec<ReplicaProgress>)> {
        if !self.is_leader() {
            return None;
        }
        let now = unix_ms();
        let progress = |id: NodeId| {
            if id == self.id {
                return ReplicaProgress {
                    id,
                    log_end: self.last_index(),
                    last_fetch_ms: Some(now),
                    last_caught_up_ms: Some(now),
                };
            }
            let heard = self.peers_heard.get(&id.0).copied().unwrap_or_default();
            ReplicaProgress {
                id,
                log_end: self.node.raft.prs().get(id.0).map_or(0, |p| p.matched),
                last_fetch_ms: heard.answered_ms,
                last_caught_up_ms: heard.caught_up_ms,
            }
        };
        let voters = self.voters().into_iter().map(progress).collect();
        let learners = self.learners().into_iter().map(progress).collect();
        Some((voters, learners))
    }

    /// Tells raft how sending a snapshot to `to` ended. The transport must report every
    /// `MsgSnapshot` it was given: until it does, raft sends that follower nothing else.
    pub fn report_snapshot(&mut self, to: NodeId, delivered: bool) {
        let status = if delivered {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.node.report_snapshot(to.0, status);
    }

    /// Tells raft that a message to `to` could not be sent (raft then probes instead of
    /// streaming to it).
    pub fn report_unreachable(&mut self, to: NodeId) {
        self.node.report_unreachable(to.0);
    }

    /// Advances raft's logical clock by one tick.
    pub fn tick(&mut self) {
        self.node.tick();
        self.hand_over_if_removed();
    }

    /// A leader whose removal from the voters was applied hands leadership to the voter
    /// with the longest log (raft-rs keeps such a leader leading otherwise). Retried on
    /// every tick until a transfer is under way: raft aborts one that does not finish
    /// within an election timeout.
    fn hand_over_if_removed(&mut self) {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader || self.is_voter() || raft.lead_transferee.is_some() {
            return;
        }
        let target = raft
            .prs()
            .conf()
            .voters()
            .ids()
            .iter()
            .filter_map(|id| raft.prs().get(id).map(|p| (p.matched, id)))
            .max()
            .map(|(_, id)| id);
        if let Some(target) = target {
            tracing::info!(
                node = self.id.0,
                to = target,
                "removed from the voters: handing controller leadership over"
            );
            self.node.transfer_leader(target);
        }
    }

    /// Starts an election now (used to hand leadership over or in tests).
    pub fn campaign(&mut self) -> Result<(), ControllerError> {
        Ok(self.node.campaign()?)
    }

    fn ensure_leader(&self) -> Result<(), ControllerError> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(ControllerError::NotLeader {
                leader: self.leader(),
            })
        }
    }

    /// Proposes a record; it takes effect when committed and applied (check `image()`).
    pub fn propose(&mut self, record: &Record) -> Result<(), ControllerError> {
        self.ensure_leader()?;
        Ok(self.node.propose(vec![], record.encode())?)
    }

    /// Proposes a membership change (joint consensus when it changes more than one voter).
    pub fn propose_conf_change(&mut self, cc: ConfChangeV2) -> Result<(), ControllerError> {
        self.ensure_leader()?;
        Ok(self.node.propose_conf_change(vec![], cc)?)
    }

    /// Proposes adding `node` as a voter.
    pub fn propose_add_voter(&mut self, node: NodeId) -> Result<(), ControllerError> {
        self.propose_conf_change(single_change(ConfChangeType::AddNode, node))
    }

    /// Proposes adding `node` as a learner: it receives the metadata log (and so keeps a
    /// current image) without voting — how a broker that is not a controller follows.
    pub fn propose_add_learner(&mut self, node: NodeId) -> Result<(), ControllerError> {
        self.propose_conf_change(single_change(ConfChangeType::AddLearnerNode, node))
    }

    /// The current learners.
    pub fn learners(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .node
            .raft
            .prs()
            .conf()
            .learners()
            .iter()
            .copied()
            .map(NodeId)
            .collect();
        v.sort_unstable();
        v
    }

    /// Proposes removing `node` from the quorum. The leader cannot remove itself outright
    /// (raft-rs 0.7 panics in `maybe_commit` when a leader's own progress is gone): it
    /// demotes itself to a learner (`propose_add_learner`), hands leadership over, and the
    /// next leader removes it.
    pub fn propose_remove_node(&mut self, node: NodeId) -> Result<(), ControllerError> {
        if node == self.id {
            return Err(ControllerError::RemoveSelf);
        }
        self.propose_conf_change(single_change(ConfChangeType::RemoveNode, node))
    }

    /// Handles one `Ready` if raft has one. Returns whether it did.
    pub fn on_ready(&mut self, net: &mut impl Transport) -> Result<bool, ControllerError> {
        if self.node.store().take_snapshot_wanted() {
            self.snapshot_now()?;
        }
        if !self.node.has_ready() {
            return Ok(false);
        }
        let mut ready = self.node.ready();
        // 1. Messages that need no local persistence (the leader's appends) go first, so
        //    followers write in parallel with the leader.
        for m in ready.take_messages() {
            net.send(m);
        }
        // 2. A snapshot from the leader replaces the image and the log.
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            self.image = Arc::new(MetadataImage::decode_snapshot(&snap.data)?);
            self.node.mut_store().install_snapshot(snap)?;
            self.stats.snapshots_installed += 1;
        }
        // 3. Committed entries into the image.
        self.apply_entries(ready.take_committed_entries())?;
        // 4. New entries and hard state, then the apply state that may refer to them.
        let store = self.node.mut_store();
        store.append(ready.entries())?;
        if let Some(hs) = ready.hs() {
            store.set_hard_state(hs)?;
        }
        if let Some(a) = self.pending_apply_state.take() {
            self.node.mut_store().set_apply_state(a)?;
        }
        // 5. fsync before any message that promises persistence leaves.
        if ready.must_sync() {
            self.node.mut_store().sync()?;
        }
        for m in ready.take_persisted_messages() {
            net.send(m);
        }
        // 6. Advance; the light ready carries what became committed meanwhile.
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().set_commit(commit)?;
        }
        for m in light.take_messages() {
            net.send(m);
        }
        self.apply_entries(light.take_committed_entries())?;
        if let Some(a) = self.pending_apply_state.take() {
            self.node.mut_store().set_apply_state(a)?;
        }
        self.node.advance_apply();
        self.maybe_snapshot()?;
        Ok(true)
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), ControllerError> {
        for e in entries {
            if e.index <= self.image.offset().0 {
                continue; // already in the image (replayed at start-up or in a snapshot)
            }
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    let (next, outcome) = apply_entry_to_image(&self.image, &e);
                    match outcome {
                        Applied::Record => self.stats.records_applied += 1,
                        Applied::Rejected => self.stats.records_rejected += 1,
                        Applied::Nothing => {}
                    }
                    self.image = Arc::new(next);
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let cc = decode_conf_change(&e)?;
                    let conf_state = self.node.apply_conf_change(&cc)?;
                    tracing::info!(
                        node = self.id.0,
                        index = e.index,
                        voters = ?conf_state.voters,
                        learners = ?conf_state.learners,
                        "controller membership changed"
                    );
                    self.pending_apply_state = Some(ApplyState {
                        applied: e.index,
                        conf_state,
                    });
                    self.image = Arc::new(self.image.advance_to(MetadataOffset(e.index)));
                }
            }
        }
        Ok(())
    }

    fn maybe_snapshot(&mut self) -> Result<(), ControllerError> {
        let applied = self.image.offset().0;
        if applied < self.snapshot_index() + self.config.snapshot_entries_max {
            return Ok(());
        }
        self.snapshot_now()
    }

    /// Snapshots the image at the applied index and compacts the log up to it.
    pub fn snapshot_now(&mut self) -> Result<(), ControllerError> {
        let applied = self.image.offset().0;
        if applied <= self.snapshot_index() {
            return Ok(());
        }
        let conf_state = self.node.raft.prs().conf().to_conf_state();
        let data = self.image.encode_snapshot();
        self.node.mut_store().compact(applied, conf_state, data)?;
        self.stats.snapshots_taken += 1;
        tracing::info!(
            node = self.id.0,
            index = applied,
            "controller snapshot taken, log compacted"
        );
        Ok(())
    }
}

enum Applied {
    Record,
    Rejected,
    Nothing,
}

/// Applies one normal entry to the image: a record moves it on, a bad one is skipped (and
/// logged — every node skips it the same way), an empty entry only advances the offset.
fn apply_entry_to_image(image: &MetadataImage, e: &Entry) -> (MetadataImage, Applied) {
    let offset = MetadataOffset(e.index);
    if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
        return (image.advance_to(offset), Applied::Nothing);
    }
    let result = Record::decode(&e.data)
        .map_err(|err| err.to_string())
        .and_then(|r| image.apply(offset, &r).map_err(|err| err.to_string()));
    match result {
        Ok(next) => (next, Applied::Record),
        Err(reason) => {
            tracing::warn!(index = e.index, %reason, "metadata record rejected");
            (image.advance_to(offset), Applied::Rejected)
        }
    }
}

fn single_change(change_type: ConfChangeType, node: NodeId) -> ConfChangeV2 {
    let mut single = ConfChangeSingle::default();
    single.set_change_type(change_type);
    single.node_id = node.0;
    let mut cc = ConfChangeV2::default();
    cc.set_changes(vec![single].into());
    cc
}
