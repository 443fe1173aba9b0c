//! DeleteAcls (v1–3): every binding each filter selects removed by the active controller
//! from its image (Kafka's ANY and MATCH semantics; a binding two filters select is
//! listed under the first), answered with the removed bindings once this shard's image
//! lacks them. A filter with an UNKNOWN enum is INVALID_REQUEST; needs ALTER on the
//! cluster (CLUSTER_AUTHORIZATION_FAILED) and the authorizer on (SECURITY_DISABLED).

use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{ApiKey, DeleteAclsRequest, DeleteAclsResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_control::acl::{AclBinding, AclFilter, AclOperation};
use sluice_control::rpc::{Reply, Request as ControllerRequest};

use super::create_acls::blanket_refusal;
use super::describe_acls::filter;
use super::ApiSpec;
use crate::broker::cluster::{
    ask_controller, error_code, wait_applied, CONTROLLER_REQUEST_TIMEOUT,
};
use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DeleteAcls,
    min: 1,
    max: 3,
};

type Outcome = Result<Vec<AclBinding>, (ErrorCode, String)>;

/// Has the controller remove what `filters` select; each filter's removed bindings.
async fn delete(
    shard: &Shard,
    filters: Vec<AclFilter>,
) -> Result<Vec<Vec<AclBinding>>, (ErrorCode, String)> {
    let ask = ControllerRequest::DeleteAcls { filters };
    match ask_controller(&shard.cluster.view, &ask, CONTROLLER_REQUEST_TIMEOUT).await? {
        Reply::AclsDeleted { offset, deleted } => {
            wait_applied(&shard.cluster, offset.0, CONTROLLER_REQUEST_TIMEOUT).await?;
            Ok(deleted)
        }
        Reply::Error { kind, message } => Err((error_code(kind), message)),
        other => Err((
            code::UNKNOWN_SERVER_ERROR,
            format!("unexpected controller answer {other:?}"),
        )),
    }
}

fn matching(b: &AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_resource_type(b.resource_type.id())
        .with_resource_name(StrBytes::from_string(b.resource_name.clone()))
        .with_pattern_type(b.pattern.id())
        .with_principal(StrBytes::from_string(b.principal.clone()))
        .with_host(StrBytes::from_string(b.host.clone()))
        .with_operation(b.operation.id())
        .with_permission_type(b.permission.id())
}

pub async fn handle(
    shard: &Shard,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: DeleteAclsRequest = decode_body(req)?;
    let blanket = blanket_refusal(shard, authz, AclOperation::Alter, body.filters.len());
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(body.filters.len());
    let mut asked: Vec<(usize, AclFilter)> = Vec::new();
    for (i, w) in body.filters.iter().enumerate() {
        let f = filter(
            [
                w.resource_type_filter,
                w.pattern_type_filter,
                w.operation,
                w.permission_type,
            ],
            w.resource_name_filter.as_ref(),
            w.principal_filter.as_ref(),
            w.host_filter.as_ref(),
        );
        outcomes.push(match (&blanket, f.problem()) {
            (Some(refusal), _) => Err(refusal.clone()),
            (None, Some(why)) => Err((code::INVALID_REQUEST, format!("invalid filter: {why}"))),
            (None, None) => {
                asked.push((i, f));
                Ok(Vec::new())
            }
        });
    }
    if let Some((error, message)) = &blanket {
        tracing::info!(error = %error, %message, "DeleteAcls refused");
    }
    if !asked.is_empty() {
        let (positions, filters): (Vec<usize>, Vec<AclFilter>) = asked.into_iter().unzip();
        match delete(shard, filters).await {
            Ok(deleted) => {
                let count: usize = deleted.iter().map(Vec::len).sum();
                tracing::info!(count, principal = %authz.principal(), "ACLs deleted");
                for (i, d) in positions.into_iter().zip(deleted) {
                    outcomes[i] = Ok(d);
                }
            }
            Err((error, message)) => {
                tracing::info!(error = %error, %message, "DeleteAcls refused by the controller");
                for i in positions {
                    outcomes[i] = Err((error, message.clone()));
                }
            }
        }
    }
    let results = outcomes
        .into_iter()
        .map(|o| match o {
            Ok(bindings) => DeleteAclsFilterResult::default()
                .with_matching_acls(bindings.iter().map(matching).collect()),
            Err((error, message)) => DeleteAclsFilterResult::default()
                .with_error_code(error.into())
                .with_error_message(Some(StrBytes::from_string(message))),
        })
        .collect();
    let resp = DeleteAclsResponse::default().with_filter_results(results);
    encode_response(req.header.correlation_id, req.version, &resp)
}
