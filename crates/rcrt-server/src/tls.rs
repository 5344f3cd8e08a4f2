//! TLS on the listener (`TLS_CERT_FILE`, `TLS_KEY_FILE`): rustls with the *ring* provider (the
//! one the rest of the workspace builds rustls with), TLS 1.2 and 1.3 only, ALPN `http/1.1`.
//!
//! The certificate and key are re-read when either file changes (their modification time, size
//! or inode, checked every [`POLL`]; a symlink swap as Kubernetes does for mounted secrets
//! counts) and on SIGHUP. Polling rather than inotify (`notify`): two `stat` calls every few
//! seconds cost nothing, need no new dependency, and see changes inotify misses (a renamed
//! directory behind a symlink, network and overlay filesystems). A reload that fails (unreadable
//! file, bad PEM, a key that does not match the certificate) keeps the previous certificate
//! and logs why; neither the log nor any error holds key material.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use crate::config::TlsFiles;

/// How often the two files' metadata is checked for a change.
pub const POLL: Duration = Duration::from_secs(5);

/// Why the certificate or key could not be used. Paths and reasons only, never file contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The certificate file holds no PEM certificate, or a malformed one.
    #[error("{0}: no valid PEM certificate (-----BEGIN CERTIFICATE-----)")]
    Certificate(PathBuf),
    /// The key file holds no PEM private key, or a malformed one.
    #[error("{0}: no valid PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)")]
    Key(PathBuf),
    /// The key is not one rustls can sign with, or does not match the certificate.
    #[error("{key} does not fit {cert}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason (a fixed text).
        reason: String,
    },
    /// rustls refused the settings.
    #[error("TLS settings: {0}")]
    Settings(rustls::Error),
}

/// The served certificate: rustls asks for it on every handshake; a reload swaps it.
///
/// A `RwLock<Arc<_>>` is the atomic swap: a handshake holds the lock only to clone the `Arc`,
/// a reload only to replace it (no `arc-swap` dependency for that).
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    fn get(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a complete Arc (the writer only assigns one).
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = key;
    }
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertResolver")
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// The listener's TLS: the acceptor for connections and what reloads its certificate.
pub struct Tls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    resolver: Arc<CertResolver>,
    acceptor: TlsAcceptor,
    /// The files' stamps as they were just before the first load.
    loaded: Stamps,
}

impl Tls {
    /// Loads the certificate and key (an error stops start-up), warns when the key file is
    /// readable by group or others, and builds the rustls settings.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = Stamps::of(files);
        let first = load_certified_key(files, &provider)?;
        warn_if_key_readable(&files.key);
        tracing::info!(
            cert_file = %files.cert.display(),
            sha256 = %fingerprint(&first),
            "TLS certificate loaded"
        );
        let resolver = Arc::new(CertResolver {
            current: RwLock::new(Arc::new(first)),
        });
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Settings)?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // HTTP/1.1 is all the listener speaks: a client offering only h2 is refused in the
        // handshake rather than misunderstood after it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            files: files.clone(),
            provider,
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            loaded,
        })
    }

    /// The acceptor for new connections.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Re-reads both files and serves them from the next handshake on; on error the previous
    /// certificate stays. Returns the new certificate's SHA-256 fingerprint.
    pub fn reload(&self) -> Result<String, TlsError> {
        let key = load_certified_key(&self.files, &self.provider)?;
        let sha256 = fingerprint(&key);
        self.resolver.set(Arc::new(key));
        Ok(sha256)
    }

    /// The SHA-256 fingerprint of the certificate served now.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.resolver.get())
    }

    /// Reloads on SIGHUP (`hangup`, registered by the caller before the server says it
    /// listens) and when the files change; runs until the task is dropped.
    pub async fn watch(self: Arc<Self>, mut hangup: tokio::signal::unix::Signal) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A change between the first load and now is seen at the first tick.
        let mut seen = self.loaded;
        let mut signals = true;
        loop {
            let sighup = tokio::select! {
                _ = tick.tick() => false,
                s = hangup.recv(), if signals => {
                    // None: no signal can come any more; keep polling.
                    signals = s.is_some();
                    signals
                }
            };
            // Taken before reading, so a write that lands during the reload is seen next time.
            let now = Stamps::of(&self.files);
            if !sighup && now == seen {
                continue;
            }
            seen = now;
            let trigger = if sighup { "SIGHUP" } else { "file change" };
            match self.reload() {
                Ok(sha256) => tracing::info!(
                    trigger,
                    cert_file = %self.files.cert.display(),
                    sha256 = %sha256,
                    "TLS certificate reloaded"
                ),
                Err(e) => tracing::error!(
                    trigger,
                    error = %e,
                    "TLS certificate reload failed; still serving the previous certificate"
                ),
            }
        }
    }
}

/// What tells that a file changed: modification time, size, inode (of the symlink's target).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamps([Option<(SystemTime, u64, u64)>; 2]);

impl Stamps {
    fn of(files: &TlsFiles) -> Self {
        use std::os::unix::fs::MetadataExt;
        let stamp = |p: &Path| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len(), m.ino()))
        };
        Self([stamp(&files.cert), stamp(&files.key)])
    }
}

fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|error| TlsError::Read {
            path: path.to_owned(),
            error,
        })
}

/// The certificate chain (end-entity first) and the key, checked to belong together.
fn load_certified_key(
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| TlsError::Certificate(files.cert.clone()))?;
    let key_pem = read(&files.key)?;
    // The PEM parser's own errors may quote a line of the file: only say which file.
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Key(files.key.clone()))?;
    let mismatch = |e: rustls::Error| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    };
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(mismatch)?;
    let certified = CertifiedKey::new(chain, signer);
    // Strict: every key type the ring provider loads can say its public key.
    certified.keys_match().map_err(mismatch)?;
    Ok(certified)
}

/// SHA-256 of the end-entity certificate (public), for the log.
fn fingerprint(key: &CertifiedKey) -> String {
    key.cert
        .first()
        .map(|c| {
            ring::digest::digest(&ring::digest::SHA256, c.as_ref())
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .unwrap_or_default()
}

fn warn_if_key_readable(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = std::fs::metadata(path) {
        let mode = m.mode();
        if key_exposed(mode, m.gid(), nix::unistd::getegid().as_raw()) {
            tracing::warn!(
                key_file = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "the TLS key file is readable by other users (others, or a group the server is not in): chmod 600 it, or chgrp it to the server's group"
            );
        }
    }
}

/// True when users other than the server's own user and group can read a key file with this
/// mode and group. Group-readable is fine when the group is the server's own: Kubernetes mounts
/// Secret files as root:fsGroup 0440, which the operator cannot tighten.
fn key_exposed(mode: u32, file_gid: u32, server_gid: u32) -> bool {
    mode & 0o004 != 0 || (mode & 0o040 != 0 && file_gid != server_gid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_key_readable_by_the_servers_own_group_is_not_exposed() {
        assert!(!key_exposed(0o600, 0, 10001));
        // Kubernetes: root-owned, group fsGroup (the server's group), 0440.
        assert!(!key_exposed(0o440, 10001, 10001));
        assert!(key_exposed(0o440, 20, 10001));
        assert!(key_exposed(0o604, 10001, 10001));
        assert!(key_exposed(0o644, 10001, 10001));
    }

    /// A CA and a leaf for `localhost` signed by it: (leaf + CA chain PEM, leaf key PEM).
    fn issue(dir: &Path, name: &str) -> (TlsFiles, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, leaf.pem() + &ca.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        (files, key.serialize_pem())
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("rcrt-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_failed_reload_keeps_the_previous_certificate() {
        let dir = tempdir();
        let (files, _) = issue(&dir, "a");
        let (other, other_key) = issue(&dir, "b");
        let tls = Tls::load(&files).unwrap();
        let first = tls.fingerprint();
        assert_eq!(first.len(), 64);
        let body = |pem: &str| pem.lines().nth(1).unwrap().to_owned();

        // Another pair's key: refused, named, and no key text in the message.
        std::fs::copy(&other.key, &files.key).unwrap();
        let err = tls.reload().unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
        assert!(!err.to_string().contains(&body(&other_key)), "{err}");
        assert_eq!(tls.fingerprint(), first);

        // Not PEM, or a truncated key: refused, saying which file and nothing of its content.
        for junk in ["not a key\n", &other_key[..other_key.len() / 2]] {
            std::fs::write(&files.key, junk).unwrap();
            let err = tls.reload().unwrap_err();
            assert!(matches!(err, TlsError::Key(_)), "{err}");
            assert!(!err.to_string().contains(&body(&other_key)), "{err}");
            assert_eq!(tls.fingerprint(), first);
        }
        std::fs::write(&files.cert, "").unwrap();
        assert!(matches!(tls.reload(), Err(TlsError::Certificate(_))));
        std::fs::remove_file(&files.cert).unwrap();
        assert!(matches!(tls.reload(), Err(TlsError::Read { .. })));
        assert_eq!(tls.fingerprint(), first);

        // The other pair, whole: served from now on.
        std::fs::copy(&other.cert, &files.cert).unwrap();
        std::fs::copy(&other.key, &files.key).unwrap();
        let second = tls.reload().unwrap();
        assert_ne!(second, first);
        assert_eq!(tls.fingerprint(), second);
        assert!(Tls::load(&TlsFiles {
            cert: other.cert.clone(),
            key: files.cert.clone(),
        })
        .is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stamps_see_rewrites_and_replacements() {
        let dir = tempdir();
        let (files, _) = issue(&dir, "a");
        let (other, _) = issue(&dir, "b");
        let before = Stamps::of(&files);
        assert!(before == Stamps::of(&files));
        // A rename over the file (new inode), as `mv` or a secret mount does.
        std::fs::rename(&other.key, &files.key).unwrap();
        assert!(before != Stamps::of(&files));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
