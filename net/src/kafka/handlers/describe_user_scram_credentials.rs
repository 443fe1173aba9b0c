//! DescribeUserScramCredentials (v0): users and the mechanisms and iterations of their
//! SCRAM credentials, from this shard's metadata image (never a salt or key).

use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    ApiKey, DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::{Authz, AUTHORIZATION_FAILED};
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DescribeUserScramCredentials,
    min: 0,
    max: 0,
};

pub fn handle(
    shard: &Shard,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: DescribeUserScramCredentialsRequest = decode_body(req)?;
    // Kafka's check: DESCRIBE on the cluster.
    if !authz.cluster(AclOperation::Describe) {
        let resp = DescribeUserScramCredentialsResponse::default()
            .with_error_code(code::CLUSTER_AUTHORIZATION_FAILED.into())
            .with_error_message(Some(StrBytes::from_static_str(AUTHORIZATION_FAILED)));
        return encode_response(req.header.correlation_id, req.version, &resp);
    }
    let image = shard.cluster.image();
    let mut users: Vec<(String, Vec<CredentialInfo>)> = Vec::new();
    for (user, m, iterations) in image.scram_users() {
        let info = CredentialInfo::default()
            .with_mechanism(m.kafka_id())
            .with_iterations(iterations);
        match users.last_mut() {
            Some((u, infos)) if u == user => infos.push(info),
            _ => users.push((user.to_owned(), vec![info])),
        }
    }
    let result = |user: &str, infos: Vec<CredentialInfo>| {
        DescribeUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.to_owned()))
            .with_credential_infos(infos)
    };
    let results = match body.users {
        // Null or empty: every user, as Kafka answers.
        None => users.into_iter().map(|(u, i)| result(&u, i)).collect(),
        Some(asked) if asked.is_empty() => users.into_iter().map(|(u, i)| result(&u, i)).collect(),
        Some(asked) => {
            let mut seen: Vec<&str> = Vec::with_capacity(asked.len());
            asked
                .iter()
                .map(|name| {
                    let name: &str = &name.name;
                    if seen.contains(&name) {
                        return result(name, Vec::new())
                            .with_error_code(code::DUPLICATE_RESOURCE.into())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "user {name:?} asked for twice"
                            ))));
                    }
                    seen.push(name);
                    match users.iter().find(|(u, _)| u == name) {
                        Some((u, infos)) => result(u, infos.clone()),
                        None => result(name, Vec::new())
                            .with_error_code(code::RESOURCE_NOT_FOUND.into())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "attempt to describe a user credential that does not exist: {name}"
                            )))),
                    }
                })
                .collect()
        }
    };
    let resp = DescribeUserScramCredentialsResponse::default().with_results(results);
    encode_response(req.header.correlation_id, req.version, &resp)
}
