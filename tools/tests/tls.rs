//! TLS listeners with real clients: an SSL produce/consume round trip through librdkafka
//! (OpenSSL), a client trusting another CA refused, `client_auth = "required"` refusing a
//! client without a certificate and naming the principal of one with, and certificate
//! reloads (on SIGHUP, and on a change of the files) that keep open connections.
//! Certificates are made here (rcgen).

mod common;

use std::path::{Path, PathBuf};

use common::tls::{write_pair, Ca};
use common::{raw, Broker};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// A broker with an SSL listener whose certificate `ca` signed.
struct Secured {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    ca: Ca,
    ssl_addr: String,
    broker: Broker,
    log: PathBuf,
}

fn start(client_auth: &str) -> Secured {
    let tmp = common::tempdir("tls");
    let dir = tmp.path().to_path_buf();
    let ca = Ca::new("sluice test CA");
    let ca_file = ca.write(&dir, "ca");
    let (cert, key) = write_pair(&dir, "server", &ca.leaf("broker", true));
    let port = common::free_port();
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\nname = \"SSL\"\nlisten = \"127.0.0.1:{port}\"\nsecurity_protocol = \"SSL\"\n\
             [tls]\ncert_file = {cert:?}\nkey_file = {key:?}\nclient_ca_file = {ca_file:?}\n\
             client_auth = \"{client_auth}\"\n"
        ),
    )
    .unwrap();
    let log = dir.join("broker.log");
    let broker = Broker::start_logged(
        &dir.join("data"),
        &["--config", config.to_str().unwrap()],
        &log,
        "warn,sluice::auth=debug",
    );
    Secured {
        _dir: tmp,
        dir,
        ca,
        ssl_addr: format!("127.0.0.1:{port}"),
        broker,
        log,
    }
}

/// librdkafka settings for an SSL client trusting `ca_file`, with a client certificate
/// when given.
fn ssl_client(addr: &str, ca_file: &Path, cert: Option<&(PathBuf, PathBuf)>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", addr)
        .set("broker.address.family", "v4")
        .set("security.protocol", "ssl")
        .set("ssl.ca.location", ca_file.to_str().unwrap());
    if let Some((cert, key)) = cert {
        c.set("ssl.certificate.location", cert.to_str().unwrap())
            .set("ssl.key.location", key.to_str().unwrap());
    }
    c
}

fn round_trip(config: &ClientConfig, topic: &str, n: usize) {
    common::produce_numbered(config, topic, n);
    common::consume_numbered(config, topic, n);
}

fn handshakes_failed(s: &Secured) -> f64 {
    let page = common::http_get(&s.broker.admin_addr, "/metrics");
    common::metric(&page, "sluice_tls_handshakes_failed_total", &[]).unwrap_or(0.0)
}

#[test]
fn ssl_round_trip_and_a_client_trusting_another_ca_is_refused() {
    let s = start("none");
    let ca_file = s.dir.join("ca.pem");
    round_trip(&ssl_client(&s.ssl_addr, &ca_file, None), "over-tls", 20);

    let other = Ca::new("another CA");
    let other_file = other.write(&s.dir, "other-ca");
    assert!(
        !common::metadata_ok(&ssl_client(&s.ssl_addr, &other_file, None)),
        "a client that does not trust the broker's CA must not get through"
    );
    common::wait_for(
        "the refused handshake counted",
        common::HANG_GUARD,
        &mut || (handshakes_failed(&s) >= 1.0).then_some(()),
    );
}

#[test]
fn required_client_auth_refuses_a_client_without_a_certificate_and_names_the_principal() {
    let s = start("required");
    let ca_file = s.dir.join("ca.pem");
    assert!(
        !common::metadata_ok(&ssl_client(&s.ssl_addr, &ca_file, None)),
        "client_auth = required: no certificate, no connection"
    );
    let stranger = Ca::new("not the client CA");
    let stranger_pair = write_pair(&s.dir, "mallory", &stranger.leaf("mallory", false));
    assert!(
        !common::metadata_ok(&ssl_client(&s.ssl_addr, &ca_file, Some(&stranger_pair))),
        "a certificate not signed by client_ca_file is refused"
    );
    let carol = write_pair(&s.dir, "carol", &s.ca.leaf("carol", false));
    round_trip(&ssl_client(&s.ssl_addr, &ca_file, Some(&carol)), "mtls", 3);
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        log.contains("principal=User:CN=carol"),
        "the mTLS principal is logged as Kafka forms it:\n{log}"
    );
    assert!(
        !log.contains("mallory"),
        "a refused client gets no principal"
    );
}

fn api_versions_ok(stream: &mut (impl std::io::Read + std::io::Write)) -> bool {
    let r: ApiVersionsResponse = raw::call(
        stream,
        ApiKey::ApiVersions,
        0,
        &ApiVersionsRequest::default(),
    );
    r.error_code == 0 && !r.api_keys.is_empty()
}

/// Whether a TLS handshake trusting `ca_pem` completes.
fn handshake_ok(addr: &str, ca_pem: &str) -> bool {
    let mut s = common::tls::connect(addr, ca_pem);
    while s.conn.is_handshaking() {
        if s.conn.complete_io(&mut s.sock).is_err() {
            return false;
        }
    }
    true
}

/// Rotates `s` to a certificate from a new CA (`notify` tells the broker, or not) and
/// checks new connections get it while one opened before keeps answering; the new CA.
fn rotate(s: &Secured, notify: impl FnOnce()) -> Ca {
    let mut open = common::tls::connect(&s.ssl_addr, &s.ca.cert_pem);
    assert!(api_versions_ok(&mut open));
    let new_ca = Ca::new("rotated CA");
    write_pair(&s.dir, "server", &new_ca.leaf("broker", true));
    notify();
    common::wait_for(
        "new connections on the new certificate",
        common::HANG_GUARD,
        &mut || handshake_ok(&s.ssl_addr, &new_ca.cert_pem).then_some(()),
    );
    assert!(
        !handshake_ok(&s.ssl_addr, &s.ca.cert_pem),
        "the old certificate is no longer served"
    );
    assert!(
        api_versions_ok(&mut open),
        "the connection opened before the reload still answers"
    );
    new_ca
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_open_connections() {
    let s = start("none");
    // The operator rotates to a certificate from a new CA and sends SIGHUP.
    let new_ca = rotate(&s, || s.broker.signal(libc::SIGHUP));
    // A reload that fails (a key that does not fit) keeps the certificate in force.
    std::fs::write(
        s.dir.join("server.key"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    s.broker.signal(libc::SIGHUP);
    common::wait_for("the failed reload logged", common::HANG_GUARD, &mut || {
        std::fs::read_to_string(&s.log)
            .ok()
            .filter(|l| l.contains("TLS reload failed"))
    });
    assert!(handshake_ok(&s.ssl_addr, &new_ca.cert_pem));
}

/// A rotation tool that only writes the files: the broker notices the change (no SIGHUP)
/// and serves the new certificate to new connections, keeping the open ones.
#[test]
fn a_changed_certificate_file_is_reloaded_without_a_signal() {
    let s = start("none");
    rotate(&s, || {});
}

/// `sluice bench compare` puts the TLS listener beside the plaintext one in one run, and
/// every message produced over TLS is counted.
#[test]
fn bench_runs_over_tls_beside_plaintext() {
    let s = start("none");
    let ca_file = s.dir.join("ca.pem");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "bench",
            "compare",
            "produce",
            "--rounds",
            "1",
            "--messages",
            "3000",
        ])
        .args([
            "--topic",
            "bench-tls",
            "--partitions",
            "2",
            "--cores",
            "0",
            "--no-pin",
        ])
        .arg("--bootstrap")
        .arg(format!("{},ssl://{}", s.broker.addr, s.ssl_addr))
        .arg("--tls-ca")
        .arg(&ca_file)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sluice bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed\n{stdout}\n{stderr}");
    assert!(
        !stderr.contains("count check failed"),
        "every message counted\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("ssl://{}", s.ssl_addr)),
        "{stdout}"
    );
    // Both runs wrote to the same topic: the end offsets hold all 6000.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &s.broker.addr)
        .create()
        .unwrap();
    let total: i64 = (0..2)
        .map(|p| {
            consumer
                .fetch_watermarks("bench-tls", p, common::HANG_GUARD)
                .expect("watermarks")
                .1
        })
        .sum();
    assert_eq!(total, 6000);
}

/// What the admin endpoint at `addr` answers a plain HTTP request: the first bytes, or
/// nothing when it closes the connection.
fn plain_http_answer(addr: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    answer
}

/// `sluice cluster status --admin ADDR` with `SLUICE_ADMIN_CA_FILE` (or none): whether it
/// exited 0, and what it printed.
fn cluster_status(admin: &str, ca_file: Option<&Path>) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(["cluster", "status", "--admin", admin])
        .stdin(std::process::Stdio::null());
    if let Some(ca) = ca_file {
        cmd.env("SLUICE_ADMIN_CA_FILE", ca);
    }
    let out = cmd.output().expect("sluice runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_admin_endpoint_speaks_tls_with_admin_tls_and_the_cli_follows() {
    let tmp = common::tempdir("admin-tls");
    let dir = tmp.path();
    let ca = Ca::new("sluice admin CA");
    let ca_file = ca.write(dir, "ca");
    let other_ca = Ca::new("another CA").write(dir, "other-ca");
    let (cert, key) = write_pair(dir, "server", &ca.leaf("broker", true));
    let config = dir.join("sluice.toml");
    // No listener uses TLS: the endpoint loads the certificate itself.
    std::fs::write(
        &config,
        format!("[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n[auth]\nadmin_tls = true\n"),
    )
    .unwrap();
    let b = Broker::start_with(&dir.join("data"), &["--config", config.to_str().unwrap()]);
    let plain = plain_http_answer(&b.admin_addr);
    assert!(
        !plain.starts_with(b"HTTP/1."),
        "plain HTTP answered: {}",
        String::from_utf8_lossy(&plain)
    );
    let (ok, out) = cluster_status(&b.admin_addr, Some(&ca_file));
    assert!(ok, "over TLS: {out}");
    assert!(out.contains("node"), "{out}");
    let (ok, out) = cluster_status(&b.admin_addr, Some(&other_ca));
    assert!(!ok, "a client trusting another CA got through: {out}");
    let (ok, _) = cluster_status(&b.admin_addr, None);
    assert!(!ok, "a plain client got through");
}
