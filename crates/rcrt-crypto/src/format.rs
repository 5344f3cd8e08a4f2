//! The byte formats (also in `docs/crypto.md`).
//!
//! Sealed value: `0x01 version | 0x01 alg AES-256-GCM | nonce (12) | ciphertext | tag (16)`.
//! Wrapped DEK:  `0x01 version | 0x03 alg AES-256-GCM-SIV | nonce (12) | DEK ciphertext (32) | tag (16)`.
//! The two header bytes are part of the associated data, so they cannot be changed either.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, AES_256_GCM_SIV};
use rand::RngCore;

use crate::aad::{AadBuf, ValueContext, WrapContext};
use crate::error::CryptoError;
use crate::keys::{Dek, Plaintext, SecretBytes};

/// The envelope format version written by this build.
pub const FORMAT_VERSION: u8 = 1;
const ALG_AES_256_GCM: u8 = 1;
/// Algorithm 2 (XChaCha20-Poly1305) was used by pre-release builds only and is not read.
const ALG_AES_256_GCM_SIV: u8 = 3;
const GCM_NONCE: usize = 12;
const TAG: usize = 16;
const WRAPPED_LEN: usize = 2 + GCM_NONCE + 32 + TAG;
const VALUE_HEADER: [u8; 2] = [FORMAT_VERSION, ALG_AES_256_GCM];
const WRAPPED_HEADER: [u8; 2] = [FORMAT_VERSION, ALG_AES_256_GCM_SIV];

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
///
/// A fresh wrap keeps its 62 bytes inline (no allocation on the hot path); bytes read back from
/// storage keep the buffer they came in.
#[derive(Clone)]
pub struct WrappedDek(WrappedBytes);

#[derive(Clone)]
enum WrappedBytes {
    Fresh([u8; WRAPPED_LEN]),
    Stored(Vec<u8>),
}

impl WrappedDek {
    /// Bytes read back from storage (checked when unwrapped).
    pub fn from_stored(bytes: Vec<u8>) -> Self {
        Self(WrappedBytes::Stored(bytes))
    }
    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            WrappedBytes::Fresh(bytes) => bytes,
            WrappedBytes::Stored(bytes) => bytes,
        }
    }
}

impl PartialEq for WrappedDek {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for WrappedDek {}

impl std::fmt::Debug for WrappedDek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WrappedDek({} bytes)", self.as_bytes().len())
    }
}

fn gcm_key(dek: &Dek) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, dek.expose_secret())
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::Encrypt)
}

/// Seals `plaintext` under a fresh DEK and returns both.
///
/// The DEK and the nonce come from one draw of `rand`'s thread-local ChaCha12 CSPRNG, which is
/// seeded and periodically reseeded from the OS; see `docs/crypto.md` for why not one system
/// call per key.
pub(crate) fn seal_value(
    plaintext: &[u8],
    ctx: &ValueContext<'_>,
) -> Result<(Dek, SealedValue), CryptoError> {
    let mut random = SecretBytes::<{ 32 + GCM_NONCE }>::zeroed();
    rand::rng().fill_bytes(&mut random.0);
    let (key_bytes, nonce) = random.0.split_at(32);
    let mut dek = SecretBytes::<32>::zeroed();
    dek.0.copy_from_slice(key_bytes);
    let dek = Dek::from_random(dek);
    // Each DEK seals exactly one value, so even a repeated nonce could not reuse a (key, nonce)
    // pair; the random nonce is defence in depth.
    let mut nonce_bytes = [0u8; GCM_NONCE];
    nonce_bytes.copy_from_slice(nonce);
    let mut out = Vec::with_capacity(2 + GCM_NONCE + plaintext.len() + TAG);
    out.extend_from_slice(&VALUE_HEADER);
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(plaintext);
    // `out` starts with the header and nonce just written, so the slice below cannot fail.
    let tag = gcm_key(&dek)?
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::from(ctx.encode(&VALUE_HEADER, &mut AadBuf::new())),
            &mut out[2 + GCM_NONCE..],
        )
        .map_err(|_| CryptoError::Encrypt)?;
    out.extend_from_slice(tag.as_ref());
    Ok((dek, SealedValue(out)))
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
    if header != VALUE_HEADER {
        return Err(CryptoError::Format(
            "unknown sealed value version or algorithm",
        ));
    }
    let (nonce, ciphertext) = rest.split_at(GCM_NONCE);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Decrypt)?;
    let mut plain = Plaintext::new(ciphertext.to_vec());
    let key = gcm_key(dek).map_err(|_| CryptoError::Decrypt)?;
    let buf = plain.buffer_mut();
    let len = key
        .open_in_place(
            nonce,
            Aad::from(ctx.encode(&VALUE_HEADER, &mut AadBuf::new())),
            buf.as_mut_slice(),
        )
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    buf.truncate(len);
    Ok(plain)
}

/// The KEK as an AES-256-GCM-SIV key, set up once per KEK (key schedule and POLYVAL key).
pub(crate) fn wrap_key(kek: &[u8; 32]) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM_SIV, kek)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::Encrypt)
}

pub(crate) fn wrap_dek(
    key: &LessSafeKey,
    dek: &Dek,
    ctx: &WrapContext<'_>,
) -> Result<WrappedDek, CryptoError> {
    let mut out = [0u8; WRAPPED_LEN];
    let (header, rest) = out.split_at_mut(2);
    header.copy_from_slice(&WRAPPED_HEADER);
    let (nonce, body) = rest.split_at_mut(GCM_NONCE);
    // Random 96-bit nonces are safe here far beyond 2^32 wraps: AES-GCM-SIV derives a fresh key
    // per nonce and is nonce-misuse resistant. See docs/crypto.md.
    rand::rng().fill_bytes(nonce);
    let mut nonce_bytes = [0u8; GCM_NONCE];
    nonce_bytes.copy_from_slice(nonce);
    let (sealed, tag_out) = body.split_at_mut(32);
    sealed.copy_from_slice(dek.expose_secret());
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::from(ctx.encode_into(&WRAPPED_HEADER, &mut AadBuf::new())),
            sealed,
        )
        .map_err(|_| CryptoError::Encrypt)?;
    tag_out.copy_from_slice(tag.as_ref());
    Ok(WrappedDek(WrappedBytes::Fresh(out)))
}

pub(crate) fn unwrap_dek(
    key: &LessSafeKey,
    wrapped: &WrappedDek,
    ctx: &WrapContext<'_>,
) -> Result<Dek, CryptoError> {
    let bytes = wrapped.as_bytes();
    if bytes.len() != WRAPPED_LEN {
        return Err(CryptoError::Format("wrapped DEK has the wrong length"));
    }
    let (header, rest) = bytes.split_at(2);
    if header != WRAPPED_HEADER {
        return Err(CryptoError::Format(
            "unknown wrapped DEK version or algorithm",
        ));
    }
    let (nonce, ct) = rest.split_at(GCM_NONCE);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Decrypt)?;
    // The length was checked above: 32 bytes of DEK and a 16-byte tag.
    let mut buf = SecretBytes::<{ 32 + TAG }>::zeroed();
    buf.0.copy_from_slice(ct);
    let plain = key
        .open_in_place(
            nonce,
            Aad::from(ctx.encode_into(&WRAPPED_HEADER, &mut AadBuf::new())),
            &mut buf.0,
        )
        .map_err(|_| CryptoError::Decrypt)?;
    let dek: &[u8; 32] = (&*plain).try_into().map_err(|_| CryptoError::Decrypt)?;
    Ok(Dek::from_slice(dek))
}
