//! The metadata image: an immutable, versioned snapshot of cluster metadata, built by
//! applying metadata records in log order.
//!
//! `MetadataImage::apply` never changes `self`; it validates the record against the image
//! and returns a new image (shared parts stay shared through `Arc`). An invalid record is an
//! `ImageError` and leaves the old image in force — every node rejects the same record the
//! same way, since validation depends only on the image and the record.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::acl::{Acls, ACLS_MAX};
use crate::records::{
    ConfigResource, Listener, PartitionAssignment, PartitionChange, Record, ScramCredential,
    ScramMechanism,
};
use crate::types::{
    BrokerEpoch, BrokerId, LeaderEpoch, MetadataOffset, NodeId, PartitionId, TopicId,
};

/// Topic config: `unclean.leader.election.enable` (default false).
pub const UNCLEAN_LEADER_ELECTION: &str = "unclean.leader.election.enable";
/// Topic config: `min.insync.replicas` (default 1).
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: BrokerId,
    pub epoch: BrokerEpoch,
    pub rack: Option<String>,
    pub listeners: Vec<Listener>,
    /// A fenced broker leads nothing and is not a candidate for leadership.
    pub fenced: bool,
}

/// One partition's replicas and leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// First replica = preferred leader.
    pub replicas: Vec<BrokerId>,
    pub leader: Option<BrokerId>,
    pub leader_epoch: LeaderEpoch,
    pub isr: Vec<BrokerId>,
    /// KIP-966 eligible leader replicas: left the ISR while it was below
    /// `min.insync.replicas`, so still hold every committed record.
    pub elr: Vec<BrokerId>,
    /// A reassignment under way (Kafka's `addingReplicas`): replicas joining, which
    /// start as followers and catch up. Empty when none is.
    pub adding_replicas: Vec<BrokerId>,
    /// A reassignment under way (`removingReplicas`): replicas leaving once every target
    /// replica is in sync. `replicas` lists the target first, then these.
    pub removing_replicas: Vec<BrokerId>,
}

impl PartitionState {
    /// Whether a reassignment is under way.
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replica set a reassignment moves to: the replicas less those leaving.
    pub fn target_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: TopicId,
    pub partitions: BTreeMap<PartitionId, PartitionState>,
}

/// Why a record does not apply to an image.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("offset {offset} is not after the image's {image}")]
    OffsetRegression { offset: u64, image: u64 },
    #[error("unknown broker {0}")]
    UnknownBroker(BrokerId),
    #[error("invalid broker id {0}")]
    InvalidBrokerId(i32),
    #[error("broker {broker} epoch {got} does not match the registered epoch {registered}")]
    StaleBrokerEpoch {
        broker: BrokerId,
        got: i64,
        registered: i64,
    },
    #[error("broker {broker} re-registered with epoch {got}, not above {registered}")]
    BrokerEpochRegression {
        broker: BrokerId,
        got: i64,
        registered: i64,
    },
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("unknown partition {topic}-{partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    #[error("bad replica set for {topic}-{partition}: {reason}")]
    BadReplicas {
        topic: String,
        partition: i32,
        reason: String,
    },
    #[error("invalid controller: {0}")]
    InvalidController(String),
    /// Names the user and what is wrong, never a key or the salt.
    #[error("invalid SCRAM credential of user {user:?}: {reason}")]
    InvalidCredential { user: String, reason: String },
    /// An ACL binding that cannot be stored or removed, and why.
    #[error("ACL: {0}")]
    InvalidAcl(String),
    #[error("user {user:?} has no {mechanism} credential")]
    UnknownCredential {
        user: String,
        mechanism: &'static str,
    },
    #[error("leader epoch of {topic}-{partition} would go from {current} to {got}")]
    LeaderEpochRegression {
        topic: String,
        partition: i32,
        current: i32,
        got: i32,
    },
}

/// The cluster metadata as of one offset of the metadata log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataImage {
    offset: MetadataOffset,
    brokers: BTreeMap<BrokerId, Arc<BrokerInfo>>,
    topics: BTreeMap<TopicId, Arc<TopicImage>>,
    names: BTreeMap<String, TopicId>,
    configs: BTreeMap<(ConfigResource, String), Arc<BTreeMap<String, String>>>,
    /// Quorum addresses of controllers added by a membership change (`host`, `port`);
    /// founding controllers are known from every node's configured quorum instead.
    controllers: BTreeMap<NodeId, (String, u16)>,
    /// SCRAM credentials by user and mechanism (salted keys only).
    scram: BTreeMap<(String, ScramMechanism), Arc<ScramCredential>>,
    /// ACL bindings, indexed for the authorizer (shared until one changes).
    acls: Arc<Acls>,
}

impl MetadataImage {
    /// The empty image (offset 0).
    pub fn empty() -> Self {
        Self::default()
    }

    /// The offset of the last record this image contains.
    pub fn offset(&self) -> MetadataOffset {
        self.offset
    }

    pub fn brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values().map(|b| b.as_ref())
    }

    pub fn broker(&self, id: BrokerId) -> Option<&BrokerInfo> {
        self.brokers.get(&id).map(|b| b.as_ref())
    }

    /// The broker's registration if it holds exactly `epoch`; else the epoch it is
    /// registered with (`None`: not registered). Records and requests that name a broker
    /// epoch are both checked by this one rule.
    pub fn broker_at_epoch(
        &self,
        id: BrokerId,
        epoch: BrokerEpoch,
    ) -> Result<&BrokerInfo, Option<BrokerEpoch>> {
        let info = self.broker(id).ok_or(None)?;
        if info.epoch != epoch {
            return Err(Some(info.epoch));
        }
        Ok(info)
    }

    /// Whether a broker is registered and not fenced.
    pub fn is_live(&self, id: BrokerId) -> bool {
        self.broker(id).is_some_and(|b| !b.fenced)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values().map(|t| t.as_ref())
    }

    pub fn topic(&self, id: TopicId) -> Option<&TopicImage> {
        self.topics.get(&id).map(|t| t.as_ref())
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.names.get(name).and_then(|id| self.topic(*id))
    }

    /// Partitions whose ISR is smaller than their replica set.
    pub fn under_replicated(&self) -> impl Iterator<Item = (&TopicImage, PartitionId)> {
        self.partitions()
            .filter(|(_, _, p)| p.isr.len() < p.replicas.len())
            .map(|(t, i, _)| (t, i))
    }

    /// Partitions with no live leader.
    pub fn offline(&self) -> impl Iterator<Item = (&TopicImage, PartitionId)> {
        self.partitions()
            .filter(|(_, _, p)| !p.leader.is_some_and(|l| self.is_live(l)))
            .map(|(t, i, _)| (t, i))
    }

    /// Every partition of every topic.
    pub fn partitions(&self) -> impl Iterator<Item = (&TopicImage, PartitionId, &PartitionState)> {
        self.topics()
            .flat_map(|t| t.partitions.iter().map(move |(i, p)| (t, *i, p)))
    }

    /// One config value; `None` when unset (the default applies).
    pub fn config(&self, resource: ConfigResource, name: &str, key: &str) -> Option<&str> {
        self.configs
            .get(&(resource, name.to_owned()))
            .and_then(|m| m.get(key))
            .map(String::as_str)
    }

    /// How many resources of one kind have configs set.
    pub fn config_resource_count(&self, resource: ConfigResource) -> usize {
        self.configs
            .range((resource, String::new())..)
            .take_while(|((r, _), _)| *r == resource)
            .count()
    }

    /// Every config set on one resource (keys not set take their defaults).
    pub fn configs_of(
        &self,
        resource: ConfigResource,
        name: &str,
    ) -> Option<&BTreeMap<String, String>> {
        self.configs
            .get(&(resource, name.to_owned()))
            .map(|m| m.as_ref())
    }

    /// `unclean.leader.election.enable` of a topic (topic config, then cluster, else false).
    pub fn unclean_election_enabled(&self, topic: &str) -> bool {
        self.config(ConfigResource::Topic, topic, UNCLEAN_LEADER_ELECTION)
            .or_else(|| self.config(ConfigResource::Cluster, "", UNCLEAN_LEADER_ELECTION))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// `min.insync.replicas` of a topic (topic config, then cluster, else 1).
    pub fn min_insync_replicas(&self, topic: &str) -> usize {
        self.config(ConfigResource::Topic, topic, MIN_INSYNC_REPLICAS)
            .or_else(|| self.config(ConfigResource::Cluster, "", MIN_INSYNC_REPLICAS))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
    }

    /// Controllers added by membership changes, with their quorum address (`host`, `port`).
    pub fn controllers(&self) -> impl Iterator<Item = (NodeId, &str, u16)> {
        self.controllers
            .iter()
            .map(|(id, (host, port))| (*id, host.as_str(), *port))
    }

    /// `user`'s credential for `mechanism`.
    pub fn scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Option<&Arc<ScramCredential>> {
        self.scram.get(&(user.to_owned(), mechanism))
    }

    /// Every user with a SCRAM credential, and the mechanism and iterations of each, in
    /// user order.
    pub fn scram_users(&self) -> impl Iterator<Item = (&str, ScramMechanism, i32)> {
        self.scram
            .iter()
            .map(|((u, m), c)| (u.as_str(), *m, c.iterations))
    }

    /// The cluster's ACL bindings.
    pub fn acls(&self) -> &Acls {
        &self.acls
    }

    /// Applies the record at `offset` (which must be after this image's offset) and returns
    /// the new image. `self` is unchanged either way.
    pub fn apply(&self, offset: MetadataOffset, record: &Record) -> Result<Self, ImageError> {
        if offset <= self.offset {
            return Err(ImageError::OffsetRegression {
                offset: offset.0,
                image: self.offset.0,
            });
        }
        let mut next = self.clone();
        next.apply_in_place(record)?;
        next.offset = offset;
        Ok(next)
    }

    /// Moves the image to `offset` without a record (raft entries that carry no record,
    /// e.g. membership changes, still advance the log).
    pub fn advance_to(&self, offset: MetadataOffset) -> Self {
        let mut next = self.clone();
        next.offset = next.offset.max(offset);
        next
    }

    fn apply_in_place(&mut self, record: &Record) -> Result<(), ImageError> {
        match record {
            Record::RegisterBroker {
                broker,
                epoch,
                rack,
                listeners,
            } => self.register(*broker, *epoch, rack, listeners),
            Record::FenceBroker { broker, epoch } => self.set_fenced(*broker, *epoch, true),
            Record::UnfenceBroker { broker, epoch } => self.set_fenced(*broker, *epoch, false),
            Record::CreateTopic {
                name,
                topic_id,
                partitions,
            } => self.create_topic(name, *topic_id, partitions),
            Record::PartitionChange(c) => self.change_partition(c),
            Record::ConfigChange {
                resource,
                resource_name,
                key,
                value,
            } => self.change_config(*resource, resource_name, key, value.as_deref()),
            Record::DeleteTopic { topic_id } => self.delete_topic(*topic_id),
            Record::RegisterController {
                controller,
                host,
                port,
            } => self.register_controller(*controller, host, *port),
            Record::UnregisterController { controller } => {
                self.controllers.remove(controller);
                Ok(())
            }
            Record::UserScramCredential {
                user,
                mechanism,
                credential,
            } => {
                if let Some(reason) = credential.problem(user, *mechanism) {
                    return Err(ImageError::InvalidCredential {
                        user: user.clone(),
                        reason,
                    });
                }
                self.scram
                    .insert((user.clone(), *mechanism), Arc::new(credential.clone()));
                Ok(())
            }
            Record::AccessControlEntry { binding } => {
                if let Some(reason) = binding.problem() {
                    return Err(ImageError::InvalidAcl(reason));
                }
                if self.acls.contains(binding) {
                    return Ok(());
                }
                if self.acls.len() >= ACLS_MAX {
                    return Err(ImageError::InvalidAcl(format!(
                        "the cluster holds {ACLS_MAX} ACLs already (acls_max)"
                    )));
                }
                Arc::make_mut(&mut self.acls).insert(binding.clone());
                Ok(())
            }
            Record::RemoveAccessControlEntry { binding } => {
                if !self.acls.contains(binding) {
                    return Err(ImageError::InvalidAcl(format!("no such ACL {binding:?}")));
                }
                Arc::make_mut(&mut self.acls).remove(binding);
                Ok(())
            }
            Record::RemoveUserScramCredential { user, mechanism } => {
                match self.scram.remove(&(user.clone(), *mechanism)) {
                    Some(_) => Ok(()),
                    None => Err(ImageError::UnknownCredential {
                        user: user.clone(),
                        mechanism: mechanism.name(),
                    }),
                }
            }
        }
    }

    fn register_controller(&mut self, id: NodeId, host: &str, port: u16) -> Result<(), ImageError> {
        if id.0 == 0 || host.is_empty() || port == 0 {
            return Err(ImageError::InvalidController(format!(
                "controller {} at {host:?}:{port}",
                id.0
            )));
        }
        self.controllers.insert(id, (host.to_owned(), port));
        Ok(())
    }

    fn register(
        &mut self,
        id: BrokerId,
        epoch: BrokerEpoch,
        rack: &Option<String>,
        listeners: &[Listener],
    ) -> Result<(), ImageError> {
        if id.0 < 0 {
            return Err(ImageError::InvalidBrokerId(id.0));
        }
        if let Some(old) = self.brokers.get(&id) {
            if epoch <= old.epoch {
                return Err(ImageError::BrokerEpochRegression {
                    broker: id,
                    got: epoch.0,
                    registered: old.epoch.0,
                });
            }
        }
        let info = BrokerInfo {
            id,
            epoch,
            rack: rack.clone(),
            listeners: listeners.to_vec(),
            fenced: true,
        };
        self.brokers.insert(id, Arc::new(info));
        Ok(())
    }

    fn set_fenced(
        &mut self,
        id: BrokerId,
        epoch: BrokerEpoch,
        fenced: bool,
    ) -> Result<(), ImageError> {
        let old = self
            .broker_at_epoch(id, epoch)
            .map_err(|registered| match registered {
                None => ImageError::UnknownBroker(id),
                Some(r) => ImageError::StaleBrokerEpoch {
                    broker: id,
                    got: epoch.0,
                    registered: r.0,
                },
            })?;
        let mut info = old.clone();
        info.fenced = fenced;
        self.brokers.insert(id, Arc::new(info));
        Ok(())
    }

    fn create_topic(
        &mut self,
        name: &str,
        id: TopicId,
        partitions: &[PartitionAssignment],
    ) -> Result<(), ImageError> {
        if name.is_empty() || name.len() > 249 {
            return Err(ImageError::InvalidTopic(format!("bad name {name:?}")));
        }
        if self.names.contains_key(name) || self.topics.contains_key(&id) {
            return Err(ImageError::TopicExists(name.to_owned()));
        }
        if partitions.is_empty() {
            return Err(ImageError::InvalidTopic(format!("{name}: no partitions")));
        }
        let mut map = BTreeMap::new();
        for (i, p) in partitions.iter().enumerate() {
            if usize::try_from(p.partition.0).ok() != Some(i) {
                return Err(ImageError::InvalidTopic(format!(
                    "{name}: partition {} at position {i}",
                    p.partition.0
                )));
            }
            let state = PartitionState {
                replicas: p.replicas.clone(),
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                isr: p.isr.clone(),
                elr: Vec::new(),
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            };
            self.check_partition(name, p.partition, &state)?;
            map.insert(p.partition, state);
        }
        let topic = TopicImage {
            name: name.to_owned(),
            id,
            partitions: map,
        };
        self.names.insert(name.to_owned(), id);
        self.topics.insert(id, Arc::new(topic));
        Ok(())
    }

    /// Replicas distinct and registered; ISR and ELR disjoint subsets of them; the leader
    /// (if any) in the ISR.
    fn check_partition(
        &self,
        topic: &str,
        partition: PartitionId,
        s: &PartitionState,
    ) -> Result<(), ImageError> {
        let bad = |reason: String| ImageError::BadReplicas {
            topic: topic.to_owned(),
            partition: partition.0,
            reason,
        };
        if s.replicas.is_empty() {
            return Err(bad("no replicas".into()));
        }
        for (i, r) in s.replicas.iter().enumerate() {
            if !self.brokers.contains_key(r) {
                return Err(bad(format!("replica {r} is not a registered broker")));
            }
            if s.replicas[..i].contains(r) {
                return Err(bad(format!("replica {r} listed twice")));
            }
        }
        for (set, name) in [(&s.isr, "isr"), (&s.elr, "elr")] {
            for (i, r) in set.iter().enumerate() {
                if !s.replicas.contains(r) || set[..i].contains(r) {
                    return Err(bad(format!("{name} member {r} not a distinct replica")));
                }
            }
        }
        if let Some(r) = s.isr.iter().find(|r| s.elr.contains(r)) {
            return Err(bad(format!("{r} is in both isr and elr")));
        }
        for (set, name) in [
            (&s.adding_replicas, "adding"),
            (&s.removing_replicas, "removing"),
        ] {
            for (i, r) in set.iter().enumerate() {
                if !s.replicas.contains(r) || set[..i].contains(r) {
                    return Err(bad(format!("{name} replica {r} not a distinct replica")));
                }
            }
        }
        if let Some(r) = s
            .adding_replicas
            .iter()
            .find(|r| s.removing_replicas.contains(r))
        {
            return Err(bad(format!("{r} is both being added and removed")));
        }
        if s.removing_replicas.len() >= s.replicas.len() {
            return Err(bad("every replica is being removed".into()));
        }
        if let Some(l) = s.leader {
            if !s.isr.contains(&l) {
                return Err(bad(format!("leader {l} not in isr")));
            }
        }
        Ok(())
    }

    fn change_partition(&mut self, c: &PartitionChange) -> Result<(), ImageError> {
        let topic = self
            .topics
            .get(&c.topic_id)
            .ok_or_else(|| ImageError::UnknownTopic(c.topic_id.to_string()))?;
        let next_index = PartitionId(topic.partitions.len() as i32);
        let created;
        let old = match topic.partitions.get(&c.partition) {
            Some(old) => old,
            // A change naming the next partition with its replicas adds that partition
            // (CreatePartitions), starting from leader epoch 0.
            None if c.partition == next_index && c.replicas.is_some() => {
                created = PartitionState {
                    replicas: Vec::new(),
                    leader: c.leader,
                    leader_epoch: LeaderEpoch(0),
                    isr: Vec::new(),
                    elr: Vec::new(),
                    adding_replicas: Vec::new(),
                    removing_replicas: Vec::new(),
                };
                &created
            }
            None => {
                return Err(ImageError::UnknownPartition {
                    topic: topic.name.clone(),
                    partition: c.partition.0,
                })
            }
        };
        let leader_changed = c.leader != old.leader;
        if c.leader_epoch < old.leader_epoch
            || (leader_changed && c.leader_epoch == old.leader_epoch)
        {
            return Err(ImageError::LeaderEpochRegression {
                topic: topic.name.clone(),
                partition: c.partition.0,
                current: old.leader_epoch.0,
                got: c.leader_epoch.0,
            });
        }
        let state = PartitionState {
            replicas: c.replicas.clone().unwrap_or_else(|| old.replicas.clone()),
            leader: c.leader,
            leader_epoch: c.leader_epoch,
            isr: c.isr.clone(),
            elr: c.eligible_leaders.clone(),
            adding_replicas: c
                .adding_replicas
                .clone()
                .unwrap_or_else(|| old.adding_replicas.clone()),
            removing_replicas: c
                .removing_replicas
                .clone()
                .unwrap_or_else(|| old.removing_replicas.clone()),
        };
        self.check_partition(&topic.name, c.partition, &state)?;
        let mut t = TopicImage::clone(topic);
        t.partitions.insert(c.partition, state);
        self.topics.insert(c.topic_id, Arc::new(t));
        Ok(())
    }

    fn change_config(
        &mut self,
        resource: ConfigResource,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), ImageError> {
        if resource == ConfigResource::Topic && !self.names.contains_key(name) {
            return Err(ImageError::UnknownTopic(name.to_owned()));
        }
        let slot = (resource, name.to_owned());
        let mut map = self
            .configs
            .get(&slot)
            .map(|m| BTreeMap::clone(m))
            .unwrap_or_default();
        match value {
            Some(v) => map.insert(key.to_owned(), v.to_owned()),
            None => map.remove(key),
        };
        if map.is_empty() {
            self.configs.remove(&slot);
        } else {
            self.configs.insert(slot, Arc::new(map));
        }
        Ok(())
    }

    fn delete_topic(&mut self, id: TopicId) -> Result<(), ImageError> {
        let topic = self
            .topics
            .remove(&id)
            .ok_or_else(|| ImageError::UnknownTopic(id.to_string()))?;
        self.names.remove(&topic.name);
        self.configs
            .remove(&(ConfigResource::Topic, topic.name.clone()));
        Ok(())
    }

    /// Records that rebuild this image from empty (the content of a snapshot).
    pub fn to_records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for b in self.brokers.values() {
            out.push(Record::RegisterBroker {
                broker: b.id,
                epoch: b.epoch,
                rack: b.rack.clone(),
                listeners: b.listeners.clone(),
            });
            if !b.fenced {
                out.push(Record::UnfenceBroker {
                    broker: b.id,
                    epoch: b.epoch,
                });
            }
        }
        for t in self.topics.values() {
            let partitions = t
                .partitions
                .iter()
                .map(|(i, p)| PartitionAssignment {
                    partition: *i,
                    replicas: p.replicas.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    isr: p.isr.clone(),
                })
                .collect();
            out.push(Record::CreateTopic {
                name: t.name.clone(),
                topic_id: t.id,
                partitions,
            });
            let more = |p: &&PartitionState| !p.elr.is_empty() || p.is_reassigning();
            for (i, p) in t.partitions.iter().filter(|(_, p)| more(p)) {
                out.push(Record::PartitionChange(PartitionChange {
                    topic_id: t.id,
                    partition: *i,
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    isr: p.isr.clone(),
                    eligible_leaders: p.elr.clone(),
                    replicas: None,
                    adding_replicas: Some(p.adding_replicas.clone()),
                    removing_replicas: Some(p.removing_replicas.clone()),
                }));
            }
        }
        for ((resource, name), map) in &self.configs {
            for (k, v) in map.iter() {
                out.push(Record::ConfigChange {
                    resource: *resource,
                    resource_name: name.clone(),
                    key: k.clone(),
                    value: Some(v.clone()),
                });
            }
        }
        for (id, (host, port)) in &self.controllers {
            out.push(Record::RegisterController {
                controller: *id,
                host: host.clone(),
                port: *port,
            });
        }
        for binding in self.acls.iter() {
            out.push(Record::AccessControlEntry {
                binding: binding.clone(),
            });
        }
        for ((user, mechanism), credential) in &self.scram {
            out.push(Record::UserScramCredential {
                user: user.clone(),
                mechanism: *mechanism,
                credential: credential.as_ref().clone(),
            });
        }
        out
    }

    /// Rebuilds an image from `to_records` output, as of `offset`.
    pub fn from_records(offset: MetadataOffset, records: &[Record]) -> Result<Self, ImageError> {
        let mut image = Self::empty();
        for r in records {
            image.apply_in_place(r)?;
        }
        image.offset = offset;
        Ok(image)
    }

    /// Snapshot bytes: `offset u64 LE`, `record count u32 LE`, then each record as
    /// `len u32 LE` + flatbuffer.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let records = self.to_records();
        let mut out = self.offset.0.to_le_bytes().to_vec();
        out.extend_from_slice(&(records.len() as u32).to_le_bytes());
        for r in records {
            let b = r.encode();
            // Bound: a record is far below 4 GiB (names ≤ 249 bytes, bounded partition lists).
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(&b);
        }
        out
    }

    /// Parses `encode_snapshot` output.
    pub fn decode_snapshot(buf: &[u8]) -> Result<Self, SnapshotError> {
        let (head, mut rest) = buf.split_at_checked(12).ok_or(SnapshotError::Truncated)?;
        let mut off = [0u8; 8];
        off.copy_from_slice(&head[..8]);
        let count = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
        let mut records = Vec::with_capacity(count.min(1 << 16));
        while !rest.is_empty() {
            let (len, tail) = rest.split_at_checked(4).ok_or(SnapshotError::Truncated)?;
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let (rec, tail) = tail.split_at_checked(len).ok_or(SnapshotError::Truncated)?;
            records.push(Record::decode(rec)?);
            rest = tail;
        }
        if records.len() != count {
            return Err(SnapshotError::Truncated);
        }
        Ok(Self::from_records(
            MetadataOffset(u64::from_le_bytes(off)),
            &records,
        )?)
    }
}

/// Why snapshot bytes do not make an image.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot truncated")]
    Truncated,
    #[error(transparent)]
    Decode(#[from] crate::records::DecodeError),
    #[error(transparent)]
    Image(#[from] ImageError),
}
