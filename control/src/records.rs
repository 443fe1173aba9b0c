//! The metadata log records as plain Rust values, and their flatbuffers encoding.
//!
//! `encode` builds one finished `MetadataRecord` buffer (identifier `SLMR`); `decode`
//! verifies the buffer (flatbuffers verifier: bounds, offsets, utf-8) before reading it, so
//! any bytes — from disk or from a peer — give a `DecodeError`, never a panic.

use flatbuffers::{FlatBufferBuilder, WIPOffset};

use crate::acl::{AclBinding, AclOperation, AclPermission, PatternType, ResourceType};
use crate::generated::sluice::metadata as fb;
use crate::types::{BrokerEpoch, BrokerId, LeaderEpoch, NodeId, PartitionId, TopicId};

/// A named network endpoint a broker serves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// One partition as created: its replicas (first = preferred leader), leader and ISR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAssignment {
    pub partition: PartitionId,
    pub replicas: Vec<BrokerId>,
    pub leader: Option<BrokerId>,
    pub leader_epoch: LeaderEpoch,
    pub isr: Vec<BrokerId>,
}

/// What a config change applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigResource {
    Topic,
    Broker,
    Cluster,
    /// A consumer group's configs (Kafka's GROUP resource: `consumer.session.timeout.ms`,
    /// `consumer.heartbeat.interval.ms`), by group id.
    Group,
}

/// A SCRAM mechanism (RFC 5802 with the hash of RFC 7677), with Kafka's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// Kafka's `ScramMechanism` id (DescribeUserScramCredentials, the metadata record).
    pub fn kafka_id(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_id(id: i8) -> Option<ScramMechanism> {
        match id {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// The SASL mechanism name (`SCRAM-SHA-256`).
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Bytes of the hash, so of a stored or server key.
    pub fn key_bytes(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }
}

/// Fewest PBKDF2 iterations a SCRAM credential may have (RFC 7677 asks for at least 4096,
/// Kafka's minimum too).
pub const SCRAM_ITERATIONS_MIN: i32 = 4096;
/// Most PBKDF2 iterations (Kafka's maximum): every login costs the broker this many.
pub const SCRAM_ITERATIONS_MAX: i32 = 16384;
/// Longest salt accepted.
pub const SCRAM_SALT_BYTES_MAX: usize = 128;
/// Longest user name accepted (it goes into every image and snapshot).
pub const SCRAM_USER_BYTES_MAX: usize = 256;

/// A user's salted SCRAM keys for one mechanism (never the password). `Debug` shows
/// neither salt nor keys.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// Why this credential cannot be stored for `user` and `mechanism`, if it cannot.
    pub fn problem(&self, user: &str, mechanism: ScramMechanism) -> Option<String> {
        if user.is_empty() || user.len() > SCRAM_USER_BYTES_MAX {
            return Some(format!(
                "user name of {} bytes (1 to {SCRAM_USER_BYTES_MAX})",
                user.len()
            ));
        }
        if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&self.iterations) {
            return Some(format!(
                "{} iterations (from {SCRAM_ITERATIONS_MIN} to {SCRAM_ITERATIONS_MAX})",
                self.iterations
            ));
        }
        if self.salt.is_empty() || self.salt.len() > SCRAM_SALT_BYTES_MAX {
            return Some(format!(
                "salt of {} bytes (1 to {SCRAM_SALT_BYTES_MAX})",
                self.salt.len()
            ));
        }
        let n = mechanism.key_bytes();
        if self.stored_key.len() != n || self.server_key.len() != n {
            return Some(format!("keys of {} bytes expected", n));
        }
        None
    }
}

/// Verifier bounds for a record buffer of `len` bytes. The defaults (a million tables,
/// 2 GiB apparent size) would let a small buffer whose offsets point at the same table again
/// and again cost far more to verify and decode than its length. A record we write has
/// every table, string and vector once; only vtables are shared (the builder deduplicates
/// them), so its apparent size is a small multiple of its length, and every table takes at
/// least 4 bytes.
fn verifier_options(len: usize) -> flatbuffers::VerifierOptions {
    flatbuffers::VerifierOptions {
        max_depth: 16,
        max_tables: len / 4 + 1,
        max_apparent_size: len.saturating_mul(8),
        ..Default::default()
    }
}

/// One metadata log record. See `schema/metadata.fbs` for the meaning of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    RegisterBroker {
        broker: BrokerId,
        epoch: BrokerEpoch,
        rack: Option<String>,
        listeners: Vec<Listener>,
    },
    FenceBroker {
        broker: BrokerId,
        epoch: BrokerEpoch,
    },
    UnfenceBroker {
        broker: BrokerId,
        epoch: BrokerEpoch,
    },
    CreateTopic {
        name: String,
        topic_id: TopicId,
        partitions: Vec<PartitionAssignment>,
    },
    PartitionChange(PartitionChange),
    ConfigChange {
        resource: ConfigResource,
        resource_name: String,
        key: String,
        /// `None` deletes the key.
        value: Option<String>,
    },
    DeleteTopic {
        topic_id: TopicId,
    },
    /// A controller's quorum address (written before the change that adds it as a voter).
    RegisterController {
        controller: NodeId,
        host: String,
        port: u16,
    },
    /// A controller that left the voters.
    UnregisterController {
        controller: NodeId,
    },
    /// Sets `user`'s credential for `mechanism`.
    UserScramCredential {
        user: String,
        mechanism: ScramMechanism,
        credential: ScramCredential,
    },
    /// Removes `user`'s credential for `mechanism`.
    RemoveUserScramCredential {
        user: String,
        mechanism: ScramMechanism,
    },
    /// Adds an ACL binding (a binding already there stays one).
    AccessControlEntry {
        binding: AclBinding,
    },
    /// Removes an ACL binding.
    RemoveAccessControlEntry {
        binding: AclBinding,
    },
}

/// The full new state of one partition's leadership (not a delta).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionChange {
    pub topic_id: TopicId,
    pub partition: PartitionId,
    pub leader: Option<BrokerId>,
    pub leader_epoch: LeaderEpoch,
    pub isr: Vec<BrokerId>,
    pub eligible_leaders: Vec<BrokerId>,
    /// `None`: replicas unchanged.
    pub replicas: Option<Vec<BrokerId>>,
    /// A reassignment's replicas joining (`None`: unchanged; empty: none).
    pub adding_replicas: Option<Vec<BrokerId>>,
    /// A reassignment's replicas leaving (`None`: unchanged; empty: none).
    pub removing_replicas: Option<Vec<BrokerId>>,
}

/// Why bytes are not a metadata record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a metadata record buffer (identifier missing)")]
    Identifier,
    #[error("invalid flatbuffer: {0}")]
    Invalid(String),
    #[error("record has no payload or an unknown record type {0}")]
    UnknownType(u8),
    #[error("record field {0} missing")]
    Missing(&'static str),
    #[error("unknown config resource {0}")]
    UnknownResource(i8),
    #[error("unknown SCRAM mechanism {0}")]
    UnknownMechanism(i8),
}

/// An ACL binding from a record's ids (resource type, pattern type, operation,
/// permission) and strings (resource name, principal, host); unknown ids read as
/// `Unknown` (the image refuses such a binding).
fn acl_binding(ids: [i8; 4], strings: [Option<&str>; 3]) -> Result<AclBinding, DecodeError> {
    let [name, principal, host] = strings;
    Ok(AclBinding {
        resource_type: ResourceType::from_id(ids[0]),
        resource_name: name
            .ok_or(DecodeError::Missing("resource_name"))?
            .to_owned(),
        pattern: PatternType::from_id(ids[1]),
        principal: principal
            .ok_or(DecodeError::Missing("principal"))?
            .to_owned(),
        host: host.ok_or(DecodeError::Missing("host"))?.to_owned(),
        operation: AclOperation::from_id(ids[2]),
        permission: AclPermission::from_id(ids[3]),
    })
}

fn uuid(id: TopicId) -> fb::Uuid {
    fb::Uuid::new((id.0 >> 64) as u64, id.0 as u64)
}

fn topic_id(u: &fb::Uuid) -> TopicId {
    TopicId((u128::from(u.hi()) << 64) | u128::from(u.lo()))
}

fn leader_wire(l: Option<BrokerId>) -> i32 {
    l.map_or(BrokerId::NONE, |b| b.0)
}

fn leader_from_wire(l: i32) -> Option<BrokerId> {
    (l >= 0).then_some(BrokerId(l))
}

fn ids<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    v: &[BrokerId],
) -> WIPOffset<flatbuffers::Vector<'a, i32>> {
    let raw: Vec<i32> = v.iter().map(|b| b.0).collect();
    fbb.create_vector(&raw)
}

fn ids_from(v: Option<flatbuffers::Vector<'_, i32>>) -> Vec<BrokerId> {
    v.map(|v| v.iter().map(BrokerId).collect())
        .unwrap_or_default()
}

impl Record {
    /// A short name for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::RegisterBroker { .. } => "RegisterBroker",
            Record::FenceBroker { .. } => "FenceBroker",
            Record::UnfenceBroker { .. } => "UnfenceBroker",
            Record::CreateTopic { .. } => "CreateTopic",
            Record::PartitionChange(_) => "PartitionChange",
            Record::ConfigChange { .. } => "ConfigChange",
            Record::DeleteTopic { .. } => "DeleteTopic",
            Record::RegisterController { .. } => "RegisterController",
            Record::UnregisterController { .. } => "UnregisterController",
            Record::UserScramCredential { .. } => "UserScramCredential",
            Record::RemoveUserScramCredential { .. } => "RemoveUserScramCredential",
            Record::AccessControlEntry { .. } => "AccessControlEntry",
            Record::RemoveAccessControlEntry { .. } => "RemoveAccessControlEntry",
        }
    }

    /// Encodes this record as one finished flatbuffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(256);
        let (record_type, record) = self.build(&mut fbb);
        let root = fb::MetadataRecord::create(
            &mut fbb,
            &fb::MetadataRecordArgs {
                record_type,
                record: Some(record),
            },
        );
        fb::finish_metadata_record_buffer(&mut fbb, root);
        fbb.finished_data().to_vec()
    }

    fn build<'a>(
        &self,
        fbb: &mut FlatBufferBuilder<'a>,
    ) -> (fb::Record, WIPOffset<flatbuffers::UnionWIPOffset>) {
        match self {
            Record::RegisterBroker {
                broker,
                epoch,
                rack,
                listeners,
            } => {
                let rack = rack.as_deref().map(|r| fbb.create_string(r));
                let ls: Vec<_> = listeners
                    .iter()
                    .map(|l| {
                        let args = fb::ListenerArgs {
                            name: Some(fbb.create_string(&l.name)),
                            host: Some(fbb.create_string(&l.host)),
                            port: l.port,
                        };
                        fb::Listener::create(fbb, &args)
                    })
                    .collect();
                let listeners = Some(fbb.create_vector(&ls));
                let t = fb::RegisterBroker::create(
                    fbb,
                    &fb::RegisterBrokerArgs {
                        broker_id: broker.0,
                        broker_epoch: epoch.0,
                        rack,
                        listeners,
                    },
                );
                (fb::Record::RegisterBroker, t.as_union_value())
            }
            Record::FenceBroker { broker, epoch } => {
                let args = fb::FenceBrokerArgs {
                    broker_id: broker.0,
                    broker_epoch: epoch.0,
                };
                let t = fb::FenceBroker::create(fbb, &args);
                (fb::Record::FenceBroker, t.as_union_value())
            }
            Record::UnfenceBroker { broker, epoch } => {
                let args = fb::UnfenceBrokerArgs {
                    broker_id: broker.0,
                    broker_epoch: epoch.0,
                };
                let t = fb::UnfenceBroker::create(fbb, &args);
                (fb::Record::UnfenceBroker, t.as_union_value())
            }
            Record::CreateTopic {
                name,
                topic_id,
                partitions,
            } => {
                let name = Some(fbb.create_string(name));
                let ps: Vec<_> = partitions
                    .iter()
                    .map(|p| {
                        let args = fb::PartitionAssignmentArgs {
                            partition: p.partition.0,
                            replicas: Some(ids(fbb, &p.replicas)),
                            leader: leader_wire(p.leader),
                            leader_epoch: p.leader_epoch.0,
                            isr: Some(ids(fbb, &p.isr)),
                        };
                        fb::PartitionAssignment::create(fbb, &args)
                    })
                    .collect();
                let partitions = Some(fbb.create_vector(&ps));
                let id = uuid(*topic_id);
                let t = fb::CreateTopic::create(
                    fbb,
                    &fb::CreateTopicArgs {
                        name,
                        topic_id: Some(&id),
                        partitions,
                    },
                );
                (fb::Record::CreateTopic, t.as_union_value())
            }
            Record::PartitionChange(c) => {
                let id = uuid(c.topic_id);
                let args = fb::PartitionChangeArgs {
                    topic_id: Some(&id),
                    partition: c.partition.0,
                    leader: leader_wire(c.leader),
                    leader_epoch: c.leader_epoch.0,
                    isr: Some(ids(fbb, &c.isr)),
                    eligible_leaders: Some(ids(fbb, &c.eligible_leaders)),
                    replicas: c.replicas.as_deref().map(|r| ids(fbb, r)),
                    adding_replicas: c.adding_replicas.as_deref().map(|r| ids(fbb, r)),
                    removing_replicas: c.removing_replicas.as_deref().map(|r| ids(fbb, r)),
                };
                let t = fb::PartitionChange::create(fbb, &args);
                (fb::Record::PartitionChange, t.as_union_value())
            }
            Record::ConfigChange {
                resource,
                resource_name,
                key,
                value,
            } => {
                let args = fb::ConfigChangeArgs {
                    resource: match resource {
                        ConfigResource::Topic => fb::ConfigResource::Topic,
                        ConfigResource::Broker => fb::ConfigResource::Broker,
                        ConfigResource::Cluster => fb::ConfigResource::Cluster,
                        ConfigResource::Group => fb::ConfigResource::Group,
                    },
                    resource_name: Some(fbb.create_string(resource_name)),
                    key: Some(fbb.create_string(key)),
                    value: value.as_deref().map(|v| fbb.create_string(v)),
                };
                let t = fb::ConfigChange::create(fbb, &args);
                (fb::Record::ConfigChange, t.as_union_value())
            }
            Record::DeleteTopic { topic_id } => {
                let id = uuid(*topic_id);
                let t = fb::DeleteTopic::create(
                    fbb,
                    &fb::DeleteTopicArgs {
                        topic_id: Some(&id),
                    },
                );
                (fb::Record::DeleteTopic, t.as_union_value())
            }
            Record::RegisterController {
                controller,
                host,
                port,
            } => {
                let args = fb::RegisterControllerArgs {
                    controller_id: controller.0,
                    host: Some(fbb.create_string(host)),
                    port: *port,
                };
                let t = fb::RegisterController::create(fbb, &args);
                (fb::Record::RegisterController, t.as_union_value())
            }
            Record::UnregisterController { controller } => {
                let args = fb::UnregisterControllerArgs {
                    controller_id: controller.0,
                };
                let t = fb::UnregisterController::create(fbb, &args);
                (fb::Record::UnregisterController, t.as_union_value())
            }
            Record::UserScramCredential {
                user,
                mechanism,
                credential,
            } => {
                let args = fb::UserScramCredentialArgs {
                    name: Some(fbb.create_string(user)),
                    mechanism: mechanism.kafka_id(),
                    salt: Some(fbb.create_vector(&credential.salt)),
                    stored_key: Some(fbb.create_vector(&credential.stored_key)),
                    server_key: Some(fbb.create_vector(&credential.server_key)),
                    iterations: credential.iterations,
                };
                let t = fb::UserScramCredential::create(fbb, &args);
                (fb::Record::UserScramCredential, t.as_union_value())
            }
            Record::RemoveUserScramCredential { user, mechanism } => {
                let args = fb::RemoveUserScramCredentialArgs {
                    name: Some(fbb.create_string(user)),
                    mechanism: mechanism.kafka_id(),
                };
                let t = fb::RemoveUserScramCredential::create(fbb, &args);
                (fb::Record::RemoveUserScramCredential, t.as_union_value())
            }
            Record::AccessControlEntry { binding: b } => {
                let args = fb::AccessControlEntryArgs {
                    resource_type: b.resource_type.id(),
                    resource_name: Some(fbb.create_string(&b.resource_name)),
                    pattern_type: b.pattern.id(),
                    principal: Some(fbb.create_string(&b.principal)),
                    host: Some(fbb.create_string(&b.host)),
                    operation: b.operation.id(),
                    permission_type: b.permission.id(),
                };
                let t = fb::AccessControlEntry::create(fbb, &args);
                (fb::Record::AccessControlEntry, t.as_union_value())
            }
            Record::RemoveAccessControlEntry { binding: b } => {
                let args = fb::RemoveAccessControlEntryArgs {
                    resource_type: b.resource_type.id(),
                    resource_name: Some(fbb.create_string(&b.resource_name)),
                    pattern_type: b.pattern.id(),
                    principal: Some(fbb.create_string(&b.principal)),
                    host: Some(fbb.create_string(&b.host)),
                    operation: b.operation.id(),
                    permission_type: b.permission.id(),
                };
                let t = fb::RemoveAccessControlEntry::create(fbb, &args);
                (fb::Record::RemoveAccessControlEntry, t.as_union_value())
            }
        }
    }

    /// Verifies and decodes one record buffer.
    pub fn decode(buf: &[u8]) -> Result<Record, DecodeError> {
        // The identifier check asserts on buffers shorter than offset + identifier.
        if buf.len() < 8 || !fb::metadata_record_buffer_has_identifier(buf) {
            return Err(DecodeError::Identifier);
        }
        let root = fb::root_as_metadata_record_with_opts(&verifier_options(buf.len()), buf)
            .map_err(|e| DecodeError::Invalid(e.to_string()))?;
        let ty = root.record_type();
        let unknown = DecodeError::UnknownType(ty.0);
        let record = match ty {
            fb::Record::RegisterBroker => {
                let r = root.record_as_register_broker().ok_or(unknown)?;
                Record::RegisterBroker {
                    broker: BrokerId(r.broker_id()),
                    epoch: BrokerEpoch(r.broker_epoch()),
                    rack: r.rack().map(str::to_owned),
                    listeners: r
                        .listeners()
                        .map(|ls| {
                            ls.iter()
                                .map(|l| Listener {
                                    name: l.name().unwrap_or_default().to_owned(),
                                    host: l.host().unwrap_or_default().to_owned(),
                                    port: l.port(),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            }
            fb::Record::FenceBroker => {
                let r = root.record_as_fence_broker().ok_or(unknown)?;
                Record::FenceBroker {
                    broker: BrokerId(r.broker_id()),
                    epoch: BrokerEpoch(r.broker_epoch()),
                }
            }
            fb::Record::UnfenceBroker => {
                let r = root.record_as_unfence_broker().ok_or(unknown)?;
                Record::UnfenceBroker {
                    broker: BrokerId(r.broker_id()),
                    epoch: BrokerEpoch(r.broker_epoch()),
                }
            }
            fb::Record::CreateTopic => {
                let r = root.record_as_create_topic().ok_or(unknown)?;
                let partitions = r
                    .partitions()
                    .map(|ps| {
                        ps.iter()
                            .map(|p| PartitionAssignment {
                                partition: PartitionId(p.partition()),
                                replicas: ids_from(p.replicas()),
                                leader: leader_from_wire(p.leader()),
                                leader_epoch: LeaderEpoch(p.leader_epoch()),
                                isr: ids_from(p.isr()),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Record::CreateTopic {
                    name: r.name().ok_or(DecodeError::Missing("name"))?.to_owned(),
                    topic_id: topic_id(r.topic_id().ok_or(DecodeError::Missing("topic_id"))?),
                    partitions,
                }
            }
            fb::Record::PartitionChange => {
                let r = root.record_as_partition_change().ok_or(unknown)?;
                Record::PartitionChange(PartitionChange {
                    topic_id: topic_id(r.topic_id().ok_or(DecodeError::Missing("topic_id"))?),
                    partition: PartitionId(r.partition()),
                    leader: leader_from_wire(r.leader()),
                    leader_epoch: LeaderEpoch(r.leader_epoch()),
                    isr: ids_from(r.isr()),
                    eligible_leaders: ids_from(r.eligible_leaders()),
                    replicas: r.replicas().map(|v| ids_from(Some(v))),
                    adding_replicas: r.adding_replicas().map(|v| ids_from(Some(v))),
                    removing_replicas: r.removing_replicas().map(|v| ids_from(Some(v))),
                })
            }
            fb::Record::ConfigChange => {
                let r = root.record_as_config_change().ok_or(unknown)?;
                let resource = match r.resource() {
                    fb::ConfigResource::Topic => ConfigResource::Topic,
                    fb::ConfigResource::Broker => ConfigResource::Broker,
                    fb::ConfigResource::Cluster => ConfigResource::Cluster,
                    fb::ConfigResource::Group => ConfigResource::Group,
                    other => return Err(DecodeError::UnknownResource(other.0)),
                };
                Record::ConfigChange {
                    resource,
                    resource_name: r.resource_name().unwrap_or_default().to_owned(),
                    key: r.key().ok_or(DecodeError::Missing("key"))?.to_owned(),
                    value: r.value().map(str::to_owned),
                }
            }
            fb::Record::DeleteTopic => {
                let r = root.record_as_delete_topic().ok_or(unknown)?;
                Record::DeleteTopic {
                    topic_id: topic_id(r.topic_id().ok_or(DecodeError::Missing("topic_id"))?),
                }
            }
            fb::Record::RegisterController => {
                let r = root.record_as_register_controller().ok_or(unknown)?;
                Record::RegisterController {
                    controller: NodeId(r.controller_id()),
                    host: r.host().ok_or(DecodeError::Missing("host"))?.to_owned(),
                    port: r.port(),
                }
            }
            fb::Record::UnregisterController => {
                let r = root.record_as_unregister_controller().ok_or(unknown)?;
                Record::UnregisterController {
                    controller: NodeId(r.controller_id()),
                }
            }
            fb::Record::UserScramCredential => {
                let r = root.record_as_user_scram_credential().ok_or(unknown)?;
                let bytes = |v: Option<flatbuffers::Vector<'_, u8>>| {
                    v.map(|v| v.bytes().to_vec()).unwrap_or_default()
                };
                Record::UserScramCredential {
                    user: r.name().ok_or(DecodeError::Missing("name"))?.to_owned(),
                    mechanism: ScramMechanism::from_kafka_id(r.mechanism())
                        .ok_or(DecodeError::UnknownMechanism(r.mechanism()))?,
                    credential: ScramCredential {
                        salt: bytes(r.salt()),
                        stored_key: bytes(r.stored_key()),
                        server_key: bytes(r.server_key()),
                        iterations: r.iterations(),
                    },
                }
            }
            fb::Record::RemoveUserScramCredential => {
                let r = root
                    .record_as_remove_user_scram_credential()
                    .ok_or(unknown)?;
                Record::RemoveUserScramCredential {
                    user: r.name().ok_or(DecodeError::Missing("name"))?.to_owned(),
                    mechanism: ScramMechanism::from_kafka_id(r.mechanism())
                        .ok_or(DecodeError::UnknownMechanism(r.mechanism()))?,
                }
            }
            fb::Record::AccessControlEntry => {
                let r = root.record_as_access_control_entry().ok_or(unknown)?;
                let binding = acl_binding(
                    [
                        r.resource_type(),
                        r.pattern_type(),
                        r.operation(),
                        r.permission_type(),
                    ],
                    [r.resource_name(), r.principal(), r.host()],
                )?;
                Record::AccessControlEntry { binding }
            }
            fb::Record::RemoveAccessControlEntry => {
                let r = root
                    .record_as_remove_access_control_entry()
                    .ok_or(unknown)?;
                let binding = acl_binding(
                    [
                        r.resource_type(),
                        r.pattern_type(),
                        r.operation(),
                        r.permission_type(),
                    ],
                    [r.resource_name(), r.principal(), r.host()],
                )?;
                Record::RemoveAccessControlEntry { binding }
            }
            _ => return Err(unknown),
        };
        Ok(record)
    }
}
