//! `sluice user add | remove | list`: SCRAM users over the Kafka protocol
//! (AlterUserScramCredentials / DescribeUserScramCredentials) against any broker, and
//! `add --data-dir DIR` before the first start (the bootstrap file the broker stores once
//! it is up; see `sluice_net::security::bootstrap`).
//!
//! The password is read from a file (never a flag: flags show in `ps`), salted and hashed
//! here (PBKDF2); only the salted password reaches the broker, only salted keys are
//! stored, and nothing prints either.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;
use sluice_net::security::ScramMechanism;
use sluice_net::security::{bootstrap, scram};

use crate::bench::wire::error_name;
use crate::sasl_login::SaslArgs;

#[derive(Debug, Args)]
pub struct UserArgs {
    /// A broker of the cluster (its PLAINTEXT listener).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
    #[command(flatten)]
    pub sasl: SaslArgs,
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user, or set a new password for one (SCRAM credential for one mechanism).
    Add {
        #[arg(long)]
        user: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
        /// File holding the password (one trailing newline is dropped).
        #[arg(long, value_name = "FILE")]
        password_file: PathBuf,
        /// PBKDF2 iterations (4096 to 16384).
        #[arg(long, default_value_t = 8192)]
        iterations: i32,
        /// Before the first start: write the credential into this data directory instead
        /// of asking a running broker.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Remove a user's credential for one mechanism.
    Remove {
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
    },
    /// Every user and the mechanisms and iterations of its credentials.
    List,
}

/// The broker to ask (`--bootstrap`) and how to log in there.
type Broker<'a> = (&'a str, &'a SaslArgs);

/// Longest password file read.
const PASSWORD_FILE_BYTES_MAX: u64 = 4096;

pub fn main(args: UserArgs) -> Result<()> {
    match args.command {
        UserCommand::Add {
            user,
            mechanism,
            password_file,
            iterations,
            data_dir,
        } => add(
            (&args.bootstrap, &args.sasl),
            &user,
            &mechanism,
            &password_file,
            iterations,
            data_dir.as_deref(),
        ),
        UserCommand::Remove { user, mechanism } => {
            remove((&args.bootstrap, &args.sasl), &user, &mechanism)
        }
        UserCommand::List => list((&args.bootstrap, &args.sasl)),
    }
}

fn mechanism(name: &str) -> Result<ScramMechanism> {
    ScramMechanism::from_name(name)
        .ok_or_else(|| anyhow!("--mechanism: {name:?} is not SCRAM-SHA-256 or SCRAM-SHA-512"))
}

pub(crate) fn password(file: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(file)
        .with_context(|| format!("--password-file {}", file.display()))?
        .len();
    if len > PASSWORD_FILE_BYTES_MAX {
        bail!(
            "--password-file {}: {len} bytes, more than {PASSWORD_FILE_BYTES_MAX}",
            file.display()
        );
    }
    let mut p =
        std::fs::read(file).with_context(|| format!("--password-file {}", file.display()))?;
    if p.last() == Some(&b'\n') {
        p.pop();
        if p.last() == Some(&b'\r') {
            p.pop();
        }
    }
    if p.is_empty() {
        bail!("--password-file {}: empty password", file.display());
    }
    Ok(p)
}

fn add(
    broker: Broker<'_>,
    user: &str,
    mech: &str,
    password_file: &Path,
    iterations: i32,
    data_dir: Option<&Path>,
) -> Result<()> {
    let m = mechanism(mech)?;
    if !(sluice_net::security::SCRAM_ITERATIONS_MIN..=sluice_net::security::SCRAM_ITERATIONS_MAX)
        .contains(&iterations)
    {
        bail!("--iterations: {iterations} is not in 4096..=16384");
    }
    if user.is_empty() {
        bail!("--user: empty");
    }
    let password = password(password_file)?;
    let salt = scram::random_bytes(32).map_err(|_| anyhow!("no random bytes for the salt"))?;
    let salted = scram::salted_password(m, &password, &salt, iterations);
    if let Some(dir) = data_dir {
        let credential = scram::credential_from_salted(m, &salted, &salt, iterations);
        bootstrap::add(dir, (user.to_string(), m, credential))?;
        println!(
            "{user} ({}) written to {}; stored when the broker starts",
            m.name(),
            bootstrap::path(dir).display()
        );
        return Ok(());
    }
    let req = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        ScramCredentialUpsertion::default()
            .with_name(StrBytes::from_string(user.to_string()))
            .with_mechanism(m.kafka_id())
            .with_iterations(iterations)
            .with_salt(salt.into())
            .with_salted_password(salted.into()),
    ]);
    alter(broker, &req)?;
    println!("{user} ({}) added", m.name());
    Ok(())
}

fn remove(broker: Broker<'_>, user: &str, mech: &str) -> Result<()> {
    let m = mechanism(mech)?;
    let req = AlterUserScramCredentialsRequest::default().with_deletions(vec![
        ScramCredentialDeletion::default()
            .with_name(StrBytes::from_string(user.to_string()))
            .with_mechanism(m.kafka_id()),
    ]);
    alter(broker, &req)?;
    println!("{user} ({}) removed", m.name());
    Ok(())
}

fn alter(broker: Broker<'_>, req: &AlterUserScramCredentialsRequest) -> Result<()> {
    let mut conn = broker.1.connect(broker.0)?;
    let resp = conn.send(req)?;
    for r in &resp.results {
        if r.error_code != 0 {
            bail!(
                "{}: {} {}",
                r.user,
                error_name(r.error_code),
                r.error_message.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}

fn list(broker: Broker<'_>) -> Result<()> {
    let mut conn = broker.1.connect(broker.0)?;
    let resp = conn
        .send(&DescribeUserScramCredentialsRequest::default().with_users(None::<Vec<UserName>>))?;
    if resp.error_code != 0 {
        bail!("{}", error_name(resp.error_code));
    }
    println!("{:<32} {:<14} {:>10}", "USER", "MECHANISM", "ITERATIONS");
    for r in &resp.results {
        for c in &r.credential_infos {
            let name = ScramMechanism::from_kafka_id(c.mechanism).map_or("?", |m| m.name());
            println!("{:<32} {:<14} {:>10}", r.user.as_str(), name, c.iterations);
        }
    }
    Ok(())
}
