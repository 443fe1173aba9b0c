//! A minimal Kafka client connection for follower fetchers, on glommio TCP: requests
//! encoded with `kafka-protocol` (request header v1, or v2 for flexible versions), answers
//! read as size-prefixed frames. With `ClientConfig::tls` (`[cluster_tls]`) the
//! connection is mutual TLS, presenting the node certificate (see `sluice_control::tls`).
//!
//! Invariants: one request in flight per connection; every wait (connect, write, read) is
//! bounded by a timeout; an answer larger than `frame_bytes_max` is refused before it is
//! read; an answer whose correlation id is not the request's is an error. After any error
//! the connection is unusable (its stream position is unknown) and is dropped.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use sluice_control::tls::{ClusterStream, ClusterTls};

/// Why a call failed; the connection is dropped after any of them.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("{what} timed out after {ms} ms")]
    Timeout { what: &'static str, ms: u64 },
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("answer of {size} bytes is over the {max} byte limit")]
    TooLarge { size: i64, max: usize },
    #[error("encoding the request: {0}")]
    Encode(String),
    #[error("decoding the answer: {0}")]
    Decode(String),
    #[error("answer carries correlation id {got}, the request {expected}")]
    Correlation { expected: i32, got: i32 },
    /// The caller gave up on the call (shutting down).
    #[error("call abandoned")]
    Cancelled,
}

/// Bounds of one connection.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub client_id: String,
    pub connect_timeout_ms: u64,
    /// Longest wait for a whole answer after the request is sent.
    pub request_timeout_ms: u64,
    /// Largest answer frame accepted.
    pub frame_bytes_max: usize,
    /// `[cluster_tls]`: connect with mutual TLS; `None`: plain TCP.
    pub tls: Option<Arc<ClusterTls>>,
}

/// One connection to a broker's Kafka listener.
#[derive(Debug)]
pub struct KafkaConn {
    stream: ClusterStream,
    config: ClientConfig,
    correlation: i32,
    scratch: Vec<u8>,
}

impl KafkaConn {
    /// Connects to `host:port` within the connect timeout (and with TLS, its handshake
    /// within `sluice_control::tls::TLS_HANDSHAKE_MS_MAX`).
    pub async fn connect(host: &str, port: u16, config: ClientConfig) -> Result<Self, ClientError> {
        let timeout = Duration::from_millis(config.connect_timeout_ms.max(1));
        let stream = ClusterStream::connect(config.tls.as_deref(), host, port, timeout)
            .await
            .map_err(|e| ClientError::Connect {
                addr: format!("{host}:{port}"),
                reason: e.to_string(),
            })?;
        Ok(KafkaConn {
            stream,
            config,
            correlation: 0,
            scratch: Vec::new(),
        })
    }

    /// Sends `body` at `version` and waits (bounded) for its answer.
    pub async fn call<R: Request>(
        &mut self,
        body: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        self.correlation = self.correlation.wrapping_add(1);
        let correlation = self.correlation;
        encode_request(
            &mut self.scratch,
            &self.config.client_id,
            version,
            correlation,
            body,
        )?;
        let ms = self.config.request_timeout_ms.max(1);
        let frame = with_timeout(ms, "request", async {
            self.stream.write_all(&self.scratch).await?;
            self.stream.flush().await?;
            read_frame(&mut self.stream, self.config.frame_bytes_max).await
        })
        .await?;
        decode_response::<R::Response>(frame, version, correlation)
    }
}

/// Runs `op`, or fails with [`ClientError::Timeout`] after `ms`.
async fn with_timeout<T>(
    ms: u64,
    what: &'static str,
    op: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    futures_lite::future::or(op, async {
        glommio::timer::sleep(Duration::from_millis(ms)).await;
        Err(ClientError::Timeout { what, ms })
    })
    .await
}

/// Encodes one request frame (size, header, body) into `buf`, replacing its contents.
pub fn encode_request<R: Request>(
    buf: &mut Vec<u8>,
    client_id: &str,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<(), ClientError> {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    header
        .encode(buf, R::header_version(version))
        .map_err(|e| ClientError::Encode(e.to_string()))?;
    body.encode(buf, version)
        .map_err(|e| ClientError::Encode(e.to_string()))?;
    let size = i32::try_from(buf.len() - 4)
        .map_err(|_| ClientError::Encode(format!("request of {} bytes", buf.len())))?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Decodes an answer frame (header, body), checking its correlation id.
pub fn decode_response<R: Decodable + HeaderVersion>(
    mut frame: Bytes,
    version: i16,
    expected: i32,
) -> Result<R, ClientError> {
    let header = ResponseHeader::decode(&mut frame, R::header_version(version))
        .map_err(|e| ClientError::Decode(e.to_string()))?;
    if header.correlation_id != expected {
        return Err(ClientError::Correlation {
            expected,
            got: header.correlation_id,
        });
    }
    R::decode(&mut frame, version).map_err(|e| ClientError::Decode(e.to_string()))
}

/// Reads one size-prefixed frame, refusing sizes outside `[0, max]` before reading.
async fn read_frame(stream: &mut ClusterStream, max: usize) -> Result<Bytes, ClientError> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).await?;
    let size = i32::from_be_bytes(size);
    let len = usize::try_from(size)
        .ok()
        .filter(|n| *n <= max)
        .ok_or(ClientError::TooLarge {
            size: i64::from(size),
            max,
        })?;
    let mut buf = BytesMut::zeroed(len);
    stream.read_exact(&mut buf).await?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsResponse, FetchRequest, FetchResponse};

    #[test]
    fn request_frames_carry_size_header_and_body() {
        let mut buf = vec![9; 3];
        let req = FetchRequest::default().with_max_wait_ms(500);
        encode_request(&mut buf, "sluice-follower-1", 12, 77, &req).unwrap();
        let size = i32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(size, buf.len() - 4);
        let mut body = Bytes::copy_from_slice(&buf[4..]);
        let header = RequestHeader::decode(&mut body, FetchRequest::header_version(12)).unwrap();
        assert_eq!((header.request_api_key, header.correlation_id), (1, 77));
        assert_eq!(header.client_id.as_deref(), Some("sluice-follower-1"));
        let decoded = FetchRequest::decode(&mut body, 12).unwrap();
        assert_eq!(decoded.max_wait_ms, 500);
    }

    fn answer<R: Encodable + HeaderVersion>(correlation: i32, version: i16, body: &R) -> Bytes {
        let mut out = Vec::new();
        ResponseHeader::default()
            .with_correlation_id(correlation)
            .encode(&mut out, R::header_version(version))
            .unwrap();
        body.encode(&mut out, version).unwrap();
        Bytes::from(out)
    }

    /// A listener on 127.0.0.1 whose one connection gets `answer` (after the request is
    /// read) and is then held open until the client is done.
    fn fake_broker(answer: Vec<u8>) -> (u16, std::thread::JoinHandle<()>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut size = [0u8; 4];
            s.read_exact(&mut size).unwrap();
            let mut request = vec![0u8; i32::from_be_bytes(size) as usize];
            s.read_exact(&mut request).unwrap();
            s.write_all(&answer).unwrap();
            // Hold the connection until the client closes it.
            let _ = s.read(&mut [0u8; 1]);
        });
        (port, thread)
    }

    fn config(request_timeout_ms: u64) -> ClientConfig {
        ClientConfig {
            client_id: "test".into(),
            connect_timeout_ms: 5_000,
            request_timeout_ms,
            frame_bytes_max: 1 << 20,
            tls: None,
        }
    }

    /// Calls a fake broker that answers `answer`; the call's outcome.
    fn call_fake(answer: Vec<u8>, request_timeout_ms: u64) -> Result<FetchResponse, ClientError> {
        let (port, broker) = fake_broker(answer);
        let result = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let mut conn = KafkaConn::connect("127.0.0.1", port, config(request_timeout_ms))
                    .await
                    .expect("connect");
                conn.call(&FetchRequest::default(), 12).await
            })
            .unwrap()
            .join()
            .unwrap();
        broker.join().unwrap();
        result
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_real_socket_answer_is_decoded() {
        let body = answer(1, 12, &FetchResponse::default().with_session_id(9));
        let resp = call_fake(framed(&body), 30_000).expect("answered");
        assert_eq!(resp.session_id, 9);
    }

    #[test]
    fn oversized_negative_and_foreign_answers_are_refused() {
        let huge = (2_000_000_000i32).to_be_bytes().to_vec();
        assert!(matches!(
            call_fake(huge, 30_000),
            Err(ClientError::TooLarge {
                size: 2_000_000_000,
                ..
            })
        ));
        let negative = (-4i32).to_be_bytes().to_vec();
        assert!(matches!(
            call_fake(negative, 30_000),
            Err(ClientError::TooLarge { size: -4, .. })
        ));
        let other = answer(42, 12, &FetchResponse::default());
        assert!(matches!(
            call_fake(framed(&other), 30_000),
            Err(ClientError::Correlation {
                expected: 1,
                got: 42
            })
        ));
    }

    #[test]
    fn a_silent_broker_times_out_and_a_closed_port_fails_to_connect() {
        // Half an answer, then silence: the call gives up at its timeout.
        let partial = 100i32.to_be_bytes().to_vec();
        assert!(matches!(
            call_fake(partial, 200),
            Err(ClientError::Timeout {
                what: "request",
                ms: 200
            })
        ));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let refused = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                KafkaConn::connect("127.0.0.1", port, config(1_000))
                    .await
                    .map(|_| ())
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(
            matches!(refused, Err(ClientError::Connect { .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn answers_are_checked_for_their_correlation_id() {
        let resp = FetchResponse::default().with_throttle_time_ms(3);
        let ok: FetchResponse = decode_response(answer(5, 12, &resp), 12, 5).unwrap();
        assert_eq!(ok.throttle_time_ms, 3);
        assert!(matches!(
            decode_response::<FetchResponse>(answer(6, 12, &resp), 12, 5),
            Err(ClientError::Correlation {
                expected: 5,
                got: 6
            })
        ));
        // Garbage after a good header is a decode error, never a panic.
        let mut bad = answer(5, 3, &ApiVersionsResponse::default()).to_vec();
        bad.truncate(6);
        assert!(matches!(
            decode_response::<ApiVersionsResponse>(Bytes::from(bad), 3, 5),
            Err(ClientError::Decode(_))
        ));
    }
}
