//! One answer per broker request, decided on the active controller from its latest
//! image, and the waits until the proposed records are applied.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::membership::{add_controller, remove_controller};
use super::records::{
    add_partitions, create_topic_records, resource_config_records, unknown_topic, TopicSpec,
};
use super::{quorum_status, NodeState, APPLY_POLL, FETCH_IMAGE_WAIT_MS_MAX};
use crate::acl::{AclBinding, AclFilter, ACLS_MAX};
use crate::active::Leaving;
use crate::controller::{Controller, ControllerError};
use crate::election::{requested_election, ElectionKind, ElectionOutcome, ElectionType};
use crate::image::MetadataImage;
use crate::isr::{IsrChange, IsrRefusal};
use crate::reassign::ReassignTarget;
use crate::records::{ConfigResource, Listener, Record, ScramCredential, ScramMechanism};
use crate::rpc::{
    ErrorKind, PartitionElection, PartitionReassigned, QuorumProgress, Reply, Request,
};
use crate::tcp::Event;
use crate::types::{BrokerEpoch, BrokerId, MetadataOffset, PartitionId, Term};

pub(super) fn refuse(kind: ErrorKind, message: impl Into<String>) -> Reply {
    Reply::Error {
        kind,
        message: message.into(),
    }
}

pub(super) fn controller_error(e: ControllerError) -> Reply {
    match e {
        ControllerError::NotLeader { leader } => Reply::NotLeader { leader },
        other => refuse(ErrorKind::Internal, other.to_string()),
    }
}

/// Answers one broker request. Reads (image fetches, status) are answered by any node;
/// every other request only by the active controller, and (heartbeats aside) only once
/// every earlier decision is applied.
pub(super) async fn handle(state: &Rc<NodeState>, req: Request) -> Reply {
    match req {
        Request::FetchImage { have, wait_ms } => return fetch_image(state, have, wait_ms).await,
        Request::Status => return Reply::Status(quorum_status(&state.ctl.borrow())),
        Request::DescribeQuorum => return describe_quorum(&state.ctl.borrow()),
        _ => {}
    }
    {
        let c = state.ctl.borrow();
        if !c.is_leader() {
            return Reply::NotLeader { leader: c.leader() };
        }
    }
    // Every decision below is made from the image: it must hold what is already in the log
    // (a new leader's predecessor's entries, this leader's own proposals). Heartbeats only
    // record liveness.
    if !matches!(req, Request::Heartbeat { .. }) && !settled(state).await {
        return refuse(
            ErrorKind::Timeout,
            "earlier metadata changes not applied in time",
        );
    }
    decide(state, req).await
}

/// The active controller's answer to a request that changes (or checks) metadata.
async fn decide(state: &Rc<NodeState>, req: Request) -> Reply {
    match req {
        Request::Register {
            broker,
            rack,
            listeners,
        } => register(state, broker, rack, listeners).await,
        Request::Heartbeat { broker, epoch } => heartbeat(state, broker, epoch),
        Request::CreateTopic {
            name,
            partitions,
            replication_factor,
            configs,
            topic_id,
            validate_only,
            assignment,
        } => {
            let spec = TopicSpec {
                name: &name,
                partitions,
                replication_factor,
                configs: &configs,
                topic_id,
                assignment: &assignment,
            };
            let image = state.ctl.borrow().image();
            let decided = create_topic_records(&image, &spec);
            commit_decided(state, &image, decided, validate_only).await
        }
        Request::DeleteTopic { name } => delete_topic(state, &name).await,
        Request::CreatePartitions {
            name,
            count,
            validate_only,
            assignment,
        } => {
            let image = state.ctl.borrow().image();
            let decided = add_partitions(&image, &name, count, &assignment);
            commit_decided(state, &image, decided, validate_only).await
        }
        Request::SetConfigs {
            topic,
            configs,
            replace,
        } => set_configs(state, &topic, configs, replace).await,
        Request::SetGroupConfigs { group, configs } => {
            set_group_configs(state, &group, configs).await
        }
        Request::SetBrokerConfigs {
            broker,
            configs,
            replace,
        } => set_broker_configs(state, broker, configs, replace).await,
        Request::ElectLeaders => elect_leaders(state).await,
        Request::Elect {
            election,
            partitions,
        } => elect(state, election, partitions).await,
        Request::SetScram {
            user,
            mechanism,
            credential,
        } => set_scram(state, user, mechanism, credential).await,
        Request::Reassign {
            allow_rf_change,
            targets,
        } => reassign(state, allow_rf_change, &targets).await,
        Request::ListReassignments { partitions } => {
            let image = state.ctl.borrow().image();
            Reply::Reassignments {
                ongoing: crate::reassign::ongoing(&image, partitions.as_deref()),
            }
        }
        Request::CreateAcls { bindings } => create_acls(state, bindings).await,
        Request::DeleteAcls { filters } => delete_acls(state, &filters).await,
        Request::AddController { id, host, port } => add_controller(state, id, &host, port).await,
        Request::RemoveController { id } => remove_controller(state, id).await,
        Request::AlterPartition {
            broker,
            broker_epoch,
            topic,
            partition,
            leader_epoch,
            isr,
        } => {
            let change = IsrChange {
                broker,
                broker_epoch,
                topic: &topic,
                partition: PartitionId(partition),
                leader_epoch,
                isr: &isr,
            };
            alter_partition(state, &change).await
        }
        Request::ShutdownBroker { broker, epoch } => {
            leaving_broker(state, broker, epoch, Leaving::Shutdown).await
        }
        Request::BrokerStopped { broker, epoch } => {
            leaving_broker(state, broker, epoch, Leaving::Stopped).await
        }
        Request::FetchImage { .. } | Request::Status | Request::DescribeQuorum => {
            refuse(ErrorKind::Internal, "answered above")
        }
    }
}

/// `DescribeQuorum`: the members' progress, from the active controller only.
fn describe_quorum(ctl: &Controller) -> Reply {
    match ctl.quorum_progress() {
        Some((voters, learners)) => Reply::Quorum(QuorumProgress {
            leader: ctl.id(),
            term: ctl.term(),
            commit_index: ctl.commit_index(),
            voters,
            learners,
        }),
        None => Reply::NotLeader {
            leader: ctl.leader(),
        },
    }
}

/// `Register`: a new broker epoch, answered once its record is applied.
async fn register(
    state: &NodeState,
    broker: BrokerId,
    rack: Option<String>,
    listeners: Vec<Listener>,
) -> Reply {
    let proposed = {
        let mut c = state.ctl.borrow_mut();
        let epoch = state.brokers.borrow_mut().register(
            &mut c,
            broker,
            rack.clone(),
            listeners,
            state.now(),
        );
        epoch.map(|e| (e, c.term(), c.last_index()))
    };
    match proposed {
        Ok((epoch, term, target)) => {
            tracing::info!(broker = broker.0, epoch = epoch.0, rack = ?rack, "broker registering");
            match wait_applied(state, term, target).await {
                Reply::Done { .. } => Reply::Registered { epoch },
                other => other,
            }
        }
        Err(e) => controller_error(e),
    }
}

/// `Heartbeat`: liveness only, answered at once with the broker's state and the quorum.
fn heartbeat(state: &NodeState, broker: BrokerId, epoch: BrokerEpoch) -> Reply {
    let c = state.ctl.borrow();
    let answer = state
        .brokers
        .borrow_mut()
        .heartbeat(&c, broker, epoch, state.now());
    Reply::Heartbeat {
        state: answer,
        quorum: quorum_status(&c),
    }
}

/// Commits what a check decided (nothing for a `validate_only` request), or its refusal.
async fn commit_decided(
    state: &NodeState,
    image: &MetadataImage,
    decided: Result<Vec<Record>, Reply>,
    validate_only: bool,
) -> Reply {
    match decided {
        Ok(_) if validate_only => Reply::Done {
            offset: image.offset(),
        },
        Ok(records) => commit_changes(state, image, &records).await,
        Err(reply) => reply,
    }
}

/// Commits `records`; with none, answers at once with the image's offset.
async fn commit_changes(state: &NodeState, image: &MetadataImage, records: &[Record]) -> Reply {
    if records.is_empty() {
        return Reply::Done {
            offset: image.offset(),
        };
    }
    commit(state, records).await
}

async fn delete_topic(state: &NodeState, name: &str) -> Reply {
    let image = state.ctl.borrow().image();
    match image.topic_by_name(name) {
        Some(t) => commit(state, &[Record::DeleteTopic { topic_id: t.id }]).await,
        None => unknown_topic(name),
    }
}

async fn set_configs(
    state: &NodeState,
    topic: &str,
    configs: Vec<(String, Option<String>)>,
    replace: bool,
) -> Reply {
    let image = state.ctl.borrow().image();
    if image.topic_by_name(topic).is_none() {
        return unknown_topic(topic);
    }
    let records = resource_config_records(&image, ConfigResource::Topic, topic, configs, replace);
    commit_changes(state, &image, &records).await
}

/// A consumer group's configs: any group id, whether or not the group exists yet (as in
/// Kafka); keys and values were validated by the broker.
async fn set_group_configs(
    state: &NodeState,
    group: &str,
    configs: Vec<(String, Option<String>)>,
) -> Reply {
    let image = state.ctl.borrow().image();
    let records = resource_config_records(&image, ConfigResource::Group, group, configs, false);
    commit_changes(state, &image, &records).await
}

/// A user's SCRAM credential set or removed; removing one that is not there is done.
async fn set_scram(
    state: &NodeState,
    user: String,
    mechanism: ScramMechanism,
    credential: Option<ScramCredential>,
) -> Reply {
    let image = state.ctl.borrow().image();
    let record = match credential {
        Some(credential) => {
            if let Some(why) = credential.problem(&user, mechanism) {
                return refuse(ErrorKind::InvalidRequest, why);
            }
            Record::UserScramCredential {
                user,
                mechanism,
                credential,
            }
        }
        None if image.scram_credential(&user, mechanism).is_none() => {
            return Reply::Done {
                offset: image.offset(),
            }
        }
        None => Record::RemoveUserScramCredential { user, mechanism },
    };
    commit(state, &[record]).await
}

/// New ACL bindings: those the image lacks are added, all or none (none when the cluster
/// would hold more than `ACLS_MAX`).
async fn create_acls(state: &NodeState, bindings: Vec<AclBinding>) -> Reply {
    let image = state.ctl.borrow().image();
    let mut fresh: Vec<AclBinding> = Vec::new();
    for b in bindings {
        if let Some(why) = b.problem() {
            return refuse(ErrorKind::InvalidRequest, why);
        }
        if !image.acls().contains(&b) && !fresh.contains(&b) {
            fresh.push(b);
        }
    }
    if fresh.is_empty() {
        return Reply::Done {
            offset: image.offset(),
        };
    }
    if image.acls().len() + fresh.len() > ACLS_MAX {
        return refuse(
            ErrorKind::InvalidRequest,
            format!(
                "{} more ACLs would exceed the cluster's {ACLS_MAX} (acls_max; {} stored)",
                fresh.len(),
                image.acls().len()
            ),
        );
    }
    let records: Vec<Record> = fresh
        .into_iter()
        .map(|binding| Record::AccessControlEntry { binding })
        .collect();
    commit(state, &records).await
}

/// Removes the bindings each filter selects; a binding two filters select is removed
/// once and listed under the first.
async fn delete_acls(state: &NodeState, filters: &[AclFilter]) -> Reply {
    let image = state.ctl.borrow().image();
    let mut taken: BTreeSet<&AclBinding> = BTreeSet::new();
    let mut deleted: Vec<Vec<AclBinding>> = Vec::with_capacity(filters.len());
    for f in filters {
        let mine: Vec<AclBinding> = image
            .acls()
            .matching(f)
            .filter(|b| taken.insert(*b))
            .cloned()
            .collect();
        deleted.push(mine);
    }
    let records: Vec<Record> = deleted
        .iter()
        .flatten()
        .map(|b| Record::RemoveAccessControlEntry { binding: b.clone() })
        .collect();
    if records.is_empty() {
        return Reply::AclsDeleted {
            offset: image.offset(),
            deleted,
        };
    }
    match commit(state, &records).await {
        Reply::Done { offset } => Reply::AclsDeleted { offset, deleted },
        other => other,
    }
}

/// Dynamic broker configs of `broker` (registered), or of the cluster default.
async fn set_broker_configs(
    state: &NodeState,
    broker: Option<BrokerId>,
    configs: Vec<(String, Option<String>)>,
    replace: bool,
) -> Reply {
    let image = state.ctl.borrow().image();
    let (resource, name) = match broker {
        Some(b) if image.broker(b).is_none() => {
            return refuse(
                ErrorKind::InvalidRequest,
                format!("broker {} is not registered", b.0),
            )
        }
        Some(b) => (ConfigResource::Broker, b.0.to_string()),
        None => (ConfigResource::Cluster, String::new()),
    };
    let records = resource_config_records(&image, resource, &name, configs, replace);
    commit_changes(state, &image, &records).await
}

async fn elect_leaders(state: &NodeState) -> Reply {
    let image = state.ctl.borrow().image();
    let records = crate::election::preferred_leader_records_except(
        &image,
        &state.brokers.borrow().shutting_down(&image),
    );
    commit_changes(state, &image, &records).await
}

/// Kafka's ElectLeaders: each asked partition's election decided from the latest image
/// (duplicates once), committed together; every partition when none is named, answering
/// only those that needed one (as Kafka does).
async fn elect(
    state: &NodeState,
    election: ElectionType,
    partitions: Option<Vec<(String, Vec<i32>)>>,
) -> Reply {
    let image = state.ctl.borrow().image();
    let excluded = state.brokers.borrow().shutting_down(&image);
    let every = partitions.is_none();
    let asked: Vec<(String, i32)> = match partitions {
        Some(topics) => topics
            .into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
            .collect(),
        None => image
            .topics()
            .flat_map(|t| t.partitions.keys().map(|p| (t.name.clone(), p.0)))
            .collect(),
    };
    let mut decided: BTreeMap<(String, i32), ElectionOutcome> = BTreeMap::new();
    let mut records = Vec::new();
    let mut results = Vec::with_capacity(asked.len());
    for (topic, partition) in asked {
        let key = (topic, partition);
        let outcome = match decided.get(&key) {
            Some(o) => *o,
            None => {
                let (o, change) = requested_election(&image, &key.0, key.1, election, &excluded);
                if let Some((record, kind)) = change {
                    if kind == ElectionKind::Unclean {
                        tracing::warn!(topic = %key.0, partition = key.1, ?record,
                            "unclean leader election, as asked: records the ISR held may be lost");
                    } else {
                        tracing::info!(topic = %key.0, partition = key.1, ?kind, ?election,
                            "leader elected, as asked");
                    }
                    records.push(record);
                }
                decided.insert(key.clone(), o);
                o
            }
        };
        if every && outcome == ElectionOutcome::NotNeeded {
            continue;
        }
        results.push(PartitionElection {
            topic: key.0,
            partition: key.1,
            outcome,
        });
    }
    match commit_changes(state, &image, &records).await {
        Reply::Done { offset } => Reply::Elected { offset, results },
        other => other,
    }
}

/// Kafka's AlterPartitionReassignments: every target decided in order from the latest
/// image (`reassign::reassign_all`), the changes committed together, each partition
/// answered (a refused one logged, as Kafka logs it).
async fn reassign(state: &NodeState, allow_rf_change: bool, targets: &[ReassignTarget]) -> Reply {
    let image = state.ctl.borrow().image();
    let excluded = state.brokers.borrow().shutting_down(&image);
    let (records, outcomes) =
        crate::reassign::reassign_all(&image, targets, allow_rf_change, &excluded);
    let mut results = Vec::with_capacity(targets.len());
    for (t, outcome) in targets.iter().zip(outcomes) {
        match &outcome {
            Ok(()) => {
                tracing::info!(topic = %t.topic, partition = t.partition, replicas = ?t.replicas, "partition reassignment accepted")
            }
            Err(why) => {
                tracing::info!(topic = %t.topic, partition = t.partition, replicas = ?t.replicas, %why, "partition reassignment refused")
            }
        }
        results.push(PartitionReassigned {
            topic: t.topic.clone(),
            partition: t.partition,
            refusal: outcome.err(),
        });
    }
    match commit_changes(state, &image, &records).await {
        Reply::Done { offset } => Reply::Reassigned { offset, results },
        other => other,
    }
}

/// Waits (bounded by the commit timeout) until every decision proposed so far is applied,
/// so the next one is made from an image that has them. `false` if it timed out.
pub(super) async fn settled(state: &NodeState) -> bool {
    {
        let ctl = state.ctl.borrow();
        if ctl.is_leader() {
            state.brokers.borrow_mut().leading_since(&ctl, state.now());
        }
    }
    let deadline = Instant::now() + state.commit_timeout;
    loop {
        let until = state.brokers.borrow().in_flight_until();
        if state.ctl.borrow().image().offset().0 >= until {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        glommio::timer::sleep(APPLY_POLL).await;
    }
}

/// The rpc error kind for an ISR change refusal.
pub(super) fn isr_refusal_kind(r: &IsrRefusal) -> ErrorKind {
    match r {
        IsrRefusal::UnknownBroker(_) | IsrRefusal::StaleBrokerEpoch { .. } => {
            ErrorKind::StaleBrokerEpoch
        }
        IsrRefusal::UnknownTopic(_) | IsrRefusal::UnknownPartition { .. } => {
            ErrorKind::UnknownTopic
        }
        IsrRefusal::FencedLeaderEpoch { .. } | IsrRefusal::NotLeader { .. } => {
            ErrorKind::FencedLeaderEpoch
        }
        IsrRefusal::ControllerBehind { .. } => ErrorKind::Timeout,
        IsrRefusal::InvalidIsr { .. } => ErrorKind::InvalidRequest,
        IsrRefusal::IneligibleReplica { .. } => ErrorKind::IneligibleReplica,
    }
}

/// `AlterPartition`: decided from an image holding every earlier decision (`handle` waited
/// for it), proposed without an await in between (nothing else decides meanwhile),
/// answered once applied.
pub(super) async fn alter_partition(state: &NodeState, change: &IsrChange<'_>) -> Reply {
    let (image, decided) = {
        let image = state.ctl.borrow().image();
        let shutting = state.brokers.borrow();
        let decided = crate::isr::alter_partition(&image, change, &shutting.shutting_down(&image));
        (image, decided)
    };
    let record = match decided {
        Ok(None) => {
            return Reply::Done {
                offset: image.offset(),
            }
        }
        Ok(Some(record)) => record,
        Err(r @ IsrRefusal::IneligibleReplica { .. }) => {
            // A follower fenced or shutting down: routine while a broker stops or restarts.
            tracing::info!(broker = change.broker.0, topic = change.topic, partition = change.partition.0, reason = %r, "isr change refused");
            return refuse(isr_refusal_kind(&r), r.to_string());
        }
        Err(r) => {
            tracing::warn!(broker = change.broker.0, topic = change.topic, partition = change.partition.0, reason = %r, "isr change refused");
            return refuse(isr_refusal_kind(&r), r.to_string());
        }
    };
    tracing::info!(broker = change.broker.0, topic = change.topic, partition = change.partition.0, isr = ?change.isr.iter().map(|b| b.0).collect::<Vec<_>>(), "isr change");
    let (term, target) = {
        let mut c = state.ctl.borrow_mut();
        if let Err(e) = c.propose(&record) {
            return controller_error(e);
        }
        (c.term(), c.last_index())
    };
    state.brokers.borrow_mut().proposed_until(target);
    wait_applied(state, term, target).await
}

/// `ShutdownBroker` (leadership moves off the broker, it leaves every ISR and stays fenced
/// until it registers again) and `BrokerStopped` (it is fenced at once), through
/// `BrokerControl::leave`; answered once applied.
pub(super) async fn leaving_broker(
    state: &NodeState,
    broker: BrokerId,
    epoch: BrokerEpoch,
    step: Leaving,
) -> Reply {
    let proposed = {
        let mut c = state.ctl.borrow_mut();
        let outcome = state
            .brokers
            .borrow_mut()
            .leave(&mut c, broker, epoch, step);
        outcome.map(|r| (r, c.image().offset(), c.term(), c.last_index()))
    };
    match proposed {
        Err(e) => controller_error(e),
        Ok((Err(registered), _, _, _)) => stale_broker(broker, epoch, registered),
        Ok((Ok(records), offset, _, _)) if records.is_empty() => {
            tracing::info!(
                broker = broker.0,
                ?step,
                "broker leaving: nothing to change"
            );
            Reply::Done { offset }
        }
        Ok((Ok(records), _, term, target)) => {
            tracing::info!(
                broker = broker.0,
                ?step,
                records = records.len(),
                "broker leaving"
            );
            wait_applied(state, term, target).await
        }
    }
}

/// The refusal of a shutdown request from a broker not registered with `epoch`.
pub(super) fn stale_broker(
    broker: BrokerId,
    epoch: BrokerEpoch,
    registered: Option<BrokerEpoch>,
) -> Reply {
    let message = match registered {
        Some(e) => format!(
            "broker {broker} is registered with epoch {}, not {}",
            e.0, epoch.0
        ),
        None => format!("broker {broker} is not registered"),
    };
    tracing::warn!(broker = broker.0, %message, "controlled shutdown refused");
    refuse(ErrorKind::StaleBrokerEpoch, message)
}

/// Proposes `records` and waits until they are applied.
pub(super) async fn commit(state: &NodeState, records: &[Record]) -> Reply {
    let (term, target) = {
        let mut c = state.ctl.borrow_mut();
        for r in records {
            if let Err(e) = c.propose(r) {
                return controller_error(e);
            }
        }
        (c.term(), c.last_index())
    };
    // The next decision waits for these (`settled`): two creates of one name decided from
    // the same image would both pass the checks.
    state.brokers.borrow_mut().proposed_until(target);
    wait_applied(state, term, target).await
}

/// Waits until the image reaches `target`, proposed in `term`. If the term moved on, the
/// entries may have been replaced by a new leader's: the asker retries.
pub(super) async fn wait_applied(state: &NodeState, term: Term, target: u64) -> Reply {
    // Handle the proposal's ready now rather than at the next tick.
    let _ = state.inbox.try_send(Event::Kick);
    let deadline = Instant::now() + state.commit_timeout;
    loop {
        {
            let c = state.ctl.borrow();
            if c.term() != term {
                return refuse(ErrorKind::Timeout, "controller leadership changed; retry");
            }
            if c.image().offset().0 >= target {
                return Reply::Done {
                    offset: MetadataOffset(target),
                };
            }
        }
        if Instant::now() >= deadline {
            return refuse(ErrorKind::Timeout, "metadata change not committed in time");
        }
        glommio::timer::sleep(APPLY_POLL).await;
    }
}

/// The image once it is newer than `have`, or an empty answer after `wait_ms`;
/// `NotLeader` from a node outside the configuration.
pub(super) async fn fetch_image(state: &NodeState, have: MetadataOffset, wait_ms: u32) -> Reply {
    let deadline =
        Instant::now() + Duration::from_millis(u64::from(wait_ms.min(FETCH_IMAGE_WAIT_MS_MAX)));
    loop {
        let image: Arc<MetadataImage> = {
            let c = state.ctl.borrow();
            // A controller outside the configuration (not added yet, or removed) gets no
            // log: its image may be stale for ever, so the asker must try another.
            if !c.is_member() {
                return Reply::NotLeader { leader: c.leader() };
            }
            c.image()
        };
        if image.offset() > have && image.offset().0 >= state.startup_commit {
            return Reply::Image {
                snapshot: image.encode_snapshot(),
            };
        }
        if Instant::now() >= deadline {
            return Reply::Image {
                snapshot: Vec::new(),
            };
        }
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
}
