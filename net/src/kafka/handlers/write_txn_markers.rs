//! WriteTxnMarkers: a transaction coordinator's COMMIT or ABORT markers, written into every
//! partition of a transaction this broker leads. Each marker is acknowledged once the
//! in-sync replicas hold it (as Kafka writes markers, acks=all); a marker from a fenced
//! producer epoch or an older coordinator is refused for its partition only.

use std::rc::Rc;

use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{ApiKey, WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::fan_out::{answer_topics, ask_owners};
use super::ApiSpec;
use crate::broker::shard::{MarkerWritten, Shard, ShardOp};
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{decode_body, encode_response, FrameError, Request, ResponseFrame};
use crate::security::authz::Authz;
use crate::security::AclOperation;
use crate::store::{Marker, MarkerKind};

/// Kafka 4.x serves version 1 only (KIP-896 removed 0).
pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::WriteTxnMarkers,
    min: 1,
    max: 1,
};

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: WriteTxnMarkersRequest = decode_body(req)?;
    // Only brokers write markers: CLUSTER_ACTION on the cluster (Kafka's check).
    let refusal =
        (!authz.cluster(AclOperation::ClusterAction)).then_some(code::CLUSTER_AUTHORIZATION_FAILED);
    let mut markers = Vec::with_capacity(body.markers.len());
    for m in &body.markers {
        markers.push(write_one(shard, m, refusal).await);
    }
    let resp = WriteTxnMarkersResponse::default().with_markers(markers);
    encode_response(req.header.correlation_id, req.version, &resp)
}

/// The engine's marker for one request entry; `None` when it names no producer.
fn marker_of(m: &WritableTxnMarker) -> Option<Marker> {
    (m.producer_id.0 >= 0 && m.producer_epoch >= 0).then_some(Marker {
        producer_id: m.producer_id.0,
        producer_epoch: m.producer_epoch,
        coordinator_epoch: m.coordinator_epoch,
        kind: if m.transaction_result {
            MarkerKind::Commit
        } else {
            MarkerKind::Abort
        },
    })
}

/// Writes one marker into its partitions (each asked of its owning shard); with a
/// `refusal` (the authorizer's) every partition is answered with it.
async fn write_one(
    shard: &Rc<Shard>,
    m: &WritableTxnMarker,
    refusal: Option<ErrorCode>,
) -> WritableTxnMarkerResult {
    fn partitions(t: &WritableTxnMarkerTopic) -> (&str, &[i32]) {
        (t.name.0.as_str(), &t.partition_indexes[..])
    }
    let answers: Vec<Vec<MarkerWritten>> = match marker_of(m) {
        Some(marker) => {
            ask_owners(
                shard,
                &m.topics,
                partitions,
                |p| (*p, marker),
                |_| refusal,
                |parts| ShardOp::WriteMarkers { parts },
            )
            .await
        }
        None => {
            tracing::info!(
                producer_id = m.producer_id.0,
                producer_epoch = m.producer_epoch,
                "transaction marker refused: no producer"
            );
            m.topics
                .iter()
                .map(|t| {
                    let refused = MarkerWritten {
                        error: code::INVALID_REQUEST,
                    };
                    vec![refused; t.partition_indexes.len()]
                })
                .collect()
        }
    };
    let topics = answer_topics(
        &m.topics,
        answers,
        partitions,
        |_, p, a: MarkerWritten| {
            WritableTxnMarkerPartitionResult::default()
                .with_partition_index(*p)
                .with_error_code(a.error.into())
        },
        |t, partitions| {
            WritableTxnMarkerTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        },
    );
    WritableTxnMarkerResult::default()
        .with_producer_id(m.producer_id)
        .with_topics(topics)
}
