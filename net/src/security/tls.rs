//! TLS on SSL and SASL_SSL listeners (rustls, TLS 1.2 and 1.3, the `ring` provider):
//! the `[tls]` settings, the server configuration built from their files, its reload, and
//! the principal of a client certificate as Kafka forms it.
//!
//! The files are read by [`Tls::load`] and [`Tls::reload`] only, called at start and from
//! the thread handling SIGHUP; shards take the current configuration (an `Arc` clone under
//! a read lock) once per accepted connection. A reload that fails keeps the configuration
//! in force and says why; connections already open keep the one they began with.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;

/// `tls.client_auth` (Kafka's `ssl.client.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate asked for.
    None,
    /// Asked for; a client without one is let in as ANONYMOUS, one with a certificate
    /// not signed by `client_ca_file` is refused.
    Requested,
    /// A client without a certificate signed by `client_ca_file` is refused.
    Required,
}

impl ClientAuth {
    pub fn parse(s: &str) -> Option<ClientAuth> {
        match s {
            "none" => Some(ClientAuth::None),
            "requested" => Some(ClientAuth::Requested),
            "required" => Some(ClientAuth::Required),
            _ => None,
        }
    }
}

/// `[tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM: the server certificate, then its chain.
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM: the CAs client certificates must chain to; needed unless `client_auth` is none.
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// Why the TLS settings could not be loaded. Names the file and the setting, never the
/// content of a key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.{field}: reading {path}: {source}")]
    Read {
        field: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tls.{field}: {path}: {why}")]
    Content {
        field: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("tls.client_ca_file: needed when tls.client_auth is requested or required")]
    NoClientCa,
    #[error("tls: {0}")]
    Rustls(String),
}

pub use sluice_control::tls::PEM_FILE_BYTES_MAX;

/// The TLS server configuration in force, replaceable while connections are served.
#[derive(Debug)]
pub struct Tls {
    settings: TlsSettings,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl Tls {
    /// Reads the files and builds the configuration.
    pub fn load(settings: TlsSettings) -> Result<Tls, TlsError> {
        let config = build(&settings)?;
        Ok(Tls {
            settings,
            current: RwLock::new(config),
        })
    }

    /// Reads the files again; on success new connections use them, on failure the
    /// configuration in force stays. Open connections are not touched either way.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.settings)?;
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    /// What a new connection's handshake runs with.
    pub fn acceptor(&self) -> futures_rustls::TlsAcceptor {
        futures_rustls::TlsAcceptor::from(self.server_config())
    }

    /// The server configuration in force (the admin endpoint's blocking connections use
    /// it directly).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }
}

/// A `tls.<field>` error from a PEM file's.
fn pem_error(field: &'static str, e: sluice_control::tls::PemError) -> TlsError {
    use sluice_control::tls::PemError;
    match e {
        PemError::Read { path, source } => TlsError::Read {
            field,
            path,
            source,
        },
        PemError::Content { path, why } => TlsError::Content { field, path, why },
    }
}

fn build(s: &TlsSettings) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use sluice_control::tls::{pem_certificates, pem_private_key, pem_roots};
    let provider = sluice_control::tls::crypto_provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(sluice_control::tls::PROTOCOL_VERSIONS)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match s.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let ca_path = s.client_ca_file.as_deref().ok_or(TlsError::NoClientCa)?;
            let roots = pem_roots(ca_path).map_err(|e| pem_error("client_ca_file", e))?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let chain = pem_certificates(&s.cert_file).map_err(|e| pem_error("cert_file", e))?;
    let key = pem_private_key(&s.key_file).map_err(|e| pem_error("key_file", e))?;
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Content {
            field: "key_file",
            path: s.key_file.clone(),
            why: format!("does not fit tls.cert_file: {e}"),
        })?;
    Ok(Arc::new(config))
}

/// `User:<subject DN>` of a verified client certificate, the DN written as Java's
/// `X500Principal.getName()` writes it (RFC 2253: the last RDN first, `,` between them,
/// `+` inside a multi-valued one), which is what Kafka's default principal builder gives
/// (`ssl.principal.mapping.rules=DEFAULT`). `None` if the certificate does not parse
/// (rustls verified it, so it does).
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref()).ok()?;
    let rdns: Vec<String> = parsed
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type().to_id_string();
                    let key = short_name(&oid).map_or(oid.clone(), str::to_string);
                    match attr.as_str() {
                        Ok(v) => format!("{key}={}", escape_rfc2253(v)),
                        Err(_) => format!("{oid}=#{}", hex(attr.attr_value().data)),
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    let dn: Vec<String> = rdns.into_iter().rev().collect();
    Some(format!("User:{}", dn.join(",")))
}

/// The keywords RFC 2253 (and Java) use for attribute types.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// RFC 2253 section 2.4: `,+"\<>;` escaped, and a leading `#` or space and a trailing space.
fn escape_rfc2253(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2253_escapes_specials_and_edge_spaces() {
        assert_eq!(escape_rfc2253("carol"), "carol");
        assert_eq!(escape_rfc2253("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_rfc2253(" x "), "\\ x\\ ");
        assert_eq!(escape_rfc2253("#1"), "\\#1");
    }

    #[test]
    fn client_auth_names() {
        assert_eq!(ClientAuth::parse("required"), Some(ClientAuth::Required));
        assert_eq!(ClientAuth::parse("REQUIRED"), None);
    }

    #[test]
    fn a_missing_file_names_the_setting_and_the_path() {
        let e = Tls::load(TlsSettings {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            client_ca_file: None,
            client_auth: ClientAuth::None,
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("tls.cert_file") && e.contains("/nonexistent/cert.pem"),
            "{e}"
        );
    }

    #[test]
    fn client_auth_without_a_ca_is_refused() {
        let e = build(&TlsSettings {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            client_ca_file: None,
            client_auth: ClientAuth::Required,
        })
        .unwrap_err();
        assert!(matches!(e, TlsError::NoClientCa), "{e}");
    }
}
