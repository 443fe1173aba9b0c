//! Routing: which shard owns a partition (the placement table, through this shard's
//! cached snapshot), waiting out live moves, and splitting a request's partitions by
//! owning shard.

use std::rc::Rc;
use std::time::Duration;

use super::{PartitionAnswer, Shard, ShardOp};
use crate::kafka::errors::code;
use crate::placement::hash_owner;
use crate::store::TopicPartition;

/// Longest a request waits for a moving partition to land before it is routed anyway
/// (and answered NOT_LEADER_OR_FOLLOWER, which clients retry).
pub(super) const MOVE_WAIT_MS_MAX: u64 = 30_000;

/// Items of one shard: (position in the request, partition, payload).
pub type ShardItems<T> = Vec<(usize, TopicPartition, T)>;

/// Runs `op` on each owning shard's share of `items` (in parallel, each shard once) and
/// returns one answer per item, in `items` order; an item whose shard gave no answer gets
/// UNKNOWN_SERVER_ERROR.
pub async fn answers_by_shard<T, A: PartitionAnswer>(
    shard: &Rc<Shard>,
    items: Vec<(TopicPartition, T)>,
    op: impl Fn(Vec<(TopicPartition, T)>) -> ShardOp,
) -> Vec<A> {
    let mut results = vec![A::failed(code::UNKNOWN_SERVER_ERROR); items.len()];
    let mut calls = Vec::new();
    let mut positions = Vec::new();
    shard.wait_not_moving(items.iter().map(|(tp, _)| tp)).await;
    for (s, group) in split_by_shard(shard, items) {
        positions.push(group.iter().map(|(i, _, _)| *i).collect::<Vec<_>>());
        calls.push((s, op(group.into_iter().map(|(_, tp, t)| (tp, t)).collect())));
    }
    for (idx, reply) in positions.into_iter().zip(shard.call_all(calls).await) {
        for (i, r) in idx
            .into_iter()
            .zip(A::from_reply(reply).unwrap_or_default())
        {
            results[i] = r;
        }
    }
    results
}

/// Groups partitions by owning shard (the placement table), keeping each item's position
/// in the request.
pub fn split_by_shard<T>(
    shard: &Shard,
    items: Vec<(TopicPartition, T)>,
) -> Vec<(usize, ShardItems<T>)> {
    let mut per: Vec<Vec<(usize, TopicPartition, T)>> =
        (0..shard.count).map(|_| Vec::new()).collect();
    for (i, (tp, t)) in items.into_iter().enumerate() {
        let s = shard.owner_of(&tp).min(shard.count - 1);
        per[s].push((i, tp, t));
    }
    per.into_iter()
        .enumerate()
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

impl Shard {
    /// The shard owning a partition: its place in the table; a partition of a known topic
    /// not placed yet is placed now (its whole topic, by the policy). A partition the
    /// catalog does not have goes to its hash shard, which answers that it is unknown.
    pub fn owner_of(&self, tp: &TopicPartition) -> usize {
        if let Some(s) = self.placed(tp) {
            return s;
        }
        match self.catalog.partition_count(&tp.topic) {
            Some(n) if tp.partition.0 >= 0 && tp.partition.0 < n => {
                self.placement.place(&tp.topic, n, tp.partition.0)
            }
            _ => hash_owner(&tp.topic, tp.partition.0, self.count),
        }
    }

    /// The table's answer, from this shard's cached snapshot while its version holds.
    pub(super) fn placed(&self, tp: &TopicPartition) -> Option<usize> {
        let version = self.placement.version();
        {
            let cache = self.placement_cache.borrow();
            if cache.0 == version {
                return cache.1.owner(&tp.topic, tp.partition.0);
            }
        }
        let fresh = self.placement.snapshot();
        let owner = fresh.1.owner(&tp.topic, tp.partition.0);
        *self.placement_cache.borrow_mut() = fresh;
        owner
    }

    /// Waits until none of `tps` is being moved (bounded by `MOVE_WAIT_MS_MAX`), so a
    /// request is routed to the partition's new shard instead of failing on the old one.
    pub async fn wait_not_moving<'a>(&self, tps: impl Iterator<Item = &'a TopicPartition> + Clone) {
        let moving = |s: &Self| {
            let snap = s.placement.snapshot().1;
            snap.any_moving()
                && tps
                    .clone()
                    .any(|tp| snap.is_moving(&tp.topic, tp.partition.0))
        };
        let quiet = {
            // The common case: nothing moves anywhere, decided from the cached snapshot.
            self.placed_version_current() && !self.placement_cache.borrow().1.any_moving()
        };
        if quiet {
            return;
        }
        // The count is read before the table: a move that ends after this check sends its
        // `MoveEnded` afterwards, so the wait below cannot miss it.
        let until_landed = async {
            loop {
                let seen = self.moves_ended.get();
                if !moving(self) {
                    return;
                }
                let _ = self.moves_ended.wait_for(seen + 1).await;
            }
        };
        let bound = glommio::timer::sleep(Duration::from_millis(MOVE_WAIT_MS_MAX));
        futures_lite::future::or(until_landed, async {
            futures_lite::future::or(bound, self.stopping.wait()).await;
        })
        .await;
    }

    pub(super) fn placed_version_current(&self) -> bool {
        self.placement_cache.borrow().0 == self.placement.version()
    }
}
