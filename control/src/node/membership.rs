//! Adding and removing controllers: one change at a time, learner first.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use super::handle::{controller_error, refuse};
use super::{resolve, NodeState, APPLY_POLL, CATCH_UP_TIMEOUT};
use crate::controller::Controller;
use crate::records::Record;
use crate::rpc::{self, ErrorKind, Reply, Request};
use crate::tcp::Event;
use crate::types::{BrokerId, NodeId};

/// Holds the one membership slot; frees it when the request ends (or is dropped).
pub(super) struct MembershipSlot<'a>(&'a Cell<bool>);

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

pub(super) fn busy() -> Reply {
    refuse(
        ErrorKind::MembershipBusy,
        "another controller membership change is in progress; retry when it is applied",
    )
}

/// Why adding `id` at `addr` cannot be done now (`None`: it can).
pub(super) fn check_add(
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
pub(super) async fn add_controller(
    state: &Rc<NodeState>,
    id: NodeId,
    host: &str,
    port: u16,
) -> Reply {
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
pub(super) async fn wait_caught_up(state: &NodeState, id: NodeId) -> Option<Reply> {
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
pub(super) async fn remove_controller(state: &Rc<NodeState>, id: NodeId) -> Reply {
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
pub(super) async fn remove_self_through_next_leader(state: &NodeState, id: NodeId) -> Reply {
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
            let request = Request::RemoveController { id };
            match rpc::call(addr, state.tls.as_deref(), &request, left).await {
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
pub(super) async fn wait_membership(
    state: &NodeState,
    done: impl Fn(&Controller) -> bool,
) -> Reply {
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
