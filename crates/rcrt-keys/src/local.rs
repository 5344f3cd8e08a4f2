//! The `local` provider: KEKs in process memory (`LOCAL_KEK_BASE64`, `LOCAL_KEK_BASE64_OLD`).

use async_trait::async_trait;
use rcrt_crypto::{Dek, Kek, KekId, WrapContext, WrappedDek};

use crate::{KekBackend, KeyError, KeyProvider, ProviderKind};

/// One KEK held in process memory, as a [`KekBackend`] (the `local` provider).
#[derive(Debug)]
pub struct LocalKek(Kek);

impl LocalKek {
    /// Wraps a KEK.
    pub fn new(kek: Kek) -> Self {
        Self(kek)
    }
}

#[async_trait]
impl KekBackend for LocalKek {
    fn id(&self) -> &KekId {
        self.0.id()
    }

    fn provider(&self) -> ProviderKind {
        ProviderKind::Local
    }

    fn describe(&self) -> String {
        format!("local KEK {}", self.0.id())
    }

    async fn wrap(&self, dek: &Dek, ctx: &WrapContext<'_>) -> Result<WrappedDek, KeyError> {
        if ctx.kek_id != self.0.id() {
            return Err(KeyError::UnknownKek(ctx.kek_id.clone()));
        }
        Ok(self.0.wrap(dek, ctx)?)
    }

    async fn unwrap(&self, wrapped: &WrappedDek, ctx: &WrapContext<'_>) -> Result<Dek, KeyError> {
        if ctx.kek_id != self.0.id() {
            return Err(KeyError::UnknownKek(ctx.kek_id.clone()));
        }
        Ok(self.0.unwrap(wrapped, ctx)?)
    }

    async fn probe(&self) -> Result<(), KeyError> {
        Ok(())
    }
}

/// KEKs held in process memory: one current KEK and any number of old ones kept for rotation.
#[derive(Debug)]
pub struct LocalKeyring {
    current: Kek,
    old: Vec<Kek>,
    /// True when an old KEK was the current one again (dropped): worth a warning at start-up.
    current_also_old: bool,
}

impl LocalKeyring {
    /// A keyring with a current KEK and old KEKs (duplicates, and copies of the current one,
    /// are dropped and wiped). The keys stay where they are: a [`Kek`] keeps its key on the
    /// heap, so the moves here copy pointers, not key bytes.
    pub fn new(current: Kek, mut old: Vec<Kek>) -> Self {
        let current_also_old = old.iter().any(|k| k.id() == current.id());
        let mut seen = vec![current.id().clone()];
        old.retain(|k| {
            let fresh = !seen.contains(k.id());
            if fresh {
                seen.push(k.id().clone());
            }
            fresh
        });
        Self {
            current,
            old,
            current_also_old,
        }
    }

    /// True when the current KEK was also given among the old ones (it is kept once). Usually
    /// a rotation slip: the new KEK copied into `LOCAL_KEK_BASE64_OLD` instead of the previous
    /// one, which then cannot unwrap the DEKs still under it.
    pub fn current_also_old(&self) -> bool {
        self.current_also_old
    }

    /// The current KEK.
    pub fn current(&self) -> &Kek {
        &self.current
    }

    /// The old KEKs, kept for unwrapping.
    pub fn old_keys(&self) -> &[Kek] {
        &self.old
    }

    /// Splits the keyring into its KEKs, current first.
    pub fn into_keys(self) -> (Kek, Vec<Kek>) {
        (self.current, self.old)
    }

    fn find(&self, id: &KekId) -> Option<&Kek> {
        std::iter::once(&self.current)
            .chain(self.old.iter())
            .find(|k| k.id() == id)
    }
}

#[async_trait]
impl KeyProvider for LocalKeyring {
    fn current_kek_id(&self) -> &KekId {
        self.current.id()
    }

    fn kek_ids(&self) -> Vec<KekId> {
        std::iter::once(&self.current)
            .chain(self.old.iter())
            .map(|k| k.id().clone())
            .collect()
    }

    async fn wrap(&self, dek: &Dek, ctx: &WrapContext<'_>) -> Result<WrappedDek, KeyError> {
        if ctx.kek_id != self.current.id() {
            return Err(KeyError::UnknownKek(ctx.kek_id.clone()));
        }
        Ok(self.current.wrap(dek, ctx)?)
    }

    async fn unwrap(&self, wrapped: &WrappedDek, ctx: &WrapContext<'_>) -> Result<Dek, KeyError> {
        let kek = self
            .find(ctx.kek_id)
            .ok_or_else(|| KeyError::UnknownKek(ctx.kek_id.clone()))?;
        Ok(kek.unwrap(wrapped, ctx)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use zeroize::Zeroizing;

    fn kek(b: u8) -> Kek {
        Kek::from_bytes(Zeroizing::new([b; 32]))
    }

    #[tokio::test]
    async fn unwraps_by_id_with_old_keys() {
        let id = [1u8; 16];
        let old = LocalKeyring::new(kek(1), vec![]);
        let (dek, _) = rcrt_crypto::seal_value(
            b"x",
            &rcrt_crypto::ValueContext {
                tenant: "t",
                secret_id: &id,
                version: 1,
            },
        )
        .unwrap();
        let ctx = WrapContext {
            kek_id: old.current_kek_id(),
            secret_id: &id,
            version: 1,
        };
        let wrapped = old.wrap(&dek, &ctx).await.unwrap();

        let rotated = LocalKeyring::new(kek(2), vec![kek(1), kek(2), kek(1)]);
        assert_eq!(rotated.kek_ids().len(), 2);
        assert!(rotated.current_also_old());
        assert!(!LocalKeyring::new(kek(2), vec![kek(1), kek(1)]).current_also_old());
        let back = rotated.unwrap(&wrapped, &ctx).await.unwrap();
        assert_eq!(back.expose_secret(), dek.expose_secret());
        // Wrapping is only under the current KEK.
        assert!(matches!(
            rotated.wrap(&dek, &ctx).await,
            Err(KeyError::UnknownKek(_))
        ));
        let alone = LocalKeyring::new(kek(2), vec![]);
        assert!(!alone.can_unwrap(ctx.kek_id));
        assert!(matches!(
            alone.unwrap(&wrapped, &ctx).await,
            Err(KeyError::UnknownKek(_))
        ));
    }
}
