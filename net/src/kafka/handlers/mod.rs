//! One module per Kafka API. Each declares its API key and the versions it implements in a
//! `SPEC`; [`APIS`] lists them all (ApiVersions answers from it) and [`dispatch`] routes
//! to them. A request for an API or version not in the table closes the connection, as
//! Kafka does, except ApiVersions, which answers UNSUPPORTED_VERSION.

use std::rc::Rc;

use kafka_protocol::messages::ApiKey;

use crate::broker::shard::Shard;
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::session::Session;
use crate::security::AclOperation;

pub(crate) mod add_offsets_to_txn;
pub(crate) mod add_partitions_to_txn;
pub(crate) mod alter_configs;
pub(crate) mod alter_partition_reassignments;
pub(crate) mod alter_user_scram_credentials;
pub(crate) mod api_versions;
pub(crate) mod consumer_group_describe;
pub(crate) mod consumer_group_heartbeat;
pub(crate) mod create_acls;
pub(crate) mod create_partitions;
pub(crate) mod create_topics;
pub(crate) mod delete_acls;
pub(crate) mod delete_groups;
pub(crate) mod delete_records;
pub(crate) mod delete_topics;
pub(crate) mod describe_acls;
pub(crate) mod describe_cluster;
pub(crate) mod describe_configs;
pub(crate) mod describe_groups;
pub(crate) mod describe_producers;
pub(crate) mod describe_quorum;
pub(crate) mod describe_topic_partitions;
pub(crate) mod describe_transactions;
pub(crate) mod describe_user_scram_credentials;
pub(crate) mod elect_leaders;
pub(crate) mod end_txn;
pub(crate) mod fan_out;
pub(crate) mod fetch;
pub(crate) mod find_coordinator;
pub(crate) mod group_configs;
pub(crate) mod heartbeat;
pub(crate) mod init_producer_id;
pub(crate) mod join_group;
pub(crate) mod leave_group;
pub(crate) mod list_groups;
pub(crate) mod list_offsets;
pub(crate) mod list_partition_reassignments;
pub(crate) mod list_transactions;
pub(crate) mod metadata;
pub(crate) mod offset_commit;
pub(crate) mod offset_delete;
pub(crate) mod offset_fetch;
pub(crate) mod offset_for_leader_epoch;
pub(crate) mod produce;
pub(crate) mod sasl_authenticate;
pub(crate) mod sasl_handshake;
pub(crate) mod sync_group;
pub(crate) mod txn_offset_commit;
pub(crate) mod write_txn_markers;

/// An API this broker implements, and the versions it implements.
#[derive(Debug, Clone, Copy)]
pub struct ApiSpec {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

impl ApiSpec {
    pub fn supports(&self, version: i16) -> bool {
        (self.min..=self.max).contains(&version)
    }
}

/// Every API served, in one table.
pub const APIS: &[ApiSpec] = &[
    produce::SPEC,
    fetch::SPEC,
    list_offsets::SPEC,
    metadata::SPEC,
    api_versions::SPEC,
    create_topics::SPEC,
    delete_topics::SPEC,
    init_producer_id::SPEC,
    delete_records::SPEC,
    describe_cluster::SPEC,
    describe_topic_partitions::SPEC,
    describe_quorum::SPEC,
    offset_for_leader_epoch::SPEC,
    create_partitions::SPEC,
    describe_configs::SPEC,
    alter_configs::SPEC,
    alter_configs::INCREMENTAL_SPEC,
    find_coordinator::SPEC,
    join_group::SPEC,
    sync_group::SPEC,
    heartbeat::SPEC,
    leave_group::SPEC,
    offset_commit::SPEC,
    offset_fetch::SPEC,
    describe_groups::SPEC,
    delete_groups::SPEC,
    elect_leaders::SPEC,
    alter_partition_reassignments::SPEC,
    list_partition_reassignments::SPEC,
    offset_delete::SPEC,
    list_groups::SPEC,
    write_txn_markers::SPEC,
    add_partitions_to_txn::SPEC,
    end_txn::SPEC,
    add_offsets_to_txn::SPEC,
    txn_offset_commit::SPEC,
    describe_transactions::SPEC,
    describe_producers::SPEC,
    list_transactions::SPEC,
    consumer_group_describe::SPEC,
    consumer_group_heartbeat::SPEC,
    sasl_handshake::SPEC,
    sasl_authenticate::SPEC,
    describe_user_scram_credentials::SPEC,
    alter_user_scram_credentials::SPEC,
    describe_acls::SPEC,
    create_acls::SPEC,
    delete_acls::SPEC,
];

/// The authorizer's answer for `op` on topic `name`: TOPIC_AUTHORIZATION_FAILED if denied.
pub(crate) fn refuse_topic(authz: &Authz<'_>, op: AclOperation, name: &str) -> Option<ErrorCode> {
    (!authz.topic(op, name)).then_some(code::TOPIC_AUTHORIZATION_FAILED)
}

pub(crate) fn spec(key: ApiKey) -> Option<&'static ApiSpec> {
    APIS.iter().find(|s| s.key == key)
}

/// Runs one request of the connection whose security state is `session` (its listener
/// picks the addresses answers give). `Ok(None)` means no response is sent (acks=0
/// produce).
pub(crate) async fn dispatch(
    shard: Rc<Shard>,
    session: &Session,
    req: Request,
) -> Result<Option<ResponseFrame>, FrameError> {
    crate::broker::watchdog::note_request(req.api_key as i16);
    let supported = spec(req.api_key)
        .map(|s| s.supports(req.version))
        .unwrap_or(false);
    if !supported {
        if req.api_key == ApiKey::ApiVersions {
            return api_versions::unsupported(&req).map(Some);
        }
        return Err(FrameError::Unsupported {
            api: req.api_key,
            version: req.version,
        });
    }
    // On a SASL listener: nothing but the SASL exchange before authentication, and only a
    // re-authentication once the session expired (both close the connection, as Kafka).
    if session.protocol.sasl() {
        if let Some(why) = session.refusal(req.api_key, std::time::Instant::now()) {
            return Err(FrameError::Refused(format!("{:?}: {why}", req.api_key)));
        }
    }
    tracing::debug!(api = ?req.api_key, version = req.version,
        client_id = req.header.client_id.as_deref().unwrap_or(""),
        principal = %session.principal(), protocol = session.protocol.name(), "request");
    // The authorizer's view of this request: principal, address, this shard's ACLs.
    let authz = Authz::new(&shard.security, || shard.cluster.image(), session);
    let a = &authz;
    match req.api_key {
        ApiKey::ApiVersions => api_versions::handle(&shard, &req).map(Some),
        ApiKey::Metadata => metadata::handle(&shard, session, a, &req).await.map(Some),
        ApiKey::Produce => produce::handle(&shard, a, &req).await,
        ApiKey::Fetch => fetch::handle(&shard, a, &req).await.map(Some),
        ApiKey::ListOffsets => list_offsets::handle(&shard, a, &req).await.map(Some),
        ApiKey::CreateTopics => create_topics::handle(&shard, a, &req).await.map(Some),
        ApiKey::DeleteTopics => delete_topics::handle(&shard, a, &req).await.map(Some),
        ApiKey::InitProducerId => init_producer_id::handle(&shard, a, &req).await.map(Some),
        ApiKey::DeleteRecords => delete_records::handle(&shard, a, &req).await.map(Some),
        ApiKey::DescribeCluster => describe_cluster::handle(&shard, session, a, &req).map(Some),
        ApiKey::DescribeQuorum => describe_quorum::handle(&shard, a, &req).await.map(Some),
        ApiKey::DescribeTopicPartitions => {
            describe_topic_partitions::handle(&shard, a, &req).map(Some)
        }
        ApiKey::OffsetForLeaderEpoch => offset_for_leader_epoch::handle(&shard, a, &req)
            .await
            .map(Some),
        ApiKey::CreatePartitions => create_partitions::handle(&shard, a, &req).await.map(Some),
        ApiKey::DescribeConfigs => describe_configs::handle(&shard, a, &req).map(Some),
        ApiKey::AlterConfigs => alter_configs::handle(&shard, a, &req).await.map(Some),
        ApiKey::IncrementalAlterConfigs => alter_configs::handle_incremental(&shard, a, &req)
            .await
            .map(Some),
        ApiKey::FindCoordinator => find_coordinator::handle(&shard, session, a, &req).map(Some),
        ApiKey::JoinGroup => join_group::handle(&shard, a, &req).await.map(Some),
        ApiKey::SyncGroup => sync_group::handle(&shard, a, &req).await.map(Some),
        ApiKey::Heartbeat => heartbeat::handle(&shard, a, &req).map(Some),
        ApiKey::LeaveGroup => leave_group::handle(&shard, a, &req).map(Some),
        ApiKey::OffsetCommit => offset_commit::handle(&shard, a, &req).await.map(Some),
        ApiKey::OffsetFetch => offset_fetch::handle(&shard, a, &req).map(Some),
        ApiKey::DescribeGroups => describe_groups::handle(&shard, a, &req).map(Some),
        ApiKey::ListGroups => list_groups::handle(&shard, a, &req).map(Some),
        ApiKey::DeleteGroups => delete_groups::handle(&shard, a, &req).await.map(Some),
        ApiKey::ElectLeaders => elect_leaders::handle(&shard, a, &req).await.map(Some),
        ApiKey::AlterPartitionReassignments => {
            alter_partition_reassignments::handle(&shard, a, &req)
                .await
                .map(Some)
        }
        ApiKey::ListPartitionReassignments => list_partition_reassignments::handle(&shard, a, &req)
            .await
            .map(Some),
        ApiKey::OffsetDelete => offset_delete::handle(&shard, a, &req).await.map(Some),
        ApiKey::WriteTxnMarkers => write_txn_markers::handle(&shard, a, &req).await.map(Some),
        ApiKey::AddPartitionsToTxn => add_partitions_to_txn::handle(&shard, a, &req)
            .await
            .map(Some),
        ApiKey::EndTxn => end_txn::handle(&shard, a, &req).await.map(Some),
        ApiKey::AddOffsetsToTxn => add_offsets_to_txn::handle(&shard, a, &req).await.map(Some),
        ApiKey::TxnOffsetCommit => txn_offset_commit::handle(&shard, a, &req).await.map(Some),
        ApiKey::DescribeTransactions => describe_transactions::handle(&shard, a, &req).map(Some),
        ApiKey::DescribeProducers => describe_producers::handle(&shard, a, &req).await.map(Some),
        ApiKey::ListTransactions => list_transactions::handle(&shard, a, &req).map(Some),
        ApiKey::ConsumerGroupDescribe => consumer_group_describe::handle(&shard, a, &req).map(Some),
        ApiKey::ConsumerGroupHeartbeat => consumer_group_heartbeat::handle(&shard, a, &req)
            .await
            .map(Some),
        ApiKey::SaslHandshake => sasl_handshake::handle(&shard, session, &req).map(Some),
        ApiKey::SaslAuthenticate => sasl_authenticate::handle(&shard, session, &req)
            .await
            .map(Some),
        ApiKey::DescribeUserScramCredentials => {
            describe_user_scram_credentials::handle(&shard, a, &req).map(Some)
        }
        ApiKey::AlterUserScramCredentials => alter_user_scram_credentials::handle(&shard, a, &req)
            .await
            .map(Some),
        ApiKey::DescribeAcls => describe_acls::handle(&shard, a, &req).map(Some),
        ApiKey::CreateAcls => create_acls::handle(&shard, a, &req).await.map(Some),
        ApiKey::DeleteAcls => delete_acls::handle(&shard, a, &req).await.map(Some),
        other => Err(FrameError::Unsupported {
            api: other,
            version: req.version,
        }),
    }
}
