//! Leader election and broker liveness: pure decisions over a `MetadataImage`, returned as
//! the records that carry them out. The active controller proposes these records; every
//! node applies them the same way.
//!
//! Election order (KIP-966): a live ISR member (the preferred replica first, then replica
//! order), then a live eligible leader replica, then — only when the topic enables
//! `unclean.leader.election.enable` — any live replica. Otherwise the partition has no
//! leader.

use std::collections::{BTreeMap, BTreeSet};

use crate::image::{MetadataImage, PartitionState, TopicImage};
use crate::records::{PartitionChange, Record};
use crate::types::{BrokerId, LeaderEpoch, Millis};

/// How a leader was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionKind {
    Isr,
    EligibleLeader,
    Unclean,
}

/// Picks a leader for a partition among the brokers `live` accepts.
pub fn elect_leader(
    p: &PartitionState,
    unclean_allowed: bool,
    live: impl Fn(BrokerId) -> bool,
) -> Option<(BrokerId, ElectionKind)> {
    let in_order = |set: &[BrokerId]| {
        p.replicas
            .iter()
            .copied()
            .find(|r| set.contains(r) && live(*r))
    };
    if let Some(l) = in_order(&p.isr) {
        return Some((l, ElectionKind::Isr));
    }
    if let Some(l) = in_order(&p.elr) {
        return Some((l, ElectionKind::EligibleLeader));
    }
    if unclean_allowed {
        if let Some(l) = in_order(&p.replicas) {
            return Some((l, ElectionKind::Unclean));
        }
    }
    None
}

/// The partition state after `gone` leaves the ISR (fenced or shut down): it leaves the
/// ISR unless it is the last member (as in Kafka, the ISR never becomes empty, so the last
/// in-sync replica stays known), goes to the ELR when the ISR drops below
/// `min_isr`, and leadership moves per `elect_leader` among the brokers `live` accepts.
/// `None` when nothing changes.
fn without_broker(
    t: &TopicImage,
    p: &PartitionState,
    gone: BrokerId,
    image: &MetadataImage,
    election: Election<'_>,
) -> Option<PartitionState> {
    let in_isr = p.isr.contains(&gone);
    if !in_isr && p.leader != Some(gone) {
        return None;
    }
    let mut next = p.clone();
    if in_isr && p.isr.len() > 1 {
        next.isr.retain(|r| *r != gone);
        if next.isr.len() < image.min_insync_replicas(&t.name) {
            next.elr.push(gone);
        }
    }
    if p.leader == Some(gone) {
        let live = |b: BrokerId| b != gone && image.is_live(b) && !election.excluded.contains(&b);
        let unclean = election.unclean_allowed && image.unclean_election_enabled(&t.name);
        let elected = elect_leader(&next, unclean, live);
        set_leader(&mut next, elected);
    }
    (next != *p).then_some(next)
}

/// How `without_broker` may pick a new leader.
#[derive(Clone, Copy)]
struct Election<'a> {
    /// Brokers that may not lead even if live (shutting down).
    excluded: &'a BTreeSet<BrokerId>,
    /// Whether the topic's `unclean.leader.election.enable` is honoured at all.
    unclean_allowed: bool,
}

pub(crate) fn set_leader(s: &mut PartitionState, elected: Option<(BrokerId, ElectionKind)>) {
    let new_leader = elected.map(|(b, _)| b);
    if new_leader != s.leader {
        s.leader_epoch = LeaderEpoch(s.leader_epoch.0 + 1);
    }
    s.leader = new_leader;
    // A leader out of the ELR or an unclean one restarts the ISR with itself (KIP-966).
    if let Some((b, ElectionKind::EligibleLeader | ElectionKind::Unclean)) = elected {
        s.isr = vec![b];
        s.elr.retain(|r| *r != b);
    }
}

pub(crate) fn change(t: &TopicImage, idx: crate::types::PartitionId, s: PartitionState) -> Record {
    Record::PartitionChange(PartitionChange {
        topic_id: t.id,
        partition: idx,
        leader: s.leader,
        leader_epoch: s.leader_epoch,
        isr: s.isr,
        eligible_leaders: s.elr,
        // The whole state: a reassignment changes the replicas too.
        replicas: Some(s.replicas),
        adding_replicas: Some(s.adding_replicas),
        removing_replicas: Some(s.removing_replicas),
    })
}

/// Records that fence `broker`: `FenceBroker` (unless it is fenced already), then a
/// `PartitionChange` for every partition it still leads or is in sync for. Empty if it is
/// unknown, or fenced and involved in nothing.
pub fn fence_broker(image: &MetadataImage, broker: BrokerId) -> Vec<Record> {
    let Some(info) = image.broker(broker) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if !info.fenced {
        out.push(Record::FenceBroker {
            broker,
            epoch: info.epoch,
        });
    }
    let election = Election {
        excluded: &BTreeSet::new(),
        unclean_allowed: true,
    };
    for t in image.topics() {
        for (idx, p) in &t.partitions {
            if let Some(next) = without_broker(t, p, broker, image, election) {
                out.push(change(t, *idx, next));
            }
        }
    }
    out
}

/// Controlled shutdown of `broker` (KIP-966 / Kafka's controlled shutdown): every
/// partition it leads gets a new leader from the ISR (then ELR) among live brokers not
/// `shutting_down`, and it leaves every ISR (joining the ELR where the ISR drops below
/// min ISR). A partition with no other eligible leader keeps `broker` as leader (moving
/// it would take the partition offline while its only in-sync copy is still serving; a
/// single node therefore moves nothing); unclean elections never happen here. Once it
/// leads nothing, a `FenceBroker` closes the list, so no image shows a fenced leader.
/// Empty when nothing changes.
pub fn controlled_shutdown_records(
    image: &MetadataImage,
    broker: BrokerId,
    shutting_down: &BTreeSet<BrokerId>,
) -> Vec<Record> {
    let Some(info) = image.broker(broker) else {
        return Vec::new();
    };
    let election = Election {
        excluded: shutting_down,
        unclean_allowed: false,
    };
    let mut out = Vec::new();
    let mut still_leads = false;
    for t in image.topics() {
        for (idx, p) in &t.partitions {
            match without_broker(t, p, broker, image, election) {
                Some(next) if p.leader == Some(broker) && next.leader.is_none() => {
                    still_leads = true
                }
                Some(next) => out.push(change(t, *idx, next)),
                None => still_leads |= p.leader == Some(broker),
            }
        }
    }
    if !still_leads && !info.fenced {
        out.push(Record::FenceBroker {
            broker,
            epoch: info.epoch,
        });
    }
    out
}

/// Records that unfence `broker` and give a leader to every leaderless partition it can
/// now lead (it is in that partition's ISR or ELR).
pub fn unfence_broker(image: &MetadataImage, broker: BrokerId) -> Vec<Record> {
    let Some(info) = image.broker(broker).filter(|b| b.fenced) else {
        return Vec::new();
    };
    let mut out = vec![Record::UnfenceBroker {
        broker,
        epoch: info.epoch,
    }];
    for t in image.topics() {
        for (idx, p) in &t.partitions {
            if p.leader.is_some() || !p.replicas.contains(&broker) {
                continue;
            }
            let live = |b: BrokerId| b == broker || image.is_live(b);
            let elected = elect_leader(p, image.unclean_election_enabled(&t.name), live);
            if elected.is_some() {
                let mut next = p.clone();
                set_leader(&mut next, elected);
                out.push(change(t, *idx, next));
            }
        }
    }
    out
}

/// Broker heartbeats as the active controller sees them, on an explicit clock. Not part
/// of the metadata log: a new active controller starts every broker's session afresh.
#[derive(Debug, Clone)]
pub struct BrokerLiveness {
    session_timeout_ms: u64,
    last_heartbeat: BTreeMap<BrokerId, Millis>,
}

impl BrokerLiveness {
    /// `session_timeout_ms` is `broker.session.timeout.ms` (Kafka's default: 9000).
    pub fn new(session_timeout_ms: u64) -> Self {
        Self {
            session_timeout_ms,
            last_heartbeat: BTreeMap::new(),
        }
    }

    pub fn heartbeat(&mut self, broker: BrokerId, now: Millis) {
        self.last_heartbeat.insert(broker, now);
    }

    /// Whether `broker` heartbeat within the session timeout before `now`.
    pub fn alive(&self, broker: BrokerId, now: Millis) -> bool {
        self.last_heartbeat
            .get(&broker)
            .is_some_and(|t| now.0.saturating_sub(t.0) < self.session_timeout_ms)
    }

    /// Forgets a broker (e.g. once fenced, until its next heartbeat).
    pub fn forget(&mut self, broker: BrokerId) {
        self.last_heartbeat.remove(&broker);
    }

    /// Registered, unfenced brokers whose session expired at `now` (no heartbeat for
    /// `session_timeout_ms`; one never heard from counts from `since`, the moment this
    /// controller became active).
    pub fn expired(&self, image: &MetadataImage, now: Millis, since: Millis) -> Vec<BrokerId> {
        image
            .brokers()
            .filter(|b| !b.fenced)
            .filter(|b| {
                // A heartbeat from before this node became active (an earlier stint as
                // leader) counts as `since`: every session starts afresh on takeover.
                let last = self
                    .last_heartbeat
                    .get(&b.id)
                    .copied()
                    .unwrap_or(since)
                    .max(since);
                now.0.saturating_sub(last.0) >= self.session_timeout_ms
            })
            .map(|b| b.id)
            .collect()
    }
}

/// The elections Kafka's ElectLeaders asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// Move leadership to the preferred replica (the first), if it is live and in sync.
    Preferred,
    /// Give a leaderless partition a leader: from the ISR, then the ELR, then — only
    /// because it was asked, whatever the topic's `unclean.leader.election.enable` —
    /// any live replica.
    Unclean,
}

/// How one partition of an ElectLeaders request ends (Kafka's per-partition errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionOutcome {
    Elected,
    /// PREFERRED and the preferred replica leads, or UNCLEAN and a leader exists.
    NotNeeded,
    /// PREFERRED, and the preferred replica is not live, not in sync, or shutting down.
    PreferredNotAvailable,
    /// UNCLEAN, and no replica is live.
    EligibleLeadersNotAvailable,
    UnknownPartition,
}

/// One partition's election as an ElectLeaders request asks it (Kafka's
/// `ReplicationControlManager.electLeader`): the outcome, and when a leader was chosen
/// the record that makes it so and how it was chosen. Brokers in `excluded` (shutting
/// down) do not lead. The new leader is picked and the ISR and ELR follow it by the rules
/// automatic election uses ([`elect_leader`], `set_leader`).
pub fn requested_election(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    election: ElectionType,
    excluded: &BTreeSet<BrokerId>,
) -> (ElectionOutcome, Option<(Record, ElectionKind)>) {
    let Some(t) = image.topic_by_name(topic) else {
        return (ElectionOutcome::UnknownPartition, None);
    };
    let idx = crate::types::PartitionId(partition);
    let Some(p) = t.partitions.get(&idx) else {
        return (ElectionOutcome::UnknownPartition, None);
    };
    let live = |b: BrokerId| image.is_live(b) && !excluded.contains(&b);
    let elected = match election {
        ElectionType::Preferred => {
            let preferred = p.replicas.first().copied();
            if p.leader.is_some() && p.leader == preferred {
                return (ElectionOutcome::NotNeeded, None);
            }
            match preferred.filter(|b| p.isr.contains(b) && live(*b)) {
                Some(b) => (b, ElectionKind::Isr),
                None => return (ElectionOutcome::PreferredNotAvailable, None),
            }
        }
        ElectionType::Unclean => {
            if p.leader.is_some() {
                return (ElectionOutcome::NotNeeded, None);
            }
            match elect_leader(p, true, live) {
                Some(e) => e,
                None => return (ElectionOutcome::EligibleLeadersNotAvailable, None),
            }
        }
    };
    let mut next = p.clone();
    set_leader(&mut next, Some(elected));
    (
        ElectionOutcome::Elected,
        Some((change(t, idx, next), elected.1)),
    )
}

/// Preferred-leader election: a `PartitionChange` for every partition whose preferred
/// replica (the first) is live and in sync but does not lead. Run automatically when a
/// broker is unfenced, and on request (`sluice cluster elect-leaders`).
pub fn preferred_leader_records(image: &MetadataImage) -> Vec<Record> {
    preferred_leader_records_except(image, &BTreeSet::new())
}

/// `preferred_leader_records`, leaving out partitions whose preferred replica is in
/// `excluded` (brokers shutting down).
pub fn preferred_leader_records_except(
    image: &MetadataImage,
    excluded: &BTreeSet<BrokerId>,
) -> Vec<Record> {
    let mut out = Vec::new();
    for t in image.topics() {
        for (idx, p) in &t.partitions {
            let Some(&preferred) = p.replicas.first() else {
                continue;
            };
            if p.leader == Some(preferred)
                || !p.isr.contains(&preferred)
                || !image.is_live(preferred)
                || excluded.contains(&preferred)
            {
                continue;
            }
            let mut next = p.clone();
            set_leader(&mut next, Some((preferred, ElectionKind::Isr)));
            out.push(change(t, *idx, next));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::PartitionAssignment;
    use crate::types::{BrokerEpoch, MetadataOffset, PartitionId, TopicId};

    /// Brokers 1..=3, all live but those in `fenced`; topic "t" with one partition as
    /// given.
    fn image_with(
        replicas: &[i32],
        leader: Option<i32>,
        isr: &[i32],
        fenced: &[i32],
    ) -> MetadataImage {
        let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
        let mut records = Vec::new();
        for b in 1..=3 {
            let (broker, epoch) = (BrokerId(b), BrokerEpoch(1));
            records.push(Record::RegisterBroker {
                broker,
                epoch,
                rack: None,
                listeners: Vec::new(),
            });
            if !fenced.contains(&b) {
                records.push(Record::UnfenceBroker { broker, epoch });
            }
        }
        records.push(Record::CreateTopic {
            name: "t".into(),
            topic_id: TopicId(9),
            partitions: vec![PartitionAssignment {
                partition: PartitionId(0),
                replicas: ids(replicas),
                leader: leader.map(BrokerId),
                leader_epoch: LeaderEpoch(3),
                isr: ids(isr),
            }],
        });
        let mut image = MetadataImage::empty();
        for (i, r) in records.iter().enumerate() {
            image = image.apply(MetadataOffset(i as u64 + 1), r).unwrap();
        }
        image
    }

    fn ask(
        image: &MetadataImage,
        partition: i32,
        election: ElectionType,
    ) -> (
        ElectionOutcome,
        Option<(BrokerId, Vec<BrokerId>, ElectionKind)>,
    ) {
        let (outcome, change) =
            requested_election(image, "t", partition, election, &BTreeSet::new());
        let change = change.map(|(r, kind)| match r {
            Record::PartitionChange(c) => {
                assert_eq!(c.leader_epoch, LeaderEpoch(4), "a new leader, a new epoch");
                (c.leader.unwrap(), c.isr, kind)
            }
            other => panic!("{other:?}"),
        });
        (outcome, change)
    }

    #[test]
    fn a_preferred_election_needs_the_preferred_replica_live_and_in_sync() {
        let image = image_with(&[1, 2], Some(2), &[1, 2], &[]);
        let (outcome, change) = ask(&image, 0, ElectionType::Preferred);
        assert_eq!(outcome, ElectionOutcome::Elected);
        assert_eq!(
            change,
            Some((
                BrokerId(1),
                vec![BrokerId(1), BrokerId(2)],
                ElectionKind::Isr
            ))
        );
        let led = image_with(&[1, 2], Some(1), &[1, 2], &[]);
        assert_eq!(
            ask(&led, 0, ElectionType::Preferred).0,
            ElectionOutcome::NotNeeded
        );
        let out_of_sync = image_with(&[1, 2], Some(2), &[2], &[]);
        assert_eq!(
            ask(&out_of_sync, 0, ElectionType::Preferred).0,
            ElectionOutcome::PreferredNotAvailable
        );
        let fenced = image_with(&[1, 2], Some(2), &[1, 2], &[1]);
        assert_eq!(
            ask(&fenced, 0, ElectionType::Preferred).0,
            ElectionOutcome::PreferredNotAvailable
        );
        assert_eq!(
            ask(&image, 1, ElectionType::Preferred).0,
            ElectionOutcome::UnknownPartition
        );
    }

    #[test]
    fn an_unclean_election_prefers_the_isr_and_only_then_takes_any_live_replica() {
        let led = image_with(&[1, 2], Some(1), &[1, 2], &[]);
        assert_eq!(
            ask(&led, 0, ElectionType::Unclean).0,
            ElectionOutcome::NotNeeded
        );
        // Leaderless with a live in-sync replica: a clean choice.
        let clean = image_with(&[1, 2], None, &[2], &[1]);
        assert_eq!(
            ask(&clean, 0, ElectionType::Unclean).1,
            Some((BrokerId(2), vec![BrokerId(2)], ElectionKind::Isr))
        );
        // Only a replica outside the ISR is live: unclean, and it restarts the ISR.
        let unclean = image_with(&[1, 2, 3], None, &[1], &[1, 3]);
        assert_eq!(
            ask(&unclean, 0, ElectionType::Unclean).1,
            Some((BrokerId(2), vec![BrokerId(2)], ElectionKind::Unclean))
        );
        let nobody = image_with(&[1], None, &[1], &[1]);
        assert_eq!(
            ask(&nobody, 0, ElectionType::Unclean).0,
            ElectionOutcome::EligibleLeadersNotAvailable
        );
    }

    #[test]
    fn a_heartbeat_from_an_earlier_leadership_does_not_expire_a_session_on_takeover() {
        let b = BrokerId(2);
        let epoch = BrokerEpoch(5);
        let image = MetadataImage::empty()
            .apply(
                MetadataOffset(1),
                &Record::RegisterBroker {
                    broker: b,
                    epoch,
                    rack: None,
                    listeners: Vec::new(),
                },
            )
            .and_then(|i| {
                i.apply(
                    MetadataOffset(2),
                    &Record::UnfenceBroker { broker: b, epoch },
                )
            })
            .unwrap();
        let mut live = BrokerLiveness::new(1_000);
        // Heard while this node led before; then it lost and regained leadership.
        live.heartbeat(b, Millis(100));
        let since = Millis(50_000);
        assert!(live.expired(&image, Millis(50_500), since).is_empty());
        assert_eq!(live.expired(&image, Millis(51_000), since), vec![b]);
    }
}
