//! RCRT envelope encryption: a fresh DEK per secret version seals the value, a KEK wraps the DEK.
//!
//! What it does: key types that zeroize on drop and never print, the versioned byte formats of a
//! sealed value and a wrapped DEK (see `docs/crypto.md`), and the associated data that binds each
//! ciphertext to the row it belongs to. What it does not do: I/O of any kind, key storage, or
//! choosing which KEK to use (that is `rcrt-keys`). Every primitive comes from `aws-lc-rs`
//! (AES-256-GCM, AES-256-GCM-SIV) and `ring` (HMAC-SHA-256, the OS random source).

mod aad;
mod error;
mod format;
mod keys;
mod token;

pub use aad::{ValueContext, WrapContext};
pub use error::CryptoError;
pub use format::{SealedValue, WrappedDek, FORMAT_VERSION};
pub use keys::{Dek, Kek, KekId, Plaintext, KEK_LEN};
pub use token::{ServiceToken, TokenFormatError, TokenHash, TOKEN_LEN, TOKEN_PREFIX};

/// Seals `plaintext` under a fresh DEK. Returns the DEK (to be wrapped) and the sealed value.
pub fn seal_value(
    plaintext: &[u8],
    ctx: &ValueContext<'_>,
) -> Result<(Dek, SealedValue), CryptoError> {
    format::seal_value(plaintext, ctx)
}

/// Opens a sealed value with its (unwrapped) DEK. Fails if either was altered or moved.
pub fn open_value(
    dek: &Dek,
    sealed: &SealedValue,
    ctx: &ValueContext<'_>,
) -> Result<Plaintext, CryptoError> {
    format::open_value(dek, sealed, ctx)
}
