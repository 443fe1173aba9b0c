//! The blocking admin calls behind `sluice group`: coordinator lookup (retried while the
//! coordinator is not available), ListGroups on every broker, DescribeGroups, OffsetFetch,
//! OffsetCommit, DeleteGroups, OffsetDelete, and log offsets through the bench's metadata
//! module. Every call is bounded: a few attempts, each with the connection's read timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use kafka_protocol::messages::consumer_group_describe_response;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, DeleteGroupsRequest, DescribeGroupsRequest,
    FindCoordinatorResponse, ListGroupsRequest, OffsetDeleteRequest,
};

use super::proto::{self, code, Committed};
use crate::bench::metadata::{self, OffsetSpec};
use crate::bench::wire::{error_name, AdminConn};

/// The client id on the group tool's requests.
const CLIENT_ID: &str = "sluice-group";
/// How coordinator calls are retried while the answer says "not available / not me /
/// loading".
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts_max: u32,
    /// Back-off before the second attempt; doubles each time.
    pub backoff_ms_first: u64,
}

impl Default for Retry {
    /// Six attempts, 0.1 + 0.2 + … + 1.6 ≈ 3 s of back-off in all.
    fn default() -> Retry {
        Retry {
            attempts_max: 6,
            backoff_ms_first: 100,
        }
    }
}

impl Retry {
    fn pause_before(&self, attempt: u32) {
        if attempt > 0 {
            // Control plane only: back-off between attempts of an operator command.
            std::thread::sleep(Duration::from_millis(
                self.backoff_ms_first << (attempt - 1).min(16),
            ));
        }
    }
}

/// A group as DescribeGroups (classic) or ConsumerGroupDescribe (KIP-848) shows it.
#[derive(Debug, Clone, Default)]
pub struct GroupState {
    pub state: String,
    pub protocol_type: String,
    /// The classic protocol's chosen assignor, or a consumer group's server assignor.
    pub protocol: String,
    /// A consumer group's (group epoch, target assignment epoch); `None` for classic.
    pub epochs: Option<(i32, i32)>,
    pub members: Vec<MemberState>,
}

#[derive(Debug, Clone, Default)]
pub struct MemberState {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub assignment: Vec<(String, Vec<i32>)>,
    /// A consumer group member's epoch and target assignment.
    pub member_epoch: Option<i32>,
    pub target: Vec<(String, Vec<i32>)>,
}

impl GroupState {
    /// Whether the coordinator knows the group at all (Kafka answers `Dead` otherwise).
    pub fn exists(&self) -> bool {
        self.state != "Dead"
    }
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub group: String,
    pub protocol_type: String,
    pub state: String,
    /// `classic` or `consumer` (KIP-848); empty from a broker before ListGroups v5.
    pub group_type: String,
}

/// Log start and end offsets of a topic, by partition id.
#[derive(Debug, Clone)]
pub struct LogOffsets {
    pub start: Vec<i64>,
    pub end: Vec<i64>,
}

#[derive(Debug)]
pub struct Client {
    conn: AdminConn,
    retry: Retry,
}

impl Client {
    pub fn connect(bootstrap: &str) -> Result<Client> {
        let conn = AdminConn::connect_as(bootstrap, CLIENT_ID)
            .with_context(|| format!("--bootstrap {bootstrap}"))?;
        Ok(Client {
            conn,
            retry: Retry::default(),
        })
    }

    /// Runs `call` against the group's coordinator; an answer with a coordinator error (or a
    /// coordinator that cannot be found yet) is retried with back-off, a bounded number of
    /// times. Other error codes come back as `Ok(Err(code))` for the caller to explain.
    fn at_coordinator<T>(
        &mut self,
        group: &str,
        what: &str,
        mut call: impl FnMut(&mut AdminConn) -> Result<Result<T, i16>>,
    ) -> Result<Result<T, i16>> {
        let mut last = code::COORDINATOR_NOT_AVAILABLE;
        for attempt in 0..self.retry.attempts_max {
            self.retry.pause_before(attempt);
            let addr = match self.find_coordinator(group)? {
                Ok(addr) => addr,
                Err(e) if proto::coordinator_retriable(e) => {
                    tracing::debug!(group, error = e, "coordinator not available yet");
                    last = e;
                    continue;
                }
                Err(e) => bail!("FindCoordinator for group {group}: {}", error_name(e)),
            };
            let mut conn = AdminConn::connect_as(&addr, CLIENT_ID)
                .with_context(|| format!("connecting to the coordinator of group {group}"))?;
            match call(&mut conn).with_context(|| format!("{what} for group {group}"))? {
                Err(e) if proto::coordinator_retriable(e) => {
                    tracing::debug!(group, error = e, "coordinator answered retriable error");
                    last = e;
                }
                other => return Ok(other),
            }
        }
        bail!(
            "{what} for group {group}: the coordinator is not available after \
             {} attempts (last error {})",
            self.retry.attempts_max,
            error_name(last)
        )
    }

    /// The coordinator's `host:port`, asked again with back-off while it is not available.
    pub fn coordinator(&mut self, group: &str) -> Result<String> {
        let mut last = code::COORDINATOR_NOT_AVAILABLE;
        for attempt in 0..self.retry.attempts_max {
            self.retry.pause_before(attempt);
            match self.find_coordinator(group)? {
                Ok(addr) => return Ok(addr),
                Err(e) if proto::coordinator_retriable(e) => last = e,
                Err(e) => bail!("FindCoordinator for group {group}: {}", error_name(e)),
            }
        }
        bail!(
            "no coordinator for group {group} after {} attempts (last error {})",
            self.retry.attempts_max,
            error_name(last)
        )
    }

    fn find_coordinator(&mut self, group: &str) -> Result<Result<String, i16>> {
        let version = self.conn.version(ApiKey::FindCoordinator)?;
        let req = proto::find_coordinator_request(version, group);
        let resp: FindCoordinatorResponse = self.conn.call(&req, version)?;
        proto::coordinator_of(version, &resp)
    }

    /// Every group of every broker, sorted by name.
    pub fn list(&mut self) -> Result<Vec<Listed>> {
        let brokers = metadata::brokers(&mut self.conn)?;
        let mut groups: BTreeMap<String, Listed> = BTreeMap::new();
        for (id, addr) in &brokers {
            let mut conn = AdminConn::connect_as(addr, CLIENT_ID)
                .with_context(|| format!("connecting to broker {id}"))?;
            let resp = conn.send(&ListGroupsRequest::default())?;
            if resp.error_code != code::NONE {
                bail!(
                    "ListGroups on broker {id} ({addr}): {}",
                    error_name(resp.error_code)
                );
            }
            for g in resp.groups {
                let name = g.group_id.0.to_string();
                groups.entry(name.clone()).or_insert(Listed {
                    group: name,
                    protocol_type: g.protocol_type.to_string(),
                    state: g.group_state.to_string(),
                    group_type: g.group_type.to_string(),
                });
            }
        }
        // ListGroups before v4 carries no state: ask each group's coordinator.
        for g in groups.values_mut().filter(|g| g.state.is_empty()) {
            g.state = self.describe(&g.group)?.state;
        }
        Ok(groups.into_values().collect())
    }

    /// DescribeGroups of one group.
    pub fn describe(&mut self, group: &str) -> Result<GroupState> {
        let answer = self.at_coordinator(group, "DescribeGroups", |conn| {
            let resp = conn.send(
                &DescribeGroupsRequest::default().with_groups(vec![proto::group_id(group)]),
            )?;
            let g = resp
                .groups
                .into_iter()
                .find(|g| g.group_id.0.as_str() == group)
                .ok_or_else(|| anyhow!("DescribeGroups answered without group {group}"))?;
            Ok(match g.error_code {
                code::NONE => Ok(group_state(g)?),
                code::GROUP_ID_NOT_FOUND => Ok(GroupState {
                    state: "Dead".into(),
                    ..GroupState::default()
                }),
                e => Err(e),
            })
        })?;
        let classic =
            answer.map_err(|e| anyhow!("DescribeGroups for group {group}: {}", error_name(e)))?;
        if classic.exists() {
            return Ok(classic);
        }
        // Kafka's DescribeGroups answers a consumer-protocol group as Dead.
        Ok(self.describe_consumer(group)?.unwrap_or(classic))
    }

    /// ConsumerGroupDescribe of one group; `None` when no consumer group has this id (or
    /// the broker does not serve the API).
    fn describe_consumer(&mut self, group: &str) -> Result<Option<GroupState>> {
        if self.conn.version(ApiKey::ConsumerGroupDescribe).is_err() {
            return Ok(None);
        }
        let answer = self.at_coordinator(group, "ConsumerGroupDescribe", |conn| {
            let resp = conn.send(
                &ConsumerGroupDescribeRequest::default()
                    .with_group_ids(vec![proto::group_id(group)]),
            )?;
            let g = resp
                .groups
                .into_iter()
                .find(|g| g.group_id.0.as_str() == group)
                .ok_or_else(|| anyhow!("ConsumerGroupDescribe answered without group {group}"))?;
            Ok(match g.error_code {
                code::NONE => Ok(Some(consumer_group_state(g))),
                code::GROUP_ID_NOT_FOUND => Ok(None),
                e => Err(e),
            })
        })?;
        answer.map_err(|e| anyhow!("ConsumerGroupDescribe for group {group}: {}", error_name(e)))
    }

    /// Committed offsets of the group: of every partition it committed (`None`), or of these.
    pub fn committed(
        &mut self,
        group: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Result<Vec<Committed>> {
        let answer = self.at_coordinator(group, "OffsetFetch", |conn| {
            let resp = conn.send(&proto::offset_fetch_request(group, topics))?;
            Ok(proto::committed_of(&resp))
        })?;
        answer.map_err(|e| anyhow!("OffsetFetch for group {group}: {}", error_name(e)))
    }

    /// Commits `offsets` from outside the group (generation -1, no member id), as Kafka's
    /// tool does; the coordinator accepts it only while the group has no members.
    pub fn commit(&mut self, group: &str, offsets: &[(String, i32, i64)]) -> Result<()> {
        let answer = self.at_coordinator(group, "OffsetCommit", |conn| {
            let resp = conn.send(&proto::offset_commit_request(group, -1, "", offsets))?;
            Ok(match proto::commit_error(&resp) {
                None => Ok(()),
                Some((_, _, e)) if proto::coordinator_retriable(e) => Err(e),
                Some((t, p, e)) => {
                    return Err(anyhow!(
                        "partition {t}:{p}: {}{}",
                        error_name(e),
                        active_hint(e)
                    ))
                }
            })
        })?;
        answer.map_err(|e| anyhow!("OffsetCommit for group {group}: {}", error_name(e)))
    }

    /// DeleteGroups of one group; `Err(code)` when the coordinator refused (not empty, not
    /// found).
    pub fn delete_group(&mut self, group: &str) -> Result<Result<(), i16>> {
        self.at_coordinator(group, "DeleteGroups", |conn| {
            let resp = conn.send(
                &DeleteGroupsRequest::default().with_groups_names(vec![proto::group_id(group)]),
            )?;
            let r = resp
                .results
                .iter()
                .find(|r| r.group_id.0.as_str() == group)
                .ok_or_else(|| anyhow!("DeleteGroups answered without group {group}"))?;
            Ok(if r.error_code == code::NONE {
                Ok(())
            } else {
                Err(r.error_code)
            })
        })
    }

    /// OffsetDelete of `partitions` of `topic`; per-partition refusals come back as
    /// (partition, code).
    pub fn delete_offsets(
        &mut self,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Result<Vec<(i32, i16)>, i16>> {
        self.at_coordinator(group, "OffsetDelete", |conn| {
            let req = OffsetDeleteRequest::default()
                .with_group_id(proto::group_id(group))
                .with_topics(vec![OffsetDeleteRequestTopic::default()
                    .with_name(proto::topic_name(topic))
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|&p| {
                                OffsetDeleteRequestPartition::default().with_partition_index(p)
                            })
                            .collect(),
                    )]);
            let resp = conn.send(&req)?;
            if resp.error_code != code::NONE {
                return Ok(Err(resp.error_code));
            }
            Ok(Ok(resp
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .filter(|p| p.error_code != code::NONE)
                .map(|p| (p.partition_index, p.error_code))
                .collect()))
        })
    }

    /// Log start and end offsets of every partition of `topic`; `None` when it does not exist.
    pub fn log_offsets(&mut self, topic: &str) -> Result<Option<LogOffsets>> {
        self.log_offsets_to(topic, OffsetSpec::Latest)
    }

    /// [`Self::log_offsets`] with the end `end` asks for (the last stable offset, for the
    /// lag of a group whose consumers read committed).
    pub fn log_offsets_to(&mut self, topic: &str, end: OffsetSpec) -> Result<Option<LogOffsets>> {
        let routing = match metadata::lookup(&mut self.conn, topic) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(topic, error = %e, "no log offsets");
                return Ok(None);
            }
        };
        Ok(Some(LogOffsets {
            start: metadata::offsets(&routing, OffsetSpec::Earliest)?,
            end: metadata::offsets(&routing, end)?,
        }))
    }

    /// The first offset at or after `ms` per partition of `topic` (-1 where none is).
    pub fn offsets_at(&mut self, topic: &str, ms: i64) -> Result<Vec<i64>> {
        let routing = metadata::lookup(&mut self.conn, topic)?;
        metadata::offsets(&routing, OffsetSpec::AtMs(ms))
    }
}

/// What an operator should do about a refused commit.
fn active_hint(code: i16) -> &'static str {
    match code {
        code::REBALANCE_IN_PROGRESS | code::UNKNOWN_MEMBER_ID | code::ILLEGAL_GENERATION => {
            " (the group has active members; stop its consumers first)"
        }
        _ => "",
    }
}

fn group_state(g: DescribedGroup) -> Result<GroupState> {
    let consumer = g.protocol_type.as_str() == proto::PROTOCOL_TYPE;
    let members = g
        .members
        .into_iter()
        .map(|m| {
            let assignment = if consumer {
                proto::decode_assignment(&m.member_assignment)
                    .with_context(|| format!("member {}", m.member_id.as_str()))?
            } else {
                Vec::new()
            };
            Ok(MemberState {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                assignment,
                ..MemberState::default()
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(GroupState {
        state: g.group_state.to_string(),
        protocol_type: g.protocol_type.to_string(),
        protocol: g.protocol_data.to_string(),
        epochs: None,
        members,
    })
}

/// Topic names and partitions of a ConsumerGroupDescribe assignment, sorted.
fn named_partitions(a: &consumer_group_describe_response::Assignment) -> Vec<(String, Vec<i32>)> {
    let mut out: Vec<(String, Vec<i32>)> = a
        .topic_partitions
        .iter()
        .map(|t| {
            let mut ps = t.partitions.clone();
            ps.sort_unstable();
            (t.topic_name.0.to_string(), ps)
        })
        .collect();
    out.sort();
    out
}

fn consumer_group_state(g: consumer_group_describe_response::DescribedGroup) -> GroupState {
    GroupState {
        state: g.group_state.to_string(),
        protocol_type: proto::PROTOCOL_TYPE.to_string(),
        protocol: g.assignor_name.to_string(),
        epochs: Some((g.group_epoch, g.assignment_epoch)),
        members: g
            .members
            .iter()
            .map(|m| MemberState {
                member_id: m.member_id.to_string(),
                group_instance_id: m.instance_id.as_ref().map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                assignment: named_partitions(&m.assignment),
                member_epoch: Some(m.member_epoch),
                target: named_partitions(&m.target_assignment),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{
        ApiVersionsResponse, DescribeGroupsResponse, RequestHeader, ResponseHeader,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    use super::*;

    /// A stand-in broker for the retry path (a real one is unavailable only while it loads):
    /// FindCoordinator answers COORDINATOR_NOT_AVAILABLE `unavailable` times, then names
    /// itself; DescribeGroups answers an Empty group. Returns its address and the number of
    /// FindCoordinator calls so far.
    fn fake_broker(unavailable: usize) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let finds = Arc::new(AtomicUsize::new(0));
        let counter = finds.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let counter = counter.clone();
                std::thread::spawn(move || serve(conn, port, unavailable, &counter));
            }
        });
        (format!("127.0.0.1:{port}"), finds)
    }

    fn serve(mut conn: TcpStream, port: u16, unavailable: usize, finds: &AtomicUsize) {
        loop {
            let mut size = [0u8; 4];
            if conn.read_exact(&mut size).is_err() {
                return;
            }
            let mut buf = vec![0u8; i32::from_be_bytes(size) as usize];
            conn.read_exact(&mut buf).expect("request");
            let key = ApiKey::try_from(i16::from_be_bytes([buf[0], buf[1]])).expect("key");
            let version = i16::from_be_bytes([buf[2], buf[3]]);
            let mut frame = Bytes::from(buf);
            let header =
                RequestHeader::decode(&mut frame, key.request_header_version(version)).unwrap();
            let mut out = BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id)
                .encode(&mut out, key.response_header_version(version))
                .unwrap();
            match key {
                ApiKey::ApiVersions => ApiVersionsResponse::default()
                    .with_api_keys(vec![
                        ApiVersion::default()
                            .with_api_key(ApiKey::FindCoordinator as i16)
                            .with_max_version(3),
                        ApiVersion::default()
                            .with_api_key(ApiKey::DescribeGroups as i16)
                            .with_max_version(4),
                    ])
                    .encode(&mut out, version),
                ApiKey::FindCoordinator => {
                    let resp = if finds.fetch_add(1, Ordering::SeqCst) < unavailable {
                        FindCoordinatorResponse::default()
                            .with_error_code(code::COORDINATOR_NOT_AVAILABLE)
                    } else {
                        FindCoordinatorResponse::default()
                            .with_host(StrBytes::from_static_str("127.0.0.1"))
                            .with_port(i32::from(port))
                    };
                    resp.encode(&mut out, version)
                }
                ApiKey::DescribeGroups => DescribeGroupsResponse::default()
                    .with_groups(vec![DescribedGroup::default()
                        .with_group_id(proto::group_id("g"))
                        .with_group_state(StrBytes::from_static_str("Empty"))])
                    .encode(&mut out, version),
                _ => return,
            }
            .expect("encode");
            conn.write_all(&(out.len() as i32).to_be_bytes()).unwrap();
            conn.write_all(&out).unwrap();
        }
    }

    #[test]
    fn an_unavailable_coordinator_is_asked_again_then_used() {
        let (addr, finds) = fake_broker(2);
        let mut c = Client::connect(&addr).unwrap();
        c.retry.backoff_ms_first = 1;
        let g = c.describe("g").unwrap();
        assert_eq!(g.state, "Empty");
        assert_eq!(finds.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_coordinator_that_stays_unavailable_is_a_clear_error() {
        let (addr, finds) = fake_broker(usize::MAX);
        let mut c = Client::connect(&addr).unwrap();
        c.retry = Retry {
            attempts_max: 3,
            backoff_ms_first: 1,
        };
        let e = format!("{:#}", c.describe("g").unwrap_err());
        assert!(e.contains("not available after 3 attempts"), "{e}");
        assert!(e.contains("CoordinatorNotAvailable (15)"), "{e}");
        assert_eq!(finds.load(Ordering::SeqCst), 3);
        let e = format!("{:#}", c.coordinator("g").unwrap_err());
        assert!(
            e.contains("no coordinator for group g after 3 attempts"),
            "{e}"
        );
    }
}
