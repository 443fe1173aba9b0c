//! The records of `__consumer_offsets`, in Kafka's own formats, so Kafka's tools (and
//! anyone reading the topic) can decode them:
//!
//! - offset commit: key v1 `group, topic, partition`; value v3 `offset, leader_epoch,
//!   metadata, commit_timestamp` (v0–v2 values are read too);
//! - group metadata: key v2 `group`; value v3 `protocol_type, generation, protocol,
//!   leader, current_state_timestamp, members[member_id, group_instance_id, client_id,
//!   client_host, rebalance_timeout, session_timeout, subscription, assignment]`.
//!
//! Records of consumer-protocol groups (key versions 3–8) are in `consumer_records.rs`.
//!
//! A null value is a tombstone: the offset or the group is gone. Strings are an i16
//! length (-1: null) and UTF-8; byte strings an i32 length. Decoding never panics and
//! never trusts a length beyond the bytes it has.

use bytes::{BufMut, Bytes, BytesMut};

const KEY_OFFSET_COMMIT: i16 = 1;
const KEY_GROUP_METADATA: i16 = 2;
const VALUE_OFFSET_COMMIT: i16 = 3;
const VALUE_GROUP_METADATA: i16 = 3;

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitValue {
    pub offset: i64,
    /// -1 when the client did not say.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// One member of a group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's membership as stored after each rebalance (and when it empties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

/// One decoded record of the offsets topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    Commit {
        group: String,
        topic: String,
        partition: i32,
        /// `None`: the offset was deleted.
        value: Option<CommitValue>,
    },
    Group {
        group: String,
        /// `None`: the group was deleted.
        value: Option<GroupValue>,
    },
    /// One record of a consumer-protocol group (key versions 3–8).
    Consumer {
        group: String,
        record: super::consumer_records::ConsumerRecord,
    },
}

pub fn commit_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(10 + group.len() + topic.len());
    b.put_i16(KEY_OFFSET_COMMIT);
    put_str(&mut b, group);
    put_str(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

pub fn commit_value(v: &CommitValue) -> Bytes {
    let mut b = BytesMut::with_capacity(26 + v.metadata.len());
    b.put_i16(VALUE_OFFSET_COMMIT);
    b.put_i64(v.offset);
    b.put_i32(v.leader_epoch);
    put_str(&mut b, &v.metadata);
    b.put_i64(v.commit_timestamp_ms);
    b.freeze()
}

pub fn group_key(group: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + group.len());
    b.put_i16(KEY_GROUP_METADATA);
    put_str(&mut b, group);
    b.freeze()
}

pub fn group_value(v: &GroupValue) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_i16(VALUE_GROUP_METADATA);
    put_str(&mut b, &v.protocol_type);
    b.put_i32(v.generation);
    put_nullable_str(&mut b, v.protocol.as_deref());
    put_nullable_str(&mut b, v.leader.as_deref());
    b.put_i64(v.state_timestamp_ms);
    b.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_str(&mut b, &m.member_id);
        put_nullable_str(&mut b, m.group_instance_id.as_deref());
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_byte_string(&mut b, &m.subscription);
        put_byte_string(&mut b, &m.assignment);
    }
    b.freeze()
}

/// Decodes one record; `None` for a key or value this broker does not know (skipped by
/// the loader with a log line) or malformed bytes.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<OffsetsRecord> {
    let mut k = Reader(key);
    match k.i16()? {
        0 | KEY_OFFSET_COMMIT => {
            let group = k.string()?;
            let topic = k.string()?;
            let partition = k.i32()?;
            let value = match value {
                None => None,
                Some(v) => Some(decode_commit_value(v)?),
            };
            Some(OffsetsRecord::Commit {
                group,
                topic,
                partition,
                value,
            })
        }
        KEY_GROUP_METADATA => {
            let group = k.string()?;
            let value = match value {
                None => None,
                Some(v) => Some(decode_group_value(v)?),
            };
            Some(OffsetsRecord::Group { group, value })
        }
        v @ 3..=8 => super::consumer_records::decode(v, k.0, value)
            .map(|(group, record)| OffsetsRecord::Consumer { group, record }),
        _ => None,
    }
}

fn decode_commit_value(v: &[u8]) -> Option<CommitValue> {
    let mut r = Reader(v);
    let version = r.i16()?;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.string()?;
    let commit_timestamp_ms = r.i64()?;
    (0..=3).contains(&version).then_some(CommitValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

fn decode_group_value(v: &[u8]) -> Option<GroupValue> {
    let mut r = Reader(v);
    if r.i16()? != VALUE_GROUP_METADATA {
        return None;
    }
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let state_timestamp_ms = r.i64()?;
    let count = r.i32()?;
    // Each member takes at least 28 bytes: never trust the count for the allocation.
    let mut members = Vec::with_capacity((count.max(0) as usize).min(r.0.len() / 28));
    for _ in 0..count {
        members.push(MemberValue {
            member_id: r.string()?,
            group_instance_id: r.nullable_string()?,
            client_id: r.string()?,
            client_host: r.string()?,
            rebalance_timeout_ms: r.i32()?,
            session_timeout_ms: r.i32()?,
            subscription: r.byte_string()?,
            assignment: r.byte_string()?,
        });
    }
    Some(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp_ms,
        members,
    })
}

fn put_str(b: &mut BytesMut, s: &str) {
    // Group ids, topic names, member ids and metadata are bounded far below i16::MAX by
    // the request handlers (OFFSET_METADATA_BYTES_MAX and the protocol's own i16 strings).
    b.put_i16(s.len().min(i16::MAX as usize) as i16);
    b.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

fn put_nullable_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}

fn put_byte_string(b: &mut BytesMut, bytes: &[u8]) {
    b.put_i32(bytes.len() as i32);
    b.put_slice(bytes);
}

/// A bounded reader of record bytes (`consumer_records.rs` adds the flexible forms).
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    pub(super) fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    pub(super) fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    pub(super) fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(super) fn nullable_string(&mut self) -> Option<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        let bytes = self.take(len as usize)?;
        Some(Some(String::from_utf8(bytes.to_vec()).ok()?))
    }
    pub(super) fn string(&mut self) -> Option<String> {
        self.nullable_string()?
    }
    pub(super) fn byte_string(&mut self) -> Option<Bytes> {
        let len = self.i32()?;
        if len < 0 {
            return Some(Bytes::new());
        }
        Some(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_round_trips() {
        let v = CommitValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "meta".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        let rec = decode(&commit_key("g", "t", 7), Some(&commit_value(&v))).unwrap();
        assert_eq!(
            rec,
            OffsetsRecord::Commit {
                group: "g".into(),
                topic: "t".into(),
                partition: 7,
                value: Some(v)
            }
        );
        let tomb = decode(&commit_key("g", "t", 7), None).unwrap();
        assert!(matches!(tomb, OffsetsRecord::Commit { value: None, .. }));
    }

    #[test]
    fn group_round_trips() {
        let v = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp_ms: 99,
            members: vec![MemberValue {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let rec = decode(&group_key("g"), Some(&group_value(&v))).unwrap();
        assert_eq!(
            rec,
            OffsetsRecord::Group {
                group: "g".into(),
                value: Some(v)
            }
        );
    }

    #[test]
    fn truncated_and_unknown_bytes_decode_to_none() {
        let v = commit_value(&CommitValue {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        });
        let key = commit_key("group", "topic", 0);
        for cut in 0..key.len() {
            assert!(decode(&key[..cut], Some(&v)).is_none());
        }
        for cut in 0..v.len() {
            assert!(decode(&key, Some(&v[..cut])).is_none());
        }
        assert!(decode(&[0, 9, 0, 0], None).is_none());
        // A lying member count.
        let mut g = group_value(&GroupValue {
            protocol_type: "consumer".into(),
            generation: 1,
            protocol: None,
            leader: None,
            state_timestamp_ms: 0,
            members: vec![],
        })
        .to_vec();
        let n = g.len();
        g[n - 4..].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode(&group_key("g"), Some(&g)).is_none());
    }
}
