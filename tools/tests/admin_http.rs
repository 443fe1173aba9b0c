//! The admin HTTP endpoint on a real broker: state changes only on POST, cross-site
//! requests (an `Origin` header, a body) are refused, request heads and bodies are
//! bounded, `/metrics` is answered while another client is slow, failpoints are off
//! unless asked for, and the CLI still drives it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Broker;

/// Guards against hangs only.
const READ_GUARD: Duration = Duration::from_secs(60);

/// Sends `request` as is; (status code, body).
fn raw(addr: &str, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(READ_GUARD)).unwrap();
    // The endpoint may answer (and close) before it has read everything sent.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    common::http_answer(&String::from_utf8_lossy(&out))
}

fn call(addr: &str, method: &str, path: &str, headers: &str) -> (u16, String) {
    raw(
        addr,
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

#[test]
fn the_admin_endpoint_changes_state_only_on_post_and_refuses_cross_site_requests() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let a = &b.admin_addr;
    assert_eq!(call(a, "GET", "/metrics", "").0, 200);
    assert_eq!(call(a, "GET", "/health", "").0, 200);
    assert_eq!(call(a, "GET", "/cluster", "").0, 200);
    // Reads only by GET; state changes only by POST.
    assert_eq!(call(a, "POST", "/metrics", "").0, 405);
    for path in [
        "/cluster/elect-leaders",
        "/cluster/controllers/remove?id=9",
        "/partition/move?topic=t&partition=0&core=1",
    ] {
        assert_eq!(call(a, "GET", path, "").0, 405, "GET {path}");
    }
    // A browser's cross-site request carries Origin: refused, whatever the route.
    let (code, body) = call(
        a,
        "POST",
        "/cluster/elect-leaders",
        "Origin: http://evil.example\r\n",
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        call(a, "GET", "/metrics", "Origin: http://evil.example\r\n").0,
        403
    );
    // No route takes a body (a form post always has one).
    let (code, _) = raw(
        a,
        b"POST /cluster/elect-leaders HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\n\r\na=b&c",
    );
    assert_eq!(code, 413);
    let (code, _) = raw(
        a,
        b"POST /cluster/elect-leaders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(code, 400);
    // Bounded request heads.
    let long = format!("X-Pad: {}\r\n", "a".repeat(20_000));
    assert_eq!(call(a, "GET", "/metrics", &long).0, 431);
    assert_eq!(raw(a, b"garbage\r\n\r\n").0, 400);
    // Failpoints exist only with SLUICE_FAILPOINTS=1.
    assert_eq!(call(a, "POST", "/failpoint/panic?shard=0", "").0, 404);
    assert_eq!(call(a, "GET", "/health", "").0, 200, "still alive");
    // The CLI uses the endpoint with the right methods.
    let out = common::sluice(&["cluster", "elect-leaders", "--admin", a]);
    assert!(!out.contains("405"), "{out}");
    common::sluice(&["cluster", "status", "--admin", a]);
    common::sluice(&["cluster", "placement", "--admin", a]);
}

#[test]
fn metrics_are_answered_while_another_client_sends_half_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let a = &b.admin_addr;
    // A slow client: half a request head, then nothing.
    let mut slow = TcpStream::connect(a).unwrap();
    slow.write_all(b"GET /metr").unwrap();
    // Others are served meanwhile.
    for _ in 0..3 {
        let (code, body) = call(a, "GET", "/metrics", "");
        assert_eq!(code, 200);
        assert!(body.contains("sluice_"), "{body}");
    }
    // ...while the slow one is still waiting for its answer: served first, not after it.
    slow.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    match slow.read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the slow client was answered before the others: {other:?}"),
    }
    // It is cut off in the end (a bounded wait for a whole request), not served.
    slow.set_nonblocking(false).unwrap();
    slow.set_read_timeout(Some(READ_GUARD)).unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
}

#[test]
fn state_changes_need_the_admin_token_when_one_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "s3cret-token-0123456789\n").unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!("[auth]\nadmin_token_file = \"{}\"\n", token.display()),
    )
    .unwrap();
    let b = Broker::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let a = &b.admin_addr;
    // Reads stay open.
    for path in ["/metrics", "/health", "/cluster"] {
        assert_eq!(call(a, "GET", path, "").0, 200, "GET {path}");
    }
    let post = |headers: &str| call(a, "POST", "/cluster/elect-leaders", headers).0;
    assert_eq!(post("Content-Length: 0\r\n"), 401);
    assert_eq!(
        post("Authorization: Bearer s3cret-token-0123456788\r\nContent-Length: 0\r\n"),
        401
    );
    assert_eq!(
        post("Authorization: Bearer s3cret-token-0123456789\r\nContent-Length: 0\r\n"),
        200
    );
    // The CLI sends the token from SLUICE_ADMIN_TOKEN_FILE.
    let cli = |with_token: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(["cluster", "elect-leaders", "--admin", a]);
        if with_token {
            cmd.env("SLUICE_ADMIN_TOKEN_FILE", &token);
        }
        cmd.output().expect("run sluice")
    };
    let without = cli(false);
    assert!(!without.status.success());
    assert!(String::from_utf8_lossy(&without.stderr).contains("401"));
    let with = cli(true);
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
}
