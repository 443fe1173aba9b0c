//! The CLI's client of a broker's admin endpoint (`sluice cluster`, `sluice cluster
//! placement`, `sluice partition move`): one blocking HTTP/1.1 request per call, with no
//! body (the endpoint refuses bodies), the connect and every read and write bounded by a
//! timeout, the answer by a size. With `SLUICE_ADMIN_TOKEN_FILE` set, every request carries
//! the token in that file (`Authorization: Bearer`), which a broker with
//! `[auth] admin_token_file` requires of state-changing requests.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// Bound on connecting and on writing the request.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// Largest admin answer read.
const ANSWER_BYTES_MAX: u64 = 64 << 20;
/// Longest admin token file read.
const TOKEN_FILE_BYTES_MAX: u64 = 4096;

/// The `Authorization` header line for the token in `SLUICE_ADMIN_TOKEN_FILE`, if set.
fn authorization() -> Result<String> {
    let Some(path) = std::env::var_os("SLUICE_ADMIN_TOKEN_FILE") else {
        return Ok(String::new());
    };
    let path = std::path::PathBuf::from(path);
    let what = || format!("SLUICE_ADMIN_TOKEN_FILE {}", path.display());
    let mut text = String::new();
    std::fs::File::open(&path)
        .with_context(what)?
        .take(TOKEN_FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .with_context(what)?;
    Ok(format!("Authorization: Bearer {}\r\n", text.trim()))
}

/// `method path` on the admin endpoint `admin` (HOST:PORT), waiting at most `wait` for
/// the answer: the body of a 200 answer; otherwise an error with the broker's message
/// (its JSON `error`, or the body) and the status.
pub fn call(admin: &str, method: &str, path: &str, wait: Duration) -> Result<String> {
    let addr = admin
        .to_socket_addrs()
        .with_context(|| format!("--admin: {admin:?} is not HOST:PORT"))?
        .next()
        .ok_or_else(|| anyhow!("--admin: {admin:?} resolves to no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_WAIT)
        .with_context(|| format!("connecting to the admin endpoint {admin}"))?;
    s.set_read_timeout(Some(wait))?;
    s.set_write_timeout(Some(CONNECT_WAIT))?;
    let auth = authorization()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.take(ANSWER_BYTES_MAX)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {admin}{path}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{admin}{path}: not an HTTP answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let msg = v["error"].as_str().unwrap_or(body.trim());
        bail!("{method} {path} on {admin}: {msg} ({status})");
    }
    Ok(body.to_string())
}
