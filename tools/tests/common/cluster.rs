//! A cluster of real `sluice serve` processes on 127.0.0.1: every node broker and
//! controller, node `i` in rack `r{i}`, two unpinned shards each. Each node keeps its Kafka
//! and admin ports across restarts, so clients that knew it find it again after a crash or
//! a rolling restart. Waits are on observed state, bounded by a hang guard only.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

// Also reachable here, where tests written before they moved to `common` look for them.
use super::{free_port, Broker};
#[allow(unused_imports)]
pub use super::{wait_for, wait_for_named};

/// How a cluster's nodes are configured.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// The `[cluster]` table's extra lines (e.g. `replica_lag_time_max_ms = 2000`), written
    /// into each node's config file.
    pub cluster_toml: String,
    /// Top-level lines of node `i`'s config file at index `i - 1` (e.g. its
    /// `[[listeners]]`); none past the end.
    pub node_toml: Vec<String>,
    /// Nodes `1..=controllers` are controllers (and brokers), the others brokers only;
    /// 0: every node is a controller.
    pub controllers: usize,
}

impl Default for ClusterSpec {
    fn default() -> ClusterSpec {
        ClusterSpec {
            nodes: 3,
            session_timeout_ms: 3_000,
            heartbeat_interval_ms: 200,
            cluster_toml: String::new(),
            node_toml: Vec::new(),
            controllers: 0,
        }
    }
}

/// One node's fixed addresses.
#[derive(Debug, Clone)]
struct NodePorts {
    kafka: u16,
    admin: u16,
    /// Its controller quorum listener (raft and broker RPCs).
    controller: u16,
}

/// Where nodes reach each other when something stands in between (the nemesis's proxies):
/// node `from` dials `controller[from - 1][to - 1]` for node `to`'s quorum listener, and node
/// `to` advertises `advertised[to - 1]` as its Kafka address (clients and followers dial it).
/// Each node still binds its own ports.
#[derive(Debug, Clone)]
pub struct Detours {
    pub controller: Vec<Vec<u16>>,
    pub advertised: Vec<u16>,
}

pub struct Cluster {
    pub root: PathBuf,
    pub spec: ClusterSpec,
    ports: Vec<NodePorts>,
    detours: Option<Detours>,
    nodes: Vec<Option<Broker>>,
}

/// One partition as Metadata reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

impl Cluster {
    /// Starts every node and waits (up to `guard`) until all are unfenced brokers and the
    /// quorum has a leader.
    pub fn start(name: &str, spec: ClusterSpec, guard: Duration) -> Cluster {
        let c = Cluster::launch(name, spec);
        c.wait_all_active(guard);
        c
    }

    /// Starts every node and returns as soon as each has printed its listening line
    /// (before any has registered, so clients can ask it while the cluster forms).
    pub fn launch(name: &str, spec: ClusterSpec) -> Cluster {
        let mut c = Cluster::prepare(name, spec);
        for id in c.ids() {
            c.start_node(id);
        }
        c
    }

    /// Chooses every node's ports and its directory, and starts nothing (so something can
    /// be put between the nodes first: [`Cluster::set_detours`]).
    pub fn prepare(name: &str, spec: ClusterSpec) -> Cluster {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let ports = (0..spec.nodes)
            .map(|_| NodePorts {
                kafka: free_port(),
                admin: free_port(),
                controller: free_port(),
            })
            .collect();
        Cluster {
            root,
            ports,
            detours: None,
            nodes: (0..spec.nodes).map(|_| None).collect(),
            spec,
        }
    }

    /// Routes the nodes started from now on through `detours`.
    pub fn set_detours(&mut self, detours: Detours) {
        assert_eq!(detours.advertised.len(), self.spec.nodes);
        assert_eq!(detours.controller.len(), self.spec.nodes);
        self.detours = Some(detours);
    }

    /// The port node `id`'s Kafka listener binds.
    pub fn kafka_port(&self, id: usize) -> u16 {
        self.ports[id - 1].kafka
    }

    /// The port node `id`'s controller quorum listener binds.
    pub fn controller_port(&self, id: usize) -> u16 {
        self.ports[id - 1].controller
    }

    /// The process id of node `id`, while it runs.
    pub fn pid(&self, id: usize) -> Option<u32> {
        self.nodes[id - 1].as_ref()?.pid()
    }

    /// `--controller-quorum` as node `id` is told it: its own listener, and each peer where
    /// the detours say `id` reaches it.
    fn quorum_for(&self, id: usize) -> String {
        let controllers = match self.spec.controllers {
            0 => self.spec.nodes,
            n => n.min(self.spec.nodes),
        };
        (1..=controllers)
            .map(|peer| {
                let port = match &self.detours {
                    Some(d) if peer != id => d.controller[id - 1][peer - 1],
                    _ => self.ports[peer - 1].controller,
                };
                format!("{peer}@127.0.0.1:{port}")
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn ids(&self) -> Vec<usize> {
        (1..=self.spec.nodes).collect()
    }

    /// Starts node `id` (again) on its data dir and ports.
    pub fn start_node(&mut self, id: usize) {
        assert!(self.nodes[id - 1].is_none(), "node {id} already runs");
        let dir = self.root.join(format!("node{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("sluice.toml");
        let node_toml = self.spec.node_toml.get(id - 1).map_or("", String::as_str);
        std::fs::write(
            &config,
            format!("{node_toml}\n[cluster]\n{}\n", self.spec.cluster_toml),
        )
        .unwrap();
        let broker_only = self.spec.controllers != 0 && id > self.spec.controllers;
        let roles = if broker_only {
            "broker"
        } else {
            "broker,controller"
        };
        let mut args = vec![
            "--roles".to_string(),
            roles.to_string(),
            "--config".to_string(),
            config.display().to_string(),
            "--node-id".into(),
            id.to_string(),
            "--controller-quorum".into(),
            self.quorum_for(id),
            "--rack".into(),
            format!("r{id}"),
            "--broker-session-timeout-ms".into(),
            self.spec.session_timeout_ms.to_string(),
            "--broker-heartbeat-interval-ms".into(),
            self.spec.heartbeat_interval_ms.to_string(),
        ];
        if let Some(d) = &self.detours {
            args.extend([
                "--advertised".into(),
                format!("127.0.0.1:{}", d.advertised[id - 1]),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let p = &self.ports[id - 1];
        // SLUICE_TEST_LOG_DIR: each node's log in a file of its own (tests that run nodes
        // in one process otherwise interleave their logs on stderr).
        let own_log = std::env::var("SLUICE_TEST_LOG_DIR").ok().map(|d| {
            std::path::PathBuf::from(d).join(format!("{}-node{id}.log", std::process::id()))
        });
        let filter = std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info".into());
        self.nodes[id - 1] = Some(Broker::launch_with_log(
            &dir.join("data"),
            &format!("127.0.0.1:{}", p.kafka),
            &format!("127.0.0.1:{}", p.admin),
            "0-1",
            &args,
            own_log.as_deref().map(|d| (d, filter.as_str())),
        ));
    }

    pub fn node(&self, id: usize) -> &Broker {
        self.nodes[id - 1].as_ref().expect("node running")
    }

    pub fn is_running(&self, id: usize) -> bool {
        self.nodes[id - 1].is_some()
    }

    /// The nodes running now.
    pub fn live(&self) -> Vec<usize> {
        self.ids()
            .into_iter()
            .filter(|i| self.is_running(*i))
            .collect()
    }

    /// The Kafka address of node `id` (the same across restarts).
    pub fn addr(&self, id: usize) -> String {
        format!("127.0.0.1:{}", self.ports[id - 1].kafka)
    }

    pub fn admin_addr(&self, id: usize) -> String {
        format!("127.0.0.1:{}", self.ports[id - 1].admin)
    }

    /// Every node's Kafka address, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.ids()
            .iter()
            .map(|i| self.addr(*i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL (a crash) and reap.
    pub fn kill(&mut self, id: usize) {
        if let Some(mut b) = self.nodes[id - 1].take() {
            b.kill();
        }
    }

    /// SIGTERM and wait for the exit, at most `guard`.
    pub fn stop(&mut self, id: usize, guard: Duration) -> Option<ExitStatus> {
        let mut b = self.nodes[id - 1].take().expect("node running");
        b.stop_within(guard)
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to node `id`.
    pub fn signal(&self, id: usize, signal: i32) {
        self.node(id).signal(signal);
    }

    /// `/cluster` of node `id`, if it answers.
    pub fn status(&self, id: usize) -> Option<serde_json::Value> {
        let body = self.nodes[id - 1].as_ref()?.admin_get("/cluster").ok()?;
        serde_json::from_str(&body).ok()
    }

    pub fn controller_leader(&self, id: usize) -> Option<usize> {
        self.status(id)?["controller"]["leader"]
            .as_u64()
            .map(|l| l as usize)
    }

    /// Polls `f` every 20 ms until it gives a value; panics naming `what` after `guard`.
    pub fn wait<T>(&self, what: &str, guard: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        wait_for(what, guard, &mut f)
    }

    /// Until every node is an unfenced broker and the quorum has a leader (seen by the
    /// first running node).
    pub fn wait_all_active(&self, guard: Duration) {
        self.wait_active(&self.ids(), guard);
    }

    /// Until the nodes `ids` are unfenced brokers, no other broker is, and the quorum has
    /// a leader (seen by the first running node among them).
    pub fn wait_active(&self, ids: &[usize], guard: Duration) {
        let asked = ids.iter().copied().find(|i| self.is_running(*i));
        let asked = asked.expect("a running node");
        self.wait("every broker active and a controller leader", guard, || {
            // Each node's own registration first: after a restart, an image from before
            // it (every broker unfenced) would pass the check below on its own.
            let registered = ids.iter().filter(|i| self.is_running(**i)).all(|i| {
                self.status(*i)
                    .is_some_and(|s| s["broker_state"] == "active")
            });
            if !registered {
                return None;
            }
            let s = self.status(asked)?;
            let live = s["brokers"]
                .as_array()?
                .iter()
                .filter(|b| b["fenced"] == false)
                .count();
            (live == ids.len() && !s["controller"]["leader"].is_null()).then_some(())
        });
    }

    /// Metadata of `topic` from node `id`: the live broker ids and its partitions.
    pub fn metadata(&self, id: usize, topic: &str) -> Option<(BTreeSet<i32>, BTreeMap<i32, Part>)> {
        if !self.is_running(id) {
            return None;
        }
        metadata(&self.addr(id), topic)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut b) = n.take() {
                b.kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Metadata (v9, raw) of `topic` from the broker at `addr` and no other, so the answer is
/// that broker's view; `None` if it does not answer within 5 s or does not know the topic.
pub fn metadata(addr: &str, topic: &str) -> Option<(BTreeSet<i32>, BTreeMap<i32, Part>)> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        ApiKey, MetadataRequest, MetadataResponse, ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, HeaderVersion, StrBytes};
    use std::io::Write;
    const VERSION: i16 = 9;
    let timeout = Duration::from_secs(5);
    let sock_addr = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&sock_addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    let req = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_string())),
        ))]));
    s.write_all(&super::raw::frame(ApiKey::Metadata, VERSION, 7, &req))
        .ok()?;
    let mut body = super::raw::read_frame(&mut s)?;
    ResponseHeader::decode(&mut body, MetadataResponse::header_version(VERSION)).ok()?;
    let r = MetadataResponse::decode(&mut body, VERSION).ok()?;
    let brokers = r.brokers.iter().map(|b| b.node_id.0).collect();
    let t = r.topics.first()?;
    if t.error_code != 0 {
        return None;
    }
    let parts = t
        .partitions
        .iter()
        .map(|p| {
            let part = Part {
                leader: p.leader_id.0,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            };
            (p.partition_index, part)
        })
        .collect();
    Some((brokers, parts))
}
