//! ISR changes a partition leader asks for (`rpc::Request::AlterPartition`): a pure
//! decision over the image, returning the record that carries it out or why it is refused.
//!
//! Invariants the decision keeps (the design note on replication, KIP-966):
//! - Only the partition's current leader, at the current leader epoch and with its current
//!   broker epoch, changes the ISR; the leader and its epoch stay (only leadership changes
//!   bump the epoch), unless the change completes a reassignment that removes the leader
//!   (`reassign::complete_if_ready`: it hands over to the first target replica in sync).
//! - The new ISR is a subset of the replicas, without duplicates, containing the leader;
//!   a member it adds is registered, unfenced and not shutting down.
//! - ELR (KIP-966): members added to the ISR leave the ELR; once the ISR has at least
//!   `min.insync.replicas` members the ELR is empty; members removed while the ISR is below
//!   min ISR join it (they hold everything committed: the high watermark does not advance
//!   without them while the ISR is below min ISR).

use std::collections::BTreeSet;

use crate::election::change;
use crate::image::{MetadataImage, PartitionState};
use crate::records::Record;
use crate::types::{BrokerEpoch, BrokerId, LeaderEpoch, PartitionId};

/// An ISR change as the leader asks for it.
#[derive(Debug, Clone, Copy)]
pub struct IsrChange<'a> {
    pub broker: BrokerId,
    pub broker_epoch: BrokerEpoch,
    pub topic: &'a str,
    pub partition: PartitionId,
    pub leader_epoch: LeaderEpoch,
    pub isr: &'a [BrokerId],
}

/// Why an ISR change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsrRefusal {
    #[error("broker {0} is not registered")]
    UnknownBroker(BrokerId),
    #[error("broker {broker} epoch {got} is not its registered epoch {registered}")]
    StaleBrokerEpoch {
        broker: BrokerId,
        got: i64,
        registered: i64,
    },
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("unknown partition {topic}-{partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("leader epoch {got} of {topic}-{partition} is older than the current {current}")]
    FencedLeaderEpoch {
        topic: String,
        partition: i32,
        got: i32,
        current: i32,
    },
    /// The asker knows a newer epoch than this controller's image (it lags the log): retry.
    #[error(
        "leader epoch {got} of {topic}-{partition} is newer than the controller's {current}; retry"
    )]
    ControllerBehind {
        topic: String,
        partition: i32,
        got: i32,
        current: i32,
    },
    #[error(
        "broker {broker} does not lead {topic}-{partition} at epoch {epoch} (leader {leader:?})"
    )]
    NotLeader {
        broker: BrokerId,
        topic: String,
        partition: i32,
        epoch: i32,
        leader: Option<i32>,
    },
    #[error("isr of {topic}-{partition}: {reason}")]
    InvalidIsr {
        topic: String,
        partition: i32,
        reason: String,
    },
    #[error("broker {member} cannot join the isr of {topic}-{partition}: {why}")]
    IneligibleReplica {
        member: BrokerId,
        topic: String,
        partition: i32,
        why: &'static str,
    },
}

/// Decides an ISR change: `Ok(None)` when the ISR is already the asked one, `Ok(Some)` with
/// the `PartitionChange` to propose, or why not. `shutting_down`: brokers in controlled
/// shutdown, which may not join an ISR.
pub fn alter_partition(
    image: &MetadataImage,
    req: &IsrChange<'_>,
    shutting_down: &BTreeSet<BrokerId>,
) -> Result<Option<Record>, IsrRefusal> {
    check_broker_epoch(image, req.broker, req.broker_epoch)?;
    let topic = image
        .topic_by_name(req.topic)
        .ok_or_else(|| IsrRefusal::UnknownTopic(req.topic.to_owned()))?;
    let p = topic
        .partitions
        .get(&req.partition)
        .ok_or_else(|| IsrRefusal::UnknownPartition {
            topic: req.topic.to_owned(),
            partition: req.partition.0,
        })?;
    check_leader(p, req)?;
    check_isr(image, p, req, shutting_down)?;
    if p.isr == req.isr {
        return Ok(None);
    }
    let min_isr = image.min_insync_replicas(req.topic);
    let next = PartitionState {
        elr: next_elr(p, req.isr, min_isr),
        isr: req.isr.to_vec(),
        ..p.clone()
    };
    // The ISR change that brings the last added replica in sync completes a reassignment.
    let live = |b: BrokerId| image.is_live(b) && !shutting_down.contains(&b);
    let next = crate::reassign::complete_if_ready(next, live);
    assert_isr_rules(&next);
    Ok(Some(change(topic, req.partition, next)))
}

/// The ISR rules a decided state keeps (the other side of `check_leader` and `check_isr`,
/// which refuse a request that would break them): the ISR is not empty, is a subset of the
/// replicas without duplicates, and holds the leader.
pub(crate) fn assert_isr_rules(p: &PartitionState) {
    assert!(!p.isr.is_empty(), "an empty ISR was decided: {p:?}");
    for (i, m) in p.isr.iter().enumerate() {
        assert!(
            p.replicas.contains(m) && !p.isr[..i].contains(m),
            "ISR {:?} is not a set of replicas {:?}",
            p.isr,
            p.replicas
        );
    }
    if let Some(leader) = p.leader {
        assert!(
            p.isr.contains(&leader),
            "leader {leader} is not in the decided ISR {:?}",
            p.isr
        );
    }
}

/// The broker must be registered with exactly `epoch`.
pub fn check_broker_epoch(
    image: &MetadataImage,
    broker: BrokerId,
    epoch: BrokerEpoch,
) -> Result<(), IsrRefusal> {
    match image.broker_at_epoch(broker, epoch) {
        Ok(_) => Ok(()),
        Err(None) => Err(IsrRefusal::UnknownBroker(broker)),
        Err(Some(registered)) => Err(IsrRefusal::StaleBrokerEpoch {
            broker,
            got: epoch.0,
            registered: registered.0,
        }),
    }
}

fn check_leader(p: &PartitionState, req: &IsrChange<'_>) -> Result<(), IsrRefusal> {
    let (got, current) = (req.leader_epoch.0, p.leader_epoch.0);
    let (topic, partition) = (req.topic.to_owned(), req.partition.0);
    if got < current {
        return Err(IsrRefusal::FencedLeaderEpoch {
            topic,
            partition,
            got,
            current,
        });
    }
    if got > current {
        return Err(IsrRefusal::ControllerBehind {
            topic,
            partition,
            got,
            current,
        });
    }
    if p.leader != Some(req.broker) {
        return Err(IsrRefusal::NotLeader {
            broker: req.broker,
            topic,
            partition,
            epoch: got,
            leader: p.leader.map(|l| l.0),
        });
    }
    Ok(())
}

fn check_isr(
    image: &MetadataImage,
    p: &PartitionState,
    req: &IsrChange<'_>,
    shutting_down: &BTreeSet<BrokerId>,
) -> Result<(), IsrRefusal> {
    let invalid = |reason: String| IsrRefusal::InvalidIsr {
        topic: req.topic.to_owned(),
        partition: req.partition.0,
        reason,
    };
    for (i, m) in req.isr.iter().enumerate() {
        if !p.replicas.contains(m) {
            return Err(invalid(format!("{m} is not a replica")));
        }
        if req.isr[..i].contains(m) {
            return Err(invalid(format!("{m} listed twice")));
        }
    }
    if !req.isr.contains(&req.broker) {
        return Err(invalid(format!("the leader {} is missing", req.broker)));
    }
    for m in req.isr.iter().filter(|m| !p.isr.contains(m)) {
        let why = match image.broker(*m) {
            None => Some("not registered"),
            Some(b) if b.fenced => Some("fenced"),
            Some(_) if shutting_down.contains(m) => Some("shutting down"),
            Some(_) => None,
        };
        if let Some(why) = why {
            return Err(IsrRefusal::IneligibleReplica {
                member: *m,
                topic: req.topic.to_owned(),
                partition: req.partition.0,
                why,
            });
        }
    }
    Ok(())
}

/// KIP-966: the ELR after the ISR becomes `isr` (see the module docs).
fn next_elr(p: &PartitionState, isr: &[BrokerId], min_isr: usize) -> Vec<BrokerId> {
    if isr.len() >= min_isr {
        return Vec::new();
    }
    let removed = p.isr.iter().filter(|m| !isr.contains(m));
    let mut elr: Vec<BrokerId> = p.elr.iter().filter(|m| !isr.contains(m)).copied().collect();
    for m in removed {
        if !elr.contains(m) {
            elr.push(*m);
        }
    }
    elr
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{ConfigResource, PartitionAssignment};
    use crate::types::{MetadataOffset, TopicId};

    const T: TopicId = TopicId(7);

    /// Brokers 1..=4 registered (epoch 10 + id) and unfenced; topic "t" with one partition
    /// on replicas [1, 2, 3], leader 1 at epoch 5, ISR [1, 2, 3], min ISR `min_isr`.
    fn image(min_isr: usize) -> MetadataImage {
        let mut records = Vec::new();
        for b in 1..=4 {
            let (broker, epoch) = (BrokerId(b), BrokerEpoch(10 + i64::from(b)));
            records.push(Record::RegisterBroker {
                broker,
                epoch,
                rack: None,
                listeners: Vec::new(),
            });
            records.push(Record::UnfenceBroker { broker, epoch });
        }
        records.push(Record::CreateTopic {
            name: "t".into(),
            topic_id: T,
            partitions: vec![PartitionAssignment {
                partition: PartitionId(0),
                replicas: vec![BrokerId(1), BrokerId(2), BrokerId(3)],
                leader: Some(BrokerId(1)),
                leader_epoch: LeaderEpoch(5),
                isr: vec![BrokerId(1), BrokerId(2), BrokerId(3)],
            }],
        });
        records.push(Record::ConfigChange {
            resource: ConfigResource::Topic,
            resource_name: "t".into(),
            key: crate::image::MIN_INSYNC_REPLICAS.into(),
            value: Some(min_isr.to_string()),
        });
        apply_all(&MetadataImage::empty(), &records)
    }

    fn apply_all(image: &MetadataImage, records: &[Record]) -> MetadataImage {
        let mut image = image.clone();
        for r in records {
            let next = MetadataOffset(image.offset().0 + 1);
            image = image.apply(next, r).expect("record applies");
        }
        image
    }

    fn ids(v: &[i32]) -> Vec<BrokerId> {
        v.iter().copied().map(BrokerId).collect()
    }

    fn ask(
        image: &MetadataImage,
        broker: i32,
        epoch: i32,
        isr: &[i32],
    ) -> Result<MetadataImage, IsrRefusal> {
        let isr = ids(isr);
        let req = IsrChange {
            broker: BrokerId(broker),
            broker_epoch: BrokerEpoch(10 + i64::from(broker)),
            topic: "t",
            partition: PartitionId(0),
            leader_epoch: LeaderEpoch(epoch),
            isr: &isr,
        };
        let record = alter_partition(image, &req, &BTreeSet::new())?;
        Ok(match record {
            Some(r) => apply_all(image, &[r]),
            None => image.clone(),
        })
    }

    fn state(image: &MetadataImage) -> PartitionState {
        image.topic(T).unwrap().partitions[&PartitionId(0)].clone()
    }

    #[test]
    #[should_panic(expected = "is not in the decided ISR")]
    fn a_decided_isr_without_its_leader_panics() {
        assert_isr_rules(&PartitionState {
            replicas: ids(&[1, 2, 3]),
            leader: Some(BrokerId(1)),
            leader_epoch: LeaderEpoch(1),
            isr: ids(&[2, 3]),
            elr: Vec::new(),
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        });
    }

    #[test]
    #[should_panic(expected = "is not a set of replicas")]
    fn a_decided_isr_outside_the_replicas_panics() {
        assert_isr_rules(&PartitionState {
            replicas: ids(&[1, 2]),
            leader: Some(BrokerId(1)),
            leader_epoch: LeaderEpoch(1),
            isr: ids(&[1, 4]),
            elr: Vec::new(),
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        });
    }

    #[test]
    fn the_leader_shrinks_and_expands_its_isr_keeping_leader_and_epoch() {
        let img = image(1);
        let shrunk = ask(&img, 1, 5, &[1, 2]).unwrap();
        let s = state(&shrunk);
        assert_eq!(
            (s.leader, s.leader_epoch),
            (Some(BrokerId(1)), LeaderEpoch(5))
        );
        assert_eq!(s.isr, ids(&[1, 2]));
        assert!(s.elr.is_empty(), "ISR 2 >= min ISR 1: no ELR");
        let back = ask(&shrunk, 1, 5, &[1, 2, 3]).unwrap();
        assert_eq!(state(&back).isr, ids(&[1, 2, 3]));
        // The same ISR again changes nothing and proposes nothing.
        let isr = ids(&[1, 2, 3]);
        let req = IsrChange {
            broker: BrokerId(1),
            broker_epoch: BrokerEpoch(11),
            topic: "t",
            partition: PartitionId(0),
            leader_epoch: LeaderEpoch(5),
            isr: &isr,
        };
        assert_eq!(alter_partition(&back, &req, &BTreeSet::new()), Ok(None));
    }

    #[test]
    fn members_removed_below_min_isr_join_the_elr_and_leave_it_when_added_back() {
        let img = image(3);
        // ISR 3 -> 2 (< min ISR 3): broker 3 goes to the ELR.
        let a = ask(&img, 1, 5, &[1, 2]).unwrap();
        assert_eq!(state(&a).elr, ids(&[3]));
        // ISR 2 -> 1: broker 2 joins, 3 stays.
        let b = ask(&a, 1, 5, &[1]).unwrap();
        assert_eq!(state(&b).isr, ids(&[1]));
        assert_eq!(state(&b).elr, ids(&[3, 2]));
        // 2 comes back: it leaves the ELR; still below min ISR, so 3 stays there.
        let c = ask(&b, 1, 5, &[1, 2]).unwrap();
        assert_eq!(state(&c).elr, ids(&[3]));
        // The ISR reaches min ISR: the ELR is cleared.
        let d = ask(&c, 1, 5, &[1, 2, 3]).unwrap();
        assert!(state(&d).elr.is_empty());
    }

    #[test]
    fn an_isr_reaching_min_isr_clears_the_elr_even_when_someone_left() {
        let img = image(2);
        let a = ask(&img, 1, 5, &[1]).unwrap();
        assert_eq!(state(&a).elr, ids(&[2, 3]));
        // Swap: 2 back, and the ISR is at min ISR 2: no ELR at all.
        let b = ask(&a, 1, 5, &[1, 2]).unwrap();
        assert!(state(&b).elr.is_empty());
    }

    #[test]
    fn only_the_current_leader_at_its_epochs_may_ask() {
        let img = image(1);
        assert!(matches!(
            ask(&img, 2, 5, &[1, 2]),
            Err(IsrRefusal::NotLeader { .. })
        ));
        assert!(matches!(
            ask(&img, 1, 4, &[1, 2]),
            Err(IsrRefusal::FencedLeaderEpoch {
                got: 4,
                current: 5,
                ..
            })
        ));
        assert!(matches!(
            ask(&img, 1, 6, &[1, 2]),
            Err(IsrRefusal::ControllerBehind {
                got: 6,
                current: 5,
                ..
            })
        ));
        let isr = ids(&[1, 2]);
        let stale = IsrChange {
            broker: BrokerId(1),
            broker_epoch: BrokerEpoch(3),
            topic: "t",
            partition: PartitionId(0),
            leader_epoch: LeaderEpoch(5),
            isr: &isr,
        };
        assert!(matches!(
            alter_partition(&img, &stale, &BTreeSet::new()),
            Err(IsrRefusal::StaleBrokerEpoch {
                got: 3,
                registered: 11,
                ..
            })
        ));
        let unknown = IsrChange {
            broker: BrokerId(9),
            ..stale
        };
        assert_eq!(
            alter_partition(&img, &unknown, &BTreeSet::new()),
            Err(IsrRefusal::UnknownBroker(BrokerId(9)))
        );
        let no_topic = IsrChange {
            topic: "nope",
            broker_epoch: BrokerEpoch(11),
            ..stale
        };
        assert!(matches!(
            alter_partition(&img, &no_topic, &BTreeSet::new()),
            Err(IsrRefusal::UnknownTopic(_))
        ));
        let no_partition = IsrChange {
            partition: PartitionId(3),
            broker_epoch: BrokerEpoch(11),
            ..stale
        };
        assert!(matches!(
            alter_partition(&img, &no_partition, &BTreeSet::new()),
            Err(IsrRefusal::UnknownPartition { partition: 3, .. })
        ));
    }

    #[test]
    fn malformed_isrs_are_refused_naming_the_member() {
        let img = image(1);
        for (isr, needle) in [
            (&[1, 4][..], "4 is not a replica"),
            (&[1, 2, 2][..], "2 listed twice"),
            (&[2, 3][..], "leader 1 is missing"),
            (&[][..], "leader 1 is missing"),
        ] {
            match ask(&img, 1, 5, isr) {
                Err(e @ IsrRefusal::InvalidIsr { .. }) => {
                    assert!(e.to_string().contains(needle), "{isr:?}: {e}")
                }
                other => panic!("{isr:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn added_members_must_be_registered_unfenced_and_not_shutting_down() {
        let img = ask(&image(1), 1, 5, &[1]).unwrap();
        let fenced = apply_all(
            &img,
            &[Record::FenceBroker {
                broker: BrokerId(2),
                epoch: BrokerEpoch(12),
            }],
        );
        assert!(matches!(
            ask(&fenced, 1, 5, &[1, 2]),
            Err(IsrRefusal::IneligibleReplica {
                member: BrokerId(2),
                why: "fenced",
                ..
            })
        ));
        let isr = ids(&[1, 3]);
        let req = IsrChange {
            broker: BrokerId(1),
            broker_epoch: BrokerEpoch(11),
            topic: "t",
            partition: PartitionId(0),
            leader_epoch: LeaderEpoch(5),
            isr: &isr,
        };
        let shutting: BTreeSet<BrokerId> = [BrokerId(3)].into();
        assert!(matches!(
            alter_partition(&img, &req, &shutting),
            Err(IsrRefusal::IneligibleReplica {
                member: BrokerId(3),
                why: "shutting down",
                ..
            })
        ));
    }
}
