//! The Kafka configs Sluice honours, as DescribeConfigs reports them and
//! IncrementalAlterConfigs changes them: each topic config with its broker-level synonym
//! (the key a dynamic broker config or the cluster default sets it with), its Kafka type
//! and its documentation; where a value comes from (topic, dynamic broker, dynamic cluster
//! default, static file, default) and the synonyms behind it, most specific first, as
//! Kafka answers with `include_synonyms`.
//!
//! A topic's log config is, key by key, the first of: its own config, this broker's
//! dynamic config, the cluster's dynamic default, the static `[topic_defaults]`, the
//! built-in default. Pure functions over those layers; the image holds the dynamic ones
//! (`ConfigResource::Broker` named by broker id, `ConfigResource::Cluster` named "").

use std::collections::BTreeMap;

use crate::broker::catalog::effective_configs;
use crate::broker::config::TopicDefaults;

/// Kafka's config types (DescribeConfigs `config_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// Where a value comes from (Kafka's `ConfigSource` numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Topic = 1,
    DynamicBroker = 2,
    DynamicDefaultBroker = 3,
    StaticBroker = 4,
    Default = 5,
}

/// One topic config Sluice honours.
#[derive(Debug, Clone, Copy)]
pub struct TopicKey {
    pub name: &'static str,
    /// The broker config that sets it for topics without their own value; `None` for
    /// Sluice's own topic configs, which only `[topic_defaults]` sets.
    pub broker: Option<&'static str>,
    pub kind: ConfigType,
    pub doc: &'static str,
}

const fn key(
    name: &'static str,
    broker: Option<&'static str>,
    kind: ConfigType,
    doc: &'static str,
) -> TopicKey {
    TopicKey {
        name,
        broker,
        kind,
        doc,
    }
}

use ConfigType::{Boolean, Double, Int, List, Long, String as Str};

/// Every topic config Sluice honours; any other key is refused by name.
pub const TOPIC_KEYS: &[TopicKey] = &[
    key("segment.bytes", Some("log.segment.bytes"), Int, "The largest size of a segment file; the active segment rolls before it would grow past it (at least 14 bytes: a segment smaller than a batch holds that one batch)."),
    key("segment.ms", Some("log.roll.ms"), Long, "The time after which the active segment rolls even if it is not full, so retention can delete or compact old data."),
    key("retention.ms", Some("log.retention.ms"), Long, "How long a closed segment is kept after its newest record before it is deleted (with the delete cleanup policy); -1 keeps it forever."),
    key("retention.bytes", Some("log.retention.bytes"), Long, "How large a partition may grow before its oldest closed segments are deleted (with the delete cleanup policy); -1 means no limit."),
    key("max.message.bytes", Some("message.max.bytes"), Int, "The largest record batch size allowed, after any recompression."),
    key("flush.policy", None, Str, "Sluice: fsync answers acks=1/all once the batch is synced (group commit); interval answers once it is written and syncs by flush.ms and flush.bytes."),
    key("flush.ms", Some("log.flush.interval.ms"), Long, "With the interval flush policy: the longest time written data stays unsynced."),
    key("flush.bytes", None, Long, "Sluice: with the interval flush policy, the most bytes written before a sync."),
    key("index.interval.bytes", Some("log.index.interval.bytes"), Int, "How many bytes of batches lie between two entries of the sparse offset index."),
    key("preallocate", Some("log.preallocate"), Boolean, "Reserve a segment's blocks ahead of its writes, so direct writes never extend the file."),
    key("compression.type", Some("compression.type"), Str, "The codec batches are stored with: producer keeps the producer's; uncompressed, gzip, snappy, lz4 or zstd recompresses batches sent with another."),
    key("cleanup.policy", Some("log.cleanup.policy"), List, "delete removes old segments by retention; compact keeps the latest record of every key; both may be given."),
    key("delete.retention.ms", Some("log.cleaner.delete.retention.ms"), Long, "How long a tombstone is kept after its segment was first compacted."),
    key("min.compaction.lag.ms", Some("log.cleaner.min.compaction.lag.ms"), Long, "The least time a record stays uncompacted."),
    key("max.compaction.lag.ms", Some("log.cleaner.max.compaction.lag.ms"), Long, "The most time a record may stay uncompacted: a dirty segment older than this is compacted even below the dirty ratio."),
    key("min.cleanable.dirty.ratio", Some("log.cleaner.min.cleanable.ratio"), Double, "The share of a compacted log's closed bytes not yet compacted at which it is compacted."),
    key("message.timestamp.type", Some("log.message.timestamp.type"), Str, "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's clock."),
    key("message.timestamp.before.max.ms", Some("log.message.timestamp.before.max.ms"), Long, "CreateTime batches older than this are refused (INVALID_TIMESTAMP); -1 means no limit."),
    key("message.timestamp.after.max.ms", Some("log.message.timestamp.after.max.ms"), Long, "CreateTime batches further in the future than this are refused; -1 means no limit."),
    key("min.insync.replicas", Some("min.insync.replicas"), Int, "With acks=all, the in-sync replicas a write needs (NOT_ENOUGH_REPLICAS otherwise); the high watermark moves only while that many are in sync."),
    key("unclean.leader.election.enable", Some("unclean.leader.election.enable"), Boolean, "Elect a replica outside the ISR when no in-sync or eligible replica is alive, at the risk of losing acknowledged records."),
];

/// Broker configs that only the cluster default may set: the controller reads them from
/// it when it elects leaders and checks the ISR.
pub const CLUSTER_ONLY_KEYS: &[&str] = &["min.insync.replicas", "unclean.leader.election.enable"];

/// The topic config a dynamic broker config key sets.
pub fn by_broker_key(broker_key: &str) -> Option<&'static TopicKey> {
    TOPIC_KEYS.iter().find(|k| k.broker == Some(broker_key))
}

/// One value behind a config: the key it was set under, the value, where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synonym {
    pub name: String,
    pub value: String,
    pub source: Source,
}

/// One config as DescribeConfigs answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub name: String,
    pub value: String,
    pub source: Source,
    pub read_only: bool,
    pub sensitive: bool,
    pub kind: ConfigType,
    pub doc: &'static str,
    /// Every layer that sets it, most specific first (the first is where the value comes
    /// from).
    pub synonyms: Vec<Synonym>,
}

/// The layers a topic's config is looked up in.
pub struct Layers<'a> {
    pub defaults: &'a TopicDefaults,
    /// This broker's dynamic configs (broker key names).
    pub broker: &'a BTreeMap<String, String>,
    /// The cluster's dynamic defaults (broker key names).
    pub cluster: &'a BTreeMap<String, String>,
}

/// The topic configs the dynamic layers set (this broker's over the cluster default's),
/// under topic key names: merged under a topic's own configs for its log config.
pub fn inherited(
    broker: &BTreeMap<String, String>,
    cluster: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for k in TOPIC_KEYS {
        let Some(b) = k.broker else { continue };
        if let Some(v) = broker.get(b).or_else(|| cluster.get(b)) {
            out.insert(k.name.to_string(), v.clone());
        }
    }
    out
}

/// Each key's value from the static `[topic_defaults]` and from the built-in defaults.
fn static_and_builtin(defaults: &TopicDefaults) -> BTreeMap<String, (String, String)> {
    let builtin = effective_configs(&TopicDefaults::default(), &BTreeMap::new());
    let configured = effective_configs(defaults, &BTreeMap::new());
    configured
        .into_iter()
        .zip(builtin)
        .map(|((k, s, _), (_, b, _))| (k, (s, b)))
        .collect()
}

/// The layers below a topic's own config for `k`: the dynamic broker and cluster values,
/// the static one where the file changed it, the built-in default.
fn lower_layers(k: &TopicKey, layers: &Layers<'_>, statics: &(String, String)) -> Vec<Synonym> {
    let name = k.broker.unwrap_or(k.name);
    let mut out = Vec::new();
    if let Some(b) = k.broker {
        for (map, source) in [
            (layers.broker, Source::DynamicBroker),
            (layers.cluster, Source::DynamicDefaultBroker),
        ] {
            if let Some(v) = map.get(b) {
                out.push(Synonym {
                    name: b.to_string(),
                    value: v.clone(),
                    source,
                });
            }
        }
    }
    let (configured, builtin) = statics;
    if configured != builtin {
        out.push(Synonym {
            name: name.to_string(),
            value: configured.clone(),
            source: Source::StaticBroker,
        });
    }
    out.push(Synonym {
        name: name.to_string(),
        value: builtin.clone(),
        source: Source::Default,
    });
    out
}

/// Every topic config of a topic whose own configs are `own`.
pub fn describe_topic(layers: &Layers<'_>, own: &BTreeMap<String, String>) -> Vec<Described> {
    let statics = static_and_builtin(layers.defaults);
    TOPIC_KEYS
        .iter()
        .filter_map(|k| {
            let mut synonyms = Vec::new();
            if let Some(v) = own.get(k.name) {
                synonyms.push(Synonym {
                    name: k.name.to_string(),
                    value: v.clone(),
                    source: Source::Topic,
                });
            }
            synonyms.extend(lower_layers(k, layers, statics.get(k.name)?));
            writable(k.name, k, synonyms)
        })
        .collect()
}

/// A settable config named `name` whose value comes from the first of `synonyms`.
fn writable(name: &str, k: &TopicKey, synonyms: Vec<Synonym>) -> Option<Described> {
    let first = synonyms.first()?.clone();
    Some(Described {
        name: name.to_string(),
        value: first.value,
        source: first.source,
        read_only: false,
        sensitive: false,
        kind: k.kind,
        doc: k.doc,
        synonyms,
    })
}

/// Every dynamic-capable broker config (the broker keys of the topic configs) as this
/// broker sees it: its dynamic value, the cluster default, the static one, the default.
pub fn describe_broker_dynamic(layers: &Layers<'_>) -> Vec<Described> {
    let statics = static_and_builtin(layers.defaults);
    TOPIC_KEYS
        .iter()
        .filter_map(|k| {
            let broker = k.broker?;
            writable(broker, k, lower_layers(k, layers, statics.get(k.name)?))
        })
        .collect()
}

/// The cluster default's configs (Kafka's BROKER resource named ""): only those set.
pub fn describe_cluster_default(cluster: &BTreeMap<String, String>) -> Vec<Described> {
    cluster
        .iter()
        .filter_map(|(name, value)| {
            let synonym = Synonym {
                name: name.clone(),
                value: value.clone(),
                source: Source::DynamicDefaultBroker,
            };
            writable(name, by_broker_key(name)?, vec![synonym])
        })
        .collect()
}

/// A read-only static broker setting (listeners, ids, directories), from the file or
/// its default.
pub fn read_only(
    name: &str,
    value: String,
    from_file: bool,
    kind: ConfigType,
    doc: &'static str,
) -> Described {
    let source = if from_file {
        Source::StaticBroker
    } else {
        Source::Default
    };
    Described {
        name: name.to_string(),
        value: value.clone(),
        source,
        read_only: true,
        sensitive: false,
        kind,
        doc,
        synonyms: vec![Synonym {
            name: name.to_string(),
            value,
            source,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_honoured_topic_key_is_described_once() {
        let defaults = TopicDefaults::default();
        let empty = BTreeMap::new();
        let layers = Layers {
            defaults: &defaults,
            broker: &empty,
            cluster: &empty,
        };
        let described = describe_topic(&layers, &empty);
        let names: Vec<&str> = described.iter().map(|d| d.name.as_str()).collect();
        let keys: Vec<&str> = TOPIC_KEYS.iter().map(|k| k.name).collect();
        assert_eq!(names, keys);
        // Every key the catalog accepts is in the table, and the other way round.
        for k in TOPIC_KEYS {
            let d = described.iter().find(|d| d.name == k.name).unwrap();
            let one = map(&[(k.name, d.value.as_str())]);
            assert!(
                crate::broker::catalog::log_config(&defaults, &one).is_ok(),
                "{} = {}",
                k.name,
                d.value
            );
        }
    }

    #[test]
    fn a_value_comes_from_the_most_specific_layer_and_lists_the_others() {
        let defaults = TopicDefaults {
            retention_ms: Some(1000),
            ..TopicDefaults::default()
        };
        let broker = map(&[("log.retention.ms", "2000")]);
        let cluster = map(&[
            ("log.retention.ms", "3000"),
            ("log.segment.bytes", "100000"),
        ]);
        let layers = Layers {
            defaults: &defaults,
            broker: &broker,
            cluster: &cluster,
        };
        let own = map(&[("retention.ms", "4000")]);
        let topic = describe_topic(&layers, &own);
        let retention = topic.iter().find(|d| d.name == "retention.ms").unwrap();
        let sources: Vec<(Source, &str)> = retention
            .synonyms
            .iter()
            .map(|s| (s.source, s.value.as_str()))
            .collect();
        assert_eq!(
            sources,
            [
                (Source::Topic, "4000"),
                (Source::DynamicBroker, "2000"),
                (Source::DynamicDefaultBroker, "3000"),
                (Source::StaticBroker, "1000"),
                (Source::Default, "604800000"),
            ]
        );
        let segment = topic.iter().find(|d| d.name == "segment.bytes").unwrap();
        assert_eq!(
            (segment.source, segment.value.as_str()),
            (Source::DynamicDefaultBroker, "100000")
        );
        assert_eq!(
            inherited(&broker, &cluster),
            map(&[("retention.ms", "2000"), ("segment.bytes", "100000")])
        );
        let brokers = describe_broker_dynamic(&layers);
        let retention = brokers
            .iter()
            .find(|d| d.name == "log.retention.ms")
            .unwrap();
        assert_eq!(
            (retention.source, retention.value.as_str()),
            (Source::DynamicBroker, "2000")
        );
    }
}
