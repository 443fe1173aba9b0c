//! What the group and the transaction coordinators share about the partitions of their
//! internal topic (`__consumer_offsets`, `__transaction_state`): taking one on when this
//! broker comes to lead it, loading it again when it was led away and back (another
//! leader may have written meanwhile), and forgetting it when another broker leads it.

use std::rc::Rc;

use crate::broker::shard::Shard;
use crate::store::TopicPartition;

/// A coordinator's state per partition of its internal topic.
pub(crate) trait CoordinatedPartitions {
    /// Loaded or being loaded here.
    fn is_resident(&self, partition: usize) -> bool;
    /// Resident, but taken on at another leader epoch than `epoch`.
    fn is_stale(&self, partition: usize, epoch: i32) -> bool;
    /// Taken on at leader epoch `epoch`: requests wait for the load.
    fn begin_load(&self, partition: usize, epoch: i32);
    /// Forgotten: another broker coordinates it now.
    fn unload(&self, partition: usize);
}

/// Takes on the partitions of `topic` among `owned` this broker has come to lead (adding
/// them to `pending`) and forgets those another broker leads now; true when any was taken
/// on. Leading means in the image and, for a replicated partition, in the replica's role:
/// the switch stops the follower fetcher, so the load that follows reads every record it
/// appended (loading on the image alone could start while the fetcher was still appending
/// the previous coordinator's last records, and miss them).
pub(crate) fn follow_leadership(
    shard: &Rc<Shard>,
    topic: &str,
    state: &impl CoordinatedPartitions,
    owned: &[usize],
    pending: &mut Vec<usize>,
) -> bool {
    let mut took = false;
    for &p in owned {
        let leads = shard.cluster.leads(topic, p as i32)
            && shard
                .replicas
                .get(&TopicPartition::new(topic, p as i32))
                .is_none_or(|r| r.is_leader());
        let epoch = shard.cluster.leader_epoch(topic, p as i32).0;
        if leads && state.is_stale(p, epoch) {
            tracing::info!(
                topic,
                partition = p,
                epoch,
                "coordinator partition led again under a new epoch; loading it again"
            );
            state.unload(p);
        }
        let resident = state.is_resident(p);
        if leads && !resident {
            state.begin_load(p, epoch);
            pending.push(p);
            took = true;
        } else if !leads && resident {
            tracing::info!(
                topic,
                partition = p,
                "another broker coordinates this partition now"
            );
            pending.retain(|q| *q != p);
            state.unload(p);
        }
    }
    took
}

macro_rules! coordinated {
    ($($state:ty),*) => {$(
        impl CoordinatedPartitions for $state {
            fn is_resident(&self, partition: usize) -> bool {
                <$state>::is_resident(self, partition)
            }
            fn is_stale(&self, partition: usize, epoch: i32) -> bool {
                <$state>::is_stale(self, partition, epoch)
            }
            fn begin_load(&self, partition: usize, epoch: i32) {
                <$state>::begin_load(self, partition, epoch)
            }
            fn unload(&self, partition: usize) {
                <$state>::unload(self, partition)
            }
        }
    )*};
}

coordinated!(crate::groups::Groups, crate::txn::Txns);
