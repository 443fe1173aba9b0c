//! `[cluster_tls]`: the cluster's own traffic over mutual TLS. A three-node cluster whose
//! quorum forms and whose followers fetch over TLS (acks=all with every replica required),
//! with the authorizer on and the nodes super users by their certificates' names only,
//! and a fourth node with a certificate from another CA that never becomes a broker of
//! it; on one node, each door checked on its own: the quorum port answers a node
//! certificate and refuses plaintext and a stranger's certificate, the inter-broker
//! listener refuses a client without a certificate from the cluster CA, and a follower
//! fetch on the plaintext listener is refused; and a node certificate rotated by writing
//! its files, served to new connections without a restart or a signal. Certificates are
//! made here (rcgen).

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::{Cluster, ClusterSpec};
use common::tls::{write_pair, Ca};
use common::{raw, Broker, HANG_GUARD};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, FetchRequest, FetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_control::rpc::{self, Reply, Request};
use sluice_control::tls::{ClusterTls, ClusterTlsSettings};

/// Kafka's TOPIC_AUTHORIZATION_FAILED.
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;

/// A node's config lines: an SSL listener named INTERNAL on `port` as the inter-broker
/// listener, and `[cluster_tls]` with the node certificate `name` (written into `dir`).
fn node_toml(dir: &Path, name: &str, pair: &(String, String), ca_file: &Path, port: u16) -> String {
    let (cert, key) = write_pair(dir, name, pair);
    format!(
        "[[listeners]]\nname = \"INTERNAL\"\nlisten = \"127.0.0.1:{port}\"\nsecurity_protocol = \"SSL\"\n\
         [cluster_tls]\ncert_file = {cert:?}\nkey_file = {key:?}\nca_file = {ca_file:?}\n\
         listener = \"INTERNAL\"\n"
    )
}

/// The sum over `nodes` of the quorum port's refused TLS handshakes.
fn quorum_handshakes_failed(c: &Cluster, nodes: &[usize]) -> f64 {
    nodes
        .iter()
        .map(|id| {
            let page = common::http_get(&c.admin_addr(*id), "/metrics");
            common::metric(&page, "sluice_quorum_tls_handshakes_failed_total", &[]).unwrap_or(0.0)
        })
        .sum()
}

/// The broker ids node `id`'s image lists.
fn brokers(c: &Cluster, id: usize) -> Vec<u64> {
    let status = c.status(id).expect("status");
    let mut ids: Vec<u64> = status["brokers"]
        .as_array()
        .expect("brokers")
        .iter()
        .filter_map(|b| b["id"].as_u64())
        .collect();
    ids.sort_unstable();
    ids
}

/// `[auth]` of the cluster test: the authorizer on, and only the nodes (as their
/// certificates name them) and the test's admin are super users.
const AUTH: &str = "[auth]\nauthorizer = true\nsuper_users = [\"User:CN=broker1\", \"User:CN=broker2\", \"User:CN=broker3\", \"User:CN=admin\"]\n";

/// The ISR of `topic`-0 as the client `config` is told.
fn isr(config: &rdkafka::config::ClientConfig, topic: &str) -> Vec<i32> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = config.create().expect("client");
    let md = consumer
        .fetch_metadata(Some(topic), HANG_GUARD)
        .expect("metadata");
    let mut isr = md.topics()[0].partitions()[0].isr().to_vec();
    isr.sort_unstable();
    isr
}

#[test]
fn a_cluster_replicates_over_mutual_tls_and_a_node_from_another_ca_stays_out() {
    let tmp = common::tempdir("cluster-tls");
    let dir = tmp.path();
    let ca = Ca::new("sluice cluster CA");
    let ca_file = ca.write(dir, "cluster-ca");
    let internal: Vec<u16> = (0..4).map(|_| common::free_port()).collect();
    let mut tomls: Vec<String> = (1..=3)
        .map(|i| {
            let name = format!("broker{i}");
            let toml = node_toml(dir, &name, &ca.node(&name), &ca_file, internal[i - 1]);
            format!("{toml}{AUTH}")
        })
        .collect();
    // Node 4 trusts the cluster CA, but its own certificate is another CA's.
    let stranger = Ca::new("another CA");
    let toml = node_toml(
        dir,
        "broker4",
        &stranger.node("broker4"),
        &ca_file,
        internal[3],
    );
    tomls.push(format!("{toml}{AUTH}"));
    let spec = ClusterSpec {
        nodes: 4,
        controllers: 3,
        node_toml: tomls,
        ..ClusterSpec::default()
    };
    let mut c = Cluster::prepare("cluster-tls", spec);
    for id in 1..=3 {
        c.start_node(id);
    }
    // Registration, heartbeats and the raft quorum all ran over TLS to get here.
    c.wait_active(&[1, 2, 3], HANG_GUARD);

    // The test's client is the super user `User:CN=admin` on the inter-broker listener;
    // `User:ANONYMOUS` may do nothing, so the followers' fetches (CLUSTER_ACTION) get
    // through only as `User:CN=broker<i>`, on that listener, over mutual TLS. Every write
    // waits for all three replicas.
    let (admin_cert, admin_key) = write_pair(dir, "admin", &ca.leaf("admin", false));
    let bootstrap: Vec<String> = internal[..3]
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let mut client = rdkafka::config::ClientConfig::new();
    client
        .set("bootstrap.servers", bootstrap.join(","))
        .set("broker.address.family", "v4")
        .set("security.protocol", "ssl")
        .set("ssl.ca.location", ca_file.to_str().unwrap())
        .set("ssl.certificate.location", admin_cert.to_str().unwrap())
        .set("ssl.key.location", admin_key.to_str().unwrap())
        .set("acks", "all");
    common::create_topic_with(&client, "secured", 1, 3, &[("min.insync.replicas", "3")]);
    common::produce_numbered(&client, "secured", 20);
    common::consume_numbered(&client, "secured", 20);
    assert_eq!(isr(&client, "secured"), vec![1, 2, 3]);

    // The stranger: its handshakes with the quorum are refused, so it never registers.
    let before = quorum_handshakes_failed(&c, &[1, 2, 3]);
    c.start_node(4);
    c.wait("the stranger's handshakes refused", HANG_GUARD, || {
        (quorum_handshakes_failed(&c, &[1, 2, 3]) > before).then_some(())
    });
    assert_eq!(brokers(&c, 1), vec![1, 2, 3]);
    let own = c.status(4).expect("the stranger's status");
    assert_ne!(own["broker_state"], "active", "{own}");
    // Still three replicas in sync, and writes still go through.
    common::produce_numbered(&client, "secured", 5);
    assert_eq!(isr(&client, "secured"), vec![1, 2, 3]);
}

/// A one-node cluster in `dir` with config `toml`, and its quorum port.
fn start_one(dir: &Path, toml: String) -> (Broker, u16) {
    let quorum = common::free_port();
    let config = dir.join("sluice.toml");
    std::fs::write(&config, toml).unwrap();
    let quorum_flag = format!("1@127.0.0.1:{quorum}");
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--controller-quorum",
        &quorum_flag,
    ];
    (Broker::start_with(&dir.join("data"), &args), quorum)
}

/// Whether an ApiVersions request over `s` gets an answer.
fn answered(s: &mut (impl std::io::Read + std::io::Write)) -> bool {
    let frame = raw::frame(ApiKey::ApiVersions, 3, 7, &ApiVersionsRequest::default());
    s.write_all(&frame).is_ok() && s.flush().is_ok() && raw::read_frame(s).is_some()
}

/// A follower fetch of `topic`-0 as replica 2; its partition's error code.
fn follower_fetch(s: &mut (impl std::io::Read + std::io::Write), topic: &str) -> i16 {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(2))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_partition_max_bytes(1 << 20)])]);
    let resp: FetchResponse = raw::call(s, ApiKey::Fetch, 12, &req);
    resp.responses[0].partitions[0].error_code
}

#[test]
fn each_door_of_a_node_wants_a_certificate_from_the_cluster_ca() {
    let tmp = common::tempdir("cluster-tls-doors");
    let dir = tmp.path();
    let ca = Ca::new("sluice cluster CA");
    let ca_file = ca.write(dir, "cluster-ca");
    let node = ca.node("broker1");
    let internal = common::free_port();
    let (broker, quorum) = start_one(dir, node_toml(dir, "broker1", &node, &ca_file, internal));
    common::create_topic_at(&broker.addr, "doors", 1, 1, &[]);

    // The quorum port: a node certificate is answered, plaintext and a stranger are not.
    let quorum_addr = format!("127.0.0.1:{quorum}").parse().unwrap();
    let timeout = Duration::from_secs(10);
    let settings = |name: &str| ClusterTlsSettings {
        cert_file: dir.join(format!("{name}.pem")),
        key_file: dir.join(format!("{name}.key")),
        ca_file: ca_file.clone(),
    };
    let ours = ClusterTls::load(settings("broker1")).expect("node tls");
    let status = rpc::call_blocking(quorum_addr, Some(&ours), &Request::Status, timeout);
    assert!(matches!(status, Ok(Reply::Status(_))), "{status:?}");
    let plain = rpc::call_blocking(quorum_addr, None, &Request::Status, timeout);
    assert!(plain.is_err(), "plaintext answered: {plain:?}");
    let stranger = Ca::new("another CA");
    write_pair(dir, "mallory", &stranger.node("mallory"));
    let theirs = ClusterTls::load(settings("mallory")).expect("stranger tls");
    let refused = rpc::call_blocking(quorum_addr, Some(&theirs), &Request::Status, timeout);
    assert!(refused.is_err(), "a stranger answered: {refused:?}");
    common::wait_for("both refusals counted", HANG_GUARD, &mut || {
        let page = common::http_get(&broker.admin_addr, "/metrics");
        let failed = common::metric(&page, "sluice_quorum_tls_handshakes_failed_total", &[]);
        (failed >= Some(2.0)).then_some(())
    });

    // The inter-broker listener: only a certificate from the cluster CA gets in.
    let internal_addr = format!("127.0.0.1:{internal}");
    let mut s = common::tls::connect_as(&internal_addr, &ca.cert_pem, None);
    assert!(!answered(&mut s), "no certificate, yet answered");
    let mallory = stranger.node("mallory");
    let mut s = common::tls::connect_as(&internal_addr, &ca.cert_pem, Some(&mallory));
    assert!(!answered(&mut s), "a stranger's certificate, yet answered");
    let mut s = common::tls::connect_as(&internal_addr, &ca.cert_pem, Some(&node));
    assert!(answered(&mut s));

    // A follower fetch: refused on the plaintext listener, let through on the
    // inter-broker one.
    let mut plain = raw::connect(&broker.addr);
    assert_eq!(
        follower_fetch(&mut plain, "doors"),
        TOPIC_AUTHORIZATION_FAILED
    );
    assert_ne!(follower_fetch(&mut s, "doors"), TOPIC_AUTHORIZATION_FAILED);
}

#[test]
fn a_rotated_node_certificate_is_served_without_a_restart() {
    let tmp = common::tempdir("cluster-tls-rotate");
    let dir = tmp.path();
    let old_ca = Ca::new("old cluster CA");
    let ca_file = old_ca.write(dir, "cluster-ca");
    let toml = node_toml(
        dir,
        "broker1",
        &old_ca.node("broker1"),
        &ca_file,
        common::free_port(),
    );
    let (_broker, quorum) = start_one(dir, toml);
    // A peer of the new CA only: refused while the node presents the old certificate.
    let new_ca = Ca::new("new cluster CA");
    let peer_dir = dir.join("peer");
    std::fs::create_dir_all(&peer_dir).unwrap();
    let (cert_file, key_file) = write_pair(&peer_dir, "peer", &new_ca.node("peer"));
    let peer = ClusterTls::load(ClusterTlsSettings {
        cert_file,
        key_file,
        ca_file: new_ca.write(&peer_dir, "ca"),
    })
    .expect("peer tls");
    let quorum_addr = format!("127.0.0.1:{quorum}").parse().unwrap();
    let status = || {
        rpc::call_blocking(
            quorum_addr,
            Some(&peer),
            &Request::Status,
            Duration::from_secs(10),
        )
    };
    assert!(status().is_err(), "the new CA is not trusted yet");
    // The rotation: both CAs trusted, the node certificate from the new one. No signal.
    std::fs::write(&ca_file, format!("{}{}", old_ca.cert_pem, new_ca.cert_pem)).unwrap();
    write_pair(dir, "broker1", &new_ca.node("broker1"));
    common::wait_for("the rotated certificate served", HANG_GUARD, &mut || {
        matches!(status(), Ok(Reply::Status(_))).then_some(())
    });
}
