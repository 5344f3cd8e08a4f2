/// Why a cryptographic operation failed.
///
/// A failed decryption does not say which check failed: tag, associated data and key all give
/// [`CryptoError::Decrypt`], so the error is no oracle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Authentication failed: wrong key, altered bytes, or bytes moved from another row.
    #[error("decryption failed")]
    Decrypt,
    /// The bytes are not a sealed value or wrapped DEK this version understands.
    #[error("unsupported or malformed envelope ({0})")]
    Format(&'static str),
    /// The AEAD refused to seal (cannot happen for in-range inputs; kept rather than panic).
    #[error("encryption failed")]
    Encrypt,
    /// The OS random source failed.
    #[error("the OS random source failed")]
    Random,
}
