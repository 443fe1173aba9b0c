//! Producer actors. One actor runs on one executor with one connection to each leader it
//! writes to. Each connection owns one reusable `ProduceFrame`: a Produce request that
//! carries a batch for each of several partitions led by that broker, as real clients send.
//! A partition's batch closes when it would grow past `--batch-bytes`; the request goes out
//! when it holds a batch of every partition the actor writes on that connection, when one
//! more batch would take it past `--request-bytes`, or in fixed-rate mode at `--linger-ms`
//! (at once without linger). Up to `--max-in-flight` requests are pipelined per connection.
//! A reader task per connection matches responses (Kafka answers in order per connection),
//! counts acknowledged messages per partition and records each message's latency.
//!
//! Without keys the actor fills one partition at a time (sticky, in connection order), so
//! batches are written straight into the request; with keys each partition's batch fills in
//! its own buffer and is copied into the request when it closes.
//!
//! Latency of a message: from its send call (in fixed-rate mode its intended send time, so a
//! stalled broker cannot hide behind a slowed sender) to its request's acknowledgement.
//! A batch keeps its first and last send times and its messages are counted linearly between
//! them (`record_linear`), which is exact in fixed-rate mode and needs no per-message state.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::tls::Stream;
use anyhow::{anyhow, bail, Context, Result};
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::AsyncWriteExt;
use glommio::sync::Semaphore;
use kafka_protocol::messages::ProduceResponse;

use super::encoder::{ProduceFrame, RequestTemplate, Section, SECTION_HEAD_BYTES};
use super::metadata::Routing;
use super::rate::RateSchedule;
use super::stats::{now_ns, record_linear, wall_ms, ActorStats};
use super::wire::{correlation_of, decode_response, read_frame_within};
use super::Control;

/// Shortest sleep of the fixed-rate writer loop (20 µs: at millions of messages per second
/// it sends tens of messages per wake-up instead of one).
const RATE_TICK_NS_MIN: u64 = 20_000;

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
    /// A request is sent before one more batch would take it past this.
    pub request_bytes: usize,
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

/// One partition's batch inside a request: what its acknowledgement counts and records.
#[derive(Debug, Clone, Copy)]
struct BatchMeta {
    partition: i32,
    messages: u64,
    bytes: u64,
    /// Send times of the batch's first and last message.
    first_ns: u64,
    last_ns: u64,
}

/// A request on the wire, waiting for its response; its batches are the next `batches`
/// entries of the connection's batch queue.
#[derive(Debug)]
struct InFlight {
    correlation_id: i32,
    batches: usize,
}

/// What a connection's reader task shares with the writer (queues keep their capacity, so
/// nothing is allocated per request).
#[derive(Default)]
struct Pipeline {
    requests: VecDeque<InFlight>,
    batches: VecDeque<BatchMeta>,
}

/// One connection: the write half and the request being built stay with the actor, the read
/// half runs in a task.
struct Conn {
    writer: WriteHalf<Stream>,
    permits: Rc<Semaphore>,
    pipeline: Rc<RefCell<Pipeline>>,
    failure: Rc<RefCell<Option<anyhow::Error>>>,
    _reader: glommio::Task<()>,
    next_correlation: i32,
    frame: ProduceFrame,
    /// Closed batches in `frame`, in order.
    pending: Vec<BatchMeta>,
    /// Partitions of this actor led by this connection's broker.
    partitions: usize,
}

/// A partition's open batch.
struct Slot {
    partition: i32,
    conn: usize,
    /// With keys: the batch fills here and is copied into the request when it closes.
    /// Without: it is written straight at the end of the connection's request.
    own: Option<(Vec<u8>, Option<Section>)>,
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
    /// Ordered by connection, so the sticky walk fills one request at a time.
    slots: Vec<Slot>,
    /// Slot index by partition id (keyed mode routes by partition).
    slot_of: Vec<usize>,
    /// Compression scratch of keyed batches.
    scratch: Vec<u8>,
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
        for &p in &cfg.partitions {
            let addr = cfg.routing.leader_addr(p as usize)?.to_string();
            let conn = match addrs.iter().position(|a| *a == addr) {
                Some(i) => i,
                None => {
                    addrs.push(addr);
                    addrs.len() - 1
                }
            };
            let own = (cfg.keys != KeyMode::None)
                .then(|| (Vec::with_capacity(cfg.batch_bytes + 256), None));
            slots.push(Slot {
                partition: p,
                conn,
                own,
                open: false,
                first_ns: 0,
                last_ns: 0,
            });
        }
        slots.sort_by_key(|s| (s.conn, s.partition));
        let mut slot_of = vec![usize::MAX; cfg.routing.partitions()];
        for (i, s) in slots.iter().enumerate() {
            slot_of[s.partition as usize] = i;
        }
        let mut conns = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let partitions = slots.iter().filter(|s| s.conn == i).count();
            conns.push(open_conn(addr, partitions, &cfg, &stats, &control).await?);
        }
        let rng = fastrand::Rng::with_seed(cfg.seed);
        Ok(Producer {
            cfg,
            stats,
            control,
            conns,
            slots,
            slot_of,
            scratch: Vec::new(),
            rng,
        })
    }

    /// The writer loop: fill batches, send requests, until the quota, the deadline or a stop.
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
            let mut now = now_ns();
            let due = match &schedule {
                Some(s) => s.due_by(now).min(quota) - sent,
                None => CHUNK.min(quota - sent),
            };
            if due == 0 {
                self.flush_expired(now).await?;
                // Waking for every message of a fast schedule would cost a timer per message;
                // a late message keeps its intended time, so latency still counts the wait.
                let next = schedule
                    .as_ref()
                    .map_or(now, |s| s.intended_ns(sent).max(now + RATE_TICK_NS_MIN));
                let linger_at = self.earliest_linger_deadline();
                let wake = linger_at.map_or(next, |l| l.min(next));
                if wake > now {
                    glommio::timer::sleep(Duration::from_nanos(wake - now)).await;
                }
                continue;
            }
            for _ in 0..due {
                let send_ns = schedule.as_ref().map_or(now, |s| s.intended_ns(sent));
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
                let stamp = self.cfg.stamp.then_some(send_ns);
                let batch_len = self.append(si, key, &payload[..size], stamp, send_ns)?;
                sent += 1;
                if batch_len + size_max + 32 > self.cfg.batch_bytes {
                    self.close_batch(si).await?;
                    if key.is_none() {
                        sticky = (sticky + 1) % self.slots.len();
                    }
                    // Sending may have waited for a permit: later messages are sent later.
                    now = now_ns();
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

    /// Appends one record to slot `si`'s batch (opening it if needed); returns the batch's
    /// bytes so far.
    fn append(
        &mut self,
        si: usize,
        key: Option<&[u8]>,
        value: &[u8],
        stamp: Option<u64>,
        send_ns: u64,
    ) -> Result<usize> {
        let compression = self.cfg.template.compression;
        let slot = &mut self.slots[si];
        let frame = &mut self.conns[slot.conn].frame;
        if !slot.open {
            match &mut slot.own {
                Some((buf, section)) => {
                    buf.clear();
                    *section = Some(Section::open(buf, slot.partition, compression, wall_ms()));
                }
                None => frame.open(slot.partition, wall_ms())?,
            }
            slot.open = true;
            slot.first_ns = send_ns;
        }
        slot.last_ns = send_ns;
        match &mut slot.own {
            Some((buf, Some(section))) => {
                section.push(buf, key, value, stamp);
                Ok(section.len(buf))
            }
            Some((_, None)) => bail!("partition {} has no open batch", slot.partition),
            None => {
                frame.push(key, value, stamp)?;
                Ok(frame.open_len())
            }
        }
    }

    /// Closes slot `si`'s batch into its connection's request and sends the request when it
    /// is full.
    async fn close_batch(&mut self, si: usize) -> Result<()> {
        let ci = self.slots[si].conn;
        let partition = self.slots[si].partition;
        // A partition appears once per request: a second batch waits for the next one. (Only
        // keyed batches can get there; a sticky walk closes each partition once per round.)
        if self.slots[si].own.is_some()
            && self.conns[ci]
                .pending
                .iter()
                .any(|b| b.partition == partition)
        {
            self.send(ci).await?;
        }
        self.close_into_frame(si)?;
        let conn = &self.conns[ci];
        let one_more = self.cfg.batch_bytes + SECTION_HEAD_BYTES;
        if conn.pending.len() >= conn.partitions
            || conn.frame.len() + one_more > self.cfg.request_bytes
        {
            self.send(ci).await?;
        }
        Ok(())
    }

    /// Closes slot `si`'s open batch (if any) into its connection's request, unsent.
    fn close_into_frame(&mut self, si: usize) -> Result<()> {
        let compression = self.cfg.template.compression;
        let slot = &mut self.slots[si];
        if !slot.open {
            return Ok(());
        }
        let conn = &mut self.conns[slot.conn];
        let (messages, bytes) = match &mut slot.own {
            Some((buf, section)) => {
                let Some(s) = section.take() else {
                    bail!("partition {} has no open batch", slot.partition);
                };
                s.close(buf, compression, &mut self.scratch)?;
                conn.frame.append_closed(buf)?;
                (s.count() as u64, s.payload_bytes())
            }
            None => conn.frame.close()?,
        };
        slot.open = false;
        conn.pending.push(BatchMeta {
            partition: slot.partition,
            messages,
            bytes,
            first_ns: slot.first_ns,
            last_ns: slot.last_ns,
        });
        Ok(())
    }

    fn check_readers(&self) -> Result<()> {
        for c in &self.conns {
            if let Some(e) = c.failure.borrow_mut().take() {
                return Err(e);
            }
        }
        Ok(())
    }

    /// When the oldest unsent message of connection `ci` was sent.
    fn oldest_unsent(&self, ci: usize) -> Option<u64> {
        let open = self
            .slots
            .iter()
            .filter(|s| s.open && s.conn == ci)
            .map(|s| s.first_ns);
        let closed = self.conns[ci].pending.iter().map(|b| b.first_ns);
        open.chain(closed).min()
    }

    fn earliest_linger_deadline(&self) -> Option<u64> {
        (0..self.conns.len())
            .filter_map(|ci| self.oldest_unsent(ci))
            .min()
            .map(|t| t + self.cfg.linger_ns)
    }

    /// Sends every request whose oldest message has waited `--linger-ms`.
    async fn flush_expired(&mut self, now: u64) -> Result<()> {
        for ci in 0..self.conns.len() {
            if self
                .oldest_unsent(ci)
                .is_some_and(|t| t + self.cfg.linger_ns <= now)
            {
                self.flush_conn(ci).await?;
            }
        }
        Ok(())
    }

    async fn flush_all(&mut self) -> Result<()> {
        for ci in 0..self.conns.len() {
            self.flush_conn(ci).await?;
        }
        Ok(())
    }

    /// Closes every open batch of connection `ci` into its request and sends it.
    async fn flush_conn(&mut self, ci: usize) -> Result<()> {
        for si in 0..self.slots.len() {
            if self.slots[si].conn == ci && self.slots[si].open {
                if self.slots[si].own.is_some()
                    && self.conns[ci]
                        .pending
                        .iter()
                        .any(|b| b.partition == self.slots[si].partition)
                {
                    self.send(ci).await?;
                }
                self.close_into_frame(si)?;
            }
        }
        self.send(ci).await
    }

    /// Writes connection `ci`'s request (its closed batches), waiting for an in-flight permit
    /// first. Nothing to send is not an error.
    async fn send(&mut self, ci: usize) -> Result<()> {
        let conn = &mut self.conns[ci];
        if conn.pending.is_empty() {
            return Ok(());
        }
        if conn.permits.acquire(1).await.is_err() {
            return Err(conn
                .failure
                .borrow_mut()
                .take()
                .unwrap_or_else(|| anyhow!("connection closed")));
        }
        debug_assert_eq!(conn.frame.batches(), conn.pending.len());
        let correlation_id = conn.next_correlation;
        conn.next_correlation = conn.next_correlation.wrapping_add(1);
        let frame = conn.frame.finish(correlation_id)?;
        let acks = self.cfg.template.acks;
        if acks != 0 {
            let mut pipe = conn.pipeline.borrow_mut();
            pipe.requests.push_back(InFlight {
                correlation_id,
                batches: conn.pending.len(),
            });
            pipe.batches.extend(conn.pending.iter().copied());
        }
        conn.writer
            .write_all(frame)
            .await
            .context("writing a produce request")?;
        // TLS records leave on flush (a no-op on plain TCP).
        conn.writer
            .flush()
            .await
            .context("writing a produce request")?;
        conn.frame.reset();
        if acks == 0 {
            // Nothing comes back: a message counts as sent once it is on the socket.
            let now = now_ns();
            for b in &conn.pending {
                self.control.add_acked(b.messages);
                self.stats.add(b.messages, b.bytes);
                self.stats
                    .record(|h| record_linear(h, b.first_ns, b.last_ns, b.messages, now));
            }
            conn.permits.signal(1);
        }
        conn.pending.clear();
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
    partitions: usize,
    cfg: &ProducerConfig,
    stats: &Arc<ActorStats>,
    control: &Arc<Control>,
) -> Result<Conn> {
    let stream = super::tls::connect(addr).await?;
    let (reader, writer) = futures_lite::io::split(stream);
    let permits = Rc::new(Semaphore::new(cfg.max_in_flight as u64));
    let pipeline = Rc::new(RefCell::new(Pipeline {
        requests: VecDeque::with_capacity(cfg.max_in_flight),
        batches: VecDeque::with_capacity(cfg.max_in_flight * partitions),
    }));
    let failure = Rc::new(RefCell::new(None));
    let task = glommio::spawn_local(read_loop(
        reader,
        permits.clone(),
        pipeline.clone(),
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
        pipeline,
        failure,
        _reader: task,
        next_correlation: 1,
        frame: ProduceFrame::new(cfg.template.clone(), cfg.request_bytes),
        pending: Vec::with_capacity(partitions),
        partitions,
    })
}

/// How long an answer may take: the request timeout the broker was given, plus slack.
fn response_wait(timeout_ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0) + 10_000)
}

/// Reads produce responses in order; on any failure, records it and closes the permits so
/// the writer stops waiting.
async fn read_loop(
    mut reader: ReadHalf<Stream>,
    permits: Rc<Semaphore>,
    pipeline: Rc<RefCell<Pipeline>>,
    failure: Rc<RefCell<Option<anyhow::Error>>>,
    stats: Arc<ActorStats>,
    control: Arc<Control>,
    (version, wait): (i16, Duration),
) {
    if let Err(e) = read_responses(
        &mut reader,
        &permits,
        &pipeline,
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
    reader: &mut ReadHalf<Stream>,
    permits: &Semaphore,
    pipeline: &RefCell<Pipeline>,
    stats: &ActorStats,
    control: &Control,
    version: i16,
    wait: Duration,
) -> Result<()> {
    loop {
        let Some(frame) = read_frame_within(reader, wait).await else {
            if pipeline.borrow().requests.is_empty() {
                continue;
            }
            bail!("no produce response within {} ms", wait.as_millis());
        };
        let frame = frame?;
        let now = now_ns();
        let corr = correlation_of(&frame)?;
        let mut pipe = pipeline.borrow_mut();
        let Some(req) = pipe.requests.pop_front() else {
            bail!("response {corr} with nothing in flight");
        };
        if corr != req.correlation_id {
            bail!(
                "response {corr} out of order, expected {}",
                req.correlation_id
            );
        }
        let (_, resp) = decode_response::<ProduceResponse>(frame, version)?;
        if pipe.batches.len() < req.batches {
            bail!(
                "response {corr}: {} batches recorded, {} sent",
                pipe.batches.len(),
                req.batches
            );
        }
        for b in pipe.batches.drain(..req.batches) {
            let error = resp
                .responses
                .iter()
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == b.partition)
                .map_or(-1, |p| p.error_code);
            if error == 0 {
                stats.add(b.messages, b.bytes);
                stats.record(|h| record_linear(h, b.first_ns, b.last_ns, b.messages, now));
                control.add_acked(b.messages);
            } else {
                stats.error(b.messages);
                tracing::debug!(partition = b.partition, error, "produce error");
            }
        }
        drop(pipe);
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
