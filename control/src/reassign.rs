//! Partition reassignment (Kafka's AlterPartitionReassignments and
//! ListPartitionReassignments, KIP-455) as pure decisions over the image, the way Kafka's
//! KRaft controller makes them (`ReplicationControlManager.changePartitionReassignment`,
//! `PartitionReassignmentReplicas`, `PartitionReassignmentRevert`).
//!
//! A reassignment goes through three stages, each a `PartitionChange` in the metadata log
//! (so a new active controller continues where the last one stopped):
//! 1. Start: the replicas become the target followed by the current replicas it drops;
//!    `adding_replicas` = target − current, `removing_replicas` = current − target. ISR and
//!    leader stay. The brokers added start as followers of the leader.
//! 2. Catch-up: each added replica joins the ISR through the leader's `AlterPartition`.
//! 3. Completion, decided with the ISR change that allows it (or at once at the start):
//!    once every added replica is in the ISR and the ISR holds a replica not being
//!    removed, the replicas become the target, the removed ones leave the ISR and ELR,
//!    and a leader being removed hands over to the first target replica in the ISR (the
//!    leader epoch moves on). A removed broker then stops following the partition and
//!    deletes its copy.
//!
//! Cancellation (a null target) goes back to the replicas less those being added, the ISR
//! less those being added; when only added replicas were in sync, back to the original
//! replicas as the ISR, which is an unclean election: refused unless the topic enables
//! it, as Kafka refuses it.
//!
//! Invariants: a decided state passes the ISR rules (`isr::assert_isr_rules`); the target
//! replicas (the replicas less those removing) are never empty; leadership only moves to
//! a live, in-sync target replica.

use std::collections::BTreeSet;

use crate::election::{change, set_leader, ElectionKind};
use crate::image::{MetadataImage, PartitionState};
use crate::isr::assert_isr_rules;
use crate::placement::check_manual_assignment;
use crate::records::Record;
use crate::types::{BrokerId, MetadataOffset, PartitionId};

/// One partition of an AlterPartitionReassignments request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignTarget {
    pub topic: String,
    pub partition: i32,
    /// The new replicas, the first the preferred leader; `None` cancels.
    pub replicas: Option<Vec<BrokerId>>,
}

/// Why one partition's reassignment is refused (each is one of Kafka's error codes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassignRefusal {
    /// UNKNOWN_TOPIC_OR_PARTITION.
    #[error("{0}")]
    UnknownTopicOrPartition(String),
    /// NO_REASSIGNMENT_IN_PROGRESS: a cancellation of a partition not being reassigned.
    #[error("No partition reassignment is in progress for this topic-partition.")]
    NoReassignmentInProgress,
    /// INVALID_REPLICA_ASSIGNMENT.
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// INVALID_REPLICATION_FACTOR: a changed replica count where the asker forbade it.
    #[error("{0}")]
    InvalidReplicationFactor(String),
}

/// A partition being reassigned, as ListPartitionReassignments reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<BrokerId>,
    pub adding_replicas: Vec<BrokerId>,
    pub removing_replicas: Vec<BrokerId>,
}

/// Decides one partition's reassignment (or its cancellation) from `image`: `Ok(None)`
/// when nothing changes, the record to propose, or why not. `allow_rf_change: false`
/// refuses a target whose length differs from the replica count before any reassignment
/// (AlterPartitionReassignments v1). `live`: brokers that may lead.
pub fn reassign(
    image: &MetadataImage,
    target: &ReassignTarget,
    allow_rf_change: bool,
    live: impl Fn(BrokerId) -> bool,
) -> Result<Option<Record>, ReassignRefusal> {
    let (t, p) = partition(image, &target.topic, target.partition)?;
    let idx = PartitionId(target.partition);
    let next = match &target.replicas {
        None if !p.is_reassigning() => return Err(ReassignRefusal::NoReassignmentInProgress),
        None => cancelled(p, image.unclean_election_enabled(&t.name), &live).map_err(|why| {
            ReassignRefusal::InvalidReplicaAssignment(format!(
                "Unable to revert partition assignment for {}:{} because {why}.",
                t.name, idx.0
            ))
        })?,
        Some(replicas) => {
            check_manual_assignment(image, idx.0, std::slice::from_ref(replicas), None)
                .map_err(|e| ReassignRefusal::InvalidReplicaAssignment(e.to_string()))?;
            let original = p.replicas.len() - p.adding_replicas.len();
            if !allow_rf_change && replicas.len() != original {
                return Err(ReassignRefusal::InvalidReplicationFactor(format!(
                    "The replication factor is changed from {original} to {}",
                    replicas.len()
                )));
            }
            complete_if_ready(started(p, replicas), &live)
        }
    };
    if next == *p {
        return Ok(None);
    }
    assert_reassignment_rules(&next);
    Ok(Some(change(t, idx, next)))
}

/// Decides every partition of a request in order, each from the image the earlier ones
/// leave (a partition named twice takes its last target): the records to propose and
/// each partition's outcome.
pub fn reassign_all(
    image: &MetadataImage,
    targets: &[ReassignTarget],
    allow_rf_change: bool,
    excluded: &BTreeSet<BrokerId>,
) -> (Vec<Record>, Vec<Result<(), ReassignRefusal>>) {
    let mut work = image.clone();
    let mut records = Vec::new();
    let mut outcomes = Vec::with_capacity(targets.len());
    for target in targets {
        let live = |b: BrokerId| work.is_live(b) && !excluded.contains(&b);
        let decided = reassign(&work, target, allow_rf_change, live);
        let outcome = match decided {
            Ok(Some(record)) => {
                let next = MetadataOffset(work.offset().0 + 1);
                match work.apply(next, &record) {
                    Ok(applied) => {
                        work = applied;
                        records.push(record);
                        Ok(())
                    }
                    // A decision the image refuses is a bug in the decision; say so
                    // rather than proposing it.
                    Err(e) => Err(ReassignRefusal::InvalidReplicaAssignment(e.to_string())),
                }
            }
            Ok(None) => Ok(()),
            Err(refusal) => Err(refusal),
        };
        outcomes.push(outcome);
    }
    (records, outcomes)
}

/// The partitions being reassigned: every one (`asked` is `None`), or those among the
/// asked partitions of the asked topics (unknown ones are left out, as Kafka does).
pub fn ongoing(
    image: &MetadataImage,
    asked: Option<&[(String, Vec<i32>)]>,
) -> Vec<OngoingReassignment> {
    let report = |topic: &str, idx: PartitionId, p: &PartitionState| OngoingReassignment {
        topic: topic.to_owned(),
        partition: idx.0,
        replicas: p.replicas.clone(),
        adding_replicas: p.adding_replicas.clone(),
        removing_replicas: p.removing_replicas.clone(),
    };
    match asked {
        None => image
            .partitions()
            .filter(|(_, _, p)| p.is_reassigning())
            .map(|(t, idx, p)| report(&t.name, idx, p))
            .collect(),
        Some(topics) => {
            let mut out = Vec::new();
            for (topic, partitions) in topics {
                let Some(t) = image.topic_by_name(topic) else {
                    continue;
                };
                for idx in partitions {
                    let idx = PartitionId(*idx);
                    if let Some(p) = t.partitions.get(&idx).filter(|p| p.is_reassigning()) {
                        out.push(report(&t.name, idx, p));
                    }
                }
            }
            out
        }
    }
}

/// The partition `topic`-`partition` of the image, or UNKNOWN_TOPIC_OR_PARTITION.
fn partition<'a>(
    image: &'a MetadataImage,
    topic: &str,
    partition: i32,
) -> Result<(&'a crate::image::TopicImage, &'a PartitionState), ReassignRefusal> {
    let t = image.topic_by_name(topic).ok_or_else(|| {
        ReassignRefusal::UnknownTopicOrPartition(format!("Unable to find a topic named {topic}."))
    })?;
    let p = t.partitions.get(&PartitionId(partition)).ok_or_else(|| {
        ReassignRefusal::UnknownTopicOrPartition(format!(
            "Unable to find partition {topic}:{partition}."
        ))
    })?;
    Ok((t, p))
}

/// Stage 1: the replicas become `target` then those it drops (Kafka's
/// `PartitionReassignmentReplicas` against the current replicas, an earlier reassignment's
/// included); ISR and leader stay.
fn started(p: &PartitionState, target: &[BrokerId]) -> PartitionState {
    let removing: Vec<BrokerId> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    let adding: Vec<BrokerId> = target
        .iter()
        .copied()
        .filter(|r| !p.replicas.contains(r))
        .collect();
    let mut replicas = target.to_vec();
    replicas.extend_from_slice(&removing);
    PartitionState {
        replicas,
        adding_replicas: adding,
        removing_replicas: removing,
        ..p.clone()
    }
}

/// Stage 3 when the ISR allows it (see the module docs); `p` unchanged otherwise. A
/// leader being removed hands over to the first target replica in the ISR that `live`
/// accepts; with none, the reassignment waits (a later ISR change completes it).
pub(crate) fn complete_if_ready(
    p: PartitionState,
    live: impl Fn(BrokerId) -> bool,
) -> PartitionState {
    if !p.is_reassigning() || !p.adding_replicas.iter().all(|r| p.isr.contains(r)) {
        return p;
    }
    let leaving = |r: &BrokerId| p.removing_replicas.contains(r);
    let isr: Vec<BrokerId> = p.isr.iter().copied().filter(|r| !leaving(r)).collect();
    if isr.is_empty() {
        return p;
    }
    let mut next = PartitionState {
        replicas: p.target_replicas(),
        isr,
        elr: p.elr.iter().copied().filter(|r| !leaving(r)).collect(),
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
        ..p.clone()
    };
    if next.leader.is_some_and(|l| next.isr.contains(&l)) {
        return next;
    }
    let elected = next
        .replicas
        .iter()
        .copied()
        .find(|r| next.isr.contains(r) && live(*r));
    match elected {
        Some(b) => {
            set_leader(&mut next, Some((b, ElectionKind::Isr)));
            next
        }
        None => p,
    }
}

/// A cancellation of a reassignment under way: back to the replicas less those being
/// added (see the module docs), or why it cannot be done.
fn cancelled(
    p: &PartitionState,
    unclean_enabled: bool,
    live: impl Fn(BrokerId) -> bool,
) -> Result<PartitionState, &'static str> {
    let adding = |r: &BrokerId| p.adding_replicas.contains(r);
    let replicas: Vec<BrokerId> = p.replicas.iter().copied().filter(|r| !adding(r)).collect();
    let mut isr: Vec<BrokerId> = p.isr.iter().copied().filter(|r| !adding(r)).collect();
    let unclean = isr.is_empty();
    if unclean {
        if !unclean_enabled {
            return Err("it would require an unclean leader election");
        }
        isr = replicas.clone();
    }
    let mut next = PartitionState {
        replicas,
        isr,
        elr: p.elr.iter().copied().filter(|r| !adding(r)).collect(),
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
        ..p.clone()
    };
    next.elr.retain(|r| !next.isr.contains(r));
    if !next.leader.is_some_and(|l| next.isr.contains(&l)) {
        let elected = next
            .replicas
            .iter()
            .copied()
            .find(|r| next.isr.contains(r) && live(*r))
            .map(|b| (b, ElectionKind::Isr));
        set_leader(&mut next, elected);
        if let Some(l) = next.leader {
            // Leading an ISR made of the original replicas is unclean: it starts alone.
            if unclean {
                next.isr = vec![l];
            }
        }
    }
    Ok(next)
}

/// What every decided state keeps: the ISR rules, and adding and removing replicas
/// disjoint sets of replicas that leave at least one target replica.
fn assert_reassignment_rules(p: &PartitionState) {
    assert_isr_rules(p);
    assert!(
        !p.target_replicas().is_empty(),
        "a reassignment removes every replica: {p:?}"
    );
    assert!(
        p.adding_replicas
            .iter()
            .chain(&p.removing_replicas)
            .all(|r| p.replicas.contains(r)),
        "adding or removing replicas outside the replicas: {p:?}"
    );
    assert!(
        !p.adding_replicas
            .iter()
            .any(|r| p.removing_replicas.contains(r)),
        "a replica both added and removed: {p:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{ConfigResource, PartitionAssignment};
    use crate::types::{BrokerEpoch, LeaderEpoch, TopicId};

    fn ids(v: &[i32]) -> Vec<BrokerId> {
        v.iter().map(|b| BrokerId(*b)).collect()
    }

    /// Brokers 1..=4 registered and unfenced; topic "t", one partition on `replicas`, led
    /// by the first at epoch 3, all in sync.
    fn image(replicas: &[i32]) -> MetadataImage {
        let mut records = Vec::new();
        for b in 1..=4 {
            records.push(Record::RegisterBroker {
                broker: BrokerId(b),
                epoch: BrokerEpoch(10),
                rack: None,
                listeners: Vec::new(),
            });
            records.push(Record::UnfenceBroker {
                broker: BrokerId(b),
                epoch: BrokerEpoch(10),
            });
        }
        records.push(Record::CreateTopic {
            name: "t".into(),
            topic_id: TopicId(9),
            partitions: vec![PartitionAssignment {
                partition: PartitionId(0),
                replicas: ids(replicas),
                leader: Some(BrokerId(replicas[0])),
                leader_epoch: LeaderEpoch(3),
                isr: ids(replicas),
            }],
        });
        MetadataImage::from_records(MetadataOffset(records.len() as u64), &records).unwrap()
    }

    fn target(replicas: Option<&[i32]>) -> ReassignTarget {
        ReassignTarget {
            topic: "t".into(),
            partition: 0,
            replicas: replicas.map(ids),
        }
    }

    fn decide(
        img: &MetadataImage,
        replicas: Option<&[i32]>,
    ) -> Result<MetadataImage, ReassignRefusal> {
        let record = reassign(img, &target(replicas), true, |b| img.is_live(b))?;
        Ok(match record {
            Some(r) => img.apply(MetadataOffset(img.offset().0 + 1), &r).unwrap(),
            None => img.clone(),
        })
    }

    fn state(img: &MetadataImage) -> PartitionState {
        img.topic_by_name("t").unwrap().partitions[&PartitionId(0)].clone()
    }

    /// The leader's ISR change `isr` through `isr::alter_partition`.
    fn isr_change(img: &MetadataImage, isr: &[i32]) -> MetadataImage {
        let s = state(img);
        let leader = s.leader.unwrap();
        let req = crate::isr::IsrChange {
            broker: leader,
            broker_epoch: BrokerEpoch(10),
            topic: "t",
            partition: PartitionId(0),
            leader_epoch: s.leader_epoch,
            isr: &ids(isr),
        };
        let r = crate::isr::alter_partition(img, &req, &BTreeSet::new())
            .unwrap()
            .unwrap();
        img.apply(MetadataOffset(img.offset().0 + 1), &r).unwrap()
    }

    #[test]
    fn a_move_adds_first_then_switches_once_the_new_replicas_are_in_sync() {
        let img = decide(&image(&[1, 2]), Some(&[2, 3])).unwrap();
        let s = state(&img);
        assert_eq!(s.replicas, ids(&[2, 3, 1]));
        assert_eq!(s.adding_replicas, ids(&[3]));
        assert_eq!(s.removing_replicas, ids(&[1]));
        assert_eq!((s.leader, s.isr.clone()), (Some(BrokerId(1)), ids(&[1, 2])));
        assert_eq!(ongoing(&img, None).len(), 1);
        // Broker 3 catches up: the same decision completes the move and moves the
        // leader off broker 1, to the first target replica in sync.
        let done = state(&isr_change(&img, &[1, 2, 3]));
        assert_eq!(done.replicas, ids(&[2, 3]));
        assert_eq!(done.isr, ids(&[2, 3]));
        assert_eq!(done.leader, Some(BrokerId(2)));
        assert_eq!(done.leader_epoch, LeaderEpoch(4));
        assert!(!done.is_reassigning());
    }

    #[test]
    fn a_shrink_or_a_reorder_completes_at_once() {
        let s = state(&decide(&image(&[1, 2, 3]), Some(&[3, 2])).unwrap());
        assert_eq!((s.replicas, s.isr), (ids(&[3, 2]), ids(&[2, 3])));
        assert_eq!(
            (s.leader, s.leader_epoch),
            (Some(BrokerId(3)), LeaderEpoch(4))
        );
        let s = state(&decide(&image(&[1, 2]), Some(&[2, 1])).unwrap());
        assert_eq!((&s.replicas, s.leader), (&ids(&[2, 1]), Some(BrokerId(1))));
        assert!(!s.is_reassigning());
        assert_eq!(
            decide(&image(&[1, 2]), Some(&[1, 2])).unwrap(),
            image(&[1, 2])
        );
    }

    #[test]
    fn a_cancellation_reverts_to_the_original_replicas() {
        let img = decide(&image(&[1, 2]), Some(&[3, 4])).unwrap();
        let img = isr_change(&img, &[1, 2, 3]);
        assert!(state(&img).is_reassigning());
        let s = state(&decide(&img, None).unwrap());
        assert_eq!((&s.replicas, &s.isr), (&ids(&[1, 2]), &ids(&[1, 2])));
        assert_eq!(s.leader, Some(BrokerId(1)));
        assert!(!s.is_reassigning());
        assert_eq!(
            decide(&image(&[1, 2]), None).unwrap_err(),
            ReassignRefusal::NoReassignmentInProgress
        );
    }

    #[test]
    fn a_new_target_replaces_the_one_under_way() {
        let img = decide(&image(&[1, 2]), Some(&[2, 3])).unwrap();
        let s = state(&decide(&img, Some(&[2, 4])).unwrap());
        assert_eq!(s.replicas, ids(&[2, 4, 3, 1]));
        assert_eq!(s.adding_replicas, ids(&[4]));
        assert_eq!(s.removing_replicas, ids(&[3, 1]));
    }

    #[test]
    fn invalid_targets_are_refused_as_kafka_refuses_them() {
        let img = image(&[1, 2]);
        let invalid = |r: &[i32]| match decide(&img, Some(r)) {
            Err(ReassignRefusal::InvalidReplicaAssignment(m)) => m,
            other => panic!("{r:?}: {other:?}"),
        };
        assert!(invalid(&[]).contains("empty replica list"));
        assert!(invalid(&[2, 2]).contains("more than once"));
        assert!(invalid(&[2, 7]).contains("no such broker is registered"));
        let unknown = reassign(
            &img,
            &ReassignTarget {
                topic: "t".into(),
                partition: 5,
                replicas: Some(ids(&[1])),
            },
            true,
            |_| true,
        );
        assert!(matches!(
            unknown,
            Err(ReassignRefusal::UnknownTopicOrPartition(_))
        ));
        let rf = reassign(&img, &target(Some(&[1, 2, 3])), false, |_| true);
        assert!(matches!(
            rf,
            Err(ReassignRefusal::InvalidReplicationFactor(_))
        ));
    }

    #[test]
    fn a_cancellation_that_needs_an_unclean_election_is_refused_unless_enabled() {
        let mut img = decide(&image(&[1]), Some(&[2])).unwrap();
        // Only the replica being added is in sync (it was elected uncleanly meanwhile).
        let s = state(&img);
        let record = change(
            img.topic_by_name("t").unwrap(),
            PartitionId(0),
            PartitionState {
                leader: Some(BrokerId(2)),
                leader_epoch: LeaderEpoch(s.leader_epoch.0 + 1),
                isr: ids(&[2]),
                ..s
            },
        );
        img = img
            .apply(MetadataOffset(img.offset().0 + 1), &record)
            .unwrap();
        assert!(matches!(
            decide(&img, None),
            Err(ReassignRefusal::InvalidReplicaAssignment(m)) if m.contains("unclean")
        ));
        let record = Record::ConfigChange {
            resource: ConfigResource::Topic,
            resource_name: "t".into(),
            key: crate::image::UNCLEAN_LEADER_ELECTION.into(),
            value: Some("true".into()),
        };
        img = img
            .apply(MetadataOffset(img.offset().0 + 1), &record)
            .unwrap();
        let s = state(&decide(&img, None).unwrap());
        assert_eq!(
            (s.replicas, s.isr, s.leader),
            (ids(&[1]), ids(&[1]), Some(BrokerId(1)))
        );
        assert_eq!(s.leader_epoch, LeaderEpoch(5));
    }

    #[test]
    fn the_image_keeps_a_reassignment_through_a_snapshot() {
        let img = decide(&image(&[1, 2]), Some(&[2, 3])).unwrap();
        let back = MetadataImage::decode_snapshot(&img.encode_snapshot()).unwrap();
        assert_eq!(state(&back), state(&img));
    }

    #[test]
    fn requests_decide_in_order_and_answer_each_partition() {
        let img = image(&[1, 2]);
        let targets = [
            target(Some(&[2, 3])),
            target(Some(&[9])),
            target(Some(&[3, 4])),
        ];
        let (records, outcomes) = reassign_all(&img, &targets, true, &BTreeSet::new());
        assert_eq!(records.len(), 2);
        assert!(outcomes[0].is_ok() && outcomes[1].is_err() && outcomes[2].is_ok());
        let mut end = img.clone();
        for r in &records {
            end = end.apply(MetadataOffset(end.offset().0 + 1), r).unwrap();
        }
        let s = state(&end);
        // Against the current replicas, as Kafka computes it: 3 is one already.
        assert_eq!(s.replicas, ids(&[3, 4, 2, 1]));
        assert_eq!(s.adding_replicas, ids(&[4]));
        assert_eq!(s.removing_replicas, ids(&[2, 1]));
    }
}
