//! DescribeAcls (v1–3): the ACL bindings of this shard's image a filter selects (Kafka's
//! ANY and MATCH semantics, `sluice_control::acl::AclFilter`), grouped by resource
//! pattern. A filter with an UNKNOWN enum is INVALID_REQUEST; needs DESCRIBE on the
//! cluster (CLUSTER_AUTHORIZATION_FAILED) and the authorizer on (SECURITY_DISABLED).

use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{ApiKey, DescribeAclsRequest, DescribeAclsResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_control::acl::{
    AclBinding, AclFilter, AclOperation, AclPermission, PatternType, ResourceType,
};

use super::create_acls::blanket_refusal;
use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DescribeAcls,
    min: 1,
    max: 3,
};

/// A filter as the wire has it (DescribeAcls' request, each of DeleteAcls' filters):
/// resource type, name, pattern type, principal, host, operation, permission.
pub(crate) fn filter(
    ids: [i8; 4],
    name: Option<&StrBytes>,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
) -> AclFilter {
    let [kind, pattern, op, permission] = ids;
    AclFilter {
        resource_type: ResourceType::from_id(kind),
        resource_name: name.map(|s| s.to_string()),
        pattern: PatternType::from_id(pattern),
        principal: principal.map(|s| s.to_string()),
        host: host.map(|s| s.to_string()),
        operation: AclOperation::from_id(op),
        permission: AclPermission::from_id(permission),
    }
}

/// Bindings (in the image's order, so grouped by resource) as DescribeAcls lists them.
pub(crate) fn resources<'a>(
    bindings: impl Iterator<Item = &'a AclBinding>,
) -> Vec<DescribeAclsResource> {
    let mut out: Vec<DescribeAclsResource> = Vec::new();
    for b in bindings {
        let acl = AclDescription::default()
            .with_principal(StrBytes::from_string(b.principal.clone()))
            .with_host(StrBytes::from_string(b.host.clone()))
            .with_operation(b.operation.id())
            .with_permission_type(b.permission.id());
        match out.last_mut() {
            Some(r)
                if r.resource_type == b.resource_type.id()
                    && r.pattern_type == b.pattern.id()
                    && r.resource_name.as_str() == b.resource_name =>
            {
                r.acls.push(acl)
            }
            _ => out.push(
                DescribeAclsResource::default()
                    .with_resource_type(b.resource_type.id())
                    .with_resource_name(StrBytes::from_string(b.resource_name.clone()))
                    .with_pattern_type(b.pattern.id())
                    .with_acls(vec![acl]),
            ),
        }
    }
    out
}

pub fn handle(
    shard: &Shard,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: DescribeAclsRequest = decode_body(req)?;
    let f = filter(
        [
            body.resource_type_filter,
            body.pattern_type_filter,
            body.operation,
            body.permission_type,
        ],
        body.resource_name_filter.as_ref(),
        body.principal_filter.as_ref(),
        body.host_filter.as_ref(),
    );
    let refusal = blanket_refusal(shard, authz, AclOperation::Describe, 1).or_else(|| {
        f.problem()
            .map(|why| (code::INVALID_REQUEST, format!("invalid filter: {why}")))
    });
    let resp = match refusal {
        Some((error, message)) => {
            tracing::info!(error = %error, %message, "DescribeAcls refused");
            DescribeAclsResponse::default()
                .with_error_code(error.into())
                .with_error_message(Some(StrBytes::from_string(message)))
        }
        None => {
            let image = shard.cluster.image();
            DescribeAclsResponse::default().with_resources(resources(image.acls().matching(&f)))
        }
    };
    encode_response(req.header.correlation_id, req.version, &resp)
}
