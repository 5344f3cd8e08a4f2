//! The error type of this crate. Messages never contain share or secret material.

/// Why a split or combine failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShamirError {
    /// The threshold is below 2 (the minimum `ssss` accepts), or above the number of shares.
    #[error(
        "invalid threshold {threshold}: it must be at least 2 and at most the number of shares ({shares})"
    )]
    InvalidThreshold {
        /// The threshold that was asked for.
        threshold: u8,
        /// The number of shares it was checked against (255 for `combine`, the largest possible).
        shares: u8,
    },

    /// Fewer shares were given to `combine` than the threshold.
    #[error("too few shares: {given} given, the threshold is {threshold}")]
    TooFewShares {
        /// How many shares were given.
        given: usize,
        /// How many are needed.
        threshold: u8,
    },

    /// Two of the given shares carry the same index (the same share was given twice).
    #[error("duplicate share index {index}: a share was given twice")]
    DuplicateIndex {
        /// The repeated index.
        index: u8,
    },

    /// A share is not of the form `[token-]INDEX-HEX` with INDEX in 1..=255 and HEX non-empty
    /// hexadecimal digits.
    #[error("malformed share at position {position}: {reason}")]
    MalformedShare {
        /// Zero-based position of the share in the input.
        position: usize,
        /// What is wrong with it (never the share's content).
        reason: &'static str,
    },

    /// The shares have different hex lengths, so they belong to different fields (and splits).
    #[error(
        "inconsistent share lengths: share at position {position} has {found} hex digits, the first has {expected}"
    )]
    InconsistentLengths {
        /// Zero-based position of the first share whose length differs from the first share's.
        position: usize,
        /// Hex digits in the first share.
        expected: usize,
        /// Hex digits in the offending share.
        found: usize,
    },

    /// The shares carry different `token-` prefixes (or some carry one and others do not).
    #[error("inconsistent share tokens: share at position {position} differs from the first")]
    InconsistentTokens {
        /// Zero-based position of the first share whose token differs from the first share's.
        position: usize,
    },

    /// The field degree implied by the secret or share length is not one `ssss` supports
    /// (a multiple of 8 bits from 8 to 1024).
    #[error(
        "unsupported secret length: field degree {degree} bits is not a multiple of 8 in 8..=1024"
    )]
    UnsupportedLength {
        /// The implied field degree in bits.
        degree: usize,
    },

    /// The secret to split is empty.
    #[error("the secret is empty")]
    EmptySecret,

    /// The secret to split is longer than 128 bytes, the most `ssss` supports.
    #[error("the secret is {len} bytes long; at most 128 bytes are supported")]
    SecretTooLong {
        /// The secret's length in bytes.
        len: usize,
    },

    /// In ASCII mode the secret contains a byte `ssss` cannot read as part of a line: NUL, CR or
    /// LF (it would silently cut the secret there). Use [`Mode::Hex`](crate::Mode::Hex) instead.
    #[error("byte at offset {offset} cannot be split in ASCII mode (NUL, CR or LF); use hex mode")]
    InvalidAsciiByte {
        /// Zero-based offset of the first such byte.
        offset: usize,
    },

    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}
