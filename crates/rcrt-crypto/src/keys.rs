//! Key types. None derives `Debug`, `Display`, `Clone` or `Serialize`: every read of key bytes
//! goes through a named method, and every key is zeroized when dropped.

use std::fmt;

use rand::RngCore;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

use crate::error::CryptoError;

/// Length of a KEK and of a DEK in bytes (256 bits).
pub const KEK_LEN: usize = 32;

/// A data encryption key: 256 random bits, used for exactly one secret version.
pub struct Dek(Zeroizing<[u8; 32]>);

impl Dek {
    /// A fresh DEK. Randomness comes from `rand`'s thread-local ChaCha CSPRNG, which is seeded
    /// and periodically reseeded from the OS; see `docs/crypto.md` for why not one syscall per key.
    pub(crate) fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(key.as_mut());
        Self(key)
    }

    /// The key bytes, for a KEK provider that wraps them remotely (KMS, HSM).
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// Rebuilds a DEK from bytes a remote KEK provider unwrapped.
    pub fn from_unwrapped(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dek([REDACTED])")
    }
}

/// A KEK's public fingerprint: the first 8 bytes of HMAC-SHA-256(KEK, "rcrt kek id v1"), in hex.
///
/// Stored beside every wrapped DEK so that unwrapping picks its KEK without trial decryption.
/// It reveals nothing useful about the key (HMAC is a PRF) and is safe to log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KekId(String);

impl KekId {
    /// A KEK id read back from storage or given by a remote provider.
    pub fn from_stored(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key encryption key held in process memory (the `LOCAL_KEK_BASE64` provider).
pub struct Kek {
    key: Zeroizing<[u8; 32]>,
    id: KekId,
    /// The wrapping key schedule, set up once rather than per wrap.
    wrap_key: aws_lc_rs::aead::LessSafeKey,
}

impl Kek {
    /// Wraps 32 bytes of key material. The id is derived here, once.
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        let mac = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, bytes.as_ref()),
            b"rcrt kek id v1",
        );
        let id = KekId(hex::encode(&mac.as_ref()[..8]));
        // AES-256 accepts any 32 bytes, so setting up the key cannot fail.
        #[allow(clippy::expect_used)]
        let wrap_key = crate::format::wrap_key(&bytes).expect("a 32-byte AES-256-GCM-SIV key");
        Self {
            key: bytes,
            id,
            wrap_key,
        }
    }

    /// A new KEK from the operating system's random source.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .map_err(|_| CryptoError::Encrypt)?;
        Ok(Self::from_bytes(bytes))
    }

    /// This KEK's id.
    pub fn id(&self) -> &KekId {
        &self.id
    }

    /// The raw key, for the CLI's `kek generate` and Shamir split only.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.key
    }

    /// Wraps a DEK for the row named by `ctx`. `ctx.kek_id` must be this KEK's id.
    pub fn wrap(
        &self,
        dek: &Dek,
        ctx: &crate::WrapContext<'_>,
    ) -> Result<crate::WrappedDek, CryptoError> {
        crate::format::wrap_dek(&self.wrap_key, dek, ctx)
    }

    /// Unwraps a DEK; fails if the wrapped bytes, the KEK or the context do not match.
    pub fn unwrap(
        &self,
        wrapped: &crate::WrappedDek,
        ctx: &crate::WrapContext<'_>,
    ) -> Result<Dek, CryptoError> {
        crate::format::unwrap_dek(&self.wrap_key, wrapped, ctx)
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

/// A decrypted secret value. Zeroized on drop; `Debug` is redacted.
pub struct Plaintext(Zeroizing<Vec<u8>>);

impl Plaintext {
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The value's bytes. Call only to hand the value to its authorized reader.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Takes the bytes out, leaving an empty (zeroized) buffer behind.
    pub fn into_inner(mut self) -> Zeroizing<Vec<u8>> {
        let out = Zeroizing::new(std::mem::take(&mut *self.0));
        self.0.zeroize();
        out
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Plaintext([REDACTED])")
    }
}
