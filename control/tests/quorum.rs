//! The controller quorum over the in-memory test network: elections, commits, isolation,
//! restarts from disk, snapshots with compaction, membership changes, broker fencing.
//! Deterministic: a logical clock, pinned election timeouts, seeded message drops; every
//! assertion names the seed.

mod common;

use common::{nodes, TestResult};
use sluice_control::sim::SimCluster;
use sluice_control::{
    fence_broker, Bootstrap, BrokerEpoch, BrokerId, BrokerLiveness, ControllerError, LeaderEpoch,
    MetadataImage, Millis, NodeId, PartitionAssignment, PartitionId, Record, TopicId,
};

const SEEDS: [u64; 4] = [1, 7, 42, 0xdead_beef];

fn register(id: i32, epoch: i64) -> Record {
    Record::RegisterBroker {
        broker: BrokerId(id),
        epoch: BrokerEpoch(epoch),
        rack: Some(format!("rack-{id}")),
        listeners: vec![],
    }
}

/// Proposes on the leader and waits until `ids` applied it; returns the commit index.
fn commit(
    c: &mut SimCluster,
    r: &Record,
    ids: &[NodeId],
) -> Result<u64, Box<dyn std::error::Error>> {
    let seed = c.seed();
    let leader = c.elect()?.ok_or(format!("seed {seed}: no leader"))?;
    c.propose(r)?;
    let target = c
        .node(leader)
        .map(|n| n.node_last_index())
        .ok_or("leader gone")?;
    let ok = c.run_until(|c| c.all_applied(ids, target))?;
    if !ok {
        return Err(format!("seed {seed}: index {target} not applied on {ids:?}").into());
    }
    Ok(target)
}

fn image(c: &SimCluster, id: u64) -> Result<std::sync::Arc<MetadataImage>, String> {
    c.node(NodeId(id))
        .map(|n| n.image())
        .ok_or(format!("node {id} not running"))
}

trait LastIndex {
    fn node_last_index(&self) -> u64;
}

impl LastIndex for sluice_control::Controller {
    fn node_last_index(&self) -> u64 {
        self.commit_index().max(self.last_index())
    }
}

#[test]
fn three_nodes_elect_a_leader_and_commit() -> TestResult {
    for seed in SEEDS {
        let dir = tempfile::tempdir()?;
        let mut c = SimCluster::new(dir.path(), 3, seed)?;
        let leader = c.elect()?.ok_or(format!("seed {seed}: no leader"))?;
        let all = nodes(&[1, 2, 3]);
        for id in 1..=5 {
            commit(&mut c, &register(id, 1), &all)?;
        }
        let first = image(&c, 1)?;
        assert_eq!(first.brokers().count(), 5, "seed {seed}");
        for id in [2, 3] {
            assert_eq!(*image(&c, id)?, *first, "seed {seed}: node {id} differs");
        }
        assert!(c.node(leader).is_some_and(|n| n.is_leader()), "seed {seed}");
    }
    Ok(())
}

#[test]
fn isolated_leader_loses_leadership_and_a_new_one_commits() -> TestResult {
    for seed in SEEDS {
        let dir = tempfile::tempdir()?;
        let mut c = SimCluster::new(dir.path(), 3, seed)?;
        let old = c.elect()?.ok_or(format!("seed {seed}: no leader"))?;
        commit(&mut c, &register(1, 1), &nodes(&[1, 2, 3]))?;
        c.net.isolate(old);
        let rest: Vec<NodeId> = nodes(&[1, 2, 3])
            .into_iter()
            .filter(|n| *n != old)
            .collect();
        // check_quorum: the isolated leader steps down; the others elect a new leader.
        let moved = c.run_until(|c| {
            c.leader().is_some_and(|l| l != old) && c.node(old).is_some_and(|n| !n.is_leader())
        })?;
        assert!(
            moved,
            "seed {seed}: leadership did not move from {old}: {:?}",
            c.running()
                .iter()
                .map(|n| c.node(*n).map(|x| format!("{x:?} leader={:?}", x.leader())))
                .collect::<Vec<_>>()
        );
        commit(&mut c, &register(2, 1), &rest)?;
        assert!(
            image(&c, old.0)?.broker(BrokerId(2)).is_none(),
            "seed {seed}: isolated node applied"
        );
        // Healed, the old leader catches up and does not disturb the new one (pre-vote).
        let new = c.leader().ok_or("no leader")?;
        c.net.heal();
        let target = c.node(new).map(|n| n.commit_index()).ok_or("leader gone")?;
        assert!(
            c.run_until(|c| c.all_applied(&[old], target))?,
            "seed {seed}: no catch-up"
        );
        assert_eq!(c.leader(), Some(new), "seed {seed}");
        assert_eq!(*image(&c, old.0)?, *image(&c, new.0)?, "seed {seed}");
    }
    Ok(())
}

#[test]
fn restarted_node_catches_up_from_its_files() -> TestResult {
    for seed in SEEDS {
        let dir = tempfile::tempdir()?;
        let mut c = SimCluster::new(dir.path(), 3, seed)?;
        c.elect()?;
        commit(&mut c, &register(1, 1), &nodes(&[1, 2, 3]))?;
        let down = if c.leader() == Some(NodeId(3)) {
            NodeId(2)
        } else {
            NodeId(3)
        };
        c.stop(down);
        let up: Vec<NodeId> = c.running();
        for id in 2..=6 {
            commit(&mut c, &register(id, 1), &up)?;
        }
        c.restart(down)?;
        // What it had fsynced comes back from its own files...
        c.net.isolate(down);
        c.settle()?;
        assert!(
            image(&c, down.0)?.broker(BrokerId(1)).is_some(),
            "seed {seed}"
        );
        c.net.heal();
        // ...and the rest from the leader.
        let target = c
            .leader()
            .and_then(|l| c.node(l))
            .map(|n| n.commit_index())
            .ok_or("no leader")?;
        assert!(
            c.run_until(|c| c.all_applied(&[down], target))?,
            "seed {seed}"
        );
        assert_eq!(image(&c, down.0)?.brokers().count(), 6, "seed {seed}");
        // A full restart of every node keeps the metadata.
        for id in nodes(&[1, 2, 3]) {
            c.stop(id);
        }
        for id in nodes(&[1, 2, 3]) {
            c.restart(id)?;
        }
        c.settle()?;
        assert_eq!(image(&c, 1)?.brokers().count(), 6, "seed {seed}");
        commit(&mut c, &register(7, 1), &nodes(&[1, 2, 3]))?;
    }
    Ok(())
}

#[test]
fn snapshot_and_compaction_then_a_lagging_node_catches_up() -> TestResult {
    for seed in SEEDS {
        let dir = tempfile::tempdir()?;
        let mut c = SimCluster::new(dir.path(), 3, seed)?;
        let leader = c.elect()?.ok_or("no leader")?;
        let lagging = nodes(&[1, 2, 3])
            .into_iter()
            .find(|n| *n != leader)
            .ok_or("none")?;
        c.net.isolate(lagging);
        let up: Vec<NodeId> = nodes(&[1, 2, 3])
            .into_iter()
            .filter(|n| *n != lagging)
            .collect();
        for id in 1..=20 {
            commit(&mut c, &register(id, 1), &up)?;
        }
        for id in &up {
            c.node_mut(*id).ok_or("gone")?.snapshot_now()?;
            let n = c.node(*id).ok_or("gone")?;
            assert!(
                n.snapshot_index() >= 21,
                "seed {seed}: snapshot at {}",
                n.snapshot_index()
            );
        }
        c.net.heal();
        let target = c.node(leader).map(|n| n.commit_index()).ok_or("gone")?;
        assert!(
            c.run_until(|c| c.all_applied(&[lagging], target))?,
            "seed {seed}: no catch-up"
        );
        let n = c.node(lagging).ok_or("gone")?;
        assert!(
            n.stats().snapshots_installed >= 1,
            "seed {seed}: caught up without a snapshot"
        );
        assert_eq!(*n.image(), *image(&c, leader.0)?, "seed {seed}");
        // It restarts from the installed snapshot plus its log.
        c.stop(lagging);
        c.restart(lagging)?;
        assert_eq!(image(&c, lagging.0)?.brokers().count(), 20, "seed {seed}");
        commit(&mut c, &register(21, 1), &nodes(&[1, 2, 3]))?;
    }
    Ok(())
}

#[test]
fn add_and_remove_a_controller() -> TestResult {
    for seed in SEEDS {
        let dir = tempfile::tempdir()?;
        let mut c = SimCluster::new(dir.path(), 3, seed)?;
        let leader = c.elect()?.ok_or("no leader")?;
        commit(&mut c, &register(1, 1), &nodes(&[1, 2, 3]))?;
        c.node_mut(leader).ok_or("gone")?.snapshot_now()?;
        // Node 4 starts empty and joins.
        c.start(NodeId(4), &Bootstrap::Join)?;
        c.node_mut(leader)
            .ok_or("gone")?
            .propose_add_voter(NodeId(4))?;
        let joined = c.run_until(|c| {
            nodes(&[1, 2, 3, 4]).iter().all(|id| {
                c.node(*id)
                    .is_some_and(|n| n.voters() == nodes(&[1, 2, 3, 4]))
            })
        })?;
        assert!(
            joined,
            "seed {seed}: node 4 not a voter everywhere: {:?}",
            c.running()
                .iter()
                .map(|n| c.node(*n).map(|x| format!(
                    "{x:?} voters={:?} applied={} last={}",
                    x.voters(),
                    x.applied_index(),
                    x.last_index()
                )))
                .collect::<Vec<_>>()
        );
        commit(&mut c, &register(2, 1), &nodes(&[1, 2, 3, 4]))?;
        assert_eq!(image(&c, 4)?.brokers().count(), 2, "seed {seed}");
        // Remove a follower, stop it; the remaining three still commit.
        let leader = c.leader().ok_or("no leader")?;
        let gone = nodes(&[1, 2, 3])
            .into_iter()
            .find(|n| *n != leader)
            .ok_or("none")?;
        c.node_mut(leader)
            .ok_or("gone")?
            .propose_remove_node(gone)?;
        let left: Vec<NodeId> = nodes(&[1, 2, 3, 4])
            .into_iter()
            .filter(|n| *n != gone)
            .collect();
        let removed = c.run_until(|c| {
            left.iter()
                .all(|id| c.node(*id).is_some_and(|n| n.voters() == left))
        })?;
        assert!(removed, "seed {seed}: {gone} not removed");
        c.stop(gone);
        commit(&mut c, &register(3, 1), &left)?;
    }
    Ok(())
}

#[test]
fn progress_despite_dropped_messages() -> TestResult {
    for seed in SEEDS {
        let dir = tempfile::tempdir()?;
        let mut c = SimCluster::new(dir.path(), 5, seed)?;
        c.net.set_drop_per_mille(200);
        let all = nodes(&[1, 2, 3, 4, 5]);
        for id in 1..=10 {
            // A proposal can be lost with a leader change; retry until applied.
            let mut done = false;
            for _ in 0..10 {
                let leader = c.elect()?.ok_or(format!("seed {seed}: no leader"))?;
                if let Err(e) = c.propose(&register(id, 1)) {
                    eprintln!("seed {seed}: propose on {leader}: {e}");
                }
                c.run_until(|c| {
                    c.leader()
                        .and_then(|l| c.node(l))
                        .is_some_and(|n| n.image().broker(BrokerId(id)).is_some())
                })?;
                if c.leader()
                    .and_then(|l| c.node(l))
                    .is_some_and(|n| n.image().broker(BrokerId(id)).is_some())
                {
                    done = true;
                    break;
                }
            }
            assert!(done, "seed {seed}: broker {id} never committed");
        }
        c.net.heal();
        let target = c
            .leader()
            .and_then(|l| c.node(l))
            .map(|n| n.commit_index())
            .ok_or("no leader")?;
        assert!(c.run_until(|c| c.all_applied(&all, target))?, "seed {seed}");
        for id in 2..=5 {
            assert_eq!(*image(&c, id)?, *image(&c, 1)?, "seed {seed}: node {id}");
        }
    }
    Ok(())
}

#[test]
fn broker_fencing_through_the_quorum_moves_leaders_within_isr() -> TestResult {
    let seed = 3;
    let dir = tempfile::tempdir()?;
    let mut c = SimCluster::new(dir.path(), 3, seed)?;
    let all = nodes(&[1, 2, 3]);
    for id in 1..=3 {
        commit(&mut c, &register(id, 1), &all)?;
        commit(
            &mut c,
            &Record::UnfenceBroker {
                broker: BrokerId(id),
                epoch: BrokerEpoch(1),
            },
            &all,
        )?;
    }
    let create = Record::CreateTopic {
        name: "orders".into(),
        topic_id: TopicId(0xabc),
        partitions: (0..3)
            .map(|p| {
                let replicas: Vec<BrokerId> = (0..3).map(|k| BrokerId((p + k) % 3 + 1)).collect();
                PartitionAssignment {
                    partition: PartitionId(p),
                    leader: Some(replicas[0]),
                    leader_epoch: LeaderEpoch(0),
                    isr: replicas[..2].to_vec(),
                    replicas,
                }
            })
            .collect(),
    };
    commit(&mut c, &create, &all)?;
    // Brokers 2 and 3 heartbeat; broker 1 goes silent. Time is an explicit clock.
    let mut liveness = BrokerLiveness::new(9_000);
    let mut now = Millis(0);
    let leader = c.leader().ok_or("no leader")?;
    let mut fenced = Vec::new();
    while fenced.is_empty() {
        now = Millis(now.0 + 1_000);
        liveness.heartbeat(BrokerId(2), now);
        liveness.heartbeat(BrokerId(3), now);
        let image = c.node(leader).ok_or("gone")?.image();
        fenced = liveness.expired(&image, now, Millis(0));
        for b in &fenced {
            for r in fence_broker(&image, *b) {
                commit(&mut c, &r, &all)?;
            }
        }
    }
    assert_eq!((fenced, now), (vec![BrokerId(1)], Millis(9_000)));
    for id in 1..=3 {
        let image = image(&c, id)?;
        assert!(!image.is_live(BrokerId(1)));
        let t = image.topic(TopicId(0xabc)).ok_or("topic missing")?;
        for (idx, p) in &t.partitions {
            let leader = p.leader.ok_or(format!("{idx:?} has no leader"))?;
            assert_ne!(leader, BrokerId(1));
            assert!(
                p.isr.contains(&leader),
                "{idx:?}: leader {leader} outside isr {:?}",
                p.isr
            );
            assert!(!p.isr.contains(&BrokerId(1)));
        }
        // p2 (replicas 3,1,2; isr 3,1) keeps leader 3; p0 (1,2,3; isr 1,2) moves to 2.
        assert_eq!(t.partitions[&PartitionId(0)].leader, Some(BrokerId(2)));
        assert_eq!(t.partitions[&PartitionId(0)].leader_epoch, LeaderEpoch(1));
    }
    Ok(())
}

#[test]
fn proposals_on_a_follower_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut c = SimCluster::new(dir.path(), 3, 9)?;
    let leader = c.elect()?.ok_or("no leader")?;
    let follower = nodes(&[1, 2, 3])
        .into_iter()
        .find(|n| *n != leader)
        .ok_or("none")?;
    let err = c.node_mut(follower).ok_or("gone")?.propose(&register(1, 1));
    assert!(matches!(err, Err(ControllerError::NotLeader { leader: Some(l) }) if l == leader));
    Ok(())
}

#[test]
fn a_learner_follows_the_log_without_voting() -> TestResult {
    let seed = 11;
    let dir = tempfile::tempdir()?;
    let mut c = SimCluster::new(dir.path(), 3, seed)?;
    let leader = c.elect()?.ok_or("no leader")?;
    commit(&mut c, &register(1, 1), &nodes(&[1, 2, 3]))?;
    c.start(NodeId(9), &Bootstrap::Join)?;
    c.node_mut(leader)
        .ok_or("gone")?
        .propose_add_learner(NodeId(9))?;
    commit(&mut c, &register(2, 1), &nodes(&[1, 2, 3, 9]))?;
    let learner = c.node(NodeId(9)).ok_or("gone")?;
    assert_eq!(learner.learners(), nodes(&[9]));
    assert_eq!(learner.voters(), nodes(&[1, 2, 3]));
    assert_eq!(*learner.image(), *image(&c, leader.0)?);
    // Two voters down: the learner does not make a quorum.
    let others: Vec<NodeId> = nodes(&[1, 2, 3])
        .into_iter()
        .filter(|n| *n != leader)
        .collect();
    for n in &others {
        c.stop(*n);
    }
    let ok = c.run_until(|c| c.leader().is_none())?;
    assert!(ok, "seed {seed}: leader kept leading without a quorum");
    assert!(!c.node(NodeId(9)).is_some_and(|n| n.is_leader()));
    Ok(())
}

#[test]
fn replace_a_controller_in_one_joint_change() -> TestResult {
    use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};
    let seed = 21;
    let dir = tempfile::tempdir()?;
    let mut c = SimCluster::new(dir.path(), 3, seed)?;
    let leader = c.elect()?.ok_or("no leader")?;
    commit(&mut c, &register(1, 1), &nodes(&[1, 2, 3]))?;
    let out = nodes(&[1, 2, 3])
        .into_iter()
        .find(|n| *n != leader)
        .ok_or("none")?;
    c.start(NodeId(4), &Bootstrap::Join)?;
    let single = |t: ConfChangeType, id: u64| {
        let mut s = ConfChangeSingle::default();
        s.set_change_type(t);
        s.node_id = id;
        s
    };
    let mut cc = ConfChangeV2::default();
    cc.set_changes(
        vec![
            single(ConfChangeType::AddNode, 4),
            single(ConfChangeType::RemoveNode, out.0),
        ]
        .into(),
    );
    c.node_mut(leader).ok_or("gone")?.propose_conf_change(cc)?;
    // Joint consensus, then raft-rs leaves the joint configuration on its own.
    let mut want: Vec<NodeId> = nodes(&[1, 2, 3, 4])
        .into_iter()
        .filter(|n| *n != out)
        .collect();
    want.sort_unstable();
    let done = c.run_until(|c| {
        want.iter()
            .all(|id| c.node(*id).is_some_and(|n| n.voters() == want))
    })?;
    assert!(done, "seed {seed}: joint change did not complete");
    c.stop(out);
    commit(&mut c, &register(2, 1), &want)?;
    Ok(())
}
