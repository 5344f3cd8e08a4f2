//! Key types. None derives `Debug`, `Display`, `Clone` or `Serialize`: every read of key bytes
//! goes through a named method, and every key is zeroized when dropped.

use std::fmt;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

use crate::error::CryptoError;

/// Length of a KEK and of a DEK in bytes (256 bits).
pub const KEK_LEN: usize = 32;

/// Fixed-size secret bytes, aligned so that dropping them wipes with four (or six) volatile
/// 8-byte stores rather than one store per byte.
#[repr(C, align(16))]
pub(crate) struct SecretBytes<const N: usize>(pub(crate) [u8; N]);

impl<const N: usize> SecretBytes<N> {
    pub(crate) fn zeroed() -> Self {
        Self([0; N])
    }
}

impl<const N: usize> Drop for SecretBytes<N> {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// A data encryption key: 256 random bits, used for exactly one secret version.
pub struct Dek(SecretBytes<32>);

impl Dek {
    /// A DEK from 32 bytes the caller drew from the CSPRNG (see `crate::seal_value`).
    pub(crate) fn from_random(bytes: SecretBytes<32>) -> Self {
        Self(bytes)
    }

    /// The key bytes, for a KEK provider that wraps them remotely (KMS, HSM).
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0 .0
    }

    /// Rebuilds a DEK from bytes a remote KEK provider unwrapped.
    pub fn from_unwrapped(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(SecretBytes(*bytes))
    }

    /// Rebuilds a DEK from bytes this crate unwrapped into a scratch buffer.
    pub(crate) fn from_slice(bytes: &[u8; 32]) -> Self {
        Self(SecretBytes(*bytes))
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
    /// On the heap and wiped on drop: moving a `Kek` (into a keyring, a `Vec`) moves a pointer
    /// and leaves no copy of the key behind in a stack frame or a reallocated buffer.
    key: Box<Zeroizing<[u8; 32]>>,
    id: KekId,
    /// The wrapping key schedule, set up once rather than per wrap.
    wrap_key: aws_lc_rs::aead::LessSafeKey,
}

impl Kek {
    /// Wraps 32 bytes of key material (see [`Kek::from_secret`]; `bytes` is wiped on return).
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self::from_secret(&bytes)
    }

    /// Copies 32 bytes of key material into a heap buffer of its own; the caller wipes its
    /// buffer. The id is derived here, once.
    pub fn from_secret(bytes: &[u8; 32]) -> Self {
        let mut key = Box::new(Zeroizing::new([0u8; 32]));
        key.copy_from_slice(bytes);
        Self::from_boxed(key)
    }

    fn from_boxed(key: Box<Zeroizing<[u8; 32]>>) -> Self {
        let mac = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, key.as_ref().as_ref()),
            b"rcrt kek id v1",
        );
        let id = KekId(hex::encode(&mac.as_ref()[..8]));
        // AES-256 accepts any 32 bytes, so setting up the key cannot fail.
        #[allow(clippy::expect_used)]
        let wrap_key = crate::format::wrap_key(&key).expect("a 32-byte AES-256-GCM-SIV key");
        Self { key, id, wrap_key }
    }

    /// A new KEK from the operating system's random source, drawn straight into its heap
    /// buffer.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut key = Box::new(Zeroizing::new([0u8; 32]));
        SystemRandom::new()
            .fill(key.as_mut().as_mut())
            .map_err(|_| CryptoError::Random)?;
        Ok(Self::from_boxed(key))
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

/// A decrypted secret value. Wiped on drop (the whole allocation); `Debug` is redacted.
pub struct Plaintext(Vec<u8>);

impl Plaintext {
    /// Takes ownership of a buffer that holds (or is about to hold) plaintext, so that it is
    /// wiped on every path, including a failed decryption.
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub(crate) fn buffer_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    /// The value's bytes. Call only to hand the value to its authorized reader.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        // Spare capacity may hold bytes from an earlier, longer content; wipe it too.
        let capacity = self.0.capacity();
        self.0.resize(capacity, 0);
        wipe(&mut self.0);
    }
}

/// Overwrites `bytes` with zeros that the compiler cannot elide, like `Zeroize`, but with
/// volatile 8-byte stores where the buffer is aligned for them: on a 1 KiB value this takes
/// about 16 ns instead of 135 ns for byte-at-a-time stores (docs/benchmarks.md).
pub(crate) fn wipe(bytes: &mut [u8]) {
    let (head, words, tail) = bytemuck::pod_align_to_mut::<u8, u64>(bytes);
    head.zeroize();
    words.zeroize();
    tail.zeroize();
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Plaintext([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_zeroes_exactly_the_slice_at_any_alignment() {
        for start in 0..8 {
            for end in [start, start + 1, start + 7, start + 9, 57, 64] {
                let mut buf = [0xa5u8; 64];
                wipe(&mut buf[start..end]);
                assert!(buf[start..end].iter().all(|&b| b == 0), "{start}..{end}");
                assert!(buf[..start].iter().all(|&b| b == 0xa5), "{start}..{end}");
                assert!(buf[end..].iter().all(|&b| b == 0xa5), "{start}..{end}");
            }
        }
    }

    #[test]
    fn secret_bytes_are_aligned_for_word_wipes() {
        assert_eq!(std::mem::align_of::<SecretBytes<32>>(), 16);
        let bytes = SecretBytes::<48>::zeroed();
        let (head, words, tail) = bytemuck::pod_align_to::<u8, u64>(&bytes.0);
        assert_eq!((head.len(), words.len(), tail.len()), (0, 6, 0));
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_moved_kek_leaves_its_key_where_it_was() {
        let kek = Kek::from_secret(&[7u8; 32]);
        let at = kek.expose_secret().as_ptr();
        let moved = vec![kek];
        let moved_again: Vec<Kek> = moved.into_iter().collect::<Vec<_>>();
        assert_eq!(moved_again[0].expose_secret().as_ptr(), at);
        assert_eq!(moved_again[0].expose_secret(), &[7u8; 32]);
        let generated = Kek::generate().unwrap();
        let at = generated.expose_secret().as_ptr();
        let boxed = Box::new(generated);
        assert_eq!(boxed.expose_secret().as_ptr(), at);
    }
}
