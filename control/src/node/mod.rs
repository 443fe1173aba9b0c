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
//!
//! Where each part lives:
//! - `mod.rs` (here): the node's configuration and state, and `run`, which starts it.
//! - `hooks.rs`: what the controller loop calls back (broker duties on each tick,
//!   publishing the image, keeping raft peers' addresses current).
//! - `serve.rs`: the broker request connections (bounded, idle ones closed).
//! - `handle.rs`: one answer per broker request, and the waits for its records.
//! - `membership.rs`: adding and removing controllers.
//! - `records.rs`: the records a topic or config change proposes (pure, tested).

mod handle;
mod hooks;
mod membership;
mod records;
mod serve;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::channels::local_channel::LocalSender;
use glommio::net::TcpListener;

use crate::active::{BrokerControl, BrokerControlConfig};
use crate::controller::{Bootstrap, Controller, ControllerConfig, ControllerError};
use crate::rpc::{self, QuorumStatus, Reply, Request};
use crate::tcp::{self, Event, LoopHooks, TcpConfig, TcpTransport};
use crate::types::{Millis, NodeId};
use hooks::Hooks;
use serve::serve_requests;

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
    /// `[cluster_tls]`, for this node's own requests to other controllers.
    tls: Option<std::sync::Arc<crate::tls::ClusterTls>>,
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

/// `host:port` as a socket address (an IP literal, else a name lookup).
pub fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    (host, port).to_socket_addrs().ok()?.next()
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
        tls: config.tcp.tls.clone(),
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
        let tls = config.tcp.tls.as_deref();
        match rpc::call(*addr, tls, &Request::Status, JOIN_PROBE_TIMEOUT).await {
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
