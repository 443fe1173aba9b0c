//! What the controller loop calls back: broker duties on each tick, publishing the image,
//! and the raft peers' addresses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;

use super::{resolve, NodeState, Publish};
use crate::controller::Controller;
use crate::image::MetadataImage;
use crate::tcp::{LoopHooks, TcpTransport};
use crate::types::{MetadataOffset, NodeId, Term};

pub(super) struct Hooks {
    pub(super) state: Rc<NodeState>,
    pub(super) publish: Publish,
    /// (image offset, leader, term, commit) last published; `None` before the first
    /// publication (which always happens, even for an empty image: the broker learns
    /// whether this controller is a member from it).
    pub(super) published: Option<(MetadataOffset, Option<NodeId>, Term, u64)>,
    /// The configured quorum (addresses the image does not override).
    pub(super) configured: Vec<(NodeId, SocketAddr)>,
    /// Image offset the peers were last synced at.
    pub(super) peers_at: Option<MetadataOffset>,
}

/// The address book: the configured quorum, overridden and extended by the controllers
/// the image names (unresolvable hosts are logged and left out).
pub(super) fn addresses_of(
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
