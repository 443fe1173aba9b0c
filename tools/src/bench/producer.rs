//! Producer actors. One actor runs on one executor with its own connection to each leader it
//! writes to. The writer side fills one reusable `BatchRequest` per partition and sends it
//! when it reaches `--batch-bytes` (or `--linger-ms` in fixed-rate mode); up to
//! `--max-in-flight` requests are pipelined per connection. A reader task per connection
//! matches responses (Kafka answers in order per connection), counts acknowledged messages
//! and records their latency.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use kafka_protocol::messages::ProduceResponse;

use super::encoder::{BatchRequest, Compression, RequestTemplate};
use super::metadata::Routing;
use super::rate::RateSchedule;
use super::stats::{now_ns, record_spread, wall_ms, ActorStats};
use super::wire::{correlation_of, decode_response, read_frame_within};
use super::Control;

/// How record keys are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyMode {
    None,
    Random,
    Sequential,
}

/// Everything one producer actor needs.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub routing: Arc<Routing>,
    /// Partitions this actor writes to (all of them when keys choose the partition).
    pub partitions: Vec<i32>,
    pub keys: KeyMode,
    pub message_bytes_min: usize,
    pub message_bytes_max: usize,
    pub batch_bytes: usize,
    pub linger_ns: u64,
    pub max_in_flight: usize,
    pub template: RequestTemplate,
    /// Messages per second for this actor (fixed-rate mode).
    pub rate: Option<f64>,
    /// Messages this actor sends at most.
    pub messages_max: Option<u64>,
    /// Write the send time into each value's first 8 bytes (end-to-end runs).
    pub stamp: bool,
    pub payload: Arc<Vec<u8>>,
    pub seed: u64,
}

/// A request on the wire, waiting for its response.
#[derive(Debug)]
struct InFlight {
    correlation_id: i32,
    partition: i32,
    messages: u64,
    bytes: u64,
    first_ns: u64,
    last_ns: u64,
}

/// One connection: the write half stays with the actor, the read half runs in a task.
struct Conn {
    writer: WriteHalf<TcpStream>,
    permits: Rc<Semaphore>,
    inflight: Rc<RefCell<VecDeque<InFlight>>>,
    failure: Rc<RefCell<Option<anyhow::Error>>>,
    _reader: glommio::Task<()>,
    next_correlation: i32,
}

/// A partition's open batch.
struct Slot {
    partition: i32,
    conn: usize,
    req: BatchRequest,
    open: bool,
    first_ns: u64,
    last_ns: u64,
}

/// Runs one producer actor to completion.
pub async fn run(cfg: ProducerConfig, stats: Arc<ActorStats>, control: Arc<Control>) -> Result<()> {
    let mut p = Producer::connect(cfg, stats, control).await?;
    let result = p.produce().await;
    let drained = p.drain().await;
    result.and(drained)
}

struct Producer {
    cfg: ProducerConfig,
    stats: Arc<ActorStats>,
    control: Arc<Control>,
    conns: Vec<Conn>,
    slots: Vec<Slot>,
    /// Slot index by partition id (keyed mode routes by partition).
    slot_of: Vec<usize>,
    rng: fastrand::Rng,
}

impl Producer {
    async fn connect(
        cfg: ProducerConfig,
        stats: Arc<ActorStats>,
        control: Arc<Control>,
    ) -> Result<Producer> {
        if cfg.partitions.is_empty() {
            bail!("producer has no partitions");
        }
        let mut addrs: Vec<String> = Vec::new();
        let mut slots = Vec::new();
        let mut slot_of = vec![usize::MAX; cfg.routing.partitions()];
        for &p in &cfg.partitions {
            let addr = cfg.routing.leader_addr(p as usize)?.to_string();
            let conn = match addrs.iter().position(|a| *a == addr) {
                Some(i) => i,
                None => {
                    addrs.push(addr);
                    addrs.len() - 1
                }
            };
            slot_of[p as usize] = slots.len();
            slots.push(Slot {
                partition: p,
                conn,
                req: BatchRequest::new(cfg.batch_bytes),
                open: false,
                first_ns: 0,
                last_ns: 0,
            });
        }
        let mut conns = Vec::new();
        for addr in &addrs {
            conns.push(open_conn(addr, &cfg, &stats, &control).await?);
        }
        let rng = fastrand::Rng::with_seed(cfg.seed);
        Ok(Producer {
            cfg,
            stats,
            control,
            conns,
            slots,
            slot_of,
            rng,
        })
    }

    /// The writer loop: fill batches, send them, until the quota, the deadline or a stop.
    async fn produce(&mut self) -> Result<()> {
        let schedule = self.cfg.rate.map(|r| RateSchedule::new(now_ns(), r));
        let quota = self.cfg.messages_max.unwrap_or(u64::MAX);
        let (size_min, size_max) = (self.cfg.message_bytes_min, self.cfg.message_bytes_max);
        let payload = self.cfg.payload.clone();
        let mut sent: u64 = 0;
        let mut sticky = 0usize;
        let mut key_buf: [u8; 8];
        // Messages appended between clock reads and yields in saturation mode.
        const CHUNK: u64 = 256;
        while sent < quota && !self.control.stopping() {
            self.check_readers()?;
            let now = now_ns();
            let due = match &schedule {
                Some(s) => s.due_by(now).min(quota) - sent,
                None => CHUNK.min(quota - sent),
            };
            if due == 0 {
                self.flush_expired(now).await?;
                let next = schedule.as_ref().map_or(now, |s| s.intended_ns(sent));
                let linger_at = self.earliest_linger_deadline();
                let wake = linger_at.map_or(next, |l| l.min(next));
                if wake > now {
                    glommio::timer::sleep(Duration::from_nanos(wake - now)).await;
                }
                continue;
            }
            for _ in 0..due {
                let intended = schedule.as_ref().map_or(now, |s| s.intended_ns(sent));
                let key: Option<&[u8]> = match self.cfg.keys {
                    KeyMode::None => None,
                    KeyMode::Random => {
                        key_buf = self.rng.u64(..).to_be_bytes();
                        Some(&key_buf)
                    }
                    KeyMode::Sequential => {
                        key_buf = sent.to_be_bytes();
                        Some(&key_buf)
                    }
                };
                let si = match key {
                    None => sticky,
                    Some(k) => {
                        let p = partition_for_key(k, self.cfg.routing.partitions());
                        match self.slot_of.get(p).copied().filter(|&s| s != usize::MAX) {
                            Some(s) => s,
                            None => {
                                bail!("key maps to partition {p}, which this producer does not own")
                            }
                        }
                    }
                };
                let size = if size_min == size_max {
                    size_min
                } else {
                    self.rng.usize(size_min..=size_max)
                };
                let slot = &mut self.slots[si];
                if !slot.open {
                    slot.req
                        .reset(&self.cfg.template, slot.partition, wall_ms());
                    slot.open = true;
                    slot.first_ns = intended;
                }
                slot.last_ns = intended;
                let stamp = self.cfg.stamp.then_some(intended);
                slot.req.push(key, &payload[..size], stamp);
                sent += 1;
                if slot.req.len() + size_max + 32 > self.cfg.batch_bytes {
                    self.send(si).await?;
                    if key.is_none() {
                        sticky = (sticky + 1) % self.slots.len();
                    }
                }
            }
            if schedule.is_some() {
                if self.cfg.linger_ns == 0 {
                    self.flush_all().await?;
                } else {
                    self.flush_expired(now_ns()).await?;
                }
            }
            glommio::yield_if_needed().await;
        }
        self.flush_all().await
    }

    fn check_readers(&self) -> Result<()> {
        for c in &self.conns {
            if let Some(e) = c.failure.borrow_mut().take() {
                return Err(e);
            }
        }
        Ok(())
    }

    fn earliest_linger_deadline(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter(|s| s.open)
            .map(|s| s.first_ns + self.cfg.linger_ns)
            .min()
    }

    async fn flush_expired(&mut self, now: u64) -> Result<()> {
        for i in 0..self.slots.len() {
            if self.slots[i].open && self.slots[i].first_ns + self.cfg.linger_ns <= now {
                self.send(i).await?;
            }
        }
        Ok(())
    }

    async fn flush_all(&mut self) -> Result<()> {
        for i in 0..self.slots.len() {
            if self.slots[i].open {
                self.send(i).await?;
            }
        }
        Ok(())
    }

    /// Finishes slot `si`'s batch and writes it, waiting for an in-flight permit first.
    async fn send(&mut self, si: usize) -> Result<()> {
        let slot = &mut self.slots[si];
        let conn = &mut self.conns[slot.conn];
        if conn.permits.acquire(1).await.is_err() {
            return Err(conn
                .failure
                .borrow_mut()
                .take()
                .unwrap_or_else(|| anyhow!("connection closed")));
        }
        let correlation_id = conn.next_correlation;
        conn.next_correlation = conn.next_correlation.wrapping_add(1);
        let messages = slot.req.count() as u64;
        let bytes = slot.req.payload_bytes();
        let compression: Compression = self.cfg.template.compression;
        let frame = slot.req.finish(compression, correlation_id)?;
        let acks = self.cfg.template.acks;
        if acks != 0 {
            conn.inflight.borrow_mut().push_back(InFlight {
                correlation_id,
                partition: slot.partition,
                messages,
                bytes,
                first_ns: slot.first_ns,
                last_ns: slot.last_ns,
            });
        }
        conn.writer
            .write_all(frame)
            .await
            .context("writing a produce request")?;
        slot.open = false;
        if acks == 0 {
            // Nothing comes back: a message counts as sent once it is on the socket.
            let now = now_ns();
            self.control.add_acked(messages);
            self.stats.add(messages, bytes);
            let (f, l) = (slot.first_ns, slot.last_ns);
            self.stats.record(|h| record_spread(h, f, l, messages, now));
            conn.permits.signal(1);
        }
        Ok(())
    }

    /// Waits for every in-flight request to be answered.
    async fn drain(&mut self) -> Result<()> {
        let n = self.cfg.max_in_flight as u64;
        for c in &self.conns {
            if c.permits.acquire(n).await.is_err() {
                return Err(c
                    .failure
                    .borrow_mut()
                    .take()
                    .unwrap_or_else(|| anyhow!("connection closed")));
            }
        }
        self.check_readers()
    }
}

async fn open_conn(
    addr: &str,
    cfg: &ProducerConfig,
    stats: &Arc<ActorStats>,
    control: &Arc<Control>,
) -> Result<Conn> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| anyhow!("connecting to {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| anyhow!("setting TCP_NODELAY: {e}"))?;
    let (reader, writer) = futures_lite::io::split(stream);
    let permits = Rc::new(Semaphore::new(cfg.max_in_flight as u64));
    let inflight = Rc::new(RefCell::new(VecDeque::with_capacity(cfg.max_in_flight)));
    let failure = Rc::new(RefCell::new(None));
    let task = glommio::spawn_local(read_loop(
        reader,
        permits.clone(),
        inflight.clone(),
        failure.clone(),
        stats.clone(),
        control.clone(),
        (
            cfg.template.api_version,
            response_wait(cfg.template.timeout_ms),
        ),
    ));
    Ok(Conn {
        writer,
        permits,
        inflight,
        failure,
        _reader: task,
        next_correlation: 1,
    })
}

/// How long an answer may take: the request timeout the broker was given, plus slack.
fn response_wait(timeout_ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0) + 10_000)
}

/// Reads produce responses in order; on any failure, records it and closes the permits so
/// the writer stops waiting.
async fn read_loop(
    mut reader: ReadHalf<TcpStream>,
    permits: Rc<Semaphore>,
    inflight: Rc<RefCell<VecDeque<InFlight>>>,
    failure: Rc<RefCell<Option<anyhow::Error>>>,
    stats: Arc<ActorStats>,
    control: Arc<Control>,
    (version, wait): (i16, Duration),
) {
    if let Err(e) = read_responses(
        &mut reader,
        &permits,
        &inflight,
        &stats,
        &control,
        version,
        wait,
    )
    .await
    {
        *failure.borrow_mut() = Some(e);
        permits.close();
    }
}

async fn read_responses(
    reader: &mut ReadHalf<TcpStream>,
    permits: &Semaphore,
    inflight: &RefCell<VecDeque<InFlight>>,
    stats: &ActorStats,
    control: &Control,
    version: i16,
    wait: Duration,
) -> Result<()> {
    loop {
        let Some(frame) = read_frame_within(reader, wait).await else {
            if inflight.borrow().is_empty() {
                continue;
            }
            bail!("no produce response within {} ms", wait.as_millis());
        };
        let frame = frame?;
        let now = now_ns();
        let corr = correlation_of(&frame)?;
        let Some(req) = inflight.borrow_mut().pop_front() else {
            bail!("response {corr} with nothing in flight");
        };
        if corr != req.correlation_id {
            bail!(
                "response {corr} out of order, expected {}",
                req.correlation_id
            );
        }
        let (_, resp) = decode_response::<ProduceResponse>(frame, version)?;
        let error = resp
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == req.partition)
            .map_or(-1, |p| p.error_code);
        if error == 0 {
            stats.add(req.messages, req.bytes);
            stats.record(|h| record_spread(h, req.first_ns, req.last_ns, req.messages, now));
            control.add_acked(req.messages);
        } else {
            stats.error(req.messages);
            tracing::debug!(partition = req.partition, error, "produce error");
        }
        permits.signal(1);
    }
}

/// Kafka's default partitioner for keyed records: murmur2 of the key, positive, modulo the
/// partition count.
pub fn partition_for_key(key: &[u8], partitions: usize) -> usize {
    (murmur2(key) & 0x7fff_ffff) as usize % partitions
}

/// Murmur2 as the Java client computes it (seed 0x9747b28c).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 3] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
        ];
        for (k, want) in cases {
            assert_eq!(murmur2(k) as i32, want, "{}", String::from_utf8_lossy(k));
        }
    }
}
