//! Source A: a certificate and key mounted as files (a Secret volume), hot-reloaded.
//!
//! Kubernetes updates a Secret volume by writing a new timestamped directory and
//! swapping the `..data` symlink, so mtimes are unreliable: we compare contents. A
//! pair read mid-update (new certificate, old key) fails the key check and the old
//! certificate stays until a later poll reads a consistent pair.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{CertStore, certified_key};

/// What one poll of the files did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// Same contents as last time.
    Unchanged,
    /// A new certificate is served from now on.
    Reloaded,
    /// The files changed but do not make a valid pair; the old certificate stays.
    Rejected(String),
    /// A file could not be read (e.g. mid-swap); the old certificate stays.
    Unreadable(String),
}

/// Polls a certificate file and a key file and swaps new contents into a store.
#[derive(Debug)]
pub struct FileReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// Contents last seen (served, or rejected: rejected contents are not retried
    /// until they change again).
    last: Option<(Vec<u8>, Vec<u8>)>,
}

impl FileReloader {
    pub fn new(cert_path: impl Into<PathBuf>, key_path: impl Into<PathBuf>) -> FileReloader {
        FileReloader { cert_path: cert_path.into(), key_path: key_path.into(), last: None }
    }

    /// Reads both files; if their contents changed and form a valid pair, serves them.
    pub async fn poll(&mut self, store: &CertStore) -> Reload {
        let cert = match tokio::fs::read(&self.cert_path).await {
            Ok(c) => c,
            Err(e) => return Reload::Unreadable(format!("{}: {e}", self.cert_path.display())),
        };
        let key = match tokio::fs::read(&self.key_path).await {
            Ok(k) => k,
            Err(e) => return Reload::Unreadable(format!("{}: {e}", self.key_path.display())),
        };
        self.offer(cert, key, store)
    }

    /// The pure part of [`poll`](Self::poll): given the files' contents.
    pub fn offer(&mut self, cert: Vec<u8>, key: Vec<u8>, store: &CertStore) -> Reload {
        if self.last.as_ref().is_some_and(|(c, k)| *c == cert && *k == key) {
            return Reload::Unchanged;
        }
        let outcome = match certified_key(&cert, &key) {
            // First look at files the store was built from: nothing to swap.
            Ok(ck) if self.last.is_none() && store.serves(&ck.cert) => Reload::Unchanged,
            Ok(ck) => {
                store.set(ck);
                Reload::Reloaded
            }
            Err(e) => Reload::Rejected(e.to_string()),
        };
        self.last = Some((cert, key));
        outcome
    }
}

/// Watches `cert_path` and `key_path` every `poll_interval` and serves each new valid
/// pair from `store`. Runs until dropped (spawn it and abort the task to stop).
pub async fn watch_files(
    cert_path: impl AsRef<Path>,
    key_path: impl AsRef<Path>,
    store: Arc<CertStore>,
    poll_interval: Duration,
) {
    let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
    let mut reloader = FileReloader::new(cert_path, key_path);
    let mut ticker = tokio::time::interval(poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unreadable = false;
    loop {
        ticker.tick().await;
        match reloader.poll(&store).await {
            Reload::Unchanged => unreadable = false,
            Reload::Reloaded => {
                unreadable = false;
                tracing::info!(cert = %cert_path.display(), key = %key_path.display(), "reloaded the webhook serving certificate");
            }
            Reload::Rejected(error) => {
                unreadable = false;
                tracing::warn!(cert = %cert_path.display(), %error, "new certificate files rejected; still serving the previous certificate, will retry when they change");
            }
            // Logged once per outage: a symlink swap can briefly hide the files.
            Reload::Unreadable(error) if !unreadable => {
                unreadable = true;
                tracing::warn!(%error, "cannot read the certificate files; still serving the previous certificate");
            }
            Reload::Unreadable(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::{Ca, CertPair};
    use std::fs;

    fn pair(ca: &Ca) -> CertPair {
        ca.issue_server("signoff", &["localhost"], &[], 1).unwrap()
    }

    /// Writes a pair the way the kubelet does: a new directory, then an atomic swap of
    /// the `..data` symlink that `tls.crt` and `tls.key` point through.
    fn kubelet_write(dir: &Path, generation: u32, cert: &str, key: &str) {
        let data = dir.join(format!("..{generation}"));
        fs::create_dir(&data).unwrap();
        fs::write(data.join("tls.crt"), cert).unwrap();
        fs::write(data.join("tls.key"), key).unwrap();
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{generation}"), &tmp).unwrap();
        fs::rename(&tmp, dir.join("..data")).unwrap();
        for f in ["tls.crt", "tls.key"] {
            if fs::symlink_metadata(dir.join(f)).is_err() {
                std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn reloads_on_symlink_swap_and_survives_bad_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test-ca", 1).unwrap();
        let (a, b, c) = (pair(&ca), pair(&ca), pair(&ca));
        kubelet_write(dir.path(), 1, &a.cert_pem, &a.key_pem);
        let store = CertStore::from_pem(a.cert_pem.as_bytes(), a.key_pem.as_bytes()).unwrap();
        let mut r = FileReloader::new(dir.path().join("tls.crt"), dir.path().join("tls.key"));

        // the files the store was built from: nothing to do
        assert_eq!(r.poll(&store).await, Reload::Unchanged);
        assert_eq!(store.swaps(), 0);

        kubelet_write(dir.path(), 2, &b.cert_pem, &b.key_pem);
        assert_eq!(r.poll(&store).await, Reload::Reloaded);
        assert_eq!(r.poll(&store).await, Reload::Unchanged);
        assert_eq!(store.swaps(), 1);
        let served = store.current();

        // half-written: new certificate, old key. Old certificate stays.
        kubelet_write(dir.path(), 3, &c.cert_pem, &b.key_pem);
        assert!(matches!(r.poll(&store).await, Reload::Rejected(e) if e.contains("does not belong")));
        assert!(Arc::ptr_eq(&served, &store.current()));
        // not retried while unchanged
        assert_eq!(r.poll(&store).await, Reload::Unchanged);

        // truncated certificate
        kubelet_write(dir.path(), 4, &c.cert_pem[..40], &c.key_pem);
        assert!(matches!(r.poll(&store).await, Reload::Rejected(_)));
        assert!(Arc::ptr_eq(&served, &store.current()));

        // the update completes
        kubelet_write(dir.path(), 5, &c.cert_pem, &c.key_pem);
        assert_eq!(r.poll(&store).await, Reload::Reloaded);
        assert_eq!(store.swaps(), 2);

        // same contents rewritten (new mtime, new directory): no reload
        kubelet_write(dir.path(), 6, &c.cert_pem, &c.key_pem);
        assert_eq!(r.poll(&store).await, Reload::Unchanged);

        // files gone
        fs::remove_file(dir.path().join("tls.key")).unwrap();
        assert!(matches!(r.poll(&store).await, Reload::Unreadable(_)));
        assert_eq!(store.swaps(), 2);
    }

    #[tokio::test]
    async fn watch_files_task_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test-ca", 1).unwrap();
        let (a, b) = (pair(&ca), pair(&ca));
        kubelet_write(dir.path(), 1, &a.cert_pem, &a.key_pem);
        let store = CertStore::from_pem(a.cert_pem.as_bytes(), a.key_pem.as_bytes()).unwrap();
        let task = tokio::spawn(watch_files(
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
            store.clone(),
            Duration::from_millis(20),
        ));
        tokio::time::sleep(Duration::from_millis(60)).await;
        kubelet_write(dir.path(), 2, &b.cert_pem, &b.key_pem);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while store.swaps() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        let expected = certified_key(b.cert_pem.as_bytes(), b.key_pem.as_bytes()).unwrap();
        assert!(store.serves(&expected.cert));
    }
}
