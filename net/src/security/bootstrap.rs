//! Credentials written before the first start (`sluice user add --data-dir`), as Kafka's
//! `kafka-storage format --add-scram` does: salted keys in
//! `<data-dir>/bootstrap-credentials.json` (never a password). Once the broker is
//! registered and active, its control thread asks the controller to store each
//! credential the metadata image lacks, then renames the file to `….applied`, so a user
//! removed later is not brought back by a restart.

use std::path::{Path, PathBuf};

use base64::Engine;
use sluice_control::{ScramCredential, ScramMechanism};

/// The file's name in the data directory.
pub const BOOTSTRAP_CREDENTIALS_FILE: &str = "bootstrap-credentials.json";
/// Longest such file read (a few hundred bytes per user).
pub const BOOTSTRAP_FILE_BYTES_MAX: u64 = 1 << 20;

/// Why the file could not be read or written (names the file, never a key).
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Content { path: PathBuf, why: String },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    user: String,
    mechanism: String,
    salt: String,
    stored_key: String,
    server_key: String,
    iterations: i32,
}

/// One credential of the file.
pub type Credential = (String, ScramMechanism, ScramCredential);

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(BOOTSTRAP_CREDENTIALS_FILE)
}

/// The file's credentials; none when there is no file.
pub fn read(data_dir: &Path) -> Result<Vec<Credential>, BootstrapError> {
    let p = path(data_dir);
    let io = |source| BootstrapError::Io {
        path: p.clone(),
        source,
    };
    let content = |why: String| BootstrapError::Content {
        path: p.clone(),
        why,
    };
    let len = match std::fs::metadata(&p) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    if len > BOOTSTRAP_FILE_BYTES_MAX {
        return Err(content(format!(
            "{len} bytes, more than {BOOTSTRAP_FILE_BYTES_MAX}"
        )));
    }
    let text = std::fs::read(&p).map_err(io)?;
    let entries: Vec<Entry> = serde_json::from_slice(&text)
        .map_err(|e| content(format!("not a credential list: {e}")))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let mechanism = ScramMechanism::from_name(&e.mechanism).ok_or_else(|| {
            content(format!(
                "user {:?}: unknown mechanism {:?}",
                e.user, e.mechanism
            ))
        })?;
        let decode = |v: &str| {
            b64.decode(v)
                .map_err(|_| content(format!("user {:?}: bad base64", e.user)))
        };
        let credential = ScramCredential {
            salt: decode(&e.salt)?,
            stored_key: decode(&e.stored_key)?,
            server_key: decode(&e.server_key)?,
            iterations: e.iterations,
        };
        if let Some(why) = credential.problem(&e.user, mechanism) {
            return Err(content(format!("user {:?}: {why}", e.user)));
        }
        out.push((e.user, mechanism, credential));
    }
    Ok(out)
}

/// Adds (or replaces) one credential in the file (written to a temporary file, synced,
/// then renamed over it).
pub fn add(data_dir: &Path, credential: Credential) -> Result<(), BootstrapError> {
    let mut all = read(data_dir)?;
    all.retain(|(u, m, _)| !(*u == credential.0 && *m == credential.1));
    all.push(credential);
    let b64 = base64::engine::general_purpose::STANDARD;
    let entries: Vec<Entry> = all
        .iter()
        .map(|(user, m, c)| Entry {
            user: user.clone(),
            mechanism: m.name().to_string(),
            salt: b64.encode(&c.salt),
            stored_key: b64.encode(&c.stored_key),
            server_key: b64.encode(&c.server_key),
            iterations: c.iterations,
        })
        .collect();
    let p = path(data_dir);
    let io = |source| BootstrapError::Io {
        path: p.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let tmp = p.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(&entries).map_err(|e| BootstrapError::Content {
        path: p.clone(),
        why: e.to_string(),
    })?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&text).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &p).map_err(io)?;
    Ok(())
}

/// Renames the file to `….applied` once every credential in it is stored.
pub fn mark_applied(data_dir: &Path) -> Result<(), BootstrapError> {
    let p = path(data_dir);
    std::fs::rename(&p, p.with_extension("json.applied")).map_err(|source| BootstrapError::Io {
        path: p.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
        let m = ScramMechanism::Sha512;
        let c1 = super::super::scram::credential_from_password(m, b"one", 4096).unwrap();
        let c2 = super::super::scram::credential_from_password(m, b"two", 4096).unwrap();
        add(dir.path(), ("admin".into(), m, c1)).unwrap();
        add(dir.path(), ("admin".into(), m, c2.clone())).unwrap();
        let all = read(dir.path()).unwrap();
        assert_eq!(all, vec![("admin".to_string(), m, c2)]);
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert!(!text.contains("two"), "no password in the file");
        mark_applied(dir.path()).unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_bad_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "[{\"user\": 1}]").unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains(BOOTSTRAP_CREDENTIALS_FILE), "{e}");
    }
}
