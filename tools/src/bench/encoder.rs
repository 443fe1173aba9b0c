//! Produce requests carrying one record batch (v2) for each of several partitions, encoded in
//! place into a reusable buffer per connection.
//!
//! A `ProduceFrame` is one request: the size prefix, request header v1, the Produce v3–v8 body
//! for one topic, then one partition entry per batch. A batch is written as a `Section`
//! (`index:i32 records_len:i32 batch`) at the end of a buffer: either straight at the end of
//! the frame (one partition filled at a time, no copy) or in a partition's own buffer that is
//! appended to the frame when the batch closes (keys scatter messages over partitions). Every
//! buffer is reset and reused, so the hot path copies each message once (twice with keys)
//! and allocates nothing. Lengths, counts and the CRC32C are patched when a batch closes;
//! compressed batches encode the records first, then compress them through
//! `kafka-protocol`'s codecs (one scratch copy per batch).
//!
//! Layout (offsets from the start of the frame):
//! `size:i32 | api_key:i16 api_version:i16 correlation_id:i32 client_id:str16 |
//!  transactional_id:str16(-1) acks:i16 timeout_ms:i32 [topics:i32=1 name:str16
//!  [partitions:i32=n (index:i32 records_len:i32 batch)*n]]`.

use anyhow::{bail, Result};
use kafka_protocol::compression::Compressor;

use super::wire::CLIENT_ID;

/// Kafka `Produce` API key.
const PRODUCE_KEY: i16 = 0;
/// Bytes of a v2 batch header before its first record.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes of a partition entry before its batch: index and records length.
pub const SECTION_HEAD_BYTES: usize = 8;
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

/// One partition's batch being written at the end of a buffer. Records may only be pushed
/// while the section is the buffer's tail.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    /// Where the partition index starts in the buffer.
    at: usize,
    count: i32,
    payload_bytes: u64,
}

impl Section {
    /// Starts a batch for `partition` at the end of `b`; `timestamp_ms` becomes its timestamp.
    pub fn open(
        b: &mut Vec<u8>,
        partition: i32,
        compression: Compression,
        timestamp_ms: i64,
    ) -> Section {
        let at = b.len();
        b.extend_from_slice(&partition.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // records length, patched
        b.extend_from_slice(&0i64.to_be_bytes()); // base offset
        b.extend_from_slice(&0i32.to_be_bytes()); // batch length, patched
        b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        b.push(2); // magic
        b.extend_from_slice(&0u32.to_be_bytes()); // crc, patched
        b.extend_from_slice(&compression.attributes().to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta, patched
        b.extend_from_slice(&timestamp_ms.to_be_bytes()); // first timestamp
        b.extend_from_slice(&timestamp_ms.to_be_bytes()); // max timestamp
        b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
        b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
        b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
        b.extend_from_slice(&0i32.to_be_bytes()); // record count, patched
        debug_assert_eq!(b.len() - at, SECTION_HEAD_BYTES + BATCH_HEADER_BYTES);
        Section {
            at,
            count: 0,
            payload_bytes: 0,
        }
    }

    /// Appends one record. `stamp`, when given, overwrites the value's first 8 bytes
    /// (big-endian), which is how end-to-end latency travels with the message.
    #[inline]
    pub fn push(&mut self, b: &mut Vec<u8>, key: Option<&[u8]>, value: &[u8], stamp: Option<u64>) {
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

    pub fn count(&self) -> i32 {
        self.count
    }

    /// Key and value bytes of the records pushed so far.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// Bytes of the section so far (it is the tail of `b`).
    pub fn len(&self, b: &[u8]) -> usize {
        b.len() - self.at
    }

    /// Compresses (if asked) and patches lengths, counts and the CRC. The section must be the
    /// tail of `b`; `scratch` keeps its capacity for the next compressed batch.
    pub fn close(
        &self,
        b: &mut Vec<u8>,
        compression: Compression,
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        if self.count == 0 {
            bail!("closing an empty batch");
        }
        let a = self.at + SECTION_HEAD_BYTES;
        if compression != Compression::None {
            compress(b, a + BATCH_HEADER_BYTES, compression, scratch)?;
        }
        let batch_len = b.len() - a;
        let records_len = i32::try_from(batch_len)?;
        b[self.at + 4..a].copy_from_slice(&records_len.to_be_bytes());
        b[a + 8..a + 12].copy_from_slice(&((batch_len - 12) as i32).to_be_bytes());
        b[a + 23..a + 27].copy_from_slice(&(self.count - 1).to_be_bytes());
        b[a + 57..a + 61].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&b[a + 21..]);
        b[a + 17..a + 21].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }
}

/// Replaces the records from `records_at` to the end of `b` with their compressed form.
fn compress(
    b: &mut Vec<u8>,
    records_at: usize,
    compression: Compression,
    scratch: &mut Vec<u8>,
) -> Result<()> {
    use kafka_protocol::compression as c;
    scratch.clear();
    scratch.extend_from_slice(&b[records_at..]);
    b.truncate(records_at);
    let src = &*scratch;
    let put = |out: &mut bytes::BytesMut| -> Result<()> {
        out.extend_from_slice(src);
        Ok(())
    };
    match compression {
        Compression::None => Ok(()),
        Compression::Gzip => <c::Gzip as Compressor<Vec<u8>>>::compress(b, put),
        Compression::Snappy => <c::Snappy as Compressor<Vec<u8>>>::compress(b, put),
        Compression::Lz4 => <c::Lz4 as Compressor<Vec<u8>>>::compress(b, put),
        Compression::Zstd => <c::Zstd as Compressor<Vec<u8>>>::compress(b, put),
    }
}

/// One Produce request with a batch for each of several partitions, built in place. At most
/// one batch is open (being filled) at the frame's end; closed batches stay in order before it.
#[derive(Debug)]
pub struct ProduceFrame {
    template: RequestTemplate,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    partitions_at: usize,
    /// Closed batches in the frame.
    closed: i32,
    open: Option<Section>,
}

impl ProduceFrame {
    /// An empty request able to hold `request_bytes_max` without growing.
    pub fn new(template: RequestTemplate, request_bytes_max: usize) -> Self {
        let mut f = ProduceFrame {
            template,
            buf: Vec::with_capacity(request_bytes_max + 256),
            scratch: Vec::new(),
            partitions_at: 0,
            closed: 0,
            open: None,
        };
        f.reset();
        f
    }

    /// Empties the request, keeping the buffer's capacity.
    pub fn reset(&mut self) {
        let t = &self.template;
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
        self.partitions_at = b.len();
        b.extend_from_slice(&0i32.to_be_bytes()); // partition count, patched
        self.closed = 0;
        self.open = None;
    }

    /// No batch, open or closed.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.closed == 0 && self.open.is_none()
    }

    /// Closed batches.
    pub fn batches(&self) -> usize {
        self.closed as usize
    }

    /// Bytes of the request so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Starts a batch for `partition` at the end. The previous one must be closed (its
    /// counts belong to the caller).
    pub fn open(&mut self, partition: i32, timestamp_ms: i64) -> Result<()> {
        self.no_open_batch()?;
        let c = self.template.compression;
        self.open = Some(Section::open(&mut self.buf, partition, c, timestamp_ms));
        Ok(())
    }

    /// Appends a record to the open batch.
    #[inline]
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], stamp: Option<u64>) -> Result<()> {
        match &mut self.open {
            Some(s) => {
                s.push(&mut self.buf, key, value, stamp);
                Ok(())
            }
            None => bail!("pushing a record with no batch open"),
        }
    }

    /// Bytes of the open batch (0 without one).
    pub fn open_len(&self) -> usize {
        self.open.map_or(0, |s| s.len(&self.buf))
    }

    /// Closes the open batch, if any; returns its (records, key + value bytes).
    pub fn close(&mut self) -> Result<(u64, u64)> {
        let Some(s) = self.open.take() else {
            return Ok((0, 0));
        };
        s.close(&mut self.buf, self.template.compression, &mut self.scratch)?;
        self.closed += 1;
        Ok((s.count() as u64, s.payload_bytes()))
    }

    /// Appends a closed section written elsewhere (see `Section::close`).
    pub fn append_closed(&mut self, section: &[u8]) -> Result<()> {
        self.no_open_batch()?;
        if section.len() < SECTION_HEAD_BYTES + BATCH_HEADER_BYTES {
            bail!("appending a {}-byte section", section.len());
        }
        self.buf.extend_from_slice(section);
        self.closed += 1;
        Ok(())
    }

    fn no_open_batch(&self) -> Result<()> {
        match self.open {
            Some(s) => bail!("a batch is still open at byte {}", s.at),
            None => Ok(()),
        }
    }

    /// Patches the partition count, the size and the correlation id; returns the frame to
    /// write. Every batch must be closed.
    pub fn finish(&mut self, correlation_id: i32) -> Result<&[u8]> {
        self.no_open_batch()?;
        if self.closed == 0 {
            bail!("finishing a request without batches");
        }
        let b = &mut self.buf;
        let at = self.partitions_at;
        b[at..at + 4].copy_from_slice(&self.closed.to_be_bytes());
        let size = i32::try_from(b.len() - 4)?;
        b[0..4].copy_from_slice(&size.to_be_bytes());
        b[CORRELATION_AT..CORRELATION_AT + 4].copy_from_slice(&correlation_id.to_be_bytes());
        Ok(&self.buf)
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
    use kafka_protocol::messages::{ProduceRequest, RequestHeader};
    use kafka_protocol::protocol::Decodable;
    use kafka_protocol::records::RecordBatchDecoder;

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn template(compression: Compression) -> RequestTemplate {
        RequestTemplate {
            topic: "t".into(),
            api_version: 7,
            acks: 1,
            timeout_ms: 1000,
            compression,
        }
    }

    /// A closed section of `n` records in its own buffer.
    fn section(compression: Compression, partition: i32, n: usize, keyed: bool) -> Vec<u8> {
        let mut b = Vec::new();
        let mut s = Section::open(&mut b, partition, compression, 1_700_000_000_000);
        for i in 0..n {
            let key = format!("k{i}");
            let value = vec![i as u8; 10 + i % 7];
            s.push(
                &mut b,
                keyed.then_some(key.as_bytes()),
                &value,
                Some(i as u64 + 1000),
            );
        }
        s.close(&mut b, compression, &mut Vec::new()).unwrap();
        b
    }

    fn decode_frame(frame: &[u8]) -> (RequestHeader, ProduceRequest) {
        let frame = Bytes::copy_from_slice(frame);
        let size = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(size, frame.len() - 4);
        let mut body = frame.slice(4..);
        let header = RequestHeader::decode(&mut body, 1).unwrap();
        let req = ProduceRequest::decode(&mut body, header.request_api_version).unwrap();
        assert!(body.is_empty(), "{} bytes left over", body.len());
        (header, req)
    }

    #[test]
    fn batch_decodes_with_kafka_protocol_for_every_codec() {
        for c in CODECS {
            let b = section(c, 3, 50, true);
            assert_eq!(i32::from_be_bytes(b[..4].try_into().unwrap()), 3);
            let len = i32::from_be_bytes(b[4..8].try_into().unwrap()) as usize;
            assert_eq!(len, b.len() - SECTION_HEAD_BYTES, "{c:?}");
            let mut bytes = Bytes::copy_from_slice(&b[SECTION_HEAD_BYTES..]);
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
            let b = section(c, 0, 100, false);
            let batch = &b[SECTION_HEAD_BYTES..];
            let h = sluice_engine::batch::validate(batch, 1 << 20).unwrap();
            assert_eq!(h.total_bytes(), batch.len());
        }
    }

    #[test]
    fn one_request_carries_a_batch_per_partition() {
        for c in CODECS {
            let mut f = ProduceFrame::new(template(c), 1 << 16);
            // Two batches written in place, one appended from a partition's own buffer.
            f.open(3, 5).unwrap();
            for i in 0..7u8 {
                f.push(None, &[i; 30], Some(u64::from(i))).unwrap();
            }
            assert!(f.open(5, 5).is_err(), "partition 3's batch is still open");
            assert_eq!(f.close().unwrap(), (7, 7 * 30));
            f.open(5, 5).unwrap();
            f.push(Some(b"k"), &[9; 12], None).unwrap();
            assert!(f.finish(1).is_err(), "partition 5's batch is still open");
            assert_eq!(f.close().unwrap(), (1, 13));
            f.append_closed(&section(c, 7, 20, true)).unwrap();
            assert_eq!(f.batches(), 3);
            let (header, req) = decode_frame(f.finish(99).unwrap());
            assert_eq!(header.correlation_id, 99);
            assert_eq!(header.request_api_version, 7);
            assert_eq!(req.acks, 1);
            assert_eq!(req.topic_data.len(), 1);
            let parts = &req.topic_data[0].partition_data;
            let got: Vec<(i32, usize)> = parts
                .iter()
                .map(|p| {
                    let mut r = p.records.clone().unwrap();
                    sluice_engine::batch::validate(&r, 1 << 20).unwrap();
                    (
                        p.index,
                        RecordBatchDecoder::decode(&mut r).unwrap().records.len(),
                    )
                })
                .collect();
            assert_eq!(got, vec![(3, 7), (5, 1), (7, 20)], "{c:?}");
        }
    }

    #[test]
    fn misuse_is_an_error_not_a_panic() {
        let mut f = ProduceFrame::new(template(Compression::None), 4096);
        assert!(f.finish(1).is_err());
        assert!(f.push(None, b"v", None).is_err());
        assert!(f.append_closed(&[0; 10]).is_err());
        let mut b = Vec::new();
        let s = Section::open(&mut b, 0, Compression::None, 0);
        assert!(s.close(&mut b, Compression::None, &mut Vec::new()).is_err());
    }

    #[test]
    fn buffer_is_reused_without_growing() {
        let mut f = ProduceFrame::new(template(Compression::None), 4096);
        let cap = f.buf.capacity();
        for round in 0..3 {
            f.reset();
            assert!(f.is_empty());
            for p in 0..2 {
                f.open(p, 0).unwrap();
                while f.open_len() + 120 < 1800 {
                    f.push(None, &[7u8; 100], None).unwrap();
                }
                f.close().unwrap();
            }
            let (_, req) = decode_frame(f.finish(round).unwrap());
            assert_eq!(req.topic_data[0].partition_data.len(), 2);
        }
        assert_eq!(f.buf.capacity(), cap);
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
