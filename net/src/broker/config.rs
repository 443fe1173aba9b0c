//! Server settings as plain data. `tools` fills them from the TOML file and the flags;
//! nothing here reads files or the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

/// How a topic's appends are made durable before acks=1/all are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushSetting {
    /// fdatasync (group commit) before the answer.
    Fsync,
    /// Written before the answer; synced every `interval_ms` or `bytes_max`.
    Interval { interval_ms: u64, bytes_max: u64 },
}

/// Broker-wide defaults for topics; a topic's own configs override them.
#[derive(Debug, Clone)]
pub struct TopicDefaults {
    pub partitions: i32,
    pub auto_create: bool,
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub max_message_bytes: u32,
    pub flush: FlushSetting,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            partitions: 1,
            auto_create: true,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            max_message_bytes: 1_048_588,
            flush: FlushSetting::Interval {
                interval_ms: 1000,
                bytes_max: 64 << 20,
            },
        }
    }
}

/// Which parts of a node run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Registers with the controller and leads partitions.
    pub broker: bool,
    /// A voter of the controller quorum.
    pub controller: bool,
}

/// The node's place in the cluster (`[cluster]` in the config file).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub roles: Roles,
    /// Every controller: raft id (≥ 1) and quorum address. Empty: a quorum of one, this
    /// node, listening on `controller_listen` (default 127.0.0.1 with a free port).
    pub quorum: Vec<(u64, SocketAddr)>,
    /// Address the controller listens on; default: its own entry in `quorum`.
    pub controller_listen: Option<SocketAddr>,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// `broker.session.timeout.ms`: a broker silent this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`.
    pub broker_heartbeat_interval_ms: u64,
    /// Longest a stopping broker waits for the controller to move its leaderships away
    /// (controlled shutdown) before it stops anyway; 0 skips the controlled shutdown.
    pub controlled_shutdown_timeout_ms: u64,
    /// Length of one raft tick (election after 10–20 ticks, heartbeats every 2).
    pub controller_tick_ms: u64,
    /// `default.replication.factor`: for auto-created topics and CreateTopics with -1.
    pub default_replication_factor: i16,
    /// `auto.leader.rebalance.enable`.
    pub auto_leader_rebalance: bool,
    /// `replica.lag.time.max.ms`: a follower that has not caught up for this long leaves
    /// the ISR.
    pub replica_lag_time_max_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            roles: Roles {
                broker: true,
                controller: true,
            },
            quorum: Vec::new(),
            controller_listen: None,
            rack: None,
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 1_000,
            controlled_shutdown_timeout_ms: 30_000,
            controller_tick_ms: 50,
            default_replication_factor: 1,
            auto_leader_rebalance: true,
            replica_lag_time_max_ms: 30_000,
        }
    }
}

/// `max.connections` by default: Kafka's is unbounded; 16384 keeps a many-core broker
/// (4096 per shard) within a file descriptor budget an operator can plan for.
pub const CONNECTIONS_MAX_DEFAULT: usize = 16_384;

/// `max.connections.per.ip` by default (Kafka's is unbounded): a quarter of the total, so
/// one address — one host, or a NAT gateway in front of many — cannot take every
/// connection and lock other clients out, while a host running hundreds or a few
/// thousand clients (each holds one connection per broker) behind one address still fits.
pub const CONNECTIONS_MAX_PER_IP_DEFAULT: usize = CONNECTIONS_MAX_DEFAULT / 4;

/// `queued.max.request.bytes` per shard by default (Kafka's is unbounded): room for two
/// requests of the largest default size (`socket.request.max.bytes`, 100 MiB) plus many
/// ordinary ones, so a shard's request memory stays near 256 MiB whatever clients send.
pub const QUEUED_REQUEST_BYTES_MAX_DEFAULT: usize = 256 << 20;

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Host and port given to clients in Metadata.
    pub advertised_host: String,
    pub advertised_port: u16,
    pub data_dir: PathBuf,
    /// CPUs that run a shard each; the shard count is `cores.len()`.
    pub cores: Vec<usize>,
    /// Pin each shard to its CPU (off in tests, so shards do not pile onto one CPU).
    pub pin_cores: bool,
    pub node_id: i32,
    pub cluster_id: String,
    /// `socket.request.max.bytes`: frames longer than this close the connection.
    pub request_bytes_max: usize,
    /// Pipelined requests one connection may have in flight before reading stops.
    pub inflight_requests_max: usize,
    /// Open connections one shard keeps; more are closed on accept.
    pub connections_max_per_shard: usize,
    /// Open client connections in all (`max.connections`); more are closed on accept.
    pub connections_max: usize,
    /// Open connections from one client address (`max.connections.per.ip`); more are
    /// closed on accept.
    pub connections_max_per_ip: usize,
    /// Bytes of requests being read or not yet answered, per shard
    /// (`queued.max.request.bytes`); at the bound a shard stops reading new frames.
    pub queued_request_bytes_max: usize,
    /// A connection that sends nothing for this long is closed (`connections.max.idle.ms`).
    pub connection_idle_ms_max: u64,
    /// Depth of each shard-to-shard channel.
    pub mesh_channel_depth_max: usize,
    /// `shard.stall_warn_ms`: a shard whose task queues have not run for this long is
    /// logged (WARN) and makes `/health` answer 503 until it runs again.
    pub stall_warn_ms: u64,
    /// Upper bound on a fetch's `max_wait_ms`.
    pub fetch_wait_ms_max: u64,
    /// Fetch sessions one shard keeps (`max.incremental.fetch.session.cache.slots`).
    pub fetch_sessions_max_per_shard: usize,
    pub topic_defaults: TopicDefaults,
    /// The group coordinator (`[groups]`).
    pub groups: crate::groups::GroupsConfig,
    /// The transaction coordinator (`[transactions]`).
    pub transactions: crate::txn::TxnConfig,
    /// How often each shard applies retention (`log.retention.check.interval.ms`).
    pub retention_check_interval_ms: u64,
    /// Memory and write bounds of each shard's storage.
    pub shard: crate::store::ShardConfig,
    pub cluster: ClusterConfig,
    /// How partitions are placed on shards: the policy and the pins (`[placement]`).
    pub placement: crate::placement::PlacementSettings,
    /// Memory each shard registers with io_uring for DMA buffers (glommio's `io_memory`);
    /// `None`: glommio's default (10 MiB).
    pub io_memory_bytes: Option<usize>,
    /// CPU shares of each shard's produce and fetch task queues (glommio's default queue,
    /// for everything else, has 1000; maintenance has 100).
    pub produce_shares: usize,
    pub fetch_shares: usize,
    /// Kafka listeners besides `listen` (which is always the one named PLAINTEXT), in
    /// the order of `[[listeners]]`.
    pub listeners: Vec<crate::security::ListenerConfig>,
    /// `[tls]`: needed when a listener is SSL or SASL_SSL.
    pub tls: Option<crate::security::tls::TlsSettings>,
    /// `[auth]`: SASL mechanisms and session lifetime.
    pub auth: crate::security::sasl::AuthSettings,
    /// `[cluster_tls]`: mutual TLS for replication, inter-broker requests and the
    /// controller quorum port; `None`: the cluster's own traffic is plain TCP.
    pub cluster_tls: Option<crate::security::ClusterTlsConfig>,
}

impl ServerConfig {
    /// Every Kafka listener: `listen` as PLAINTEXT first, then `listeners`.
    pub fn all_listeners(&self) -> Vec<crate::security::ListenerConfig> {
        let primary = crate::security::ListenerConfig {
            name: crate::security::PLAINTEXT_LISTENER.to_string(),
            listen: self.listen,
            advertised_host: self.advertised_host.clone(),
            advertised_port: self.advertised_port,
            security_protocol: crate::security::SecurityProtocol::Plaintext,
        };
        std::iter::once(primary)
            .chain(self.listeners.iter().cloned())
            .collect()
    }

    /// Defaults from the issue: listen on 127.0.0.1:9092, data in ./sluice-data.
    pub fn new(listen: SocketAddr, data_dir: PathBuf, cores: Vec<usize>) -> Self {
        ServerConfig {
            listen,
            advertised_host: listen.ip().to_string(),
            advertised_port: listen.port(),
            data_dir,
            cores,
            pin_cores: true,
            node_id: 1,
            cluster_id: "sluice-cluster".to_string(),
            request_bytes_max: 100 * 1024 * 1024,
            inflight_requests_max: 64,
            connections_max_per_shard: 4096,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            connections_max_per_ip: CONNECTIONS_MAX_PER_IP_DEFAULT,
            queued_request_bytes_max: QUEUED_REQUEST_BYTES_MAX_DEFAULT,
            connection_idle_ms_max: 600_000,
            mesh_channel_depth_max: 1024,
            stall_warn_ms: 5000,
            fetch_wait_ms_max: 30_000,
            fetch_sessions_max_per_shard: 1000,
            topic_defaults: TopicDefaults::default(),
            groups: crate::groups::GroupsConfig::default(),
            transactions: crate::txn::TxnConfig::default(),
            retention_check_interval_ms: 300_000,
            shard: crate::store::ShardConfig::default(),
            cluster: ClusterConfig::default(),
            placement: crate::placement::PlacementSettings::default(),
            io_memory_bytes: None,
            produce_shares: 1000,
            fetch_shares: 1000,
            listeners: Vec::new(),
            tls: None,
            auth: crate::security::sasl::AuthSettings::default(),
            cluster_tls: None,
        }
    }
}
