//! `sluice`: the one binary. `serve` runs a broker; `bench`, `group`, `cluster` and `tune`
//! are its tools.
//!
//! Only this crate reads configuration files, flags, signals and the environment; the
//! libraries take plain config structs.

mod acl;
mod admin_client;
mod bench;
mod cluster;
mod config;
mod group;
mod placement;
mod reload;
mod sasl_login;
mod topic;
mod tune;
mod txn;
mod user;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "A Kafka-compatible event-streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker.
    Serve(ServeArgs),
    /// The load generator: produce, consume, e2e, compare.
    Bench(bench::BenchArgs),
    /// Consumer groups: list, describe (lag), reset-offsets, delete.
    Group(group::GroupArgs),
    /// Topics: create, list, describe, alter-config, add-partitions, delete, produce, consume.
    Topic(topic::TopicArgs),
    /// The cluster: status (brokers, controller, partition health), elect-leaders,
    /// placement (the partition → core map).
    Cluster(cluster::ClusterArgs),
    /// Check the host against a tuning profile, or apply the profile.
    Tune(tune::TuneArgs),
    /// SCRAM users: add (online, or into a data dir before the first start), remove, list.
    User(user::UserArgs),
    /// ACLs: add, remove, list (the authorizer's rules).
    Acl(acl::AclArgs),
    /// Transactions: list, describe, abort a hanging one.
    Txn(txn::TxnArgs),
    /// Partitions: move a live partition to another core.
    #[command(subcommand)]
    Partition(placement::PartitionCommand),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address the Kafka listener binds (default 127.0.0.1:9092).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address given to clients in metadata (default: the listen address).
    #[arg(long, value_name = "HOST:PORT")]
    advertised: Option<String>,
    /// Directory holding the partition logs (default ./sluice-data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// CPUs that run a shard each: `all`, or a list like `0-3,6`; overrides
    /// `placement.cores` (default: every online CPU not in `placement.reserved_cores`).
    #[arg(long, value_name = "LIST")]
    cores: Option<String>,
    /// Address of the admin HTTP endpoint (/metrics, /health, /placement, /partition/move;
    /// default 127.0.0.1:9644).
    #[arg(long, value_name = "HOST:PORT")]
    admin_listen: Option<String>,
    /// Do not pin shards to their CPUs (for tests and shared machines).
    #[arg(long)]
    no_pin: bool,
    /// This node's id: its broker id, and its raft id if it is a controller (default 1).
    #[arg(long, value_name = "N")]
    node_id: Option<i32>,
    /// What this node runs: `broker`, `controller` or `broker,controller` (the default).
    #[arg(long, value_name = "LIST")]
    roles: Option<String>,
    /// Every controller: `1@HOST:PORT,2@HOST:PORT,3@HOST:PORT` (default: this node alone).
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    controller_quorum: Option<String>,
    /// Address the controller listens on (default: its own quorum entry).
    #[arg(long, value_name = "HOST:PORT")]
    controller_listen: Option<String>,
    /// This broker's rack (replicas of a partition are spread across racks).
    #[arg(long, value_name = "NAME")]
    rack: Option<String>,
    /// A broker whose heartbeats stop this long is fenced (default 9000).
    #[arg(long, value_name = "MS")]
    broker_session_timeout_ms: Option<u64>,
    /// How often the broker heartbeats to the controller (default 1000).
    #[arg(long, value_name = "MS")]
    broker_heartbeat_interval_ms: Option<u64>,
    /// On SIGTERM, wait this long at most for the controller to move this broker's
    /// leaderships away before stopping (default 30000; 0: stop at once).
    #[arg(long, value_name = "MS")]
    controlled_shutdown_timeout_ms: Option<u64>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a service manager's journal or a pipe gets plain
        // lines it can search.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Bench(args) => bench::main(args),
        Command::Group(args) => group::main(args),
        Command::User(args) => user::main(args),
        Command::Acl(args) => acl::main(args),
        Command::Txn(args) => txn::main(args),
        Command::Topic(args) => topic::main(args),
        Command::Cluster(args) => cluster::main(args),
        Command::Partition(command) => placement::partition(command),
        Command::Tune(args) => match tune::main(args) {
            Ok(0) => Ok(()),
            Ok(code) => std::process::exit(code),
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        eprintln!("sluice: {e:#}");
        std::process::exit(1);
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    // Every thread of this process is the broker's: a panic anywhere logs one ERROR line
    // and exits non-zero, for the service manager to restart the broker.
    sluice_net::install_panic_exit(sluice_net::PanicScope::Process);
    keep_freed_memory();
    let file = match &args.config {
        Some(path) => config::load_file(path)?,
        None => config::FileConfig::default(),
    };
    let overrides = config::Overrides {
        listen: args.listen,
        advertised: args.advertised,
        data_dir: args.data_dir,
        cores: args.cores,
        admin_listen: args.admin_listen,
        no_pin: args.no_pin,
        cluster: config::ClusterOverrides {
            node_id: args.node_id,
            roles: args.roles,
            controller_quorum: args.controller_quorum,
            controller_listen: args.controller_listen,
            rack: args.rack,
            broker_session_timeout_ms: args.broker_session_timeout_ms,
            broker_heartbeat_interval_ms: args.broker_heartbeat_interval_ms,
            controlled_shutdown_timeout_ms: args.controlled_shutdown_timeout_ms,
        },
    };
    let settings = config::settings(file, overrides)?;
    let shards = settings.server.cores.len();
    let data_dir = settings.server.data_dir.clone();
    let admin_tls_settings = settings.server.tls.clone().filter(|_| settings.admin_tls);
    let server = sluice_net::start(settings.server)?;
    // The admin endpoint shares the listeners' TLS configuration (and its reloads); with
    // no TLS listener it loads its own from `[tls]`.
    let admin_tls = match admin_tls_settings {
        None => None,
        Some(tls) => match server.tls() {
            Some(shared) => Some(shared),
            None => Some(std::sync::Arc::new(
                sluice_net::security::tls::Tls::load(tls).context("auth.admin_tls")?,
            )),
        },
    };
    let admin = sluice_net::admin::start(
        settings.admin_listen,
        settings.admin_token.clone(),
        admin_tls.clone(),
    )
    .context("starting the admin endpoint")?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .context("installing signal handlers")?;
    // The first line on stdout says where the broker listens (tests and scripts read it);
    // a controller-only node has no Kafka listener and names its quorum address instead.
    if server.serves_kafka() {
        println!(
            "sluice listening on {} (admin {}, {shards} shards, data {})",
            server.local_addr(),
            admin,
            data_dir.display()
        );
    } else {
        println!(
            "sluice controller on {} (admin {}, no Kafka listener, data {})",
            server.local_addr(),
            admin,
            data_dir.display()
        );
    }
    let _ = std::io::stdout().flush();
    let handle = signals.handle();
    let reloads = reload::Reloads::new(server.tls().or(admin_tls), server.cluster_tls());
    let watching = !reloads.is_empty();
    let reloads = std::sync::Arc::new(std::sync::Mutex::new(reloads));
    // Certificate files are re-read when they change, as on SIGHUP; the watcher ends when
    // `stop_watching` is dropped.
    let (stop_watching, watch_stop) = std::sync::mpsc::channel::<()>();
    let watcher = watching.then(|| {
        let reloads = reloads.clone();
        std::thread::spawn(move || reload::watch(reloads, watch_stop))
    });
    let stopper = std::thread::spawn({
        let stop = server_stopper(&server);
        move || {
            for sig in signals.forever() {
                if sig == signal_hook::consts::SIGHUP {
                    match reloads.lock() {
                        Ok(mut r) => r.all(),
                        Err(poisoned) => poisoned.into_inner().all(),
                    }
                    continue;
                }
                tracing::info!(
                    signal = sig,
                    "stopping: leaderships handed over first (controlled shutdown), then no new connections, finishing in-flight requests"
                );
                stop();
                break;
            }
        }
    });
    let result = server.join();
    handle.close();
    let _ = stopper.join();
    drop(stop_watching);
    if let Some(w) = watcher {
        let _ = w.join();
    }
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// Makes glibc's malloc keep memory the broker frees instead of handing it back to the
/// kernel. Appends are copied into megabyte DMA buffers that live from append to tail-cache
/// eviction, and requests arrive in megabyte frames; by default glibc maps or trims such
/// sizes on every free, so each new buffer cost page faults, page zeroing and the TLB
/// shootdowns of unmapping (0.2-0.6M minor faults in a 6 s run of 1 KiB produce). Fixed
/// thresholds (which also stop glibc from moving them) reuse the memory: 0.12M faults,
/// 0.86-1.06 against 1.28-1.32 CPU-seconds per GB, 1.00-1.20M against 0.87-0.96M msgs/s.
/// What the process keeps is bounded by its peak use, which the shard memory bounds
/// (`[shard]`) and request bounds (`[network]`) already cap.
fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    {
        /// Allocations above this are mapped on their own (and unmapped when freed);
        /// 32 MiB is glibc's largest, well above any buffer the broker allocates often.
        const MMAP_THRESHOLD_BYTES: libc::c_int = 32 << 20;
        /// Free memory at the top of a heap above this goes back to the kernel.
        const TRIM_THRESHOLD_BYTES: libc::c_int = 1 << 30;
        // SAFETY: mallopt only changes allocator parameters; called before the shards start.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
        }
    }
}

fn server_stopper(server: &sluice_net::Server) -> impl FnOnce() + Send + 'static {
    let stop = server.stop_handle();
    move || stop.stop()
}
