//! Consumer actors. Without `--group` each actor owns a fixed set of partitions (pinned
//! assignment: partition `p` goes to consumer `p % consumers`); with it, each actor is a
//! member of the consumer group (`group.rs`) and reads what the group assigns it, one
//! generation at a time. Either way it runs one fetch loop per leader it reads from,
//! one fetch in flight per connection, as Kafka consumers do. Record batches are walked in
//! place (no copy) for uncompressed data; compressed batches are decoded by `kafka-protocol`.
//! In end-to-end runs each value's first 8 bytes hold its send time on the bench clock.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures_lite::AsyncWriteExt;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;

use super::encoder::{get_varint, BATCH_HEADER_BYTES};
use super::group::{GroupConfig, GroupProgress};
use super::metadata::Routing;
use super::stats::{now_ns, ActorStats, LATENCY_NS_MAX};
use super::wire::{decode_response, encode_request, read_frame_within};
use super::Control;

/// How much longer than its max wait a fetch answer may take.
const FETCH_SLACK_MS: u64 = 30_000;

/// Where a consumer stops.
#[derive(Debug, Clone)]
pub enum Until {
    /// Each partition up to this offset (the end offsets when the run began).
    Offsets(Vec<i64>),
    /// Until the producers are done and everything they had acknowledged was read.
    ProducersDone,
    /// Until the stop flag (duration) or the shared message quota.
    Stop,
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub routing: Arc<Routing>,
    pub partitions: Vec<i32>,
    /// Start offset per partition id.
    pub start: Vec<i64>,
    pub until: Until,
    /// Read the send time from each value (end-to-end latency).
    pub stamped: bool,
    pub fetch_version: i16,
    pub max_wait_ms: i32,
    pub fetch_bytes_max: i32,
    pub partition_fetch_bytes_max: i32,
    /// Shared quota over all consumers.
    pub messages_max: Option<u64>,
    /// Consumer-group mode: `partitions` is unused, the group assigns them.
    pub group: Option<GroupConfig>,
}

/// Runs one consumer actor: a fetch loop per leader, all on this executor (or a group
/// member that runs them for each generation's assignment).
pub async fn run(cfg: ConsumerConfig, stats: Arc<ActorStats>, control: Arc<Control>) -> Result<()> {
    if let Some(g) = cfg.group.clone() {
        return super::group::run(cfg, g, stats, control).await;
    }
    let parts: Vec<(i32, i64)> = cfg
        .partitions
        .iter()
        .map(|&p| (p, cfg.start[p as usize]))
        .collect();
    let tasks = spawn_fetch_loops(&cfg, &parts, None, &stats, &control)?;
    let mut result = Ok(());
    for t in tasks {
        if let Err(e) = t.await {
            result = Err(e);
        }
    }
    result
}

/// A fetch loop's tie to the group generation it reads for: it stops when the generation is
/// revoked, publishes its positions (the offsets the member commits), and raises `failed`
/// when it ends with an error (the member then collects it).
#[derive(Debug, Clone)]
pub struct GenerationLink {
    pub revoked: Rc<Cell<bool>>,
    pub failed: Rc<Cell<bool>>,
    pub progress: Arc<GroupProgress>,
}

/// Spawns one fetch loop per leader of `parts` (partition, start offset) on this executor.
pub fn spawn_fetch_loops(
    cfg: &ConsumerConfig,
    parts: &[(i32, i64)],
    link: Option<GenerationLink>,
    stats: &Arc<ActorStats>,
    control: &Arc<Control>,
) -> Result<Vec<glommio::Task<Result<()>>>> {
    let mut by_leader: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    for &(p, start) in parts {
        by_leader
            .entry(cfg.routing.leader_addr(p as usize)?.to_string())
            .or_default()
            .push((p, start));
    }
    Ok(by_leader
        .into_iter()
        .map(|(addr, parts)| {
            let (cfg, link, stats, control) =
                (cfg.clone(), link.clone(), stats.clone(), control.clone());
            glommio::spawn_local(async move {
                let failed = link.as_ref().map(|l| l.failed.clone());
                let r = fetch_loop(addr, parts, cfg, link, stats, control).await;
                if let (Err(_), Some(f)) = (&r, failed) {
                    f.set(true);
                }
                r
            })
        })
        .collect())
}

struct PartitionState {
    partition: i32,
    offset: i64,
    target: Option<i64>,
}

async fn fetch_loop(
    addr: String,
    parts: Vec<(i32, i64)>,
    cfg: ConsumerConfig,
    link: Option<GenerationLink>,
    stats: Arc<ActorStats>,
    control: Arc<Control>,
) -> Result<()> {
    let mut stream = super::tls::connect(&addr).await?;
    let mut states: Vec<PartitionState> = parts
        .iter()
        .map(|&(p, start)| PartitionState {
            partition: p,
            offset: start,
            target: match &cfg.until {
                Until::Offsets(o) => Some(o[p as usize]),
                _ => None,
            },
        })
        .collect();
    let topic = TopicName(StrBytes::from_string(cfg.routing.topic.clone()));
    let mut out = Vec::new();
    let mut correlation = 0i32;
    loop {
        if link.as_ref().is_some_and(|l| l.revoked.get()) || done(&states, &cfg, &control) {
            return Ok(());
        }
        let partitions: Vec<FetchPartition> = states
            .iter()
            .filter(|s| s.target.is_none_or(|t| s.offset < t))
            .map(|s| {
                FetchPartition::default()
                    .with_partition(s.partition)
                    .with_current_leader_epoch(-1)
                    .with_fetch_offset(s.offset)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(cfg.partition_fetch_bytes_max)
            })
            .collect();
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(cfg.max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(cfg.fetch_bytes_max)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic.clone())
                .with_partitions(partitions)]);
        correlation = correlation.wrapping_add(1);
        out.clear();
        encode_request(&mut out, cfg.fetch_version, correlation, &req)?;
        let sent_ns = now_ns();
        stream
            .write_all(&out)
            .await
            .context("writing a fetch request")?;
        stream.flush().await.context("writing a fetch request")?;
        let wait =
            Duration::from_millis(u64::try_from(cfg.max_wait_ms).unwrap_or(0) + FETCH_SLACK_MS);
        let frame = read_frame_within(&mut stream, wait)
            .await
            .ok_or_else(|| anyhow!("no fetch response within {} ms", wait.as_millis()))??;
        let (corr, resp) = decode_response::<FetchResponse>(frame, cfg.fetch_version)?;
        if corr != correlation {
            bail!("fetch response {corr}, expected {correlation}");
        }
        if resp.error_code != 0 {
            bail!("fetch failed with error {}", resp.error_code);
        }
        let received_ns = now_ns();
        let (mut got, mut got_bytes) = (0u64, 0u64);
        for t in resp.responses {
            for p in t.partitions {
                let s = states
                    .iter_mut()
                    .find(|s| s.partition == p.partition_index)
                    .ok_or_else(|| {
                        anyhow!(
                            "fetch answered partition {} we did not ask for",
                            p.partition_index
                        )
                    })?;
                if p.error_code != 0 {
                    stats.error(1);
                    tracing::debug!(
                        partition = p.partition_index,
                        error = p.error_code,
                        "fetch error"
                    );
                    continue;
                }
                let Some(records) = p.records else { continue };
                let (n, bytes) =
                    consume_records(&records, &mut s.offset, cfg.stamped, received_ns, &stats)?;
                got += n;
                got_bytes += bytes;
            }
        }
        if let Some(l) = &link {
            for s in &states {
                l.progress.set_position(s.partition, s.offset);
            }
        }
        // With a shared --messages quota, count only up to it (a fetch may bring more).
        let before = control.add_consumed(got);
        let counted = match cfg.messages_max {
            Some(m) => got.min(m.saturating_sub(before)),
            None => got,
        };
        let counted_bytes = if got == 0 {
            0
        } else {
            (got_bytes as u128 * counted as u128 / got as u128) as u64
        };
        stats.add(counted, counted_bytes);
        if !cfg.stamped && got > 0 {
            // Consume-only runs report the fetch round trip as their latency.
            stats.record(|h| {
                let _ = h.record(received_ns.saturating_sub(sent_ns).clamp(1, LATENCY_NS_MAX));
            });
        }
    }
}

fn done(states: &[PartitionState], cfg: &ConsumerConfig, control: &Control) -> bool {
    if control.stopping_consumers() {
        return true;
    }
    if cfg.messages_max.is_some_and(|m| control.consumed() >= m) {
        return true;
    }
    match &cfg.until {
        Until::Offsets(_) => states
            .iter()
            .all(|s| s.target.is_some_and(|t| s.offset >= t)),
        Until::ProducersDone => control.producers_done() && control.consumed() >= control.acked(),
        Until::Stop => false,
    }
}

/// Counts the records of a fetch answer at or past `*offset`, advancing it past every
/// complete batch. Returns (messages, key + value bytes).
fn consume_records(
    records: &Bytes,
    offset: &mut i64,
    stamped: bool,
    now: u64,
    stats: &ActorStats,
) -> Result<(u64, u64)> {
    if !stamped {
        return scan_batches(records, offset, &mut |_| {});
    }
    // Every message's own latency, recorded under one lock per fetch answer (no buffer).
    let mut scanned = Ok((0, 0));
    stats.record(|h| {
        let mut on_value = |v: Option<&[u8]>| {
            if let Some(s) = v
                .and_then(|v| v.get(..8))
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
            {
                let latency = now.saturating_sub(u64::from_be_bytes(s));
                let _ = h.record(latency.clamp(1, LATENCY_NS_MAX));
            }
        };
        scanned = scan_batches(records, offset, &mut on_value);
    });
    scanned
}

/// Walks the complete batches in `records` (a trailing partial batch is ignored, as the
/// protocol allows), calls `on_value` for each record at or past `*offset`, and moves
/// `*offset` past each batch. Returns (records, key + value bytes).
pub fn scan_batches(
    records: &Bytes,
    offset: &mut i64,
    on_value: &mut dyn FnMut(Option<&[u8]>),
) -> Result<(u64, u64)> {
    let b = records.as_ref();
    let mut at = 0usize;
    let (mut n, mut bytes) = (0u64, 0u64);
    while at + BATCH_HEADER_BYTES <= b.len() {
        let base = i64::from_be_bytes(b[at..at + 8].try_into()?);
        let batch_len = i32::from_be_bytes(b[at + 8..at + 12].try_into()?);
        let total =
            12 + usize::try_from(batch_len).map_err(|_| anyhow!("negative batch length"))?;
        if at + total > b.len() {
            break;
        }
        if b[at + 16] != 2 {
            bail!("record batch magic {} is not 2", b[at + 16]);
        }
        let attributes = i16::from_be_bytes(b[at + 21..at + 23].try_into()?);
        let last_delta = i32::from_be_bytes(b[at + 23..at + 27].try_into()?);
        let next = base + i64::from(last_delta) + 1;
        let batch = &b[at..at + total];
        let is_control = attributes & 0x20 != 0;
        if next > *offset && !is_control {
            if attributes & 0x7 == 0 {
                walk_records(batch, base, *offset, &mut n, &mut bytes, on_value)?;
            } else {
                let mut buf = records.slice(at..at + total);
                let set = RecordBatchDecoder::decode(&mut buf)
                    .map_err(|e| anyhow!("decoding a compressed batch: {e}"))?;
                for r in set.records.iter().filter(|r| r.offset >= *offset) {
                    n += 1;
                    bytes += (r.key.as_ref().map_or(0, |k| k.len())
                        + r.value.as_ref().map_or(0, |v| v.len()))
                        as u64;
                    on_value(r.value.as_deref());
                }
            }
        }
        *offset = (*offset).max(next);
        at += total;
    }
    Ok((n, bytes))
}

fn walk_records(
    batch: &[u8],
    base: i64,
    from: i64,
    n: &mut u64,
    bytes: &mut u64,
    on_value: &mut dyn FnMut(Option<&[u8]>),
) -> Result<()> {
    let count = i32::from_be_bytes(batch[57..61].try_into()?);
    let mut at = BATCH_HEADER_BYTES;
    let bad = || anyhow!("malformed record in batch at offset {base}");
    for _ in 0..count {
        let len = get_varint(batch, &mut at).ok_or_else(bad)?;
        let end = at + usize::try_from(len).map_err(|_| bad())?;
        if end > batch.len() {
            return Err(bad());
        }
        at += 1; // attributes
        get_varint(batch, &mut at).ok_or_else(bad)?; // timestamp delta
        let delta = get_varint(batch, &mut at).ok_or_else(bad)?;
        let key_len = get_varint(batch, &mut at).ok_or_else(bad)?;
        let key_bytes = usize::try_from(key_len).unwrap_or(0);
        at += key_bytes;
        let value_len = get_varint(batch, &mut at).ok_or_else(bad)?;
        let value = match usize::try_from(value_len) {
            Ok(l) => Some(batch.get(at..at + l).ok_or_else(bad)?),
            Err(_) => None,
        };
        if base + delta >= from {
            *n += 1;
            *bytes += (key_bytes + value.map_or(0, <[u8]>::len)) as u64;
            on_value(value);
        }
        at = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::encoder::{Compression, Section, SECTION_HEAD_BYTES};

    fn batches(compression: Compression, sizes: &[usize]) -> Bytes {
        let mut out = Vec::new();
        let mut base = 0i64;
        for &n in sizes {
            let mut b = Vec::new();
            let mut s = Section::open(&mut b, 0, compression, 0);
            for i in 0..n {
                s.push(
                    &mut b,
                    Some(b"key"),
                    &[i as u8; 20],
                    Some(1000 + base as u64 + i as u64),
                );
            }
            s.close(&mut b, compression, &mut Vec::new()).unwrap();
            let b = &mut b[SECTION_HEAD_BYTES..];
            b[..8].copy_from_slice(&base.to_be_bytes());
            out.extend_from_slice(b);
            base += n as i64;
        }
        Bytes::from(out)
    }

    #[test]
    fn scans_from_the_middle_of_a_batch_and_skips_a_partial_tail() {
        for c in [Compression::None, Compression::Lz4] {
            let mut all = batches(c, &[5, 7, 3]).to_vec();
            all.extend_from_slice(&[0u8; 30]); // a cut-off batch
            let records = Bytes::from(all);
            let mut offset = 3;
            let mut stamps = Vec::new();
            let (n, bytes) = scan_batches(&records, &mut offset, &mut |v| {
                stamps.push(u64::from_be_bytes(v.unwrap()[..8].try_into().unwrap()));
            })
            .unwrap();
            assert_eq!(n, 12, "{c:?}");
            assert_eq!(bytes, 12 * 23);
            assert_eq!(offset, 15);
            assert_eq!(stamps, (1003..1015).collect::<Vec<_>>());
        }
    }
}
