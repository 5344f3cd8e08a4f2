//! KEK providers behind one trait, and the parsing of KEK material.
//!
//! What it does: [`KeyProvider`] is the one interface the service uses to wrap and unwrap DEKs.
//! Each place a KEK can live is a [`KekBackend`] in a module of its own: [`local`] (KEKs in
//! process memory, from `LOCAL_KEK_BASE64`), [`pkcs11`] (an HSM), [`aws_kms`], [`vault`]
//! (Transit, and the KV read of the guide's flow) and [`azure`] (Key Vault). A [`Keyring`] puts
//! a current backend, old ones and an optional recovery KEK behind [`KeyProvider`], with
//! timeouts, bounded retries, a circuit breaker and an optional DEK cache for the remote ones
//! ([`guard`], [`cache`]). [`load_local_keyring`] turns the guide's variables into a keyring
//! with the guide's exact error messages. What it does not do: read the process environment
//! itself (the server's config module and the CLI pass a lookup in) or store anything.

pub mod aws_kms;
pub mod azure;
pub mod cache;
pub mod guard;
mod keyring;
pub mod local;
mod parse;
pub mod pkcs11;
mod plan;
pub mod settings;
pub mod vault;

use async_trait::async_trait;
use rcrt_crypto::{CryptoError, Dek, KekId, WrapContext, WrappedDek};

pub use keyring::{KekHealth, KeySource, Keyring, RecoveryWrap};
pub use local::{LocalKek, LocalKeyring};
pub use parse::{
    load_local_keyring, load_local_old, local_current_given, parse_kek, refuse_published_example,
    KekError, KekSources, PUBLISHED_EXAMPLE_KEK_ID,
};
pub use plan::{KekPlan, KeyringError, RecoverySource};
pub use settings::{build_backend, KekSpec, ProviderKind, ProviderSettings};

/// Why a wrap or unwrap failed. Messages never hold key material or credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No configured KEK has this id.
    #[error("no configured KEK has id {0}")]
    UnknownKek(KekId),
    /// The AEAD rejected the input (tampering, the wrong row, the wrong associated data). For a
    /// remote provider: the provider answered and refused the ciphertext itself.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The provider holding this KEK could not be reached or did not answer in time (network,
    /// timeout, throttling, 5xx, a failed HSM session). Worth retrying; nothing is wrong with
    /// the data.
    #[error("KEK {kek_id} ({provider}) is unavailable: {reason}")]
    Unavailable {
        /// The KEK.
        kek_id: KekId,
        /// Its provider.
        provider: ProviderKind,
        /// What went wrong (no secret in it).
        reason: String,
    },
    /// The provider answered but refused the operation for a reason retrying will not fix
    /// (no permission, key disabled or deleted, wrong key type). Nothing is wrong with the
    /// data either: the operator must fix the provider.
    #[error("KEK {kek_id} ({provider}) refused the operation: {reason}")]
    Refused {
        /// The KEK.
        kek_id: KekId,
        /// Its provider.
        provider: ProviderKind,
        /// What the provider said (no secret in it).
        reason: String,
    },
    /// The circuit for this KEK is open after repeated failures: calls fail fast until a probe
    /// succeeds.
    #[error("KEK {kek_id} ({provider}) is unavailable: too many recent failures, retrying in the background")]
    CircuitOpen {
        /// The KEK.
        kek_id: KekId,
        /// Its provider.
        provider: ProviderKind,
    },
    /// A provider could not be set up (bad settings, unreadable credentials file, key not
    /// found at start).
    #[error("{0}")]
    Config(String),
}

impl KeyError {
    /// True when the KEK's provider could not be used but the data may be fine (503
    /// `kek_unavailable`, never a decrypt failure).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::UnknownKek(_)
                | Self::Unavailable { .. }
                | Self::Refused { .. }
                | Self::CircuitOpen { .. }
        )
    }
}

/// One KEK in one provider: what each provider module implements. The [`Keyring`] adds
/// timeouts, retries, the circuit and the cache around it, so a backend makes one attempt per
/// call and reports [`KeyError::Unavailable`] for what is worth retrying.
#[async_trait]
pub trait KekBackend: Send + Sync + 'static {
    /// The id new wraps carry (stable per key; see `docs/crypto.md`, "KEK id").
    fn id(&self) -> &KekId;

    /// Every id this backend can unwrap, [`KekBackend::id`] first (a provider with key
    /// versions of its own may unwrap older versions under other ids).
    fn unwrap_ids(&self) -> Vec<KekId> {
        vec![self.id().clone()]
    }

    /// Which provider holds the key (metrics, logs).
    fn provider(&self) -> ProviderKind;

    /// A description safe to log: the key's reference in its provider (label, ARN, URL),
    /// never a credential.
    fn describe(&self) -> String;

    /// Wraps `dek` for the row in `ctx` (`ctx.kek_id` is [`KekBackend::id`]).
    async fn wrap(&self, dek: &Dek, ctx: &WrapContext<'_>) -> Result<WrappedDek, KeyError>;

    /// Unwraps a DEK this backend wrapped for the row in `ctx`.
    async fn unwrap(&self, wrapped: &WrappedDek, ctx: &WrapContext<'_>) -> Result<Dek, KeyError>;

    /// A cheap check that the key is usable now (the circuit's half-open probe). The default
    /// wraps and unwraps a throwaway DEK.
    async fn probe(&self) -> Result<(), KeyError> {
        probe_by_round_trip(self).await
    }
}

/// Wraps and unwraps a throwaway DEK under `backend` (the default [`KekBackend::probe`]).
pub async fn probe_by_round_trip<B: KekBackend + ?Sized>(backend: &B) -> Result<(), KeyError> {
    let id = [0u8; 16];
    let (dek, _) = rcrt_crypto::seal_value(
        b"",
        &rcrt_crypto::ValueContext {
            tenant: "rcrt/probe",
            secret_id: &id,
            version: 0,
        },
    )?;
    let kek_id = backend.id().clone();
    let ctx = WrapContext {
        kek_id: &kek_id,
        secret_id: &id,
        version: 0,
    };
    let wrapped = backend.wrap(&dek, &ctx).await?;
    let back = backend.unwrap(&wrapped, &ctx).await?;
    if back.expose_secret() != dek.expose_secret() {
        return Err(KeyError::Crypto(CryptoError::Decrypt));
    }
    Ok(())
}

/// A KEK id for a key held by a remote provider: `<provider>:<16 hex>`, the hex being the first
/// 8 bytes of SHA-256 over the provider name and the key's canonical reference (and version,
/// where the provider versions keys). Stable per key, names its provider, reveals only a hash
/// of the reference.
pub fn remote_kek_id(provider: ProviderKind, canonical_ref: &str) -> KekId {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"rcrt remote kek id v1\0");
    ctx.update(provider.as_str().as_bytes());
    ctx.update(b"\0");
    ctx.update(canonical_ref.as_bytes());
    let digest = ctx.finish();
    KekId::from_stored(format!(
        "{}:{}",
        provider.as_str(),
        hex::encode(&digest.as_ref()[..8])
    ))
}

/// Wrapped-DEK algorithm ids (the header's second byte) of the remote providers, so that no two
/// providers share one. The local KEK's AES-256-GCM-SIV is `0x03` (in `rcrt-crypto`).
pub mod alg {
    /// PKCS#11 CKM_AES_GCM: nonce (12) | ciphertext (32) | tag (16).
    pub const PKCS11_AES_GCM: u8 = 0x10;
    /// Reserved for PKCS#11 CKM_AES_KEY_WRAP_PAD (RFC 5649), for HSMs that refuse
    /// caller-supplied GCM IVs; nothing writes it yet.
    pub const PKCS11_AES_KWP: u8 = 0x11;
    /// AWS KMS: KMS's ciphertext blob.
    pub const AWS_KMS: u8 = 0x20;
    /// Vault Transit: the `vault:vN:...` ciphertext text.
    pub const VAULT_TRANSIT: u8 = 0x30;
    /// Azure Key Vault RSA-OAEP-256: key id (with version) and the wrapped key.
    pub const AZURE_RSA_OAEP_256: u8 = 0x40;
    /// Azure Managed HSM A256KW: key id (with version) and the wrapped key.
    pub const AZURE_AES_KW: u8 = 0x41;
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

    /// The recovery KEK's id, if one is configured: every new DEK is also wrapped under it.
    fn recovery_kek_id(&self) -> Option<&KekId> {
        None
    }

    /// Wraps `dek` under the recovery KEK too (`None` when there is none). `secret_id` and
    /// `version` name the row, as in [`WrapContext`].
    async fn wrap_recovery(
        &self,
        _dek: &Dek,
        _secret_id: &[u8; 16],
        _version: i64,
    ) -> Result<Option<RecoveryWrap>, KeyError> {
        Ok(None)
    }

    /// Sends what remote KEK calls do (latency, errors, circuit, cache) to `observer`, for
    /// metrics. Set once; later calls are ignored. A keyring without remote KEKs never calls it.
    fn observe_with(&self, _observer: std::sync::Arc<dyn guard::CallObserver>) {}

    /// Whether the current KEK can be used right now (its provider reachable, its circuit
    /// closed). A local KEK always can.
    fn health(&self) -> KekHealth {
        KekHealth::default()
    }
}
