//! The active controller's broker duties through a real quorum: registration,
//! heartbeats on an explicit clock, fencing after `broker.session.timeout.ms`, unfencing,
//! preferred-leader election, and a controller failover that fences nobody.

mod common;

use common::{TestResult, World, ALL, TICK_MS};
use sluice_control::{
    create_topic_record, BrokerControl, BrokerControlConfig, BrokerEpoch, BrokerId, HeartbeatReply,
    MetadataImage, NodeId, PartitionChange, Record, TopicId,
};

/// Three controllers, brokers 1..3 on racks a..c registered and unfenced, and topic
/// `t` (id 77) with 6 partitions of replication factor 3.
fn setup(dir: &std::path::Path) -> Result<World, Box<dyn std::error::Error>> {
    let mut w = World::start(dir, 5)?;
    let create = create_topic_record(&*w.image()?, "t", TopicId(77), 6, 3)?;
    w.c.propose(&create)?;
    w.run_until(&ALL, |i| i.topic(TopicId(77)).is_some())?;
    Ok(w)
}

#[test]
fn fencing_unfencing_and_preferred_leaders() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut w = setup(dir.path())?;
    let all = ALL;

    // Broker 1 stops heartbeating: fenced after the session timeout, not before.
    let two = [BrokerId(2), BrokerId(3)];
    let took = w.run_until(&two, |i| !i.is_live(BrokerId(1)))?;
    assert!(
        took.0 >= 9_000 - TICK_MS && took.0 <= 9_000 + 3 * TICK_MS,
        "fenced after {took:?}"
    );
    let image = w.image()?;
    let t = image.topic(TopicId(77)).ok_or("topic")?;
    for p in t.partitions.values() {
        let l = p.leader.ok_or("leaderless")?;
        assert_ne!(l, BrokerId(1));
        assert!(p.isr.contains(&l) && !p.isr.contains(&BrokerId(1)));
    }

    // It comes back: unfenced; once back in the ISR, preferred leaders return.
    w.run_until(&all, |i| i.is_live(BrokerId(1)))?;
    let image = w.image()?;
    let t = image.topic(TopicId(77)).ok_or("topic")?.clone();
    for (idx, p) in &t.partitions {
        let mut isr = p.isr.clone();
        isr.push(BrokerId(1));
        w.c.propose(&Record::PartitionChange(PartitionChange {
            topic_id: TopicId(77),
            partition: *idx,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            isr,
            eligible_leaders: vec![],
            replicas: None,
            adding_replicas: None,
            removing_replicas: None,
        }))?;
    }
    w.run_until(&all, |i| {
        i.topic(TopicId(77)).is_some_and(|t| {
            t.partitions
                .values()
                .all(|p| p.leader == p.replicas.first().copied())
        })
    })?;

    // Controller failover: a new active controller with no heartbeat history fences no
    // live broker.
    let old = w.c.leader().ok_or("no leader")?;
    w.c.net.isolate(old);
    w.bc = BrokerControl::new(BrokerControlConfig::default());
    w.run_until(&all, |_| false).ok();
    let image = w.image()?;
    assert_ne!(w.c.leader(), Some(old));
    for b in all {
        assert!(image.is_live(b), "broker {b} fenced by the failover");
    }
    assert!(w.c.leader().is_some_and(|l| l != NodeId(0)));
    Ok(())
}

#[test]
fn a_restarted_broker_loses_its_leaderships_until_it_is_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut w = setup(dir.path())?;
    let led_by_1 = |i: &MetadataImage| {
        i.partitions()
            .filter(|(_, _, p)| p.leader == Some(BrokerId(1)))
            .count()
    };
    assert_eq!(led_by_1(&*w.image()?), 2);
    // Broker 1 restarts and registers again with a new epoch.
    let l = w.c.leader().ok_or("no leader")?;
    let ctl = w.c.node_mut(l).ok_or("gone")?;
    let epoch =
        w.bc.register(ctl, BrokerId(1), Some("a".into()), vec![], w.now)?;
    w.epochs[0] = (BrokerId(1), epoch);
    w.c.settle()?;
    let image = w.image()?;
    assert_eq!(
        image.broker(BrokerId(1)).map(|b| (b.epoch, b.fenced)),
        Some((epoch, true))
    );
    assert_eq!(led_by_1(&image), 0, "old incarnation still leads");
    for (_, _, p) in image.partitions() {
        let l = p.leader.ok_or("leaderless")?;
        assert!(p.isr.contains(&l));
    }
    // Heartbeating with the new epoch unfences it; the old epoch is refused.
    let ctl = w.c.node_mut(l).ok_or("gone")?;
    assert_eq!(
        w.bc.heartbeat(ctl, BrokerId(1), BrokerEpoch(epoch.0 - 1), w.now),
        HeartbeatReply::RegisterAgain
    );
    w.run_until(&ALL, |i| i.is_live(BrokerId(1)))?;
    Ok(())
}

#[test]
fn brokers_fenced_and_unfenced_together_are_decided_one_at_a_time() -> TestResult {
    // Every broker stops at once (a power loss) and comes back at once: the controller
    // must not decide two brokers from the same image, or two changes of one partition
    // claim the same next leader epoch and every node rejects the second.
    let dir = tempfile::tempdir()?;
    let mut w = setup(dir.path())?;
    w.run_until(&[], |i| ALL.iter().all(|b| !i.is_live(*b)))?;
    w.run_until(&ALL, |i| {
        ALL.iter().all(|b| i.is_live(*b)) && i.partitions().all(|(_, _, p)| p.leader.is_some())
    })?;
    w.c.settle()?;
    for n in 1..=3 {
        let node = w.c.node(NodeId(n)).ok_or("node down")?;
        assert_eq!(
            node.stats().records_rejected,
            0,
            "node {n} rejected records"
        );
    }
    Ok(())
}

/// A heartbeat that reaches a controller whose image is behind its own log (a controller
/// that just took over, before it applies the previous leader's last entries) may carry an
/// epoch newer than that image knows. The broker is serving under that epoch: telling it
/// to register again fences the serving incarnation until the next unfence, and its
/// Metadata answers leave itself out meanwhile (seen once as `metadata_start`'s "node 3
/// does not list itself" after a cluster restart). The controller answers "not yet known"
/// instead, and decides once the registration is applied; a stale epoch is still refused.
#[test]
fn a_heartbeat_newer_than_the_image_is_not_told_to_register_again() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut w = setup(dir.path())?;
    let one = BrokerId(1);
    let old = w.epoch(one);
    let l = w.c.leader().ok_or("no leader")?;
    let ctl = w.c.node_mut(l).ok_or("gone")?;
    let epoch = w.bc.register(ctl, one, Some("a".into()), vec![], w.now)?;
    assert!(
        ctl.image().offset().0 < ctl.last_index(),
        "registration applied already"
    );
    assert_eq!(
        w.bc.heartbeat(ctl, one, epoch, w.now),
        HeartbeatReply::NotYetKnown
    );
    assert_eq!(
        w.bc.heartbeat(ctl, one, BrokerEpoch(old.0 - 1), w.now),
        HeartbeatReply::RegisterAgain,
        "an epoch older than the image's is stale whatever is still to apply"
    );
    w.epochs[0] = (one, epoch);
    w.c.settle()?;
    let ctl = w.c.node_mut(l).ok_or("gone")?;
    assert_eq!(ctl.image().offset().0, ctl.last_index());
    assert_eq!(
        w.bc.heartbeat(ctl, one, epoch, w.now),
        HeartbeatReply::Fenced
    );
    assert_eq!(
        w.bc.heartbeat(ctl, one, BrokerEpoch(epoch.0 + 1), w.now),
        HeartbeatReply::RegisterAgain,
        "an epoch no log entry holds once everything is applied"
    );
    w.run_until(&ALL, |i| i.is_live(one))?;
    Ok(())
}
