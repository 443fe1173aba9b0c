//! DescribeCluster: this one broker, which is also the controller.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{ApiKey, BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSpec;
use crate::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::shard::Shard;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::DescribeCluster,
    min: 0,
    max: 1,
};

pub fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let _body: DescribeClusterRequest = decode_body(req)?;
    let node = BrokerId(shard.config.node_id);
    let broker = DescribeClusterBroker::default()
        .with_broker_id(node)
        .with_host(StrBytes::from_string(shard.config.advertised_host.clone()))
        .with_port(shard.config.advertised_port as i32);
    let resp = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(shard.config.cluster_id.clone()))
        .with_controller_id(node)
        .with_brokers(vec![broker]);
    encode_response(req.header.correlation_id, req.version, &resp)
}
