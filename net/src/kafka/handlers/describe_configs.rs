//! DescribeConfigs: a topic's effective configs (its own and the broker defaults).

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSpec;
use crate::broker::catalog::effective_configs;
use crate::broker::shard::Shard;
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DescribeConfigs,
    min: 1,
    max: 4,
};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
/// Config sources as Kafka numbers them.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

pub fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let body: DescribeConfigsRequest = decode_body(req)?;
    let results = body
        .resources
        .iter()
        .map(|r| {
            let out = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match r.resource_type {
                RESOURCE_TOPIC => match shard.catalog.get(&r.resource_name) {
                    None => out.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION.into()),
                    Some(meta) => {
                        let configs = effective_configs(&shard.catalog.defaults, &meta.configs)
                            .into_iter()
                            .filter(|(k, _, _)| {
                                r.configuration_keys
                                    .as_ref()
                                    .is_none_or(|keys| keys.iter().any(|x| x.as_str() == k))
                            })
                            .map(|(k, v, is_default)| {
                                DescribeConfigsResourceResult::default()
                                    .with_name(StrBytes::from_string(k))
                                    .with_value(Some(StrBytes::from_string(v)))
                                    .with_config_source(if is_default {
                                        SOURCE_DEFAULT
                                    } else {
                                        SOURCE_TOPIC
                                    })
                            })
                            .collect();
                        out.with_configs(configs)
                    }
                },
                RESOURCE_BROKER => out,
                super::group_configs::RESOURCE_GROUP => {
                    out.with_configs(super::group_configs::describe(
                        shard,
                        &r.resource_name,
                        r.configuration_keys.as_deref(),
                    ))
                }
                _ => out
                    .with_error_code(code::INVALID_REQUEST.into())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "only topic and broker resources are supported",
                    ))),
            }
        })
        .collect();
    let resp = DescribeConfigsResponse::default().with_results(results);
    encode_response(req.header.correlation_id, req.version, &resp)
}
