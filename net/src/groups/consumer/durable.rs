//! What a consumer group writes to `__consumer_offsets` and how it comes back: the
//! parts changed since the last write (`Changes`, two sets: one drained by the heartbeat
//! that made the change, one by the sweep), the records built from them, the deletion
//! tombstones, and `restore` from what the loader read (`StoredGroup`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::super::assignor::Assignment;
use super::super::consumer_records::{self, ConsumerRecord, CurrentValue, MemberMeta};
use super::super::subscription;
use super::{ConsumerGroup, Member, MemberState};

/// The records a group owes the offsets topic: which of its parts changed.
#[derive(Debug, Default, Clone)]
pub(super) struct Changes {
    metadata: bool,
    partition_metadata: bool,
    target_metadata: bool,
    members: BTreeSet<String>,
    targets: BTreeSet<String>,
    current: BTreeSet<String>,
    /// Members removed: their three records are tombstoned.
    removed: BTreeSet<String>,
}

impl Changes {
    pub(super) fn is_empty(&self) -> bool {
        !self.metadata
            && !self.partition_metadata
            && !self.target_metadata
            && self.members.is_empty()
            && self.targets.is_empty()
            && self.current.is_empty()
            && self.removed.is_empty()
    }
}

/// Which part of a group changed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Part<'a> {
    Metadata,
    PartitionMetadata,
    TargetMetadata,
    Member(&'a str),
    Target(&'a str),
    Current(&'a str),
    Removed(&'a str),
}

impl ConsumerGroup {
    pub(super) fn touch(&mut self, part: Part<'_>) {
        for c in [&mut self.pending, &mut self.unswept] {
            match part {
                Part::Metadata => c.metadata = true,
                Part::PartitionMetadata => c.partition_metadata = true,
                Part::TargetMetadata => c.target_metadata = true,
                Part::Member(id) => {
                    c.removed.remove(id);
                    c.members.insert(id.to_string());
                }
                Part::Target(id) => {
                    c.removed.remove(id);
                    c.targets.insert(id.to_string());
                }
                Part::Current(id) => {
                    c.removed.remove(id);
                    c.current.insert(id.to_string());
                }
                Part::Removed(id) => {
                    c.members.remove(id);
                    c.targets.remove(id);
                    c.current.remove(id);
                    c.removed.insert(id.to_string());
                }
            }
        }
    }

    /// Every part changed (a group converted from the classic protocol is written whole).
    pub(super) fn touch_all(&mut self) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in &ids {
            self.touch(Part::Member(id));
            self.touch(Part::Target(id));
            self.touch(Part::Current(id));
        }
        self.touch(Part::PartitionMetadata);
        self.touch(Part::Metadata);
        self.touch(Part::TargetMetadata);
    }

    /// Whether the sweep has records to write.
    pub fn is_unswept(&self) -> bool {
        !self.unswept.is_empty()
    }

    /// The records for what changed since the last heartbeat's write (`sweep`: since the
    /// last sweep), in Kafka's order: member metadata, subscribed topics, group epoch,
    /// target assignment, current assignments, then removed members' tombstones.
    pub fn records(&mut self, group_id: &str, sweep: bool) -> crate::groups::OffsetsRecords {
        let changes = if sweep {
            std::mem::take(&mut self.unswept)
        } else {
            std::mem::take(&mut self.pending)
        };
        use ConsumerRecord as R;
        let mut out: Vec<ConsumerRecord> = Vec::new();
        for id in &changes.members {
            if let Some(m) = self.members.get(id) {
                out.push(R::Member(id.clone(), Some(meta_of(m))));
            }
        }
        if changes.partition_metadata {
            out.push(R::PartitionMetadata(Some(self.subscribed.clone())));
        }
        if changes.metadata {
            out.push(R::Metadata(Some(self.epoch)));
        }
        for id in &changes.targets {
            if self.members.contains_key(id) {
                let t = self.target.get(id).cloned().unwrap_or_default();
                out.push(R::TargetMember(id.clone(), Some(t)));
            }
        }
        if changes.target_metadata {
            out.push(R::TargetMetadata(Some(self.assignment_epoch)));
        }
        for id in &changes.current {
            if let Some(m) = self.members.get(id) {
                out.push(R::Current(id.clone(), Some(current_of(m))));
            }
        }
        for id in &changes.removed {
            out.push(R::Current(id.clone(), None));
            out.push(R::TargetMember(id.clone(), None));
            out.push(R::Member(id.clone(), None));
        }
        out.iter()
            .map(|r| consumer_records::encode(group_id, r))
            .collect()
    }

    /// Tombstones for every member's records and then the group's (a group going back to
    /// the classic protocol; Kafka's `createGroupTombstoneRecords`).
    pub fn tombstones(&self, group_id: &str) -> crate::groups::OffsetsRecords {
        use ConsumerRecord as R;
        let mut out: crate::groups::OffsetsRecords = Vec::new();
        for id in self.members.keys() {
            for r in [
                R::Current(id.clone(), None),
                R::TargetMember(id.clone(), None),
                R::Member(id.clone(), None),
            ] {
                out.push(consumer_records::encode(group_id, &r));
            }
        }
        out.extend(ConsumerGroup::deletion_records(group_id));
        out
    }

    /// Tombstones for a deleted (empty) group, in Kafka's order.
    pub fn deletion_records(group_id: &str) -> crate::groups::OffsetsRecords {
        use ConsumerRecord as R;
        [
            R::TargetMetadata(None),
            R::PartitionMetadata(None),
            R::Metadata(None),
        ]
        .iter()
        .map(|r| consumer_records::encode(group_id, r))
        .collect()
    }

    /// A group as its records left it (a restart, or a coordinator taking over): members
    /// keep their epochs, assignments and targets; their sessions start now.
    pub fn restore(stored: StoredGroup, now: Instant, now_ms: i64) -> ConsumerGroup {
        let mut g = ConsumerGroup::new(now_ms);
        g.epoch = stored.epoch;
        g.assignment_epoch = stored.assignment_epoch;
        g.subscribed = stored.subscribed;
        for (id, meta) in stored.members {
            let mut m = Member::new(id.clone(), now);
            let compiled = meta
                .regex
                .as_deref()
                .and_then(|r| subscription::compile(r).ok());
            m.instance_id = meta.instance_id;
            m.rack_id = meta.rack_id;
            m.client_id = meta.client_id;
            m.client_host = meta.client_host;
            m.topic_names = meta.topic_names;
            m.regex = meta.regex.filter(|_| compiled.is_some());
            m.compiled_regex = compiled;
            m.rebalance_timeout_ms = meta.rebalance_timeout_ms;
            m.assignor = meta.assignor;
            m.classic = meta.classic;
            if let Some(c) = stored.current.get(&id) {
                m.epoch = c.epoch;
                m.previous_epoch = c.previous_epoch;
                m.state = match c.state {
                    1 => MemberState::UnrevokedPartitions,
                    2 => MemberState::UnreleasedPartitions,
                    _ => MemberState::Stable,
                };
                m.assigned = c.assigned.clone();
                m.revoking = c.revoking.clone();
            }
            if m.state == MemberState::UnrevokedPartitions {
                m.revoke_deadline =
                    Some(now + Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64));
            }
            if let Some(instance) = &m.instance_id {
                g.statics.insert(instance.clone(), id.clone());
            }
            if let Some(t) = stored.targets.get(&id) {
                g.target.insert(id.clone(), t.clone());
            }
            g.members.insert(id.clone(), m);
            g.add_owners(&id);
        }
        g
    }
}

/// What the member-metadata record holds of a member.
pub(super) fn meta_of(m: &Member) -> MemberMeta {
    MemberMeta {
        instance_id: m.instance_id.clone(),
        rack_id: m.rack_id.clone(),
        client_id: m.client_id.clone(),
        client_host: m.client_host.clone(),
        topic_names: m.topic_names.clone(),
        regex: m.regex.clone(),
        rebalance_timeout_ms: m.rebalance_timeout_ms,
        assignor: m.assignor.clone(),
        classic: m.classic.clone(),
    }
}

/// What the current-assignment record holds of a member (Kafka's state bytes).
pub(super) fn current_of(m: &Member) -> CurrentValue {
    CurrentValue {
        epoch: m.epoch,
        previous_epoch: m.previous_epoch,
        state: match m.state {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
        },
        assigned: m.assigned.clone(),
        revoking: m.revoking.clone(),
    }
}

/// A group as its records in the offsets topic describe it (the loader's result).
#[derive(Debug, Clone, Default)]
pub struct StoredGroup {
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub subscribed: consumer_records::TopicsMeta,
    pub members: BTreeMap<String, MemberMeta>,
    pub targets: BTreeMap<String, Assignment>,
    pub current: BTreeMap<String, CurrentValue>,
}

impl StoredGroup {
    /// Applies one record (tombstones remove; a group-metadata tombstone ends the group,
    /// which the caller does).
    pub fn apply(&mut self, record: ConsumerRecord) {
        use ConsumerRecord as R;
        match record {
            R::Metadata(v) => self.epoch = v.unwrap_or(0),
            R::PartitionMetadata(v) => self.subscribed = v.unwrap_or_default(),
            R::TargetMetadata(v) => self.assignment_epoch = v.unwrap_or(0),
            R::Member(id, Some(v)) => {
                self.members.insert(id, v);
            }
            R::Member(id, None) => {
                self.members.remove(&id);
            }
            R::TargetMember(id, Some(v)) => {
                self.targets.insert(id, v);
            }
            R::TargetMember(id, None) => {
                self.targets.remove(&id);
            }
            R::Current(id, Some(v)) => {
                self.current.insert(id, v);
            }
            R::Current(id, None) => {
                self.current.remove(&id);
            }
        }
    }
}
