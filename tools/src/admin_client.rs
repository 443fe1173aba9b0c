//! The CLI's client of a broker's admin endpoint (`sluice cluster`, `sluice cluster
//! placement`, `sluice partition move`): one blocking HTTP/1.1 request per call, with no
//! body (the endpoint refuses bodies), the connect and every read and write bounded by a
//! timeout, the answer by a size. With `SLUICE_ADMIN_TOKEN_FILE` set, every request carries
//! the token in that file (`Authorization: Bearer`), which a broker with
//! `[auth] admin_token_file` requires of state-changing requests. With
//! `SLUICE_ADMIN_CA_FILE` set, it speaks TLS (a broker with `[auth] admin_tls`) and trusts
//! the CAs in that PEM file, checking the certificate against the `--admin` host.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
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

/// With `SLUICE_ADMIN_CA_FILE` set: the TLS client configuration trusting its CAs, and
/// the name the certificate must carry (the host of `admin`).
fn tls_client(
    admin: &str,
) -> Result<
    Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
> {
    let Some(path) = std::env::var_os("SLUICE_ADMIN_CA_FILE") else {
        return Ok(None);
    };
    let config = crate::bench::tls::client_config(std::path::Path::new(&path))
        .context("SLUICE_ADMIN_CA_FILE")?;
    let name = crate::bench::tls::server_name(admin).context("--admin")?;
    Ok(Some((config, name)))
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
    let s = TcpStream::connect_timeout(&addr, CONNECT_WAIT)
        .with_context(|| format!("connecting to the admin endpoint {admin}"))?;
    s.set_read_timeout(Some(wait))?;
    s.set_write_timeout(Some(CONNECT_WAIT))?;
    let auth = authorization()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    let read = |s: &mut dyn Read, raw: &mut Vec<u8>| {
        s.take(ANSWER_BYTES_MAX)
            .read_to_end(raw)
            .with_context(|| format!("reading the answer of {admin}{path}"))
    };
    match tls_client(admin)? {
        None => {
            let mut s = s;
            s.write_all(request.as_bytes())?;
            read(&mut s, &mut raw)?;
        }
        Some((config, name)) => {
            let conn = rustls::ClientConnection::new(config, name)
                .map_err(|e| anyhow!("TLS to the admin endpoint {admin}: {e}"))?;
            let mut s = rustls::StreamOwned::new(conn, s);
            s.write_all(request.as_bytes())
                .with_context(|| format!("TLS to the admin endpoint {admin}"))?;
            read(&mut s, &mut raw)?;
        }
    }
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
