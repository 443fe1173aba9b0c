//! TLS for the bench's connections: a `--bootstrap ssl://HOST:PORT` runs every connection
//! of that run (admin calls, producers, consumers, group members) over TLS, trusting the
//! CAs of `--tls-ca`; plain `HOST:PORT` stays plain TCP, so `compare` can put a TLS
//! listener beside a plaintext one in one run.
//!
//! The client configuration of the run in progress is process-wide (runs are one at a
//! time; actors on other threads read it when they connect).

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context as _, Result};
use glommio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// The TLS client configuration of the run in progress; `None`: plain TCP.
static CLIENT: Mutex<Option<Arc<rustls::ClientConfig>>> = Mutex::new(None);

/// The scheme that asks for TLS.
const TLS_SCHEME: &str = "ssl://";

/// Sets this run's transport from its bootstrap address; returns the address without the
/// scheme.
pub fn select(bootstrap: &str, ca_file: Option<&Path>) -> Result<String> {
    let (addr, config) = match bootstrap.strip_prefix(TLS_SCHEME) {
        Some(addr) => {
            let ca = ca_file.ok_or_else(|| anyhow!("{bootstrap}: ssl:// needs --tls-ca FILE"))?;
            (addr, Some(client_config(ca)?))
        }
        None => (bootstrap, None),
    };
    *CLIENT.lock().unwrap_or_else(|p| p.into_inner()) = config;
    Ok(addr.to_string())
}

fn current() -> Option<Arc<rustls::ClientConfig>> {
    CLIENT.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// A client configuration trusting the CAs in the PEM file `ca` (the bench's `--tls-ca`,
/// the CLI's `SLUICE_ADMIN_CA_FILE`).
pub(crate) fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let pem = std::fs::read(ca).with_context(|| format!("reading --tls-ca {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(c.map_err(|e| anyhow!("--tls-ca {}: {e}", ca.display()))?)
            .map_err(|e| anyhow!("--tls-ca {}: {e}", ca.display()))?;
    }
    // The broker's provider (see `sluice_net::security::tls`).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name a server's certificate must carry: the host of `addr` (HOST:PORT).
pub(crate) fn server_name(addr: &str) -> Result<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| anyhow!("{addr}: {e}"))
}

/// A bench connection on glommio: plain TCP or TLS over it (the type the cluster's own
/// connections use; only its client side here).
pub use sluice_net::security::ClusterStream as Stream;

/// Connects to `addr` (TCP_NODELAY), with TLS when this run asked for it.
pub async fn connect(addr: &str) -> Result<Stream> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| anyhow!("connecting to {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| anyhow!("setting TCP_NODELAY: {e}"))?;
    let Some(config) = current() else {
        return Ok(Stream::Plain(stream));
    };
    let tls = futures_rustls::TlsConnector::from(config)
        .connect(server_name(addr)?, stream)
        .await
        .map_err(|e| anyhow!("TLS handshake with {addr}: {e}"))?;
    Ok(Stream::Tls(Box::new(futures_rustls::TlsStream::Client(
        tls,
    ))))
}

/// A blocking connection (admin calls): plain TCP or TLS over it.
pub use sluice_net::security::BlockingStream as SyncStream;

/// Wraps a connected socket in TLS when this run asked for it.
pub fn wrap(stream: std::net::TcpStream, addr: &str) -> Result<SyncStream> {
    let Some(config) = current() else {
        return Ok(SyncStream::Plain(stream));
    };
    let conn = rustls::ClientConnection::new(config, server_name(addr)?)
        .map_err(|e| anyhow!("TLS with {addr}: {e}"))?;
    Ok(SyncStream::Tls(Box::new(rustls::StreamOwned::new(
        conn, stream,
    ))))
}
