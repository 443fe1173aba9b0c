//! `/cluster` on the admin endpoint: brokers, quorum, partition health, as JSON.

use std::collections::BTreeMap;

use sluice_control::{BrokerId, MetadataImage};

use super::{BrokerState, ClusterView};

/// `/cluster` on the admin endpoint: brokers, quorum, partition health, as JSON.
pub fn status_json(view: &ClusterView) -> String {
    let image = view.image();
    let q = view.quorum();
    let brokers: Vec<serde_json::Value> = image
        .brokers()
        .map(|b| {
            let listener = b.listeners.first();
            serde_json::json!({
                "id": b.id.0,
                "epoch": b.epoch.0,
                "rack": b.rack,
                "fenced": b.fenced,
                "host": listener.map(|l| l.host.clone()),
                "port": listener.map(|l| l.port),
            })
        })
        .collect();
    let names = |it: &mut dyn Iterator<
        Item = (&sluice_control::TopicImage, sluice_control::PartitionId),
    >| {
        it.map(|(t, p)| format!("{}-{}", t.name, p.0))
            .collect::<Vec<_>>()
    };
    let under = names(&mut image.under_replicated());
    let offline = names(&mut image.offline());
    let under_detail = details(&mut image.under_replicated(), |_, p| {
        serde_json::json!({
            "leader": p.leader.map(|l| l.0),
            "isr": ids(&p.isr),
            "missing": ids(&missing_replicas(p)),
        })
    });
    let offline_detail = details(&mut image.offline(), |t, p| {
        serde_json::json!({
            "leader": p.leader.map(|l| l.0),
            "isr": ids(&p.isr),
            "elr": ids(&p.elr),
            "waits_for": ids(&waits_for(p)),
            "unclean_election": image.unclean_election_enabled(&t.name),
        })
    });
    let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
    for (_, _, p) in image.partitions() {
        if let Some(l) = p.leader {
            *leaders.entry(l.0).or_default() += 1;
        }
    }
    let state = match view.broker_state() {
        BrokerState::Unregistered => "unregistered",
        BrokerState::Fenced(_) => "fenced",
        BrokerState::Active(_) => "active",
    };
    serde_json::json!({
        "node_id": view.node_id,
        "broker_state": state,
        "controller": {
            "leader": q.leader.map(|l| l.0),
            "term": q.term.0,
            "commit_index": q.commit_index,
            "applied_index": q.applied_index,
            "voters": q.voters.iter().map(|v| v.0).collect::<Vec<_>>(),
            "learners": q.learners.iter().map(|v| v.0).collect::<Vec<_>>(),
            "seen_by": q.node,
            "addresses": view
                .controllers()
                .iter()
                .map(|(id, a)| (id.0.to_string(), a.to_string()))
                .collect::<BTreeMap<_, _>>(),
        },
        "metadata_offset": image.offset().0,
        "brokers": brokers,
        "topics": image.topics().count(),
        "partitions": image.partitions().count(),
        "leaders_per_broker": leaders,
        "under_replicated": under,
        "offline": offline,
        "under_replicated_partitions": under_detail,
        "offline_partitions": offline_detail,
    })
    .to_string()
}

/// One JSON object per listed partition: `"partition": "topic-N"` plus what `fields` gives.
pub(super) fn details(
    partitions: &mut dyn Iterator<
        Item = (&sluice_control::TopicImage, sluice_control::PartitionId),
    >,
    fields: impl Fn(&sluice_control::TopicImage, &sluice_control::PartitionState) -> serde_json::Value,
) -> Vec<serde_json::Value> {
    partitions
        .filter_map(|(t, idx)| {
            let mut v = fields(t, t.partitions.get(&idx)?);
            v["partition"] = serde_json::json!(format!("{}-{}", t.name, idx.0));
            Some(v)
        })
        .collect()
}

pub(super) fn ids(brokers: &[BrokerId]) -> Vec<i32> {
    brokers.iter().map(|b| b.0).collect()
}

/// Replicas of an under-replicated partition that are not in its ISR.
pub(super) fn missing_replicas(p: &sluice_control::PartitionState) -> Vec<BrokerId> {
    p.replicas
        .iter()
        .copied()
        .filter(|r| !p.isr.contains(r))
        .collect()
}

/// The brokers an offline partition waits for: its ISR and ELR members (in replica order),
/// the replicas that hold every committed record; any of them coming back (registered and
/// unfenced) is elected. An unclean election could pick another replica, but only where
/// the topic allows it.
pub(super) fn waits_for(p: &sluice_control::PartitionState) -> Vec<BrokerId> {
    p.replicas
        .iter()
        .copied()
        .filter(|r| p.isr.contains(r) || p.elr.contains(r))
        .collect()
}

/// Partitions led by someone other than their preferred (first) replica.
pub(super) fn not_preferred(image: &MetadataImage) -> usize {
    image
        .partitions()
        .filter(|(_, _, p)| p.leader.is_some() && p.leader != p.replicas.first().copied())
        .count()
}
