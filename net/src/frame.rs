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
}

/// Smallest valid frame: api key, api version, correlation id, client id length.
pub const HEADER_BYTES_MIN: i32 = 10;

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

/// Decodes a request body of type `T`, which must use all of the bytes.
pub fn decode_body<T: Decodable>(req: &Request) -> Result<T, FrameError> {
    let mut body = req.body.clone();
    T::decode(&mut body, req.version).map_err(|e| FrameError::BadBody {
        api: req.api_key,
        version: req.version,
        reason: e.to_string(),
    })
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
