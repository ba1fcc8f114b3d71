//! TLS for the webhook port: rustls (TLS 1.2 and 1.3, modern suites only), ALPN h2 and
//! http/1.1, optional client-certificate verification, and a certificate that can be swapped
//! for new connections without a restart.

pub mod certs;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use certs::{CertError, CertPair};

/// Warn this long before the certificate expires.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Turns a PEM pair into a rustls key, refusing a certificate that does not match its key.
pub fn certified_key(pair: CertPair, cert: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    let signing = provider()
        .key_provider
        .load_private_key(pair.key)
        .map_err(|e| CertError::Invalid {
            path: key.to_path_buf(),
            message: e.to_string(),
        })?;
    let certified = CertifiedKey::new(pair.chain, signing);
    certified.keys_match().map_err(|e| CertError::Mismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(certified)
}

/// The serving certificate: read from files, swapped whole when they change.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    not_before: AtomicI64,
    not_after: AtomicI64,
    metrics: Option<Metrics>,
}

impl CertStore {
    /// Loads the pair at start. An expired or not-yet-valid certificate still starts the server
    /// (unready, see [`CertStore::validity_problem`]) so that probes and logs say what is wrong.
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        metrics: Option<Metrics>,
    ) -> Result<CertStore, CertError> {
        let pair = certs::read_pair(cert_path, key_path)?;
        let (not_before, not_after) = (pair.not_before, pair.not_after);
        let key = certified_key(pair, cert_path, key_path)?;
        let store = CertStore {
            current: ArcSwap::from_pointee(key),
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            not_before: AtomicI64::new(not_before),
            not_after: AtomicI64::new(not_after),
            metrics,
        };
        store.publish_expiry();
        Ok(store)
    }

    /// Unix time from which the serving certificate is valid.
    pub fn not_before(&self) -> i64 {
        self.not_before.load(Ordering::Relaxed)
    }

    /// Unix time at which the serving certificate expires.
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed)
    }

    pub fn is_expired(&self) -> bool {
        now_unix() >= self.not_after()
    }

    /// Why TLS clients would refuse the certificate served now (expired, not valid yet), if so.
    pub fn validity_problem(&self) -> Option<String> {
        let now = now_unix();
        let (not_before, not_after) = (self.not_before(), self.not_after());
        if now >= not_after {
            Some(format!(
                "expired: not after {not_after} ({} s ago)",
                now - not_after
            ))
        } else if now < not_before {
            Some(format!(
                "not valid yet: not before {not_before} (in {} s)",
                not_before - now
            ))
        } else {
            None
        }
    }

    /// Re-reads the files and serves the new pair. A pair that clients would refuse (unreadable,
    /// mismatched, expired, not valid yet) is refused and the current pair kept: swapping in an
    /// expired certificate would fail every handshake, and every replica sharing the Secret
    /// would leave the Service at once.
    pub fn reload(&self) -> Result<(), CertError> {
        let pair = certs::read_pair(&self.cert_path, &self.key_path)?;
        pair.check_validity(&self.cert_path, now_unix())?;
        let (not_before, not_after) = (pair.not_before, pair.not_after);
        let key = certified_key(pair, &self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(key));
        self.not_before.store(not_before, Ordering::Relaxed);
        self.not_after.store(not_after, Ordering::Relaxed);
        self.publish_expiry();
        info!(cert = %self.cert_path.display(), not_before, not_after, "serving certificate reloaded");
        Ok(())
    }

    /// [`CertStore::reload`], with a refusal logged at WARN and counted by reason. Returns how
    /// long to wait before trying the same files again: a certificate refused only because it
    /// is not valid yet is taken once it is (no file event may come to trigger it).
    pub fn reload_or_keep(&self) -> Option<Duration> {
        let error = self.reload().err()?;
        if let Some(m) = &self.metrics {
            m.certificate_reload_rejected
                .with_label_values(&[error.reason()])
                .inc();
        }
        warn!(
            error = %error,
            reason = error.reason(),
            "new certificate rejected; keeping the current one"
        );
        match error {
            CertError::NotYetValid { not_before, .. } => {
                let wait = (not_before - now_unix()).max(0) as u64 + 1;
                Some(Duration::from_secs(wait))
            }
            _ => None,
        }
    }

    fn publish_expiry(&self) {
        let not_after = self.not_after();
        if let Some(m) = &self.metrics {
            m.tls_not_after.set(not_after as f64);
        }
        let remaining = not_after - now_unix();
        if remaining <= 0 {
            error!(cert = %self.cert_path.display(), not_after, "serving certificate has expired");
        } else if remaining < EXPIRY_WARNING.as_secs() as i64 {
            warn!(
                cert = %self.cert_path.display(),
                days_left = remaining / 86_400,
                "serving certificate expires within 30 days"
            );
        }
        let not_before = self.not_before();
        if not_before > now_unix() {
            error!(cert = %self.cert_path.display(), not_before, "serving certificate is not valid yet");
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// The rustls server configuration: TLS 1.3 and 1.2 with the ring provider's AEAD suites,
/// ALPN h2 then http/1.1, and client certificates required when a client CA is given.
pub fn server_config(
    certs: Arc<CertStore>,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certs::read_bundle(path)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Config(format!("{}: {e}", path.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Watches the certificate and key files (a mounted Secret changes by a symlink swap in its
/// folder) and reloads after changes settle. Returns the watcher; dropping it stops watching.
pub fn watch(
    store: Arc<CertStore>,
    debounce: Duration,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    use notify::{RecursiveMode, Watcher};
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if !matches!(event.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(());
            }
        }
    })?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for file in [&store.cert_path, &store.key_path] {
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        if !dirs.contains(&dir) {
            watcher.watch(&dir, RecursiveMode::NonRecursive)?;
            dirs.push(dir);
        }
    }
    std::thread::Builder::new()
        .name("regate-cert-watch".into())
        .spawn(move || {
            use std::sync::mpsc::RecvTimeoutError;
            let mut retry_at: Option<std::time::Instant> = None;
            loop {
                let changed = match retry_at {
                    None => rx.recv().is_ok(),
                    Some(at) => {
                        let wait = at.saturating_duration_since(std::time::Instant::now());
                        match rx.recv_timeout(wait) {
                            Ok(()) => true,
                            Err(RecvTimeoutError::Timeout) => false,
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                };
                if changed {
                    while rx.recv_timeout(debounce).is_ok() {}
                } else if retry_at.is_none() {
                    break; // the watcher is gone
                }
                retry_at = store
                    .reload_or_keep()
                    .map(|wait| std::time::Instant::now() + wait);
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(watcher)
}
