//! The leader's bookkeeping for one partition: how far each follower has durably copied
//! the log, the high watermark that follows from it, and when a follower should leave or
//! rejoin the in-sync replica set.
//!
//! Pure state and decisions on an explicit clock (`now_ms`); the shard owning the partition
//! feeds it follower fetches and its own durable end, advances the high watermark it
//! computes, and sends the ISR changes it proposes to the controller.
//!
//! Invariants:
//! - The high watermark waits for Kafka's "maximal ISR": the image's (committed) ISR and
//!   any member a pending change adds. A shrink counts only once the controller has
//!   applied it, so while it is pending the removed follower still holds back the high
//!   watermark; an expansion is proposed only for a follower that already holds everything
//!   below the high watermark, and from then on the high watermark waits for it too, so
//!   once the controller admits it every ISR member holds everything below the high
//!   watermark (without that, the high watermark moved past a joining follower while its
//!   expansion was in flight, and a new leader elected from that ISR lacked committed
//!   records).
//! - A follower's end is the offset it last fetched from: it asks for the next offset only
//!   once what it has is durable on its side, so counting it never counts bytes a follower
//!   crash could lose.
//! - The high watermark needs every ISR member's end and at least
//!   `min(min.insync.replicas, replicas)` members (KIP-966); otherwise it does not move.

use std::collections::BTreeMap;

use sluice_engine::{BrokerId, LeaderEpoch, Offset};

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The offset the follower last fetched from (its durable log end); -1 before its first
    /// fetch in this leadership.
    pub end: Offset,
    /// When it last fetched.
    pub last_fetch_ms: u64,
    /// The leader's written end at that fetch.
    pub last_fetch_leader_end: Offset,
    /// When it last held everything the leader had (Kafka's `lastCaughtUpTimeMs`).
    pub last_caught_up_ms: u64,
}

/// A change of the ISR the leader wants the controller to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub isr: Vec<BrokerId>,
    /// Followers leaving, with how long each had not caught up (ms).
    pub shrunk: Vec<(BrokerId, u64)>,
    /// Followers joining.
    pub expanded: Vec<BrokerId>,
}

/// Why a follower fetch is not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchRefused {
    /// The fetching broker is not a replica of the partition.
    NotReplica,
}

/// The leader's state for one partition during one leadership (one leader epoch).
#[derive(Debug, Clone)]
pub struct LeaderState {
    me: BrokerId,
    leader_epoch: LeaderEpoch,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    min_isr: usize,
    /// The leader's log end when this leadership began: a follower joins the ISR only once
    /// it holds at least this much (everything of earlier epochs).
    epoch_start: Offset,
    followers: BTreeMap<BrokerId, FollowerProgress>,
    /// An ISR change sent to the controller and not yet in the image: (isr, sent at).
    pending: Option<(Vec<BrokerId>, u64)>,
}

/// A follower's end before its first fetch in a leadership.
const NOT_FETCHED: Offset = Offset(-1);

/// How long a sent ISR change may stay unanswered before it is proposed again.
pub const PENDING_ISR_CHANGE_MS_MAX: u64 = 5_000;

impl LeaderState {
    /// A new leadership at `leader_epoch`, beginning at the leader's log end `log_end`.
    /// Followers start caught up as of `now_ms` (Kafka does the same), so none is dropped
    /// from the ISR before it had `replica.lag.time.max.ms` to fetch.
    pub fn new(
        me: BrokerId,
        leader_epoch: LeaderEpoch,
        replicas: Vec<BrokerId>,
        isr: Vec<BrokerId>,
        min_isr: usize,
        log_end: Offset,
        now_ms: u64,
    ) -> LeaderState {
        let followers = replicas
            .iter()
            .filter(|r| **r != me)
            .map(|r| {
                let p = FollowerProgress {
                    end: NOT_FETCHED,
                    last_fetch_ms: now_ms,
                    last_fetch_leader_end: NOT_FETCHED,
                    last_caught_up_ms: now_ms,
                };
                (*r, p)
            })
            .collect();
        LeaderState {
            me,
            leader_epoch,
            replicas,
            isr,
            min_isr,
            epoch_start: log_end,
            followers,
            pending: None,
        }
    }

    /// The log end when this leadership began: every offset below it may have been
    /// acknowledged by the previous leader.
    pub fn epoch_start(&self) -> Offset {
        self.epoch_start
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    pub fn isr(&self) -> &[BrokerId] {
        &self.isr
    }

    pub fn replicas(&self) -> &[BrokerId] {
        &self.replicas
    }

    /// Progress of every follower (for status and metrics).
    pub fn followers(&self) -> &BTreeMap<BrokerId, FollowerProgress> {
        &self.followers
    }

    /// The ISR size an acks=all write needs: `min.insync.replicas`, but never more than
    /// there are replicas (a topic configured beyond its replication factor stays usable).
    pub fn isr_needed(&self) -> usize {
        self.min_isr.clamp(1, self.replicas.len().max(1))
    }

    /// Whether an acks=all write may be accepted now (else NOT_ENOUGH_REPLICAS).
    pub fn enough_in_sync(&self) -> bool {
        self.isr.len() >= self.isr_needed()
    }

    /// The image changed within this leadership (same epoch): new ISR, replicas or
    /// `min.insync.replicas`. A pending change the image now shows is done; members it
    /// would add that are no longer replicas are dropped from it first (a reassignment
    /// completed by this very change removed them), so the high watermark never waits
    /// for a broker that is not a replica.
    pub fn update(
        &mut self,
        replicas: Vec<BrokerId>,
        isr: Vec<BrokerId>,
        min_isr: usize,
        now_ms: u64,
    ) {
        if let Some((pending, _)) = &mut self.pending {
            pending.retain(|b| replicas.contains(b));
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|(p, _)| same_set(p, &isr))
        {
            self.pending = None;
        }
        for r in &replicas {
            if *r != self.me && !self.followers.contains_key(r) {
                let p = FollowerProgress {
                    end: NOT_FETCHED,
                    last_fetch_ms: now_ms,
                    last_fetch_leader_end: NOT_FETCHED,
                    last_caught_up_ms: now_ms,
                };
                self.followers.insert(*r, p);
            }
        }
        self.followers.retain(|b, _| replicas.contains(b));
        self.replicas = replicas;
        self.isr = isr;
        self.min_isr = min_isr;
    }

    /// A follower fetched from `fetch_offset` while the leader's written end was
    /// `leader_end`.
    pub fn on_fetch(
        &mut self,
        follower: BrokerId,
        fetch_offset: Offset,
        leader_end: Offset,
        now_ms: u64,
    ) -> Result<(), FetchRefused> {
        let p = self
            .followers
            .get_mut(&follower)
            .ok_or(FetchRefused::NotReplica)?;
        // Kafka's rule: caught up now if it asks for everything the leader has; caught up
        // as of its previous fetch if it now holds what the leader had then.
        if fetch_offset >= leader_end {
            p.last_caught_up_ms = now_ms;
        } else if p.last_fetch_leader_end >= Offset::ZERO && fetch_offset >= p.last_fetch_leader_end
        {
            p.last_caught_up_ms = p.last_caught_up_ms.max(p.last_fetch_ms);
        }
        p.end = fetch_offset.min(leader_end);
        p.last_fetch_ms = now_ms;
        p.last_fetch_leader_end = leader_end;
        Ok(())
    }

    /// The high watermark the ISR allows given the leader's durable end, or `None` when it
    /// must not move (a member has not fetched yet, or too few are in sync).
    pub fn high_watermark(&self, leader_durable_end: Offset) -> Option<Offset> {
        if self.isr.len() < self.isr_needed() {
            return None;
        }
        let mut hw = leader_durable_end;
        let joining = self
            .pending
            .iter()
            .flat_map(|(isr, _)| isr.iter())
            .filter(|b| !self.isr.contains(b));
        for b in self.isr.iter().chain(joining) {
            if *b == self.me {
                continue;
            }
            let end = self.followers.get(b).map_or(NOT_FETCHED, |p| p.end);
            if end < Offset::ZERO {
                return None;
            }
            hw = hw.min(end);
        }
        assert!(
            hw <= leader_durable_end,
            "high watermark {hw} beyond the leader's durable end {leader_durable_end}"
        );
        Some(hw)
    }

    /// The ISR change to propose now, if any (and none is pending): followers that have not
    /// caught up for longer than `lag_max_ms` leave; followers out of the ISR that hold
    /// everything below the high watermark and this leadership's start, and were caught
    /// up within `lag_max_ms`, join.
    pub fn isr_change(&self, hw: Offset, now_ms: u64, lag_max_ms: u64) -> Option<IsrChange> {
        if let Some((_, sent)) = &self.pending {
            if now_ms.saturating_sub(*sent) < PENDING_ISR_CHANGE_MS_MAX {
                return None;
            }
        }
        let mut shrunk = Vec::new();
        let mut expanded = Vec::new();
        for (b, p) in &self.followers {
            let lag_ms = now_ms.saturating_sub(p.last_caught_up_ms);
            let in_isr = self.isr.contains(b);
            if in_isr && lag_ms > lag_max_ms {
                shrunk.push((*b, lag_ms));
            } else if !in_isr
                && lag_ms <= lag_max_ms
                && p.end >= Offset::ZERO
                && p.end >= hw
                && p.end >= self.epoch_start
            {
                // Caught up recently, not only once: a follower that stopped fetching
                // (killed, stopping) looks caught up forever on an idle partition.
                expanded.push(*b);
            }
        }
        if shrunk.is_empty() && expanded.is_empty() {
            return None;
        }
        let isr: Vec<BrokerId> = self
            .replicas
            .iter()
            .copied()
            .filter(|r| {
                *r == self.me
                    || (self.isr.contains(r) && !shrunk.iter().any(|(b, _)| b == r))
                    || expanded.contains(r)
            })
            .collect();
        Some(IsrChange {
            isr,
            shrunk,
            expanded,
        })
    }

    /// Notes that `isr` was sent to the controller at `now_ms`.
    pub fn mark_pending(&mut self, isr: Vec<BrokerId>, now_ms: u64) {
        self.pending = Some((isr, now_ms));
    }

    /// The controller refused or did not answer: propose again on the next check.
    pub fn clear_pending(&mut self) {
        self.pending = None;
    }

    /// The controller refused the pending change: the high watermark stops waiting for
    /// the members it would have added, and the change is proposed again only after the
    /// pending time (a refusal lasts a while: a follower fenced or shutting down).
    pub fn pending_refused(&mut self) {
        if let Some((isr, _)) = &mut self.pending {
            isr.clone_from(&self.isr);
        }
    }
}

fn same_set(a: &[BrokerId], b: &[BrokerId]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(n: i64) -> Offset {
        Offset(n)
    }

    #[test]
    fn a_pending_expansion_whose_members_a_reassignment_removed_is_done() {
        // Replicas [1, 2, 3] during a reassignment to [1, 2]: the leader proposes 2 and 3
        // back into the ISR; the controller applies it and completes the reassignment in
        // the same change, so the image shows ISR [1, 2] without 3.
        let mut l = LeaderState::new(
            BrokerId(1),
            LeaderEpoch(5),
            ids(&[1, 2, 3]),
            ids(&[1]),
            1,
            o(0),
            0,
        );
        l.on_fetch(BrokerId(2), o(10), o(10), 1).unwrap();
        l.on_fetch(BrokerId(3), o(10), o(10), 1).unwrap();
        let change = l.isr_change(o(0), 1, 1_000).expect("an expansion");
        l.mark_pending(change.isr, 1);
        l.update(ids(&[1, 2]), ids(&[1, 2]), 1, 2);
        l.on_fetch(BrokerId(2), o(20), o(20), 3).unwrap();
        // Broker 3 is gone: the high watermark follows the ISR alone.
        assert_eq!(l.high_watermark(o(20)), Some(o(20)));
    }

    fn ids(v: &[i32]) -> Vec<BrokerId> {
        v.iter().copied().map(BrokerId).collect()
    }

    fn three(isr: Vec<BrokerId>, min_isr: usize) -> LeaderState {
        LeaderState::new(
            BrokerId(1),
            LeaderEpoch(5),
            ids(&[1, 2, 3]),
            isr,
            min_isr,
            o(100),
            0,
        )
    }

    #[test]
    fn high_watermark_waits_for_every_isr_member() {
        let mut l = three(ids(&[1, 2, 3]), 2);
        assert_eq!(l.high_watermark(o(120)), None, "no follower fetched yet");
        l.on_fetch(BrokerId(2), o(110), o(120), 1).unwrap();
        assert_eq!(l.high_watermark(o(120)), None, "3 has not fetched");
        l.on_fetch(BrokerId(3), o(105), o(120), 1).unwrap();
        assert_eq!(l.high_watermark(o(120)), Some(o(105)));
        l.on_fetch(BrokerId(3), o(120), o(120), 2).unwrap();
        assert_eq!(l.high_watermark(o(120)), Some(o(110)));
        // The leader's own durable end bounds it (fsync policy: synced < written).
        assert_eq!(l.high_watermark(o(108)), Some(o(108)));
    }

    #[test]
    fn a_follower_out_of_the_isr_does_not_hold_the_high_watermark() {
        let mut l = three(ids(&[1, 2]), 2);
        l.on_fetch(BrokerId(2), o(130), o(130), 1).unwrap();
        assert_eq!(l.high_watermark(o(130)), Some(o(130)));
        l.on_fetch(BrokerId(3), o(0), o(130), 1).unwrap();
        assert_eq!(l.high_watermark(o(130)), Some(o(130)));
    }

    #[test]
    fn below_min_isr_the_high_watermark_stops() {
        let l = three(ids(&[1]), 2);
        assert_eq!(l.high_watermark(o(130)), None);
        assert!(!l.enough_in_sync());
        // min.insync.replicas beyond the replication factor is capped by it.
        let single = LeaderState::new(
            BrokerId(1),
            LeaderEpoch(0),
            ids(&[1]),
            ids(&[1]),
            3,
            o(0),
            0,
        );
        assert_eq!(single.high_watermark(o(7)), Some(o(7)));
        assert!(single.enough_in_sync());
    }

    #[test]
    fn fetch_from_a_non_replica_is_refused() {
        let mut l = three(ids(&[1, 2, 3]), 2);
        assert_eq!(
            l.on_fetch(BrokerId(9), o(0), o(0), 0),
            Err(FetchRefused::NotReplica)
        );
    }

    #[test]
    fn a_lagging_follower_is_proposed_for_removal_after_the_lag_limit() {
        let mut l = three(ids(&[1, 2, 3]), 2);
        // 2 keeps up; 3 fetches but never reaches the leader's end.
        for t in 1..=40u64 {
            let leader_end = 100 + t as i64 * 10;
            l.on_fetch(BrokerId(2), o(leader_end), o(leader_end), t * 1000)
                .unwrap();
            l.on_fetch(BrokerId(3), o(100), o(leader_end), t * 1000)
                .unwrap();
        }
        let hw = l.high_watermark(o(500)).unwrap();
        let change = l.isr_change(hw, 40_000, 30_000).expect("3 lags for 40 s");
        assert_eq!(change.isr, ids(&[1, 2]));
        assert_eq!(change.shrunk.len(), 1);
        assert_eq!(change.shrunk[0].0, BrokerId(3));
        assert!(l.isr_change(hw, 20_000, 30_000).is_none());
    }

    #[test]
    fn a_follower_that_keeps_up_with_the_previous_fetch_stays_in_sync() {
        let mut l = three(ids(&[1, 2]), 2);
        // Each fetch holds what the leader had at the previous one: caught up as of then.
        let mut leader_end = 100;
        for t in 1..=100u64 {
            let previous = leader_end;
            leader_end += 10;
            l.on_fetch(BrokerId(2), o(previous), o(leader_end), t * 1000)
                .unwrap();
        }
        assert!(l.isr_change(o(0), 100_000, 30_000).is_none());
    }

    #[test]
    fn a_caught_up_follower_is_proposed_for_the_isr_once_past_the_epoch_start() {
        let mut l = three(ids(&[1, 2]), 2);
        l.on_fetch(BrokerId(2), o(150), o(150), 1).unwrap();
        l.on_fetch(BrokerId(3), o(90), o(150), 1).unwrap();
        let hw = l.high_watermark(o(150)).unwrap();
        assert!(l.isr_change(hw, 2, 30_000).is_none(), "3 is behind");
        l.on_fetch(BrokerId(3), o(150), o(150), 3).unwrap();
        let change = l.isr_change(hw, 3, 30_000).expect("3 caught up");
        assert_eq!(change.isr, ids(&[1, 2, 3]));
        assert_eq!(change.expanded, ids(&[3]));
        // Pending until the image shows it, or until the pending limit passes.
        l.mark_pending(change.isr.clone(), 3);
        assert!(l.isr_change(hw, 4, 30_000).is_none());
        assert!(l
            .isr_change(hw, 4 + PENDING_ISR_CHANGE_MS_MAX, 30_000)
            .is_some());
        l.update(ids(&[1, 2, 3]), ids(&[1, 2, 3]), 2, 5);
        assert!(l.isr_change(hw, 6, 30_000).is_none());
    }

    #[test]
    fn the_high_watermark_waits_for_a_follower_whose_expansion_is_pending() {
        let mut l = three(ids(&[1, 2]), 2);
        l.on_fetch(BrokerId(2), o(150), o(150), 1).unwrap();
        l.on_fetch(BrokerId(3), o(150), o(150), 1).unwrap();
        let hw = l.high_watermark(o(150)).unwrap();
        let change = l.isr_change(hw, 2, 30_000).expect("3 caught up");
        l.mark_pending(change.isr.clone(), 2);
        // The leader and 2 move on while the controller decides; 3 has not fetched again.
        l.on_fetch(BrokerId(2), o(200), o(200), 3).unwrap();
        assert_eq!(
            l.high_watermark(o(200)),
            Some(o(150)),
            "3 may be in the ISR any moment: nothing it lacks may count as committed"
        );
        // Refused: it stops waiting for 3 (and proposes again only after the pending time).
        let mut refused = l.clone();
        refused.pending_refused();
        assert_eq!(refused.high_watermark(o(200)), Some(o(200)));
        assert!(refused.isr_change(o(150), 4, 30_000).is_none());
        l.on_fetch(BrokerId(3), o(200), o(200), 4).unwrap();
        assert_eq!(l.high_watermark(o(200)), Some(o(200)));
        // Applied: 3 is a member like any other.
        l.update(ids(&[1, 2, 3]), ids(&[1, 2, 3]), 2, 5);
        l.on_fetch(BrokerId(2), o(260), o(260), 6).unwrap();
        assert_eq!(l.high_watermark(o(260)), Some(o(200)));
    }

    #[test]
    fn a_follower_that_stopped_fetching_is_not_proposed_for_the_isr() {
        let mut l = three(ids(&[1, 2]), 2);
        l.on_fetch(BrokerId(2), o(150), o(150), 1).unwrap();
        l.on_fetch(BrokerId(3), o(150), o(150), 1).unwrap();
        let hw = l.high_watermark(o(150)).unwrap();
        assert!(l.isr_change(hw, 1 + 30_000, 30_000).is_some());
        // 2 goes on fetching; 3 sent nothing since: it is gone, however complete its copy
        // looked.
        l.on_fetch(BrokerId(2), o(150), o(150), 2 + 30_000).unwrap();
        assert!(l.isr_change(hw, 2 + 30_000, 30_000).is_none());
    }

    #[test]
    fn a_follower_behind_the_epoch_start_does_not_join() {
        // Leadership began at 100; the follower holds 80 while the high watermark is 50.
        let mut l = LeaderState::new(
            BrokerId(1),
            LeaderEpoch(5),
            ids(&[1, 2]),
            ids(&[1]),
            1,
            o(100),
            0,
        );
        l.on_fetch(BrokerId(2), o(80), o(120), 1).unwrap();
        assert!(l.isr_change(o(50), 2, 30_000).is_none());
        l.on_fetch(BrokerId(2), o(100), o(120), 2).unwrap();
        assert!(l.isr_change(o(50), 3, 30_000).is_some());
    }
}
