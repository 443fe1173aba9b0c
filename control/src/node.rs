//! A controller node: everything one quorum member runs on its executor — the
//! `Controller` and its loop (`tcp::run_loop_with`), the raft transport to its peers, the
//! quorum listener (raft frames and broker requests, `rpc`), the active controller's
//! broker duties (`BrokerControl`, polled on every tick) and the answers to broker
//! requests (registration, heartbeats, topic and config changes, image fetches).
//!
//! Decisions are made only on the active controller, from its latest image; a request that
//! changes metadata is answered once its records are applied there (`Reply::Done` names
//! the offset the asker waits for in its own image). A node that is not the active
//! controller answers `NotLeader` with the leader it knows of. ISR changes and controlled
//! shutdowns are decided only once every earlier decision is applied (`settled`), so a
//! decision never overwrites a partition state that another proposal is changing.
//!
//! Membership: `AddController` goes learner first — the new controller's address into the
//! metadata log (`RegisterController`) and a learner change (ConfChangeV2); once the
//! learner's log reached the commit index, the change that makes it a voter — so a
//! controller that is not running never weakens the quorum. `RemoveController` takes a voter
//! out: one that is also a registered broker becomes a learner (it still receives the log,
//! so its broker's image stays current, but counts for no quorum and never campaigns); any
//! other voter, or a learner, leaves the configuration and its address is dropped
//! (`UnregisterController`); the active controller removing itself demotes itself to a
//! learner, hands leadership over and asks the next leader to remove it. One change at a
//! time (a second is refused with `MembershipBusy` until the first is applied); the last
//! voter, an unknown id, a duplicate voter or address are refused. Every node's raft peers are its configured quorum plus the
//! controllers its image names, re-read whenever the image moves. A node whose directory is
//! empty asks the configured quorum whether it is already a voter: if a running controller
//! answers with voters that do not include it, it starts as a joiner (`Bootstrap::Join`, no
//! vote, no campaign) and waits to be added.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel::LocalSender;
use glommio::net::{TcpListener, TcpStream};

use crate::active::{BrokerControl, BrokerControlConfig, Leaving};
use crate::controller::{Bootstrap, Controller, ControllerConfig, ControllerError};
use crate::image::MetadataImage;
use crate::isr::{IsrChange, IsrRefusal};
use crate::placement::{add_partitions_records, create_topic_record};
use crate::records::{ConfigResource, Record};
use crate::rpc::{self, ErrorKind, QuorumStatus, Reply, Request};
use crate::tcp::{self, Event, LoopHooks, TcpConfig, TcpTransport};
use crate::types::{
    BrokerEpoch, BrokerId, MetadataOffset, Millis, NodeId, PartitionIndex, Term, TopicId,
};

/// Bound on partitions per topic (as the broker's catalog), so one request cannot ask for
/// unbounded work.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;
/// Longest a `FetchImage` waits for a change.
const FETCH_IMAGE_WAIT_MS_MAX: u32 = 30_000;
/// Broker request connections served at once; more are closed on accept (brokers
/// reconnect: each request is one short connection).
pub const RPC_CONNECTIONS_MAX: usize = 1024;
/// A broker request connection that sends nothing for this long is closed.
const RPC_IDLE_MAX: Duration = Duration::from_secs(60);
/// How often a waiting request looks at the applied offset again.
const APPLY_POLL: Duration = Duration::from_millis(1);
/// Longest a controller being added may take, as a learner, to catch up with the log
/// before it is made a voter (a metadata log is small; a node that takes longer is
/// probably not running or unreachable).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a starting node with an empty directory waits for each configured controller
/// to say whether it is already a voter.
const JOIN_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// What one controller node runs with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Where the raft log, hard state and snapshots live.
    pub dir: PathBuf,
    /// Every voter and its quorum address (this node's own entry included).
    pub quorum: Vec<(NodeId, SocketAddr)>,
    /// Length of one raft tick.
    pub tick_ms: u64,
    pub broker: BrokerControlConfig,
    pub tcp: TcpConfig,
    /// Longest a request waits for its records to be applied.
    pub commit_timeout_ms: u64,
}

/// Called with the controller after every change of its image or quorum view.
pub type Publish = Box<dyn FnMut(&Controller)>;

struct NodeState {
    ctl: Rc<RefCell<Controller>>,
    /// The commit index this node had persisted when it started: an image older than
    /// this misses records it once had applied (raft replays them after the start), so
    /// it is neither published nor served.
    startup_commit: u64,
    brokers: RefCell<BrokerControl>,
    inbox: Rc<LocalSender<Event>>,
    started: Instant,
    commit_timeout: Duration,
    /// Broker request connections open now (bounded by `RPC_CONNECTIONS_MAX`).
    rpc_connections: Cell<usize>,
    /// Every controller's quorum address this node knows (configured quorum, then the
    /// image's controller records); written by the loop's hooks only.
    addresses: RefCell<BTreeMap<NodeId, SocketAddr>>,
    /// A membership request is being carried out (one at a time).
    membership_busy: Cell<bool>,
}

impl NodeState {
    fn now(&self) -> Millis {
        Millis(self.started.elapsed().as_millis() as u64)
    }
}

/// The quorum as `ctl` sees it.
pub fn quorum_status(ctl: &Controller) -> QuorumStatus {
    QuorumStatus {
        node: ctl.id().0,
        leader: ctl.leader(),
        term: ctl.term(),
        commit_index: ctl.commit_index(),
        applied_index: ctl.applied_index(),
        voters: ctl.voters(),
        learners: ctl.learners(),
    }
}

struct Hooks {
    state: Rc<NodeState>,
    publish: Publish,
    /// (image offset, leader, term, commit) last published; `None` before the first
    /// publication (which always happens, even for an empty image: the broker learns
    /// whether this controller is a member from it).
    published: Option<(MetadataOffset, Option<NodeId>, Term, u64)>,
    /// The configured quorum (addresses the image does not override).
    configured: Vec<(NodeId, SocketAddr)>,
    /// Image offset the peers were last synced at.
    peers_at: Option<MetadataOffset>,
}

/// The address book: the configured quorum, overridden and extended by the controllers
/// the image names (unresolvable hosts are logged and left out).
fn addresses_of(
    configured: &[(NodeId, SocketAddr)],
    image: &MetadataImage,
) -> BTreeMap<NodeId, SocketAddr> {
    let mut book: BTreeMap<NodeId, SocketAddr> = configured.iter().copied().collect();
    for (id, host, port) in image.controllers() {
        match resolve(host, port) {
            Some(addr) => {
                book.insert(id, addr);
            }
            None => tracing::warn!(
                controller = id.0,
                host,
                port,
                "controller address does not resolve"
            ),
        }
    }
    book
}

/// `host:port` as a socket address (an IP literal, else a name lookup).
pub fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    (host, port).to_socket_addrs().ok()?.next()
}

impl LoopHooks for Hooks {
    fn on_tick(&mut self, ctl: &mut Controller) {
        let now = self.state.now();
        match self.state.brokers.borrow_mut().poll(ctl, now) {
            Ok(records) => {
                for r in &records {
                    tracing::info!(record = r.kind(), "controller proposed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "broker duties failed to propose"),
        }
    }

    fn after_ready(&mut self, ctl: &Controller) {
        if ctl.image().offset().0 < self.state.startup_commit {
            return;
        }
        let now = (
            ctl.image().offset(),
            ctl.leader(),
            ctl.term(),
            ctl.commit_index(),
        );
        if self.published != Some(now) {
            if self.published.map(|p| p.1) != Some(now.1) {
                tracing::info!(node = ctl.id().0, leader = ?now.1.map(|l| l.0), term = now.2.0, "controller leader changed");
            }
            self.published = Some(now);
            (self.publish)(ctl);
        }
    }

    fn sync_peers(&mut self, ctl: &Controller, transport: &mut TcpTransport) {
        let image = ctl.image();
        if self.peers_at == Some(image.offset()) {
            return;
        }
        self.peers_at = Some(image.offset());
        let book = addresses_of(&self.configured, &image);
        let mut known = self.state.addresses.borrow_mut();
        for (id, addr) in &book {
            if *id != ctl.id() && known.get(id) != Some(addr) {
                tracing::info!(node = ctl.id().0, peer = id.0, %addr, "controller peer address");
                transport.add_peer(*id, *addr);
            }
        }
        *known = book;
    }
}

/// Opens the controller in `config.dir` and runs the node on the current executor until
/// `stop` resolves or the controller fails (a controller that cannot persist must stop).
pub async fn run(
    config: NodeConfig,
    listener: TcpListener,
    publish: Publish,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ControllerError> {
    let bootstrap = bootstrap_for(&config).await;
    let ctl_config = ControllerConfig::new(config.id);
    let mut ctl = Controller::open(&config.dir, ctl_config, &bootstrap)?;
    if ctl.voters() == [config.id] && !ctl.is_leader() {
        // A quorum of one needs no election timeout: lead at once (fast single-node start).
        ctl.campaign()?;
    }
    let startup_commit = ctl.commit_index();
    let ctl = Rc::new(RefCell::new(ctl));
    let mut transport = TcpTransport::new(config.tcp.clone());
    for (id, addr) in &config.quorum {
        if *id != config.id {
            transport.add_peer(*id, *addr);
        }
    }
    let (inbox_tx, inbox_rx) = tcp::inbox(&config.tcp);
    let state = Rc::new(NodeState {
        ctl: Rc::clone(&ctl),
        startup_commit,
        brokers: RefCell::new(BrokerControl::new(config.broker.clone())),
        inbox: Rc::clone(&inbox_tx),
        started: Instant::now(),
        commit_timeout: Duration::from_millis(config.commit_timeout_ms.max(1)),
        rpc_connections: Cell::new(0),
        addresses: RefCell::new(config.quorum.iter().copied().collect()),
        membership_busy: Cell::new(false),
    });
    let handler: tcp::RpcHandler = {
        let state = Rc::clone(&state);
        Rc::new(move |stream, buf| Box::pin(serve_requests(Rc::clone(&state), stream, buf)))
    };
    let server = glommio::spawn_local(tcp::serve_with_rpc(
        listener,
        config.id,
        Rc::clone(&inbox_tx),
        config.tcp.clone(),
        Some(handler),
    ))
    .detach();
    let mut hooks = Hooks {
        state: Rc::clone(&state),
        publish,
        published: None,
        configured: config.quorum.clone(),
        peers_at: None,
    };
    // The image recovered from disk is published at once if it is complete.
    hooks.after_ready(&ctl.borrow());
    let result = futures_lite::future::or(
        tcp::run_loop_with(ctl, transport, inbox_rx, config.tick_ms, &mut hooks),
        async {
            stop.await;
            Ok(())
        },
    )
    .await;
    server.cancel();
    result
}

/// How this node's storage starts if its directory is empty: as a founding voter of the
/// configured quorum, unless a configured controller that answers already runs a quorum
/// without this node — then it joins (waits, without voting, to be added).
async fn bootstrap_for(config: &NodeConfig) -> Bootstrap {
    let founders: Vec<NodeId> = config.quorum.iter().map(|(id, _)| *id).collect();
    let fresh = std::fs::read_dir(&config.dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    if !fresh {
        return Bootstrap::Voters(founders);
    }
    for (id, addr) in config.quorum.iter().filter(|(id, _)| *id != config.id) {
        match rpc::call(*addr, &Request::Status, JOIN_PROBE_TIMEOUT).await {
            Ok(Reply::Status(q)) if !q.voters.is_empty() => {
                if q.voters.contains(&config.id) {
                    break;
                }
                tracing::info!(
                    node = config.id.0,
                    asked = id.0,
                    voters = ?q.voters,
                    "not a voter of the running quorum: starting as a joiner, waiting to be added"
                );
                return Bootstrap::Join;
            }
            _ => {}
        }
    }
    Bootstrap::Voters(founders)
}

async fn serve_requests(state: Rc<NodeState>, stream: TcpStream, buf: Vec<u8>) {
    let open = state.rpc_connections.get();
    if open >= RPC_CONNECTIONS_MAX {
        tracing::warn!(
            max = RPC_CONNECTIONS_MAX,
            "too many broker connections; closing one"
        );
        return;
    }
    state.rpc_connections.set(open + 1);
    answer_requests(&state, stream, buf).await;
    state.rpc_connections.set(state.rpc_connections.get() - 1);
}

async fn answer_requests(state: &Rc<NodeState>, mut stream: TcpStream, mut buf: Vec<u8>) {
    loop {
        let read = futures_lite::future::or(
            async { Some(rpc::read_frame(&mut stream, &mut buf).await) },
            async {
                glommio::timer::sleep(RPC_IDLE_MAX).await;
                None
            },
        )
        .await;
        let Some(read) = read else {
            return; // idle: the slot goes to someone else
        };
        let body = match read {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "bad broker request; closing the connection");
                return;
            }
        };
        let reply = match Request::decode(&body) {
            Ok(r) => handle(state, r).await,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable broker request");
                Reply::Error {
                    kind: ErrorKind::InvalidRequest,
                    message: e.to_string(),
                }
            }
        };
        if stream
            .write_all(&rpc::frame(&reply.encode()))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The records that take `topic`'s configs from what `image` holds to what a SetConfigs
/// asks: each key that changes, plus (with `replace`) the removal of every key not named.
fn config_records(
    image: &MetadataImage,
    topic: &str,
    configs: Vec<(String, Option<String>)>,
    replace: bool,
) -> Vec<Record> {
    let current = image
        .configs_of(ConfigResource::Topic, topic)
        .cloned()
        .unwrap_or_default();
    let mut changes: BTreeMap<String, Option<String>> = BTreeMap::new();
    if replace {
        for key in current.keys() {
            changes.insert(key.clone(), None);
        }
    }
    changes.extend(configs);
    changes
        .into_iter()
        .filter(|(key, value)| current.get(key) != value.as_ref())
        .map(|(key, value)| Record::ConfigChange {
            resource: ConfigResource::Topic,
            resource_name: topic.to_string(),
            key,
            value,
        })
        .collect()
}

fn refuse(kind: ErrorKind, message: impl Into<String>) -> Reply {
    Reply::Error {
        kind,
        message: message.into(),
    }
}

fn controller_error(e: ControllerError) -> Reply {
    match e {
        ControllerError::NotLeader { leader } => Reply::NotLeader { leader },
        other => refuse(ErrorKind::Internal, other.to_string()),
    }
}

async fn handle(state: &Rc<NodeState>, req: Request) -> Reply {
    match req {
        Request::FetchImage { have, wait_ms } => return fetch_image(state, have, wait_ms).await,
        Request::Status => return Reply::Status(quorum_status(&state.ctl.borrow())),
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
    match req {
        Request::Register {
            broker,
            rack,
            listeners,
        } => {
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
        Request::Heartbeat { broker, epoch } => {
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
        Request::CreateTopic {
            name,
            partitions,
            replication_factor,
            configs,
            topic_id,
            validate_only,
        } => {
            let image = state.ctl.borrow().image();
            let spec = TopicSpec {
                name: &name,
                partitions,
                replication_factor,
                configs: &configs,
                topic_id,
            };
            match create_topic_records(&image, &spec) {
                Ok(_) if validate_only => Reply::Done {
                    offset: image.offset(),
                },
                Ok(records) => commit(state, &records).await,
                Err(reply) => reply,
            }
        }
        Request::DeleteTopic { name } => {
            let image = state.ctl.borrow().image();
            match image.topic_by_name(&name) {
                Some(t) => commit(state, &[Record::DeleteTopic { topic_id: t.id }]).await,
                None => refuse(
                    ErrorKind::UnknownTopic,
                    format!("topic {name} does not exist"),
                ),
            }
        }
        Request::CreatePartitions {
            name,
            count,
            validate_only,
        } => {
            let image = state.ctl.borrow().image();
            match add_partitions(&image, &name, count) {
                Ok(_) if validate_only => Reply::Done {
                    offset: image.offset(),
                },
                Ok(records) => commit(state, &records).await,
                Err(reply) => reply,
            }
        }
        Request::SetConfigs {
            topic,
            configs,
            replace,
        } => {
            let image = state.ctl.borrow().image();
            if image.topic_by_name(&topic).is_none() {
                return refuse(
                    ErrorKind::UnknownTopic,
                    format!("topic {topic} does not exist"),
                );
            }
            let records = config_records(&image, &topic, configs, replace);
            if records.is_empty() {
                return Reply::Done {
                    offset: image.offset(),
                };
            }
            commit(state, &records).await
        }
        Request::ElectLeaders => {
            let image = state.ctl.borrow().image();
            let records = crate::election::preferred_leader_records_except(
                &image,
                &state.brokers.borrow().shutting_down(&image),
            );
            if records.is_empty() {
                return Reply::Done {
                    offset: image.offset(),
                };
            }
            commit(state, &records).await
        }
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
                partition: PartitionIndex(partition),
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
        Request::FetchImage { .. } | Request::Status => {
            refuse(ErrorKind::Internal, "answered above")
        }
    }
}

/// Waits (bounded by the commit timeout) until every decision proposed so far is applied,
/// so the next one is made from an image that has them. `false` if it timed out.
async fn settled(state: &NodeState) -> bool {
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
fn isr_refusal_kind(r: &IsrRefusal) -> ErrorKind {
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
async fn alter_partition(state: &NodeState, change: &IsrChange<'_>) -> Reply {
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
async fn leaving_broker(
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
fn stale_broker(broker: BrokerId, epoch: BrokerEpoch, registered: Option<BrokerEpoch>) -> Reply {
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

/// Holds the one membership slot; frees it when the request ends (or is dropped).
struct MembershipSlot<'a>(&'a Cell<bool>);

impl<'a> MembershipSlot<'a> {
    fn take(busy: &'a Cell<bool>) -> Option<Self> {
        (!busy.replace(true)).then_some(Self(busy))
    }
}

impl Drop for MembershipSlot<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

fn busy() -> Reply {
    refuse(
        ErrorKind::MembershipBusy,
        "another controller membership change is in progress; retry when it is applied",
    )
}

/// Why adding `id` at `addr` cannot be done now (`None`: it can).
fn check_add(
    ctl: &Controller,
    book: &BTreeMap<NodeId, SocketAddr>,
    id: NodeId,
    addr: Option<SocketAddr>,
) -> Option<Reply> {
    let invalid = |m: String| Some(refuse(ErrorKind::InvalidMembership, m));
    let voters = ctl.voters();
    if id.0 == 0 {
        return invalid("controller id 0 is not valid (ids start at 1)".into());
    }
    if voters.contains(&id) {
        return invalid(format!("controller {} is already a voter", id.0));
    }
    let Some(addr) = addr else {
        return invalid(format!("controller {} address does not resolve", id.0));
    };
    if addr.port() == 0 {
        return invalid(format!("controller {} address {addr} has port 0", id.0));
    }
    let taken = voters.iter().find(|v| book.get(v) == Some(&addr)).copied();
    if let Some(other) = taken {
        return invalid(format!(
            "address {addr} is already controller {}'s",
            other.0
        ));
    }
    ctl.membership_change_pending().then(busy)
}

/// Adds controller `id` (quorum address `host:port`) as a voter, learner first (as etcd
/// and KIP-853 do): its address record and a learner change; once the learner's log has
/// caught up with the commit index, the change that makes it a voter. A controller that
/// never catches up (not running, a wrong address) is left a learner, which counts for no
/// quorum, and the answer says so. Answered once the last change is applied here.
async fn add_controller(state: &Rc<NodeState>, id: NodeId, host: &str, port: u16) -> Reply {
    let Some(_slot) = MembershipSlot::take(&state.membership_busy) else {
        return busy();
    };
    let addr = resolve(host, port);
    {
        let mut c = state.ctl.borrow_mut();
        if let Some(refusal) = check_add(&c, &state.addresses.borrow(), id, addr) {
            tracing::info!(controller = id.0, host, port, answer = ?refusal, "add controller refused");
            return refusal;
        }
        let record = Record::RegisterController {
            controller: id,
            host: host.to_owned(),
            port,
        };
        if let Err(e) = c.propose(&record).and_then(|()| c.propose_add_learner(id)) {
            return controller_error(e);
        }
        tracing::info!(
            controller = id.0,
            host,
            port,
            "adding controller: learner first"
        );
    }
    match wait_membership(state, |c| c.learners().contains(&id)).await {
        Reply::Done { .. } => {}
        other => return other,
    }
    if let Some(refusal) = wait_caught_up(state, id).await {
        return refusal;
    }
    {
        let mut c = state.ctl.borrow_mut();
        if c.membership_change_pending() {
            return busy();
        }
        if let Err(e) = c.propose_add_voter(id) {
            return controller_error(e);
        }
        tracing::info!(controller = id.0, "controller caught up: making it a voter");
    }
    wait_membership(state, |c| c.voters().contains(&id)).await
}

/// Waits (at most `CATCH_UP_TIMEOUT`) until the leader has seen learner `id`'s log reach
/// the commit index as it was when the wait began; `Some(refusal)` if it did not.
async fn wait_caught_up(state: &NodeState, id: NodeId) -> Option<Reply> {
    let target = state.ctl.borrow().commit_index();
    let deadline = Instant::now() + CATCH_UP_TIMEOUT.min(state.commit_timeout);
    loop {
        {
            let c = state.ctl.borrow();
            if !c.is_leader() {
                return Some(Reply::NotLeader { leader: c.leader() });
            }
            if c.matched(id).is_some_and(|m| m >= target) {
                return None;
            }
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                controller = id.0,
                "controller did not catch up; left a learner"
            );
            return Some(refuse(
                ErrorKind::Timeout,
                format!(
                    "controller {} was added as a learner but did not catch up within {:?} \
                     (is it running and reachable at its address?); it is not a voter: run \
                     add-controller again once it runs, or remove-controller {} to drop it",
                    id.0, CATCH_UP_TIMEOUT, id.0
                ),
            ));
        }
        glommio::timer::sleep(APPLY_POLL * 5).await;
    }
}

/// Removes controller `id` from the voters (to a learner if it is also a broker; else
/// entirely, then its address record) or a learner from the configuration; answered once
/// the change is applied here (a removed leader hands leadership over on its next tick).
async fn remove_controller(state: &Rc<NodeState>, id: NodeId) -> Reply {
    let Some(_slot) = MembershipSlot::take(&state.membership_busy) else {
        return busy();
    };
    let (keep_learner, demote) = {
        let mut c = state.ctl.borrow_mut();
        let voters = c.voters();
        let learner = c.learners().contains(&id);
        // A voter that is also a registered broker stays a learner: its broker keeps
        // following the metadata log (its image comes from its own controller). Removing
        // a learner drops it entirely.
        let keep_learner = !learner
            && i32::try_from(id.0)
                .ok()
                .is_some_and(|b| c.image().broker(BrokerId(b)).is_some());
        let refusal = if !voters.contains(&id) && !learner {
            Some(refuse(
                ErrorKind::InvalidMembership,
                format!("controller {} is not a voter (voters: {voters:?})", id.0),
            ))
        } else if voters == [id] {
            Some(refuse(
                ErrorKind::InvalidMembership,
                format!(
                    "controller {} is the last voter; the quorum cannot be empty",
                    id.0
                ),
            ))
        } else if c.membership_change_pending() {
            Some(busy())
        } else {
            None
        };
        if let Some(refusal) = refusal {
            tracing::info!(controller = id.0, answer = ?refusal, "remove controller refused");
            return refusal;
        }
        // The leader never removes itself outright (see `propose_remove_node`): it
        // becomes a learner, hands over, and asks the next leader to remove it.
        let demote = keep_learner || id == c.id();
        let proposed = if demote {
            c.propose_add_learner(id)
        } else {
            let record = Record::UnregisterController { controller: id };
            c.propose_remove_node(id).and_then(|()| c.propose(&record))
        };
        if let Err(e) = proposed {
            return controller_error(e);
        }
        tracing::info!(controller = id.0, keep_learner, "removing controller");
        (keep_learner, demote)
    };
    let applied = wait_membership(state, |c| {
        !c.voters().contains(&id) && (demote || !c.learners().contains(&id))
    })
    .await;
    if keep_learner || !demote || !matches!(applied, Reply::Done { .. }) {
        return applied;
    }
    remove_self_through_next_leader(state, id).await
}

/// This node, a leader just demoted to learner, asks the leader after it to remove it
/// from the configuration (and drop its address); answers with that leader's answer.
async fn remove_self_through_next_leader(state: &NodeState, id: NodeId) -> Reply {
    let deadline = Instant::now() + state.commit_timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return refuse(
                ErrorKind::Timeout,
                format!(
                    "controller {} is a learner now, but no new leader removed it in time; \
                     run remove-controller {} again",
                    id.0, id.0
                ),
            );
        }
        let next = {
            let c = state.ctl.borrow();
            c.leader()
                .filter(|l| *l != id)
                .and_then(|l| state.addresses.borrow().get(&l).copied())
        };
        if let Some(addr) = next {
            match rpc::call(addr, &Request::RemoveController { id }, left).await {
                Ok(reply @ Reply::Done { .. }) => return reply,
                Ok(Reply::Error { kind, message }) if kind != ErrorKind::MembershipBusy => {
                    return Reply::Error { kind, message };
                }
                other => tracing::debug!(answer = ?other, "removing this controller: retrying"),
            }
        }
        glommio::timer::sleep(APPLY_POLL * 20).await;
    }
}

/// Waits until this node's applied configuration satisfies `done` (a membership change
/// applies on every node, leader or not, so a leadership change meanwhile does not matter).
async fn wait_membership(state: &NodeState, done: impl Fn(&Controller) -> bool) -> Reply {
    let _ = state.inbox.try_send(Event::Kick);
    let deadline = Instant::now() + state.commit_timeout;
    loop {
        {
            let c = state.ctl.borrow();
            if done(&c) {
                tracing::info!(voters = ?c.voters(), "controller membership change applied");
                return Reply::Done {
                    offset: c.image().offset(),
                };
            }
        }
        if Instant::now() >= deadline {
            return refuse(
                ErrorKind::Timeout,
                "membership change not applied in time; see `sluice cluster status`",
            );
        }
        glommio::timer::sleep(APPLY_POLL).await;
    }
}

/// A topic to create, as asked.
struct TopicSpec<'a> {
    name: &'a str,
    partitions: i32,
    replication_factor: i16,
    configs: &'a [(String, String)],
    topic_id: Option<TopicId>,
}

fn create_topic_records(image: &MetadataImage, spec: &TopicSpec<'_>) -> Result<Vec<Record>, Reply> {
    let name = spec.name;
    if name.is_empty() || name.len() > 249 {
        return Err(refuse(
            ErrorKind::InvalidTopic,
            format!("bad topic name {name:?}"),
        ));
    }
    if image.topic_by_name(name).is_some() {
        return Err(refuse(
            ErrorKind::TopicExists,
            format!("topic {name} already exists"),
        ));
    }
    if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&spec.partitions) {
        return Err(refuse(
            ErrorKind::InvalidPartitions,
            format!(
                "partition count {} is not within 1..={PARTITIONS_PER_TOPIC_MAX}",
                spec.partitions
            ),
        ));
    }
    if spec.replication_factor < 1 {
        return Err(refuse(
            ErrorKind::InvalidReplicationFactor,
            format!("replication factor {} is below 1", spec.replication_factor),
        ));
    }
    let id = spec.topic_id.unwrap_or_else(|| new_topic_id(image, name));
    let create = create_topic_record(
        image,
        name,
        id,
        spec.partitions as usize,
        spec.replication_factor as usize,
    )
    .map_err(|e| refuse(ErrorKind::InvalidReplicationFactor, e.to_string()))?;
    let mut records = vec![create];
    records.extend(spec.configs.iter().map(|(k, v)| Record::ConfigChange {
        resource: ConfigResource::Topic,
        resource_name: name.to_owned(),
        key: k.clone(),
        value: Some(v.clone()),
    }));
    Ok(records)
}

fn add_partitions(image: &MetadataImage, name: &str, count: i32) -> Result<Vec<Record>, Reply> {
    let Some(topic) = image.topic_by_name(name) else {
        return Err(refuse(
            ErrorKind::UnknownTopic,
            format!("topic {name} does not exist"),
        ));
    };
    let current = topic.partitions.len();
    if count <= current as i32 || count > PARTITIONS_PER_TOPIC_MAX {
        return Err(refuse(
            ErrorKind::InvalidPartitions,
            format!("topic {name} has {current} partitions; {count} is not more (or is above {PARTITIONS_PER_TOPIC_MAX})"),
        ));
    }
    add_partitions_records(image, topic, count as usize)
        .map_err(|e| refuse(ErrorKind::InvalidReplicationFactor, e.to_string()))
}

/// A fresh topic id: a hash of the name, the clock and the process's random hasher keys,
/// never 0 and never one the image already has.
fn new_topic_id(image: &MetadataImage, name: &str) -> TopicId {
    use std::hash::{BuildHasher, Hasher};
    let keys = std::collections::hash_map::RandomState::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut salt = 0u64;
    loop {
        let half = |k: u64| {
            let mut h = keys.build_hasher();
            h.write(name.as_bytes());
            h.write_u128(nanos);
            h.write_u64(k);
            h.write_u64(salt);
            h.finish() as u128
        };
        let id = TopicId((half(1) << 64) | half(2));
        if id.0 != 0 && image.topic(id).is_none() {
            return id;
        }
        salt += 1;
    }
}

/// Proposes `records` and waits until they are applied.
async fn commit(state: &NodeState, records: &[Record]) -> Reply {
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
async fn wait_applied(state: &NodeState, term: Term, target: u64) -> Reply {
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
async fn fetch_image(state: &NodeState, have: MetadataOffset, wait_ms: u32) -> Reply {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::PartitionAssignment;
    use crate::types::{
        BrokerEpoch, BrokerId, LeaderEpoch, MetadataOffset, PartitionIndex, TopicId,
    };

    fn image_with_configs(configs: &[(&str, &str)]) -> MetadataImage {
        let mut records = vec![
            Record::RegisterBroker {
                broker: BrokerId(1),
                epoch: BrokerEpoch(1),
                rack: None,
                listeners: vec![],
            },
            Record::CreateTopic {
                name: "t".into(),
                topic_id: TopicId(7),
                partitions: vec![PartitionAssignment {
                    partition: PartitionIndex(0),
                    replicas: vec![BrokerId(1)],
                    leader: Some(BrokerId(1)),
                    leader_epoch: LeaderEpoch(0),
                    isr: vec![BrokerId(1)],
                }],
            },
        ];
        records.extend(configs.iter().map(|(k, v)| Record::ConfigChange {
            resource: ConfigResource::Topic,
            resource_name: "t".into(),
            key: (*k).into(),
            value: Some((*v).into()),
        }));
        let mut image = MetadataImage::empty();
        for (i, r) in records.iter().enumerate() {
            image = image.apply(MetadataOffset(i as u64 + 1), r).unwrap();
        }
        image
    }

    fn keys(records: &[Record]) -> Vec<(String, Option<String>)> {
        records
            .iter()
            .map(|r| match r {
                Record::ConfigChange { key, value, .. } => (key.clone(), value.clone()),
                other => panic!("not a config change: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_replace_removes_the_keys_it_does_not_name_and_skips_unchanged_ones() {
        let image = image_with_configs(&[("retention.ms", "1"), ("segment.bytes", "2")]);
        let asked = vec![
            ("segment.bytes".to_string(), Some("2".to_string())),
            ("cleanup.policy".to_string(), Some("delete".to_string())),
        ];
        assert_eq!(
            keys(&config_records(&image, "t", asked.clone(), true)),
            [
                ("cleanup.policy".to_string(), Some("delete".to_string())),
                ("retention.ms".to_string(), None),
            ]
        );
        // Without replace only the named keys change.
        assert_eq!(
            keys(&config_records(&image, "t", asked, false)),
            [("cleanup.policy".to_string(), Some("delete".to_string()))]
        );
        // Removing a key that is not set changes nothing.
        let none = vec![("flush.ms".to_string(), None)];
        assert!(config_records(&image, "t", none, false).is_empty());
    }
}
