//! Kafka listeners: a name, an address, the address clients are given, and a security
//! protocol (Kafka's `listeners`, `advertised.listeners`, `listener.security.protocol.map`
//! in one entry).

use std::net::SocketAddr;

/// The name of the listener `listen` / `--listen` configures.
pub const PLAINTEXT_LISTENER: &str = "PLAINTEXT";

/// Longest listener name accepted (Kafka sets none; names go into every broker
/// registration, so they are kept short).
pub const LISTENER_NAME_BYTES_MAX: usize = 64;

/// Kafka's `security.protocol` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// Kafka's name (`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`), case-insensitive.
    pub fn parse(s: &str) -> Option<SecurityProtocol> {
        match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether connections on it speak TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether clients must authenticate with SASL before anything else.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// One Kafka listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Unique per broker; clients are answered with the addresses every broker registered
    /// under the name of the listener they connected to.
    pub name: String,
    pub listen: SocketAddr,
    /// Host and port given to clients; a port of 0 becomes the bound port.
    pub advertised_host: String,
    pub advertised_port: u16,
    pub security_protocol: SecurityProtocol,
}

/// Why a listener name is refused, or `None` if it is fine: 1 to
/// [`LISTENER_NAME_BYTES_MAX`] characters of `A-Z a-z 0-9 _ -`.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > LISTENER_NAME_BYTES_MAX {
        return Some(format!("is longer than {LISTENER_NAME_BYTES_MAX} bytes"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Some(format!(
            "{name:?} has characters other than A-Z, a-z, 0-9, _ and -"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_round_trip_kafka_names() {
        for p in [
            SecurityProtocol::Plaintext,
            SecurityProtocol::Ssl,
            SecurityProtocol::SaslPlaintext,
            SecurityProtocol::SaslSsl,
        ] {
            assert_eq!(SecurityProtocol::parse(p.name()), Some(p));
        }
        assert_eq!(
            SecurityProtocol::parse("sasl_ssl"),
            Some(SecurityProtocol::SaslSsl)
        );
        assert_eq!(SecurityProtocol::parse("TLS"), None);
        assert!(SecurityProtocol::SaslSsl.tls() && SecurityProtocol::SaslSsl.sasl());
        assert!(!SecurityProtocol::Plaintext.tls() && !SecurityProtocol::Plaintext.sasl());
    }

    #[test]
    fn listener_names_are_bounded_and_plain() {
        assert_eq!(name_problem("SECURE_1"), None);
        assert!(name_problem("").is_some());
        assert!(name_problem("a b").is_some());
        assert!(name_problem(&"A".repeat(LISTENER_NAME_BYTES_MAX + 1)).is_some());
    }
}
