//! AlterUserScramCredentials (v0): SCRAM credentials set from a salted password (the client
//! runs PBKDF2; the password never reaches the broker) or removed, one controller request
//! per user and mechanism, answered per user with Kafka's codes: UNACCEPTABLE_CREDENTIAL
//! (empty user, iterations outside 4096..16384, empty salt or salted password),
//! UNSUPPORTED_SASL_MECHANISM, DUPLICATE_RESOURCE (a user named twice in one request),
//! RESOURCE_NOT_FOUND (removing a credential that is not there).

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey,
};
use kafka_protocol::protocol::StrBytes;
use sluice_control::rpc::Request as ControllerRequest;
use sluice_control::{ScramCredential, ScramMechanism, SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN};

use super::ApiSpec;
use crate::broker::cluster::{change_metadata, CONTROLLER_REQUEST_TIMEOUT};
use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::{Authz, AUTHORIZATION_FAILED};
use crate::security::scram;
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::AlterUserScramCredentials,
    min: 0,
    max: 0,
};

/// Most alterations one request may carry (each is a metadata log record).
pub const ALTERATIONS_MAX: usize = 1000;

/// One checked alteration: the user, the mechanism, the new credential or removal.
type Alteration = (String, ScramMechanism, Option<ScramCredential>);

/// A refusal: the Kafka error and its message.
type Refusal = (ErrorCode, String);

/// Each user's outcome, in request order.
type Results = Vec<(String, Result<(), Refusal>)>;

pub async fn handle(
    shard: &Shard,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: AlterUserScramCredentialsRequest = decode_body(req)?;
    // Kafka's check: ALTER on the cluster (every user refused without it).
    let allowed = authz.cluster(AclOperation::Alter);
    let mut results: Results = Vec::new();
    let mut todo: Vec<Alteration> = Vec::new();
    let names: Vec<&str> = body
        .deletions
        .iter()
        .map(|d| &*d.name)
        .chain(body.upsertions.iter().map(|u| &*u.name))
        .collect();
    let count = |n: &str| names.iter().filter(|x| **x == n).count();
    let image = shard.cluster.image();
    // What refuses every user at once: no authorization, or too many alterations.
    let blanket: Option<Refusal> = if !allowed {
        Some((
            code::CLUSTER_AUTHORIZATION_FAILED,
            AUTHORIZATION_FAILED.to_string(),
        ))
    } else if names.len() > ALTERATIONS_MAX {
        Some((
            code::INVALID_REQUEST,
            format!("more than {ALTERATIONS_MAX} alterations in one request"),
        ))
    } else {
        None
    };
    for d in &body.deletions {
        let user = d.name.to_string();
        let checked =
            check_common(&user, d.mechanism, count(&user), blanket.as_ref()).and_then(|m| {
                match image.scram_credential(&user, m) {
                    Some(_) => Ok(m),
                    None => Err((
                        code::RESOURCE_NOT_FOUND,
                        format!(
                            "attempt to delete a user credential that does not exist: {user} {}",
                            m.name()
                        ),
                    )),
                }
            });
        record(&mut results, &mut todo, user, checked.map(|m| (m, None)));
    }
    for u in &body.upsertions {
        let user = u.name.to_string();
        let checked =
            check_common(&user, u.mechanism, count(&user), blanket.as_ref()).and_then(|m| {
                if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&u.iterations) {
                    return Err((
                        code::UNACCEPTABLE_CREDENTIAL,
                        format!(
                            "iterations {} not in {SCRAM_ITERATIONS_MIN}..={SCRAM_ITERATIONS_MAX}",
                            u.iterations
                        ),
                    ));
                }
                if u.salt.is_empty()
                    || u.salt.len() > sluice_control::SCRAM_SALT_BYTES_MAX
                    || u.salted_password.len() != m.key_bytes()
                {
                    return Err((
                        code::UNACCEPTABLE_CREDENTIAL,
                        "salt or salted password of the wrong length".to_string(),
                    ));
                }
                let c = scram::credential_from_salted(m, &u.salted_password, &u.salt, u.iterations);
                Ok((m, Some(c)))
            });
        record(&mut results, &mut todo, user, checked);
    }
    for (user, mechanism, credential) in todo {
        let r = change_metadata(
            &shard.cluster,
            &ControllerRequest::SetScram {
                user: user.clone(),
                mechanism,
                credential,
            },
            CONTROLLER_REQUEST_TIMEOUT,
        )
        .await
        .map(|_| ());
        if let Some(slot) = results.iter_mut().find(|(u, r)| *u == user && r.is_ok()) {
            slot.1 = r;
        }
    }
    let resp = AlterUserScramCredentialsResponse::default().with_results(
        results
            .into_iter()
            .map(|(user, r)| {
                let (code, message) = match r {
                    Ok(()) => (code::NONE, None),
                    Err((c, m)) => (c, Some(StrBytes::from_string(m))),
                };
                AlterUserScramCredentialsResult::default()
                    .with_user(StrBytes::from_string(user))
                    .with_error_code(code.into())
                    .with_error_message(message)
            })
            .collect(),
    );
    encode_response(req.header.correlation_id, req.version, &resp)
}

/// A user's first result stands (a user named twice gets one DUPLICATE_RESOURCE result).
fn record(
    results: &mut Results,
    todo: &mut Vec<Alteration>,
    user: String,
    checked: Result<(ScramMechanism, Option<ScramCredential>), Refusal>,
) {
    if results.iter().any(|(u, _)| *u == user) {
        return;
    }
    match checked {
        Ok((m, c)) => {
            todo.push((user.clone(), m, c));
            results.push((user, Ok(())));
        }
        Err(e) => results.push((user, Err(e))),
    }
}

fn check_common(
    user: &str,
    mechanism: i8,
    times_named: usize,
    blanket: Option<&Refusal>,
) -> Result<ScramMechanism, Refusal> {
    if let Some(refusal) = blanket {
        return Err(refusal.clone());
    }
    if user.is_empty() || user.len() > sluice_control::SCRAM_USER_BYTES_MAX {
        return Err((
            code::UNACCEPTABLE_CREDENTIAL,
            "user name empty or too long".into(),
        ));
    }
    if times_named > 1 {
        return Err((
            code::DUPLICATE_RESOURCE,
            format!("user {user:?} is altered more than once in one request"),
        ));
    }
    ScramMechanism::from_kafka_id(mechanism).ok_or_else(|| {
        (
            code::UNSUPPORTED_SASL_MECHANISM,
            format!("unknown SCRAM mechanism {mechanism}"),
        )
    })
}
