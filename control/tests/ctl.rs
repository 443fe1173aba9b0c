//! The controller side of partition replication through a real (simulated, seeded) quorum:
//! ISR changes a leader asks for (`isr::alter_partition`), preferred leaders returning once
//! the preferred replica is back in the ISR that way, and controlled shutdown
//! (`BrokerControl::shutdown`) — leadership moves within the ISR, the broker leaves every
//! ISR and stays fenced while it keeps heartbeating, until it registers again. Time is the
//! logical clock of `SimCluster`; nothing here reads the wall clock.

use std::collections::BTreeSet;

mod common;

use common::{TestResult, World, ALL, TICK_MS};
use sluice_control::{
    alter_partition, create_topic_record, BrokerControl, BrokerControlConfig, BrokerEpoch,
    BrokerId, ConfigResource, IsrChange, IsrRefusal, Leaving, MetadataImage, PartitionId,
    PartitionState, Record, TopicId,
};

const T: TopicId = TopicId(77);

impl World {
    /// The leader of partition `idx` asks for `isr` (as `AlterPartition` does); the record
    /// is proposed and applied when accepted.
    fn alter(
        &mut self,
        idx: i32,
        isr: &[BrokerId],
    ) -> Result<Result<(), IsrRefusal>, Box<dyn std::error::Error>> {
        let image = self.image()?;
        let p = partition(&image, idx);
        let leader = p.leader.ok_or("leaderless")?;
        let req = IsrChange {
            broker: leader,
            broker_epoch: self.epoch(leader),
            topic: "t",
            partition: PartitionId(idx),
            leader_epoch: p.leader_epoch,
            isr,
        };
        match alter_partition(&image, &req, &self.bc.shutting_down(&image)) {
            Ok(Some(record)) => {
                self.c.propose(&record)?;
                Ok(Ok(()))
            }
            Ok(None) => Ok(Ok(())),
            Err(e) => Ok(Err(e)),
        }
    }
}

fn partition(image: &MetadataImage, idx: i32) -> PartitionState {
    image.topic(T).expect("topic t").partitions[&PartitionId(idx)].clone()
}

/// Three controllers (seeded), brokers 1..3 registered and unfenced, topic `t` with 6
/// partitions of replication factor 3 and `min.insync.replicas` = `min_isr`.
fn setup(
    name: &str,
    min_isr: usize,
) -> Result<(World, tempfile::TempDir), Box<dyn std::error::Error>> {
    let dir = tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let mut w = World::start(dir.path(), 11)?;
    let create = create_topic_record(&*w.image()?, "t", T, 6, 3)?;
    w.c.propose(&create)?;
    w.c.propose(&Record::ConfigChange {
        resource: ConfigResource::Topic,
        resource_name: "t".into(),
        key: "min.insync.replicas".into(),
        value: Some(min_isr.to_string()),
    })?;
    w.run_until(&ALL, |i| i.min_insync_replicas("t") == min_isr)?;
    Ok((w, dir))
}

#[test]
fn isr_shrinks_and_expands_through_the_quorum_with_the_elr_per_kip_966() -> TestResult {
    let (mut w, _dir) = setup("ctl-isr", 2)?;
    let p = partition(&*w.image()?, 0);
    let (leader, epoch) = (p.leader.ok_or("leaderless")?, p.leader_epoch);
    let others: Vec<BrokerId> = p
        .replicas
        .iter()
        .copied()
        .filter(|b| *b != leader)
        .collect();

    // Shrink to [leader, a]: at min ISR 2, no ELR.
    w.alter(0, &[leader, others[0]])?
        .map_err(|e| e.to_string())?;
    let s = partition(&*w.image()?, 0);
    assert_eq!((s.leader, s.leader_epoch), (Some(leader), epoch));
    assert_eq!(s.isr, vec![leader, others[0]]);
    assert!(s.elr.is_empty());
    // Shrink to [leader] (below min ISR): the removed member joins the ELR.
    w.alter(0, &[leader])?.map_err(|e| e.to_string())?;
    let s = partition(&*w.image()?, 0);
    assert_eq!(s.elr, vec![others[0]]);
    // Back to all three: the ELR is cleared, leader and epoch never moved.
    w.alter(0, &[leader, others[0], others[1]])?
        .map_err(|e| e.to_string())?;
    let s = partition(&*w.image()?, 0);
    assert_eq!(s.isr.len(), 3);
    assert!(s.elr.is_empty());
    assert_eq!((s.leader, s.leader_epoch), (Some(leader), epoch));

    // A follower asking is refused; so is the leader with a stale broker epoch.
    let image = w.image()?;
    let isr = [leader];
    let from_follower = IsrChange {
        broker: others[0],
        broker_epoch: w.epoch(others[0]),
        topic: "t",
        partition: PartitionId(0),
        leader_epoch: epoch,
        isr: &isr,
    };
    assert!(matches!(
        alter_partition(&image, &from_follower, &BTreeSet::new()),
        Err(IsrRefusal::NotLeader { .. })
    ));
    let stale = IsrChange {
        broker: leader,
        broker_epoch: BrokerEpoch(w.epoch(leader).0 - 1),
        ..from_follower
    };
    assert!(matches!(
        alter_partition(&image, &stale, &BTreeSet::new()),
        Err(IsrRefusal::StaleBrokerEpoch { .. })
    ));
    Ok(())
}

#[test]
fn a_preferred_replica_back_in_the_isr_through_alter_partition_leads_again() -> TestResult {
    let (mut w, _dir) = setup("ctl-preferred", 1)?;
    let one = BrokerId(1);
    let preferred_by_1: Vec<i32> = w
        .image()?
        .topic(T)
        .ok_or("topic")?
        .partitions
        .iter()
        .filter(|(_, p)| p.replicas.first() == Some(&one))
        .map(|(i, _)| i.0)
        .collect();
    assert!(!preferred_by_1.is_empty());
    // Broker 1 stops heartbeating: fenced, its leaderships move within the ISR.
    let two_three = [BrokerId(2), BrokerId(3)];
    w.run_until(&two_three, |i| !i.is_live(one))?;
    let before = w.image()?;
    for idx in &preferred_by_1 {
        let p = partition(&before, *idx);
        assert!(
            p.leader.is_some_and(|l| l != one) && !p.isr.contains(&one),
            "{p:?}"
        );
    }
    // It heartbeats again: unfenced, but it leads nothing it is not in sync for.
    w.run_until(&ALL, |i| i.is_live(one))?;
    for idx in &preferred_by_1 {
        assert_ne!(partition(&*w.image()?, *idx).leader, Some(one));
    }
    // The leaders add it back to their ISRs: preferred-leader election returns leadership
    // (a leader change: the epoch moves on).
    for idx in &preferred_by_1 {
        let p = partition(&*w.image()?, *idx);
        let mut isr = p.isr.clone();
        isr.push(one);
        w.alter(*idx, &isr)?.map_err(|e| e.to_string())?;
    }
    w.run_until(&ALL, |i| {
        preferred_by_1
            .iter()
            .all(|idx| partition(i, *idx).leader == Some(one))
    })?;
    let after = w.image()?;
    for idx in &preferred_by_1 {
        let (b, a) = (partition(&before, *idx), partition(&after, *idx));
        assert!(a.leader_epoch > b.leader_epoch, "{b:?} -> {a:?}");
        assert!(a.isr.contains(&one));
    }
    Ok(())
}

#[test]
fn controlled_shutdown_moves_leadership_and_the_broker_stays_fenced_until_it_registers(
) -> TestResult {
    let (mut w, _dir) = setup("ctl-shutdown", 2)?;
    let one = BrokerId(1);
    let before = w.image()?;
    let led: Vec<i32> = before
        .partitions()
        .filter(|(_, _, p)| p.leader == Some(one))
        .map(|(_, i, _)| i.0)
        .collect();
    assert!(!led.is_empty());

    // A stale epoch is refused and changes nothing.
    let l = w.c.leader().ok_or("no leader")?;
    let ctl = w.c.node_mut(l).ok_or("gone")?;
    let stale = w.bc.leave(
        ctl,
        one,
        BrokerEpoch(w.epochs[0].1 .0 - 1),
        Leaving::Shutdown,
    )?;
    assert_eq!(stale, Err(Some(w.epochs[0].1)));
    assert!(w.bc.shutting_down(&*w.image()?).is_empty());

    let ctl = w.c.node_mut(l).ok_or("gone")?;
    let records =
        w.bc.leave(ctl, one, w.epochs[0].1, Leaving::Shutdown)?
            .map_err(|e| format!("{e:?}"))?;
    assert!(matches!(records.last(), Some(Record::FenceBroker { broker, .. }) if *broker == one));
    w.c.settle()?;
    let image = w.image()?;
    assert!(!image.is_live(one));
    for (_, idx, p) in image.partitions() {
        assert_ne!(p.leader, Some(one), "{idx:?} still led by 1");
        assert!(!p.isr.contains(&one), "{idx:?}: 1 still in sync");
        let old = partition(&before, idx.0);
        if led.contains(&idx.0) {
            let new = p.leader.ok_or("leaderless")?;
            assert!(old.isr.contains(&new), "new leader {new} was in the ISR");
            assert_eq!(p.leader_epoch.0, old.leader_epoch.0 + 1);
        }
        // Two of three in sync is min ISR 2: no ELR.
        assert!(p.elr.is_empty());
    }

    // It keeps heartbeating (still draining) well past a session: it stays fenced, and
    // preferred-leader election gives it nothing.
    for _ in 0..(2 * 9_000 / TICK_MS) {
        w.step(&ALL)?;
    }
    let image = w.image()?;
    assert!(!image.is_live(one));
    assert!(image.partitions().all(|(_, _, p)| p.leader != Some(one)));
    // Nor can a leader put it back into an ISR.
    let p = partition(&image, 0);
    let mut isr = p.isr.clone();
    isr.push(one);
    assert!(matches!(
        w.alter(0, &isr)?,
        Err(IsrRefusal::IneligibleReplica { member, .. }) if member == one
    ));

    // It restarts and registers again: unfenced on its next heartbeats.
    let l = w.c.leader().ok_or("no leader")?;
    let ctl = w.c.node_mut(l).ok_or("gone")?;
    let epoch = w.bc.register(ctl, one, Some("a".into()), vec![], w.now)?;
    w.epochs[0] = (one, epoch);
    w.c.settle()?;
    assert!(w.bc.shutting_down(&*w.image()?).is_empty());
    w.run_until(&ALL, |i| i.is_live(one))?;
    Ok(())
}

/// A rolling restart where the active controller changes while a broker is down (issue
/// #26): broker 1 leaves through controller A, registers again through controller B (A is
/// not active then), and A becomes active again. A must see from the image that broker 1
/// is back: it is unfenced, may join an ISR and lead again. Before the fix A kept broker 1
/// in its in-memory shutting-down set, so it stayed fenced and out of every ISR for good.
#[test]
fn a_broker_that_registered_again_through_another_controller_is_not_still_leaving() -> TestResult {
    let (mut w, _dir) = setup("ctl-reregister", 2)?;
    let one = BrokerId(1);
    let l = w.c.leader().ok_or("no leader")?;
    let ctl = w.c.node_mut(l).ok_or("gone")?;
    w.bc.leave(ctl, one, w.epochs[0].1, Leaving::Shutdown)?
        .map_err(|e| format!("{e:?}"))?;
    w.c.settle()?;
    assert!(w.bc.shutting_down(&*w.image()?).contains(&one));
    let two_three = [BrokerId(2), BrokerId(3)];
    w.run_until(&two_three, |i| {
        !i.is_live(one) && i.partitions().all(|(_, _, p)| !p.isr.contains(&one))
    })?;

    // Another controller (B) takes the registration of the restarted broker: A's state
    // never sees it.
    let mut b = BrokerControl::new(BrokerControlConfig::default());
    let l = w.c.leader().ok_or("no leader")?;
    let ctl = w.c.node_mut(l).ok_or("gone")?;
    let epoch = b.register(ctl, one, Some("a".into()), vec![], w.now)?;
    w.epochs[0] = (one, epoch);
    w.c.settle()?;
    assert!(w.bc.shutting_down(&*w.image()?).is_empty());

    // A is active again: the broker is unfenced on its heartbeats and joins an ISR.
    w.run_until(&ALL, |i| i.is_live(one))?;
    let image = w.image()?;
    let p = partition(&image, 0);
    let mut isr = p.isr.clone();
    isr.push(one);
    assert_eq!(w.alter(0, &isr)?, Ok(()));
    w.run_until(&ALL, |i| partition(i, 0).isr.contains(&one))?;
    Ok(())
}

#[test]
fn controlled_shutdown_keeps_partitions_with_no_other_in_sync_replica() -> TestResult {
    let (mut w, _dir) = setup("ctl-solo", 1)?;
    let one = BrokerId(1);
    let solo = create_topic_record(&*w.image()?, "solo", TopicId(78), 3, 1)?;
    w.c.propose(&solo)?;
    w.run_until(&ALL, |i| i.topic(TopicId(78)).is_some())?;
    let before = w.image()?;
    let solo_led: Vec<_> = before
        .topic(TopicId(78))
        .ok_or("solo")?
        .partitions
        .iter()
        .filter(|(_, p)| p.leader == Some(one))
        .map(|(i, p)| (*i, p.clone()))
        .collect();
    assert!(
        !solo_led.is_empty(),
        "broker 1 leads a single-replica partition"
    );

    let l = w.c.leader().ok_or("no leader")?;
    let ctl = w.c.node_mut(l).ok_or("gone")?;
    let records =
        w.bc.leave(ctl, one, w.epochs[0].1, Leaving::Shutdown)?
            .map_err(|e| format!("{e:?}"))?;
    assert!(!records
        .iter()
        .any(|r| matches!(r, Record::FenceBroker { .. })));
    w.c.settle()?;
    let image = w.image()?;
    // Its only-copy partitions stay as they were (still served until it stops); the
    // replicated ones moved; it is not fenced while it leads.
    for (i, p) in &solo_led {
        assert_eq!(&image.topic(TopicId(78)).ok_or("solo")?.partitions[i], p);
    }
    assert!(image.is_live(one));
    assert!(image
        .topic(T)
        .ok_or("t")?
        .partitions
        .values()
        .all(|p| p.leader != Some(one)));
    // Once it stops heartbeating, the session timeout fences it as for a crash.
    let two_three = [BrokerId(2), BrokerId(3)];
    w.run_until(&two_three, |i| !i.is_live(one))?;
    Ok(())
}
