//! SASL/SCRAM login for the CLI's Kafka-protocol admin connections (`sluice acl`, `sluice
//! user`): `--sasl-user`, `--sasl-password-file`, `--sasl-mechanism`, so an operator
//! manages users and ACLs through a SASL listener as a super user instead of the PLAINTEXT
//! listener's `User:ANONYMOUS`. The exchange is RFC 5802 (SaslHandshake v1, then two
//! SaslAuthenticate v1 rounds); the server's nonce must extend ours and its final
//! signature must prove it knows the credential, or the login fails. The password is read
//! from a file and never printed.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use sluice_net::security::{scram, ScramMechanism};

use crate::bench::wire::{error_name, AdminConn};

#[derive(Debug, Args, Default)]
pub struct SaslArgs {
    /// Log in as this SCRAM user (the `--bootstrap` listener must be SASL_PLAINTEXT or,
    /// with `ssl://`, SASL_SSL).
    #[arg(
        long,
        global = true,
        value_name = "USER",
        requires = "sasl_password_file"
    )]
    pub sasl_user: Option<String>,
    /// File holding the SASL user's password (one trailing newline is dropped).
    #[arg(long, global = true, value_name = "FILE")]
    pub sasl_password_file: Option<PathBuf>,
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, global = true, default_value = "SCRAM-SHA-512")]
    pub sasl_mechanism: String,
}

impl SaslArgs {
    /// A connection to `addr`, logged in when `--sasl-user` is given.
    pub fn connect(&self, addr: &str) -> Result<AdminConn> {
        let mut conn = AdminConn::connect(addr)?;
        if let Some(user) = &self.sasl_user {
            let m = ScramMechanism::from_name(&self.sasl_mechanism).ok_or_else(|| {
                anyhow!(
                    "--sasl-mechanism: {:?} is not SCRAM-SHA-256 or SCRAM-SHA-512",
                    self.sasl_mechanism
                )
            })?;
            let file = self
                .sasl_password_file
                .as_deref()
                .ok_or_else(|| anyhow!("--sasl-password-file: needed with --sasl-user"))?;
            let password = crate::user::password(file)?;
            login(&mut conn, m, user, &password)?;
        }
        Ok(conn)
    }
}

/// RFC 5802's `saslname`: `=` and `,` escaped.
fn saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

fn authenticate(conn: &mut AdminConn, bytes: &[u8]) -> Result<SaslAuthenticateResponse> {
    let req = SaslAuthenticateRequest::default().with_auth_bytes(bytes.to_vec().into());
    let resp: SaslAuthenticateResponse = conn.call(&req, 1)?;
    if resp.error_code != 0 {
        bail!(
            "SASL login failed: {} {}",
            error_name(resp.error_code),
            resp.error_message.as_deref().unwrap_or("")
        );
    }
    Ok(resp)
}

fn login(conn: &mut AdminConn, m: ScramMechanism, user: &str, password: &[u8]) -> Result<()> {
    let hs: SaslHandshakeResponse = conn.call(
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(m.name())),
        1,
    )?;
    if hs.error_code != 0 {
        bail!(
            "SaslHandshake {}: {} (the broker offers {:?})",
            m.name(),
            error_name(hs.error_code),
            hs.mechanisms.iter().map(|s| s.as_str()).collect::<Vec<_>>()
        );
    }
    let random = scram::random_bytes(24).map_err(|_| anyhow!("no random bytes for a nonce"))?;
    let nonce: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let bare = format!("n={},r={nonce}", saslname(user));
    let first = authenticate(conn, format!("n,,{bare}").as_bytes())?;
    let server_first = String::from_utf8(first.auth_bytes.to_vec())
        .map_err(|_| anyhow!("SASL login: server-first message not UTF-8"))?;
    if !server_first.starts_with(&format!("r={nonce}")) {
        bail!("SASL login: the server's nonce does not extend ours");
    }
    let client_final = scram::client_final(m, password, &bare, &server_first)
        .ok_or_else(|| anyhow!("SASL login: malformed server-first message"))?;
    let last = authenticate(conn, client_final.as_bytes())?;
    let exchange = [bare.as_str(), server_first.as_str(), client_final.as_str()];
    if !scram::client_verifies(m, password, exchange, &last.auth_bytes) {
        bail!("SASL login: the server's signature does not match (not the broker that holds the credential)");
    }
    Ok(())
}
