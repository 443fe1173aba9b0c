//! Server-side assignors of the consumer group protocol (KIP-848): `uniform` (Kafka's
//! default) and `range`, chosen by the members' `group.remote.assignor`. Both are pure
//! functions: the members' subscriptions, the subscribed topics' partition counts and the
//! previous target assignment in, the new target assignment out.
//!
//! Both are sticky: a partition stays with its previous owner while that owner still
//! subscribes to its topic and holds no more than its share, so a member joining or
//! leaving moves only the partitions that must move (with 100 partitions and ten
//! members, a joining member takes 9 and a leaving member's 10 are spread over the nine
//! others; see the tests).
//!
//! Invariants (checked by the tests): every partition of a subscribed topic goes to
//! exactly one member subscribed to its topic; with identical subscriptions the members'
//! counts differ by at most one (`uniform`), or per topic (`range`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use sluice_control::TopicId;

/// Partitions by topic.
pub type Assignment = BTreeMap<TopicId, BTreeSet<i32>>;

/// The assignor names the coordinator knows; the first is the default.
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// One member as an assignor sees it.
#[derive(Debug)]
pub struct Subscriber<'a> {
    pub member_id: &'a str,
    /// Topics it subscribes to (names and regular expressions resolved).
    pub topics: BTreeSet<TopicId>,
    /// Its previous target assignment, if any.
    pub previous: Option<&'a Assignment>,
}

/// Runs the named assignor (`uniform` for any name it does not know: names are
/// validated when a member sends them).
pub fn assign(
    name: &str,
    members: &[Subscriber<'_>],
    partitions: &BTreeMap<TopicId, i32>,
) -> BTreeMap<String, Assignment> {
    let owners = match name {
        "range" => range(members, partitions),
        _ => uniform(members, partitions),
    };
    let mut out: BTreeMap<String, Assignment> = members
        .iter()
        .map(|m| (m.member_id.to_string(), Assignment::new()))
        .collect();
    for ((topic, p), owner) in owners {
        if let Some(a) = out.get_mut(members[owner].member_id) {
            a.entry(topic).or_default().insert(p);
        }
    }
    out
}

type Owners = BTreeMap<(TopicId, i32), usize>;

/// Every (topic, partition) some member subscribes to.
fn subscribed_partitions(
    members: &[Subscriber<'_>],
    partitions: &BTreeMap<TopicId, i32>,
) -> Vec<(TopicId, i32)> {
    let topics: BTreeSet<TopicId> = members
        .iter()
        .flat_map(|m| m.topics.iter().copied())
        .collect();
    topics
        .into_iter()
        .filter_map(|t| partitions.get(&t).map(|n| (t, *n)))
        .flat_map(|(t, n)| (0..n.max(0)).map(move |p| (t, p)))
        .collect()
}

/// Previous owners that still subscribe to the partition's topic (the first claim wins
/// should two previous assignments overlap).
fn kept(members: &[Subscriber<'_>], partitions: &BTreeMap<TopicId, i32>) -> Owners {
    let mut owners = Owners::new();
    for (i, m) in members.iter().enumerate() {
        for (topic, ps) in m.previous.into_iter().flatten() {
            let Some(&count) = partitions.get(topic) else {
                continue;
            };
            if !m.topics.contains(topic) {
                continue;
            }
            for &p in ps.iter().filter(|p| (0..count).contains(*p)) {
                owners.entry((*topic, p)).or_insert(i);
            }
        }
    }
    owners
}

fn counts(owners: &Owners, n: usize) -> Vec<usize> {
    let mut c = vec![0; n];
    for &o in owners.values() {
        c[o] += 1;
    }
    c
}

/// Members' shares when all subscribe to the same topics: `total / n` each, one more for
/// the `total % n` members that held the most before (stickiness), then by member id.
fn quotas(members: &[Subscriber<'_>], kept_counts: &[usize], total: usize) -> Vec<usize> {
    let n = members.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (Reverse(kept_counts[i]), members[i].member_id));
    let mut q = vec![total / n; n];
    for &i in order.iter().take(total % n) {
        q[i] += 1;
    }
    q
}

/// `uniform`: balanced over all members, sticky.
fn uniform(members: &[Subscriber<'_>], partitions: &BTreeMap<TopicId, i32>) -> Owners {
    if members.is_empty() {
        return Owners::new();
    }
    let all = subscribed_partitions(members, partitions);
    let mut owners = kept(members, partitions);
    let homogeneous = members.windows(2).all(|w| w[0].topics == w[1].topics);
    let limit = if homogeneous {
        let q = quotas(members, &counts(&owners, members.len()), all.len());
        // Trim members holding more than their share (their highest partitions go).
        let mut held = vec![0usize; members.len()];
        owners.retain(|_, o| {
            held[*o] += 1;
            held[*o] <= q[*o]
        });
        Some(q)
    } else {
        None
    };
    let mut count = counts(&owners, members.len());
    // The unowned partitions, each to the eligible member holding fewest (then by id).
    let unowned: Vec<(TopicId, i32)> = all
        .iter()
        .copied()
        .filter(|tp| !owners.contains_key(tp))
        .collect();
    if let Some(q) = &limit {
        let mut heap: BinaryHeap<Reverse<(usize, &str, usize)>> = (0..members.len())
            .filter(|&i| count[i] < q[i])
            .map(|i| Reverse((count[i], members[i].member_id, i)))
            .collect();
        for tp in unowned {
            let Some(Reverse((c, id, i))) = heap.pop() else {
                break;
            };
            owners.insert(tp, i);
            count[i] = c + 1;
            if count[i] < q[i] {
                heap.push(Reverse((count[i], id, i)));
            }
        }
        return owners;
    }
    for tp in unowned {
        if let Some(i) = fewest_eligible(members, &count, tp.0) {
            owners.insert(tp, i);
            count[i] += 1;
        }
    }
    balance(members, &mut owners, &mut count, all.len());
    owners
}

fn fewest_eligible(members: &[Subscriber<'_>], count: &[usize], topic: TopicId) -> Option<usize> {
    (0..members.len())
        .filter(|&i| members[i].topics.contains(&topic))
        .min_by_key(|&i| (count[i], members[i].member_id))
}

/// Different subscriptions: moves one partition at a time from a member to an eligible
/// one holding at least two fewer, until none can move. Each move lowers the sum of
/// squared counts, so it ends; `moves_max` bounds it all the same. A step looks at one
/// partition per (member, topic) — any of them would do — so it costs about members ×
/// topics × subscribers, not partitions × members.
fn balance(members: &[Subscriber<'_>], owners: &mut Owners, count: &mut [usize], moves_max: usize) {
    let mut held: Vec<BTreeMap<TopicId, BTreeSet<i32>>> = vec![BTreeMap::new(); members.len()];
    for (&(t, p), &o) in owners.iter() {
        held[o].entry(t).or_default().insert(p);
    }
    for _ in 0..moves_max {
        let least = count.iter().copied().min().unwrap_or(0);
        let mut by_count: Vec<usize> = (0..members.len())
            .filter(|&i| count[i] >= least + 2)
            .collect();
        by_count.sort_by_key(|&i| (Reverse(count[i]), members[i].member_id));
        let found = by_count.iter().find_map(|&a| {
            held[a].iter().find_map(|(t, ps)| {
                let b = fewest_eligible(members, count, *t)?;
                let p = *ps.iter().next_back()?;
                (count[b] + 1 < count[a]).then_some((*t, p, a, b))
            })
        });
        let Some((t, p, a, b)) = found else {
            return;
        };
        owners.insert((t, p), b);
        if let Some(ps) = held[a].get_mut(&t) {
            ps.remove(&p);
            if ps.is_empty() {
                held[a].remove(&t);
            }
        }
        held[b].entry(t).or_default().insert(p);
        count[a] -= 1;
        count[b] += 1;
    }
}

/// `range`: per topic, the subscribed members in member-id order share its partitions
/// (`n / members` each, one more for the first `n % members`); partitions a member held
/// before stay with it within its share, the rest fill the shares in partition order.
fn range(members: &[Subscriber<'_>], partitions: &BTreeMap<TopicId, i32>) -> Owners {
    let mut owners = Owners::new();
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&i| members[i].member_id);
    let topics: BTreeSet<TopicId> = members
        .iter()
        .flat_map(|m| m.topics.iter().copied())
        .collect();
    for topic in topics {
        let Some(&n) = partitions.get(&topic) else {
            continue;
        };
        let subs: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| members[i].topics.contains(&topic))
            .collect();
        let n = n.max(0) as usize;
        let quota: HashMap<usize, usize> = subs
            .iter()
            .enumerate()
            .map(|(k, &i)| (i, n / subs.len() + usize::from(k < n % subs.len())))
            .collect();
        let mut held: HashMap<usize, usize> = HashMap::new();
        for &i in &subs {
            let previous = members[i].previous.and_then(|a| a.get(&topic));
            for &p in previous.into_iter().flatten() {
                let h = held.entry(i).or_default();
                if (p as usize) < n && *h < quota[&i] && !owners.contains_key(&(topic, p)) {
                    owners.insert((topic, p), i);
                    *h += 1;
                }
            }
        }
        let mut room = subs.iter().copied();
        let mut current = room.next();
        for p in 0..n as i32 {
            if owners.contains_key(&(topic, p)) {
                continue;
            }
            while let Some(i) = current {
                if held.get(&i).copied().unwrap_or(0) < quota[&i] {
                    break;
                }
                current = room.next();
            }
            let Some(i) = current else {
                break;
            };
            owners.insert((topic, p), i);
            *held.entry(i).or_default() += 1;
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(n: u128, parts: i32) -> BTreeMap<TopicId, i32> {
        (1..=n).map(|t| (TopicId(t), parts)).collect()
    }

    fn run(
        name: &str,
        ids: &[String],
        subs: &BTreeMap<TopicId, i32>,
        previous: &BTreeMap<String, Assignment>,
    ) -> BTreeMap<String, Assignment> {
        let members: Vec<Subscriber<'_>> = ids
            .iter()
            .map(|id| Subscriber {
                member_id: id,
                topics: subs.keys().copied().collect(),
                previous: previous.get(id),
            })
            .collect();
        assign(name, &members, subs)
    }

    fn owner_map(a: &BTreeMap<String, Assignment>) -> BTreeMap<(TopicId, i32), String> {
        let mut out = BTreeMap::new();
        for (m, asg) in a {
            for (t, ps) in asg {
                for p in ps {
                    assert!(out.insert((*t, *p), m.clone()).is_none(), "assigned twice");
                }
            }
        }
        out
    }

    fn moved(a: &BTreeMap<String, Assignment>, b: &BTreeMap<String, Assignment>) -> usize {
        let (a, b) = (owner_map(a), owner_map(b));
        b.iter()
            .filter(|(tp, m)| a.get(*tp).is_some_and(|o| o != *m))
            .count()
            + b.keys().filter(|tp| !a.contains_key(*tp)).count()
    }

    fn spread(a: &BTreeMap<String, Assignment>) -> usize {
        let c: Vec<usize> = a
            .values()
            .map(|x| x.values().map(BTreeSet::len).sum())
            .collect();
        c.iter().max().unwrap() - c.iter().min().unwrap()
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("member-{i:02}")).collect()
    }

    /// The figure for the report: 100 partitions, ten members, one joins or leaves.
    #[test]
    fn one_member_of_ten_joining_or_leaving_moves_few_partitions() {
        for (name, subs) in [
            ("uniform", topics(1, 100)),
            ("uniform", topics(10, 10)),
            ("range", topics(1, 100)),
            ("range", topics(10, 10)),
        ] {
            let ten = run(name, &ids(10), &subs, &BTreeMap::new());
            assert_eq!(owner_map(&ten).len(), 100);
            assert!(spread(&ten) <= 1 || name == "range");
            let eleven = run(name, &ids(11), &subs, &ten);
            let joined = moved(&ten, &eleven);
            let nine = run(name, &ids(9), &subs, &ten);
            let left = moved(&ten, &nine);
            println!(
                "{name} over {} topics: join moves {joined}, leave moves {left}",
                subs.len()
            );
            assert_eq!(owner_map(&eleven).len(), 100);
            assert_eq!(owner_map(&nine).len(), 100);
            if name == "uniform" {
                assert_eq!(joined, 9, "the newcomer's share only");
                assert_eq!(left, 10, "the leaver's partitions only");
                assert!(spread(&eleven) <= 1 && spread(&nine) <= 1);
            } else {
                assert!(joined <= 20 && left <= 20, "{joined} {left}");
            }
        }
    }

    #[test]
    fn uniform_respects_different_subscriptions() {
        let parts = topics(2, 6);
        let a = "a".to_string();
        let b = "b".to_string();
        let members = vec![
            Subscriber {
                member_id: &a,
                topics: [TopicId(1)].into(),
                previous: None,
            },
            Subscriber {
                member_id: &b,
                topics: [TopicId(1), TopicId(2)].into(),
                previous: None,
            },
        ];
        let out = assign("uniform", &members, &parts);
        assert!(
            !out["a"].contains_key(&TopicId(2)),
            "a never gets a topic it does not read"
        );
        assert_eq!(owner_map(&out).len(), 12);
        let a_count: usize = out["a"].values().map(BTreeSet::len).sum();
        assert_eq!(
            a_count, 6,
            "a takes all of topic 1, b all of topic 2: {out:?}"
        );
    }

    #[test]
    fn range_gives_contiguous_ranges_from_scratch() {
        let out = run("range", &ids(3), &topics(1, 7), &BTreeMap::new());
        let got: Vec<Vec<i32>> = out
            .values()
            .map(|a| a[&TopicId(1)].iter().copied().collect())
            .collect();
        assert_eq!(got, vec![vec![0, 1, 2], vec![3, 4], vec![5, 6]]);
    }

    #[test]
    fn deleted_topics_and_lost_partitions_leave_the_assignment() {
        let before = run("uniform", &ids(2), &topics(2, 4), &BTreeMap::new());
        let after = run("uniform", &ids(2), &topics(1, 2), &before);
        assert_eq!(owner_map(&after).len(), 2);
        assert!(owner_map(&after)
            .keys()
            .all(|(t, p)| *t == TopicId(1) && *p < 2));
        assert!(run("uniform", &[], &topics(1, 4), &before).is_empty());
    }

    #[test]
    fn different_subscriptions_stay_balanced_and_cheap() {
        // 100 members over 50 topics of 20 partitions; each member reads half the topics.
        let parts = topics(50, 20);
        let ids = ids(100);
        let members: Vec<Subscriber<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Subscriber {
                member_id: id,
                topics: (1..=50u128)
                    .filter(|t| (*t as usize + i) % 2 == 0)
                    .map(TopicId)
                    .collect(),
                previous: None,
            })
            .collect();
        let started = std::time::Instant::now();
        let out = assign("uniform", &members, &parts);
        println!(
            "figure: 100 members, 1000 partitions, two subscriptions: {:?}",
            started.elapsed()
        );
        assert_eq!(owner_map(&out).len(), 1000);
        assert!(spread(&out) <= 1, "{}", spread(&out));
        for (m, s) in ids.iter().zip(&members) {
            assert!(out[m].keys().all(|t| s.topics.contains(t)));
        }
    }
}
