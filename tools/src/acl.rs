//! `sluice acl add | remove | list`: ACL bindings over the Kafka protocol (CreateAcls,
//! DeleteAcls, DescribeAcls) against any broker, with `kafka-acls.sh`'s words:
//! `--allow-principal` / `--deny-principal`, `--host`, `--operation`, one of `--topic`,
//! `--group`, `--cluster`, `--transactional-id`, and `--resource-pattern-type`.
//!
//! On a PLAINTEXT listener the broker sees `User:ANONYMOUS` from this host; with
//! `--sasl-user` (a SASL listener) that user. The principal needs ALTER (add, remove) or
//! DESCRIBE (list) on the cluster, as a super user or through an ACL (docs/security.md).

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;
use sluice_net::security::{
    AclOperation, AclPermission, PatternType, ResourceType, CLUSTER_RESOURCE_NAME,
};

use crate::bench::wire::error_name;

#[derive(Debug, Args)]
pub struct AclArgs {
    /// A broker of the cluster (its PLAINTEXT listener).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
    #[command(flatten)]
    pub sasl: crate::sasl_login::SaslArgs,
    #[command(subcommand)]
    pub command: AclCommand,
}

/// The resource an ACL names (at most one of these).
#[derive(Debug, Args, Default)]
pub struct ResourceArgs {
    #[arg(long, value_name = "NAME")]
    pub topic: Option<String>,
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    #[arg(long, value_name = "ID")]
    pub transactional_id: Option<String>,
    /// The cluster (Kafka's `kafka-cluster` resource).
    #[arg(long)]
    pub cluster: bool,
    /// LITERAL or PREFIXED (add: default LITERAL); for remove and list also ANY or MATCH
    /// (default ANY).
    #[arg(long, value_name = "TYPE")]
    pub resource_pattern_type: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Add ACLs: each principal × operation on the resource.
    Add {
        #[arg(long, value_name = "PRINCIPAL")]
        allow_principal: Vec<String>,
        #[arg(long, value_name = "PRINCIPAL")]
        deny_principal: Vec<String>,
        /// `*` (any host) or a client address.
        #[arg(long, default_value = "*")]
        host: String,
        /// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION,
        /// DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE or ALL (repeatable).
        #[arg(long, required = true)]
        operation: Vec<String>,
        #[command(flatten)]
        resource: ResourceArgs,
    },
    /// Remove the ACLs that match (what is not given matches anything).
    Remove {
        #[arg(long)]
        principal: Option<String>,
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        operation: Option<String>,
        /// ALLOW or DENY.
        #[arg(long)]
        permission: Option<String>,
        #[command(flatten)]
        resource: ResourceArgs,
    },
    /// List the ACLs that match (what is not given matches anything).
    List {
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        resource: ResourceArgs,
    },
}

pub fn main(args: AclArgs) -> Result<()> {
    let mut conn = args.sasl.connect(&args.bootstrap)?;
    match args.command {
        AclCommand::Add {
            allow_principal,
            deny_principal,
            host,
            operation,
            resource,
        } => {
            let (kind, name) = resource_of(&resource)?.ok_or_else(|| {
                anyhow!("name the resource: --topic, --group, --transactional-id or --cluster")
            })?;
            let pattern = pattern(&resource, PatternType::Literal)?;
            if !matches!(pattern, PatternType::Literal | PatternType::Prefixed) {
                bail!("--resource-pattern-type: add takes LITERAL or PREFIXED");
            }
            let principals = allow_principal
                .iter()
                .map(|p| (p, AclPermission::Allow))
                .chain(deny_principal.iter().map(|p| (p, AclPermission::Deny)));
            let mut creations = Vec::new();
            for (principal, permission) in principals {
                for op in &operation {
                    creations.push(
                        AclCreation::default()
                            .with_resource_type(kind.id())
                            .with_resource_name(StrBytes::from_string(name.clone()))
                            .with_resource_pattern_type(pattern.id())
                            .with_principal(StrBytes::from_string(principal.clone()))
                            .with_host(StrBytes::from_string(host.clone()))
                            .with_operation(operation_of(op)?.id())
                            .with_permission_type(permission.id()),
                    );
                }
            }
            if creations.is_empty() {
                bail!("name a principal: --allow-principal or --deny-principal");
            }
            let count = creations.len();
            let resp = conn.send(&CreateAclsRequest::default().with_creations(creations))?;
            for r in &resp.results {
                if r.error_code != 0 {
                    bail!(
                        "{} {}",
                        error_name(r.error_code),
                        r.error_message.as_deref().unwrap_or("")
                    );
                }
            }
            println!("{count} ACL(s) added");
        }
        AclCommand::Remove {
            principal,
            host,
            operation,
            permission,
            resource,
        } => {
            let (kind, name) =
                resource_of(&resource)?.map_or((ResourceType::Any, None), |(k, n)| (k, Some(n)));
            let filter = DeleteAclsFilter::default()
                .with_resource_type_filter(kind.id())
                .with_resource_name_filter(name.map(StrBytes::from_string))
                .with_pattern_type_filter(pattern(&resource, PatternType::Any)?.id())
                .with_principal_filter(principal.map(StrBytes::from_string))
                .with_host_filter(host.map(StrBytes::from_string))
                .with_operation(
                    operation
                        .as_deref()
                        .map_or(Ok(AclOperation::Any), operation_of)?
                        .id(),
                )
                .with_permission_type(permission_of(permission.as_deref())?.id());
            let resp = conn.send(&DeleteAclsRequest::default().with_filters(vec![filter]))?;
            let mut removed = 0;
            for r in &resp.filter_results {
                if r.error_code != 0 {
                    bail!(
                        "{} {}",
                        error_name(r.error_code),
                        r.error_message.as_deref().unwrap_or("")
                    );
                }
                removed += r.matching_acls.len();
            }
            println!("{removed} ACL(s) removed");
        }
        AclCommand::List {
            principal,
            resource,
        } => {
            let (kind, name) =
                resource_of(&resource)?.map_or((ResourceType::Any, None), |(k, n)| (k, Some(n)));
            let req = DescribeAclsRequest::default()
                .with_resource_type_filter(kind.id())
                .with_resource_name_filter(name.map(StrBytes::from_string))
                .with_pattern_type_filter(pattern(&resource, PatternType::Any)?.id())
                .with_principal_filter(principal.map(StrBytes::from_string))
                .with_host_filter(None)
                .with_operation(AclOperation::Any.id())
                .with_permission_type(AclPermission::Any.id());
            let resp = conn.send(&req)?;
            if resp.error_code != 0 {
                bail!(
                    "{} {}",
                    error_name(resp.error_code),
                    resp.error_message.as_deref().unwrap_or("")
                );
            }
            println!(
                "{:<16} {:<24} {:<9} {:<24} {:<16} {:<16} PERMISSION",
                "RESOURCE", "NAME", "PATTERN", "PRINCIPAL", "HOST", "OPERATION"
            );
            for r in &resp.resources {
                for a in &r.acls {
                    println!(
                        "{:<16} {:<24} {:<9} {:<24} {:<16} {:<16} {}",
                        ResourceType::from_id(r.resource_type).name(),
                        r.resource_name.as_str(),
                        PatternType::from_id(r.pattern_type).name(),
                        a.principal.as_str(),
                        a.host.as_str(),
                        AclOperation::from_id(a.operation).name(),
                        AclPermission::from_id(a.permission_type).name()
                    );
                }
            }
        }
    }
    Ok(())
}

/// The one resource named, if any.
fn resource_of(r: &ResourceArgs) -> Result<Option<(ResourceType, String)>> {
    let mut named: Vec<(ResourceType, String)> = Vec::new();
    if let Some(t) = &r.topic {
        named.push((ResourceType::Topic, t.clone()));
    }
    if let Some(g) = &r.group {
        named.push((ResourceType::Group, g.clone()));
    }
    if let Some(t) = &r.transactional_id {
        named.push((ResourceType::TransactionalId, t.clone()));
    }
    if r.cluster {
        named.push((ResourceType::Cluster, CLUSTER_RESOURCE_NAME.to_string()));
    }
    if named.len() > 1 {
        bail!("name one resource: --topic, --group, --transactional-id or --cluster");
    }
    Ok(named.pop())
}

fn pattern(r: &ResourceArgs, default: PatternType) -> Result<PatternType> {
    match &r.resource_pattern_type {
        None => Ok(default),
        Some(p) => PatternType::parse(p)
            .filter(|p| *p != PatternType::Unknown)
            .ok_or_else(|| {
                anyhow!("--resource-pattern-type: {p:?} is not LITERAL, PREFIXED, ANY or MATCH")
            }),
    }
}

fn operation_of(name: &str) -> Result<AclOperation> {
    AclOperation::parse(name)
        .filter(|o| !matches!(o, AclOperation::Unknown | AclOperation::Any))
        .ok_or_else(|| anyhow!("--operation: {name:?} is not a Kafka ACL operation"))
}

fn permission_of(name: Option<&str>) -> Result<AclPermission> {
    match name {
        None => Ok(AclPermission::Any),
        Some(n) => AclPermission::parse(n)
            .filter(|p| matches!(p, AclPermission::Allow | AclPermission::Deny))
            .ok_or_else(|| anyhow!("--permission: {n:?} is not ALLOW or DENY")),
    }
}
