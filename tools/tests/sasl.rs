//! SASL on a SASL_PLAINTEXT listener with real clients: SCRAM-SHA-256, SCRAM-SHA-512 and
//! PLAIN logins through librdkafka, a wrong password refused (counted, logged with the
//! user and address, never the password), users managed with `sluice user` surviving a
//! restart, the offline `sluice user add --data-dir` before the first start, and hostile
//! SASL input over the raw protocol (truncated SCRAM messages, wrong nonces, huge
//! payloads, requests before authentication, an expired session) answered with an
//! authentication error or a closed connection, never a crash.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::{raw, Broker};
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sluice_net::security::{scram, ScramMechanism};

const SASL_AUTHENTICATION_FAILED: i16 = 58;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;

struct Sasl {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    data: PathBuf,
    config: PathBuf,
    port: u16,
    broker: Broker,
    log: PathBuf,
}

impl Sasl {
    fn sasl_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn write_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\nname = \"SASL\"\nlisten = \"127.0.0.1:{port}\"\n\
             security_protocol = \"SASL_PLAINTEXT\"\n\
             [auth]\nsasl_mechanisms = [\"PLAIN\", \"SCRAM-SHA-256\", \"SCRAM-SHA-512\"]\n{extra}"
        ),
    )
    .unwrap();
    config
}

fn start_with(extra: &str, before: impl FnOnce(&Path)) -> Sasl {
    let tmp = common::tempdir("sasl");
    let dir = tmp.path().to_path_buf();
    let data = dir.join("data");
    before(&data);
    let port = common::free_port();
    let config = write_config(&dir, port, extra);
    let log = dir.join("broker.log");
    let broker = launch(&data, &config, &log);
    Sasl {
        _tmp: tmp,
        dir,
        data,
        config,
        port,
        broker,
        log,
    }
}

fn launch(data: &Path, config: &Path, log: &Path) -> Broker {
    Broker::start_logged(
        data,
        &["--config", config.to_str().unwrap()],
        log,
        "warn,sluice::auth=debug",
    )
}

/// `sluice user ARGS --bootstrap <plaintext listener>`: its stdout; panics on failure.
fn user_cmd(s: &Sasl, args: &[&str]) -> String {
    let mut all = vec!["user"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--bootstrap", &s.broker.addr]);
    let (ok, out, err) = common::sluice_output(&all);
    assert!(ok, "sluice {all:?} failed: {out}\n{err}");
    out
}

fn password_file(dir: &Path, name: &str, password: &str) -> PathBuf {
    let p = dir.join(format!("{name}.password"));
    std::fs::write(&p, format!("{password}\n")).unwrap();
    p
}

fn add_user(s: &Sasl, user: &str, mechanism: &str, password: &str) {
    let f = password_file(&s.dir, user, password);
    user_cmd(
        s,
        &[
            "add",
            "--user",
            user,
            "--mechanism",
            mechanism,
            "--password-file",
            f.to_str().unwrap(),
        ],
    );
}

fn sasl_client(addr: &str, mechanism: &str, user: &str, password: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr)
        .set("broker.address.family", "v4")
        .set("security.protocol", "sasl_plaintext")
        .set("sasl.mechanisms", mechanism)
        .set("sasl.username", user)
        .set("sasl.password", password);
    c
}

fn metric(s: &Sasl, name: &str) -> f64 {
    let page = common::http_get(&s.broker.admin_addr, "/metrics");
    common::metric(&page, name, &[]).unwrap_or(0.0)
}

#[test]
fn scram_and_plain_logins_and_a_wrong_password_refused() {
    let s = start_with("", |_| {});
    add_user(&s, "alice", "SCRAM-SHA-256", "alice-secret");
    add_user(&s, "bob", "SCRAM-SHA-512", "bob-secret");
    let addr = s.sasl_addr();
    common::produce_numbered(
        &sasl_client(&addr, "SCRAM-SHA-256", "alice", "alice-secret"),
        "by-alice",
        5,
    );
    common::produce_numbered(
        &sasl_client(&addr, "SCRAM-SHA-512", "bob", "bob-secret"),
        "by-bob",
        5,
    );
    // PLAIN checks the password against the user's SCRAM credential.
    common::produce_numbered(
        &sasl_client(&addr, "PLAIN", "bob", "bob-secret"),
        "by-bob-plain",
        5,
    );
    let consumer: BaseConsumer = sasl_client(&addr, "SCRAM-SHA-256", "alice", "alice-secret")
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks("by-bob-plain", 0, common::HANG_GUARD)
        .expect("watermarks over SASL");
    assert_eq!(high, 5);

    let failures_before = metric(&s, "sluice_sasl_authentication_failures_total");
    for (mechanism, user, password) in [
        ("SCRAM-SHA-512", "bob", "not-bobs-password"),
        ("SCRAM-SHA-256", "bob", "bob-secret"), // bob has no SHA-256 credential
        ("PLAIN", "alice", "wrong-password"),
        ("SCRAM-SHA-256", "nobody", "x"),
    ] {
        assert!(
            !common::metadata_ok(&sasl_client(&addr, mechanism, user, password)),
            "{mechanism} {user} must be refused"
        );
    }
    common::wait_for("failed logins counted", common::HANG_GUARD, &mut || {
        (metric(&s, "sluice_sasl_authentication_failures_total") >= failures_before + 4.0)
            .then_some(())
    });
    assert!(metric(&s, "sluice_sasl_authentications_total") >= 3.0);
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        log.contains("SASL authentication failed") && log.contains("user=bob"),
        "failures are logged with the user:\n{log}"
    );
    assert!(log.contains("127.0.0.1"), "and the client address:\n{log}");
    for secret in [
        "not-bobs-password",
        "wrong-password",
        "bob-secret",
        "alice-secret",
    ] {
        assert!(!log.contains(secret), "a password in the log:\n{log}");
    }
    let listed = user_cmd(&s, &["list"]);
    assert!(
        listed.contains("alice") && listed.contains("SCRAM-SHA-256"),
        "{listed}"
    );
    assert!(
        listed.contains("bob") && listed.contains("SCRAM-SHA-512"),
        "{listed}"
    );
    assert!(!listed.contains("secret"));
}

#[test]
fn users_survive_a_restart_and_the_offline_admin_exists_at_first_start() {
    let admin_pw = "admin-password";
    let mut s = start_with("", |data| {
        // Before the first start, as `kafka-storage format --add-scram` does.
        std::fs::create_dir_all(data).unwrap();
        let f = password_file(data.parent().unwrap(), "admin", admin_pw);
        let (ok, out, err) = common::sluice_output(&[
            "user",
            "add",
            "--data-dir",
            data.to_str().unwrap(),
            "--user",
            "admin",
            "--mechanism",
            "SCRAM-SHA-512",
            "--password-file",
            f.to_str().unwrap(),
        ]);
        assert!(ok, "offline add: {out}\n{err}");
        let written = std::fs::read_to_string(data.join("bootstrap-credentials.json")).unwrap();
        assert!(!written.contains(admin_pw), "no password in the file");
    });
    let addr = s.sasl_addr();
    let admin = sasl_client(&addr, "SCRAM-SHA-512", "admin", admin_pw);
    common::wait_for(
        "the bootstrap admin stored",
        common::HANG_GUARD,
        &mut || common::metadata_ok(&admin).then_some(()),
    );
    add_user(&s, "carol", "SCRAM-SHA-256", "carol-pw");
    add_user(&s, "dave", "SCRAM-SHA-256", "dave-pw");
    user_cmd(
        &s,
        &["remove", "--user", "dave", "--mechanism", "SCRAM-SHA-256"],
    );

    assert!(s.broker.stop().success());
    s.broker = launch(&s.data, &s.config, &s.log);
    // The admin after a restart (acknowledged produce: no short timeout decides it).
    common::produce_numbered(&admin, "admin-after-restart", 1);
    common::produce_numbered(
        &sasl_client(&addr, "SCRAM-SHA-256", "carol", "carol-pw"),
        "after-restart",
        3,
    );
    assert!(
        !common::metadata_ok(&sasl_client(&addr, "SCRAM-SHA-256", "dave", "dave-pw")),
        "a removed user stays removed"
    );
    assert!(
        s.data.join("bootstrap-credentials.json.applied").exists(),
        "the bootstrap file is applied once"
    );
}

fn handshake(s: &mut TcpStream, mechanism: &str, version: i16) -> SaslHandshakeResponse {
    raw::call(
        s,
        ApiKey::SaslHandshake,
        version,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(mechanism.into())),
    )
}

fn authenticate(s: &mut TcpStream, bytes: &[u8]) -> SaslAuthenticateResponse {
    raw::call(
        s,
        ApiKey::SaslAuthenticate,
        2,
        &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(bytes)),
    )
}

/// Whether the broker closed the connection (a read gets EOF or a reset).
fn closed(s: &mut TcpStream) -> bool {
    raw::read_frame(s).is_none()
}

/// A whole SCRAM-SHA-256 login on a raw connection; the SaslAuthenticate answer.
fn scram_login(s: &mut TcpStream, user: &str, password: &str) -> SaslAuthenticateResponse {
    assert_eq!(handshake(s, "SCRAM-SHA-256", 1).error_code, 0);
    let bare = format!("n={user},r=clientnonce123");
    let first = authenticate(s, format!("n,,{bare}").as_bytes());
    if first.error_code != 0 {
        return first;
    }
    let server_first = String::from_utf8(first.auth_bytes.to_vec()).unwrap();
    let fin = scram::client_final(
        ScramMechanism::Sha256,
        password.as_bytes(),
        &bare,
        &server_first,
    )
    .expect("server-first message");
    authenticate(s, fin.as_bytes())
}

#[test]
fn bad_sasl_input_gets_an_authentication_error_never_a_crash() {
    let s = start_with("connections_max_reauth_ms = 4000\n", |_| {});
    add_user(&s, "eve", "SCRAM-SHA-256", "eve-pw");
    let addr = s.sasl_addr();

    // Anything but the SASL exchange before authentication closes the connection.
    let mut c = raw::connect(&addr);
    c.write_all(&raw::frame(
        ApiKey::Metadata,
        9,
        1,
        &MetadataRequest::default(),
    ))
    .unwrap();
    assert!(closed(&mut c), "Metadata before authentication");

    let mut c = raw::connect(&addr);
    assert_eq!(
        handshake(&mut c, "GSSAPI", 1).error_code,
        UNSUPPORTED_SASL_MECHANISM
    );
    // Truncated and malformed SCRAM messages, a huge payload: authentication errors.
    let huge = vec![b'n'; 100 * 1024];
    for bad in [
        &b"n,,"[..],
        b"",
        b"n,,n=eve",
        b"p=tls,,n=eve,r=x",
        b"\xff\xff",
        &huge,
    ] {
        assert_eq!(handshake(&mut c, "SCRAM-SHA-256", 1).error_code, 0);
        let r = authenticate(&mut c, bad);
        assert_eq!(
            r.error_code,
            SASL_AUTHENTICATION_FAILED,
            "{:?}",
            &bad[..bad.len().min(20)]
        );
        assert!(r.error_message.is_some());
    }
    // A client-final with a nonce that is not the server's, then a truncated one.
    for fin in ["c=biws,r=clientnonce123forged,p=AAAA", "c=biws"] {
        assert_eq!(handshake(&mut c, "SCRAM-SHA-256", 1).error_code, 0);
        let first = authenticate(&mut c, b"n,,n=eve,r=clientnonce123");
        assert_eq!(first.error_code, 0);
        assert_eq!(
            authenticate(&mut c, fin.as_bytes()).error_code,
            SASL_AUTHENTICATION_FAILED
        );
    }
    // SaslAuthenticate with no handshake first.
    assert_ne!(authenticate(&mut c, b"n,,n=eve,r=abc").error_code, 0);
    // A frame past the pre-authentication bound closes the connection.
    let mut big = raw::connect(&addr);
    let _ = big.write_all(&(600 * 1024i32).to_be_bytes());
    let _ = big.write_all(&vec![0u8; 64 * 1024]);
    assert!(closed(&mut big), "a 600 KiB frame before authentication");

    // The broker is fine: a real login works, and announces the session lifetime.
    let mut c = raw::connect(&addr);
    let ok = scram_login(&mut c, "eve", "eve-pw");
    assert_eq!(ok.error_code, 0, "{:?}", ok.error_message);
    assert_eq!(ok.session_lifetime_ms, 4000);
    let m: MetadataResponse = raw::call(&mut c, ApiKey::Metadata, 9, &MetadataRequest::default());
    assert!(!m.brokers.is_empty());
    // Re-authentication on the same connection as the same user works; as another user
    // it fails.
    assert_eq!(scram_login(&mut c, "eve", "eve-pw").error_code, 0);
    add_user(&s, "mallory", "SCRAM-SHA-256", "mallory-pw");
    assert_eq!(
        scram_login(&mut c, "mallory", "mallory-pw").error_code,
        SASL_AUTHENTICATION_FAILED
    );
    // Once the session has run past its lifetime without re-authentication, the next
    // request closes the connection (KIP-368). Waiting out the lifetime is the event.
    std::thread::sleep(Duration::from_millis(4100));
    c.write_all(&raw::frame(
        ApiKey::Metadata,
        9,
        2,
        &MetadataRequest::default(),
    ))
    .unwrap();
    assert!(closed(&mut c), "a request after the session expired");

    // SaslHandshake v0: the PLAIN token follows as a bare frame, answered in kind.
    let mut v0 = raw::connect(&addr);
    assert_eq!(handshake(&mut v0, "PLAIN", 0).error_code, 0);
    let token = b"\0eve\0eve-pw";
    let mut frame = (token.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(token);
    v0.write_all(&frame).unwrap();
    let answer = raw::read_frame(&mut v0).expect("a bare answer");
    assert!(answer.is_empty());
    let m: MetadataResponse = raw::call(&mut v0, ApiKey::Metadata, 9, &MetadataRequest::default());
    assert!(!m.brokers.is_empty());
    assert!(s.broker.pid().is_some());
    let page = common::http_get(&s.broker.admin_addr, "/health");
    assert!(page.contains("200"), "{page}");
}

/// SASL_SSL: the TLS handshake first, then SCRAM inside it.
#[test]
fn scram_over_tls_on_a_sasl_ssl_listener() {
    use common::tls::{write_pair, Ca};
    let tmp = common::tempdir("sasl-ssl");
    let dir = tmp.path();
    let ca = Ca::new("sasl-ssl CA");
    let ca_file = ca.write(dir, "ca");
    let (cert, key) = write_pair(dir, "server", &ca.leaf("broker", true));
    let port = common::free_port();
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\nname = \"SECURE\"\nlisten = \"127.0.0.1:{port}\"\n\
             security_protocol = \"SASL_SSL\"\n[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n"
        ),
    )
    .unwrap();
    let broker = Broker::start_with(&dir.join("data"), &["--config", config.to_str().unwrap()]);
    let f = password_file(dir, "frank", "frank-pw");
    let (ok, out, err) = common::sluice_output(&[
        "user",
        "add",
        "--user",
        "frank",
        "--password-file",
        f.to_str().unwrap(),
        "--bootstrap",
        &broker.addr,
    ]);
    assert!(ok, "{out}\n{err}");
    let addr = format!("127.0.0.1:{port}");
    let mut c = sasl_client(&addr, "SCRAM-SHA-512", "frank", "frank-pw");
    c.set("security.protocol", "sasl_ssl")
        .set("ssl.ca.location", ca_file.to_str().unwrap());
    common::produce_numbered(&c, "over-sasl-ssl", 4);
    let mut wrong = c.clone();
    wrong.set("sasl.password", "nope");
    assert!(!common::metadata_ok(&wrong));
}

/// In a 3-node cluster every broker registers its SASL listener too, a client on any
/// node's SASL listener is answered with every node's SASL endpoint, and a user added
/// through one node logs in on every node (the credential is in the replicated metadata
/// log).
#[test]
fn users_and_listeners_reach_every_node_of_a_cluster() {
    use common::cluster::{Cluster, ClusterSpec};
    let sasl_ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let spec = ClusterSpec {
        node_toml: sasl_ports
            .iter()
            .map(|p| {
                format!(
                    "[[listeners]]\nname = \"SASL\"\nlisten = \"127.0.0.1:{p}\"\n\
                     security_protocol = \"SASL_PLAINTEXT\"\n"
                )
            })
            .collect(),
        ..ClusterSpec::default()
    };
    let cluster = Cluster::start("sasl-users", spec, common::HANG_GUARD);
    let tmp = common::tempdir("sasl-cluster");
    let f = password_file(tmp.path(), "grace", "grace-pw");
    let (ok, out, err) = common::sluice_output(&[
        "user",
        "add",
        "--user",
        "grace",
        "--password-file",
        f.to_str().unwrap(),
        "--bootstrap",
        &cluster.addr(1),
    ]);
    assert!(ok, "{out}\n{err}");
    let mut want: Vec<i32> = sasl_ports.iter().map(|p| i32::from(*p)).collect();
    want.sort();
    for port in &sasl_ports {
        let addr = format!("127.0.0.1:{port}");
        let c = sasl_client(&addr, "SCRAM-SHA-512", "grace", "grace-pw");
        let consumer: BaseConsumer = c.create().unwrap();
        let ports = common::wait_for(
            &format!("grace logged in on {addr} with every SASL endpoint listed"),
            common::HANG_GUARD,
            &mut || {
                let m = consumer.fetch_metadata(None, Duration::from_secs(3)).ok()?;
                let mut ports: Vec<i32> = m.brokers().iter().map(|b| b.port()).collect();
                ports.sort();
                (ports == want).then_some(ports)
            },
        );
        assert_eq!(ports, want);
    }
}
