//! Kafka record batch v2: the header view, validation before append, and a builder that
//! tests and benchmarks use to make real batches (CRC32C included).
//!
//! Layout (big-endian), 61 header bytes then the records:
//! `baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 | crc u32 |
//!  attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//!  producerId i64 | producerEpoch i16 | baseSequence i32 | recordCount i32`.
//! The CRC covers `attributes..end`, so the broker may write `baseOffset` and
//! `partitionLeaderEpoch` without re-encoding or re-checksumming anything.

use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::types::{LeaderEpoch, Offset};

/// Size of the fixed v2 batch header.
pub const HEADER_BYTES: usize = 61;
/// Bytes before `batchLength` counts: baseOffset and batchLength itself.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Offset of the first byte the CRC covers (attributes).
const CRC_START: usize = 21;
/// The only batch format Sluice stores.
pub const MAGIC_V2: i8 = 2;
/// Attribute bits.
const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_FLAG: i16 = 0x08;
const TRANSACTIONAL_FLAG: i16 = 0x10;
const CONTROL_FLAG: i16 = 0x20;

/// The fixed header of a v2 record batch, read and written in place through zerocopy.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BatchHeader {
    pub base_offset: I64,
    pub batch_length: I32,
    pub partition_leader_epoch: I32,
    pub magic: i8,
    pub crc: U32,
    pub attributes: I16,
    pub last_offset_delta: I32,
    pub base_timestamp: I64,
    pub max_timestamp: I64,
    pub producer_id: I64,
    pub producer_epoch: I16,
    pub base_sequence: I32,
    pub record_count: I32,
}

const _: () = assert!(std::mem::size_of::<BatchHeader>() == HEADER_BYTES);

impl BatchHeader {
    /// Total bytes of the batch, header included.
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + self.batch_length.get().max(0) as usize
    }

    pub fn base_offset(&self) -> Offset {
        Offset(self.base_offset.get())
    }

    /// The offset of the batch's last record. Saturates: a header read from a damaged
    /// file or a peer may carry any base offset, and arithmetic on it must not panic.
    pub fn last_offset(&self) -> Offset {
        Offset(
            self.base_offset
                .get()
                .saturating_add(i64::from(self.last_offset_delta.get())),
        )
    }

    /// Offset after the batch: the next batch's base offset (saturating, as above).
    pub fn next_offset(&self) -> Offset {
        Offset(self.last_offset().0.saturating_add(1))
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(self.partition_leader_epoch.get())
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes.get() & COMPRESSION_MASK) as u8
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes.get() & TRANSACTIONAL_FLAG != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes.get() & CONTROL_FLAG != 0
    }
}

/// Why a batch was refused. Nothing is appended when any batch of a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch is truncated: {available} bytes where at least {needed} are needed")]
    Truncated { needed: usize, available: usize },
    #[error("batch length {0} is invalid")]
    BadLength(i32),
    #[error("batch magic {0} is not 2 (only record batch v2 is supported)")]
    BadMagic(i8),
    #[error("batch CRC32C mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    BadCrc { expected: u32, actual: u32 },
    #[error("batch record count {count} does not match last offset delta {last_offset_delta}")]
    BadRecordCount { count: i32, last_offset_delta: i32 },
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge { size: usize, max: usize },
    #[error("an empty records field carries no batch")]
    Empty,
    #[error("record {index} of the batch is malformed")]
    MalformedRecord { index: i32 },
    #[error("batch records cannot be decompressed: {0}")]
    Decompress(crate::codec::DecompressError),
    #[error("batch records cannot be recompressed: {0}")]
    Compress(crate::codec::CompressError),
}

/// Reads the header of the batch at the start of `bytes` without checking it.
pub fn parse_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let (header, _) = BatchHeader::read_from_prefix(bytes).map_err(|_| BatchError::Truncated {
        needed: HEADER_BYTES,
        available: bytes.len(),
    })?;
    Ok(header)
}

/// Checks the structure of the batch at the start of `bytes` (length, magic), without the
/// CRC. Returns its header; `bytes` must hold the whole batch.
pub fn check_framing(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = parse_header(bytes)?;
    let length = header.batch_length.get();
    if length < (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
        return Err(BatchError::BadLength(length));
    }
    if header.magic != MAGIC_V2 {
        return Err(BatchError::BadMagic(header.magic));
    }
    let total = header.total_bytes();
    if total > bytes.len() {
        return Err(BatchError::Truncated {
            needed: total,
            available: bytes.len(),
        });
    }
    Ok(header)
}

/// Full validation of one batch as a producer sent it: framing, CRC32C over
/// attributes..end, record count against the last offset delta, and the size limit.
pub fn validate(bytes: &[u8], max_message_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = check_framing(bytes)?;
    let total = header.total_bytes();
    if total > max_message_bytes {
        return Err(BatchError::TooLarge {
            size: total,
            max: max_message_bytes,
        });
    }
    verify_crc(&header, &bytes[..total])?;
    let count = header.record_count.get();
    let delta = header.last_offset_delta.get();
    if count < 1 || delta != count - 1 {
        return Err(BatchError::BadRecordCount {
            count,
            last_offset_delta: delta,
        });
    }
    Ok(header)
}

/// Verifies the CRC of a whole batch whose header is `header`.
pub fn verify_crc(header: &BatchHeader, batch: &[u8]) -> Result<(), BatchError> {
    let actual = crc32c::crc32c(&batch[CRC_START..]);
    let expected = header.crc.get();
    if actual != expected {
        return Err(BatchError::BadCrc { expected, actual });
    }
    Ok(())
}

/// Writes the broker-assigned base offset and leader epoch into a stored batch header.
/// Neither field is covered by the CRC.
pub fn stamp(batch: &mut [u8], base_offset: Offset, leader_epoch: LeaderEpoch) {
    if let Ok((header, _)) = BatchHeader::mut_from_prefix(batch) {
        header.base_offset.set(base_offset.0);
        header.partition_leader_epoch.set(leader_epoch.0);
    }
}

/// Marks a stored batch as LogAppendTime with the broker's `now_ms` as its max
/// timestamp. Both fields are under the CRC, which is computed again.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    if let Ok((header, _)) = BatchHeader::mut_from_prefix(batch) {
        header
            .attributes
            .set(header.attributes.get() | TIMESTAMP_TYPE_FLAG);
        header.max_timestamp.set(now_ms);
    } else {
        return;
    }
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates the batches laid end to end in `bytes`, checking framing only; stops at the
/// first malformed or truncated batch, which `remainder_error` then describes.
#[derive(Debug)]
pub struct BatchIter<'a> {
    bytes: &'a [u8],
    position: usize,
    error: Option<BatchError>,
}

impl<'a> BatchIter<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        BatchIter {
            bytes,
            position: 0,
            error: None,
        }
    }

    /// Byte position after the last batch returned.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Why iteration stopped before the end of the bytes, if it did.
    pub fn remainder_error(&self) -> Option<&BatchError> {
        self.error.as_ref()
    }
}

impl<'a> Iterator for BatchIter<'a> {
    /// The batch's position, header and bytes.
    type Item = (usize, BatchHeader, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.bytes[self.position..];
        if rest.is_empty() || self.error.is_some() {
            return None;
        }
        match check_framing(rest) {
            Ok(header) => {
                let start = self.position;
                let total = header.total_bytes();
                self.position += total;
                Some((start, header, &rest[..total]))
            }
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

/// One stored record of an uncompressed batch as the cleaner sees it: its stored bytes
/// and deltas, borrowed from the batch bytes.
#[derive(Debug, Clone, Copy)]
pub struct StoredRecord<'a> {
    /// The whole record as stored: length varint, then the body.
    pub bytes: &'a [u8],
    pub offset_delta: i64,
    pub timestamp_delta: i64,
    /// `None`: a keyless record.
    pub key: Option<&'a [u8]>,
    /// `None`: a null value (a tombstone in a compacted log).
    pub value: Option<&'a [u8]>,
}

impl StoredRecord<'_> {
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// Walks the records of an uncompressed batch; yields an error (then stops) at the first
/// malformed record. Never reads past the batch, never trusts the record count for memory.
#[derive(Debug)]
pub struct RecordIter<'a> {
    batch: &'a [u8],
    pos: usize,
    end: usize,
    index: i32,
    count: i32,
}

impl<'a> RecordIter<'a> {
    /// `batch` must be a whole, framed batch whose header is `header` and which is not
    /// compressed (the caller checks [`BatchHeader::compression`]).
    pub fn new(batch: &'a [u8], header: &BatchHeader) -> Self {
        RecordIter {
            batch,
            pos: HEADER_BYTES,
            end: header.total_bytes().min(batch.len()),
            index: 0,
            count: header.record_count.get().max(0),
        }
    }

    /// Walks `count` records laid out in `records` (a decompressed records section).
    pub fn from_records(records: &'a [u8], count: i32) -> Self {
        RecordIter {
            batch: records,
            pos: 0,
            end: records.len(),
            index: 0,
            count: count.max(0),
        }
    }

    fn parse(&self) -> Option<(StoredRecord<'a>, usize)> {
        let rest = self.batch.get(self.pos..self.end)?;
        let (length, n) = get_varlong(rest)?;
        let body_end = n.checked_add(usize::try_from(length).ok()?)?;
        let body = rest.get(n..body_end)?;
        // attributes (1 byte), then the deltas, the key and the value.
        let mut at = 1;
        let (timestamp_delta, used) = get_varlong(body.get(at..)?)?;
        at += used;
        let (offset_delta, used) = get_varlong(body.get(at..)?)?;
        at += used;
        let (key, used) = get_bytes(body.get(at..)?)?;
        at += used;
        let (value, _) = get_bytes(body.get(at..)?)?;
        let record = StoredRecord {
            bytes: &rest[..body_end],
            offset_delta,
            timestamp_delta,
            key,
            value,
        };
        Some((record, body_end))
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<StoredRecord<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        let index = self.index;
        match self.parse() {
            Some((view, used)) => {
                self.pos += used;
                self.index += 1;
                Some(Ok(view))
            }
            None => {
                self.index = self.count;
                Some(Err(BatchError::MalformedRecord { index }))
            }
        }
    }
}

/// The records section of the whole batch `bytes` whose header is `header`: borrowed when
/// uncompressed, else decompressed into at most 64 MiB (a decompression bomb is an error,
/// never an allocation past that). The one public way in to the engine's codecs, for
/// checks at the codec boundary (fuzzing).
pub fn records_section<'a>(
    header: &BatchHeader,
    bytes: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, BatchError> {
    crate::compact::record_section(header, bytes).map_err(BatchError::Decompress)
}

/// Re-encodes a stored batch keeping only `records` (some of its own records, in order,
/// decompressed if it was compressed). Base offset, last offset delta, base timestamp,
/// producer fields and sequence stay, so retained records keep their offsets and the batch
/// its offset range; record count, length, max timestamp (CreateTime: the largest kept)
/// and CRC32C are computed again. The result is uncompressed.
pub fn rebuild(batch: &[u8], header: &BatchHeader, records: &[StoredRecord<'_>]) -> Vec<u8> {
    let body: usize = records.iter().map(|r| r.bytes.len()).sum();
    let mut out = Vec::with_capacity(HEADER_BYTES + body);
    out.extend_from_slice(&batch[..HEADER_BYTES]);
    for r in records {
        out.extend_from_slice(r.bytes);
    }
    let log_append_time = header.attributes.get() & TIMESTAMP_TYPE_FLAG != 0;
    if let Ok((h, _)) = BatchHeader::mut_from_prefix(&mut out) {
        h.batch_length
            .set((HEADER_BYTES + body - LOG_OVERHEAD_BYTES) as i32);
        h.record_count.set(records.len() as i32);
        h.attributes.set(h.attributes.get() & !COMPRESSION_MASK);
        if !log_append_time {
            let base = h.base_timestamp.get();
            let max = records.iter().map(|r| base + r.timestamp_delta).max();
            h.max_timestamp.set(max.unwrap_or(base));
        }
    }
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// The batch `batch` (header `header`) with its records section stored with `codec`
/// instead (0: uncompressed): decompressed (bounded, as [`records_section`]) and
/// compressed again. Every header field but the codec bits, the length and the CRC32C
/// stays, so offsets, timestamps and producer fields are those the producer sent.
pub fn recompress(batch: &[u8], header: &BatchHeader, codec: u8) -> Result<Vec<u8>, BatchError> {
    let section = records_section(header, batch)?;
    let body = crate::codec::compress(codec, &section).map_err(BatchError::Compress)?;
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&batch[..HEADER_BYTES]);
    out.extend_from_slice(&body);
    let length =
        i32::try_from(out.len() - LOG_OVERHEAD_BYTES).map_err(|_| BatchError::TooLarge {
            size: out.len(),
            max: i32::MAX as usize,
        })?;
    if let Ok((h, _)) = BatchHeader::mut_from_prefix(&mut out) {
        h.batch_length.set(length);
        h.attributes
            .set((h.attributes.get() & !COMPRESSION_MASK) | i16::from(codec));
    }
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// One record for [`BatchBuilder`].
#[derive(Debug, Clone, Default)]
pub struct Record<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(&'a str, &'a [u8])],
    pub timestamp_ms: i64,
}

/// Producer fields of a batch (idempotent producers set them; `NONE` otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl ProducerFields {
    pub const NONE: ProducerFields = ProducerFields {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// Encodes uncompressed v2 batches into a reusable buffer, as a producer would.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer: ProducerFields,
    /// Batch attribute bits beyond compression: transactional, control.
    flags: i16,
}

impl BatchBuilder {
    pub fn new(base_timestamp_ms: i64) -> Self {
        let mut buf = Vec::with_capacity(1024);
        buf.resize(HEADER_BYTES, 0);
        BatchBuilder {
            buf,
            count: 0,
            base_timestamp: base_timestamp_ms,
            max_timestamp: base_timestamp_ms,
            producer: ProducerFields::NONE,
            flags: 0,
        }
    }

    pub fn producer(mut self, producer: ProducerFields) -> Self {
        self.producer = producer;
        self
    }

    /// Marks the batch as part of a transaction (its producer fields name the producer).
    pub fn transactional(mut self) -> Self {
        self.flags |= TRANSACTIONAL_FLAG;
        self
    }

    /// Marks the batch as a control batch (a transaction marker; see `txn`).
    pub fn control(mut self) -> Self {
        self.flags |= CONTROL_FLAG;
        self
    }

    pub fn record_count(&self) -> i32 {
        self.count
    }

    /// Appends one record; its offset delta is its index in the batch.
    pub fn push(&mut self, record: &Record<'_>) -> &mut Self {
        let mut body = Vec::with_capacity(32 + record.value.map_or(0, <[u8]>::len));
        body.push(0); // record attributes
        put_varlong(&mut body, record.timestamp_ms - self.base_timestamp);
        put_varlong(&mut body, i64::from(self.count));
        put_bytes(&mut body, record.key);
        put_bytes(&mut body, record.value);
        put_varlong(&mut body, record.headers.len() as i64);
        for (key, value) in record.headers {
            put_bytes(&mut body, Some(key.as_bytes()));
            put_bytes(&mut body, Some(value));
        }
        put_varlong(&mut self.buf, body.len() as i64);
        self.buf.extend_from_slice(&body);
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(record.timestamp_ms);
        self
    }

    /// Finishes the batch: fills the header and computes the CRC.
    pub fn build(&self) -> Vec<u8> {
        let mut out = self.buf.clone();
        let header = BatchHeader {
            base_offset: I64::new(0),
            batch_length: I32::new((out.len() - LOG_OVERHEAD_BYTES) as i32),
            partition_leader_epoch: I32::new(-1),
            magic: MAGIC_V2,
            crc: U32::new(0),
            attributes: I16::new(self.flags),
            last_offset_delta: I32::new((self.count - 1).max(0)),
            base_timestamp: I64::new(self.base_timestamp),
            max_timestamp: I64::new(self.max_timestamp),
            producer_id: I64::new(self.producer.producer_id),
            producer_epoch: I16::new(self.producer.producer_epoch),
            base_sequence: I32::new(self.producer.base_sequence),
            record_count: I32::new(self.count),
        };
        out[..HEADER_BYTES].copy_from_slice(header.as_bytes());
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

/// Builds one batch of `count` records with `value_bytes`-byte values, timestamps starting
/// at `timestamp_ms` and rising by one per record.
pub fn simple_batch(count: usize, value_bytes: usize, timestamp_ms: i64) -> Vec<u8> {
    let value = vec![b'x'; value_bytes];
    let mut builder = BatchBuilder::new(timestamp_ms);
    for i in 0..count {
        builder.push(&Record {
            value: Some(&value),
            timestamp_ms: timestamp_ms + i as i64,
            ..Record::default()
        });
    }
    builder.build()
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// Reads a zigzag varint; returns the value and the bytes it used.
fn get_varlong(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut z: u64 = 0;
    for (i, b) in bytes.iter().enumerate().take(10) {
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((((z >> 1) as i64) ^ -((z & 1) as i64), i + 1));
        }
    }
    None
}

/// One record of an uncompressed batch, borrowed from the batch's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: Offset,
    pub timestamp_ms: i64,
    /// `None` is a null key (not an empty one).
    pub key: Option<&'a [u8]>,
    /// `None` is a null value: a tombstone in a compacted log.
    pub value: Option<&'a [u8]>,
}

/// The records of an uncompressed batch, in order; `None` when the batch is compressed
/// or its records are malformed. Off the hot path only (timestamp lookups, loading
/// internal topics), never on append or fetch.
pub fn records(batch: &[u8]) -> Option<Vec<RecordView<'_>>> {
    let header = parse_header(batch).ok()?;
    if header.compression() != 0 || batch.len() < header.total_bytes() {
        return None;
    }
    RecordIter::new(batch, &header)
        .map(|r| {
            // Deltas are any varlong the producer wrote: add without overflow.
            r.ok().map(|r| RecordView {
                offset: Offset(header.base_offset.get().wrapping_add(r.offset_delta)),
                timestamp_ms: header.base_timestamp.get().wrapping_add(r.timestamp_delta),
                key: r.key,
                value: r.value,
            })
        })
        .collect()
}

/// A varint-length-prefixed byte string (-1: null); returns it and the bytes it used.
fn get_bytes(bytes: &[u8]) -> Option<(Option<&[u8]>, usize)> {
    let (len, n) = get_varlong(bytes)?;
    if len < 0 {
        return Some((None, n));
    }
    let end = n.checked_add(usize::try_from(len).ok()?)?;
    Some((Some(bytes.get(n..end)?), end))
}

/// Timestamps and offsets of the records of an uncompressed batch, in order; `None` when
/// the batch is compressed or its records are malformed.
pub fn record_timestamps(batch: &[u8]) -> Option<Vec<(Offset, i64)>> {
    Some(
        records(batch)?
            .into_iter()
            .map(|r| (r.offset, r.timestamp_ms))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recompressed_batch_is_valid_and_holds_the_same_records() {
        let mut b = BatchBuilder::new(5_000);
        for i in 0..50u32 {
            let v = i.to_string().repeat(20);
            b.push(&Record {
                key: Some(b"k"),
                value: Some(v.as_bytes()),
                timestamp_ms: 5_000 + i64::from(i),
                ..Record::default()
            });
        }
        let plain = b.build();
        let header = validate(&plain, 1 << 20).unwrap();
        for codec in 1..=4u8 {
            let packed = recompress(&plain, &header, codec).unwrap();
            let h = validate(&packed, 1 << 20).expect("valid after recompression");
            assert_eq!(h.compression(), codec);
            assert!(packed.len() < plain.len(), "codec {codec}");
            assert_eq!(h.max_timestamp.get(), header.max_timestamp.get());
            // And back: the same bytes as the producer's uncompressed batch.
            assert_eq!(recompress(&packed, &h, 0).unwrap(), plain, "codec {codec}");
        }
    }

    #[test]
    fn records_are_walked_and_rebuilt_with_their_offsets() {
        let mut b = BatchBuilder::new(1_000);
        for (i, (k, v)) in [
            (Some(&b"a"[..]), Some(&b"1"[..])),
            (None, Some(b"2")),
            (Some(b"c"), None),
        ]
        .into_iter()
        .enumerate()
        {
            b.push(&Record {
                key: k,
                value: v,
                timestamp_ms: 1_000 + 10 * i as i64,
                ..Record::default()
            });
        }
        let mut batch = b.build();
        stamp(&mut batch, Offset(40), LeaderEpoch(1));
        let header = validate(&batch, 1 << 20).expect("valid");
        let records: Vec<StoredRecord> = RecordIter::new(&batch, &header)
            .collect::<Result<_, _>>()
            .expect("well formed");
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].key, Some(&b"a"[..]));
        assert_eq!(records[1].key, None);
        assert!(records[2].is_tombstone());
        assert_eq!(records[2].offset_delta, 2);
        let kept = [records[0], records[2]];
        let rebuilt = rebuild(&batch, &header, &kept);
        let h = check_framing(&rebuilt).expect("framed");
        verify_crc(&h, &rebuilt).expect("crc recomputed");
        assert_eq!(h.record_count.get(), 2);
        assert_eq!(h.last_offset(), Offset(42), "offset range kept");
        assert_eq!(h.max_timestamp.get(), 1_020);
        let offsets: Vec<i64> = RecordIter::new(&rebuilt, &h)
            .map(|r| r.expect("ok").offset_delta)
            .collect();
        assert_eq!(offsets, vec![0, 2]);
        let empty = rebuild(&batch, &header, &[]);
        let h = check_framing(&empty).expect("framed");
        verify_crc(&h, &empty).expect("crc");
        assert_eq!((h.record_count.get(), h.total_bytes()), (0, HEADER_BYTES));
        assert_eq!(h.last_offset(), Offset(42));
    }

    #[test]
    fn malformed_records_are_an_error_not_a_panic() {
        let batch = simple_batch(3, 10, 0);
        let header = validate(&batch, 1 << 20).expect("valid");
        for cut in HEADER_BYTES..batch.len() {
            let mut h = header;
            h.batch_length.set((cut - LOG_OVERHEAD_BYTES) as i32);
            let got: Vec<_> = RecordIter::new(&batch[..cut], &h).collect();
            assert!(got.iter().any(|r| r.is_err()), "cut at {cut}");
        }
    }

    #[test]
    fn built_batch_validates() {
        let batch = simple_batch(10, 100, 1_000);
        let header = validate(&batch, 1 << 20).expect("valid");
        assert_eq!(header.record_count.get(), 10);
        assert_eq!(header.last_offset_delta.get(), 9);
        assert_eq!(header.max_timestamp.get(), 1_009);
        assert_eq!(header.total_bytes(), batch.len());
    }

    #[test]
    fn every_single_byte_flip_after_crc_is_caught() {
        let batch = simple_batch(3, 20, 5);
        for i in CRC_START..batch.len() {
            let mut bad = batch.clone();
            bad[i] ^= 0x40;
            assert!(validate(&bad, 1 << 20).is_err(), "flip at {i} not caught");
        }
    }

    #[test]
    fn stamping_offset_and_epoch_keeps_crc_valid() {
        let mut batch = simple_batch(2, 8, 0);
        stamp(&mut batch, Offset(12345), LeaderEpoch(7));
        let header = validate(&batch, 1 << 20).expect("valid after stamp");
        assert_eq!(header.base_offset(), Offset(12345));
        assert_eq!(header.last_offset(), Offset(12346));
        assert_eq!(header.leader_epoch(), LeaderEpoch(7));
    }

    #[test]
    fn log_append_time_rewrites_max_timestamp_and_crc() {
        let mut batch = simple_batch(3, 10, 100);
        set_log_append_time(&mut batch, 9_999);
        let header = validate(&batch, 1 << 20).expect("CRC recomputed");
        assert_eq!(header.max_timestamp.get(), 9_999);
        assert_eq!(
            header.attributes.get() & TIMESTAMP_TYPE_FLAG,
            TIMESTAMP_TYPE_FLAG
        );
    }

    #[test]
    fn structural_errors_are_typed() {
        let batch = simple_batch(1, 10, 0);
        assert!(matches!(
            validate(&batch[..30], 1 << 20),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            validate(&batch[..batch.len() - 1], 1 << 20),
            Err(BatchError::Truncated { .. })
        ));
        let mut bad = batch.clone();
        bad[16] = 1;
        assert_eq!(validate(&bad, 1 << 20).err(), Some(BatchError::BadMagic(1)));
        let mut bad = batch.clone();
        bad[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(
            validate(&bad, 1 << 20).err(),
            Some(BatchError::BadLength(-5))
        );
        assert!(matches!(
            validate(&batch, 20),
            Err(BatchError::TooLarge { .. })
        ));
    }

    #[test]
    fn offsets_and_deltas_near_the_ends_of_i64_do_not_overflow() {
        let mut b = simple_batch(3, 4, 1_000);
        stamp(&mut b, Offset(i64::MAX - 1), LeaderEpoch(0));
        let header = parse_header(&b).unwrap();
        assert_eq!(header.last_offset(), Offset(i64::MAX));
        assert_eq!(header.next_offset(), Offset(i64::MAX));
        // Records whose offsets run past i64::MAX wrap rather than panic (a damaged file or
        // a producer's deltas can say anything; nothing here trusts them for memory).
        let offsets: Vec<i64> = records(&b).unwrap().iter().map(|r| r.offset.0).collect();
        assert_eq!(offsets, vec![i64::MAX - 1, i64::MAX, i64::MIN]);
    }

    #[test]
    fn record_count_must_match_offset_delta() {
        let mut batch = simple_batch(4, 10, 0);
        batch[57..61].copy_from_slice(&3i32.to_be_bytes());
        let crc = crc32c::crc32c(&batch[CRC_START..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&batch, 1 << 20),
            Err(BatchError::BadRecordCount { .. })
        ));
    }

    #[test]
    fn records_are_decoded_with_keys_and_null_values() {
        let mut b = BatchBuilder::new(500);
        b.push(&Record {
            key: Some(b"k1"),
            value: Some(b"v1"),
            timestamp_ms: 500,
            ..Record::default()
        });
        b.push(&Record {
            key: Some(b"k2"),
            value: None,
            headers: &[("h", b"x")],
            timestamp_ms: 507,
        });
        let mut batch = b.build();
        stamp(&mut batch, Offset(40), LeaderEpoch(0));
        let got = records(&batch).expect("uncompressed");
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].offset, got[0].key, got[0].value),
            (Offset(40), Some(&b"k1"[..]), Some(&b"v1"[..]))
        );
        assert_eq!(
            (got[1].offset, got[1].timestamp_ms, got[1].value),
            (Offset(41), 507, None)
        );
    }

    #[test]
    fn record_timestamps_are_decoded() {
        let mut batch = simple_batch(3, 10, 100);
        stamp(&mut batch, Offset(50), LeaderEpoch(0));
        assert_eq!(
            record_timestamps(&batch),
            Some(vec![
                (Offset(50), 100),
                (Offset(51), 101),
                (Offset(52), 102)
            ])
        );
    }

    #[test]
    fn iter_walks_batches_and_reports_the_tail() {
        let mut bytes = simple_batch(2, 10, 0);
        bytes.extend(simple_batch(3, 10, 0));
        let whole = bytes.len();
        bytes.extend_from_slice(&[0, 0, 0]);
        let mut iter = BatchIter::new(&bytes);
        assert_eq!(iter.by_ref().count(), 2);
        assert_eq!(iter.position(), whole);
        assert!(iter.remainder_error().is_some());
    }

    proptest::proptest! {
        #[test]
        fn varlong_round_trips(v in proptest::num::i64::ANY) {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            proptest::prop_assert_eq!(get_varlong(&out), Some((v, out.len())));
        }

        #[test]
        fn validate_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = validate(&bytes, 1 << 20);
            let _ = BatchIter::new(&bytes).count();
            let _ = record_timestamps(&bytes);
            if let Ok(h) = parse_header(&bytes) {
                let _ = RecordIter::new(&bytes, &h).count();
            }
        }
    }
}
