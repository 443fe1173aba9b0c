//! Broker-to-controller requests on the controller's own TCP port.
//!
//! Brokers register, heartbeat, follow the metadata image and hand over admin work
//! (create/delete topics, add partitions, change configs, elect preferred leaders, add or
//! remove a controller) to the active controller with these requests; partition leaders
//! change their ISR (`AlterPartition`) and a stopping broker hands its leaderships over
//! (`ShutdownBroker`, then `BrokerStopped`). They share the quorum port with raft traffic:
//! a connection that starts with [`RPC_MAGIC`] carries requests (one answer per request,
//! in order); any other connection carries raft frames (`tcp.rs`). Using the controller's
//! channel (not Kafka's BrokerRegistration/BrokerHeartbeat APIs on the Kafka listener)
//! means a broker needs only the quorum list to reach the controller, before any broker
//! listener is known from metadata.
//!
//! With `[cluster_tls]` every connection is mutual TLS (see `tls`): the controller only
//! answers brokers whose certificate chains to the cluster CA.
//!
//! Framing: `len u32 LE | crc32c u32 LE | body`, `len` bounded by `RPC_FRAME_BYTES_MAX`.
//! Bodies are a kind byte followed by fixed-width little-endian integers and
//! length-prefixed strings; every count and length is checked against the bytes left, so
//! any input decodes to a value or an `RpcError`, never a panic.

use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use crate::acl::{AclBinding, AclFilter, AclOperation, AclPermission, PatternType, ResourceType};
use crate::active::HeartbeatReply;
use crate::controller::ReplicaProgress;
use crate::election::{ElectionOutcome, ElectionType};
use crate::reassign::{OngoingReassignment, ReassignRefusal, ReassignTarget};
use crate::records::{Listener, ScramCredential, ScramMechanism};
use crate::tls::{BlockingStream, ClusterStream, ClusterTls};
use crate::types::{BrokerEpoch, BrokerId, LeaderEpoch, MetadataOffset, NodeId, Term, TopicId};

/// First bytes of a request connection (raft frames never start with these: as a raft
/// frame length they would exceed any bound).
pub const RPC_MAGIC: [u8; 4] = *b"SLRQ";
/// Largest request or answer frame (an image snapshot is the largest).
pub const RPC_FRAME_BYTES_MAX: usize = 64 << 20;
const HEADER_BYTES: usize = 8;

/// What a broker asks the active controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Register {
        broker: BrokerId,
        rack: Option<String>,
        listeners: Vec<Listener>,
    },
    Heartbeat {
        broker: BrokerId,
        epoch: BrokerEpoch,
    },
    CreateTopic {
        name: String,
        partitions: i32,
        replication_factor: i16,
        configs: Vec<(String, String)>,
        /// Keep this id (importing a topic a single node had before the quorum existed).
        topic_id: Option<TopicId>,
        validate_only: bool,
        /// Each partition's replicas as asked (CreateTopics' `assignments`, partition `i`
        /// at index `i`); empty: the controller places them. `partitions` and
        /// `replication_factor` are -1 when it is not empty, as Kafka asks.
        assignment: Vec<Vec<BrokerId>>,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        count: i32,
        validate_only: bool,
        /// The new partitions' replicas as asked, in partition order; empty: placed by
        /// the controller.
        assignment: Vec<Vec<BrokerId>>,
    },
    /// Sets (`Some`) or removes (`None`) topic config keys. With `replace` the topic's
    /// configs become exactly the keys set here: the controller removes the others, from
    /// its own image (a broker's image may lag behind it).
    SetConfigs {
        topic: String,
        configs: Vec<(String, Option<String>)>,
        replace: bool,
    },
    /// Sets (`Some`) or removes (`None`) a consumer group's config keys.
    SetGroupConfigs {
        group: String,
        configs: Vec<(String, Option<String>)>,
    },
    /// Sets (`Some`) or removes (`None`) dynamic broker config keys of broker `broker`,
    /// or of the cluster default when `None` (Kafka's BROKER resource with an empty
    /// name). With `replace` the resource's keys become exactly those set here.
    SetBrokerConfigs {
        broker: Option<BrokerId>,
        configs: Vec<(String, Option<String>)>,
        replace: bool,
    },
    /// Moves leadership back to each partition's preferred replica where it can.
    ElectLeaders,
    /// Kafka's ElectLeaders: `election` for each named partition (`None`: every
    /// partition, answering only those where an election was needed). Answered with
    /// `Reply::Elected` once the changes are applied.
    Elect {
        election: ElectionType,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    },
    /// The image, once it is newer than `have` (waits up to `wait_ms` for a change).
    FetchImage {
        have: MetadataOffset,
        wait_ms: u32,
    },
    Status,
    /// Kafka's DescribeQuorum: every member's replication progress, answered by the
    /// active controller only (`Reply::Quorum`).
    DescribeQuorum,
    /// Adds controller `id`, reachable on its quorum address `host:port`, as a voter.
    /// Answered once the change is applied on the active controller.
    AddController {
        id: NodeId,
        host: String,
        port: u16,
    },
    /// Removes controller `id` from the voters (the active controller itself included: it
    /// hands leadership over). Answered once the change is applied.
    RemoveController {
        id: NodeId,
    },
    /// The leader of `topic`-`partition` at `leader_epoch` sets its ISR (shrink or expand;
    /// the leader and its epoch stay). Answered `Done` once applied.
    AlterPartition {
        broker: BrokerId,
        broker_epoch: BrokerEpoch,
        topic: String,
        partition: i32,
        leader_epoch: LeaderEpoch,
        isr: Vec<BrokerId>,
    },
    /// Controlled shutdown: move leadership off `broker` and take it out of every ISR; it
    /// is not unfenced again until it registers anew. Answered `Done` once applied.
    ShutdownBroker {
        broker: BrokerId,
        epoch: BrokerEpoch,
    },
    /// The broker (after its controlled shutdown) has stopped serving: fence it now, so
    /// what only it held is offline at once instead of after the session timeout.
    BrokerStopped {
        broker: BrokerId,
        epoch: BrokerEpoch,
    },
    /// Adds ACL bindings (CreateAcls), each already checked by the broker; bindings the
    /// image has already are done. Refused whole when the cluster would hold more than
    /// `ACLS_MAX`. Answered `Done` once applied.
    CreateAcls {
        bindings: Vec<AclBinding>,
    },
    /// Removes every binding each filter selects in the controller's image (DeleteAcls).
    /// Answered `AclsDeleted` with each filter's bindings, once applied.
    DeleteAcls {
        filters: Vec<AclFilter>,
    },
    /// Sets (`Some`) or removes (`None`) `user`'s SCRAM credential for `mechanism`
    /// (AlterUserScramCredentials). Salted keys only; never a password.
    SetScram {
        user: String,
        mechanism: ScramMechanism,
        credential: Option<ScramCredential>,
    },
    /// Kafka's AlterPartitionReassignments: each target decided in order (a `None`
    /// replica list cancels). Answered with `Reply::Reassigned` once the changes are
    /// applied. `allow_rf_change: false` refuses targets that change a replica count.
    Reassign {
        allow_rf_change: bool,
        targets: Vec<ReassignTarget>,
    },
    /// Kafka's ListPartitionReassignments: the partitions being reassigned (`None`: all,
    /// else among the named ones). Answered with `Reply::Reassignments`.
    ListReassignments {
        partitions: Option<Vec<(String, Vec<i32>)>>,
    },
}

/// Partitions named by topic: `(topic, partition indexes)`.
pub type NamedPartitions = Vec<(String, Vec<i32>)>;

/// Why the controller refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    TopicExists,
    UnknownTopic,
    InvalidTopic,
    InvalidPartitions,
    InvalidReplicationFactor,
    InvalidRequest,
    /// A manual replica assignment names an unknown broker, a broker twice, an empty
    /// replica list, or replica counts that differ (Kafka's INVALID_REPLICA_ASSIGNMENT).
    InvalidReplicaAssignment,
    /// Not committed in time (or leadership changed meanwhile): retry.
    Timeout,
    Internal,
    /// A membership change that can never apply: a duplicate voter or address, an
    /// unknown controller, the last voter.
    InvalidMembership,
    /// Another membership change is under way (raft takes one at a time): retry later.
    MembershipBusy,
    /// `AlterPartition` from a broker that does not lead the partition at that leader
    /// epoch (an old leader, or an epoch the controller has moved past).
    FencedLeaderEpoch,
    /// `AlterPartition` adds a replica that may not join the ISR (unregistered, fenced or
    /// shutting down).
    IneligibleReplica,
    /// The broker epoch is not the one the broker is registered with: register again.
    StaleBrokerEpoch,
}

/// The quorum as one controller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QuorumStatus {
    pub node: u64,
    pub leader: Option<NodeId>,
    pub term: Term,
    pub commit_index: u64,
    pub applied_index: u64,
    pub voters: Vec<NodeId>,
    /// Members that receive the log without voting (controllers being added, removed
    /// controllers kept for their broker).
    pub learners: Vec<NodeId>,
}

/// The controller's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// This controller is not the active one; try `leader` (if known).
    NotLeader {
        leader: Option<NodeId>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
    Registered {
        epoch: BrokerEpoch,
    },
    Heartbeat {
        state: HeartbeatReply,
        quorum: QuorumStatus,
    },
    /// Done; the image reflects it from `offset` on.
    Done {
        offset: MetadataOffset,
    },
    /// An encoded image snapshot (`MetadataImage::encode_snapshot`), empty if unchanged.
    Image {
        snapshot: Vec<u8>,
    },
    Status(QuorumStatus),
    /// The bindings each filter of a `DeleteAcls` removed, in filter order; the image
    /// lacks them from `offset` on.
    AclsDeleted {
        offset: MetadataOffset,
        deleted: Vec<Vec<AclBinding>>,
    },
    /// The outcome of each partition of an `Elect`; the image has the elections from
    /// `offset` on.
    Elected {
        offset: MetadataOffset,
        results: Vec<PartitionElection>,
    },
    /// The outcome of each partition of a `Reassign`, in request order; the image has the
    /// changes from `offset` on.
    Reassigned {
        offset: MetadataOffset,
        results: Vec<PartitionReassigned>,
    },
    /// The answer to `ListReassignments`.
    Reassignments {
        ongoing: Vec<OngoingReassignment>,
    },
    /// The answer to `DescribeQuorum`, from the active controller.
    Quorum(QuorumProgress),
}

/// The quorum as its leader sees it (Kafka's DescribeQuorum answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumProgress {
    pub leader: NodeId,
    pub term: Term,
    /// The commit index (Kafka's high watermark of `__cluster_metadata`).
    pub commit_index: u64,
    pub voters: Vec<ReplicaProgress>,
    /// Members receiving the log without a vote (Kafka's observers).
    pub learners: Vec<ReplicaProgress>,
}

/// One partition's answer to `Request::Reassign`: `None` when done (or started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReassigned {
    pub topic: String,
    pub partition: i32,
    pub refusal: Option<ReassignRefusal>,
}

/// One partition's answer to `Request::Elect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionElection {
    pub topic: String,
    pub partition: i32,
    pub outcome: ElectionOutcome,
}

/// Why a request or answer could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("controller connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes exceeds the {max} byte bound")]
    TooLarge { len: usize, max: usize },
    #[error("frame checksum mismatch")]
    Checksum,
    #[error("bad message: {0}")]
    Decode(&'static str),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// A broker id and its epoch (`Dec::broker_and_epoch` reads them back).
    fn broker_and_epoch(&mut self, broker: BrokerId, epoch: BrokerEpoch) {
        self.i32(broker.0);
        self.u64(epoch.0 as u64);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn opt_str(&mut self, v: Option<&str>) {
        match v {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
    fn node(&mut self, v: Option<NodeId>) {
        self.u64(v.map_or(0, |n| n.0));
    }
    fn acl_binding(&mut self, b: &AclBinding) {
        self.u8(b.resource_type.id() as u8);
        self.str(&b.resource_name);
        self.u8(b.pattern.id() as u8);
        self.str(&b.principal);
        self.str(&b.host);
        self.u8(b.operation.id() as u8);
        self.u8(b.permission.id() as u8);
    }
    fn acl_filter(&mut self, f: &AclFilter) {
        self.u8(f.resource_type.id() as u8);
        self.opt_str(f.resource_name.as_deref());
        self.u8(f.pattern.id() as u8);
        self.opt_str(f.principal.as_deref());
        self.opt_str(f.host.as_deref());
        self.u8(f.operation.id() as u8);
        self.u8(f.permission.id() as u8);
    }
    /// A manual replica assignment, written only when there is one: a controller that
    /// predates it still reads every request without one.
    fn assignment(&mut self, a: &[Vec<BrokerId>]) {
        if a.is_empty() {
            return;
        }
        self.u32(a.len() as u32);
        for replicas in a {
            self.u32(replicas.len() as u32);
            for b in replicas {
                self.i32(b.0);
            }
        }
    }
    fn brokers(&mut self, v: &[BrokerId]) {
        self.u32(v.len() as u32);
        for b in v {
            self.i32(b.0);
        }
    }
    /// Named partitions (`(topic, partitions)`), or none (`None`: every one).
    fn opt_partitions(&mut self, v: Option<&[(String, Vec<i32>)]>) {
        match v {
            None => self.u8(0),
            Some(topics) => {
                self.u8(1);
                self.u32(topics.len() as u32);
                for (topic, ps) in topics {
                    self.str(topic);
                    self.u32(ps.len() as u32);
                    for p in ps {
                        self.i32(*p);
                    }
                }
            }
        }
    }
    fn quorum(&mut self, q: &QuorumStatus) {
        self.u64(q.node);
        self.node(q.leader);
        self.u64(q.term.0);
        self.u64(q.commit_index);
        self.u64(q.applied_index);
        for ids in [&q.voters, &q.learners] {
            self.u32(ids.len() as u32);
            for v in ids {
                self.u64(v.0);
            }
        }
    }
}

struct Dec<'a> {
    buf: &'a [u8],
}

const SHORT: RpcError = RpcError::Decode("message ends early");

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RpcError> {
        if n > self.buf.len() {
            return Err(SHORT);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RpcError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, RpcError> {
        Ok(self.array::<1>()?[0])
    }
    fn bool(&mut self) -> Result<bool, RpcError> {
        Ok(self.u8()? != 0)
    }
    fn i16(&mut self) -> Result<i16, RpcError> {
        Ok(i16::from_le_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, RpcError> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, RpcError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// A broker id and its epoch, as `Enc` writes them for broker requests.
    fn broker_and_epoch(&mut self) -> Result<(BrokerId, BrokerEpoch), RpcError> {
        Ok((BrokerId(self.i32()?), BrokerEpoch(self.u64()? as i64)))
    }

    fn u64(&mut self) -> Result<u64, RpcError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], RpcError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Result<String, RpcError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| RpcError::Decode("string not utf-8"))
    }
    fn opt_str(&mut self) -> Result<Option<String>, RpcError> {
        match self.u8()? {
            0 => Ok(None),
            _ => self.str().map(Some),
        }
    }
    /// A count of items each at least `min_bytes` long: bounded by the bytes left.
    fn count(&mut self, min_bytes: usize) -> Result<usize, RpcError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_bytes) > self.buf.len() {
            return Err(RpcError::Decode("count exceeds the message"));
        }
        Ok(n)
    }
    /// What `Enc::assignment` wrote: nothing left means no assignment.
    fn assignment(&mut self) -> Result<Vec<Vec<BrokerId>>, RpcError> {
        if self.buf.is_empty() {
            return Ok(Vec::new());
        }
        let n = self.count(4)?;
        (0..n)
            .map(|_| {
                let m = self.count(4)?;
                (0..m).map(|_| self.i32().map(BrokerId)).collect()
            })
            .collect()
    }
    fn brokers(&mut self) -> Result<Vec<BrokerId>, RpcError> {
        let n = self.count(4)?;
        (0..n).map(|_| self.i32().map(BrokerId)).collect()
    }
    /// What `Enc::opt_partitions` wrote.
    fn opt_partitions(&mut self) -> Result<Option<NamedPartitions>, RpcError> {
        if self.u8()? == 0 {
            return Ok(None);
        }
        let n = self.count(8)?;
        let topics = (0..n)
            .map(|_| {
                let topic = self.str()?;
                let m = self.count(4)?;
                let ps = (0..m).map(|_| self.i32()).collect::<Result<_, _>>()?;
                Ok((topic, ps))
            })
            .collect::<Result<_, RpcError>>()?;
        Ok(Some(topics))
    }
    fn acl_binding(&mut self) -> Result<AclBinding, RpcError> {
        Ok(AclBinding {
            resource_type: ResourceType::from_id(self.u8()? as i8),
            resource_name: self.str()?,
            pattern: PatternType::from_id(self.u8()? as i8),
            principal: self.str()?,
            host: self.str()?,
            operation: AclOperation::from_id(self.u8()? as i8),
            permission: AclPermission::from_id(self.u8()? as i8),
        })
    }
    fn acl_filter(&mut self) -> Result<AclFilter, RpcError> {
        Ok(AclFilter {
            resource_type: ResourceType::from_id(self.u8()? as i8),
            resource_name: self.opt_str()?,
            pattern: PatternType::from_id(self.u8()? as i8),
            principal: self.opt_str()?,
            host: self.opt_str()?,
            operation: AclOperation::from_id(self.u8()? as i8),
            permission: AclPermission::from_id(self.u8()? as i8),
        })
    }
    fn node(&mut self) -> Result<Option<NodeId>, RpcError> {
        let n = self.u64()?;
        Ok((n != 0).then_some(NodeId(n)))
    }
    fn quorum(&mut self) -> Result<QuorumStatus, RpcError> {
        let node = self.u64()?;
        let leader = self.node()?;
        let term = Term(self.u64()?);
        let commit_index = self.u64()?;
        let applied_index = self.u64()?;
        let voters = self.node_ids()?;
        let learners = self.node_ids()?;
        Ok(QuorumStatus {
            node,
            leader,
            term,
            commit_index,
            applied_index,
            voters,
            learners,
        })
    }
    /// What `Reply::Quorum` writes for a list of members.
    fn progress(&mut self) -> Result<Vec<ReplicaProgress>, RpcError> {
        let n = self.count(32)?;
        let time = |t: u64| (t != u64::MAX).then_some(t as i64);
        (0..n)
            .map(|_| {
                Ok(ReplicaProgress {
                    id: NodeId(self.u64()?),
                    log_end: self.u64()?,
                    last_fetch_ms: time(self.u64()?),
                    last_caught_up_ms: time(self.u64()?),
                })
            })
            .collect()
    }
    fn node_ids(&mut self) -> Result<Vec<NodeId>, RpcError> {
        let n = self.count(8)?;
        (0..n).map(|_| self.u64().map(NodeId)).collect()
    }
    fn end(&self) -> Result<(), RpcError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(RpcError::Decode("trailing bytes"))
        }
    }
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc(Vec::new());
        match self {
            Request::Register {
                broker,
                rack,
                listeners,
            } => {
                e.u8(1);
                e.i32(broker.0);
                e.opt_str(rack.as_deref());
                e.u32(listeners.len() as u32);
                for l in listeners {
                    e.str(&l.name);
                    e.str(&l.host);
                    e.0.extend_from_slice(&l.port.to_le_bytes());
                }
            }
            Request::Heartbeat { broker, epoch } => {
                e.u8(2);
                e.broker_and_epoch(*broker, *epoch);
            }
            Request::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
                topic_id,
                validate_only,
                assignment,
            } => {
                e.u8(3);
                e.str(name);
                e.i32(*partitions);
                e.i16(*replication_factor);
                e.u32(configs.len() as u32);
                for (k, v) in configs {
                    e.str(k);
                    e.str(v);
                }
                match topic_id {
                    Some(id) => {
                        e.u8(1);
                        e.0.extend_from_slice(&id.0.to_le_bytes());
                    }
                    None => e.u8(0),
                }
                e.u8(u8::from(*validate_only));
                e.assignment(assignment);
            }
            Request::DeleteTopic { name } => {
                e.u8(4);
                e.str(name);
            }
            Request::CreatePartitions {
                name,
                count,
                validate_only,
                assignment,
            } => {
                e.u8(5);
                e.str(name);
                e.i32(*count);
                e.u8(u8::from(*validate_only));
                e.assignment(assignment);
            }
            Request::SetConfigs {
                topic,
                configs,
                replace,
            } => {
                e.u8(6);
                e.str(topic);
                e.u32(configs.len() as u32);
                for (k, v) in configs {
                    e.str(k);
                    e.opt_str(v.as_deref());
                }
                e.u8(u8::from(*replace));
            }
            Request::SetGroupConfigs { group, configs } => {
                // Numbered apart from the others, so kinds added meanwhile elsewhere
                // do not take the same number.
                e.u8(40);
                e.str(group);
                e.u32(configs.len() as u32);
                for (k, v) in configs {
                    e.str(k);
                    e.opt_str(v.as_deref());
                }
            }
            Request::ElectLeaders => e.u8(7),
            Request::SetBrokerConfigs {
                broker,
                configs,
                replace,
            } => {
                e.u8(16);
                match broker {
                    Some(b) => {
                        e.u8(1);
                        e.i32(b.0);
                    }
                    None => e.u8(0),
                }
                e.u32(configs.len() as u32);
                for (k, v) in configs {
                    e.str(k);
                    e.opt_str(v.as_deref());
                }
                e.u8(u8::from(*replace));
            }
            Request::Elect {
                election,
                partitions,
            } => {
                e.u8(15);
                e.u8(match election {
                    ElectionType::Preferred => 0,
                    ElectionType::Unclean => 1,
                });
                e.opt_partitions(partitions.as_deref());
            }
            Request::FetchImage { have, wait_ms } => {
                e.u8(8);
                e.u64(have.0);
                e.u32(*wait_ms);
            }
            Request::Status => e.u8(9),
            Request::DescribeQuorum => e.u8(64),
            Request::AddController { id, host, port } => {
                e.u8(10);
                e.u64(id.0);
                e.str(host);
                e.0.extend_from_slice(&port.to_le_bytes());
            }
            Request::RemoveController { id } => {
                e.u8(11);
                e.u64(id.0);
            }
            Request::AlterPartition {
                broker,
                broker_epoch,
                topic,
                partition,
                leader_epoch,
                isr,
            } => {
                e.u8(12);
                e.i32(broker.0);
                e.u64(broker_epoch.0 as u64);
                e.str(topic);
                e.i32(*partition);
                e.i32(leader_epoch.0);
                e.u32(isr.len() as u32);
                for b in isr {
                    e.i32(b.0);
                }
            }
            Request::ShutdownBroker { broker, epoch } => {
                e.u8(13);
                e.broker_and_epoch(*broker, *epoch);
            }
            Request::BrokerStopped { broker, epoch } => {
                e.u8(14);
                e.broker_and_epoch(*broker, *epoch);
            }
            Request::SetScram {
                user,
                mechanism,
                credential,
            } => {
                // 16-31 are kept for the admin requests merged beside this one.
                e.u8(32);
                e.str(user);
                e.u8(mechanism.kafka_id() as u8);
                match credential {
                    Some(c) => {
                        e.u8(1);
                        e.bytes(&c.salt);
                        e.bytes(&c.stored_key);
                        e.bytes(&c.server_key);
                        e.i32(c.iterations);
                    }
                    None => e.u8(0),
                }
            }
            Request::Reassign {
                allow_rf_change,
                targets,
            } => {
                // 56 and 57: numbered apart from the kinds other admin requests take.
                e.u8(56);
                e.u8(u8::from(*allow_rf_change));
                e.u32(targets.len() as u32);
                for t in targets {
                    e.str(&t.topic);
                    e.i32(t.partition);
                    match &t.replicas {
                        None => e.u8(0),
                        Some(r) => {
                            e.u8(1);
                            e.brokers(r);
                        }
                    }
                }
            }
            Request::ListReassignments { partitions } => {
                e.u8(57);
                e.opt_partitions(partitions.as_deref());
            }
            Request::CreateAcls { bindings } => {
                e.u8(48);
                e.u32(bindings.len() as u32);
                for b in bindings {
                    e.acl_binding(b);
                }
            }
            Request::DeleteAcls { filters } => {
                e.u8(49);
                e.u32(filters.len() as u32);
                for f in filters {
                    e.acl_filter(f);
                }
            }
        }
        e.0
    }

    pub fn decode(buf: &[u8]) -> Result<Request, RpcError> {
        let mut d = Dec { buf };
        let r = match d.u8()? {
            1 => {
                let broker = BrokerId(d.i32()?);
                let rack = d.opt_str()?;
                let n = d.count(10)?;
                let mut listeners = Vec::with_capacity(n);
                for _ in 0..n {
                    let name = d.str()?;
                    let host = d.str()?;
                    let port = u16::from_le_bytes(d.array()?);
                    listeners.push(Listener { name, host, port });
                }
                Request::Register {
                    broker,
                    rack,
                    listeners,
                }
            }
            2 => {
                let (broker, epoch) = d.broker_and_epoch()?;
                Request::Heartbeat { broker, epoch }
            }
            3 => {
                let name = d.str()?;
                let partitions = d.i32()?;
                let replication_factor = d.i16()?;
                let n = d.count(8)?;
                let configs = (0..n)
                    .map(|_| Ok((d.str()?, d.str()?)))
                    .collect::<Result<_, RpcError>>()?;
                let topic_id = match d.u8()? {
                    0 => None,
                    _ => Some(TopicId(u128::from_le_bytes(d.array()?))),
                };
                Request::CreateTopic {
                    name,
                    partitions,
                    replication_factor,
                    configs,
                    topic_id,
                    validate_only: d.bool()?,
                    assignment: d.assignment()?,
                }
            }
            4 => Request::DeleteTopic { name: d.str()? },
            5 => Request::CreatePartitions {
                name: d.str()?,
                count: d.i32()?,
                validate_only: d.bool()?,
                assignment: d.assignment()?,
            },
            6 => {
                let topic = d.str()?;
                let n = d.count(5)?;
                let configs = (0..n)
                    .map(|_| Ok((d.str()?, d.opt_str()?)))
                    .collect::<Result<_, RpcError>>()?;
                Request::SetConfigs {
                    topic,
                    configs,
                    replace: d.u8()? != 0,
                }
            }
            40 => {
                let group = d.str()?;
                let n = d.count(5)?;
                let configs = (0..n)
                    .map(|_| Ok((d.str()?, d.opt_str()?)))
                    .collect::<Result<_, RpcError>>()?;
                Request::SetGroupConfigs { group, configs }
            }
            7 => Request::ElectLeaders,
            16 => {
                let broker = match d.u8()? {
                    0 => None,
                    _ => Some(BrokerId(d.i32()?)),
                };
                let n = d.count(5)?;
                let configs = (0..n)
                    .map(|_| Ok((d.str()?, d.opt_str()?)))
                    .collect::<Result<_, RpcError>>()?;
                Request::SetBrokerConfigs {
                    broker,
                    configs,
                    replace: d.bool()?,
                }
            }
            15 => {
                let election = match d.u8()? {
                    0 => ElectionType::Preferred,
                    1 => ElectionType::Unclean,
                    _ => return Err(RpcError::Decode("unknown election type")),
                };
                let partitions = d.opt_partitions()?;
                Request::Elect {
                    election,
                    partitions,
                }
            }
            8 => Request::FetchImage {
                have: MetadataOffset(d.u64()?),
                wait_ms: d.u32()?,
            },
            9 => Request::Status,
            64 => Request::DescribeQuorum,
            10 => Request::AddController {
                id: NodeId(d.u64()?),
                host: d.str()?,
                port: u16::from_le_bytes(d.array()?),
            },
            11 => Request::RemoveController {
                id: NodeId(d.u64()?),
            },
            12 => {
                let broker = BrokerId(d.i32()?);
                let broker_epoch = BrokerEpoch(d.u64()? as i64);
                let topic = d.str()?;
                let partition = d.i32()?;
                let leader_epoch = LeaderEpoch(d.i32()?);
                let n = d.count(4)?;
                let isr = (0..n)
                    .map(|_| d.i32().map(BrokerId))
                    .collect::<Result<_, _>>()?;
                Request::AlterPartition {
                    broker,
                    broker_epoch,
                    topic,
                    partition,
                    leader_epoch,
                    isr,
                }
            }
            13 => {
                let (broker, epoch) = d.broker_and_epoch()?;
                Request::ShutdownBroker { broker, epoch }
            }
            14 => {
                let (broker, epoch) = d.broker_and_epoch()?;
                Request::BrokerStopped { broker, epoch }
            }
            32 => {
                let user = d.str()?;
                let mechanism = ScramMechanism::from_kafka_id(d.u8()? as i8)
                    .ok_or(RpcError::Decode("unknown SCRAM mechanism"))?;
                let credential = match d.u8()? {
                    0 => None,
                    _ => Some(ScramCredential {
                        salt: d.bytes()?.to_vec(),
                        stored_key: d.bytes()?.to_vec(),
                        server_key: d.bytes()?.to_vec(),
                        iterations: d.i32()?,
                    }),
                };
                Request::SetScram {
                    user,
                    mechanism,
                    credential,
                }
            }
            56 => {
                let allow_rf_change = d.bool()?;
                let n = d.count(9)?;
                let targets = (0..n)
                    .map(|_| {
                        let topic = d.str()?;
                        let partition = d.i32()?;
                        let replicas = match d.u8()? {
                            0 => None,
                            _ => Some(d.brokers()?),
                        };
                        Ok(ReassignTarget {
                            topic,
                            partition,
                            replicas,
                        })
                    })
                    .collect::<Result<_, RpcError>>()?;
                Request::Reassign {
                    allow_rf_change,
                    targets,
                }
            }
            57 => Request::ListReassignments {
                partitions: d.opt_partitions()?,
            },
            48 => {
                let n = d.count(19)?;
                let bindings = (0..n).map(|_| d.acl_binding()).collect::<Result<_, _>>()?;
                Request::CreateAcls { bindings }
            }
            49 => {
                let n = d.count(7)?;
                let filters = (0..n).map(|_| d.acl_filter()).collect::<Result<_, _>>()?;
                Request::DeleteAcls { filters }
            }
            _ => return Err(RpcError::Decode("unknown request kind")),
        };
        d.end()?;
        Ok(r)
    }
}

fn error_kind_code(k: ErrorKind) -> u8 {
    match k {
        ErrorKind::TopicExists => 1,
        ErrorKind::UnknownTopic => 2,
        ErrorKind::InvalidTopic => 3,
        ErrorKind::InvalidPartitions => 4,
        ErrorKind::InvalidReplicationFactor => 5,
        ErrorKind::InvalidRequest => 6,
        ErrorKind::Timeout => 7,
        ErrorKind::Internal => 8,
        ErrorKind::InvalidMembership => 9,
        ErrorKind::MembershipBusy => 10,
        ErrorKind::FencedLeaderEpoch => 11,
        ErrorKind::IneligibleReplica => 12,
        ErrorKind::StaleBrokerEpoch => 13,
        ErrorKind::InvalidReplicaAssignment => 14,
    }
}

fn error_kind_from(c: u8) -> Result<ErrorKind, RpcError> {
    Ok(match c {
        1 => ErrorKind::TopicExists,
        2 => ErrorKind::UnknownTopic,
        3 => ErrorKind::InvalidTopic,
        4 => ErrorKind::InvalidPartitions,
        5 => ErrorKind::InvalidReplicationFactor,
        6 => ErrorKind::InvalidRequest,
        7 => ErrorKind::Timeout,
        8 => ErrorKind::Internal,
        9 => ErrorKind::InvalidMembership,
        10 => ErrorKind::MembershipBusy,
        11 => ErrorKind::FencedLeaderEpoch,
        12 => ErrorKind::IneligibleReplica,
        13 => ErrorKind::StaleBrokerEpoch,
        14 => ErrorKind::InvalidReplicaAssignment,
        _ => return Err(RpcError::Decode("unknown error kind")),
    })
}

/// A reassignment refusal's kind on the wire (0 is none).
fn refusal_code(r: &ReassignRefusal) -> u8 {
    match r {
        ReassignRefusal::UnknownTopicOrPartition(_) => 1,
        ReassignRefusal::NoReassignmentInProgress => 2,
        ReassignRefusal::InvalidReplicaAssignment(_) => 3,
        ReassignRefusal::InvalidReplicationFactor(_) => 4,
    }
}

fn refusal_from(kind: u8, message: String) -> Result<Option<ReassignRefusal>, RpcError> {
    Ok(Some(match kind {
        0 => return Ok(None),
        1 => ReassignRefusal::UnknownTopicOrPartition(message),
        2 => ReassignRefusal::NoReassignmentInProgress,
        3 => ReassignRefusal::InvalidReplicaAssignment(message),
        4 => ReassignRefusal::InvalidReplicationFactor(message),
        _ => return Err(RpcError::Decode("unknown reassignment refusal")),
    }))
}

impl Reply {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc(Vec::new());
        match self {
            Reply::NotLeader { leader } => {
                e.u8(1);
                e.node(*leader);
            }
            Reply::Error { kind, message } => {
                e.u8(2);
                e.u8(error_kind_code(*kind));
                e.str(message);
            }
            Reply::Registered { epoch } => {
                e.u8(3);
                e.u64(epoch.0 as u64);
            }
            Reply::Heartbeat { state, quorum } => {
                e.u8(4);
                e.u8(match state {
                    HeartbeatReply::Active => 0,
                    HeartbeatReply::Fenced => 1,
                    HeartbeatReply::RegisterAgain => 2,
                    HeartbeatReply::NotYetKnown => 3,
                });
                e.quorum(quorum);
            }
            Reply::Done { offset } => {
                e.u8(5);
                e.u64(offset.0);
            }
            Reply::Image { snapshot } => {
                e.u8(6);
                e.bytes(snapshot);
            }
            Reply::Status(q) => {
                e.u8(7);
                e.quorum(q);
            }
            Reply::Elected { offset, results } => {
                e.u8(8);
                e.u64(offset.0);
                e.u32(results.len() as u32);
                for r in results {
                    e.str(&r.topic);
                    e.i32(r.partition);
                    e.u8(match r.outcome {
                        ElectionOutcome::Elected => 0,
                        ElectionOutcome::NotNeeded => 1,
                        ElectionOutcome::PreferredNotAvailable => 2,
                        ElectionOutcome::EligibleLeadersNotAvailable => 3,
                        ElectionOutcome::UnknownPartition => 4,
                    });
                }
            }
            Reply::Reassigned { offset, results } => {
                // Numbered as the request kinds they answer (56, 57).
                e.u8(56);
                e.u64(offset.0);
                e.u32(results.len() as u32);
                for r in results {
                    e.str(&r.topic);
                    e.i32(r.partition);
                    let (kind, message) = match &r.refusal {
                        None => (0, String::new()),
                        Some(refusal) => (refusal_code(refusal), refusal.to_string()),
                    };
                    e.u8(kind);
                    e.str(&message);
                }
            }
            Reply::Reassignments { ongoing } => {
                e.u8(57);
                e.u32(ongoing.len() as u32);
                for o in ongoing {
                    e.str(&o.topic);
                    e.i32(o.partition);
                    e.brokers(&o.replicas);
                    e.brokers(&o.adding_replicas);
                    e.brokers(&o.removing_replicas);
                }
            }
            Reply::Quorum(q) => {
                e.u8(64);
                e.u64(q.leader.0);
                e.u64(q.term.0);
                e.u64(q.commit_index);
                for members in [&q.voters, &q.learners] {
                    e.u32(members.len() as u32);
                    for m in members {
                        e.u64(m.id.0);
                        e.u64(m.log_end);
                        e.u64(m.last_fetch_ms.map_or(u64::MAX, |t| t as u64));
                        e.u64(m.last_caught_up_ms.map_or(u64::MAX, |t| t as u64));
                    }
                }
            }
            Reply::AclsDeleted { offset, deleted } => {
                e.u8(48);
                e.u64(offset.0);
                e.u32(deleted.len() as u32);
                for bindings in deleted {
                    e.u32(bindings.len() as u32);
                    for b in bindings {
                        e.acl_binding(b);
                    }
                }
            }
        }
        e.0
    }

    pub fn decode(buf: &[u8]) -> Result<Reply, RpcError> {
        let mut d = Dec { buf };
        let r = match d.u8()? {
            1 => Reply::NotLeader { leader: d.node()? },
            2 => Reply::Error {
                kind: error_kind_from(d.u8()?)?,
                message: d.str()?,
            },
            3 => Reply::Registered {
                epoch: BrokerEpoch(d.u64()? as i64),
            },
            4 => {
                let state = match d.u8()? {
                    0 => HeartbeatReply::Active,
                    1 => HeartbeatReply::Fenced,
                    2 => HeartbeatReply::RegisterAgain,
                    3 => HeartbeatReply::NotYetKnown,
                    _ => return Err(RpcError::Decode("unknown heartbeat state")),
                };
                Reply::Heartbeat {
                    state,
                    quorum: d.quorum()?,
                }
            }
            5 => Reply::Done {
                offset: MetadataOffset(d.u64()?),
            },
            6 => Reply::Image {
                snapshot: d.bytes()?.to_vec(),
            },
            7 => Reply::Status(d.quorum()?),
            64 => Reply::Quorum(QuorumProgress {
                leader: NodeId(d.u64()?),
                term: Term(d.u64()?),
                commit_index: d.u64()?,
                voters: d.progress()?,
                learners: d.progress()?,
            }),
            8 => {
                let offset = MetadataOffset(d.u64()?);
                let n = d.count(9)?;
                let results = (0..n)
                    .map(|_| {
                        Ok(PartitionElection {
                            topic: d.str()?,
                            partition: d.i32()?,
                            outcome: match d.u8()? {
                                0 => ElectionOutcome::Elected,
                                1 => ElectionOutcome::NotNeeded,
                                2 => ElectionOutcome::PreferredNotAvailable,
                                3 => ElectionOutcome::EligibleLeadersNotAvailable,
                                4 => ElectionOutcome::UnknownPartition,
                                _ => return Err(RpcError::Decode("unknown election outcome")),
                            },
                        })
                    })
                    .collect::<Result<_, RpcError>>()?;
                Reply::Elected { offset, results }
            }
            56 => {
                let offset = MetadataOffset(d.u64()?);
                let n = d.count(13)?;
                let results = (0..n)
                    .map(|_| {
                        let topic = d.str()?;
                        let partition = d.i32()?;
                        let kind = d.u8()?;
                        let message = d.str()?;
                        Ok(PartitionReassigned {
                            topic,
                            partition,
                            refusal: refusal_from(kind, message)?,
                        })
                    })
                    .collect::<Result<_, RpcError>>()?;
                Reply::Reassigned { offset, results }
            }
            57 => {
                let n = d.count(20)?;
                let ongoing = (0..n)
                    .map(|_| {
                        Ok(OngoingReassignment {
                            topic: d.str()?,
                            partition: d.i32()?,
                            replicas: d.brokers()?,
                            adding_replicas: d.brokers()?,
                            removing_replicas: d.brokers()?,
                        })
                    })
                    .collect::<Result<_, RpcError>>()?;
                Reply::Reassignments { ongoing }
            }
            48 => {
                let offset = MetadataOffset(d.u64()?);
                let n = d.count(4)?;
                let deleted = (0..n)
                    .map(|_| {
                        let m = d.count(19)?;
                        (0..m).map(|_| d.acl_binding()).collect()
                    })
                    .collect::<Result<_, RpcError>>()?;
                Reply::AclsDeleted { offset, deleted }
            }
            _ => return Err(RpcError::Decode("unknown reply kind")),
        };
        d.end()?;
        Ok(r)
    }
}

/// Frames a body: `len | crc32c | body`.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The first complete frame's body in `buf` and the bytes it used; `None` if incomplete.
pub fn unframe(buf: &[u8]) -> Result<Option<(&[u8], usize)>, RpcError> {
    let Some(head) = buf.get(..HEADER_BYTES) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > RPC_FRAME_BYTES_MAX {
        return Err(RpcError::TooLarge {
            len,
            max: RPC_FRAME_BYTES_MAX,
        });
    }
    let Some(body) = buf.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Ok(None);
    };
    if crc32c::crc32c(body) != crc {
        return Err(RpcError::Checksum);
    }
    Ok(Some((body, HEADER_BYTES + len)))
}

/// Reads one frame body from an async stream; `Ok(None)` on a clean end of stream.
pub async fn read_frame<S: futures_lite::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Option<Vec<u8>>, RpcError> {
    let mut chunk = [0u8; 16 << 10];
    loop {
        if let Some((body, used)) = unframe(buf)? {
            let body = body.to_vec();
            buf.drain(..used);
            return Ok(Some(body));
        }
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS peer gone without close_notify between frames ends the stream as a
            // plain close does (frames delimit and checksum themselves).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && buf.is_empty() => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return if buf.is_empty() { Ok(None) } else { Err(SHORT) };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One request to the controller at `addr` on a new connection (glommio), bounded by
/// `timeout`; with `tls` (`[cluster_tls]`) over mutual TLS.
pub async fn call(
    addr: std::net::SocketAddr,
    tls: Option<&ClusterTls>,
    request: &Request,
    timeout: Duration,
) -> Result<Reply, RpcError> {
    let exchange = async {
        let host = addr.ip().to_string();
        let mut stream = ClusterStream::connect(tls, &host, addr.port(), timeout).await?;
        let mut out = RPC_MAGIC.to_vec();
        out.extend_from_slice(&frame(&request.encode()));
        stream.write_all(&out).await?;
        stream.flush().await?;
        let mut buf = Vec::new();
        let reply = match read_frame(&mut stream, &mut buf).await? {
            Some(body) => Reply::decode(&body),
            None => Err(SHORT),
        };
        // TLS: close_notify, so the controller sees a clean end.
        let _ = stream.close().await;
        reply
    };
    futures_lite::future::or(exchange, async {
        glommio::timer::sleep(timeout).await;
        Err(RpcError::Timeout(timeout))
    })
    .await
}

/// One request with blocking std I/O (for threads outside glommio: the admin endpoint, the
/// command-line tools); with `tls` over mutual TLS.
pub fn call_blocking(
    addr: std::net::SocketAddr,
    tls: Option<&ClusterTls>,
    request: &Request,
    timeout: Duration,
) -> Result<Reply, RpcError> {
    use std::io::{Read, Write};
    let mut stream = BlockingStream::connect(tls, addr, timeout)?;
    let mut out = RPC_MAGIC.to_vec();
    out.extend_from_slice(&frame(&request.encode()));
    stream.write_all(&out)?;
    stream.flush()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        if let Some((body, _)) = unframe(&buf)? {
            return Reply::decode(body);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(SHORT);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_binding() -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: "payments".into(),
            pattern: PatternType::Prefixed,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        }
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let requests = vec![
            Request::Register {
                broker: BrokerId(3),
                rack: Some("r1".into()),
                listeners: vec![Listener {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: 9092,
                }],
            },
            Request::Heartbeat {
                broker: BrokerId(1),
                epoch: BrokerEpoch(42),
            },
            Request::CreateTopic {
                name: "t".into(),
                partitions: 3,
                replication_factor: 2,
                configs: vec![("retention.ms".into(), "1".into())],
                topic_id: Some(TopicId(7)),
                validate_only: true,
                assignment: vec![],
            },
            Request::CreateTopic {
                name: "m".into(),
                partitions: -1,
                replication_factor: -1,
                configs: vec![],
                topic_id: None,
                validate_only: false,
                assignment: vec![vec![BrokerId(1), BrokerId(2)], vec![BrokerId(2)]],
            },
            Request::DeleteTopic { name: "t".into() },
            Request::CreatePartitions {
                name: "t".into(),
                count: 9,
                validate_only: false,
                assignment: vec![],
            },
            Request::CreatePartitions {
                name: "t".into(),
                count: 10,
                validate_only: true,
                assignment: vec![vec![BrokerId(3)]],
            },
            Request::SetConfigs {
                topic: "t".into(),
                configs: vec![("a".into(), None), ("b".into(), Some("c".into()))],
                replace: true,
            },
            Request::SetGroupConfigs {
                group: "g".into(),
                configs: vec![("consumer.session.timeout.ms".into(), Some("9000".into()))],
            },
            Request::ElectLeaders,
            Request::SetBrokerConfigs {
                broker: Some(BrokerId(2)),
                configs: vec![("log.retention.ms".into(), Some("5".into()))],
                replace: false,
            },
            Request::SetBrokerConfigs {
                broker: None,
                configs: vec![("log.segment.bytes".into(), None)],
                replace: true,
            },
            Request::Elect {
                election: ElectionType::Unclean,
                partitions: Some(vec![("t".into(), vec![0, 2]), ("u".into(), vec![])]),
            },
            Request::Elect {
                election: ElectionType::Preferred,
                partitions: None,
            },
            Request::Reassign {
                allow_rf_change: false,
                targets: vec![
                    ReassignTarget {
                        topic: "t".into(),
                        partition: 1,
                        replicas: Some(vec![BrokerId(2), BrokerId(3)]),
                    },
                    ReassignTarget {
                        topic: "u".into(),
                        partition: 0,
                        replicas: None,
                    },
                ],
            },
            Request::ListReassignments { partitions: None },
            Request::ListReassignments {
                partitions: Some(vec![("t".into(), vec![1])]),
            },
            Request::SetScram {
                user: "alice".into(),
                mechanism: ScramMechanism::Sha512,
                credential: Some(ScramCredential {
                    salt: vec![1, 2, 3],
                    stored_key: vec![4; 64],
                    server_key: vec![5; 64],
                    iterations: 4096,
                }),
            },
            Request::SetScram {
                user: "bob".into(),
                mechanism: ScramMechanism::Sha256,
                credential: None,
            },
            Request::CreateAcls {
                bindings: vec![test_binding()],
            },
            Request::DeleteAcls {
                filters: vec![AclFilter {
                    resource_type: ResourceType::Any,
                    resource_name: None,
                    pattern: PatternType::Match,
                    principal: Some("User:a".into()),
                    host: None,
                    operation: AclOperation::Any,
                    permission: AclPermission::Any,
                }],
            },
            Request::FetchImage {
                have: MetadataOffset(5),
                wait_ms: 100,
            },
            Request::Status,
            Request::AddController {
                id: NodeId(4),
                host: "10.0.0.4".into(),
                port: 9093,
            },
            Request::RemoveController { id: NodeId(2) },
            Request::AlterPartition {
                broker: BrokerId(2),
                broker_epoch: BrokerEpoch(77),
                topic: "orders".into(),
                partition: 4,
                leader_epoch: LeaderEpoch(3),
                isr: vec![BrokerId(2), BrokerId(1), BrokerId(3)],
            },
            Request::AlterPartition {
                broker: BrokerId(0),
                broker_epoch: BrokerEpoch(1),
                topic: String::new(),
                partition: 0,
                leader_epoch: LeaderEpoch(0),
                isr: Vec::new(),
            },
            Request::ShutdownBroker {
                broker: BrokerId(3),
                epoch: BrokerEpoch(12),
            },
            Request::BrokerStopped {
                broker: BrokerId(3),
                epoch: BrokerEpoch(12),
            },
            Request::DescribeQuorum,
        ];
        for r in requests {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
        let q = QuorumStatus {
            node: 2,
            leader: Some(NodeId(1)),
            term: Term(4),
            commit_index: 10,
            applied_index: 9,
            voters: vec![NodeId(1), NodeId(2)],
            learners: vec![NodeId(5)],
        };
        let replies = vec![
            Reply::NotLeader { leader: None },
            Reply::Error {
                kind: ErrorKind::TopicExists,
                message: "x".into(),
            },
            Reply::Error {
                kind: ErrorKind::InvalidMembership,
                message: "last voter".into(),
            },
            Reply::Error {
                kind: ErrorKind::MembershipBusy,
                message: "busy".into(),
            },
            Reply::Registered {
                epoch: BrokerEpoch(9),
            },
            Reply::Heartbeat {
                state: HeartbeatReply::Fenced,
                quorum: q.clone(),
            },
            Reply::Done {
                offset: MetadataOffset(3),
            },
            Reply::Image {
                snapshot: vec![1, 2, 3],
            },
            Reply::Status(q),
            Reply::Quorum(QuorumProgress {
                leader: NodeId(1),
                term: Term(3),
                commit_index: 40,
                voters: vec![ReplicaProgress {
                    id: NodeId(1),
                    log_end: 41,
                    last_fetch_ms: Some(1_700_000_000_000),
                    last_caught_up_ms: None,
                }],
                learners: Vec::new(),
            }),
            Reply::Error {
                kind: ErrorKind::FencedLeaderEpoch,
                message: "old leader".into(),
            },
            Reply::Error {
                kind: ErrorKind::IneligibleReplica,
                message: "fenced".into(),
            },
            Reply::Error {
                kind: ErrorKind::StaleBrokerEpoch,
                message: "register again".into(),
            },
            Reply::Error {
                kind: ErrorKind::InvalidReplicaAssignment,
                message: "broker 9 is not registered".into(),
            },
            Reply::Elected {
                offset: MetadataOffset(12),
                results: vec![
                    PartitionElection {
                        topic: "t".into(),
                        partition: 1,
                        outcome: ElectionOutcome::PreferredNotAvailable,
                    },
                    PartitionElection {
                        topic: "t".into(),
                        partition: 2,
                        outcome: ElectionOutcome::Elected,
                    },
                ],
            },
            Reply::Reassigned {
                offset: MetadataOffset(40),
                results: vec![
                    PartitionReassigned {
                        topic: "t".into(),
                        partition: 0,
                        refusal: None,
                    },
                    PartitionReassigned {
                        topic: "t".into(),
                        partition: 1,
                        refusal: Some(ReassignRefusal::NoReassignmentInProgress),
                    },
                    PartitionReassigned {
                        topic: "t".into(),
                        partition: 2,
                        refusal: Some(ReassignRefusal::InvalidReplicaAssignment("dup".into())),
                    },
                ],
            },
            Reply::Reassignments {
                ongoing: vec![OngoingReassignment {
                    topic: "t".into(),
                    partition: 3,
                    replicas: vec![BrokerId(2), BrokerId(3), BrokerId(1)],
                    adding_replicas: vec![BrokerId(3)],
                    removing_replicas: vec![BrokerId(1)],
                }],
            },
            Reply::AclsDeleted {
                offset: MetadataOffset(13),
                deleted: vec![vec![test_binding()], vec![]],
            },
        ];
        for r in replies {
            assert_eq!(Reply::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn truncated_or_lying_bodies_are_errors() {
        let body = Request::CreateTopic {
            name: "topic".into(),
            partitions: 1,
            replication_factor: 1,
            configs: vec![("k".into(), "v".into())],
            topic_id: None,
            validate_only: false,
            assignment: vec![],
        }
        .encode();
        for cut in 0..body.len() {
            assert!(Request::decode(&body[..cut]).is_err(), "cut at {cut}");
        }
        // A count far beyond the bytes present.
        let lying = [6u8, 1, 0, 0, 0, b't', 0xff, 0xff, 0xff, 0x7f];
        assert!(Request::decode(&lying).is_err());
        let mut framed = frame(&body);
        framed[9] ^= 1;
        assert!(matches!(unframe(&framed), Err(RpcError::Checksum)));
        let alter = Request::AlterPartition {
            broker: BrokerId(1),
            broker_epoch: BrokerEpoch(5),
            topic: "t".into(),
            partition: 0,
            leader_epoch: LeaderEpoch(2),
            isr: vec![BrokerId(1), BrokerId(2)],
        }
        .encode();
        for cut in 0..alter.len() {
            assert!(Request::decode(&alter[..cut]).is_err(), "cut at {cut}");
        }
        // An ISR count far beyond the bytes present is refused before allocating.
        let mut lying_isr = alter[..alter.len() - 12].to_vec();
        lying_isr.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Request::decode(&lying_isr),
            Err(RpcError::Decode("count exceeds the message"))
        ));
        let mut shutdown = Request::ShutdownBroker {
            broker: BrokerId(1),
            epoch: BrokerEpoch(5),
        }
        .encode();
        shutdown.push(0);
        assert!(matches!(
            Request::decode(&shutdown),
            Err(RpcError::Decode("trailing bytes"))
        ));
        let huge = [0xffu8, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert!(matches!(unframe(&huge), Err(RpcError::TooLarge { .. })));
    }
}
