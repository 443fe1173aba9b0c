//! The admin HTTP endpoint: `GET /metrics` (Prometheus text), `GET /health` (503 while a
//! shard's reactor is stalled), `GET /cluster` (this node's view of the cluster as JSON,
//! for `sluice cluster status`), `POST /cluster/elect-leaders` (preferred-leader election
//! through the active controller), `POST /cluster/controllers/add?id=N&address=HOST:PORT`
//! and `POST /cluster/controllers/remove?id=N` (controller membership changes, answered
//! once applied by the active controller), `GET /placement` (the partition → core map with
//! traffic, JSON) and `POST /partition/move?topic=T&partition=P&core=N` (a live move;
//! answers when done); with `SLUICE_FAILPOINTS=1` only, `POST /failpoint/panic?shard=N`
//! and `POST /failpoint/stall?shard=N&ms=M` (tests; see `watchdog`).
//!
//! Control plane, blocking I/O, one request per connection, each connection on its own
//! thread, at most [`ADMIN_CONNECTIONS_MAX`] at once (more are closed at accept), so a
//! slow client never holds up `/metrics` for the others; a request must arrive whole
//! within [`REQUEST_READ_TIMEOUT`].
//!
//! Invariants: state changes only on POST (any other method gets 405); a request with an
//! `Origin` header (a browser's cross-site request) gets 403, and any request with a body
//! is refused (no route takes one; a browser form always sends one), so a web page an
//! operator visits cannot drive the endpoint; request heads are bounded to
//! [`REQUEST_HEAD_BYTES_MAX`] (431 beyond) and bodies to [`REQUEST_BODY_BYTES_MAX`]
//! (413; a chunked body gets 400); with an [`AdminToken`] every POST (every state change)
//! needs `Authorization: Bearer <token>` (401 otherwise, compared in constant time),
//! while `GET` routes (`/metrics`, `/health`, `/cluster`, `/placement`) stay open; with
//! TLS (`[auth] admin_tls`) every connection is TLS with the certificate in force when it
//! was accepted, its handshake within the same read deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest request head (request line and headers).
pub const REQUEST_HEAD_BYTES_MAX: usize = 8192;
/// Largest request body: no route takes one (arguments are in the query string).
pub const REQUEST_BODY_BYTES_MAX: usize = 0;
/// Connections served at once; each has a thread. Scrapers and the CLI need a few.
pub const ADMIN_CONNECTIONS_MAX: usize = 16;
/// A request must arrive whole within this (a slowloris client is cut off).
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The credential state-changing requests must carry (`[auth] admin_token_file`). Its
/// `Debug` shows nothing of it.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

/// Fewest bytes a token may have (a guessable one protects nothing).
pub const ADMIN_TOKEN_BYTES_MIN: usize = 16;
/// Most bytes a token may have (it travels in a request head).
pub const ADMIN_TOKEN_BYTES_MAX: usize = 1024;

impl AdminToken {
    /// The token, if it is within the bounds and printable ASCII without spaces.
    pub fn new(token: &str) -> Result<AdminToken, String> {
        if !(ADMIN_TOKEN_BYTES_MIN..=ADMIN_TOKEN_BYTES_MAX).contains(&token.len()) {
            return Err(format!(
                "a token of {} bytes ({ADMIN_TOKEN_BYTES_MIN} to {ADMIN_TOKEN_BYTES_MAX})",
                token.len()
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a token must be printable ASCII without spaces".to_string());
        }
        Ok(AdminToken(Arc::from(token)))
    }

    /// Whether `given` is the token; time independent of where they differ.
    fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        let diff = a
            .iter()
            .zip(b)
            .fold(a.len() ^ b.len(), |d, (x, y)| d | usize::from(x ^ y));
        diff == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// Binds the endpoint and serves it on a background thread; returns the bound address.
/// A connection of the endpoint: plain TCP, or TLS over it (`[auth] admin_tls`).
trait Conn: Read + Write {
    /// The socket under it, for its timeouts.
    fn tcp(&self) -> &TcpStream;
}

impl Conn for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Conn for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// With `token`, state-changing requests must carry it; with `tls`, every connection is
/// served over TLS with its certificate (the one in force when the connection came).
pub fn start(
    addr: SocketAddr,
    token: Option<AdminToken>,
    tls: Option<Arc<crate::security::tls::Tls>>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("admin-http".into())
        .spawn(move || {
            crate::broker::fatal::mark_broker_thread();
            accept_loop(listener, token, tls)
        })?;
    Ok(local)
}

fn accept_loop(
    listener: TcpListener,
    token: Option<AdminToken>,
    tls: Option<Arc<crate::security::tls::Tls>>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let s = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                // Out of descriptors and the like: back off instead of spinning.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if open.fetch_add(1, Ordering::SeqCst) >= ADMIN_CONNECTIONS_MAX {
            open.fetch_sub(1, Ordering::SeqCst);
            tracing::debug!(
                max = ADMIN_CONNECTIONS_MAX,
                "admin connection limit reached, closing a new one"
            );
            drop(s);
            continue;
        }
        let count = open.clone();
        let token = token.clone();
        let tls = tls.as_ref().map(|t| t.server_config());
        let spawned = std::thread::Builder::new()
            .name("admin-conn".into())
            .spawn(move || {
                crate::broker::fatal::mark_broker_thread();
                if let Err(e) = serve_on(s, tls, token.as_ref()) {
                    tracing::debug!(error = %e, "admin request failed");
                }
                count.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            open.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(error = %e, "could not start an admin connection thread");
        }
    }
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    method: String,
    target: String,
    origin: bool,
    content_length: Option<usize>,
    chunked: bool,
    /// The `Authorization: Bearer` credential, if any.
    bearer: Option<String>,
}

/// Why a request is refused before routing.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    TooLarge,
    Malformed,
}

/// Reads the request head: up to the blank line, within the size bound and the deadline.
fn read_head(s: &mut dyn Conn) -> std::io::Result<Result<Vec<u8>, Refusal>> {
    let deadline = Instant::now() + REQUEST_READ_TIMEOUT;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end + 4);
            return Ok(Ok(head));
        }
        if head.len() > REQUEST_HEAD_BYTES_MAX {
            return Ok(Err(Refusal::TooLarge));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        s.tcp().set_read_timeout(Some(left))?;
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(Err(Refusal::Malformed));
        }
        head.extend_from_slice(&buf[..n]);
    }
}

fn parse_head(bytes: &[u8]) -> Result<Head, Refusal> {
    let text = std::str::from_utf8(bytes).map_err(|_| Refusal::Malformed)?;
    let mut lines = text.split("\r\n");
    let mut words = lines.next().unwrap_or("").split(' ');
    let (method, target) = match (words.next(), words.next(), words.next()) {
        (Some(m), Some(t), Some(v))
            if !m.is_empty() && t.starts_with('/') && v.starts_with("HTTP/1.") =>
        {
            (m, t)
        }
        _ => return Err(Refusal::Malformed),
    };
    let mut head = Head {
        method: method.to_string(),
        target: target.to_string(),
        origin: false,
        content_length: None,
        chunked: false,
        bearer: None,
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(Refusal::Malformed)?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "origin" => head.origin = true,
            "content-length" => {
                let n = value.parse().map_err(|_| Refusal::Malformed)?;
                if head.content_length.is_some_and(|c| c != n) {
                    return Err(Refusal::Malformed);
                }
                head.content_length = Some(n);
            }
            "transfer-encoding" => head.chunked = true,
            "authorization" => {
                head.bearer = value.strip_prefix("Bearer ").map(|t| t.trim().to_string());
            }
            _ => {}
        }
    }
    Ok(head)
}

/// One connection: over TLS with `tls` (the handshake runs within the read deadline; a
/// client that does not speak TLS is dropped), else plain.
fn serve_on(
    s: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    token: Option<&AdminToken>,
) -> std::io::Result<()> {
    let Some(config) = tls else {
        return serve(&mut { s }, token);
    };
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(conn, s);
    serve(&mut stream, token)?;
    stream.conn.send_close_notify();
    stream.flush()
}

fn serve(s: &mut dyn Conn, token: Option<&AdminToken>) -> std::io::Result<()> {
    s.tcp().set_write_timeout(Some(WRITE_TIMEOUT))?;
    let answer = match read_head(s)? {
        Err(Refusal::TooLarge) => (
            "431 Request Header Fields Too Large",
            TEXT,
            format!("request head over {REQUEST_HEAD_BYTES_MAX} bytes\n"),
        ),
        Err(Refusal::Malformed) => ("400 Bad Request", TEXT, "malformed request\n".into()),
        Ok(bytes) => match parse_head(&bytes) {
            Err(_) => ("400 Bad Request", TEXT, "malformed request\n".into()),
            Ok(head) => answer(&head, token),
        },
    };
    let (status, kind, body) = answer;
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Checks a request against the endpoint's rules, then routes it.
fn answer(head: &Head, token: Option<&AdminToken>) -> Answer {
    if head.origin {
        tracing::info!(target = %head.target, "admin request with an Origin header refused (cross-site)");
        return (
            "403 Forbidden",
            TEXT,
            "cross-site requests are refused\n".into(),
        );
    }
    if head.chunked {
        return ("400 Bad Request", TEXT, "no route takes a body\n".into());
    }
    if head.content_length.unwrap_or(0) > REQUEST_BODY_BYTES_MAX {
        return (
            "413 Content Too Large",
            TEXT,
            format!("request body over {REQUEST_BODY_BYTES_MAX} bytes: no route takes a body\n"),
        );
    }
    let (path, query) = head
        .target
        .split_once('?')
        .unwrap_or((head.target.as_str(), ""));
    let authorized = |t: &AdminToken| head.bearer.as_deref().is_some_and(|b| t.matches(b));
    if head.method == "POST" && token.is_some_and(|t| !authorized(t)) {
        tracing::warn!(path, "admin request without the admin token refused");
        return (
            "401 Unauthorized",
            TEXT,
            "state-changing requests need Authorization: Bearer <admin token>\n".into(),
        );
    }
    route(&head.method, path, query)
}

fn route(method: &str, path: &str, query: &str) -> Answer {
    let post_only = || ("405 Method Not Allowed", TEXT, "use POST\n".to_string());
    let get_only = || ("405 Method Not Allowed", TEXT, "use GET\n".to_string());
    match (method, path) {
        ("GET", "/metrics") => ("200 OK", TEXT, crate::admin::metrics::render()),
        ("GET", "/health") => match crate::broker::watchdog::health() {
            Ok(()) => ("200 OK", TEXT, "ok\n".to_string()),
            Err(stuck) => ("503 Service Unavailable", TEXT, stuck.to_string()),
        },
        ("GET", "/cluster") => match crate::broker::cluster::current() {
            Some(view) => ("200 OK", TEXT, crate::broker::cluster::status_json(&view)),
            None => (
                "503 Service Unavailable",
                TEXT,
                "no broker running\n".to_string(),
            ),
        },
        ("GET", "/placement") => placement(),
        (_, "/metrics" | "/health" | "/cluster" | "/placement") => get_only(),
        ("POST", "/cluster/elect-leaders") => match crate::broker::cluster::current() {
            Some(view) => match crate::broker::cluster::elect_leaders_blocking(&view) {
                Ok(body) => ("200 OK", TEXT, body),
                Err(e) => ("503 Service Unavailable", TEXT, format!("{e}\n")),
            },
            None => (
                "503 Service Unavailable",
                TEXT,
                "no broker running\n".to_string(),
            ),
        },
        ("POST", "/cluster/controllers/add") => change_controllers(query, true),
        ("POST", "/cluster/controllers/remove") => change_controllers(query, false),
        ("POST", "/partition/move") => partition_move(query),
        ("POST", "/failpoint/panic" | "/failpoint/stall") => failpoint(path, query),
        (
            _,
            "/cluster/elect-leaders"
            | "/cluster/controllers/add"
            | "/cluster/controllers/remove"
            | "/partition/move"
            | "/failpoint/panic"
            | "/failpoint/stall",
        ) => post_only(),
        _ => ("404 Not Found", TEXT, "not found\n".to_string()),
    }
}

/// The failpoint routes: 404 unless `SLUICE_FAILPOINTS=1` was set at start.
fn failpoint(path: &str, query: &str) -> Answer {
    use crate::broker::watchdog::FailpointError;
    let shard = match query_arg(query, "shard").and_then(|v| {
        v.parse::<usize>()
            .map_err(|_| BadQuery::invalid("shard", "not a shard number"))
    }) {
        Ok(s) => s,
        Err(e) => return ("400 Bad Request", TEXT, format!("{e}\n")),
    };
    let result = if path == "/failpoint/panic" {
        crate::broker::watchdog::inject_panic(shard)
    } else {
        match query_arg(query, "ms").and_then(|v| {
            v.parse::<u64>()
                .map_err(|_| BadQuery::invalid("ms", "not a number"))
        }) {
            Ok(ms) => crate::broker::watchdog::inject_stall(shard, ms),
            Err(e) => return ("400 Bad Request", TEXT, format!("{e}\n")),
        }
    };
    match result {
        Ok(()) => ("200 OK", TEXT, "injected\n".into()),
        Err(FailpointError::Off) => ("404 Not Found", TEXT, "not found\n".into()),
        Err(e) => ("400 Bad Request", TEXT, format!("{e}\n")),
    }
}

const TEXT: &str = "text/plain; version=0.0.4";
const JSON: &str = "application/json";

type Answer = (&'static str, &'static str, String);

fn placement() -> Answer {
    match crate::placement::moves::report() {
        Some(r) => match serde_json::to_string_pretty(&r) {
            Ok(body) => ("200 OK", JSON, body + "\n"),
            Err(e) => ("500 Internal Server Error", TEXT, format!("{e}\n")),
        },
        None => (
            "503 Service Unavailable",
            TEXT,
            "the broker is not running\n".into(),
        ),
    }
}

/// `topic=T&partition=P&core=N`: each present and well formed, or a 400 naming it.
fn move_args(query: &str) -> Result<(String, i32, usize), BadQuery> {
    let topic = query_arg(query, "topic")?;
    crate::broker::catalog::validate_topic_name(&topic)
        .map_err(|e| BadQuery::invalid("topic", e.to_string()))?;
    let partition = query_arg(query, "partition")?
        .parse()
        .map_err(|_| BadQuery::invalid("partition", "not a partition number"))?;
    let core = query_arg(query, "core")?
        .parse()
        .map_err(|_| BadQuery::invalid("core", "not a CPU number"))?;
    Ok((topic, partition, core))
}

fn partition_move(query: &str) -> Answer {
    let (topic, partition, core) = match move_args(query) {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(error = %e, "bad partition move request");
            return (
                "400 Bad Request",
                JSON,
                json_message("error", &e.to_string()),
            );
        }
    };
    use crate::placement::moves::MoveError;
    match crate::placement::moves::request_move(&topic, partition, core) {
        Ok(m) => ("200 OK", JSON, json_message("result", &m)),
        Err(e) => {
            let status = match e {
                MoveError::NotFound(_) => "404 Not Found",
                MoveError::Refused(_) => "409 Conflict",
                MoveError::NotRunning | MoveError::Busy => "503 Service Unavailable",
                MoveError::Failed(_) => "500 Internal Server Error",
            };
            (status, JSON, json_message("error", &e.to_string()))
        }
    }
}

/// A query parameter missing or malformed: the 400's message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum BadQuery {
    #[error("missing query parameter {0}")]
    Missing(&'static str),
    #[error("{field}: {why}")]
    Invalid { field: &'static str, why: String },
}

impl BadQuery {
    fn invalid(field: &'static str, why: impl Into<String>) -> BadQuery {
        BadQuery::Invalid {
            field,
            why: why.into(),
        }
    }
}

/// The value of `key` in a query string, or an error naming it.
fn query_arg(query: &str, key: &'static str) -> Result<String, BadQuery> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
        .ok_or(BadQuery::Missing(key))
}

/// `id=N` (a controller id, at least 1) and, when adding, `address=HOST:PORT`.
fn controller_args(query: &str, add: bool) -> Result<sluice_control::rpc::Request, BadQuery> {
    use sluice_control::rpc::Request;
    let id: u64 = query_arg(query, "id")?
        .parse()
        .ok()
        .filter(|id| *id >= 1)
        .ok_or_else(|| BadQuery::invalid("id", "not a controller id (an integer, at least 1)"))?;
    let id = sluice_control::NodeId(id);
    if !add {
        return Ok(Request::RemoveController { id });
    }
    let address = query_arg(query, "address")?;
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| BadQuery::invalid("address", format!("{address:?} is not HOST:PORT")))?;
    let port: u16 =
        port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
            BadQuery::invalid("address", format!("{port:?} is not a port (1-65535)"))
        })?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(BadQuery::invalid(
            "address",
            format!("{address:?} has no host"),
        ));
    }
    Ok(Request::AddController {
        id,
        host: host.to_string(),
        port,
    })
}

fn change_controllers(query: &str, add: bool) -> Answer {
    let req = match controller_args(query, add) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = %e, "bad controller membership request");
            return (
                "400 Bad Request",
                JSON,
                json_message("error", &e.to_string()),
            );
        }
    };
    let Some(view) = crate::broker::cluster::current() else {
        return (
            "503 Service Unavailable",
            TEXT,
            "no node running\n".to_string(),
        );
    };
    use crate::broker::cluster::MembershipError;
    match crate::broker::cluster::change_controllers_blocking(&view, &req) {
        Ok(body) => ("200 OK", JSON, body + "\n"),
        Err(MembershipError::Invalid(e)) => {
            tracing::info!(error = %e, "controller membership change refused");
            ("409 Conflict", JSON, json_message("error", &e))
        }
        Err(MembershipError::Unavailable(e)) => {
            tracing::warn!(error = %e, "controller membership change not done");
            ("503 Service Unavailable", JSON, json_message("error", &e))
        }
    }
}

fn json_message(key: &str, message: &str) -> String {
    let mut map = serde_json::Map::new();
    map.insert(key.into(), serde_json::Value::String(message.into()));
    serde_json::Value::Object(map).to_string() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_arguments_are_checked() {
        use sluice_control::rpc::Request;
        use sluice_control::NodeId;
        assert_eq!(
            controller_args("id=4&address=10.0.0.4:9093", true),
            Ok(Request::AddController {
                id: NodeId(4),
                host: "10.0.0.4".into(),
                port: 9093
            })
        );
        assert_eq!(
            controller_args("id=2", false),
            Ok(Request::RemoveController { id: NodeId(2) })
        );
        assert_eq!(
            controller_args("address=a:1", true).unwrap_err(),
            BadQuery::Missing("id")
        );
        assert!(controller_args("id=0", false)
            .unwrap_err()
            .to_string()
            .starts_with("id:"));
        assert!(controller_args("id=x", false)
            .unwrap_err()
            .to_string()
            .starts_with("id:"));
        assert_eq!(
            controller_args("id=4", true).unwrap_err().to_string(),
            "missing query parameter address"
        );
        for bad in ["h", "h:0", "h:70000", ":9093"] {
            let q = format!("id=4&address={bad}");
            assert!(
                controller_args(&q, true)
                    .unwrap_err()
                    .to_string()
                    .starts_with("address:"),
                "{bad}"
            );
        }
    }

    #[test]
    fn state_changes_need_the_admin_token_when_one_is_set() {
        let token = AdminToken::new("0123456789abcdef-secret").unwrap();
        let t = Some(&token);
        let post = |auth: &str| {
            let text = format!("POST /nope HTTP/1.1\r\n{auth}Content-Length: 0\r\n\r\n");
            parse_head(text.as_bytes()).unwrap()
        };
        assert_eq!(answer(&post(""), t).0, "401 Unauthorized");
        let wrong = post("Authorization: Bearer 0123456789abcdef-secreT\r\n");
        assert_eq!(answer(&wrong, t).0, "401 Unauthorized");
        let short = post("Authorization: Bearer 0123456789abcdef-secre\r\n");
        assert_eq!(answer(&short, t).0, "401 Unauthorized");
        let basic = post("Authorization: Basic 0123456789abcdef-secret\r\n");
        assert_eq!(answer(&basic, t).0, "401 Unauthorized");
        // The right token gets through to routing (404: no such route).
        let right = post("Authorization: Bearer 0123456789abcdef-secret\r\n");
        assert_eq!(answer(&right, t).0, "404 Not Found");
        // Without a token set, and for GET, nothing is asked.
        assert_eq!(answer(&post(""), None).0, "404 Not Found");
        let get = parse_head(b"GET /nope HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(answer(&get, t).0, "404 Not Found");
        assert!(AdminToken::new("short").is_err());
        assert!(AdminToken::new("has a space in it, long enough").is_err());
        assert_eq!(format!("{token:?}"), "AdminToken(..)");
    }

    #[test]
    fn request_heads_are_parsed_and_checked() {
        let head = parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            (head.method.as_str(), head.target.as_str()),
            ("GET", "/metrics")
        );
        assert!(!head.origin && head.content_length.is_none());
        let head = parse_head(b"POST /a HTTP/1.1\r\norigin: http://x\r\nContent-Length: 3\r\n\r\n")
            .unwrap();
        assert!(head.origin);
        assert_eq!(head.content_length, Some(3));
        assert_eq!(answer(&head, None).0, "403 Forbidden");
        let body = parse_head(b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(answer(&body, None).0, "413 Content Too Large");
        for bad in [
            &b"GET\r\n\r\n"[..],
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /m HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET /m HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET /m HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"\xff\xfe /m HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_head(bad), Err(Refusal::Malformed), "{bad:?}");
        }
        assert_eq!(route("DELETE", "/metrics", "").0, "405 Method Not Allowed");
        assert_eq!(
            route("GET", "/partition/move", "").0,
            "405 Method Not Allowed"
        );
        assert_eq!(route("GET", "/nope", "").0, "404 Not Found");
    }

    #[test]
    fn move_arguments_are_checked() {
        assert_eq!(
            move_args("topic=a&partition=3&core=2"),
            Ok(("a".to_string(), 3, 2))
        );
        assert_eq!(
            move_args("topic=a&core=2").unwrap_err().to_string(),
            "missing query parameter partition"
        );
        assert!(move_args("topic=a&partition=x&core=2")
            .unwrap_err()
            .to_string()
            .starts_with("partition:"));
        assert!(move_args("topic=a&partition=1&core=-1")
            .unwrap_err()
            .to_string()
            .starts_with("core:"));
        assert!(move_args("topic=a%20b&partition=1&core=1")
            .unwrap_err()
            .to_string()
            .starts_with("topic:"));
    }
}
