//! How the controller's raft messages leave the node.
//!
//! The controller loop hands every outgoing message to a `Transport` and never waits on
//! it: raft retransmits whatever is lost, so a transport may drop messages (a full bounded
//! queue, a peer that is down) instead of blocking the loop. Incoming messages are fed to
//! `Controller::step` by whoever owns the receiving side.
//!
//! Feedback the transport owes the controller: for every `MsgSnapshot` it was given,
//! `Controller::report_snapshot(to, delivered)` once it is written or has failed (raft
//! sends that follower nothing else until then); for any message it could not send,
//! `Controller::report_unreachable(to)`.

use raft::eraftpb::Message;

/// The outgoing side of the controller network.
pub trait Transport {
    /// Queues `msg` for `msg.to`. Must not block; may drop.
    fn send(&mut self, msg: Message);
}

/// Collects messages in a `Vec` (for callers that route them themselves).
impl Transport for Vec<Message> {
    fn send(&mut self, msg: Message) {
        self.push(msg);
    }
}
