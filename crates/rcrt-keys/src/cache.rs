//! A cache of unwrapped DEKs, for providers where each unwrap is a network call or an HSM
//! operation. Off by default.
//!
//! The trade-off (docs/kms.md): a cached DEK outlives a KMS key disable or a revoked grant by
//! at most the TTL, and cached DEKs sit in process memory (wiped on eviction and on drop). The
//! key of an entry is the whole wrap context (KEK id, secret id, version) and the wrapped bytes,
//! so a wrapped DEK copied to another row never hits another row's entry: the provider's
//! associated-data check still runs for every row once per TTL.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;
use rcrt_crypto::{Dek, WrapContext, WrappedDek};
use zeroize::Zeroizing;

use crate::guard::ObserverSlot;

struct Entry {
    dek: Zeroizing<[u8; 32]>,
    at: Instant,
}

/// Unwrapped DEKs by wrap context and wrapped bytes; least recently used evicted first.
pub struct DekCache {
    ttl: Duration,
    entries: Mutex<LruCache<Vec<u8>, Entry>>,
    observer: ObserverSlot,
}

impl DekCache {
    /// A cache of at most `max_entries` DEKs, each kept at most `ttl`.
    pub fn new(ttl: Duration, max_entries: usize, observer: ObserverSlot) -> Self {
        let cap = NonZeroUsize::new(max_entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            ttl,
            entries: Mutex::new(LruCache::new(cap)),
            observer,
        }
    }

    fn observe(&self, result: &'static str) {
        if let Some(o) = self.observer.get() {
            o.cache(result);
        }
    }

    fn key(wrapped: &WrappedDek, ctx: &WrapContext<'_>) -> Vec<u8> {
        let id = ctx.kek_id.as_str().as_bytes();
        let w = wrapped.as_bytes();
        let mut k = Vec::with_capacity(4 + id.len() + 16 + 8 + w.len());
        k.extend_from_slice(&(id.len() as u32).to_be_bytes());
        k.extend_from_slice(id);
        k.extend_from_slice(ctx.secret_id);
        k.extend_from_slice(&ctx.version.to_be_bytes());
        k.extend_from_slice(w);
        k
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Vec<u8>, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The DEK for this row, if cached and fresh.
    pub fn get(&self, wrapped: &WrappedDek, ctx: &WrapContext<'_>) -> Option<Dek> {
        let key = Self::key(wrapped, ctx);
        let mut entries = self.lock();
        let hit = match entries.get(&key) {
            Some(e) if e.at.elapsed() < self.ttl => {
                Some(Dek::from_unwrapped(Zeroizing::new(*e.dek)))
            }
            Some(_) => {
                // Expired: dropping the entry wipes it.
                entries.pop(&key);
                None
            }
            None => None,
        };
        drop(entries);
        self.observe(if hit.is_some() { "hit" } else { "miss" });
        hit
    }

    /// Keeps a copy of `dek` for this row.
    pub fn put(&self, wrapped: &WrappedDek, ctx: &WrapContext<'_>, dek: &Dek) {
        let entry = Entry {
            dek: Zeroizing::new(*dek.expose_secret()),
            at: Instant::now(),
        };
        let evicted = self.lock().push(Self::key(wrapped, ctx), entry);
        if evicted.is_some() {
            self.observe("evicted");
        }
    }

    /// How long an entry may be used.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Drops (and so wipes) every expired entry. Lookups drop the expired entries they meet;
    /// this catches the rest, so DEKs do not stay in memory past the TTL on a quiet server.
    pub fn sweep(&self) {
        let mut entries = self.lock();
        let expired: Vec<Vec<u8>> = entries
            .iter()
            .filter(|(_, e)| e.at.elapsed() >= self.ttl)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            entries.pop(key);
        }
    }

    /// How many entries are held (tests, metrics).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rcrt_crypto::KekId;

    fn dek() -> Dek {
        Dek::from_unwrapped(Zeroizing::new(rand::random()))
    }

    #[test]
    fn keyed_by_row_bounded_and_expiring() {
        let cache = DekCache::new(Duration::from_millis(80), 2, ObserverSlot::default());
        let kek = KekId::from_stored("aws-kms:00");
        let w = WrappedDek::from_stored(vec![1, 2, 3]);
        let ctx = |v| WrapContext {
            kek_id: &kek,
            secret_id: &[7; 16],
            version: v,
        };
        let d1 = dek();
        cache.put(&w, &ctx(1), &d1);
        assert_eq!(
            cache.get(&w, &ctx(1)).unwrap().expose_secret(),
            d1.expose_secret()
        );
        // The same wrapped bytes under another row's context miss.
        assert!(cache.get(&w, &ctx(2)).is_none());
        cache.put(&w, &ctx(2), &dek());
        cache.put(&w, &ctx(3), &dek());
        assert_eq!(cache.len(), 2, "bounded");
        assert!(
            cache.get(&w, &ctx(1)).is_none(),
            "least recently used evicted"
        );
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(cache.len(), 2, "expired entries stay until met or swept");
        cache.sweep();
        assert!(cache.is_empty(), "the sweep drops every expired entry");
        cache.put(&w, &ctx(3), &dek());
        cache.sweep();
        assert_eq!(cache.len(), 1, "a fresh entry survives the sweep");
        std::thread::sleep(Duration::from_millis(100));
        assert!(cache.get(&w, &ctx(3)).is_none(), "expired");
    }
}
