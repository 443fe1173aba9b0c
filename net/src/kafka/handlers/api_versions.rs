//! ApiVersions: the table of APIs and versions this broker implements.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

use super::{ApiSpec, APIS};
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

pub fn handle(req: &Request) -> Result<ResponseFrame, FrameError> {
    // The request body carries only the client's name and version (v3+); nothing in it
    // changes the answer, so a body that does not parse is not worth closing over.
    let resp = ApiVersionsResponse::default()
        .with_error_code(code::NONE.into())
        .with_api_keys(table());
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
