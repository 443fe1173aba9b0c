//! Authorization of one request: who asks (the connection's principal and address), the
//! ACLs of this shard's metadata image, and `[auth]`'s authorizer settings, put together
//! once per request by `dispatch` and asked by each handler (the decision itself is
//! `sluice_control::acl::authorize`, a pure function). No cross-thread call: the image is
//! the shard's own `Arc`. With the authorizer off every question is answered yes without
//! touching the image.
//!
//! Denials are logged at DEBUG under `sluice::auth` (`RUST_LOG=info,sluice::auth=debug`),
//! as Kafka's `kafka.authorizer.logger` does.

use std::rc::Rc;
use std::sync::Arc;

use sluice_control::acl::{
    self, AclOperation, AuthorizerConfig, Requester, ResourceType, CLUSTER_RESOURCE_NAME,
};
use sluice_control::MetadataImage;

use super::session::Session;
use super::{Security, AUTH_LOG_TARGET};

/// What the authorizer answers `authorized_operations` with when the client did not ask
/// (Kafka's `Integer.MIN_VALUE`).
pub const OPERATIONS_NOT_ASKED: i32 = i32::MIN;

/// The message of an authorization error (Kafka's).
pub const AUTHORIZATION_FAILED: &str = "Authorization failed.";

/// One request's authorization context.
pub(crate) struct Authz<'a> {
    cfg: &'a AuthorizerConfig,
    /// False on a connection that may never get CLUSTER_ACTION: with `[cluster_tls]`,
    /// any but the inter-broker listener (`Security::cluster_action_possible`).
    cluster_action: bool,
    /// `None` with the authorizer off.
    image: Option<Arc<MetadataImage>>,
    principal: Rc<str>,
    host: Option<String>,
}

impl<'a> Authz<'a> {
    pub fn new(
        security: &'a Security,
        image: impl FnOnce() -> Arc<MetadataImage>,
        session: &Session,
    ) -> Self {
        let cfg = &security.auth.authorizer;
        let enabled = cfg.enabled;
        Authz {
            cfg,
            cluster_action: security.cluster_action_possible(session.listener),
            image: enabled.then(image),
            principal: session.principal(),
            host: if enabled {
                session.peer.map(|a| a.ip().to_string())
            } else {
                None
            },
        }
    }

    /// The requester's principal (`User:alice`), for log lines.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    fn who(&self) -> Requester<'_> {
        Requester {
            principal: &self.principal,
            host: self.host.as_deref(),
        }
    }

    /// Whether the requester may do `op` on `(kind, name)`.
    pub fn allows(&self, op: AclOperation, kind: ResourceType, name: &str) -> bool {
        if op == AclOperation::ClusterAction && !self.cluster_action {
            tracing::debug!(target: AUTH_LOG_TARGET, principal = %self.principal,
                operation = op.name(), "denied: cluster_tls admits inter-broker requests only on its listener");
            return false;
        }
        let Some(image) = &self.image else {
            return true;
        };
        let ok = acl::authorize(image.acls(), self.cfg, self.who(), op, kind, name);
        if !ok {
            tracing::debug!(target: AUTH_LOG_TARGET, principal = %self.principal,
                host = self.host.as_deref().unwrap_or("?"), operation = op.name(),
                resource = kind.name(), name, "denied");
        }
        ok
    }

    pub fn topic(&self, op: AclOperation, name: &str) -> bool {
        self.allows(op, ResourceType::Topic, name)
    }

    pub fn group(&self, op: AclOperation, name: &str) -> bool {
        self.allows(op, ResourceType::Group, name)
    }

    pub fn cluster(&self, op: AclOperation) -> bool {
        self.allows(op, ResourceType::Cluster, CLUSTER_RESOURCE_NAME)
    }

    pub fn transactional_id(&self, op: AclOperation, id: &str) -> bool {
        self.allows(op, ResourceType::TransactionalId, id)
    }

    /// Kafka's `authorizeByResourceType`: whether `op` is allowed on some resource of
    /// `kind` (an idempotent producer without IDEMPOTENT_WRITE that may write a topic).
    pub fn any(&self, op: AclOperation, kind: ResourceType) -> bool {
        let Some(image) = &self.image else {
            return true;
        };
        acl::authorize_any(image.acls(), self.cfg, self.who(), op, kind)
    }

    /// `authorized_operations` for `(kind, name)`: the bit field when `asked`, else
    /// Kafka's "not asked" value. With the authorizer off every operation of the type.
    pub fn operations(&self, asked: bool, kind: ResourceType, name: &str) -> i32 {
        if !asked {
            return OPERATIONS_NOT_ASKED;
        }
        let bits = match &self.image {
            Some(image) => {
                acl::authorized_operations(image.acls(), self.cfg, self.who(), kind, name)
            }
            None => kind
                .operations()
                .iter()
                .fold(0, |bits, op| bits | (1 << op.id())),
        };
        if self.cluster_action {
            bits
        } else {
            bits & !(1 << AclOperation::ClusterAction.id())
        }
    }
}
