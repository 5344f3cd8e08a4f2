use std::sync::atomic::{AtomicU64, Ordering};

/// Counters the server exports as Prometheus metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    decrypt_success: AtomicU64,
    decrypt_failures: AtomicU64,
}

impl Metrics {
    pub(crate) fn decrypt_ok(&self) {
        self.decrypt_success.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn decrypt_failed(&self) {
        self.decrypt_failures.fetch_add(1, Ordering::Relaxed);
    }
    /// Decrypts that released a value.
    pub fn decrypt_success_total(&self) -> u64 {
        self.decrypt_success.load(Ordering::Relaxed)
    }
    /// Decrypts whose stored ciphertext failed to decrypt (`rcrt_secret_decrypt_failures`).
    pub fn decrypt_failures_total(&self) -> u64 {
        self.decrypt_failures.load(Ordering::Relaxed)
    }
}
