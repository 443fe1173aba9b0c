//! Who a client connection is, and how it proved it: the listeners and their security
//! protocols (`listener`), TLS on SSL and SASL_SSL listeners (`tls`), SASL settings
//! (`sasl`) and the SCRAM and PLAIN exchanges as pure functions (`scram`), and each
//! connection's security state (`session`).
//!
//! Invariants:
//! - a connection's listener is fixed when it is accepted and travels with it when another
//!   shard adopts it; every answer naming brokers (Metadata, DescribeCluster,
//!   FindCoordinator) uses that listener's advertised addresses;
//! - TLS is terminated on the shard that serves the connection, after any hand-off, so
//!   no decrypted byte crosses a thread;
//! - certificates and keys are read from files only outside the shards (at start and on
//!   `Server::reload_tls`); a shard only clones the current `Arc` of the TLS settings
//!   when it accepts a connection; connections keep the settings they began with;
//! - on a SASL listener a connection is served nothing but ApiVersions, SaslHandshake and
//!   SaslAuthenticate until it has authenticated, and its frames are bounded by
//!   `SASL_UNAUTHENTICATED_FRAME_BYTES_MAX` until then; an expired session
//!   (`connections.max.reauth.ms`) is closed at its next request but a re-authentication;
//! - secrets (keys, passwords, SASL payloads) are never formatted into logs or errors;
//! - with `[auth] authorizer` on, every request is checked against the ACLs of the
//!   shard's own metadata image (`authz`), as Kafka's authorizer checks each API;
//! - with `[cluster_tls]` the inter-broker listener it names is served with the node
//!   certificate and admits only clients whose certificate chains to the cluster CA
//!   (mutual TLS), other brokers reach this one there, presenting the node certificate,
//!   and CLUSTER_ACTION — the operation of every inter-broker request (follower fetches,
//!   OffsetForLeaderEpoch and ListOffsets as a replica, WriteTxnMarkers,
//!   AddPartitionsToTxn verification) — is refused on every other listener, whatever the
//!   ACLs say.

pub(crate) mod authz;
pub mod bootstrap;
pub mod listener;
pub mod sasl;
pub mod scram;
pub(crate) mod session;
pub mod tls;

use std::sync::Arc;

pub use sluice_control::tls::{BlockingStream, ClusterStream, ClusterTls, ClusterTlsSettings};
use sluice_control::{BrokerId, MetadataImage};

pub use listener::{ListenerConfig, SecurityProtocol, PLAINTEXT_LISTENER};
/// The credential types of the metadata log, for `tools` (which has no `sluice-control`).
pub use sluice_control::acl::{
    AclBinding, AclFilter, AclOperation, AclPermission, AuthorizerConfig, PatternType,
    ResourceType, ACLS_MAX, CLUSTER_RESOURCE_NAME,
};
pub use sluice_control::{
    ScramCredential, ScramMechanism, SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN,
};

/// The `tracing` target of authentication events (`RUST_LOG=sluice::auth=debug` shows
/// each client's principal as it is established).
pub const AUTH_LOG_TARGET: &str = "sluice::auth";

/// The node's security settings as the shards use them, built once at start.
#[derive(Debug)]
pub struct Security {
    /// Every Kafka listener: index 0 is `listen` (PLAINTEXT), then `[[listeners]]` in
    /// file order. A connection names its listener by this index.
    pub listeners: Vec<ListenerConfig>,
    /// Present when some listener uses TLS.
    pub tls: Option<Arc<tls::Tls>>,
    /// SASL mechanisms and session lifetime of SASL listeners.
    pub auth: sasl::AuthSettings,
    /// `[cluster_tls]`: the node certificate and the inter-broker listener.
    pub cluster: Option<ClusterSecurity>,
}

/// `[cluster_tls]` as the server config holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTlsConfig {
    pub files: sluice_control::tls::ClusterTlsSettings,
    /// The inter-broker listener's name (`listener`): an SSL listener every broker of the
    /// cluster has. `None` only on a node without the broker role.
    pub listener: Option<String>,
}

/// `[cluster_tls]` on a broker, as the shards use it.
#[derive(Debug)]
pub struct ClusterSecurity {
    pub tls: Arc<ClusterTls>,
    /// Index of the inter-broker listener in `Security::listeners`.
    pub listener: usize,
}

impl Security {
    /// The listener a connection was accepted on (index 0 if out of range, which the
    /// accept loops never produce).
    pub fn listener(&self, index: usize) -> &ListenerConfig {
        self.listeners.get(index).unwrap_or(&self.listeners[0])
    }

    /// `[cluster_tls]`'s certificates, for this broker's connections to other brokers.
    pub fn cluster_tls(&self) -> Option<&Arc<ClusterTls>> {
        self.cluster.as_ref().map(|c| &c.tls)
    }

    /// Whether a connection on `listener` may be granted CLUSTER_ACTION (the operation of
    /// inter-broker requests): with `[cluster_tls]` only on the inter-broker listener.
    pub fn cluster_action_possible(&self, listener: usize) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.listener == listener)
    }

    /// Where this broker reaches `broker` for its own Kafka requests (follower fetches,
    /// transaction markers): its inter-broker listener with `[cluster_tls]`, else its
    /// first listener; `None` if the image knows no such listener of it.
    pub fn peer_address(&self, image: &MetadataImage, broker: BrokerId) -> Option<(String, u16)> {
        let listeners = &image.broker(broker)?.listeners;
        let listener = match &self.cluster {
            Some(c) => {
                let name = &self.listener(c.listener).name;
                listeners.iter().find(|l| &l.name == name)
            }
            None => listeners.first(),
        }?;
        Some((listener.host.clone(), listener.port))
    }
}
