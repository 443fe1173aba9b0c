//! Controller membership changes over the in-memory test network: adding a voter that
//! starts empty, removing a follower, removing the leader (it hands leadership over), all
//! under seeded message loss; a removed controller no longer counts for the quorum; an
//! added controller restarts from its files as a voter; one
//! change at a time. Deterministic: a logical clock, pinned election timeouts, seeded
//! drops; every assertion names the seed.

mod common;

use common::{nodes, register, TestResult};
use sluice_control::sim::SimCluster;
use sluice_control::{Bootstrap, BrokerId, ControllerError, NodeId};

const SEEDS: [u64; 4] = [3, 11, 42, 0xfeed];
/// Each message is lost with this probability (per mille) in the lossy tests.
const LOSS_PER_MILLE: u64 = 150;
/// Proposals retried this often before a test gives up (a leader change loses them).
const ATTEMPTS_MAX: usize = 10;

fn has_broker(c: &SimCluster, at: NodeId, id: i32) -> bool {
    c.node(at)
        .is_some_and(|n| n.image().broker(BrokerId(id)).is_some())
}

/// With the voter of `voters` other than `leader` cut off, a proposal on `leader` (broker
/// 3's registration) is not committed within 50 ticks: the two voters are both needed.
fn assert_nothing_commits_with_one_voter_cut_off(
    c: &mut SimCluster,
    leader: NodeId,
    voters: &[NodeId],
    what: &str,
) -> TestResult {
    let seed = c.seed();
    let other = *voters.iter().find(|n| **n != leader).ok_or("none")?;
    c.net.isolate(other);
    c.node_mut(leader).ok_or("gone")?.propose(&register(3))?;
    for _ in 0..50 {
        c.tick()?;
    }
    assert!(!has_broker(c, leader, 3), "seed {seed}: {what}");
    Ok(())
}

/// Commits `register(id)` through whichever node leads, retrying lost proposals, until
/// every node in `on` has applied it.
fn commit(c: &mut SimCluster, id: i32, on: &[NodeId]) -> TestResult {
    let seed = c.seed();
    for _ in 0..ATTEMPTS_MAX {
        if c.elect()?.is_some() {
            let _ = c.propose(&register(id));
        }
        let ok = c.run_until(|c| on.iter().all(|n| has_broker(c, *n, id)))?;
        if ok {
            return Ok(());
        }
    }
    Err(format!("seed {seed}: broker {id} never applied on {on:?}").into())
}

/// Retries `change` on the current leader until `done` holds on every node in `on`.
fn change_membership(
    c: &mut SimCluster,
    on: &[NodeId],
    change: impl Fn(&mut sluice_control::Controller) -> Result<(), sluice_control::ControllerError>,
    done: impl Fn(&sluice_control::Controller) -> bool,
) -> TestResult {
    let seed = c.seed();
    for _ in 0..ATTEMPTS_MAX {
        let all_done = |c: &SimCluster| on.iter().all(|n| c.node(*n).is_some_and(&done));
        if all_done(c) {
            return Ok(());
        }
        if let Some(leader) = c.elect()? {
            let node = c.node_mut(leader).ok_or("leader gone")?;
            if !node.membership_change_pending() {
                if let Err(e) = change(node) {
                    eprintln!("seed {seed}: change on {leader}: {e}");
                }
            }
            c.settle()?;
        }
        if c.run_until(all_done)? {
            return Ok(());
        }
    }
    Err(format!("seed {seed}: membership change never applied on {on:?}").into())
}

/// Adds controller 4 (started as a joiner) as a voter; the four voters.
fn add_voter_4(c: &mut SimCluster) -> Result<Vec<NodeId>, Box<dyn std::error::Error>> {
    let all = nodes(&[1, 2, 3, 4]);
    change_membership(
        c,
        &all,
        |n| n.propose_add_voter(NodeId(4)),
        voters_are(all.clone()),
    )?;
    Ok(all)
}

fn voters_are(want: Vec<NodeId>) -> impl Fn(&sluice_control::Controller) -> bool {
    move |n| n.voters() == want
}

#[test]
fn a_joining_controller_becomes_a_voter_under_message_loss() -> TestResult {
    for seed in SEEDS {
        let dir = tempfile::tempdir()?;
        let mut c = SimCluster::new(dir.path(), 3, seed)?;
        c.net.set_drop_per_mille(LOSS_PER_MILLE);
        commit(&mut c, 1, &nodes(&[1, 2, 3]))?;
        // Compacted: the joiner can only catch up from a snapshot.
        let leader = c.elect()?.ok_or(format!("seed {seed}: no leader"))?;
        c.node_mut(leader).ok_or("gone")?.snapshot_now()?;
        c.start(NodeId(4), &Bootstrap::Join)?;
        let joiner = c.node(NodeId(4)).ok_or("gone")?;
        assert!(joiner.voters().is_empty(), "seed {seed}: a joiner votes");
        let all = add_voter_4(&mut c)?;
        commit(&mut c, 2, &all)?;
        c.net.heal();
        let target = c
            .elect()?
            .and_then(|l| c.node(l))
            .map(|n| n.commit_index())
            .ok_or("no leader")?;
        assert!(c.run_until(|c| c.all_applied(&all, target))?, "seed {seed}");
        let images: Vec<_> = all.iter().map(|n| c.node(*n).map(|x| x.image())).collect();
        assert!(
            images.windows(2).all(|w| w[0] == w[1]),
            "seed {seed}: images differ after the join"
        );
    }
    Ok(())
}

#[test]
fn a_removed_follower_no_longer_counts_for_the_quorum() -> TestResult {
    for seed in SEEDS {
        let dir = tempfile::tempdir()?;
        let mut c = SimCluster::new(dir.path(), 4, seed)?;
        c.net.set_drop_per_mille(LOSS_PER_MILLE);
        commit(&mut c, 1, &nodes(&[1, 2, 3, 4]))?;
        let leader = c.elect()?.ok_or(format!("seed {seed}: no leader"))?;
        let gone = nodes(&[1, 2, 3, 4])
            .into_iter()
            .find(|n| *n != leader)
            .ok_or("none")?;
        let left: Vec<NodeId> = nodes(&[1, 2, 3, 4])
            .into_iter()
            .filter(|n| *n != gone)
            .collect();
        change_membership(
            &mut c,
            &left,
            |n| n.propose_remove_node(gone),
            voters_are(left.clone()),
        )?;
        c.net.heal();
        // Two of the four nodes stop: the removed one and one other. With four voters
        // that is no quorum; with the three left, two are.
        c.stop(gone);
        let down = *left.iter().find(|n| **n != leader).ok_or("none")?;
        c.stop(down);
        let up: Vec<NodeId> = left.iter().copied().filter(|n| *n != down).collect();
        commit(&mut c, 2, &up)?;
    }
    Ok(())
}

#[test]
fn a_removed_leader_hands_over_and_a_new_leader_commits() -> TestResult {
    for seed in SEEDS {
        let dir = tempfile::tempdir()?;
        let mut c = SimCluster::new(dir.path(), 3, seed)?;
        commit(&mut c, 1, &nodes(&[1, 2, 3]))?;
        let old = c.elect()?.ok_or(format!("seed {seed}: no leader"))?;
        let term_before = c.node(old).ok_or("gone")?.term();
        c.net.set_drop_per_mille(LOSS_PER_MILLE);
        // A leader cannot remove itself outright (raft-rs would lose its own progress):
        // it demotes itself to a learner, hands over, and the next leader removes it.
        let refused = c.node_mut(old).ok_or("gone")?.propose_remove_node(old);
        assert!(
            matches!(refused, Err(ControllerError::RemoveSelf)),
            "seed {seed}: {refused:?}"
        );
        let left: Vec<NodeId> = nodes(&[1, 2, 3])
            .into_iter()
            .filter(|n| *n != old)
            .collect();
        change_membership(
            &mut c,
            &left,
            |n| {
                if n.id() == old {
                    n.propose_add_learner(old)
                } else {
                    n.propose_remove_node(old)
                }
            },
            voters_are(left.clone()),
        )?;
        let handed_over = c.run_until(|c| c.leader().is_some_and(|l| l != old))?;
        assert!(
            handed_over,
            "seed {seed}: no new leader after removing {old}"
        );
        change_membership(
            &mut c,
            &left,
            |n| n.propose_remove_node(old),
            |n| !n.learners().contains(&old) && !n.voters().contains(&old),
        )?;
        let removed = c.node(old).ok_or("gone")?;
        assert!(!removed.is_leader(), "seed {seed}: {old} still leads");
        assert!(!removed.voters().contains(&old), "seed {seed}");
        let new = c.leader().ok_or("no leader")?;
        assert!(
            c.node(new).ok_or("gone")?.term() > term_before,
            "seed {seed}: leadership moved without a new term"
        );
        // The removed node keeps running and never disrupts the new quorum: it cannot
        // campaign (not promotable) and is not counted.
        commit(&mut c, 2, &left)?;
        c.net.heal();
        let term = c.node(new).ok_or("gone")?.term();
        for _ in 0..200 {
            c.tick()?;
        }
        assert_eq!(c.leader(), Some(new), "seed {seed}: leadership moved again");
        assert_eq!(c.node(new).ok_or("gone")?.term(), term, "seed {seed}");
        assert!(!c.node(old).ok_or("gone")?.is_leader(), "seed {seed}");
        // Two voters left: both are needed, the removed node does not help.
        assert_nothing_commits_with_one_voter_cut_off(
            &mut c,
            new,
            &left,
            "committed without a quorum of the remaining voters",
        )?;
    }
    Ok(())
}

#[test]
fn one_membership_change_at_a_time() -> TestResult {
    let seed = 5;
    let dir = tempfile::tempdir()?;
    let mut c = SimCluster::new(dir.path(), 3, seed)?;
    let leader = c.elect()?.ok_or("no leader")?;
    c.start(NodeId(4), &Bootstrap::Join)?;
    c.start(NodeId(5), &Bootstrap::Join)?;
    let node = c.node_mut(leader).ok_or("gone")?;
    assert!(!node.membership_change_pending());
    node.propose_add_voter(NodeId(4))?;
    assert!(node.membership_change_pending(), "seed {seed}");
    // Raft itself would turn a second change into an empty entry: the pending flag is
    // what the controller refuses on.
    node.propose_add_voter(NodeId(5))?;
    let four = nodes(&[1, 2, 3, 4]);
    assert!(c.run_until(|c| c.node(leader).is_some_and(|n| n.voters() == four))?);
    for _ in 0..50 {
        c.tick()?;
    }
    let n = c.node(leader).ok_or("gone")?;
    assert_eq!(n.voters(), four, "seed {seed}: the second change applied");
    assert!(!n.membership_change_pending(), "seed {seed}");
    Ok(())
}

#[test]
fn a_leader_demoted_to_learner_hands_over_and_keeps_following_the_log() -> TestResult {
    for seed in SEEDS {
        let dir = tempfile::tempdir()?;
        let mut c = SimCluster::new(dir.path(), 3, seed)?;
        commit(&mut c, 1, &nodes(&[1, 2, 3]))?;
        let old = c.elect()?.ok_or(format!("seed {seed}: no leader"))?;
        c.net.set_drop_per_mille(LOSS_PER_MILLE);
        let left: Vec<NodeId> = nodes(&[1, 2, 3])
            .into_iter()
            .filter(|n| *n != old)
            .collect();
        change_membership(
            &mut c,
            &left,
            |n| n.propose_add_learner(old),
            voters_are(left.clone()),
        )?;
        let handed_over = c.run_until(|c| c.leader().is_some_and(|l| l != old))?;
        assert!(
            handed_over,
            "seed {seed}: no new leader after demoting {old}"
        );
        // The learner still receives what the new quorum commits.
        commit(&mut c, 2, &nodes(&[1, 2, 3]))?;
        let learner = c.node(old).ok_or("gone")?;
        assert!(!learner.is_leader(), "seed {seed}");
        assert!(learner.learners().contains(&old), "seed {seed}");
        // ...and does not count: with the other voter cut off nothing commits.
        c.net.heal();
        let new = c.leader().ok_or("no leader")?;
        assert_nothing_commits_with_one_voter_cut_off(
            &mut c,
            new,
            &left,
            "a learner made a quorum",
        )?;
    }
    Ok(())
}

#[test]
fn a_learner_that_cannot_catch_up_does_not_weaken_the_quorum() -> TestResult {
    for seed in SEEDS {
        let dir = tempfile::tempdir()?;
        let mut c = SimCluster::new(dir.path(), 3, seed)?;
        for id in 1..=5 {
            commit(&mut c, id, &nodes(&[1, 2, 3]))?;
        }
        let leader = c.elect()?.ok_or(format!("seed {seed}: no leader"))?;
        // Node 4 is added as a learner while it cannot be reached.
        c.start(NodeId(4), &Bootstrap::Join)?;
        c.net.isolate(NodeId(4));
        c.node_mut(leader)
            .ok_or("gone")?
            .propose_add_learner(NodeId(4))?;
        let applied = c.run_until(|c| {
            c.node(leader)
                .is_some_and(|n| n.learners().contains(&NodeId(4)))
        })?;
        assert!(applied, "seed {seed}: learner change not applied");
        let commit_index = c.node(leader).ok_or("gone")?.commit_index();
        let matched = c.node(leader).ok_or("gone")?.matched(NodeId(4));
        assert!(
            matched.is_some_and(|m| m < commit_index),
            "seed {seed}: an unreachable learner counted as caught up: {matched:?}"
        );
        // A learner is not counted: one voter down, the other two still commit.
        let down = nodes(&[1, 2, 3])
            .into_iter()
            .find(|n| *n != leader)
            .ok_or("none")?;
        c.stop(down);
        let up: Vec<NodeId> = nodes(&[1, 2, 3])
            .into_iter()
            .filter(|n| *n != down)
            .collect();
        commit(&mut c, 6, &up)?;
        c.restart(down)?;
        // Reachable again: it catches up, then it can be promoted.
        c.net.heal();
        let caught_up = c.run_until(|c| {
            c.leader()
                .and_then(|l| c.node(l))
                .is_some_and(|n| n.matched(NodeId(4)) >= Some(n.commit_index()))
        })?;
        assert!(caught_up, "seed {seed}: the learner never caught up");
        add_voter_4(&mut c)?;
        assert!(has_broker(&c, NodeId(4), 6), "seed {seed}");
    }
    Ok(())
}

#[test]
fn an_added_controller_restarts_from_its_files_as_a_voter() -> TestResult {
    for seed in SEEDS {
        let dir = tempfile::tempdir()?;
        let mut c = SimCluster::new(dir.path(), 3, seed)?;
        commit(&mut c, 1, &nodes(&[1, 2, 3]))?;
        c.start(NodeId(4), &Bootstrap::Join)?;
        let all = add_voter_4(&mut c)?;
        commit(&mut c, 2, &all)?;
        c.stop(NodeId(4));
        commit(&mut c, 3, &nodes(&[1, 2, 3]))?;
        // Restarted with the founders' bootstrap: its files decide, not the list.
        c.restart(NodeId(4))?;
        let back = c.node(NodeId(4)).ok_or("gone")?;
        assert_eq!(
            back.voters(),
            all,
            "seed {seed}: membership lost at restart"
        );
        commit(&mut c, 4, &all)?;
        assert!(has_broker(&c, NodeId(4), 3), "seed {seed}");
    }
    Ok(())
}
