//! SASL settings (`[auth]`) and the mechanisms a SASL listener offers.

use sluice_control::ScramMechanism;

/// A SASL mechanism this broker can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// RFC 4616: the password in the clear (use it on SASL_SSL), checked against the user's
    /// SCRAM credential.
    Plain,
    Scram(ScramMechanism),
}

impl SaslMechanism {
    pub const ALL: [SaslMechanism; 3] = [
        SaslMechanism::Plain,
        SaslMechanism::Scram(ScramMechanism::Sha256),
        SaslMechanism::Scram(ScramMechanism::Sha512),
    ];

    /// Kafka's name (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }

    pub fn parse(name: &str) -> Option<SaslMechanism> {
        SaslMechanism::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// `sasl.enabled.mechanisms`: what SaslHandshake accepts on SASL listeners.
    pub sasl_mechanisms: Vec<SaslMechanism>,
    /// `connections.max.reauth.ms` (KIP-368): an authenticated session lasts this long,
    /// then a client must authenticate again on its connection or it is closed at its
    /// next request. 0: sessions do not expire.
    pub connections_max_reauth_ms: u64,
    /// `authorizer`, `super_users`, `allow_everyone_if_no_acl_found`: ACL checks.
    pub authorizer: sluice_control::acl::AuthorizerConfig,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            sasl_mechanisms: vec![
                SaslMechanism::Scram(ScramMechanism::Sha256),
                SaslMechanism::Scram(ScramMechanism::Sha512),
            ],
            connections_max_reauth_ms: 0,
            authorizer: sluice_control::acl::AuthorizerConfig::default(),
        }
    }
}

/// How long a failed authentication waits before it is answered
/// (`connection.failed.authentication.delay.ms`, Kafka's default): a password guesser
/// gets one try per delay per connection.
pub const AUTH_FAILURE_DELAY_MS: u64 = 100;

/// Longest frame an unauthenticated client on a SASL listener may send (Kafka's
/// `sasl.server.max.receive.size`): before it proves who it is, a client cannot make the
/// broker hold more.
pub const SASL_UNAUTHENTICATED_FRAME_BYTES_MAX: usize = 512 * 1024;
