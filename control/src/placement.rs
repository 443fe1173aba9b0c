//! Replica placement: pure functions from the live brokers to replica lists.
//!
//! Each partition's replicas go to distinct racks first (as many racks as exist), then to
//! distinct brokers; the first replica (the preferred leader) rotates through a
//! rack-alternating broker order, so leaders are balanced: with `p` partitions over `n`
//! brokers every broker leads `⌊p/n⌋` or `⌈p/n⌉` of them.

use std::collections::BTreeMap;

use crate::types::BrokerId;

/// A broker as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementBroker {
    pub id: BrokerId,
    pub rack: Option<String>,
}

/// Why replicas cannot be placed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("replication factor {rf} is more than the {brokers} available brokers")]
    NotEnoughBrokers { rf: usize, brokers: usize },
    #[error("replication factor must be at least 1")]
    ZeroReplicationFactor,
}

/// Brokers ordered so consecutive entries alternate racks: racks sorted by name (brokers
/// without a rack form their own group), brokers within a rack by id, then taken one per
/// rack in turn. Kafka's rack-aware assignment uses the same order.
pub fn rack_alternating(brokers: &[PlacementBroker]) -> Vec<BrokerId> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<BrokerId>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
        ids.dedup();
    }
    let rounds = by_rack.values().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::with_capacity(brokers.len());
    for round in 0..rounds {
        for ids in by_rack.values() {
            if let Some(id) = ids.get(round) {
                out.push(*id);
            }
        }
    }
    out
}

/// Replica lists for `partitions` partitions of replication factor `rf`. `start` offsets
/// the leader rotation (pass the number of partitions already led, per topic or cluster,
/// to keep leaders balanced across topics).
pub fn place_replicas(
    brokers: &[PlacementBroker],
    partitions: usize,
    rf: usize,
    start: usize,
) -> Result<Vec<Vec<BrokerId>>, PlacementError> {
    if rf == 0 {
        return Err(PlacementError::ZeroReplicationFactor);
    }
    let order = rack_alternating(brokers);
    let n = order.len();
    if rf > n {
        return Err(PlacementError::NotEnoughBrokers { rf, brokers: n });
    }
    let rack_of: BTreeMap<BrokerId, Option<&str>> =
        brokers.iter().map(|b| (b.id, b.rack.as_deref())).collect();
    let racks = rack_of
        .values()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let mut out = Vec::with_capacity(partitions);
    for p in 0..partitions {
        let first = (start + p) % n;
        // Followers start at a shift that changes every full rotation, so the followers of
        // one leader are not always the same brokers (Kafka's "replica shift").
        let shift = 1 + ((start + p) / n) % n.saturating_sub(1).max(1);
        let mut replicas = vec![order[first]];
        let mut used_racks = vec![rack_of.get(&order[first]).copied().flatten()];
        // Pass 1: brokers on racks not yet used; pass 2: any broker not yet used.
        for pass in 0..2 {
            for j in 0..n {
                if replicas.len() == rf {
                    break;
                }
                let id = order[(first + shift + j) % n];
                let rack = rack_of.get(&id).copied().flatten();
                let fresh_rack = !used_racks.contains(&rack) || used_racks.len() >= racks;
                if replicas.contains(&id) || (pass == 0 && !fresh_rack) {
                    continue;
                }
                replicas.push(id);
                used_racks.push(rack);
            }
        }
        out.push(replicas);
    }
    Ok(out)
}

/// The `CreateTopic` record for a new topic: replicas placed over the live (unfenced)
/// brokers, each partition led by its preferred replica with the full replica set in
/// sync. Leader rotation continues from the number of partitions the cluster already
/// has, so leaders stay balanced across topics.
pub fn create_topic_record(
    image: &crate::image::MetadataImage,
    name: &str,
    topic_id: crate::types::TopicId,
    partitions: usize,
    rf: usize,
) -> Result<crate::records::Record, PlacementError> {
    use crate::records::{PartitionAssignment, Record};
    use crate::types::{LeaderEpoch, PartitionId};
    let placed = place_in_image(image, partitions, rf)?;
    let partitions = placed
        .into_iter()
        .enumerate()
        .map(|(i, replicas)| PartitionAssignment {
            // Bound: partition counts are far below i32::MAX (the Kafka API limit).
            partition: PartitionId(i as i32),
            leader: replicas.first().copied(),
            leader_epoch: LeaderEpoch(0),
            isr: replicas.clone(),
            replicas,
        })
        .collect();
    Ok(Record::CreateTopic {
        name: name.to_owned(),
        topic_id,
        partitions,
    })
}

/// Replica sets for `partitions` new partitions of `rf` replicas over the image's unfenced
/// brokers, leaders rotating on from the partitions the cluster already has.
fn place_in_image(
    image: &crate::image::MetadataImage,
    partitions: usize,
    rf: usize,
) -> Result<Vec<Vec<BrokerId>>, PlacementError> {
    let live: Vec<PlacementBroker> = image
        .brokers()
        .filter(|b| !b.fenced)
        .map(|b| PlacementBroker {
            id: b.id,
            rack: b.rack.clone(),
        })
        .collect();
    let existing: usize = image.topics().map(|t| t.partitions.len()).sum();
    place_replicas(&live, partitions, rf, existing)
}

/// The records that raise `topic` to `count` partitions: each new partition placed like
/// a new topic's (racks first, leaders rotating on from the partitions that exist), with
/// the replication factor of the topic's first partition.
pub fn add_partitions_records(
    image: &crate::image::MetadataImage,
    topic: &crate::image::TopicImage,
    count: usize,
) -> Result<Vec<crate::records::Record>, PlacementError> {
    use crate::records::{PartitionChange, Record};
    use crate::types::{LeaderEpoch, PartitionId};
    let current = topic.partitions.len();
    let rf = topic
        .partitions
        .values()
        .next()
        .map_or(1, |p| p.replicas.len().max(1));
    let placed = place_in_image(image, count.saturating_sub(current), rf)?;
    Ok(placed
        .into_iter()
        .enumerate()
        .map(|(i, replicas)| {
            Record::PartitionChange(PartitionChange {
                topic_id: topic.id,
                partition: PartitionId((current + i) as i32),
                leader: replicas.first().copied(),
                leader_epoch: LeaderEpoch(0),
                isr: replicas.clone(),
                eligible_leaders: Vec::new(),
                replicas: Some(replicas),
                adding_replicas: None,
                removing_replicas: None,
            })
        })
        .collect())
}

/// Why a manual replica assignment is refused: Kafka's INVALID_REPLICA_ASSIGNMENT cases,
/// with its messages.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AssignmentError {
    #[error("The manual partition assignment includes an empty replica list.")]
    EmptyReplicas,
    #[error(
        "The manual partition assignment includes broker {0}, but no such broker is registered."
    )]
    UnknownBroker(BrokerId),
    #[error("The manual partition assignment includes the broker {0} more than once.")]
    DuplicateBroker(BrokerId),
    #[error("The manual partition assignment includes a partition with {got} replica(s), but this is not consistent with previous partitions, which have {want} replica(s).")]
    InconsistentReplicas { got: usize, want: usize },
    #[error("All brokers specified in the manual partition assignment for partition {0} are fenced or in controlled shutdown.")]
    NoLiveReplica(i32),
}

/// One partition of a checked manual assignment: its replicas as asked and its first
/// ISR, the replicas that are unfenced (in the asked order; the first leads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualPartition {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
}

/// Checks a manual assignment as Kafka's controller does (`validateManualPartitionAssignment`):
/// every list non-empty, of registered brokers, none twice, all of one length (`rf` when
/// the topic already has one), and at least one unfenced replica per partition.
/// `first_partition` numbers the partitions in messages.
pub fn check_manual_assignment(
    image: &crate::image::MetadataImage,
    first_partition: i32,
    assignment: &[Vec<BrokerId>],
    rf: Option<usize>,
) -> Result<Vec<ManualPartition>, AssignmentError> {
    let mut want = rf;
    let mut out = Vec::with_capacity(assignment.len());
    for (i, replicas) in assignment.iter().enumerate() {
        if replicas.is_empty() {
            return Err(AssignmentError::EmptyReplicas);
        }
        let mut sorted = replicas.clone();
        sorted.sort_unstable();
        for (j, b) in sorted.iter().enumerate() {
            if image.broker(*b).is_none() {
                return Err(AssignmentError::UnknownBroker(*b));
            }
            if j > 0 && sorted[j - 1] == *b {
                return Err(AssignmentError::DuplicateBroker(*b));
            }
        }
        if let Some(want) = want.filter(|w| *w != replicas.len()) {
            return Err(AssignmentError::InconsistentReplicas {
                got: replicas.len(),
                want,
            });
        }
        want = Some(replicas.len());
        let isr: Vec<BrokerId> = replicas
            .iter()
            .copied()
            .filter(|b| image.broker(*b).is_some_and(|info| !info.fenced))
            .collect();
        if isr.is_empty() {
            // Bound: the assignment's length is checked against the partition limit first.
            return Err(AssignmentError::NoLiveReplica(first_partition + i as i32));
        }
        out.push(ManualPartition {
            replicas: replicas.clone(),
            isr,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::MetadataImage;
    use crate::records::Record;
    use crate::types::{BrokerEpoch, MetadataOffset};

    /// Brokers 1..=3 registered; 1 and 2 unfenced, 3 fenced.
    fn image() -> MetadataImage {
        let mut image = MetadataImage::empty();
        let mut offset = 0;
        for b in 1..=3 {
            let (broker, epoch) = (BrokerId(b), BrokerEpoch(i64::from(b)));
            let mut records = vec![Record::RegisterBroker {
                broker,
                epoch,
                rack: None,
                listeners: Vec::new(),
            }];
            if b < 3 {
                records.push(Record::UnfenceBroker { broker, epoch });
            }
            for r in records {
                offset += 1;
                image = image.apply(MetadataOffset(offset), &r).unwrap();
            }
        }
        image
    }

    fn ids(v: &[i32]) -> Vec<BrokerId> {
        v.iter().map(|b| BrokerId(*b)).collect()
    }

    #[test]
    fn a_manual_assignment_keeps_its_order_and_starts_with_its_live_replicas_in_sync() {
        let got = check_manual_assignment(&image(), 0, &[ids(&[3, 2]), ids(&[1, 3])], None);
        assert_eq!(
            got.unwrap(),
            [
                ManualPartition {
                    replicas: ids(&[3, 2]),
                    isr: ids(&[2]),
                },
                ManualPartition {
                    replicas: ids(&[1, 3]),
                    isr: ids(&[1]),
                },
            ]
        );
    }

    #[test]
    fn a_manual_assignment_is_refused_as_kafka_refuses_it() {
        let image = image();
        let check = |a: &[&[i32]], rf| {
            let a: Vec<Vec<BrokerId>> = a.iter().map(|r| ids(r)).collect();
            check_manual_assignment(&image, 4, &a, rf).unwrap_err()
        };
        assert_eq!(check(&[&[]], None), AssignmentError::EmptyReplicas);
        assert_eq!(
            check(&[&[1, 7]], None),
            AssignmentError::UnknownBroker(BrokerId(7))
        );
        assert_eq!(
            check(&[&[2, 1, 2]], None),
            AssignmentError::DuplicateBroker(BrokerId(2))
        );
        assert_eq!(
            check(&[&[1, 2], &[1]], None),
            AssignmentError::InconsistentReplicas { got: 1, want: 2 }
        );
        assert_eq!(
            check(&[&[1]], Some(2)),
            AssignmentError::InconsistentReplicas { got: 1, want: 2 }
        );
        assert_eq!(
            check(&[&[1], &[3]], None),
            AssignmentError::NoLiveReplica(5)
        );
    }
}
