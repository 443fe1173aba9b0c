//! The records of `__transaction_state`, in Kafka's own formats (its `TransactionLogKey` and
//! `TransactionLogValue` v0), so Kafka's tools can decode the topic:
//!
//! - key: `version: i16 = 0, transactional_id: string`;
//! - value v0: `producer_id: i64, producer_epoch: i16, transaction_timeout_ms: i32,
//!   transaction_status: i8, transaction_partitions: [topic: string, partition_ids:
//!   [i32]], transaction_last_update_timestamp_ms: i64, transaction_start_timestamp_ms:
//!   i64`.
//!
//! A null value is a tombstone (the transactional id expired). Strings are an i16 length
//! and UTF-8, arrays an i32 count. Decoding never panics and never trusts a count beyond
//! the bytes it has.

use std::collections::BTreeSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::state::{TxnMeta, TxnState};

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

pub fn key(transactional_id: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + transactional_id.len());
    b.put_i16(KEY_VERSION);
    put_str(&mut b, transactional_id);
    b.freeze()
}

pub fn value(m: &TxnMeta) -> Bytes {
    let mut b = BytesMut::with_capacity(48 + m.partitions.len() * 16);
    b.put_i16(VALUE_VERSION);
    b.put_i64(m.producer_id);
    b.put_i16(m.producer_epoch);
    b.put_i32(m.timeout_ms);
    b.put_i8(m.state.code());
    // Kafka writes a null array for a transaction with no partitions.
    if m.partitions.is_empty() {
        b.put_i32(-1);
    } else {
        let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
        for (topic, partition) in &m.partitions {
            match topics.last_mut() {
                Some((t, ps)) if t == topic => ps.push(*partition),
                _ => topics.push((topic, vec![*partition])),
            }
        }
        b.put_i32(topics.len() as i32);
        for (topic, ps) in topics {
            put_str(&mut b, topic);
            b.put_i32(ps.len() as i32);
            ps.iter().for_each(|p| b.put_i32(*p));
        }
    }
    b.put_i64(m.last_update_ms);
    b.put_i64(m.start_ms);
    b.freeze()
}

/// The transactional id of a key; `None` for a key this broker does not know.
pub fn decode_key(mut k: &[u8]) -> Option<String> {
    if get_i16(&mut k)? != KEY_VERSION {
        return None;
    }
    get_str(&mut k)
}

/// A stored transaction; `None` for a value version this broker does not read or
/// malformed bytes (the loader skips it with a log line).
pub fn decode_value(mut v: &[u8]) -> Option<TxnMeta> {
    if get_i16(&mut v)? != VALUE_VERSION {
        return None;
    }
    let producer_id = get_i64(&mut v)?;
    let producer_epoch = get_i16(&mut v)?;
    let timeout_ms = get_i32(&mut v)?;
    let state = TxnState::from_code(get_i8(&mut v)?)?;
    let mut partitions = BTreeSet::new();
    let topics = get_i32(&mut v)?;
    for _ in 0..topics.max(0) {
        let topic = get_str(&mut v)?;
        let count = get_i32(&mut v)?;
        for _ in 0..count.max(0) {
            partitions.insert((topic.clone(), get_i32(&mut v)?));
        }
    }
    let last_update_ms = get_i64(&mut v)?;
    let start_ms = get_i64(&mut v)?;
    Some(TxnMeta {
        producer_id,
        producer_epoch,
        last_producer_epoch: -1,
        timeout_ms,
        state,
        partitions,
        start_ms,
        last_update_ms,
    })
}

fn put_str(b: &mut BytesMut, s: &str) {
    // Transactional ids and topic names come from i16-length protocol strings.
    let n = s.len().min(i16::MAX as usize);
    b.put_i16(n as i16);
    b.put_slice(&s.as_bytes()[..n]);
}

fn get_i8(b: &mut &[u8]) -> Option<i8> {
    (b.remaining() >= 1).then(|| b.get_i8())
}

fn get_i16(b: &mut &[u8]) -> Option<i16> {
    (b.remaining() >= 2).then(|| b.get_i16())
}

fn get_i32(b: &mut &[u8]) -> Option<i32> {
    (b.remaining() >= 4).then(|| b.get_i32())
}

fn get_i64(b: &mut &[u8]) -> Option<i64> {
    (b.remaining() >= 8).then(|| b.get_i64())
}

fn get_str(b: &mut &[u8]) -> Option<String> {
    let n = usize::try_from(get_i16(b)?).ok()?;
    if b.remaining() < n {
        return None;
    }
    let s = String::from_utf8(b[..n].to_vec()).ok()?;
    b.advance(n);
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(partitions: &[(&str, i32)]) -> TxnMeta {
        TxnMeta {
            producer_id: 4_294_967_296,
            producer_epoch: 7,
            last_producer_epoch: -1,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: partitions
                .iter()
                .map(|(t, p)| (t.to_string(), *p))
                .collect(),
            start_ms: 1_000,
            last_update_ms: 2_000,
        }
    }

    #[test]
    fn keys_and_values_round_trip() {
        assert_eq!(decode_key(&key("tx-1")).as_deref(), Some("tx-1"));
        for m in [meta(&[]), meta(&[("a", 0), ("a", 3), ("b", 1)])] {
            assert_eq!(decode_value(&value(&m)), Some(m));
        }
    }

    #[test]
    fn the_value_is_kafkas_layout() {
        let bytes = value(&meta(&[("a", 1)]));
        // version, producer id, epoch, timeout, status (Ongoing = 1).
        assert_eq!(&bytes[..2], &[0, 0]);
        assert_eq!(bytes[2 + 8 + 2 + 4], 1);
        // One topic "a" with partition 1, then the two timestamps.
        let rest = &bytes[17..];
        assert_eq!(rest[..4], 1i32.to_be_bytes());
        assert_eq!(rest[4..7], [0, 1, b'a']);
        assert_eq!(rest[7..15], [0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(rest.len(), 15 + 16);
    }

    #[test]
    fn damaged_values_are_refused_never_a_panic() {
        let bytes = value(&meta(&[("a", 1), ("b", 2)]));
        for cut in 0..bytes.len() {
            assert_eq!(decode_value(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut huge = bytes.to_vec();
        huge[17..21].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(decode_value(&huge), None);
        let mut status = bytes.to_vec();
        status[16] = 99;
        assert_eq!(decode_value(&status), None);
    }
}
