//! Fetch: reads split by owning shard and merged in request order; long polling with
//! max_wait_ms / min_bytes; response and partition byte limits; full fetches and
//! incremental fetch sessions (KIP-227), kept per shard and bounded.

use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{refuse_topic, ApiSpec};
use crate::broker::shard::{FetchPart, FetchPartResult, Reader, Shard, ShardOp, ShardReply};
use crate::kafka::errors::{code, ErrorCode};
use crate::kafka::frame::{
    decode_body, encode_response, encode_response_spliced, splice_marker, FrameError, Request,
    ResponseFrame,
};
use crate::security::authz::Authz;
use crate::security::AclOperation;
use crate::store::{AbortedTxn, BatchSlice};
use crate::store::{LeaderEpoch, Offset, PartitionId, TopicPartition};

pub const SPEC: ApiSpec = ApiSpec {
    key: ApiKey::Fetch,
    min: 4,
    max: 12,
};

/// Epoch a client sends to fetch without a session, or to close one.
const FINAL_EPOCH: i32 = -1;

#[derive(Debug, Clone)]
struct SessionPart {
    tp: TopicPartition,
    offset: i64,
    partition_bytes_max: usize,
    current_leader_epoch: i32,
    last_hw: i64,
    last_log_start: i64,
}

#[derive(Debug)]
struct Session {
    parts: Vec<SessionPart>,
    next_epoch: i32,
    last_used: Instant,
}

/// The incremental fetch sessions of one shard.
#[derive(Debug)]
pub struct Sessions {
    sessions: HashMap<i32, Session>,
    sessions_max: usize,
    next_id: i32,
    shard: usize,
}

impl Sessions {
    pub fn new(sessions_max: usize, shard: usize) -> Sessions {
        Sessions {
            sessions: HashMap::new(),
            sessions_max,
            next_id: 1,
            shard,
        }
    }

    fn new_id(&mut self) -> i32 {
        // Ids carry the shard in their low byte so they never repeat across shards.
        loop {
            let id = ((self.next_id & 0x007f_ffff) << 8) | (self.shard as i32 & 0xff);
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if id > 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    fn insert(&mut self, parts: Vec<SessionPart>) -> i32 {
        if self.sessions_max == 0 {
            return 0;
        }
        if self.sessions.len() >= self.sessions_max {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.sessions.remove(&id);
            }
        }
        let id = self.new_id();
        self.sessions.insert(
            id,
            Session {
                parts,
                next_epoch: 1,
                last_used: Instant::now(),
            },
        );
        id
    }
}

/// What one fetch reads, and how the answer is shaped.
struct Plan {
    parts: Vec<SessionPart>,
    session_id: i32,
    /// Incremental: answer only partitions with something new.
    incremental: bool,
}

fn plan(shard: &Shard, body: &FetchRequest) -> Result<Plan, ErrorCode> {
    let requested: Vec<SessionPart> = body
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| SessionPart {
                tp: TopicPartition {
                    topic: t.topic.0.to_string(),
                    partition: PartitionId(p.partition),
                },
                offset: p.fetch_offset,
                partition_bytes_max: p.partition_max_bytes.max(0) as usize,
                current_leader_epoch: p.current_leader_epoch,
                last_hw: -1,
                last_log_start: -1,
            })
        })
        .collect();
    let mut sessions = shard.fetch_sessions.borrow_mut();
    if body.session_id == 0 {
        let session_id = if body.session_epoch == 0 {
            sessions.insert(requested.clone())
        } else {
            0
        };
        return Ok(Plan {
            parts: requested,
            session_id,
            incremental: false,
        });
    }
    if body.session_epoch == FINAL_EPOCH {
        sessions.sessions.remove(&body.session_id);
        return Ok(Plan {
            parts: requested,
            session_id: 0,
            incremental: false,
        });
    }
    let Some(session) = sessions.sessions.get_mut(&body.session_id) else {
        return Err(code::FETCH_SESSION_ID_NOT_FOUND);
    };
    if session.next_epoch != body.session_epoch {
        return Err(code::INVALID_FETCH_SESSION_EPOCH);
    }
    session.next_epoch = session.next_epoch.checked_add(1).unwrap_or(1);
    session.last_used = Instant::now();
    for f in &body.forgotten_topics_data {
        session.parts.retain(|p| {
            !(p.tp.topic == f.topic.0.as_str() && f.partitions.contains(&p.tp.partition.0))
        });
    }
    for r in requested {
        match session.parts.iter_mut().find(|p| p.tp == r.tp) {
            Some(p) => {
                p.offset = r.offset;
                p.partition_bytes_max = r.partition_bytes_max;
                p.current_leader_epoch = r.current_leader_epoch;
            }
            None => session.parts.push(r),
        }
    }
    Ok(Plan {
        parts: session.parts.clone(),
        session_id: body.session_id,
        incremental: true,
    })
}

/// A partition's answer: remote records arrive owned (they crossed the mesh), local ones
/// as the engine's slices, spliced into the response without a copy.
type PartOut = (FetchPartResult, Vec<BatchSlice>);

fn records_len(r: &PartOut) -> usize {
    r.0.records.as_ref().map(|b| b.len()).unwrap_or(0) + r.1.iter().map(|s| s.len()).sum::<usize>()
}

/// One read round across every shard; results in plan order. A part `refused` names an
/// error for (the authorizer's) is answered with it and not read.
async fn read_all(
    shard: &Rc<Shard>,
    parts: &[SessionPart],
    refused: &[Option<ErrorCode>],
    bytes_max: usize,
    reader: Reader,
) -> Vec<PartOut> {
    shard.wait_not_moving(parts.iter().map(|p| &p.tp)).await;
    let mut per: Vec<Vec<(usize, FetchPart)>> = (0..shard.count).map(|_| Vec::new()).collect();
    for (i, p) in parts.iter().enumerate() {
        if refused.get(i).copied().flatten().is_some() {
            continue;
        }
        let s = shard.owner_of(&p.tp);
        per[s].push((
            i,
            FetchPart {
                tp: p.tp.clone(),
                offset: Offset(p.offset),
                partition_bytes_max: p.partition_bytes_max,
                current_leader_epoch: LeaderEpoch(p.current_leader_epoch),
            },
        ));
    }
    let mut out: Vec<PartOut> = vec![
        (
            FetchPartResult {
                error: code::NOT_LEADER_OR_FOLLOWER,
                ..Default::default()
            },
            Vec::new()
        );
        parts.len()
    ];
    for (o, e) in out.iter_mut().zip(refused) {
        if let Some(e) = e {
            o.0.error = *e;
        }
    }
    let local = std::mem::take(&mut per[shard.id]);
    // Other shards read in parallel while this one reads its own partitions.
    let remote: Vec<_> = per
        .into_iter()
        .enumerate()
        .filter(|(_, g)| !g.is_empty())
        .map(|(s, group)| {
            let idx: Vec<usize> = group.iter().map(|(i, _)| *i).collect();
            let op = ShardOp::FetchRead {
                parts: group.into_iter().map(|(_, p)| p).collect(),
                bytes_max,
                reader,
            };
            let me = shard.clone();
            (
                idx,
                glommio::spawn_local(async move { me.call(s, op).await }),
            )
        })
        .collect();
    if !local.is_empty() {
        let idx: Vec<usize> = local.iter().map(|(i, _)| *i).collect();
        let local_parts: Vec<FetchPart> = local.into_iter().map(|(_, p)| p).collect();
        for (i, (r, slices, _)) in idx.into_iter().zip(
            shard
                .fetch_read_local(&local_parts, bytes_max, reader)
                .await,
        ) {
            out[i] = (r, slices);
        }
    }
    for (idx, task) in remote {
        if let ShardReply::Fetch(rs) = task.await {
            for (i, r) in idx.into_iter().zip(rs) {
                out[i] = (r, Vec::new());
            }
        }
    }
    // Every shard had the whole budget; keep it whole across them (the first partition
    // with data is always kept, so a consumer always makes progress).
    let mut left = bytes_max;
    let mut kept_any = false;
    for r in out.iter_mut() {
        let n = records_len(r);
        if n == 0 {
            continue;
        }
        if n <= left || !kept_any {
            left = left.saturating_sub(n);
            kept_any = true;
        } else {
            r.0.records = None;
            r.1.clear();
        }
    }
    out
}

/// Waits until any shard reports new data for the plan, or `wait` passes.
async fn wait_any(shard: &Rc<Shard>, parts: &[SessionPart], wait: Duration, reader: Reader) {
    let mut per: Vec<Vec<(TopicPartition, Offset)>> =
        (0..shard.count).map(|_| Vec::new()).collect();
    for p in parts {
        per[shard.owner_of(&p.tp)].push((p.tp.clone(), Offset(p.offset)));
    }
    let wait_ms = wait.as_millis() as u64;
    let mut tasks: Vec<_> = per
        .into_iter()
        .enumerate()
        .filter(|(_, g)| !g.is_empty())
        .map(|(s, g)| {
            let me = shard.clone();
            glommio::spawn_local(async move {
                let op = ShardOp::FetchWait {
                    parts: g,
                    wait_ms,
                    reader,
                };
                me.call(s, op).await
            })
        })
        .collect();
    if tasks.is_empty() {
        return;
    }
    futures_lite::future::poll_fn(|cx| {
        for t in tasks.iter_mut() {
            if std::pin::Pin::new(t).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

pub async fn handle(
    shard: &Rc<Shard>,
    authz: &Authz<'_>,
    req: &Request,
) -> Result<ResponseFrame, FrameError> {
    let body: FetchRequest = decode_body(req)?;
    let plan = match plan(shard, &body) {
        Ok(p) => p,
        Err(error) => {
            let resp = FetchResponse::default()
                .with_error_code(error.into())
                .with_session_id(0);
            return encode_response(req.header.correlation_id, req.version, &resp);
        }
    };
    let bytes_max = if body.max_bytes <= 0 {
        usize::MAX
    } else {
        body.max_bytes as usize
    };
    let wait_ms = (body.max_wait_ms.max(0) as u64).min(shard.config.fetch_wait_ms_max);
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let min_bytes = body.min_bytes.max(0) as usize;
    // A follower fetching as a replica sends its broker id; consumers send -1, and from
    // v11 on may be served by a follower (KIP-392).
    let reader = if body.replica_id.0 >= 0 {
        Reader::Follower(body.replica_id.0)
    } else {
        Reader::Consumer {
            from_follower: req.version >= 11,
            // Fetch v4 brought isolation levels; before it every read is uncommitted.
            read_committed: req.version >= 4 && body.isolation_level == 1,
        }
    };
    // Kafka's checks: a follower's fetch needs CLUSTER_ACTION on the cluster (every
    // partition TOPIC_AUTHORIZATION_FAILED without it), a consumer's READ on each topic.
    let follower_refused =
        matches!(reader, Reader::Follower(_)) && !authz.cluster(AclOperation::ClusterAction);
    let refused: Vec<Option<ErrorCode>> = plan
        .parts
        .iter()
        .map(|p| {
            if follower_refused {
                Some(code::TOPIC_AUTHORIZATION_FAILED)
            } else if matches!(reader, Reader::Follower(_)) {
                None
            } else {
                refuse_topic(authz, AclOperation::Read, &p.tp.topic)
            }
        })
        .collect();
    let mut results = read_all(shard, &plan.parts, &refused, bytes_max, reader).await;
    loop {
        let total: usize = results.iter().map(records_len).sum();
        // A refused partition ends no wait (Kafka long-polls the others), unless every
        // one is refused.
        let errors = results
            .iter()
            .zip(&refused)
            .any(|(r, x)| x.is_none() && r.0.error != code::NONE)
            || refused.iter().all(Option::is_some);
        let now = Instant::now();
        if total >= min_bytes
            || errors
            || now >= deadline
            || shard.stopping.is_set()
            || plan.parts.is_empty()
        {
            break;
        }
        // Wait for growth past what was just seen, so a wake-up means new data. A
        // follower waits for data past its own fetch offset (it reads beyond the high
        // watermark).
        let seen: Vec<SessionPart> = plan
            .parts
            .iter()
            .zip(&results)
            .map(|(p, r)| SessionPart {
                offset: if let Reader::Follower(_) = reader {
                    p.offset
                } else {
                    p.offset.max(r.0.high_watermark.0)
                },
                ..p.clone()
            })
            .collect();
        wait_any(shard, &seen, deadline - now, reader).await;
        results = read_all(shard, &plan.parts, &refused, bytes_max, reader).await;
    }
    let preferred = preferred_replicas(shard, &body, &plan, reader, &mut results);
    respond(shard, req, plan, results, &preferred)
}

/// KIP-392: a v11+ consumer in another rack than this leader is pointed at an in-sync
/// replica in its own rack (`preferred_read_replica`), with no records in this answer.
/// -1 where there is none.
fn preferred_replicas(
    shard: &Shard,
    body: &FetchRequest,
    plan: &Plan,
    reader: Reader,
    results: &mut [PartOut],
) -> Vec<i32> {
    let mut out = vec![-1; plan.parts.len()];
    let rack = body.rack_id.as_str();
    if rack.is_empty()
        || !matches!(
            reader,
            Reader::Consumer {
                from_follower: true,
                ..
            }
        )
    {
        return out;
    }
    for (i, p) in plan.parts.iter().enumerate() {
        if let Some(b) = shard
            .cluster
            .preferred_read_replica(&p.tp.topic, p.tp.partition.0, rack)
        {
            out[i] = b;
            results[i].0.records = None;
            results[i].1.clear();
        }
    }
    out
}

fn respond(
    shard: &Rc<Shard>,
    req: &Request,
    plan: Plan,
    results: Vec<PartOut>,
    preferred: &[i32],
) -> Result<ResponseFrame, FrameError> {
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut updates = Vec::new();
    let mut splices = Vec::new();
    for ((p, (r, slices)), preferred) in plan.parts.iter().zip(results).zip(preferred) {
        let spliced: usize = slices.iter().map(|s| s.len()).sum();
        let has_data = spliced > 0 || r.records.as_ref().is_some_and(|b| !b.is_empty());
        let changed = r.error != code::NONE
            || has_data
            || r.high_watermark.0 != p.last_hw
            || r.log_start.0 != p.last_log_start
            || *preferred >= 0;
        if plan.incremental && !changed {
            continue;
        }
        updates.push((p.tp.clone(), r.high_watermark, r.log_start));
        let records = if spliced == 0 {
            r.records.unwrap_or_default()
        } else if let Some(marker) = splice_marker(spliced) {
            splices.push(slices);
            marker
        } else {
            // Too large to splice: copy (bounded by the fetch's byte limits).
            let mut buf = bytes::BytesMut::with_capacity(spliced);
            slices.iter().for_each(|s| buf.extend_from_slice(s));
            buf.freeze()
        };
        let data = PartitionData::default()
            .with_partition_index(p.tp.partition.0)
            .with_error_code(r.error.into())
            .with_high_watermark(r.high_watermark.0)
            .with_last_stable_offset(r.last_stable.0)
            .with_log_start_offset(r.log_start.0)
            .with_aborted_transactions(aborted_transactions(&r.aborted))
            .with_preferred_read_replica(kafka_protocol::messages::BrokerId(*preferred))
            .with_records(Some(records));
        match topics.last_mut() {
            Some(t) if t.topic.0.as_str() == p.tp.topic => t.partitions.push(data),
            _ => topics.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(p.tp.topic.clone())))
                    .with_partitions(vec![data]),
            ),
        }
    }
    if plan.session_id != 0 {
        let mut sessions = shard.fetch_sessions.borrow_mut();
        if let Some(s) = sessions.sessions.get_mut(&plan.session_id) {
            for (tp, hw, ls) in updates {
                if let Some(p) = s.parts.iter_mut().find(|p| p.tp == tp) {
                    p.last_hw = hw.0;
                    p.last_log_start = ls.0;
                }
            }
        }
    }
    let resp = FetchResponse::default()
        .with_session_id(plan.session_id)
        .with_responses(topics);
    if splices.is_empty() {
        encode_response(req.header.correlation_id, req.version, &resp)
    } else {
        encode_response_spliced(req.header.correlation_id, req.version, &resp, splices)
    }
}

/// The aborted transactions of a `read_committed` answer (`None`: none, as Kafka encodes
/// an empty list for readers of every isolation level).
fn aborted_transactions(aborted: &[AbortedTxn]) -> Option<Vec<AbortedTransaction>> {
    if aborted.is_empty() {
        return None;
    }
    Some(
        aborted
            .iter()
            .map(|t| {
                AbortedTransaction::default()
                    .with_producer_id(kafka_protocol::messages::ProducerId(t.producer_id))
                    .with_first_offset(t.first_offset.0)
            })
            .collect(),
    )
}
