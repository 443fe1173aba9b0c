//! Flatbuffers record codec: round trips (property-tested) and hostile bytes.

mod common;

use proptest::prelude::*;
use sluice_control::acl::{AclBinding, AclOperation, AclPermission, PatternType, ResourceType};
use sluice_control::{
    BrokerEpoch, BrokerId, ConfigResource, LeaderEpoch, Listener, NodeId, PartitionAssignment,
    PartitionChange, PartitionId, Record, ScramCredential, ScramMechanism, TopicId,
};

fn ids() -> impl Strategy<Value = Vec<BrokerId>> {
    proptest::collection::vec((0i32..100).prop_map(BrokerId), 0..6)
}

fn leader() -> impl Strategy<Value = Option<BrokerId>> {
    proptest::option::of((0i32..100).prop_map(BrokerId))
}

fn mechanism() -> impl Strategy<Value = ScramMechanism> {
    prop_oneof![Just(ScramMechanism::Sha256), Just(ScramMechanism::Sha512)]
}

fn acl_binding() -> impl Strategy<Value = AclBinding> {
    (
        any::<i8>(),
        "[a-z*.-]{0,12}",
        any::<i8>(),
        "(User:)?[a-z*]{0,8}",
        "(\\*|10\\.0\\.0\\.[0-9]|[a-z]{0,3})",
        any::<i8>(),
        any::<i8>(),
    )
        .prop_map(
            |(kind, name, pattern, principal, host, op, perm)| AclBinding {
                resource_type: ResourceType::from_id(kind),
                resource_name: name,
                pattern: PatternType::from_id(pattern),
                principal,
                host,
                operation: AclOperation::from_id(op),
                permission: AclPermission::from_id(perm),
            },
        )
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        acl_binding().prop_map(|binding| Record::AccessControlEntry { binding }),
        acl_binding().prop_map(|binding| Record::RemoveAccessControlEntry { binding }),
        (
            "[a-z0-9@.]{0,16}",
            mechanism(),
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 0..70),
            proptest::collection::vec(any::<u8>(), 0..70),
            any::<i32>()
        )
            .prop_map(
                |(user, mechanism, salt, stored_key, server_key, iterations)| {
                    Record::UserScramCredential {
                        user,
                        mechanism,
                        credential: ScramCredential {
                            salt,
                            stored_key,
                            server_key,
                            iterations,
                        },
                    }
                }
            ),
        ("[a-z0-9@.]{0,16}", mechanism())
            .prop_map(|(user, mechanism)| Record::RemoveUserScramCredential { user, mechanism }),
        (
            0i32..1000,
            any::<i64>(),
            proptest::option::of("[a-z0-9-]{0,12}"),
            proptest::collection::vec(("[A-Z_]{1,10}", "[a-z0-9.]{1,20}", any::<u16>()), 0..3)
        )
            .prop_map(|(b, e, rack, ls)| Record::RegisterBroker {
                broker: BrokerId(b),
                epoch: BrokerEpoch(e),
                rack,
                listeners: ls
                    .into_iter()
                    .map(|(name, host, port)| Listener { name, host, port })
                    .collect(),
            }),
        (0i32..1000, any::<i64>()).prop_map(|(b, e)| Record::FenceBroker {
            broker: BrokerId(b),
            epoch: BrokerEpoch(e)
        }),
        (0i32..1000, any::<i64>()).prop_map(|(b, e)| Record::UnfenceBroker {
            broker: BrokerId(b),
            epoch: BrokerEpoch(e)
        }),
        (
            "[a-z._-]{1,40}",
            any::<u128>(),
            proptest::collection::vec((ids(), leader(), any::<i32>(), ids()), 0..5)
        )
            .prop_map(|(name, id, ps)| Record::CreateTopic {
                name,
                topic_id: TopicId(id),
                partitions: ps
                    .into_iter()
                    .enumerate()
                    .map(|(i, (replicas, leader, epoch, isr))| PartitionAssignment {
                        partition: PartitionId(i as i32),
                        replicas,
                        leader,
                        leader_epoch: LeaderEpoch(epoch),
                        isr,
                    })
                    .collect(),
            }),
        (
            any::<u128>(),
            0i32..100,
            leader(),
            any::<i32>(),
            ids(),
            ids(),
            proptest::option::of(ids()),
            proptest::option::of(ids()),
            proptest::option::of(ids())
        )
            .prop_map(
                |(id, p, leader, epoch, isr, elr, replicas, adding, removing)| {
                    Record::PartitionChange(PartitionChange {
                        topic_id: TopicId(id),
                        partition: PartitionId(p),
                        leader,
                        leader_epoch: LeaderEpoch(epoch),
                        isr,
                        eligible_leaders: elr,
                        replicas,
                        adding_replicas: adding,
                        removing_replicas: removing,
                    })
                }
            ),
        (
            0u8..4,
            "[a-z]{0,10}",
            "[a-z.]{1,30}",
            proptest::option::of("[ -~]{0,20}")
        )
            .prop_map(|(r, name, key, value)| Record::ConfigChange {
                resource: [
                    ConfigResource::Topic,
                    ConfigResource::Broker,
                    ConfigResource::Cluster,
                    ConfigResource::Group
                ][r as usize],
                resource_name: name,
                key,
                value,
            }),
        any::<u128>().prop_map(|id| Record::DeleteTopic {
            topic_id: TopicId(id)
        }),
        (any::<u64>(), "[a-z0-9.]{0,20}", any::<u16>()).prop_map(|(id, host, port)| {
            Record::RegisterController {
                controller: NodeId(id),
                host,
                port,
            }
        }),
        any::<u64>().prop_map(|id| Record::UnregisterController {
            controller: NodeId(id)
        }),
    ]
}

proptest! {
    #![proptest_config(common::proptest_config())]

    #[test]
    fn round_trip(r in record()) {
        let bytes = r.encode();
        prop_assert_eq!(Record::decode(&bytes), Ok(r));
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Record::decode(&bytes);
    }

    #[test]
    fn corrupted_record_never_panics(r in record(), pos in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = r.encode();
        let i = pos % bytes.len();
        bytes[i] = byte;
        let _ = Record::decode(&bytes);
        bytes.truncate(i);
        let _ = Record::decode(&bytes);
    }
}

#[test]
fn absent_leader_and_replicas_round_trip() {
    let r = Record::PartitionChange(PartitionChange {
        topic_id: TopicId(7),
        partition: PartitionId(0),
        leader: None,
        leader_epoch: LeaderEpoch(3),
        isr: vec![BrokerId(1)],
        eligible_leaders: vec![],
        replicas: None,
        adding_replicas: None,
        removing_replicas: None,
    });
    assert_eq!(Record::decode(&r.encode()), Ok(r));
}
