//! Certificates made by the test itself (rcgen; no key is checked in) and a raw TLS client
//! connection for exact protocol calls over TLS.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The names of a server certificate.
const SERVER_NAMES: &[&str] = &["127.0.0.1", "localhost"];

/// A certificate authority that signs server and client certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        let cert = p.self_signed(&key).expect("ca cert");
        Ca {
            issuer: Issuer::new(p, key),
            cert_pem: cert.pem(),
        }
    }

    /// A leaf certificate (PEM) and its key (PEM, PKCS#8) with subject `CN=<cn>`, for a
    /// server (`127.0.0.1` and `localhost` as names) or a client.
    pub fn leaf(&self, cn: &str, server: bool) -> (String, String) {
        if server {
            self.issue(cn, SERVER_NAMES, &[ExtendedKeyUsagePurpose::ServerAuth])
        } else {
            self.issue(cn, &[], &[ExtendedKeyUsagePurpose::ClientAuth])
        }
    }

    /// A cluster node's certificate (PEM) and key (PEM): subject `CN=<cn>`, `127.0.0.1`
    /// and `localhost` as names, good for both ends of a connection (`[cluster_tls]`).
    pub fn node(&self, cn: &str) -> (String, String) {
        let usages = [
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue(cn, SERVER_NAMES, &usages)
    }

    fn issue(
        &self,
        cn: &str,
        names: &[&str],
        usages: &[ExtendedKeyUsagePurpose],
    ) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut p = CertificateParams::new(names).expect("leaf params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = usages.to_vec();
        let key = KeyPair::generate().expect("leaf key");
        let cert = p.signed_by(&key, &self.issuer).expect("leaf cert");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes `<name>.pem` (this CA's certificate) into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &self.cert_pem).expect("write ca");
        path
    }
}

/// Writes a certificate and key as `<name>.pem` and `<name>.key` into `dir`.
pub fn write_pair(dir: &Path, name: &str, (cert, key): &(String, String)) -> (PathBuf, PathBuf) {
    let c = dir.join(format!("{name}.pem"));
    let k = dir.join(format!("{name}.key"));
    std::fs::write(&c, cert).expect("write cert");
    std::fs::write(&k, key).expect("write key");
    (c, k)
}

/// A blocking TLS connection to `addr` trusting `ca_pem` (for `raw::call`).
pub fn connect(
    addr: &str,
    ca_pem: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    connect_as(addr, ca_pem, None)
}

/// A blocking TLS connection to `addr` trusting `ca_pem`, presenting `client` (a
/// certificate and key, PEM) when given.
pub fn connect_as(
    addr: &str,
    ca_pem: &str,
    client: Option<&(String, String)>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("ca pem")).expect("add ca");
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client cert pem");
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("client key pem");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let tcp = super::raw::connect(addr);
    rustls::StreamOwned::new(conn, tcp)
}
