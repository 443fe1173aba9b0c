//! The shard's replicated partitions: for each partition with more than one replica that
//! this broker holds and this shard owns, its role (leader or follower), its high
//! watermark, and on the leader the followers' progress (`sluice_replication::LeaderState`).
//!
//! Ownership: `Replicas` belongs to one shard; each `Replica` is touched only there. The
//! roles follow the metadata image: `reconcile` runs on every image version the shard
//! sees, so a leadership change reaches the data path within one poll interval. A
//! reassignment's added replica is a follower like any other; a removed one stops
//! following and its log is deleted.
//!
//! Invariants:
//! - A partition with one replica has no `Replica`: its high watermark is its written end.
//! - The high watermark never moves back while a role lasts; a role change resets it
//!   (waiters fail, and acks=all producers waiting on it are answered
//!   NOT_LEADER_OR_FOLLOWER).
//! - Consumers read below the high watermark only; followers read up to the written end.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use sluice_control::{BrokerId, MetadataImage, PartitionState};
use sluice_replication::{
    FetchRefused, FetcherConfig, Fetchers, Followed, IsrChange, LeaderAddr, LeaderState,
};

use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::store::{LeaderEpoch, Offset, PartitionId, PartitionLog, TopicPartition};
use sluice_engine::watch::OffsetWatch;

/// What this broker is for one replicated partition.
#[derive(Debug)]
pub enum Role {
    Leader(LeaderState),
    /// Following `leader` (none while the partition has no leader) at `leader_epoch`.
    Follower {
        leader: Option<BrokerId>,
        leader_epoch: LeaderEpoch,
    },
}

/// One replicated partition on its owning shard.
#[derive(Debug)]
pub struct Replica {
    pub tp: TopicPartition,
    pub log: PartitionLog,
    /// The high watermark: what consumers may read and acks=all waits for.
    pub hw: OffsetWatch,
    role: RefCell<Role>,
}

impl Replica {
    fn new(tp: TopicPartition, log: PartitionLog, role: Role) -> Replica {
        // Until followers report, only what this broker itself holds can be known: a new
        // leader starts from its log start and learns the rest from its followers' fetches.
        let hw = OffsetWatch::new(log.log_start_offset().0);
        Replica {
            tp,
            log,
            hw,
            role: RefCell::new(role),
        }
    }

    /// Whether this broker leads the partition (in the image this shard last followed).
    pub fn is_leader(&self) -> bool {
        matches!(&*self.role.borrow(), Role::Leader(_))
    }

    /// Where the leadership this broker holds now began (the log end then; `None`: it
    /// follows).
    pub fn epoch_start(&self) -> Option<Offset> {
        match &*self.role.borrow() {
            Role::Leader(l) => Some(l.epoch_start()),
            Role::Follower { .. } => None,
        }
    }

    /// The leader epoch of the leadership this broker holds now (`None`: it follows).
    pub fn leader_epoch(&self) -> Option<i32> {
        match &*self.role.borrow() {
            Role::Leader(l) => Some(l.leader_epoch().0),
            Role::Follower { .. } => None,
        }
    }

    /// acks=all may be accepted: this broker leads and enough replicas are in sync.
    pub fn enough_in_sync(&self) -> bool {
        match &*self.role.borrow() {
            Role::Leader(l) => l.enough_in_sync(),
            Role::Follower { .. } => false,
        }
    }

    /// Recomputes the high watermark from the ISR's durable ends; true if it moved.
    pub fn update_hw(&self) -> bool {
        let next = match &*self.role.borrow() {
            Role::Leader(l) => l
                .high_watermark(self.log.durable_end_offset())
                .map(|hw| hw.0),
            Role::Follower { .. } => None,
        };
        match next {
            Some(hw) if hw > self.hw.get() => {
                self.hw.advance(hw);
                true
            }
            _ => false,
        }
    }

    /// A follower fetched from `offset`: its durable end is `offset`.
    pub fn on_follower_fetch(
        &self,
        follower: BrokerId,
        offset: i64,
        now_ms: u64,
    ) -> Result<(), ErrorCode> {
        let leader_end = self.log.written_end_offset().0;
        let counted = match &mut *self.role.borrow_mut() {
            Role::Leader(l) => l.on_fetch(follower, Offset(offset), Offset(leader_end), now_ms),
            Role::Follower { .. } => return Err(code::NOT_LEADER_OR_FOLLOWER),
        };
        match counted {
            Ok(()) => {
                self.update_hw();
                Ok(())
            }
            Err(FetchRefused::NotReplica) => Err(code::NOT_LEADER_OR_FOLLOWER),
        }
    }

    /// The ISR change to propose now (leader only).
    fn isr_change(&self, now_ms: u64, lag_max_ms: u64) -> Option<(IsrChange, LeaderEpoch)> {
        match &*self.role.borrow() {
            Role::Leader(l) => l
                .isr_change(Offset(self.hw.get()), now_ms, lag_max_ms)
                .map(|c| (c, l.leader_epoch())),
            Role::Follower { .. } => None,
        }
    }

    /// (replicas, isr) while this broker leads.
    pub fn leader_view(&self) -> Option<(Vec<BrokerId>, Vec<BrokerId>)> {
        match &*self.role.borrow() {
            Role::Leader(l) => Some((l.replicas().to_vec(), l.isr().to_vec())),
            Role::Follower { .. } => None,
        }
    }

    /// The leader this broker follows, and its epoch.
    pub fn following(&self) -> Option<(BrokerId, LeaderEpoch)> {
        match &*self.role.borrow() {
            Role::Follower {
                leader: Some(l),
                leader_epoch,
            } => Some((*l, *leader_epoch)),
            _ => None,
        }
    }
}

/// The leader epoch a produce to a partition is stamped with: for a replicated partition
/// (`role_epoch` is `Some`), the epoch of the leadership this broker holds, and only while
/// the image names the same one; otherwise NOT_LEADER_OR_FOLLOWER (the client asks for
/// metadata and retries). A partition with one replica takes the image's epoch.
pub fn append_epoch(
    role_epoch: Option<Option<i32>>,
    image_epoch: LeaderEpoch,
) -> Result<LeaderEpoch, ErrorCode> {
    match role_epoch {
        None => Ok(image_epoch),
        Some(Some(e)) if e == image_epoch.0 => Ok(image_epoch),
        // Following, or the image moved on (an election this broker's role has not
        // caught up with, either way).
        Some(_) => Err(code::NOT_LEADER_OR_FOLLOWER),
    }
}

/// Whether `r` is still led by this broker in the leadership of `epoch` (a produce
/// appended in it may be acknowledged).
pub fn still_leading(r: &Replica, epoch: crate::store::LeaderEpoch) -> bool {
    r.leader_epoch() == Some(epoch.0)
}

/// Counters for /metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplicaCounters {
    pub isr_shrinks: u64,
    pub isr_expands: u64,
}

/// The shard's replicated partitions (see the module docs).
#[derive(Debug, Default)]
pub struct Replicas {
    parts: RefCell<HashMap<TopicPartition, Rc<Replica>>>,
    /// The (image, placement table) versions the roles were last reconciled with: a
    /// partition moved to another shard changes hands with the table.
    seen_versions: Cell<(u64, u64)>,
    counters: Cell<ReplicaCounters>,
    /// The shard's follower fetchers (made when the replication loop starts).
    fetchers: RefCell<Option<Rc<Fetchers>>>,
}

impl Replicas {
    pub fn get(&self, tp: &TopicPartition) -> Option<Rc<Replica>> {
        self.parts.borrow().get(tp).cloned()
    }

    pub fn all(&self) -> Vec<Rc<Replica>> {
        self.parts.borrow().values().cloned().collect()
    }

    pub fn counters(&self) -> ReplicaCounters {
        self.counters.get()
    }

    /// Partitions this shard leads whose ISR lacks some replica.
    pub fn under_replicated(&self) -> usize {
        self.parts
            .borrow()
            .values()
            .filter(|r| {
                r.leader_view()
                    .is_some_and(|(rs, isr)| isr.len() < rs.len())
            })
            .count()
    }

    fn fetchers(&self) -> Option<Rc<Fetchers>> {
        self.fetchers.borrow().clone()
    }

    fn count(&self, f: impl FnOnce(&mut ReplicaCounters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }
}

/// Milliseconds since the epoch (the ISR clock).
pub use sluice_engine::now_ms;

/// What the image asks of one partition on this shard.
struct Wanted {
    tp: TopicPartition,
    state: PartitionState,
    min_isr: usize,
}

/// The replicated partitions of `image` this broker holds and this shard owns.
fn wanted(shard: &Shard, image: &MetadataImage) -> Vec<Wanted> {
    let me = BrokerId(shard.config.node_id);
    let mut out = Vec::new();
    for (t, idx, p) in image.partitions() {
        if p.replicas.len() < 2 || !p.replicas.contains(&me) {
            continue;
        }
        let tp = TopicPartition {
            topic: t.name.clone(),
            partition: PartitionId(idx.0),
        };
        if shard.catalog.partition_count(&tp.topic).is_none() || shard.owner_of(&tp) != shard.id {
            continue;
        }
        out.push(Wanted {
            tp,
            state: p.clone(),
            min_isr: image.min_insync_replicas(&t.name),
        });
    }
    out
}

/// Brings the shard's replicas in line with the current image: creates the logs of
/// partitions it now holds, switches roles, updates leaders' ISR, drops partitions it no
/// longer holds. Returns whether anything ran (the image had moved).
pub async fn reconcile(shard: &Rc<Shard>) -> bool {
    let image = shard.cluster.image();
    let versions = (image.offset().0, shard.placement.version());
    if versions == shard.replicas.seen_versions.get() {
        return false;
    }
    shard.replicas.seen_versions.set(versions);
    let me = BrokerId(shard.config.node_id);
    let now = now_ms();
    let wanted = wanted(shard, &image);
    let mut keep = Vec::with_capacity(wanted.len());
    for w in wanted {
        keep.push(w.tp.clone());
        let existing = shard.replicas.get(&w.tp);
        match existing {
            Some(r) => update_role(&r, &w, me, now),
            None => {
                let Ok(log) = shard.open_or_create_log(&w.tp).await else {
                    continue;
                };
                let role = new_role(&w, me, &log, now);
                log_role(&w.tp, &role);
                let r = Rc::new(Replica::new(w.tp.clone(), log, role));
                r.update_hw();
                shard.replicas.parts.borrow_mut().insert(w.tp.clone(), r);
            }
        }
    }
    let gone: Vec<Rc<Replica>> = {
        let mut parts = shard.replicas.parts.borrow_mut();
        let gone: Vec<TopicPartition> = parts
            .keys()
            .filter(|tp| !keep.contains(tp))
            .cloned()
            .collect();
        gone.iter().filter_map(|tp| parts.remove(tp)).collect()
    };
    for r in gone {
        r.hw.reset(r.hw.get());
        tracing::info!(partition = %r.tp, "no longer a replica here");
    }
    let fetchers = shard.replicas.fetchers();
    if let Some(f) = &fetchers {
        f.assign(followed(shard, &image));
    }
    // Only once nothing follows them: a reassignment that removed this broker.
    shard
        .delete_removed_replicas(&image, fetchers.as_deref())
        .await;
    true
}

/// The partitions this shard follows, with where their leaders listen (their
/// inter-broker listener, `Security::peer_address`). A leader the image has no such
/// listener for is not fetched from until it registers one.
fn followed(shard: &Shard, image: &MetadataImage) -> Vec<Followed> {
    let mut out = Vec::new();
    for r in shard.replicas.all() {
        let Some((leader, leader_epoch)) = r.following() else {
            continue;
        };
        let Some((host, port)) = shard.security.peer_address(image, leader) else {
            tracing::warn!(partition = %r.tp, %leader, "leader has no inter-broker listener in the metadata image (its first, or the one [cluster_tls] names)");
            continue;
        };
        out.push(Followed {
            tp: r.tp.clone(),
            log: r.log.clone(),
            leader: LeaderAddr {
                id: leader,
                host,
                port,
            },
            leader_epoch,
            hw: r.hw.clone(),
        });
    }
    out
}

fn new_role(w: &Wanted, me: BrokerId, log: &PartitionLog, now: u64) -> Role {
    match w.state.leader {
        Some(l) if l == me => {
            log.assign_leader_epoch(LeaderEpoch(w.state.leader_epoch.0));
            Role::Leader(LeaderState::new(
                me,
                w.state.leader_epoch,
                w.state.replicas.clone(),
                w.state.isr.clone(),
                w.min_isr,
                log.log_end_offset(),
                now,
            ))
        }
        leader => Role::Follower {
            leader,
            leader_epoch: w.state.leader_epoch,
        },
    }
}

fn log_role(tp: &TopicPartition, role: &Role) {
    match role {
        Role::Leader(l) => {
            tracing::info!(partition = %tp, leader_epoch = l.leader_epoch().0, isr = ?l.isr(), "leading")
        }
        Role::Follower {
            leader,
            leader_epoch,
        } => tracing::info!(partition = %tp, ?leader, %leader_epoch, "following"),
    }
}

fn update_role(r: &Rc<Replica>, w: &Wanted, me: BrokerId, now: u64) {
    let same_leadership = {
        let role = r.role.borrow();
        match &*role {
            Role::Leader(l) => {
                w.state.leader == Some(me) && l.leader_epoch() == w.state.leader_epoch
            }
            Role::Follower {
                leader,
                leader_epoch,
            } => *leader == w.state.leader && *leader_epoch == w.state.leader_epoch,
        }
    };
    if same_leadership {
        if let Role::Leader(l) = &mut *r.role.borrow_mut() {
            l.update(
                w.state.replicas.clone(),
                w.state.isr.clone(),
                w.min_isr,
                now,
            );
        }
        r.update_hw();
        return;
    }
    // A new leadership: whoever waited on the old one's high watermark is answered now.
    r.hw.reset(r.hw.get());
    let role = new_role(w, me, &r.log, now);
    log_role(&w.tp, &role);
    *r.role.borrow_mut() = role;
    r.update_hw();
}

/// How often the shard looks for a new image version.
const RECONCILE_INTERVAL_MS: u64 = 10;
/// How often leaders recompute high watermarks and look for ISR changes.
const ISR_CHECK_INTERVAL_MS: u64 = 100;

/// The shard's replication loop: follows the image, keeps leaders' high watermarks moving
/// with their own durable ends, and proposes ISR changes to the controller.
pub async fn run(shard: Rc<Shard>) {
    let config = FetcherConfig {
        tls: shard.security.cluster_tls().cloned(),
        ..FetcherConfig::default()
    };
    let fetchers = Fetchers::new(BrokerId(shard.config.node_id), config);
    *shard.replicas.fetchers.borrow_mut() = Some(fetchers.clone());
    let mut since_check_ms = 0;
    while !shard.stopping.is_set() {
        reconcile(&shard).await;
        since_check_ms += RECONCILE_INTERVAL_MS;
        if since_check_ms >= ISR_CHECK_INTERVAL_MS {
            since_check_ms = 0;
            check_leaders(&shard);
        }
        shard
            .sleep_or_stop(Duration::from_millis(RECONCILE_INTERVAL_MS))
            .await;
    }
    // No follower appends once this returns: the shard closes its logs next.
    fetchers.stop().await;
}

fn check_leaders(shard: &Rc<Shard>) {
    let now = now_ms();
    let lag_max_ms = shard.config.cluster.replica_lag_time_max_ms;
    let image = shard.cluster.image();
    for r in shard.replicas.all() {
        r.update_hw();
        if let Some((mut change, epoch)) = r.isr_change(now, lag_max_ms) {
            // A fenced broker (restarted, not yet unfenced) may not join: wait for it.
            let (eligible, waiting): (Vec<BrokerId>, Vec<BrokerId>) =
                change.expanded.iter().partition(|b| image.is_live(**b));
            change.expanded = eligible;
            change.isr.retain(|b| !waiting.contains(b));
            if change.expanded.is_empty() && change.shrunk.is_empty() {
                continue;
            }
            if let Role::Leader(l) = &mut *r.role.borrow_mut() {
                l.mark_pending(change.isr.clone(), now);
            }
            let s = shard.clone();
            glommio::spawn_local(async move { propose_isr(&s, &r, change, epoch).await }).detach();
        }
    }
}

/// Sends an ISR change to the controller; logs shrinks at WARN (an operator must see
/// them) and counts both kinds once applied.
async fn propose_isr(
    shard: &Rc<Shard>,
    r: &Rc<Replica>,
    change: IsrChange,
    leader_epoch: LeaderEpoch,
) {
    for (b, lag_ms) in &change.shrunk {
        tracing::warn!(topic = %r.tp.topic, partition = r.tp.partition.0, follower = %b, lag_ms, isr = ?change.isr, "shrinking ISR: follower has not caught up");
    }
    for b in &change.expanded {
        tracing::info!(topic = %r.tp.topic, partition = r.tp.partition.0, follower = %b, isr = ?change.isr, "expanding ISR: follower caught up");
    }
    let result =
        crate::broker::cluster::alter_isr(&shard.cluster, &r.tp, leader_epoch, &change.isr).await;
    if result.is_err() {
        // Refused: the ISR stays the image's, and the high watermark stops waiting for the
        // members the change would have added (Kafka reverts its maximal ISR the same way).
        if let Role::Leader(l) = &mut *r.role.borrow_mut() {
            if l.leader_epoch() == leader_epoch {
                l.pending_refused();
            }
        }
    }
    match result {
        Ok(()) => shard.replicas.count(|c| {
            c.isr_shrinks += u64::from(!change.shrunk.is_empty());
            c.isr_expands += u64::from(!change.expanded.is_empty());
        }),
        Err((error, message)) if error == code::INELIGIBLE_REPLICA => {
            // The follower is fenced or shutting down: expected while a broker stops or
            // restarts, and proposed again only while it keeps fetching.
            tracing::info!(topic = %r.tp.topic, partition = r.tp.partition.0, %message, "ISR expansion refused: follower not eligible yet");
        }
        Err((error, message)) => {
            // Proposed again once the pending time has passed (or the image changed).
            tracing::warn!(topic = %r.tp.topic, partition = r.tp.partition.0, error = error.0, %message, "ISR change refused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_produce_is_stamped_with_the_leadership_this_broker_holds_or_refused() {
        // One replica: the image's epoch.
        assert_eq!(append_epoch(None, LeaderEpoch(4)), Ok(LeaderEpoch(4)));
        // Leading in the image's epoch.
        assert_eq!(
            append_epoch(Some(Some(4)), LeaderEpoch(4)),
            Ok(LeaderEpoch(4))
        );
        // The image names a newer epoch (another leader, or this broker again before its
        // role switched): stamping it would claim an epoch this broker never wrote in.
        assert_eq!(
            append_epoch(Some(Some(4)), LeaderEpoch(5)),
            Err(code::NOT_LEADER_OR_FOLLOWER)
        );
        // Elected in the image, still following here: the fetcher may still append.
        assert_eq!(
            append_epoch(Some(None), LeaderEpoch(5)),
            Err(code::NOT_LEADER_OR_FOLLOWER)
        );
    }
}
