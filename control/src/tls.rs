//! Mutual TLS for the cluster's own traffic (`[cluster_tls]`): raft messages and broker
//! requests on the controller quorum port (`tcp`, `rpc`), and the Kafka connections one
//! broker opens to another (follower fetches, transaction markers; `sluice-replication`'s
//! client). One node certificate serves both ends: it is presented when this node accepts
//! a peer and when it connects to one. The one check is the chain: a peer's certificate
//! must chain to `ca_file`, the CA every node's certificate is signed by (the
//! cluster's own CA, not a public one). Host names are not compared (Kafka's
//! `ssl.endpoint.identification.algorithm=""`): nodes are reached at addresses from the
//! quorum list and the metadata log, and a certificate from the cluster CA is what makes
//! a node.
//!
//! Invariants:
//! - the files are read only by [`ClusterTls::load`] and [`ClusterTls::reload`] (at start
//!   and from the thread that handles SIGHUP); connections take the configuration in force
//!   (an `Arc` clone under a read lock) when they begin and keep it;
//! - every handshake is bounded by [`TLS_HANDSHAKE_MS_MAX`]; rustls bounds its own buffers;
//! - a failed reload keeps the configuration in force; key bytes are never formatted.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Longest a PEM file read for TLS may be: a certificate chain or CA bundle is a few KiB
/// to a few hundred; a larger file is a mistake, not a certificate.
pub const PEM_FILE_BYTES_MAX: u64 = 4 << 20;

/// Longest a TLS handshake between nodes may take, either side. A peer that connects and
/// says nothing must not hold a connection for longer.
pub const TLS_HANDSHAKE_MS_MAX: u64 = 10_000;

/// TLS handshakes the quorum port refused or that timed out, in this process (a metric:
/// `sluice_quorum_tls_handshakes_failed_total`).
static QUORUM_HANDSHAKES_FAILED: AtomicU64 = AtomicU64::new(0);

/// How many TLS handshakes the quorum port of this process refused (or that timed out).
pub fn quorum_handshakes_failed() -> u64 {
    QUORUM_HANDSHAKES_FAILED.load(Ordering::Relaxed)
}

/// Counts a refused quorum handshake; the count so far, this one included.
pub(crate) fn quorum_handshake_failed() -> u64 {
    QUORUM_HANDSHAKES_FAILED.fetch_add(1, Ordering::Relaxed) + 1
}

/// Why a PEM file gave no certificate or key. Names the file, never a key's content.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Content { path: PathBuf, why: String },
}

fn read_pem(path: &Path) -> Result<Vec<u8>, PemError> {
    let read_err = |source| PemError::Read {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > PEM_FILE_BYTES_MAX {
        return Err(PemError::Content {
            path: path.to_path_buf(),
            why: format!("{len} bytes, more than the {PEM_FILE_BYTES_MAX} a PEM file may have"),
        });
    }
    std::fs::read(path).map_err(read_err)
}

/// The certificates of a PEM file (at least one).
pub fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = read_pem(path)?;
    let content = |why: String| PemError::Content {
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(content("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn pem_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = read_pem(path)?;
    // The parse error names the PEM section at most, never key bytes.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| PemError::Content {
        path: path.to_path_buf(),
        why: format!("no usable private key: {e}"),
    })
}

/// The CAs of a PEM file as a root store.
pub fn pem_roots(path: &Path) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for ca in pem_certificates(path)? {
        roots.add(ca).map_err(|e| PemError::Content {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The crypto provider of every TLS configuration of the node.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    // rustls 0.23.48 deprecates its `ring` provider for lacking post-quantum key exchange;
    // the alternative (aws-lc-rs) needs cmake and a C toolchain beyond what the README
    // promises. TLS 1.2 and 1.3 with the classic groups are what Kafka clients offer.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 and 1.2, as every listener of the node.
pub const PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// `[cluster_tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTlsSettings {
    /// PEM: this node's certificate, then its chain.
    pub cert_file: PathBuf,
    /// PEM: its private key.
    pub key_file: PathBuf,
    /// PEM: the CA (or CAs) every node's certificate chains to.
    pub ca_file: PathBuf,
}

/// Why `[cluster_tls]` could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ClusterTlsError {
    #[error("cluster_tls.{field}: {source}")]
    Pem {
        field: &'static str,
        source: PemError,
    },
    #[error("cluster_tls.key_file: does not fit cluster_tls.cert_file: {0}")]
    KeyMismatch(String),
    #[error("cluster_tls: {0}")]
    Rustls(String),
}

/// Both ends' configurations, built together from the same files.
#[derive(Debug)]
struct Configs {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

/// The cluster TLS configuration in force, replaceable while connections are served.
pub struct ClusterTls {
    settings: ClusterTlsSettings,
    current: RwLock<Arc<Configs>>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// Reads the files and builds both ends' configurations.
    pub fn load(settings: ClusterTlsSettings) -> Result<ClusterTls, ClusterTlsError> {
        let configs = build(&settings)?;
        Ok(ClusterTls {
            settings,
            current: RwLock::new(Arc::new(configs)),
        })
    }

    /// Reads the files again; on success new connections use them, on failure the
    /// configuration in force stays. Open connections are not touched either way.
    pub fn reload(&self) -> Result<(), ClusterTlsError> {
        let configs = Arc::new(build(&self.settings)?);
        match self.current.write() {
            Ok(mut c) => *c = configs,
            Err(poisoned) => *poisoned.into_inner() = configs,
        }
        Ok(())
    }

    pub fn settings(&self) -> &ClusterTlsSettings {
        &self.settings
    }

    fn configs(&self) -> Arc<Configs> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The server side: the node certificate, and a certificate chaining to `ca_file`
    /// required of every peer.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.configs().server.clone()
    }

    /// The client side: the node certificate presented, the peer's checked against
    /// `ca_file`.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.configs().client.clone()
    }

    /// Accepts a peer's TLS connection on `stream`, bounded by [`TLS_HANDSHAKE_MS_MAX`].
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<ClusterStream> {
        let acceptor = futures_rustls::TlsAcceptor::from(self.server_config());
        let tls = bounded(acceptor.accept(stream)).await?;
        Ok(ClusterStream::Tls(Box::new(
            futures_rustls::TlsStream::Server(tls),
        )))
    }

    /// Opens TLS to the peer `host` over `stream`, bounded by [`TLS_HANDSHAKE_MS_MAX`].
    pub async fn connect(&self, host: &str, stream: TcpStream) -> std::io::Result<ClusterStream> {
        let connector = futures_rustls::TlsConnector::from(self.client_config());
        let tls = bounded(connector.connect(server_name(host)?, stream)).await?;
        Ok(ClusterStream::Tls(Box::new(
            futures_rustls::TlsStream::Client(tls),
        )))
    }

    /// Opens TLS to the peer `host` over a blocking socket (its read and write timeouts
    /// bound the handshake); the handshake completes before this returns.
    pub fn connect_blocking(
        &self,
        host: &str,
        stream: std::net::TcpStream,
    ) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
        let conn = rustls::ClientConnection::new(self.client_config(), server_name(host)?)
            .map_err(std::io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, stream);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(tls)
    }
}

fn server_name(host: &str) -> std::io::Result<ServerName<'static>> {
    ServerName::try_from(host.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))
}

async fn bounded<T>(
    handshake: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    futures_lite::future::or(handshake, async {
        glommio::timer::sleep(Duration::from_millis(TLS_HANDSHAKE_MS_MAX)).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no TLS handshake within {TLS_HANDSHAKE_MS_MAX} ms"),
        ))
    })
    .await
}

fn build(s: &ClusterTlsSettings) -> Result<Configs, ClusterTlsError> {
    let pem = |field| move |source| ClusterTlsError::Pem { field, source };
    let rustls_err = |e: &dyn std::fmt::Display| ClusterTlsError::Rustls(e.to_string());
    let roots = Arc::new(pem_roots(&s.ca_file).map_err(pem("ca_file"))?);
    let chain = pem_certificates(&s.cert_file).map_err(pem("cert_file"))?;
    let key = pem_private_key(&s.key_file).map_err(pem("key_file"))?;
    let provider = crypto_provider();

    let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| rustls_err(&e))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| rustls_err(&e))?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| ClusterTlsError::KeyMismatch(e.to_string()))?;

    let servers = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| rustls_err(&e))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| rustls_err(&e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainOnly(servers)))
        .with_client_auth_cert(chain, key)
        .map_err(|e| ClusterTlsError::KeyMismatch(e.to_string()))?;
    Ok(Configs {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

/// A peer's certificate checked as webpki checks a server's (chain to `ca_file`,
/// validity, key usage), all but the host name (see the module docs). webpki compares the
/// name last, after the chain verified, so a name mismatch means everything else held.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A connection between nodes: plain TCP without `[cluster_tls]`, TLS with it.
pub enum ClusterStream {
    Plain(TcpStream),
    Tls(Box<futures_rustls::TlsStream<TcpStream>>),
}

impl std::fmt::Debug for ClusterStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClusterStream::Plain(_) => "ClusterStream::Plain",
            ClusterStream::Tls(_) => "ClusterStream::Tls",
        })
    }
}

impl ClusterStream {
    /// Accepts `stream`: TLS with `tls`, else plain.
    pub async fn accept(tls: Option<&ClusterTls>, stream: TcpStream) -> std::io::Result<Self> {
        match tls {
            Some(t) => t.accept(stream).await,
            None => Ok(ClusterStream::Plain(stream)),
        }
    }

    /// Connects to `host:port` within `connect_timeout`, then opens TLS with `tls` (its
    /// handshake bounded by [`TLS_HANDSHAKE_MS_MAX`]).
    pub async fn connect(
        tls: Option<&ClusterTls>,
        host: &str,
        port: u16,
        connect_timeout: Duration,
    ) -> std::io::Result<Self> {
        let addr = format!("{host}:{port}");
        let stream = TcpStream::connect_timeout(addr.as_str(), connect_timeout)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        match tls {
            Some(t) => t.connect(host, stream).await,
            None => Ok(ClusterStream::Plain(stream)),
        }
    }
}

impl AsyncRead for ClusterStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClusterStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClusterStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClusterStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClusterStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClusterStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClusterStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClusterStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClusterStream::Plain(s) => Pin::new(s).poll_close(cx),
            ClusterStream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// A blocking connection between nodes (threads outside glommio).
#[derive(Debug)]
pub enum BlockingStream {
    Plain(std::net::TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>),
}

impl BlockingStream {
    /// Connects to `addr` within `timeout` (also each read's and write's bound), then
    /// opens TLS with `tls`.
    pub fn connect(
        tls: Option<&ClusterTls>,
        addr: std::net::SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let _ = stream.set_nodelay(true);
        match tls {
            Some(t) => Ok(BlockingStream::Tls(Box::new(
                t.connect_blocking(&addr.ip().to_string(), stream)?,
            ))),
            None => Ok(BlockingStream::Plain(stream)),
        }
    }
}

impl Read for BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            BlockingStream::Plain(s) => s.read(buf),
            BlockingStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for BlockingStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            BlockingStream::Plain(s) => s.write(buf),
            BlockingStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            BlockingStream::Plain(s) => s.flush(),
            BlockingStream::Tls(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_names_the_setting_and_the_path() {
        let e = ClusterTls::load(ClusterTlsSettings {
            cert_file: "/nonexistent/node.pem".into(),
            key_file: "/nonexistent/node.key".into(),
            ca_file: "/nonexistent/ca.pem".into(),
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("cluster_tls.ca_file") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = pem_certificates(&path).unwrap_err().to_string();
        assert!(e.contains("no CERTIFICATE block"), "{e}");
    }
}
