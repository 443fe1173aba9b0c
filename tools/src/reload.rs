//! Re-reading certificates without a restart: on SIGHUP, and when a file of `[tls]` or
//! `[cluster_tls]` changes (its modification time or length), which a thread looks at
//! every [`TLS_FILES_POLL_MS`]. New connections get what was read; open ones keep theirs.
//! A reload that fails (a key written before its certificate, a file cut short) keeps
//! the certificate in force and logs why; the next change tries again.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sluice_net::security::tls::Tls;
use sluice_net::security::ClusterTls;

/// How often the certificate files are looked at. A rotation tool writes the new files
/// and is done; a few seconds until new connections get them is what SIGHUP costs too
/// (someone has to send it). Each look is one `stat` per file.
pub const TLS_FILES_POLL_MS: u64 = 2_000;

/// A file's modification time and length; `None` while it cannot be read.
type Stamp = Option<(SystemTime, u64)>;

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|f| {
            // `metadata` follows symbolic links: a mounted secret swapped by a link counts.
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

/// One set of certificate files and how to reload them.
struct Watched {
    what: &'static str,
    files: Vec<PathBuf>,
    last: Vec<Stamp>,
    reload: Box<dyn Fn() -> Result<(), String> + Send>,
}

impl Watched {
    fn new(
        what: &'static str,
        files: Vec<PathBuf>,
        reload: Box<dyn Fn() -> Result<(), String> + Send>,
    ) -> Watched {
        let last = stamps(&files);
        Watched {
            what,
            files,
            last,
            reload,
        }
    }

    /// Whether a file changed since the last look (or since start).
    fn changed(&mut self) -> bool {
        let now = stamps(&self.files);
        if now == self.last {
            return false;
        }
        self.last = now;
        true
    }

    fn reload(&self, why: &str) {
        match (self.reload)() {
            Ok(()) => tracing::info!("{why}: {} certificate and key reloaded", self.what),
            Err(e) => tracing::error!(
                error = %e,
                "{why}: {} reload failed, the certificate in force stays",
                self.what
            ),
        }
    }
}

/// The node's certificates: `[tls]` and `[cluster_tls]` where set.
pub struct Reloads {
    watched: Vec<Watched>,
}

impl Reloads {
    pub fn new(tls: Option<Arc<Tls>>, cluster_tls: Option<Arc<ClusterTls>>) -> Reloads {
        let mut watched = Vec::new();
        if let Some(t) = tls {
            let s = t.settings();
            let mut files = vec![s.cert_file.clone(), s.key_file.clone()];
            files.extend(s.client_ca_file.clone());
            let reload = Box::new(move || t.reload().map_err(|e| e.to_string()));
            watched.push(Watched::new("TLS", files, reload));
        }
        if let Some(t) = cluster_tls {
            let s = t.settings();
            let files = vec![s.cert_file.clone(), s.key_file.clone(), s.ca_file.clone()];
            let reload = Box::new(move || t.reload().map_err(|e| e.to_string()));
            watched.push(Watched::new("cluster TLS", files, reload));
        }
        Reloads { watched }
    }

    /// SIGHUP: everything again, changed or not.
    pub fn all(&mut self) {
        if self.watched.is_empty() {
            tracing::info!("SIGHUP: no listener uses TLS, nothing to reload");
        }
        for w in &mut self.watched {
            w.last = stamps(&w.files);
            w.reload("SIGHUP");
        }
    }

    /// What changed since the last look.
    pub fn changed(&mut self) {
        for w in &mut self.watched {
            if w.changed() {
                w.reload("certificate files changed");
            }
        }
    }

    /// Nothing to watch.
    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }
}

/// Looks at the files every [`TLS_FILES_POLL_MS`] until `stop` is dropped or sent to.
pub fn watch(reloads: Arc<std::sync::Mutex<Reloads>>, stop: mpsc::Receiver<()>) {
    let poll = Duration::from_millis(TLS_FILES_POLL_MS);
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(poll) {
        match reloads.lock() {
            Ok(mut r) => r.changed(),
            Err(poisoned) => poisoned.into_inner().changed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_changed_file_reloads_once_and_an_unchanged_one_never() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, "one").unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let mut w = Watched::new(
            "TLS",
            vec![cert.clone(), dir.path().join("missing.pem")],
            Box::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }),
        );
        assert!(!w.changed(), "nothing changed since start");
        // A different length changes the stamp even within one mtime tick.
        std::fs::write(&cert, "two, longer").unwrap();
        assert!(w.changed());
        w.reload("test");
        assert!(!w.changed(), "seen once");
        std::fs::remove_file(&cert).unwrap();
        assert!(w.changed(), "a file gone is a change");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
