//! The records of a consumer-protocol group (KIP-848) in `__consumer_offsets`, in Kafka's
//! formats (`group-coordinator/src/main/resources/common/message/ConsumerGroup*.json`):
//!
//! | key version | record | key fields | value (version 0, flexible) |
//! |---|---|---|---|
//! | 3 | ConsumerGroupMetadata | group | epoch |
//! | 4 | ConsumerGroupPartitionMetadata | group | topics [id, name, partitions, partition racks] |
//! | 5 | ConsumerGroupMemberMetadata | group, member | instance, rack, client id and host, topic names, regex, rebalance timeout, assignor |
//! | 6 | ConsumerGroupTargetAssignmentMetadata | group | assignment epoch |
//! | 7 | ConsumerGroupTargetAssignmentMember | group, member | topic partitions |
//! | 8 | ConsumerGroupCurrentMemberAssignment | group, member | epoch, previous epoch, state, assigned, pending revocation |
//!
//! Keys are non-flexible (an i16 version, then i16-length strings); values are flexible:
//! compact strings and arrays (unsigned varint length + 1, 0 for null), 16-byte UUIDs,
//! and an empty tagged-field section after every struct. A null value is a tombstone.
//! Decoding never panics and never allocates past the bytes it has.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use sluice_control::TopicId;

use super::assignor::Assignment;
use super::records::Reader;

pub const KEY_METADATA: i16 = 3;
pub const KEY_PARTITION_METADATA: i16 = 4;
pub const KEY_MEMBER_METADATA: i16 = 5;
pub const KEY_TARGET_METADATA: i16 = 6;
pub const KEY_TARGET_MEMBER: i16 = 7;
pub const KEY_CURRENT_ASSIGNMENT: i16 = 8;
const VALUE_VERSION: i16 = 0;

/// What a member subscribes with (ConsumerGroupMemberMetadataValue).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberMeta {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub topic_names: Vec<String>,
    pub regex: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub assignor: Option<String>,
    /// Set for a member speaking the classic protocol (tagged field 0).
    pub classic: Option<ClassicMeta>,
}

/// What a classic-protocol member joined with (Kafka's `ClassicMemberMetadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicMeta {
    pub session_timeout_ms: i32,
    /// (name, metadata) in the member's order of preference; never empty.
    pub protocols: Vec<(String, Bytes)>,
}

/// Where a member stands (ConsumerGroupCurrentMemberAssignmentValue); `state` is Kafka's
/// `MemberState` byte: 0 stable, 1 unrevoked partitions, 2 unreleased partitions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CurrentValue {
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: i8,
    pub assigned: Assignment,
    pub revoking: Assignment,
}

/// The subscribed topics: id → (name, partition count).
pub type TopicsMeta = BTreeMap<TopicId, (String, i32)>;

/// One consumer-group record; `None` values are tombstones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerRecord {
    Metadata(Option<i32>),
    PartitionMetadata(Option<TopicsMeta>),
    Member(String, Option<MemberMeta>),
    TargetMetadata(Option<i32>),
    TargetMember(String, Option<Assignment>),
    Current(String, Option<CurrentValue>),
}

/// The key of a record of `group` (`member` for the per-member records).
pub fn key(version: i16, group: &str, member: Option<&str>) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + group.len());
    b.put_i16(version);
    put_str(&mut b, group);
    if let Some(m) = member {
        put_str(&mut b, m);
    }
    b.freeze()
}

/// The key and value of `record` of `group`.
pub fn encode(group: &str, record: &ConsumerRecord) -> (Bytes, Option<Bytes>) {
    use ConsumerRecord as R;
    let tagged = |f: &dyn Fn(&mut BytesMut), tags: &dyn Fn(&mut BytesMut)| {
        let mut b = BytesMut::with_capacity(64);
        b.put_i16(VALUE_VERSION);
        f(&mut b);
        tags(&mut b);
        Some(b.freeze())
    };
    let value = |f: &dyn Fn(&mut BytesMut)| tagged(f, &|b| b.put_u8(0)); // no tagged fields
    match record {
        R::Metadata(v) => (
            key(KEY_METADATA, group, None),
            v.and_then(|e| value(&|b| b.put_i32(e))),
        ),
        R::PartitionMetadata(v) => (
            key(KEY_PARTITION_METADATA, group, None),
            v.as_ref().and_then(|topics| {
                value(&|b| {
                    put_len(b, topics.len());
                    for (id, (name, n)) in topics {
                        b.put_u128(id.0);
                        put_compact(b, name);
                        b.put_i32(*n);
                        put_len(b, 0); // partition racks: not used by these assignors
                        b.put_u8(0);
                    }
                })
            }),
        ),
        R::Member(id, v) => (
            key(KEY_MEMBER_METADATA, group, Some(id)),
            v.as_ref().and_then(|m| {
                let fields = |b: &mut BytesMut| {
                    put_compact_nullable(b, m.instance_id.as_deref());
                    put_compact_nullable(b, m.rack_id.as_deref());
                    put_compact(b, &m.client_id);
                    put_compact(b, &m.client_host);
                    put_len(b, m.topic_names.len());
                    for t in &m.topic_names {
                        put_compact(b, t);
                    }
                    put_compact_nullable(b, m.regex.as_deref());
                    b.put_i32(m.rebalance_timeout_ms);
                    put_compact_nullable(b, m.assignor.as_deref());
                };
                tagged(&fields, &|b| put_classic_tag(b, m.classic.as_ref()))
            }),
        ),
        R::TargetMetadata(v) => (
            key(KEY_TARGET_METADATA, group, None),
            v.and_then(|e| value(&|b| b.put_i32(e))),
        ),
        R::TargetMember(id, v) => (
            key(KEY_TARGET_MEMBER, group, Some(id)),
            v.as_ref().and_then(|a| value(&|b| put_assignment(b, a))),
        ),
        R::Current(id, v) => (
            key(KEY_CURRENT_ASSIGNMENT, group, Some(id)),
            v.as_ref().and_then(|c| {
                value(&|b| {
                    b.put_i32(c.epoch);
                    b.put_i32(c.previous_epoch);
                    b.put_i8(c.state);
                    put_assignment(b, &c.assigned);
                    put_assignment(b, &c.revoking);
                })
            }),
        ),
    }
}

/// Decodes a record whose key version is 3–8 (`k` positioned after the version):
/// (group, record), or `None` for malformed bytes or an unknown value version.
pub fn decode(version: i16, k: &[u8], value: Option<&[u8]>) -> Option<(String, ConsumerRecord)> {
    use ConsumerRecord as R;
    let mut k = Reader(k);
    let group = k.string()?;
    let member = match version {
        KEY_MEMBER_METADATA | KEY_TARGET_MEMBER | KEY_CURRENT_ASSIGNMENT => Some(k.string()?),
        KEY_METADATA | KEY_PARTITION_METADATA | KEY_TARGET_METADATA => None,
        _ => return None,
    };
    let mut v = match value {
        None => None,
        Some(bytes) => {
            let mut r = Reader(bytes);
            if r.i16()? != VALUE_VERSION {
                return None;
            }
            Some(r)
        }
    };
    let v = v.as_mut();
    let record = match (version, member) {
        (KEY_METADATA, None) => R::Metadata(read(v, Reader::i32)?),
        (KEY_TARGET_METADATA, None) => R::TargetMetadata(read(v, Reader::i32)?),
        (KEY_PARTITION_METADATA, None) => R::PartitionMetadata(read(v, read_topics)?),
        (KEY_MEMBER_METADATA, Some(m)) => R::Member(m, read(v, read_member)?),
        (KEY_TARGET_MEMBER, Some(m)) => R::TargetMember(m, read(v, Reader::assignment)?),
        (KEY_CURRENT_ASSIGNMENT, Some(m)) => R::Current(m, read(v, read_current)?),
        _ => return None,
    };
    Some((group, record))
}

/// A value read with `f`: `Some(None)` for a tombstone, `None` when malformed.
fn read<'a, T>(
    v: Option<&mut Reader<'a>>,
    f: impl FnOnce(&mut Reader<'a>) -> Option<T>,
) -> Option<Option<T>> {
    match v {
        None => Some(None),
        Some(r) => f(r).map(Some),
    }
}

fn read_topics(r: &mut Reader<'_>) -> Option<TopicsMeta> {
    let n = r.len()?;
    let mut out = TopicsMeta::new();
    for _ in 0..n {
        let id = TopicId(r.u128()?);
        let name = r.compact()?;
        let count = r.i32()?;
        let racks = r.len()?;
        for _ in 0..racks {
            r.i32()?;
            let names = r.len()?;
            for _ in 0..names {
                r.compact()?;
            }
            r.tags()?;
        }
        r.tags()?;
        out.insert(id, (name, count));
    }
    Some(out)
}

fn read_member(r: &mut Reader<'_>) -> Option<MemberMeta> {
    let instance_id = r.compact_nullable()?;
    let rack_id = r.compact_nullable()?;
    let client_id = r.compact()?;
    let client_host = r.compact()?;
    let n = r.len()?;
    let mut topic_names = Vec::with_capacity(n.min(r.0.len()));
    for _ in 0..n {
        topic_names.push(r.compact()?);
    }
    Some(MemberMeta {
        instance_id,
        rack_id,
        client_id,
        client_host,
        topic_names,
        regex: r.compact_nullable()?,
        rebalance_timeout_ms: r.i32()?,
        assignor: r.compact_nullable()?,
        classic: read_classic_tag(r)?,
    })
}

/// The value's tagged fields: `ClassicMemberMetadata` as tag 0 when there is one.
fn put_classic_tag(b: &mut BytesMut, classic: Option<&ClassicMeta>) {
    let Some(c) = classic else {
        b.put_u8(0);
        return;
    };
    let mut body = BytesMut::with_capacity(64);
    body.put_i32(c.session_timeout_ms);
    put_len(&mut body, c.protocols.len());
    for (name, metadata) in &c.protocols {
        put_compact(&mut body, name);
        put_len(&mut body, metadata.len());
        body.put_slice(metadata);
        body.put_u8(0);
    }
    body.put_u8(0);
    put_varint(b, 1);
    put_varint(b, 0);
    put_varint(b, body.len() as u64);
    b.put_slice(&body);
}

/// The member value's tagged-field section; `Some(None)` without tag 0.
fn read_classic_tag(r: &mut Reader<'_>) -> Option<Option<ClassicMeta>> {
    let mut classic = None;
    let n = r.varint()?;
    for _ in 0..n {
        let tag = r.varint()?;
        let size = usize::try_from(r.varint()?).ok()?;
        let body = r.take(size)?;
        if tag == 0 {
            classic = Some(read_classic(&mut Reader(body))?);
        }
    }
    Some(classic)
}

fn read_classic(r: &mut Reader<'_>) -> Option<ClassicMeta> {
    let session_timeout_ms = r.i32()?;
    let n = r.len()?;
    let mut protocols = Vec::with_capacity(n.min(r.0.len()));
    for _ in 0..n {
        let name = r.compact()?;
        let size = r.len()?;
        let metadata = Bytes::copy_from_slice(r.take(size)?);
        r.tags()?;
        protocols.push((name, metadata));
    }
    r.tags()?;
    Some(ClassicMeta {
        session_timeout_ms,
        protocols,
    })
}

fn read_current(r: &mut Reader<'_>) -> Option<CurrentValue> {
    Some(CurrentValue {
        epoch: r.i32()?,
        previous_epoch: r.i32()?,
        state: r.i8()?,
        assigned: r.assignment()?,
        revoking: r.assignment()?,
    })
}

fn put_str(b: &mut BytesMut, s: &str) {
    // Group and member ids are bounded far below i16::MAX by the request handlers.
    let s = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    b.put_i16(s.len() as i16);
    b.put_slice(s);
}

fn put_varint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

/// A compact array's or string's length (+1; 0 is null).
fn put_len(b: &mut BytesMut, n: usize) {
    put_varint(b, n as u64 + 1);
}

fn put_compact(b: &mut BytesMut, s: &str) {
    put_len(b, s.len());
    b.put_slice(s.as_bytes());
}

fn put_compact_nullable(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_compact(b, s),
        None => b.put_u8(0),
    }
}

fn put_assignment(b: &mut BytesMut, a: &Assignment) {
    put_len(b, a.len());
    for (t, ps) in a {
        b.put_u128(t.0);
        put_len(b, ps.len());
        for p in ps {
            b.put_i32(*p);
        }
        b.put_u8(0);
    }
}

/// The flexible forms of the values (the fixed ones are `records.rs`'s).
impl<'a> Reader<'a> {
    fn i8(&mut self) -> Option<i8> {
        Some(self.take(1)?[0] as i8)
    }
    fn u128(&mut self) -> Option<u128> {
        Some(u128::from_be_bytes(self.take(16)?.try_into().ok()?))
    }
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    /// A compact length; `None` for null or a length past the bytes left (every element
    /// takes at least one byte, so a count is never trusted beyond them).
    fn len(&mut self) -> Option<usize> {
        let n = usize::try_from(self.varint()?.checked_sub(1)?).ok()?;
        (n <= self.0.len()).then_some(n)
    }
    fn compact_nullable(&mut self) -> Option<Option<String>> {
        let raw = self.varint()?;
        if raw == 0 {
            return Some(None);
        }
        let n = usize::try_from(raw - 1).ok()?;
        Some(Some(std::str::from_utf8(self.take(n)?).ok()?.to_string()))
    }
    fn compact(&mut self) -> Option<String> {
        self.compact_nullable()?
    }
    /// Skips a tagged-field section.
    fn tags(&mut self) -> Option<()> {
        let n = self.varint()?;
        for _ in 0..n {
            self.varint()?;
            let size = usize::try_from(self.varint()?).ok()?;
            self.take(size)?;
        }
        Some(())
    }
    fn assignment(&mut self) -> Option<Assignment> {
        let n = self.len()?;
        let mut out = Assignment::new();
        for _ in 0..n {
            let t = TopicId(self.u128()?);
            let count = self.len()?;
            let mut ps = BTreeSet::new();
            for _ in 0..count {
                ps.insert(self.i32()?);
            }
            self.tags()?;
            out.insert(t, ps);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(r: ConsumerRecord) {
        let (k, v) = encode("grp", &r);
        let version = i16::from_be_bytes([k[0], k[1]]);
        let got = decode(version, &k[2..], v.as_deref()).expect("decodes");
        assert_eq!(got, ("grp".to_string(), r));
        if let Some(v) = v {
            // Every cut short of the value's trailing (top-level, unread) tag section.
            for cut in 2..v.len() - 1 {
                assert!(
                    decode(version, &k[2..], Some(&v[..cut])).is_none(),
                    "cut {cut}"
                );
            }
        }
    }

    fn assignment() -> Assignment {
        [
            (TopicId(7), [0, 3].into()),
            (TopicId(u128::MAX), [1].into()),
        ]
        .into()
    }

    #[test]
    fn every_record_round_trips_and_truncation_is_refused() {
        use ConsumerRecord as R;
        round_trip(R::Metadata(Some(5)));
        round_trip(R::Metadata(None));
        round_trip(R::TargetMetadata(Some(4)));
        round_trip(R::PartitionMetadata(Some(
            [(TopicId(9), ("orders".to_string(), 12))].into(),
        )));
        round_trip(R::Member(
            "m1".into(),
            Some(MemberMeta {
                instance_id: Some("i".into()),
                rack_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                topic_names: vec!["a".into(), "b".into()],
                regex: Some("^x.*".into()),
                rebalance_timeout_ms: 300_000,
                assignor: Some("range".into()),
                classic: None,
            }),
        ));
        round_trip(R::Member(
            "m2".into(),
            Some(MemberMeta {
                instance_id: None,
                rack_id: Some("r".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                topic_names: vec!["a".into()],
                regex: None,
                rebalance_timeout_ms: 30_000,
                assignor: None,
                classic: Some(ClassicMeta {
                    session_timeout_ms: 6_000,
                    protocols: vec![
                        ("range".into(), Bytes::from_static(&[0, 1, 2])),
                        ("roundrobin".into(), Bytes::new()),
                    ],
                }),
            }),
        ));
        round_trip(R::Member("m1".into(), None));
        round_trip(R::TargetMember("m1".into(), Some(assignment())));
        round_trip(R::Current(
            "m1".into(),
            Some(CurrentValue {
                epoch: 9,
                previous_epoch: 8,
                state: 1,
                assigned: assignment(),
                revoking: [(TopicId(7), [5].into())].into(),
            }),
        ));
        round_trip(R::Current("m1".into(), None));
    }

    #[test]
    fn keys_are_kafkas() {
        // ConsumerGroupMetadataKey v3: version, then the group as an i16-length string.
        assert_eq!(&key(KEY_METADATA, "g", None)[..], &[0, 3, 0, 1, b'g']);
        assert_eq!(
            &key(KEY_CURRENT_ASSIGNMENT, "g", Some("m"))[..],
            &[0, 8, 0, 1, b'g', 0, 1, b'm']
        );
        // A value: version 0, the epoch, no tagged fields.
        let (_, v) = encode("g", &ConsumerRecord::Metadata(Some(1)));
        assert_eq!(&v.unwrap()[..], &[0, 0, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn lying_counts_are_refused_without_allocating() {
        // A member value claiming u32::MAX topic names.
        let mut v = vec![0u8, 0, 0, 0, 2, b'c', 1];
        v.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode(KEY_MEMBER_METADATA, &[0, 1, b'g', 0, 1, b'm'], Some(&v)).is_none());
        assert!(decode(KEY_METADATA, &[0, 1, b'g'], Some(&[0, 1, 0, 0, 0, 1, 0])).is_none());
        assert!(decode(9, &[0, 1, b'g'], None).is_none());
    }
}
