//! One connection's security state: the listener it came in on, who the client is, and
//! where it is in a SASL exchange. Owned by the connection (`kafka::conn`) and handed to
//! every request's dispatch; only that connection's tasks, on its shard, touch it, and no
//! borrow of it is held across an `.await`.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;

use super::sasl::SaslMechanism;
use super::scram::ScramPending;
use super::SecurityProtocol;

/// Kafka's principal for a client that has not authenticated.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Where a connection is in a SASL exchange.
#[derive(Debug, Clone, Default)]
pub(crate) enum SaslStage {
    /// No exchange under way (before the first, or after one ended).
    #[default]
    Idle,
    /// SaslHandshake chose `mechanism`; with `raw` (SaslHandshake v0) the tokens come as
    /// bare frames instead of SaslAuthenticate requests.
    Handshaken { mechanism: SaslMechanism, raw: bool },
    /// SCRAM: the server-first message went out.
    ScramFirst { pending: ScramPending, raw: bool },
}

#[derive(Debug)]
pub(crate) struct Session {
    /// Index into `Security::listeners`.
    pub listener: usize,
    pub protocol: SecurityProtocol,
    pub peer: Option<SocketAddr>,
    /// `User:<name>`: from the client certificate on an SSL listener, from SASL on a
    /// SASL one, else ANONYMOUS.
    principal: RefCell<Rc<str>>,
    /// On a SASL listener: whether the client has authenticated (a re-authentication
    /// under way keeps it so); always true elsewhere.
    authenticated: Cell<bool>,
    /// When the authenticated session ends (`connections.max.reauth.ms`).
    expires: Cell<Option<Instant>>,
    stage: RefCell<SaslStage>,
}

impl Session {
    pub fn new(
        listener: usize,
        protocol: SecurityProtocol,
        peer: Option<SocketAddr>,
        principal: Option<String>,
    ) -> Self {
        Session {
            listener,
            protocol,
            peer,
            principal: RefCell::new(principal.map_or_else(|| Rc::from(ANONYMOUS), Rc::from)),
            authenticated: Cell::new(!protocol.sasl()),
            expires: Cell::new(None),
            stage: RefCell::new(SaslStage::Idle),
        }
    }

    /// The client's principal as Kafka writes it (`User:CN=carol`, `User:ANONYMOUS`).
    pub fn principal(&self) -> Rc<str> {
        self.principal.borrow().clone()
    }

    /// The client's address for log lines (`?` if unknown).
    pub fn peer_text(&self) -> String {
        self.peer.map_or_else(|| "?".to_string(), |a| a.to_string())
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated.get()
    }

    /// Why request `api` may not run on this connection now, if it may not: before
    /// authentication on a SASL listener only ApiVersions, SaslHandshake and
    /// SaslAuthenticate are served; after the session expired, only a re-authentication.
    pub fn refusal(&self, api: ApiKey, now: Instant) -> Option<&'static str> {
        let sasl_api = matches!(
            api,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        );
        if sasl_api {
            return None;
        }
        if !self.authenticated.get() {
            return Some("request before SASL authentication");
        }
        match self.expires.get() {
            Some(at) if now >= at => {
                Some("SASL session expired (connections.max.reauth.ms) without re-authentication")
            }
            _ => None,
        }
    }

    /// The SASL exchange's stage, taken out (the caller puts the next one back).
    pub fn take_stage(&self) -> SaslStage {
        std::mem::take(&mut *self.stage.borrow_mut())
    }

    pub fn set_stage(&self, stage: SaslStage) {
        *self.stage.borrow_mut() = stage;
    }

    /// Whether the next frame is a bare SASL token (after SaslHandshake v0).
    pub fn expects_raw_token(&self) -> bool {
        matches!(
            &*self.stage.borrow(),
            SaslStage::Handshaken { raw: true, .. } | SaslStage::ScramFirst { raw: true, .. }
        )
    }

    /// A SASL exchange ended with `user` proven; `lifetime` bounds the session. A
    /// re-authentication must prove the same user (Kafka closes a connection whose
    /// principal would change): `Err` with the principal in force otherwise.
    pub fn authenticated_as(&self, user: &str, lifetime: Option<Duration>) -> Result<(), Rc<str>> {
        let principal: Rc<str> = Rc::from(format!("User:{user}"));
        if self.authenticated.get() && self.protocol.sasl() && *self.principal() != *principal {
            return Err(self.principal());
        }
        *self.principal.borrow_mut() = principal;
        self.authenticated.set(true);
        self.expires.set(lifetime.map(|d| Instant::now() + d));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sasl_session_is_gated_until_authenticated_and_again_once_expired() {
        let s = Session::new(1, SecurityProtocol::SaslPlaintext, None, None);
        let now = Instant::now();
        assert!(s.refusal(ApiKey::Produce, now).is_some());
        assert!(s.refusal(ApiKey::Metadata, now).is_some());
        assert!(s.refusal(ApiKey::SaslHandshake, now).is_none());
        assert!(s.refusal(ApiKey::ApiVersions, now).is_none());
        s.authenticated_as("alice", Some(Duration::from_secs(60)))
            .unwrap();
        assert_eq!(&*s.principal(), "User:alice");
        assert!(s.refusal(ApiKey::Produce, now).is_none());
        assert!(s
            .refusal(ApiKey::Produce, now + Duration::from_secs(61))
            .is_some());
        // Re-authentication keeps the user; another user is refused.
        assert!(s.authenticated_as("alice", None).is_ok());
        assert!(s.authenticated_as("mallory", None).is_err());
        assert_eq!(&*s.principal(), "User:alice");
    }

    #[test]
    fn other_listeners_are_never_gated() {
        let s = Session::new(0, SecurityProtocol::Plaintext, None, None);
        assert!(s.refusal(ApiKey::Produce, Instant::now()).is_none());
        assert_eq!(&*s.principal(), ANONYMOUS);
    }
}
