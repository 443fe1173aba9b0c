//! The admin HTTP endpoint: `GET /metrics` (Prometheus text), `GET /health` and
//! `GET /cluster` (this node's view of the cluster as JSON, for `sluice cluster status`),
//! `POST /cluster/elect-leaders` (preferred-leader election through the active controller).
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
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match path {
        "/metrics" => ("200 OK", crate::metrics::render()),
        "/health" => ("200 OK", "ok\n".to_string()),
        "/cluster" => match crate::cluster::current() {
            Some(view) => ("200 OK", crate::cluster::status_json(&view)),
            None => ("503 Service Unavailable", "no broker running\n".to_string()),
        },
        "/cluster/elect-leaders" => match crate::cluster::current() {
            Some(view) => match crate::cluster::elect_leaders_blocking(&view) {
                Ok(body) => ("200 OK", body),
                Err(e) => ("503 Service Unavailable", format!("{e}\n")),
            },
            None => ("503 Service Unavailable", "no broker running\n".to_string()),
        },
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
