//! CreateAcls (v1–3): each creation checked here (Kafka's `validateNewAcl`: known resource
//! type TOPIC, GROUP, CLUSTER or TRANSACTIONAL_ID, LITERAL or PREFIXED, a definite
//! operation and permission, a non-empty name, `kafka-cluster` for the cluster, a
//! `Type:name` principal, `*` or an address as host; INVALID_REQUEST otherwise), the valid
//! ones stored by the active controller in one metadata change (all or none when the
//! cluster would hold more than `ACLS_MAX`), answered once this shard's image has them.
//! Needs ALTER on the cluster (CLUSTER_AUTHORIZATION_FAILED) and the authorizer on
//! (SECURITY_DISABLED, as Kafka without an authorizer).

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{ApiKey, CreateAclsRequest, CreateAclsResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_control::acl::{AclBinding, AclOperation, AclPermission, PatternType, ResourceType};
use sluice_control::rpc::Request as ControllerRequest;

use super::ApiSpec;
use crate::broker::cluster::{change_metadata, CONTROLLER_REQUEST_TIMEOUT};
use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::{Authz, AUTHORIZATION_FAILED};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::CreateAcls,
    min: 1,
    max: 3,
};

/// Most creations, or filters, one ACL request may carry (each is a metadata record or a
/// pass over every ACL).
pub const ACL_REQUEST_ITEMS_MAX: usize = 1000;

/// Why no item of an ACL request is carried out, if one of these holds: the client may
/// not `op` on the cluster, the authorizer is off, or the request is too long.
pub(crate) fn blanket_refusal(
    shard: &Shard,
    authz: &Authz<'_>,
    op: AclOperation,
    items: usize,
) -> Option<(ErrorCode, String)> {
    if !shard.security.auth.authorizer.enabled {
        return Some((
            code::SECURITY_DISABLED,
            "No Authorizer is configured ([auth] authorizer = false)".to_string(),
        ));
    }
    if !authz.cluster(op) {
        return Some((
            code::CLUSTER_AUTHORIZATION_FAILED,
            AUTHORIZATION_FAILED.to_string(),
        ));
    }
    if items > ACL_REQUEST_ITEMS_MAX {
        return Some((
            code::INVALID_REQUEST,
            format!("{items} items in one request; at most {ACL_REQUEST_ITEMS_MAX}"),
        ));
    }
    None
}

fn binding(c: &AclCreation) -> AclBinding {
    AclBinding {
        resource_type: ResourceType::from_id(c.resource_type),
        resource_name: c.resource_name.to_string(),
        pattern: PatternType::from_id(c.resource_pattern_type),
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: AclOperation::from_id(c.operation),
        permission: AclPermission::from_id(c.permission_type),
    }
}

pub async fn handle(
    shard: &Shard,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: CreateAclsRequest = decode_body(req)?;
    let blanket = blanket_refusal(shard, authz, AclOperation::Alter, body.creations.len());
    let mut outcomes: Vec<Result<(), (ErrorCode, String)>> = Vec::new();
    let mut valid: Vec<AclBinding> = Vec::new();
    for c in &body.creations {
        let b = binding(c);
        let outcome = match (&blanket, b.problem()) {
            (Some(refusal), _) => Err(refusal.clone()),
            (None, Some(why)) => Err((code::INVALID_REQUEST, why)),
            (None, None) => {
                valid.push(b);
                Ok(())
            }
        };
        outcomes.push(outcome);
    }
    if let Some((error, message)) = &blanket {
        tracing::info!(error = %error, %message, "CreateAcls refused");
    }
    if !valid.is_empty() {
        let count = valid.len();
        let ask = ControllerRequest::CreateAcls { bindings: valid };
        let stored = change_metadata(&shard.cluster, &ask, CONTROLLER_REQUEST_TIMEOUT).await;
        match stored {
            Ok(_) => tracing::info!(count, principal = %authz.principal(), "ACLs created"),
            Err((error, message)) => {
                tracing::info!(error = %error, %message, "CreateAcls refused by the controller");
                for o in outcomes.iter_mut().filter(|o| o.is_ok()) {
                    *o = Err((error, message.clone()));
                }
            }
        }
    }
    let results = outcomes
        .into_iter()
        .map(|o| match o {
            Ok(()) => AclCreationResult::default(),
            Err((error, message)) => AclCreationResult::default()
                .with_error_code(error.into())
                .with_error_message(Some(StrBytes::from_string(message))),
        })
        .collect();
    let resp = CreateAclsResponse::default().with_results(results);
    encode_response(req.header.correlation_id, req.version, &resp)
}
