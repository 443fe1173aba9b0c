//! Raw Kafka protocol calls over a blocking TCP socket, for tests that need exact
//! versions, exact fields or misbehaving clients (the `kafka-protocol` codec, no client
//! library in between).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

/// Guard against a hung read only.
pub const READ_GUARD: Duration = Duration::from_secs(30);

pub fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(READ_GUARD)).unwrap();
    s
}

/// One request frame: size, header (client id `raw-test`), body.
pub fn frame<T: Encodable + HeaderVersion>(
    key: ApiKey,
    version: i16,
    correlation: i32,
    body: &T,
) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str("raw-test")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    buf.to_vec()
}

pub fn read_frame(s: &mut impl Read) -> Option<Bytes> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(Bytes::from(body))
}

/// Sends one request and decodes its answer (over TCP, or TLS as `common::tls` makes it).
pub fn call<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
    s: &mut (impl Read + Write),
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    s.write_all(&frame(key, version, 7, req)).unwrap();
    let mut resp = read_frame(s).expect("a response");
    let header = ResponseHeader::decode(&mut resp, Resp::header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 7);
    Resp::decode(&mut resp, version).unwrap()
}

/// A ConsumerProtocolSubscription v0 of one topic (version, topics, null user data): the
/// metadata a consumer group member joins with.
pub fn subscription(topic: &str) -> Bytes {
    let mut m = BytesMut::new();
    m.put_i16(0);
    m.put_i32(1);
    m.put_i16(topic.len() as i16);
    m.put_slice(topic.as_bytes());
    m.put_i32(-1);
    m.freeze()
}
