//! The TOML configuration file and how flags override it. Every key is documented in
//! `docs/configuration.md`; an unknown key or a bad value stops start-up with a message
//! naming it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use sluice_net::placement::{PartitionPolicy, Pin, PlacementSettings};
use sluice_net::{
    FlushSetting, GroupsConfig, MigrationPolicy, Roles, ServerConfig, TopicDefaults, TxnConfig,
};
use sluice_tuning::{CoreSpec, CpuSet, HostCpus, Placement, PlacementConfig, SysRoot};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub advertised: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// The old name of `placement.cores`, still accepted (not both).
    pub cores: Option<toml::Value>,
    pub pin_cores: Option<bool>,
    pub admin_listen: Option<String>,
    pub node_id: Option<i32>,
    pub cluster_id: Option<String>,
    pub retention_check_interval_ms: Option<u64>,
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default)]
    pub topic_defaults: TopicDefaultsConfig,
    #[serde(default)]
    pub shard: ShardBoundsConfig,
    #[serde(default)]
    pub placement: PlacementFileConfig,
    #[serde(default)]
    pub groups: GroupsFileConfig,
    #[serde(default)]
    pub transactions: TransactionsFileConfig,
    #[serde(default)]
    pub cluster: ClusterFileConfig,
    /// `[[listeners]]`: Kafka listeners besides `listen` (the PLAINTEXT one).
    #[serde(default)]
    pub listeners: Vec<ListenerFileConfig>,
    /// `[tls]`: the certificate of SSL and SASL_SSL listeners.
    pub tls: Option<TlsFileConfig>,
    /// `[cluster_tls]`: mutual TLS for the cluster's own traffic.
    pub cluster_tls: Option<ClusterTlsFileConfig>,
    /// `[auth]`: SASL on SASL_PLAINTEXT and SASL_SSL listeners.
    #[serde(default)]
    pub auth: AuthFileConfig,
}

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFileConfig {
    /// PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (default: the two SCRAM ones).
    pub sasl_mechanisms: Option<Vec<String>>,
    /// KIP-368 `connections.max.reauth.ms` (default 0: sessions do not expire).
    pub connections_max_reauth_ms: Option<u64>,
    /// Check every request against the ACLs (default false).
    pub authorizer: Option<bool>,
    /// Kafka's `super.users`: principals allowed everything (`User:admin`).
    pub super_users: Option<Vec<String>>,
    /// Kafka's `allow.everyone.if.no.acl.found` (default false).
    pub allow_everyone_if_no_acl_found: Option<bool>,
    /// A file holding the bearer token the admin endpoint's POST routes require.
    pub admin_token_file: Option<PathBuf>,
    /// Serve the admin endpoint over TLS with the `[tls]` certificate (default false).
    pub admin_tls: Option<bool>,
}

/// `[[listeners]]`: one Kafka listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFileConfig {
    pub name: Option<String>,
    pub listen: Option<String>,
    /// HOST:PORT given to clients (default: `listen`).
    pub advertised: Option<String>,
    /// PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL.
    pub security_protocol: Option<String>,
}

/// `[tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFileConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    /// none | requested | required (default none).
    pub client_auth: Option<String>,
}

/// `[cluster_tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsFileConfig {
    /// This node's certificate (PEM chain), presented to every other node.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The CA every node's certificate chains to.
    pub ca_file: Option<PathBuf>,
    /// The inter-broker listener (an SSL `[[listeners]]` entry); needed with the broker role.
    pub listener: Option<String>,
}

/// `[placement]`: which CPUs run shards and which are kept free.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementFileConfig {
    /// `"all"`, a count, or a CPU list; parsed by `placement` so errors name the key.
    pub cores: Option<toml::Value>,
    pub reserved_cores: Option<String>,
    /// `hash` or `balanced`: how partitions not placed yet choose their core.
    pub partition_policy: Option<String>,
    /// Explicit placements (`[[placement.pins]]`).
    #[serde(default)]
    pub pins: Vec<PinFileConfig>,
}

/// `[[placement.pins]]`: a topic's partitions (all, one, or a range) on one CPU.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinFileConfig {
    pub topic: String,
    /// `"3"`, `"0-7"`; absent: every partition of the topic.
    pub partitions: Option<String>,
    /// The CPU (one of `placement.cores`).
    pub core: usize,
}

/// `[groups]`: the consumer group coordinator.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsFileConfig {
    pub offsets_topic_partitions: Option<u32>,
    pub offsets_topic_replication_factor: Option<u16>,
    pub offsets_retention_minutes: Option<u64>,
    pub offsets_retention_check_interval_ms: Option<u64>,
    pub session_timeout_ms_min: Option<u32>,
    pub session_timeout_ms_max: Option<u32>,
    pub members_per_group_max: Option<u64>,
    pub groups_max: Option<u64>,
    pub offsets_max: Option<u64>,
    pub offset_metadata_bytes_max: Option<u64>,
    pub consumer_session_timeout_ms: Option<u32>,
    pub consumer_heartbeat_interval_ms: Option<u32>,
    /// bidirectional | upgrade | downgrade | disabled (group.consumer.migration.policy)
    pub consumer_migration_policy: Option<String>,
}

/// `[transactions]`: the transaction coordinator.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionsFileConfig {
    pub state_log_partitions: Option<u32>,
    pub state_log_replication_factor: Option<u16>,
    pub max_timeout_ms: Option<u32>,
    pub abort_timed_out_check_interval_ms: Option<u64>,
    pub transactional_ids_max: Option<u64>,
    /// The `transaction.version` feature level advertised: 2 lets clients use
    /// transactions v2 (KIP-890 part 2), 1 keeps them on the earlier protocol.
    pub transaction_version: Option<u16>,
}

/// `[cluster]`: the node's place in the cluster.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFileConfig {
    pub node_id: Option<i32>,
    pub roles: Option<String>,
    pub controller_quorum: Option<String>,
    pub controller_listen: Option<String>,
    pub rack: Option<String>,
    pub broker_session_timeout_ms: Option<u64>,
    pub broker_heartbeat_interval_ms: Option<u64>,
    pub controlled_shutdown_timeout_ms: Option<u64>,
    pub controller_tick_ms: Option<u64>,
    pub default_replication_factor: Option<i16>,
    pub auto_leader_rebalance: Option<bool>,
    pub replica_lag_time_max_ms: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardBoundsConfig {
    pub tail_cache_bytes_max: Option<u64>,
    pub write_buffer_bytes_max: Option<u64>,
    pub shard_write_buffer_bytes_max: Option<u64>,
    pub write_chunk_bytes: Option<u64>,
    pub write_depth_max: Option<u64>,
    pub checkpoint_interval_ms: Option<u64>,
    pub compaction_map_bytes_max: Option<u64>,
    pub io_memory_bytes: Option<u64>,
    /// One number for a shard's storage memory; the bounds not set are derived from it.
    pub memory_bytes_max: Option<u64>,
    pub produce_shares: Option<u64>,
    pub fetch_shares: Option<u64>,
    /// A shard whose task queues have not run this long is reported (WARN, /health 503).
    pub stall_warn_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    pub socket_request_max_bytes: Option<u64>,
    pub inflight_requests_max: Option<u32>,
    pub connections_max_per_shard: Option<u32>,
    pub connections_max: Option<u32>,
    pub connections_max_per_ip: Option<u32>,
    pub queued_request_bytes_max: Option<u64>,
    pub connection_idle_ms_max: Option<u64>,
    pub mesh_channel_depth_max: Option<u32>,
    pub fetch_wait_ms_max: Option<u64>,
    pub fetch_sessions_max_per_shard: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicDefaultsConfig {
    pub partitions: Option<i32>,
    pub auto_create: Option<bool>,
    pub segment_bytes: Option<u64>,
    pub segment_ms: Option<u64>,
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<i64>,
    pub max_message_bytes: Option<u32>,
    pub flush_policy: Option<String>,
    pub flush_ms: Option<u64>,
    pub flush_bytes: Option<u64>,
}

/// `data_dir` when neither the file nor `--data-dir` sets it.
pub const DATA_DIR_DEFAULT: &str = "./sluice-data";
/// `network.connections_max_per_shard` when the file does not set it (as in `sluice-net`).
pub const CONNECTIONS_MAX_PER_SHARD_DEFAULT: u64 = 4096;
/// Bound on `cluster.controlled_shutdown_timeout_ms` (an hour: a stop must end).
const CONTROLLED_SHUTDOWN_TIMEOUT_MS_MAX: u64 = 3_600_000;

/// Values given on the command line; each overrides the file.
#[derive(Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub advertised: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub cores: Option<String>,
    pub admin_listen: Option<String>,
    pub no_pin: bool,
    pub cluster: ClusterOverrides,
}

/// Flags of the `[cluster]` section.
#[derive(Debug, Default)]
pub struct ClusterOverrides {
    pub node_id: Option<i32>,
    pub roles: Option<String>,
    pub controller_quorum: Option<String>,
    pub controller_listen: Option<String>,
    pub rack: Option<String>,
    pub broker_session_timeout_ms: Option<u64>,
    pub broker_heartbeat_interval_ms: Option<u64>,
    pub controlled_shutdown_timeout_ms: Option<u64>,
}

/// The settings `serve` runs with.
#[derive(Debug)]
pub struct Settings {
    pub server: ServerConfig,
    pub admin_listen: SocketAddr,
    /// `[auth] admin_token_file`'s token.
    pub admin_token: Option<sluice_net::admin::AdminToken>,
    /// `[auth] admin_tls`: the admin endpoint speaks TLS with the `[tls]` certificate.
    pub admin_tls: bool,
}

pub fn load_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow!("config file {}: {e}", path.display()))
}

fn resolve(key: &str, value: &str) -> Result<SocketAddr> {
    value
        .to_socket_addrs()
        .with_context(|| format!("{key}: {value:?} is not HOST:PORT"))?
        .next()
        .ok_or_else(|| anyhow!("{key}: {value:?} resolves to no address"))
}

/// The `cores` setting in force and the key it came from: the flag, else
/// `placement.cores`, else the old top-level `cores` (setting both in the file is an error).
fn core_spec(file: &FileConfig, flag: Option<&str>) -> Result<(CoreSpec, &'static str)> {
    if let Some(flag) = flag {
        let spec = CoreSpec::parse(flag).map_err(|e| anyhow!("--cores: {e}"))?;
        return Ok((spec, "--cores"));
    }
    let (value, field) = match (&file.placement.cores, &file.cores) {
        (Some(_), Some(_)) => bail!(
            "cores and placement.cores are both set; keep placement.cores (top-level cores is its old name)"
        ),
        (Some(v), None) => (v, "placement.cores"),
        (None, Some(v)) => (v, "cores"),
        (None, None) => return Ok((CoreSpec::All, "placement.cores")),
    };
    let spec = CoreSpec::from_toml(value).map_err(|e| anyhow!("{field}: {e}"))?;
    Ok((spec, field))
}

/// `placement.reserved_cores`: a CPU list, or empty / `none`.
fn reserved_cores(file: &FileConfig) -> Result<CpuSet> {
    match file.placement.reserved_cores.as_deref().map(str::trim) {
        None | Some("") | Some("none") => Ok(CpuSet::new()),
        Some(list) => {
            CpuSet::parse_list(list).map_err(|e| anyhow!("placement.reserved_cores: {e}"))
        }
    }
}

/// The host's CPUs; if `/sys` cannot be read (some containers), the CPUs this process
/// sees, numbered from 0.
pub fn host_cpus(root: &SysRoot) -> HostCpus {
    HostCpus::read(root).unwrap_or_else(|e| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        tracing::warn!(error = %e, cpus = n, "online CPUs unknown; assuming 0..{n}");
        let all: CpuSet = (0..n).collect();
        HostCpus {
            online: all.clone(),
            allowed: all,
        }
    })
}

/// Resolves `[placement]` (and the `cores` alias or `--cores`) against `host`. The outer
/// error is a config mistake; the inner one a placement this host cannot run.
pub fn placement(
    file: &FileConfig,
    cores_flag: Option<&str>,
    pinned: bool,
    host: &HostCpus,
) -> Result<Result<Placement, sluice_tuning::PlacementError>> {
    let (spec, field) = core_spec(file, cores_flag)?;
    let reserved = reserved_cores(file)?;
    let config = PlacementConfig {
        cores: &spec,
        cores_field: field,
        reserved: &reserved,
        pinned,
    };
    Ok(sluice_tuning::resolve(&config, host))
}

fn limit(key: &str, v: Option<i64>, default: Option<u64>) -> Result<Option<u64>> {
    match v {
        None => Ok(default),
        Some(-1) => Ok(None),
        Some(x) if x >= 0 => Ok(Some(x as u64)),
        Some(x) => bail!("{key}: {x} is neither -1 (no limit) nor a non-negative number"),
    }
}

fn topic_defaults(t: &TopicDefaultsConfig) -> Result<TopicDefaults> {
    let d = TopicDefaults::default();
    let partitions = t.partitions.unwrap_or(d.partitions);
    if partitions < 1 {
        bail!("topic_defaults.partitions: {partitions} is under 1");
    }
    let (dms, dbytes) = match d.flush {
        FlushSetting::Interval {
            interval_ms,
            bytes_max,
        } => (interval_ms, bytes_max),
        FlushSetting::Fsync => (1000, 1 << 20),
    };
    let flush = match t.flush_policy.as_deref().unwrap_or("interval") {
        "fsync" => FlushSetting::Fsync,
        "interval" => FlushSetting::Interval {
            interval_ms: t.flush_ms.unwrap_or(dms),
            bytes_max: t.flush_bytes.unwrap_or(dbytes),
        },
        other => bail!("topic_defaults.flush_policy: {other:?} is not \"fsync\" or \"interval\""),
    };
    Ok(TopicDefaults {
        partitions,
        auto_create: t.auto_create.unwrap_or(d.auto_create),
        segment_bytes: t.segment_bytes.unwrap_or(d.segment_bytes),
        segment_ms: t.segment_ms.unwrap_or(d.segment_ms),
        retention_ms: limit(
            "topic_defaults.retention_ms",
            t.retention_ms,
            d.retention_ms,
        )?,
        retention_bytes: limit(
            "topic_defaults.retention_bytes",
            t.retention_bytes,
            d.retention_bytes,
        )?,
        max_message_bytes: t.max_message_bytes.unwrap_or(d.max_message_bytes),
        flush,
    })
}

fn positive(key: &str, v: Option<u64>, default: usize) -> Result<usize> {
    match v {
        None => Ok(default),
        Some(0) => bail!("{key}: must be at least 1"),
        Some(x) => usize::try_from(x).map_err(|_| anyhow!("{key}: {x} is too large")),
    }
}

/// [`positive`], and at most `max`.
fn positive_max(key: &str, v: Option<impl Into<u64>>, default: usize, max: usize) -> Result<usize> {
    let v = positive(key, v.map(Into::into), default)?;
    if v > max {
        bail!("{key}: {v} is above {max}");
    }
    Ok(v)
}

/// Sets `*to` from `v` when it is given: at least 1, and fitting `T` (else an error naming
/// `key`); unchanged when not given.
fn set_positive<T: TryFrom<usize>>(key: &str, v: Option<impl Into<u64>>, to: &mut T) -> Result<()> {
    let Some(v) = v else {
        return Ok(());
    };
    let v = positive(key, Some(v.into()), 0)?;
    *to = T::try_from(v).map_err(|_| anyhow!("{key}: {v} is too large"))?;
    Ok(())
}

/// [`set_positive`] for each `field <- key`: `to.field` from `from.key`, named
/// `section.key` in errors.
macro_rules! set_positives {
    ($section:literal, $from:expr => $to:expr, [$($field:ident <- $key:ident),* $(,)?]) => {
        $(set_positive(concat!($section, ".", stringify!($key)), $from.$key, &mut $to.$field)?;)*
    };
}

/// Parses `ID@HOST:PORT,...`: distinct raft ids (≥ 1) and their quorum addresses.
pub fn parse_quorum(key: &str, value: &str) -> Result<Vec<(u64, SocketAddr)>> {
    let mut out: Vec<(u64, SocketAddr)> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| anyhow!("{key}: {part:?} is not ID@HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| anyhow!("{key}: {id:?} in {part:?} is not a node id"))?;
        if id == 0 {
            bail!("{key}: node ids start at 1 ({part:?})");
        }
        if out.iter().any(|(i, _)| *i == id) {
            bail!("{key}: node {id} is listed twice");
        }
        out.push((id, resolve(key, addr.trim())?));
    }
    if out.is_empty() {
        bail!("{key}: no controllers listed");
    }
    Ok(out)
}

/// Parses `broker,controller` (either or both).
pub fn parse_roles(key: &str, value: &str) -> Result<Roles> {
    let mut roles = Roles {
        broker: false,
        controller: false,
    };
    for r in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        match r {
            "broker" => roles.broker = true,
            "controller" => roles.controller = true,
            other => bail!("{key}: {other:?} is not \"broker\" or \"controller\""),
        }
    }
    if !roles.broker && !roles.controller {
        bail!("{key}: no role given");
    }
    Ok(roles)
}

/// The `[cluster]` section and its flags.
fn cluster(
    server: &mut ServerConfig,
    top_node_id: Option<i32>,
    f: &ClusterFileConfig,
    o: &ClusterOverrides,
) -> Result<()> {
    if let (Some(a), Some(b)) = (top_node_id, f.node_id) {
        if a != b {
            bail!("node_id: {a} at the top level but cluster.node_id is {b}");
        }
    }
    if let Some(id) = o.node_id.or(f.node_id).or(top_node_id) {
        if id < 0 {
            bail!("cluster.node_id: {id} is negative");
        }
        server.node_id = id;
    }
    let c = &mut server.cluster;
    if let Some(r) = o.roles.as_deref().or(f.roles.as_deref()) {
        c.roles = parse_roles("cluster.roles", r)?;
    }
    if let Some(q) = o
        .controller_quorum
        .as_deref()
        .or(f.controller_quorum.as_deref())
    {
        c.quorum = parse_quorum("cluster.controller_quorum", q)?;
    }
    if let Some(l) = o
        .controller_listen
        .as_deref()
        .or(f.controller_listen.as_deref())
    {
        c.controller_listen = Some(resolve("cluster.controller_listen", l)?);
    }
    if let Some(rack) = o.rack.clone().or(f.rack.clone()) {
        if rack.trim().is_empty() {
            bail!("cluster.rack: empty");
        }
        c.rack = Some(rack);
    }
    let flagged = ClusterFileConfig {
        broker_session_timeout_ms: o.broker_session_timeout_ms.or(f.broker_session_timeout_ms),
        broker_heartbeat_interval_ms: o
            .broker_heartbeat_interval_ms
            .or(f.broker_heartbeat_interval_ms),
        ..ClusterFileConfig::default()
    };
    set_positives!("cluster", flagged => c, [
        broker_session_timeout_ms <- broker_session_timeout_ms,
        broker_heartbeat_interval_ms <- broker_heartbeat_interval_ms,
    ]);
    if c.broker_heartbeat_interval_ms >= c.broker_session_timeout_ms {
        bail!(
            "cluster.broker_heartbeat_interval_ms: {} is not below broker_session_timeout_ms {}",
            c.broker_heartbeat_interval_ms,
            c.broker_session_timeout_ms
        );
    }
    if let Some(ms) = o
        .controlled_shutdown_timeout_ms
        .or(f.controlled_shutdown_timeout_ms)
    {
        if ms > CONTROLLED_SHUTDOWN_TIMEOUT_MS_MAX {
            bail!(
                "cluster.controlled_shutdown_timeout_ms: {ms} is above {CONTROLLED_SHUTDOWN_TIMEOUT_MS_MAX}"
            );
        }
        c.controlled_shutdown_timeout_ms = ms;
    }
    set_positives!("cluster", f => c, [controller_tick_ms <- controller_tick_ms]);
    if let Some(rf) = f.default_replication_factor {
        if rf < 1 {
            bail!("cluster.default_replication_factor: {rf} is under 1");
        }
        c.default_replication_factor = rf;
    }
    if let Some(b) = f.auto_leader_rebalance {
        c.auto_leader_rebalance = b;
    }
    set_positives!("cluster", f => c, [replica_lag_time_max_ms <- replica_lag_time_max_ms]);
    let me = u64::try_from(server.node_id).unwrap_or(0);
    if c.roles.controller {
        if me == 0 {
            bail!(
                "cluster.node_id: a controller needs a node id of 1 or more (raft ids start at 1)"
            );
        }
        if !c.quorum.is_empty() && !c.quorum.iter().any(|(id, _)| *id == me) {
            bail!("cluster.controller_quorum: this node ({me}) has the controller role but is not in the quorum");
        }
    } else if c.quorum.is_empty() {
        bail!("cluster.controller_quorum: a node without the controller role needs the quorum to reach");
    }
    Ok(())
}

/// Merges defaults, the file and the flags (in that order of precedence, lowest first).
pub fn settings(file: FileConfig, o: Overrides) -> Result<Settings> {
    let pinned = file.pin_cores.unwrap_or(true) && !o.no_pin;
    let placement = placement(
        &file,
        o.cores.as_deref(),
        pinned,
        &host_cpus(&SysRoot::host()),
    )??;
    let listen_s = o
        .listen
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:9092".into());
    let listen = resolve("listen", &listen_s)?;
    let data_dir = o
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT));
    let cores = placement.shard_cores.to_vec();
    let admin_s = o
        .admin_listen
        .or(file.admin_listen)
        .unwrap_or_else(|| "127.0.0.1:9644".into());
    let admin_listen = resolve("admin_listen", &admin_s)?;
    let mut server = ServerConfig::new(listen, data_dir, cores);
    cluster(&mut server, file.node_id, &file.cluster, &o.cluster)?;
    if let Some(adv) = o.advertised.or(file.advertised) {
        (server.advertised_host, server.advertised_port) = parse_advertised("advertised", &adv)?;
    }
    server.listeners = listeners(&file.listeners, server.listen)?;
    server.tls = tls(file.tls.as_ref())?;
    server.cluster_tls = cluster_tls(file.cluster_tls.as_ref(), &server)?;
    server.auth = auth(&file.auth)?;
    if server.auth.sasl_mechanisms.is_empty() {
        if let Some((i, l)) = server
            .listeners
            .iter()
            .enumerate()
            .find(|(_, l)| l.security_protocol.sasl())
        {
            bail!(
                "listeners[{i}].security_protocol: {} needs at least one auth.sasl_mechanisms entry",
                l.security_protocol.name()
            );
        }
    }
    if server.tls.is_none() {
        let inter_broker = server
            .cluster_tls
            .as_ref()
            .and_then(|c| c.listener.as_deref());
        if let Some((i, l)) = server
            .listeners
            .iter()
            .enumerate()
            .find(|(_, l)| l.security_protocol.tls() && Some(l.name.as_str()) != inter_broker)
        {
            bail!(
                "listeners[{i}].security_protocol: {} needs a [tls] section (cert_file, key_file)",
                l.security_protocol.name()
            );
        }
    }
    server.pin_cores = pinned;
    if let Some(ms) = file.retention_check_interval_ms {
        if ms == 0 {
            bail!("retention_check_interval_ms: must be at least 1");
        }
        server.retention_check_interval_ms = ms;
    }
    if let Some(c) = file.cluster_id {
        server.cluster_id = c;
    }
    let n = &file.network;
    set_positives!("network", n => server, [
        request_bytes_max <- socket_request_max_bytes,
        inflight_requests_max <- inflight_requests_max,
        connections_max_per_shard <- connections_max_per_shard,
        connections_max <- connections_max,
        connections_max_per_ip <- connections_max_per_ip,
        queued_request_bytes_max <- queued_request_bytes_max,
    ]);
    if server.queued_request_bytes_max < server.request_bytes_max.min(1 << 20) {
        bail!(
            "network.queued_request_bytes_max: {} is below 1 MiB (or socket_request_max_bytes, {}, if that is smaller): one ordinary request must fit",
            server.queued_request_bytes_max,
            server.request_bytes_max
        );
    }
    set_positives!("network", n => server, [
        connection_idle_ms_max <- connection_idle_ms_max,
        mesh_channel_depth_max <- mesh_channel_depth_max,
    ]);
    server.fetch_wait_ms_max = n.fetch_wait_ms_max.unwrap_or(server.fetch_wait_ms_max);
    server.fetch_sessions_max_per_shard = n
        .fetch_sessions_max_per_shard
        .map(|v| v as usize)
        .unwrap_or(server.fetch_sessions_max_per_shard);
    server.topic_defaults = topic_defaults(&file.topic_defaults)?;
    let b = &memory_budget(&file.shard)?;
    let sc = &mut server.shard;
    set_positives!("shard", b => sc, [
        tail_cache_bytes_max <- tail_cache_bytes_max,
        write_buffer_bytes_max <- write_buffer_bytes_max,
        shard_write_buffer_bytes_max <- shard_write_buffer_bytes_max,
        write_chunk_bytes <- write_chunk_bytes,
        write_depth_max <- write_depth_max,
        checkpoint_interval_ms <- checkpoint_interval_ms,
        compaction_map_bytes_max <- compaction_map_bytes_max,
    ]);
    if b.io_memory_bytes.is_some() {
        server.io_memory_bytes = Some(positive("shard.io_memory_bytes", b.io_memory_bytes, 0)?);
    }
    server.groups = groups_config(&file.groups)?;
    server.transactions = transactions_config(&file.transactions)?;
    set_positives!("shard", b => server, [
        produce_shares <- produce_shares,
        fetch_shares <- fetch_shares,
        stall_warn_ms <- stall_warn_ms,
    ]);
    server.placement = placement_settings(&file.placement)?;
    let admin_token = admin_token(&file.auth)?;
    let admin_tls = file.auth.admin_tls.unwrap_or(false);
    if admin_tls && server.tls.is_none() {
        bail!("auth.admin_tls: needs a [tls] section (the certificate the endpoint serves)");
    }
    Ok(Settings {
        server,
        admin_listen,
        admin_token,
        admin_tls,
    })
}

/// `HOST:PORT` as given to clients: the host as written (brackets of an IPv6 address
/// dropped), the port a number.
fn parse_advertised(key: &str, adv: &str) -> Result<(String, u16)> {
    let (host, port) = adv
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("{key}: {adv:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("{key}: {port:?} is not a port"))?;
    if host.is_empty() {
        bail!("{key}: {adv:?} has no host");
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_string(), port))
}

/// `[[listeners]]`, each field checked and named in errors (`listeners[1].listen`): a
/// unique name other than PLAINTEXT (that is `listen`), an address no other listener
/// binds, a known security protocol.
fn listeners(
    files: &[ListenerFileConfig],
    primary: SocketAddr,
) -> Result<Vec<sluice_net::security::ListenerConfig>> {
    use sluice_net::security::{listener::name_problem, SecurityProtocol, PLAINTEXT_LISTENER};
    let mut out: Vec<sluice_net::security::ListenerConfig> = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let field = |k: &str| format!("listeners[{i}].{k}");
        let name = f
            .name
            .clone()
            .ok_or_else(|| anyhow!("{}: missing", field("name")))?;
        if let Some(why) = name_problem(&name) {
            bail!("{}: {why}", field("name"));
        }
        if name.eq_ignore_ascii_case(PLAINTEXT_LISTENER) {
            bail!(
                "{}: {PLAINTEXT_LISTENER} is the name of the `listen` listener",
                field("name")
            );
        }
        if out.iter().any(|l| l.name.eq_ignore_ascii_case(&name)) {
            bail!("{}: {name:?} is used by another listener", field("name"));
        }
        let listen_s = f
            .listen
            .as_deref()
            .ok_or_else(|| anyhow!("{}: missing", field("listen")))?;
        let listen = resolve(&field("listen"), listen_s)?;
        let clash =
            |a: SocketAddr| a.port() != 0 && a.port() == listen.port() && a.ip() == listen.ip();
        if clash(primary) || out.iter().any(|l| clash(l.listen)) {
            bail!("{}: {listen} is bound by another listener", field("listen"));
        }
        let protocol_s = f
            .security_protocol
            .as_deref()
            .ok_or_else(|| anyhow!("{}: missing", field("security_protocol")))?;
        let security_protocol = SecurityProtocol::parse(protocol_s).ok_or_else(|| {
            anyhow!(
                "{}: {protocol_s:?} is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
                field("security_protocol")
            )
        })?;
        let (advertised_host, advertised_port) = match &f.advertised {
            Some(adv) => parse_advertised(&field("advertised"), adv)?,
            None => (listen.ip().to_string(), listen.port()),
        };
        out.push(sluice_net::security::ListenerConfig {
            name,
            listen,
            advertised_host,
            advertised_port,
            security_protocol,
        });
    }
    Ok(out)
}

/// Longest `auth.connections_max_reauth_ms` (a day; Kafka sets none, but a session past a
/// day is an operator's typo more often than a wish).
const CONNECTIONS_MAX_REAUTH_MS_MAX: u64 = 86_400_000;

/// `[auth]`: known mechanism names, each once; a bounded session lifetime.
fn auth(f: &AuthFileConfig) -> Result<sluice_net::security::sasl::AuthSettings> {
    use sluice_net::security::sasl::{AuthSettings, SaslMechanism};
    let mut out = AuthSettings::default();
    if let Some(names) = &f.sasl_mechanisms {
        out.sasl_mechanisms.clear();
        for (i, n) in names.iter().enumerate() {
            let m = SaslMechanism::parse(n).ok_or_else(|| {
                anyhow!(
                    "auth.sasl_mechanisms[{i}]: {n:?} is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                )
            })?;
            if out.sasl_mechanisms.contains(&m) {
                bail!("auth.sasl_mechanisms[{i}]: {n:?} is listed twice");
            }
            out.sasl_mechanisms.push(m);
        }
    }
    if let Some(ms) = f.connections_max_reauth_ms {
        if ms > CONNECTIONS_MAX_REAUTH_MS_MAX {
            bail!("auth.connections_max_reauth_ms: {ms} is above {CONNECTIONS_MAX_REAUTH_MS_MAX}");
        }
        out.connections_max_reauth_ms = ms;
    }
    out.authorizer = authorizer(f)?;
    Ok(out)
}

/// Longest admin token file read.
const ADMIN_TOKEN_FILE_BYTES_MAX: u64 = 4096;

/// `[auth] admin_token_file`: the token it holds (surrounding whitespace dropped).
fn admin_token(f: &AuthFileConfig) -> Result<Option<sluice_net::admin::AdminToken>> {
    let Some(path) = &f.admin_token_file else {
        return Ok(None);
    };
    let what = || format!("auth.admin_token_file {}", path.display());
    let len = std::fs::metadata(path).with_context(what)?.len();
    if len > ADMIN_TOKEN_FILE_BYTES_MAX {
        bail!(
            "{}: {len} bytes, more than {ADMIN_TOKEN_FILE_BYTES_MAX}",
            what()
        );
    }
    let text = std::fs::read_to_string(path).with_context(what)?;
    sluice_net::admin::AdminToken::new(text.trim())
        .map(Some)
        .map_err(|e| anyhow!("{}: {e}", what()))
}

/// Most `auth.super_users` entries.
const SUPER_USERS_MAX: usize = 1000;

/// `[auth]`'s authorizer keys: each super user a `Type:name` principal.
fn authorizer(f: &AuthFileConfig) -> Result<sluice_net::security::AuthorizerConfig> {
    let super_users = f.super_users.clone().unwrap_or_default();
    if super_users.len() > SUPER_USERS_MAX {
        bail!(
            "auth.super_users: {} entries, at most {SUPER_USERS_MAX}",
            super_users.len()
        );
    }
    for (i, p) in super_users.iter().enumerate() {
        match p.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => bail!("auth.super_users[{i}]: {p:?} is not a principal like \"User:admin\""),
        }
    }
    Ok(sluice_net::security::AuthorizerConfig {
        enabled: f.authorizer.unwrap_or(false),
        super_users,
        allow_everyone_if_no_acl_found: f.allow_everyone_if_no_acl_found.unwrap_or(false),
    })
}

/// `[tls]`: the certificate and key files, and how client certificates are asked for.
fn tls(f: Option<&TlsFileConfig>) -> Result<Option<sluice_net::security::tls::TlsSettings>> {
    use sluice_net::security::tls::{ClientAuth, TlsSettings};
    let Some(f) = f else {
        return Ok(None);
    };
    let cert_file = f
        .cert_file
        .clone()
        .ok_or_else(|| anyhow!("tls.cert_file: missing"))?;
    let key_file = f
        .key_file
        .clone()
        .ok_or_else(|| anyhow!("tls.key_file: missing"))?;
    let auth_s = f.client_auth.as_deref().unwrap_or("none");
    let client_auth = ClientAuth::parse(auth_s).ok_or_else(|| {
        anyhow!("tls.client_auth: {auth_s:?} is not \"none\", \"requested\" or \"required\"")
    })?;
    if client_auth != ClientAuth::None && f.client_ca_file.is_none() {
        bail!("tls.client_ca_file: needed when tls.client_auth is {auth_s:?}");
    }
    Ok(Some(TlsSettings {
        cert_file,
        key_file,
        client_ca_file: f.client_ca_file.clone(),
        client_auth,
    }))
}

/// `[cluster_tls]`: the node certificate, the cluster CA and, on a broker, the
/// inter-broker listener (an SSL one among `[[listeners]]`, which `server.listeners`
/// already holds).
fn cluster_tls(
    f: Option<&ClusterTlsFileConfig>,
    server: &sluice_net::ServerConfig,
) -> Result<Option<sluice_net::security::ClusterTlsConfig>> {
    use sluice_net::security::SecurityProtocol;
    let Some(f) = f else {
        return Ok(None);
    };
    let file = |v: &Option<PathBuf>, key: &str| {
        v.clone()
            .ok_or_else(|| anyhow!("cluster_tls.{key}: missing"))
    };
    let files = sluice_net::security::ClusterTlsSettings {
        cert_file: file(&f.cert_file, "cert_file")?,
        key_file: file(&f.key_file, "key_file")?,
        ca_file: file(&f.ca_file, "ca_file")?,
    };
    let listener = match (&f.listener, server.cluster.roles.broker) {
        (None, true) => bail!(
            "cluster_tls.listener: missing (a broker needs its inter-broker listener: the name of an SSL [[listeners]] entry)"
        ),
        (Some(name), _) => {
            let found = server.listeners.iter().find(|l| &l.name == name);
            match found {
                Some(l) if l.security_protocol == SecurityProtocol::Ssl => Some(name.clone()),
                Some(l) => bail!(
                    "cluster_tls.listener: listener {name:?} is {}, it must be SSL",
                    l.security_protocol.name()
                ),
                None => bail!("cluster_tls.listener: no [[listeners]] entry is named {name:?}"),
            }
        }
        (None, false) => None,
    };
    Ok(Some(sluice_net::security::ClusterTlsConfig {
        files,
        listener,
    }))
}

/// glommio's DMA memory per shard when `io_memory_bytes` is not set.
const GLOMMIO_IO_MEMORY_BYTES: u64 = 10 << 20;

/// `shard.memory_bytes_max`: the bounds on a shard's storage memory (tail cache, unwritten
/// appends, compaction key map, DMA memory) must fit in it. Bounds left unset are derived
/// from it — half for the tail cache, a quarter for unwritten appends, a sixteenth (at most
/// 16 MiB) for the compaction map — and a total over it is refused, naming every part.
/// Request memory is bounded apart from it (`network.*`).
fn memory_budget(b: &ShardBoundsConfig) -> Result<ShardBoundsConfig> {
    let mut out = *b;
    let Some(budget) = b.memory_bytes_max else {
        return Ok(out);
    };
    let io = b.io_memory_bytes.unwrap_or(GLOMMIO_IO_MEMORY_BYTES);
    let usable = budget.saturating_sub(io);
    out.tail_cache_bytes_max = b.tail_cache_bytes_max.or(Some(usable / 2));
    out.shard_write_buffer_bytes_max = b.shard_write_buffer_bytes_max.or(Some(usable / 4));
    out.compaction_map_bytes_max = b
        .compaction_map_bytes_max
        .or(Some((usable / 16).clamp(4096, 16 << 20)));
    let parts = [
        ("shard.tail_cache_bytes_max", out.tail_cache_bytes_max),
        (
            "shard.shard_write_buffer_bytes_max",
            out.shard_write_buffer_bytes_max,
        ),
        (
            "shard.compaction_map_bytes_max",
            out.compaction_map_bytes_max,
        ),
        ("shard.io_memory_bytes", Some(io)),
    ];
    let total: u64 = parts.iter().filter_map(|(_, v)| *v).sum();
    if total > budget || usable == 0 {
        let listed: Vec<String> = parts
            .iter()
            .map(|(k, v)| format!("{k} = {}", v.unwrap_or(0)))
            .collect();
        bail!(
            "shard.memory_bytes_max: {budget} is less than the shard's storage memory, {total} ({})",
            listed.join(", ")
        );
    }
    Ok(out)
}

/// `placement.partition_policy` and `placement.pins`; that pinned CPUs run a shard is
/// checked at start-up, against the core list in force.
fn placement_settings(p: &PlacementFileConfig) -> Result<PlacementSettings> {
    let policy = match p.partition_policy.as_deref() {
        None => PartitionPolicy::default(),
        Some(s) => PartitionPolicy::parse(s).ok_or_else(|| {
            anyhow!("placement.partition_policy: {s:?} is neither \"hash\" nor \"balanced\"")
        })?,
    };
    let mut pins = Vec::with_capacity(p.pins.len());
    for (i, pin) in p.pins.iter().enumerate() {
        sluice_net::validate_topic_name(&pin.topic)
            .map_err(|e| anyhow!("placement.pins[{i}].topic: {e}"))?;
        let (first, last) = match pin.partitions.as_deref().map(str::trim) {
            None | Some("all") => (0, i32::MAX),
            Some(range) => parse_partition_range(range).ok_or_else(|| {
                anyhow!("placement.pins[{i}].partitions: {range:?} is not N or N-M (0 ≤ N ≤ M)")
            })?,
        };
        pins.push(Pin {
            topic: pin.topic.clone(),
            first,
            last,
            cpu: pin.core,
        });
    }
    Ok(PlacementSettings { policy, pins })
}

fn parse_partition_range(s: &str) -> Option<(i32, i32)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (i32, i32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (0 <= a && a <= b).then_some((a, b))
}

fn groups_config(g: &GroupsFileConfig) -> Result<GroupsConfig> {
    let d = GroupsConfig::default();
    let partitions = positive_max(
        "groups.offsets_topic_partitions",
        g.offsets_topic_partitions,
        d.offsets_partitions as usize,
        10_000,
    )?;
    let retention_minutes = positive(
        "groups.offsets_retention_minutes",
        g.offsets_retention_minutes,
        (d.offsets_retention_ms / 60_000) as usize,
    )? as i64;
    let replication_factor = positive_max(
        "groups.offsets_topic_replication_factor",
        g.offsets_topic_replication_factor,
        d.offsets_replication_factor as usize,
        16,
    )?;
    let c = GroupsConfig {
        offsets_partitions: partitions as i32,
        offsets_replication_factor: replication_factor as i16,
        offsets_retention_ms: retention_minutes.saturating_mul(60_000),
        offsets_retention_check_interval_ms: positive(
            "groups.offsets_retention_check_interval_ms",
            g.offsets_retention_check_interval_ms,
            d.offsets_retention_check_interval_ms as usize,
        )? as u64,
        session_timeout_ms_min: g
            .session_timeout_ms_min
            .map_or(d.session_timeout_ms_min, |v| v.min(i32::MAX as u32) as i32),
        session_timeout_ms_max: g
            .session_timeout_ms_max
            .map_or(d.session_timeout_ms_max, |v| v.min(i32::MAX as u32) as i32),
        members_per_group_max: positive(
            "groups.members_per_group_max",
            g.members_per_group_max,
            d.members_per_group_max,
        )?,
        groups_max: positive("groups.groups_max", g.groups_max, d.groups_max)?,
        offsets_max: positive("groups.offsets_max", g.offsets_max, d.offsets_max)?,
        offset_metadata_bytes_max: g.offset_metadata_bytes_max.map_or(
            Ok(d.offset_metadata_bytes_max),
            |v| {
                usize::try_from(v)
                    .map_err(|_| anyhow!("groups.offset_metadata_bytes_max: {v} is too large"))
            },
        )?,
        consumer_session_timeout_ms: positive(
            "groups.consumer_session_timeout_ms",
            g.consumer_session_timeout_ms.map(u64::from),
            d.consumer_session_timeout_ms as usize,
        )?
        .min(i32::MAX as usize) as i32,
        consumer_heartbeat_interval_ms: positive(
            "groups.consumer_heartbeat_interval_ms",
            g.consumer_heartbeat_interval_ms.map(u64::from),
            d.consumer_heartbeat_interval_ms as usize,
        )?
        .min(i32::MAX as usize) as i32,
        consumer_migration_policy: match &g.consumer_migration_policy {
            None => d.consumer_migration_policy,
            Some(p) => MigrationPolicy::parse(p).ok_or_else(|| {
                anyhow!(
                    "groups.consumer_migration_policy: {p:?} is not one of {}",
                    MigrationPolicy::NAMES.join(", ")
                )
            })?,
        },
    };
    if c.consumer_heartbeat_interval_ms >= c.consumer_session_timeout_ms {
        // Kafka: group.consumer.heartbeat.interval.ms must be below the session timeout.
        bail!(
            "groups.consumer_heartbeat_interval_ms: {} is not below groups.consumer_session_timeout_ms ({})",
            c.consumer_heartbeat_interval_ms,
            c.consumer_session_timeout_ms
        );
    }
    if c.session_timeout_ms_min > c.session_timeout_ms_max {
        bail!(
            "groups.session_timeout_ms_min: {} is above groups.session_timeout_ms_max ({})",
            c.session_timeout_ms_min,
            c.session_timeout_ms_max
        );
    }
    Ok(c)
}

fn transactions_config(t: &TransactionsFileConfig) -> Result<TxnConfig> {
    let d = TxnConfig::default();
    Ok(TxnConfig {
        partitions: positive_max(
            "transactions.state_log_partitions",
            t.state_log_partitions,
            d.partitions as usize,
            10_000,
        )? as i32,
        replication_factor: positive_max(
            "transactions.state_log_replication_factor",
            t.state_log_replication_factor,
            d.replication_factor as usize,
            16,
        )? as i16,
        max_timeout_ms: positive_max(
            "transactions.max_timeout_ms",
            t.max_timeout_ms,
            d.max_timeout_ms as usize,
            i32::MAX as usize,
        )? as i32,
        abort_check_interval_ms: positive(
            "transactions.abort_timed_out_check_interval_ms",
            t.abort_timed_out_check_interval_ms,
            d.abort_check_interval_ms as usize,
        )? as u64,
        txns_max: positive(
            "transactions.transactional_ids_max",
            t.transactional_ids_max,
            d.txns_max,
        )?,
        transaction_version: match t.transaction_version {
            None => d.transaction_version,
            Some(v @ 1..=2) => v as i16,
            Some(v) => bail!("transactions.transaction_version must be 1 or 2, not {v}"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_section_is_read_and_checked() {
        let f: FileConfig = toml::from_str(
            "[transactions]\nstate_log_partitions = 4\nmax_timeout_ms = 60000\nabort_timed_out_check_interval_ms = 200\n",
        )
        .unwrap();
        let t = transactions_config(&f.transactions).unwrap();
        assert_eq!(
            (t.partitions, t.max_timeout_ms, t.abort_check_interval_ms),
            (4, 60_000, 200)
        );
        let f: FileConfig = toml::from_str("[transactions]\nstate_log_partitions = 0\n").unwrap();
        let err = transactions_config(&f.transactions)
            .unwrap_err()
            .to_string();
        assert!(err.contains("transactions.state_log_partitions"), "{err}");
        let f: FileConfig = toml::from_str("[transactions]\ntransaction_version = 3\n").unwrap();
        let err = transactions_config(&f.transactions)
            .unwrap_err()
            .to_string();
        assert!(err.contains("transactions.transaction_version"), "{err}");
        let f: FileConfig = toml::from_str("[transactions]\ntransaction_version = 1\n").unwrap();
        assert_eq!(
            transactions_config(&f.transactions)
                .unwrap()
                .transaction_version,
            1
        );
        let f: FileConfig =
            toml::from_str("[transactions]\nstate_log_replication_factor = 99\n").unwrap();
        let err = transactions_config(&f.transactions)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("transactions.state_log_replication_factor"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err =
            toml::from_str::<FileConfig>("listen = \"127.0.0.1:1\"\nbogus_key = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus_key"), "{err}");
        let err = toml::from_str::<FileConfig>("[network]\nnope = 1\n").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn memory_budget_derives_unset_bounds_and_refuses_overcommit() {
        let parse = |t: &str| toml::from_str::<FileConfig>(t).unwrap();
        let f = parse("[shard]\nmemory_bytes_max = 1073741824\n");
        let s = settings(f, Overrides::default()).unwrap();
        let usable = (1u64 << 30) - GLOMMIO_IO_MEMORY_BYTES;
        assert_eq!(s.server.shard.tail_cache_bytes_max as u64, usable / 2);
        assert_eq!(
            s.server.shard.shard_write_buffer_bytes_max as u64,
            usable / 4
        );
        assert_eq!(s.server.shard.compaction_map_bytes_max, 16 << 20);
        // Set bounds are kept, and must fit.
        let f = parse("[shard]\nmemory_bytes_max = 1073741824\ntail_cache_bytes_max = 1048576\n");
        let s = settings(f, Overrides::default()).unwrap();
        assert_eq!(s.server.shard.tail_cache_bytes_max, 1 << 20);
        let f = parse("[shard]\nmemory_bytes_max = 67108864\ntail_cache_bytes_max = 67108864\n");
        let err = settings(f, Overrides::default()).unwrap_err().to_string();
        assert!(
            err.contains("shard.memory_bytes_max")
                && err.contains("shard.tail_cache_bytes_max = 67108864"),
            "{err}"
        );
        let f = parse("[shard]\nmemory_bytes_max = 1024\n");
        assert!(
            settings(f, Overrides::default()).is_err(),
            "smaller than the DMA memory"
        );
    }

    #[test]
    fn groups_section_is_read_and_checked() {
        let f: FileConfig = toml::from_str(
            "[groups]\noffsets_topic_partitions = 3\noffsets_retention_minutes = 2\nsession_timeout_ms_min = 1000\n",
        )
        .unwrap();
        let g = groups_config(&f.groups).unwrap();
        assert_eq!(
            (
                g.offsets_partitions,
                g.offsets_retention_ms,
                g.session_timeout_ms_min
            ),
            (3, 120_000, 1000)
        );
        let f: FileConfig = toml::from_str("[groups]\noffsets_topic_partitions = 0\n").unwrap();
        let err = groups_config(&f.groups).unwrap_err().to_string();
        assert!(err.contains("groups.offsets_topic_partitions"), "{err}");
        let f: FileConfig = toml::from_str(
            "[groups]\nsession_timeout_ms_min = 9000\nsession_timeout_ms_max = 8000\n",
        )
        .unwrap();
        let err = groups_config(&f.groups).unwrap_err().to_string();
        assert!(err.contains("session_timeout_ms_min"), "{err}");
    }

    #[test]
    fn the_migration_policy_takes_kafkas_names() {
        let policy = |toml: &str| {
            let f: FileConfig = toml::from_str(toml).unwrap();
            groups_config(&f.groups).map(|g| g.consumer_migration_policy)
        };
        assert_eq!(
            policy("[groups]\n").unwrap(),
            MigrationPolicy::Bidirectional
        );
        assert_eq!(
            policy("[groups]\nconsumer_migration_policy = \"UPGRADE\"\n").unwrap(),
            MigrationPolicy::Upgrade
        );
        let err = policy("[groups]\nconsumer_migration_policy = \"sideways\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("groups.consumer_migration_policy"), "{err}");
    }

    #[test]
    fn connection_and_request_bounds_are_read_and_checked() {
        let parse = |t: &str| toml::from_str::<FileConfig>(t).unwrap();
        let f = parse(
            "[network]\nconnections_max = 100\nconnections_max_per_ip = 10\nqueued_request_bytes_max = 33554432\nconnection_idle_ms_max = 500\n",
        );
        let s = settings(f, Overrides::default()).unwrap().server;
        assert_eq!(
            (
                s.connections_max,
                s.connections_max_per_ip,
                s.queued_request_bytes_max,
                s.connection_idle_ms_max
            ),
            (100, 10, 32 << 20, 500)
        );
        let s = settings(parse(""), Overrides::default()).unwrap().server;
        assert_eq!(
            (
                s.connections_max,
                s.connections_max_per_ip,
                s.queued_request_bytes_max
            ),
            (16_384, 4096, 256 << 20)
        );
        for (line, key) in [
            ("connections_max = 0", "network.connections_max"),
            (
                "connections_max_per_ip = 0",
                "network.connections_max_per_ip",
            ),
            (
                "queued_request_bytes_max = 0",
                "network.queued_request_bytes_max",
            ),
            (
                "queued_request_bytes_max = 1000",
                "network.queued_request_bytes_max",
            ),
            (
                "connection_idle_ms_max = 0",
                "network.connection_idle_ms_max",
            ),
        ] {
            let err = settings(parse(&format!("[network]\n{line}\n")), Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{line}: {err}");
        }
    }

    #[test]
    fn bad_value_is_named() {
        let f: FileConfig =
            toml::from_str("[topic_defaults]\nflush_policy = \"sometimes\"\n").unwrap();
        let err = settings(f, Overrides::default()).unwrap_err();
        assert!(
            err.to_string().contains("topic_defaults.flush_policy"),
            "{err}"
        );
        let err = toml::from_str::<FileConfig>("node_id = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("node_id"), "{err}");
    }

    #[test]
    fn controlled_shutdown_timeout_is_bounded_and_zero_turns_it_off() {
        let f: FileConfig =
            toml::from_str("[cluster]\ncontrolled_shutdown_timeout_ms = 3600001\n").unwrap();
        let err = settings(f, Overrides::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("cluster.controlled_shutdown_timeout_ms: 3600001 is above"),
            "{err}"
        );
        let f: FileConfig =
            toml::from_str("[cluster]\ncontrolled_shutdown_timeout_ms = 0\n").unwrap();
        let s = settings(f, Overrides::default()).unwrap();
        assert_eq!(s.server.cluster.controlled_shutdown_timeout_ms, 0);
    }

    #[test]
    fn flags_override_file() {
        let f: FileConfig = toml::from_str("listen = \"127.0.0.1:1111\"\ncores = \"0\"\n").unwrap();
        let o = Overrides {
            listen: Some("127.0.0.1:2222".into()),
            ..Overrides::default()
        };
        let s = settings(f, o).unwrap();
        assert_eq!(s.server.listen.port(), 2222);
        assert_eq!(s.server.advertised_port, 2222);
        assert_eq!(s.server.cores, vec![0]);
    }

    fn host(online: &str) -> HostCpus {
        let set = CpuSet::parse_list(online).unwrap();
        HostCpus {
            online: set.clone(),
            allowed: set,
        }
    }

    fn cores_of(toml_text: &str, flag: Option<&str>, pinned: bool) -> Result<String, String> {
        let f: FileConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        match placement(&f, flag, pinned, &host("0-7")) {
            Ok(Ok(p)) => Ok(format!("{} / {}", p.shard_cores, p.reserved_cores)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The settings of config file `t` on core 0, unpinned; the error as text.
    fn settings_of(t: &str) -> Result<Settings, String> {
        let f: FileConfig = toml::from_str(t).map_err(|e| e.to_string())?;
        let o = Overrides {
            cores: Some("0".into()),
            no_pin: true,
            ..Overrides::default()
        };
        settings(f, o).map_err(|e| e.to_string())
    }

    #[test]
    fn cluster_tls_needs_its_files_and_an_ssl_inter_broker_listener() {
        let run = settings_of;
        let listener = |protocol: &str| {
            format!(
                "[[listeners]]\nname = \"INTERNAL\"\nlisten = \"127.0.0.1:9094\"\nsecurity_protocol = \"{protocol}\"\n"
            )
        };
        let files = "cert_file = \"/n.pem\"\nkey_file = \"/n.key\"\nca_file = \"/ca.pem\"\n";
        // No [tls] needed: the inter-broker listener is served with the node certificate.
        let ok = run(&format!(
            "{}[cluster_tls]\n{files}listener = \"INTERNAL\"\n",
            listener("SSL")
        ))
        .expect("valid");
        let c = ok.server.cluster_tls.expect("cluster_tls");
        assert_eq!(c.listener.as_deref(), Some("INTERNAL"));
        assert_eq!(c.files.ca_file, PathBuf::from("/ca.pem"));
        for (body, named) in [
            (format!("{}[cluster_tls]\n{files}", listener("SSL")), "cluster_tls.listener: missing"),
            (
                format!("{}[cluster_tls]\n{files}listener = \"INTERNAL\"\n", listener("PLAINTEXT")),
                "it must be SSL",
            ),
            (
                format!("{}[cluster_tls]\n{files}listener = \"OTHER\"\n", listener("SSL")),
                "no [[listeners]] entry is named \"OTHER\"",
            ),
            (
                format!(
                    "{}[cluster_tls]\ncert_file = \"/n.pem\"\nkey_file = \"/n.key\"\nlistener = \"INTERNAL\"\n",
                    listener("SSL")
                ),
                "cluster_tls.ca_file: missing",
            ),
        ] {
            let e = run(&body).expect_err(named);
            assert!(e.contains(named), "{e}");
        }
        assert!(run("").expect("plain").server.cluster_tls.is_none());
    }

    #[test]
    fn listeners_are_read_and_each_bad_field_named() {
        let run = settings_of;
        let ok = run(concat!(
            "listen = \"127.0.0.1:9092\"\n",
            "[[listeners]]\nname = \"SECURE\"\nlisten = \"127.0.0.1:9093\"\n",
            "advertised = \"broker1.example.com:19093\"\nsecurity_protocol = \"SSL\"\n",
            "[[listeners]]\nname = \"INTERNAL\"\nlisten = \"127.0.0.1:9094\"\n",
            "security_protocol = \"PLAINTEXT\"\n",
            "[tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n",
            "client_ca_file = \"/ca.pem\"\nclient_auth = \"required\"\n",
        ))
        .unwrap();
        let l = &ok.server.listeners;
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].name, "SECURE");
        assert_eq!(
            (l[0].advertised_host.as_str(), l[0].advertised_port),
            ("broker1.example.com", 19093)
        );
        assert_eq!(l[1].advertised_port, 9094);
        let all = ok.server.all_listeners();
        assert_eq!(all[0].name, "PLAINTEXT");
        assert_eq!(all.len(), 3);
        let tls = ok.server.tls.unwrap();
        assert_eq!(
            tls.client_auth,
            sluice_net::security::tls::ClientAuth::Required
        );

        let listener = |body: &str| run(&format!("[[listeners]]\n{body}"));
        for (body, named) in [
            ("listen = \"127.0.0.1:1\"\nsecurity_protocol = \"SSL\"", "listeners[0].name: missing"),
            ("name = \"A B\"\nlisten = \"127.0.0.1:1\"\nsecurity_protocol = \"SSL\"", "listeners[0].name"),
            ("name = \"plaintext\"\nlisten = \"127.0.0.1:1\"\nsecurity_protocol = \"SSL\"", "listeners[0].name"),
            ("name = \"X\"\nsecurity_protocol = \"SSL\"", "listeners[0].listen: missing"),
            ("name = \"X\"\nlisten = \"nohost\"\nsecurity_protocol = \"SSL\"", "listeners[0].listen"),
            ("name = \"X\"\nlisten = \"127.0.0.1:9092\"\nsecurity_protocol = \"SSL\"", "listeners[0].listen"),
            ("name = \"X\"\nlisten = \"127.0.0.1:1\"\nsecurity_protocol = \"TLS\"", "listeners[0].security_protocol"),
            ("name = \"X\"\nlisten = \"127.0.0.1:1\"\nsecurity_protocol = \"SSL\"\nadvertised = \"h:x\"", "listeners[0].advertised"),
            // An SSL listener without [tls].
            ("name = \"X\"\nlisten = \"127.0.0.1:1\"\nsecurity_protocol = \"SSL\"", "[tls]"),
        ] {
            let e = listener(body).unwrap_err();
            assert!(e.contains(named), "{body:?}: {e}");
        }
        let authz = run("[auth]\nauthorizer = true\nsuper_users = [\"User:admin\"]\n").unwrap();
        let a = &authz.server.auth.authorizer;
        assert!(a.enabled && !a.allow_everyone_if_no_acl_found);
        assert_eq!(a.super_users, vec!["User:admin".to_string()]);
        assert!(!run("").unwrap().server.auth.authorizer.enabled);
        let two = "[[listeners]]\nname = \"X\"\nlisten = \"127.0.0.1:1\"\nsecurity_protocol = \"PLAINTEXT\"\n\
                   [[listeners]]\nname = \"x\"\nlisten = \"127.0.0.1:2\"\nsecurity_protocol = \"PLAINTEXT\"\n";
        assert!(run(two).unwrap_err().contains("listeners[1].name"));
        for (body, named) in [
            ("[auth]\nsasl_mechanisms = [\"GSSAPI\"]", "auth.sasl_mechanisms[0]"),
            ("[auth]\nsasl_mechanisms = [\"PLAIN\", \"PLAIN\"]", "auth.sasl_mechanisms[1]"),
            ("[auth]\nconnections_max_reauth_ms = 99999999999", "auth.connections_max_reauth_ms"),
            ("[auth]\nsuper_users = [\"admin\"]", "auth.super_users[0]"),
            ("[auth]\nadmin_token_file = \"/nonexistent/token\"", "auth.admin_token_file"),
            ("[auth]\nsuper_users = [\"User:a\", \"User:\"]", "auth.super_users[1]"),
            (
                "[auth]\nsasl_mechanisms = []\n[[listeners]]\nname = \"S\"\nlisten = \"127.0.0.1:1\"\nsecurity_protocol = \"SASL_PLAINTEXT\"",
                "listeners[0].security_protocol",
            ),
        ] {
            let e = run(body).unwrap_err();
            assert!(e.contains(named), "{body:?}: {e}");
        }
        for (body, named) in [
            ("key_file = \"/k\"", "tls.cert_file: missing"),
            ("cert_file = \"/c\"", "tls.key_file: missing"),
            (
                "cert_file = \"/c\"\nkey_file = \"/k\"\nclient_auth = \"maybe\"",
                "tls.client_auth",
            ),
            (
                "cert_file = \"/c\"\nkey_file = \"/k\"\nclient_auth = \"requested\"",
                "tls.client_ca_file",
            ),
        ] {
            let e = run(&format!("[tls]\n{body}\n")).unwrap_err();
            assert!(e.contains(named), "{body:?}: {e}");
        }
    }

    #[test]
    fn defaults_match_the_server() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let server = ServerConfig::new(addr, PathBuf::new(), vec![0]);
        assert_eq!(
            server.connections_max_per_shard as u64,
            CONNECTIONS_MAX_PER_SHARD_DEFAULT
        );
    }

    #[test]
    fn sample_production_config_is_valid() {
        let text = include_str!("../../deploy/sluice.toml");
        let f: FileConfig = toml::from_str(text).unwrap();
        let p = placement(&f, None, true, &host("0-15")).unwrap().unwrap();
        assert_eq!(p.shard_cores.to_string(), "1-15");
        assert_eq!(p.reserved_cores.to_string(), "0");
        // Every value passes validation; `--cores 1 --no-pin` keeps this independent of the
        // CPUs of the machine running the test.
        let o = Overrides {
            cores: Some("1".into()),
            no_pin: true,
            ..Overrides::default()
        };
        let s = settings(toml::from_str(text).unwrap(), o).unwrap();
        assert_eq!(s.server.data_dir, PathBuf::from("/var/lib/sluice/data"));
        assert_eq!(s.server.advertised_host, "broker-1.example.internal");
        assert_eq!(s.server.node_id, 1);
        assert!(matches!(s.server.topic_defaults.flush, FlushSetting::Fsync));
        assert!(!s.server.topic_defaults.auto_create);
        assert_eq!(s.server.shard.tail_cache_bytes_max, 256 << 20);
    }

    #[test]
    fn placement_forms() {
        let ok = |t: &str| cores_of(t, None, true).unwrap();
        assert_eq!(ok(""), "0-7 / none");
        assert_eq!(
            ok("[placement]\ncores = \"all\"\nreserved_cores = \"0-1\""),
            "2-7 / 0-1"
        );
        assert_eq!(
            ok("[placement]\ncores = 3\nreserved_cores = \"0\""),
            "1-3 / 0"
        );
        assert_eq!(ok("[placement]\ncores = \"2-5\""), "2-5 / none");
        assert_eq!(ok("[placement]\ncores = \"1,3,5-7\""), "1,3,5-7 / none");
        // The old top-level key and the flag still work; the flag wins.
        assert_eq!(ok("cores = \"0-1\""), "0-1 / none");
        assert_eq!(ok("cores = 2"), "0-1 / none");
        assert_eq!(
            cores_of("cores = \"0-1\"", Some("4"), true).unwrap(),
            "4 / none"
        );
        assert_eq!(
            cores_of("[placement]\nreserved_cores = \"0\"", Some("all"), true).unwrap(),
            "1-7 / 0"
        );
        // Unpinned shards (tests, shared machines): a list only sets the shard count.
        assert_eq!(
            cores_of("cores = \"0-9\"", None, false).unwrap(),
            "0-9 / none"
        );
    }

    #[test]
    fn cluster_section_and_flags() {
        let f: FileConfig = toml::from_str(
            "[cluster]\nnode_id = 2\nroles = \"broker,controller\"\ncontroller_quorum = \"1@127.0.0.1:9093,2@127.0.0.1:9094\"\nrack = \"a\"\n",
        )
        .unwrap();
        let s = settings(f, Overrides::default()).unwrap();
        assert_eq!(s.server.node_id, 2);
        assert_eq!(s.server.cluster.quorum.len(), 2);
        assert_eq!(s.server.cluster.rack.as_deref(), Some("a"));
        let o = Overrides {
            cluster: ClusterOverrides {
                node_id: Some(3),
                controller_quorum: Some("1@127.0.0.1:9093".into()),
                ..ClusterOverrides::default()
            },
            ..Overrides::default()
        };
        let err = settings(FileConfig::default(), o).unwrap_err();
        assert!(err.to_string().contains("not in the quorum"), "{err}");
        for (q, want) in [
            ("x@127.0.0.1:1", "not a node id"),
            ("0@127.0.0.1:1", "start at 1"),
            ("1@127.0.0.1:1,1@127.0.0.1:2", "twice"),
            ("127.0.0.1:1", "ID@HOST:PORT"),
        ] {
            let err = parse_quorum("cluster.controller_quorum", q).unwrap_err();
            assert!(err.to_string().contains(want), "{q}: {err}");
        }
        assert!(parse_roles("cluster.roles", "broker,gardener").is_err());
        let o = Overrides {
            cluster: ClusterOverrides {
                roles: Some("broker".into()),
                ..ClusterOverrides::default()
            },
            ..Overrides::default()
        };
        let err = settings(FileConfig::default(), o).unwrap_err();
        assert!(err.to_string().contains("controller_quorum"), "{err}");
        let o = Overrides {
            cluster: ClusterOverrides {
                broker_session_timeout_ms: Some(100),
                broker_heartbeat_interval_ms: Some(200),
                ..ClusterOverrides::default()
            },
            ..Overrides::default()
        };
        let err = settings(FileConfig::default(), o).unwrap_err();
        assert!(
            err.to_string().contains("broker_heartbeat_interval_ms"),
            "{err}"
        );
    }

    #[test]
    fn task_queue_shares() {
        let f: FileConfig =
            toml::from_str("[shard]\nproduce_shares = 300\nfetch_shares = 700\n").unwrap();
        let s = settings(f, Overrides::default()).unwrap();
        assert_eq!((s.server.produce_shares, s.server.fetch_shares), (300, 700));
        let f: FileConfig = toml::from_str("[shard]\nstall_warn_ms = 750\n").unwrap();
        assert_eq!(
            settings(f, Overrides::default())
                .unwrap()
                .server
                .stall_warn_ms,
            750
        );
        let f: FileConfig = toml::from_str("[shard]\nfetch_shares = 0\n").unwrap();
        let err = settings(f, Overrides::default()).unwrap_err().to_string();
        assert!(err.starts_with("shard.fetch_shares: "), "{err}");
    }

    #[test]
    fn partition_policy_and_pins() {
        let parse = |t: &str| {
            let f: FileConfig = toml::from_str(t).map_err(|e| e.to_string())?;
            placement_settings(&f.placement).map_err(|e| e.to_string())
        };
        let p = parse(
            "[placement]\npartition_policy = \"balanced\"\n\
             [[placement.pins]]\ntopic = \"orders\"\npartitions = \"0-3\"\ncore = 1\n\
             [[placement.pins]]\ntopic = \"audit\"\ncore = 0\n\
             [[placement.pins]]\ntopic = \"one\"\npartitions = \"5\"\ncore = 2\n",
        )
        .unwrap();
        assert_eq!(p.policy, PartitionPolicy::Balanced);
        let ranges: Vec<_> = p
            .pins
            .iter()
            .map(|p| (p.topic.as_str(), p.first, p.last, p.cpu))
            .collect();
        assert_eq!(
            ranges,
            vec![
                ("orders", 0, 3, 1),
                ("audit", 0, i32::MAX, 0),
                ("one", 5, 5, 2)
            ]
        );
        assert_eq!(parse("").unwrap().policy, PartitionPolicy::Hash);
        let err = |t: &str| parse(t).unwrap_err();
        assert!(err("[placement]\npartition_policy = \"rr\"")
            .starts_with("placement.partition_policy: "));
        assert!(
            err("[[placement.pins]]\ntopic = \"a\"\npartitions = \"3-1\"\ncore = 0")
                .starts_with("placement.pins[0].partitions: ")
        );
        assert!(err("[[placement.pins]]\ntopic = \"a b\"\ncore = 0")
            .starts_with("placement.pins[0].topic: "));
        assert!(err("[[placement.pins]]\ntopic = \"a\"").contains("core"));
    }

    #[test]
    fn placement_errors_name_the_field() {
        let err = |t: &str, flag: Option<&str>| cores_of(t, flag, true).unwrap_err();
        assert!(err("[placement]\ncores = \"x\"", None).contains("placement.cores"));
        assert!(err("[placement]\ncores = 0", None).contains("placement.cores"));
        assert!(err("[placement]\nreserved_cores = \"3-1\"", None).contains("reserved_cores"));
        assert!(err("[placement]\nbogus = 1", None).contains("bogus"));
        assert_eq!(
            err("[placement]\ncores = \"6-9\"", None),
            "placement.cores: CPU 8-9 not online (online: 0-7)"
        );
        assert_eq!(
            err("cores = \"9\"", None),
            "cores: CPU 9 not online (online: 0-7)"
        );
        assert_eq!(
            err("", Some("12")),
            "--cores: CPU 12 not online (online: 0-7)"
        );
        assert!(err("", Some("1-x")).starts_with("--cores: "));
        assert_eq!(
            err(
                "[placement]\ncores = \"0-3\"\nreserved_cores = \"3-4\"",
                None
            ),
            "placement.cores: CPU 3 also in placement.reserved_cores"
        );
        assert_eq!(
            err("[placement]\ncores = 9", None),
            "placement.cores: 9 cores asked, only 8 usable CPUs are not reserved (0-7)"
        );
        assert!(err("[placement]\nreserved_cores = \"0-7\"", None).contains("leaves no CPU"));
        assert!(err("[placement]\nreserved_cores = \"8\"", None)
            .starts_with("placement.reserved_cores: CPU 8 not online"));
        assert!(err("cores = 1\n[placement]\ncores = 1", None).contains("both set"));
        assert_eq!(
            err("[placement]\ncores = true", None),
            "placement.cores: true is not \"all\", a core count or a CPU list such as \"2-15\""
        );
        assert_eq!(
            err("[placement]\ncores = \"x\"", None),
            "placement.cores: \"x\" is not a CPU number or range (like 2-15)"
        );
    }
}
