//! The records of `__transaction_state`, in Kafka's own formats (its `TransactionLogKey` and
//! `TransactionLogValue` v0 and v1), so Kafka's tools can decode the topic:
//!
//! - key: `version: i16 = 0, transactional_id: string`;
//! - value v0: `producer_id: i64, producer_epoch: i16, transaction_timeout_ms: i32,
//!   transaction_status: i8, transaction_partitions: [topic: string, partition_ids:
//!   [i32]], transaction_last_update_timestamp_ms: i64, transaction_start_timestamp_ms:
//!   i64`. Strings are an i16 length and UTF-8, arrays an i32 count.
//! - value v1 (flexible, written for transactions v2): the same fields with compact
//!   strings and arrays (unsigned varint length + 1) and tagged fields: 0
//!   `previous_producer_id`, 1 `next_producer_id`, 2 `client_transaction_version`.
//!
//! A null value is a tombstone (the transactional id expired). Decoding never panics and
//! never trusts a count beyond the bytes it has.

use std::collections::BTreeSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::state::{TxnMeta, TxnState};

const KEY_VERSION: i16 = 0;
const TAG_PREVIOUS_PRODUCER_ID: u32 = 0;
const TAG_NEXT_PRODUCER_ID: u32 = 1;
const TAG_CLIENT_VERSION: u32 = 2;

pub fn key(transactional_id: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + transactional_id.len());
    b.put_i16(KEY_VERSION);
    put_str(&mut b, transactional_id);
    b.freeze()
}

/// The value of `m`: v1 when it carries anything of transactions v2, else v0 (what
/// Kafka's older tools read).
pub fn value(m: &TxnMeta) -> Bytes {
    let flexible = m.client_version >= 2 || m.previous_producer_id >= 0 || m.next_producer_id >= 0;
    let mut b = BytesMut::with_capacity(64 + m.partitions.len() * 16);
    b.put_i16(if flexible { 1 } else { 0 });
    b.put_i64(m.producer_id);
    b.put_i16(m.producer_epoch);
    b.put_i32(m.timeout_ms);
    b.put_i8(m.state.code());
    put_partitions(&mut b, &m.partitions, flexible);
    b.put_i64(m.last_update_ms);
    b.put_i64(m.start_ms);
    if flexible {
        let mut tags: Vec<(u32, Vec<u8>)> = Vec::new();
        if m.previous_producer_id >= 0 {
            tags.push((
                TAG_PREVIOUS_PRODUCER_ID,
                m.previous_producer_id.to_be_bytes().to_vec(),
            ));
        }
        if m.next_producer_id >= 0 {
            tags.push((
                TAG_NEXT_PRODUCER_ID,
                m.next_producer_id.to_be_bytes().to_vec(),
            ));
        }
        if m.client_version != 0 {
            tags.push((TAG_CLIENT_VERSION, m.client_version.to_be_bytes().to_vec()));
        }
        put_uvarint(&mut b, tags.len() as u32);
        for (tag, data) in tags {
            put_uvarint(&mut b, tag);
            put_uvarint(&mut b, data.len() as u32);
            b.put_slice(&data);
        }
    }
    b.freeze()
}

fn put_partitions(b: &mut BytesMut, partitions: &BTreeSet<(String, i32)>, flexible: bool) {
    let topics = crate::kafka::runs::group_runs(partitions.iter().map(|(t, p)| (t.as_str(), *p)));
    if !flexible {
        if topics.is_empty() {
            b.put_i32(-1);
            return;
        }
        b.put_i32(topics.len() as i32);
        for (topic, ps) in topics {
            put_str(b, topic);
            b.put_i32(ps.len() as i32);
            ps.iter().for_each(|p| b.put_i32(*p));
        }
        return;
    }
    if topics.is_empty() {
        put_uvarint(b, 0);
        return;
    }
    put_uvarint(b, topics.len() as u32 + 1);
    for (topic, ps) in topics {
        let n = topic.len().min(i16::MAX as usize);
        put_uvarint(b, n as u32 + 1);
        b.put_slice(&topic.as_bytes()[..n]);
        put_uvarint(b, ps.len() as u32 + 1);
        ps.iter().for_each(|p| b.put_i32(*p));
        put_uvarint(b, 0);
    }
}

pub fn decode_key(mut k: &[u8]) -> Option<String> {
    if get_i16(&mut k)? != KEY_VERSION {
        return None;
    }
    get_str(&mut k)
}

pub fn decode_value(mut v: &[u8]) -> Option<TxnMeta> {
    let flexible = match get_i16(&mut v)? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let producer_id = get_i64(&mut v)?;
    let producer_epoch = get_i16(&mut v)?;
    let timeout_ms = get_i32(&mut v)?;
    let state = TxnState::from_code(get_i8(&mut v)?)?;
    let partitions = get_partitions(&mut v, flexible)?;
    let last_update_ms = get_i64(&mut v)?;
    let start_ms = get_i64(&mut v)?;
    let mut m = TxnMeta {
        producer_id,
        producer_epoch,
        last_producer_epoch: -1,
        timeout_ms,
        state,
        partitions,
        start_ms,
        last_update_ms,
        client_version: 0,
        previous_producer_id: -1,
        next_producer_id: -1,
    };
    if flexible {
        let tags = get_uvarint(&mut v)?;
        for _ in 0..tags {
            let tag = get_uvarint(&mut v)?;
            let size = get_uvarint(&mut v)? as usize;
            if v.remaining() < size {
                return None;
            }
            let mut data = &v[..size];
            match tag {
                TAG_PREVIOUS_PRODUCER_ID => m.previous_producer_id = get_i64(&mut data)?,
                TAG_NEXT_PRODUCER_ID => m.next_producer_id = get_i64(&mut data)?,
                TAG_CLIENT_VERSION => m.client_version = get_i16(&mut data)?,
                // A tag a newer version added: skipped, as Kafka skips unknown tags.
                _ => {}
            }
            v.advance(size);
        }
    }
    Some(m)
}

fn get_partitions(v: &mut &[u8], flexible: bool) -> Option<BTreeSet<(String, i32)>> {
    let mut partitions = BTreeSet::new();
    if !flexible {
        let topics = get_i32(v)?;
        for _ in 0..topics.max(0) {
            let topic = get_str(v)?;
            let count = get_i32(v)?;
            for _ in 0..count.max(0) {
                partitions.insert((topic.clone(), get_i32(v)?));
            }
        }
        return Some(partitions);
    }
    let topics = get_uvarint(v)?;
    for _ in 1..topics.max(1) {
        let n = (get_uvarint(v)? as usize).checked_sub(1)?;
        if v.remaining() < n {
            return None;
        }
        let topic = String::from_utf8(v[..n].to_vec()).ok()?;
        v.advance(n);
        let count = get_uvarint(v)?;
        for _ in 1..count.max(1) {
            partitions.insert((topic.clone(), get_i32(v)?));
        }
        let tags = get_uvarint(v)?;
        for _ in 0..tags {
            let _tag = get_uvarint(v)?;
            let size = get_uvarint(v)? as usize;
            if v.remaining() < size {
                return None;
            }
            v.advance(size);
        }
    }
    Some(partitions)
}

fn put_uvarint(b: &mut BytesMut, mut n: u32) {
    while n >= 0x80 {
        b.put_u8((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    b.put_u8(n as u8);
}

/// An unsigned varint of at most 5 bytes (a u32), `None` when cut or longer.
fn get_uvarint(b: &mut &[u8]) -> Option<u32> {
    let mut n: u32 = 0;
    for i in 0..5 {
        let byte = get_i8(b)? as u8;
        n |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

fn put_str(b: &mut BytesMut, s: &str) {
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
            client_version: 0,
            previous_producer_id: -1,
            next_producer_id: -1,
        }
    }

    fn meta_v2(partitions: &[(&str, i32)]) -> TxnMeta {
        TxnMeta {
            client_version: 2,
            previous_producer_id: 3,
            next_producer_id: 300,
            ..meta(partitions)
        }
    }

    #[test]
    fn keys_and_values_round_trip() {
        assert_eq!(decode_key(&key("tx-1")).as_deref(), Some("tx-1"));
        for m in [
            meta(&[]),
            meta(&[("a", 0), ("a", 3), ("b", 1)]),
            meta_v2(&[]),
            meta_v2(&[("a", 0), ("a", 3), ("b", 1)]),
        ] {
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

    #[test]
    fn transactions_v2_state_is_kafkas_flexible_layout() {
        let bytes = value(&meta_v2(&[("a", 1)]));
        assert_eq!(&bytes[..2], &[0, 1], "version 1");
        // After the fixed fields: one topic (count + 1), "a" (length + 1), one partition.
        let rest = &bytes[17..];
        assert_eq!(rest[..3], [2, 2, b'a']);
        assert_eq!(rest[3], 2);
        assert_eq!(rest[4..8], 1i32.to_be_bytes());
        assert_eq!(rest[8], 0, "no tagged fields in the topic");
        // The timestamps, then three tagged fields, the last the client version 2.
        assert_eq!(rest[25], 3);
        assert_eq!(rest[rest.len() - 4..], [2, 2, 0, 2]);
        for cut in 0..bytes.len() {
            assert_eq!(decode_value(&bytes[..cut]), None, "cut at {cut}");
        }
    }
}
