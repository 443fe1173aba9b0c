//! Produce requests with one record batch (v2), encoded in place into a reusable buffer.
//!
//! The whole frame (size prefix, request header v1, Produce v3–v8 body, the batch header and
//! its records) is written straight into one `Vec<u8>` that is reset and reused for the next
//! batch, so the hot path copies each message once and allocates nothing. Lengths, counts and
//! the CRC32C are patched when the batch is finished. Compressed batches encode the records
//! first, then compress them through `kafka-protocol`'s codecs (one scratch copy per batch).
//!
//! Layout (offsets from the start of the buffer):
//! `size:i32 | api_key:i16 api_version:i16 correlation_id:i32 client_id:str16 |
//!  transactional_id:str16(-1) acks:i16 timeout_ms:i32 [topics:i32=1 name:str16
//!  [partitions:i32=1 index:i32 records_len:i32 batch]]`.

use anyhow::{bail, Result};
use kafka_protocol::compression::Compressor;

use super::wire::CLIENT_ID;

/// Kafka `Produce` API key.
const PRODUCE_KEY: i16 = 0;
/// Bytes of a v2 batch header before its first record.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Offset of the correlation id in the frame.
const CORRELATION_AT: usize = 8;

/// Compression codec of a batch (the low three bits of its attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn attributes(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// What every request of one producer shares.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    pub topic: String,
    pub api_version: i16,
    pub acks: i16,
    pub timeout_ms: i32,
    pub compression: Compression,
}

/// One Produce request carrying one batch for one partition, built in place.
#[derive(Debug)]
pub struct BatchRequest {
    buf: Vec<u8>,
    /// Scratch for compression (kept to reuse its capacity).
    scratch: Vec<u8>,
    partition: i32,
    records_len_at: usize,
    batch_at: usize,
    count: i32,
    payload_bytes: u64,
    first_timestamp_ms: i64,
    finished: bool,
}

impl BatchRequest {
    /// An empty buffer able to hold `batch_bytes_max` without growing.
    pub fn new(batch_bytes_max: usize) -> Self {
        BatchRequest {
            buf: Vec::with_capacity(batch_bytes_max + 256),
            scratch: Vec::new(),
            partition: 0,
            records_len_at: 0,
            batch_at: 0,
            count: 0,
            payload_bytes: 0,
            first_timestamp_ms: 0,
            finished: false,
        }
    }

    /// Starts a new request for `partition`; `timestamp_ms` becomes the batch's timestamp.
    pub fn reset(&mut self, t: &RequestTemplate, partition: i32, timestamp_ms: i64) {
        let b = &mut self.buf;
        b.clear();
        b.extend_from_slice(&0i32.to_be_bytes()); // size, patched
        b.extend_from_slice(&PRODUCE_KEY.to_be_bytes());
        b.extend_from_slice(&t.api_version.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // correlation id, patched at send
        put_str16(b, CLIENT_ID);
        b.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
        b.extend_from_slice(&t.acks.to_be_bytes());
        b.extend_from_slice(&t.timeout_ms.to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        put_str16(b, &t.topic);
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&partition.to_be_bytes());
        self.records_len_at = b.len();
        b.extend_from_slice(&0i32.to_be_bytes()); // records length, patched
        self.batch_at = b.len();
        b.extend_from_slice(&0i64.to_be_bytes()); // base offset
        b.extend_from_slice(&0i32.to_be_bytes()); // batch length, patched
        b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        b.push(2); // magic
        b.extend_from_slice(&0u32.to_be_bytes()); // crc, patched
        b.extend_from_slice(&t.compression.attributes().to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta, patched
        b.extend_from_slice(&timestamp_ms.to_be_bytes()); // first timestamp
        b.extend_from_slice(&timestamp_ms.to_be_bytes()); // max timestamp
        b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
        b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
        b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
        b.extend_from_slice(&0i32.to_be_bytes()); // record count, patched
        debug_assert_eq!(b.len() - self.batch_at, BATCH_HEADER_BYTES);
        self.partition = partition;
        self.count = 0;
        self.payload_bytes = 0;
        self.first_timestamp_ms = timestamp_ms;
        self.finished = false;
    }

    /// Appends one record. `stamp`, when given, overwrites the value's first 8 bytes
    /// (big-endian), which is how end-to-end latency travels with the message.
    #[inline]
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], stamp: Option<u64>) {
        debug_assert!(!self.finished);
        let offset_delta = self.count as i64;
        let key_len = key.map_or(-1, |k| k.len() as i64);
        let body = 1 // attributes
            + varint_len(0) // timestamp delta
            + varint_len(offset_delta)
            + varint_len(key_len)
            + key.map_or(0, <[u8]>::len)
            + varint_len(value.len() as i64)
            + value.len()
            + 1; // header count
        let b = &mut self.buf;
        b.reserve(body + 5);
        put_varint(b, body as i64);
        b.push(0);
        put_varint(b, 0);
        put_varint(b, offset_delta);
        put_varint(b, key_len);
        if let Some(k) = key {
            b.extend_from_slice(k);
        }
        put_varint(b, value.len() as i64);
        let value_at = b.len();
        b.extend_from_slice(value);
        if let Some(s) = stamp {
            if value.len() >= 8 {
                b[value_at..value_at + 8].copy_from_slice(&s.to_be_bytes());
            }
        }
        b.push(0);
        self.count += 1;
        self.payload_bytes += (value.len() + key.map_or(0, <[u8]>::len)) as u64;
    }

    /// Bytes the request takes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn count(&self) -> i32 {
        self.count
    }

    /// Key and value bytes of the records pushed so far.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// Compresses (if asked), patches lengths, counts and the CRC; returns the frame.
    pub fn finish(&mut self, compression: Compression, correlation_id: i32) -> Result<&[u8]> {
        if self.count == 0 {
            bail!("finishing an empty batch");
        }
        if !self.finished {
            let records_at = self.batch_at + BATCH_HEADER_BYTES;
            if compression != Compression::None {
                self.compress(compression, records_at)?;
            }
            let b = &mut self.buf;
            let batch_len = b.len() - self.batch_at;
            let records_len = i32::try_from(batch_len)?;
            b[self.records_len_at..self.records_len_at + 4]
                .copy_from_slice(&records_len.to_be_bytes());
            let a = self.batch_at;
            b[a + 8..a + 12].copy_from_slice(&((batch_len - 12) as i32).to_be_bytes());
            b[a + 23..a + 27].copy_from_slice(&(self.count - 1).to_be_bytes());
            b[a + 57..a + 61].copy_from_slice(&self.count.to_be_bytes());
            let crc = crc32c::crc32c(&b[a + 21..]);
            b[a + 17..a + 21].copy_from_slice(&crc.to_be_bytes());
            let size = i32::try_from(b.len() - 4)?;
            b[0..4].copy_from_slice(&size.to_be_bytes());
            self.finished = true;
        }
        self.buf[CORRELATION_AT..CORRELATION_AT + 4].copy_from_slice(&correlation_id.to_be_bytes());
        Ok(&self.buf)
    }

    fn compress(&mut self, compression: Compression, records_at: usize) -> Result<()> {
        use kafka_protocol::compression as c;
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.buf[records_at..]);
        self.buf.truncate(records_at);
        let src = &self.scratch;
        let put = |out: &mut bytes::BytesMut| -> Result<()> {
            out.extend_from_slice(src);
            Ok(())
        };
        match compression {
            Compression::None => Ok(()),
            Compression::Gzip => <c::Gzip as Compressor<Vec<u8>>>::compress(&mut self.buf, put),
            Compression::Snappy => <c::Snappy as Compressor<Vec<u8>>>::compress(&mut self.buf, put),
            Compression::Lz4 => <c::Lz4 as Compressor<Vec<u8>>>::compress(&mut self.buf, put),
            Compression::Zstd => <c::Zstd as Compressor<Vec<u8>>>::compress(&mut self.buf, put),
        }
    }

    /// The batch bytes alone (after `finish`), as a broker stores them.
    #[cfg(test)]
    pub fn batch(&self) -> &[u8] {
        &self.buf[self.batch_at..]
    }
}

fn put_str16(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as i16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// Bytes of a zigzag varint.
#[inline]
pub fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

#[inline]
fn put_varint(b: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        b.push((z as u8) | 0x80);
        z >>= 7;
    }
    b.push(z as u8);
}

/// Reads a zigzag varint; `None` past the end or on an over-long encoding.
#[inline]
pub fn get_varint(b: &[u8], at: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    let mut shift = 0;
    loop {
        let byte = *b.get(*at)?;
        *at += 1;
        z |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::records::RecordBatchDecoder;

    fn template(compression: Compression) -> RequestTemplate {
        RequestTemplate {
            topic: "t".into(),
            api_version: 7,
            acks: 1,
            timeout_ms: 1000,
            compression,
        }
    }

    fn build(compression: Compression, n: usize, keyed: bool) -> BatchRequest {
        let t = template(compression);
        let mut r = BatchRequest::new(1 << 16);
        r.reset(&t, 3, 1_700_000_000_000);
        for i in 0..n {
            let key = format!("k{i}");
            let value = vec![i as u8; 10 + i % 7];
            r.push(
                keyed.then_some(key.as_bytes()),
                &value,
                Some(i as u64 + 1000),
            );
        }
        r.finish(compression, 42).unwrap();
        r
    }

    #[test]
    fn batch_decodes_with_kafka_protocol_for_every_codec() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let r = build(c, 50, true);
            let mut bytes = Bytes::copy_from_slice(r.batch());
            let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
            assert_eq!(set.records.len(), 50, "{c:?}");
            for (i, rec) in set.records.iter().enumerate() {
                assert_eq!(rec.offset, i as i64);
                assert_eq!(rec.key.as_deref(), Some(format!("k{i}").as_bytes()));
                let v = rec.value.as_ref().unwrap();
                assert_eq!(v.len(), 10 + i % 7);
                assert_eq!(
                    u64::from_be_bytes(v[..8].try_into().unwrap()),
                    i as u64 + 1000
                );
                assert_eq!(rec.timestamp, 1_700_000_000_000);
            }
        }
    }

    #[test]
    fn batch_passes_the_engine_validator() {
        for c in [Compression::None, Compression::Zstd] {
            let r = build(c, 100, false);
            let h = sluice_engine::batch::validate(r.batch(), 1 << 20).unwrap();
            assert_eq!(h.total_bytes(), r.batch().len());
        }
    }

    #[test]
    fn frame_is_a_produce_request_kafka_protocol_decodes() {
        use kafka_protocol::messages::{ProduceRequest, RequestHeader};
        use kafka_protocol::protocol::Decodable;
        let mut r = build(Compression::None, 7, false);
        let frame = Bytes::copy_from_slice(r.finish(Compression::None, 99).unwrap());
        let size = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(size, frame.len() - 4);
        let mut body = frame.slice(4..);
        let header = RequestHeader::decode(&mut body, 1).unwrap();
        assert_eq!(header.correlation_id, 99);
        assert_eq!(header.request_api_version, 7);
        let req = ProduceRequest::decode(&mut body, 7).unwrap();
        assert_eq!(req.acks, 1);
        let p = &req.topic_data[0].partition_data[0];
        assert_eq!(p.index, 3);
        let mut records = p.records.clone().unwrap();
        assert_eq!(
            RecordBatchDecoder::decode(&mut records)
                .unwrap()
                .records
                .len(),
            7
        );
    }

    #[test]
    fn buffer_is_reused_without_growing() {
        let t = template(Compression::None);
        let mut r = BatchRequest::new(4096);
        let cap = r.buf.capacity();
        for round in 0..3 {
            r.reset(&t, round, 0);
            while r.len() + 120 < 4096 {
                r.push(None, &[7u8; 100], None);
            }
            r.finish(Compression::None, round).unwrap();
            sluice_engine::batch::validate(r.batch(), 1 << 20).unwrap();
        }
        assert_eq!(r.buf.capacity(), cap);
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            300,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            let mut at = 0;
            assert_eq!(get_varint(&b, &mut at), Some(v));
            assert_eq!(at, b.len());
        }
    }
}
