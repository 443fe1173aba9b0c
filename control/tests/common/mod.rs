//! Shared helpers for the controller's integration tests.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use sluice_control::sim::SimCluster;
use sluice_control::{
    BrokerControl, BrokerControlConfig, BrokerEpoch, BrokerId, HeartbeatReply, MetadataImage,
    Millis, NodeId, Record,
};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Broker `id`'s first registration (epoch 1, no rack, no listeners) as a record.
pub fn register(id: i32) -> Record {
    Record::RegisterBroker {
        broker: BrokerId(id),
        epoch: BrokerEpoch(1),
        rack: None,
        listeners: vec![],
    }
}

/// Deterministic runs: a fixed seed unless `PROPTEST_RNG_SEED` names another (failures
/// print the minimal input and are saved in the `.proptest-regressions` file).
pub fn proptest_config() -> proptest::test_runner::Config {
    let mut c = proptest::test_runner::Config::default();
    if matches!(c.rng_seed, proptest::test_runner::RngSeed::Random) {
        c.rng_seed = proptest::test_runner::RngSeed::Fixed(0x51_1ce);
    }
    c
}

/// Controller ids from raw numbers.
pub fn nodes(ids: &[u64]) -> Vec<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

/// Logical time that passes in one [`World::step`].
pub const TICK_MS: u64 = 100;

/// Brokers 1..3, on racks a..c.
pub const ALL: [BrokerId; 3] = [BrokerId(1), BrokerId(2), BrokerId(3)];

/// A simulated controller quorum with the active controller's broker duties
/// ([`BrokerControl`]) driven on an explicit clock, and the brokers' epochs.
pub struct World {
    pub c: SimCluster,
    pub bc: BrokerControl,
    pub now: Millis,
    pub epochs: Vec<(BrokerId, BrokerEpoch)>,
}

impl World {
    /// Three controllers (message drops seeded by `seed`), brokers [`ALL`] registered on
    /// racks a..c and unfenced.
    pub fn start(dir: &Path, seed: u64) -> Result<World, Box<dyn std::error::Error>> {
        let mut c = SimCluster::new(dir, 3, seed)?;
        let leader = c.elect()?.ok_or("no leader")?;
        let mut bc = BrokerControl::new(BrokerControlConfig::default());
        let mut epochs = Vec::new();
        for (id, rack) in [(1, "a"), (2, "b"), (3, "c")] {
            let ctl = c.node_mut(leader).ok_or("gone")?;
            let e = bc.register(ctl, BrokerId(id), Some(rack.into()), vec![], Millis(0))?;
            epochs.push((BrokerId(id), e));
            c.settle()?;
        }
        let mut w = World {
            c,
            bc,
            now: Millis(0),
            epochs,
        };
        w.run_until(&ALL, |i| ALL.iter().all(|b| i.is_live(*b)))?;
        Ok(w)
    }

    /// The active controller's image.
    pub fn image(&self) -> Result<Arc<MetadataImage>, String> {
        let l = self.c.leader().ok_or("no leader")?;
        Ok(self.c.node(l).ok_or("leader down")?.image())
    }

    /// Broker `b`'s current epoch (-1 if it never registered).
    pub fn epoch(&self, b: BrokerId) -> BrokerEpoch {
        self.epochs
            .iter()
            .find(|(id, _)| *id == b)
            .map(|e| e.1)
            .unwrap_or(BrokerEpoch(-1))
    }

    /// One step of time: heartbeats from `beating`, the active controller's poll, a tick.
    pub fn step(&mut self, beating: &[BrokerId]) -> TestResult {
        self.now = Millis(self.now.0 + TICK_MS);
        if let Some(l) = self.c.leader() {
            let ctl = self.c.node_mut(l).ok_or("leader down")?;
            for (b, e) in &self.epochs {
                if beating.contains(b) {
                    let reply = self.bc.heartbeat(ctl, *b, *e, self.now);
                    assert_ne!(reply, HeartbeatReply::RegisterAgain, "broker {b}");
                }
            }
            self.bc.poll(ctl, self.now)?;
        }
        self.c.tick()?;
        Ok(())
    }

    /// Steps (at most 1,000) until the active controller's image satisfies `done`; the
    /// logical time it took.
    pub fn run_until(
        &mut self,
        beating: &[BrokerId],
        done: impl Fn(&MetadataImage) -> bool,
    ) -> Result<Millis, Box<dyn std::error::Error>> {
        let start = self.now;
        for _ in 0..1_000 {
            if self.image().is_ok_and(|i| done(&i)) {
                return Ok(Millis(self.now.0 - start.0));
            }
            self.step(beating)?;
        }
        Err("condition never held".into())
    }
}
