//! ConsumerGroupHeartbeat (KIP-848): joins, heartbeats, reconciles and leaves a member of
//! a consumer-protocol group in one API (see `crate::groups::consumer`). A heartbeat that
//! changed the group is answered once its records are durable in `__consumer_offsets`. v0 lets the
//! coordinator name a new member; v1 (KIP-1082) has the client name it.

use std::rc::Rc;

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
};
use kafka_protocol::protocol::StrBytes;
use sluice_control::{MetadataImage, TopicId};
use uuid::Uuid;

use super::group_configs;
use super::join_group::client_host;
use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::groups::consumer::{self, Heartbeat, Refusal};
use crate::groups::persist;
use crate::groups::subscription::TopicSource;
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::{Authz, AUTHORIZATION_FAILED};
use crate::security::AclOperation;

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::ConsumerGroupHeartbeat,
    min: 0,
    max: 1,
};

/// The metadata image as the subscriptions see it.
pub struct ImageTopics<'a>(pub &'a MetadataImage);

impl TopicSource for ImageTopics<'_> {
    fn version(&self) -> u64 {
        self.0.offset().0
    }
    fn topic(&self, name: &str) -> Option<(TopicId, i32)> {
        self.0
            .topic_by_name(name)
            .map(|t| (t.id, t.partitions.len() as i32))
    }
    fn each(&self, f: &mut dyn FnMut(&str, TopicId, i32)) {
        for t in self.0.topics() {
            f(&t.name, t.id, t.partitions.len() as i32);
        }
    }
}

/// The request's fields, bounded by `consumer::validate` afterwards.
fn decode(shard: &Shard, req: &Request, body: &ConsumerGroupHeartbeatRequest) -> Heartbeat {
    let mut member_id = body.member_id.to_string();
    if member_id.is_empty() && body.member_epoch == 0 && req.version == 0 {
        member_id = shard.groups.fresh_member_id("consumer");
    }
    Heartbeat {
        member_id,
        member_epoch: body.member_epoch,
        instance_id: body.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: body.rack_id.as_ref().map(|s| s.to_string()),
        rebalance_timeout_ms: body.rebalance_timeout_ms,
        topic_names: body
            .subscribed_topic_names
            .as_ref()
            .map(|ns| ns.iter().map(|n| n.0.to_string()).collect()),
        regex: body.subscribed_topic_regex.as_ref().map(|s| s.to_string()),
        compiled_regex: None,
        assignor: body.server_assignor.as_ref().map(|s| s.to_string()),
        owned: body.topic_partitions.as_ref().map(|tps| {
            tps.iter()
                .map(|tp| (TopicId(tp.topic_id.as_u128()), tp.partitions.clone()))
                .collect()
        }),
        client_id: req.header.client_id.as_deref().unwrap_or("").to_string(),
        client_host: client_host(req),
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: ConsumerGroupHeartbeatRequest = decode_body(req)?;
    let group = body.group_id.0.to_string();
    let mut hb = decode(shard, req, &body);
    let (result, recs) = if !authz.group(AclOperation::Read, &group) {
        // Kafka's check: READ on the group.
        let r = Refusal::new(code::GROUP_AUTHORIZATION_FAILED, AUTHORIZATION_FAILED);
        (Err(r), Vec::new())
    } else if group.is_empty() {
        let r = Refusal::new(code::INVALID_REQUEST, "GroupId can't be empty.");
        (Err(r), Vec::new())
    } else if let Err(r) = consumer::validate(&mut hb) {
        (Err(r), Vec::new())
    } else {
        let image = shard.cluster.image();
        let timing = group_configs::effective(&image, &group, shard.groups.config());
        shard
            .groups
            .consumer_heartbeat(&group, &hb, &ImageTopics(&image), timing)
    };
    // As Kafka: the answer goes out once what it reports is durable, so a coordinator
    // that takes over (or this one after a restart) knows the epochs the member holds.
    let result = if recs.is_empty() {
        result
    } else {
        let partition = shard.groups.partition_of(&group);
        match persist::append(shard, partition, &recs).await {
            Ok(_) => result,
            Err(e) => Err(Refusal::new(e, "writing the group's records failed")),
        }
    };
    let resp = match result {
        Ok(ok) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(StrBytes::from_string(ok.member_id)))
            .with_member_epoch(ok.member_epoch)
            .with_heartbeat_interval_ms(ok.heartbeat_interval_ms)
            .with_assignment(ok.assignment.map(|a| {
                Assignment::default().with_topic_partitions(
                    a.into_iter()
                        .map(|(t, ps)| {
                            TopicPartitions::default()
                                .with_topic_id(Uuid::from_u128(t.0))
                                .with_partitions(ps.into_iter().collect())
                        })
                        .collect(),
                )
            })),
        Err(r) => {
            let bad_input = [
                code::INVALID_REQUEST,
                code::INVALID_REGULAR_EXPRESSION,
                code::UNSUPPORTED_ASSIGNOR,
            ]
            .contains(&r.code);
            if bad_input {
                tracing::warn!(group = %group, member = %hb.member_id, error = %r.code, "ConsumerGroupHeartbeat refused: {}", r.message);
            } else {
                tracing::debug!(group = %group, member = %hb.member_id, error = %r.code, "ConsumerGroupHeartbeat refused: {}", r.message);
            }
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(r.code.into())
                .with_error_message(Some(StrBytes::from_string(r.message)))
                .with_member_epoch(-1)
        }
    };
    encode_response(req.header.correlation_id, req.version, &resp)
}
