//! Consumer group configs (Kafka's GROUP config resource, type 32): set with
//! IncrementalAlterConfigs, read with DescribeConfigs, kept in the metadata log like topic
//! configs, and read by the coordinator at each ConsumerGroupHeartbeat. The keys:
//! `consumer.session.timeout.ms` (within the broker's `[groups]` session bounds) and
//! `consumer.heartbeat.interval.ms` (at least 1, below the group's session timeout).
//! Not a request of its own: `alter_configs.rs` and `describe_configs.rs` hand GROUP
//! resources here.

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::protocol::StrBytes;
use sluice_control::rpc::Request as ControllerRequest;
use sluice_control::{ConfigResource, MetadataImage};

use crate::broker::cluster::{change_metadata, CONTROLLER_REQUEST_TIMEOUT};
use crate::broker::shard::Shard;
use crate::groups::GroupsConfig;
use crate::kafka::errors::{code, ErrorCode};

/// Kafka's `ConfigResource.Type.GROUP`.
pub const RESOURCE_GROUP: i8 = 32;
pub const SESSION_TIMEOUT_MS: &str = "consumer.session.timeout.ms";
pub const HEARTBEAT_INTERVAL_MS: &str = "consumer.heartbeat.interval.ms";
/// Longest group id configs may be set for: every broker's image holds them.
pub const GROUP_ID_BYTES_MAX: usize = 255;
/// Groups with configs set, at most (each is a resource in every broker's image).
pub const GROUPS_WITH_CONFIGS_MAX: usize = 10_000;
/// Kafka's config sources: a group's own value, a broker default.
const SOURCE_GROUP: i8 = 8;
const SOURCE_DEFAULT: i8 = 5;

/// A group's effective (session timeout, heartbeat interval) in ms.
pub fn effective(image: &MetadataImage, group: &str, defaults: &GroupsConfig) -> (i32, i32) {
    let read = |key: &str, default: i32| {
        image
            .config(ConfigResource::Group, group, key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        read(SESSION_TIMEOUT_MS, defaults.consumer_session_timeout_ms),
        read(
            HEARTBEAT_INTERVAL_MS,
            defaults.consumer_heartbeat_interval_ms,
        ),
    )
}

/// Why a change may not be made, for INVALID_CONFIG.
fn check(
    image: &MetadataImage,
    group: &str,
    keys: &[(String, Option<String>)],
    defaults: &GroupsConfig,
) -> Result<(), String> {
    if group.is_empty() || group.len() > GROUP_ID_BYTES_MAX {
        return Err(format!(
            "the group id is empty or longer than {GROUP_ID_BYTES_MAX} bytes"
        ));
    }
    if image.configs_of(ConfigResource::Group, group).is_none()
        && image.config_resource_count(ConfigResource::Group) >= GROUPS_WITH_CONFIGS_MAX
    {
        return Err(format!(
            "{GROUPS_WITH_CONFIGS_MAX} groups have configs set already; delete some first"
        ));
    }
    let (mut session, mut interval) = effective(image, group, defaults);
    for (key, value) in keys {
        let parsed = match value {
            None => None,
            Some(v) => Some(
                v.parse::<i32>()
                    .map_err(|_| format!("{key}: {v:?} is not a number of milliseconds"))?,
            ),
        };
        match key.as_str() {
            SESSION_TIMEOUT_MS => {
                session = parsed.unwrap_or(defaults.consumer_session_timeout_ms);
                let (lo, hi) = (
                    defaults.session_timeout_ms_min,
                    defaults.session_timeout_ms_max,
                );
                if !(lo..=hi).contains(&session) {
                    return Err(format!("{key}: {session} is not within {lo}..={hi}"));
                }
            }
            HEARTBEAT_INTERVAL_MS => {
                interval = parsed.unwrap_or(defaults.consumer_heartbeat_interval_ms);
            }
            other => return Err(format!("{other} is not a group config")),
        }
    }
    if interval < 1 || interval >= session {
        return Err(format!(
            "{HEARTBEAT_INTERVAL_MS} ({interval}) must be at least 1 and below {SESSION_TIMEOUT_MS} ({session})"
        ));
    }
    Ok(())
}

/// IncrementalAlterConfigs of one group: (error, message).
pub async fn alter(
    shard: &Rc<Shard>,
    group: &str,
    keys: Vec<(String, Option<String>)>,
    validate_only: bool,
) -> (ErrorCode, Option<String>) {
    let image = shard.cluster.image();
    if let Err(m) = check(&image, group, &keys, shard.groups.config()) {
        tracing::info!(group, "group config refused: {m}");
        return (code::INVALID_CONFIG, Some(m));
    }
    if validate_only {
        return (code::NONE, None);
    }
    let req = ControllerRequest::SetGroupConfigs {
        group: group.to_string(),
        configs: keys,
    };
    if let Err((error, message)) =
        change_metadata(&shard.cluster, &req, CONTROLLER_REQUEST_TIMEOUT).await
    {
        return (error, Some(message));
    }
    tracing::info!(group, "group configs changed");
    (code::NONE, None)
}

/// DescribeConfigs of one group: both keys, the group's own value or the default.
pub fn describe(
    shard: &Shard,
    group: &str,
    wanted: Option<&[StrBytes]>,
) -> Vec<DescribeConfigsResourceResult> {
    let image = shard.cluster.image();
    let (session, interval) = effective(&image, group, shard.groups.config());
    [
        (SESSION_TIMEOUT_MS, session),
        (HEARTBEAT_INTERVAL_MS, interval),
    ]
    .into_iter()
    .filter(|(k, _)| wanted.is_none_or(|w| w.iter().any(|x| x.as_str() == *k)))
    .map(|(k, v)| {
        let own = image.config(ConfigResource::Group, group, k).is_some();
        DescribeConfigsResourceResult::default()
            .with_name(StrBytes::from_static_str(k))
            .with_value(Some(StrBytes::from_string(v.to_string())))
            .with_config_source(if own { SOURCE_GROUP } else { SOURCE_DEFAULT })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_configs_are_checked_against_each_other_and_the_bounds() {
        let image = MetadataImage::empty();
        let d = GroupsConfig::default();
        let set = |k: &str, v: &str| vec![(k.to_string(), Some(v.to_string()))];
        assert!(check(&image, "g", &set(SESSION_TIMEOUT_MS, "9000"), &d).is_ok());
        assert!(check(&image, "g", &set(SESSION_TIMEOUT_MS, "10"), &d).is_err());
        assert!(check(&image, "g", &set(SESSION_TIMEOUT_MS, "x"), &d).is_err());
        assert!(check(&image, "g", &set(HEARTBEAT_INTERVAL_MS, "45000"), &d).is_err());
        assert!(check(&image, "g", &set(HEARTBEAT_INTERVAL_MS, "0"), &d).is_err());
        assert!(check(&image, "g", &set(HEARTBEAT_INTERVAL_MS, "1000"), &d).is_ok());
        assert!(check(&image, "g", &set("retention.ms", "1"), &d).is_err());
        assert!(check(&image, "", &set(HEARTBEAT_INTERVAL_MS, "1000"), &d).is_err());
        let long = "g".repeat(GROUP_ID_BYTES_MAX + 1);
        assert!(check(&image, &long, &set(HEARTBEAT_INTERVAL_MS, "1000"), &d).is_err());
        let both = vec![
            (SESSION_TIMEOUT_MS.to_string(), Some("8000".to_string())),
            (HEARTBEAT_INTERVAL_MS.to_string(), Some("7000".to_string())),
        ];
        assert!(check(&image, "g", &both, &d).is_ok());
        assert_eq!(effective(&image, "g", &d), (45_000, 5_000));
    }

    #[test]
    fn set_group_configs_show_in_the_image_and_are_counted() {
        let change = |group: &str, value: &str| sluice_control::Record::ConfigChange {
            resource: ConfigResource::Group,
            resource_name: group.to_string(),
            key: HEARTBEAT_INTERVAL_MS.to_string(),
            value: Some(value.to_string()),
        };
        let offset = |n| sluice_control::MetadataOffset(n);
        let image = MetadataImage::empty()
            .apply(offset(1), &change("a", "700"))
            .unwrap()
            .apply(offset(2), &change("b", "800"))
            .unwrap();
        assert_eq!(image.config_resource_count(ConfigResource::Group), 2);
        assert_eq!(image.config_resource_count(ConfigResource::Topic), 0);
        let d = GroupsConfig::default();
        assert_eq!(effective(&image, "a", &d), (45_000, 700));
        assert_eq!(effective(&image, "c", &d), (45_000, 5_000));
    }
}
