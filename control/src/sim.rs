//! An in-memory controller network and cluster harness for deterministic tests.
//!
//! `SimNetwork` queues messages and delivers them in order, dropping those that cross a
//! cut link, touch an isolated or stopped node, or lose a seeded coin toss. `SimCluster`
//! runs several `Controller`s over it with their files in one directory, on a logical
//! clock: nothing here reads the wall clock or sleeps, so a seed replays a run exactly
//! (raft's randomized election timeouts are pinned per node from the seed).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use raft::eraftpb::Message;

use crate::controller::{Bootstrap, Controller, ControllerConfig, ControllerError};
use crate::records::Record;
use crate::transport::Transport;
use crate::types::NodeId;

/// splitmix64: tiny, seedable, good enough for fault injection.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The in-memory network.
#[derive(Debug)]
pub struct SimNetwork {
    queue: VecDeque<Message>,
    /// Bound on queued messages; beyond it sends are dropped (as a real bounded queue).
    queue_max: usize,
    rng: SimRng,
    drop_per_mille: u64,
    cut: BTreeSet<(u64, u64)>,
    isolated: BTreeSet<u64>,
    pub dropped: u64,
    pub delivered: u64,
    /// Dropped messages the sender has not been told about: (from, to, was a snapshot).
    undeliverable: Vec<(u64, u64, bool)>,
}

impl SimNetwork {
    pub fn new(seed: u64) -> Self {
        Self {
            queue: VecDeque::new(),
            queue_max: 100_000,
            rng: SimRng::new(seed),
            drop_per_mille: 0,
            cut: BTreeSet::new(),
            isolated: BTreeSet::new(),
            dropped: 0,
            delivered: 0,
            undeliverable: Vec::new(),
        }
    }

    /// Drops each message with probability `per_mille / 1000`.
    pub fn set_drop_per_mille(&mut self, per_mille: u64) {
        self.drop_per_mille = per_mille.min(1000);
    }

    /// Cuts the link between `a` and `b` (both directions).
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a.0, b.0));
        self.cut.insert((b.0, a.0));
    }

    /// Cuts every link of `n`.
    pub fn isolate(&mut self, n: NodeId) {
        self.isolated.insert(n.0);
    }

    /// Restores every link and stops dropping.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.isolated.clear();
        self.drop_per_mille = 0;
    }

    fn passes(&mut self, m: &Message) -> bool {
        if self.isolated.contains(&m.from) || self.isolated.contains(&m.to) {
            return false;
        }
        if self.cut.contains(&(m.from, m.to)) {
            return false;
        }
        self.drop_per_mille == 0 || self.rng.below(1000) >= self.drop_per_mille
    }

    /// The next message that gets through, if any.
    pub fn pop(&mut self) -> Option<Message> {
        while let Some(m) = self.queue.pop_front() {
            if self.passes(&m) {
                self.delivered += 1;
                return Some(m);
            }
            self.dropped += 1;
            let snapshot = m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot;
            self.undeliverable.push((m.from, m.to, snapshot));
        }
        None
    }
}

impl Transport for SimNetwork {
    fn send(&mut self, msg: Message) {
        if self.queue.len() >= self.queue_max {
            self.dropped += 1;
            return;
        }
        self.queue.push_back(msg);
    }
}

/// Several controllers over a `SimNetwork`, with files under `root`.
#[derive(Debug)]
pub struct SimCluster {
    root: PathBuf,
    nodes: BTreeMap<u64, Controller>,
    configs: BTreeMap<u64, ControllerConfig>,
    pub net: SimNetwork,
    seed: u64,
    voters: Vec<NodeId>,
}

/// Steps through `SimCluster::run_until` before giving up.
pub const RUN_TICKS_MAX: usize = 2_000;

impl SimCluster {
    /// A quorum of `n` controllers (ids 1..=n) bootstrapped under `root`.
    pub fn new(root: &Path, n: u64, seed: u64) -> Result<Self, ControllerError> {
        let mut c = Self {
            root: root.to_owned(),
            nodes: BTreeMap::new(),
            configs: BTreeMap::new(),
            net: SimNetwork::new(seed),
            seed,
            voters: (1..=n).map(NodeId).collect(),
        };
        for id in 1..=n {
            c.start(NodeId(id), &Bootstrap::Voters(c.voters.clone()))?;
        }
        Ok(c)
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The config a node runs with: small snapshot interval off by default, election
    /// timeout pinned from the seed so runs replay exactly.
    fn config_for(&mut self, id: NodeId) -> ControllerConfig {
        if let Some(c) = self.configs.get(&id.0) {
            return c.clone();
        }
        let mut c = ControllerConfig::new(id);
        // Distinct per node (ids below 10 never collide), so split votes resolve.
        let spread = c.election_tick as u64;
        let timeout = c.election_tick + ((self.seed + id.0 * 3) % spread) as usize;
        c.election_timeout_range = Some((timeout, timeout + 1));
        c.snapshot_entries_max = u64::MAX / 2;
        self.configs.insert(id.0, c.clone());
        c
    }

    /// Changes a node's config (applies at its next start).
    pub fn set_config(&mut self, config: ControllerConfig) {
        self.configs.insert(config.id.0, config);
    }

    pub fn config(&mut self, id: NodeId) -> ControllerConfig {
        self.config_for(id)
    }

    pub fn dir(&self, id: NodeId) -> PathBuf {
        self.root.join(format!("controller-{}", id.0))
    }

    /// Starts (or restarts from its files) node `id`.
    pub fn start(&mut self, id: NodeId, bootstrap: &Bootstrap) -> Result<(), ControllerError> {
        let config = self.config_for(id);
        let node = Controller::open(&self.dir(id), config, bootstrap)?;
        self.nodes.insert(id.0, node);
        Ok(())
    }

    /// Restarts a stopped founding node from its files.
    pub fn restart(&mut self, id: NodeId) -> Result<(), ControllerError> {
        let b = Bootstrap::Voters(self.voters.clone());
        self.start(id, &b)
    }

    /// Stops node `id` (as a crash: whatever it had fsynced stays).
    pub fn stop(&mut self, id: NodeId) {
        self.nodes.remove(&id.0);
    }

    pub fn node(&self, id: NodeId) -> Option<&Controller> {
        self.nodes.get(&id.0)
    }

    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut Controller> {
        self.nodes.get_mut(&id.0)
    }

    pub fn running(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().map(NodeId).collect()
    }

    /// Handles every node's ready and delivers messages until nothing moves.
    pub fn settle(&mut self) -> Result<(), ControllerError> {
        loop {
            let mut moved = false;
            for node in self.nodes.values_mut() {
                while node.on_ready(&mut self.net)? {
                    moved = true;
                }
            }
            while let Some(m) = self.net.pop() {
                moved = true;
                let (from, to) = (m.from, m.to);
                let snapshot = m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot;
                let delivered = match self.nodes.get_mut(&to) {
                    Some(node) => node
                        .step(m)
                        .map_err(|e| tracing::debug!(error = %e, "sim: step failed"))
                        .is_ok(),
                    None => false,
                };
                if snapshot {
                    if let Some(sender) = self.nodes.get_mut(&from) {
                        sender.report_snapshot(NodeId(to), delivered);
                    }
                }
            }
            for (from, to, snapshot) in std::mem::take(&mut self.net.undeliverable) {
                moved = true;
                if let Some(sender) = self.nodes.get_mut(&from) {
                    if snapshot {
                        sender.report_snapshot(NodeId(to), false);
                    } else {
                        sender.report_unreachable(NodeId(to));
                    }
                }
            }
            if !moved {
                return Ok(());
            }
        }
    }

    /// One tick on every running node, then settle.
    pub fn tick(&mut self) -> Result<(), ControllerError> {
        for node in self.nodes.values_mut() {
            node.tick();
        }
        self.settle()
    }

    /// Ticks until `done` holds (checked after each tick); `false` if it never did within
    /// `RUN_TICKS_MAX` ticks.
    pub fn run_until(
        &mut self,
        mut done: impl FnMut(&SimCluster) -> bool,
    ) -> Result<bool, ControllerError> {
        for _ in 0..RUN_TICKS_MAX {
            if done(self) {
                return Ok(true);
            }
            self.tick()?;
        }
        Ok(done(self))
    }

    /// The leader with the highest term among running nodes that no isolation hides.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.is_leader() && !self.net.isolated.contains(&n.id().0))
            .max_by_key(|n| n.term())
            .map(|n| n.id())
    }

    /// Waits for a leader (outside isolated nodes).
    pub fn elect(&mut self) -> Result<Option<NodeId>, ControllerError> {
        self.run_until(|c| c.leader().is_some())?;
        Ok(self.leader())
    }

    /// Proposes `record` on the current leader.
    pub fn propose(&mut self, record: &Record) -> Result<(), ControllerError> {
        let leader = self
            .leader()
            .ok_or(ControllerError::NotLeader { leader: None })?;
        let node = self
            .nodes
            .get_mut(&leader.0)
            .ok_or(ControllerError::NotLeader { leader: None })?;
        node.propose(record)?;
        self.settle()
    }

    /// True when every running node in `ids` has applied at least `index`.
    pub fn all_applied(&self, ids: &[NodeId], index: u64) -> bool {
        ids.iter().all(|id| {
            self.nodes
                .get(&id.0)
                .is_some_and(|n| n.image().offset().0 >= index)
        })
    }
}
