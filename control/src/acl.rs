//! Kafka's ACL model and the authorizer's decision, as pure functions.
//!
//! An ACL binding (`AclBinding`) is a resource pattern (type, name, LITERAL or PREFIXED;
//! the LITERAL name `*` matches every resource of its type) and an entry (principal such as
//! `User:alice` or `User:*`, host `*` or an address, operation, ALLOW or DENY). Bindings
//! live in the metadata log (`Record::AccessControlEntry` / `RemoveAccessControlEntry`)
//! and in the image as an [`Acls`] set indexed for look-ups by resource.
//!
//! [`authorize`] is Kafka's `StandardAuthorizer` decision: super users may do everything;
//! a matching DENY (same operation or ALL) refuses; a matching ALLOW (same operation, ALL,
//! or one that implies it: READ, WRITE, DELETE and ALTER imply DESCRIBE, ALTER_CONFIGS
//! implies DESCRIBE_CONFIGS) permits; a resource no ACL names at all is permitted only
//! with `allow_everyone_if_no_acl_found`. Filters ([`AclFilter`]) select bindings for
//! DescribeAcls and DeleteAcls with Kafka's ANY and MATCH semantics.
//!
//! Ids are Kafka's wire values (`ResourceType`, `PatternType`, `AclOperation`,
//! `AclPermissionType`); every string is bounded (`ACL_STRING_BYTES_MAX`) and the set by
//! `ACLS_MAX`.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

/// Most ACL bindings the cluster stores (each is in every image and snapshot, and is
/// indexed on every broker).
pub const ACLS_MAX: usize = 10_000;
/// Longest resource name, principal or host in a binding.
pub const ACL_STRING_BYTES_MAX: usize = 1024;
/// The one name a CLUSTER resource has (Kafka's `kafka-cluster`).
pub const CLUSTER_RESOURCE_NAME: &str = "kafka-cluster";
/// The LITERAL name and host that match everything.
pub const WILDCARD: &str = "*";

/// A Kafka enum of the ACL model: its variants with their wire ids and names. Unknown ids
/// read as `Unknown` (Kafka's `fromCode`); names parse case-insensitively.
macro_rules! kafka_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $id:literal $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($variant,)*
        }

        impl $name {
            const TABLE: &'static [($name, i8, &'static str)] = &[$(($name::$variant, $id, $text),)*];

            pub fn from_id(id: i8) -> $name {
                Self::TABLE
                    .iter()
                    .find(|t| t.1 == id)
                    .map_or($name::Unknown, |t| t.0)
            }
            pub fn id(self) -> i8 {
                Self::TABLE.iter().find(|t| t.0 == self).map_or(0, |t| t.1)
            }
            pub fn name(self) -> &'static str {
                Self::TABLE
                    .iter()
                    .find(|t| t.0 == self)
                    .map_or("UNKNOWN", |t| t.2)
            }
            /// Kafka's name, case and `-`/`_` ignored (`describe-configs`, `Prefixed`).
            pub fn parse(name: &str) -> Option<$name> {
                let squash = |s: &str| {
                    s.chars()
                        .filter(|c| *c != '_' && *c != '-')
                        .collect::<String>()
                        .to_ascii_uppercase()
                };
                let want = squash(name);
                Self::TABLE.iter().find(|t| squash(t.2) == want).map(|t| t.0)
            }
        }
    };
}

kafka_enum!(
    /// Kafka's `ResourceType` (ids on the wire).
    ResourceType {
        Unknown = 0 "UNKNOWN",
        Any = 1 "ANY",
        Topic = 2 "TOPIC",
        Group = 3 "GROUP",
        Cluster = 4 "CLUSTER",
        TransactionalId = 5 "TRANSACTIONAL_ID",
        DelegationToken = 6 "DELEGATION_TOKEN",
        User = 7 "USER",
    }
);

impl ResourceType {
    /// Whether a binding may name this type (the four the authorizer checks).
    fn storable(self) -> bool {
        matches!(
            self,
            ResourceType::Topic
                | ResourceType::Group
                | ResourceType::Cluster
                | ResourceType::TransactionalId
        )
    }
    /// The operations Kafka defines on this type (what `authorized_operations` reports).
    pub fn operations(self) -> &'static [AclOperation] {
        use AclOperation::*;
        match self {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Delete,
                Alter,
                Describe,
                DescribeConfigs,
                AlterConfigs,
            ],
            ResourceType::Group => &[Read, Describe, Delete],
            ResourceType::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
            ResourceType::TransactionalId => &[Describe, Write],
            _ => &[],
        }
    }
}

kafka_enum!(
    /// Kafka's `PatternType` (`Any` and `Match` are for filters only: any pattern type
    /// with names compared exactly, and the bindings that apply to the named resource).
    PatternType {
        Unknown = 0 "UNKNOWN",
        Any = 1 "ANY",
        Match = 2 "MATCH",
        Literal = 3 "LITERAL",
        Prefixed = 4 "PREFIXED",
    }
);

kafka_enum!(
    /// Kafka's `AclOperation`.
    AclOperation {
        Unknown = 0 "UNKNOWN",
        Any = 1 "ANY",
        All = 2 "ALL",
        Read = 3 "READ",
        Write = 4 "WRITE",
        Create = 5 "CREATE",
        Delete = 6 "DELETE",
        Alter = 7 "ALTER",
        Describe = 8 "DESCRIBE",
        ClusterAction = 9 "CLUSTER_ACTION",
        DescribeConfigs = 10 "DESCRIBE_CONFIGS",
        AlterConfigs = 11 "ALTER_CONFIGS",
        IdempotentWrite = 12 "IDEMPOTENT_WRITE",
        CreateTokens = 13 "CREATE_TOKENS",
        DescribeTokens = 14 "DESCRIBE_TOKENS",
    }
);

impl AclOperation {
    /// Whether an ALLOW for `self` permits `asked` (Kafka: ALL permits everything; READ,
    /// WRITE, DELETE, ALTER permit DESCRIBE; ALTER_CONFIGS permits DESCRIBE_CONFIGS).
    fn allows(self, asked: AclOperation) -> bool {
        use AclOperation::*;
        self == asked
            || self == All
            || (asked == Describe && matches!(self, Read | Write | Delete | Alter))
            || (asked == DescribeConfigs && self == AlterConfigs)
    }
}

kafka_enum!(
    /// Kafka's `AclPermissionType`.
    AclPermission {
        Unknown = 0 "UNKNOWN",
        Any = 1 "ANY",
        Deny = 2 "DENY",
        Allow = 3 "ALLOW",
    }
);

/// One stored ACL (Kafka's `AclBinding`): a resource pattern and an entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

impl AclBinding {
    /// Why this binding cannot be stored, if it cannot (Kafka's `validateNewAcl`, with the
    /// CLUSTER name check of its `AclApis`; plus our bounds).
    pub fn problem(&self) -> Option<String> {
        if !self.resource_type.storable() {
            return Some(format!(
                "invalid resource type {}",
                self.resource_type.name()
            ));
        }
        if !matches!(self.pattern, PatternType::Literal | PatternType::Prefixed) {
            return Some(format!("invalid pattern type {}", self.pattern.name()));
        }
        if matches!(self.operation, AclOperation::Unknown | AclOperation::Any) {
            return Some(format!("invalid operation {}", self.operation.name()));
        }
        if !matches!(self.permission, AclPermission::Allow | AclPermission::Deny) {
            return Some(format!(
                "invalid permission type {}",
                self.permission.name()
            ));
        }
        if self.resource_name.is_empty() {
            return Some("resource name should not be empty".to_string());
        }
        for (what, s) in [
            ("resource name", &self.resource_name),
            ("principal", &self.principal),
            ("host", &self.host),
        ] {
            if s.len() > ACL_STRING_BYTES_MAX {
                return Some(format!(
                    "{what} of {} bytes (at most {ACL_STRING_BYTES_MAX})",
                    s.len()
                ));
            }
        }
        if self.resource_type == ResourceType::Cluster
            && self.resource_name != CLUSTER_RESOURCE_NAME
        {
            return Some(format!(
                "the only valid name for the CLUSTER resource is {CLUSTER_RESOURCE_NAME}"
            ));
        }
        if !self.principal.contains(':') || self.principal.starts_with(':') {
            return Some(format!(
                "could not parse principal {:?} (no colon separating type and name)",
                self.principal
            ));
        }
        if self.host != WILDCARD && self.host.parse::<IpAddr>().is_err() {
            return Some(format!("host {:?} is neither * nor an address", self.host));
        }
        None
    }

    fn entry(&self) -> AclEntry {
        AclEntry {
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: self.operation,
            permission: self.permission,
        }
    }
}

/// A selection of bindings (Kafka's `AclBindingFilter`): `None` strings match anything,
/// `Any` enums match every value, `PatternType::Match` selects the bindings that apply to
/// the named resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    pub pattern: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

impl AclFilter {
    /// Why this filter selects nothing definite, if so (Kafka's `findIndefiniteField`: an
    /// UNKNOWN enum), or a string over the bound.
    pub fn problem(&self) -> Option<String> {
        if self.resource_type == ResourceType::Unknown {
            return Some("unknown resource type".to_string());
        }
        if self.pattern == PatternType::Unknown {
            return Some("unknown pattern type".to_string());
        }
        if self.operation == AclOperation::Unknown {
            return Some("unknown operation".to_string());
        }
        if self.permission == AclPermission::Unknown {
            return Some("unknown permission type".to_string());
        }
        for s in [&self.resource_name, &self.principal, &self.host]
            .into_iter()
            .flatten()
        {
            if s.len() > ACL_STRING_BYTES_MAX {
                return Some(format!(
                    "a string of {} bytes (at most {ACL_STRING_BYTES_MAX})",
                    s.len()
                ));
            }
        }
        None
    }

    /// Whether `b` is selected (Kafka's `ResourcePatternFilter.matches` and
    /// `AccessControlEntryFilter.matches`).
    pub fn matches(&self, b: &AclBinding) -> bool {
        self.matches_pattern(b) && self.matches_entry(b)
    }

    fn matches_pattern(&self, b: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != b.resource_type {
            return false;
        }
        if !matches!(self.pattern, PatternType::Any | PatternType::Match)
            && self.pattern != b.pattern
        {
            return false;
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        if self.pattern == PatternType::Any || self.pattern == b.pattern {
            return *name == b.resource_name;
        }
        match b.pattern {
            PatternType::Literal => *name == b.resource_name || b.resource_name == WILDCARD,
            PatternType::Prefixed => name.starts_with(&b.resource_name),
            _ => false,
        }
    }

    fn matches_entry(&self, b: &AclBinding) -> bool {
        self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && (self.operation == AclOperation::Any || self.operation == b.operation)
            && (self.permission == AclPermission::Any || self.permission == b.permission)
    }
}

/// A binding's entry as the index keeps it under its resource.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AclEntry {
    principal: String,
    host: String,
    operation: AclOperation,
    permission: AclPermission,
}

/// The cluster's ACL bindings, with an index by resource for [`authorize`].
#[derive(Debug, Clone, Default)]
pub struct Acls {
    bindings: BTreeSet<AclBinding>,
    /// LITERAL bindings by type and name (`*` included as a name); looked up by `&str`, so
    /// a decision allocates nothing.
    literal: HashMap<ResourceType, HashMap<String, Vec<AclEntry>>>,
    /// PREFIXED bindings by type and prefix.
    prefixed: HashMap<ResourceType, HashMap<String, Vec<AclEntry>>>,
    /// Longest prefix of each type, so a look-up tries no longer one.
    prefix_bytes_max: HashMap<ResourceType, usize>,
}

impl PartialEq for Acls {
    fn eq(&self, other: &Self) -> bool {
        self.bindings == other.bindings
    }
}
impl Eq for Acls {}

impl Acls {
    pub fn len(&self) -> usize {
        self.bindings.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }
    pub fn contains(&self, b: &AclBinding) -> bool {
        self.bindings.contains(b)
    }
    /// Every binding, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = &AclBinding> {
        self.bindings.iter()
    }
    /// The bindings `filter` selects.
    pub fn matching<'a>(&'a self, filter: &'a AclFilter) -> impl Iterator<Item = &'a AclBinding> {
        self.bindings.iter().filter(|b| filter.matches(b))
    }

    /// Adds `b`; `false` if it was there already.
    pub fn insert(&mut self, b: AclBinding) -> bool {
        if self.bindings.contains(&b) {
            return false;
        }
        let map = match b.pattern {
            PatternType::Prefixed => {
                let longest = self.prefix_bytes_max.entry(b.resource_type).or_default();
                *longest = (*longest).max(b.resource_name.len());
                &mut self.prefixed
            }
            _ => &mut self.literal,
        };
        map.entry(b.resource_type)
            .or_default()
            .entry(b.resource_name.clone())
            .or_default()
            .push(b.entry());
        self.bindings.insert(b);
        true
    }

    /// Removes `b`; `false` if it was not there.
    pub fn remove(&mut self, b: &AclBinding) -> bool {
        if !self.bindings.remove(b) {
            return false;
        }
        let map = match b.pattern {
            PatternType::Prefixed => &mut self.prefixed,
            _ => &mut self.literal,
        };
        if let Some(names) = map.get_mut(&b.resource_type) {
            if let Some(v) = names.get_mut(&b.resource_name) {
                let e = b.entry();
                v.retain(|x| *x != e);
                if v.is_empty() {
                    names.remove(&b.resource_name);
                }
            }
        }
        true
    }

    /// Every entry that applies to the resource `(kind, name)`: its LITERAL name, the
    /// LITERAL `*`, and every PREFIXED pattern it starts with.
    fn entries<'a>(
        &'a self,
        kind: ResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a AclEntry> + 'a {
        let literal = self.literal.get(&kind);
        let lookup = move |n: &str| literal.and_then(|m| m.get(n)).into_iter().flatten();
        let wildcard = (name != WILDCARD).then_some(WILDCARD);
        let prefixed = self.prefixed.get(&kind);
        let longest = self.prefix_bytes_max.get(&kind).copied().unwrap_or(0);
        let prefixes = (1..=name.len().min(longest))
            .filter(move |i| name.is_char_boundary(*i))
            .filter_map(move |end| prefixed.and_then(|m| m.get(&name[..end])))
            .flatten();
        lookup(name)
            .chain(wildcard.into_iter().flat_map(lookup))
            .chain(prefixes)
    }
}

/// `[auth]`'s authorizer settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerConfig {
    /// `authorizer`: check every request against the ACLs.
    pub enabled: bool,
    /// `super.users`: principals (`User:admin`) allowed everything.
    pub super_users: Vec<String>,
    /// `allow.everyone.if.no.acl.found`: a resource no ACL names is open to all.
    pub allow_everyone_if_no_acl_found: bool,
}

/// Who asks, from where.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// `User:alice`.
    pub principal: &'a str,
    /// The client's address as text (`127.0.0.1`), `None` if unknown.
    pub host: Option<&'a str>,
}

/// Kafka's authorization decision for `op` on the resource `(kind, name)`.
pub fn authorize(
    acls: &Acls,
    cfg: &AuthorizerConfig,
    who: Requester<'_>,
    op: AclOperation,
    kind: ResourceType,
    name: &str,
) -> bool {
    if !cfg.enabled || cfg.super_users.iter().any(|s| s == who.principal) {
        return true;
    }
    let mut any = false;
    let mut allowed = false;
    for e in acls.entries(kind, name) {
        any = true;
        if !(principal_matches(&e.principal, who.principal) && host_matches(&e.host, who.host)) {
            continue;
        }
        match e.permission {
            AclPermission::Deny if e.operation == op || e.operation == AclOperation::All => {
                return false;
            }
            AclPermission::Allow if e.operation.allows(op) => allowed = true,
            _ => {}
        }
    }
    allowed || (!any && cfg.allow_everyone_if_no_acl_found)
}

/// Whether an ACL's principal (`User:alice`, or `User:*` for every principal of the type)
/// names `who`.
fn principal_matches(acl: &str, who: &str) -> bool {
    if acl == who {
        return true;
    }
    match (acl.strip_suffix('*'), who.split_once(':')) {
        (Some(type_and_colon), Some((kind, _))) => type_and_colon.strip_suffix(':') == Some(kind),
        _ => false,
    }
}

/// Whether an ACL's host (`*` or an address) names the client's.
fn host_matches(acl: &str, who: Option<&str>) -> bool {
    acl == WILDCARD || Some(acl) == who
}

/// Kafka's `authorizeByResourceType` (an idempotent producer without IDEMPOTENT_WRITE may
/// still write if it may write some topic): whether an ALLOW for `op` of `who` names some
/// resource of `kind` while no DENY of `who` for it names every such resource (the LITERAL
/// `*`). With no ACL of `kind` at all, `allow_everyone_if_no_acl_found` decides.
pub fn authorize_any(
    acls: &Acls,
    cfg: &AuthorizerConfig,
    who: Requester<'_>,
    op: AclOperation,
    kind: ResourceType,
) -> bool {
    if !cfg.enabled || cfg.super_users.iter().any(|s| s == who.principal) {
        return true;
    }
    let applies = |b: &AclBinding| {
        principal_matches(&b.principal, who.principal) && host_matches(&b.host, who.host)
    };
    let mut any_of_kind = false;
    let mut allowed = false;
    for b in acls.iter().filter(|b| b.resource_type == kind) {
        any_of_kind = true;
        if !applies(b) {
            continue;
        }
        let denies = b.operation == op || b.operation == AclOperation::All;
        match b.permission {
            AclPermission::Deny
                if denies && b.pattern == PatternType::Literal && b.resource_name == WILDCARD =>
            {
                return false;
            }
            AclPermission::Allow if b.operation.allows(op) => allowed = true,
            _ => {}
        }
    }
    allowed || (!any_of_kind && cfg.allow_everyone_if_no_acl_found)
}

/// Kafka's `authorized_operations` bit field: bit `op.id()` set for each of `kind`'s
/// operations `who` may do on `(kind, name)`.
pub fn authorized_operations(
    acls: &Acls,
    cfg: &AuthorizerConfig,
    who: Requester<'_>,
    kind: ResourceType,
    name: &str,
) -> i32 {
    kind.operations()
        .iter()
        .filter(|op| authorize(acls, cfg, who, **op, kind, name))
        .fold(0i32, |bits, op| bits | (1 << op.id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(
        kind: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        op: AclOperation,
        permission: AclPermission,
    ) -> AclBinding {
        AclBinding {
            resource_type: kind,
            resource_name: name.to_string(),
            pattern,
            principal: principal.to_string(),
            host: "*".to_string(),
            operation: op,
            permission,
        }
    }

    fn on() -> AuthorizerConfig {
        AuthorizerConfig {
            enabled: true,
            super_users: vec!["User:admin".into()],
            allow_everyone_if_no_acl_found: false,
        }
    }

    fn who(p: &str) -> Requester<'_> {
        Requester {
            principal: p,
            host: Some("10.0.0.1"),
        }
    }

    use AclOperation as Op;
    use AclPermission::{Allow, Deny};
    use PatternType::{Literal, Prefixed};
    use ResourceType::{Cluster, Group, Topic};

    #[test]
    fn deny_wins_over_allow_and_no_acl_means_denied() {
        let mut acls = Acls::default();
        acls.insert(binding(Topic, "t", Literal, "User:a", Op::All, Allow));
        let cfg = on();
        assert!(authorize(&acls, &cfg, who("User:a"), Op::Write, Topic, "t"));
        assert!(!authorize(
            &acls,
            &cfg,
            who("User:b"),
            Op::Write,
            Topic,
            "t"
        ));
        assert!(!authorize(
            &acls,
            &cfg,
            who("User:a"),
            Op::Write,
            Topic,
            "u"
        ));
        acls.insert(binding(Topic, "*", Literal, "User:*", Op::Write, Deny));
        assert!(!authorize(
            &acls,
            &cfg,
            who("User:a"),
            Op::Write,
            Topic,
            "t"
        ));
        assert!(authorize(&acls, &cfg, who("User:a"), Op::Read, Topic, "t"));
        assert!(authorize(
            &acls,
            &cfg,
            who("User:admin"),
            Op::Write,
            Topic,
            "t"
        ));
        let open = AuthorizerConfig {
            allow_everyone_if_no_acl_found: true,
            ..on()
        };
        assert!(authorize(&acls, &open, who("User:b"), Op::Read, Group, "g"));
        // The topic has ACLs (for someone else): not open.
        assert!(!authorize(
            &acls,
            &open,
            who("User:b"),
            Op::Read,
            Topic,
            "t"
        ));
    }

    #[test]
    fn implied_operations_and_prefixes_and_hosts() {
        let mut acls = Acls::default();
        acls.insert(binding(Topic, "pay", Prefixed, "User:a", Op::Read, Allow));
        acls.insert(binding(
            Cluster,
            CLUSTER_RESOURCE_NAME,
            Literal,
            "User:a",
            Op::AlterConfigs,
            Allow,
        ));
        let cfg = on();
        let a = who("User:a");
        assert!(authorize(&acls, &cfg, a, Op::Read, Topic, "payments"));
        assert!(authorize(&acls, &cfg, a, Op::Describe, Topic, "payments"));
        assert!(!authorize(&acls, &cfg, a, Op::Write, Topic, "payments"));
        assert!(!authorize(&acls, &cfg, a, Op::Read, Topic, "pa"));
        let c = CLUSTER_RESOURCE_NAME;
        assert!(authorize(&acls, &cfg, a, Op::DescribeConfigs, Cluster, c));
        assert!(!authorize(&acls, &cfg, a, Op::Describe, Cluster, c));
        // DENY READ does not deny DESCRIBE.
        acls.insert(binding(
            Topic,
            "payments",
            Literal,
            "User:a",
            Op::Read,
            Deny,
        ));
        assert!(!authorize(&acls, &cfg, a, Op::Read, Topic, "payments"));
        assert!(authorize(&acls, &cfg, a, Op::Describe, Topic, "payments"));
        let mut hosted = binding(Group, "g", Literal, "User:a", Op::Read, Allow);
        hosted.host = "10.0.0.2".into();
        acls.insert(hosted.clone());
        assert!(!authorize(&acls, &cfg, a, Op::Read, Group, "g"));
        let from2 = Requester {
            principal: "User:a",
            host: Some("10.0.0.2"),
        };
        assert!(authorize(&acls, &cfg, from2, Op::Read, Group, "g"));
        assert!(acls.remove(&hosted));
        assert!(!authorize(&acls, &cfg, from2, Op::Read, Group, "g"));
        let bits = authorized_operations(&acls, &cfg, a, Topic, "payx");
        assert_eq!(bits, (1 << Op::Read.id()) | (1 << Op::Describe.id()));
    }

    #[test]
    fn wildcard_principals_match_their_type_only() {
        assert!(principal_matches("User:*", "User:alice"));
        assert!(principal_matches("User:alice", "User:alice"));
        assert!(!principal_matches("User:*", "Group:ops"));
        assert!(!principal_matches("User:ali*", "User:alice"));
        assert!(!principal_matches("User:bob", "User:alice"));
        assert!(host_matches("*", None) && host_matches("10.0.0.1", Some("10.0.0.1")));
        assert!(!host_matches("10.0.0.1", None));
    }

    #[test]
    fn filters_follow_kafka_any_and_match() {
        let lit = binding(Topic, "payments", Literal, "User:a", Op::Read, Allow);
        let star = binding(Topic, "*", Literal, "User:a", Op::Read, Allow);
        let pre = binding(Topic, "pay", Prefixed, "User:b", Op::Write, Deny);
        let mut acls = Acls::default();
        for b in [&lit, &star, &pre] {
            assert!(acls.insert(b.clone()));
        }
        assert!(!acls.insert(lit.clone()));
        let f = |pattern, name: Option<&str>| AclFilter {
            resource_type: ResourceType::Any,
            resource_name: name.map(str::to_string),
            pattern,
            principal: None,
            host: None,
            operation: Op::Any,
            permission: AclPermission::Any,
        };
        let count = |f: &AclFilter| acls.matching(f).count();
        assert_eq!(count(&f(PatternType::Any, None)), 3);
        assert_eq!(count(&f(PatternType::Any, Some("payments"))), 1);
        assert_eq!(count(&f(PatternType::Match, Some("payments"))), 3);
        assert_eq!(count(&f(PatternType::Match, Some("other"))), 1);
        assert_eq!(count(&f(Literal, None)), 2);
        assert_eq!(count(&f(Prefixed, Some("pay"))), 1);
        let mut by_principal = f(PatternType::Any, None);
        by_principal.principal = Some("User:b".into());
        assert_eq!(count(&by_principal), 1);
        assert!(f(PatternType::Unknown, None).problem().is_some());
    }

    #[test]
    fn bad_bindings_are_refused() {
        let good = binding(Topic, "t", Literal, "User:a", Op::Read, Allow);
        assert_eq!(good.problem(), None);
        let bad = [
            AclBinding {
                resource_type: ResourceType::Any,
                ..good.clone()
            },
            AclBinding {
                pattern: PatternType::Match,
                ..good.clone()
            },
            AclBinding {
                operation: Op::Any,
                ..good.clone()
            },
            AclBinding {
                permission: AclPermission::Unknown,
                ..good.clone()
            },
            AclBinding {
                principal: "alice".into(),
                ..good.clone()
            },
            AclBinding {
                host: "not-an-ip".into(),
                ..good.clone()
            },
            AclBinding {
                resource_name: String::new(),
                ..good.clone()
            },
            AclBinding {
                resource_name: "x".repeat(ACL_STRING_BYTES_MAX + 1),
                ..good.clone()
            },
            binding(Cluster, "other", Literal, "User:a", Op::Alter, Allow),
        ];
        for b in bad {
            assert!(b.problem().is_some(), "{b:?}");
        }
        for id in -1..20 {
            let op = AclOperation::from_id(id);
            assert!(op == AclOperation::Unknown || op.id() == id);
        }
        assert_eq!(
            AclOperation::parse("describe-configs"),
            Some(Op::DescribeConfigs)
        );
    }
}
