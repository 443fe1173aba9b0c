//! Kafka framing shared by `sluice bench` and `sluice group`: request encoding through
//! `kafka-protocol`, version negotiation from ApiVersions, a blocking client for control-plane
//! calls (metadata, topics, offsets, groups) and async frame reads for the data plane
//! (glommio sockets).
//!
//! Invariants: a response frame is never longer than [`FRAME_BYTES_MAX`]; a request goes out
//! at the highest version both sides speak ([`our_range`] ∩ the broker's ApiVersions), so
//! callers that build version-dependent bodies ask [`AdminConn::version`] first.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// The client id on the bench's requests.
pub const CLIENT_ID: &str = "sluice-bench";
/// How long a blocking connect may take.
const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// How long a blocking call waits for its answer (JoinGroup may wait for a rebalance).
const CALL_TIMEOUT_MS: u64 = 30_000;
/// Largest response frame accepted (a fetch answer can be large).
pub const FRAME_BYTES_MAX: usize = 256 << 20;

/// Versions this client speaks, per API: (min, max).
pub fn our_range(key: ApiKey) -> (i16, i16) {
    match key {
        ApiKey::Produce => (3, 8),
        ApiKey::Fetch => (4, 12),
        ApiKey::Metadata => (1, 12),
        ApiKey::ListOffsets => (1, 7),
        ApiKey::CreateTopics => (2, 7),
        // `sluice topic`'s admin calls.
        ApiKey::DeleteTopics => (1, 6),
        ApiKey::CreatePartitions => (0, 3),
        ApiKey::DescribeConfigs => (1, 4),
        ApiKey::IncrementalAlterConfigs => (0, 1),
        ApiKey::ElectLeaders => (1, 2),
        ApiKey::ApiVersions => (0, 3),
        // Groups: up to the versions whose bodies the callers build (FindCoordinator v4
        // batches keys, OffsetFetch v8 batches groups, LeaveGroup v3 lists members).
        ApiKey::FindCoordinator => (0, 4),
        ApiKey::JoinGroup => (1, 7),
        ApiKey::SyncGroup => (0, 5),
        ApiKey::Heartbeat => (0, 4),
        ApiKey::LeaveGroup => (0, 5),
        ApiKey::OffsetCommit => (2, 8),
        ApiKey::OffsetFetch => (2, 7),
        ApiKey::ListGroups => (0, 5),
        ApiKey::DescribeGroups => (0, 5),
        ApiKey::DeleteGroups => (0, 2),
        ApiKey::OffsetDelete => (0, 0),
        ApiKey::ConsumerGroupDescribe => (0, 1),
        // `sluice acl`.
        ApiKey::CreateAcls | ApiKey::DescribeAcls | ApiKey::DeleteAcls => (1, 3),
        _ => (0, 0),
    }
}

/// The versions a broker said it supports.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    ranges: HashMap<i16, (i16, i16)>,
}

impl Versions {
    /// Highest version both sides speak.
    pub fn pick(&self, key: ApiKey) -> Result<i16> {
        let (lo, hi) = our_range(key);
        let (blo, bhi) = *self.ranges.get(&(key as i16)).ok_or_else(|| {
            anyhow!(
                "the broker does not support {key:?} (API key {})",
                key as i16
            )
        })?;
        let v = hi.min(bhi);
        if v < lo.max(blo) {
            bail!("no common version for {key:?}: we speak {lo}..={hi}, the broker {blo}..={bhi}");
        }
        Ok(v)
    }
}

/// Encodes one request frame (size, header, body) onto `buf`, as the bench.
pub fn encode_request<R: Request>(
    buf: &mut Vec<u8>,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<()> {
    encode_request_as(buf, CLIENT_ID, version, correlation_id, body)
}

/// Encodes one request frame (size, header, body) onto `buf` with this client id.
pub fn encode_request_as<R: Request>(
    buf: &mut Vec<u8>,
    client_id: &'static str,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<()> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(client_id)));
    header.encode(buf, R::header_version(version))?;
    body.encode(buf, version)?;
    let size = i32::try_from(buf.len() - start - 4)?;
    buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Splits a response frame into its correlation id and the decoded body.
pub fn decode_response<R: Decodable + HeaderVersion>(
    mut frame: Bytes,
    version: i16,
) -> Result<(i32, R)> {
    let header = ResponseHeader::decode(&mut frame, R::header_version(version))?;
    let body = R::decode(&mut frame, version)?;
    Ok((header.correlation_id, body))
}

/// Correlation id of a response frame without decoding the rest.
pub fn correlation_of(frame: &[u8]) -> Result<i32> {
    let b: [u8; 4] = frame
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| anyhow!("short response"))?;
    Ok(i32::from_be_bytes(b))
}

/// Reads one size-prefixed frame from an async stream.
pub async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Bytes> {
    let mut size = [0u8; 4];
    stream
        .read_exact(&mut size)
        .await
        .context("reading a response size")?;
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size).map_err(|_| anyhow!("negative frame size {size}"))?;
    if size > FRAME_BYTES_MAX {
        bail!("response of {size} bytes is over the {FRAME_BYTES_MAX} limit");
    }
    let mut buf = BytesMut::zeroed(size);
    stream
        .read_exact(&mut buf)
        .await
        .context("reading a response")?;
    Ok(buf.freeze())
}

/// `read_frame`, or `None` when nothing complete arrived within `wait`.
pub async fn read_frame_within<S: AsyncRead + Unpin>(
    stream: &mut S,
    wait: std::time::Duration,
) -> Option<Result<Bytes>> {
    futures_lite::future::or(async { Some(read_frame(stream).await) }, async {
        glommio::timer::sleep(wait).await;
        None
    })
    .await
}

/// A blocking connection for control-plane calls.
#[derive(Debug)]
pub struct AdminConn {
    stream: super::tls::SyncStream,
    client_id: &'static str,
    correlation: i32,
    pub versions: Versions,
    scratch: Vec<u8>,
}

impl AdminConn {
    pub fn connect(addr: &str) -> Result<AdminConn> {
        AdminConn::connect_as(addr, CLIENT_ID)
    }

    /// Connects (bounded by a timeout), then asks for the broker's API versions.
    pub fn connect_as(addr: &str, client_id: &'static str) -> Result<AdminConn> {
        let stream = connect_timeout(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_millis(CALL_TIMEOUT_MS)))?;
        let stream = super::tls::wrap(stream, addr)?;
        let mut conn = AdminConn {
            stream,
            client_id,
            correlation: 0,
            versions: Versions::default(),
            scratch: Vec::new(),
        };
        // ApiVersions v0 is what every broker answers, whatever it supports.
        let resp: ApiVersionsResponse = conn.call(&ApiVersionsRequest::default(), 0)?;
        if resp.error_code != 0 {
            bail!("ApiVersions failed with error {}", resp.error_code);
        }
        conn.versions.ranges = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    /// Sends `req` at the highest common version.
    pub fn send<R: Request>(&mut self, req: &R) -> Result<R::Response> {
        let key = ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown api key {}", R::KEY))?;
        let version = self.versions.pick(key)?;
        self.call(req, version)
    }

    /// The version `send` would use for `key` (for bodies whose fields depend on it).
    pub fn version(&self, key: ApiKey) -> Result<i16> {
        self.versions.pick(key)
    }

    pub fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        self.correlation += 1;
        self.scratch.clear();
        encode_request_as(
            &mut self.scratch,
            self.client_id,
            version,
            self.correlation,
            req,
        )?;
        self.stream.write_all(&self.scratch)?;
        self.stream.flush()?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = usize::try_from(i32::from_be_bytes(size))
            .map_err(|_| anyhow!("negative frame size"))?;
        if size > FRAME_BYTES_MAX {
            bail!("response of {size} bytes is too large");
        }
        let mut buf = vec![0u8; size];
        self.stream.read_exact(&mut buf)?;
        let (corr, resp) = decode_response::<R::Response>(Bytes::from(buf), version)?;
        if corr != self.correlation {
            bail!("correlation id {corr}, expected {}", self.correlation);
        }
        Ok(resp)
    }
}

/// `TcpStream::connect` with [`CONNECT_TIMEOUT_MS`] per resolved address.
fn connect_timeout(addr: &str) -> Result<TcpStream> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr} (expected HOST:PORT)"))?
        .collect();
    let mut last = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, Duration::from_millis(CONNECT_TIMEOUT_MS)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(anyhow!(e).context(format!("connecting to {addr}"))),
        None => bail!("{addr} resolves to no address"),
    }
}

/// A Kafka error code as its name and number, e.g. `GroupIdNotFound (69)`.
pub fn error_name(code: i16) -> String {
    match kafka_protocol::ResponseError::try_from_code(code) {
        Some(e) => format!("{e} ({code})"),
        None => "None (0)".to_string(),
    }
}
