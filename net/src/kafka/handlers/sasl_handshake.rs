//! SaslHandshake (v0–1): the client names a SASL mechanism; answered with the mechanisms
//! this broker has on. v1 is followed by SaslAuthenticate requests, v0 by bare SASL tokens
//! (KIP-43). On a listener without SASL it is ILLEGAL_SASL_STATE, as Kafka answers.

use kafka_protocol::messages::{ApiKey, SaslHandshakeRequest, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::sasl::SaslMechanism;
use crate::security::session::{SaslStage, Session};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::SaslHandshake,
    min: 0,
    max: 1,
};

pub fn handle(
    shard: &Shard,
    session: &Session,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: SaslHandshakeRequest = decode_body(req)?;
    let enabled = &shard.security.auth.sasl_mechanisms;
    let error = choose(session, enabled, &body.mechanism, req.version == 0);
    if !error.is_none() {
        tracing::debug!(target: crate::security::AUTH_LOG_TARGET, error = error.0,
            mechanism = %body.mechanism, "SaslHandshake refused");
    }
    let resp = SaslHandshakeResponse::default()
        .with_error_code(error.into())
        .with_mechanisms(
            enabled
                .iter()
                .map(|m| StrBytes::from_static_str(m.name()))
                .collect(),
        );
    encode_response(req.header.correlation_id, req.version, &resp)
}

/// Starts the exchange for `mechanism`, or says why not.
fn choose(session: &Session, enabled: &[SaslMechanism], mechanism: &str, raw: bool) -> ErrorCode {
    if !session.protocol.sasl() {
        return code::ILLEGAL_SASL_STATE;
    }
    let Some(m) = SaslMechanism::parse(mechanism).filter(|m| enabled.contains(m)) else {
        return code::UNSUPPORTED_SASL_MECHANISM;
    };
    match session.take_stage() {
        SaslStage::Idle => {
            session.set_stage(SaslStage::Handshaken { mechanism: m, raw });
            code::NONE
        }
        // A handshake in the middle of an exchange: the exchange is abandoned.
        _ => code::ILLEGAL_SASL_STATE,
    }
}
