//! ACLs and the authorizer with real clients: librdkafka over SCRAM on a SASL_PLAINTEXT
//! listener, ACLs managed with `sluice acl` on the PLAINTEXT listener (whose
//! `User:ANONYMOUS` is a super user here, as an operator's internal listener would be).
//! Allow and deny per API family (produce, consume with a group, create and delete
//! topics, describe configs), DENY over ALLOW, prefixed patterns, a super user, Metadata
//! hiding topics a client may not describe, ACLs surviving a restart and replicated to
//! every node of a 3-node cluster, brokers replicating with only a CLUSTER_ACTION ACL,
//! transactions needing WRITE on their transactional id, and bad input to the ACL APIs
//! answered with errors.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cluster::{Cluster, ClusterSpec};
use common::{raw, Broker, HANG_GUARD};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{
    ApiKey, CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};
use rdkafka::Message;

const INVALID_REQUEST: i16 = 42;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const SECURITY_DISABLED: i16 = 54;

/// The broker's `[auth]` lines: the authorizer with `admin` and the PLAINTEXT listener's
/// `User:ANONYMOUS` as super users.
const AUTHORIZER: &str = "authorizer = true\nsuper_users = [\"User:admin\", \"User:ANONYMOUS\"]\n";

struct Node {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    data: PathBuf,
    config: PathBuf,
    sasl_port: u16,
    broker: Broker,
}

impl Node {
    fn sasl_addr(&self) -> String {
        format!("127.0.0.1:{}", self.sasl_port)
    }
}

fn auth_toml(port: u16, auth: &str) -> String {
    format!(
        "[[listeners]]\nname = \"SASL\"\nlisten = \"127.0.0.1:{port}\"\n\
         security_protocol = \"SASL_PLAINTEXT\"\n\
         [auth]\nsasl_mechanisms = [\"SCRAM-SHA-512\"]\n{auth}"
    )
}

fn start(auth: &str) -> Node {
    start_prepared(auth, |_, _| {})
}

/// Like `start`, with `before(dir, data_dir)` run before the broker starts.
fn start_prepared(auth: &str, before: impl FnOnce(&Path, &Path)) -> Node {
    let tmp = common::tempdir("acl");
    let dir = tmp.path().to_path_buf();
    let data = dir.join("data");
    before(&dir, &data);
    let sasl_port = common::free_port();
    let config = dir.join("sluice.toml");
    std::fs::write(&config, auth_toml(sasl_port, auth)).unwrap();
    let broker = launch(&data, &config);
    Node {
        _tmp: tmp,
        dir,
        data,
        config,
        sasl_port,
        broker,
    }
}

fn launch(data: &Path, config: &Path) -> Broker {
    Broker::start_with(data, &["--config", config.to_str().unwrap()])
}

/// `sluice ARGS --bootstrap ADDR`: whether it succeeded, and its stdout and stderr.
fn sluice_at(addr: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--bootstrap", addr]);
    common::sluice_output(&all)
}

/// `sluice acl add --allow-principal PRINCIPAL --operation OP RESOURCE…` at `addr`.
fn allow(addr: &str, principal: &str, op: &str, resource: &[&str]) {
    let mut args = vec!["add", "--allow-principal", principal, "--operation", op];
    args.extend_from_slice(resource);
    acl(addr, &args);
}

/// `sluice acl ARGS` against the PLAINTEXT listener at `addr`; panics on failure.
fn acl(addr: &str, args: &[&str]) -> String {
    let mut all = vec!["acl"];
    all.extend_from_slice(args);
    let (ok, out, err) = sluice_at(addr, &all);
    assert!(ok, "sluice {all:?} failed: {out}\n{err}");
    out
}

fn add_user(addr: &str, dir: &Path, user: &str) {
    let f = dir.join(format!("{user}.password"));
    std::fs::write(&f, format!("{user}-secret\n")).unwrap();
    let (ok, out, err) = sluice_at(
        addr,
        &[
            "user",
            "add",
            "--user",
            user,
            "--password-file",
            f.to_str().unwrap(),
        ],
    );
    assert!(ok, "adding {user}: {out}\n{err}");
}

fn client(addr: &str, user: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr)
        .set("broker.address.family", "v4")
        .set("security.protocol", "sasl_plaintext")
        .set("sasl.mechanisms", "SCRAM-SHA-512")
        .set("sasl.username", user)
        .set("sasl.password", format!("{user}-secret"))
        .set("topic.metadata.refresh.interval.ms", "500");
    c
}

/// Produces one record; the error librdkafka reports, if any.
fn produce(cfg: &ClientConfig, topic: &str) -> Result<(), RDKafkaErrorCode> {
    let producer: FutureProducer = cfg
        .clone()
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer");
    let sent = producer.send(
        FutureRecord::<(), str>::to(topic).payload("v"),
        Duration::from_secs(10),
    );
    match futures_executor::block_on(sent) {
        Ok(_) => Ok(()),
        Err((e, _)) => Err(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail)),
    }
}

/// Consumes one record of `topic` in `group` from the start: its value, or the first
/// authorization error librdkafka reports.
fn consume(cfg: &ClientConfig, topic: &str, group: &str) -> Result<String, RDKafkaErrorCode> {
    let consumer: BaseConsumer = cfg
        .clone()
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    common::wait_for(
        "a record or an authorization error",
        HANG_GUARD,
        &mut || match consumer.poll(Duration::from_millis(200))? {
            Ok(m) => Some(Ok(
                String::from_utf8_lossy(m.payload().unwrap_or(b"")).into_owned()
            )),
            Err(e) => {
                let code = e.rdkafka_error_code()?;
                matches!(
                    code,
                    RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::GroupAuthorizationFailed
                )
                .then_some(Err(code))
            }
        },
    )
}

fn admin(cfg: &ClientConfig) -> AdminClient<DefaultClientContext> {
    cfg.create().expect("admin")
}

fn opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)))
}

/// Creates `topic`; the per-topic error, if any.
fn create_topic(cfg: &ClientConfig, topic: &str) -> Result<(), RDKafkaErrorCode> {
    let t = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    let r = futures_executor::block_on(admin(cfg).create_topics([&t], &opts())).expect("admin");
    r[0].clone().map(drop).map_err(|(_, e)| e)
}

fn delete_topic(cfg: &ClientConfig, topic: &str) -> Result<(), RDKafkaErrorCode> {
    let r = futures_executor::block_on(admin(cfg).delete_topics(&[topic], &opts())).expect("admin");
    r[0].clone().map(drop).map_err(|(_, e)| e)
}

/// DescribeConfigs of `topic`: how many configs it answered. rust-rdkafka reports every
/// resource as Ok whatever its error code; a refused one comes back without configs.
fn described_configs(cfg: &ClientConfig, topic: &str) -> usize {
    let r = futures_executor::block_on(
        admin(cfg).describe_configs([&ResourceSpecifier::Topic(topic)], &opts()),
    )
    .expect("admin");
    r[0].as_ref().map_or(0, |c| c.entries.len())
}

/// The topics a Metadata request for every topic lists to this client.
fn listed_topics(cfg: &ClientConfig) -> Vec<String> {
    let c: BaseConsumer = cfg.create().expect("client");
    let md = c
        .fetch_metadata(None, Duration::from_secs(20))
        .expect("metadata");
    let mut names: Vec<String> = md.topics().iter().map(|t| t.name().to_string()).collect();
    names.sort();
    names
}

#[test]
fn produce_and_consume_need_their_acls() {
    let n = start(AUTHORIZER);
    let plain = n.broker.addr.clone();
    add_user(&plain, &n.dir, "alice");
    common::create_topic_at(&plain, "orders", 1, 1, &[]);
    let alice = client(&n.sasl_addr(), "alice");

    assert_eq!(
        produce(&alice, "orders"),
        Err(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    allow(&plain, "User:alice", "WRITE", &["--topic", "orders"]);
    assert_eq!(produce(&alice, "orders"), Ok(()));

    // Reading needs READ on the topic and on the group.
    allow(&plain, "User:alice", "READ", &["--topic", "orders"]);
    assert_eq!(
        consume(&alice, "orders", "billing"),
        Err(RDKafkaErrorCode::GroupAuthorizationFailed)
    );
    allow(&plain, "User:alice", "READ", &["--group", "billing"]);
    assert_eq!(consume(&alice, "orders", "billing"), Ok("v".to_string()));

    let listed = acl(&plain, &["list", "--principal", "User:alice"]);
    assert_eq!(listed.lines().count(), 4, "{listed}");
    assert!(
        listed.contains("GROUP") && listed.contains("billing"),
        "{listed}"
    );
}

#[test]
fn deny_wins_prefixes_match_and_super_users_pass() {
    let n = start(AUTHORIZER);
    let plain = n.broker.addr.clone();
    add_user(&plain, &n.dir, "alice");
    add_user(&plain, &n.dir, "admin");
    for t in ["payments", "payouts", "other"] {
        common::create_topic_at(&plain, t, 1, 1, &[]);
    }
    allow(
        &plain,
        "User:alice",
        "ALL",
        &["--topic", "pay", "--resource-pattern-type", "prefixed"],
    );
    acl(
        &plain,
        &[
            "add",
            "--deny-principal",
            "User:*",
            "--operation",
            "WRITE",
            "--topic",
            "payments",
        ],
    );
    let alice = client(&n.sasl_addr(), "alice");
    assert_eq!(produce(&alice, "payouts"), Ok(()));
    assert_eq!(
        produce(&alice, "payments"),
        Err(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    assert_eq!(
        produce(&alice, "other"),
        Err(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    // A super user needs no ACL, and a DENY does not stop it.
    assert_eq!(
        produce(&client(&n.sasl_addr(), "admin"), "payments"),
        Ok(())
    );

    // Removing the DENY lets alice write again.
    let out = acl(
        &plain,
        &["remove", "--topic", "payments", "--permission", "DENY"],
    );
    assert!(out.contains("1 ACL(s) removed"), "{out}");
    assert_eq!(produce(&alice, "payments"), Ok(()));
}

#[test]
fn topic_admin_and_configs_need_create_delete_and_describe_configs() {
    let n = start(AUTHORIZER);
    let plain = n.broker.addr.clone();
    add_user(&plain, &n.dir, "ops");
    let ops = client(&n.sasl_addr(), "ops");
    assert_eq!(
        create_topic(&ops, "team-a"),
        Err(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    allow(
        &plain,
        "User:ops",
        "CREATE",
        &["--topic", "team-", "--resource-pattern-type", "prefixed"],
    );
    assert_eq!(create_topic(&ops, "team-a"), Ok(()));
    assert_eq!(
        create_topic(&ops, "elsewhere"),
        Err(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    assert_eq!(described_configs(&ops, "team-a"), 0);
    // ALTER_CONFIGS implies DESCRIBE_CONFIGS.
    allow(&plain, "User:ops", "ALTER_CONFIGS", &["--topic", "team-a"]);
    assert!(described_configs(&ops, "team-a") > 5);
    assert_eq!(
        delete_topic(&ops, "team-a"),
        Err(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    allow(&plain, "User:ops", "DELETE", &["--topic", "team-a"]);
    assert_eq!(delete_topic(&ops, "team-a"), Ok(()));
}

#[test]
fn metadata_lists_only_topics_the_client_may_describe() {
    let n = start(AUTHORIZER);
    let plain = n.broker.addr.clone();
    add_user(&plain, &n.dir, "carol");
    for t in ["visible", "hidden"] {
        common::create_topic_at(&plain, t, 1, 1, &[]);
    }
    let carol = client(&n.sasl_addr(), "carol");
    assert!(listed_topics(&carol).is_empty());
    // READ implies DESCRIBE.
    allow(&plain, "User:carol", "READ", &["--topic", "visible"]);
    assert_eq!(listed_topics(&carol), vec!["visible".to_string()]);
    // The PLAINTEXT listener's super user sees both.
    let mut anon = ClientConfig::new();
    anon.set("bootstrap.servers", &plain);
    let all = listed_topics(&anon);
    assert!(all.contains(&"hidden".to_string()) && all.contains(&"visible".to_string()));
}

#[test]
fn acls_survive_a_restart() {
    let mut n = start(AUTHORIZER);
    let plain = n.broker.addr.clone();
    add_user(&plain, &n.dir, "dave");
    common::create_topic_at(&plain, "logs", 1, 1, &[]);
    allow(&plain, "User:dave", "WRITE", &["--topic", "logs"]);
    n.broker.stop();
    n.broker = launch(&n.data, &n.config);
    let listed = acl(&n.broker.addr, &["list"]);
    assert!(
        listed.contains("User:dave") && listed.contains("WRITE"),
        "{listed}"
    );
    let dave = client(&n.sasl_addr(), "dave");
    assert_eq!(produce(&dave, "logs"), Ok(()));
}

fn creation(kind: i8, name: &str, pattern: i8, principal: &str, op: i8, perm: i8) -> AclCreation {
    AclCreation::default()
        .with_resource_type(kind)
        .with_resource_name(StrBytes::from_string(name.to_string()))
        .with_resource_pattern_type(pattern)
        .with_principal(StrBytes::from_string(principal.to_string()))
        .with_host(StrBytes::from_static_str("*"))
        .with_operation(op)
        .with_permission_type(perm)
}

#[test]
fn bad_input_to_the_acl_apis_is_answered_with_errors() {
    let n = start(AUTHORIZER);
    let mut c = raw::connect(&n.broker.addr);
    let good = creation(2, "t", 3, "User:a", 3, 3);
    let bad = [
        creation(0, "t", 3, "User:a", 3, 3),     // UNKNOWN resource type
        creation(99, "t", 3, "User:a", 3, 3),    // no such resource type
        creation(2, "t", 2, "User:a", 3, 3),     // MATCH is for filters only
        creation(2, "t", 3, "User:a", 1, 3),     // ANY operation
        creation(2, "t", 3, "User:a", 3, 7),     // no such permission
        creation(2, "t", 3, "alice", 3, 3),      // no principal type
        creation(2, "", 3, "User:a", 3, 3),      // empty name
        creation(4, "other", 3, "User:a", 7, 3), // the cluster is kafka-cluster
        creation(2, &"x".repeat(5000), 3, "User:a", 3, 3),
    ];
    let mut creations = vec![good];
    creations.extend(bad);
    let resp: CreateAclsResponse = raw::call(
        &mut c,
        ApiKey::CreateAcls,
        3,
        &CreateAclsRequest::default().with_creations(creations),
    );
    assert_eq!(resp.results[0].error_code, 0);
    for r in &resp.results[1..] {
        assert_eq!(r.error_code, INVALID_REQUEST, "{r:?}");
    }
    // A filter with an unknown enum.
    let resp: DescribeAclsResponse = raw::call(
        &mut c,
        ApiKey::DescribeAcls,
        3,
        &DescribeAclsRequest::default()
            .with_resource_type_filter(1)
            .with_pattern_type_filter(0)
            .with_operation(1)
            .with_permission_type(1),
    );
    assert_eq!(resp.error_code, INVALID_REQUEST);
    // Too many filters: each refused, nothing deleted.
    let any = DeleteAclsFilter::default()
        .with_resource_name_filter(None)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_resource_type_filter(1)
        .with_pattern_type_filter(1)
        .with_operation(1)
        .with_permission_type(1);
    let resp: DeleteAclsResponse = raw::call(
        &mut c,
        ApiKey::DeleteAcls,
        3,
        &DeleteAclsRequest::default().with_filters(vec![any.clone(); 5000]),
    );
    assert_eq!(resp.filter_results.len(), 5000);
    assert!(resp
        .filter_results
        .iter()
        .all(|r| r.error_code == INVALID_REQUEST));
    // The good binding is still there; an ANY filter removes it.
    let resp: DeleteAclsResponse = raw::call(
        &mut c,
        ApiKey::DeleteAcls,
        3,
        &DeleteAclsRequest::default().with_filters(vec![any]),
    );
    assert_eq!(resp.filter_results[0].error_code, 0);
    assert_eq!(resp.filter_results[0].matching_acls.len(), 1);
    assert!(
        n.broker.admin_get("/health").is_ok(),
        "the broker is still up"
    );
}

#[test]
fn acl_apis_need_the_authorizer_and_cluster_permission() {
    // The authorizer off: Kafka's SECURITY_DISABLED.
    let off = start("");
    let mut c = raw::connect(&off.broker.addr);
    let resp: DescribeAclsResponse = raw::call(
        &mut c,
        ApiKey::DescribeAcls,
        1,
        &DescribeAclsRequest::default()
            .with_resource_type_filter(1)
            .with_pattern_type_filter(1)
            .with_operation(1)
            .with_permission_type(1),
    );
    assert_eq!(resp.error_code, SECURITY_DISABLED);
    drop(c);
    drop(off);
    // On, with User:ANONYMOUS not a super user: the PLAINTEXT listener may do nothing.
    let on = start("authorizer = true\nsuper_users = [\"User:admin\"]\n");
    let (ok, out, err) = sluice_at(&on.broker.addr, &["acl", "list"]);
    assert!(
        !ok && err.contains("ClusterAuthorizationFailed"),
        "{out}\n{err}"
    );
    let mut c = raw::connect(&on.broker.addr);
    let resp: CreateAclsResponse = raw::call(
        &mut c,
        ApiKey::CreateAcls,
        1,
        &CreateAclsRequest::default().with_creations(vec![creation(2, "t", 3, "User:a", 3, 3)]),
    );
    assert_eq!(resp.results[0].error_code, CLUSTER_AUTHORIZATION_FAILED);
}

#[test]
fn acls_are_replicated_to_every_node_of_a_cluster() {
    let sasl_ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let spec = ClusterSpec {
        node_toml: sasl_ports
            .iter()
            .map(|p| auth_toml(*p, AUTHORIZER))
            .collect(),
        ..ClusterSpec::default()
    };
    let c = Cluster::start("acl", spec, HANG_GUARD);
    let tmp = common::tempdir("acl-cluster");
    add_user(&c.addr(1), tmp.path(), "erin");
    // Replicated over the brokers' own fetches (User:ANONYMOUS, a super user here).
    common::create_topic_at(&c.addr(1), "shared", 1, 3, &[]);
    allow(&c.addr(1), "User:erin", "WRITE", &["--topic", "shared"]);
    for id in c.ids() {
        let listed = c.wait(&format!("node {id} lists erin's ACL"), HANG_GUARD, || {
            let out = acl(&c.addr(id), &["list", "--topic", "shared"]);
            out.contains("User:erin").then_some(out)
        });
        assert!(listed.contains("WRITE"), "{listed}");
    }
    let erin = client(&format!("127.0.0.1:{}", sasl_ports[2]), "erin");
    let erin = erin.clone().set("acks", "all").clone();
    assert_eq!(produce(&erin, "shared"), Ok(()));
}

/// The narrower setup of docs/security.md: `User:ANONYMOUS` (the brokers' principal on
/// each other's PLAINTEXT listener) is no super user and may only CLUSTER_ACTION from the
/// brokers' address; replication still keeps every replica in sync.
#[test]
fn brokers_replicate_with_only_a_cluster_action_acl() {
    let sasl_ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let spec = ClusterSpec {
        node_toml: sasl_ports
            .iter()
            .map(|p| auth_toml(*p, AUTHORIZER))
            .collect(),
        ..ClusterSpec::default()
    };
    let mut c = Cluster::start("acl-narrow", spec, HANG_GUARD);
    let tmp = common::tempdir("acl-narrow");
    add_user(&c.addr(1), tmp.path(), "erin");
    // Every write waits for all three replicas.
    common::create_topic_at(&c.addr(1), "narrow", 1, 3, &[("min.insync.replicas", "3")]);
    acl(
        &c.addr(1),
        &[
            "add",
            "--allow-principal",
            "User:ANONYMOUS",
            "--host",
            "127.0.0.1",
            "--operation",
            "CLUSTER_ACTION",
            "--cluster",
        ],
    );
    allow(&c.addr(1), "User:erin", "WRITE", &["--topic", "narrow"]);
    // Each node again, one at a time, without User:ANONYMOUS among its super users.
    let narrow = "authorizer = true\nsuper_users = [\"User:admin\"]\n";
    c.spec.node_toml = sasl_ports.iter().map(|p| auth_toml(*p, narrow)).collect();
    for id in c.ids() {
        c.stop(id, HANG_GUARD);
        c.start_node(id);
        c.wait_all_active(HANG_GUARD);
    }
    let (ok, _, err) = sluice_at(&c.addr(1), &["acl", "list"]);
    assert!(!ok && err.contains("ClusterAuthorizationFailed"), "{err}");
    let erin = client(&format!("127.0.0.1:{}", sasl_ports[0]), "erin");
    let erin = erin.clone().set("acks", "all").clone();
    for _ in 0..3 {
        assert_eq!(produce(&erin, "narrow"), Ok(()));
    }
}

#[test]
fn transactions_need_write_on_the_transactional_id() {
    let n = start(&format!(
        "{AUTHORIZER}[transactions]\nstate_log_partitions = 2\n"
    ));
    let plain = n.broker.addr.clone();
    add_user(&plain, &n.dir, "alice");
    common::create_topic_at(&plain, "ledger", 1, 1, &[]);
    allow(&plain, "User:alice", "WRITE", &["--topic", "ledger"]);
    let txn = || {
        let mut c = client(&n.sasl_addr(), "alice");
        c.set("transactional.id", "tx-ledger");
        let p: BaseProducer = c.create().expect("producer");
        p
    };
    let refused = txn()
        .init_transactions(Duration::from_secs(30))
        .unwrap_err();
    assert_eq!(
        refused.rdkafka_error_code(),
        Some(RDKafkaErrorCode::TransactionalIdAuthorizationFailed),
        "{refused}"
    );
    allow(
        &plain,
        "User:alice",
        "WRITE",
        &["--transactional-id", "tx-ledger"],
    );
    let p = txn();
    p.init_transactions(HANG_GUARD).expect("init_transactions");
    p.begin_transaction().expect("begin");
    p.send(BaseRecord::<(), str>::to("ledger").payload("entry"))
        .map_err(|(e, _)| e)
        .expect("send");
    p.commit_transaction(HANG_GUARD).expect("commit");
}

#[test]
fn a_super_user_manages_users_and_acls_over_sasl() {
    // `admin` exists before the first start; User:ANONYMOUS is nobody special.
    let n = start_prepared(
        "authorizer = true\nsuper_users = [\"User:admin\"]\n",
        |dir, data| {
            let f = dir.join("admin.password");
            std::fs::write(&f, "admin-secret\n").unwrap();
            let (ok, out, err) = common::sluice_output(&[
                "user",
                "add",
                "--data-dir",
                data.to_str().unwrap(),
                "--user",
                "admin",
                "--password-file",
                f.to_str().unwrap(),
            ]);
            assert!(ok, "{out}\n{err}");
        },
    );
    let sasl = n.sasl_addr();
    let admin_pw = n.dir.join("admin.password");
    let as_admin = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&[
            "--sasl-user",
            "admin",
            "--sasl-password-file",
            admin_pw.to_str().unwrap(),
        ]);
        sluice_at(&sasl, &all)
    };
    // The bootstrap credential is stored once the broker has registered.
    common::wait_for("admin's credential stored", HANG_GUARD, &mut || {
        as_admin(&["acl", "list"]).0.then_some(())
    });
    let alice_pw = n.dir.join("alice.password");
    std::fs::write(&alice_pw, "alice-secret\n").unwrap();
    let (ok, out, err) = as_admin(&[
        "user",
        "add",
        "--user",
        "alice",
        "--password-file",
        alice_pw.to_str().unwrap(),
    ]);
    assert!(ok, "{out}\n{err}");
    let (ok, out, err) = as_admin(&[
        "acl",
        "add",
        "--allow-principal",
        "User:alice",
        "--operation",
        "WRITE",
        "--topic",
        "audit",
    ]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(create_topic(&client(&sasl, "admin"), "audit"), Ok(()));
    assert_eq!(produce(&client(&sasl, "alice"), "audit"), Ok(()));
    // A wrong password, and a user who is no super user, are refused.
    let (ok, _, err) = sluice_at(
        &sasl,
        &[
            "acl",
            "list",
            "--sasl-user",
            "admin",
            "--sasl-password-file",
            alice_pw.to_str().unwrap(),
        ],
    );
    assert!(!ok && err.contains("SASL login failed"), "{err}");
    let (ok, _, err) = sluice_at(
        &sasl,
        &[
            "acl",
            "list",
            "--sasl-user",
            "alice",
            "--sasl-password-file",
            alice_pw.to_str().unwrap(),
        ],
    );
    assert!(!ok && err.contains("ClusterAuthorizationFailed"), "{err}");
}
