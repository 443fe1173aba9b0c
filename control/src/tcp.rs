//! Controller-to-controller messages over TCP (glommio), and the controller's driving loop.
//!
//! - **Framing**: `len u32 LE | crc32c u32 LE | protobuf eraftpb::Message`, `len` bounded
//!   by `TcpConfig::message_bytes_max`. A bad frame closes the connection (the peer
//!   reconnects); it never panics.
//! - **Sending**: one bounded queue (`queue_max`) and one writer task per peer. The
//!   controller loop never waits on the network: a full queue drops the message and
//!   reports the peer unreachable (raft retransmits). A writer connects lazily, and after
//!   any error reconnects with exponential backoff between `reconnect_backoff_min_ms` and
//!   `reconnect_backoff_max_ms`.
//! - **Feedback**: the outcome of every `MsgSnapshot` and every failed send is queued and
//!   applied to the controller by `TcpTransport::apply_feedback` (raft waits for a
//!   snapshot's outcome before sending that follower anything else).
//! - **Receiving**: `serve` accepts peers and decodes frames into the controller's inbox (a
//!   bounded channel; full means dropped). Messages not addressed to this node are dropped.
//! - **TLS** (`TcpConfig::tls`, from `[cluster_tls]`): every accepted connection must
//!   complete a TLS handshake presenting a certificate that chains to the cluster CA
//!   before a byte of it is read (at most `TLS_HANDSHAKES_MAX` handshakes at once, each
//!   bounded in time), and writers connect with TLS presenting the node certificate.
//!   Without it, plain TCP.
//! - **Loop**: `run_loop` is the one task that owns the `Controller` (shared as
//!   `Rc<RefCell<_>>` so proposers on the same executor can borrow it between awaits;
//!   no borrow is ever held across an `.await`): it steps inbox messages, ticks every
//!   `tick_ms`, and handles every `Ready` right away.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpListener;
use glommio::task::JoinHandle;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};

use crate::controller::{Controller, ControllerError};
use crate::tls::{ClusterStream, ClusterTls, TLS_HANDSHAKE_MS_MAX};
use crate::transport::Transport;
use crate::types::NodeId;

/// Bounds and timings of the TCP transport.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Messages queued per peer before sends are dropped.
    pub queue_max: usize,
    /// Largest frame accepted or sent (snapshots are the largest messages).
    pub message_bytes_max: usize,
    pub reconnect_backoff_min_ms: u64,
    pub reconnect_backoff_max_ms: u64,
    /// Inbox bound (messages received, not yet stepped).
    pub inbox_max: usize,
    /// `[cluster_tls]`: mutual TLS on every connection, both ways; `None`: plain TCP.
    pub tls: Option<Arc<ClusterTls>>,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            queue_max: 1024,
            message_bytes_max: 256 << 20,
            reconnect_backoff_min_ms: 10,
            reconnect_backoff_max_ms: 1_000,
            inbox_max: 4096,
            tls: None,
        }
    }
}

/// Why a frame is not a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {max} byte bound")]
    TooLarge { len: usize, max: usize },
    #[error("frame checksum mismatch")]
    Checksum,
    #[error("bad message: {0}")]
    Decode(String),
}

const HEADER_BYTES: usize = 8;

/// Encodes one message as a frame.
pub fn encode_frame(msg: &Message) -> Result<Vec<u8>, protobuf::ProtobufError> {
    let body = msg.write_to_bytes()?;
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes the first frame of `buf`: `Ok(None)` if it is not complete yet, else the
/// message and the bytes it used.
pub fn decode_frame(buf: &[u8], max: usize) -> Result<Option<(Message, usize)>, FrameError> {
    let Some(head) = buf.get(..HEADER_BYTES) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let Some(body) = buf.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Ok(None);
    };
    if crc32c::crc32c(body) != crc {
        return Err(FrameError::Checksum);
    }
    let msg = Message::parse_from_bytes(body).map_err(|e| FrameError::Decode(e.to_string()))?;
    Ok(Some((msg, HEADER_BYTES + len)))
}

/// What the transport owes the controller (see `transport` module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    Unreachable(NodeId),
    Snapshot { to: NodeId, delivered: bool },
}

type FeedbackQueue = Rc<RefCell<Vec<Feedback>>>;

fn report_failure(feedback: &FeedbackQueue, msg: &Message) {
    let to = NodeId(msg.to);
    let f = if msg.get_msg_type() == MessageType::MsgSnapshot {
        Feedback::Snapshot {
            to,
            delivered: false,
        }
    } else {
        Feedback::Unreachable(to)
    };
    feedback.borrow_mut().push(f);
}

struct Peer {
    queue: LocalSender<Message>,
    writer: JoinHandle<()>,
}

/// The TCP `Transport`: a bounded queue and a reconnecting writer task per peer. Create
/// it inside the glommio executor that runs the controller loop.
pub struct TcpTransport {
    config: TcpConfig,
    peers: BTreeMap<u64, Peer>,
    feedback: FeedbackQueue,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TcpTransport {
    pub fn new(config: TcpConfig) -> Self {
        Self {
            config,
            peers: BTreeMap::new(),
            feedback: Rc::new(RefCell::new(Vec::new())),
        }
    }

    /// Adds (or re-points) a peer; its writer connects on the first message.
    pub fn add_peer(&mut self, id: NodeId, addr: SocketAddr) {
        self.remove_peer(id);
        let (tx, rx) = local_channel::new_bounded(self.config.queue_max);
        let task = glommio::spawn_local(peer_writer(
            addr,
            rx,
            Rc::clone(&self.feedback),
            self.config.clone(),
        ));
        let writer = task.detach();
        self.peers.insert(id.0, Peer { queue: tx, writer });
    }

    /// Removes a peer (e.g. after it left the quorum) and stops its writer.
    pub fn remove_peer(&mut self, id: NodeId) {
        if let Some(p) = self.peers.remove(&id.0) {
            p.writer.cancel();
        }
    }

    /// Applies queued feedback to the controller.
    pub fn apply_feedback(&self, ctl: &mut Controller) {
        for f in self.feedback.borrow_mut().drain(..) {
            match f {
                Feedback::Unreachable(to) => ctl.report_unreachable(to),
                Feedback::Snapshot { to, delivered } => ctl.report_snapshot(to, delivered),
            }
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        for p in self.peers.values() {
            p.writer.cancel();
        }
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, msg: Message) {
        let Some(peer) = self.peers.get(&msg.to) else {
            report_failure(&self.feedback, &msg);
            return;
        };
        use glommio::{GlommioError, ResourceType};
        if let Err(
            GlommioError::WouldBlock(ResourceType::Channel(m))
            | GlommioError::Closed(ResourceType::Channel(m)),
        ) = peer.queue.try_send(msg)
        {
            report_failure(&self.feedback, &m);
        }
    }
}

/// The message a peer writer sends next: the one a failed write left, else the next in
/// its queue; `None` once the queue is closed.
async fn next_message(
    pending: &mut Option<Message>,
    rx: &LocalReceiver<Message>,
) -> Option<Message> {
    match pending.take() {
        Some(m) => Some(m),
        None => rx.recv().await,
    }
}

async fn peer_writer(
    addr: SocketAddr,
    rx: LocalReceiver<Message>,
    feedback: FeedbackQueue,
    config: TcpConfig,
) {
    let backoff_min = Duration::from_millis(config.reconnect_backoff_min_ms);
    let backoff_max = Duration::from_millis(config.reconnect_backoff_max_ms);
    let mut backoff = backoff_min;
    let mut pending: Option<Message> = None;
    loop {
        let Some(msg) = next_message(&mut pending, &rx).await else {
            return;
        };
        let connect_timeout = Duration::from_millis(TLS_HANDSHAKE_MS_MAX);
        let host = addr.ip().to_string();
        let connected =
            ClusterStream::connect(config.tls.as_deref(), &host, addr.port(), connect_timeout);
        let mut stream = match connected.await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%addr, error = %e, "controller peer unreachable");
                report_failure(&feedback, &msg);
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(backoff_max);
                continue;
            }
        };
        backoff = backoff_min;
        pending = Some(msg);
        // Connected: write until the queue closes (return) or a write fails (reconnect).
        loop {
            let Some(msg) = next_message(&mut pending, &rx).await else {
                return;
            };
            let frame = match encode_frame(&msg) {
                Ok(f) if f.len() <= config.message_bytes_max + HEADER_BYTES => f,
                _ => {
                    report_failure(&feedback, &msg);
                    continue;
                }
            };
            if let Err(e) = write_frame(&mut stream, &frame).await {
                tracing::debug!(%addr, error = %e, "controller peer write failed");
                report_failure(&feedback, &msg);
                break;
            }
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                feedback.borrow_mut().push(Feedback::Snapshot {
                    to: NodeId(msg.to),
                    delivered: true,
                });
            }
        }
    }
}

/// Writes a whole frame and flushes it (a TLS stream holds what it could not send yet).
async fn write_frame(stream: &mut ClusterStream, frame: &[u8]) -> std::io::Result<()> {
    stream.write_all(frame).await?;
    stream.flush().await
}

/// Serves a broker request connection (see `rpc`): the stream and the bytes read after
/// the magic.
pub type RpcHandler = Rc<dyn Fn(ClusterStream, Vec<u8>) -> Pin<Box<dyn Future<Output = ()>>>>;

/// TLS handshakes the quorum listener runs at once; a connection past it is closed at
/// once (a peer reconnects), so connections that never finish one cannot pile up.
pub const TLS_HANDSHAKES_MAX: usize = 64;

/// Accepts peer connections on `listener` and feeds their messages into `inbox`.
pub async fn serve(
    listener: TcpListener,
    me: NodeId,
    inbox: Rc<LocalSender<Event>>,
    config: TcpConfig,
) {
    serve_with_rpc(listener, me, inbox, config, None).await
}

/// `serve`, and connections that open with `rpc::RPC_MAGIC` go to `rpc`.
pub async fn serve_with_rpc(
    listener: TcpListener,
    me: NodeId,
    inbox: Rc<LocalSender<Event>>,
    config: TcpConfig,
    rpc: Option<RpcHandler>,
) {
    let handshakes = Rc::new(std::cell::Cell::new(0usize));
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if config.tls.is_some() && handshakes.get() >= TLS_HANDSHAKES_MAX {
                    tracing::warn!(
                        max = TLS_HANDSHAKES_MAX,
                        "too many TLS handshakes on the quorum port; closing a connection"
                    );
                    continue;
                }
                let inbox = Rc::clone(&inbox);
                let max = config.message_bytes_max;
                let tls = config.tls.clone();
                let rpc = rpc.clone();
                // Counted before the task runs, so a burst of accepts cannot pass the bound.
                handshakes.set(handshakes.get() + 1);
                let handshakes = Rc::clone(&handshakes);
                glommio::spawn_local(async move {
                    let peer = stream.peer_addr().ok();
                    let accepted = ClusterStream::accept(tls.as_deref(), stream).await;
                    handshakes.set(handshakes.get() - 1);
                    match accepted {
                        Ok(stream) => read_peer(stream, me, inbox, max, rpc).await,
                        Err(e) => {
                            // Logged at the 1st, 2nd, 4th, 8th... failure: a peer retrying
                            // with a bad certificate does not flood the log.
                            let failed = crate::tls::quorum_handshake_failed();
                            if failed.is_power_of_two() {
                                tracing::warn!(peer = ?peer, error = %e, failed,
                                    "quorum port: TLS handshake failed (a certificate from the cluster CA is required); closing");
                            }
                        }
                    }
                })
                .detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "controller listener accept failed");
                glommio::timer::sleep(Duration::from_millis(config.reconnect_backoff_min_ms)).await;
            }
        }
    }
}

async fn read_peer(
    mut stream: ClusterStream,
    me: NodeId,
    inbox: Rc<LocalSender<Event>>,
    max: usize,
    mut rpc: Option<RpcHandler>,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(handler) = rpc.take() {
            let magic = crate::rpc::RPC_MAGIC;
            let head = buf.len().min(magic.len());
            if buf[..head] == magic[..head] {
                if buf.len() < magic.len() {
                    rpc = Some(handler);
                    continue;
                }
                buf.drain(..magic.len());
                handler(stream, buf).await;
                return;
            }
        }
        let mut used = 0;
        loop {
            match decode_frame(&buf[used..], max) {
                Ok(Some((msg, len))) => {
                    used += len;
                    if msg.to != me.0 {
                        tracing::warn!(to = msg.to, "controller message for another node dropped");
                        continue;
                    }
                    // Full inbox: drop; raft retransmits. Closed inbox: the controller
                    // stopped, so close the connection (the peer sees it and reconnects).
                    if let Err(glommio::GlommioError::Closed(_)) =
                        inbox.try_send(Event::Message(msg))
                    {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "bad controller frame; closing connection");
                    return;
                }
            }
        }
        buf.drain(..used);
    }
}

/// What wakes the controller loop.
#[derive(Debug)]
pub enum Event {
    /// A raft message from a peer.
    Message(Message),
    /// Something was proposed: handle the ready now, not at the next tick.
    Kick,
}

/// Creates the inbox a loop reads from (give its sender to `serve` and to proposers).
pub fn inbox(config: &TcpConfig) -> (Rc<LocalSender<Event>>, LocalReceiver<Event>) {
    let (tx, rx) = local_channel::new_bounded(config.inbox_max);
    (Rc::new(tx), rx)
}

/// The controller loop: step messages, tick every `tick_ms`, handle every `Ready`.
/// Returns on a storage or raft error (the caller decides: a controller that cannot
/// persist must stop) or when the inbox closes.
pub async fn run_loop(
    ctl: Rc<RefCell<Controller>>,
    transport: TcpTransport,
    inbox: LocalReceiver<Event>,
    tick_ms: u64,
) -> Result<(), ControllerError> {
    run_loop_with(ctl, transport, inbox, tick_ms, &mut ()).await
}

/// What the node running a controller does inside its loop (both run with the loop's
/// borrow of the controller, so they must not await).
pub trait LoopHooks {
    /// On every tick, before the ready is handled (propose here: it goes out at once).
    fn on_tick(&mut self, _ctl: &mut Controller) {}
    /// After every event's readies were handled (publish the image here).
    fn after_ready(&mut self, _ctl: &Controller) {}
    /// After `after_ready`: add or re-point raft peers (e.g. controllers the image names).
    fn sync_peers(&mut self, _ctl: &Controller, _transport: &mut TcpTransport) {}
}

impl LoopHooks for () {}

/// `run_loop` with hooks.
pub async fn run_loop_with(
    ctl: Rc<RefCell<Controller>>,
    mut transport: TcpTransport,
    inbox: LocalReceiver<Event>,
    tick_ms: u64,
    hooks: &mut dyn LoopHooks,
) -> Result<(), ControllerError> {
    let tick = Duration::from_millis(tick_ms);
    let mut next_tick = Instant::now() + tick;
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        let event = futures_lite::future::or(async { Some(inbox.recv().await) }, async {
            glommio::timer::sleep(wait).await;
            None
        })
        .await;
        {
            let mut c = ctl.borrow_mut();
            match event {
                Some(Some(Event::Message(m))) => {
                    if let Err(e) = c.step(m) {
                        tracing::debug!(error = %e, "controller step refused a message");
                    }
                }
                Some(Some(Event::Kick)) => {}
                Some(None) => return Ok(()),
                None => {
                    c.tick();
                    // One tick per interval; after a stall, resume from now (no burst).
                    next_tick = (next_tick + tick).max(Instant::now());
                    hooks.on_tick(&mut c);
                }
            }
            transport.apply_feedback(&mut c);
            while c.on_ready(&mut transport)? {}
            hooks.after_ready(&c);
            hooks.sync_peers(&c, &mut transport);
        }
        glommio::yield_if_needed().await;
    }
}
