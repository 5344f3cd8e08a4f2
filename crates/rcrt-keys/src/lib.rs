//! KEK providers behind one trait, and the parsing of KEK material.
//!
//! What it does: [`KeyProvider`] is the one interface the service uses to wrap and unwrap DEKs;
//! [`LocalKeyring`] implements it with KEKs held in memory (`LOCAL_KEK_BASE64` and old KEKs kept
//! for rotation). [`load_local_keyring`] turns the guide's variables into a keyring with the
//! guide's exact error messages. What it does not do: read the process environment itself (the
//! server's config module and the CLI pass a lookup in) or store anything.
//!
//! The trait is async and fallible because the providers still to come (AWS KMS, Vault Transit,
//! PKCS#11 HSMs) are remote.

mod local;
mod parse;

use async_trait::async_trait;
use rcrt_crypto::{CryptoError, Dek, KekId, WrapContext, WrappedDek};

pub use local::LocalKeyring;
pub use parse::{
    load_local_keyring, parse_kek, refuse_published_example, KekError, KekSources,
    PUBLISHED_EXAMPLE_KEK_ID,
};

/// Why a wrap or unwrap failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No configured KEK has this id.
    #[error("no configured KEK has id {0}")]
    UnknownKek(KekId),
    /// The AEAD rejected the input (tampering, or the wrong row).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Wraps and unwraps DEKs under KEKs it holds or can reach.
#[async_trait]
pub trait KeyProvider: Send + Sync + 'static {
    /// The KEK that wraps every new DEK.
    fn current_kek_id(&self) -> &KekId;

    /// Every KEK id this provider can unwrap with, the current one first.
    fn kek_ids(&self) -> Vec<KekId>;

    /// Wraps `dek` under the current KEK; `ctx.kek_id` must be [`KeyProvider::current_kek_id`].
    async fn wrap(&self, dek: &Dek, ctx: &WrapContext<'_>) -> Result<WrappedDek, KeyError>;

    /// Unwraps with the KEK named by `ctx.kek_id` (no trial decryption).
    async fn unwrap(&self, wrapped: &WrappedDek, ctx: &WrapContext<'_>) -> Result<Dek, KeyError>;

    /// True if this provider can unwrap DEKs wrapped under `id`.
    fn can_unwrap(&self, id: &KekId) -> bool {
        self.kek_ids().iter().any(|k| k == id)
    }
}
