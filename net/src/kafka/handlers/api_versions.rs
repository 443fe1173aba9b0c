//! ApiVersions: the table of APIs and versions this broker implements, and (v3+) the
//! features it supports and has finalized: `transaction.version`, which tells clients
//! whether to use transactions v2 (KIP-890 part 2).

use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{ApiSpec, APIS};
use crate::broker::shard::Shard;
use crate::kafka::errors::code;
use crate::kafka::frame::{encode_response, FrameError, Request, ResponseFrame};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::ApiVersions,
    min: 0,
    max: 3,
};

fn table() -> Vec<ApiVersion> {
    APIS.iter()
        .map(|s| {
            ApiVersion::default()
                .with_api_key(s.key as i16)
                .with_min_version(s.min)
                .with_max_version(s.max)
        })
        .collect()
}

/// The highest `transaction.version` this broker implements.
const TRANSACTION_VERSION_MAX: i16 = 2;

/// The epoch of the finalized features: they change only with the broker's config, so
/// any fixed epoch ≥ 0 says "finalized" (-1 would say "unknown").
const FINALIZED_FEATURES_EPOCH: i64 = 1;

pub fn handle(shard: &Shard, req: &Request) -> Result<ResponseFrame, FrameError> {
    // The request body carries only the client's name and version (v3+); nothing in it
    // changes the answer, so a body that does not parse is not worth closing over.
    let name = || StrBytes::from_static_str("transaction.version");
    let level = shard.config.transactions.transaction_version;
    let resp = ApiVersionsResponse::default()
        .with_error_code(code::NONE.into())
        .with_api_keys(table())
        .with_supported_features(vec![SupportedFeatureKey::default()
            .with_name(name())
            .with_min_version(0)
            .with_max_version(TRANSACTION_VERSION_MAX)])
        .with_finalized_features_epoch(FINALIZED_FEATURES_EPOCH)
        .with_finalized_features(vec![FinalizedFeatureKey::default()
            .with_name(name())
            .with_min_version_level(level)
            .with_max_version_level(level)]);
    encode_response(req.header.correlation_id, req.version, &resp)
}

/// An ApiVersions version this broker does not know: answered as Kafka does, with
/// UNSUPPORTED_VERSION and the table in a v0 body, so the client can pick a version.
pub fn unsupported(req: &Request) -> Result<ResponseFrame, FrameError> {
    tracing::info!(
        version = req.version,
        "ApiVersions version not supported, answering with v0"
    );
    let resp = ApiVersionsResponse::default()
        .with_error_code(code::UNSUPPORTED_VERSION.into())
        .with_api_keys(table());
    encode_response(req.header.correlation_id, 0, &resp)
}
