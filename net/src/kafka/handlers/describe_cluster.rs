//! DescribeCluster: every live broker from the metadata image (its endpoint on the
//! client's listener), and the active controller.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{ApiKey, BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::metadata::{controller_id, endpoint};
use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::{Authz, AUTHORIZATION_FAILED};
use crate::security::session::Session;
use crate::security::{AclOperation, ResourceType, CLUSTER_RESOURCE_NAME};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DescribeCluster,
    min: 0,
    max: 1,
};

pub fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: DescribeClusterRequest = decode_body(req)?;
    // Kafka's check: DESCRIBE on the cluster.
    if !authz.cluster(AclOperation::Describe) {
        let resp = DescribeClusterResponse::default()
            .with_error_code(code::CLUSTER_AUTHORIZATION_FAILED.into())
            .with_error_message(Some(StrBytes::from_static_str(AUTHORIZATION_FAILED)));
        return encode_response(req.header.correlation_id, req.version, &resp);
    }
    let image = shard.cluster.image();
    let brokers = image
        .brokers()
        .filter(|b| !b.fenced)
        .filter_map(|b| {
            let l = endpoint(shard, session, b)?;
            Some(
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.id.0))
                    .with_host(StrBytes::from_string(l.host.clone()))
                    .with_port(i32::from(l.port))
                    .with_rack(b.rack.clone().map(StrBytes::from_string)),
            )
        })
        .collect();
    let resp = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(shard.config.cluster_id.clone()))
        .with_controller_id(controller_id(shard))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(authz.operations(
            body.include_cluster_authorized_operations,
            ResourceType::Cluster,
            CLUSTER_RESOURCE_NAME,
        ));
    encode_response(req.header.correlation_id, req.version, &resp)
}
