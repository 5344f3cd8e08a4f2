//! The byte formats (also in `docs/crypto.md`).
//!
//! Sealed value: `0x01 version | 0x01 alg AES-256-GCM | nonce (12) | ciphertext | tag (16)`.
//! Wrapped DEK:  `0x01 version | 0x03 alg AES-256-GCM-SIV | nonce (12) | DEK ciphertext (32) | tag (16)`.
//! The two header bytes are part of the associated data, so they cannot be changed either.

use aws_lc_rs::aead::{
    Aad as SivAad, LessSafeKey as SivKey, Nonce as SivNonce, UnboundKey as SivUnboundKey,
    AES_256_GCM_SIV,
};
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

use crate::aad::{ValueContext, WrapContext};
use crate::error::CryptoError;
use crate::keys::{Dek, Plaintext};

/// The envelope format version written by this build.
pub const FORMAT_VERSION: u8 = 1;
const ALG_AES_256_GCM: u8 = 1;
/// Algorithm 2 (XChaCha20-Poly1305) was used by pre-release builds only and is not read.
const ALG_AES_256_GCM_SIV: u8 = 3;
const GCM_NONCE: usize = 12;
const TAG: usize = 16;
const WRAPPED_LEN: usize = 2 + GCM_NONCE + 32 + TAG;

/// A secret value sealed under its DEK, in the versioned format above.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedValue(Vec<u8>);

impl SealedValue {
    /// Bytes read back from storage (checked when opened).
    pub fn from_stored(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedValue({} bytes)", self.0.len())
    }
}

/// A DEK wrapped under a KEK, in the versioned format above.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDek(Vec<u8>);

impl WrappedDek {
    /// Bytes read back from storage (checked when unwrapped).
    pub fn from_stored(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for WrappedDek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WrappedDek({} bytes)", self.0.len())
    }
}

fn gcm_key(dek: &Dek) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, dek.expose_secret())
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::Encrypt)
}

pub(crate) fn seal_value(
    dek: &Dek,
    plaintext: &[u8],
    ctx: &ValueContext<'_>,
) -> Result<SealedValue, CryptoError> {
    let header = [FORMAT_VERSION, ALG_AES_256_GCM];
    let mut nonce = [0u8; GCM_NONCE];
    // Each DEK seals exactly one value, so even a repeated nonce could not reuse a (key, nonce)
    // pair; the random nonce is defence in depth.
    rand::rng().fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(2 + GCM_NONCE + plaintext.len() + TAG);
    out.extend_from_slice(&header);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = gcm_key(dek)?
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(ctx.encode(&header)),
            &mut out[2 + GCM_NONCE..],
        )
        .map_err(|_| CryptoError::Encrypt)?;
    out.extend_from_slice(tag.as_ref());
    Ok(SealedValue(out))
}

pub(crate) fn open_value(
    dek: &Dek,
    sealed: &SealedValue,
    ctx: &ValueContext<'_>,
) -> Result<Plaintext, CryptoError> {
    let bytes = sealed.as_bytes();
    if bytes.len() < 2 + GCM_NONCE + TAG {
        return Err(CryptoError::Format("sealed value too short"));
    }
    let (header, rest) = bytes.split_at(2);
    if header != [FORMAT_VERSION, ALG_AES_256_GCM] {
        return Err(CryptoError::Format(
            "unknown sealed value version or algorithm",
        ));
    }
    let (nonce, ciphertext) = rest.split_at(GCM_NONCE);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Decrypt)?;
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let key = gcm_key(dek).map_err(|_| CryptoError::Decrypt)?;
    let len = key
        .open_in_place(nonce, Aad::from(ctx.encode(header)), buf.as_mut_slice())
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    buf.truncate(len);
    Ok(Plaintext::new(std::mem::take(&mut *buf)))
}

/// The KEK as an AES-256-GCM-SIV key, set up once per KEK (key schedule and POLYVAL key).
pub(crate) fn wrap_key(kek: &[u8; 32]) -> Result<SivKey, CryptoError> {
    SivUnboundKey::new(&AES_256_GCM_SIV, kek)
        .map(SivKey::new)
        .map_err(|_| CryptoError::Encrypt)
}

pub(crate) fn wrap_dek(
    key: &SivKey,
    dek: &Dek,
    ctx: &WrapContext<'_>,
) -> Result<WrappedDek, CryptoError> {
    let header = [FORMAT_VERSION, ALG_AES_256_GCM_SIV];
    let mut nonce = [0u8; GCM_NONCE];
    // Random 96-bit nonces are safe here far beyond 2^32 wraps: AES-GCM-SIV derives a fresh key
    // per nonce and is nonce-misuse resistant. See docs/crypto.md.
    rand::rng().fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.extend_from_slice(&header);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(dek.expose_secret());
    let tag = key
        .seal_in_place_separate_tag(
            SivNonce::assume_unique_for_key(nonce),
            SivAad::from(ctx.encode_fast(&header)),
            &mut out[2 + GCM_NONCE..],
        )
        .map_err(|_| CryptoError::Encrypt)?;
    out.extend_from_slice(tag.as_ref());
    Ok(WrappedDek(out))
}

pub(crate) fn unwrap_dek(
    key: &SivKey,
    wrapped: &WrappedDek,
    ctx: &WrapContext<'_>,
) -> Result<Dek, CryptoError> {
    let bytes = wrapped.as_bytes();
    if bytes.len() != WRAPPED_LEN {
        return Err(CryptoError::Format("wrapped DEK has the wrong length"));
    }
    let (header, rest) = bytes.split_at(2);
    if header != [FORMAT_VERSION, ALG_AES_256_GCM_SIV] {
        return Err(CryptoError::Format(
            "unknown wrapped DEK version or algorithm",
        ));
    }
    let (nonce, ct) = rest.split_at(GCM_NONCE);
    let nonce = SivNonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Decrypt)?;
    // The length was checked above: 32 bytes of DEK and a 16-byte tag.
    let mut buf = Zeroizing::new([0u8; 32 + TAG]);
    buf.copy_from_slice(ct);
    let plain = key
        .open_in_place(
            nonce,
            SivAad::from(ctx.encode_fast(header)),
            buf.as_mut_slice(),
        )
        .map_err(|_| CryptoError::Decrypt)?;
    let mut dek = Zeroizing::new([0u8; 32]);
    if plain.len() != 32 {
        return Err(CryptoError::Decrypt);
    }
    dek.copy_from_slice(plain);
    Ok(Dek::from_unwrapped(dek))
}
