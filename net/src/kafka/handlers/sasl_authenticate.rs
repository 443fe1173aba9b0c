//! SaslAuthenticate (v0–2): one SASL token each way, for the mechanism SaslHandshake
//! chose — PLAIN in one step, SCRAM in two — against the credentials of this shard's
//! metadata image. Also the bare tokens that follow SaslHandshake v0 (`raw_token`).
//!
//! A failure (bad message, unknown user, wrong password or proof) is answered
//! SASL_AUTHENTICATION_FAILED after `AUTH_FAILURE_DELAY_MS`, counted, and logged (rate
//! limited) with the client's address and the user it named, never a token. Success sets
//! the connection's principal and, with `connections.max.reauth.ms`, the session's
//! lifetime (`session_lifetime_ms`, KIP-368).

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_control::ScramMechanism;

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::sasl::{SaslMechanism, AUTH_FAILURE_DELAY_MS};
use crate::security::scram::{self, SaslError};
use crate::security::session::{SaslStage, Session};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::SaslAuthenticate,
    min: 0,
    max: 2,
};

/// What one step of an exchange gives.
enum Step {
    /// The server's token; the exchange goes on.
    Continue(Vec<u8>),
    /// The exchange succeeded for `user`; the server's last token.
    Done { token: Vec<u8>, user: String },
}

/// Why a step failed: the Kafka error, the message for the client, and the user named
/// (for the log line).
struct Failure {
    code: ErrorCode,
    message: String,
    user: Option<String>,
}

pub async fn handle(
    shard: &Shard,
    session: &Session,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: SaslAuthenticateRequest = decode_body(req)?;
    if !session.protocol.sasl() {
        // Not a SASL listener: nothing to authenticate, as Kafka answers (not a failed
        // login: neither delayed nor counted).
        let resp = SaslAuthenticateResponse::default()
            .with_error_code(code::ILLEGAL_SASL_STATE.into())
            .with_error_message(Some(StrBytes::from_static_str(
                "SaslAuthenticate on a listener without SASL",
            )));
        return encode_response(req.header.correlation_id, req.version, &resp);
    }
    let resp = match outcome(shard, session, &body.auth_bytes).await {
        Ok((token, lifetime_ms)) => SaslAuthenticateResponse::default()
            .with_auth_bytes(Bytes::from(token))
            .with_session_lifetime_ms(lifetime_ms),
        Err(f) => SaslAuthenticateResponse::default()
            .with_error_code(f.code.into())
            .with_error_message(Some(StrBytes::from_string(f.message))),
    };
    encode_response(req.header.correlation_id, req.version, &resp)
}

/// A bare SASL token after SaslHandshake v0: the answer is a bare token too; a failure
/// closes the connection (v0 has no way to say why).
pub async fn raw_token(
    shard: &Shard,
    session: &Session,
    token: &[u8],
) -> Result<ResponseFrame, FrameError> {
    match outcome(shard, session, token).await {
        Ok((answer, _)) => Ok(crate::kafka::frame::raw_response(&answer)),
        Err(f) => Err(FrameError::Refused(format!(
            "SASL authentication failed: {}",
            f.message
        ))),
    }
}

/// Runs one step; on success the server's token and the session lifetime to announce (0:
/// none, or not the last step). Failures are delayed, counted and logged here.
async fn outcome(
    shard: &Shard,
    session: &Session,
    token: &[u8],
) -> Result<(Vec<u8>, i64), Failure> {
    let result = step(shard, session, token).and_then(|s| match s {
        Step::Continue(t) => Ok((t, 0)),
        Step::Done { token, user } => finish(shard, session, &user).map(|ms| (token, ms)),
    });
    if let Err(f) = &result {
        session.set_stage(SaslStage::Idle);
        crate::admin::metrics::sasl_authentication_failed();
        if let Some(suppressed) = failure_log_permit() {
            tracing::warn!(target: crate::security::AUTH_LOG_TARGET,
                peer = %session.peer_text(), user = %f.user.as_deref().unwrap_or("?"),
                error = %f.message, suppressed, "SASL authentication failed");
        }
        glommio::timer::sleep(Duration::from_millis(AUTH_FAILURE_DELAY_MS)).await;
    }
    result
}

/// The session becomes `user`'s; the lifetime announced to the client.
fn finish(shard: &Shard, session: &Session, user: &str) -> Result<i64, Failure> {
    let reauth_ms = shard.security.auth.connections_max_reauth_ms;
    let lifetime = (reauth_ms > 0).then(|| Duration::from_millis(reauth_ms));
    if let Err(was) = session.authenticated_as(user, lifetime) {
        return Err(Failure {
            code: code::SASL_AUTHENTICATION_FAILED,
            message: format!("re-authentication as another user than {was}"),
            user: Some(user.to_owned()),
        });
    }
    crate::admin::metrics::sasl_authenticated();
    tracing::debug!(target: crate::security::AUTH_LOG_TARGET, principal = %session.principal(),
        peer = %session.peer_text(), "client authenticated by SASL");
    Ok(i64::try_from(reauth_ms).unwrap_or(i64::MAX))
}

fn failed(e: SaslError, user: Option<String>) -> Failure {
    Failure {
        code: code::SASL_AUTHENTICATION_FAILED,
        message: e.to_string(),
        user,
    }
}

/// One step of the exchange the session is in (no `.await`: the session's state is
/// taken and put back within it).
fn step(shard: &Shard, session: &Session, token: &[u8]) -> Result<Step, Failure> {
    match session.take_stage() {
        SaslStage::Idle => Err(Failure {
            code: code::ILLEGAL_SASL_STATE,
            message: "SaslAuthenticate before SaslHandshake".into(),
            user: None,
        }),
        SaslStage::Handshaken {
            mechanism: SaslMechanism::Plain,
            ..
        } => plain(shard, token),
        SaslStage::Handshaken {
            mechanism: SaslMechanism::Scram(m),
            raw,
        } => {
            let user = scram::client_first_user(token).map_err(|e| failed(e, None))?;
            let image = shard.cluster.image();
            let credential = image
                .scram_credential(&user, m)
                .ok_or_else(|| failed(SaslError::Credentials, Some(user.clone())))?;
            let (first, pending) = scram::server_first(m, token, credential)
                .map_err(|e| failed(e, Some(user.clone())))?;
            session.set_stage(SaslStage::ScramFirst { pending, raw });
            Ok(Step::Continue(first))
        }
        SaslStage::ScramFirst { pending, .. } => {
            let token = scram::server_final(&pending, token)
                .map_err(|e| failed(e, Some(pending.user.clone())))?;
            Ok(Step::Done {
                token,
                user: pending.user,
            })
        }
    }
}

/// PLAIN: the password checked against the user's SCRAM credential (SHA-512 first).
fn plain(shard: &Shard, token: &[u8]) -> Result<Step, Failure> {
    let (user, password) = scram::parse_plain(token).map_err(|e| failed(e, None))?;
    let image = shard.cluster.image();
    let ok = [ScramMechanism::Sha512, ScramMechanism::Sha256]
        .into_iter()
        .find_map(|m| image.scram_credential(&user, m).map(|c| (m, c)))
        .is_some_and(|(m, c)| scram::password_matches(m, c, &password));
    if !ok {
        return Err(failed(SaslError::Credentials, Some(user)));
    }
    Ok(Step::Done {
        token: Vec::new(),
        user,
    })
}

/// Failed-authentication log lines each shard writes per second at most (a password
/// guesser must not fill the disk); the rest are counted into the next line.
const FAILURE_LOG_LINES_PER_SEC_MAX: u32 = 10;

thread_local! {
    static FAILURE_LOG: std::cell::RefCell<crate::kafka::conn::LogLimiter> =
        std::cell::RefCell::new(crate::kafka::conn::LogLimiter::new(FAILURE_LOG_LINES_PER_SEC_MAX));
}

fn failure_log_permit() -> Option<u64> {
    FAILURE_LOG.with(|l| l.borrow_mut().permit(std::time::Instant::now()))
}
