//! Framing: a 4-byte big-endian length, then a request header and body. Responses are
//! written as a list of chunks so that stored batch bytes can follow an encoded prefix
//! without being copied into it.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
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
}

impl Chunk {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Owned(b) => b,
        }
    }
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
