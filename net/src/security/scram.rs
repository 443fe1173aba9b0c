//! SCRAM (RFC 5802, SHA-256 and SHA-512 per RFC 7677) and PLAIN (RFC 4616) as pure
//! functions over the credentials the metadata image holds: deriving a credential from a
//! salted password, the server's two SCRAM steps, and checking a PLAIN password against a
//! SCRAM credential (one user store for both mechanisms).
//!
//! Every input is a client's and bounded: a message longer than [`SASL_MESSAGE_BYTES_MAX`],
//! not UTF-8, missing an attribute, with channel binding asked for, a nonce that does not
//! continue the server's, or a wrong proof is a [`SaslError`]. No error carries a proof, a
//! key, a salt or a password; the user name is the only client text kept.

use std::num::NonZeroU32;

use base64::Engine;
use ring::{digest, hmac, pbkdf2};
use sluice_control::{ScramCredential, ScramMechanism};

/// Longest SCRAM or PLAIN message accepted (a client-first message is a user name and a
/// nonce; Kafka's own clients send under 200 bytes).
pub const SASL_MESSAGE_BYTES_MAX: usize = 4096;

/// Bytes of the server's part of the nonce (before base64).
const SERVER_NONCE_BYTES: usize = 24;

/// Why a SASL exchange failed. The text goes to the client in SaslAuthenticate's error
/// message and to the log: it names what was wrong, never secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("SASL message of {0} bytes, more than {SASL_MESSAGE_BYTES_MAX}")]
    TooLong(usize),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("the nonce does not continue the server's")]
    Nonce,
    #[error("Authentication failed: Invalid user credentials")]
    Credentials,
    #[error("authorization id {0:?} differs from the user")]
    AuthorizationId(String),
}

fn hmac_alg(m: ScramMechanism) -> hmac::Algorithm {
    match m {
        ScramMechanism::Sha256 => hmac::HMAC_SHA256,
        ScramMechanism::Sha512 => hmac::HMAC_SHA512,
    }
}

fn pbkdf2_alg(m: ScramMechanism) -> pbkdf2::Algorithm {
    match m {
        ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
    }
}

fn hash(m: ScramMechanism, data: &[u8]) -> Vec<u8> {
    let alg = match m {
        ScramMechanism::Sha256 => &digest::SHA256,
        ScramMechanism::Sha512 => &digest::SHA512,
    };
    digest::digest(alg, data).as_ref().to_vec()
}

fn mac(m: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac_alg(m), key), data)
        .as_ref()
        .to_vec()
}

/// Equal length and bytes, in time independent of where they differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Hi(password, salt, i)` of RFC 5802: PBKDF2 with the mechanism's HMAC. `iterations` of
/// 0 gives 1 (credentials are checked for at least 4096 before they are stored).
pub fn salted_password(
    m: ScramMechanism,
    password: &[u8],
    salt: &[u8],
    iterations: i32,
) -> Vec<u8> {
    let mut out = vec![0u8; m.key_bytes()];
    let n = NonZeroU32::new(iterations.max(1) as u32).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(pbkdf2_alg(m), n, salt, password, &mut out);
    out
}

/// The stored credential for a salted password (what AlterUserScramCredentials carries).
pub fn credential_from_salted(
    m: ScramMechanism,
    salted: &[u8],
    salt: &[u8],
    iterations: i32,
) -> ScramCredential {
    let client_key = mac(m, salted, b"Client Key");
    ScramCredential {
        salt: salt.to_vec(),
        stored_key: hash(m, &client_key),
        server_key: mac(m, salted, b"Server Key"),
        iterations,
    }
}

/// A credential for `password` with a fresh random salt.
pub fn credential_from_password(
    m: ScramMechanism,
    password: &[u8],
    iterations: i32,
) -> Result<ScramCredential, ring::error::Unspecified> {
    let salt = random_bytes(32)?;
    let salted = salted_password(m, password, &salt, iterations);
    Ok(credential_from_salted(m, &salted, &salt, iterations))
}

pub fn random_bytes(n: usize) -> Result<Vec<u8>, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut out = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut out)?;
    Ok(out)
}

/// Whether `password` is the one `credential` was made from.
pub fn password_matches(m: ScramMechanism, credential: &ScramCredential, password: &[u8]) -> bool {
    let salted = salted_password(m, password, &credential.salt, credential.iterations);
    let derived = credential_from_salted(m, &salted, &credential.salt, credential.iterations);
    ct_eq(&derived.stored_key, &credential.stored_key)
}

fn check_len(msg: &[u8]) -> Result<&str, SaslError> {
    if msg.len() > SASL_MESSAGE_BYTES_MAX {
        return Err(SaslError::TooLong(msg.len()));
    }
    std::str::from_utf8(msg).map_err(|_| SaslError::Malformed("message (not UTF-8)"))
}

/// A PLAIN message (`authzid NUL authcid NUL passwd`): the user and password. An
/// authorization id other than empty or the user is refused, as Kafka does.
pub fn parse_plain(msg: &[u8]) -> Result<(String, Vec<u8>), SaslError> {
    check_len(msg)?;
    let mut parts = msg.split(|b| *b == 0);
    let (Some(authz), Some(user), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed("PLAIN message"));
    };
    let user = std::str::from_utf8(user).map_err(|_| SaslError::Malformed("PLAIN user"))?;
    if user.is_empty() || pass.is_empty() {
        return Err(SaslError::Malformed(
            "PLAIN message (empty user or password)",
        ));
    }
    if !authz.is_empty() && authz != user.as_bytes() {
        return Err(SaslError::AuthorizationId(
            String::from_utf8_lossy(authz).into_owned(),
        ));
    }
    Ok((user.to_owned(), pass.to_vec()))
}

/// RFC 5802 `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is malformed.
fn decode_saslname(s: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(SaslError::Malformed("user name escape")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The server's state between its first message and the client's final one.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramPending {
    pub user: String,
    mechanism: ScramMechanism,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl ScramPending {
    /// The client's part of the nonce (the server's nonce starts with it).
    fn client_nonce(&self) -> &str {
        self.client_first_bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .unwrap_or("")
    }
}

impl std::fmt::Debug for ScramPending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramPending")
            .field("user", &self.user)
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

/// The user a client-first message names (to look its credential up), checked for form.
pub fn client_first_user(msg: &[u8]) -> Result<String, SaslError> {
    Ok(parse_client_first(check_len(msg)?)?.1)
}

/// (gs2 header, user, client nonce, client-first-bare)
fn parse_client_first(text: &str) -> Result<(String, String, String, String), SaslError> {
    let mut it = text.splitn(3, ',');
    let (Some(cb), Some(authz), Some(bare)) = (it.next(), it.next(), it.next()) else {
        return Err(SaslError::Malformed("client-first message"));
    };
    match cb {
        "n" | "y" => {}
        c if c.starts_with("p=") => return Err(SaslError::ChannelBinding),
        _ => return Err(SaslError::Malformed("gs2 header")),
    }
    if !authz.is_empty() && !authz.starts_with("a=") {
        return Err(SaslError::Malformed("gs2 authorization id"));
    }
    let mut user = None;
    let mut nonce = None;
    for (i, attr) in bare.split(',').enumerate() {
        match (i, attr.split_once('=')) {
            (0, Some(("n", u))) => user = Some(decode_saslname(u)?),
            (1, Some(("r", r))) => nonce = Some(r.to_owned()),
            // Extensions (Kafka's `tokenauth=true`) after the nonce are ignored.
            (i, Some(_)) if i >= 2 => {}
            _ => return Err(SaslError::Malformed("client-first-bare")),
        }
    }
    let (Some(user), Some(nonce)) = (user, nonce) else {
        return Err(SaslError::Malformed("client-first-bare"));
    };
    if user.is_empty()
        || nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(SaslError::Malformed("user or nonce"));
    }
    if let Some(a) = authz.strip_prefix("a=") {
        let a = decode_saslname(a)?;
        if a != user {
            return Err(SaslError::AuthorizationId(a));
        }
    }
    Ok((format!("{cb},{authz},"), user, nonce, bare.to_owned()))
}

/// The server's answer to a client-first message, for the user's `credential`: the
/// server-first message and what the final step needs.
pub fn server_first(
    mechanism: ScramMechanism,
    client_first: &[u8],
    credential: &ScramCredential,
) -> Result<(Vec<u8>, ScramPending), SaslError> {
    let (gs2_header, user, client_nonce, client_first_bare) =
        parse_client_first(check_len(client_first)?)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let server_part = random_bytes(SERVER_NONCE_BYTES).map_err(|_| SaslError::Credentials)?;
    let nonce = format!("{client_nonce}{}", b64.encode(server_part));
    let server_first = format!(
        "r={nonce},s={},i={}",
        b64.encode(&credential.salt),
        credential.iterations
    );
    let pending = ScramPending {
        user,
        mechanism,
        gs2_header,
        client_first_bare,
        server_first: server_first.clone(),
        nonce,
        stored_key: credential.stored_key.clone(),
        server_key: credential.server_key.clone(),
    };
    Ok((server_first.into_bytes(), pending))
}

/// Checks the client-final message; on success the server-final message (`v=…`).
pub fn server_final(pending: &ScramPending, client_final: &[u8]) -> Result<Vec<u8>, SaslError> {
    let text = check_len(client_final)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (without_proof, proof) = text
        .rsplit_once(",p=")
        .ok_or(SaslError::Malformed("client-final message (no proof)"))?;
    let mut attrs = without_proof.split(',');
    let (Some(c), Some(r)) = (attrs.next(), attrs.next()) else {
        return Err(SaslError::Malformed("client-final message"));
    };
    let binding = c
        .strip_prefix("c=")
        .ok_or(SaslError::Malformed("channel binding attribute"))?;
    if b64.decode(binding).ok().as_deref() != Some(pending.gs2_header.as_bytes()) {
        return Err(SaslError::ChannelBinding);
    }
    let nonce = r
        .strip_prefix("r=")
        .ok_or(SaslError::Malformed("nonce attribute"))?;
    // RFC 5802: the nonce the server sent. librdkafka before 2.6.1 (Debian's kcat has
    // 2.0.2) prepends its own nonce to it once more (librdkafka#4895); Kafka 3.8.1–3.9
    // accept that form, and so does Sluice — the server's random part is still checked
    // whole, so a replayed exchange is still refused.
    let client_nonce = pending.client_nonce();
    let doubled = nonce
        .strip_prefix(client_nonce)
        .is_some_and(|rest| rest == pending.nonce);
    if nonce != pending.nonce && !doubled {
        return Err(SaslError::Nonce);
    }
    let proof = b64
        .decode(proof)
        .map_err(|_| SaslError::Malformed("proof (not base64)"))?;
    let m = pending.mechanism;
    if proof.len() != m.key_bytes() {
        return Err(SaslError::Credentials);
    }
    let auth_message = format!(
        "{},{},{}",
        pending.client_first_bare, pending.server_first, without_proof
    );
    let client_signature = mac(m, &pending.stored_key, auth_message.as_bytes());
    let client_key: Vec<u8> = proof
        .iter()
        .zip(&client_signature)
        .map(|(p, s)| p ^ s)
        .collect();
    if !ct_eq(&hash(m, &client_key), &pending.stored_key) {
        return Err(SaslError::Credentials);
    }
    let server_signature = mac(m, &pending.server_key, auth_message.as_bytes());
    Ok(format!("v={}", b64.encode(server_signature)).into_bytes())
}

/// The client's side of SCRAM (for test clients and tools): the client-final message
/// (gs2 header `n,,`) answering `server_first` for `password`, after a client-first-bare
/// of `client_first_bare`. `None` if `server_first` lacks the nonce, salt or iterations.
pub fn client_final(
    m: ScramMechanism,
    password: &[u8],
    client_first_bare: &str,
    server_first: &str,
) -> Option<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (mut nonce, mut salt, mut iterations) = (None, None, None);
    for a in server_first.split(',') {
        match a.split_once('=') {
            Some(("r", r)) => nonce = Some(r),
            Some(("s", s)) => salt = b64.decode(s).ok(),
            Some(("i", i)) => iterations = i.parse().ok(),
            _ => {}
        }
    }
    let (nonce, salt, iterations) = (nonce?, salt?, iterations?);
    let salted = salted_password(m, password, &salt, iterations);
    let client_key = mac(m, &salted, b"Client Key");
    let stored_key = hash(m, &client_key);
    let without_proof = format!("c={},r={nonce}", b64.encode("n,,"));
    let auth = format!("{client_first_bare},{server_first},{without_proof}");
    let sig = mac(m, &stored_key, auth.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
    Some(format!("{without_proof},p={}", b64.encode(proof)))
}

/// The client's check of the server-final message (RFC 5802 `v=`): whether the server
/// knows the user's ServerKey, for the exchange `client_first_bare`, `server_first`,
/// `client_final` (as [`client_final`] made it) and `password`.
pub fn client_verifies(
    m: ScramMechanism,
    password: &[u8],
    exchange: [&str; 3],
    server_final: &[u8],
) -> bool {
    let [client_first_bare, server_first, client_final] = exchange;
    let b64 = base64::engine::general_purpose::STANDARD;
    let salt_and_iterations =
        server_first
            .split(',')
            .fold((None, None), |(s, i), a| match a.split_once('=') {
                Some(("s", v)) => (b64.decode(v).ok(), i),
                Some(("i", v)) => (s, v.parse::<i32>().ok()),
                _ => (s, i),
            });
    let (Some(salt), Some(iterations)) = salt_and_iterations else {
        return false;
    };
    let Some((without_proof, _)) = client_final.rsplit_once(",p=") else {
        return false;
    };
    let salted = salted_password(m, password, &salt, iterations);
    let server_key = mac(m, &salted, b"Server Key");
    let auth = format!("{client_first_bare},{server_first},{without_proof}");
    let expected = format!("v={}", b64.encode(mac(m, &server_key, auth.as_bytes())));
    ct_eq(expected.as_bytes(), server_final)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    fn client_final(m: ScramMechanism, pw: &[u8], bare: &str, sf: &str) -> String {
        super::client_final(m, pw, bare, sf).unwrap()
    }

    #[test]
    fn rfc7677_test_vector_sha256() {
        // RFC 7677 section 3: user "user", password "pencil", 4096 iterations.
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = salted_password(ScramMechanism::Sha256, b"pencil", &salt, 4096);
        let cred = credential_from_salted(ScramMechanism::Sha256, &salted, &salt, 4096);
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let pending = ScramPending {
            user: "user".into(),
            mechanism: ScramMechanism::Sha256,
            gs2_header: "n,,".into(),
            client_first_bare: client_first_bare.into(),
            server_first: server_first.into(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            stored_key: cred.stored_key.clone(),
            server_key: cred.server_key.clone(),
        };
        let final_msg = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let v = server_final(&pending, final_msg.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        // The client's check of that answer, and of a forged one.
        let exchange = [client_first_bare, server_first, final_msg];
        let m = ScramMechanism::Sha256;
        let good = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
        assert!(client_verifies(m, b"pencil", exchange, good));
        let forged = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G5=";
        assert!(!client_verifies(m, b"pencil", exchange, forged));
        assert!(!client_verifies(m, b"pencil!", exchange, good));
    }

    #[test]
    fn both_mechanisms_accept_the_password_and_refuse_another() {
        for m in ScramMechanism::ALL {
            let cred = credential_from_password(m, b"s3cret", 4096).unwrap();
            let first = b"n,,n=alice,r=abcdef";
            let (sf, pending) = server_first(m, first, &cred).unwrap();
            let sf = String::from_utf8(sf).unwrap();
            let good = client_final(m, b"s3cret", "n=alice,r=abcdef", &sf);
            assert!(server_final(&pending, good.as_bytes()).is_ok());
            let bad = client_final(m, b"wrong", "n=alice,r=abcdef", &sf);
            assert_eq!(
                server_final(&pending, bad.as_bytes()),
                Err(SaslError::Credentials)
            );
            assert!(password_matches(m, &cred, b"s3cret"));
            assert!(!password_matches(m, &cred, b"s3cre"));
        }
    }

    #[test]
    fn hostile_scram_messages_are_errors() {
        let m = ScramMechanism::Sha256;
        let cred = credential_from_password(m, b"pw", 4096).unwrap();
        for first in [
            &b""[..],
            b"n,,",
            b"n,,n=alice",
            b"n,,r=abc,n=alice",
            b"p=tls-unique,,n=alice,r=abc",
            b"x,,n=alice,r=abc",
            b"n,,n=al=ZZice,r=abc",
            b"n,a=bob,n=alice,r=abc",
            b"\xff\xfe",
        ] {
            assert!(server_first(m, first, &cred).is_err(), "{first:?}");
        }
        let huge = vec![b'a'; SASL_MESSAGE_BYTES_MAX + 1];
        assert_eq!(
            server_first(m, &huge, &cred).unwrap_err(),
            SaslError::TooLong(SASL_MESSAGE_BYTES_MAX + 1)
        );
        let (_, pending) = server_first(m, b"n,,n=alice,r=abc", &cred).unwrap();
        for fin in [
            "".to_string(),
            "c=biws".to_string(),
            "c=biws,r=abc,p=AAAA".to_string(), // wrong nonce
            format!("c=biws,r={},p=!!", pending.nonce), // proof not base64
            format!("c=eSws,r={},p=AAAA", pending.nonce), // other binding
            format!("c=biws,r={},p=AAAA", pending.nonce), // short proof
            format!("c=biws,r={}", pending.nonce), // no proof
        ] {
            assert!(server_final(&pending, fin.as_bytes()).is_err(), "{fin:?}");
        }
        assert_eq!(
            server_final(&pending, b"c=biws,r=abcX,p=AAAA").unwrap_err(),
            SaslError::Nonce
        );
        // The client nonce twice, then not the server's: still refused.
        let forged = format!("c=biws,r=abcabc{}x,p=AAAA", &pending.nonce[3..]);
        assert_eq!(
            server_final(&pending, forged.as_bytes()).unwrap_err(),
            SaslError::Nonce
        );
    }

    /// librdkafka before 2.6.1 sends `r=<client nonce><server nonce>` (the client part
    /// twice); its proof covers what it sent, and is accepted as Kafka 3.9 accepts it.
    #[test]
    fn old_librdkafka_doubled_client_nonce_is_accepted() {
        let m = ScramMechanism::Sha256;
        let cred = credential_from_password(m, b"pw", 4096).unwrap();
        let bare = "n=k,r=cnonce";
        let (sf, pending) = server_first(m, format!("n,,{bare}").as_bytes(), &cred).unwrap();
        let sf = String::from_utf8(sf).unwrap();
        let doubled_sf = sf.replacen("r=", "r=cnonce", 1);
        // The client builds its final message (and proof) over the doubled nonce, but its
        // AuthMessage holds the server-first message as the server sent it.
        let fin = client_final(m, b"pw", bare, &doubled_sf);
        let (without_proof, _) = fin.rsplit_once(",p=").unwrap();
        let auth = format!("{bare},{sf},{without_proof}");
        let salted = salted_password(m, b"pw", &cred.salt, cred.iterations);
        let client_key = mac(m, &salted, b"Client Key");
        let sig = mac(m, &hash(m, &client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let fin = format!("{without_proof},p={}", B64.encode(proof));
        assert!(server_final(&pending, fin.as_bytes()).is_ok());
    }

    #[test]
    fn plain_messages() {
        assert_eq!(
            parse_plain(b"\0alice\0pw").unwrap(),
            ("alice".into(), b"pw".to_vec())
        );
        assert!(parse_plain(b"alice\0alice\0pw").is_ok());
        assert!(matches!(
            parse_plain(b"bob\0alice\0pw"),
            Err(SaslError::AuthorizationId(_))
        ));
        for bad in [&b""[..], b"\0alice", b"\0\0pw", b"\0alice\0", b"\0a\0b\0c"] {
            assert!(parse_plain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn saslnames_unescape() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert!(decode_saslname("a=").is_err());
    }
}
