use std::sync::atomic::{AtomicU64, Ordering};

use rcrt_store::{PoolStatus, StoreError};

use crate::Service;

/// Counters the server exports as Prometheus metrics. Plain atomics: the core counts, the
/// server's exporter reads them at each scrape, so the core depends on no metrics library.
#[derive(Debug, Default)]
pub struct Metrics {
    decrypt_success: AtomicU64,
    decrypt_failures: AtomicU64,
    kek_unavailable: AtomicU64,
    audit_write_failures: AtomicU64,
}

impl Metrics {
    pub(crate) fn decrypt_ok(&self) {
        self.decrypt_success.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn decrypt_failed(&self) {
        self.decrypt_failures.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn kek_unavailable(&self) {
        self.kek_unavailable.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts an audit row the store did not write: a failure row's append, a decrypt's row, or
    /// an audited write (whose row goes in the same transaction). A name clash or a lost
    /// compare-and-swap is the store refusing the write on purpose, not a failed audit write.
    pub(crate) fn audit_write_failed(&self, error: &StoreError) {
        if !matches!(error, StoreError::NameTaken | StoreError::VersionConflict) {
            self.audit_write_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    /// Decrypts that released a value.
    pub fn decrypt_success_total(&self) -> u64 {
        self.decrypt_success.load(Ordering::Relaxed)
    }
    /// Decrypts whose stored ciphertext failed to decrypt (`rcrt_secret_decrypt_failures`):
    /// tampering or a storage fault. A DEK under a KEK this server does not hold is not
    /// counted here (the data is fine; see [`Metrics::kek_unavailable_total`]), so the guide's
    /// tampering alert stays about tampering.
    pub fn decrypt_failures_total(&self) -> u64 {
        self.decrypt_failures.load(Ordering::Relaxed)
    }
    /// Decrypts refused because the DEK is wrapped under a KEK the provider does not hold
    /// (`rcrt_kek_unavailable_total`), each answered 503 `kek_unavailable`.
    pub fn kek_unavailable_total(&self) -> u64 {
        self.kek_unavailable.load(Ordering::Relaxed)
    }
    /// Audit rows that could not be written (`rcrt_audit_write_failures_total`); each such
    /// request was refused (503) rather than served unaudited.
    pub fn audit_write_failures_total(&self) -> u64 {
        self.audit_write_failures.load(Ordering::Relaxed)
    }
}

impl Service {
    /// The store's connection pool right now (`rcrt_store_pool_*`).
    pub fn pool_status(&self) -> PoolStatus {
        self.store.pool_status()
    }
}
