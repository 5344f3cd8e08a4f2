//! The [`Keyring`]: a current KEK, old KEKs and an optional recovery KEK, each in any provider,
//! behind [`KeyProvider`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rcrt_crypto::{Dek, KekId, WrapContext, WrappedDek};

use crate::cache::DekCache;
use crate::guard::{CallObserver, Guarded, ObserverSlot, Op};
use crate::settings::{CacheSettings, CallSettings};
use crate::{KekBackend, KeyError, KeyProvider, LocalKek, ProviderKind};

/// A DEK wrapped under the recovery KEK, stored beside the row's main wrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryWrap {
    /// The recovery KEK's id.
    pub kek_id: KekId,
    /// The DEK wrapped under it (bound to the same row as the main wrap).
    pub wrapped: WrappedDek,
}

/// Whether the current KEK can be used now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekHealth {
    /// The current KEK's provider.
    pub provider: ProviderKind,
    /// False while its provider cannot be reached (circuit open).
    pub available: bool,
    /// Why not, when not (no secret in it).
    pub reason: Option<String>,
}

impl Default for KekHealth {
    fn default() -> Self {
        Self {
            provider: ProviderKind::Local,
            available: true,
            reason: None,
        }
    }
}

/// One KEK: local ones are called directly (no timeout, retry or lock on the hot path).
enum Slot {
    Local(LocalKek),
    Remote(Guarded),
}

impl Slot {
    fn backend_id(&self) -> &KekId {
        match self {
            Slot::Local(k) => k.id(),
            Slot::Remote(g) => g.backend().id(),
        }
    }

    fn unwrap_ids(&self) -> Vec<KekId> {
        match self {
            Slot::Local(k) => k.unwrap_ids(),
            Slot::Remote(g) => g.backend().unwrap_ids(),
        }
    }

    fn provider(&self) -> ProviderKind {
        match self {
            Slot::Local(_) => ProviderKind::Local,
            Slot::Remote(g) => g.backend().provider(),
        }
    }

    async fn wrap(&self, dek: &Dek, ctx: &WrapContext<'_>) -> Result<WrappedDek, KeyError> {
        match self {
            Slot::Local(k) => k.wrap(dek, ctx).await,
            Slot::Remote(g) => {
                let b = g.backend();
                g.run(Op::Wrap, || b.wrap(dek, ctx)).await
            }
        }
    }

    async fn unwrap(&self, wrapped: &WrappedDek, ctx: &WrapContext<'_>) -> Result<Dek, KeyError> {
        match self {
            Slot::Local(k) => k.unwrap(wrapped, ctx).await,
            Slot::Remote(g) => {
                let b = g.backend();
                g.run(Op::Unwrap, || b.unwrap(wrapped, ctx)).await
            }
        }
    }
}

/// A backend to put in a [`Keyring`].
pub enum KeySource {
    /// A KEK in process memory.
    Local(rcrt_crypto::Kek),
    /// A KEK in a remote provider (guarded by the keyring's call settings).
    Remote(Arc<dyn KekBackend>),
}

/// A current KEK, old KEKs kept for unwrapping, and an optional recovery KEK, each local or
/// remote.
pub struct Keyring {
    current: Slot,
    old: Vec<Slot>,
    recovery: Option<Slot>,
    cache: Option<DekCache>,
    /// Every id the ring unwraps, current first, with its slot (0: current, i + 1: old[i]).
    by_id: Vec<(KekId, usize)>,
    current_id: KekId,
    recovery_id: Option<KekId>,
    observer: ObserverSlot,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current_id)
            .field("ids", &self.kek_ids())
            .field("recovery", &self.recovery_id)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A keyring. Old KEKs that repeat the current one (or each other) are dropped.
    pub fn new(
        current: KeySource,
        old: Vec<KeySource>,
        recovery: Option<KeySource>,
        call: &CallSettings,
        cache: &CacheSettings,
    ) -> Self {
        let observer = ObserverSlot::default();
        let slot = |s: KeySource| match s {
            KeySource::Local(k) => Slot::Local(LocalKek::new(k)),
            KeySource::Remote(b) => Slot::Remote(Guarded::new(b, call.clone(), observer.clone())),
        };
        let current = slot(current);
        let current_id = current.backend_id().clone();
        // Every id the ring unwraps, with its slot (0: current, i + 1: old[i]), computed once:
        // the decrypt path looks its KEK up here without allocating.
        let mut by_id: Vec<(KekId, usize)> =
            current.unwrap_ids().into_iter().map(|id| (id, 0)).collect();
        let mut kept = Vec::new();
        for s in old.into_iter().map(slot) {
            let new_ids: Vec<KekId> = s
                .unwrap_ids()
                .into_iter()
                .filter(|id| !by_id.iter().any(|(known, _)| known == id))
                .collect();
            if !new_ids.is_empty() {
                kept.push(s);
                by_id.extend(new_ids.into_iter().map(|id| (id, kept.len())));
            }
        }
        // The recovery KEK only wraps: it is never in `ids` and never unwraps (`slot_for`), so
        // disabling the main KEK in its KMS still stops decrypts. In the "KMS lost" drill the
        // operator gives the recovered KEK as an old KEK instead.
        let recovery = recovery.map(slot);
        let recovery_id = recovery.as_ref().map(|r| r.backend_id().clone());
        let has_remote = std::iter::once(&current)
            .chain(kept.iter())
            .any(|s| matches!(s, Slot::Remote(_)));
        Self {
            current,
            old: kept,
            recovery,
            cache: match cache.ttl {
                Some(ttl) if has_remote => {
                    Some(DekCache::new(ttl, cache.max_entries, observer.clone()))
                }
                _ => None,
            },
            by_id,
            current_id,
            recovery_id,
            observer,
        }
    }

    /// Where each KEK lives, safe to log: (id, provider, description), current first.
    pub fn describe(&self) -> Vec<(KekId, ProviderKind, String)> {
        let d = |s: &Slot| match s {
            Slot::Local(k) => (k.id().clone(), ProviderKind::Local, k.describe()),
            Slot::Remote(g) => (
                g.backend().id().clone(),
                g.backend().provider(),
                g.backend().describe(),
            ),
        };
        std::iter::once(&self.current)
            .chain(self.old.iter())
            .chain(self.recovery.iter())
            .map(d)
            .collect()
    }

    /// The slot that unwraps `id`: the current KEK or an old one, never the recovery KEK.
    fn slot_for(&self, id: &KekId) -> Option<&Slot> {
        match self.by_id.iter().find(|(known, _)| known == id)?.1 {
            0 => Some(&self.current),
            i => self.old.get(i - 1),
        }
    }

    /// Probes the remote KEKs that new writes need, the current and the recovery KEK (a wrap
    /// and an unwrap each): called at start-up, by `rcrt kek check` and by
    /// [`Keyring::watch_health`]. Old KEKs are not probed: they only unwrap, and may be allowed
    /// no more than that; their circuits close on the first call that succeeds.
    pub async fn probe_all(&self) -> Vec<(KekId, Result<(), KeyError>)> {
        let mut out = Vec::new();
        for s in std::iter::once(&self.current).chain(self.recovery.iter()) {
            if let Slot::Remote(g) = s {
                out.push((g.backend().id().clone(), g.probe().await));
            }
        }
        out
    }

    /// Runs for ever: probes the current and recovery KEKs, every `interval` while they answer
    /// and every circuit cooldown while one does not, so that the circuit closes by itself when
    /// the provider comes back even if no request arrives (a pod that is not ready gets none);
    /// and drops expired DEKs from the cache.
    pub async fn watch_health(self: Arc<Self>, interval: Duration) {
        loop {
            let down = std::iter::once(&self.current)
                .chain(self.recovery.iter())
                .find_map(|s| match s {
                    Slot::Remote(g) if !g.is_available() => Some(g.cooldown()),
                    _ => None,
                });
            let mut wait = down.unwrap_or(interval);
            if let Some(cache) = &self.cache {
                wait = wait.min(cache.ttl().max(Duration::from_secs(1)));
            }
            tokio::time::sleep(wait).await;
            if let Some(cache) = &self.cache {
                cache.sweep();
            }
            for (id, r) in self.probe_all().await {
                if let Err(e) = r {
                    tracing::warn!(kek_id = %id, error = %e, "KEK provider probe failed");
                }
            }
        }
    }
}

#[async_trait]
impl KeyProvider for Keyring {
    fn current_kek_id(&self) -> &KekId {
        &self.current_id
    }

    fn kek_ids(&self) -> Vec<KekId> {
        self.by_id.iter().map(|(id, _)| id.clone()).collect()
    }

    fn can_unwrap(&self, id: &KekId) -> bool {
        self.by_id.iter().any(|(known, _)| known == id)
    }

    async fn wrap(&self, dek: &Dek, ctx: &WrapContext<'_>) -> Result<WrappedDek, KeyError> {
        if ctx.kek_id != &self.current_id {
            return Err(KeyError::UnknownKek(ctx.kek_id.clone()));
        }
        self.current.wrap(dek, ctx).await
    }

    async fn unwrap(&self, wrapped: &WrappedDek, ctx: &WrapContext<'_>) -> Result<Dek, KeyError> {
        let slot = self
            .slot_for(ctx.kek_id)
            .ok_or_else(|| KeyError::UnknownKek(ctx.kek_id.clone()))?;
        let cache = match slot {
            Slot::Remote(_) => self.cache.as_ref(),
            Slot::Local(_) => None,
        };
        if let Some(dek) = cache.and_then(|c| c.get(wrapped, ctx)) {
            return Ok(dek);
        }
        let dek = slot.unwrap(wrapped, ctx).await?;
        if let Some(c) = cache {
            c.put(wrapped, ctx, &dek);
        }
        Ok(dek)
    }

    fn recovery_kek_id(&self) -> Option<&KekId> {
        self.recovery_id.as_ref()
    }

    async fn wrap_recovery(
        &self,
        dek: &Dek,
        secret_id: &[u8; 16],
        version: i64,
    ) -> Result<Option<RecoveryWrap>, KeyError> {
        let (Some(slot), Some(id)) = (&self.recovery, &self.recovery_id) else {
            return Ok(None);
        };
        let ctx = WrapContext {
            kek_id: id,
            secret_id,
            version,
        };
        Ok(Some(RecoveryWrap {
            kek_id: id.clone(),
            wrapped: slot.wrap(dek, &ctx).await?,
        }))
    }

    fn observe_with(&self, observer: Arc<dyn CallObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Unavailable when the current KEK's circuit is open, or the recovery KEK's: every new DEK
    /// must also be wrapped under the recovery KEK, so writes fail without it.
    fn health(&self) -> KekHealth {
        for slot in std::iter::once(&self.current).chain(self.recovery.iter()) {
            if let Slot::Remote(g) = slot {
                if !g.is_available() {
                    return KekHealth {
                        provider: slot.provider(),
                        available: false,
                        reason: g.last_error(),
                    };
                }
            }
        }
        KekHealth {
            provider: self.current.provider(),
            ..KekHealth::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rcrt_crypto::Kek;
    use zeroize::Zeroizing;

    fn kek(b: u8) -> Kek {
        Kek::from_bytes(Zeroizing::new([b; 32]))
    }

    #[tokio::test]
    async fn wraps_under_current_and_recovery_unwraps_by_id() {
        let ring = Keyring::new(
            KeySource::Local(kek(2)),
            vec![KeySource::Local(kek(1)), KeySource::Local(kek(2))],
            Some(KeySource::Local(kek(9))),
            &CallSettings::default(),
            &CacheSettings::default(),
        );
        assert_eq!(
            ring.kek_ids().len(),
            2,
            "current and one old; never the recovery KEK"
        );
        assert!(!ring.can_unwrap(kek(9).id()));
        let id = [3u8; 16];
        let dek = Dek::from_unwrapped(Zeroizing::new([5; 32]));
        let cur = ring.current_kek_id().clone();
        let ctx = WrapContext {
            kek_id: &cur,
            secret_id: &id,
            version: 1,
        };
        let w = ring.wrap(&dek, &ctx).await.unwrap();
        let rec = ring.wrap_recovery(&dek, &id, 1).await.unwrap().unwrap();
        assert_eq!(&rec.kek_id, kek(9).id());
        // A running server never unwraps through the recovery KEK (the main KEK stays the kill
        // switch).
        let rctx = WrapContext {
            kek_id: &rec.kek_id,
            secret_id: &id,
            version: 1,
        };
        assert!(matches!(
            ring.unwrap(&rec.wrapped, &rctx).await,
            Err(KeyError::UnknownKek(_))
        ));
        // The recovery KEK alone (the drill: the current KEK is lost) opens the recovery wrap.
        let lost = Keyring::new(
            KeySource::Local(kek(4)),
            vec![KeySource::Local(kek(9))],
            None,
            &CallSettings::default(),
            &CacheSettings::default(),
        );
        assert_eq!(
            lost.unwrap(&rec.wrapped, &rctx)
                .await
                .unwrap()
                .expose_secret(),
            &[5; 32]
        );
        assert!(matches!(
            lost.unwrap(&w, &ctx).await,
            Err(KeyError::UnknownKek(_))
        ));
        // Bound to its row: the recovery wrap of version 1 does not open as version 2.
        let other = WrapContext { version: 2, ..rctx };
        assert!(matches!(
            lost.unwrap(&rec.wrapped, &other).await,
            Err(KeyError::Crypto(_))
        ));
        assert!(ring.health().available);
    }
}

#[cfg(test)]
mod health_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rcrt_crypto::Kek;
    use std::sync::atomic::{AtomicU32, Ordering};
    use zeroize::Zeroizing;

    /// A remote KEK whose provider is down; counts the calls it gets.
    struct Down {
        id: KekId,
        calls: AtomicU32,
    }

    #[async_trait]
    impl KekBackend for Down {
        fn id(&self) -> &KekId {
            &self.id
        }
        fn provider(&self) -> ProviderKind {
            ProviderKind::AwsKms
        }
        fn describe(&self) -> String {
            "down".into()
        }
        async fn wrap(&self, _: &Dek, _: &WrapContext<'_>) -> Result<WrappedDek, KeyError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Err(KeyError::Unavailable {
                kek_id: self.id.clone(),
                provider: ProviderKind::AwsKms,
                reason: "connection refused".into(),
            })
        }
        async fn unwrap(&self, _: &WrappedDek, _: &WrapContext<'_>) -> Result<Dek, KeyError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Err(KeyError::Unavailable {
                kek_id: self.id.clone(),
                provider: ProviderKind::AwsKms,
                reason: "connection refused".into(),
            })
        }
    }

    fn down(name: &str) -> Arc<Down> {
        Arc::new(Down {
            id: KekId::from_stored(format!("aws-kms:{name}")),
            calls: AtomicU32::new(0),
        })
    }

    fn call() -> CallSettings {
        CallSettings {
            retries: 0,
            ..CallSettings::default()
        }
    }

    #[tokio::test]
    async fn a_recovery_kek_that_is_down_makes_the_ring_unavailable() {
        let recovery = down("recovery");
        let ring = Keyring::new(
            KeySource::Local(Kek::from_bytes(Zeroizing::new([1; 32]))),
            vec![],
            Some(KeySource::Remote(recovery.clone())),
            &call(),
            &CacheSettings::default(),
        );
        assert!(ring.health().available);
        let results = ring.probe_all().await;
        assert_eq!(results.len(), 1);
        assert!(results[0].1.is_err());
        let health = ring.health();
        assert!(!health.available, "writes need the recovery KEK");
        assert_eq!(health.provider, ProviderKind::AwsKms);
    }

    #[tokio::test]
    async fn old_keks_are_not_probed() {
        let old = down("old");
        let ring = Keyring::new(
            KeySource::Local(Kek::from_bytes(Zeroizing::new([1; 32]))),
            vec![KeySource::Remote(old.clone())],
            None,
            &call(),
            &CacheSettings::default(),
        );
        assert!(ring.probe_all().await.is_empty());
        assert_eq!(old.calls.load(Ordering::SeqCst), 0);
        assert!(ring.health().available);
    }
}
