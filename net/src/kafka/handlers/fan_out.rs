//! The per-partition fan-out shared by ListOffsets, OffsetForLeaderEpoch and
//! DeleteRecords: every partition of the request asked of its owning shard (each shard
//! once, in parallel), the answers handed back grouped as the request's topics are.

use std::rc::Rc;

use crate::broker::shard::{answers_by_shard, PartitionAnswer, Shard, ShardOp};
use crate::kafka::errors::{code, ErrorCode};
use crate::store::TopicPartition;

/// Asks each partition of `topics` (`partitions` gives a topic's name and partitions,
/// `query` a partition's index and what is asked of it) of its owning shard with `op`;
/// returns one answer per partition, `answers[topic][partition]` in request order. A topic
/// `refused` names an error for (the authorizer's) is answered with it, not asked.
pub(crate) async fn ask_owners<T, P, Q, A: PartitionAnswer>(
    shard: &Rc<Shard>,
    topics: &[T],
    partitions: impl Fn(&T) -> (&str, &[P]),
    query: impl Fn(&P) -> (i32, Q),
    refused: impl Fn(&str) -> Option<ErrorCode>,
    op: impl Fn(Vec<(TopicPartition, Q)>) -> ShardOp,
) -> Vec<Vec<A>> {
    let mut items = Vec::new();
    // Per partition: the answer already decided (a refused topic), or `None` (asked).
    let mut decided: Vec<Option<A>> = Vec::new();
    let mut counts = Vec::with_capacity(topics.len());
    for t in topics {
        let (name, ps) = partitions(t);
        counts.push(ps.len());
        let refusal = refused(name);
        for p in ps {
            if let Some(e) = refusal {
                decided.push(Some(A::failed(e)));
                continue;
            }
            decided.push(None);
            let (index, q) = query(p);
            items.push((TopicPartition::new(name, index), q));
        }
    }
    let mut asked = answers_by_shard(shard, items, op).await.into_iter();
    let mut answers = decided.into_iter().map(|d| {
        d.or_else(|| asked.next())
            .unwrap_or_else(|| A::failed(code::UNKNOWN_SERVER_ERROR))
    });
    counts
        .into_iter()
        .map(|n| answers.by_ref().take(n).collect())
        .collect()
}

/// The answer's topics from `answers` (as [`ask_owners`] returned them, with the same
/// `partitions`): `partition` builds one partition's result from the topic's name, the
/// asked partition and its answer; `topic` wraps a topic's results. Request order is kept.
pub(crate) fn answer_topics<T, P, A, PR, TR>(
    topics: &[T],
    answers: Vec<Vec<A>>,
    partitions: impl Fn(&T) -> (&str, &[P]),
    partition: impl Fn(&str, &P, A) -> PR,
    topic: impl Fn(&T, Vec<PR>) -> TR,
) -> Vec<TR> {
    topics
        .iter()
        .zip(answers)
        .map(|(t, answers)| {
            let (name, ps) = partitions(t);
            let results = ps
                .iter()
                .zip(answers)
                .map(|(p, a)| partition(name, p, a))
                .collect();
            topic(t, results)
        })
        .collect()
}
