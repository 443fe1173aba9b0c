//! The admin HTTP endpoint: `GET /metrics` (Prometheus text), `GET /health`,
//! `GET /cluster` (this node's view of the cluster as JSON, for `sluice cluster status`),
//! `POST /cluster/elect-leaders` (preferred-leader election through the active controller),
//! `POST /cluster/controllers/add?id=N&address=HOST:PORT` and
//! `POST /cluster/controllers/remove?id=N` (controller membership changes, answered once
//! applied by the active controller),
//! `GET /placement` (the partition → core map with traffic, JSON) and
//! `POST /partition/move?topic=T&partition=P&core=N` (a live move; answers when done).
//! Control plane, on its own thread with blocking I/O; one request per connection,
//! request heads bounded to `REQUEST_HEAD_BYTES_MAX`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

const REQUEST_HEAD_BYTES_MAX: usize = 8192;

/// Binds the endpoint and serves it on a background thread; returns the bound address.
pub fn start(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("admin-http".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        if let Err(e) = serve(s) {
                            tracing::debug!(error = %e, "admin request failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "admin accept failed"),
                }
            }
        })?;
    Ok(local)
}

fn serve(mut s: TcpStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < REQUEST_HEAD_BYTES_MAX {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("");
    let target = words.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, kind, body) = match (method, path) {
        (_, "/metrics") => ("200 OK", TEXT, crate::metrics::render()),
        (_, "/health") => ("200 OK", TEXT, "ok\n".to_string()),
        (_, "/cluster") => match crate::cluster::current() {
            Some(view) => ("200 OK", TEXT, crate::cluster::status_json(&view)),
            None => (
                "503 Service Unavailable",
                TEXT,
                "no broker running\n".to_string(),
            ),
        },
        (_, "/cluster/elect-leaders") => match crate::cluster::current() {
            Some(view) => match crate::cluster::elect_leaders_blocking(&view) {
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
        (_, "/cluster/controllers/add" | "/cluster/controllers/remove") => {
            ("405 Method Not Allowed", TEXT, "use POST\n".to_string())
        }
        ("GET", "/placement") => placement(),
        ("POST", "/partition/move") => partition_move(query),
        (_, "/partition/move") => ("405 Method Not Allowed", TEXT, "use POST\n".to_string()),
        _ => ("404 Not Found", TEXT, "not found\n".to_string()),
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

const TEXT: &str = "text/plain; version=0.0.4";
const JSON: &str = "application/json";

type Answer = (&'static str, &'static str, String);

fn placement() -> Answer {
    match crate::moves::report() {
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
fn move_args(query: &str) -> Result<(String, i32, usize), String> {
    let get = |key: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| format!("missing query parameter {key}"))
    };
    let topic = get("topic")?;
    crate::catalog::validate_topic_name(&topic).map_err(|e| format!("topic: {e}"))?;
    let partition = get("partition")?
        .parse()
        .map_err(|_| "partition: not a partition number".to_string())?;
    let core = get("core")?
        .parse()
        .map_err(|_| "core: not a CPU number".to_string())?;
    Ok((topic, partition, core))
}

fn partition_move(query: &str) -> Answer {
    let (topic, partition, core) = match move_args(query) {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(error = %e, "bad partition move request");
            return ("400 Bad Request", JSON, json_message("error", &e));
        }
    };
    use crate::moves::MoveError;
    match crate::moves::request_move(&topic, partition, core) {
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

/// The value of `key` in a query string, or an error naming it.
fn query_arg(query: &str, key: &str) -> Result<String, String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
        .ok_or_else(|| format!("missing query parameter {key}"))
}

/// `id=N` (a controller id, at least 1) and, when adding, `address=HOST:PORT`.
fn controller_args(query: &str, add: bool) -> Result<sluice_control::rpc::Request, String> {
    use sluice_control::rpc::Request;
    let id: u64 = query_arg(query, "id")?
        .parse()
        .ok()
        .filter(|id| *id >= 1)
        .ok_or_else(|| "id: not a controller id (an integer, at least 1)".to_string())?;
    let id = sluice_control::NodeId(id);
    if !add {
        return Ok(Request::RemoveController { id });
    }
    let address = query_arg(query, "address")?;
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("address: {address:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("address: {port:?} is not a port (1-65535)"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("address: {address:?} has no host"));
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
            return ("400 Bad Request", JSON, json_message("error", &e));
        }
    };
    let Some(view) = crate::cluster::current() else {
        return (
            "503 Service Unavailable",
            TEXT,
            "no node running\n".to_string(),
        );
    };
    use crate::cluster::MembershipError;
    match crate::cluster::change_controllers_blocking(&view, &req) {
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
            "missing query parameter id"
        );
        assert!(controller_args("id=0", false)
            .unwrap_err()
            .starts_with("id:"));
        assert!(controller_args("id=x", false)
            .unwrap_err()
            .starts_with("id:"));
        assert_eq!(
            controller_args("id=4", true).unwrap_err(),
            "missing query parameter address"
        );
        for bad in ["h", "h:0", "h:70000", ":9093"] {
            let q = format!("id=4&address={bad}");
            assert!(
                controller_args(&q, true)
                    .unwrap_err()
                    .starts_with("address:"),
                "{bad}"
            );
        }
    }

    #[test]
    fn move_arguments_are_checked() {
        assert_eq!(
            move_args("topic=a&partition=3&core=2"),
            Ok(("a".to_string(), 3, 2))
        );
        assert_eq!(
            move_args("topic=a&core=2").unwrap_err(),
            "missing query parameter partition"
        );
        assert!(move_args("topic=a&partition=x&core=2")
            .unwrap_err()
            .starts_with("partition:"));
        assert!(move_args("topic=a&partition=1&core=-1")
            .unwrap_err()
            .starts_with("core:"));
        assert!(move_args("topic=a%20b&partition=1&core=1")
            .unwrap_err()
            .starts_with("topic:"));
    }
}
