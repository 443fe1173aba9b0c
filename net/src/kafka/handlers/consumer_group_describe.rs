//! ConsumerGroupDescribe (KIP-848): a consumer-protocol group's epochs, assignor and
//! members, each with its current and target assignment. A classic group, or none, is
//! GROUP_ID_NOT_FOUND as in Kafka.

use std::rc::Rc;

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_control::MetadataImage;
use uuid::Uuid;

use super::ApiSpec;
use crate::broker::shard::Shard;
use crate::groups::{assignor, consumer, ConsumerView};
use crate::kafka::errors::code;
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::{AclOperation, ResourceType};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::ConsumerGroupDescribe,
    min: 0,
    max: 1,
};

/// Kafka's `MemberType` (v1): 1 is a member of the consumer protocol, 0 a classic member
/// hosted during an online conversion.
const MEMBER_TYPE_CONSUMER: i8 = 1;
const MEMBER_TYPE_CLASSIC: i8 = 0;

fn assignment(image: &MetadataImage, a: &assignor::Assignment) -> Assignment {
    Assignment::default().with_topic_partitions(
        a.iter()
            .map(|(t, ps)| {
                let name = image.topic(*t).map(|t| t.name.clone()).unwrap_or_default();
                TopicPartitions::default()
                    .with_topic_id(Uuid::from_u128(t.0))
                    .with_topic_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    )
}

fn member(image: &MetadataImage, m: &consumer::Member, target: &assignor::Assignment) -> Member {
    Member::default()
        .with_member_id(StrBytes::from_string(m.member_id.clone()))
        .with_instance_id(m.instance_id.clone().map(StrBytes::from_string))
        .with_rack_id(m.rack_id.clone().map(StrBytes::from_string))
        .with_member_epoch(m.epoch)
        .with_client_id(StrBytes::from_string(m.client_id.clone()))
        .with_client_host(StrBytes::from_string(m.client_host.clone()))
        .with_subscribed_topic_names(
            m.topic_names
                .iter()
                .map(|n| TopicName(StrBytes::from_string(n.clone())))
                .collect(),
        )
        .with_subscribed_topic_regex(m.regex.clone().map(StrBytes::from_string))
        .with_assignment(assignment(image, &m.assigned))
        .with_target_assignment(assignment(image, target))
        .with_member_type(if m.classic.is_some() {
            MEMBER_TYPE_CLASSIC
        } else {
            MEMBER_TYPE_CONSUMER
        })
}

fn described(image: &MetadataImage, d: DescribedGroup, v: &ConsumerView) -> DescribedGroup {
    d.with_group_state(StrBytes::from_static_str(v.state.name()))
        .with_group_epoch(v.epoch)
        .with_assignment_epoch(v.assignment_epoch)
        .with_assignor_name(StrBytes::from_string(v.assignor.clone()))
        .with_members(v.members.iter().map(|(m, t)| member(image, m, t)).collect())
}

pub fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: ConsumerGroupDescribeRequest = decode_body(req)?;
    let image = shard.cluster.image();
    let groups = body
        .group_ids
        .iter()
        .map(|g| {
            let d = DescribedGroup::default().with_group_id(g.clone());
            // Kafka's check: DESCRIBE on the group.
            if !authz.group(AclOperation::Describe, g) {
                return d.with_error_code(code::GROUP_AUTHORIZATION_FAILED.into());
            }
            let asked = body.include_authorized_operations;
            let d = d.with_authorized_operations(authz.operations(asked, ResourceType::Group, g));
            match shard.groups.consumer_describe(&g.0) {
                Err(e) => d.with_error_code(e.into()),
                Ok(Some(v)) => described(&image, d, &v),
                Ok(None) => {
                    let message = if shard.groups.is_classic(&g.0).unwrap_or(false) {
                        format!("Group {} is not a consumer group.", &*g.0)
                    } else {
                        format!("Group {} not found.", &*g.0)
                    };
                    d.with_error_code(code::GROUP_ID_NOT_FOUND.into())
                        .with_error_message(Some(StrBytes::from_string(message)))
                }
            }
        })
        .collect();
    let resp = ConsumerGroupDescribeResponse::default().with_groups(groups);
    encode_response(req.header.correlation_id, req.version, &resp)
}
