//! The records a topic or config change proposes: pure functions of the image and the
//! request.

use std::collections::BTreeMap;

use super::handle::refuse;
use super::PARTITIONS_PER_TOPIC_MAX;
use crate::image::MetadataImage;
use crate::placement::{
    add_partitions_records, check_manual_assignment, create_topic_record, ManualPartition,
};
use crate::records::{ConfigResource, PartitionAssignment, PartitionChange, Record};
use crate::rpc::{ErrorKind, Reply};
use crate::types::{BrokerId, LeaderEpoch, PartitionId, TopicId};

/// The records that take a resource's configs (a topic's, a group's, a broker's, the
/// cluster default's) from what `image` holds to what a request asks: each key that
/// changes, plus (with `replace`) the removal of every key not named.
pub(super) fn resource_config_records(
    image: &MetadataImage,
    resource: ConfigResource,
    name: &str,
    configs: Vec<(String, Option<String>)>,
    replace: bool,
) -> Vec<Record> {
    let current = image
        .configs_of(resource, name)
        .cloned()
        .unwrap_or_default();
    let mut changes: BTreeMap<String, Option<String>> = BTreeMap::new();
    if replace {
        for key in current.keys() {
            changes.insert(key.clone(), None);
        }
    }
    changes.extend(configs);
    changes
        .into_iter()
        .filter(|(key, value)| current.get(key) != value.as_ref())
        .map(|(key, value)| Record::ConfigChange {
            resource,
            resource_name: name.to_string(),
            key,
            value,
        })
        .collect()
}

/// A topic to create, as asked.
pub(super) struct TopicSpec<'a> {
    pub(super) name: &'a str,
    pub(super) partitions: i32,
    pub(super) replication_factor: i16,
    pub(super) configs: &'a [(String, String)],
    pub(super) topic_id: Option<TopicId>,
    /// Each partition's replicas as asked; empty: placed here.
    pub(super) assignment: &'a [Vec<BrokerId>],
}

pub(super) fn create_topic_records(
    image: &MetadataImage,
    spec: &TopicSpec<'_>,
) -> Result<Vec<Record>, Reply> {
    let name = spec.name;
    if name.is_empty() || name.len() > 249 {
        return Err(refuse(
            ErrorKind::InvalidTopic,
            format!("bad topic name {name:?}"),
        ));
    }
    if image.topic_by_name(name).is_some() {
        return Err(refuse(
            ErrorKind::TopicExists,
            format!("topic {name} already exists"),
        ));
    }
    let partitions = if spec.assignment.is_empty() {
        spec.partitions
    } else {
        i32::try_from(spec.assignment.len()).unwrap_or(i32::MAX)
    };
    if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
        return Err(refuse(
            ErrorKind::InvalidPartitions,
            format!("partition count {partitions} is not within 1..={PARTITIONS_PER_TOPIC_MAX}"),
        ));
    }
    let id = spec.topic_id.unwrap_or_else(|| new_topic_id(image, name));
    let create = if spec.assignment.is_empty() {
        placed_topic(image, spec, id)?
    } else {
        let checked = check_manual_assignment(image, 0, spec.assignment, None)
            .map_err(|e| refuse(ErrorKind::InvalidReplicaAssignment, e.to_string()))?;
        Record::CreateTopic {
            name: name.to_owned(),
            topic_id: id,
            partitions: checked
                .into_iter()
                .enumerate()
                .map(|(i, p)| PartitionAssignment {
                    partition: PartitionId(i as i32),
                    leader: p.isr.first().copied(),
                    leader_epoch: LeaderEpoch(0),
                    isr: p.isr,
                    replicas: p.replicas,
                })
                .collect(),
        }
    };
    let mut records = vec![create];
    records.extend(spec.configs.iter().map(|(k, v)| Record::ConfigChange {
        resource: ConfigResource::Topic,
        resource_name: name.to_owned(),
        key: k.clone(),
        value: Some(v.clone()),
    }));
    Ok(records)
}

/// The `CreateTopic` record of a topic whose replicas the controller places.
fn placed_topic(image: &MetadataImage, spec: &TopicSpec<'_>, id: TopicId) -> Result<Record, Reply> {
    if spec.replication_factor < 1 {
        return Err(refuse(
            ErrorKind::InvalidReplicationFactor,
            format!("replication factor {} is below 1", spec.replication_factor),
        ));
    }
    create_topic_record(
        image,
        spec.name,
        id,
        spec.partitions as usize,
        spec.replication_factor as usize,
    )
    .map_err(|e| refuse(ErrorKind::InvalidReplicationFactor, e.to_string()))
}

pub(super) fn add_partitions(
    image: &MetadataImage,
    name: &str,
    count: i32,
    assignment: &[Vec<BrokerId>],
) -> Result<Vec<Record>, Reply> {
    let Some(topic) = image.topic_by_name(name) else {
        return Err(unknown_topic(name));
    };
    let current = topic.partitions.len();
    if count <= current as i32 || count > PARTITIONS_PER_TOPIC_MAX {
        return Err(refuse(
            ErrorKind::InvalidPartitions,
            format!("topic {name} has {current} partitions; {count} is not more (or is above {PARTITIONS_PER_TOPIC_MAX})"),
        ));
    }
    if assignment.is_empty() {
        return add_partitions_records(image, topic, count as usize)
            .map_err(|e| refuse(ErrorKind::InvalidReplicationFactor, e.to_string()));
    }
    let additional = count as usize - current;
    if assignment.len() != additional {
        return Err(refuse(
            ErrorKind::InvalidReplicaAssignment,
            format!(
                "Attempted to add {additional} additional partition(s), but only {} assignment(s) were specified.",
                assignment.len()
            ),
        ));
    }
    let rf = topic.partitions.values().next().map(|p| p.replicas.len());
    let checked = check_manual_assignment(image, current as i32, assignment, rf)
        .map_err(|e| refuse(ErrorKind::InvalidReplicaAssignment, e.to_string()))?;
    Ok(checked
        .into_iter()
        .enumerate()
        .map(|(i, ManualPartition { replicas, isr })| {
            Record::PartitionChange(PartitionChange {
                topic_id: topic.id,
                partition: PartitionId((current + i) as i32),
                leader: isr.first().copied(),
                leader_epoch: LeaderEpoch(0),
                isr,
                eligible_leaders: Vec::new(),
                replicas: Some(replicas),
                adding_replicas: None,
                removing_replicas: None,
            })
        })
        .collect())
}

/// The refusal for a topic the image does not have.
pub(super) fn unknown_topic(name: &str) -> Reply {
    refuse(
        ErrorKind::UnknownTopic,
        format!("topic {name} does not exist"),
    )
}

/// A fresh topic id: a hash of the name, the clock and the process's random hasher keys,
/// never 0 and never one the image already has.
pub(super) fn new_topic_id(image: &MetadataImage, name: &str) -> TopicId {
    use std::hash::{BuildHasher, Hasher};
    let keys = std::collections::hash_map::RandomState::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut salt = 0u64;
    loop {
        let half = |k: u64| {
            let mut h = keys.build_hasher();
            h.write(name.as_bytes());
            h.write_u128(nanos);
            h.write_u64(k);
            h.write_u64(salt);
            h.finish() as u128
        };
        let id = TopicId((half(1) << 64) | half(2));
        if id.0 != 0 && image.topic(id).is_none() {
            return id;
        }
        salt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::PartitionAssignment;
    use crate::types::{BrokerEpoch, BrokerId, LeaderEpoch, MetadataOffset, PartitionId, TopicId};

    fn image_with_configs(configs: &[(&str, &str)]) -> MetadataImage {
        let mut records = vec![
            Record::RegisterBroker {
                broker: BrokerId(1),
                epoch: BrokerEpoch(1),
                rack: None,
                listeners: vec![],
            },
            Record::CreateTopic {
                name: "t".into(),
                topic_id: TopicId(7),
                partitions: vec![PartitionAssignment {
                    partition: PartitionId(0),
                    replicas: vec![BrokerId(1)],
                    leader: Some(BrokerId(1)),
                    leader_epoch: LeaderEpoch(0),
                    isr: vec![BrokerId(1)],
                }],
            },
        ];
        records.extend(configs.iter().map(|(k, v)| Record::ConfigChange {
            resource: ConfigResource::Topic,
            resource_name: "t".into(),
            key: (*k).into(),
            value: Some((*v).into()),
        }));
        let mut image = MetadataImage::empty();
        for (i, r) in records.iter().enumerate() {
            image = image.apply(MetadataOffset(i as u64 + 1), r).unwrap();
        }
        image
    }

    fn keys(records: &[Record]) -> Vec<(String, Option<String>)> {
        records
            .iter()
            .map(|r| match r {
                Record::ConfigChange { key, value, .. } => (key.clone(), value.clone()),
                other => panic!("not a config change: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_replace_removes_the_keys_it_does_not_name_and_skips_unchanged_ones() {
        let image = image_with_configs(&[("retention.ms", "1"), ("segment.bytes", "2")]);
        let asked = vec![
            ("segment.bytes".to_string(), Some("2".to_string())),
            ("cleanup.policy".to_string(), Some("delete".to_string())),
        ];
        assert_eq!(
            keys(&resource_config_records(
                &image,
                ConfigResource::Topic,
                "t",
                asked.clone(),
                true
            )),
            [
                ("cleanup.policy".to_string(), Some("delete".to_string())),
                ("retention.ms".to_string(), None),
            ]
        );
        // Without replace only the named keys change.
        assert_eq!(
            keys(&resource_config_records(
                &image,
                ConfigResource::Topic,
                "t",
                asked,
                false
            )),
            [("cleanup.policy".to_string(), Some("delete".to_string()))]
        );
        // Removing a key that is not set changes nothing.
        let none = vec![("flush.ms".to_string(), None)];
        assert!(
            resource_config_records(&image, ConfigResource::Topic, "t", none, false).is_empty()
        );
    }
}
