//! FindCoordinator: this node coordinates every group (single node). Transaction
//! coordinators are not offered (no transactions).

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSpec;
use crate::errors::code;
use crate::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::shard::Shard;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::FindCoordinator,
    min: 0,
    max: 4,
};

/// Key type of a consumer group (1 is a transactional id).
const KEY_TYPE_GROUP: i8 = 0;

pub fn handle(shard: &Rc<Shard>, req: &Request) -> Result<ResponseFrame, FrameError> {
    let body: FindCoordinatorRequest = decode_body(req)?;
    let node = BrokerId(shard.config.node_id);
    let host = StrBytes::from_string(shard.config.advertised_host.clone());
    let port = shard.config.advertised_port as i32;
    let error = if body.key_type == KEY_TYPE_GROUP {
        code::NONE
    } else {
        code::COORDINATOR_NOT_AVAILABLE
    };
    let resp = if req.version >= 4 {
        let coordinators = body
            .coordinator_keys
            .iter()
            .map(|k| {
                let c = Coordinator::default()
                    .with_key(k.clone())
                    .with_error_code(error);
                if error == code::NONE {
                    c.with_node_id(node).with_host(host.clone()).with_port(port)
                } else {
                    c.with_node_id(BrokerId(-1)).with_port(-1)
                }
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else if error == code::NONE {
        FindCoordinatorResponse::default()
            .with_node_id(node)
            .with_host(host)
            .with_port(port)
    } else {
        FindCoordinatorResponse::default()
            .with_error_code(error)
            .with_node_id(BrokerId(-1))
            .with_port(-1)
    };
    encode_response(req.header.correlation_id, req.version, &resp)
}
