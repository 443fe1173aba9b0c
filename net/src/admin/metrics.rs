//! Process-wide counters, read by the admin endpoint. Relaxed atomics: each is a plain
//! count, no ordering between them is relied on.

use std::collections::BTreeMap;
use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Highest API key counted separately (keys above share the last slot).
const API_KEYS_MAX: usize = 80;
/// Latency bucket upper bounds in microseconds (the last is +Inf).
const BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000,
];

struct ApiStats {
    requests: AtomicU64,
    errors: AtomicU64,
    latency_us_sum: AtomicU64,
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const API_ZERO: ApiStats = ApiStats {
    requests: ZERO,
    errors: ZERO,
    latency_us_sum: ZERO,
    buckets: [ZERO; BUCKETS_US.len() + 1],
};

static APIS: [ApiStats; API_KEYS_MAX + 1] = [API_ZERO; API_KEYS_MAX + 1];
static BYTES_IN: AtomicU64 = AtomicU64::new(0);
static BYTES_OUT: AtomicU64 = AtomicU64::new(0);
static CONNECTIONS_OPEN: AtomicU64 = AtomicU64::new(0);
static CONNECTIONS_TOTAL: AtomicU64 = AtomicU64::new(0);
static BAD_FRAMES: AtomicU64 = AtomicU64::new(0);
/// Bytes of requests being read or not answered, every shard (`queued.max.request.bytes`).
static REQUEST_BYTES_QUEUED: AtomicI64 = AtomicI64::new(0);
/// Frames that waited for room in their shard's request byte budget.
static REQUEST_READS_PAUSED: AtomicU64 = AtomicU64::new(0);
/// Connections closed on accept, by the bound that refused them (per shard, total, per
/// address), in `ConnectionRefusal` order.
static CONNECTIONS_REFUSED: [AtomicU64; 3] = [ZERO, ZERO, ZERO];
static CONNECTIONS_IDLE_CLOSED: AtomicU64 = AtomicU64::new(0);
static TLS_HANDSHAKES_FAILED: AtomicU64 = AtomicU64::new(0);
static SASL_AUTHENTICATIONS: AtomicU64 = AtomicU64::new(0);
static SASL_AUTHENTICATION_FAILURES: AtomicU64 = AtomicU64::new(0);
static GROUP_REBALANCES: AtomicU64 = AtomicU64::new(0);
static GROUP_MEMBERS_EXPIRED: AtomicU64 = AtomicU64::new(0);
static OFFSET_COMMITS: AtomicU64 = AtomicU64::new(0);
/// Transactions this broker's coordinator finished: committed, aborted (by the producer
/// or a new incarnation), aborted at their timeout.
static TXNS_COMMITTED: AtomicU64 = AtomicU64::new(0);
static TXNS_ABORTED: AtomicU64 = AtomicU64::new(0);
static TXNS_TIMED_OUT: AtomicU64 = AtomicU64::new(0);
/// Transactions open (ongoing or being prepared) on each shard's coordinator partitions,
/// as last published.
static TXNS_OPEN: Mutex<BTreeMap<usize, u64>> = Mutex::new(BTreeMap::new());

/// The consumer groups of one shard's coordinator partitions, as last published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupStat {
    /// Groups per state, in `GROUP_STATES` order.
    pub by_state: [u64; 4],
    pub members: u64,
    pub committed_offsets: u64,
}

/// State names of `GroupStat::by_state`, as Kafka names them.
pub const GROUP_STATES: [&str; 4] = [
    "Empty",
    "PreparingRebalance",
    "CompletingRebalance",
    "Stable",
];

static GROUPS: Mutex<BTreeMap<usize, GroupStat>> = Mutex::new(BTreeMap::new());

/// Replaces shard `shard`'s published group figures.
pub fn publish_groups(shard: usize, stat: GroupStat) {
    if let Ok(mut map) = GROUPS.lock() {
        map.insert(shard, stat);
    }
}

/// A rebalance completed with members (a new generation).
pub fn group_rebalanced() {
    GROUP_REBALANCES.fetch_add(1, Ordering::Relaxed);
}

/// A member was removed for missing its session timeout.
pub fn group_member_expired() {
    GROUP_MEMBERS_EXPIRED.fetch_add(1, Ordering::Relaxed);
}

/// Partitions' offsets committed (durable).
pub fn offsets_committed(n: usize) {
    OFFSET_COMMITS.fetch_add(n as u64, Ordering::Relaxed);
}

/// A transaction this broker coordinates ended (its Complete state durable).
pub fn transaction_completed(committed: bool) {
    let counter = if committed {
        &TXNS_COMMITTED
    } else {
        &TXNS_ABORTED
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Replaces shard `shard`'s count of open transactions it coordinates.
pub fn publish_open_transactions(shard: usize, open: u64) {
    if let Ok(mut map) = TXNS_OPEN.lock() {
        map.insert(shard, open);
    }
}

/// An open transaction was aborted at its timeout (counted again when it completes).
pub fn transaction_timed_out() {
    TXNS_TIMED_OUT.fetch_add(1, Ordering::Relaxed);
}

/// One partition's log as its shard last published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStat {
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// What consumers can read (written to the segment files).
    pub high_watermark: i64,
    /// What `read_committed` consumers can read (below open transactions).
    pub last_stable_offset: i64,
    pub size_bytes: u64,
    pub segments: usize,
    pub traffic: TrafficStat,
}

/// A partition's traffic on its shard: totals since it came to the shard, and rates over
/// the shard's last publishing interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficStat {
    pub bytes_in_total: u64,
    pub bytes_out_total: u64,
    pub produce_requests_total: u64,
    pub fetch_requests_total: u64,
    pub bytes_in_per_s: u64,
    pub bytes_out_per_s: u64,
    pub produce_requests_per_s: u64,
    pub fetch_requests_per_s: u64,
}

/// A shard's memory, as last published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStat {
    /// Partitions with an open log on the shard.
    pub partitions: usize,
    pub tail_cache_bytes: usize,
    /// Per task queue (`produce`, `fetch`): times run and CPU time used, since start.
    pub queues: [QueueStat; 2],
    pub write_pending_bytes: usize,
    /// Partitions the shard leads whose ISR lacks a replica.
    pub under_replicated: usize,
    /// ISR changes this shard's leaders made, since start.
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    /// Client connections the shard serves (or is being handed).
    pub connections: usize,
}

/// One task queue of a shard, as last published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStat {
    pub name: &'static str,
    /// Times the scheduler ran the queue.
    pub selected: u64,
    pub runtime_us: u64,
}

/// Per-shard snapshots, replaced whole by each shard's publisher (a shard's state is not
/// `Send`, so the admin thread reads these copies instead).
static PARTITIONS: Mutex<BTreeMap<usize, (ShardStat, Vec<PartitionStat>)>> =
    Mutex::new(BTreeMap::new());

/// Replaces shard `shard`'s published partition and memory figures.
pub fn publish_shard(shard: usize, stat: ShardStat, partitions: Vec<PartitionStat>) {
    if let Ok(mut map) = PARTITIONS.lock() {
        map.insert(shard, (stat, partitions));
    }
}

/// Every published partition's traffic, by (topic, partition).
pub fn partition_traffic() -> std::collections::HashMap<(String, i32), TrafficStat> {
    let Ok(map) = PARTITIONS.lock() else {
        return Default::default();
    };
    map.values()
        .flat_map(|(_, ps)| ps.iter())
        .map(|p| ((p.topic.clone(), p.partition), p.traffic))
        .collect()
}

/// A per-partition gauge: how to read its value.
type Gauge = fn(&PartitionStat) -> String;
/// A per-shard gauge: how to read its value.
type ShardGauge = fn(&ShardStat) -> usize;

fn render_partitions(out: &mut String) {
    let Ok(map) = PARTITIONS.lock() else { return };
    let gauges: [(&str, Gauge); 7] = [
        ("sluice_partition_log_start_offset", |p| {
            p.log_start_offset.to_string()
        }),
        ("sluice_partition_log_end_offset", |p| {
            p.log_end_offset.to_string()
        }),
        ("sluice_partition_high_watermark", |p| {
            p.high_watermark.to_string()
        }),
        ("sluice_partition_last_stable_offset", |p| {
            p.last_stable_offset.to_string()
        }),
        ("sluice_partition_lso_lag", |p| {
            (p.high_watermark - p.last_stable_offset).max(0).to_string()
        }),
        ("sluice_partition_size_bytes", |p| p.size_bytes.to_string()),
        ("sluice_partition_segments", |p| p.segments.to_string()),
    ];
    let counters: [(&str, Gauge); 4] = [
        ("sluice_partition_bytes_in_total", |p| {
            p.traffic.bytes_in_total.to_string()
        }),
        ("sluice_partition_bytes_out_total", |p| {
            p.traffic.bytes_out_total.to_string()
        }),
        ("sluice_partition_produce_requests_total", |p| {
            p.traffic.produce_requests_total.to_string()
        }),
        ("sluice_partition_fetch_requests_total", |p| {
            p.traffic.fetch_requests_total.to_string()
        }),
    ];
    let typed = gauges
        .into_iter()
        .map(|g| ("gauge", g))
        .chain(counters.into_iter().map(|c| ("counter", c)));
    for (kind, (name, value)) in typed {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (shard, (_, partitions)) in map.iter() {
            for p in partitions {
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{}\",partition=\"{}\",shard=\"{shard}\"}} {}",
                    p.topic,
                    p.partition,
                    value(p)
                );
            }
        }
    }
    let shard_gauges: [(&str, ShardGauge); 4] = [
        ("sluice_shard_partitions", |s| s.partitions),
        ("sluice_shard_connections", |s| s.connections),
        ("sluice_shard_tail_cache_bytes", |s| s.tail_cache_bytes),
        ("sluice_shard_write_pending_bytes", |s| {
            s.write_pending_bytes
        }),
    ];
    for (name, value) in shard_gauges {
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (shard, (stat, _)) in map.iter() {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", value(stat));
        }
    }
    let sum = |f: fn(&ShardStat) -> u64| map.values().map(|(s, _)| f(s)).sum::<u64>();
    let replication: [(&str, &str, u64); 3] = [
        (
            "sluice_under_replicated_partitions",
            "gauge",
            sum(|s| s.under_replicated as u64),
        ),
        (
            "sluice_isr_shrinks_total",
            "counter",
            sum(|s| s.isr_shrinks),
        ),
        (
            "sluice_isr_expands_total",
            "counter",
            sum(|s| s.isr_expands),
        ),
    ];
    for (name, kind, value) in replication {
        single(out, name, kind, None, value);
    }
    let _ = writeln!(out, "# TYPE sluice_shard_task_queue_runs_total counter");
    let _ = writeln!(
        out,
        "# TYPE sluice_shard_task_queue_runtime_seconds_total counter"
    );
    for (shard, (stat, _)) in map.iter() {
        for q in stat.queues.iter().filter(|q| !q.name.is_empty()) {
            let labels = format!("shard=\"{shard}\",queue=\"{}\"", q.name);
            let _ = writeln!(
                out,
                "sluice_shard_task_queue_runs_total{{{labels}}} {}",
                q.selected
            );
            let _ = writeln!(
                out,
                "sluice_shard_task_queue_runtime_seconds_total{{{labels}}} {}",
                q.runtime_us as f64 / 1e6
            );
        }
    }
}

pub fn request(api_key: i16, latency: Duration, error: bool) {
    let s = &APIS[(api_key.max(0) as usize).min(API_KEYS_MAX)];
    s.requests.fetch_add(1, Ordering::Relaxed);
    if error {
        s.errors.fetch_add(1, Ordering::Relaxed);
    }
    let us = latency.as_micros().min(u64::MAX as u128) as u64;
    s.latency_us_sum.fetch_add(us, Ordering::Relaxed);
    let b = BUCKETS_US
        .iter()
        .position(|&le| us <= le)
        .unwrap_or(BUCKETS_US.len());
    s.buckets[b].fetch_add(1, Ordering::Relaxed);
}

pub fn bytes_in(n: usize) {
    BYTES_IN.fetch_add(n as u64, Ordering::Relaxed);
}
pub fn bytes_out(n: usize) {
    BYTES_OUT.fetch_add(n as u64, Ordering::Relaxed);
}
pub fn connection_opened() {
    CONNECTIONS_OPEN.fetch_add(1, Ordering::Relaxed);
    CONNECTIONS_TOTAL.fetch_add(1, Ordering::Relaxed);
}
pub fn connection_closed() {
    CONNECTIONS_OPEN.fetch_sub(1, Ordering::Relaxed);
}
pub fn bad_frame() {
    BAD_FRAMES.fetch_add(1, Ordering::Relaxed);
}
/// Request bytes taken (`delta > 0`) or given back on a shard's budget.
pub fn request_bytes_queued(delta: i64) {
    REQUEST_BYTES_QUEUED.fetch_add(delta, Ordering::Relaxed);
}
/// A connection stopped reading until its shard's request budget has room.
pub fn request_read_paused() {
    REQUEST_READS_PAUSED.fetch_add(1, Ordering::Relaxed);
}
/// A new connection was closed at once: `reason` is 0 per shard, 1 total, 2 per address.
pub fn connection_refused(reason: usize) {
    CONNECTIONS_REFUSED[reason.min(2)].fetch_add(1, Ordering::Relaxed);
}
/// A connection was closed for being idle (`connections.max.idle.ms`).
pub fn connection_idle_closed() {
    CONNECTIONS_IDLE_CLOSED.fetch_add(1, Ordering::Relaxed);
}

/// A SASL authentication (or re-authentication) succeeded.
pub fn sasl_authenticated() {
    SASL_AUTHENTICATIONS.fetch_add(1, Ordering::Relaxed);
}

/// A SASL authentication failed (bad credentials, bad messages, unknown users).
pub fn sasl_authentication_failed() {
    SASL_AUTHENTICATION_FAILURES.fetch_add(1, Ordering::Relaxed);
}

/// A TLS handshake failed or timed out (the connection was closed).
pub fn tls_handshake_failed() {
    TLS_HANDSHAKES_FAILED.fetch_add(1, Ordering::Relaxed);
}

fn api_name(key: usize) -> String {
    kafka_protocol::messages::ApiKey::try_from(key as i16)
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|_| format!("key{key}"))
}

/// Everything in Prometheus text format.
pub fn render() -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# TYPE sluice_requests_total counter");
    let _ = writeln!(out, "# TYPE sluice_request_errors_total counter");
    let _ = writeln!(out, "# TYPE sluice_request_latency_seconds histogram");
    for (key, s) in APIS.iter().enumerate() {
        let n = s.requests.load(Ordering::Relaxed);
        if n == 0 {
            continue;
        }
        let api = api_name(key);
        let _ = writeln!(out, "sluice_requests_total{{api=\"{api}\"}} {n}");
        let _ = writeln!(
            out,
            "sluice_request_errors_total{{api=\"{api}\"}} {}",
            s.errors.load(Ordering::Relaxed)
        );
        let mut cumulative = 0;
        for (i, b) in s.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = BUCKETS_US
                .get(i)
                .map(|us| format!("{}", *us as f64 / 1e6))
                .unwrap_or_else(|| "+Inf".into());
            let _ = writeln!(
                out,
                "sluice_request_latency_seconds_bucket{{api=\"{api}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = s.latency_us_sum.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "sluice_request_latency_seconds_sum{{api=\"{api}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "sluice_request_latency_seconds_count{{api=\"{api}\"}} {n}"
        );
    }
    let globals = [
        ("sluice_bytes_in_total", "counter", &BYTES_IN),
        ("sluice_bytes_out_total", "counter", &BYTES_OUT),
        ("sluice_connections", "gauge", &CONNECTIONS_OPEN),
        ("sluice_connections_total", "counter", &CONNECTIONS_TOTAL),
        ("sluice_bad_frames_total", "counter", &BAD_FRAMES),
        (
            "sluice_sasl_authentications_total",
            "counter",
            &SASL_AUTHENTICATIONS,
        ),
        (
            "sluice_sasl_authentication_failures_total",
            "counter",
            &SASL_AUTHENTICATION_FAILURES,
        ),
    ];
    for (name, kind, value) in globals {
        single(&mut out, name, kind, None, value.load(Ordering::Relaxed));
    }
    render_bounds(&mut out);
    render_partitions(&mut out);
    render_groups(&mut out);
    render_quorum(&mut out);
    crate::broker::watchdog::render_metrics(&mut out);
    out
}

/// The `# HELP` (when given) and `# TYPE` lines of a metric.
fn header(out: &mut String, name: &str, kind: &str, help: Option<&str>) {
    if let Some(help) = help {
        let _ = writeln!(out, "# HELP {name} {help}");
    }
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A metric of one sample without labels, with its header.
fn single(out: &mut String, name: &str, kind: &str, help: Option<&str>, value: impl Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// The connection and request bounds at work.
fn render_bounds(out: &mut String) {
    single(
        out,
        "sluice_request_bytes_queued",
        "gauge",
        Some(
            "bytes of requests being read or not yet answered (queued.max.request.bytes per shard)",
        ),
        REQUEST_BYTES_QUEUED.load(Ordering::Relaxed).max(0),
    );
    single(
        out,
        "sluice_request_reads_paused_total",
        "counter",
        Some("frames that waited for room in their shard's request byte budget"),
        REQUEST_READS_PAUSED.load(Ordering::Relaxed),
    );
    header(
        out,
        "sluice_connections_refused_total",
        "counter",
        Some("connections closed on accept, by the bound that refused them"),
    );
    for (limit, n) in ["per_shard", "total", "per_ip"]
        .iter()
        .zip(&CONNECTIONS_REFUSED)
    {
        let _ = writeln!(
            out,
            "sluice_connections_refused_total{{limit=\"{limit}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    single(
        out,
        "sluice_connections_idle_closed_total",
        "counter",
        Some("connections closed after connections.max.idle.ms without traffic"),
        CONNECTIONS_IDLE_CLOSED.load(Ordering::Relaxed),
    );
    single(
        out,
        "sluice_tls_handshakes_failed_total",
        "counter",
        Some("TLS handshakes that failed or timed out (untrusted or missing client certificates among them)"),
        TLS_HANDSHAKES_FAILED.load(Ordering::Relaxed),
    );
    single(
        out,
        "sluice_quorum_tls_handshakes_failed_total",
        "counter",
        Some("TLS handshakes the controller quorum port refused or that timed out ([cluster_tls]: a peer without a certificate from the cluster CA among them)"),
        sluice_control::tls::quorum_handshakes_failed(),
    );
}

/// The controller quorum as this node last saw it (from its own controller, or from the
/// active controller's heartbeat answers on a broker-only node).
fn render_quorum(out: &mut String) {
    let Some(view) = crate::broker::cluster::current() else {
        return;
    };
    let q = view.quorum();
    let leader = q.leader.map_or(0, |l| l.0);
    let gauges = [
        (
            "sluice_controller_leader",
            "raft id of the active controller (0: none known)",
            leader,
        ),
        ("sluice_controller_term", "raft term", q.term.0),
        (
            "sluice_controller_commit_index",
            "raft commit index",
            q.commit_index,
        ),
        (
            "sluice_controller_voters",
            "controllers that vote",
            q.voters.len() as u64,
        ),
        (
            "sluice_controller_learners",
            "controllers receiving the log without a vote",
            q.learners.len() as u64,
        ),
    ];
    for (name, help, value) in gauges {
        single(out, name, "gauge", Some(help), value);
    }
}

fn render_groups(out: &mut String) {
    for (name, counter) in [
        ("sluice_group_rebalances_total", &GROUP_REBALANCES),
        ("sluice_group_members_expired_total", &GROUP_MEMBERS_EXPIRED),
        ("sluice_offset_commits_total", &OFFSET_COMMITS),
        ("sluice_transactions_committed_total", &TXNS_COMMITTED),
        ("sluice_transactions_aborted_total", &TXNS_ABORTED),
        ("sluice_transactions_timed_out_total", &TXNS_TIMED_OUT),
    ] {
        single(out, name, "counter", None, counter.load(Ordering::Relaxed));
    }
    if let Ok(open) = TXNS_OPEN.lock() {
        let help = Some("transactions ongoing or being prepared by this broker's coordinator");
        single(
            out,
            "sluice_transactions_open",
            "gauge",
            help,
            open.values().sum::<u64>(),
        );
    }
    let Ok(map) = GROUPS.lock() else { return };
    let mut total = GroupStat::default();
    for s in map.values() {
        for (t, v) in total.by_state.iter_mut().zip(s.by_state) {
            *t += v;
        }
        total.members += s.members;
        total.committed_offsets += s.committed_offsets;
    }
    let _ = writeln!(out, "# TYPE sluice_groups gauge");
    for (state, n) in GROUP_STATES.iter().zip(total.by_state) {
        let _ = writeln!(out, "sluice_groups{{state=\"{state}\"}} {n}");
    }
    single(out, "sluice_group_members", "gauge", None, total.members);
    let offsets = total.committed_offsets;
    single(
        out,
        "sluice_group_committed_offsets",
        "gauge",
        None,
        offsets,
    );
}
