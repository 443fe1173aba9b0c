//! Random fault schedules against a controller quorum (seeded; the seed is in every
//! failure message). Checks raft's safety where the image shows it: two nodes at the same
//! metadata offset hold equal images, and a record any node applied is never lost.
//! Then liveness: once healed, every node converges on one image.

mod common;

use std::collections::BTreeSet;

use common::{register, TestResult};
use sluice_control::sim::{SimCluster, SimRng};
use sluice_control::{BrokerId, MetadataImage, NodeId};

fn check_safety(
    c: &SimCluster,
    seed: u64,
    seen: &mut BTreeSet<i32>,
    images: &mut std::collections::BTreeMap<u64, MetadataImage>,
) -> Result<(), String> {
    for id in c.running() {
        let Some(n) = c.node(id) else { continue };
        let image = n.image();
        for b in image.brokers() {
            seen.insert(b.id.0);
        }
        // Every record applied anywhere is in every later image.
        let off = image.offset().0;
        if let Some(prev) = images.get(&off) {
            if *prev != *image {
                return Err(format!("seed {seed}: node {id} image at {off} differs"));
            }
        } else {
            images.insert(off, (*image).clone());
        }
    }
    Ok(())
}

fn run(seed: u64, nodes: u64, steps: usize) -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut c = SimCluster::new(dir.path(), nodes, seed)?;
    let mut rng = SimRng::new(seed.wrapping_mul(31).wrapping_add(17));
    let mut next_broker = 0;
    let mut stopped: Vec<NodeId> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut images = std::collections::BTreeMap::new();
    for _ in 0..steps {
        match rng.below(11) {
            0..=3 => {
                if c.leader().is_some() {
                    next_broker += 1;
                    let _ = c.propose(&register(next_broker));
                }
            }
            4 => {
                let n = NodeId(1 + rng.below(nodes));
                c.net.isolate(n);
            }
            5 => c.net.heal(),
            6 => {
                let n = NodeId(1 + rng.below(nodes));
                if !stopped.contains(&n) {
                    c.stop(n);
                    stopped.push(n);
                }
            }
            7 => {
                if let Some(n) = stopped.pop() {
                    c.restart(n)?;
                }
            }
            8 => {
                let (a, b) = (NodeId(1 + rng.below(nodes)), NodeId(1 + rng.below(nodes)));
                c.net.cut(a, b);
            }
            9 => {
                let n = NodeId(1 + rng.below(nodes));
                if let Some(node) = c.node_mut(n) {
                    node.snapshot_now()?;
                }
            }
            _ => c.net.set_drop_per_mille(rng.below(300)),
        }
        for _ in 0..rng.below(30) {
            c.tick()?;
            check_safety(&c, seed, &mut seen, &mut images)?;
        }
    }
    // Heal everything; all nodes converge, and nothing once applied was lost.
    c.net.heal();
    while let Some(n) = stopped.pop() {
        c.restart(n)?;
    }
    let all: Vec<NodeId> = (1..=nodes).map(NodeId).collect();
    let converged = c.run_until(|c| {
        let Some(leader) = c.leader().and_then(|l| c.node(l)) else {
            return false;
        };
        let commit = leader.commit_index();
        // A leader commits its term's first entry before anything older counts.
        leader.applied_index() == commit && c.all_applied(&all, commit)
    })?;
    let state: Vec<String> = all
        .iter()
        .filter_map(|id| c.node(*id))
        .map(|n| {
            format!(
                "{n:?} leader={:?} commit={} applied={} last={} snap={} voters={:?}",
                n.leader(),
                n.commit_index(),
                n.applied_index(),
                n.last_index(),
                n.snapshot_index(),
                n.voters()
            )
        })
        .collect();
    assert!(
        converged,
        "seed {seed}: no convergence after healing: {state:#?}"
    );
    check_safety(&c, seed, &mut seen, &mut images)?;
    let final_image = c.node(NodeId(1)).ok_or("node 1 down")?.image();
    for id in &all {
        let image = c.node(*id).ok_or("down")?.image();
        assert_eq!(
            *image, *final_image,
            "seed {seed}: node {id} differs after healing"
        );
    }
    for b in &seen {
        assert!(
            final_image.broker(BrokerId(*b)).is_some(),
            "seed {seed}: broker {b} was applied once and is lost"
        );
    }
    Ok(())
}

/// Seeds to run: the default set, or `SLUICE_FUZZ_SEEDS=N` more for a longer search.
fn seeds(base: u64, default: u64) -> std::ops::Range<u64> {
    let n = std::env::var("SLUICE_FUZZ_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    base..base + n
}

#[test]
fn random_faults_three_nodes() -> TestResult {
    for seed in seeds(0, 12) {
        run(seed, 3, 60)?;
    }
    Ok(())
}

#[test]
fn random_faults_five_nodes() -> TestResult {
    for seed in seeds(1_000_000, 6) {
        run(seed, 5, 60)?;
    }
    Ok(())
}
