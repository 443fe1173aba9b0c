//! Framing: a 4-byte big-endian length, then a request header and body. Responses are
//! written as a list of chunks so that stored batch bytes can follow an encoded prefix
//! without being copied into it.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};

use crate::store::BatchSlice;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

/// Why a frame could not be read or parsed. Each closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} is negative or under the header size")]
    BadLength(i32),
    #[error("frame length {len} over socket.request.max.bytes {max}")]
    TooLarge { len: usize, max: usize },
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    #[error("malformed request header: {0}")]
    BadHeader(String),
    #[error("malformed {api:?} v{version} request: {reason}")]
    BadBody {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("{api:?} v{version} is not supported")]
    Unsupported { api: ApiKey, version: i16 },
    #[error("encoding the response failed: {0}")]
    Encode(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A request this connection may not make (before SASL authentication, after its
    /// session expired, a failed SASL v0 exchange): the connection is closed.
    #[error("{0}")]
    Refused(String),
}

/// Smallest valid frame: api key, api version, correlation id, client id length.
pub const HEADER_BYTES_MIN: i32 = 10;

/// Checks the length prefix of a bare SASL token frame (after SaslHandshake v0): 1 to
/// `max` bytes.
pub fn check_raw_length(len: i32, max: usize) -> Result<usize, FrameError> {
    match usize::try_from(len) {
        Ok(n) if n >= 1 && n <= max => Ok(n),
        Ok(n) if n > max => Err(FrameError::TooLarge { len: n, max }),
        _ => Err(FrameError::BadLength(len)),
    }
}

/// Checks a frame's length prefix against the configured bound.
pub fn check_length(len: i32, max: usize) -> Result<usize, FrameError> {
    if len < HEADER_BYTES_MIN {
        return Err(FrameError::BadLength(len));
    }
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// A parsed request: its header, and the body bytes after it.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: Bytes,
    /// The client's address (group members' `client_host`); set by the connection.
    pub peer_ip: Option<std::net::IpAddr>,
}

/// Reads the API key and version, then the header (whose version depends on them).
pub fn parse_request(mut frame: Bytes) -> Result<Request, FrameError> {
    if frame.len() < 4 {
        return Err(FrameError::BadLength(frame.len() as i32));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(key).map_err(|_| FrameError::UnknownApi(key))?;
    // Versions past what the codec knows still have a header version defined by whether
    // the API is flexible at its newest version, which is what Kafka does too.
    let header_version = api_key.request_header_version(version.min(api_key.valid_versions().max));
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| FrameError::BadHeader(e.to_string()))?;
    Ok(Request {
        api_key,
        version,
        header,
        body: frame,
        peer_ip: None,
    })
}

/// Decodes a request body of type `T`. Bytes left after the body are ignored, as Kafka's
/// own request readers do: librdkafka 2.16 sends an all-topics Metadata v12 request with 3
/// bytes after its tagged fields, and refusing them would make every `list_topics` of that
/// client fail. Memory is bounded by the body's length: the codec (the patched
/// kafka-protocol, `net/vendor/kafka-protocol/PATCHES.md`) never reserves room for more
/// elements than there are bytes left.
pub fn decode_body<T: Decodable>(req: &Request) -> Result<T, FrameError> {
    let mut body = req.body.clone();
    let value = T::decode(&mut body, req.version).map_err(|e| FrameError::BadBody {
        api: req.api_key,
        version: req.version,
        reason: e.to_string(),
    })?;
    if !body.is_empty() {
        tracing::debug!(api = ?req.api_key, version = req.version, bytes = body.len(), "bytes after the request body ignored");
    }
    Ok(value)
}

/// Lists every API this broker decodes a body for, with its request type, once for
/// [`decode_frame`] and [`samples::request_frame`], so that the two cannot drift apart.
/// (ApiVersions is not here: its handler never decodes the body.)
macro_rules! served_requests {
    ($($key:ident => $ty:ident),* $(,)?) => {
        /// Parses a whole frame (length prefix excluded) and decodes its body as its
        /// handler would, for every API and version this broker serves; the value is
        /// dropped. For fuzzing and tests of the codec boundary: touches no broker state.
        pub fn decode_frame(frame: Bytes) -> Result<(), FrameError> {
            use kafka_protocol::messages as m;
            let req = parse_request(frame)?;
            let served = crate::kafka::handlers::spec(req.api_key).is_some_and(|s| s.supports(req.version));
            match req.api_key {
                _ if !served => Err(FrameError::Unsupported { api: req.api_key, version: req.version }),
                ApiKey::ApiVersions => Ok(()),
                $(ApiKey::$key => decode_body::<m::$ty>(&req).map(drop),)*
                other => Err(FrameError::Unsupported { api: other, version: req.version }),
            }
        }

        pub mod samples {
            //! Valid request frames (length prefix excluded) for every served API and
            //! version: seeds for fuzzing and the base of the extreme-field tests. The
            //! main arrays of Produce, Fetch, Metadata and ListOffsets hold one element
            //! so that their nested counts and lengths are on the wire too.
            use bytes::{Bytes, BytesMut};
            use kafka_protocol::messages::{self as m, ApiKey, RequestHeader};
            use kafka_protocol::protocol::{Encodable, StrBytes};

            fn encode<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Option<Bytes> {
                let mut f = BytesMut::new();
                RequestHeader::default()
                    .with_request_api_key(key as i16)
                    .with_request_api_version(version)
                    .with_correlation_id(correlation_id)
                    .with_client_id(Some(StrBytes::from_static_str("sample")))
                    .encode(&mut f, key.request_header_version(version))
                    .ok()?;
                body.encode(&mut f, version).ok()?;
                Some(f.freeze())
            }

            /// A valid request for `key` at `version`; `None` if this broker does not
            /// serve it.
            pub fn request_frame(key: ApiKey, version: i16, correlation_id: i32) -> Option<Bytes> {
                if !crate::kafka::handlers::spec(key).is_some_and(|s| s.supports(version)) {
                    return None;
                }
                // The filled samples come first; the table's arms for the same keys
                // are then unreachable, which is the intent.
                #[allow(unreachable_patterns)]
                match key {
                    ApiKey::ApiVersions => encode(key, version, correlation_id, &m::ApiVersionsRequest::default()
                        .with_client_software_name(StrBytes::from_static_str("sample"))
                        .with_client_software_version(StrBytes::from_static_str("1"))),
                    ApiKey::Produce => encode(key, version, correlation_id, &filled::produce()),
                    ApiKey::Fetch => encode(key, version, correlation_id, &filled::fetch()),
                    ApiKey::Metadata => encode(key, version, correlation_id, &filled::metadata()),
                    ApiKey::ListOffsets => encode(key, version, correlation_id, &filled::list_offsets()),
                    ApiKey::WriteTxnMarkers => encode(key, version, correlation_id, &filled::write_txn_markers()),
                    $(ApiKey::$key => encode(key, version, correlation_id, &m::$ty::default()),)*
                    _ => None,
                }
            }

            mod filled {
                use kafka_protocol::messages::{self as m, TopicName};
                use kafka_protocol::protocol::StrBytes;

                fn topic() -> TopicName {
                    TopicName(StrBytes::from_static_str("t"))
                }

                pub fn produce() -> m::ProduceRequest {
                    let records = sluice_engine::batch::simple_batch(2, 3, 1_000);
                    m::ProduceRequest::default().with_acks(1).with_timeout_ms(1_000).with_topic_data(vec![
                        m::produce_request::TopicProduceData::default()
                            .with_name(topic())
                            .with_partition_data(vec![m::produce_request::PartitionProduceData::default()
                                .with_records(Some(records.into()))]),
                    ])
                }

                pub fn fetch() -> m::FetchRequest {
                    m::FetchRequest::default().with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(vec![
                        m::fetch_request::FetchTopic::default()
                            .with_topic(topic())
                            .with_partitions(vec![m::fetch_request::FetchPartition::default()
                                .with_partition_max_bytes(1 << 20)]),
                    ])
                }

                pub fn metadata() -> m::MetadataRequest {
                    m::MetadataRequest::default().with_topics(Some(vec![
                        m::metadata_request::MetadataRequestTopic::default().with_name(Some(topic())),
                    ]))
                }

                pub fn write_txn_markers() -> m::WriteTxnMarkersRequest {
                    m::WriteTxnMarkersRequest::default().with_markers(vec![
                        m::write_txn_markers_request::WritableTxnMarker::default()
                            .with_producer_id(m::ProducerId(1))
                            .with_topics(vec![m::write_txn_markers_request::WritableTxnMarkerTopic::default()
                                .with_name(topic())
                                .with_partition_indexes(vec![0])]),
                    ])
                }

                pub fn list_offsets() -> m::ListOffsetsRequest {
                    m::ListOffsetsRequest::default().with_topics(vec![
                        m::list_offsets_request::ListOffsetsTopic::default()
                            .with_name(topic())
                            .with_partitions(vec![m::list_offsets_request::ListOffsetsPartition::default()
                                .with_timestamp(-1)]),
                    ])
                }
            }
        }
    };
}

served_requests! {
    Produce => ProduceRequest,
    Fetch => FetchRequest,
    ListOffsets => ListOffsetsRequest,
    Metadata => MetadataRequest,
    CreateTopics => CreateTopicsRequest,
    DeleteTopics => DeleteTopicsRequest,
    InitProducerId => InitProducerIdRequest,
    DeleteRecords => DeleteRecordsRequest,
    DescribeCluster => DescribeClusterRequest,
    DescribeTopicPartitions => DescribeTopicPartitionsRequest,
    DescribeQuorum => DescribeQuorumRequest,
    OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
    CreatePartitions => CreatePartitionsRequest,
    DescribeConfigs => DescribeConfigsRequest,
    AlterConfigs => AlterConfigsRequest,
    IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
    FindCoordinator => FindCoordinatorRequest,
    JoinGroup => JoinGroupRequest,
    SyncGroup => SyncGroupRequest,
    Heartbeat => HeartbeatRequest,
    LeaveGroup => LeaveGroupRequest,
    OffsetCommit => OffsetCommitRequest,
    OffsetFetch => OffsetFetchRequest,
    DescribeGroups => DescribeGroupsRequest,
    DeleteGroups => DeleteGroupsRequest,
    ElectLeaders => ElectLeadersRequest,
    AlterPartitionReassignments => AlterPartitionReassignmentsRequest,
    ListPartitionReassignments => ListPartitionReassignmentsRequest,
    OffsetDelete => OffsetDeleteRequest,
    ListGroups => ListGroupsRequest,
    WriteTxnMarkers => WriteTxnMarkersRequest,
    AddPartitionsToTxn => AddPartitionsToTxnRequest,
    EndTxn => EndTxnRequest,
    AddOffsetsToTxn => AddOffsetsToTxnRequest,
    TxnOffsetCommit => TxnOffsetCommitRequest,
    DescribeTransactions => DescribeTransactionsRequest,
    DescribeProducers => DescribeProducersRequest,
    ListTransactions => ListTransactionsRequest,
    ConsumerGroupDescribe => ConsumerGroupDescribeRequest,
    ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest,
    SaslHandshake => SaslHandshakeRequest,
    SaslAuthenticate => SaslAuthenticateRequest,
    DescribeUserScramCredentials => DescribeUserScramCredentialsRequest,
    AlterUserScramCredentials => AlterUserScramCredentialsRequest,
    DescribeAcls => DescribeAclsRequest,
    CreateAcls => CreateAclsRequest,
    DeleteAcls => DeleteAclsRequest,
}

/// A piece of a response.
#[derive(Debug)]
pub enum Chunk {
    Owned(Bytes),
    /// Stored batch bytes as the engine handed them out, written without a copy.
    Batch(BatchSlice),
}

impl Chunk {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Owned(b) => b,
            Chunk::Batch(b) => b,
        }
    }
}

/// Stand-in bytes for spliced records: never read, only recognised by address. Untouched
/// pages of a zeroed static cost no memory.
static SPLICE_MARKER: [u8; SPLICE_BYTES_MAX] = [0; SPLICE_BYTES_MAX];
/// Largest records field that is spliced instead of copied.
pub const SPLICE_BYTES_MAX: usize = 64 << 20;

/// Bytes standing in for `len` bytes of records that [`encode_response_spliced`] splices.
pub fn splice_marker(len: usize) -> Option<Bytes> {
    (len <= SPLICE_BYTES_MAX).then(|| Bytes::from_static(&SPLICE_MARKER[..len]))
}

/// An encoding buffer that, instead of copying a marker's bytes, notes where it goes.
struct SpliceBuf {
    buf: BytesMut,
    /// Offsets in `buf` where the next spliced records go, in encoding order.
    at: Vec<usize>,
}

// SAFETY: every method delegates to `BytesMut`'s implementation, which upholds the
// `BufMut` contract; `put_slice` either delegates or writes nothing.
unsafe impl BufMut for SpliceBuf {
    fn remaining_mut(&self) -> usize {
        self.buf.remaining_mut()
    }
    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's promise (cnt bytes initialised) is passed on unchanged.
        unsafe { self.buf.advance_mut(cnt) }
    }
    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        self.buf.chunk_mut()
    }
    fn put_slice(&mut self, src: &[u8]) {
        let marker = SPLICE_MARKER.as_ptr_range();
        if !src.is_empty() && marker.contains(&src.as_ptr()) {
            self.at.push(self.buf.len());
        } else {
            self.buf.put_slice(src);
        }
    }
}

impl kafka_protocol::protocol::buf::ByteBufMut for SpliceBuf {
    fn offset(&self) -> usize {
        self.buf.len()
    }
    fn seek(&mut self, offset: usize) {
        self.buf.resize(offset, 0);
    }
    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        &mut self.buf[r]
    }
}

/// Encodes a response whose records fields hold [`splice_marker`]s, putting `splices`
/// (one list per marker, in encoding order) in their place without copying them.
pub fn encode_response_spliced<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
    splices: Vec<Vec<BatchSlice>>,
) -> Result<ResponseFrame, FrameError> {
    let mut out = SpliceBuf {
        buf: BytesMut::with_capacity(1024),
        at: Vec::with_capacity(splices.len()),
    };
    out.buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, R::header_version(version))
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    body.encode(&mut out, version).map_err(|e| {
        FrameError::Encode(format!("{} v{version}: {e}", std::any::type_name::<R>()))
    })?;
    if out.at.len() != splices.len() {
        return Err(FrameError::Encode(format!(
            "{} splice points for {} record sets",
            out.at.len(),
            splices.len()
        )));
    }
    let spliced: usize = splices.iter().flatten().map(|s| s.len()).sum();
    let len = i32::try_from(out.buf.len() - 4 + spliced)
        .map_err(|_| FrameError::Encode("response over 2 GiB".into()))?;
    out.buf[0..4].copy_from_slice(&len.to_be_bytes());
    let mut prefix = out.buf.freeze();
    let mut chunks = Vec::with_capacity(2 * splices.len() + 1);
    let mut taken = 0;
    for (at, slices) in out.at.into_iter().zip(splices) {
        chunks.push(Chunk::Owned(prefix.split_to(at - taken)));
        taken = at;
        chunks.extend(slices.into_iter().map(Chunk::Batch));
    }
    chunks.push(Chunk::Owned(prefix));
    Ok(ResponseFrame { chunks })
}

/// A whole response frame (length prefix included), as chunks to write in order.
#[derive(Debug)]
pub struct ResponseFrame {
    pub chunks: Vec<Chunk>,
}

impl ResponseFrame {
    pub fn bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.as_slice().len()).sum()
    }
}

/// A bare size-prefixed frame (a SASL token after SaslHandshake v0: no response header).
pub fn raw_response(payload: &[u8]) -> ResponseFrame {
    let mut buf = BytesMut::with_capacity(4 + payload.len());
    buf.put_i32(payload.len() as i32);
    buf.put_slice(payload);
    ResponseFrame {
        chunks: vec![Chunk::Owned(buf.freeze())],
    }
}

/// Encodes a response with its header (whose version follows the API and version).
pub fn encode_response<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<ResponseFrame, FrameError> {
    let header_version = R::header_version(version);
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    body.encode(&mut buf, version).map_err(|e| {
        FrameError::Encode(format!("{} v{version}: {e}", std::any::type_name::<R>()))
    })?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(ResponseFrame {
        chunks: vec![Chunk::Owned(buf.freeze())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_bounded() {
        assert!(check_length(-1, 100).is_err());
        assert!(check_length(3, 100).is_err());
        assert!(check_length(101, 100).is_err());
        assert_eq!(check_length(100, 100).ok(), Some(100));
    }

    /// A Fetch v4 frame: header, then replica id, max wait, min bytes, max bytes,
    /// isolation level, and a topics array whose count is `topics`, with nothing after it.
    fn fetch_claiming(topics: i32) -> Bytes {
        let mut f = BytesMut::new();
        f.put_i16(ApiKey::Fetch as i16);
        f.put_i16(4);
        f.put_i32(7); // correlation id
        f.put_i16(4);
        f.put_slice(b"fuzz");
        f.put_i32(-1);
        f.put_i32(500);
        f.put_i32(1);
        f.put_i32(1 << 20);
        f.put_i8(0);
        f.put_i32(topics);
        f.freeze()
    }

    #[test]
    fn a_billion_entry_array_is_an_error_not_an_abort() {
        // Before the kafka-protocol patch this reserved 62 GB and the process aborted.
        let frame = fetch_claiming(1_000_000_000);
        assert!(frame.len() < 64, "{} bytes", frame.len());
        let err = decode_frame(frame).expect_err("a truncated topics array");
        assert!(matches!(err, FrameError::BadBody { .. }), "{err}");
        assert!(decode_frame(fetch_claiming(i32::MAX)).is_err());
        assert!(decode_frame(fetch_claiming(-2)).is_err());
    }

    #[test]
    fn a_huge_compact_count_or_length_is_an_error() {
        // Metadata v9 is flexible: a topics compact array of u32::MAX - 1 entries, then
        // (in a second frame) a client id... a compact string claiming 4 GiB.
        for tail in [
            &[0xff, 0xff, 0xff, 0xff, 0x0f][..],
            &[0x02, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ] {
            let mut f = BytesMut::new();
            f.put_i16(ApiKey::Metadata as i16);
            f.put_i16(9);
            f.put_i32(1);
            f.put_i16(-1); // client id: null
            f.put_u8(0); // header tagged fields
            f.put_slice(tail);
            assert!(decode_frame(f.freeze()).is_err());
        }
    }

    #[test]
    fn bytes_after_the_body_are_ignored_as_kafka_does() {
        // An all-topics Metadata v12 request as librdkafka 2.16 sends it (captured through
        // fuzz/capture/proxy.py): null topics, two booleans, no tagged fields, then 3 bytes.
        let frame: &[u8] = &[
            0x00, 0x03, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x03, 0x00, 0x07, b'r', b'd', b'k', b'a',
            b'f', b'k', b'a', 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        ];
        let req = parse_request(Bytes::from_static(frame)).expect("header");
        let body: kafka_protocol::messages::MetadataRequest =
            decode_body(&req).expect("trailing bytes are ignored");
        assert!(body.topics.is_none(), "all topics");
        assert!(!body.allow_auto_topic_creation);
        let mut f = BytesMut::from(&fetch_claiming(0)[..]);
        f.put_u8(0);
        assert!(decode_frame(f.freeze()).is_ok());
    }

    #[test]
    fn every_served_api_and_version_has_a_sample_that_decodes() {
        let mut n = 0;
        for spec in crate::kafka::handlers::APIS {
            for version in spec.min..=spec.max {
                let f = samples::request_frame(spec.key, version, 1)
                    .unwrap_or_else(|| panic!("no sample for {:?} v{version}", spec.key));
                let r = decode_frame(f);
                assert!(r.is_ok(), "{:?} v{version}: {r:?}", spec.key);
                n += 1;
            }
        }
        assert!(n > 50, "{n} samples");
        assert!(samples::request_frame(ApiKey::Fetch, 99, 1).is_none());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed: u64 = 0x1234_5678;
        for n in 0..2000 {
            let len = (n % 64) + 4;
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                v.push((seed >> 56) as u8);
            }
            // API key small enough to be known half of the time.
            v[0] = 0;
            v[1] %= 80;
            let _ = parse_request(Bytes::from(v));
        }
    }
}
