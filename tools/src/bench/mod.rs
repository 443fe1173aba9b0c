//! `sluice bench`: the bundled Kafka load generator.
//!
//! Its own Kafka client on glommio, thread-per-core: one executor per `--cores` entry, each
//! running its share of the producer and consumer actors with their own connections. The
//! control plane (topic creation, leader routing, end offsets) runs blocking on the main
//! thread before and after; while the actors run, the main thread only collects statistics
//! once a second.
//!
//! Modules: `wire` (framing, versions, blocking admin client), `encoder` (record batches
//! built in place), `metadata` (topics, routing, offsets), `producer` / `consumer` (actors),
//! `group` (consumer-group members for `--group`),
//! `rate` (fixed-rate schedule), `stats` (live counters and histograms), `run` (one scenario
//! end to end, including e2e and the count check), `report` (table, JSON, HDR log, HTML),
//! `compare` (A B A B against several brokers), `tls` (`ssl://` bootstraps).

mod compare;
mod consumer;
mod encoder;
mod group;
pub(crate) mod metadata;
mod producer;
mod rate;
mod report;
mod run;
mod stats;
pub(crate) mod tls;
pub(crate) mod wire;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

pub use encoder::Compression;
pub use producer::KeyMode;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce as fast as possible (or at --rate) and report acknowledgement latency.
    Produce(Scenario),
    /// Read the topic from the beginning and report throughput.
    Consume(Scenario),
    /// Produce and consume at once; latency is from the send call to consumer receipt.
    E2e(Scenario),
    /// Run one scenario against several --bootstrap addresses in turn (A B A B …).
    Compare(CompareArgs),
}

/// The workloads a scenario can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Produce,
    Consume,
    E2e,
}

/// Acknowledgement level of produce requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum Acks {
    #[value(name = "0")]
    #[serde(rename = "0")]
    None,
    #[value(name = "1")]
    #[serde(rename = "1")]
    Leader,
    #[value(name = "all", alias = "-1")]
    #[serde(rename = "all")]
    All,
}

impl Acks {
    fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct Scenario {
    /// Broker address(es) to bootstrap from; `compare` runs against each in turn.
    /// `ssl://HOST:PORT` connects over TLS (trusting `--tls-ca`).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:9092")]
    pub bootstrap: Vec<String>,
    /// PEM file of the CAs to trust for `ssl://` bootstraps.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Topic to use; created if missing.
    #[arg(long, default_value = "sluice-bench")]
    pub topic: String,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Replication factor of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i16,
    /// Topic config when it is created, KEY=VALUE (repeatable), e.g. flush.policy=fsync.
    #[arg(long, value_name = "KEY=VALUE")]
    pub topic_config: Vec<String>,
    /// Producer actors.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumer actors (partitions are split among them).
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Consume as members of this consumer group (JoinGroup/SyncGroup, range assignment,
    /// committed offsets) instead of reading pinned partitions; consume and e2e only.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// Value size in bytes, or a range MIN-MAX (uniform).
    #[arg(long, default_value = "100")]
    pub message_size: String,
    /// A batch is sent when it would grow past this many bytes.
    #[arg(long, default_value_t = 60 * 1024)]
    pub batch_bytes: usize,
    /// A Produce request (one batch per partition of a broker) is sent before one more batch
    /// would take it past this many bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub request_bytes: usize,
    /// With --rate: longest time a batch waits for more messages.
    #[arg(long, default_value_t = 0.0)]
    pub linger_ms: f64,
    /// Produce requests in flight per connection. Enough to cover a loaded broker's
    /// acknowledgement time at full rate (librdkafka does not bound it by default).
    #[arg(long, default_value_t = 16)]
    pub max_in_flight: usize,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, value_enum, default_value = "1")]
    pub acks: Acks,
    #[arg(long, value_enum, default_value = "none")]
    pub compression: Compression,
    #[arg(long, value_enum, default_value = "none")]
    pub keys: KeyMode,
    /// Fixed rate in messages per second over all producers; latency is measured from each
    /// message's intended send time (corrected for coordinated omission).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Messages to produce (produce, e2e) or read (consume) in total.
    #[arg(long, conflicts_with = "duration")]
    pub messages: Option<u64>,
    /// Seconds to run after warm-up (default 10 when --messages is not given; consume
    /// without a duration reads up to the end offsets it found at the start).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds at the start that are not measured.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// CPUs for the bench's executors: `all` or a list like `0-3,6` (default: all online).
    #[arg(long)]
    pub cores: Option<String>,
    /// Do not pin executors to their CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// Produce request timeout.
    #[arg(long, default_value_t = 30_000)]
    pub request_timeout_ms: i32,
    /// Skip the check that acknowledged messages equal the end offsets' growth.
    #[arg(long)]
    pub no_check: bool,
    /// Do not print the progress line every second.
    #[arg(long)]
    pub quiet: bool,
    /// Write the report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the interval histogram log (HdrHistogram log format).
    #[arg(long)]
    pub hdr: Option<PathBuf>,
    /// Write a self-contained HTML report with charts.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// What to run against each bootstrap address.
    #[arg(value_enum)]
    pub workload: Workload,
    /// Rounds: each round runs every address once, in order.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    #[command(flatten)]
    pub scenario: Scenario,
}

/// Flags shared by the actors and the main thread of one run.
#[derive(Debug, Default)]
pub struct Control {
    stop: AtomicBool,
    stop_consumers: AtomicBool,
    producers_running: AtomicUsize,
    acked: AtomicU64,
    consumed: AtomicU64,
}

impl Control {
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    pub fn stopping_consumers(&self) -> bool {
        self.stop_consumers.load(Ordering::Relaxed)
    }
    pub fn add_acked(&self, n: u64) {
        self.acked.fetch_add(n, Ordering::Relaxed);
    }
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }
    /// Adds `n`; returns the count before.
    pub fn add_consumed(&self, n: u64) -> u64 {
        self.consumed.fetch_add(n, Ordering::Relaxed)
    }
    pub fn consumed(&self) -> u64 {
        self.consumed.load(Ordering::Relaxed)
    }
    pub fn producers_done(&self) -> bool {
        self.producers_running.load(Ordering::Acquire) == 0
    }
}

/// Entry point of `sluice bench`.
pub fn main(args: BenchArgs) -> Result<()> {
    match args.command {
        BenchCommand::Produce(s) => run::run_and_report(Workload::Produce, &s).map(|_| ()),
        BenchCommand::Consume(s) => run::run_and_report(Workload::Consume, &s).map(|_| ()),
        BenchCommand::E2e(s) => run::run_and_report(Workload::E2e, &s).map(|_| ()),
        BenchCommand::Compare(c) => compare::compare(&c),
    }
}
